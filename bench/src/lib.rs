//! Switchboard's benchmark suite (issue 6): a load generator that speaks the telnet chat
//! contract, the reference server it is measured against, and the /proc sampling both are
//! measured with. Measuring tools only: nothing here asserts a performance figure.
//!
//! - `switchboard-bench` (`src/bin/bench.rs`): the scenarios, one JSON line each.
//! - `chat-reference` (`src/bin/reference.rs`): THE REFERENCE, a minimal single-process
//!   tokio chat server with the same line protocol and no gateway/worker split. It exists
//!   only to be measured against; it is not Switchboard.

pub mod client;
pub mod procstat;
pub mod report;
pub mod scenario;
