//! A whole Switchboard on loopback: one gateway, one worker and any simulated devices, each
//! a real child process, with a config, a data dir and logs in a temp dir.
//!
//! Every cluster picks its own free ports, so tests run in parallel. When a test panics,
//! dropping the cluster prints the tail of every log in its dir.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::bins::{bins, Bins};
use super::process::{tail, Proc};
use super::telnet::{Matcher, TelnetUser};

/// How long the gateway and a worker get to come up and link.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one readiness probe waits for its greeting before a new one is tried.
pub const PROBE_PATIENCE: Duration = Duration::from_secs(2);
/// Lines of each log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// Options for [`Cluster::start_with`].
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Serial ports the gateway opens, by name: each is a path in the cluster's dir where a
    /// pty device can publish itself ([`Cluster::serial_path`]).
    pub serial: Vec<String>,
    /// Do not start a worker (the test starts it).
    pub no_worker: bool,
}

impl ClusterOptions {
    /// Adds a serial port named `name`.
    pub fn serial(mut self, name: &str) -> Self {
        self.serial.push(name.to_owned());
        self
    }
}

/// A running gateway and worker.
pub struct Cluster {
    /// Telnet users connect here.
    pub telnet: SocketAddr,
    /// Devices connect here over TCP.
    pub device_addr: SocketAddr,
    /// Workers link here.
    pub worker_addr: SocketAddr,
    /// The config file both processes read.
    pub config: PathBuf,
    /// The worker's data directory.
    pub data_dir: PathBuf,
    gateway: Proc,
    worker: Option<Proc>,
    /// Counts spawned processes so each gets its own log file.
    spawned: usize,
    bins: &'static Bins,
    // Last, so the processes are killed before their dir goes.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a gateway and a worker with no serial ports and waits until they are linked.
    pub async fn start() -> Self {
        Self::start_with(ClusterOptions::default()).await
    }

    /// Starts a cluster with `opts`.
    pub async fn start_with(opts: ClusterOptions) -> Self {
        let bins = bins();
        let dir = tempfile::Builder::new()
            .prefix("switchboard-hil-")
            .tempdir()
            .expect("creating the cluster's temp dir");
        let [telnet, device_addr, worker_addr] = free_ports();
        let data_dir = dir.path().join("data");
        let config = dir.path().join("switchboard.toml");
        let serial: Vec<PathBuf> = opts.serial.iter().map(|n| dir.path().join(n)).collect();
        std::fs::write(
            &config,
            config_text(
                telnet,
                device_addr,
                worker_addr,
                &data_dir,
                dir.path(),
                &serial,
            ),
        )
        .expect("writing the cluster's config");
        let gateway = Proc::spawn(
            "gateway",
            &bins.gateway,
            &["-c", path_str(&config)],
            &dir.path().join("gateway.log"),
        );
        let mut cluster = Self {
            telnet,
            device_addr,
            worker_addr,
            config,
            data_dir,
            gateway,
            worker: None,
            spawned: 0,
            bins,
            dir,
        };
        if opts.no_worker {
            cluster.wait_listening().await;
        } else {
            cluster.start_worker().await;
        }
        cluster
    }

    /// The cluster's temp dir (config, data, logs, pty links).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where a pty device for serial port `name` publishes its link.
    pub fn serial_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts a worker process on this cluster's config and waits until it greets users.
    pub async fn start_worker(&mut self) {
        assert!(self.worker.is_none(), "a worker is already running");
        let worker = self.spawn_worker();
        self.worker = Some(worker);
        self.wait_ready().await;
    }

    /// Starts another worker process on the same config without waiting for anything; the
    /// caller owns it (for the second-worker-on-one-data-dir test).
    pub fn spawn_worker(&mut self) -> Proc {
        let log = self.next_log("worker");
        Proc::spawn(
            "worker",
            &self.bins.worker,
            &["-c", path_str(&self.config)],
            &log,
        )
    }

    /// Kills the worker (SIGKILL: a crash, not a drain).
    pub async fn kill_worker(&mut self) {
        let mut worker = self.worker.take().expect("no worker to kill");
        worker.kill().await;
    }

    /// Stops the worker with SIGTERM.
    pub async fn stop_worker(&mut self) {
        let mut worker = self.worker.take().expect("no worker to stop");
        worker.stop().await;
    }

    /// Kills the gateway (SIGKILL) and starts a new one on the same config, then waits
    /// until the worker has relinked and greets users. Every connection is lost.
    pub async fn restart_gateway(&mut self) {
        self.gateway.kill().await;
        let log = self.next_log("gateway");
        self.gateway = Proc::spawn(
            "gateway",
            &self.bins.gateway,
            &["-c", path_str(&self.config)],
            &log,
        );
        if self.worker.is_some() {
            self.wait_ready().await;
        } else {
            self.wait_listening().await;
        }
    }

    /// The gateway process.
    pub fn gateway(&mut self) -> &mut Proc {
        &mut self.gateway
    }

    /// The worker process, if one was started.
    pub fn worker(&mut self) -> Option<&mut Proc> {
        self.worker.as_mut()
    }

    /// Panics (with logs) unless the gateway and the worker are both running.
    pub fn assert_alive(&mut self) {
        self.gateway.assert_running();
        if let Some(worker) = self.worker.as_mut() {
            worker.assert_running();
        }
    }

    /// Connects a telnet user without logging in.
    pub async fn connect(&self, label: &str) -> TelnetUser {
        TelnetUser::connect(self.telnet, label)
            .await
            .unwrap_or_else(|e| panic!("{label}: connecting to telnet {}: {e}", self.telnet))
    }

    /// Connects a telnet user and logs in as `nick`.
    pub async fn user(&self, nick: &str) -> TelnetUser {
        let mut user = self.connect(nick).await;
        user.login(nick).await;
        user
    }

    /// Starts `switchboard-device` on a pty published at [`Cluster::serial_path`]`(name)`,
    /// with device id `name` and no telemetry. The gateway must have that serial port.
    pub fn start_pty_device(&mut self, name: &str) -> Proc {
        self.start_pty_device_with(name, &[])
    }

    /// [`Cluster::start_pty_device`] with more `switchboard-device` arguments
    /// (`--telemetry-secs 1` replaces the default 0).
    pub fn start_pty_device_with(&mut self, name: &str, extra: &[&str]) -> Proc {
        let link = self.serial_path(name);
        self.start_device(name, &["--pty-link", path_str(&link)], extra)
    }

    /// Starts `switchboard-device` over TCP to the gateway's device port, no telemetry.
    pub fn start_tcp_device(&mut self, id: &str) -> Proc {
        self.start_tcp_device_with(id, &[])
    }

    /// [`Cluster::start_tcp_device`] with more `switchboard-device` arguments.
    pub fn start_tcp_device_with(&mut self, id: &str, extra: &[&str]) -> Proc {
        let addr = self.device_addr.to_string();
        self.start_device(id, &["--tcp", &addr], extra)
    }

    fn start_device(&mut self, id: &str, transport: &[&str], extra: &[&str]) -> Proc {
        let log = self.next_log(&format!("device-{id}"));
        let mut args = vec!["--id", id, "-v"];
        if !extra.contains(&"--telemetry-secs") {
            // Quiet by default: telemetry would only add frames to the logs.
            args.extend_from_slice(&["--telemetry-secs", "0"]);
        }
        args.extend_from_slice(transport);
        args.extend_from_slice(extra);
        Proc::spawn(&format!("device {id}"), &self.bins.device, &args, &log)
    }

    /// Waits until a fresh telnet connection is greeted with the nickname prompt: the
    /// gateway accepts and a worker handles its events. Probes leave without a nickname.
    ///
    /// A probe that is not greeted within [`PROBE_PATIENCE`] is replaced by a new one, so
    /// a connection made just as the worker links does not stall every test; the
    /// `worker` tests check that such a connection is greeted too.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_error = String::new();
        while Instant::now() < deadline {
            let mut probe = match TelnetUser::connect(self.telnet, "readiness probe").await {
                Ok(p) => p,
                Err(e) => {
                    last_error = format!("telnet port {} does not accept: {e}", self.telnet);
                    self.assert_alive();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let patience = PROBE_PATIENCE.min(deadline.saturating_duration_since(Instant::now()));
            // Raced against the processes so a crash fails the test at once, with its log.
            let greeted = tokio::select! {
                found = probe.try_expect_prompt(nickname_prompt(), patience) => found,
                _ = self.watch_crash() => unreachable!(),
            };
            match greeted {
                Ok(_) => return,
                Err(e) => last_error = e,
            }
        }
        panic!("the cluster did not become ready within {START_TIMEOUT:?}: {last_error}");
    }

    /// Waits until the gateway's telnet port accepts (the connection is closed at once).
    pub async fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.assert_alive();
            match tokio::net::TcpStream::connect(self.telnet).await {
                Ok(_) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("gateway telnet port {} never accepted: {e}", self.telnet)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Never completes while the gateway and worker run; panics with logs when one exits.
    async fn watch_crash(&mut self) {
        loop {
            self.assert_alive();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn next_log(&mut self, what: &str) -> PathBuf {
        self.spawned += 1;
        self.dir
            .path()
            .join(format!("{:02}-{what}.log", self.spawned))
    }

    /// The tail of every log in the cluster's dir.
    pub fn logs(&self) -> String {
        dir_logs(self.dir.path())
    }
}

/// The tail of every `.log` file in `dir`, in name order.
pub(super) fn dir_logs(dir: &Path) -> String {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.retain(|p| p.extension().is_some_and(|e| e == "log"));
    paths.sort();
    let mut out = String::new();
    for p in paths {
        let text = std::fs::read(&p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        out.push_str(&format!(
            "===== {} (last {LOG_TAIL_LINES} lines) =====\n{}\n",
            p.file_name().unwrap_or_default().to_string_lossy(),
            tail(&text, LOG_TAIL_LINES)
        ));
    }
    out
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("\n{}", self.logs());
            if std::env::var_os("HIL_KEEP").is_some() {
                let kept = std::mem::replace(
                    &mut self.dir,
                    tempfile::tempdir().expect("a replacement temp dir"),
                );
                eprintln!("HIL_KEEP: cluster dir kept at {}", kept.keep().display());
            }
        }
    }
}

/// Matches the greeting's last line, which asks for the nickname.
pub fn nickname_prompt() -> Matcher {
    Matcher::pred("the nickname prompt", |l| {
        l.to_ascii_lowercase().contains("nickname")
    })
}

/// Three free loopback ports, none handed out before in this process; another process could
/// take one before the gateway binds it, which is rare enough.
pub(super) fn free_ports() -> [SocketAddr; 3] {
    // Ports are released before the servers bind them, so the kernel may offer one again to
    // the next caller: a farm of several gateways started at once then had two servers on
    // one port. Every port handed out in this process is remembered and never handed again.
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let mut listeners = Vec::with_capacity(3);
    while listeners.len() < 3 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free loopback port");
        let addr = listener.local_addr().expect("a bound port's address");
        if handed.insert(addr.port()) {
            listeners.push((listener, addr));
        }
    }
    [listeners[0].1, listeners[1].1, listeners[2].1]
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// A random-enough secret: tests need the worker and the gateway to agree, not secrecy.
fn secret() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("hil-{:016x}", h.finish())
}

/// The config file, in `switchboard.toml`'s format.
fn config_text(
    telnet: SocketAddr,
    device: SocketAddr,
    worker: SocketAddr,
    data_dir: &Path,
    run_dir: &Path,
    serial: &[PathBuf],
) -> String {
    let secret = secret();
    let mut text = format!(
        r#"# Written by hil::harness::Cluster.
[gateway]
id = 1
telnet_listen = "{telnet}"
device_listen = "{device}"
worker_listen = "{worker}"
secret = "{secret}"
max_line = 4096
client_queue = 1024
pending_events = 10000

[worker]
gateways = ["{worker}"]
secret = "{secret}"
store = "sled"
data_dir = {data_dir:?}

[supervisor]
run_dir = {run_dir:?}
demo_device = false
"#,
        data_dir = path_str(data_dir),
        run_dir = path_str(&run_dir.join("run")),
    );
    for path in serial {
        text.push_str(&format!(
            "\n[[gateway.serial]]\npath = {:?}\nbaud = 115200\n",
            path_str(path)
        ));
    }
    text
}
