//! One telnet user's connection: reads lines into the router, writes its queue out as
//! CRLF-terminated text, and pings a silent user with IAC NOP (see `heartbeat.rs`). I/O
//! only; what the lines mean is a worker's business.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use protocol::link::{ClientId, ClientKind, Inbound, Outbound};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio_util::codec::FramedRead;
use tracing::Instrument;

use crate::connection::{Conn, End, Outgoing};
use crate::heartbeat::{Activity, Heartbeat, Touching};
use crate::mailbox;
use crate::router::RouterMsg;
use crate::server::Context;
use crate::stats::{bump, Counters};
use crate::telnet::{TelnetDecoder, TelnetItem};

/// How long the last line (`! disconnected: ...`) may take before the socket is cut.
const LAST_WORDS: Duration = Duration::from_secs(1);
/// First size of a connection's read buffer: a typed chat line fits.
const READ_BUFFER: usize = 256;
/// Bytes gathered from the queue into one write; bounds the write buffer.
const WRITE_BATCH: usize = 64 * 1024;
/// Write buffer a connection keeps between writes; a bigger one (after a burst) is freed.
const KEEP_WRITE_BUFFER: usize = 4 * 1024;
/// Telnet's no-operation command: the heartbeat ping. Telnet clients ignore it and show
/// nothing; on a dead peer the write fails in the end and the connection closes.
const IAC_NOP: [u8; 2] = [0xff, 0xf1];
/// Told to a user whose message found no worker and a full pending queue.
pub const BUSY_LINE: &str = "! server busy, message not accepted";

/// Serves one accepted telnet connection until it closes.
pub async fn serve(ctx: Context, stream: TcpStream, peer: SocketAddr) {
    let Some(conn) = Conn::open(&ctx, ClientKind::Telnet, peer.to_string()).await else {
        return;
    };
    let span = tracing::info_span!("telnet", conn = %conn.id, %peer);
    async move {
        tracing::debug!("connected");
        run(conn, stream).await;
    }
    .instrument(span)
    .await
}

async fn run(mut conn: Conn, stream: TcpStream) {
    let ctx = conn.ctx().clone();
    let kick = conn.kick_token();
    let (rd, mut wr) = stream.into_split();
    // Any byte counts as hearing from the user: a keystroke, a partial line, negotiation.
    let activity = Arc::new(Activity::default());
    let rd = Touching::new(rd, activity.clone());
    // A small first buffer: an idle user should cost little (FramedRead's default is 8 KiB);
    // it grows for a long line, up to `max_line`.
    let mut lines =
        FramedRead::with_capacity(rd, TelnetDecoder::new(ctx.config.max_line), READ_BUFFER);
    // One pending ping is enough (a Notify keeps one permit); no allocation for it.
    let nop = Notify::new();
    // The futures are built inside `select!`: built first into locals, they would take
    // their room in this task twice (once as locals, once in the select), for every user.
    let heartbeat = Heartbeat::telnet(&ctx.config);
    let end = tokio::select! {
        end = read_lines(&mut lines, conn.id, &conn.own, &ctx) => end,
        end = write_queue(&mut wr, &mut conn.rx, &nop, conn.id, &ctx.counters) => end,
        end = heartbeat.run(&activity, || nop.notify_one()) => end,
        end = Conn::stopped(&kick, &ctx.shutdown) => end,
    };
    let last = match end {
        End::TooSlow => Some("! disconnected: too slow\r\n"),
        End::Shutdown => Some("! server shutting down\r\n"),
        End::HeartbeatTimeout { .. } => Some("! disconnected: idle\r\n"),
        _ => None,
    };
    let _ = tokio::time::timeout(LAST_WORDS, async {
        if let Some(text) = last {
            wr.write_all(text.as_bytes()).await?;
        }
        wr.shutdown().await
    })
    .await;
    conn.close(&end).await;
}

async fn read_lines(
    lines: &mut FramedRead<Touching<OwnedReadHalf>, TelnetDecoder>,
    id: ClientId,
    own: &mailbox::Sender<Outgoing>,
    ctx: &Context,
) -> End {
    let router: &mpsc::Sender<RouterMsg> = &ctx.router;
    loop {
        match lines.next().await {
            None => return End::PeerClosed,
            Some(Err(err)) => return End::Io(err),
            Some(Ok(TelnetItem::Line(text))) => {
                bump(&ctx.counters.messages_in);
                if !Conn::inbound(router, id, Inbound::Line(text), 0).await {
                    return End::Shutdown;
                }
            }
            Some(Ok(TelnetItem::TooLong)) => {
                bump(&ctx.counters.input_errors);
                tracing::debug!(max = ctx.config.max_line, "line too long");
                let text = format!("! line too long (max {} bytes)", ctx.config.max_line);
                // Full means the client is not reading; it will be disconnected anyway.
                let _ = own.try_send(Outgoing::Send(Arc::new(Outbound::Line(text))));
            }
        }
    }
}

/// Writes queued items, batching whatever is ready into one write, and heartbeat pings.
async fn write_queue(
    wr: &mut (impl AsyncWrite + Unpin),
    rx: &mut mailbox::Receiver<Outgoing>,
    nops: &Notify,
    id: ClientId,
    counters: &Counters,
) -> End {
    let mut buf = Vec::new();
    loop {
        let first = tokio::select! {
            biased;
            item = rx.recv() => match item {
                Some(item) => item,
                None => return End::ClosedByWorker,
            },
            () = nops.notified() => {
                if let Err(err) = wr.write_all(&IAC_NOP).await {
                    return End::Io(err);
                }
                continue;
            }
        };
        buf.clear();
        let mut item = Some(first);
        let mut close = false;
        while let Some(next) = item.take() {
            close = push(&mut buf, next, id, counters);
            if close || buf.len() >= WRITE_BATCH {
                break;
            }
            item = rx.try_recv();
        }
        if let Err(err) = wr.write_all(&buf).await {
            return End::Io(err);
        }
        if buf.capacity() > KEEP_WRITE_BUFFER {
            // A burst is over: an idle connection should not keep its peak buffer.
            buf = Vec::new();
        }
        if close {
            return End::ClosedByWorker;
        }
    }
}

/// Appends one item's bytes; returns `true` if the connection must close after them.
fn push(buf: &mut Vec<u8>, item: Outgoing, id: ClientId, counters: &Counters) -> bool {
    let mut line = |text: &str| {
        buf.extend_from_slice(text.as_bytes());
        buf.extend_from_slice(b"\r\n");
        bump(&counters.messages_out);
    };
    match item {
        Outgoing::Send(body) => match &*body {
            Outbound::Line(text) => line(text),
            Outbound::Device(_) => {
                tracing::warn!(conn = %id, "device frame for a telnet user ignored");
                bump(&counters.dropped);
            }
        },
        Outgoing::Busy { .. } => line(BUSY_LINE),
        Outgoing::Close { farewell } => {
            if let Some(Outbound::Line(text)) = farewell.as_deref() {
                line(text);
            }
            return true;
        }
    }
    false
}
