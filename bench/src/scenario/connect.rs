//! Connect and log in: `concurrency` loops each connect, wait for the prompt, send a
//! nickname, wait for the welcome and close, for a fixed time. Reports logins per second and
//! the connect-to-welcome time.
//!
//! Connections are closed with a reset (`SO_LINGER` 0): at 10^5 logins a run, orderly closes
//! leave as many TIME_WAIT sockets holding the source ports for a minute, and the server
//! measured next paid for them (binding a source port got slow: 54 ms median logins for the
//! reference right after a Switchboard run). The server still runs its whole close path.

use std::time::{Duration, Instant};

use super::{Common, LOGIN_TIMEOUT};
use crate::client::{connect, Lines};
use crate::procstat::{Snapshot, Usage};
use crate::report::{histogram, Report};

/// Settings.
#[derive(Debug, Clone)]
pub struct Connect {
    /// Logins in progress at once.
    pub concurrency: usize,
    /// Seconds of logging in.
    pub secs: f64,
}

/// Runs the scenario.
pub async fn run(common: &Common, cfg: &Connect) -> anyhow::Result<Report> {
    anyhow::ensure!(cfg.concurrency >= 1, "concurrency must be at least 1");
    let before = Snapshot::take(&common.watch)?;
    let clock = Instant::now();
    let end = clock + Duration::from_secs_f64(cfg.secs);
    let loops: Vec<_> = (0..cfg.concurrency)
        .map(|k| {
            let common = common.clone();
            tokio::spawn(async move {
                let mut latencies = histogram();
                let (mut ok, mut failed) = (0u64, 0u64);
                let mut i = 0usize;
                while Instant::now() < end {
                    let start = Instant::now();
                    let nick = format!("{}{k}x{i}", common.prefix);
                    let attempt = async {
                        let stream = connect(common.server, common.source(k + i)).await?;
                        stream.set_zero_linger()?;
                        let mut lines = Lines::new(stream);
                        lines.login(&nick, LOGIN_TIMEOUT).await?;
                        anyhow::Ok(())
                    };
                    match attempt.await {
                        Ok(()) => {
                            ok += 1;
                            latencies.saturating_record(start.elapsed().as_micros() as u64);
                        }
                        Err(_) => failed += 1,
                    }
                    i += 1;
                }
                (ok, failed, latencies)
            })
        })
        .collect();
    let mut latencies = histogram();
    let (mut ok, mut failed) = (0, 0);
    for l in loops {
        let (o, f, h) = l.await?;
        ok += o;
        failed += f;
        latencies.add(h)?;
    }
    let elapsed = clock.elapsed();
    let after = Snapshot::take(&common.watch)?;
    let server = Usage::between(&before, &after);
    let mut report = Report {
        scenario: "connect".into(),
        label: common.label.clone(),
        users: cfg.concurrency,
        secs: elapsed.as_secs_f64(),
        sent: ok + failed,
        delivered: ok,
        errors: failed,
        per_s: ok as f64 / elapsed.as_secs_f64().max(1e-9),
        cpu_us_per_op: server.cpu_s * 1e6 / ok.max(1) as f64,
        server,
        ..Report::default()
    };
    report.latencies(&latencies);
    Ok(report)
}
