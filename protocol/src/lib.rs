//! Switchboard's wire protocol, shared by the gateway, the workers and the device firmware.
//!
//! - [`message`]: every device message, both directions, in one table.
//! - [`frame`]: sans-IO framing of device messages (postcard + CRC-16 + COBS, `0x00` delimited).
//! - [`link`] (feature `link`): the gateway<->worker messages (events, commands, query replies).
//!
//! The device part is `no_std` and never allocates; `link` needs `alloc` and is host only.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod frame;
pub mod message;

#[cfg(feature = "link")]
pub mod link;

pub use frame::{encode, Decoder, Frame, FrameError, MAX_FRAME_LEN, MAX_WIRE_LEN};
pub use message::*;
