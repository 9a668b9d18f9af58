//! A TCP proxy between an Ethernet device and the gateway's device port, with a hand on
//! the wire: the Ethernet counterpart of [`super::SerialBridge`].
//!
//! The firmware connects to the proxy (through QEMU's user network) instead of the
//! gateway; each accepted connection gets its own upstream connection, and when either
//! side closes, the other is closed too, so a device reset still looks like one to the
//! gateway and a gateway restart still looks like one to the device. Tests inject raw bytes
//! into either stream: TCP has no line noise, but a buggy peer or a desynchronised stream
//! looks exactly like this, and the device's decoder must survive it.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::bridge::{read_some, BridgeStats, Direction, CHUNK};

/// A running proxy; dropping it closes everything.
pub struct TcpProxy {
    addr: SocketAddr,
    cmds: mpsc::Sender<(Direction, Vec<u8>, oneshot::Sender<io::Result<()>>)>,
    stats: Arc<BridgeStats>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(BridgeStats::default());
        let (cmds, rx) = mpsc::channel(16);
        let task = tokio::spawn(
            Relay {
                listener,
                upstream,
                device: None,
                gateway: None,
                stats: stats.clone(),
            }
            .run(rx),
        );
        Ok(Self {
            addr,
            cmds,
            stats,
            task,
        })
    }

    /// Where the device connects.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Byte counts so far (`to_device`, `to_host`, `injected`, `connections`).
    pub fn stats(&self) -> &BridgeStats {
        &self.stats
    }

    /// Writes `bytes` into the current connection in `dir`, between two copied chunks.
    pub async fn inject(&self, dir: Direction, bytes: &[u8]) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        let stopped = || io::Error::new(io::ErrorKind::BrokenPipe, "the TCP proxy has stopped");
        self.cmds
            .send((dir, bytes.to_vec(), tx))
            .await
            .map_err(|_| stopped())?;
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The proxy task's state: at most one device connection and its upstream.
struct Relay {
    listener: TcpListener,
    upstream: SocketAddr,
    device: Option<TcpStream>,
    gateway: Option<TcpStream>,
    stats: Arc<BridgeStats>,
}

impl Relay {
    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<(Direction, Vec<u8>, oneshot::Sender<io::Result<()>>)>,
    ) {
        let mut from_device = vec![0u8; CHUNK];
        let mut from_gateway = vec![0u8; CHUNK];
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    if let Ok((device, _)) = accepted {
                        self.connect(device).await;
                    }
                }
                read = read_some(self.device.as_mut(), &mut from_device) => match read {
                    Ok(n) if n > 0 => {
                        let bytes = from_device.get(..n).unwrap_or_default();
                        self.forward(Direction::ToHost, bytes).await;
                    }
                    _ => self.close(),
                },
                read = read_some(self.gateway.as_mut(), &mut from_gateway) => match read {
                    Ok(n) if n > 0 => {
                        let bytes = from_gateway.get(..n).unwrap_or_default();
                        self.forward(Direction::ToDevice, bytes).await;
                    }
                    _ => self.close(),
                },
                cmd = cmds.recv() => match cmd {
                    Some((dir, bytes, done)) => {
                        let written = match self.stream(dir) {
                            Some(s) => s.write_all(&bytes).await,
                            None => Err(io::Error::new(io::ErrorKind::NotConnected, "no device connected")),
                        };
                        if written.is_ok() {
                            self.stats.injected.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        }
                        let _ = done.send(written);
                    }
                    None => return,
                },
            }
        }
    }

    /// A new device connection replaces the old one; it gets its own upstream, or is
    /// closed at once if the gateway does not accept (as it would be without the proxy).
    async fn connect(&mut self, device: TcpStream) {
        self.close();
        let Ok(gateway) = TcpStream::connect(self.upstream).await else {
            return;
        };
        let _ = device.set_nodelay(true);
        let _ = gateway.set_nodelay(true);
        self.device = Some(device);
        self.gateway = Some(gateway);
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
    }

    fn close(&mut self) {
        self.device = None;
        self.gateway = None;
    }

    fn stream(&mut self, dir: Direction) -> Option<&mut TcpStream> {
        match dir {
            Direction::ToDevice => self.device.as_mut(),
            Direction::ToHost => self.gateway.as_mut(),
        }
    }

    async fn forward(&mut self, dir: Direction, bytes: &[u8]) {
        let Some(stream) = self.stream(dir) else {
            return;
        };
        if stream.write_all(bytes).await.is_err() {
            self.close();
            return;
        }
        let counter = match dir {
            Direction::ToDevice => &self.stats.to_device,
            Direction::ToHost => &self.stats.to_host,
        };
        counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    }
}
