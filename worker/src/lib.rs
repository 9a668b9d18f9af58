//! Switchboard's worker library: the business-logic side of GatewayWorker.
//!
//! A worker links to every gateway of its config or found through discovery (see
//! [`runtime`]), receives the
//! events of their connections, hands them one at a time to a [`Handler`], and acts through
//! the [`Gateway`] API (`send_to_client`, `bind_uid`, `join_group`, ...). It never touches a
//! user's socket. [`chat`] is the chat application built on it; [`store`] keeps its state.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chat;
pub mod config;
pub mod discovery;
pub mod gateway_api;
pub mod handler;
mod link;
mod link_set;
pub mod runtime;
mod session;
pub mod store;
mod throttle;

pub use chat::Chat;
pub use config::{ConfigError, Routing, StoreKind, WorkerConfig};
pub use gateway_api::{Gateway, GatewayError};
pub use handler::{Context, Handler, HandlerError, HandlerResult};
pub use runtime::{run, WorkerError};
pub use store::{MemcachedStore, SledStore, Store, StoreError};
