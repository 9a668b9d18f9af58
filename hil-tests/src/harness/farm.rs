//! Several gateways and workers, each a real process with its own config file: the
//! scale-out tests' building blocks. [`GatewaySpec`] and [`WorkerSpec`] write the configs
//! (any addresses: loopback here, namespaced hosts in the cluster test); [`Farm`] runs them
//! on loopback with logs in one temp dir.
//!
//! Unlike [`super::Cluster`], nothing here waits on its own: tests say what "ready" means
//! (a user on gateway 2 greeted, say) with [`wait_greeted`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use super::bins::bins;
use super::cluster::{dir_logs, free_ports, nickname_prompt, PROBE_PATIENCE};
use super::monitor::gateway_stats;
use super::process::Proc;
use super::telnet::TelnetUser;

/// A gateway's addresses and cluster settings.
#[derive(Debug, Clone)]
pub struct GatewaySpec {
    /// Gateway id, unique in the cluster.
    pub id: u16,
    /// Telnet users connect here.
    pub telnet: SocketAddr,
    /// Devices connect here.
    pub device: SocketAddr,
    /// Workers link here.
    pub worker: SocketAddr,
    /// Shared secret.
    pub secret: String,
    /// memcached servers to announce on (empty: no discovery).
    pub discovery: Vec<String>,
    /// Discovery key prefix.
    pub prefix: String,
}

impl GatewaySpec {
    /// Gateway `id` on three free loopback ports.
    pub fn loopback(id: u16, secret: &str) -> Self {
        let [telnet, device, worker] = free_ports();
        Self {
            id,
            telnet,
            device,
            worker,
            secret: secret.to_owned(),
            discovery: Vec::new(),
            prefix: "hil:".to_owned(),
        }
    }

    /// A user connected to this gateway and logged in as `nick`.
    pub async fn user(&self, nick: &str) -> TelnetUser {
        let mut user = TelnetUser::connect(self.telnet, nick)
            .await
            .unwrap_or_else(|e| panic!("{nick}: connect {}: {e}", self.telnet));
        user.login(nick).await;
        user
    }

    /// Waits until this gateway counts exactly `n` linked workers (asked over a monitor
    /// link). A gateway greets users as soon as one worker is linked; tests that need every
    /// worker to see the gateway (a private message from a user another worker serves) wait
    /// here too.
    pub async fn wait_workers(&self, n: u64, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let seen = match gateway_stats(self.worker, &self.secret).await {
                Ok(stats) if stats.workers == n => return Ok(()),
                Ok(stats) => format!("{} workers", stats.workers),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "gateway {} never had {n} workers within {within:?}: {seen}",
                    self.id
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The config file, in `switchboard.toml`'s format.
    pub fn config_text(&self) -> String {
        format!(
            "[gateway]\nid = {}\ntelnet_listen = \"{}\"\ndevice_listen = \"{}\"\n\
             worker_listen = \"{}\"\nsecret = \"{}\"\ndiscovery = {:?}\ndiscovery_prefix = \"{}\"\n",
            self.id,
            self.telnet,
            self.device,
            self.worker,
            self.secret,
            self.discovery,
            self.prefix
        )
    }
}

/// A worker's links, store and routing.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Static gateway list.
    pub gateways: Vec<String>,
    /// Discovery servers (empty: static list only).
    pub discovery: Vec<String>,
    /// Shared secret.
    pub secret: String,
    /// Key prefix for discovery and the memcached store.
    pub prefix: String,
    /// memcached store servers; empty: sled in `data_dir`.
    pub memcached: Vec<String>,
    /// sled's directory when `memcached` is empty.
    pub data_dir: PathBuf,
    /// `targeted` or `everywhere`.
    pub routing: String,
}

impl WorkerSpec {
    /// A sled worker linking to `gateways`, targeted routing.
    pub fn new(gateways: &[&GatewaySpec], data_dir: &Path) -> Self {
        Self {
            gateways: gateways.iter().map(|g| g.worker.to_string()).collect(),
            discovery: Vec::new(),
            secret: gateways
                .first()
                .map(|g| g.secret.clone())
                .unwrap_or_default(),
            prefix: gateways
                .first()
                .map_or_else(|| "hil:".to_owned(), |g| g.prefix.clone()),
            memcached: Vec::new(),
            data_dir: data_dir.to_owned(),
            routing: "targeted".to_owned(),
        }
    }

    /// The config file, in `switchboard.toml`'s format.
    pub fn config_text(&self) -> String {
        let store = if self.memcached.is_empty() {
            format!("store = \"sled\"\ndata_dir = {:?}\n", self.data_dir)
        } else {
            format!(
                "store = \"memcached\"\nmemcached = {:?}\nmemcached_prefix = \"{}\"\n",
                self.memcached, self.prefix
            )
        };
        format!(
            "[worker]\ngateways = {:?}\ndiscovery = {:?}\ndiscovery_prefix = \"{}\"\n\
             secret = \"{}\"\nrouting = \"{}\"\n{store}",
            self.gateways, self.discovery, self.prefix, self.secret, self.routing
        )
    }
}

/// Gateways and workers on loopback; every process is killed when the farm is dropped.
pub struct Farm {
    /// The processes, in start order.
    pub procs: Vec<Proc>,
    dir: tempfile::TempDir,
}

impl Farm {
    /// An empty farm with its temp dir.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-farm-")
            .tempdir()
            .expect("creating the farm's temp dir");
        Self {
            procs: Vec::new(),
            dir,
        }
    }

    /// The farm's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts a gateway; returns its index in `procs`.
    pub fn gateway(&mut self, spec: &GatewaySpec) -> usize {
        let name = format!("gateway{}", spec.id);
        self.spawn(&name, &bins().gateway, &spec.config_text())
    }

    /// Starts a worker; returns its index in `procs`.
    pub fn worker(&mut self, spec: &WorkerSpec) -> usize {
        let name = format!("worker{}", self.procs.len());
        self.spawn(&name, &bins().worker, &spec.config_text())
    }

    fn spawn(&mut self, name: &str, program: &Path, config: &str) -> usize {
        let n = self.procs.len();
        let path = self.dir.path().join(format!("{n:02}-{name}.toml"));
        std::fs::write(&path, config).expect("writing a config");
        let log = self.dir.path().join(format!("{n:02}-{name}.log"));
        let args = ["-c", path.to_str().expect("temp paths are UTF-8")];
        self.procs.push(Proc::spawn(name, program, &args, &log));
        n
    }
}

impl Default for Farm {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("\n{}", dir_logs(self.dir.path()));
        }
    }
}

/// Waits until a fresh telnet connection to `telnet` is greeted with the nickname prompt
/// (its gateway is up and a worker handles its events), trying new probes for `within`.
pub async fn wait_greeted(telnet: SocketAddr, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut last = String::from("never tried");
    while Instant::now() < deadline {
        match TelnetUser::connect(telnet, "readiness probe").await {
            Ok(mut probe) => {
                let patience = PROBE_PATIENCE.min(deadline - Instant::now());
                match probe.try_expect_prompt(nickname_prompt(), patience).await {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e,
                }
            }
            Err(e) => {
                last = format!("{telnet} does not accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Err(format!("{telnet} not greeted within {within:?}: {last}"))
}
