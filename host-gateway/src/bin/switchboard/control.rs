//! Talking to a running supervisor from the command line: its pid file, `start -d`, `stop`
//! and `reload` (by signal), waiting for each to take effect.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::Config;
use crate::supervise::read_state;

/// How long `start -d` waits for the daemon to be up.
const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` waits: every child's grace period plus margin.
const STOP_TIMEOUT: Duration = Duration::from_secs(45);
/// How long `reload` waits for the new worker to be started.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// The supervisor's pid file; removed when dropped.
pub struct PidFile(PathBuf);

impl PidFile {
    /// Writes our pid, refusing if another live supervisor holds the file.
    pub fn acquire(config: &Config) -> Result<Self> {
        let path = config.pid_file();
        if let Some(pid) = running_pid(config) {
            bail!(
                "switchboard is already running (pid {pid}, pid file {})",
                path.display()
            );
        }
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing pid file {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The pid of a live supervisor, from the pid file.
pub fn running_pid(config: &Config) -> Option<u32> {
    let text = std::fs::read_to_string(config.pid_file()).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

fn alive(pid: u32) -> bool {
    // Signal 0 checks existence; a zombie child of ours would still count, but the
    // supervisor is never our child here.
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// `start -d`: starts a supervisor in its own session, logging to the run directory, and
/// returns once it reports ready.
pub fn start_daemon(config: &Config) -> Result<()> {
    if let Some(pid) = running_pid(config) {
        bail!("switchboard is already running (pid {pid})");
    }
    std::fs::create_dir_all(&config.supervisor.run_dir).with_context(|| {
        format!(
            "creating run directory {}",
            config.supervisor.run_dir.display()
        )
    })?;
    let log_path = config.log_file();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening log {}", log_path.display()))?;
    let exe = std::env::current_exe().context("locating the switchboard binary")?;
    let _ = std::fs::remove_file(config.state_file());
    let mut cmd = Command::new(exe);
    cmd.args(config.child_args()).arg("start");
    let mut child = {
        use std::os::unix::process::CommandExt;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating log handle")?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting the supervisor in the background")?
    };
    let deadline = Instant::now() + DAEMON_READY_TIMEOUT;
    loop {
        if let Some(state) = read_state(config) {
            if state.ready && state.pid == child.id() {
                println!(
                    "switchboard started (pid {}); telnet {}; log {}",
                    state.pid,
                    config.telnet_addr(),
                    log_path.display()
                );
                return Ok(());
            }
        }
        if let Some(status) = child.try_wait().context("checking the daemon")? {
            bail!(
                "switchboard failed to start ({status}); last log lines:\n{}",
                tail(&log_path, 20)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "switchboard did not become ready within {DAEMON_READY_TIMEOUT:?}; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `stop`: SIGTERM to the supervisor, then waits until it is gone.
pub fn stop(config: &Config) -> Result<()> {
    let Some(pid) = running_pid(config) else {
        println!("switchboard is not running");
        return Ok(());
    };
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM)
        .with_context(|| format!("signalling supervisor pid {pid}"))?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    while alive(pid) && std::fs::metadata(config.pid_file()).is_ok() {
        if Instant::now() > deadline {
            bail!("switchboard (pid {pid}) did not stop within {STOP_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("switchboard stopped");
    Ok(())
}

/// `reload`: SIGUSR1 to the supervisor, then waits until the new worker runs.
pub fn reload(config: &Config) -> Result<()> {
    let Some(pid) = running_pid(config) else {
        bail!("switchboard is not running");
    };
    let before = read_state(config).map(|s| s.reloads).unwrap_or(0);
    kill(Pid::from_raw(pid as i32), Signal::SIGUSR1)
        .with_context(|| format!("signalling supervisor pid {pid}"))?;
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    loop {
        if let Some(state) = read_state(config) {
            if state.reloads > before {
                let workers: Vec<String> = state
                    .process
                    .iter()
                    .filter(|p| p.name == "worker")
                    .filter_map(|p| p.pid.map(|pid| pid.to_string()))
                    .collect();
                println!("reloaded: worker pid {}", workers.join(", "));
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("reload did not finish within {RELOAD_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tail(path: &std::path::Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
