//! What the chat keeps across restarts: uid counter, users, device registry, offline
//! messages for devices, recent history. [`Store`] is the interface; `sled` (embedded, one
//! worker process, durable) and `memcached` (shared by several workers) the backends.
//!
//! Methods are synchronous: the sled backend answers from memory and flushes in the
//! background, the memcached one makes a few loopback or LAN round trips, so a call is cheap
//! enough to make from the (single) event loop. The store knows nothing about gateways,
//! sessions or chat lines.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod conformance;
mod memcached;
mod sled;
#[cfg(test)]
pub(crate) mod testing;

pub(crate) use self::memcached::build_client;
pub use self::memcached::{MemcachedStore, CAS_TRIES};
pub use self::sled::SledStore;

/// Offline messages kept per device. A device away for a long time must not grow the
/// store without limit; 1000 short texts is far more than anyone reads on a small screen.
pub const MAX_OFFLINE_PER_DEVICE: usize = 1000;
/// Chat lines kept in the history; older ones are dropped as new ones arrive.
pub const MAX_HISTORY: usize = 1000;

/// A human user, keyed by their numeric uid.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Nickname chosen at login.
    pub nick: String,
    /// When the uid was given out (unix seconds).
    pub created: u64,
}

/// What the registry knows about a device.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Firmware version from its last `Hello`.
    pub firmware: String,
    /// First `Hello` ever (unix seconds).
    pub first_seen: u64,
    /// Last frame or connection change (unix seconds).
    pub last_seen: u64,
    /// Last value of each telemetry name it reported.
    pub telemetry: BTreeMap<String, i64>,
}

impl DeviceRecord {
    /// The record after a `Hello` with `firmware` at `now`: a new device's first record, or
    /// the old one with its firmware and last-seen updated. The one rule every backend's
    /// `upsert_device` stores.
    pub fn after_hello(old: Option<&DeviceRecord>, firmware: &str, now: u64) -> DeviceRecord {
        match old {
            Some(record) => DeviceRecord {
                firmware: firmware.to_string(),
                last_seen: now,
                ..record.clone()
            },
            None => DeviceRecord {
                firmware: firmware.to_string(),
                first_seen: now,
                last_seen: now,
                telemetry: BTreeMap::new(),
            },
        }
    }

    /// Marks the device seen at `now`, keeping a telemetry value if one came; what every
    /// backend's `touch_device` stores.
    pub fn touch(&mut self, now: u64, telemetry: Option<(&str, i64)>) {
        self.last_seen = now;
        if let Some((name, value)) = telemetry {
            self.telemetry.insert(name.to_string(), value);
        }
    }
}

/// A chat message waiting for a device to come back.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct OfflineMessage {
    /// Sender's uid or device id.
    pub from: String,
    /// The text (already checked to fit a device frame).
    pub text: String,
    /// When it was queued (unix seconds).
    pub at: u64,
}

/// One line said to everyone.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// When (unix seconds).
    pub at: u64,
    /// Sender's uid or device id.
    pub uid: String,
    /// Sender's nickname.
    pub nick: String,
    /// The text.
    pub text: String,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the data directory (sled allows one process at a time).
    #[error("data directory {} is in use by another worker process (sled allows one process at a time)", path.display())]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// The device already has [`MAX_OFFLINE_PER_DEVICE`] messages waiting.
    #[error("offline queue of device {device} is full ({max} messages)")]
    QueueFull {
        /// The device.
        device: String,
        /// The bound.
        max: usize,
    },
    /// A memcached server did not answer at start.
    #[error("memcached server {server} is unreachable (servers: {servers}): {cause}")]
    Unreachable {
        /// The server that failed.
        server: String,
        /// Every configured server.
        servers: String,
        /// Cause.
        cause: String,
    },
    /// A `gets`/`cas` update lost [`CAS_TRIES`] races in a row.
    #[error("store record {key} changed under us {tries} times in a row; giving up")]
    Contended {
        /// The memcached key.
        key: String,
        /// Attempts made.
        tries: usize,
    },
    /// A memcached request failed (connection, timeout, server error).
    #[error("memcached: {0}")]
    Memcached(#[from] memcache::MemcacheError),
    /// The stored uid counter is at its end (in practice: a corrupt `next_uid` record).
    #[error("no uids left to give out (stored counter at u64::MAX)")]
    UidsExhausted,
    /// The database failed (I/O, corruption).
    #[error("store: {0}")]
    Db(#[from] ::sled::Error),
    /// A stored record could not be decoded (written by an incompatible version?).
    #[error("store record: {0}")]
    Codec(#[from] postcard::Error),
}

/// Persistent state of the chat. Implementations are shared between tasks (`Arc<dyn Store>`).
pub trait Store: Send + Sync {
    /// A new human uid: 1, 2, 3, ... never given out twice, also across restarts.
    fn next_uid(&self) -> Result<u64, StoreError>;

    /// Makes sure no uid up to `at_least` is handed out from now on. For a counter that
    /// went back while uids it gave are still in use (a memcached server restarted or evicted
    /// it); a counter already past `at_least` is left alone.
    fn raise_uid_counter(&self, at_least: u64) -> Result<(), StoreError>;

    /// Records (or replaces) user `uid`.
    fn put_user(&self, uid: u64, user: &User) -> Result<(), StoreError>;
    /// User `uid`, if known.
    fn user(&self, uid: u64) -> Result<Option<User>, StoreError>;

    /// Registers a device's `Hello`: creates the record (first_seen = now) or updates its
    /// firmware and last_seen. Returns the record as stored.
    fn upsert_device(&self, id: &str, firmware: &str, now: u64)
        -> Result<DeviceRecord, StoreError>;
    /// Notes that a known device was heard from, with a telemetry value if it sent one.
    /// Returns `false` (and stores nothing) for a device never registered.
    fn touch_device(
        &self,
        id: &str,
        now: u64,
        telemetry: Option<(&str, i64)>,
    ) -> Result<bool, StoreError>;
    /// Device `id`, if registered.
    fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError>;
    /// Every registered device, ordered by id.
    fn devices(&self) -> Result<Vec<(String, DeviceRecord)>, StoreError>;

    /// Queues a message for an offline device; [`StoreError::QueueFull`] past the bound.
    fn push_offline(&self, device: &str, msg: &OfflineMessage) -> Result<(), StoreError>;
    /// Up to `max` queued messages of `device`, oldest first, with their keys. Nothing is
    /// removed: call [`Store::remove_offline`] once a message was handed to the gateway, so a
    /// worker dying mid-delivery loses none (it may deliver one twice).
    fn peek_offline(
        &self,
        device: &str,
        max: usize,
    ) -> Result<Vec<(u64, OfflineMessage)>, StoreError>;
    /// Removes one queued message after delivery.
    fn remove_offline(&self, device: &str, key: u64) -> Result<(), StoreError>;
    /// Number of messages queued for `device`.
    fn offline_len(&self, device: &str) -> Result<usize, StoreError>;

    /// Appends a line to the history, dropping the oldest past [`MAX_HISTORY`].
    fn append_history(&self, entry: &HistoryEntry) -> Result<(), StoreError>;
    /// The last `n` lines, oldest first.
    fn recent_history(&self, n: usize) -> Result<Vec<HistoryEntry>, StoreError>;

    /// Writes everything to disk; called at shutdown.
    fn flush(&self) -> Result<(), StoreError>;
}
