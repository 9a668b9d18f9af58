//! `NetLab`: hosts in network namespaces on a bridge, for cluster tests that need separate
//! machines. The real gateway runs on one host and the real worker on another; the test
//! process reaches them through the bridge like a user's machine, and a cut host is
//! unreachable until restored. On the same bridge, a device whose first gateway answers
//! nothing moves on to the next after its connect timeout.
//!
//! Where namespaces cannot be made (not root, no iproute2, a locked-down container) each
//! test prints `netns unavailable: <reason>; skipped` and passes.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use hil::device::{run_device, DeviceConfig, Transport, CONNECT_TIMEOUT};
use hil::harness::{bins, nickname_prompt, NetLab, TelnetUser, PROBE_PATIENCE, START_TIMEOUT};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a connect may take before it counts as failed: a cut host answers nothing, not
/// even a RST, so a connect to it would otherwise wait minutes.
const CONNECT_PATIENCE: Duration = Duration::from_secs(2);

/// A lab with `hosts`, or `None` (with the reason printed) where namespaces cannot be made.
/// Once the check passed, failing to make the lab is a defect, not a reason to skip.
fn lab(hosts: &[&str]) -> Option<NetLab> {
    if let Err(why) = NetLab::check() {
        println!("netns unavailable: {why}; skipped");
        return None;
    }
    Some(
        NetLab::create(hosts)
            .unwrap_or_else(|e| panic!("NetLab::check passed, create failed: {e}")),
    )
}

/// The `ip` command, where Debian puts it if PATH does not have it.
fn ip() -> std::process::Command {
    let sbin = Path::new("/usr/sbin/ip");
    std::process::Command::new(if sbin.is_file() {
        sbin
    } else {
        Path::new("ip")
    })
}

/// Network namespaces that exist now, by name.
fn namespaces() -> Vec<String> {
    let out = ip()
        .args(["netns", "list"])
        .output()
        .expect("running ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Does a TCP connect from the test process (the root namespace) to `addr` succeed in time?
async fn connects(addr: SocketAddr) -> Result<(), String> {
    match tokio::time::timeout(CONNECT_PATIENCE, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {CONNECT_PATIENCE:?}")),
    }
}

/// Does a TCP connect from inside `host` to `addr` succeed in time? Uses bash's `/dev/tcp`.
async fn connects_from(lab: &NetLab, host: &str, addr: SocketAddr) -> bool {
    let script = format!("exec 3<>/dev/tcp/{}/{}", addr.ip(), addr.port());
    let mut cmd = lab.command(host, "bash");
    cmd.args(["-c", &script]).kill_on_drop(true);
    match tokio::time::timeout(CONNECT_PATIENCE, cmd.output()).await {
        Ok(out) => out.expect("running bash in the namespace").status.success(),
        Err(_) => false,
    }
}

/// Waits until `addr` accepts from the test process, panicking after [`START_TIMEOUT`].
async fn wait_accepting(addr: SocketAddr, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        match connects(addr).await {
            Ok(()) => return started.elapsed(),
            Err(e) if started.elapsed() > START_TIMEOUT => {
                panic!("{what} at {addr} never accepted: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A `switchboard.toml` putting every gateway port on `gateway` (an address of host "a") and
/// the worker's sled store in `data_dir`.
fn config(gateway: std::net::Ipv4Addr, data_dir: &Path) -> String {
    format!(
        r#"# Written by tests/netns.rs: the gateway on host a, the worker on host b.
[gateway]
telnet_listen = "{gateway}:8480"
device_listen = "{gateway}:8481"
worker_listen = "{gateway}:8482"
secret = "netns-test"

[worker]
gateways = ["{gateway}:8482"]
secret = "netns-test"
store = "sled"
data_dir = {data_dir:?}
"#
    )
}

/// The gateway on host a and the worker on host b link through the bridge and greet a user in
/// the root namespace; cutting a makes it unreachable from the root and from b, restoring it
/// brings it back; the gateway's pid is the program's (not `ip`'s) and it is in a's
/// namespace; and nothing of the lab is left once it is dropped.
#[tokio::test]
async fn hosts_reach_each_other_through_the_bridge_until_cut() {
    let Some(lab) = lab(&["a", "b"]) else {
        return;
    };
    let names = [lab.namespace("a").to_owned(), lab.namespace("b").to_owned()];
    println!(
        "lab: a = {} ({}), b = {} ({}), bridge {}",
        lab.ip("a"),
        names[0],
        lab.ip("b"),
        names[1],
        lab.bridge_ip()
    );
    let dir = tempfile::tempdir().expect("a temp dir");
    let config_path = dir.path().join("switchboard.toml");
    std::fs::write(&config_path, config(lab.ip("a"), &dir.path().join("data")))
        .expect("writing the config");
    let config_arg = config_path.to_str().expect("temp paths are UTF-8");
    let bins = bins();
    let telnet = lab.addr("a", 8480);

    let mut gateway = lab.spawn(
        "a",
        "gateway",
        &bins.gateway,
        &["-c", config_arg],
        &dir.path().join("gateway.log"),
    );
    // `ip netns exec` execs: the child is the gateway itself, in a's namespace.
    let pid = gateway.id().expect("the gateway's pid");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("the gateway's exe");
    assert_eq!(
        exe,
        std::fs::canonicalize(&bins.gateway).expect("the gateway binary"),
        "pid {pid} is not the gateway"
    );
    let netns_of = |p: &str| std::fs::metadata(p).map(|m| m.ino()).expect(p);
    assert_eq!(
        netns_of(&format!("/proc/{pid}/ns/net")),
        netns_of(&format!("/run/netns/{}", names[0])),
        "the gateway is not in a's namespace"
    );
    assert_ne!(
        netns_of(&format!("/proc/{pid}/ns/net")),
        netns_of("/proc/self/ns/net")
    );

    let took = wait_accepting(telnet, "the gateway on a").await;
    println!("gateway on a accepts from the root namespace after {took:?}");
    assert!(
        connects_from(&lab, "b", telnet).await,
        "b cannot reach the gateway on a"
    );
    println!("b reaches a");

    // The worker on b links to the gateway on a, so a user here is greeted.
    let mut worker = lab.spawn(
        "b",
        "worker",
        &bins.worker,
        &["-c", config_arg],
        &dir.path().join("worker.log"),
    );
    let started = Instant::now();
    loop {
        gateway.assert_running();
        worker.assert_running();
        let mut user = TelnetUser::connect(telnet, "user")
            .await
            .expect("connecting to the gateway on a");
        match user
            .try_expect_prompt(nickname_prompt(), PROBE_PATIENCE)
            .await
        {
            Ok(_) => break,
            Err(e) if started.elapsed() > START_TIMEOUT => {
                panic!("the worker on b never linked:\n{e}\n{}", worker.log())
            }
            Err(_) => {}
        }
    }
    println!(
        "a user in the root namespace was greeted through the worker on b after {:?}",
        started.elapsed()
    );

    lab.cut("a");
    let refused = connects(telnet)
        .await
        .expect_err("the gateway on a is reachable while a is cut");
    println!("a cut: connect from the root namespace fails: {refused}");
    assert!(
        !connects_from(&lab, "b", telnet).await,
        "b reaches a while a is cut"
    );
    gateway.assert_running();

    lab.restore("a");
    let took = wait_accepting(telnet, "the gateway on a after restore").await;
    println!("a restored: accepts again after {took:?}");
    assert!(
        connects_from(&lab, "b", telnet).await,
        "b cannot reach a after restore"
    );

    // SIGKILL through Proc reaches the gateway itself: its port refuses at once.
    let status = gateway.kill().await;
    assert_eq!(status.signal(), Some(9), "the gateway's exit: {status}");
    let after_kill = connects(telnet)
        .await
        .expect_err("the gateway on a accepts after being killed");
    println!("gateway killed ({status}): connect fails: {after_kill}");

    drop(worker);
    drop(gateway);
    drop(lab);
    let left = namespaces();
    for name in &names {
        assert!(!left.contains(name), "{name} is left after the lab dropped");
    }
    println!("after drop no namespace of the lab is left");
}

/// Dropping a lab SIGKILLs what still runs in its hosts before deleting them, so a test that
/// drops its lab before its processes leaks nothing; and two labs at once share no name and
/// no subnet.
#[tokio::test]
async fn dropping_a_lab_kills_what_still_runs_inside() {
    let Some(first) = lab(&["solo"]) else {
        return;
    };
    let second = NetLab::create(&["solo"]).expect("a second lab");
    assert_ne!(first.namespace("solo"), second.namespace("solo"));
    assert_ne!(
        first.bridge_ip().octets()[..3],
        second.bridge_ip().octets()[..3],
        "two labs on one subnet"
    );
    drop(second);

    let name = first.namespace("solo").to_owned();
    let bridge_ip = first.bridge_ip();
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut sleeper = first.spawn(
        "solo",
        "sleep",
        Path::new("sleep"),
        &["600"],
        &dir.path().join("sleep.log"),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    sleeper.assert_running();

    drop(first);
    let status = sleeper
        .wait_timeout(Duration::from_secs(5))
        .await
        .expect("the process in the host survived its lab");
    assert_eq!(status.signal(), Some(9), "sleep's exit: {status}");
    assert!(!namespaces().contains(&name), "{name} is left");
    let addrs = ip()
        .args(["-o", "addr", "show", "to", &bridge_ip.to_string()])
        .output()
        .expect("running ip addr");
    assert!(
        addrs.stdout.is_empty(),
        "the bridge's address is left: {}",
        String::from_utf8_lossy(&addrs.stdout)
    );
    println!("dropping the lab killed sleep ({status}) and removed {name} and {bridge_ip}");
}

/// A device whose first gateway answers nothing at all (an address on the lab's bridge whose
/// frames go to a MAC nobody has: no RST, no ARP failure) reaches its second gateway after
/// one [`CONNECT_TIMEOUT`], not after the kernel's two minutes of SYN retries.
#[tokio::test]
async fn a_device_moves_on_from_a_gateway_that_answers_nothing() {
    let Some(lab) = lab(&["a"]) else {
        return;
    };
    let [x, y, z, _] = lab.bridge_ip().octets();
    let silent = std::net::Ipv4Addr::new(x, y, z, 250);
    let route = ip()
        .args(["-o", "route", "get", &silent.to_string()])
        .output()
        .expect("running ip route get");
    let route = String::from_utf8_lossy(&route.stdout);
    let bridge = route
        .split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .unwrap_or_else(|| panic!("no route to {silent}: {route}"));
    let neigh = ip()
        .args(["neigh", "replace", &silent.to_string()])
        .args([
            "lladdr",
            "02:00:00:00:00:01",
            "nud",
            "permanent",
            "dev",
            bridge,
        ])
        .status()
        .expect("running ip neigh");
    assert!(neigh.success(), "pinning {silent} to a MAC nobody has");

    let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateways = vec![
        SocketAddr::from((silent, 8481)).to_string(),
        live.local_addr().unwrap().to_string(),
    ];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let device = tokio::spawn(run_device(
        DeviceConfig::new("fo1", Transport::Tcp(gateways)),
        async move {
            let _ = stopped.await;
        },
    ));
    let accepted = tokio::time::timeout(CONNECT_TIMEOUT * 3, live.accept()).await;
    let took = started.elapsed();
    assert!(
        accepted.is_ok(),
        "the device did not reach its second gateway within {:?}",
        CONNECT_TIMEOUT * 3
    );
    assert!(
        took >= CONNECT_TIMEOUT,
        "the silent gateway did not hold the connect ({took:?}): the test proves nothing"
    );
    println!("device reached its second gateway {took:?} after its first answered nothing");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), device).await;
}
