//! One device's connection over any byte stream (TCP or a serial port): decodes frames
//! into the router, encodes its queue into frames with this side's sequence numbers, and
//! answers the link chores itself (pings; malformed-frame reports). I/O only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::link::{ClientId, ClientKind, Inbound, Outbound};
use protocol::{DeviceMsg, ErrorCode, ErrorReport, Frame, FrameError, HostMsg};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::connection::{Conn, End, Outgoing};
use crate::server::Context;
use crate::stats::{bump, Counters};

/// At most one error report per this interval: a device spewing garbage (wrong baud rate,
/// say) must not get a flood back that its own small buffers cannot take.
const ERROR_REPLY_INTERVAL: Duration = Duration::from_secs(1);
/// Read size; a few frames' worth.
const READ_BUF: usize = 1024;
/// Bytes gathered from the queue into one write.
const WRITE_BATCH: usize = 16 * 1024;

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
    let ctx = conn.ctx().clone();
    let kick = conn.kick_token();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let end = {
        let reader = read_frames(&mut rd, conn.id, &conn.own, &ctx);
        let writer = write_queue(&mut wr, &mut conn.rx, conn.id, &ctx.counters);
        tokio::select! {
            end = reader => end,
            end = writer => end,
            end = Conn::stopped(&kick, &ctx.shutdown) => end,
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
    conn.close(&end).await;
    end
}

async fn read_frames(
    rd: &mut (impl AsyncRead + Unpin),
    id: ClientId,
    own: &mpsc::Sender<Outgoing>,
    ctx: &Context,
) -> End {
    let mut decoder = protocol::Decoder::<DeviceMsg>::new();
    let mut buf = [0u8; READ_BUF];
    let mut last_report: Option<Instant> = None;
    let answer = |msg: HostMsg| {
        // Full means the device is not reading; it will be disconnected anyway.
        let _ = own.try_send(Outgoing::Send(Arc::new(Outbound::Device(msg))));
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
                        answer(HostMsg::Error(error_report(err)));
                    }
                    continue;
                }
            };
            bump(&ctx.counters.messages_in);
            match msg {
                DeviceMsg::Ping { nonce } => answer(HostMsg::Pong { nonce }),
                DeviceMsg::Pong { .. } | DeviceMsg::Ack { .. } => {}
                msg => {
                    if !Conn::inbound(&ctx.router, id, Inbound::Device(msg), seq).await {
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

/// Writes queued items as frames, batching whatever is ready into one write.
async fn write_queue(
    wr: &mut (impl AsyncWrite + Unpin),
    rx: &mut mpsc::Receiver<Outgoing>,
    id: ClientId,
    counters: &Counters,
) -> End {
    let mut encoder = Encoder {
        seq: 0,
        buf: Vec::new(),
    };
    while let Some(first) = rx.recv().await {
        encoder.buf.clear();
        let mut item = Some(first);
        let mut close = false;
        while let Some(next) = item.take() {
            close = encoder.push(next, id, counters);
            if close || encoder.buf.len() >= WRITE_BATCH {
                break;
            }
            item = rx.try_recv().ok();
        }
        if let Err(err) = wr.write_all(&encoder.buf).await {
            return End::Io(err);
        }
        if close {
            return End::ClosedByWorker;
        }
    }
    End::ClosedByWorker
}

/// Frames outgoing messages with this side's sequence numbers.
struct Encoder {
    /// Last sequence number used; 0 is skipped because reports use it for "no frame".
    seq: u16,
    buf: Vec<u8>,
}

impl Encoder {
    /// Appends one item's frame; returns `true` if the connection must close after it.
    fn push(&mut self, item: Outgoing, id: ClientId, counters: &Counters) -> bool {
        match item {
            Outgoing::Send(body) => self.body(&body, id, counters),
            Outgoing::Busy { seq } => {
                let report = ErrorReport {
                    code: ErrorCode::Busy,
                    seq,
                };
                self.frame(&HostMsg::Error(report), id, counters);
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
        match protocol::frame::encode_to_vec(&Frame { seq: self.seq, msg }) {
            Ok(bytes) => {
                self.buf.extend_from_slice(&bytes);
                bump(&counters.messages_out);
            }
            Err(err) => {
                tracing::warn!(conn = %id, cause = %err, "message does not fit a frame, dropped");
                bump(&counters.dropped);
            }
        }
    }
}
