//! Overload: private messages with no pacing and a deep window, well past what the server
//! can deliver, then silence. Reports the server's RSS before, at its peak during the load
//! and after a settling pause, and what happened to every message: delivered, refused
//! with a `!` line (never accepted), or lost (accepted and never delivered).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::private::{self, Private};
use super::Common;
use crate::procstat::Snapshot;
use crate::report::Report;

/// How often the server's memory is sampled during the load.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Settings.
#[derive(Debug, Clone)]
pub struct Overload {
    /// Users.
    pub users: usize,
    /// Seconds of load.
    pub secs: f64,
    /// Messages in flight per user: deep enough that the server, not the window, limits.
    pub window: usize,
    /// Seconds of silence before memory is read again.
    pub settle_secs: f64,
}

/// Runs the scenario.
pub async fn run(common: &Common, cfg: &Overload) -> anyhow::Result<Report> {
    let load = Private {
        users: cfg.users,
        secs: cfg.secs,
        rate: 0.0,
        window: cfg.window,
        drain_secs: cfg.settle_secs,
    };
    let peak = AtomicU64::new(0);
    let sampler = async {
        loop {
            if let Ok(now) = Snapshot::take(&common.watch) {
                peak.fetch_max(now.rss_kib(), Ordering::Relaxed);
            }
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
    };
    // The sampler never ends; it is dropped when the load (and its drain) is over.
    let report = tokio::select! {
        report = private::run(common, &load) => report?,
        never = sampler => never,
    };
    tokio::time::sleep(Duration::from_secs_f64(cfg.settle_secs)).await;
    let settled = Snapshot::take(&common.watch)?;
    let peak = peak
        .load(Ordering::Relaxed)
        .max(report.server.rss_kib_after);
    let report = Report {
        scenario: "overload".into(),
        rss_kib_start: report.server.rss_kib_before,
        rss_kib_peak: peak,
        rss_kib_settled: settled.rss_kib(),
        ..report
    };
    Ok(report)
}
