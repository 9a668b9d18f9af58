//! A pty pair standing in for a USB serial adapter: the simulator keeps the master, the
//! gateway opens the slave through a symlink (like socat's `link=`).
//!
//! The simulator also keeps its own slave fd open for the pty's whole life. Without it the
//! master reads EIO (and the kernel may drop what we wrote) whenever the gateway has the
//! port closed: before it first opens it, and while it reopens it with backoff. With it,
//! the hello we write at start waits in the slave's input queue until the gateway reads.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use tokio_serial::{SerialPort, SerialStream};

/// Why a pty could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    /// openpty and friends failed.
    #[error("creating a pty: {0}")]
    Open(#[from] tokio_serial::Error),
    /// The terminal settings could not be made raw.
    #[error("setting the pty master raw: {0}")]
    Raw(#[from] nix::Error),
    /// The pty has no slave name (cannot happen on Linux).
    #[error("the pty slave has no path")]
    NoName,
    /// The symlink could not be created or swapped in.
    #[error("publishing {link} -> {target}: {cause}")]
    Link {
        /// The symlink path.
        link: PathBuf,
        /// The slave device.
        target: PathBuf,
        /// Why.
        cause: io::Error,
    },
}

/// The simulator's side of a published pty: its slave fd and the symlink. Dropping it
/// removes the symlink (if it still points at this pty) and closes the slave.
#[derive(Debug)]
pub struct PtyLink {
    link: PathBuf,
    slave_path: PathBuf,
    _slave: SerialStream,
}

impl PtyLink {
    /// Creates a raw pty pair, points `link` at its slave (atomically replacing whatever
    /// was there) and returns the master for the simulator to talk through.
    pub fn create(link: &Path) -> Result<(Self, SerialStream), PtyError> {
        let (master, slave) = SerialStream::pair()?;
        // `pair` makes the slave raw; make the master raw too (no echo, no CR/LF mangling),
        // which Linux does by default but other unixes do not.
        make_raw(&master)?;
        let slave_path = PathBuf::from(slave.name().ok_or(PtyError::NoName)?);
        publish(link, &slave_path).map_err(|cause| PtyError::Link {
            link: link.to_owned(),
            target: slave_path.clone(),
            cause,
        })?;
        tracing::info!(link = %link.display(), slave = %slave_path.display(), "pty published");
        Ok((
            Self {
                link: link.to_owned(),
                slave_path,
                _slave: slave,
            },
            master,
        ))
    }

    /// The symlink the gateway opens.
    pub fn link(&self) -> &Path {
        &self.link
    }

    /// The slave device the symlink points at (`/dev/pts/N`).
    pub fn slave_path(&self) -> &Path {
        &self.slave_path
    }
}

impl Drop for PtyLink {
    fn drop(&mut self) {
        // Only remove the link if it is still ours: a newer simulator may have replaced it.
        if std::fs::read_link(&self.link).is_ok_and(|t| t == self.slave_path) {
            let _ = std::fs::remove_file(&self.link);
        }
    }
}

fn make_raw(port: &SerialStream) -> Result<(), nix::Error> {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    // SAFETY: the fd belongs to `port`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(port.as_raw_fd()) };
    let mut attrs = tcgetattr(fd)?;
    cfmakeraw(&mut attrs);
    tcsetattr(fd, SetArg::TCSANOW, &attrs)
}

/// Points `link` at `target`, replacing an existing file in one rename so the gateway never
/// sees the path missing or half made.
fn publish(link: &Path, target: &Path) -> io::Result<()> {
    let name = link
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "link path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = link.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
