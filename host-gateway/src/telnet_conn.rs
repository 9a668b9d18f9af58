//! One telnet user's connection: reads lines into the router, writes its queue out as
//! CRLF-terminated text, and pings with IAC NOP when the router's heartbeat sweep says so.
//! I/O only; what the lines mean is a worker's business.
//!
//! Built to cost little while idle (most users are, most of the time): no buffer is kept
//! between reads (bytes are read into the stack and decoded at once; only a line in
//! progress lives in the decoder), the socket is shared by the reader and the writer
//! without splitting it, and everything the router may tell the connection (items, a kick)
//! comes through its one mailbox.

use std::future::{poll_fn, Future};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use protocol::link::{ClientId, ClientKind, Inbound, Outbound};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::connection::{Conn, End, Outbox, Outgoing, Status, ToRouter};
use crate::mailbox::{Recv, Weigh};

/// The connection's own way into its queue and status.
type Sender = crate::mailbox::Sender<Outgoing, Status>;
use crate::server::Context;
use crate::stats::{add, bump, Counters};
use crate::telnet::{TelnetDecoder, TelnetItem};

/// How long the last line (`! disconnected: ...`) may take before the socket is cut.
const LAST_WORDS: Duration = Duration::from_secs(1);
/// Bytes read at once, into the stack (not kept between reads).
const READ_CHUNK: usize = 2048;
/// Bytes gathered from the queue into one write; bounds the write buffer (to this plus one
/// item: a run of text the router staged in one batch is taken whole).
const WRITE_BATCH: usize = 64 * 1024;
/// Write buffer a connection keeps between writes while more is queued; a bigger one (after
/// a burst) is freed.
const KEEP_WRITE_BUFFER: usize = 4 * 1024;
/// Lines found waiting at once that make the writer wait one scheduler round for more before
/// writing (a burst of fan-out); fewer go out at once.
const COALESCE_LINES: usize = 8;
/// Telnet's no-operation command: the heartbeat ping. Telnet clients ignore it and show
/// nothing; on a dead peer the write fails in the end and the connection closes.
const IAC_NOP: [u8; 2] = [0xff, 0xf1];
/// Told to a user whose message found no worker and a full pending queue.
pub const BUSY_LINE: &str = "! server busy, message not accepted";

/// Serves one accepted telnet connection until it closes.
///
/// Not an `async fn`, nor are the two halves below: an `async fn` keeps its arguments twice
/// in its future (as captured and as locals), an `async move` block once, and this future is
/// what every connected user costs. For the same reason there is no tracing span per
/// connection: the few events name the connection themselves.
#[allow(
    clippy::manual_async_fn,
    reason = "an async block keeps the arguments once"
)]
pub fn serve(ctx: Context, stream: TcpStream, peer: SocketAddr) -> impl Future<Output = ()> {
    async move {
        let Some(mut conn) = Conn::open(&ctx, ClientKind::Telnet, peer.to_string()).await else {
            return;
        };
        drop(ctx);
        tracing::debug!(conn = %conn.id, %peer, "telnet user connected");
        // The futures are built inside `select!`: built first into locals, they would take
        // their room in this task twice (once as locals, once in the select).
        let end = tokio::select! {
            end = read_lines(&stream, conn.id, &conn.own, &conn.ctx) => end,
            end = write_queue(&stream, &mut conn.rx, conn.id, &conn.ctx.counters) => end,
        };
        let last = match end {
            End::TooSlow => Some("! disconnected: too slow\r\n"),
            End::Shutdown => Some("! server shutting down\r\n"),
            End::HeartbeatTimeout { .. } => Some("! disconnected: idle\r\n"),
            _ => None,
        };
        let mut stream = stream;
        let _ = tokio::time::timeout(LAST_WORDS, async {
            if let Some(text) = last {
                if write_all(&stream, text.as_bytes(), None).await.is_err() {
                    return Ok(());
                }
            }
            stream.shutdown().await
        })
        .await;
        conn.close(&end).await;
    }
}

/// Reads and decodes lines and hands them to the router, until the peer closes.
#[allow(
    clippy::manual_async_fn,
    reason = "an async block keeps the arguments once; see serve"
)]
fn read_lines<'a>(
    stream: &'a TcpStream,
    id: ClientId,
    own: &'a Sender,
    ctx: &'a Context,
) -> impl Future<Output = End> + 'a {
    async move {
        let mut decoder = TelnetDecoder::new(ctx.config.max_line);
        // Bytes read but not decoded yet because the router was full; empty (and unallocated)
        // but for that.
        let mut backlog: Vec<u8> = Vec::new();
        loop {
            // `closing`: the peer closed, and `wait` hands over its last, unterminated line.
            let (wait, closing) = if backlog.is_empty() {
                // `poll_read_ready` waits in the socket's own reader slot: unlike `readable()`,
                // it keeps no waiter in this future.
                if let Err(err) = poll_fn(|cx| stream.poll_read_ready(cx)).await {
                    return End::Io(err);
                }
                // On the stack and out of scope before the next await (the block ends first):
                // not part of the task.
                let read = {
                    let mut chunk = [0u8; READ_CHUNK];
                    match read_once(stream, &mut chunk) {
                        Ok(0) => None,
                        Ok(n) => {
                            // Any byte counts as hearing from the user: a keystroke, negotiation.
                            own.status().activity.touch();
                            let input = chunk.get(..n).unwrap_or_default();
                            Some(Ok(hand_over(
                                &mut decoder,
                                input,
                                &mut backlog,
                                id,
                                own,
                                ctx,
                            )))
                        }
                        Err(err) if err.kind() == ErrorKind::WouldBlock => continue,
                        Err(err) => Some(Err(End::Io(err))),
                    }
                };
                match read {
                    None => (last_line(&mut decoder, id, ctx), true),
                    Some(Err(end)) => return end,
                    Some(Ok(handed)) => (handed, false),
                }
            } else {
                let taken = std::mem::take(&mut backlog);
                (
                    hand_over(&mut decoder, &taken, &mut backlog, id, own, ctx),
                    false,
                )
            };
            match wait {
                Ok(None) => {}
                Ok(Some(wait)) => {
                    if !wait.await {
                        return End::Shutdown;
                    }
                }
                Err(end) => return end,
            }
            if closing {
                return End::PeerClosed;
            }
        }
    }
}

/// Reads what the socket holds into `buf`. A read that leaves room in `buf` has drained the
/// socket (epoll is edge-triggered), so the socket's readiness is cleared then and there, as
/// tokio's own `poll_read` does: the next wait goes straight to the reactor instead of
/// through one more `recv` that can only say "would block" (one system call a line less).
fn read_once(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    if cfg!(windows) {
        // Level-triggered there: a short read proves nothing.
        return stream.try_read(buf);
    }
    let room = buf.len();
    let mut got = None;
    let drained = stream.try_io(Interest::READABLE, || {
        let n = stream.try_read(buf)?;
        got = Some(n);
        if 0 < n && n < room {
            // Not an I/O failure: the way `try_io` is told to clear the readiness. The
            // readiness carries a tick, so an event that arrived meanwhile is not lost.
            Err(ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match (drained, got) {
        (Err(err), Some(n)) if err.kind() == ErrorKind::WouldBlock => Ok(n),
        (result, _) => result,
    }
}

/// The peer closed: a last line without its terminator still counts.
fn last_line<'c>(
    decoder: &mut TelnetDecoder,
    id: ClientId,
    ctx: &'c Context,
) -> Result<Option<ToRouter<'c>>, End> {
    match decoder.finish() {
        Some(TelnetItem::Line(text)) => {
            bump(&ctx.counters.messages_in);
            Ok(Some(Conn::inbound(&ctx.router, id, Inbound::Line(text), 0)))
        }
        _ => Ok(None),
    }
}

/// Decodes `input` and hands each line to the router without waiting. When the router is
/// full, returns the wait and keeps the bytes not yet decoded in `backlog`.
fn hand_over<'c>(
    decoder: &mut TelnetDecoder,
    mut input: &[u8],
    backlog: &mut Vec<u8>,
    id: ClientId,
    own: &Sender,
    ctx: &'c Context,
) -> Result<Option<ToRouter<'c>>, End> {
    while let Some(item) = decoder.next_item(&mut input) {
        match item {
            TelnetItem::Line(text) => {
                bump(&ctx.counters.messages_in);
                let handed = Conn::inbound(&ctx.router, id, Inbound::Line(text), 0);
                match handed {
                    futures::future::Either::Left(ready) => {
                        if !ready.into_inner() {
                            return Err(End::Shutdown);
                        }
                    }
                    wait => {
                        backlog.extend_from_slice(input);
                        return Ok(Some(wait));
                    }
                }
            }
            TelnetItem::TooLong => {
                bump(&ctx.counters.input_errors);
                tracing::debug!(max = ctx.config.max_line, "line too long");
                let text = format!("! line too long (max {} bytes)", ctx.config.max_line);
                // Full means the client is not reading; it will be disconnected anyway.
                let _ = own.try_send(Outgoing::Send(Arc::new(Outbound::Line(text))));
            }
        }
    }
    Ok(None)
}

/// Writes all of `bytes`, trying first and waiting for room only when the socket is full.
/// With `kick`, a kick ends the wait: a client that stops reading fills its socket first and
/// its queue next, and the too-slow kick must reach a writer stuck on the socket. (Not an
/// `async fn`, and no error kept across the wait: this future is part of every connection.)
#[allow(
    clippy::manual_async_fn,
    reason = "an async block keeps the arguments once; see serve"
)]
fn write_all<'a>(
    stream: &'a TcpStream,
    mut bytes: &'a [u8],
    kick: Option<&'a Outbox>,
) -> impl Future<Output = Result<(), End>> + 'a {
    async move {
        while !bytes.is_empty() {
            let full = match stream.try_write(bytes) {
                Ok(n) => {
                    bytes = bytes.get(n..).unwrap_or_default();
                    false
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => true,
                Err(err) => return Err(End::Io(err)),
            };
            if full {
                poll_fn(|cx| match kick {
                    Some(rx) if rx.poll_interrupted(cx).is_ready() => {
                        std::task::Poll::Ready(Err(rx.status().end()))
                    }
                    _ => stream.poll_write_ready(cx).map_err(End::Io),
                })
                .await?;
            }
        }
        Ok(())
    }
}

/// Writes queued items, batching whatever is ready into one write, until the queue ends
/// or the connection is kicked.
#[allow(
    clippy::manual_async_fn,
    reason = "an async block keeps the arguments once; see serve"
)]
fn write_queue<'a>(
    stream: &'a TcpStream,
    rx: &'a mut Outbox,
    id: ClientId,
    counters: &'a Counters,
) -> impl Future<Output = End> + 'a {
    async move {
        let mut buf = Vec::new();
        loop {
            let first = match rx.recv().await {
                Recv::Item(item) => item,
                Recv::Interrupted => return rx.status().end(),
                Recv::Closed => return End::ClosedByWorker,
            };
            let mut waiting = rx.load();
            if waiting + first.weight() >= COALESCE_LINES {
                // Many lines at once: a burst, likely to go on. One round of the scheduler
                // lets the router queue what it is handling, and this write carries it too
                // (a write costs the kernel far more than a line). No write buffer is built
                // before the wait. A lone line goes at once.
                tokio::task::yield_now().await;
                waiting = rx.load();
            }
            let mut close = false;
            if let (0, Outgoing::Text { bytes, lines }) = (waiting, &first) {
                // Nothing else waits: the router's rendered lines go from their own
                // buffer, no copy.
                add(&counters.messages_out, *lines as u64);
                if let Err(end) = write_all(stream, bytes, Some(rx)).await {
                    return end;
                }
            } else {
                buf.clear();
                // Room for all that waits, guessed from the first item's lines (a burst's
                // lines are much alike): one allocation a write rather than doubling up.
                let per_line = wire_len(&first) / first.weight().max(1);
                buf.reserve((wire_len(&first) + per_line * waiting).min(WRITE_BATCH));
                let mut lines = 0;
                close = push(&mut buf, first, id, counters, &mut lines);
                if !close && buf.len() < WRITE_BATCH {
                    // The rest of what waits, under one lock of the queue.
                    rx.try_recv_while(|next| {
                        close = push(&mut buf, next, id, counters, &mut lines);
                        !close && buf.len() < WRITE_BATCH
                    });
                }
                add(&counters.messages_out, lines);
                if let Err(end) = write_all(stream, &buf, Some(rx)).await {
                    return end;
                }
            }
            if buf.capacity() > KEEP_WRITE_BUFFER || rx.is_empty() {
                // Nothing more to write for now, or a burst is over: an idle connection keeps
                // no buffer (a busy one reuses it while its queue has more).
                buf = Vec::new();
            }
            if close {
                return End::ClosedByWorker;
            }
        }
    }
}

/// The bytes `push` appends for `item`.
fn wire_len(item: &Outgoing) -> usize {
    let line = |text: &str| text.len() + 2;
    match item {
        Outgoing::Send(body) => match &**body {
            Outbound::Line(text) => line(text),
            Outbound::Device(_) => 0,
        },
        Outgoing::Text { bytes, .. } => bytes.len(),
        Outgoing::Busy { .. } => line(BUSY_LINE),
        Outgoing::Ping => IAC_NOP.len(),
        Outgoing::Close { farewell } => match farewell.as_deref() {
            Some(Outbound::Line(text)) => line(text),
            _ => 0,
        },
    }
}

/// Appends one item's bytes, counting the lines in `lines`; returns `true` if the
/// connection must close after them.
fn push(
    buf: &mut Vec<u8>,
    item: Outgoing,
    id: ClientId,
    counters: &Counters,
    lines: &mut u64,
) -> bool {
    let mut line = |text: &str| {
        // Room for the terminator too: one allocation for a line into an empty buffer.
        buf.reserve(text.len() + 2);
        buf.extend_from_slice(text.as_bytes());
        buf.extend_from_slice(b"\r\n");
        *lines += 1;
    };
    match item {
        Outgoing::Send(body) => match &*body {
            Outbound::Line(text) => line(text),
            Outbound::Device(_) => {
                tracing::warn!(conn = %id, "device frame for a telnet user ignored");
                bump(&counters.dropped);
            }
        },
        Outgoing::Text { bytes, lines: n } => {
            buf.extend_from_slice(&bytes);
            *lines += n as u64;
        }
        Outgoing::Busy { .. } => line(BUSY_LINE),
        Outgoing::Ping => buf.extend_from_slice(&IAC_NOP),
        Outgoing::Close { farewell } => {
            if let Some(Outbound::Line(text)) = farewell.as_deref() {
                line(text);
            }
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GatewayConfig;

    /// Every connected user costs this future, in a tokio task cell rounded up to a multiple
    /// of 128 bytes (in a release build it is 496 bytes, in the class an idle connection
    /// measures 1.47 KB with; at 544 it took 128 bytes more per connection). Debug builds lay
    /// it out a little bigger, so this catches the big mistakes (a read buffer kept across an
    /// await was 2 KB); the idle scenario of `cargo xtask bench` measures the rest.
    const BUDGET: usize = 576;

    #[tokio::test]
    async fn a_kick_reaches_a_writer_waiting_on_a_full_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (_never_reads, (server_side, _)) = (client.unwrap(), accepted.unwrap());
        // Fill the socket until it takes nothing more: the peer never reads.
        let chunk = [b'x'; 64 * 1024];
        while server_side.try_write(&chunk).is_ok() {}
        let (handle, rx) = crate::connection::ClientHandle::pair(ClientKind::Telnet, 4);
        let writer = write_all(&server_side, &chunk, Some(&rx));
        let kick = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            handle.kick(crate::connection::Kick::TooSlow);
        };
        let (written, ()) =
            tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(writer, kick) })
                .await
                .expect("a writer stuck on a full socket never saw the kick");
        assert!(matches!(written, Err(End::TooSlow)), "{written:?}");
    }

    #[tokio::test]
    async fn a_connection_future_stays_within_its_budget() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (_client, (server_side, peer)) = (client.unwrap(), accepted.unwrap());
        let future = serve(
            Context::detached(GatewayConfig::default()),
            server_side,
            peer,
        );
        let size = std::mem::size_of_val(&future);
        assert!(
            size <= BUDGET,
            "the telnet connection future grew to {size} bytes (budget {BUDGET}): every \
             idle user pays for it; keep long-lived locals out of it"
        );
    }
}
