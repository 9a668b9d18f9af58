//! What every connection task shares with the router: the items of its bounded outbound
//! queue, the handle the router keeps to reach it, registration, and how a connection ends.
//!
//! The socket I/O itself is in `telnet_conn.rs` and `device_conn.rs`; routing decisions are
//! the router's. Overflow policy: a client whose queue is full is disconnected as too slow,
//! so one stuck client never slows the router or anyone else. A connection is stopped from
//! outside (too slow, idle, shutdown) by a [`Kick`] through its queue's interrupt, so it
//! waits on nothing but its socket and its queue.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use protocol::link::{ClientId, ClientKind, Inbound, Outbound};
use std::future::{ready, Future, Ready};
use std::pin::Pin;

use futures::future::Either;
use tokio::sync::mpsc;

use crate::heartbeat::{now_ms, Activity};
use crate::mailbox::{self, TrySendError, Weigh};
use crate::router::RouterMsg;
use crate::server::Context;
use crate::stats::bump;

/// One item of a connection's outbound queue.
#[derive(Debug)]
pub enum Outgoing {
    /// A message to write, shared by its recipients (device frames; a telnet connection
    /// gets one only from its own task: the router renders lines into `Text`).
    Send(Arc<Outbound>),
    /// Lines for a telnet user, rendered by the router as it staged them (each ends in
    /// `\r\n`): what a batch sends one connection is one item, the text copied once per
    /// recipient with no reference count touched (and written from this buffer when it is
    /// all that waits). Weighs `lines` against the queue's bound, so a queue holds at most
    /// `client_queue` lines, each its own bytes (up to twice that in room, see
    /// [`extend_text`]).
    Text {
        /// The bytes to write.
        bytes: Vec<u8>,
        /// How many lines they are.
        lines: usize,
    },
    /// The peer has been silent for an interval: ping it (heartbeat).
    Ping,
    /// The client's message was not accepted (no worker and the pending queue is full).
    Busy {
        /// Frame sequence number of the refused device frame, 0 for telnet.
        seq: u16,
    },
    /// Write `farewell` (if any) after everything queued before it, then close.
    Close {
        /// The last message.
        farewell: Option<Arc<Outbound>>,
    },
}

impl Weigh for Outgoing {
    /// A run of text counts its lines against the queue's bound (`client_queue` counts
    /// messages, however the router packed them).
    fn weight(&self) -> usize {
        match self {
            Outgoing::Text { lines, .. } => *lines,
            _ => 1,
        }
    }
}

/// Why a connection is stopped from outside its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kick {
    /// Its outbound queue overflowed.
    TooSlow = 1,
    /// The gateway is shutting down.
    Shutdown = 2,
    /// Silent for the heartbeat limit.
    Idle = 3,
}

/// What a connection and the router share beside its queue (in the queue's allocation):
/// when the peer was last heard, and why it was kicked.
#[derive(Debug, Default)]
pub struct Status {
    /// Touched by the connection on every read, read by the heartbeat sweep.
    pub activity: Activity,
    /// The first [`Kick`], or 0.
    kicked: AtomicU8,
}

impl Status {
    /// How the connection ends when interrupted: the first kick's reason.
    pub fn end(&self) -> End {
        match self.kicked.load(Ordering::Acquire) {
            k if k == Kick::TooSlow as u8 => End::TooSlow,
            k if k == Kick::Idle as u8 => End::HeartbeatTimeout {
                silent: Duration::from_millis(self.activity.silent_ms(now_ms())),
            },
            _ => End::Shutdown,
        }
    }
}

/// A connection's outbound queue, with its [`Status`].
pub type Outbox = mailbox::Receiver<Outgoing, Status>;

/// Kicks the connection behind `tx`; `false` if it was kicked already (the first reason
/// stands).
fn kick(tx: &mailbox::Sender<Outgoing, Status>, why: Kick) -> bool {
    let first = tx
        .status()
        .kicked
        .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire)
        .is_ok();
    if first {
        tx.interrupt();
    }
    first
}

/// The router's way to reach one connection.
#[derive(Debug)]
pub struct ClientHandle {
    /// The connection's kind; decides which [`Outbound`] bodies it takes.
    pub kind: ClientKind,
    /// Silent intervals already pinged for (the heartbeat sweep's count).
    pub pinged: u32,
    tx: mailbox::Sender<Outgoing, Status>,
    /// What the router sent during its current batch of messages, queued in one go when
    /// the batch ends ([`ClientHandle::flush`]): one lock of the queue and one wake-up per
    /// connection and batch rather than per item. Empty between batches.
    staged: RefCell<Vec<Outgoing>>,
}

/// Appends one rendered line to the staged run of text it continues, if any; `false` if
/// the last staged item is not text (the caller starts a run). A run starts at the room
/// [`RunRoom`] gives it and grows by doubling; a run queued with more than twice its bytes
/// in room is shrunk, so a slow client's queue holds at most twice the bytes of its lines.
fn extend_text(staged: &mut [Outgoing], text: &str) -> bool {
    let Some(Outgoing::Text { bytes, lines }) = staged.last_mut() else {
        return false;
    };
    bytes.reserve(text.len() + 2);
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend_from_slice(b"\r\n");
    *lines += 1;
    true
}

/// Room staging takes for its first item: a broadcast burst's share for one connection
/// usually fits, and the queue takes the allocation over as it is.
const STAGE_ROOM: usize = 4;

/// How much room a new run of text takes: what the last batch's runs held on average (plus
/// a quarter), so the run a burst of broadcast lines makes for each recipient is allocated
/// once instead of doubling up from one line (growing them was 8% of the gateway's CPU
/// past saturation). The guess is never above [`RunRoom::MAX`], and what a batch takes
/// beyond its runs' first lines is bounded by [`RunRoom::SPARE`]: a batch that sends one
/// line to 19,000 connections right after a batch of long runs allocates at most that much
/// more than it needs, and [`ClientHandle::flush`] trims what was not used.
#[derive(Debug, Default)]
pub struct RunRoom {
    /// Room a new run takes in this batch (0: its first line's size).
    guess: Cell<usize>,
    /// Room beyond first lines this batch may still hand out.
    spare: Cell<usize>,
    /// Bytes and runs queued in this batch, for the next guess.
    bytes: Cell<usize>,
    runs: Cell<usize>,
}

impl RunRoom {
    /// The largest guess: about 60 chat lines.
    pub const MAX: usize = 4096;
    /// Room beyond first lines per batch, across all its runs.
    pub const SPARE: usize = 256 * 1024;

    /// Capacity for a new run whose first line takes `first` bytes.
    fn for_run(&self, first: usize) -> usize {
        let guess = self.guess.get();
        let extra = guess.saturating_sub(first);
        if extra == 0 || extra > self.spare.get() {
            return first;
        }
        self.spare.set(self.spare.get() - extra);
        guess
    }

    /// A run of `bytes` went to a queue.
    fn queued(&self, bytes: usize) {
        self.bytes.set(self.bytes.get() + bytes);
        self.runs.set(self.runs.get() + 1);
    }

    /// The batch is over: the next one guesses from what this one queued (a batch that
    /// queued no text, acks only say, leaves the guess as it was).
    pub fn next_batch(&self) {
        let runs = self.runs.replace(0);
        let bytes = self.bytes.replace(0);
        if let Some(mean) = bytes.checked_div(runs) {
            self.guess.set((mean + mean / 4).min(Self::MAX));
        }
        self.spare.set(Self::SPARE);
    }
}

impl ClientHandle {
    fn new(kind: ClientKind, tx: mailbox::Sender<Outgoing, Status>) -> ClientHandle {
        ClientHandle {
            kind,
            pinged: 0,
            tx,
            staged: RefCell::new(Vec::new()),
        }
    }

    /// Stages `item` for the queue, after what is staged already. A line for a telnet user
    /// joins the run of rendered text; one that nobody else holds and that starts a run
    /// becomes it, its buffer taken over (the terminator may grow it). Returns `true` if
    /// nothing was staged before: the caller lists the connection for
    /// [`ClientHandle::flush`]. A new run takes the room `room` gives it.
    pub fn stage(&self, item: Outgoing, room: &RunRoom) -> bool {
        let Outgoing::Send(mut body) = item else {
            return self.push_staged(item);
        };
        if self.kind != ClientKind::Telnet {
            return self.push_staged(Outgoing::Send(body));
        }
        // A line nobody else holds either joins the run or starts one with its own buffer.
        let Some(Outbound::Line(text)) = Arc::get_mut(&mut body) else {
            return self.stage_shared(&body, room);
        };
        if extend_text(&mut self.staged.borrow_mut(), text) {
            return false;
        }
        let mut bytes = std::mem::take(text).into_bytes();
        let len = bytes.len();
        bytes.reserve_exact(room.for_run(len + 2) - len);
        bytes.extend_from_slice(b"\r\n");
        self.push_staged(Outgoing::Text { bytes, lines: 1 })
    }

    /// Stages a body other connections get too. A telnet line is copied into the run of
    /// rendered text (no reference counting per recipient); anything else is shared.
    pub fn stage_shared(&self, body: &Arc<Outbound>, room: &RunRoom) -> bool {
        match (self.kind, &**body) {
            (ClientKind::Telnet, Outbound::Line(text)) => {
                if extend_text(&mut self.staged.borrow_mut(), text) {
                    return false;
                }
                let mut bytes = Vec::with_capacity(room.for_run(text.len() + 2));
                bytes.extend_from_slice(text.as_bytes());
                bytes.extend_from_slice(b"\r\n");
                self.push_staged(Outgoing::Text { bytes, lines: 1 })
            }
            _ => self.push_staged(Outgoing::Send(Arc::clone(body))),
        }
    }

    fn push_staged(&self, item: Outgoing) -> bool {
        let mut staged = self.staged.borrow_mut();
        if staged.capacity() == 0 {
            staged.reserve_exact(STAGE_ROOM);
        }
        staged.push(item);
        staged.len() == 1
    }

    /// Queues what is staged, oldest first, without waiting. A queue that cannot take it
    /// all disconnects the client as too slow. Returns how many messages (not pings or
    /// closes) were not queued, for the router's `dropped` count. Runs of text are counted
    /// in `room` and lose room they will not use.
    pub fn flush(&self, id: ClientId, room: &RunRoom) -> usize {
        let mut staged = self.staged.take();
        for item in &mut staged {
            if let Outgoing::Text { bytes, .. } = item {
                room.queued(bytes.len());
                if bytes.capacity() > 2 * bytes.len() {
                    bytes.shrink_to_fit();
                }
            }
        }
        let full = match self.tx.try_send_all(&mut staged) {
            Ok(()) => return 0,
            Err(TrySendError::Full(())) => true,
            Err(TrySendError::Closed(())) => false,
        };
        if full && self.kick(Kick::TooSlow) {
            tracing::warn!(conn = %id, "outbound queue full, disconnecting slow client");
        }
        let messages = staged.iter().map(|item| match item {
            Outgoing::Send(_) => 1,
            Outgoing::Text { lines, .. } => *lines,
            _ => 0,
        });
        messages.sum()
    }

    /// Stops the connection from outside: it drops what is queued and ends with `why`.
    /// Returns `false` if it was kicked already (the first reason stands).
    pub fn kick(&self, why: Kick) -> bool {
        kick(&self.tx, why)
    }

    /// How long the peer has been silent, as of `now` ([`now_ms`]).
    pub fn silent_ms(&self, now: u64) -> u64 {
        self.tx.status().activity.silent_ms(now)
    }
}

#[cfg(test)]
impl ClientHandle {
    /// A handle whose queue nobody reads, for tests of the router's bookkeeping.
    pub(crate) fn detached(kind: ClientKind) -> ClientHandle {
        ClientHandle::pair(kind, 1).0
    }

    /// A handle and the queue it fills, for tests of a connection's writer.
    pub(crate) fn pair(kind: ClientKind, capacity: usize) -> (ClientHandle, Outbox) {
        let (tx, rx) = mailbox::mailbox(capacity, Status::default());
        (ClientHandle::new(kind, tx), rx)
    }
}

/// Why a connection ended; logged, and decides the last words to a telnet user.
#[derive(Debug)]
pub enum End {
    /// The peer closed its side.
    PeerClosed,
    /// Reading or writing failed.
    Io(std::io::Error),
    /// The outbound queue overflowed.
    TooSlow,
    /// A worker's `CloseClient`.
    ClosedByWorker,
    /// The gateway is shutting down.
    Shutdown,
    /// The peer sent nothing for the configured number of heartbeat intervals.
    HeartbeatTimeout {
        /// How long it had been silent.
        silent: std::time::Duration,
    },
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::PeerClosed => f.write_str("peer closed"),
            End::Io(err) => write!(f, "i/o error: {err}"),
            End::TooSlow => f.write_str("too slow"),
            End::ClosedByWorker => f.write_str("closed by worker"),
            End::Shutdown => f.write_str("gateway shutting down"),
            End::HeartbeatTimeout { silent } => {
                write!(f, "heartbeat timeout: silent for {silent:?}")
            }
        }
    }
}

/// A connection task's side of its registration.
pub struct Conn {
    /// The connection's id.
    pub id: ClientId,
    /// Its outbound queue; interrupted when the connection is kicked.
    pub rx: Outbox,
    /// The same queue, for answers the connection gives itself (pong, `!` lines), and the
    /// way to its [`Status`] while the writer holds `rx`.
    pub own: mailbox::Sender<Outgoing, Status>,
    /// The gateway's shared context.
    pub ctx: Context,
}

impl Conn {
    /// Gives a new connection its id and announces it to the router (the Connect event).
    /// Returns `None` if the router is gone (the gateway is stopping).
    pub async fn open(ctx: &Context, kind: ClientKind, peer: String) -> Option<Conn> {
        let id = ctx.next_client_id();
        bump(&ctx.counters.connections_total);
        let (tx, rx) = mailbox::mailbox(ctx.config.client_queue, Status::default());
        let handle = ClientHandle::new(kind, tx.clone());
        let opened = RouterMsg::Opened { id, peer, handle };
        if !to_router(&ctx.router, opened).await {
            return None;
        }
        if ctx.shutdown.is_cancelled() {
            // The router kicks every connection it knows at shutdown; this one's Opened may
            // have landed after it looked.
            kick(&tx, Kick::Shutdown);
        }
        Some(Conn {
            id,
            rx,
            own: tx,
            ctx: ctx.clone(),
        })
    }

    /// Hands a message from the client to the router; waits if the router is busy, which
    /// slows this client's reading and nobody else's. `false` when the router is gone.
    pub fn inbound(
        router: &mpsc::Sender<RouterMsg>,
        id: ClientId,
        body: Inbound,
        seq: u16,
    ) -> ToRouter<'_> {
        to_router(router, RouterMsg::Inbound { id, body, seq })
    }

    /// Tells the router the connection is gone (the Close event) and logs why.
    pub async fn close(self, end: &End) {
        match end {
            End::Io(_) | End::TooSlow | End::HeartbeatTimeout { .. } => {
                tracing::info!(conn = %self.id, reason = %end, "closed")
            }
            _ => tracing::debug!(conn = %self.id, reason = %end, "closed"),
        }
        to_router(&self.ctx.router, RouterMsg::Closed { id: self.id }).await;
    }
}

/// What [`to_router`] returns: ready at once, or a boxed wait.
pub type ToRouter<'a> = Either<Ready<bool>, Pin<Box<dyn Future<Output = bool> + Send + 'a>>>;

/// Hands `msg` to the router, waiting while its queue is full; `false` when it is gone.
///
/// Not an `async fn`: a connection's task keeps every future it may await inline, and one
/// holding a `RouterMsg` (device frames are a few hundred bytes) and `Sender::send`'s wait
/// is over a kilobyte, paid by every idle connection for a wait that happens only when the
/// router is behind. So the message is queued synchronously when there is room, and only a
/// real wait is boxed.
pub fn to_router(router: &mpsc::Sender<RouterMsg>, msg: RouterMsg) -> ToRouter<'_> {
    match router.try_send(msg) {
        Ok(()) => Either::Left(ready(true)),
        Err(mpsc::error::TrySendError::Closed(_)) => Either::Left(ready(false)),
        Err(mpsc::error::TrySendError::Full(msg)) => {
            Either::Right(Box::pin(async move { router.send(msg).await.is_ok() }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Recv;

    fn line(text: &str) -> Arc<Outbound> {
        Arc::new(Outbound::Line(text.to_owned()))
    }

    /// Everything queued, as the writer sees it.
    fn drain(rx: &mut Outbox) -> Vec<Outgoing> {
        let mut got = Vec::new();
        rx.try_recv_while(|item| {
            got.push(item);
            true
        });
        got
    }

    #[test]
    fn a_batch_of_lines_reaches_a_telnet_queue_as_one_run_of_rendered_text() {
        let (handle, mut rx) = ClientHandle::pair(ClientKind::Telnet, 10);
        let room = RunRoom::default();
        let shared = line("everyone");
        assert!(
            handle.stage_shared(&shared, &room),
            "the first item lists the connection"
        );
        assert!(!handle.stage(Outgoing::Send(line("just you")), &room));
        assert!(!handle.stage_shared(&shared, &room));
        assert!(!handle.stage(Outgoing::Ping, &room), "a ping ends the run");
        assert!(!handle.stage_shared(&shared, &room));
        assert_eq!(Arc::strong_count(&shared), 1, "copied, not referenced");
        assert_eq!(handle.flush(ClientId(1), &room), 0);
        assert_eq!(rx.load(), 5, "the bound counts lines, not items");
        let got = drain(&mut rx);
        assert_eq!(rx.load(), 0);
        let [Outgoing::Text { bytes, lines: 3 }, Outgoing::Ping, Outgoing::Text {
            bytes: last,
            lines: 1,
        }] = got.as_slice()
        else {
            panic!("unexpected items: {got:?}");
        };
        assert_eq!(bytes.as_slice(), b"everyone\r\njust you\r\neveryone\r\n");
        assert_eq!(last.as_slice(), b"everyone\r\n");
    }

    #[test]
    fn a_line_for_one_telnet_user_is_queued_in_its_own_buffer() {
        let (handle, mut rx) = ClientHandle::pair(ClientKind::Telnet, 10);
        let room = RunRoom::default();
        // With room for the terminator, so the buffer cannot move.
        let mut text = String::with_capacity(16);
        text.push_str("private");
        let at = text.as_ptr();
        handle.stage(Outgoing::Send(Arc::new(Outbound::Line(text))), &room);
        handle.flush(ClientId(1), &room);
        match rx.try_recv() {
            Some(Outgoing::Text { bytes, lines: 1 }) => {
                assert_eq!(bytes, b"private\r\n");
                assert_eq!(bytes.as_ptr(), at, "no copy");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn devices_get_bodies_shared_not_rendered() {
        let (handle, mut rx) = ClientHandle::pair(ClientKind::DeviceTcp, 10);
        let room = RunRoom::default();
        let shared = line("not for devices, but the writer decides");
        handle.stage_shared(&shared, &room);
        handle.stage(Outgoing::Send(line("mine")), &room);
        handle.flush(ClientId(1), &room);
        let got = drain(&mut rx);
        assert!(
            matches!(got.as_slice(), [Outgoing::Send(a), Outgoing::Send(_)] if Arc::ptr_eq(a, &shared)),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn a_run_longer_than_the_queue_kicks_the_client_and_counts_every_line_dropped() {
        let (handle, mut rx) = ClientHandle::pair(ClientKind::Telnet, 3);
        let room = RunRoom::default();
        handle.stage(Outgoing::Send(line("fits")), &room);
        assert_eq!(handle.flush(ClientId(1), &room), 0);
        let shared = line("burst");
        for _ in 0..3 {
            handle.stage_shared(&shared, &room);
        }
        assert_eq!(
            handle.flush(ClientId(1), &room),
            3,
            "3 lines do not fit beside 1"
        );
        assert!(matches!(rx.recv().await, Recv::Interrupted));
        assert!(matches!(rx.status().end(), End::TooSlow));
        assert_eq!(
            rx.load(),
            1,
            "what was queued before stays for the kick to drop"
        );
    }

    /// The capacity of the run staged for `handle`.
    fn staged_room(handle: &ClientHandle) -> usize {
        match handle.staged.borrow().last() {
            Some(Outgoing::Text { bytes, .. }) => bytes.capacity(),
            other => panic!("no run staged: {other:?}"),
        }
    }

    #[test]
    fn a_run_starts_with_the_room_the_last_batch_needed() {
        let (handle, mut rx) = ClientHandle::pair(ClientKind::Telnet, 100);
        let room = RunRoom::default();
        let shared = line("0123456789");
        for _ in 0..20 {
            handle.stage_shared(&shared, &room);
        }
        handle.flush(ClientId(1), &room);
        room.next_batch();
        drain(&mut rx);
        // 20 lines of 12 bytes, plus a quarter.
        handle.stage_shared(&shared, &room);
        assert_eq!(staged_room(&handle), 300);
        for _ in 1..20 {
            handle.stage_shared(&shared, &room);
        }
        assert_eq!(staged_room(&handle), 300, "the burst never grew its run");
        handle.flush(ClientId(1), &room);
        room.next_batch();
        room.next_batch();
        handle.stage_shared(&shared, &room);
        assert_eq!(
            staged_room(&handle),
            300,
            "a batch without text keeps the guess"
        );
    }

    #[test]
    fn spare_room_is_bounded_per_batch_and_what_a_run_did_not_use_is_given_back() {
        let room = RunRoom::default();
        let (handle, mut rx) = ClientHandle::pair(ClientKind::Telnet, 1000);
        let long = line(&"x".repeat(RunRoom::MAX));
        handle.stage_shared(&long, &room);
        handle.flush(ClientId(1), &room);
        room.next_batch();
        drain(&mut rx);

        // One short line to many connections: the guess says MAX each, until the spare
        // room of the batch is spent.
        let short = line("hi");
        let handles: Vec<_> = (0..2 * RunRoom::SPARE / RunRoom::MAX)
            .map(|_| ClientHandle::pair(ClientKind::Telnet, 10))
            .collect();
        let mut extra = 0;
        for (h, _) in &handles {
            h.stage_shared(&short, &room);
            extra += staged_room(h) - 4;
        }
        assert!(extra <= RunRoom::SPARE, "{extra} bytes beyond the lines");
        assert_eq!(staged_room(&handles.last().unwrap().0), 4, "spare spent");
        assert_eq!(staged_room(&handles[0].0), RunRoom::MAX);

        let (h, mut rx) = handles.into_iter().next().unwrap();
        h.flush(ClientId(2), &room);
        match rx.try_recv() {
            Some(Outgoing::Text { bytes, lines: 1 }) => {
                assert_eq!(bytes, b"hi\r\n");
                assert!(bytes.capacity() <= 8, "room kept: {}", bytes.capacity());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
