//! Switchboard's device application: the same behaviour on every board and in the std
//! simulation, over any byte link (`embedded_io_async::{Read, Write}`: a UART, a TCP socket).
//!
//! - [`run`]: the device on one link until it fails: Hello, acks and retransmission, chat
//!   commands answered in direct messages, `send` to another peer with the answer relayed
//!   back, telemetry, pongs.
//! - [`Board`] and [`Config`]: what differs per board and per device.
//! - [`Stats`]: link counters that outlive a link.
//! - [`command`]: the chat commands as pure functions (`help`, `ping`, `echo`, `uptime`,
//!   `led`, `info`, `send`).
//! - [`device`]: the protocol state machine, sans-IO, and the rules that keep devices from
//!   talking to each other in a loop.
//!
//! No allocation, no panics on peer bytes; logs with defmt (feature `defmt`, the default)
//! or `log` (feature `log`, for the simulation).
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

#[macro_use]
mod fmt;

mod board;
pub mod command;
pub mod device;
mod run;
mod stats;
pub mod text;

pub use board::{Board, Config};
pub use run::{run, LinkError};
pub use stats::{Counter, Stats};

#[cfg(test)]
mod tests;
