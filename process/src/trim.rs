//! Giving memory back after a burst. Past saturation the gateway's bounded queues fill
//! (client mailboxes, the router's channel, events held for busy workers, link queues) and
//! drain again when the load stops; glibc's allocator keeps the freed pages, so the process
//! would stay at its peak size. (The worker grows far less in a burst: measured after the
//! overload benchmark, trimming it gave back nothing visible, so it does not run this.) Once traffic has been quiet for a
//! while after a busy spell, this asks the allocator to return its free pages
//! (`malloc_trim`), once per busy spell.
//!
//! Other allocators (musl, or another platform) return memory on their own terms; there this
//! does nothing.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often traffic is looked at.
const EVERY: Duration = Duration::from_secs(1);
/// Messages per look that make a spell busy: a burst worth trimming after.
const BUSY: u64 = 10_000;
/// Messages per look at most for the process to count as quiet.
const QUIET: u64 = 100;

/// Watches `traffic` (a count of messages handled so far, only ever growing) until
/// `shutdown`, trimming after each busy spell.
pub async fn run(traffic: impl Fn() -> u64, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = traffic();
    let mut spell = Spell::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = traffic();
        if spell.look(now.saturating_sub(last)) {
            // Off the runtime thread: the allocator's lock is held while it walks the heap.
            let trimmed = tokio::task::spawn_blocking(release).await.unwrap_or(false);
            tracing::debug!(trimmed, "busy spell over; free memory given back");
        }
        last = now;
    }
}

/// The busy/quiet state machine, apart from time and the allocator.
#[derive(Debug, Default)]
struct Spell {
    busy: bool,
}

impl Spell {
    /// Takes one period's message count; `true` when it is time to trim.
    fn look(&mut self, messages: u64) -> bool {
        if messages >= BUSY {
            self.busy = true;
        } else if messages <= QUIET && self.busy {
            self.busy = false;
            return true;
        }
        false
    }
}

/// Returns free heap pages to the OS; `true` if any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(
    unsafe_code,
    reason = "an FFI call into the C allocator, which has no safe wrapper"
)]
fn release() -> bool {
    // SAFETY: malloc_trim only walks and releases the allocator's own free lists; it takes the
    // allocator's locks itself and has no preconditions.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_when_a_busy_spell_turns_quiet() {
        let mut spell = Spell::default();
        assert!(
            !spell.look(50),
            "quiet from the start: nothing to give back"
        );
        assert!(!spell.look(BUSY), "busy");
        assert!(!spell.look(BUSY * 3));
        assert!(!spell.look(QUIET + 1), "slowing down, not quiet yet");
        assert!(spell.look(QUIET), "quiet after busy: trim");
        assert!(!spell.look(0), "once per spell");
        assert!(!spell.look(BUSY));
        assert!(spell.look(0), "the next spell trims again");
    }

    #[test]
    fn releasing_is_harmless_at_any_time() {
        let big: Vec<Vec<u8>> = (0..64).map(|_| vec![1u8; 64 * 1024]).collect();
        drop(big);
        release();
        release();
    }
}
