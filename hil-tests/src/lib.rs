//! Switchboard's hardware-in-the-loop kit, without the hardware.
//!
//! - [`device`]: the simulated device (`switchboard-device`), over TCP or a pty.
//! - [`harness`]: starts the real gateway and worker binaries on loopback ports in a temp
//!   dir and drives them like users do, for the end-to-end tests in `tests/`.
//!
//! Nothing here is linked into the product binaries.

pub mod device;
pub mod harness;
pub mod qemu;
