//! The scenarios, each a function from its settings to a [`crate::report::Report`], and what
//! they share: logging users in, the server processes to watch, the load's clock.

pub mod broadcast;
pub mod connect;
pub mod devices;
pub mod idle;
pub mod overload;
pub mod private;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use futures::stream::{self, StreamExt};

use crate::client::{connect, Lines};
use crate::procstat::Watched;

/// Each login step (prompt, welcome) may take this long.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections opened at once while logging users in: enough to be quick, few enough not
/// to overflow the server's accept queue (which would cost a 1 s SYN retry each).
pub const OPEN_AT_ONCE: usize = 128;

/// What every scenario needs.
#[derive(Debug, Clone)]
pub struct Common {
    /// The chat's telnet address.
    pub server: SocketAddr,
    /// Label for the report.
    pub label: String,
    /// Server processes to charge.
    pub watch: Vec<Watched>,
    /// Source addresses to spread connections over (empty: the OS picks).
    pub sources: Vec<IpAddr>,
    /// Nicknames start with this.
    pub prefix: String,
}

impl Common {
    /// The source address for connection `i`.
    pub fn source(&self, i: usize) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[i % self.sources.len()])
    }
}

/// Logs in `n` users (at most [`OPEN_AT_ONCE`] at a time); returns them with their uids,
/// in order.
pub async fn login_all(common: &Common, n: usize) -> anyhow::Result<Vec<(Lines, String)>> {
    let logins = stream::iter(0..n)
        .map(|i| async move {
            let nick = format!("{}{i}", common.prefix);
            let stream = connect(common.server, common.source(i))
                .await
                .with_context(|| format!("{nick}: connecting to {}", common.server))?;
            let mut lines = Lines::new(stream);
            let uid = lines
                .login(&nick, LOGIN_TIMEOUT)
                .await
                .with_context(|| format!("{nick}: login"))?;
            anyhow::Ok((lines, uid))
        })
        .buffered(OPEN_AT_ONCE);
    logins.collect::<Vec<_>>().await.into_iter().collect()
}

/// Microseconds since `clock`, as written into payloads.
pub fn micros(clock: std::time::Instant) -> u64 {
    clock.elapsed().as_micros() as u64
}

/// Times every line holding `<sep><seq> <µs>` until `done` or the connection ends, calling
/// `delivered` for each and `refused` for each `!` line; returns the latencies.
pub async fn time_deliveries(
    mut lines: crate::client::LineReader,
    sep: &'static str,
    clock: std::time::Instant,
    mut done: tokio::sync::watch::Receiver<bool>,
    mut delivered: impl FnMut(),
    mut refused: impl FnMut(),
) -> hdrhistogram::Histogram<u64> {
    let mut latencies = crate::report::histogram();
    loop {
        let line = tokio::select! {
            line = lines.line() => line,
            _ = done.wait_for(|d| *d) => return latencies,
        };
        let Ok(Some(line)) = line else {
            return latencies;
        };
        if let Some(sent_us) = private::timestamp(&line, sep) {
            latencies.saturating_record(micros(clock).saturating_sub(sent_us).max(1));
            delivered();
        } else if line.starts_with('!') {
            refused();
        }
    }
}

/// Waits for every sender task and returns what they hand back (their sockets' write
/// halves, to keep open until the end: a half-closed socket logs its user out) and how long
/// the sending took since `clock`.
pub async fn senders_done<W>(
    writers: Vec<tokio::task::JoinHandle<W>>,
    clock: std::time::Instant,
) -> anyhow::Result<(Vec<W>, Duration)> {
    let mut open = Vec::with_capacity(writers.len());
    for w in writers {
        open.push(w.await.context("a sender task failed")?);
    }
    Ok((open, clock.elapsed()))
}

/// The end of a messaging scenario, once the senders stopped: waits up to `drain_secs` for
/// `delivered` to reach `expected()`, reads the server, stops the readers and merges their
/// latencies.
pub async fn finish(
    common: &Common,
    drain_secs: f64,
    delivered: &std::sync::atomic::AtomicU64,
    expected: impl Fn() -> u64,
    done: tokio::sync::watch::Sender<bool>,
    readers: Vec<tokio::task::JoinHandle<hdrhistogram::Histogram<u64>>>,
) -> anyhow::Result<(crate::procstat::Snapshot, hdrhistogram::Histogram<u64>)> {
    use std::sync::atomic::Ordering;
    let drain_until = std::time::Instant::now() + Duration::from_secs_f64(drain_secs);
    while delivered.load(Ordering::Relaxed) < expected() && std::time::Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = crate::procstat::Snapshot::take(&common.watch)?;
    let _ = done.send(true);
    let mut latencies = crate::report::histogram();
    for r in readers {
        latencies.add(r.await.context("a reader task failed")?)?;
    }
    Ok((after, latencies))
}
