//! Switchboard's gateway: holds every telnet, device-TCP and serial connection and does
//! network I/O only. Routing state (uids, groups, sessions) lives in the router; what the
//! messages mean is the workers' business, reached over the worker link.
//!
//! Entry point: [`run`] with [`Listeners`] already bound, as `main.rs` and the tests do.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod announce;
mod commands;
pub mod config;
mod connection;
mod delivery;
mod device_conn;
mod heartbeat;
mod mailbox;
mod members;
mod registry;
mod router;
mod serial;
mod server;
mod stats;
pub mod telnet;
mod telnet_conn;
mod worker_link;

pub use config::{ConfigError, GatewayConfig, SerialConfig};
pub use server::{run, GatewayError, Listeners};
