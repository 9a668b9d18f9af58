//! Tests of the memcached backend that need its internals; the shared conformance set
//! runs against both backends from `store/mod.rs`.
use super::*;
use crate::store::testing::MemcachedServer;

fn open() -> (MemcachedServer, MemcachedStore) {
    let server = MemcachedServer::start();
    let store = MemcachedStore::connect(&[server.addr()], "test:").unwrap();
    (server, store)
}

crate::store::conformance::conformance_tests!(open());

#[test]
fn a_corrupt_uid_counter_is_an_error_not_a_panic() {
    let (_server, store) = open();
    store
        .client
        .set("test:uid", u64::MAX - 1, NO_EXPIRY)
        .unwrap();
    assert!(matches!(store.next_uid(), Err(StoreError::UidsExhausted)));
    assert!(matches!(store.next_uid(), Err(StoreError::UidsExhausted)));
}

#[test]
fn uids_are_unique_across_workers_sharing_a_server() {
    let server = MemcachedServer::start();
    let stores: Vec<MemcachedStore> = (0..2)
        .map(|_| MemcachedStore::connect(&[server.addr()], "shared:").unwrap())
        .collect();
    let mut uids: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let store = &stores[i % 2];
                scope.spawn(move || {
                    (0..200)
                        .map(|_| store.next_uid().unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    uids.sort_unstable();
    assert_eq!(uids, (1..=800).collect::<Vec<u64>>());
    // Another prefix is another chat: its own counter.
    let other = MemcachedStore::connect(&[server.addr()], "other:").unwrap();
    assert_eq!(other.next_uid().unwrap(), 1);
}

#[test]
fn workers_share_devices_and_queues_under_contention() {
    let server = MemcachedServer::start();
    let a = MemcachedStore::connect(&[server.addr()], "s:").unwrap();
    let b = MemcachedStore::connect(&[server.addr()], "s:").unwrap();
    std::thread::scope(|scope| {
        for (w, store) in [&a, &b].into_iter().enumerate() {
            scope.spawn(move || {
                for i in 0..20 {
                    store
                        .upsert_device(&format!("dev {w}-{i}"), "1", 1)
                        .unwrap();
                    let msg = OfflineMessage {
                        from: w.to_string(),
                        text: i.to_string(),
                        at: 0,
                    };
                    store.push_offline("dev", &msg).unwrap();
                }
            });
        }
    });
    assert_eq!(b.devices().unwrap().len(), 40);
    assert_eq!(a.device("dev 1-3").unwrap().unwrap().firmware, "1");
    // One worker delivers while the other queues: nothing lost, nothing twice.
    let mut seen = Vec::new();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 20..40 {
                let msg = OfflineMessage {
                    from: "b".into(),
                    text: i.to_string(),
                    at: 0,
                };
                b.push_offline("dev", &msg).unwrap();
            }
        });
        for _ in 0..200 {
            for (key, msg) in a.peek_offline("dev", 5).unwrap() {
                seen.push(format!("{}/{}", msg.from, msg.text));
                a.remove_offline("dev", key).unwrap();
            }
        }
    });
    for (key, msg) in a.peek_offline("dev", MAX_OFFLINE_PER_DEVICE).unwrap() {
        seen.push(format!("{}/{}", msg.from, msg.text));
        a.remove_offline("dev", key).unwrap();
    }
    let total = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!((total, seen.len()), (60, 60));
    assert_eq!(a.offline_len("dev").unwrap(), 0);
}

#[test]
fn an_unreachable_server_is_named_at_connect() {
    let server = MemcachedServer::start();
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let servers = [server.addr(), dead.clone()];
    let err = MemcachedStore::connect(&servers, "x:")
        .err()
        .expect("a dead server must fail the connect");
    let text = err.to_string();
    assert!(text.contains(&dead), "{text}");
    assert!(text.contains(&server.addr()), "{text}");
}

#[test]
fn ids_escape_to_distinct_safe_keys() {
    assert_eq!(escape("dev-1.a_b"), "dev-1.a_b");
    assert_eq!(escape("a b:%"), "a%20b%3A%25");
    assert_ne!(escape("a%20"), escape("a "));
}
