//! One child process under test, with its stdout and stderr in a log file.
//!
//! Children are killed when dropped, so a failing test never leaks a gateway. Stopping
//! gracefully (SIGTERM, then SIGKILL after a grace period) is explicit.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// How long a child gets to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Log filter for children unless RUST_LOG is set: our crates chatty, dependencies (sled,
/// tokio) quiet, so a failing test's log tail shows what Switchboard did.
const CHILD_LOG: &str = "info,gateway=debug,worker=debug,switchboard_gateway=debug,\
    switchboard_worker=debug,switchboard=debug,hil=debug,switchboard_device=debug";

/// A running (or exited) child process.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `program args` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[&str], log: &Path) -> Self {
        let mut cmd = Command::new(program);
        cmd.args(args);
        Self::spawn_command(name, cmd, log)
    }

    /// Starts a prepared command (a program behind a prefix such as `ip netns exec NS`)
    /// like [`Proc::spawn`]: stdin closed, stdout and stderr appended to `log`, killed on
    /// drop, `RUST_LOG` defaulted. The pid is that of the command's program, so a prefix
    /// must exec the program (as `ip netns exec` does) for [`Proc::stop`] to reach it.
    pub fn spawn_command(name: &str, mut cmd: Command, log: &Path) -> Self {
        let file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = file
            .try_clone()
            .unwrap_or_else(|e| panic!("cloning {}: {e}", log.display()));
        cmd.stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .kill_on_drop(true);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", CHILD_LOG);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "starting {name} ({}): {e}",
                Path::new(cmd.as_std().get_program()).display()
            )
        });
        Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            status: None,
        }
    }

    /// The process id, while it has not been reaped.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// The name given at spawn, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Panics with the log tail unless the process is still running.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited ({status}); its log ends:\n{}",
                self.name,
                tail(&self.log(), 40)
            );
        }
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = tokio::time::timeout(limit, self.child.wait())
                .await
                .ok()
                .and_then(Result::ok);
        }
        self.status
    }

    /// Sends SIGTERM and waits for the exit, killing the process after [`STOP_GRACE`].
    pub async fn stop(&mut self) -> ExitStatus {
        if let Some(status) = self.exited() {
            return status;
        }
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        match self.wait_timeout(STOP_GRACE).await {
            Some(status) => status,
            None => self.kill().await,
        }
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub async fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.exited() {
            return status;
        }
        let _ = self.child.start_kill();
        let status = self
            .child
            .wait()
            .await
            .unwrap_or_else(|e| panic!("reaping {}: {e}", self.name));
        self.status = Some(status);
        status
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
