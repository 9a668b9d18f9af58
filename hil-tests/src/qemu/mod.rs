//! The real firmware under test: built from `firmware/`, run in QEMU (`mps2-an385`), wired
//! to a [`crate::harness::Cluster`] like a board on a USB serial port or on Ethernet.
//!
//! - [`firmware`]: builds a board's firmware once per test process; its defmt table.
//! - [`SerialBridge`]: pty (for the gateway) <-> QEMU's UART socket, with noise injection
//!   and unplug/plug.
//! - [`TcpProxy`]: the same hand on the wire for an Ethernet device's TCP stream.
//! - [`QemuDevice`]: one QEMU process per device; boot, kill, reset; its log.
//! - [`defmt`]: decodes the firmware's defmt output inside the harness.
//! - [`chat`]: asking a device things as a telnet user, shared by the device tests.
//! - [`board`]: a real board flashed with probe-rs, for `tests/hil_board.rs`.
//!
//! Timing figures measured here (ping round trips) are printed, never asserted.

pub mod board;
mod bridge;
pub mod chat;
pub mod defmt;
mod device;
pub mod firmware;
mod proxy;

pub use bridge::{BridgeStats, Direction, SerialBridge};
pub use device::{qemu_program, Link, QemuDevice, BOOT_TIMEOUT};
pub use firmware::{firmware, Board, Firmware};
pub use proxy::TcpProxy;
