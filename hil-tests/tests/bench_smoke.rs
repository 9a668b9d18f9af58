//! Smoke test of the benchmark suite (`bench/`): every `switchboard-bench` scenario, tiny,
//! against a real Switchboard and against the reference server, prints the JSON line it
//! promises and loses nothing. Performance is measured by `cargo xtask bench`, never here:
//! no figure is asserted.

use std::net::SocketAddr;
use std::time::Duration;

use hil::harness::{bins, wait_greeted, Cluster, Proc};

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
];

async fn run_all(telnet: SocketAddr, watch: &[(&str, u32)], label: &str) {
    for (n, scenario) in SCENARIOS.iter().enumerate() {
        let mut cmd = tokio::process::Command::new(&bins().bench);
        cmd.args(["--telnet", &telnet.to_string(), "--label", label])
            .args(["--prefix", &format!("s{n}x")]);
        for (name, pid) in watch {
            cmd.args(["--watch", &format!("{name}={pid}")]);
        }
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.args(*scenario).output())
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
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_against_switchboard_and_the_reference() {
    let mut c = Cluster::start().await;
    let gateway = c.gateway().id().expect("gateway running");
    let worker = c.worker().and_then(|w| w.id()).expect("worker running");
    run_all(
        c.telnet,
        &[("gateway", gateway), ("worker", worker)],
        "switchboard",
    )
    .await;
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
