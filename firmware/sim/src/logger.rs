//! A `log` backend printing `SECONDS LEVEL message` lines to stderr, with seconds since
//! start. Just enough for a demo device; no filtering by module.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Instant;

struct Stderr {
    start: Instant,
}

impl log::Log for Stderr {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let secs = self.start.elapsed().as_secs_f64();
            // A closed stderr is no reason to stop the device.
            let _ = writeln!(
                std::io::stderr().lock(),
                "{secs:9.3} {:<5} {}",
                record.level(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

/// Installs the logger: `verbosity` 0 is info, 1 debug, 2 or more trace.
pub fn init(verbosity: u8) {
    static LOGGER: OnceLock<Stderr> = OnceLock::new();
    let logger = LOGGER.get_or_init(|| Stderr {
        start: Instant::now(),
    });
    // Fails only if a logger is already installed; then that one is used.
    let _ = log::set_logger(logger);
    log::set_max_level(match verbosity {
        0 => log::LevelFilter::Info,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    });
}
