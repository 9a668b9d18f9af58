//! The `switchboard` supervisor end to end: `start -d`, `status`, `reload` while two users
//! chat (no connection dropped), a crashed worker restarted, a second `start` refused, and
//! `stop` ending every process.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use hil::harness::{bins, TelnetUser};

/// One `switchboard` invocation in `dir` with its config.
fn switchboard(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(&bins().switchboard)
        .current_dir(dir)
        .args(["-c", "switchboard.toml"])
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("running switchboard");
    eprintln!(
        "$ switchboard {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// The pid of the process named `name` in `status` output.
fn pid_of(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| {
            let mut cols = l.split_whitespace();
            (cols.next() == Some(name)).then(|| cols.next().unwrap_or("-").to_owned())
        })
        .unwrap_or_else(|| panic!("no {name} line in status:\n{status}"))
}

/// Stops the supervisor even when the test fails half-way.
struct StopOnDrop<'a>(&'a Path);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = switchboard(self.0, &["stop"]);
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.0.join("run/switchboard.log")).unwrap_or_default();
            eprintln!("--- run/switchboard.log ---\n{log}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_status_reload_restart_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (telnet, device, link) = (free_addr(), free_addr(), free_addr());
    std::fs::write(
        dir.path().join("switchboard.toml"),
        format!(
            "[gateway]\ntelnet_listen = \"{telnet}\"\ndevice_listen = \"{device}\"\n\
             worker_listen = \"{link}\"\nsecret = \"s3cret\"\n\
             [worker]\ngateways = [\"{link}\"]\nsecret = \"s3cret\"\ndata_dir = \"data\"\n\
             [supervisor]\nrun_dir = \"run\"\ndemo_device = true\n"
        ),
    )
    .expect("writing config");
    let dir = dir.path();

    let out = switchboard(dir, &["start", "-d"]);
    assert!(out.status.success(), "start -d failed");
    let _stop = StopOnDrop(dir);
    assert!(stdout(&out).contains("switchboard started"));

    // A second start is refused while the first runs.
    let again = switchboard(dir, &["start", "-d"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));

    let mut alice = TelnetUser::connect(telnet, "alice").await.expect("connect");
    alice.login("alice").await;
    let mut bob = TelnetUser::connect(telnet, "bob").await.expect("connect");
    bob.login("bob").await;
    alice
        .expect_line(format!("* bob ({}) joined", bob.uid()))
        .await;
    // The demo device joined the chat too.
    alice.send_line("demo:ping").await;
    alice.expect_line("demo (demo) -> you: pong").await;

    let status = stdout(&switchboard(dir, &["status"]));
    assert!(
        status.contains("2 telnet user(s), 1 device(s), 1 worker(s)"),
        "{status}"
    );
    let worker_before = pid_of(&status, "worker");
    let gateway_before = pid_of(&status, "gateway");

    // Reload: a new worker process, the same gateway, and both users still connected.
    let out = switchboard(dir, &["reload"]);
    assert!(out.status.success(), "reload failed");
    let status = stdout(&switchboard(dir, &["status"]));
    assert!(status.contains("1 reload(s)"), "{status}");
    assert_ne!(pid_of(&status, "worker"), worker_before, "{status}");
    assert_eq!(pid_of(&status, "gateway"), gateway_before, "{status}");
    let line = format!("after reload {}", std::process::id());
    let expected = format!("alice ({}): {line}", alice.uid());
    let mut delivered = false;
    for _ in 0..50 {
        // Until the new worker has linked, the gateway holds the events; a line sent then is
        // delivered late, not lost, so one send suffices. Retrying covers nothing but a slow link.
        alice.send_line(&line).await;
        if bob
            .try_expect_line(expected.as_str(), Duration::from_secs(2))
            .await
            .is_ok()
        {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "no chat after reload");

    // A worker killed with SIGKILL is restarted by the supervisor.
    let worker = pid_of(&status, "worker");
    let killed = Command::new("kill")
        .args(["-9", &worker])
        .status()
        .expect("kill");
    assert!(killed.success());
    let mut restarted = String::new();
    for _ in 0..100 {
        restarted = stdout(&switchboard(dir, &["status"]));
        let pid = pid_of(&restarted, "worker");
        if pid != worker && pid != "-" && restarted.contains("1 worker(s)") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(pid_of(&restarted, "worker"), worker, "{restarted}");
    bob.send_line("still here").await;
    alice
        .expect_line(format!("bob ({}): still here", bob.uid()))
        .await;

    // Stop ends everything: the users' connections close and the port is free again.
    let out = switchboard(dir, &["stop"]);
    assert!(out.status.success());
    // Any farewell lines first, then the close; a timeout means the connection stayed open.
    loop {
        match alice.read_line(Duration::from_secs(5)).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("alice's connection still open after stop"),
            Err(_) => break,
        }
    }
    assert!(!dir.join("run/switchboard.pid").exists());
    assert!(
        std::net::TcpStream::connect(telnet).is_err(),
        "gateway still listening after stop"
    );
    let status = switchboard(dir, &["status"]);
    assert!(!status.status.success());
}
