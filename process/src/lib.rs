//! What Switchboard's host binaries (the gateway, the worker, the `switchboard` supervisor)
//! do alike as Unix processes, apart from what they are for: set up logging, start the
//! async runtime their config asks for, and (the gateway) give memory back to the OS after a
//! burst.
// No unsafe code, but for the one allocator call in `trim.rs`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod logging;
mod runtime;
pub mod trim;

pub use logging::init_logging;
pub use runtime::runtime;
