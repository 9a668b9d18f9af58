//! The `ip` command (iproute2) as [`super::NetLab`] runs it: found once, run to completion
//! with its stderr kept for the error, and the two namespace chores made of it (killing what
//! runs inside, deleting). Which commands make a lab is `NetLab`'s business.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::Unavailable;

/// The `ip` program.
#[derive(Debug, Clone)]
pub(super) struct Ip {
    path: PathBuf,
}

impl Ip {
    /// Finds `ip` in PATH, else where Debian puts it (root's PATH has /usr/sbin, a test
    /// runner's may not).
    pub(super) fn find() -> Result<Self, Unavailable> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
            .map(|dir| dir.join("ip"))
            .find(|p| p.is_file())
            .map(|path| Self { path })
            .ok_or(Unavailable::NoIp)
    }

    /// Where it is.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `ip args` and returns its stdout; a failure carries the command line and stderr.
    pub(super) fn run<I, S>(&self, args: I) -> Result<String, Unavailable>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = std::process::Command::new(&self.path);
        cmd.args(args).stdin(std::process::Stdio::null());
        let command = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let out = cmd.output().map_err(|source| Unavailable::Spawn {
            command: command.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(Unavailable::Command {
                command,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// SIGKILLs every process in `netns` (`ip netns pids`). They are not waited for: the
    /// namespace goes when its last process has, and their parents reap them.
    pub(super) fn kill_inside(&self, netns: &str) {
        let Ok(pids) = self.run(["netns", "pids", netns]) else {
            return;
        };
        for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// Kills what runs in `netns`, then deletes it; errors are ignored (cleanup).
    pub(super) fn remove_netns(&self, netns: &str) {
        self.kill_inside(netns);
        let _ = self.run(["netns", "del", netns]);
    }
}
