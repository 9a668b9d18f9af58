//! A Switchboard cluster on separate hosts: network namespaces joined by veth pairs on a
//! bridge (see `hil::harness::NetLab`), with memcached, two gateways, two workers and the
//! devices each on a host of its own, and the users in the root namespace.
//!
//! The chat works across the gateways (private, broadcast, devices, `/who`); a worker is
//! killed and everything goes on; a gateway is killed, its users reconnect to the other one
//! and its device fails over there. Where namespaces cannot be made (not root, no `ip`) the
//! test prints why and is skipped; it never fakes the hosts.
//!
//! `cargo test -p hil-tests --test cluster -- --nocapture` prints what it did, with times.

use std::path::Path;
use std::time::Duration;

use hil::harness::{
    bins, wait_greeted, GatewaySpec, Matcher, NetLab, Proc, TelnetUser, WorkerSpec,
};
use tokio::time::Instant;

const SECRET: &str = "cluster-test";
const PREFIX: &str = "cluster:";
const MEMCACHED_PORT: u16 = 11211;
/// Processes starting on a loaded machine and workers finding gateways (a 2 s lookup).
const READY: Duration = Duration::from_secs(30);
/// A device notices its gateway is gone at once (the socket closes), then fails over.
const REJOIN: Duration = Duration::from_secs(15);

/// Prints a step of the test with the time since the start.
struct Steps(Instant);

impl Steps {
    fn done(&self, what: &str) {
        println!("[{:>6.2}s] {what}", self.0.elapsed().as_secs_f64());
    }
}

fn gateway(lab: &NetLab, host: &str, id: u16, memcached: &str) -> GatewaySpec {
    GatewaySpec {
        id,
        telnet: lab.addr(host, 8480),
        device: lab.addr(host, 8481),
        worker: lab.addr(host, 8482),
        secret: SECRET.to_owned(),
        discovery: vec![memcached.to_owned()],
        prefix: PREFIX.to_owned(),
    }
}

fn start(lab: &NetLab, dir: &Path, host: &str, program: &Path, config: &str) -> Proc {
    let path = dir.join(format!("{host}.toml"));
    std::fs::write(&path, config).expect("writing a config");
    let log = dir.join(format!("{host}.log"));
    let args = ["-c", path.to_str().expect("temp paths are UTF-8")];
    lab.spawn(host, host, program, &args, &log)
}

/// `DEV:ping` answered with `pong`, within `limit` (retrying while the device rejoins).
async fn ping_device(user: &mut TelnetUser, dev: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let pong = format!("{dev} ({dev}) -> you: pong");
    loop {
        user.send_line(&format!("{dev}:ping")).await;
        let left = deadline.saturating_duration_since(Instant::now());
        let patience = left.min(Duration::from_secs(2));
        if user.try_expect_line(pong.as_str(), patience).await.is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{dev} never answered {} within {limit:?}",
            user.name
        );
    }
}

/// Waits until something answers on `addr`.
async fn wait_accepting(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + READY;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "nothing answers on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_on_separate_hosts_survives_losing_a_worker_and_a_gateway() {
    let steps = Steps(Instant::now());
    if let Err(why) = NetLab::check() {
        println!("netns unavailable: {why}; skipped");
        return;
    }
    let bins = bins();
    // The lab first: its processes (declared after it) are dropped before it.
    let lab = NetLab::create(&["mc", "gw1", "gw2", "w1", "w2", "dev"]).expect("creating the hosts");
    let dir = tempfile::Builder::new()
        .prefix("switchboard-cluster-")
        .tempdir()
        .expect("temp dir");
    for host in ["mc", "gw1", "gw2", "w1", "w2", "dev"] {
        println!("host {host}: {}", lab.ip(host));
    }
    steps.done("6 hosts created");

    let mc = lab.addr("mc", MEMCACHED_PORT).to_string();
    let mc_ip = lab.ip("mc").to_string();
    let port = MEMCACHED_PORT.to_string();
    let memcached_args = [
        "-l", &mc_ip, "-p", &port, "-U", "0", "-m", "64", "-u", "root",
    ];
    let _memcached = lab.spawn(
        "mc",
        "memcached",
        Path::new("memcached"),
        &memcached_args,
        &dir.path().join("mc.log"),
    );
    wait_accepting(lab.addr("mc", MEMCACHED_PORT)).await;

    let gw1 = gateway(&lab, "gw1", 1, &mc);
    let gw2 = gateway(&lab, "gw2", 2, &mc);
    let mut gw1_proc = start(&lab, dir.path(), "gw1", &bins.gateway, &gw1.config_text());
    let _gw2_proc = start(&lab, dir.path(), "gw2", &bins.gateway, &gw2.config_text());
    let mut worker = WorkerSpec::new(&[&gw1], dir.path());
    worker.gateways.clear();
    worker.discovery = vec![mc.clone()];
    worker.memcached = vec![mc.clone()];
    worker.prefix = PREFIX.to_owned();
    let mut w1 = start(&lab, dir.path(), "w1", &bins.worker, &worker.config_text());
    let _w2 = start(&lab, dir.path(), "w2", &bins.worker, &worker.config_text());
    for spec in [&gw1, &gw2] {
        wait_greeted(spec.telnet, READY)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for spec in [&gw1, &gw2] {
        spec.wait_workers(2, READY)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    steps.done("memcached, 2 gateways and 2 workers up on 5 hosts; each gateway has both workers");

    // One device per gateway, each knowing both (in a different order).
    let device = |id: &str, first: &GatewaySpec, second: &GatewaySpec| {
        let tcp = format!("{},{}", first.device, second.device);
        let args = ["--id", id, "--tcp", &tcp, "--telemetry-secs", "0", "-v"];
        let log = dir.path().join(format!("dev-{id}.log"));
        lab.spawn("dev", id, &bins.device, &args, &log)
    };
    let _dev1 = device("dev1", &gw1, &gw2);
    let _dev2 = device("dev2", &gw2, &gw1);

    let mut alice = gw1.user("alice").await;
    let mut bob = gw2.user("bob").await;
    assert_ne!(
        alice.uid(),
        bob.uid(),
        "human uids are unique across workers"
    );
    alice
        .chat_both_ways(&mut bob, "alice on gw1, bob on gw2")
        .await;
    steps.done("alice (gw1) and bob (gw2): private and broadcast both ways");
    ping_device(&mut alice, "dev2", READY).await;
    ping_device(&mut bob, "dev1", READY).await;
    steps.done("alice pings dev2 (on gw2), bob pings dev1 (on gw1): pong");
    alice.send_line("/who").await;
    let header = alice
        .expect_line(Matcher::starts_with("* online: 2 users, 2 devices"))
        .await;
    println!("         /who: {}", header.line);

    // A worker dies: the gateways hand its events to the other one.
    w1.kill().await;
    for spec in [&gw1, &gw2] {
        spec.wait_workers(1, READY)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    steps.done("worker w1 killed (SIGKILL); each gateway has 1 worker left");
    alice.chat_both_ways(&mut bob, "after w1 died").await;
    let mut carol = gw1.user("carol").await;
    carol
        .chat_both_ways(&mut bob, "carol joins gw1 after w1 died")
        .await;
    steps.done("chat across the gateways goes on through w2; a newcomer on gw1 is served");

    // A gateway dies: its users reconnect to the other one, its device fails over.
    gw1_proc.kill().await;
    steps.done("gateway gw1 killed (SIGKILL)");
    alice.expect_closed(Duration::from_secs(5)).await;
    carol.expect_closed(Duration::from_secs(5)).await;
    ping_device(&mut bob, "dev1", REJOIN).await;
    steps.done("dev1 failed over to gw2 and answers bob");
    let mut alice = gw2.user("alice").await;
    alice.chat_both_ways(&mut bob, "alice back, on gw2").await;
    ping_device(&mut alice, "dev2", READY).await;
    ping_device(&mut alice, "dev1", READY).await;
    steps.done("alice reconnected to gw2: chats with bob, pings dev1 and dev2");
    alice.send_line("/who").await;
    let header = alice
        .expect_line(Matcher::starts_with("* online: 2 users, 2 devices"))
        .await;
    println!("         /who: {}", header.line);
}
