//! Heartbeats, GatewayWorker's `pingInterval` / `pingNotResponseLimit`: a peer silent for an
//! interval is pinged, again every interval it stays silent, and closed after `limit` silent
//! intervals. This module keeps the clock and the policy; the router sweeps every connection
//! a few times an interval (one timer for the whole gateway, as GatewayWorker does, rather
//! than one per connection), and what a ping is on the wire (a `Ping` frame, an IAC NOP) and
//! what counts as hearing from the peer are the connections' business.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::config::GatewayConfig;

/// Sweeps per interval: a ping or a close comes at most a quarter interval late.
const SWEEPS_PER_INTERVAL: u32 = 4;

/// Milliseconds on the gateway's clock (since its first reading).
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// When a connection last heard from its peer: written by the connection on every read,
/// read by the router's sweep.
#[derive(Debug)]
pub struct Activity {
    /// [`now_ms`] of the last read. A millisecond's resolution pings that much early at worst.
    heard_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            heard_ms: AtomicU64::new(now_ms()),
        }
    }
}

impl Activity {
    /// Records that the peer was heard from now.
    pub fn touch(&self) {
        self.heard_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// How long the peer has been silent, as of `now` ([`now_ms`]).
    pub fn silent_ms(&self, now: u64) -> u64 {
        now.saturating_sub(self.heard_ms.load(Ordering::Relaxed))
    }
}

/// What a sweep does to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Nothing: heard from recently, or already pinged for this interval.
    Quiet,
    /// Send a ping.
    Ping,
    /// Close it: silent for `limit` intervals.
    Close,
}

/// How often to ping a silent peer and after how many silent intervals to close it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    /// How often the router sweeps; `None` when heartbeats are off.
    pub fn sweep_every(&self) -> Option<Duration> {
        (!self.interval.is_zero())
            .then(|| (self.interval / SWEEPS_PER_INTERVAL).max(Duration::from_millis(1)))
    }

    /// The policy: `silent_ms` since the peer was last heard, `pinged` the silent intervals
    /// already pinged for (kept by the caller, reset here when the peer speaks). A ping
    /// for each silent interval, then a close at the `limit`-th (no ping at that one).
    pub fn check(&self, silent_ms: u64, pinged: &mut u32) -> Beat {
        let interval = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        if interval == 0 {
            return Beat::Quiet;
        }
        let missed = u32::try_from(silent_ms / interval).unwrap_or(u32::MAX);
        if missed == 0 {
            *pinged = 0;
            return Beat::Quiet;
        }
        if self.limit != 0 && missed >= self.limit {
            return Beat::Close;
        }
        if missed > *pinged {
            *pinged = missed;
            return Beat::Ping;
        }
        Beat::Quiet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(limit: u32) -> Heartbeat {
        Heartbeat {
            interval: Duration::from_millis(100),
            limit,
        }
    }

    /// Sweeps a peer silent from 0 every 25 ms up to `until_ms`; returns when it pinged and
    /// when (if) it closed.
    fn sweep(hb: Heartbeat, until_ms: u64, heard: impl Fn(u64) -> u64) -> (Vec<u64>, Option<u64>) {
        let mut pinged = 0;
        let mut pings = Vec::new();
        for now in (0..=until_ms).step_by(25) {
            match hb.check(now - heard(now), &mut pinged) {
                Beat::Quiet => {}
                Beat::Ping => pings.push(now),
                Beat::Close => return (pings, Some(now)),
            }
        }
        (pings, None)
    }

    #[test]
    fn pings_each_silent_interval_then_closes_at_the_limit() {
        let (pings, closed) = sweep(beat(3), 1000, |_| 0);
        assert_eq!(pings, [100, 200]);
        assert_eq!(closed, Some(300));
    }

    #[test]
    fn hearing_from_the_peer_restarts_the_count() {
        // Answers each ping 50 ms later: never two silent intervals.
        let (pings, closed) = sweep(beat(2), 1000, |now| now - (now % 150));
        assert_eq!(closed, None);
        assert!(pings.len() >= 5, "{pings:?}");
    }

    #[test]
    fn limit_zero_only_pings() {
        let (pings, closed) = sweep(beat(0), 1000, |_| 0);
        assert_eq!(closed, None);
        assert_eq!(pings.len(), 10, "{pings:?}");
    }

    #[test]
    fn interval_zero_is_off() {
        let off = Heartbeat {
            interval: Duration::ZERO,
            limit: 1,
        };
        assert_eq!(off.sweep_every(), None);
        assert_eq!(off.check(1_000_000, &mut 0), Beat::Quiet);
        assert_eq!(beat(1).sweep_every(), Some(Duration::from_millis(25)));
    }

    #[test]
    fn activity_measures_silence_on_the_shared_clock() {
        let activity = Activity::default();
        let later = now_ms() + 500;
        assert!(activity.silent_ms(later) >= 500);
        activity.touch();
        assert!(activity.silent_ms(now_ms()) < 100);
    }
}
