//! Device framing: turns messages into bytes on a serial line or TCP stream and back.
//!
//! On the wire a frame is `COBS(postcard(seq, msg) ++ crc16_le) ++ 0x00`. The CRC is
//! CRC-16/IBM-SDLC (the HDLC/X.25 CRC) over the postcard bytes. [`Decoder`] is a sans-IO
//! accumulator: feed it any bytes, get frames or typed errors, and it resynchronises at the
//! next `0x00`. It owns a fixed buffer, never allocates and never panics. Acknowledgement and
//! retransmission policy is not here; this module only moves bytes.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Longest frame body before COBS: postcard bytes plus the 2-byte CRC. Every message in
/// [`crate::message`] fits with room to spare: the largest, a chat frame with every field
/// full, is 234 bytes (a test pins this, so a field that breaks the bound fails it).
pub const MAX_FRAME_LEN: usize = 256;
/// Longest frame on the wire: COBS adds one byte per 254 plus one, then the delimiter.
pub const MAX_WIRE_LEN: usize = MAX_FRAME_LEN + MAX_FRAME_LEN / 254 + 2;

const CRC: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_SDLC);
const CRC_LEN: usize = 2;

/// A message with the sender's sequence number.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Frame<M> {
    /// Sender's sequence number, incremented per frame, wrapping; acks name it.
    pub seq: u16,
    /// The message.
    pub msg: M,
}

/// Why bytes did not make a frame. Each error consumes the bytes up to the next delimiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FrameError {
    /// More than [`MAX_WIRE_LEN`] bytes arrived without a delimiter.
    TooLong,
    /// The bytes between delimiters are not valid COBS.
    BadCobs,
    /// Fewer bytes than a CRC and a message need.
    Truncated,
    /// The CRC does not match.
    BadCrc,
    /// The CRC matched but the body is not a message of the expected type.
    Decode,
    /// The output buffer given to [`encode`] is too small, or the message is over [`MAX_FRAME_LEN`].
    BufferFull,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            FrameError::TooLong => "frame too long",
            FrameError::BadCobs => "bad COBS encoding",
            FrameError::Truncated => "frame truncated",
            FrameError::BadCrc => "bad CRC",
            FrameError::Decode => "cannot decode message",
            FrameError::BufferFull => "message does not fit a frame",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FrameError {}

/// Encodes `frame` into `out` as wire bytes, delimiter included; returns the length used.
///
/// `out` needs room for exactly the frame's wire length; [`MAX_WIRE_LEN`] always suffices.
pub fn encode<M: Serialize>(frame: &Frame<M>, out: &mut [u8]) -> Result<usize, FrameError> {
    let mut body = [0u8; MAX_FRAME_LEN];
    // postcard writes at most MAX_FRAME_LEN - CRC_LEN bytes, so the CRC always fits after
    // them: the slicing below cannot go out of bounds.
    let used = postcard::to_slice(frame, &mut body[..MAX_FRAME_LEN - CRC_LEN])
        .map_err(|_| FrameError::BufferFull)?
        .len();
    let crc = CRC.checksum(&body[..used]).to_le_bytes();
    body[used..used + CRC_LEN].copy_from_slice(&crc);
    let raw = &body[..used + CRC_LEN];
    // COBS straight into `out`; no second staging buffer, and no panic on a short `out`.
    let n = cobs::try_encode(raw, out).map_err(|_| FrameError::BufferFull)?;
    *out.get_mut(n).ok_or(FrameError::BufferFull)? = 0;
    Ok(n + 1)
}

/// Encodes `frame` into a fixed buffer; convenient for callers that write it out at once.
pub fn encode_to_vec<M: Serialize>(
    frame: &Frame<M>,
) -> Result<heapless::Vec<u8, MAX_WIRE_LEN>, FrameError> {
    let mut out = heapless::Vec::new();
    out.resize(MAX_WIRE_LEN, 0)
        .map_err(|_| FrameError::BufferFull)?;
    let n = encode(frame, &mut out)?;
    out.truncate(n);
    Ok(out)
}

/// Sans-IO frame accumulator. Feed it bytes as they arrive; it yields one item per delimiter.
pub struct Decoder<M> {
    buf: [u8; MAX_WIRE_LEN],
    len: usize,
    /// Set when the current frame overflowed; bytes are skipped until the next delimiter.
    overflow: bool,
    _msg: core::marker::PhantomData<fn() -> M>,
}

impl<M: DeserializeOwned> Default for Decoder<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: DeserializeOwned> Decoder<M> {
    /// An empty decoder.
    pub const fn new() -> Self {
        Self {
            buf: [0; MAX_WIRE_LEN],
            len: 0,
            overflow: false,
            _msg: core::marker::PhantomData,
        }
    }

    /// Bytes held for a frame not yet delimited.
    pub fn pending(&self) -> usize {
        self.len
    }

    /// Drops any partial frame (after a link loss, say).
    pub fn reset(&mut self) {
        self.len = 0;
        self.overflow = false;
    }

    /// Returns an iterator of the frames and errors delimited in `input`. Bytes after the
    /// last delimiter stay in the decoder for the next call.
    pub fn feed<'d, 'i>(&'d mut self, input: &'i [u8]) -> Feed<'d, 'i, M> {
        Feed {
            decoder: self,
            input,
        }
    }

    /// Consumes bytes from `input` up to and including the next delimiter that ends a
    /// non-empty frame; returns that frame's result, or `None` if `input` ran out first.
    pub fn next_frame(&mut self, input: &mut &[u8]) -> Option<Result<Frame<M>, FrameError>> {
        while let Some((&byte, rest)) = input.split_first() {
            *input = rest;
            if byte != 0 {
                if let Some(slot) = self.buf.get_mut(self.len) {
                    *slot = byte;
                    self.len += 1;
                } else {
                    self.overflow = true;
                }
                continue;
            }
            let overflow = core::mem::replace(&mut self.overflow, false);
            let len = core::mem::replace(&mut self.len, 0);
            if overflow {
                return Some(Err(FrameError::TooLong));
            }
            if len == 0 {
                continue; // back-to-back delimiters: an idle line, not an error
            }
            // `len <= MAX_WIRE_LEN` (see above), so this is never the empty fallback.
            return Some(Self::decode(self.buf.get_mut(..len).unwrap_or_default()));
        }
        None
    }

    fn decode(bytes: &mut [u8]) -> Result<Frame<M>, FrameError> {
        let n = cobs::decode_in_place(bytes).map_err(|_| FrameError::BadCobs)?;
        let raw = bytes.get(..n).ok_or(FrameError::BadCobs)?;
        if raw.len() <= CRC_LEN {
            return Err(FrameError::Truncated);
        }
        let (body, crc) = raw.split_at(raw.len() - CRC_LEN);
        if CRC.checksum(body).to_le_bytes() != crc {
            return Err(FrameError::BadCrc);
        }
        match postcard::take_from_bytes::<Frame<M>>(body) {
            Ok((frame, [])) => Ok(frame),
            _ => Err(FrameError::Decode),
        }
    }
}

/// Iterator returned by [`Decoder::feed`].
pub struct Feed<'d, 'i, M> {
    decoder: &'d mut Decoder<M>,
    input: &'i [u8],
}

impl<M: DeserializeOwned> Iterator for Feed<'_, '_, M> {
    type Item = Result<Frame<M>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.decoder.next_frame(&mut self.input)
    }
}
