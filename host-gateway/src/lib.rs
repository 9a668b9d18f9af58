//! Switchboard's gateway: holds every telnet, device-TCP and serial connection and does
//! network I/O only. Routing state (uids, groups, sessions) lives in the router; what the
//! messages mean is the workers' business, reached over the worker link.
//!
//! Entry point: [`run`] with [`Listeners`] already bound, as `main.rs` and the tests do.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod commands;
pub mod config;
pub mod connection;
pub mod device_conn;
pub mod registry;
pub mod router;
pub mod serial;
mod server;
pub mod stats;
pub mod telnet;
pub mod telnet_conn;
pub mod worker_link;

pub use config::{ConfigError, GatewayConfig, SerialConfig};
pub use server::{run, Context, GatewayError, Listeners};
