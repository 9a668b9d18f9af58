//! The device on one link: reads host bytes, writes what [`Device`] asks for, sleeps until
//! its next deadline. I/O only; the protocol logic is in [`crate::device`].

use embassy_time::{with_deadline, Instant};
use embedded_io_async::{Error as _, ErrorKind, Read, Write};
use protocol::MAX_WIRE_LEN;

use crate::device::{Device, Step};
use crate::{Board, Config, Stats};

/// Bytes asked of the link per read. Frames are handled one at a time from this buffer, so
/// its size only trades read calls against RAM.
const READ_CHUNK: usize = 64;

/// Why [`run`] returned: the link is gone and the caller decides what next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LinkError {
    /// The peer closed the link (a read returned 0 bytes).
    Eof,
    /// Reading failed.
    Read(ErrorKind),
    /// Writing failed.
    Write(ErrorKind),
}

fn now_ms() -> u64 {
    Instant::now().as_millis()
}

/// Runs the device on one link until the link fails (read error/EOF); the caller reconnects
/// (TCP) or calls again, and `run` starts with a fresh Hello. Never panics on any input.
///
/// `rx.read` must be cancel-safe (a read dropped before completing loses no bytes): `run`
/// drops it when a timer is due. UART drivers with a receive buffer and embassy-net sockets
/// are.
pub async fn run<R: Read, W: Write, B: Board>(
    mut rx: R,
    mut tx: W,
    board: &mut B,
    config: &Config,
    stats: &Stats,
) -> LinkError {
    info!("link up as {}", config.device_id);
    let mut device = Device::new(config, now_ms());
    let mut buf = [0u8; READ_CHUNK];
    let mut out = [0u8; MAX_WIRE_LEN];
    // Unhandled bytes are `buf[pos..len]`.
    let (mut pos, mut len) = (0, 0);
    let end = loop {
        let wait_until = match flush(&mut device, &mut tx, board, stats, &mut out).await {
            Ok(at) => at,
            Err(err) => break err,
        };
        if let Some(mut input) = buf.get(pos..len).filter(|b| !b.is_empty()) {
            let before = input.len();
            device.receive(&mut input, now_ms(), board, stats);
            pos += before - input.len();
            continue;
        }
        match with_deadline(Instant::from_millis(wait_until), rx.read(&mut buf)).await {
            Err(_timeout) => {}
            Ok(Ok(0)) => break LinkError::Eof,
            Ok(Ok(n)) => (pos, len) = (0, n.min(buf.len())),
            Ok(Err(err)) => break LinkError::Read(err.kind()),
        }
    };
    stats.link_losses.bump();
    warn!("link lost: {:?}", end);
    end
}

/// Writes every frame the device has due; returns when to look again.
async fn flush<W: Write, B: Board>(
    device: &mut Device<'_>,
    tx: &mut W,
    board: &B,
    stats: &Stats,
    out: &mut [u8; MAX_WIRE_LEN],
) -> Result<u64, LinkError> {
    let mut wrote = false;
    loop {
        match device.transmit(now_ms(), board, stats, out) {
            Step::Write(n) => {
                let bytes = out.get(..n).unwrap_or_default();
                tx.write_all(bytes)
                    .await
                    .map_err(|e| LinkError::Write(e.kind()))?;
                stats.frames_out.bump();
                wrote = true;
            }
            Step::Wait(at) => {
                if wrote {
                    tx.flush().await.map_err(|e| LinkError::Write(e.kind()))?;
                }
                return Ok(at);
            }
        }
    }
}
