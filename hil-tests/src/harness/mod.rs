//! End-to-end test harness: the real binaries as child processes on loopback, driven by
//! scripted telnet users and simulated devices.
//!
//! - [`bins`]: builds and locates `switchboard-gateway`, `switchboard-worker`, ...
//! - [`Cluster`]: a gateway and a worker on free ports with a temp config and data dir.
//! - [`Farm`]: several gateways and workers, each with its own config ([`GatewaySpec`],
//!   [`WorkerSpec`]); [`gateway_stats`] reads a gateway's counters.
//! - [`TelnetUser`]: a user who sends lines and expects lines, with timeouts.
//! - [`Proc`]: a child process with its log.
//! - [`NetLab`]: network namespaces on a bridge, so processes run on separate "hosts".
//!
//! It asserts by panicking with what it saw, like `assert!`: it is for tests only.

mod bins;
mod cluster;
mod farm;
mod iac;
mod ledger;
mod monitor;
mod netns;
mod process;
mod telnet;

pub use bins::{bins, workspace_root, Bins};
pub use cluster::{nickname_prompt, Cluster, ClusterOptions, PROBE_PATIENCE, START_TIMEOUT};
pub use farm::{wait_greeted, Farm, GatewaySpec, WorkerSpec};
pub use ledger::{Disruption, Ledger, Report};
pub use monitor::gateway_stats;
pub use netns::{NetLab, Unavailable, MAX_HOSTS};
pub use process::{tail, Proc, STOP_GRACE};
pub use telnet::{Found, Matcher, TelnetUser, LINE_TIMEOUT};
