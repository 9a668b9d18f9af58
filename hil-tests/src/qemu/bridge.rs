//! A serial line between QEMU's UART and the gateway, with a hand on the wire.
//!
//! QEMU's UART is a TCP socket (`-serial tcp:127.0.0.1:PORT,nodelay=on`, QEMU connecting
//! to the bridge's listener); the gateway opens a real pty through a symlink, exactly like
//! a USB serial adapter. The bridge copies bytes both ways and lets a test inject raw bytes
//! (line noise) in either direction, unplug the adapter (the gateway sees the port go) and
//! plug it back in.
//!
//! QEMU connects as a client rather than listening: the listener exists before QEMU starts,
//! so there is no free-port race, and QEMU connects before the guest runs, so not even the
//! first hello is lost. While no QEMU is connected (the device is powered off or being
//! reset) bytes from the gateway are dropped, as a UART in reset drops them. It does not
//! throttle to a baud rate or model framing errors.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_serial::SerialStream;

use crate::device::{PtyError, PtyLink};

/// Read size per copy; the device's frames are far smaller.
pub(super) const CHUNK: usize = 4096;

/// Which way injected bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Towards the device's UART RX (as if the gateway had sent them).
    ToDevice,
    /// Towards the gateway (as if the device had sent them).
    ToHost,
}

/// Byte counts, for reports and to prove traffic flowed.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// Bytes copied from the gateway to the device.
    pub to_device: AtomicU64,
    /// Bytes copied from the device to the gateway.
    pub to_host: AtomicU64,
    /// Bytes from the gateway dropped because no QEMU was connected.
    pub dropped: AtomicU64,
    /// Noise bytes injected, both ways.
    pub injected: AtomicU64,
    /// QEMU connections accepted (one per boot).
    pub connections: AtomicU64,
}

enum Cmd {
    Inject(Direction, Vec<u8>, oneshot::Sender<io::Result<()>>),
    Unplug(oneshot::Sender<()>),
    Plug(oneshot::Sender<Result<(), PtyError>>),
}

/// A running bridge; dropping it stops the copying and removes the pty.
pub struct SerialBridge {
    qemu_addr: SocketAddr,
    link: PathBuf,
    cmds: mpsc::Sender<Cmd>,
    stats: Arc<BridgeStats>,
    task: JoinHandle<()>,
}

impl SerialBridge {
    /// Publishes a pty at `link` for the gateway and listens on a free loopback port for
    /// QEMU's UART.
    pub async fn start(link: &Path) -> Result<Self, PtyError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| PtyError::Open(e.into()))?;
        let qemu_addr = listener
            .local_addr()
            .map_err(|e| PtyError::Open(e.into()))?;
        let pty = Pty::create(link)?;
        let stats = Arc::new(BridgeStats::default());
        let (cmds, rx) = mpsc::channel(16);
        let task = tokio::spawn(
            Copier {
                listener,
                link: link.to_owned(),
                pty: Some(pty),
                qemu: None,
                stats: stats.clone(),
            }
            .run(rx),
        );
        Ok(Self {
            qemu_addr,
            link: link.to_owned(),
            cmds,
            stats,
            task,
        })
    }

    /// The address QEMU's `-serial tcp:` connects to.
    pub fn qemu_addr(&self) -> SocketAddr {
        self.qemu_addr
    }

    /// The QEMU `-serial` argument for this bridge.
    pub fn qemu_serial_arg(&self) -> String {
        format!("tcp:{},nodelay=on", self.qemu_addr)
    }

    /// The symlink the gateway opens.
    pub fn link(&self) -> &Path {
        &self.link
    }

    /// Byte counts so far.
    pub fn stats(&self) -> &BridgeStats {
        &self.stats
    }

    /// Writes `bytes` onto the line in `dir`, between two copied chunks (so possibly in
    /// the middle of a frame, as real noise would be). Returns once they are written.
    pub async fn inject(&self, dir: Direction, bytes: &[u8]) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.command(Cmd::Inject(dir, bytes.to_vec(), tx)).await;
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Closes the pty, as pulling a USB serial adapter does: the gateway's port fails and
    /// the link path disappears. The device keeps running, talking to nobody.
    pub async fn unplug(&self) {
        let (tx, rx) = oneshot::channel();
        self.command(Cmd::Unplug(tx)).await;
        let _ = rx.await;
    }

    /// Publishes a new pty at the same link path, as plugging the adapter back in.
    pub async fn plug(&self) -> Result<(), PtyError> {
        let (tx, rx) = oneshot::channel();
        self.command(Cmd::Plug(tx)).await;
        rx.await
            .unwrap_or_else(|_| Err(PtyError::Open(stopped().into())))
    }

    async fn command(&self, cmd: Cmd) {
        if self.cmds.send(cmd).await.is_err() {
            panic!("the serial bridge for {} has stopped", self.link.display());
        }
    }
}

impl Drop for SerialBridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the serial bridge has stopped")
}

/// The pty end: the master the bridge reads and writes, and the published slave link.
struct Pty {
    // First, so the symlink goes before the master closes (see `DeviceLink`).
    _link: PtyLink,
    master: SerialStream,
}

impl Pty {
    fn create(link: &Path) -> Result<Self, PtyError> {
        let (link, master) = PtyLink::create(link)?;
        Ok(Self {
            _link: link,
            master,
        })
    }
}

/// The bridge task's state.
struct Copier {
    listener: TcpListener,
    link: PathBuf,
    pty: Option<Pty>,
    qemu: Option<TcpStream>,
    stats: Arc<BridgeStats>,
}

impl Copier {
    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>) {
        let mut from_pty = vec![0u8; CHUNK];
        let mut from_qemu = vec![0u8; CHUNK];
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        // A new boot: the old connection (if QEMU died unseen) is over.
                        self.qemu = Some(stream);
                        self.stats.connections.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(cause = %e, "serial bridge: accept failed"),
                },
                read = read_some(self.pty.as_mut().map(|p| &mut p.master), &mut from_pty) => {
                    match read {
                        Ok(n) if n > 0 => self.forward_to_device(from_pty.get(..n).unwrap_or_default()).await,
                        // EOF or EIO on a master means the slave side is gone for good.
                        Ok(_) | Err(_) => {
                            tracing::warn!(link = %self.link.display(), "serial bridge: pty failed");
                            self.pty = None;
                        }
                    }
                }
                read = read_some(self.qemu.as_mut(), &mut from_qemu) => match read {
                    Ok(n) if n > 0 => self.forward_to_host(from_qemu.get(..n).unwrap_or_default()).await,
                    Ok(_) | Err(_) => self.qemu = None, // QEMU exited or was killed
                },
                cmd = cmds.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    None => return,
                },
            }
        }
    }

    async fn forward_to_device(&mut self, bytes: &[u8]) {
        let Some(qemu) = self.qemu.as_mut() else {
            self.stats
                .dropped
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            return;
        };
        match qemu.write_all(bytes).await {
            Ok(()) => {
                self.stats
                    .to_device
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            Err(_) => self.qemu = None,
        }
    }

    async fn forward_to_host(&mut self, bytes: &[u8]) {
        // With no pty (unplugged) the device's bytes go nowhere, like a UART TX pin
        // with nothing attached.
        if let Some(pty) = self.pty.as_mut() {
            if pty.master.write_all(bytes).await.is_ok() {
                self.stats
                    .to_host
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
        }
    }

    async fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Inject(dir, bytes, done) => {
                let written = match dir {
                    Direction::ToDevice => match self.qemu.as_mut() {
                        Some(q) => q.write_all(&bytes).await,
                        None => Err(not_connected("no QEMU is connected")),
                    },
                    Direction::ToHost => match self.pty.as_mut() {
                        Some(p) => p.master.write_all(&bytes).await,
                        None => Err(not_connected("the pty is unplugged")),
                    },
                };
                if written.is_ok() {
                    self.stats
                        .injected
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                let _ = done.send(written);
            }
            Cmd::Unplug(done) => {
                self.pty = None;
                let _ = done.send(());
            }
            Cmd::Plug(done) => {
                let result = Pty::create(&self.link).map(|p| self.pty = Some(p));
                let _ = done.send(result);
            }
        }
    }
}

fn not_connected(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, what.to_owned())
}

/// Reads from `stream`, or waits forever if there is none (so a `select!` branch idles).
pub(super) async fn read_some<S: AsyncRead + Unpin>(
    stream: Option<&mut S>,
    buf: &mut [u8],
) -> io::Result<usize> {
    match stream {
        Some(s) => s.read(buf).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
    use tokio_serial::SerialPortBuilderExt;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    async fn read_exact_within(s: &mut (impl AsyncRead + Unpin), n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        tokio::time::timeout(WAIT, s.read_exact(&mut buf))
            .await
            .expect("bytes in time")
            .expect("read");
        buf
    }

    /// Opens the link as the gateway does.
    fn open_port(link: &Path) -> SerialStream {
        tokio_serial::new(link.to_string_lossy(), 115_200)
            .exclusive(false)
            .open_native_async()
            .expect("opening the bridge's pty like the gateway")
    }

    #[tokio::test]
    async fn copies_both_ways_injects_noise_and_unplugs() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("dev0");
        let bridge = SerialBridge::start(&link).await.unwrap();
        let mut port = open_port(&link);
        // Bytes from the gateway before QEMU connects are lost, like a UART in reset.
        port.write_all(b"lost").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut qemu = TcpStream::connect(bridge.qemu_addr()).await.unwrap();

        qemu.write_all(b"hello from the device").await.unwrap();
        assert_eq!(
            read_exact_within(&mut port, 21).await,
            b"hello from the device"
        );
        port.write_all(b"to device").await.unwrap();
        assert_eq!(read_exact_within(&mut qemu, 9).await, b"to device");
        assert_eq!(bridge.stats().dropped.load(Ordering::Relaxed), 4);

        bridge
            .inject(Direction::ToHost, b"\xff\x00noise")
            .await
            .unwrap();
        assert_eq!(read_exact_within(&mut port, 7).await, b"\xff\x00noise");
        bridge
            .inject(Direction::ToDevice, b"\x13\x37")
            .await
            .unwrap();
        assert_eq!(read_exact_within(&mut qemu, 2).await, b"\x13\x37");

        // A reboot: the old connection goes, a new one carries on.
        drop(qemu);
        let mut qemu = TcpStream::connect(bridge.qemu_addr()).await.unwrap();
        qemu.write_all(b"again").await.unwrap();
        assert_eq!(read_exact_within(&mut port, 5).await, b"again");

        bridge.unplug().await;
        assert!(!link.exists(), "an unplugged adapter's link is gone");
        let mut buf = [0u8; 8];
        let closed = tokio::time::timeout(WAIT, port.read(&mut buf))
            .await
            .unwrap();
        assert!(
            matches!(closed, Ok(0) | Err(_)),
            "the gateway's port must fail when unplugged: {closed:?}"
        );
        bridge.plug().await.unwrap();
        let mut port = open_port(&link);
        qemu.write_all(b"back").await.unwrap();
        assert_eq!(read_exact_within(&mut port, 4).await, b"back");
    }
}
