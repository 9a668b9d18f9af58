//! The one JSON line a scenario prints: what was asked, what arrived, how fast, and what the
//! server spent on it. Field names are the contract with `cargo xtask bench`'s table.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::procstat::Usage;

/// A latency histogram in microseconds, 1 µs to 60 s at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds are valid")
}

/// A scenario's result.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    /// `private`, `broadcast`, `connect`, `idle`, `overload`, `devices`.
    pub scenario: String,
    /// Which server: `switchboard`, `reference`, or what `--label` said.
    pub label: String,
    /// Users (connections) taking part.
    pub users: usize,
    /// The measured period, seconds.
    pub secs: f64,
    /// Messages (or logins, or connections) attempted.
    pub sent: u64,
    /// Deliveries seen (a broadcast counts once per recipient).
    pub delivered: u64,
    /// Deliveries expected but never seen.
    pub lost: u64,
    /// `!` lines and failed attempts.
    pub errors: u64,
    /// Deliveries (or logins) per second.
    pub per_s: f64,
    /// Latency percentiles, µs (send to delivery; connect to welcome).
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Worst, µs.
    pub max_us: u64,
    /// Server CPU per message sent (private, broadcast), per login, or 0 when unknown, µs.
    pub cpu_us_per_op: f64,
    /// Server RSS growth per connection (idle), bytes.
    pub rss_bytes_per_conn: f64,
    /// Server RSS before the load, KiB (overload).
    pub rss_kib_start: u64,
    /// Highest server RSS seen during the load, KiB (overload).
    pub rss_kib_peak: u64,
    /// Server RSS after the load and a settling pause, KiB (overload).
    pub rss_kib_settled: u64,
    /// Chat frames from devices delivered to users per second (devices).
    #[serde(skip_serializing_if = "is_zero")]
    pub frames_up_per_s: f64,
    /// Chat frames from users delivered to devices per second (devices).
    #[serde(skip_serializing_if = "is_zero")]
    pub frames_down_per_s: f64,
    /// Bytes on the wire per chat frame: postcard, CRC, COBS and delimiter (devices).
    #[serde(skip_serializing_if = "is_zero")]
    pub wire_bytes_per_chat_frame: f64,
    /// Text bytes per chat frame, what the wire bytes carry (devices).
    #[serde(skip_serializing_if = "is_zero")]
    pub text_bytes_per_chat_frame: f64,
    /// Bytes on the wire per ack, one per chat frame (devices).
    #[serde(skip_serializing_if = "is_zero")]
    pub wire_bytes_per_ack: f64,
    /// Chat frames sent again for want of an ack (devices).
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub retransmits: u64,
    /// What the server processes spent.
    pub server: Usage,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

/// What a messaging scenario counted.
#[derive(Debug, Clone, Copy)]
pub struct Counted {
    /// Messages sent.
    pub sent: u64,
    /// Deliveries seen.
    pub delivered: u64,
    /// Deliveries expected and never seen (refused ones are not lost).
    pub lost: u64,
    /// Refused (`!` lines, error frames).
    pub errors: u64,
}

impl Report {
    /// A messaging scenario's report: rates and server CPU per delivered message over the
    /// `sending` period, and the latency percentiles.
    pub fn messages(
        scenario: &str,
        label: &str,
        users: usize,
        sending: std::time::Duration,
        counted: Counted,
        server: Usage,
        latencies: &Histogram<u64>,
    ) -> Report {
        let mut report = Report {
            scenario: scenario.into(),
            label: label.into(),
            users,
            secs: sending.as_secs_f64(),
            sent: counted.sent,
            delivered: counted.delivered,
            lost: counted.lost,
            errors: counted.errors,
            per_s: counted.delivered as f64 / sending.as_secs_f64().max(1e-9),
            cpu_us_per_op: server.cpu_s * 1e6 / counted.delivered.max(1) as f64,
            server,
            ..Report::default()
        };
        report.latencies(latencies);
        report
    }

    /// Fills the latency fields from `h`.
    pub fn latencies(&mut self, h: &Histogram<u64>) {
        if h.is_empty() {
            return;
        }
        self.p50_us = h.value_at_quantile(0.50);
        self.p99_us = h.value_at_quantile(0.99);
        self.max_us = h.max();
    }

    /// The JSON line.
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("a report always serializes")
    }
}
