//! Logging setup: human-readable lines on stderr, filtered by `RUST_LOG` or the `-v` count.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs to stderr at `info`, `debug` with `verbose` 1, `trace` with 2 or more; `RUST_LOG`
/// overrides. Colours only for a person at a terminal, never in a log file or a test's pipe.
pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
