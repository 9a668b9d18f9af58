//! `switchboard-load`: logs in N telnet users to a running Switchboard, has each send
//! private messages to the next one for a while, and prints one JSON line with what was
//! sent, what arrived and how long it took.
//!
//! ```text
//! switchboard-load --telnet 127.0.0.1:8480 --users 50 --secs 10
//! {"users":50,"secs":10,"sent":...,"delivered":...,"lost":...,"errors":0,"msgs_per_s":...,"p50_us":...,"p99_us":...,"max_us":...}
//! ```
//!
//! User i sends `UID:<seq> <µs since start>` to user i+1 and user i+1 times the line
//! `NICK (UID) -> you: <seq> <µs>` on arrival. Each user has at most `--window` messages in
//! flight, so a slow server slows the senders instead of growing queues; `--rate` caps
//! each user's rate instead of going as fast as the window allows. It is a measuring tool:
//! it asserts nothing and its numbers depend on the machine.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use hil::harness::TelnetUser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{watch, Semaphore};
use tracing_subscriber::EnvFilter;

/// A window slot not freed for this long is taken as a lost message and reused, so a lost
/// message costs a sender a pause, not the rest of the run.
const LOST_AFTER: Duration = Duration::from_secs(2);
/// Each login step (prompt, welcome) may take this long.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(version, about = "Load test: private messages between N telnet users")]
struct Cli {
    /// The Switchboard telnet address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8480")]
    telnet: SocketAddr,
    /// Users to log in (at least 2).
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Messages per second per user; 0 sends as fast as the window allows.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Messages per user sent but not yet delivered, at most.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Seconds to wait for messages still in flight when sending stops.
    #[arg(long, default_value_t = 3)]
    drain_secs: u64,
    /// Nicknames are PREFIX1, PREFIX2, ...
    #[arg(long, default_value = "load")]
    prefix: String,
    /// Log progress to stderr (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// Counters shared by every task.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    delivered: AtomicU64,
    /// `!` lines: the server refused something.
    errors: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let level = ["warn", "info", "debug"][usize::from(cli.verbose.min(2))];
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    if cli.users < 2 {
        bail!("--users must be at least 2: each user sends to another");
    }
    if cli.window == 0 {
        bail!("--window must be at least 1");
    }

    let users = login_all(&cli).await?;
    tracing::info!(users = users.len(), "all logged in");
    let counts = Arc::new(Counts::default());
    let (sending, mut latencies) = run(&cli, users, counts.clone()).await?;
    println!("{}", report(&cli, &counts, sending, &mut latencies));
    Ok(())
}

/// Runs the senders and receivers; returns how long sending took and every latency (µs).
async fn run(
    cli: &Cli,
    users: Vec<TelnetUser>,
    counts: Arc<Counts>,
) -> anyhow::Result<(Duration, Vec<u64>)> {
    let n = users.len();
    let uids: Vec<String> = users.iter().map(|u| u.uid().to_owned()).collect();
    let windows: Vec<Arc<Semaphore>> = (0..n)
        .map(|_| Arc::new(Semaphore::new(cli.window)))
        .collect();
    let clock = Instant::now();
    let (done_tx, done_rx) = watch::channel(false);
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for (i, user) in users.into_iter().enumerate() {
        let (reader, writer, _, _) = user.into_split();
        // User i's messages come from user i-1: their arrival frees that sender's window.
        let sender_window = windows[(i + n - 1) % n].clone();
        readers.push(tokio::spawn(read_deliveries(
            reader,
            sender_window,
            counts.clone(),
            clock,
            done_rx.clone(),
        )));
        writers.push(tokio::spawn(send_messages(
            writer,
            uids[(i + 1) % n].clone(),
            windows[i].clone(),
            counts.clone(),
            clock,
            cli.send_params(),
        )));
    }
    // Writers are kept until the end: dropping one half-closes its socket, and the server
    // would log that user out while messages to it are still in flight.
    let mut open_writers = Vec::new();
    for w in writers {
        open_writers.push(w.await.context("a sender task failed")?);
    }
    let sending = clock.elapsed();
    let drain_until = Instant::now() + Duration::from_secs(cli.drain_secs);
    while counts.delivered.load(Ordering::Relaxed) < counts.sent.load(Ordering::Relaxed)
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = done_tx.send(true);
    let mut latencies = Vec::new();
    for r in readers {
        latencies.extend(r.await.context("a reader task failed")?);
    }
    drop(open_writers);
    Ok((sending, latencies))
}

/// What a sender needs from the CLI.
#[derive(Clone, Copy)]
struct SendParams {
    secs: u64,
    rate: f64,
}

impl Cli {
    fn send_params(&self) -> SendParams {
        SendParams {
            secs: self.secs,
            rate: self.rate,
        }
    }
}

/// Connects and logs in every user concurrently.
async fn login_all(cli: &Cli) -> anyhow::Result<Vec<TelnetUser>> {
    let logins = (1..=cli.users).map(|i| {
        let nick = format!("{}{i}", cli.prefix);
        async move {
            let mut user = TelnetUser::connect(cli.telnet, &nick)
                .await
                .with_context(|| format!("{nick}: connecting to {}", cli.telnet))?;
            user.try_login(&nick, LOGIN_TIMEOUT)
                .await
                .map_err(|e| anyhow::anyhow!("{nick}: login failed: {e}"))?;
            anyhow::Ok(user)
        }
    });
    futures::future::join_all(logins)
        .await
        .into_iter()
        .collect()
}

/// Sends `UID:<seq> <µs>` to `to` until the time is up, within the window and the rate.
async fn send_messages(
    mut writer: OwnedWriteHalf,
    to: String,
    window: Arc<Semaphore>,
    counts: Arc<Counts>,
    clock: Instant,
    params: SendParams,
) -> OwnedWriteHalf {
    let end = clock + Duration::from_secs(params.secs);
    let mut pace = (params.rate > 0.0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / params.rate));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut seq: u64 = 0;
    while Instant::now() < end {
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        match tokio::time::timeout(LOST_AFTER, window.acquire()).await {
            Ok(Ok(permit)) => permit.forget(), // given back by the receiver's reader
            Ok(Err(_)) => return writer,       // closed: cannot happen, nobody closes it
            Err(_) => tracing::debug!(%to, "window full for {LOST_AFTER:?}; a message is lost"),
        }
        let line = format!("{to}:{seq} {}\r\n", clock.elapsed().as_micros());
        if let Err(e) = writer.write_all(line.as_bytes()).await {
            tracing::warn!(%to, cause = %e, "send failed; this sender stops");
            return writer;
        }
        counts.sent.fetch_add(1, Ordering::Relaxed);
        seq += 1;
    }
    writer
}

/// Counts and times `... -> you: <seq> <µs>` lines until `done`; returns the latencies.
async fn read_deliveries(
    reader: OwnedReadHalf,
    sender_window: Arc<Semaphore>,
    counts: Arc<Counts>,
    clock: Instant,
    mut done: watch::Receiver<bool>,
) -> Vec<u64> {
    let mut reader = BufReader::new(reader);
    let mut latencies = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = tokio::select! {
            r = reader.read_until(b'\n', &mut buf) => r,
            _ = done.wait_for(|d| *d) => return latencies,
        };
        match read {
            Ok(0) | Err(_) => {
                tracing::warn!("connection closed by the server");
                return latencies;
            }
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end();
        if let Some(sent_us) = delivery_timestamp(line) {
            let now = clock.elapsed().as_micros() as u64;
            latencies.push(now.saturating_sub(sent_us));
            counts.delivered.fetch_add(1, Ordering::Relaxed);
            sender_window.add_permits(1);
        } else if line.starts_with('!') {
            let earlier = counts.errors.fetch_add(1, Ordering::Relaxed);
            if earlier < 5 {
                tracing::warn!(%line, "server refused a message");
            }
        }
    }
}

/// The send timestamp in `NICK (UID) -> you: <seq> <µs>`.
fn delivery_timestamp(line: &str) -> Option<u64> {
    let (_, body) = line.split_once(" -> you: ")?;
    let (_seq, us) = body.split_once(' ')?;
    us.parse().ok()
}

/// The JSON summary line.
fn report(cli: &Cli, counts: &Counts, sending: Duration, latencies: &mut [u64]) -> String {
    latencies.sort_unstable();
    let pct = |p: f64| -> u64 {
        if latencies.is_empty() {
            return 0;
        }
        let rank = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1]
    };
    let sent = counts.sent.load(Ordering::Relaxed);
    let delivered = counts.delivered.load(Ordering::Relaxed);
    format!(
        "{{\"users\":{},\"secs\":{},\"sent\":{sent},\"delivered\":{delivered},\"lost\":{},\
         \"errors\":{},\"msgs_per_s\":{:.1},\"p50_us\":{},\"p99_us\":{},\"max_us\":{}}}",
        cli.users,
        cli.secs,
        sent.saturating_sub(delivered),
        counts.errors.load(Ordering::Relaxed),
        delivered as f64 / sending.as_secs_f64().max(1e-9),
        pct(0.50),
        pct(0.99),
        latencies.last().copied().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_delivery_lines() {
        assert_eq!(
            delivery_timestamp("load1 (1) -> you: 17 123456"),
            Some(123456)
        );
        assert_eq!(delivery_timestamp("load1 (1): 17 123456"), None);
        assert_eq!(delivery_timestamp("* load3 (3) joined"), None);
    }
}
