//! What differs per board ([`Board`]) and per device ([`Config`]); nothing here does I/O.

use embassy_time::Duration;

/// The few things the application needs from the hardware it runs on.
pub trait Board {
    /// Board name shown by `info`: "qemu-mps2", "nrf52840-dk", "rp2040-pico", "sim".
    const NAME: &'static str;
    /// Switches the user LED: a real GPIO on real boards, a variable in QEMU and the sim.
    fn set_led(&mut self, on: bool);
    /// Whether the user LED is on.
    fn led(&self) -> bool;
    /// Stack bytes never used so far, if the board can tell (a painted stack, say).
    fn free_stack(&self) -> Option<u32> {
        None
    }
}

/// Who this device is and how chatty it is.
#[derive(Debug, Clone)]
pub struct Config {
    /// The device id sent in `Hello`: its uid and nickname in the chat. Cut to
    /// [`protocol::MAX_ID_LEN`] bytes if longer.
    pub device_id: &'static str,
    /// Firmware version sent in `Hello`, e.g. `concat!(env!("CARGO_PKG_VERSION"), "+qemu-mps2")`.
    /// Cut to [`protocol::MAX_VERSION_LEN`] bytes if longer.
    pub firmware: &'static str,
    /// Interval between telemetry bursts (one frame per measurement).
    pub telemetry_every: Duration,
}

impl Config {
    /// Telemetry interval when a board has no reason to pick another. It is also how soon a
    /// serial device notices a restarted gateway (which answers telemetry from an unknown
    /// device with `HelloRequired`), so not much longer; a burst is ~100 bytes, nothing on a
    /// 115200-baud line.
    pub const DEFAULT_TELEMETRY_EVERY: Duration = Duration::from_secs(10);
}
