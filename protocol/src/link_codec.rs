//! The link's framing as a tokio-util codec: each message is postcard bytes behind a 4-byte
//! big-endian length, at most [`MAX_LINK_FRAME`] bytes (the wire format `link` describes).
//!
//! Both ends use it, so a message is serialized straight into the connection's write buffer
//! (no buffer of its own, no copy) and decoded straight from the read buffer. Anything
//! serializable can be written ([`EventFrame`] writes an event the gateway still holds,
//! without copying it); what is read is always `In`. [`LinkWriter`] is a link's writing side:
//! queued messages gathered into one buffer, written in batches.

use core::marker::PhantomData;
use std::io;

use bytes::{Buf, BufMut, BytesMut};
use serde::de::DeserializeOwned;
use serde::ser::SerializeStructVariant;
use serde::{Serialize, Serializer};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder, Framed, FramedParts};

use crate::link::{Event, MAX_LINK_FRAME};

/// Bytes of the length in front of every message.
const HEADER: usize = 4;
/// Most bytes reserved for a message announced but not arrived: a length alone (from a peer
/// not even through the handshake) does not make the reader allocate 8 MiB; a bigger
/// message grows the buffer as its bytes come.
const RESERVE_AHEAD: usize = 64 * 1024;
/// Bytes of queued messages [`LinkWriter`] gathers into one write.
pub const WRITE_BATCH: usize = 64 * 1024;
/// A write buffer grown past this by a big message (a large reply) is freed after it.
const KEEP_WRITE_BUFFER: usize = 1024 * 1024;

/// Why a link message could not be read or written. Every one of them ends the link.
#[derive(Debug)]
pub enum LinkCodecError {
    /// The socket failed.
    Io(io::Error),
    /// A message announced or took more than [`MAX_LINK_FRAME`] bytes.
    TooBig(usize),
    /// A message's bytes are not a message of the expected type.
    Decode(postcard::Error),
    /// A message could not be serialized (a type that postcard cannot represent).
    Encode(postcard::Error),
}

impl core::fmt::Display for LinkCodecError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LinkCodecError::Io(err) => write!(f, "{err}"),
            LinkCodecError::TooBig(len) => {
                write!(
                    f,
                    "link message of {len} bytes, over the {MAX_LINK_FRAME}-byte limit"
                )
            }
            LinkCodecError::Decode(err) => write!(f, "undecodable link message: {err}"),
            LinkCodecError::Encode(err) => write!(f, "cannot encode a link message: {err}"),
        }
    }
}

impl std::error::Error for LinkCodecError {}

impl From<io::Error> for LinkCodecError {
    fn from(err: io::Error) -> Self {
        LinkCodecError::Io(err)
    }
}

/// Frames link messages: reads `In`, writes anything serializable.
#[derive(Debug)]
pub struct LinkCodec<In> {
    _in: PhantomData<fn() -> In>,
}

impl<In> LinkCodec<In> {
    /// A codec reading `In` messages.
    pub fn new() -> Self {
        LinkCodec { _in: PhantomData }
    }
}

impl<In> Default for LinkCodec<In> {
    fn default() -> Self {
        Self::new()
    }
}

impl<In: DeserializeOwned> Decoder for LinkCodec<In> {
    type Item = In;
    type Error = LinkCodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, LinkCodecError> {
        let Some(header) = src.get(..HEADER) else {
            src.reserve(HEADER);
            return Ok(None);
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > MAX_LINK_FRAME {
            return Err(LinkCodecError::TooBig(len));
        }
        let Some(body) = src.get(HEADER..HEADER + len) else {
            // Room for the rest of this message, so it arrives in as few reads as it can.
            src.reserve((HEADER + len - src.len()).min(RESERVE_AHEAD));
            return Ok(None);
        };
        let msg = postcard::from_bytes(body).map_err(LinkCodecError::Decode)?;
        src.advance(HEADER + len);
        Ok(Some(msg))
    }
}

impl<In, Out: Serialize> Encoder<Out> for LinkCodec<In> {
    type Error = LinkCodecError;

    fn encode(&mut self, msg: Out, dst: &mut BytesMut) -> Result<(), LinkCodecError> {
        let start = dst.len();
        dst.put_u32(0);
        let written = postcard::serialize_with_flavor(&msg, Append(dst));
        let len = dst.len() - start - HEADER;
        let refused = match written {
            Err(err) => Some(LinkCodecError::Encode(err)),
            Ok(()) if len > MAX_LINK_FRAME => Some(LinkCodecError::TooBig(len)),
            Ok(()) => None,
        };
        if let Some(err) = refused {
            // Nothing of it goes out: the messages around it stay whole.
            dst.truncate(start);
            return Err(err);
        }
        let header = (len as u32).to_be_bytes();
        dst[start..start + HEADER].copy_from_slice(&header);
        Ok(())
    }
}

/// The reading side of a link once its handshake is done: `read_half` of the socket, with
/// `read_buf`, what the handshake's `Framed` had already read past it (the peer may send
/// right behind its last handshake message).
pub fn reader<R, In>(read_half: R, read_buf: BytesMut) -> Framed<R, LinkCodec<In>> {
    let mut parts = FramedParts::new::<()>(read_half, LinkCodec::new());
    parts.read_buf = read_buf;
    Framed::from_parts(parts)
}

/// The writing side of a link: messages are encoded into one buffer as they are pushed and
/// go out together on [`LinkWriter::flush`].
#[derive(Debug)]
pub struct LinkWriter<W> {
    socket: W,
    buf: BytesMut,
}

impl<W: AsyncWrite + Unpin> LinkWriter<W> {
    /// A writer on `socket`, nothing pending.
    pub fn new(socket: W) -> Self {
        LinkWriter {
            socket,
            buf: BytesMut::new(),
        }
    }

    /// Encodes `msg` behind what is pending. On an error nothing of it is pending, and what
    /// was stays whole.
    pub fn push<T: Serialize>(&mut self, msg: T) -> Result<(), LinkCodecError> {
        LinkCodec::<()>::new().encode(msg, &mut self.buf)
    }

    /// Whether [`WRITE_BATCH`] bytes are pending: time to flush rather than gather more.
    pub fn is_full(&self) -> bool {
        self.buf.len() >= WRITE_BATCH
    }

    /// Writes everything pending. A buffer a big message grew is freed afterwards.
    pub async fn flush(&mut self) -> io::Result<()> {
        // Measured before the write: writing advances the buffer's start, and `capacity()`
        // counts from there.
        let grown = self.buf.capacity() > KEEP_WRITE_BUFFER;
        self.socket.write_all_buf(&mut self.buf).await?;
        if grown {
            self.buf = BytesMut::new();
        }
        Ok(())
    }

    /// Flushes, then closes the socket's writing side.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.socket.shutdown().await
    }
}

/// postcard output appended to a `BytesMut` in place.
struct Append<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.put_u8(byte);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.put_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// `GatewayToWorker::Event { id, event }` on the wire, from an event the sender keeps (the
/// gateway holds every event until it is acked): the same bytes, without a copy of the event.
#[derive(Debug, Clone, Copy)]
pub struct EventFrame<'a> {
    /// The event's id on its link.
    pub id: u64,
    /// The event.
    pub event: &'a Event,
}

impl Serialize for EventFrame<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Variant 2 of `GatewayToWorker`; a test checks the bytes against the enum's.
        let mut variant = serializer.serialize_struct_variant("GatewayToWorker", 2, "Event", 2)?;
        variant.serialize_field("id", &self.id)?;
        variant.serialize_field("event", self.event)?;
        variant.end()
    }
}
