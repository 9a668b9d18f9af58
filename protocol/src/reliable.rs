//! Acknowledgement and retransmission of device frames: which messages need an ack, how long
//! to wait, how often to retry, and two small sans-IO helpers both ends use.
//!
//! The policy: `Hello` and `Chat` (either direction) must be acknowledged with `Ack { seq }`.
//! The sender keeps **one** such frame in flight (stop-and-wait; serial lines do not reorder)
//! and retransmits the identical bytes every [`ACK_TIMEOUT_MS`] up to [`MAX_RETRIES`] times,
//! then gives up and reports it. The receiver acks every copy it gets, delivers only the first:
//! a frame with the same `seq` **and** the same message as the last one delivered is a
//! retransmission ([`Dedup`]). Comparing the message as well as `seq` keeps a peer that
//! restarted (its `seq` back at 0) from having a new frame mistaken for an old one.
//! Pings, pongs, telemetry, errors and acks are never acked: losing one costs nothing.
//! Timers and I/O are the caller's: pass the current time in milliseconds.

use crate::frame::{encode, Frame, FrameError, MAX_WIRE_LEN};
use crate::message::{DeviceMsg, HostMsg};

/// How long a sender waits for an ack before sending the frame again. Round trips are well
/// under a millisecond on a UART at 115200 baud for a 256-byte frame (~22 ms worst case), so
/// this leaves room for a busy peer without stalling a chat for long.
pub const ACK_TIMEOUT_MS: u64 = 250;
/// Retransmissions after the first send before the sender gives up on a frame.
pub const MAX_RETRIES: u8 = 4;

impl DeviceMsg {
    /// `true` if the gateway must acknowledge this message.
    pub fn needs_ack(&self) -> bool {
        matches!(self, DeviceMsg::Hello(_) | DeviceMsg::Chat(_))
    }
}

impl HostMsg {
    /// `true` if the device must acknowledge this message.
    pub fn needs_ack(&self) -> bool {
        matches!(self, HostMsg::Chat(_))
    }
}

/// Receiver side: recognises retransmissions of the last delivered frame.
#[derive(Debug, Clone)]
pub struct Dedup<M> {
    last: Option<Frame<M>>,
}

impl<M> Default for Dedup<M> {
    fn default() -> Self {
        Self { last: None }
    }
}

impl<M: PartialEq + Clone> Dedup<M> {
    /// An empty window: the next frame is new.
    pub const fn new() -> Self {
        Self { last: None }
    }

    /// Returns `true` if `frame` is new (deliver it), `false` if it repeats the last
    /// delivered frame (ack it again, don't deliver).
    pub fn is_new(&mut self, frame: &Frame<M>) -> bool {
        if self.last.as_ref() == Some(frame) {
            return false;
        }
        self.last = Some(frame.clone());
        true
    }

    /// Forgets the last frame (after a link loss).
    pub fn reset(&mut self) {
        self.last = None;
    }
}

/// What [`Retransmit::poll`] asks the caller to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll<'a> {
    /// Nothing in flight.
    Idle,
    /// Waiting for the ack until this time (ms).
    WaitUntil(u64),
    /// Write these bytes again (a retransmission).
    Resend(&'a [u8]),
    /// No ack after every retry; the frame with this `seq` is dropped and the slot is free.
    GaveUp(u16),
}

/// Sender side: the one acknowledged frame in flight and its retry schedule.
#[derive(Debug, Clone, Default)]
pub struct Retransmit {
    wire: heapless::Vec<u8, MAX_WIRE_LEN>,
    seq: Option<u16>,
    retries: u8,
    due_ms: u64,
}

impl Retransmit {
    /// An empty slot.
    pub const fn new() -> Self {
        Self {
            wire: heapless::Vec::new(),
            seq: None,
            retries: 0,
            due_ms: 0,
        }
    }

    /// `true` if a frame waits for its ack: the caller must not start another.
    pub fn busy(&self) -> bool {
        self.seq.is_some()
    }

    /// Encodes `frame`, keeps it for retransmission, and returns the bytes to write now.
    /// Fails with `BufferFull` if the slot is busy or the frame does not encode.
    pub fn start<M: serde::Serialize>(
        &mut self,
        frame: &Frame<M>,
        now_ms: u64,
    ) -> Result<&[u8], FrameError> {
        if self.busy() {
            return Err(FrameError::BufferFull);
        }
        let mut buf = [0u8; MAX_WIRE_LEN];
        let n = encode(frame, &mut buf)?;
        self.wire.clear();
        self.wire
            .extend_from_slice(buf.get(..n).ok_or(FrameError::BufferFull)?)
            .map_err(|_| FrameError::BufferFull)?;
        self.seq = Some(frame.seq);
        self.retries = 0;
        self.due_ms = now_ms.saturating_add(ACK_TIMEOUT_MS);
        Ok(&self.wire)
    }

    /// An ack arrived; returns `true` if it completed the frame in flight.
    pub fn on_ack(&mut self, seq: u16) -> bool {
        if self.seq == Some(seq) {
            self.seq = None;
            return true;
        }
        false
    }

    /// Drops the frame in flight (after a link loss).
    pub fn reset(&mut self) {
        self.seq = None;
    }

    /// What to do at `now_ms`: nothing, wait, resend, or give up.
    pub fn poll(&mut self, now_ms: u64) -> Poll<'_> {
        let Some(seq) = self.seq else {
            return Poll::Idle;
        };
        if now_ms < self.due_ms {
            return Poll::WaitUntil(self.due_ms);
        }
        if self.retries >= MAX_RETRIES {
            self.seq = None;
            return Poll::GaveUp(seq);
        }
        self.retries += 1;
        self.due_ms = now_ms.saturating_add(ACK_TIMEOUT_MS);
        Poll::Resend(&self.wire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ChatOut, ErrorCode, ErrorReport};

    fn chat(seq: u16, text: &str) -> Frame<DeviceMsg> {
        Frame {
            seq,
            msg: DeviceMsg::Chat(ChatOut {
                to: None,
                text: text.try_into().unwrap(),
            }),
        }
    }

    #[test]
    fn policy() {
        assert!(chat(1, "x").msg.needs_ack());
        assert!(!DeviceMsg::Ping { nonce: 1 }.needs_ack());
        assert!(!HostMsg::Error(ErrorReport {
            code: ErrorCode::Busy,
            seq: 0
        })
        .needs_ack());
    }

    #[test]
    fn dedup_drops_only_exact_repeats() {
        let mut d = Dedup::new();
        assert!(d.is_new(&chat(1, "a")));
        assert!(!d.is_new(&chat(1, "a")), "retransmission");
        assert!(d.is_new(&chat(2, "a")), "next frame, same text");
        assert!(
            d.is_new(&chat(2, "b")),
            "same seq, new text: a restarted peer"
        );
        d.reset();
        assert!(d.is_new(&chat(2, "b")));
    }

    #[test]
    fn retransmit_schedule() {
        let mut r = Retransmit::new();
        assert_eq!(r.poll(0), Poll::Idle);
        let first = r.start(&chat(7, "hi"), 1000).unwrap().to_vec();
        assert!(r.busy());
        assert!(r.start(&chat(8, "no"), 1000).is_err(), "one in flight");
        assert_eq!(r.poll(1100), Poll::WaitUntil(1000 + ACK_TIMEOUT_MS));
        let mut now = 1000;
        for _ in 0..MAX_RETRIES {
            now += ACK_TIMEOUT_MS;
            assert_eq!(r.poll(now), Poll::Resend(&first[..]));
        }
        now += ACK_TIMEOUT_MS;
        assert_eq!(r.poll(now), Poll::GaveUp(7));
        assert!(!r.busy());
    }

    #[test]
    fn ack_frees_the_slot() {
        let mut r = Retransmit::new();
        r.start(&chat(7, "hi"), 0).unwrap();
        assert!(!r.on_ack(6), "wrong seq");
        assert!(r.on_ack(7));
        assert_eq!(r.poll(10_000), Poll::Idle);
    }
}
