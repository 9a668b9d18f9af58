//! Idle connections: opens `conns` connections (spread over the source addresses), each
//! waits for the nickname prompt (and logs in with `login`), then all stay silent for
//! `hold_secs`. Reports the server's RSS growth per connection, per process and in all.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{self, StreamExt};

use super::{Common, LOGIN_TIMEOUT, OPEN_AT_ONCE};
use crate::client::{connect, Lines, PROMPT};
use crate::procstat::{Snapshot, Usage};
use crate::report::Report;

/// Settings.
#[derive(Debug, Clone)]
pub struct Idle {
    /// Connections to hold.
    pub conns: usize,
    /// Log each one in, rather than stop at the prompt.
    pub login: bool,
    /// Seconds to hold them all before measuring.
    pub hold_secs: f64,
}

/// Runs the scenario.
pub async fn run(common: &Common, cfg: &Idle) -> anyhow::Result<Report> {
    let before = Snapshot::take(&common.watch)?;
    let clock = Instant::now();
    let opened = stream::iter(0..cfg.conns)
        .map(|i| {
            let common = common.clone();
            let login = cfg.login;
            async move {
                let stream = connect(common.server, common.source(i))
                    .await
                    .with_context(|| format!("connection {i}"))?;
                let mut lines = Lines::new(stream);
                if login {
                    lines
                        .login(&format!("{}{i}", common.prefix), LOGIN_TIMEOUT)
                        .await?;
                } else {
                    lines
                        .until("the nickname prompt", LOGIN_TIMEOUT, |l| l.contains(PROMPT))
                        .await?;
                }
                anyhow::Ok(lines)
            }
        })
        .buffer_unordered(OPEN_AT_ONCE)
        .collect::<Vec<_>>()
        .await;
    let opening = clock.elapsed();
    let mut held = Vec::with_capacity(opened.len());
    let mut errors = 0;
    for conn in opened {
        match conn {
            Ok(lines) => held.push(lines),
            Err(err) => {
                if errors == 0 {
                    tracing::warn!(cause = %err, "a connection failed");
                }
                errors += 1;
            }
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(cfg.hold_secs)).await;
    let after = Snapshot::take(&common.watch)?;
    let server = Usage::between(&before, &after);
    let n = held.len();
    let grown = server.rss_kib_after.saturating_sub(server.rss_kib_before) as f64 * 1024.0;
    let report = Report {
        scenario: if cfg.login { "idle-login" } else { "idle" }.into(),
        label: common.label.clone(),
        users: n,
        secs: opening.as_secs_f64(),
        sent: cfg.conns as u64,
        delivered: n as u64,
        errors,
        per_s: n as f64 / opening.as_secs_f64().max(1e-9),
        rss_bytes_per_conn: grown / n.max(1) as f64,
        server,
        ..Report::default()
    };
    drop(held);
    Ok(report)
}
