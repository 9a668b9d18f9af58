//! Discovery through memcached with real processes: workers configured with no gateway at
//! all find every gateway through the records gateways announce, pick up a gateway that
//! starts later, drop one that stops, pick it up again, and keep chatting when one
//! discovery server and then every discovery server is gone.

#[path = "../../worker/src/store/testing.rs"]
#[allow(dead_code)]
mod memcached_server;

use std::time::Duration;

use hil::harness::{wait_greeted, Farm, GatewaySpec, WorkerSpec};
use memcached_server::MemcachedServer;
use tokio::time::Instant;

const SECRET: &str = "discovery-test";
/// A gateway is found within a lookup period (2 s) of its first announcement, plus the
/// link's connect; generous for a loaded CI machine.
const FOUND: Duration = Duration::from_secs(20);

/// Waits until both workers are linked to `gateway`: it greets users once one is, and a
/// worker that has not found it yet answers `! no such uid` for its users (README,
/// "Running a cluster").
async fn linked_by_both(gateway: &GatewaySpec) {
    gateway
        .wait_workers(2, FOUND)
        .await
        .unwrap_or_else(|e| panic!("workers never all found gateway {}: {e}", gateway.id));
}

/// Waits until every worker's log has `needle`.
async fn logged_by_all(farm: &Farm, workers: &[usize], needle: &str) {
    let deadline = Instant::now() + FOUND;
    loop {
        let missing: Vec<usize> = workers
            .iter()
            .copied()
            .filter(|&w| !farm.procs[w].log().contains(needle))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "workers {missing:?} never logged {needle:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_find_gateways_that_come_and_go_and_survive_discovery_outages() {
    let disc_a = MemcachedServer::start();
    let disc_b = MemcachedServer::start();
    let store = MemcachedServer::start();
    let discovery = vec![disc_a.addr(), disc_b.addr()];
    let mut farm = Farm::new();

    let mut gw1 = GatewaySpec::loopback(1, SECRET);
    gw1.discovery = discovery.clone();
    let mut gw2 = GatewaySpec::loopback(2, SECRET);
    gw2.discovery = discovery.clone();
    farm.gateway(&gw1);
    let mut spec = WorkerSpec::new(&[&gw1], &farm.dir().join("unused"));
    spec.gateways.clear();
    spec.discovery = discovery.clone();
    spec.memcached = vec![store.addr()];
    let workers = [farm.worker(&spec), farm.worker(&spec)];
    wait_greeted(gw1.telnet, FOUND)
        .await
        .unwrap_or_else(|e| panic!("workers never found gateway 1: {e}"));
    linked_by_both(&gw1).await;

    // One discovery server down: the gateway that starts now is found through the other.
    drop(disc_a);
    let gw2_proc = farm.gateway(&gw2);
    wait_greeted(gw2.telnet, FOUND)
        .await
        .unwrap_or_else(|e| panic!("workers never found gateway 2: {e}"));
    linked_by_both(&gw2).await;
    let mut alice = gw1.user("alice").await;
    let mut bob = gw2.user("bob").await;
    assert_ne!(alice.uid(), bob.uid(), "uids are unique across workers");
    alice.chat_both_ways(&mut bob, "two gateways").await;

    // Gateway 2 stops: its record goes, every worker drops it; it comes back and is found.
    farm.procs[gw2_proc].stop().await;
    bob.expect_closed(Duration::from_secs(5)).await;
    logged_by_all(&farm, &workers, "gateway left the discovery records").await;
    let gw2_again = farm.gateway(&gw2);
    wait_greeted(gw2.telnet, FOUND)
        .await
        .unwrap_or_else(|e| panic!("workers never found gateway 2 again: {e}"));
    linked_by_both(&gw2).await;
    let mut bob = gw2.user("bob").await;
    alice.chat_both_ways(&mut bob, "gateway 2 is back").await;

    // No discovery server at all: every worker keeps its links, the chat goes on.
    drop(disc_b);
    logged_by_all(
        &farm,
        &workers,
        "discovery lookup failed; keeping the gateways we have",
    )
    .await;
    alice.chat_both_ways(&mut bob, "without discovery").await;
    let mut carol = gw2.user("carol").await;
    alice
        .chat_both_ways(&mut carol, "a newcomer without discovery")
        .await;
    for &p in workers.iter().chain([&gw2_again]) {
        farm.procs[p].assert_running();
    }
}
