//! Store conformance tests: what every backend must do, run against each of them by
//! [`conformance_tests!`] in the backend's test module. Backend-specific behaviour (sled's
//! lock and reopen, memcached's sharing between clients) stays in the backend's own tests.

use super::{
    HistoryEntry, OfflineMessage, Store, StoreError, User, MAX_HISTORY, MAX_OFFLINE_PER_DEVICE,
};

/// One `#[test]` per conformance function; `$open` yields `(guard, store)`, the guard
/// keeping the backend alive (a temp dir, a memcached process) for the test.
macro_rules! conformance_tests {
    ($open:expr) => {
        crate::store::conformance::conformance_tests!(@each $open;
            uids_start_at_one_and_increase,
            a_raised_uid_counter_never_goes_back,
            users_round_trip,
            device_registry_upserts_and_touches,
            offline_queue_is_fifo_per_device_peek_does_not_remove,
            offline_queue_is_bounded,
            history_keeps_the_last_entries_in_order);
    };
    (@each $open:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                let (_guard, store) = $open;
                crate::store::conformance::$name(&store);
            }
        )*
    };
}
pub(crate) use conformance_tests;

/// Every conformance check in turn, on one store (fresh: it must be empty).
#[allow(dead_code)]
pub(crate) fn conformance(store: &dyn Store) {
    uids_start_at_one_and_increase(store);
    users_round_trip(store);
    device_registry_upserts_and_touches(store);
    offline_queue_is_fifo_per_device_peek_does_not_remove(store);
    offline_queue_is_bounded(store);
    history_keeps_the_last_entries_in_order(store);
}

fn msg(text: &str) -> OfflineMessage {
    OfflineMessage {
        from: "1".into(),
        text: text.into(),
        at: 5,
    }
}

pub(crate) fn uids_start_at_one_and_increase(store: &dyn Store) {
    assert_eq!(store.next_uid().unwrap(), 1);
    assert_eq!(store.next_uid().unwrap(), 2);
    assert_eq!(store.next_uid().unwrap(), 3);
}

pub(crate) fn a_raised_uid_counter_never_goes_back(store: &dyn Store) {
    // Raising a counter that does not exist yet (memcached lost it) sets it.
    store.raise_uid_counter(10).unwrap();
    assert_eq!(store.next_uid().unwrap(), 11);
    store.raise_uid_counter(5).unwrap();
    let next = store.next_uid().unwrap();
    assert!(
        next > 11,
        "raising below the counter changes nothing, got {next}"
    );
    store.raise_uid_counter(100).unwrap();
    assert_eq!(store.next_uid().unwrap(), 101);
}

pub(crate) fn users_round_trip(store: &dyn Store) {
    let bob = User {
        nick: "bob".into(),
        created: 9,
    };
    store.put_user(2, &bob).unwrap();
    assert_eq!(store.user(2).unwrap(), Some(bob));
    assert_eq!(store.user(1).unwrap(), None);
    let renamed = User {
        nick: "robert".into(),
        created: 9,
    };
    store.put_user(2, &renamed).unwrap();
    assert_eq!(store.user(2).unwrap(), Some(renamed));
}

pub(crate) fn device_registry_upserts_and_touches(store: &dyn Store) {
    let first = store.upsert_device("dev-1", "0.1.0", 100).unwrap();
    assert_eq!((first.first_seen, first.last_seen), (100, 100));
    let again = store.upsert_device("dev-1", "0.2.0", 150).unwrap();
    assert_eq!(
        (again.firmware.as_str(), again.first_seen, again.last_seen),
        ("0.2.0", 100, 150)
    );
    assert!(store
        .touch_device("dev-1", 160, Some(("temp_mC", 21500)))
        .unwrap());
    assert!(!store.touch_device("ghost", 160, None).unwrap());
    assert_eq!(store.device("ghost").unwrap(), None);
    let record = store.device("dev-1").unwrap().unwrap();
    assert_eq!(record.last_seen, 160);
    assert_eq!(record.telemetry.get("temp_mC"), Some(&21500));
    store.upsert_device("dev-0", "x", 1).unwrap();
    // An id with a space and a colon is still one device of its own.
    store.upsert_device("dev 0:a", "y", 2).unwrap();
    let ids: Vec<String> = store
        .devices()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["dev 0:a", "dev-0", "dev-1"]);
    assert_eq!(store.device("dev 0:a").unwrap().unwrap().firmware, "y");
}

pub(crate) fn offline_queue_is_fifo_per_device_peek_does_not_remove(store: &dyn Store) {
    for text in ["a", "b", "c"] {
        store.push_offline("dev", &msg(text)).unwrap();
    }
    // A device whose id extends another's keeps its own queue.
    store.push_offline("dev2", &msg("other")).unwrap();
    let peeked = store.peek_offline("dev", 10).unwrap();
    let texts: Vec<&str> = peeked.iter().map(|(_, m)| m.text.as_str()).collect();
    assert_eq!(texts, ["a", "b", "c"]);
    assert_eq!(store.peek_offline("dev", 10).unwrap().len(), 3);
    assert_eq!(store.peek_offline("dev", 2).unwrap().len(), 2);
    store.remove_offline("dev", peeked[0].0).unwrap();
    assert_eq!(store.peek_offline("dev", 1).unwrap()[0].1.text, "b");
    assert_eq!(store.offline_len("dev").unwrap(), 2);
    assert_eq!(store.offline_len("dev2").unwrap(), 1);
    // Removing out of order, and twice, is harmless.
    store.remove_offline("dev", peeked[2].0).unwrap();
    store.remove_offline("dev", peeked[2].0).unwrap();
    let left: Vec<String> = store
        .peek_offline("dev", 10)
        .unwrap()
        .into_iter()
        .map(|(_, m)| m.text)
        .collect();
    assert_eq!(left, ["b"]);
    store.remove_offline("dev", peeked[1].0).unwrap();
    assert_eq!(store.offline_len("dev").unwrap(), 0);
    assert_eq!(store.offline_len("nobody").unwrap(), 0);
    assert!(store.peek_offline("nobody", 10).unwrap().is_empty());
}

pub(crate) fn offline_queue_is_bounded(store: &dyn Store) {
    for i in 0..MAX_OFFLINE_PER_DEVICE {
        store.push_offline("dev", &msg(&i.to_string())).unwrap();
    }
    let err = store.push_offline("dev", &msg("one too many")).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::QueueFull {
                max: MAX_OFFLINE_PER_DEVICE,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(store.offline_len("dev").unwrap(), MAX_OFFLINE_PER_DEVICE);
    let (key, first) = store.peek_offline("dev", 1).unwrap()[0].clone();
    assert_eq!(first.text, "0");
    store.remove_offline("dev", key).unwrap();
    store.push_offline("dev", &msg("fits again")).unwrap();
    let all = store.peek_offline("dev", usize::MAX).unwrap();
    assert_eq!(all.len(), MAX_OFFLINE_PER_DEVICE);
    assert_eq!(all[0].1.text, "1");
    assert_eq!(all[MAX_OFFLINE_PER_DEVICE - 1].1.text, "fits again");
}

pub(crate) fn history_keeps_the_last_entries_in_order(store: &dyn Store) {
    assert!(store.recent_history(10).unwrap().is_empty());
    for i in 0..MAX_HISTORY + 5 {
        let entry = HistoryEntry {
            at: i as u64,
            uid: "1".into(),
            nick: "a".into(),
            text: i.to_string(),
        };
        store.append_history(&entry).unwrap();
    }
    let all = store.recent_history(usize::MAX).unwrap();
    assert_eq!(all.len(), MAX_HISTORY);
    assert_eq!(all[0].text, "5");
    let last: Vec<String> = store
        .recent_history(2)
        .unwrap()
        .into_iter()
        .map(|e| e.text)
        .collect();
    assert_eq!(
        last,
        [(MAX_HISTORY + 3).to_string(), (MAX_HISTORY + 4).to_string()]
    );
    assert!(store.recent_history(0).unwrap().is_empty());
}
