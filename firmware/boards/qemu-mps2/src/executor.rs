//! The executor: embassy's raw executor polled from `main`, sleeping with WFI between wakes.
//! embassy's own Cortex-M executor sleeps with WFE, which QEMU treats as a no-op (a core
//! spinning at 100%); WFI really idles. Do not enable embassy-executor's
//! `platform-cortex-m` in a build with this crate: both define `__pender`.

use core::sync::atomic::{AtomicBool, Ordering};

use embassy_executor::{raw, Spawner};
use static_cell::StaticCell;

/// Set by the pender (a task was woken, from a task or an interrupt); cleared before a poll.
static PENDED: AtomicBool = AtomicBool::new(false);

#[unsafe(export_name = "__pender")]
fn pender(_context: *mut ()) {
    PENDED.store(true, Ordering::Release);
}

/// Runs the executor forever: `init` spawns the tasks, then woken tasks are polled and the
/// core sleeps in between. Call once, from `main`.
pub fn run(init: impl FnOnce(Spawner)) -> ! {
    static EXECUTOR: StaticCell<raw::Executor> = StaticCell::new();
    let executor: &'static raw::Executor = EXECUTOR.init(raw::Executor::new(core::ptr::null_mut()));
    init(executor.spawner());
    loop {
        // SAFETY: `poll` is never re-entered: only this loop calls it.
        unsafe { executor.poll() };
        // Check and sleep with interrupts masked: an interrupt arriving after the check
        // still ends the WFI (pending, if not yet taken), so no wake-up is missed.
        cortex_m::interrupt::free(|_| {
            if !PENDED.swap(false, Ordering::AcqRel) {
                cortex_m::asm::wfi();
            }
        });
    }
}
