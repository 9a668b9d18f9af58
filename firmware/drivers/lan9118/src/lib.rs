//! Placeholder until this crate is written.
#![no_std]
