//! Broadcast: `senders` of the `users` each say `<seq> <µs>` to everyone at a set rate;
//! every other user times each `NICK (UID): <seq> <µs>` on arrival. A line said once is
//! `users - 1` deliveries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::{finish, login_all, micros, senders_done, time_deliveries, Common};
use crate::procstat::{Snapshot, Usage};
use crate::report::{Counted, Report};

/// Settings.
#[derive(Debug, Clone)]
pub struct Broadcast {
    /// Users (all receive).
    pub users: usize,
    /// How many of them send.
    pub senders: usize,
    /// Seconds of sending.
    pub secs: f64,
    /// Lines per second in all (each delivered to `users - 1`).
    pub rate: f64,
    /// Seconds to wait for stragglers after sending stops.
    pub drain_secs: f64,
}

#[derive(Default)]
struct Counts {
    said: AtomicU64,
    delivered: AtomicU64,
    errors: AtomicU64,
}

/// Runs the scenario.
pub async fn run(common: &Common, cfg: &Broadcast) -> anyhow::Result<Report> {
    anyhow::ensure!(cfg.users >= 2, "a broadcast needs at least 2 users");
    anyhow::ensure!(
        (1..=cfg.users).contains(&cfg.senders),
        "senders must be 1..=users"
    );
    anyhow::ensure!(cfg.rate > 0.0, "a broadcast needs a rate");
    let users = login_all(common, cfg.users).await?;
    let n = users.len();
    let counts = Arc::new(Counts::default());
    let (done_tx, done_rx) = watch::channel(false);
    let before = Snapshot::take(&common.watch)?;
    let clock = Instant::now();
    let mut readers = Vec::with_capacity(n);
    let mut writers = Vec::with_capacity(n);
    for (i, (lines, _)) in users.into_iter().enumerate() {
        let (got, refused) = (counts.clone(), counts.clone());
        readers.push(tokio::spawn(time_deliveries(
            lines.reader,
            "): ",
            clock,
            done_rx.clone(),
            move || {
                got.delivered.fetch_add(1, Ordering::Relaxed);
            },
            move || {
                refused.errors.fetch_add(1, Ordering::Relaxed);
            },
        )));
        if i < cfg.senders {
            let rate = cfg.rate / cfg.senders as f64;
            writers.push(tokio::spawn(say(
                lines.writer,
                counts.clone(),
                clock,
                cfg.secs,
                rate,
            )));
        } else {
            writers.push(tokio::spawn(async move { lines.writer }));
        }
    }
    let (open, sending) = senders_done(writers, clock).await?;
    let expected = || counts.said.load(Ordering::Relaxed) * (n as u64 - 1);
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

    let delivered = counts.delivered.load(Ordering::Relaxed);
    let counted = Counted {
        sent: counts.said.load(Ordering::Relaxed),
        delivered,
        lost: expected().saturating_sub(delivered),
        errors: counts.errors.load(Ordering::Relaxed),
    };
    let server = Usage::between(&before, &after);
    Ok(Report::messages(
        "broadcast",
        &common.label,
        n,
        sending,
        counted,
        server,
        &latencies,
    ))
}

async fn say(
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    counts: Arc<Counts>,
    clock: Instant,
    secs: f64,
    rate: f64,
) -> tokio::net::tcp::OwnedWriteHalf {
    let end = clock + Duration::from_secs_f64(secs);
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq: u64 = 0;
    while Instant::now() < end {
        pace.tick().await;
        let line = format!("{seq} {}\r\n", micros(clock));
        if writer.write_all(line.as_bytes()).await.is_err() {
            break;
        }
        counts.said.fetch_add(1, Ordering::Relaxed);
        seq += 1;
    }
    writer
}
