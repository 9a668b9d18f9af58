//! The `switchboard-worker` binary: flags, the log line a person watches for, SIGTERM,
//! a second worker on the same data directory, and workers sharing a real memcached.

mod common;
// The library's own memcached harness: a real server on a free port, killed on drop.
#[path = "../src/store/testing.rs"]
mod memcached_server;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-worker");

/// A running worker process whose output lines arrive on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Proc { child, lines }
    }

    /// Waits for an output line containing every one of `parts`.
    fn expect_line(&self, parts: &[&str]) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if parts.iter().all(|p| line.contains(p)) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("no line with {parts:?}; saw {seen:#?}");
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "worker did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal_term(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal_term();
        self.wait_exit()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn links_logs_and_stops_cleanly_on_sigterm() {
    let gateway = FakeGateway::bind(3).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchboard.toml");
    // The file's gateway is wrong; the flag replaces it.
    std::fs::write(
        &config,
        "[gateway]\nid = 3\n[worker]\ngateways = [\"127.0.0.1:1\"]\nsecret = \"wrong\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut worker = Proc::spawn(&[
        "-c",
        config.to_str().unwrap(),
        "--gateway",
        &gateway.addr,
        "--secret",
        SECRET,
        "--data-dir",
        data.to_str().unwrap(),
        "--name",
        "w-test",
    ]);
    let (mut transport, hello) = gateway.accept_raw().await;
    assert!(
        matches!(&hello, protocol::link::WorkerToGateway::Hello { name, .. } if name == "w-test"),
        "{hello:?}"
    );
    write(
        &mut transport,
        &protocol::link::GatewayToWorker::Welcome {
            version: protocol::link::LINK_VERSION,
            gateway: 3,
        },
    )
    .await;
    let addr = format!("addr={}", gateway.addr);
    let logged =
        tokio::task::block_in_place(|| worker.expect_line(&["worker linked", "gateway=3", &addr]));
    assert!(
        !logged.contains('\u{1b}'),
        "colour codes in a piped log: {logged:?}"
    );
    // SIGTERM is a hand-over: Leaving, then the gateway closes its side and the worker
    // exits 0 with the store released, well before the supervisor's kill.
    worker.signal_term();
    assert_eq!(
        read(&mut transport).await,
        Some(protocol::link::WorkerToGateway::Leaving)
    );
    {
        use tokio::io::AsyncWriteExt;
        transport.get_mut().shutdown().await.unwrap();
    }
    let started = std::time::Instant::now();
    let status = tokio::task::block_in_place(|| worker.wait_exit());
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < worker::runtime::LEAVE_GRACE);
    assert_eq!(
        read(&mut transport).await,
        None,
        "link still open after SIGTERM"
    );
    worker::SledStore::open(&data).expect("data dir still locked after the worker exited");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_worker_on_the_same_data_dir_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    // Nothing listens on port 1: the first worker keeps retrying, holding the store.
    let args = [
        "-c",
        "/dev/null",
        "--gateway",
        "127.0.0.1:1",
        "--data-dir",
        data,
    ];
    let mut first = Proc::spawn(&args);
    tokio::task::block_in_place(|| first.expect_line(&["worker started"]));
    let mut second = Proc::spawn(&args);
    let started = std::time::Instant::now();
    let status = tokio::task::block_in_place(|| second.wait_exit());
    assert!(!status.success());
    assert!(started.elapsed() < Duration::from_secs(5));
    let error = tokio::task::block_in_place(|| {
        second.expect_line(&["is in use by another worker process"])
    });
    assert!(error.contains(data), "{error}");
    assert!(tokio::task::block_in_place(|| first.terminate()).success());
}

#[test]
fn a_missing_config_file_is_named() {
    let mut worker = Proc::spawn(&["-c", "/nonexistent/sb.toml"]);
    assert!(!worker.wait_exit().success());
    worker.expect_line(&["/nonexistent/sb.toml"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_share_a_memcached_store_and_an_unreachable_one_is_named() {
    let server = memcached_server::MemcachedServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchboard.toml");
    std::fs::write(
        &config,
        format!(
            "[worker]\nstore = \"memcached\"\nmemcached = [\"{}\"]\nmemcached_prefix = \"bin:\"\n",
            server.addr()
        ),
    )
    .unwrap();
    // Nothing listens on port 1: both keep retrying their gateway, sharing the store.
    let args = ["-c", config.to_str().unwrap(), "--gateway", "127.0.0.1:1"];
    let mut first = Proc::spawn(&args);
    tokio::task::block_in_place(|| first.expect_line(&["worker started"]));
    let mut second = Proc::spawn(&args);
    tokio::task::block_in_place(|| second.expect_line(&["worker started"]));
    assert!(tokio::task::block_in_place(|| first.terminate()).success());
    assert!(tokio::task::block_in_place(|| second.terminate()).success());

    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    std::fs::write(
        &config,
        format!("[worker]\nstore = \"memcached\"\nmemcached = [\"{dead}\"]\n"),
    )
    .unwrap();
    let mut worker = Proc::spawn(&args);
    let status = tokio::task::block_in_place(|| worker.wait_exit());
    assert!(!status.success());
    tokio::task::block_in_place(|| worker.expect_line(&["memcached", "unreachable", &dead]));
}
