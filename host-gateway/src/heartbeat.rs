//! Heartbeats, GatewayWorker's `pingInterval` / `pingNotResponseLimit`: a peer silent for an
//! interval is pinged, again every interval it stays silent, and closed after `limit` silent
//! intervals. This module keeps the clock and the count; what a ping is on the wire (a `Ping`
//! frame, an IAC NOP) and what counts as hearing from the peer are the connections' business.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;

use crate::config::GatewayConfig;
use crate::connection::End;

/// When a connection last heard from its peer. Written by the reader, read by the
/// heartbeat; both run in the connection's task, the atomic only makes it `Sync`.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    /// Milliseconds since `epoch`. A millisecond's resolution at worst pings that much early.
    last_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    /// Records that the peer was heard from now.
    pub fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last_ms(&self) -> u64 {
        self.last_ms.load(Ordering::Relaxed)
    }
}

/// How often to ping a silent peer and after how many silent intervals to close it.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    /// Quiet time before a ping; zero turns heartbeats off.
    pub interval: Duration,
    /// Silent intervals before the peer is closed; 0 never closes.
    pub limit: u32,
}

impl Heartbeat {
    /// Devices', TCP or serial: `ping_not_response_limit`.
    pub fn devices(config: &GatewayConfig) -> Heartbeat {
        Heartbeat {
            interval: Duration::from_millis(config.ping_interval_ms),
            limit: config.ping_not_response_limit,
        }
    }

    /// Telnet users': `telnet_idle_limit`, as a person reading sends nothing for long.
    pub fn telnet(config: &GatewayConfig) -> Heartbeat {
        Heartbeat {
            interval: Duration::from_millis(config.ping_interval_ms),
            limit: config.telnet_idle_limit,
        }
    }

    /// Calls `ping` each time the peer has been silent for another interval, and returns
    /// when it has been silent for `limit` of them (no ping is sent at that last one).
    /// Never returns if heartbeats are off or `limit` is 0.
    pub async fn run(self, activity: &Activity, mut ping: impl FnMut()) -> End {
        if self.interval.is_zero() {
            return std::future::pending().await;
        }
        let mut missed = 0u32;
        loop {
            let last = activity.last_ms();
            let quiet = self.interval.saturating_mul(missed.saturating_add(1));
            let due = activity.epoch + Duration::from_millis(last) + quiet;
            tokio::time::sleep_until(due).await;
            if activity.last_ms() != last {
                missed = 0;
                continue;
            }
            missed = missed.saturating_add(1);
            if self.limit != 0 && missed >= self.limit {
                return End::HeartbeatTimeout { silent: quiet };
            }
            ping();
        }
    }
}

/// A reader that touches `activity` whenever bytes arrive, whatever they are.
#[derive(Debug)]
pub struct Touching<R> {
    inner: R,
    activity: Arc<Activity>,
}

impl<R> Touching<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, activity: Arc<Activity>) -> Self {
        Touching { inner, activity }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Touching<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    //! Real time with short intervals (the workspace's tokio has no paused clock); the
    //! margins are half an interval or more.
    use super::*;

    const TICK: Duration = Duration::from_millis(100);

    #[tokio::test]
    async fn pings_each_silent_interval_then_closes_at_the_limit() {
        let activity = Activity::default();
        let beat = Heartbeat {
            interval: TICK,
            limit: 3,
        };
        let start = Instant::now();
        let mut pings = Vec::new();
        let end = beat.run(&activity, || pings.push(start.elapsed())).await;
        assert_eq!(pings.len(), 2, "{pings:?}");
        assert!(pings[0] >= TICK && pings[1] >= 2 * TICK, "{pings:?}");
        assert!(matches!(end, End::HeartbeatTimeout { silent } if silent == 3 * TICK));
        assert!(start.elapsed() >= 3 * TICK);
    }

    #[tokio::test]
    async fn hearing_from_the_peer_restarts_the_count() {
        let activity = Activity::default();
        let beat = Heartbeat {
            interval: TICK,
            limit: 2,
        };
        let mut pings = 0;
        let peer = async {
            // Answers each ping half an interval later: never two silent intervals.
            for _ in 0..4 {
                tokio::time::sleep(TICK * 3 / 2).await;
                activity.touch();
            }
        };
        tokio::select! {
            end = beat.run(&activity, || pings += 1) => panic!("closed: {end}"),
            () = peer => {}
        }
        assert_eq!(pings, 4, "one ping an interval after each touch");
    }

    #[tokio::test]
    async fn limit_zero_only_pings() {
        let activity = Activity::default();
        let beat = Heartbeat {
            interval: TICK / 4,
            limit: 0,
        };
        let mut pings = 0;
        let run = beat.run(&activity, || pings += 1);
        assert!(tokio::time::timeout(TICK * 3, run).await.is_err());
        assert!(pings >= 6, "{pings}");
    }

    #[tokio::test]
    async fn interval_zero_is_off() {
        let activity = Activity::default();
        let beat = Heartbeat {
            interval: Duration::ZERO,
            limit: 1,
        };
        let run = beat.run(&activity, || panic!("pinged"));
        assert!(tokio::time::timeout(TICK, run).await.is_err());
    }
}
