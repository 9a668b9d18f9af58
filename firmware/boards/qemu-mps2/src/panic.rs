//! What a crash looks like: the panic location in the defmt log, then QEMU exits with
//! status 101 (semihosting), so a test harness sees the failure instead of a hung guest.
//! Also stamps defmt log lines with milliseconds since boot.

use core::panic::PanicInfo;

defmt::timestamp!("{=u64:ms}", embassy_time::Instant::now().as_millis());

/// Exit status of a panicked firmware, as a Rust program's.
const PANIC_EXIT: i32 = 101;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => defmt::error!("panic at {=str}:{=u32}", at.file(), at.line()),
        None => defmt::error!("panic"),
    }
    semihosting::process::exit(PANIC_EXIT)
}

#[defmt::panic_handler]
fn defmt_panic() -> ! {
    semihosting::process::exit(PANIC_EXIT)
}
