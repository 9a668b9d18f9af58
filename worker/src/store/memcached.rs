//! The memcached backend of [`Store`]: what several workers share, on one or more memcached
//! servers. sled stays the default for a single worker process that wants durability.
//!
//! What memcached does NOT guarantee, and so neither does this backend:
//! - **Eviction.** Records are stored without expiry, but memcached evicts least-recently
//!   used items under memory pressure: size it with `-m` (the whole chat state is small;
//!   64 MB holds far more than [`MAX_HISTORY`] lines and full offline queues for thousands
//!   of devices). An evicted user, device, message or history line is simply gone; an
//!   evicted uid counter would start again at 1 (uids then repeat), and a queued message
//!   evicted while its slot's claim survives stops that device's queue at it (peeks still
//!   skip the hole; the queue fills up to [`MAX_OFFLINE_PER_DEVICE`] behind it).
//! - **Persistence.** Nothing survives a restart of memcached.
//! - **Servers.** Keys are spread over the servers by a stable hash of the key (FNV-1a, the
//!   same in every build), so every worker must list the same servers in the same order.
//!   A server that goes down takes its share of the keys with it.
//!
//! Layout under the configured prefix `P` (ids are escaped to memcached-safe keys):
//! `P uid` (counter), `P user:UID`, `P device:ID`, `P devices` (the id index),
//! `P offline:ID:head` / `:tail` (counters), `P offline:ID:N` (queue slots) and
//! `P offline:ID:N:claim` (who owns a slot: see [`Slot`]),
//! `P history:next` (counter) and `P history:SLOT` (a ring of [`MAX_HISTORY`] slots).
//! Counters use `incr`, atomic across workers; read-modify-writes use `gets`/`cas` with
//! [`CAS_TRIES`] attempts, then [`StoreError::Contended`].

use std::time::Duration;

use memcache::{Client, CommandError, MemcacheError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{
    DeviceRecord, HistoryEntry, OfflineMessage, Store, StoreError, User, MAX_HISTORY,
    MAX_OFFLINE_PER_DEVICE,
};

/// No expiry: memcached keeps an item until it is deleted or evicted.
const NO_EXPIRY: u32 = 0;
/// Attempts of a `gets`/`cas` loop. Contention is between a handful of workers touching one
/// record; 64 lost races in a row means something is wrong, not busy.
pub const CAS_TRIES: usize = 64;
/// One connect or one request may take this long before the call fails: a worker must not
/// hang on a dead server (the gateway redelivers what it did not ack).
const TIMEOUT: Duration = Duration::from_secs(2);
/// Connections per server: the worker's event loop makes one call at a time, flushes and
/// tests a few more.
const POOL_SIZE: u32 = 4;
/// Keys per multi-get: memcached accepts long `get` lines, this keeps each one modest.
const MULTI_GET: usize = 100;

/// A queue slot: a message, or a tombstone left by its delivery (or by a push that found
/// the queue full after reserving the slot).
///
/// Who owns a reserved slot is decided by its claim counter (`…:N:claim`): the pusher that
/// reserved it and a delivery that wants to pass it while it is still empty both `incr` it,
/// and whoever gets 1 owns it. `incr` reports its result unambiguously; this client's `add`
/// does not (it swallows `NOT_STORED`), so `add` is never used to decide anything.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Slot {
    Message(OfflineMessage),
    Tombstone,
}

/// The memcached-backed store.
pub struct MemcachedStore {
    client: Client,
    prefix: String,
}

/// The client's URL for a `host:port` entry of the config: the text protocol (the crate's
/// default, the binary one, is deprecated by memcached).
fn server_url(server: &str) -> String {
    if server.contains("://") {
        server.to_string()
    } else {
        format!("memcache://{server}?protocol=ascii")
    }
}

/// FNV-1a: unlike std's `DefaultHasher`, guaranteed the same in every build, so two workers
/// built apart still send a key to the same server.
fn stable_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A client over `servers` with this crate's timeouts and key hashing (also used by
/// discovery, one server at a time).
pub(crate) fn build_client(servers: &[String]) -> Result<Client, MemcacheError> {
    let urls: Vec<String> = servers.iter().map(|s| server_url(s)).collect();
    Client::builder()
        .add_server(urls)?
        .with_max_pool_size(POOL_SIZE)
        .with_connection_timeout(TIMEOUT)
        .with_read_timeout(TIMEOUT)
        .with_write_timeout(TIMEOUT)
        .with_hash_function(stable_hash)
        .build()
}

impl MemcachedStore {
    /// Connects to `servers` (`host:port`, or `memcache://` URLs) and checks each answers
    /// `version`, so a wrong address fails at start with [`StoreError::Unreachable`]
    /// naming it, not at the first login.
    pub fn connect(servers: &[String], prefix: &str) -> Result<MemcachedStore, StoreError> {
        let unreachable = |server: &str, cause: &dyn std::fmt::Display| StoreError::Unreachable {
            server: server.to_string(),
            servers: servers.join(", "),
            cause: cause.to_string(),
        };
        if servers.is_empty() {
            return Err(unreachable("(none)", &"no memcached server configured"));
        }
        for server in servers {
            build_client(std::slice::from_ref(server))
                .and_then(|probe| probe.version())
                .map_err(|err| unreachable(server, &err))?;
        }
        let client = build_client(servers).map_err(|err| unreachable(&servers[0], &err))?;
        Ok(MemcachedStore {
            client,
            prefix: prefix.to_string(),
        })
    }

    fn key(&self, parts: std::fmt::Arguments<'_>) -> String {
        format!("{}{parts}", self.prefix)
    }

    fn get_record<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.client
            .get::<Vec<u8>>(key)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// Many records at once, in the order of `keys`; `None` for a missing one.
    fn get_many<T: DeserializeOwned>(&self, keys: &[String]) -> Result<Vec<Option<T>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MULTI_GET) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let mut found = self.client.gets::<Vec<u8>>(&refs)?;
            for key in chunk {
                out.push(found.remove(key).map(|bytes| decode(&bytes)).transpose()?);
            }
        }
        Ok(out)
    }

    /// A counter's value, 0 when it does not exist yet.
    fn counter(&self, key: &str) -> Result<u64, StoreError> {
        Ok(self.client.get::<u64>(key)?.unwrap_or(0))
    }

    /// Atomically adds one to a counter (created at 0 first) and returns the new value.
    fn incr(&self, key: &str) -> Result<u64, StoreError> {
        match self.client.increment(key, 1) {
            Err(MemcacheError::CommandError(CommandError::KeyNotFound)) => {
                // Whoever's `add` wins, the counter then exists and `incr` is atomic.
                self.client.add(key, "0", NO_EXPIRY)?;
                Ok(self.client.increment(key, 1)?)
            }
            other => Ok(other?),
        }
    }

    /// `gets`/`cas` loop on one record. `change` gets the current record (None when
    /// missing) and returns the one to store, or None to store nothing. A missing record is
    /// created with `add`, then the loop reads it back, so a concurrent creator's record is
    /// updated rather than overwritten. Returns the record as stored, or as found.
    fn update<T>(
        &self,
        key: &str,
        mut change: impl FnMut(Option<&T>) -> Option<T>,
    ) -> Result<Option<T>, StoreError>
    where
        T: Serialize + DeserializeOwned + PartialEq,
    {
        for _ in 0..CAS_TRIES {
            match self.client.get::<(Vec<u8>, u32, Option<u64>)>(key)? {
                None => match change(None) {
                    Some(new) => self.client.add(key, &encode(&new)?[..], NO_EXPIRY)?,
                    None => return Ok(None),
                },
                Some((bytes, _, cas)) => {
                    let old: T = decode(&bytes)?;
                    let Some(new) = change(Some(&old)) else {
                        return Ok(Some(old));
                    };
                    if new == old {
                        return Ok(Some(old));
                    }
                    let cas = cas.ok_or_else(|| contended(key))?;
                    if self.client.cas(key, &encode(&new)?[..], NO_EXPIRY, cas)? {
                        return Ok(Some(new));
                    }
                }
            }
        }
        Err(contended(key))
    }

    /// Takes the claim on slot `seq`: true when this call is the first to claim it.
    fn claim(&self, device: &str, seq: u64) -> Result<bool, StoreError> {
        Ok(self.incr(&self.claim_key(device, seq))? == 1)
    }

    fn claim_key(&self, device: &str, seq: u64) -> String {
        self.key(format_args!("offline:{}:{seq}:claim", escape(device)))
    }

    fn queue_key(&self, device: &str, seq: u64) -> String {
        self.key(format_args!("offline:{}:{seq}", escape(device)))
    }

    /// `(head, tail)` of a device's queue: slots `head..tail` may hold messages.
    fn queue_bounds(&self, device: &str) -> Result<(u64, u64), StoreError> {
        let id = escape(device);
        let head = self.counter(&self.key(format_args!("offline:{id}:head")))?;
        let tail = self.counter(&self.key(format_args!("offline:{id}:tail")))?;
        Ok((head, tail))
    }

    /// The messages in `device`'s queue window, oldest first (tombstones and holes skipped).
    fn queued(&self, device: &str) -> Result<Vec<(u64, OfflineMessage)>, StoreError> {
        let (head, tail) = self.queue_bounds(device)?;
        // A message is only written at a slot below head + MAX (see push_offline), and head
        // only grows: the window holds every message.
        let end = tail.min(head.saturating_add(MAX_OFFLINE_PER_DEVICE as u64));
        let seqs: Vec<u64> = (head..end).collect();
        let keys: Vec<String> = seqs.iter().map(|&s| self.queue_key(device, s)).collect();
        let slots = self.get_many::<Slot>(&keys)?;
        Ok(seqs
            .into_iter()
            .zip(slots)
            .filter_map(|(seq, slot)| match slot {
                Some(Slot::Message(msg)) => Some((seq, msg)),
                _ => None,
            })
            .collect())
    }

    /// Moves `device`'s head past delivered slots (tombstones) and past empty slots it can
    /// claim (an evicted message's, or one whose pusher has not claimed it yet: that pusher
    /// then takes another slot). A claimed slot still empty is being written: head waits.
    fn advance_head(&self, device: &str) -> Result<(), StoreError> {
        let id = escape(device);
        let head_key = self.key(format_args!("offline:{id}:head"));
        for _ in 0..CAS_TRIES {
            let Some((head, _, cas)) = self.client.get::<(u64, u32, Option<u64>)>(&head_key)?
            else {
                self.client.add(&head_key, "0", NO_EXPIRY)?;
                continue;
            };
            let (_, tail) = self.queue_bounds(device)?;
            let mut new_head = head;
            while new_head < tail && self.passable(device, new_head)? {
                new_head += 1;
            }
            if new_head == head {
                return Ok(());
            }
            let cas = cas.ok_or_else(|| contended(&head_key))?;
            if self
                .client
                .cas(&head_key, new_head.to_string(), NO_EXPIRY, cas)?
            {
                // Below head now: no peek reads them again. A pusher that claims one of
                // these slots after its claim is deleted sees head past it and moves on.
                for seq in head..new_head {
                    self.client.delete(&self.queue_key(device, seq))?;
                    self.client.delete(&self.claim_key(device, seq))?;
                }
                return Ok(());
            }
        }
        Err(contended(&head_key))
    }

    /// May head move past slot `seq`?
    fn passable(&self, device: &str, seq: u64) -> Result<bool, StoreError> {
        let key = self.queue_key(device, seq);
        Ok(match self.get_record::<Slot>(&key)? {
            Some(Slot::Tombstone) => true,
            Some(Slot::Message(_)) => false,
            None if self.claim(device, seq)? => true,
            // Its pusher owns it: passable only if the message was written and delivered
            // since we looked.
            None => self.get_record::<Slot>(&key)? == Some(Slot::Tombstone),
        })
    }
}

fn contended(key: &str) -> StoreError {
    StoreError::Contended {
        key: key.to_string(),
        tries: CAS_TRIES,
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    Ok(postcard::to_allocvec(value)?)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    Ok(postcard::from_bytes(bytes)?)
}

/// A device id as a memcached key part: keys may not hold spaces or control characters,
/// so anything but `[A-Za-z0-9._-]` becomes `%XX`. Injective, so ids never share a key.
fn escape(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl Store for MemcachedStore {
    fn next_uid(&self) -> Result<u64, StoreError> {
        let key = self.key(format_args!("uid"));
        let uid = self.incr(&key)?;
        // memcached's incr wraps to 0 past u64::MAX: pin the counter at the end instead.
        if uid == 0 || uid == u64::MAX {
            self.client.set(&key, u64::MAX, NO_EXPIRY)?;
            return Err(StoreError::UidsExhausted);
        }
        Ok(uid)
    }

    fn raise_uid_counter(&self, at_least: u64) -> Result<(), StoreError> {
        let key = self.key(format_args!("uid"));
        let value = at_least.to_string();
        for _ in 0..CAS_TRIES {
            match self.client.get::<(Vec<u8>, u32, Option<u64>)>(&key)? {
                // `add` stores nothing if a login created the counter meanwhile: read again.
                None => self.client.add(&key, value.as_str(), NO_EXPIRY)?,
                Some((bytes, _, cas)) => {
                    let current = std::str::from_utf8(&bytes)
                        .ok()
                        .and_then(|text| text.trim().parse::<u64>().ok())
                        .unwrap_or(0);
                    if current >= at_least {
                        return Ok(());
                    }
                    let cas = cas.ok_or_else(|| contended(&key))?;
                    if self.client.cas(&key, value.as_str(), NO_EXPIRY, cas)? {
                        return Ok(());
                    }
                }
            }
        }
        Err(contended(&key))
    }

    fn put_user(&self, uid: u64, user: &User) -> Result<(), StoreError> {
        let key = self.key(format_args!("user:{uid}"));
        self.client.set(&key, &encode(user)?[..], NO_EXPIRY)?;
        Ok(())
    }

    fn user(&self, uid: u64) -> Result<Option<User>, StoreError> {
        self.get_record(&self.key(format_args!("user:{uid}")))
    }

    fn upsert_device(
        &self,
        id: &str,
        firmware: &str,
        now: u64,
    ) -> Result<DeviceRecord, StoreError> {
        let key = self.key(format_args!("device:{}", escape(id)));
        let stored = self.update(&key, |old: Option<&DeviceRecord>| {
            Some(DeviceRecord::after_hello(old, firmware, now))
        })?;
        // Every hello checks the index, so an index lost to eviction refills itself.
        let index = self.key(format_args!("devices"));
        self.update(&index, |ids: Option<&Vec<String>>| {
            let mut ids = ids.cloned().unwrap_or_default();
            match ids.binary_search_by(|probe| probe.as_str().cmp(id)) {
                Ok(_) => None,
                Err(at) => {
                    ids.insert(at, id.to_string());
                    Some(ids)
                }
            }
        })?;
        stored.ok_or_else(|| contended(&key))
    }

    fn touch_device(
        &self,
        id: &str,
        now: u64,
        telemetry: Option<(&str, i64)>,
    ) -> Result<bool, StoreError> {
        let key = self.key(format_args!("device:{}", escape(id)));
        let stored = self.update(&key, |old: Option<&DeviceRecord>| {
            let mut record = old?.clone();
            record.touch(now, telemetry);
            Some(record)
        })?;
        Ok(stored.is_some())
    }

    fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.get_record(&self.key(format_args!("device:{}", escape(id))))
    }

    fn devices(&self) -> Result<Vec<(String, DeviceRecord)>, StoreError> {
        let ids: Vec<String> = self
            .get_record(&self.key(format_args!("devices")))?
            .unwrap_or_default();
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.key(format_args!("device:{}", escape(id))))
            .collect();
        let records = self.get_many::<DeviceRecord>(&keys)?;
        // The index is sorted; an id whose record was evicted is left out.
        Ok(ids
            .into_iter()
            .zip(records)
            .filter_map(|(id, record)| Some((id, record?)))
            .collect())
    }

    fn push_offline(&self, device: &str, msg: &OfflineMessage) -> Result<(), StoreError> {
        let full = || StoreError::QueueFull {
            device: device.to_string(),
            max: MAX_OFFLINE_PER_DEVICE,
        };
        let max = MAX_OFFLINE_PER_DEVICE as u64;
        let tail_key = self.key(format_args!("offline:{}:tail", escape(device)));
        let message = encode(&Slot::Message(msg.clone()))?;
        for _ in 0..CAS_TRIES {
            let (head, tail) = self.queue_bounds(device)?;
            if tail.saturating_sub(head) >= max {
                return Err(full());
            }
            let seq = self.incr(&tail_key)? - 1;
            let key = self.queue_key(device, seq);
            let (head, _) = self.queue_bounds(device)?;
            if seq >= head.saturating_add(max) {
                // Another push took the last place meanwhile: leave this slot passable.
                self.client
                    .set(&key, &encode(&Slot::Tombstone)?[..], NO_EXPIRY)?;
                return Err(full());
            }
            if !self.claim(device, seq)? {
                continue; // a delivery passed this empty slot: take another
            }
            self.client.set(&key, &message[..], NO_EXPIRY)?;
            let (head, _) = self.queue_bounds(device)?;
            if head > seq && self.client.get::<Vec<u8>>(&key)?.as_ref() == Some(&message) {
                // Head had passed the slot (and deleted its claim) before we claimed it:
                // no peek reads it there. Had the message been delivered, the slot would
                // hold a tombstone or nothing.
                self.client.delete(&key)?;
                continue;
            }
            return Ok(());
        }
        Err(contended(&tail_key))
    }

    fn peek_offline(
        &self,
        device: &str,
        max: usize,
    ) -> Result<Vec<(u64, OfflineMessage)>, StoreError> {
        let mut queued = self.queued(device)?;
        queued.truncate(max);
        Ok(queued)
    }

    fn remove_offline(&self, device: &str, key: u64) -> Result<(), StoreError> {
        let slot_key = self.queue_key(device, key);
        // Only a message becomes a tombstone: a key below head is not a slot to resurrect.
        if let Some(Slot::Message(_)) = self.get_record::<Slot>(&slot_key)? {
            self.client
                .set(&slot_key, &encode(&Slot::Tombstone)?[..], NO_EXPIRY)?;
        }
        self.advance_head(device)
    }

    fn offline_len(&self, device: &str) -> Result<usize, StoreError> {
        Ok(self.queued(device)?.len())
    }

    fn append_history(&self, entry: &HistoryEntry) -> Result<(), StoreError> {
        let seq = self.incr(&self.key(format_args!("history:next")))?;
        let slot = (seq - 1) % MAX_HISTORY as u64;
        let key = self.key(format_args!("history:{slot}"));
        self.client
            .set(&key, &encode(&(seq, entry))?[..], NO_EXPIRY)?;
        Ok(())
    }

    fn recent_history(&self, n: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        let last = self.counter(&self.key(format_args!("history:next")))?;
        let count = n.min(MAX_HISTORY) as u64;
        let seqs: Vec<u64> = (last.saturating_sub(count) + 1..=last).collect();
        let keys: Vec<String> = seqs
            .iter()
            .map(|seq| self.key(format_args!("history:{}", (seq - 1) % MAX_HISTORY as u64)))
            .collect();
        let slots = self.get_many::<(u64, HistoryEntry)>(&keys)?;
        // A slot still holding an older lap (its writer is not done yet) is left out.
        Ok(seqs
            .into_iter()
            .zip(slots)
            .filter_map(|(seq, slot)| slot.filter(|(at, _)| *at == seq).map(|(_, e)| e))
            .collect())
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Every call above is already on the server; memcached has no disk to flush to.
        Ok(())
    }
}

#[cfg(test)]
#[path = "memcached_tests.rs"]
mod tests;
