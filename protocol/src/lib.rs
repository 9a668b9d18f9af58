//! Switchboard's wire protocol, shared by the gateway, the workers and the device firmware.
//!
//! - [`message`]: every device message, both directions, in one table.
//! - [`frame`]: sans-IO framing of device messages (postcard + CRC-16 + COBS, `0x00` delimited).
//! - [`reliable`]: which frames are acked, retry timing, and sans-IO dedup/retransmit helpers.
//! - `link` (feature `link`): the gateway<->worker messages (events, commands, query replies),
//!   `link_codec`, their framing on a socket, and `session`, a connection's session packed
//!   the way gateways keep it and events carry it.
//! - `golden` (feature `golden`): pinned wire bytes of every device message, checked by the
//!   host tests and meant to be checked by the firmware build too.
//!
//! The device part is `no_std` and never allocates; `link` needs `alloc` and is host only.
// Unit tests use std (the test harness needs it anyway); the library itself stays no_std.
#![cfg_attr(not(any(feature = "std", test)), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod frame;
pub mod message;
pub mod reliable;

#[cfg(feature = "link")]
pub mod discovery;
#[cfg(feature = "link")]
pub mod link;
#[cfg(feature = "link")]
pub mod link_codec;
#[cfg(feature = "link")]
pub mod session;

#[cfg(any(test, feature = "golden"))]
pub mod golden;

pub use frame::{encode, Decoder, Frame, FrameError, MAX_FRAME_LEN, MAX_WIRE_LEN};
pub use message::*;
