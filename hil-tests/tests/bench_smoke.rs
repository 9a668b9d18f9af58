//! Smoke test of the benchmark suite (`bench/`): every `switchboard-bench` scenario, tiny,
//! against a real Switchboard and against the reference server (the devices scenario, over
//! ptys and device TCP, against Switchboard alone), prints the JSON line it promises and
//! loses nothing. Performance is measured by `cargo xtask bench`, never here:
//! no figure is asserted.

use std::net::SocketAddr;
use std::time::Duration;

use hil::harness::{bins, wait_greeted, Cluster, ClusterOptions, Proc};

/// A tiny run of each scenario.
const SCENARIOS: &[&[&str]] = &[
    &["private", "--users", "4", "--secs", "0.5", "--rate", "200"],
    &["private", "--users", "4", "--secs", "0.5", "--window", "2"],
    &[
        "broadcast",
        "--users",
        "4",
        "--senders",
        "2",
        "--secs",
        "0.5",
        "--rate",
        "50",
    ],
    &["connect", "--concurrency", "2", "--secs", "0.5"],
    &[
        "overload",
        "--users",
        "4",
        "--secs",
        "0.5",
        "--window",
        "20",
        "--settle-secs",
        "0.2",
    ],
    &["idle", "--conns", "20", "--hold-secs", "0.1"],
    &["idle", "--conns", "20", "--hold-secs", "0.1", "--login"],
];

/// Simulated devices, tiny; where they connect (`--pty-dir`, `--device-tcp`) is appended.
const DEVICES: &[&str] = &["devices", "--devices", "2", "--secs", "0.5"];

async fn run_all(telnet: SocketAddr, watch: &[(&str, u32)], label: &str) {
    for (n, scenario) in SCENARIOS.iter().enumerate() {
        run(telnet, watch, label, &format!("s{n}x"), scenario).await;
    }
}

/// Runs one scenario, checks its report and returns it.
async fn run(
    telnet: SocketAddr,
    watch: &[(&str, u32)],
    label: &str,
    prefix: &str,
    scenario: &[&str],
) -> String {
    let mut cmd = tokio::process::Command::new(&bins().bench);
    cmd.args(["--telnet", &telnet.to_string(), "--label", label])
        .args(["--prefix", prefix]);
    for (name, pid) in watch {
        cmd.args(["--watch", &format!("{name}={pid}")]);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.args(scenario).output())
        .await
        .expect("switchboard-bench did not finish")
        .expect("running switchboard-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{label} {scenario:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let json = stdout.trim();
    assert!(
        json.starts_with('{') && json.ends_with('}') && !json.contains('\n'),
        "{json}"
    );
    for key in [
        "\"lost\":0,",
        "\"errors\":0,",
        &format!("\"label\":\"{label}\""),
    ] {
        assert!(
            json.contains(key),
            "{label} {scenario:?}: no {key} in {json}"
        );
    }
    assert!(
        !json.contains("\"delivered\":0,"),
        "{label} {scenario:?}: nothing arrived: {json}"
    );
    json.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_against_switchboard_and_the_reference() {
    let mut c = Cluster::start_with(ClusterOptions::default().serial("dev0").serial("dev1")).await;
    let gateway = c.gateway().id().expect("gateway running");
    let worker = c.worker().and_then(|w| w.id()).expect("worker running");
    let watch = [("gateway", gateway), ("worker", worker)];
    run_all(c.telnet, &watch, "switchboard").await;
    let pty_dir = c.dir().to_str().expect("a UTF-8 temp dir").to_owned();
    let ptys = [DEVICES, &["--pty-dir", &pty_dir]].concat();
    let tcp_addr = c.device_addr.to_string();
    let tcp = [DEVICES, &["--device-tcp", &tcp_addr]].concat();
    for (prefix, args) in [("p", ptys), ("t", tcp)] {
        let json = run(c.telnet, &watch, "switchboard", prefix, &args).await;
        // Both directions carried frames, and the framing was measured.
        for key in [
            "\"frames_up_per_s\":",
            "\"frames_down_per_s\":",
            "\"wire_bytes_per_chat_frame\":",
            "\"wire_bytes_per_ack\":",
        ] {
            assert!(json.contains(key), "devices {args:?}: no {key} in {json}");
        }
    }
    c.assert_alive();

    let dir = tempfile::tempdir().expect("temp dir");
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let mut reference = Proc::spawn(
        "chat-reference",
        &bins().reference,
        &["--listen", &addr.to_string()],
        &dir.path().join("reference.log"),
    );
    wait_greeted(addr, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = reference.id().expect("reference running");
    run_all(addr, &[("reference", pid)], "reference").await;
    reference.assert_running();
}
