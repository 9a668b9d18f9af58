//! Serial ports: keeps each configured port open, reopening it with backoff when it fails
//! to open or its device goes away (a board unplugged, a pty's other end closed). Each
//! successful open is a new device connection; the frames are `device_conn.rs`'s business.

use std::time::Duration;

use protocol::link::ClientKind;
use tokio_serial::{SerialPortBuilderExt, SerialStream};

use crate::config::SerialConfig;
use crate::device_conn;
use crate::server::Context;

/// First retry delay: quick, since a replugged board re-enumerates in well under a second.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay: a port that stays away is retried every 5 s, cheap and prompt enough.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Opens `port` in raw mode.
fn open(port: &SerialConfig) -> tokio_serial::Result<SerialStream> {
    let path = port.path.to_string_lossy();
    tokio_serial::new(path, port.baud)
        // Shared open: a pty (tests, simulators) or a port a debugger also watches must work;
        // exclusive access is the operator's job (one gateway per port).
        .exclusive(false)
        .open_native_async()
}

/// Keeps `port` open until shutdown.
pub async fn keep_open(ctx: Context, port: SerialConfig) {
    let path = port.path.display().to_string();
    let span = tracing::info_span!("serial", %path);
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u32;
    loop {
        if ctx.shutdown.is_cancelled() {
            return;
        }
        match open(&port) {
            Ok(stream) => {
                backoff = BACKOFF_MIN;
                failures = 0;
                tracing::info!(parent: &span, baud = port.baud, "serial port open");
                let end =
                    device_conn::serve(ctx.clone(), stream, ClientKind::DeviceSerial, path.clone())
                        .await;
                match end {
                    Some(end) => tracing::info!(parent: &span, reason = %end, "serial port closed"),
                    None => return, // the gateway is stopping
                }
            }
            Err(err) => {
                // Warn once per outage, not every retry.
                if failures == 0 {
                    tracing::warn!(parent: &span, cause = %err, "cannot open serial port; retrying");
                } else {
                    tracing::debug!(parent: &span, cause = %err, failures, "cannot open serial port");
                }
                failures = failures.saturating_add(1);
            }
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        if failures > 0 {
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}
