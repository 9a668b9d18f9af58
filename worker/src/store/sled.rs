//! The sled backend of [`Store`]: one sled database in the worker's data directory.
//!
//! sled is embedded and single-process: it takes an exclusive lock on its database file,
//! and a second worker opening the same directory gets [`StoreError::Locked`] within a second.
//! Records are postcard-encoded; numeric keys are big-endian so sled's order is theirs.
//!
//! Users are packed [`USERS_PER_BLOCK`] to a key (each login appends its record to its
//! block with sled's merge): sled splits a leaf every 16 keys and copies it on every insert,
//! so a key per user made the user record most of a login's cost. Records written before
//! (one key per user, tree `users`) are still read.
//!
//! History is a ring of blocks of lines, for the same reason (module `history`).

mod history;

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::{Db, IVec, Tree};

use self::history::HistoryRing;
use super::{
    DeviceRecord, HistoryEntry, OfflineMessage, Store, StoreError, User, MAX_OFFLINE_PER_DEVICE,
};

/// Key of the highest uid reserved, in the default tree.
const NEXT_UID_KEY: &[u8] = b"next_uid";
/// Uids reserved (and flushed) at once. A crash after a reservation skips at most this many
/// numbers, which keeps uids unique without an fsync per login; a clean shutdown gives the
/// unused ones back.
const UID_BLOCK: u64 = 1024;
/// Users whose records share one key in `user_blocks` (uid / this).
const USERS_PER_BLOCK: u64 = 64;
/// A block grown past this by records replaced in place is compacted (one record per uid)
/// as the next record lands. Above what 64 distinct records can take (a 32-character nick
/// is at most 128 bytes), so a block of distinct users is never rewritten.
const COMPACT_BLOCK_BYTES: usize = 16 * 1024;
/// Ends a device id inside an offline-queue key. UTF-8 never contains 0xFF, so no device's
/// prefix is a prefix of another's.
const ID_END: u8 = 0xFF;

/// The sled-backed store. Cheap to share behind an `Arc`.
pub struct SledStore {
    db: Db,
    /// `uid / USERS_PER_BLOCK` -> the block's `(uid, User)` records, oldest first.
    user_blocks: Tree,
    /// `uid` -> `User`: the layout before blocks, read only.
    users: Tree,
    devices: Tree,
    offline: Tree,
    history: Arc<HistoryRing>,
    /// The reserved uids not handed out yet.
    uids: Mutex<UidBlock>,
}

/// Uids `next..=last` are reserved on disk and not handed out yet; empty when `next > last`.
#[derive(Debug, Default)]
struct UidBlock {
    next: u64,
    last: u64,
}

/// How long [`SledStore::open`] waits for a locked database before giving up.
pub const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(1000);

impl SledStore {
    /// Opens (or creates) the store in `dir`. Fails fast with [`StoreError::Locked`] when
    /// another process has it open: after [`LOCK_PATIENCE`], which covers a worker that is
    /// still exiting as its replacement starts (and sled's background threads letting go of
    /// the file a moment after a store is dropped).
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let db = open_db(dir)?;
        let history = HistoryRing::open(&db)?;
        let user_blocks = db.open_tree("user_blocks")?;
        user_blocks.set_merge_operator(append_user);
        Ok(SledStore {
            user_blocks,
            users: db.open_tree("users")?,
            devices: db.open_tree("devices")?,
            offline: db.open_tree("offline")?,
            history,
            db,
            uids: Mutex::new(UidBlock::default()),
        })
    }
}

/// Opens the database in `dir`, waiting up to [`LOCK_PATIENCE`] for its file lock.
fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => return Ok(db),
            // sled 0.34 try-locks the db file and reports a failure only as this message.
            Err(sled::Error::Io(ref io)) if io.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::Locked {
                        path: dir.to_path_buf(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(other) => return Err(StoreError::Db(other)),
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    Ok(postcard::to_allocvec(value)?)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    Ok(postcard::from_bytes(bytes)?)
}

/// The merge operator of `user_blocks`: appends a `(uid, User)` record to its block, and
/// compacts a block that records replaced in place have grown past [`COMPACT_BLOCK_BYTES`].
/// A block that does not decode to its end is never compacted (that would drop what follows
/// the damage); it is kept as it is and [`SledStore::user`] reports it.
fn append_user(_key: &[u8], block: Option<&[u8]>, record: &[u8]) -> Option<Vec<u8>> {
    let mut merged = Vec::with_capacity(block.map_or(0, <[u8]>::len) + record.len());
    merged.extend_from_slice(block.unwrap_or_default());
    merged.extend_from_slice(record);
    if merged.len() > COMPACT_BLOCK_BYTES {
        let Ok(records) = block_records(&merged) else {
            tracing::error!("a damaged user block is not compacted");
            return Some(merged);
        };
        let latest: std::collections::BTreeMap<u64, User> = records.into_iter().collect();
        merged.clear();
        for record in latest {
            // Re-encoding what was just decoded cannot fail; a record that somehow would is
            // better lost than the whole block.
            if let Ok(bytes) = postcard::to_allocvec(&record) {
                merged.extend_from_slice(&bytes);
            }
        }
    }
    Some(merged)
}

/// The `(uid, User)` records of a block, oldest first; an error if any of it does not decode.
fn block_records(mut block: &[u8]) -> Result<Vec<(u64, User)>, StoreError> {
    let mut records = Vec::new();
    while !block.is_empty() {
        let (record, rest) = postcard::take_from_bytes::<(u64, User)>(block)?;
        records.push(record);
        block = rest;
    }
    Ok(records)
}

fn u64_of(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

fn queue_prefix(device: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(device.len() + 1 + 8);
    key.extend_from_slice(device.as_bytes());
    key.push(ID_END);
    key
}

fn queue_key(device: &str, seq: u64) -> Vec<u8> {
    let mut key = queue_prefix(device);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

impl SledStore {
    /// Read-modify-write of one device record, atomic against other callers.
    fn update_device(
        &self,
        id: &str,
        mut change: impl FnMut(Option<DeviceRecord>) -> Option<DeviceRecord>,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let mut failure = None;
        let stored = self
            .devices
            .update_and_fetch(id.as_bytes(), |old: Option<&[u8]>| {
                let old_record = match old.map(decode::<DeviceRecord>).transpose() {
                    Ok(record) => record,
                    Err(err) => {
                        failure = Some(err);
                        return old.map(IVec::from);
                    }
                };
                match change(old_record).map(|record| encode(&record)) {
                    Some(Ok(bytes)) => Some(IVec::from(bytes)),
                    Some(Err(err)) => {
                        failure = Some(err);
                        old.map(IVec::from)
                    }
                    None => old.map(IVec::from),
                }
            })?;
        if let Some(err) = failure {
            return Err(err);
        }
        stored.map(|bytes| decode(&bytes)).transpose()
    }
}

impl Store for SledStore {
    fn next_uid(&self) -> Result<u64, StoreError> {
        let mut block = self.uids.lock().unwrap_or_else(|e| e.into_inner());
        if block.next == 0 || block.next > block.last {
            let stored = self
                .db
                .update_and_fetch(NEXT_UID_KEY, |old: Option<&[u8]>| {
                    let high = old.and_then(u64_of).unwrap_or(0);
                    // Saturating: a corrupt counter near u64::MAX is refused below, not a panic.
                    Some(IVec::from(
                        &high.saturating_add(UID_BLOCK).to_be_bytes()[..],
                    ))
                })?;
            // Durable before any of these uids is handed out: a crash must not reuse one.
            self.db.flush()?;
            let last = stored.as_deref().and_then(u64_of).unwrap_or(UID_BLOCK);
            if last == u64::MAX {
                return Err(StoreError::UidsExhausted);
            }
            *block = UidBlock {
                next: last.saturating_sub(UID_BLOCK) + 1,
                last,
            };
        }
        let uid = block.next;
        block.next += 1;
        Ok(uid)
    }

    fn raise_uid_counter(&self, at_least: u64) -> Result<(), StoreError> {
        let mut block = self.uids.lock().unwrap_or_else(|e| e.into_inner());
        if block.next > at_least {
            return Ok(());
        }
        if block.next != 0 && at_least < block.last {
            // Inside the block already reserved (and flushed): skip ahead in it.
            block.next = at_least + 1;
            return Ok(());
        }
        self.db
            .update_and_fetch(NEXT_UID_KEY, |old: Option<&[u8]>| {
                let high = old.and_then(u64_of).unwrap_or(0);
                Some(IVec::from(&high.max(at_least).to_be_bytes()[..]))
            })?;
        self.db.flush()?;
        // The next uid comes from a fresh block above the stored counter.
        *block = UidBlock { next: 0, last: 0 };
        Ok(())
    }

    fn put_user(&self, uid: u64, user: &User) -> Result<(), StoreError> {
        let block = (uid / USERS_PER_BLOCK).to_be_bytes();
        self.user_blocks.merge(block, encode(&(uid, user))?)?;
        Ok(())
    }

    fn user(&self, uid: u64) -> Result<Option<User>, StoreError> {
        if let Some(block) = self
            .user_blocks
            .get((uid / USERS_PER_BLOCK).to_be_bytes())?
        {
            let latest = block_records(&block)?
                .into_iter()
                .rev()
                .find(|(id, _)| *id == uid)
                .map(|(_, user)| user);
            if latest.is_some() {
                return Ok(latest);
            }
        }
        self.users
            .get(uid.to_be_bytes())?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    fn upsert_device(
        &self,
        id: &str,
        firmware: &str,
        now: u64,
    ) -> Result<DeviceRecord, StoreError> {
        let stored = self.update_device(id, |old| {
            Some(DeviceRecord::after_hello(old.as_ref(), firmware, now))
        })?;
        // update_device returns what the closure stored, and it always stores a record.
        stored.ok_or_else(|| {
            StoreError::Db(sled::Error::ReportableBug("upsert stored nothing".into()))
        })
    }

    fn touch_device(
        &self,
        id: &str,
        now: u64,
        telemetry: Option<(&str, i64)>,
    ) -> Result<bool, StoreError> {
        let mut known = false;
        self.update_device(id, |old| {
            let mut record = old?;
            known = true;
            record.touch(now, telemetry);
            Some(record)
        })?;
        Ok(known)
    }

    fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.devices
            .get(id.as_bytes())?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    fn devices(&self) -> Result<Vec<(String, DeviceRecord)>, StoreError> {
        self.devices
            .iter()
            .map(|item| {
                let (key, value) = item?;
                Ok((String::from_utf8_lossy(&key).into_owned(), decode(&value)?))
            })
            .collect()
    }

    fn push_offline(&self, device: &str, msg: &OfflineMessage) -> Result<(), StoreError> {
        if self.offline_len(device)? >= MAX_OFFLINE_PER_DEVICE {
            return Err(StoreError::QueueFull {
                device: device.to_string(),
                max: MAX_OFFLINE_PER_DEVICE,
            });
        }
        // generate_id is monotonic across restarts, so keys keep arrival order.
        let seq = self.db.generate_id()?;
        self.offline.insert(queue_key(device, seq), encode(msg)?)?;
        // The sender is told "queued": make it survive a crash.
        self.offline.flush()?;
        Ok(())
    }

    fn peek_offline(
        &self,
        device: &str,
        max: usize,
    ) -> Result<Vec<(u64, OfflineMessage)>, StoreError> {
        let prefix = queue_prefix(device);
        self.offline
            .scan_prefix(&prefix)
            .take(max)
            .map(|item| {
                let (key, value) = item?;
                let seq = key.get(prefix.len()..).and_then(u64_of).unwrap_or(0);
                Ok((seq, decode(&value)?))
            })
            .collect()
    }

    fn remove_offline(&self, device: &str, key: u64) -> Result<(), StoreError> {
        self.offline.remove(queue_key(device, key))?;
        Ok(())
    }

    fn offline_len(&self, device: &str) -> Result<usize, StoreError> {
        Ok(self
            .offline
            .scan_prefix(queue_prefix(device))
            .keys()
            .count())
    }

    fn append_history(&self, entry: &HistoryEntry) -> Result<(), StoreError> {
        self.history.append(entry)
    }

    fn recent_history(&self, n: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        self.history.recent(n)
    }

    fn flush(&self) -> Result<(), StoreError> {
        // A history error does not keep the rest from reaching the disk.
        let history = self.history.write_pending();
        let mut block = self.uids.lock().unwrap_or_else(|e| e.into_inner());
        if block.next != 0 && block.next <= block.last {
            // Give the unused reservation back so a clean restart keeps uids dense.
            let given_back = self.db.compare_and_swap(
                NEXT_UID_KEY,
                Some(&block.last.to_be_bytes()[..]),
                Some(&(block.next - 1).to_be_bytes()[..]),
            )?;
            if given_back.is_ok() {
                block.last = block.next - 1;
            }
        }
        self.db.flush()?;
        history
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        (dir, store)
    }

    crate::store::conformance::conformance_tests!(open());

    fn msg(text: &str) -> OfflineMessage {
        OfflineMessage {
            from: "1".into(),
            text: text.into(),
            at: 5,
        }
    }

    fn user(nick: &str) -> User {
        User {
            nick: nick.into(),
            created: 7,
        }
    }

    #[test]
    fn users_share_blocks_survive_a_reopen_and_old_records_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            // The layout before blocks: one key per user.
            store
                .users
                .insert(5u64.to_be_bytes(), encode(&user("old")).unwrap())
                .unwrap();
            for uid in 1000..1000 + 3 * USERS_PER_BLOCK {
                store.put_user(uid, &user(&format!("u{uid}"))).unwrap();
            }
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            store.user_blocks.len(),
            4,
            "1000..1192 spans four blocks of 64"
        );
        for uid in [1000, 1023, 1024, 1191] {
            assert_eq!(store.user(uid).unwrap(), Some(user(&format!("u{uid}"))));
        }
        assert_eq!(store.user(1192).unwrap(), None);
        assert_eq!(store.user(5).unwrap(), Some(user("old")));
    }

    #[test]
    fn a_user_replaced_over_and_over_does_not_grow_its_block() {
        let (_dir, store) = open();
        store.put_user(64, &user("neighbour")).unwrap();
        for n in 0..10_000 {
            store.put_user(65, &user(&format!("nick{n}"))).unwrap();
        }
        let block = store.user_blocks.get(1u64.to_be_bytes()).unwrap().unwrap();
        assert!(
            block.len() <= COMPACT_BLOCK_BYTES + 64,
            "block of {} bytes",
            block.len()
        );
        assert_eq!(store.user(65).unwrap(), Some(user("nick9999")));
        assert_eq!(store.user(64).unwrap(), Some(user("neighbour")));
    }

    #[test]
    fn a_damaged_user_block_is_an_error_and_compaction_never_drops_what_follows() {
        let (_dir, store) = open();
        store.put_user(0, &user("first")).unwrap();
        // uid 5, a 2-byte nick that is not UTF-8, created 7: no record.
        let damage = [0x05, 0x02, 0xff, 0xfe, 0x07];
        store
            .user_blocks
            .merge(0u64.to_be_bytes(), &damage[..])
            .unwrap();
        store.put_user(1, &user("second")).unwrap();
        assert!(matches!(store.user(1), Err(StoreError::Codec(_))));
        for n in 0..2_000 {
            store.put_user(2, &user(&format!("nick{n}"))).unwrap();
        }
        let block = store.user_blocks.get(0u64.to_be_bytes()).unwrap().unwrap();
        assert!(
            block.len() > COMPACT_BLOCK_BYTES,
            "the damaged block was compacted"
        );
        assert!(block.windows(damage.len()).any(|w| w == damage));
    }

    #[test]
    fn a_corrupt_uid_counter_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let near_end = (u64::MAX - 1).to_be_bytes();
        store.db.insert(NEXT_UID_KEY, &near_end[..]).unwrap();
        assert!(matches!(store.next_uid(), Err(StoreError::UidsExhausted)));
        assert!(matches!(store.next_uid(), Err(StoreError::UidsExhausted)));
    }

    #[test]
    fn uids_start_at_one_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(store.next_uid().unwrap(), 1);
            assert_eq!(store.next_uid().unwrap(), 2);
            store
                .put_user(
                    2,
                    &User {
                        nick: "bob".into(),
                        created: 9,
                    },
                )
                .unwrap();
            store.upsert_device("dev-1", "0.1.0", 100).unwrap();
            store.push_offline("dev-1", &msg("kept")).unwrap();
            store
                .append_history(&HistoryEntry {
                    at: 1,
                    uid: "2".into(),
                    nick: "bob".into(),
                    text: "hi".into(),
                })
                .unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.next_uid().unwrap(), 3);
        assert_eq!(store.user(2).unwrap().unwrap().nick, "bob");
        assert_eq!(store.user(1).unwrap(), None);
        assert_eq!(store.device("dev-1").unwrap().unwrap().firmware, "0.1.0");
        assert_eq!(store.peek_offline("dev-1", 10).unwrap()[0].1.text, "kept");
        assert_eq!(store.recent_history(10).unwrap()[0].text, "hi");
    }

    #[test]
    fn a_second_open_of_the_same_dir_fails_fast_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path()).unwrap();
        let started = std::time::Instant::now();
        let err = SledStore::open(dir.path())
            .err()
            .expect("second open must fail");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("is in use by another worker process"),
            "{text}"
        );
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
    }

    #[test]
    fn the_lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        drop(SledStore::open(dir.path()).unwrap());
        SledStore::open(dir.path()).unwrap();
    }
}
