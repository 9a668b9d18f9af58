//! Board support for QEMU's mps2-an385 (Cortex-M3, 25 MHz), shared by the binaries that run
//! on it (the app over UART0 here, the Ethernet variant elsewhere):
//!
//! - [`boot`]: bring-up (stack paint, SysTick time driver) and the app's configuration.
//! - [`executor::run`]: the WFI-sleeping executor.
//! - [`uart::Uart0`]: interrupt-driven UART0 as `embedded_io_async::{Read, Write}`.
//! - [`interrupt::Irq`] and the vector table; handlers are weak symbols to override.
//! - [`cmdline::device_id`]: the device id from the QEMU command line (`-append "id=dev1"`).
//! - [`board::Mps2`]: `app::Board` for this machine.
//! - defmt over semihosting (QEMU's stdout), timestamps, and a panic handler that exits QEMU.
#![no_std]

pub mod board;
pub mod cmdline;
pub mod executor;
pub mod interrupt;
mod panic;
pub mod stack;
pub mod time_driver;
pub mod uart;

// The defmt global logger: QEMU's stdout through semihosting.
use defmt_semihosting as _;

/// Firmware version as reported in Hello: the crate version and the board.
pub const FIRMWARE: &str = concat!(env!("CARGO_PKG_VERSION"), "+qemu-mps2");

/// Board bring-up, the same for every mps2 binary; call first in `main`, once. Paints the
/// stack (for `info`'s free-stack figure), starts the time driver on SysTick, and returns the
/// app's configuration with the device id from the QEMU command line (else `default_id`).
pub fn boot(default_id: &'static str, firmware: &'static str) -> &'static app::Config {
    static CONFIG: static_cell::StaticCell<app::Config> = static_cell::StaticCell::new();
    let Some(core) = cortex_m::Peripherals::take() else {
        panic!("core peripherals taken before main");
    };
    stack::paint();
    time_driver::init(core.SYST);
    CONFIG.init(app::Config {
        device_id: cmdline::device_id(default_id),
        firmware,
        telemetry_every: app::Config::DEFAULT_TELEMETRY_EVERY,
    })
}
