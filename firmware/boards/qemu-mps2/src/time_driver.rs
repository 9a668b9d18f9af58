//! embassy-time driver on SysTick: a periodic tick at `embassy_time_driver::TICK_HZ`
//! (1 kHz) counted into a 64-bit clock, and the timer queue checked on each tick.
//! Periodic rather than tickless: simple, and a WFI-idle core in QEMU wakes for it cheaply.
//! Does not own any other timer.

use core::cell::{Cell, RefCell};
use core::task::Waker;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::exception;
use critical_section::Mutex;
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;

/// Core clock of mps2-an385 (and of QEMU's model of it).
pub const CORE_HZ: u32 = 25_000_000;

struct SysTickDriver {
    /// Ticks since [`init`].
    ticks: Mutex<Cell<u64>>,
    queue: Mutex<RefCell<Queue>>,
    /// Tick at which the queue next has something to wake; `u64::MAX` when empty.
    alarm: Mutex<Cell<u64>>,
}

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.ticks.borrow(cs).get())
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut queue = self.queue.borrow_ref_mut(cs);
            if queue.schedule_wake(at, waker) {
                let now = self.ticks.borrow(cs).get();
                // Wakes anything already due, so a deadline in the past costs no tick.
                self.alarm.borrow(cs).set(queue.next_expiration(now));
            }
        });
    }
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    ticks: Mutex::new(Cell::new(0)),
    queue: Mutex::new(RefCell::new(Queue::new())),
    alarm: Mutex::new(Cell::new(u64::MAX)),
});

/// Starts the tick. Call once, before anything reads the time.
pub fn init(mut syst: SYST) {
    const _: () = assert!((CORE_HZ as u64).is_multiple_of(embassy_time_driver::TICK_HZ));
    let reload = CORE_HZ / embassy_time_driver::TICK_HZ as u32 - 1;
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(reload);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

#[exception]
fn SysTick() {
    critical_section::with(|cs| {
        let ticks = DRIVER.ticks.borrow(cs);
        let now = ticks.get() + 1;
        ticks.set(now);
        let alarm = DRIVER.alarm.borrow(cs);
        if now >= alarm.get() {
            alarm.set(DRIVER.queue.borrow_ref_mut(cs).next_expiration(now));
        }
    });
}
