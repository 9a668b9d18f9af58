//! Host tests of the whole device state machine (the pure modules test themselves inline).
//! Inside the crate rather than under `tests/`, so they build with logging compiled out.

mod device;
mod harness;
mod relay;
