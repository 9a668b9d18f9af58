//! Keeps one child process running: starts it, restarts it with backoff when it exits, and
//! stops or replaces it on request. It knows nothing of what the child does.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};

/// First restart delay after a crash.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest restart delay: a crash loop costs at most one start per this.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long before exiting was healthy: its backoff starts over.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
/// How long a child has to exit after SIGTERM before it gets SIGKILL. A worker flushes its
/// store in this time.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// What a process looks like now, for the state file and `status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
pub struct ProcState {
    /// `gateway`, `worker` or `device`.
    pub name: String,
    /// Pid of the running child, if running.
    pub pid: Option<u32>,
    /// Unix seconds when the current child started.
    pub started_at: u64,
    /// Restarts after the child exited on its own.
    pub restarts: u32,
    /// Replacements requested by `reload`.
    pub reloads: u32,
    /// How the last child ended, if one did.
    pub last_exit: Option<String>,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `gateway`, `worker` or `device`.
    pub name: &'static str,
    /// The binary; looked up again at every start, so a rebuilt binary is picked up.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
}

enum Control {
    Stop(oneshot::Sender<()>),
    Replace(oneshot::Sender<()>),
}

/// Handle to a running keeper task.
pub struct Keeper {
    control: mpsc::Sender<Control>,
    /// Current state, updated by the keeper.
    pub state: watch::Receiver<ProcState>,
}

impl Keeper {
    /// Starts `spec` now and keeps it running.
    pub fn spawn(spec: Spec) -> Self {
        let (control, rx) = mpsc::channel(4);
        let (tx_state, state) = watch::channel(ProcState {
            name: spec.name.to_string(),
            ..ProcState::default()
        });
        tokio::spawn(keep(spec, rx, tx_state));
        Self { control, state }
    }

    /// Stops the child (SIGTERM, then SIGKILL after [`STOP_GRACE`]) and ends the keeper.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops the child, then starts the binary again; returns once the new one is started.
    pub async fn replace(&self) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Replace(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn keep(spec: Spec, mut control: mpsc::Receiver<Control>, state: watch::Sender<ProcState>) {
    let mut backoff = BACKOFF_MIN;
    // A `replace` request waiting for the new child to start.
    let mut replaced: Option<oneshot::Sender<()>> = None;
    loop {
        match start(&spec) {
            Ok(mut child) => {
                let started = std::time::Instant::now();
                state.send_modify(|s| {
                    s.pid = child.id();
                    s.started_at = unix_now();
                });
                tracing::info!(process = spec.name, pid = child.id(), "started");
                if let Some(done) = replaced.take() {
                    let _ = done.send(());
                }
                tokio::select! {
                    exit = child.wait() => {
                        let how = match exit {
                            Ok(status) => status.to_string(),
                            Err(err) => format!("wait failed: {err}"),
                        };
                        tracing::warn!(process = spec.name, exit = %how, "exited; restarting");
                        state.send_modify(|s| { s.pid = None; s.last_exit = Some(how); s.restarts += 1; });
                        if started.elapsed() >= HEALTHY_RUN { backoff = BACKOFF_MIN; }
                    }
                    Some(ctl) = control.recv() => {
                        match finish(ctl, &spec, &state, Some(child)).await {
                            Next::Exit => return,
                            Next::Restart(done) => replaced = Some(done),
                        }
                        backoff = BACKOFF_MIN;
                        continue; // a requested restart starts at once
                    }
                }
            }
            Err(err) => {
                tracing::error!(process = spec.name, program = %spec.program.display(), cause = %err, "cannot start");
                state.send_modify(|s| s.last_exit = Some(format!("cannot start: {err}")));
            }
        }
        // Crashed or could not start: wait before the next try, unless told otherwise.
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            Some(ctl) = control.recv() => match finish(ctl, &spec, &state, None).await {
                Next::Exit => return,
                Next::Restart(done) => replaced = Some(done),
            },
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// What the keeper does after a control request.
enum Next {
    /// The keeper ends.
    Exit,
    /// Start the child again now; answer this once it runs.
    Restart(oneshot::Sender<()>),
}

/// Stops `child` (if any) for a control request.
async fn finish(
    ctl: Control,
    spec: &Spec,
    state: &watch::Sender<ProcState>,
    child: Option<Child>,
) -> Next {
    if let Some(child) = child {
        terminate(spec.name, child).await;
    }
    state.send_modify(|s| s.pid = None);
    match ctl {
        Control::Stop(done) => {
            let _ = done.send(());
            Next::Exit
        }
        Control::Replace(done) => {
            state.send_modify(|s| s.reloads += 1);
            Next::Restart(done)
        }
    }
}

fn start(spec: &Spec) -> std::io::Result<Child> {
    Command::new(&spec.program)
        .args(&spec.args)
        .stdin(Stdio::null())
        // Its own process group: Ctrl-C in the terminal reaches only the supervisor, which
        // then stops the children in order (workers before the gateway).
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

/// SIGTERM, wait up to [`STOP_GRACE`], then SIGKILL.
pub async fn terminate(name: &str, mut child: Child) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(Ok(status)) => tracing::info!(process = name, exit = %status, "stopped"),
        _ => {
            tracing::warn!(process = name, "did not stop in time; killing");
            let _ = child.kill().await;
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
