//! The chat on a shared memcached store, with real processes: memcached losing everything
//! (a restart, a `flush_all`, an eviction) while users are online must not make the chat
//! hand a newcomer the uid of someone online; the routing table knows who is.

#[path = "../../worker/src/store/testing.rs"]
#[allow(dead_code)]
mod memcached_server;

use std::io::{Read, Write};
use std::time::Duration;

use hil::harness::{wait_greeted, Farm, GatewaySpec, WorkerSpec};
use memcached_server::MemcachedServer;

/// Empties the server, as a restart would.
fn flush_all(addr: &str) {
    let mut conn = std::net::TcpStream::connect(addr).expect("connect memcached");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    conn.write_all(b"flush_all\r\n").expect("flush_all");
    let mut answer = [0u8; 4];
    conn.read_exact(&mut answer).expect("answer");
    assert_eq!(&answer, b"OK\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uids_stay_unique_when_memcached_forgets_the_counter() {
    let store = MemcachedServer::start();
    let mut farm = Farm::new();
    let gw = GatewaySpec::loopback(1, "memcached-store-test");
    farm.gateway(&gw);
    let mut worker = WorkerSpec::new(&[&gw], &farm.dir().join("unused"));
    worker.memcached = vec![store.addr()];
    farm.worker(&worker);
    wait_greeted(gw.telnet, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let mut online = Vec::new();
    for nick in ["alice", "bob", "carol"] {
        online.push(gw.user(nick).await);
    }
    flush_all(&store.addr());
    let mut dave = gw.user("dave").await;
    let uid = dave.uid().to_owned();
    for user in &online {
        assert_ne!(user.uid(), uid, "dave got {}'s uid", user.name);
    }
    // And the private messages go to the right one.
    let alice = &mut online[0];
    dave.whisper_and_wait(alice, "hello alice").await;
    alice.whisper_and_wait(&mut dave, "hello dave").await;
}
