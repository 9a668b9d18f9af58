//! Announces this gateway's worker-link address in memcached, so workers find it without a
//! static list (keys, values and timings in `protocol::discovery`).
//!
//! Every [`ANNOUNCE_EVERY_MS`] the record is rewritten with its time-to-live and the id
//! made sure in the index, on every configured server: one server down loses nothing while
//! another answers. A server that fails is logged once and retried at the next round; the
//! gateway never stops or slows its clients for discovery. On shutdown the record is
//! deleted, so workers drop the gateway at their next lookup instead of after the TTL.

use std::collections::BTreeSet;
use std::time::Duration;

use memcache::{Client, MemcacheError};
use protocol::discovery::{
    format_index, index_key, parse_index, record_key, ANNOUNCE_EVERY_MS, RECORD_TTL_S,
};
use tokio_util::sync::CancellationToken;

/// One memcached request may take this long; a dead server must not hold up the others.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts of the index's `gets`/`cas` loop; only gateways starting together contend.
const CAS_TRIES: usize = 8;

/// What to announce, and where.
#[derive(Debug, Clone)]
pub struct Announcement {
    /// memcached servers (`host:port`).
    pub servers: Vec<String>,
    /// Key prefix, the same in every gateway and worker of the cluster.
    pub prefix: String,
    /// This gateway's id.
    pub id: u16,
    /// The address workers link to.
    pub addr: String,
}

/// Why one server could not take the announcement.
#[derive(Debug, thiserror::Error)]
enum AnnounceError {
    #[error(transparent)]
    Memcache(#[from] MemcacheError),
    #[error("index changed under us {CAS_TRIES} times in a row")]
    Contended,
}

/// A client for one server, rebuilt after a failure.
struct Server {
    url: String,
    client: Option<Client>,
    failing: bool,
}

/// Announces until `shutdown`, then deletes the record.
pub async fn run(announcement: Announcement, shutdown: CancellationToken) {
    let mut servers = fresh(&announcement.servers);
    tracing::info!(addr = %announcement.addr, servers = ?announcement.servers, "announcing this gateway for discovery");
    let mut tick = tokio::time::interval(Duration::from_millis(ANNOUNCE_EVERY_MS));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        servers = round(servers, &announcement, announce_once).await;
    }
    round(servers, &announcement, withdraw).await;
}

/// Runs `op` against every server at once, each on its own blocking thread (the client is
/// synchronous): a dead server's timeouts must not delay the rewrite on the live ones past
/// the record's time-to-live.
async fn round(
    servers: Vec<Server>,
    announcement: &Announcement,
    op: fn(&Client, &Announcement) -> Result<(), AnnounceError>,
) -> Vec<Server> {
    let jobs = servers.into_iter().map(|mut server| {
        let announcement = announcement.clone();
        let url = server.url.clone();
        let job = tokio::task::spawn_blocking(move || {
            let result = server
                .connect()
                .map_err(AnnounceError::from)
                .and_then(|client| op(client, &announcement));
            server.outcome(result);
            server
        });
        // A panic in the client (none known) costs that server's connection, not the
        // announcing.
        async move { job.await.unwrap_or_else(|_| fresh(&[url]).remove(0)) }
    });
    futures::future::join_all(jobs).await
}

/// Unconnected clients for `urls`.
fn fresh(urls: &[String]) -> Vec<Server> {
    urls.iter()
        .map(|url| Server {
            url: url.clone(),
            client: None,
            failing: false,
        })
        .collect()
}

impl Server {
    fn connect(&mut self) -> Result<&Client, MemcacheError> {
        if self.client.is_none() {
            let client = Client::builder()
                .add_server(format!("memcache://{}?protocol=ascii", self.url))?
                .with_max_pool_size(1)
                .with_connection_timeout(TIMEOUT)
                .with_read_timeout(TIMEOUT)
                .with_write_timeout(TIMEOUT)
                .build()?;
            self.client = Some(client);
        }
        Ok(self.client.as_ref().expect("just built"))
    }

    /// Logs a change of state only: the first failure, and the recovery.
    fn outcome(&mut self, result: Result<(), AnnounceError>) {
        match result {
            Ok(()) if self.failing => {
                tracing::info!(server = %self.url, "discovery server reachable again");
                self.failing = false;
            }
            Ok(()) => {}
            Err(err) => {
                if !self.failing {
                    tracing::warn!(server = %self.url, cause = %err, "cannot announce on discovery server; retrying");
                }
                self.failing = true;
                self.client = None;
            }
        }
    }
}

/// Writes the record, then makes sure the index lists this id (and no gateway whose record
/// expired).
fn announce_once(client: &Client, a: &Announcement) -> Result<(), AnnounceError> {
    client.set(&record_key(&a.prefix, a.id), a.addr.as_str(), RECORD_TTL_S)?;
    let key = index_key(&a.prefix);
    for _ in 0..CAS_TRIES {
        match client.get::<(String, u32, Option<u64>)>(&key)? {
            // `add` stores nothing if another gateway created it meanwhile; read it again.
            None => client.add(&key, a.id.to_string().as_str(), 0)?,
            Some((value, _, cas)) => {
                let listed = parse_index(&value);
                let mut ids = alive(client, a, &listed)?;
                ids.insert(a.id);
                if ids == listed {
                    return Ok(());
                }
                let cas = cas.ok_or(AnnounceError::Contended)?;
                if client.cas(&key, format_index(&ids).as_str(), 0, cas)? {
                    return Ok(());
                }
            }
        }
    }
    Err(AnnounceError::Contended)
}

/// The ids in `listed` whose record still exists (ours is written just before).
fn alive(
    client: &Client,
    a: &Announcement,
    listed: &BTreeSet<u16>,
) -> Result<BTreeSet<u16>, MemcacheError> {
    if listed.is_empty() {
        return Ok(BTreeSet::new());
    }
    let keys: Vec<String> = listed.iter().map(|id| record_key(&a.prefix, *id)).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let found = client.gets::<String>(&refs)?;
    Ok(listed
        .iter()
        .copied()
        .filter(|id| found.contains_key(&record_key(&a.prefix, *id)))
        .collect())
}

/// Deletes the record (the index entry goes at the next announcement of any gateway).
fn withdraw(client: &Client, a: &Announcement) -> Result<(), AnnounceError> {
    client.delete(&record_key(&a.prefix, a.id))?;
    tracing::info!(id = a.id, "withdrew this gateway's discovery record");
    Ok(())
}
