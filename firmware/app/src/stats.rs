//! Link counters, readable by any task (for `info` and telemetry) while `run` updates them.
//!
//! Plain atomic loads and stores, no read-modify-write: thumbv6m (RP2040) has no atomic
//! add, and each counter has exactly one writer, the task running [`crate::run`].

use core::sync::atomic::{AtomicU32, Ordering};

/// One monotonic counter with a single writer; wraps at `u32::MAX`.
#[derive(Debug, Default)]
pub struct Counter(AtomicU32);

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Self {
        Self(AtomicU32::new(0))
    }

    /// Adds one. Only the task running [`crate::run`] calls this.
    pub fn bump(&self) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    /// The current value.
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Everything [`crate::run`] counts; lives in a `static` so it outlives link losses.
#[derive(Debug, Default)]
pub struct Stats {
    /// Frames decoded from the host (any message, duplicates included).
    pub frames_in: Counter,
    /// Frames written to the host, retransmissions included.
    pub frames_out: Counter,
    /// Bytes that did not make a frame (bad CRC, COBS, too long, unknown message).
    pub frame_errors: Counter,
    /// Frames sent again for want of an ack.
    pub retransmits: Counter,
    /// Frames dropped after every retry went unacked.
    pub gave_up: Counter,
    /// Chat replies dropped because the reply queue was full (oldest first).
    pub replies_dropped: Counter,
    /// Times a link ended (read error, EOF, write error).
    pub link_losses: Counter,
}

impl Stats {
    /// All counters at zero; `const` so boards can write `static STATS: Stats = Stats::new();`.
    pub const fn new() -> Self {
        Self {
            frames_in: Counter::new(),
            frames_out: Counter::new(),
            frame_errors: Counter::new(),
            retransmits: Counter::new(),
            gave_up: Counter::new(),
            replies_dropped: Counter::new(),
            link_losses: Counter::new(),
        }
    }
}
