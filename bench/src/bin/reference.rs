//! # THE REFERENCE — a benchmark yardstick, NOT Switchboard
//!
//! `chat-reference` is a minimal single-process tokio chat server written for Switchboard's
//! benchmark suite (issue 6). Switchboard (gateway + worker processes) is measured side by
//! side against it, driven by the same load generator, so it speaks the same telnet line
//! protocol byte for byte where the load generator looks. It is meant to be what a competent
//! tokio engineer writes in an afternoon: honest and fast, neither a strawman nor gold-plated.
//!
//! It implements: the greeting and `Please enter your nickname:`; Switchboard's nickname
//! rules; `* welcome NICK, your uid is UID` (uids 1, 2, 3, ...), `* NICK (UID) joined`,
//! `* NICK (UID) left`; `TEXT` to everyone else; `UID:TEXT` to one user when UID is all
//! digits (`! no such uid: UID`, `! empty message`); `/quit`, `/help`, `/who` (the count
//! line only). Telnet IAC sequences are stripped; CRLF, LF and CR NUL end a line; a line over
//! 4096 bytes gets a `!` line; invalid UTF-8 is replaced.
//!
//! It leaves out: telnet negotiation beyond stripping it, devices and device ids, the store
//! (no history, no offline queue, uids restart at 1), `/who`'s list, heartbeats, config
//! files, metrics (two counters logged at exit), several processes.
//!
//! Design: one task per connection that both reads and writes its socket; the users in one
//! `RwLock<HashMap<uid, Mailbox>>`, read-locked to send and write-locked only to join and
//! leave; a bounded [`Mailbox`] per logged-in user. A line for others is formatted once into
//! an `Arc<str>` shared by every recipient. The writer batches: it takes everything queued
//! in one swap and writes up to [`WRITE_BATCH`] bytes with one syscall. TCP_NODELAY is set.
//! An idle connection holds no buffers: reads go through a stack buffer, and the output
//! buffer and the queue are freed whenever they are empty.
//!
//! `--relay ADDR` / `--echo` turn two reference processes into the floor of a two-process
//! design: see `reference/relay.rs`.
//!
//! Overflow policy: a user's mailbox holds [`QUEUE`] lines (besides the batch being
//! written). Senders never wait: a line that finds it full is dropped, the queue is
//! discarded and that user is disconnected (`! disconnected: too slow`, best effort), so one
//! reader that far behind can neither stall nor bloat everyone else. Counted; logged at exit.

use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::io::{self, IsTerminal};
use std::mem::{self, MaybeUninit};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Parser};
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

#[path = "reference/relay.rs"]
mod relay;

// The texts, copied from Switchboard (`worker/src/chat/commands.rs`, the gateway's
// `telnet_conn.rs`): the load generator compares them byte for byte.
const GREETING: &str = "Welcome to Switchboard chat.";
const ASK_NICK: &str = "Please enter your nickname:";
const BYE: &str = "* bye";
const EMPTY_PRIVATE: &str = "! empty message";
const TOO_LONG: &str = "! line too long (max 4096 bytes)";
const TOO_SLOW: &str = "! disconnected: too slow";
const SHUTTING_DOWN: &str = "! server shutting down";
const HELP: &[&str] = &[
    "* commands (THE REFERENCE server, not Switchboard):",
    "*   /who        how many are online",
    "*   /help       this list",
    "*   /quit       leave the chat",
    "*   UID:TEXT    private message to UID",
    "*   TEXT        message to everyone",
];

/// Longest line accepted, in bytes; Switchboard's default `max_line`.
const MAX_LINE: usize = 4096;
const _: () = assert!(MAX_LINE == 4096, "TOO_LONG names the limit");
/// Longest nickname, in characters (Switchboard's limit).
const MAX_NICK_CHARS: usize = 32;
/// Longest uid prefix; a longer all-digit prefix is ordinary text, as in Switchboard.
const MAX_UID_LEN: usize = 24;
/// Lines queued per user before it counts as too slow: Switchboard's gateway default
/// (`client_queue`), so both servers give up on a slow reader at the same point.
const QUEUE: usize = 1024;
/// Output gathered before the connection stops taking more (reading its socket, taking its
/// queue) until the socket takes it: bounds a connection's output buffer, give or take the
/// replies to one read.
const WRITE_BATCH: usize = 64 * 1024;
/// Bytes read per read call, into a stack buffer that exists only during the call.
const READ_CHUNK: usize = 8 * 1024;
/// How long the last lines (`* bye`, a `!` notice) may take before the socket is cut.
const LAST_WORDS: Duration = Duration::from_secs(1);
/// How long shutdown waits for connections to say goodbye.
const DRAIN: Duration = Duration::from_secs(2);
/// Pause after a failed accept (out of file descriptors, say) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// The benchmark runner's default address for the reference.
const DEFAULT_LISTEN: &str = "127.0.0.1:9480";

/// THE REFERENCE chat server for Switchboard's benchmarks (not Switchboard).
#[derive(Parser, Debug)]
#[command(name = "chat-reference", version, about)]
struct Cli {
    /// Address to listen on; port 0 picks a free one. Prints `listening on ADDR` to stderr.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Tokio worker threads. Default: one, like each Switchboard process. On the 2-core
    /// benchmark machine, with the load generator on the same cores, one thread was the
    /// reference's best in every scenario but connects: 7.2-8.4 against 9.0-9.8 µs per
    /// private message at 10k/s, 3.8M against 3.0-3.1M broadcast deliveries/s past
    /// saturation, the same private saturation (381-419k msg/s), 5% fewer connects/s.
    #[arg(long, value_name = "N", default_value = "1")]
    threads: NonZeroUsize,
    /// More logging: -v debug, -vv trace. RUST_LOG overrides.
    #[arg(short, action = ArgAction::Count)]
    verbose: u8,
    /// Hand every chat line to the `--echo` process at ADDR and deliver it when it comes
    /// back: the floor of a two-process design (see `reference/relay.rs`).
    #[arg(long, value_name = "ADDR", conflicts_with = "echo")]
    relay: Option<SocketAddr>,
    /// Be the relay's other end instead of a chat server: send back every byte.
    #[arg(long)]
    echo: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let level = ["info", "debug", "trace"][usize::from(cli.verbose.min(2))];
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()))
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
    let threads = cli.threads.get();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        // Installed before the port opens: a runner may stop us as soon as it sees it.
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let listener = TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("binding {}", cli.listen))?;
        eprintln!("listening on {}", listener.local_addr()?);
        if cli.echo {
            tracing::info!(threads, "THE REFERENCE's echo relay (not Switchboard)");
            tokio::select! {
                () = relay::echo(listener) => {}
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return Ok(());
        }
        tracing::info!(threads, relay = ?cli.relay, "THE REFERENCE chat server (not Switchboard)");
        let chat = Arc::new(Chat::default());
        if let Some(addr) = cli.relay {
            let relay = relay::Relay::connect(addr, chat.clone()).await?;
            let _ = chat.relay.set(relay);
        }
        let stop = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = int.recv() => tracing::info!("SIGINT"),
            }
        };
        // On a worker, so exactly `threads` threads serve, and accepted connections start
        // on the accepting worker's own run queue.
        tokio::spawn(run(chat, listener, stop))
            .await
            .context("the server task failed")
    })
}

/// Serves `listener` until `stop` resolves; then tells every connection to close and waits
/// up to [`DRAIN`] for them.
async fn run(chat: Arc<Chat>, listener: TcpListener, stop: impl Future<Output = ()>) {
    let (stop_tx, _) = watch::channel(());
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let span = tracing::debug_span!("conn", %peer);
                    let conn = serve(chat.clone(), stream, stop_tx.subscribe());
                    tokio::spawn(conn.instrument(span));
                }
                Err(err) => {
                    tracing::warn!(cause = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    stop_tx.send_replace(());
    if tokio::time::timeout(DRAIN, stop_tx.closed()).await.is_err() {
        tracing::warn!("connections still open after {DRAIN:?}; exiting anyway");
    }
    tracing::info!(
        users = chat.next_uid.load(Relaxed),
        too_slow = chat.too_slow.load(Relaxed),
        "stopped"
    );
}

/// A line with its CRLF, shared by every recipient.
type Line = Arc<str>;

/// Everyone logged in.
#[derive(Default)]
struct Chat {
    /// The last uid given.
    next_uid: AtomicU64,
    users: RwLock<HashMap<u64, Arc<Mailbox>>>,
    /// Users disconnected because their queue was full.
    too_slow: AtomicU64,
    /// With `--relay`: chat lines go by way of the other process.
    relay: OnceLock<relay::Relay>,
}

impl Chat {
    fn join(&self, uid: u64, mailbox: Arc<Mailbox>) {
        let mut users = self.users.write().unwrap_or_else(PoisonError::into_inner);
        users.insert(uid, mailbox);
    }

    fn leave(&self, uid: u64) {
        let mut users = self.users.write().unwrap_or_else(PoisonError::into_inner);
        users.remove(&uid);
    }

    /// Sends `line` to everyone but `from`.
    fn broadcast(&self, from: u64, line: &Line) {
        let users = self.users.read().unwrap_or_else(PoisonError::into_inner);
        for (&uid, mailbox) in users.iter() {
            if uid != from {
                mailbox.send(line);
            }
        }
    }

    /// Sends `line` to `uid`; `false` if nobody has that uid.
    fn send_to(&self, uid: u64, line: &Line) -> bool {
        let users = self.users.read().unwrap_or_else(PoisonError::into_inner);
        match users.get(&uid) {
            Some(mailbox) => {
                mailbox.send(line);
                true
            }
            None => false,
        }
    }

    fn online(&self) -> usize {
        self.users
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// A user's queue: a bounded many-to-one channel of lines. Not tokio's mpsc, whose channel
/// costs an idle user 1.2 KiB and keeps its blocks after a burst; an empty `VecDeque`
/// allocates nothing, and the connection takes the whole queue in one swap.
#[derive(Default)]
struct Mailbox {
    queue: Mutex<Queue>,
    /// The connection's task, woken when the queue stops being empty or overflows.
    waker: AtomicWaker,
}

#[derive(Default)]
struct Queue {
    lines: VecDeque<Line>,
    /// It overflowed: the connection is to close, and nothing more is queued.
    kicked: bool,
}

impl Mailbox {
    /// Queues `line`; a full queue kicks its user instead (the overflow policy).
    fn send(&self, line: &Line) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.kicked {
            return;
        }
        if queue.lines.len() >= QUEUE {
            queue.kicked = true;
            queue.lines = VecDeque::new();
        } else {
            queue.lines.push_back(line.clone());
            if queue.lines.len() > 1 {
                return; // woken when the first one came
            }
        }
        drop(queue);
        self.waker.wake();
    }

    /// Everything queued, if `want` it; `None` once kicked, whether wanted or not.
    fn poll_take(&self, cx: &mut Context<'_>, want: bool) -> Poll<Option<VecDeque<Line>>> {
        self.waker.register(cx.waker());
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.kicked {
            Poll::Ready(None)
        } else if want && !queue.lines.is_empty() {
            Poll::Ready(Some(mem::take(&mut queue.lines)))
        } else {
            Poll::Pending
        }
    }
}

/// Why a connection ended.
enum End {
    PeerClosed,
    Quit,
    TooSlow,
    Shutdown,
    Io(io::Error),
}

/// Serves one connection until it ends, then says goodbye.
async fn serve(chat: Arc<Chat>, mut stream: TcpStream, stop: watch::Receiver<()>) {
    // Lines are small and interactive: send each batch now, not after the peer's ACK.
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(cause = %err, "TCP_NODELAY not set");
    }
    let mut conn = Conn {
        lines: Lines::default(),
        session: Session {
            chat,
            user: None,
            out: Vec::new(),
            joined: None,
            quit: false,
        },
    };
    tell(&mut conn.session.out, &[GREETING]);
    tell(&mut conn.session.out, &[ASK_NICK]);
    let (mut rd, mut wr) = stream.split();
    let end = pump(&mut conn, &mut rd, &wr, stop).await;
    let session = &mut conn.session;
    // At shutdown nobody needs to hear who left.
    session.leave(!matches!(end, End::Shutdown));
    let notice = match end {
        End::TooSlow => {
            session.chat.too_slow.fetch_add(1, Relaxed);
            Some(TOO_SLOW)
        }
        End::Shutdown => Some(SHUTTING_DOWN),
        End::Io(err) => {
            tracing::debug!(cause = %err, "connection failed");
            return;
        }
        End::PeerClosed | End::Quit => None,
    };
    if let Some(notice) = notice {
        tell(&mut session.out, &[notice]);
    }
    // What the socket does not take now gets a moment; no timer for the common case.
    if flush(&wr, &mut session.out).is_ok() && !session.out.is_empty() {
        let _ = tokio::time::timeout(LAST_WORDS, wr.write_all(&session.out)).await;
    }
}

/// Moves bytes both ways until the connection ends: input into the session, the user's
/// queue out to the socket.
async fn pump(
    conn: &mut Conn,
    rd: &mut ReadHalf<'_>,
    wr: &WriteHalf<'_>,
    mut stop: watch::Receiver<()>,
) -> End {
    // Registered once, not on every turn of the loop.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    let mut inbox: Option<Arc<Mailbox>> = None;
    // Lines taken from the mailbox that did not fit in this batch.
    let mut backlog = VecDeque::<Line>::new();
    loop {
        let out = &mut conn.session.out;
        while out.len() < WRITE_BATCH {
            let Some(line) = backlog.pop_front() else {
                backlog = VecDeque::new(); // an idle connection keeps no allocation
                break;
            };
            out.extend_from_slice(line.as_bytes());
        }
        if let Err(err) = flush(wr, out) {
            return End::Io(err);
        }
        let pending = !out.is_empty();
        let room = out.len() < WRITE_BATCH;
        let want = room && backlog.is_empty();
        tokio::select! {
            _ = &mut stopped => return End::Shutdown,
            ready = wr.writable(), if pending => {
                if let Err(err) = ready {
                    return End::Io(err);
                }
            }
            // Polled even without room: an overflow must end a connection stuck writing.
            mail = poll_fn(|cx| match &inbox {
                Some(mailbox) => mailbox.poll_take(cx, want),
                None => Poll::Pending,
            }) => match mail {
                Some(lines) => backlog = lines,
                None => return End::TooSlow,
            },
            read = poll_fn(|cx| conn.poll_input(rd, cx)), if room => match read {
                Ok(true) => {
                    if let Some(mailbox) = conn.session.joined.take() {
                        inbox = Some(mailbox);
                    }
                    if conn.session.quit {
                        return End::Quit;
                    }
                }
                Ok(false) => return End::PeerClosed,
                Err(err) => return End::Io(err),
            },
        }
    }
}

/// Writes as much of `out` as the socket takes now; the rest waits for `writable`. An
/// emptied buffer is freed, so an idle connection keeps none.
fn flush(wr: &WriteHalf<'_>, out: &mut Vec<u8>) -> io::Result<()> {
    let mut sent = 0;
    while let Some(rest) = out.get(sent..).filter(|rest| !rest.is_empty()) {
        match wr.try_write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) => return Err(err),
        }
    }
    if sent == out.len() {
        *out = Vec::new();
    } else {
        out.drain(..sent);
    }
    Ok(())
}

/// Appends one line (its parts, then CRLF) to `out`.
fn tell(out: &mut Vec<u8>, parts: &[&str]) {
    out.reserve(parts.iter().map(|p| p.len()).sum::<usize>() + 2);
    for part in parts {
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// One line (its parts, then CRLF) for others.
fn shared(parts: &[&str]) -> Line {
    let mut line = String::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 2);
    for part in parts {
        line.push_str(part);
    }
    line.push_str("\r\n");
    line.into()
}

/// One connection's state apart from its socket.
struct Conn {
    lines: Lines,
    session: Session,
}

impl Conn {
    /// Reads what the socket has and handles it; `Ok(false)` at end of input. The read
    /// buffer lives on the stack for the duration of this call only.
    fn poll_input(
        &mut self,
        rd: &mut ReadHalf<'_>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<bool>> {
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut chunk);
        ready!(Pin::new(rd).poll_read(cx, &mut buf))?;
        let Self { lines, session } = self;
        let mut on_item = |item: Item<'_>| session.on_item(item);
        if buf.filled().is_empty() {
            lines.finish(&mut on_item);
            return Poll::Ready(Ok(false));
        }
        lines.feed(buf.filled(), &mut on_item);
        Poll::Ready(Ok(true))
    }
}

/// Who a connection is, once logged in.
struct User {
    uid: u64,
    /// `NICK (UID)`, the way others see this user.
    me: Box<str>,
}

/// What the lines of one connection mean.
struct Session {
    chat: Arc<Chat>,
    user: Option<User>,
    /// Bytes for the socket not yet written.
    out: Vec<u8>,
    /// The mailbox made at login, for the connection loop to take.
    joined: Option<Arc<Mailbox>>,
    /// `/quit` was typed: nothing more is read.
    quit: bool,
}

impl Session {
    /// Handles one input item; `false` stops reading (after `/quit`).
    fn on_item(&mut self, item: Item<'_>) -> bool {
        let Item::Line(bytes) = item else {
            tell(&mut self.out, &[TOO_LONG]);
            return true;
        };
        let text = String::from_utf8_lossy(bytes);
        let line = text.trim();
        let Some(user) = &self.user else {
            self.login(line);
            return true;
        };
        let (chat, out) = (&*self.chat, &mut self.out);
        if line.starts_with('/') {
            let (name, _) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            self.quit = command(chat, out, name);
        } else if let Some((to, text)) = line.split_once(':').filter(|(to, _)| is_uid(to)) {
            private(chat, out, user, to, text.trim());
        } else if !line.is_empty() {
            let said = shared(&[&user.me, ": ", line]);
            match chat.relay.get() {
                None => chat.broadcast(user.uid, &said),
                Some(relay) if !relay.broadcast(user.uid, &said) => tell(out, &[relay::BUSY]),
                Some(_) => {}
            }
        }
        !self.quit
    }

    /// The first line: the nickname.
    fn login(&mut self, nick: &str) {
        if let Err(refusal) = check_nick(nick) {
            tell(&mut self.out, &[refusal]);
            tell(&mut self.out, &[ASK_NICK]);
            return;
        }
        let uid = self.chat.next_uid.fetch_add(1, Relaxed) + 1;
        let mailbox = Arc::new(Mailbox::default());
        self.chat.join(uid, mailbox.clone());
        self.joined = Some(mailbox);
        let uid_text = uid.to_string();
        tell(
            &mut self.out,
            &["* welcome ", nick, ", your uid is ", &uid_text],
        );
        let me = format!("{nick} ({uid})").into_boxed_str();
        self.chat.broadcast(uid, &shared(&["* ", &me, " joined"]));
        self.user = Some(User { uid, me });
    }

    /// Leaves the chat, telling everyone if `announce`.
    fn leave(&mut self, announce: bool) {
        if let Some(user) = self.user.take() {
            self.chat.leave(user.uid);
            if announce {
                self.chat
                    .broadcast(user.uid, &shared(&["* ", &user.me, " left"]));
            }
        }
    }
}

/// Answers `/NAME`; `true` for `/quit`.
fn command(chat: &Chat, out: &mut Vec<u8>, name: &str) -> bool {
    match name {
        "/quit" => {
            tell(out, &[BYE]);
            return true;
        }
        "/who" => {
            let users = match chat.online() {
                1 => "1 user".to_string(),
                n => format!("{n} users"),
            };
            tell(out, &["* online: ", &users, ", 0 devices"]);
        }
        "/help" => HELP.iter().for_each(|line| tell(out, &[*line])),
        other => tell(out, &["! unknown command ", other, ", try /help"]),
    }
    false
}

/// `TO:TEXT`, `TO` all digits.
fn private(chat: &Chat, out: &mut Vec<u8>, from: &User, to: &str, text: &str) {
    if text.is_empty() {
        return tell(out, &[EMPTY_PRIVATE]);
    }
    let line = shared(&[&from.me, " -> you: ", text]);
    if let Some(relay) = chat.relay.get() {
        if !relay.private(to, from.uid, &line) {
            tell(out, &[relay::BUSY]);
        }
        return;
    }
    // Uids are compared as text, as in Switchboard: `07` is not 7.
    let uid = to.parse().ok().filter(|_| !to.starts_with('0'));
    if !uid.is_some_and(|uid| chat.send_to(uid, &line)) {
        tell(out, &["! no such uid: ", to]);
    }
}

/// Could `s` be a user's uid: 1 to [`MAX_UID_LEN`] digits.
fn is_uid(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_UID_LEN && s.bytes().all(|b| b.is_ascii_digit())
}

/// Switchboard's nickname rules (trimmed nickname); `Err` is the `!` line to send back.
fn check_nick(nick: &str) -> Result<(), &'static str> {
    if nick.is_empty() {
        Err("! nickname must not be empty")
    } else if nick.chars().count() > MAX_NICK_CHARS {
        Err("! nickname is too long (max 32 characters)")
    } else if nick.contains(':') {
        Err("! nickname must not contain ':'")
    } else if nick.starts_with('/') {
        Err("! nickname must not start with '/'")
    } else if nick.chars().any(char::is_control) {
        Err("! nickname must not contain control characters")
    } else {
        Ok(())
    }
}

/// "Interpret as command": starts every telnet command; doubled it is a literal 0xFF.
const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
const WILL: u8 = 251;
const DONT: u8 = 254;

/// Where the telnet decoder is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Telnet {
    #[default]
    Data,
    /// After IAC.
    Iac,
    /// After IAC WILL/WONT/DO/DONT: the next byte is the option.
    Option,
    /// Inside IAC SB ... IAC SE.
    Sub,
    /// After IAC inside a subnegotiation.
    SubIac,
}

/// What the decoder yields.
enum Item<'a> {
    /// A complete line, without its terminator.
    Line(&'a [u8]),
    /// The current line passed [`MAX_LINE`]; the rest of it is skipped.
    TooLong,
}

/// What a byte did, internally: `Line` means `Lines::line` is complete.
enum Event {
    Line,
    TooLong,
}

/// Telnet input to lines, as the gateway's decoder does it (option negotiation stripped,
/// CRLF, LF, CR and CR NUL line ends). Holds only a line split across reads.
#[derive(Default)]
struct Lines {
    line: Vec<u8>,
    telnet: Telnet,
    /// The previous data byte was CR: a following LF or NUL belongs to the same line end.
    after_cr: bool,
    /// The current line overflowed; skip to the next line end.
    discarding: bool,
}

/// Bytes that end a run of plain text.
fn special(byte: &u8) -> bool {
    matches!(*byte, b'\r' | b'\n' | 0 | IAC)
}

impl Lines {
    /// Decodes `bytes`, handing each item to `on`; stops early when `on` returns false.
    fn feed(&mut self, mut bytes: &[u8], on: &mut impl FnMut(Item<'_>) -> bool) {
        while let Some((byte, rest)) = bytes.split_first() {
            let event = if self.telnet == Telnet::Data && !special(byte) {
                // A run of plain text at once.
                let (text, tail) =
                    bytes.split_at(bytes.iter().position(special).unwrap_or(bytes.len()));
                bytes = tail;
                self.after_cr = false;
                self.text(text)
            } else {
                bytes = rest;
                self.push(*byte)
            };
            let go_on = match event {
                None => true,
                Some(Event::TooLong) => on(Item::TooLong),
                Some(Event::Line) => {
                    let go_on = on(Item::Line(&self.line));
                    self.line.clear();
                    go_on
                }
            };
            if !go_on {
                return;
            }
        }
        if self.line.is_empty() {
            self.line = Vec::new(); // nothing held between lines
        }
    }

    /// End of input: a last line without a terminator still counts, unless it was too long.
    fn finish(&mut self, on: &mut impl FnMut(Item<'_>) -> bool) {
        if !self.line.is_empty() && !self.discarding {
            on(Item::Line(&self.line));
        }
        self.line = Vec::new();
    }

    /// One byte outside a plain run.
    fn push(&mut self, byte: u8) -> Option<Event> {
        match (self.telnet, byte) {
            (Telnet::Data, IAC) => self.telnet = Telnet::Iac,
            (Telnet::Data, _) => return self.data(byte),
            (Telnet::Iac, IAC) => {
                self.telnet = Telnet::Data;
                return self.data(IAC);
            }
            (Telnet::Iac, WILL..=DONT) => self.telnet = Telnet::Option,
            (Telnet::Iac, SB) => self.telnet = Telnet::Sub,
            // A 2-byte command (NOP, AYT, GA, ...) or an option: ignored.
            (Telnet::Iac | Telnet::Option, _) => self.telnet = Telnet::Data,
            (Telnet::Sub, IAC) => self.telnet = Telnet::SubIac,
            (Telnet::Sub, _) => {}
            (Telnet::SubIac, SE) => self.telnet = Telnet::Data,
            (Telnet::SubIac, _) => self.telnet = Telnet::Sub,
        }
        None
    }

    fn data(&mut self, byte: u8) -> Option<Event> {
        let after_cr = mem::replace(&mut self.after_cr, false);
        match byte {
            b'\n' | 0 if after_cr => None,
            b'\r' | b'\n' => {
                self.after_cr = byte == b'\r';
                // The end of a line too long ends the skipping, and yields nothing.
                (!mem::replace(&mut self.discarding, false)).then_some(Event::Line)
            }
            _ => self.text(&[byte]),
        }
    }

    fn text(&mut self, text: &[u8]) -> Option<Event> {
        if self.discarding {
            None
        } else if self.line.len() + text.len() > MAX_LINE {
            self.discarding = true;
            self.line = Vec::new();
            Some(Event::TooLong)
        } else {
            self.line.extend_from_slice(text);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `chunks` (one read each) into lines, `None` for too long.
    fn decode(chunks: &[&[u8]]) -> Vec<Option<String>> {
        let mut lines = Lines::default();
        let mut got = Vec::new();
        let mut on = |item: Item<'_>| {
            got.push(match item {
                Item::Line(line) => Some(String::from_utf8_lossy(line).into_owned()),
                Item::TooLong => None,
            });
            true
        };
        for chunk in chunks {
            lines.feed(chunk, &mut on);
        }
        lines.finish(&mut on);
        got
    }

    fn lines(texts: &[&str]) -> Vec<Option<String>> {
        texts.iter().map(|t| Some(t.to_string())).collect()
    }

    #[test]
    fn line_ends_and_splits() {
        assert_eq!(
            decode(&[b"a\r\nb\nc\r\0d\re"]),
            lines(&["a", "b", "c", "d", "e"])
        );
        assert_eq!(
            decode(&[b"a\r", b"\nb\r", b"\0", b"\n"]),
            lines(&["a", "b", ""])
        );
        assert_eq!(decode(&[b"he", b"llo\r\n"]), lines(&["hello"]));
    }

    #[test]
    fn telnet_commands_are_stripped_even_across_reads() {
        // IAC DO ECHO, IAC WILL SGA, IAC SB TTYPE IS "xterm" IAC SE, IAC NOP, IAC IAC.
        let wire: &[u8] =
            b"\xff\xfd\x01a\xff\xfb\x03b\xff\xfa\x18\x00xterm\xff\xf0c\xff\xf1d\xff\xff\r\n";
        assert_eq!(decode(&[wire]), lines(&["abcd\u{fffd}"]));
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(decode(&bytes), lines(&["abcd\u{fffd}"]));
    }

    #[test]
    fn long_lines_are_refused_once_and_skipped() {
        let long = vec![b'x'; MAX_LINE + 1];
        let exact = vec![b'y'; MAX_LINE];
        let got = decode(&[&long, b"more\r\n", &exact, b"\nok\n"]);
        let mut want = vec![None, Some("y".repeat(MAX_LINE))];
        want.extend(lines(&["ok"]));
        assert_eq!(got, want);
    }

    #[test]
    fn nicknames_and_uids() {
        assert_eq!(check_nick("a:b"), Err("! nickname must not contain ':'"));
        assert_eq!(check_nick("al"), Ok(()));
        assert!(is_uid("12") && !is_uid("") && !is_uid("1a") && !is_uid(&"1".repeat(25)));
    }
}
