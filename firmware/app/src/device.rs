//! The device's side of one link, sans-IO: host bytes in, frames to write out, and when to
//! look again. Owns the sequence numbers, the hello handshake, acks and dedup of host chat,
//! the stop-and-wait slot for the device's own Hello and Chat frames, the bounded reply
//! queue and the telemetry schedule, and who gets which chat: replies, `send`, relays. Time
//! is passed in (ms since boot); I/O is [`crate::run`]'s job, command answers are
//! [`crate::command`]'s.
//!
//! Devices talking to devices never loop. A device sends another device only (1) the text of
//! a `send`, which only a human can ask for, or (2) a reply to a command from that device, and
//! only a reply that is not itself a command ([`Request::Command`]). Text from a device that
//! is not a command is never answered: it goes to the human who last asked for a `send` (the
//! relay target), or nowhere. So each human request causes at most two device-to-device
//! messages.

use core::fmt::Write as _;

use heapless::Deque;
use protocol::reliable::{Dedup, Poll, Retransmit};
use protocol::{
    encode, ChatIn, ChatOut, Decoder, DeviceMsg, ErrorCode, Frame, Hello, HostMsg, PeerId,
    Telemetry, Text, MAX_WIRE_LEN, PROTOCOL_VERSION,
};

use crate::command::{self, Env, Request};
use crate::text::{truncated, TextWriter};
use crate::{Board, Config, Stats};

/// Replies waiting while another frame awaits its ack. Small: a human types slower than the
/// gateway acks; a burst beyond this drops the oldest reply (counted in `replies_dropped`).
pub const REPLY_QUEUE: usize = 4;
/// Pause before saying Hello again once every retry of the last one went unacked.
pub const HELLO_RETRY_MS: u64 = 2_000;
/// Unacked answers (acks, pongs) waiting to be written. `run` writes them after every frame
/// it reads, so one slot would do; two leave room for a frame that needs an ack and a reply.
const CHORES: usize = 2;

/// Telemetry sent in each burst, one frame per measurement, in this order.
const MEASUREMENTS: [&str; 8] = [
    "uptime_s",
    "frames_in",
    "frames_out",
    "frame_errors",
    "retransmits",
    "replies_dropped",
    "led",
    "free_stack_b",
];

/// What [`Device::transmit`] asks the caller to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Write the first `n` bytes of the output buffer, then call `transmit` again.
    Write(usize),
    /// Nothing to write until this time (ms), unless bytes arrive first.
    Wait(u64),
}

/// An unacked frame to send as soon as possible.
#[derive(Debug, Clone, Copy)]
enum Chore {
    Ack(u16),
    Pong(u32),
}

/// The device's acked frame in flight; a chat is kept so `HelloRequired` can queue it again.
#[allow(
    clippy::large_enum_variant,
    reason = "one value in the device state; boxing needs an allocator"
)]
#[derive(Debug)]
enum InFlight {
    Hello,
    Chat(ChatOut),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HelloState {
    /// Hello to be sent at this time (ms) or later.
    Due(u64),
    /// In the retransmit slot.
    Sent,
    /// The gateway acked it.
    Acked,
}

/// One link's protocol state; make a new one per link (after a link loss `run` starts over).
pub struct Device<'c> {
    config: &'c Config,
    /// Last sequence number used; 0 is skipped, as error reports use it for "no frame".
    seq: u16,
    decoder: Decoder<HostMsg>,
    dedup: Dedup<HostMsg>,
    retransmit: Retransmit,
    in_flight: Option<InFlight>,
    hello: HelloState,
    replies: Deque<ChatOut, REPLY_QUEUE>,
    chores: Deque<Chore, CHORES>,
    telemetry_due_ms: u64,
    /// Index into [`MEASUREMENTS`] of the next telemetry frame; past the end when idle.
    telemetry_next: usize,
    /// A Hello went out on this link (acked or not).
    said_hello: bool,
    /// The human who last asked for a `send`: device text that is not a command goes there.
    /// Only ever a human uid, so a relay never reaches a device.
    relay_to: Option<PeerId>,
}

impl<'c> Device<'c> {
    /// A fresh link at `now_ms`: Hello is due at once, the first telemetry one interval later.
    pub fn new(config: &'c Config, now_ms: u64) -> Self {
        Self {
            config,
            seq: 0,
            decoder: Decoder::new(),
            dedup: Dedup::new(),
            retransmit: Retransmit::new(),
            in_flight: None,
            hello: HelloState::Due(now_ms),
            replies: Deque::new(),
            chores: Deque::new(),
            telemetry_due_ms: now_ms.saturating_add(config.telemetry_every.as_millis()),
            telemetry_next: MEASUREMENTS.len(),
            said_hello: false,
            relay_to: None,
        }
    }

    /// `true` once the gateway acked this link's Hello.
    pub fn hello_acked(&self) -> bool {
        self.hello == HelloState::Acked
    }

    /// Consumes bytes from `input` up to and including the end of the next frame (or all of
    /// them if no frame ends there) and handles that frame. Call [`Self::transmit`] after each
    /// call so acks and replies go out in order.
    pub fn receive<B: Board>(
        &mut self,
        input: &mut &[u8],
        now_ms: u64,
        board: &mut B,
        stats: &Stats,
    ) {
        match self.decoder.next_frame(input) {
            None => {}
            Some(Err(err)) => {
                stats.frame_errors.bump();
                warn!("bad frame from host: {:?}", err);
            }
            Some(Ok(frame)) => {
                stats.frames_in.bump();
                self.on_frame(frame, now_ms, board, stats);
            }
        }
    }

    fn on_frame<B: Board>(
        &mut self,
        frame: Frame<HostMsg>,
        now_ms: u64,
        board: &mut B,
        stats: &Stats,
    ) {
        let new = !frame.msg.needs_ack() || self.dedup.is_new(&frame);
        match frame.msg {
            HostMsg::Chat(chat) => {
                self.chore(Chore::Ack(frame.seq));
                if !new {
                    debug!("host chat {} again, acked, not answered", frame.seq);
                } else if !chat.direct {
                    debug!("broadcast from {} ignored", chat.from.as_str());
                } else if is_human(&chat.from) {
                    self.on_human_chat(chat, now_ms, board, stats);
                } else {
                    self.on_device_chat(chat, now_ms, board, stats);
                }
            }
            HostMsg::Ack { seq } => {
                if self.retransmit.on_ack(seq) {
                    if let Some(InFlight::Hello) = self.in_flight.take() {
                        info!("hello acked");
                        self.hello = HelloState::Acked;
                    }
                }
            }
            HostMsg::Ping { nonce } => self.chore(Chore::Pong(nonce)),
            HostMsg::Pong { .. } => {}
            HostMsg::Error(report) if report.code == ErrorCode::HelloRequired => {
                self.hello_required(now_ms);
            }
            HostMsg::Error(report) => {
                warn!("host error {:?} about frame {}", report.code, report.seq);
            }
        }
    }

    /// A human's direct message: every line gets a reply; a `send` also queues its message
    /// and makes the human the relay target.
    fn on_human_chat<B: Board>(&mut self, chat: ChatIn, now_ms: u64, board: &mut B, stats: &Stats) {
        let text = self.answer(&chat, now_ms, board, stats);
        // The reply first, so "sent to PEER" reaches the human before the peer's answer.
        self.queue(
            ChatOut {
                to: Some(chat.from.clone()),
                text,
            },
            stats,
        );
        if let Some(out) = command::parse(&chat.text).chat_out() {
            self.relay_to = Some(chat.from);
            self.queue(out, stats);
        }
    }

    /// Another device's direct message: a command is answered unless the answer would be a
    /// command to that device; any other text is relayed or dropped, never answered.
    fn on_device_chat<B: Board>(
        &mut self,
        chat: ChatIn,
        now_ms: u64,
        board: &mut B,
        stats: &Stats,
    ) {
        if command::parse(&chat.text) == Request::Command {
            let text = self.answer(&chat, now_ms, board, stats);
            if command::parse(&text) == Request::Command {
                // `led on` answers `led on`: sent back, the two devices would never stop.
                info!("reply to {} is a command; dropped", chat.from.as_str());
            } else {
                let to = Some(chat.from);
                self.queue(ChatOut { to, text }, stats);
            }
        } else if let Some(to) = self.relay_to.clone() {
            let mut text = TextWriter::new();
            // Cannot fail: a TextWriter truncates on a char boundary instead.
            let _ = write!(text, "{}: {}", chat.from.as_str(), chat.text.as_str());
            let text = text.finish();
            self.queue(ChatOut { to: Some(to), text }, stats);
        } else {
            info!(
                "'{}' from {}: no relay target, dropped",
                chat.text.as_str(),
                chat.from.as_str()
            );
        }
    }

    fn answer<B: Board>(&self, chat: &ChatIn, now_ms: u64, board: &mut B, stats: &Stats) -> Text {
        let env = Env {
            uptime_s: now_ms / 1000,
            config: self.config,
            stats,
        };
        let text = command::answer(&chat.text, board, &env);
        debug!(
            "'{}' from {}: '{}'",
            chat.text.as_str(),
            chat.from.as_str(),
            text.as_str()
        );
        text
    }

    /// Queues a chat to send, dropping the oldest waiting one if the queue is full.
    fn queue(&mut self, chat: ChatOut, stats: &Stats) {
        if self.replies.is_full() {
            self.replies.pop_front();
            stats.replies_dropped.bump();
            warn!("reply queue full, oldest reply dropped");
        }
        // Cannot fail: a slot was freed above if there was none.
        let _ = self.replies.push_back(chat);
    }

    /// The gateway does not know us (it restarted, or missed our Hello): say Hello again,
    /// then resend the chat it refused.
    fn hello_required(&mut self, now_ms: u64) {
        if self.hello == HelloState::Sent {
            return; // an answer to something sent before the Hello now in flight
        }
        info!("host asks for hello");
        if let Some(InFlight::Chat(chat)) = self.in_flight.take() {
            self.retransmit.reset();
            if self.replies.is_full() {
                self.replies.pop_back();
            }
            let _ = self.replies.push_front(chat);
        }
        self.hello = HelloState::Due(now_ms);
    }

    fn chore(&mut self, chore: Chore) {
        if self.chores.is_full() {
            // The host retransmits what it does not see acked; pings are best effort.
            self.chores.pop_front();
        }
        let _ = self.chores.push_back(chore);
    }

    /// The next frame to write at `now_ms`, encoded into `out`, or how long to wait.
    pub fn transmit<B: Board>(
        &mut self,
        now_ms: u64,
        board: &B,
        stats: &Stats,
        out: &mut [u8; MAX_WIRE_LEN],
    ) -> Step {
        if let Some(n) = self.transmit_unacked_chore(out) {
            return Step::Write(n);
        }
        let mut ack_due = None;
        match self.retransmit.poll(now_ms) {
            Poll::Resend(bytes) => {
                stats.retransmits.bump();
                out[..bytes.len()].copy_from_slice(bytes);
                return Step::Write(bytes.len());
            }
            Poll::GaveUp(seq) => {
                stats.gave_up.bump();
                match self.in_flight.take() {
                    Some(InFlight::Hello) => {
                        warn!("hello {} unacked, again in {} ms", seq, HELLO_RETRY_MS);
                        self.hello = HelloState::Due(now_ms.saturating_add(HELLO_RETRY_MS));
                    }
                    _ => warn!("frame {} unacked after every retry, dropped", seq),
                }
            }
            Poll::WaitUntil(at) => ack_due = Some(at),
            Poll::Idle => {}
        }
        if !self.retransmit.busy() {
            if let Some(n) = self.start_acked(now_ms, out) {
                return Step::Write(n);
            }
        }
        if let Some(n) = self.transmit_telemetry(now_ms, board, stats, out) {
            return Step::Write(n);
        }
        Step::Wait(self.next_wakeup(now_ms, ack_due))
    }

    fn transmit_unacked_chore(&mut self, out: &mut [u8; MAX_WIRE_LEN]) -> Option<usize> {
        let msg = match self.chores.pop_front()? {
            Chore::Ack(seq) => DeviceMsg::Ack { seq },
            Chore::Pong(nonce) => DeviceMsg::Pong { nonce },
        };
        self.encode(&msg, out)
    }

    /// Starts the next acked frame, Hello first, if one is due.
    fn start_acked(&mut self, now_ms: u64, out: &mut [u8; MAX_WIRE_LEN]) -> Option<usize> {
        let msg = match self.hello {
            HelloState::Due(at) if at <= now_ms => self.hello_msg(),
            _ => DeviceMsg::Chat(self.replies.pop_front()?),
        };
        let frame = Frame {
            seq: self.next_seq(),
            msg,
        };
        let n = match self.retransmit.start(&frame, now_ms) {
            Ok(bytes) => {
                out[..bytes.len()].copy_from_slice(bytes);
                bytes.len()
            }
            Err(err) => {
                // Every message is bounded to fit a frame; this would be a protocol bug.
                error!("frame {} does not encode: {:?}", frame.seq, err);
                return None;
            }
        };
        self.in_flight = Some(match frame.msg {
            DeviceMsg::Chat(chat) => InFlight::Chat(chat),
            _ => {
                debug!("hello {} sent", frame.seq);
                self.hello = HelloState::Sent;
                self.said_hello = true;
                InFlight::Hello
            }
        });
        Some(n)
    }

    fn hello_msg(&self) -> DeviceMsg {
        DeviceMsg::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            device_id: truncated(self.config.device_id),
            firmware: truncated(self.config.firmware),
        })
    }

    fn transmit_telemetry<B: Board>(
        &mut self,
        now_ms: u64,
        board: &B,
        stats: &Stats,
        out: &mut [u8; MAX_WIRE_LEN],
    ) -> Option<usize> {
        // Telemetry only after a Hello went out: before it the gateway cannot place it.
        if now_ms >= self.telemetry_due_ms && self.said_hello {
            let every = self.config.telemetry_every.as_millis().max(1);
            self.telemetry_due_ms = now_ms.saturating_add(every);
            self.telemetry_next = 0;
        }
        while let Some(name) = MEASUREMENTS.get(self.telemetry_next) {
            self.telemetry_next += 1;
            let Some(value) = measure(name, now_ms, board, stats) else {
                continue;
            };
            let msg = DeviceMsg::Telemetry(Telemetry {
                name: truncated(name),
                value,
            });
            return self.encode(&msg, out);
        }
        None
    }

    /// The earliest of: the ack timeout of the frame in flight, else a Hello due; telemetry.
    /// Never before `now_ms + 1`, so a bug here costs a late frame, not a busy loop.
    fn next_wakeup(&self, now_ms: u64, ack_due: Option<u64>) -> u64 {
        let mut at = u64::MAX;
        if self.said_hello {
            at = self.telemetry_due_ms;
        }
        match (ack_due, self.hello) {
            (Some(due), _) => at = at.min(due),
            (None, HelloState::Due(hello)) => at = at.min(hello),
            (None, _) => {}
        }
        at.max(now_ms.saturating_add(1))
    }

    fn next_seq(&mut self) -> u16 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    fn encode(&mut self, msg: &DeviceMsg, out: &mut [u8; MAX_WIRE_LEN]) -> Option<usize> {
        let seq = self.next_seq();
        match encode(&Frame { seq, msg }, out) {
            Ok(n) => Some(n),
            Err(err) => {
                error!("frame {} does not encode: {:?}", seq, err);
                None
            }
        }
    }
}

/// Human uids are decimal digits; device ids never are (the gateway refuses all-digit ids).
/// An empty id is neither and is treated as a device, the side that is never obeyed.
fn is_human(peer: &str) -> bool {
    !peer.is_empty() && peer.bytes().all(|b| b.is_ascii_digit())
}

/// The value of telemetry `name` now, if the board can tell.
fn measure<B: Board>(name: &str, now_ms: u64, board: &B, stats: &Stats) -> Option<i64> {
    let value = match name {
        "uptime_s" => return Some(i64::try_from(now_ms / 1000).unwrap_or(i64::MAX)),
        "frames_in" => stats.frames_in.get(),
        "frames_out" => stats.frames_out.get(),
        "frame_errors" => stats.frame_errors.get(),
        "retransmits" => stats.retransmits.get(),
        "replies_dropped" => stats.replies_dropped.get(),
        "led" => u32::from(board.led()),
        "free_stack_b" => board.free_stack()?,
        _ => return None,
    };
    Some(i64::from(value))
}
