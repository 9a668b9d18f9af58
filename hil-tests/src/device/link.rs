//! A device's end of one link: framed [`DeviceMsg`]s out, decoded [`HostMsg`]s in, over TCP,
//! a pty or any byte stream.
//!
//! Tests use it directly to send arbitrary frames or raw garbage and to read what the host
//! sends. What to answer is [`super::Responder`]'s business; reconnecting is
//! [`super::run_device`]'s.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use protocol::frame::{encode_to_vec, Decoder, Frame, FrameError};
use protocol::message::{DeviceMsg, HostMsg};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::pty::{PtyError, PtyLink};

/// Why a link operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The socket or pty failed.
    #[error("link i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The pty could not be set up.
    #[error(transparent)]
    Pty(#[from] PtyError),
    /// The host sent bytes that are not a frame; the link is still usable.
    #[error("bad frame from host: {0}")]
    Frame(FrameError),
    /// A message could not be encoded (too long for a frame).
    #[error("cannot encode frame: {0}")]
    Encode(FrameError),
    /// The host closed the link.
    #[error("link closed by the host")]
    Closed,
    /// Nothing arrived in time.
    #[error("no frame within {0:?}")]
    Timeout(Duration),
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// One open device link.
pub struct DeviceLink {
    // Declared first so it drops first: the pty's symlink goes before its master closes,
    // so the gateway never reopens a stale path that a new pty may have reused.
    pty: Option<PtyLink>,
    reader: Reader,
    writer: Writer,
    decoder: Decoder<HostMsg>,
    /// Frames decoded but not yet returned; keeps [`DeviceLink::recv_frame`] cancel-safe.
    ready: VecDeque<Result<Frame<HostMsg>, FrameError>>,
    seq: u16,
    peer: String,
}

impl DeviceLink {
    /// Connects to a gateway's device port.
    pub async fn connect_tcp(addr: &str) -> Result<Self, LinkError> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self::from_stream(stream, format!("tcp:{addr}")))
    }

    /// Creates a pty pair and publishes its slave at `link` for the gateway to open.
    pub fn open_pty(link: &Path) -> Result<Self, LinkError> {
        let (pty, master) = PtyLink::create(link)?;
        let mut this = Self::from_stream(master, format!("pty:{}", link.display()));
        this.pty = Some(pty);
        Ok(this)
    }

    /// A link over any byte stream (a `tokio::io::duplex` in unit tests).
    pub fn from_stream<S>(stream: S, peer: String) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, writer) = tokio::io::split(stream);
        Self {
            pty: None,
            reader: Box::new(reader),
            writer: Box::new(writer),
            decoder: Decoder::new(),
            ready: VecDeque::new(),
            seq: 0,
            peer,
        }
    }

    /// Where this link goes, for logs.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The pty behind this link, if it is one.
    pub fn pty(&self) -> Option<&PtyLink> {
        self.pty.as_ref()
    }

    /// Sends `msg` with the next sequence number; returns that number.
    pub async fn send(&mut self, msg: DeviceMsg) -> Result<u16, LinkError> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.send_frame(&Frame { seq, msg }).await?;
        Ok(seq)
    }

    /// Sends a frame as given (any sequence number).
    pub async fn send_frame(&mut self, frame: &Frame<DeviceMsg>) -> Result<(), LinkError> {
        tracing::trace!(peer = %self.peer, seq = frame.seq, msg = ?frame.msg, "send");
        let bytes = encode_to_vec(frame).map_err(LinkError::Encode)?;
        self.send_raw(&bytes).await
    }

    /// Writes bytes as they are: garbage, corrupt frames, half frames.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.writer.write_all(bytes).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// The next frame from the host. A bad frame is [`LinkError::Frame`] and the link stays
    /// usable. Cancel-safe: no frame is lost if the future is dropped.
    pub async fn recv_frame(&mut self) -> Result<Frame<HostMsg>, LinkError> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return item.map_err(LinkError::Frame);
            }
            let mut buf = [0u8; 512];
            let n = self.reader.read(&mut buf).await?;
            if n == 0 {
                return Err(LinkError::Closed);
            }
            let bytes = buf.get(..n).unwrap_or_default();
            self.ready.extend(self.decoder.feed(bytes));
        }
    }

    /// The next message from the host, skipping bad frames (they are logged).
    pub async fn recv(&mut self) -> Result<HostMsg, LinkError> {
        loop {
            match self.recv_frame().await {
                Ok(frame) => return Ok(frame.msg),
                Err(LinkError::Frame(e)) => {
                    tracing::warn!(peer = %self.peer, cause = %e, "bad frame from host")
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Like [`DeviceLink::recv`], failing with [`LinkError::Timeout`] after `limit`.
    pub async fn recv_timeout(&mut self, limit: Duration) -> Result<HostMsg, LinkError> {
        tokio::time::timeout(limit, self.recv())
            .await
            .map_err(|_| LinkError::Timeout(limit))?
    }
}
