//! The device application on the host, for demos and tests without a board: the same
//! `app::run` as the firmware, over a TCP connection to the gateway's device port.
//!
//! - [`connect::serve`]: connect, run the device, reconnect with backoff, for ever.
//! - [`link`]: a std `TcpStream` as `embedded_io_async::{Read, Write}`.
//! - [`board::SimBoard`]: the board, an LED in a variable.
//! - [`logger`]: `log` records to stderr.

pub mod board;
pub mod connect;
pub mod link;
pub mod logger;
