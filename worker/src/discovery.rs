//! Finding gateways through memcached: reads the records gateways announce there (keys,
//! values and timings in `protocol::discovery`) and returns who is up, by gateway id.
//!
//! Every configured server is read and the answers merged, so one server down loses
//! nothing while another answers. When none answers, the lookup fails and the caller keeps
//! the gateways it already had: losing discovery for a while must not unlink anyone. This
//! module only looks; keeping a link per gateway is `link_set.rs`'s business.

use std::collections::BTreeMap;

use memcache::{Client, MemcacheError};
use protocol::discovery::{index_key, parse_index, record_key};

use crate::store::build_client;

/// Why no discovery server could be read.
#[derive(Debug, thiserror::Error)]
#[error("no discovery server answered ({0})")]
pub struct DiscoveryError(String);

/// Reads gateway records from a set of memcached servers.
pub struct Discovery {
    servers: Vec<(String, Option<Client>)>,
    prefix: String,
}

impl Discovery {
    /// A lookup over `servers` (`host:port`) for keys starting with `prefix`. Connects
    /// lazily, so a server that is down at start is simply tried again at each lookup.
    pub fn new(servers: &[String], prefix: &str) -> Self {
        Self {
            servers: servers.iter().map(|s| (s.clone(), None)).collect(),
            prefix: prefix.to_owned(),
        }
    }

    /// The gateways announced now: id -> worker-link address. Blocking (the client is
    /// synchronous): call it from a blocking thread.
    pub fn lookup(&mut self) -> Result<BTreeMap<u16, String>, DiscoveryError> {
        let mut found = BTreeMap::new();
        let mut failures = Vec::new();
        let mut answered = false;
        for (url, client) in &mut self.servers {
            match read_server(url, client, &self.prefix) {
                Ok(gateways) => {
                    answered = true;
                    found.extend(gateways);
                }
                Err(err) => {
                    *client = None;
                    failures.push(format!("{url}: {err}"));
                }
            }
        }
        if answered {
            Ok(found)
        } else {
            Err(DiscoveryError(failures.join("; ")))
        }
    }
}

fn read_server(
    url: &str,
    client: &mut Option<Client>,
    prefix: &str,
) -> Result<BTreeMap<u16, String>, MemcacheError> {
    if client.is_none() {
        *client = Some(build_client(&[url.to_owned()])?);
    }
    let Some(client) = client.as_ref() else {
        return Ok(BTreeMap::new());
    };
    let ids = client
        .get::<String>(&index_key(prefix))?
        .map(|index| parse_index(&index))
        .unwrap_or_default();
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let keys: Vec<(u16, String)> = ids
        .iter()
        .map(|id| (*id, record_key(prefix, *id)))
        .collect();
    let refs: Vec<&str> = keys.iter().map(|(_, key)| key.as_str()).collect();
    let mut records = client.gets::<String>(&refs)?;
    Ok(keys
        .into_iter()
        .filter_map(|(id, key)| records.remove(&key).map(|addr| (id, addr)))
        .filter(|(_, addr)| !addr.trim().is_empty())
        .collect())
}
