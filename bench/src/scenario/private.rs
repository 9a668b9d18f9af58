//! Private messages: user i sends `UID:<seq> <µs>` to user i+1, at a target rate or as fast
//! as a per-user window of messages in flight allows (saturation), and user i+1 times each
//! `NICK (UID) -> you: <seq> <µs>` on arrival.
//!
//! A window slot not freed within [`LOST_AFTER`] is counted lost and reused, so a lost
//! message costs its sender a pause, not the rest of the run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Semaphore};

use super::{finish, login_all, micros, senders_done, time_deliveries, Common};
use crate::procstat::{Snapshot, Usage};
use crate::report::{Counted, Report};

/// A message not delivered within this long is taken as lost.
pub const LOST_AFTER: Duration = Duration::from_secs(2);

/// Settings.
#[derive(Debug, Clone)]
pub struct Private {
    /// Users (at least 2).
    pub users: usize,
    /// Seconds of sending.
    pub secs: f64,
    /// Messages per second in all; 0: as fast as the window allows.
    pub rate: f64,
    /// Messages in flight per user, at most.
    pub window: usize,
    /// Seconds to wait for stragglers after sending stops.
    pub drain_secs: f64,
}

/// One direction's counters.
#[derive(Default)]
pub(super) struct Counts {
    pub(super) sent: AtomicU64,
    pub(super) delivered: AtomicU64,
    /// Refused (`!` lines, error frames).
    pub(super) errors: AtomicU64,
}

/// Runs the scenario.
pub async fn run(common: &Common, cfg: &Private) -> anyhow::Result<Report> {
    anyhow::ensure!(cfg.users >= 2, "private messages need at least 2 users");
    anyhow::ensure!(cfg.window >= 1, "the window must be at least 1");
    let users = login_all(common, cfg.users).await?;
    let n = users.len();
    let uids: Vec<String> = users.iter().map(|(_, uid)| uid.clone()).collect();
    let windows: Vec<Arc<Semaphore>> = (0..n)
        .map(|_| Arc::new(Semaphore::new(cfg.window)))
        .collect();
    let counts = Arc::new(Counts::default());
    let per_user_rate = cfg.rate / n as f64;
    let (done_tx, done_rx) = watch::channel(false);
    let before = Snapshot::take(&common.watch)?;
    let clock = Instant::now();
    let mut readers = Vec::with_capacity(n);
    let mut writers = Vec::with_capacity(n);
    for (i, (lines, _)) in users.into_iter().enumerate() {
        // User i's messages come from user i-1: their arrival frees that sender's window.
        let window = windows[(i + n - 1) % n].clone();
        let (got, refused) = (counts.clone(), counts.clone());
        readers.push(tokio::spawn(time_deliveries(
            lines.reader,
            " -> you: ",
            clock,
            done_rx.clone(),
            move || {
                got.delivered.fetch_add(1, Ordering::Relaxed);
                window.add_permits(1);
            },
            move || {
                refused.errors.fetch_add(1, Ordering::Relaxed);
            },
        )));
        writers.push(tokio::spawn(send(
            lines.writer,
            uids[(i + 1) % n].clone(),
            windows[i].clone(),
            counts.clone(),
            clock,
            cfg.secs,
            per_user_rate,
        )));
    }
    let (open, sending) = senders_done(writers, clock).await?;
    let expected = || counts.sent.load(Ordering::Relaxed);
    let (after, latencies) = finish(
        common,
        cfg.drain_secs,
        &counts.delivered,
        expected,
        done_tx,
        readers,
    )
    .await?;
    drop(open);

    let sent = counts.sent.load(Ordering::Relaxed);
    let delivered = counts.delivered.load(Ordering::Relaxed);
    let errors = counts.errors.load(Ordering::Relaxed);
    let counted = Counted {
        sent,
        delivered,
        // A `!` line refused a message: it was never accepted, so it is not lost.
        lost: sent.saturating_sub(delivered + errors),
        errors,
    };
    let server = Usage::between(&before, &after);
    Ok(Report::messages(
        "private",
        &common.label,
        n,
        sending,
        counted,
        server,
        &latencies,
    ))
}

/// Sends `UID:<seq> <µs>` to `to` until the time is up, within the window and the rate.
pub(super) async fn send(
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    to: String,
    window: Arc<Semaphore>,
    counts: Arc<Counts>,
    clock: Instant,
    secs: f64,
    rate: f64,
) -> tokio::net::tcp::OwnedWriteHalf {
    let end = clock + Duration::from_secs_f64(secs);
    let mut pace = (rate > 0.0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut seq: u64 = 0;
    let mut line = String::new();
    while Instant::now() < end {
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        match tokio::time::timeout(LOST_AFTER, window.acquire()).await {
            Ok(Ok(permit)) => permit.forget(), // given back by the receiver
            Ok(Err(_)) => return writer,
            Err(_) => {} // a message was lost: its slot is reused
        }
        line.clear();
        use std::fmt::Write;
        let _ = write!(line, "{to}:{seq} {}\r\n", micros(clock));
        if writer.write_all(line.as_bytes()).await.is_err() {
            return writer;
        }
        counts.sent.fetch_add(1, Ordering::Relaxed);
        seq += 1;
    }
    writer
}

/// The send timestamp in `PREFIX<sep><seq> <µs>`.
pub fn timestamp(line: &str, sep: &str) -> Option<u64> {
    let (_, body) = line.split_once(sep)?;
    let (_seq, us) = body.split_once(' ')?;
    us.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::timestamp;

    #[test]
    fn parses_delivery_lines() {
        assert_eq!(
            timestamp("l1 (1) -> you: 17 123456", " -> you: "),
            Some(123456)
        );
        assert_eq!(timestamp("l1 (1): 17 123456", " -> you: "), None);
        assert_eq!(timestamp("l1 (1): 17 123456", "): "), Some(123456));
        assert_eq!(timestamp("* l3 (3) joined", " -> you: "), None);
    }
}
