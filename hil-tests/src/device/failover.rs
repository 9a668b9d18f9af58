//! Which gateway a TCP device tries next, and how long it waits first: round robin over the
//! addresses it was given, with backoff only once a whole round has failed, so a dead gateway
//! delays reaching a live one by one connect attempt and no more.
//!
//! Sans-IO: [`super::run_device`] connects and reports how each attempt ended.

use std::time::Duration;

use super::{MAX_BACKOFF, MIN_BACKOFF};

/// The reconnect schedule over a device's gateways.
#[derive(Debug, Clone)]
pub struct Failover {
    addrs: Vec<String>,
    /// Index of the next address to try.
    next: usize,
    /// Attempts made in the current round.
    tried: usize,
    /// Whether any attempt of the current round made a link.
    connected: bool,
    /// The wait after the next round that makes no link.
    backoff: Duration,
}

impl Failover {
    /// A schedule over `addrs` in that order; `None` if there are none.
    pub fn new(addrs: Vec<String>) -> Option<Self> {
        if addrs.is_empty() {
            return None;
        }
        Some(Self {
            addrs,
            next: 0,
            tried: 0,
            connected: false,
            backoff: MIN_BACKOFF,
        })
    }

    /// The addresses, in the order they are tried.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The address to try now; the next call gives the one after it.
    pub fn next_addr(&mut self) -> &str {
        let i = self.next % self.addrs.len();
        self.next = (i + 1) % self.addrs.len();
        &self.addrs[i]
    }

    /// Records how the attempt at the last [`Failover::next_addr`] ended: `connected` if it
    /// made a link (since lost). Returns how long to wait before the next attempt: nothing
    /// within a round; after its last address [`MIN_BACKOFF`] if the round made a link, else
    /// a backoff that doubles round after round up to [`MAX_BACKOFF`].
    pub fn ended(&mut self, connected: bool) -> Option<Duration> {
        self.tried += 1;
        self.connected |= connected;
        if self.tried < self.addrs.len() {
            return None;
        }
        if self.connected {
            self.backoff = MIN_BACKOFF;
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.tried = 0;
        self.connected = false;
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failover(addrs: &[&str]) -> Failover {
        Failover::new(addrs.iter().map(|a| a.to_string()).collect()).unwrap()
    }

    #[test]
    fn one_address_waits_after_every_attempt_like_before() {
        let mut f = failover(&["g:1"]);
        let mut waits = Vec::new();
        for connected in [false, false, false, true, false] {
            assert_eq!(f.next_addr(), "g:1");
            waits.push(f.ended(connected).unwrap().as_millis());
        }
        assert_eq!(waits, [100, 200, 400, 100, 200]);
    }

    #[test]
    fn a_dead_gateway_costs_one_attempt_and_the_wait_comes_after_a_round() {
        let mut f = failover(&["dead:1", "live:2"]);
        assert_eq!(f.next_addr(), "dead:1");
        assert_eq!(f.ended(false), None);
        assert_eq!(f.next_addr(), "live:2");
        assert_eq!(f.ended(true), Some(MIN_BACKOFF));
        // The live one closed: round again, from the first.
        assert_eq!(f.next_addr(), "dead:1");
        assert_eq!(f.ended(false), None);
        assert_eq!(f.next_addr(), "live:2");
        assert_eq!(f.ended(false), Some(MIN_BACKOFF * 2));
        assert_eq!(f.next_addr(), "dead:1");
        assert_eq!(f.ended(false), None);
        assert_eq!(f.next_addr(), "live:2");
        assert_eq!(f.ended(false), Some(MIN_BACKOFF * 4));
    }

    #[test]
    fn backoff_stops_at_the_maximum_and_none_is_empty() {
        let mut f = failover(&["a:1", "b:2", "c:3"]);
        let mut last = Duration::ZERO;
        for _ in 0..30 {
            for i in 0..3 {
                f.next_addr();
                let wait = f.ended(false);
                assert_eq!(wait.is_some(), i == 2);
                last = wait.unwrap_or(last);
            }
        }
        assert_eq!(last, MAX_BACKOFF);
        assert!(Failover::new(Vec::new()).is_none());
    }
}
