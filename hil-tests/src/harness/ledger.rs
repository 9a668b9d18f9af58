//! Message accounting for soak tests: every message sent, refused or delivered, and the
//! windows in which the worker was being replaced, so a run ends in counts a reader can
//! check and, when one is off, the messages and windows behind it.
//!
//! It sends and reads nothing: the test's senders and readers report to it. Messages are
//! keyed by the text their recipient sees after `-> you: `, so every text must be unique.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// A message sent this long before a disruption began may still have been unacknowledged
/// in the gateway when it began: generous, for a debug build on a loaded 2-core machine.
pub const NEAR_BEFORE: Duration = Duration::from_secs(2);
/// A message sent this long after a disruption ended may still meet its after-effects
/// (events the new worker gets redelivered, sessions it reloads).
pub const NEAR_AFTER: Duration = Duration::from_secs(1);
/// Example lines kept per kind of surprise, for failure messages.
const SAMPLES: usize = 8;

/// How the worker was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disruption {
    /// SIGTERM, the worker exited by itself, then a new worker.
    Reload,
    /// SIGTERM, but the worker did not exit cleanly (killed after the grace period, or a
    /// failing exit status): it may not have handed over, so it counts like a kill.
    ForcedReload,
    /// SIGKILL, then a new worker: events in flight may be handled twice.
    Kill,
}

impl Disruption {
    /// May messages around it be delivered twice?
    fn allows_duplicates(self) -> bool {
        self != Disruption::Reload
    }
}

#[derive(Debug)]
struct Window {
    kind: Disruption,
    start: Instant,
    end: Instant,
}

impl Window {
    fn is_near(&self, at: Instant) -> bool {
        at + NEAR_BEFORE >= self.start && at <= self.end + NEAR_AFTER
    }
}

#[derive(Debug)]
struct Message {
    from: usize,
    to: usize,
    sent: Instant,
    refused: bool,
    deliveries: u32,
}

/// The record of one soak run. Users are numbered by the test (0..n).
#[derive(Debug)]
pub struct Ledger {
    clock: Instant,
    messages: HashMap<String, Message>,
    /// Each user's latest message: a `!` line is taken to refuse it (the gateway answers
    /// a line it cannot accept at once, well before the user's next message).
    latest: HashMap<usize, String>,
    windows: Vec<Window>,
    drops: Vec<usize>,
    misrouted: u64,
    unexpected: u64,
    samples: Vec<String>,
}

impl Ledger {
    /// An empty ledger; times in reports are relative to `clock`.
    pub fn new(clock: Instant) -> Self {
        Self {
            clock,
            messages: HashMap::new(),
            latest: HashMap::new(),
            windows: Vec::new(),
            drops: Vec::new(),
            misrouted: 0,
            unexpected: 0,
            samples: Vec::new(),
        }
    }

    /// Records that user `from` is about to send `text` (as the recipient will see it) for
    /// user `to` to receive. Call it before writing, so the delivery cannot come first.
    pub fn sent(&mut self, from: usize, to: usize, text: String) {
        let message = Message {
            from,
            to,
            sent: Instant::now(),
            refused: false,
            deliveries: 0,
        };
        let old = self.messages.insert(text.clone(), message);
        assert!(old.is_none(), "the test sent {text:?} twice");
        self.latest.insert(from, text);
    }

    /// User `user` got a `!` line: its latest message was not accepted.
    pub fn refused(&mut self, user: usize, line: &str) {
        self.sample(format!("user {user} refused: {line:?}"));
        let Some(text) = self.latest.remove(&user) else {
            self.unexpected += 1;
            return;
        };
        if let Some(m) = self.messages.get_mut(&text) {
            m.refused = true;
        }
    }

    /// User `user` received `text` after `-> you: `.
    pub fn delivered(&mut self, user: usize, text: &str) {
        let at = self.at(Instant::now());
        match self.messages.get_mut(text) {
            Some(m) if m.to == user => m.deliveries += 1,
            Some(m) => {
                let line = format!("{at} user {user} got {text:?}, meant for user {}", m.to);
                self.misrouted += 1;
                self.sample(line);
            }
            None => {
                self.unexpected += 1;
                self.sample(format!("{at} user {user} got {text:?}, never sent"));
            }
        }
    }

    /// User `user`'s telnet connection was closed by the server.
    pub fn dropped(&mut self, user: usize) {
        self.drops.push(user);
    }

    /// The worker was replaced between `start` and `end`.
    pub fn disruption(&mut self, kind: Disruption, start: Instant, end: Instant) {
        self.windows.push(Window { kind, start, end });
    }

    /// Accepted messages not delivered yet.
    pub fn outstanding(&self) -> usize {
        self.messages
            .values()
            .filter(|m| !m.refused && m.deliveries == 0)
            .count()
    }

    /// The counts.
    pub fn report(&self) -> Report {
        let mut r = Report::default();
        for w in &self.windows {
            match w.kind {
                Disruption::Reload => r.reloads += 1,
                Disruption::ForcedReload => {
                    r.reloads += 1;
                    r.forced_reloads += 1;
                }
                Disruption::Kill => r.kills += 1,
            }
        }
        for m in self.messages.values() {
            r.sent += 1;
            if m.deliveries > 0 {
                r.delivered += 1;
            } else if m.refused {
                r.refused += 1;
            } else {
                r.lost += 1;
            }
            let extra = u64::from(m.deliveries.saturating_sub(1));
            r.duplicates += extra;
            if extra > 0 && !self.near(m.sent).any(|w| w.kind.allows_duplicates()) {
                r.duplicates_unexcused += extra;
            }
        }
        r.reconnects = self.drops.len() as u64;
        r.misrouted = self.misrouted;
        r.unexpected = self.unexpected;
        r
    }

    /// What a failure message needs: the disruption windows, the dropped users, and some
    /// lost and duplicated messages with when they were sent.
    pub fn details(&self) -> String {
        let mut out = String::from("disruptions (seconds since start):\n");
        for (i, w) in self.windows.iter().enumerate() {
            out.push_str(&format!(
                "  #{i} {:?} {}..{}\n",
                w.kind,
                self.at(w.start),
                self.at(w.end)
            ));
        }
        if !self.drops.is_empty() {
            out.push_str(&format!("users dropped: {:?}\n", self.drops));
        }
        let mut odd: Vec<(&String, &Message)> = self
            .messages
            .iter()
            .filter(|(_, m)| m.deliveries > 1 || (m.deliveries == 0 && !m.refused))
            .collect();
        odd.sort_by_key(|(_, m)| m.sent);
        let mut by_window: HashMap<String, (usize, usize)> = HashMap::new();
        for (_, m) in &odd {
            let near: Vec<String> = self
                .windows
                .iter()
                .enumerate()
                .filter(|(_, w)| w.is_near(m.sent))
                .map(|(i, _)| format!("#{i}"))
                .collect();
            let key = if near.is_empty() {
                "no disruption".to_owned()
            } else {
                format!("near {}", near.join(","))
            };
            let e = by_window.entry(key).or_default();
            if m.deliveries == 0 {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        let mut keys: Vec<_> = by_window.into_iter().collect();
        keys.sort();
        for (key, (lost, dup)) in keys {
            out.push_str(&format!("  sent {key}: lost {lost}, duplicated {dup}\n"));
        }
        for (text, m) in odd.iter().take(2 * SAMPLES) {
            out.push_str(&format!(
                "  {:?} user {} -> user {} sent at {}: delivered {} times\n",
                text,
                m.from,
                m.to,
                self.at(m.sent),
                m.deliveries
            ));
        }
        for s in &self.samples {
            out.push_str(&format!("  {s}\n"));
        }
        out
    }

    fn near(&self, at: Instant) -> impl Iterator<Item = &Window> {
        self.windows.iter().filter(move |w| w.is_near(at))
    }

    fn at(&self, t: Instant) -> String {
        format!(
            "{:.2}s",
            t.saturating_duration_since(self.clock).as_secs_f64()
        )
    }

    fn sample(&mut self, line: String) {
        if self.samples.len() < SAMPLES {
            self.samples.push(line);
        }
    }
}

/// A soak run in numbers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Messages sent.
    pub sent: u64,
    /// Messages delivered at least once.
    pub delivered: u64,
    /// Accepted (not refused) and never delivered.
    pub lost: u64,
    /// Refused with a `!` line and never delivered.
    pub refused: u64,
    /// Deliveries beyond the first, in all.
    pub duplicates: u64,
    /// Of those, messages sent nowhere near a kill or a forced reload.
    pub duplicates_unexcused: u64,
    /// Telnet connections the server closed.
    pub reconnects: u64,
    /// Graceful reloads (SIGTERM), forced ones included.
    pub reloads: u64,
    /// Reloads where the worker did not exit cleanly on SIGTERM.
    pub forced_reloads: u64,
    /// SIGKILLs.
    pub kills: u64,
    /// Deliveries to a user the message was not for.
    pub misrouted: u64,
    /// Deliveries of text never sent, and `!` lines with no message to refuse.
    pub unexpected: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "soak: sent={} delivered={} lost={} refused={} duplicates={} (not near a kill: {}) \
             reconnects={} reloads={} (forced: {}) kills={} misrouted={} unexpected={}",
            self.sent,
            self.delivered,
            self.lost,
            self.refused,
            self.duplicates,
            self.duplicates_unexcused,
            self.reconnects,
            self.reloads,
            self.forced_reloads,
            self.kills,
            self.misrouted,
            self.unexpected
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lost_refused_and_duplicates_by_window() {
        let t0 = Instant::now();
        let mut l = Ledger::new(t0);
        l.sent(0, 1, "a".into());
        l.sent(0, 1, "b".into());
        l.refused(0, "! server busy, message not accepted"); // refuses "b"
        l.sent(1, 0, "c".into());
        l.delivered(0, "c");
        l.delivered(0, "c");
        l.delivered(1, "c"); // wrong user
        l.delivered(1, "zzz"); // never sent
        l.disruption(Disruption::Reload, t0, Instant::now());
        let r = l.report();
        assert_eq!((r.sent, r.delivered, r.lost, r.refused), (3, 1, 1, 1));
        assert_eq!((r.duplicates, r.duplicates_unexcused), (1, 1));
        assert_eq!(
            (r.misrouted, r.unexpected, r.reloads, r.kills),
            (1, 1, 1, 0)
        );
        assert_eq!(l.outstanding(), 1);

        let mut k = Ledger::new(t0);
        k.sent(0, 1, "d".into());
        k.delivered(1, "d");
        k.delivered(1, "d");
        k.disruption(Disruption::Kill, Instant::now(), Instant::now());
        let r = k.report();
        assert_eq!((r.duplicates, r.duplicates_unexcused, r.kills), (1, 0, 1));
    }
}
