//! Test harness: a real memcached server on a free loopback port, killed on drop. No mocks:
//! the memcached backend is tested against the real thing (`apt-get install memcached`;
//! `cargo xtask ci` installs it).

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh memcached may take to accept connections.
const STARTUP: Duration = Duration::from_secs(5);

/// A memcached child process.
pub(crate) struct MemcachedServer {
    child: Child,
    port: u16,
}

impl MemcachedServer {
    /// Starts `memcached -l 127.0.0.1 -p PORT -U 0 -m 64` and waits until it accepts.
    pub(crate) fn start() -> MemcachedServer {
        let mut last_error = String::new();
        for _ in 0..5 {
            // Ask the OS for a free port; another process may take it before memcached
            // binds, so a server that exits at once is retried on a new port.
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("no free loopback port")
                .port();
            let spawned = Command::new("memcached")
                .args([
                    "-l",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "0",
                    "-m",
                    "64",
                ])
                // Refused as root without it; ignored otherwise.
                .args(["-u", "root"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn();
            let child = match spawned {
                Ok(child) => child,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
                    "the memcached binary is not installed; these tests start a real server: \
                     apt-get install memcached (cargo xtask ci installs it)"
                ),
                Err(err) => panic!("cannot start memcached: {err}"),
            };
            let mut server = MemcachedServer { child, port };
            if server.wait_ready() {
                return server;
            }
            last_error = server.stderr();
        }
        panic!("memcached did not start on a free port (5 attempts): {last_error}");
    }

    /// `127.0.0.1:PORT`, as a config lists it.
    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What the server printed, once it has exited.
    fn stderr(&mut self) -> String {
        let _ = self.child.kill();
        let mut text = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut text);
        }
        text
    }

    fn wait_ready(&mut self) -> bool {
        let started = Instant::now();
        while started.elapsed() < STARTUP {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for MemcachedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
