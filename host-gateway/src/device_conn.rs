//! One device's connection over any byte stream (TCP or a serial port): decodes frames
//! into the router, encodes its queue into frames with this side's sequence numbers, and
//! does the link chores itself: pongs, malformed-frame reports, and the acknowledgements of
//! `protocol::reliable` (acks and dedup of the device's frames, stop-and-wait retransmission
//! of chat frames to it), and heartbeats (a `Ping` when the router's sweep finds the device
//! silent, see `heartbeat.rs`). I/O only: what the messages mean is the workers' business.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use protocol::link::{ClientId, ClientKind, Inbound, Outbound};
use protocol::reliable::{Dedup, Poll, Retransmit};
use protocol::{DeviceMsg, ErrorCode, ErrorReport, Frame, FrameError, HostMsg};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::connection::{Conn, End, Outbox, Outgoing};
use crate::heartbeat::Activity;
use crate::mailbox::Recv;
use crate::server::Context;
use crate::stats::{add, bump, Counters};

/// At most one error report per this interval: a device spewing garbage (wrong baud rate,
/// say) must not get a flood back that its own small buffers cannot take.
const ERROR_REPLY_INTERVAL: Duration = Duration::from_secs(1);
/// Read size; a few frames' worth.
const READ_BUF: usize = 1024;
/// Bytes gathered from the queue into one write.
const WRITE_BATCH: usize = 16 * 1024;
/// Link chores (acks, pongs, reports) waiting for the writer. Each answers one received
/// frame, and the writer drains them first; if the device floods faster than that, a chore
/// is dropped (a lost ack makes the device retransmit; a lost pong is a missed ping).
const CHORE_QUEUE: usize = 64;

/// What the reader asks of the writer, ahead of the outbound queue.
#[derive(Debug)]
enum Chore {
    /// Acknowledge the device's frame `seq`.
    Ack(u16),
    /// Answer a ping.
    Pong(u32),
    /// Report a frame we could not decode.
    Report(ErrorReport),
    /// The device acknowledged our frame `seq`.
    Acked(u16),
}

/// Serves one accepted device TCP connection until it closes.
pub async fn serve_tcp(ctx: Context, stream: TcpStream, peer: SocketAddr) {
    serve(ctx, stream, ClientKind::DeviceTcp, peer.to_string()).await;
}

/// Serves one device connection over `stream` until it closes; returns why it ended.
pub async fn serve<S>(ctx: Context, stream: S, kind: ClientKind, peer: String) -> Option<End>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let conn = Conn::open(&ctx, kind, peer.clone()).await?;
    let span = tracing::info_span!("device", conn = %conn.id, %peer);
    async move {
        tracing::debug!(?kind, "connected");
        Some(run(conn, stream).await)
    }
    .instrument(span)
    .await
}

async fn run<S>(mut conn: Conn, stream: S) -> End
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (chores_tx, mut chores_rx) = mpsc::channel(CHORE_QUEUE);
    let end = {
        let activity = &conn.own.status().activity;
        let reader = read_frames(&mut rd, conn.id, &chores_tx, activity, &conn.ctx);
        let writer = write_queue(
            &mut wr,
            &mut conn.rx,
            &mut chores_rx,
            conn.id,
            &conn.ctx.counters,
        );
        tokio::select! {
            end = reader => end,
            end = writer => end,
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
    conn.close(&end).await;
    end
}

async fn read_frames(
    rd: &mut (impl AsyncRead + Unpin),
    id: ClientId,
    chores: &mpsc::Sender<Chore>,
    activity: &Activity,
    ctx: &Context,
) -> End {
    let mut decoder = protocol::Decoder::<DeviceMsg>::new();
    let mut dedup = Dedup::<DeviceMsg>::new();
    let mut buf = [0u8; READ_BUF];
    let mut last_report: Option<Instant> = None;
    let chore = |c: Chore| {
        // Full: see CHORE_QUEUE for why dropping is the policy.
        if chores.try_send(c).is_err() {
            bump(&ctx.counters.dropped);
        }
    };

    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) => return End::PeerClosed,
            Ok(n) => n,
            Err(err) => return End::Io(err),
        };
        let mut input = buf.get(..n).unwrap_or_default();
        while let Some(item) = decoder.next_frame(&mut input) {
            let Frame { seq, msg } = match item {
                Ok(frame) => frame,
                Err(err) => {
                    bump(&ctx.counters.input_errors);
                    tracing::debug!(cause = %err, "bad frame");
                    let due = last_report.is_none_or(|t| t.elapsed() >= ERROR_REPLY_INTERVAL);
                    if due {
                        last_report = Some(Instant::now());
                        chore(Chore::Report(error_report(err)));
                    }
                    continue;
                }
            };
            bump(&ctx.counters.messages_in);
            // Any valid frame answers the heartbeat, not only a Pong; garbage does not.
            activity.touch();
            let frame = Frame { seq, msg };
            if frame.msg.needs_ack() {
                chore(Chore::Ack(seq));
                if !dedup.is_new(&frame) {
                    tracing::debug!(seq, "retransmitted frame acked again, not delivered twice");
                    continue;
                }
            }
            match frame.msg {
                DeviceMsg::Ping { nonce } => chore(Chore::Pong(nonce)),
                DeviceMsg::Ack { seq } => chore(Chore::Acked(seq)),
                DeviceMsg::Pong { .. } => {}
                msg => {
                    if !Conn::inbound(&ctx.router, id, Inbound::Device(Box::new(msg)), seq).await {
                        return End::Shutdown;
                    }
                }
            }
        }
    }
}

fn error_report(err: FrameError) -> ErrorReport {
    let code = match err {
        FrameError::TooLong => ErrorCode::TooLong,
        _ => ErrorCode::Malformed,
    };
    ErrorReport { code, seq: 0 }
}

/// Writes queued items as frames, batching whatever is ready into one write. Link chores go
/// first. A frame that needs an ack is the only one in flight: the queue behind it waits
/// until it is acked or given up, so the device sees chat frames in order and one at a time.
async fn write_queue(
    wr: &mut (impl AsyncWrite + Unpin),
    rx: &mut Outbox,
    chores: &mut mpsc::Receiver<Chore>,
    id: ClientId,
    counters: &Counters,
) -> End {
    let mut encoder = Encoder {
        seq: 0,
        nonce: 0,
        buf: Vec::new(),
        inflight: Retransmit::new(),
        epoch: tokio::time::Instant::now(),
    };
    let mut chores_open = true;
    // An item taken from the queue while a chat frame waits for its ack; it goes out once
    // the ack comes or is given up. Meanwhile the queue is watched for a kick only.
    let mut held: Option<Outgoing> = None;
    loop {
        encoder.buf.clear();
        let wake = encoder.retransmit(id, counters);
        if encoder.buf.is_empty() && !encoder.inflight.busy() {
            if let Some(item) = held.take() {
                if encoder.batch(item, rx, id, counters) {
                    let _ = write_or_kick(wr, &encoder.buf, rx).await;
                    return End::ClosedByWorker;
                }
            }
        }
        if encoder.buf.is_empty() {
            let timer = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                chore = chores.recv(), if chores_open => match chore {
                    Some(chore) => encoder.chore(chore, id, counters),
                    None => chores_open = false,
                },
                // With an item held, only a kick is taken from the queue.
                item = poll_fn(|cx| match held {
                    None => rx.poll_recv(cx),
                    Some(_) => rx.poll_interrupted(cx).map(|()| Recv::Interrupted),
                }) => match item {
                    Recv::Item(item) if encoder.inflight.busy() => held = Some(item),
                    Recv::Item(item) => if encoder.batch(item, rx, id, counters) {
                        if let Err(end) = write_or_kick(wr, &encoder.buf, rx).await {
                            return end;
                        }
                        return End::ClosedByWorker;
                    },
                    Recv::Interrupted => return rx.status().end(),
                    Recv::Closed => return End::ClosedByWorker,
                },
                _ = timer => {}
            }
        }
        // Chores that piled up meanwhile ride along in the same write.
        while let Ok(chore) = chores.try_recv() {
            encoder.chore(chore, id, counters);
        }
        if !encoder.buf.is_empty() {
            if let Err(end) = write_or_kick(wr, &encoder.buf, rx).await {
                return end;
            }
        }
    }
}

/// Writes `bytes` unless a kick comes first: a device (or a serial line) that stops taking
/// bytes must not keep its connection past a too-slow, idle or shutdown kick.
async fn write_or_kick(
    wr: &mut (impl AsyncWrite + Unpin),
    bytes: &[u8],
    rx: &Outbox,
) -> Result<(), End> {
    tokio::select! {
        written = wr.write_all(bytes) => written.map_err(End::Io),
        () = poll_fn(|cx| rx.poll_interrupted(cx)) => Err(rx.status().end()),
    }
}

/// Frames outgoing messages with this side's sequence numbers, and keeps the one frame
/// in flight that waits for the device's ack.
struct Encoder {
    /// Last sequence number used; 0 is skipped because reports use it for "no frame".
    seq: u16,
    /// Last heartbeat ping's nonce.
    nonce: u32,
    buf: Vec<u8>,
    inflight: Retransmit,
    /// Zero of the millisecond clock `Retransmit` runs on.
    epoch: tokio::time::Instant,
}

impl Encoder {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Resends or gives up the frame in flight if due; returns when to look again.
    fn retransmit(&mut self, id: ClientId, counters: &Counters) -> Option<tokio::time::Instant> {
        let now = self.now_ms();
        match self.inflight.poll(now) {
            Poll::Idle => None,
            Poll::WaitUntil(at) => Some(self.epoch + Duration::from_millis(at)),
            Poll::Resend(bytes) => {
                self.buf.extend_from_slice(bytes);
                tracing::debug!(conn = %id, "no ack yet, frame sent again");
                Some(tokio::time::Instant::now())
            }
            Poll::GaveUp(seq) => {
                tracing::warn!(conn = %id, seq, "device never acknowledged a chat frame; dropped");
                bump(&counters.dropped);
                None
            }
        }
    }

    fn chore(&mut self, chore: Chore, id: ClientId, counters: &Counters) {
        match chore {
            Chore::Ack(seq) => self.frame(&HostMsg::Ack { seq }, id, counters),
            Chore::Pong(nonce) => self.frame(&HostMsg::Pong { nonce }, id, counters),
            Chore::Report(report) => self.frame(&HostMsg::Error(report), id, counters),
            Chore::Acked(seq) => {
                if !self.inflight.on_ack(seq) {
                    tracing::debug!(conn = %id, seq, "ack for no frame in flight");
                }
            }
        }
    }

    /// Encodes `first` and whatever else is queued, up to a batch or the first frame that
    /// needs an ack; returns `true` if the connection must close after writing.
    fn batch(
        &mut self,
        first: Outgoing,
        rx: &mut Outbox,
        id: ClientId,
        counters: &Counters,
    ) -> bool {
        let mut item = Some(first);
        while let Some(next) = item.take() {
            if self.push(next, id, counters) {
                return true;
            }
            if self.inflight.busy() || self.buf.len() >= WRITE_BATCH {
                break;
            }
            item = rx.try_recv();
        }
        false
    }

    /// Appends one item's frame; returns `true` if the connection must close after it.
    fn push(&mut self, item: Outgoing, id: ClientId, counters: &Counters) -> bool {
        match item {
            Outgoing::Send(body) => self.body(&body, id, counters),
            Outgoing::Text { lines, .. } => {
                tracing::warn!(conn = %id, "telnet text for a device ignored");
                add(&counters.dropped, lines as u64);
            }
            Outgoing::Busy { seq } => {
                let report = ErrorReport {
                    code: ErrorCode::Busy,
                    seq,
                };
                self.frame(&HostMsg::Error(report), id, counters);
            }
            Outgoing::Ping => {
                self.nonce = self.nonce.wrapping_add(1);
                tracing::debug!(conn = %id, nonce = self.nonce, "device silent, pinged");
                self.frame(&HostMsg::Ping { nonce: self.nonce }, id, counters);
            }
            Outgoing::Close { farewell } => {
                if let Some(body) = farewell {
                    self.body(&body, id, counters);
                }
                return true;
            }
        }
        false
    }

    fn body(&mut self, body: &Outbound, id: ClientId, counters: &Counters) {
        match body {
            Outbound::Device(msg) => self.frame(msg, id, counters),
            Outbound::Line(_) => {
                tracing::warn!(conn = %id, "text line for a device ignored");
                bump(&counters.dropped);
            }
        }
    }

    fn frame(&mut self, msg: &HostMsg, id: ClientId, counters: &Counters) {
        self.seq = self.seq.wrapping_add(1).max(1);
        let frame = Frame { seq: self.seq, msg };
        let encoded = if msg.needs_ack() && !self.inflight.busy() {
            let now = self.now_ms();
            self.inflight
                .start(&frame, now)
                .map(|bytes| self.buf.extend_from_slice(bytes))
        } else {
            protocol::frame::encode_to_vec(&frame).map(|bytes| self.buf.extend_from_slice(&bytes))
        };
        match encoded {
            Ok(()) => bump(&counters.messages_out),
            Err(err) => {
                tracing::warn!(conn = %id, cause = %err, "message does not fit a frame, dropped");
                bump(&counters.dropped);
            }
        }
    }
}
