//! The gateway's counters, shared by the connection tasks and the router.
//!
//! Counters that every connection bumps are atomics so a connection never has to message
//! the router to count; gauges (open clients, workers) come from the router's own maps when
//! it builds a [`GatewayStats`] reply.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use protocol::link::GatewayStats;

/// Monotonic counters since the gateway started.
#[derive(Debug)]
pub struct Counters {
    started: Instant,
    /// Connections accepted or serial ports opened.
    pub connections_total: AtomicU64,
    /// Lines and device frames received from clients.
    pub messages_in: AtomicU64,
    /// Lines and device frames written to clients.
    pub messages_out: AtomicU64,
    /// Over-long lines and corrupt frames.
    pub input_errors: AtomicU64,
    /// Messages not delivered: full queues, no worker, a closed client, the wrong client kind.
    pub dropped: AtomicU64,
    /// Messages read from worker links (not monitors): commands, queries, acks.
    pub link_in: AtomicU64,
    /// Messages written to worker links (not monitors): events, replies, route updates.
    pub link_out: AtomicU64,
    /// Of `link_in`, the acks.
    pub link_acks: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            connections_total: AtomicU64::new(0),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            input_errors: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            link_in: AtomicU64::new(0),
            link_out: AtomicU64::new(0),
            link_acks: AtomicU64::new(0),
        }
    }
}

/// Adds one; relaxed because the counters order nothing.
pub fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

/// Adds `n` at once: a hot loop counts locally and adds once, since an atomic add costs
/// about as much as copying a short line.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// A snapshot; the caller fills in the gauges it knows.
    pub fn snapshot(&self, gateway: u16) -> GatewayStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        GatewayStats {
            gateway,
            uptime_s: self.started.elapsed().as_secs(),
            connections_total: get(&self.connections_total),
            messages_in: get(&self.messages_in),
            messages_out: get(&self.messages_out),
            input_errors: get(&self.input_errors),
            dropped: get(&self.dropped),
            link_in: get(&self.link_in),
            link_out: get(&self.link_out),
            link_acks: get(&self.link_acks),
            ..GatewayStats::default()
        }
    }
}
