//! A scripted telnet user: connects, sends lines, and expects lines like a person reading
//! the screen would.
//!
//! Expectations panic with everything the user saw, so a failing test says what arrived
//! instead of what did not. Telnet negotiation from the server is stripped before lines
//! are split; `\r\n` and `\n` both end a line.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::iac::Iac;

/// How long an expected line may take. Generous for a loaded CI machine; a passing test
/// never waits for it.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines kept for failure messages: enough for any test's story, bounded for the load tool.
pub const HISTORY_LINES: usize = 500;

/// What an expected line must look like.
pub enum Matcher {
    /// Exactly this text (after `\r` is stripped).
    Exact(String),
    /// Any line satisfying the predicate; the string describes it for failure messages.
    Pred(String, Box<dyn Fn(&str) -> bool + Send>),
}

impl Matcher {
    /// Lines starting with `prefix`.
    pub fn starts_with(prefix: &str) -> Self {
        let p = prefix.to_owned();
        Matcher::Pred(
            format!("a line starting with {prefix:?}"),
            Box::new(move |l| l.starts_with(&p)),
        )
    }

    /// Lines containing `needle`.
    pub fn contains(needle: &str) -> Self {
        let n = needle.to_owned();
        Matcher::Pred(
            format!("a line containing {needle:?}"),
            Box::new(move |l| l.contains(&n)),
        )
    }

    /// Lines satisfying `f`, described as `what`.
    pub fn pred(what: &str, f: impl Fn(&str) -> bool + Send + 'static) -> Self {
        Matcher::Pred(what.to_owned(), Box::new(f))
    }

    /// Does `line` match?
    pub fn matches(&self, line: &str) -> bool {
        match self {
            Matcher::Exact(s) => s == line,
            Matcher::Pred(_, f) => f(line),
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Exact(s) => write!(f, "{s:?}"),
            Matcher::Pred(what, _) => f.write_str(what),
        }
    }
}

impl From<&str> for Matcher {
    fn from(s: &str) -> Self {
        Matcher::Exact(s.to_owned())
    }
}

impl From<String> for Matcher {
    fn from(s: String) -> Self {
        Matcher::Exact(s)
    }
}

/// The line that matched an expectation, and the lines read before it.
#[derive(Debug, Clone)]
pub struct Found {
    /// The matching line.
    pub line: String,
    /// Lines that came before it, oldest first.
    pub skipped: Vec<String>,
}

/// One telnet connection.
pub struct TelnetUser {
    /// Label in failure messages: the nickname once logged in.
    pub name: String,
    /// The uid the server gave at login.
    pub uid: Option<String>,
    /// Default wait for an expected line.
    pub timeout: Duration,
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    /// Bytes after the last line end, negotiation already stripped.
    partial: Vec<u8>,
    lines: VecDeque<String>,
    /// The last [`HISTORY_LINES`] lines read, for failure messages.
    seen: VecDeque<String>,
    /// Lines read in all, including those gone from `seen`.
    seen_total: usize,
    iac: Iac,
    closed: bool,
}

impl TelnetUser {
    /// Connects to a telnet port.
    pub async fn connect(addr: SocketAddr, name: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        Ok(Self {
            name: name.to_owned(),
            uid: None,
            timeout: LINE_TIMEOUT,
            reader,
            writer,
            partial: Vec::new(),
            lines: VecDeque::new(),
            seen: VecDeque::new(),
            seen_total: 0,
            iac: Iac::Data,
            closed: false,
        })
    }

    /// The uid from [`TelnetUser::login`]; panics before it.
    pub fn uid(&self) -> &str {
        self.uid
            .as_deref()
            .unwrap_or_else(|| panic!("{} is not logged in", self.name))
    }

    /// `NICK (UID)`, as others see this user.
    pub fn tag(&self) -> String {
        format!("{} ({})", self.name, self.uid())
    }

    /// Answers the nickname prompt with `nick`, reads the welcome line and returns the uid.
    pub async fn login(&mut self, nick: &str) -> String {
        let limit = self.timeout;
        match self.try_login(nick, limit).await {
            Ok(uid) => uid,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`TelnetUser::login`] returning an error instead of panicking; each step gets `limit`.
    pub async fn try_login(&mut self, nick: &str, limit: Duration) -> Result<String, String> {
        self.try_expect_prompt(super::cluster::nickname_prompt(), limit)
            .await?;
        self.try_send_raw(format!("{nick}\r\n").as_bytes())
            .await
            .map_err(|e| format!("{nick}: sending the nickname: {e}"))?;
        self.name = nick.to_owned();
        let prefix = format!("* welcome {nick}, your uid is ");
        let found = self
            .try_expect_line(Matcher::starts_with(&prefix), limit)
            .await?;
        let uid = found.line[prefix.len()..].to_owned();
        if uid.is_empty() {
            return Err(format!("{nick}: empty uid in {:?}", found.line));
        }
        self.uid = Some(uid.clone());
        Ok(uid)
    }

    /// Sends `text` and a CRLF.
    pub async fn send_line(&mut self, text: &str) {
        let mut bytes = text.as_bytes().to_vec();
        bytes.extend_from_slice(b"\r\n");
        self.send_raw(&bytes).await;
    }

    /// Sends bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send_raw(bytes).await {
            panic!(
                "{}: sending {} bytes: {e}\n{}",
                self.name,
                bytes.len(),
                self.history()
            );
        }
    }

    /// Sends bytes as they are, returning the error instead of panicking.
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await
    }

    /// Reads the next line, waiting up to `limit`. `Ok(None)` on timeout, `Err` when the
    /// server closed the connection.
    pub async fn read_line(&mut self, limit: Duration) -> std::io::Result<Option<String>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.lines.pop_front() {
                self.remember(line.clone());
                return Ok(Some(line));
            }
            if self.closed {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Ok(r) => r?,
                Err(_) => return Ok(None),
            }
        }
    }

    /// Reads lines until one matches, within the user's timeout; panics with every line
    /// seen if none does.
    pub async fn expect_line(&mut self, m: impl Into<Matcher>) -> Found {
        let limit = self.timeout;
        self.expect_line_within(m, limit).await
    }

    /// [`TelnetUser::expect_line`] with an explicit timeout.
    pub async fn expect_line_within(&mut self, m: impl Into<Matcher>, limit: Duration) -> Found {
        match self.try_expect_line(m, limit).await {
            Ok(found) => found,
            Err(e) => panic!("{e}"),
        }
    }

    /// Reads lines until one matches `m`; on timeout or close, an error describing what
    /// was seen instead of a panic.
    pub async fn try_expect_line(
        &mut self,
        m: impl Into<Matcher>,
        limit: Duration,
    ) -> Result<Found, String> {
        let m = m.into();
        let deadline = Instant::now() + limit;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_line(left).await {
                Ok(Some(line)) if m.matches(&line) => return Ok(Found { line, skipped }),
                Ok(Some(line)) => skipped.push(line),
                Ok(None) => {
                    return Err(format!(
                        "{}: no line matching {m} within {limit:?}\n{}",
                        self.name,
                        self.history()
                    ))
                }
                Err(e) => {
                    return Err(format!(
                        "{}: connection closed ({e}) while waiting for {m}\n{}",
                        self.name,
                        self.history()
                    ))
                }
            }
        }
    }

    /// Says `text` to everyone and waits until `to` hears it as `NICK (UID): text`; returns
    /// the lines `to` read before it. A later message on the same path proves an earlier one
    /// did not arrive, without sleeping (see [`TelnetUser::assert_not_among`]).
    pub async fn say_and_wait(&mut self, to: &mut TelnetUser, text: &str) -> Vec<String> {
        self.send_line(text).await;
        to.expect_line(format!("{}: {text}", self.tag()))
            .await
            .skipped
    }

    /// Sends `text` privately to `to` (`UID:text`) and waits until `to` reads it as
    /// `NICK (UID) -> you: text`; returns the lines `to` read before it.
    pub async fn whisper_and_wait(&mut self, to: &mut TelnetUser, text: &str) -> Vec<String> {
        self.send_line(&format!("{}:{text}", to.uid())).await;
        to.expect_line(format!("{} -> you: {text}", self.tag()))
            .await
            .skipped
    }

    /// `what` privately to `other` and back, then to everyone and back; each waits until it
    /// arrived.
    pub async fn chat_both_ways(&mut self, other: &mut TelnetUser, what: &str) {
        self.whisper_and_wait(other, &format!("{what} (private)"))
            .await;
        other
            .whisper_and_wait(self, &format!("{what} (private back)"))
            .await;
        self.say_and_wait(other, &format!("{what} (to all)")).await;
        other
            .say_and_wait(self, &format!("{what} (to all, back)"))
            .await;
    }

    /// Panics if any of `lines`, read by this user, contains `needle`.
    pub fn assert_not_among(&self, lines: &[String], needle: &str) {
        if let Some(l) = lines.iter().find(|l| l.contains(needle)) {
            panic!(
                "{} got {l:?}, which should not reach them\n{}",
                self.name,
                self.history()
            );
        }
    }

    /// Like [`TelnetUser::expect_line`], but also accepts a prompt: text without a line end
    /// that matches once nothing more arrives for a moment.
    pub async fn expect_prompt(&mut self, m: impl Into<Matcher>) -> Found {
        let limit = self.timeout;
        match self.try_expect_prompt(m, limit).await {
            Ok(found) => found,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`TelnetUser::expect_prompt`] returning an error instead of panicking.
    pub async fn try_expect_prompt(
        &mut self,
        m: impl Into<Matcher>,
        limit: Duration,
    ) -> Result<Found, String> {
        let m = m.into();
        let deadline = Instant::now() + limit;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // A short read lets a newline-less prompt be checked once the server paused.
            match self.read_line(left.min(Duration::from_millis(200))).await {
                Ok(Some(line)) if m.matches(&line) => return Ok(Found { line, skipped }),
                Ok(Some(line)) => skipped.push(line),
                Ok(None) => {
                    let partial = String::from_utf8_lossy(&self.partial).into_owned();
                    if !partial.is_empty() && m.matches(&partial) {
                        self.partial.clear();
                        self.remember(format!("{partial}<no line end>"));
                        return Ok(Found {
                            line: partial,
                            skipped,
                        });
                    }
                    if left.is_zero() {
                        return Err(format!(
                            "{}: no prompt matching {m} within {limit:?}\n{}",
                            self.name,
                            self.history()
                        ));
                    }
                }
                Err(e) => {
                    return Err(format!(
                        "{}: connection closed ({e}) while waiting for prompt {m}\n{}",
                        self.name,
                        self.history()
                    ))
                }
            }
        }
    }

    /// Panics if any line arrives within `dur`.
    pub async fn expect_silence(&mut self, dur: Duration) {
        self.expect_no_line(dur, Matcher::pred("any line", |_| true))
            .await;
    }

    /// Reads for `dur` and panics if a line matching `m` arrives; returns the lines read.
    pub async fn expect_no_line(&mut self, dur: Duration, m: impl Into<Matcher>) -> Vec<String> {
        let m = m.into();
        let deadline = Instant::now() + dur;
        let mut read = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_line(left).await {
                Ok(Some(line)) if m.matches(&line) => panic!(
                    "{}: got {line:?}, which should not arrive (no {m} expected)\n{}",
                    self.name,
                    self.history()
                ),
                Ok(Some(line)) => read.push(line),
                Ok(None) | Err(_) => return read,
            }
        }
    }

    /// Waits up to `limit` for the server to close the connection; returns the lines read.
    pub async fn expect_closed(&mut self, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut read = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_line(left).await {
                Ok(Some(line)) => read.push(line),
                Ok(None) => panic!(
                    "{}: still open after {limit:?}\n{}",
                    self.name,
                    self.history()
                ),
                Err(_) => return read,
            }
        }
    }

    /// `true` once the server closed the connection (as far as reads so far show).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Every line seen, numbered, plus any unterminated text: the body of failure messages.
    pub fn history(&self) -> String {
        let mut out = format!("--- {} saw {} lines:\n", self.name, self.seen_total);
        let first = self.seen_total - self.seen.len();
        if first > 0 {
            out.push_str(&format!("  ({first} earlier lines not kept)\n"));
        }
        for (i, l) in self.seen.iter().enumerate() {
            let i = first + i;
            out.push_str(&format!("{i:4}: {l:?}\n"));
        }
        if !self.partial.is_empty() {
            out.push_str(&format!(
                "  +: {:?} (no line end)\n",
                String::from_utf8_lossy(&self.partial)
            ));
        }
        if self.closed {
            out.push_str("  (connection closed)\n");
        }
        out
    }

    fn remember(&mut self, line: String) {
        if self.seen.len() == HISTORY_LINES {
            self.seen.pop_front();
        }
        self.seen.push_back(line);
        self.seen_total += 1;
    }

    /// Splits the connection for concurrent reading and writing (the load tool). Returns
    /// the lines already read but not yet taken, and the bytes of an unfinished line.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf, Vec<String>, Vec<u8>) {
        (self.reader, self.writer, self.lines.into(), self.partial)
    }

    /// Reads once from the socket into `partial` and `lines`.
    async fn fill(&mut self) -> std::io::Result<()> {
        let mut buf = [0u8; 4096];
        let n = self.reader.read(&mut buf).await?;
        if n == 0 {
            self.closed = true;
            return Ok(());
        }
        for &b in &buf[..n] {
            if let Some(b) = self.iac.feed(b) {
                if b == b'\n' {
                    let mut raw = std::mem::take(&mut self.partial);
                    if raw.last() == Some(&b'\r') {
                        raw.pop();
                    }
                    self.lines
                        .push_back(String::from_utf8_lossy(&raw).into_owned());
                } else {
                    self.partial.push(b);
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for TelnetUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelnetUser")
            .field("name", &self.name)
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}
