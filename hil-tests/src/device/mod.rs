//! The simulated device: a peer speaking the device protocol over TCP or a pty, standing in
//! for firmware in the tests and the demo.
//!
//! [`run_device`] is the whole device (hello, answers, telemetry, reconnects); [`serve`] runs
//! one link; [`DeviceLink`] is the raw link for tests that need to misbehave; [`Responder`]
//! decides what to say. No chat logic of the host lives here.

mod link;
mod pty;
mod responder;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::FutureExt;

pub use link::{DeviceLink, LinkError};
pub use pty::{PtyError, PtyLink};
pub use responder::{reply_text, text, Responder, TooLong, HELP_TEXT, SIM_FIRMWARE};

/// First wait before reconnecting to an absent gateway; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reconnects: a restarted gateway is found within 2 s.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How the device reaches the gateway.
#[derive(Debug, Clone)]
pub enum Transport {
    /// The gateway's device TCP port, `host:port`.
    Tcp(String),
    /// A pty whose slave is published at this path for the gateway's serial config.
    Pty(PathBuf),
}

/// Everything a simulated device needs.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Device id: its uid and nickname in the chat.
    pub id: String,
    /// Firmware version reported in the hello.
    pub firmware: String,
    /// Where the gateway is.
    pub transport: Transport,
    /// Period of the `uptime_s` telemetry; `None` sends none.
    pub telemetry: Option<Duration>,
}

impl DeviceConfig {
    /// A device with the simulator's firmware string and no telemetry.
    pub fn new(id: &str, transport: Transport) -> Self {
        Self {
            id: id.to_owned(),
            firmware: SIM_FIRMWARE.to_owned(),
            transport,
            telemetry: None,
        }
    }
}

/// Why a device stopped before its shutdown signal.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The configuration does not fit the protocol.
    #[error(transparent)]
    Config(#[from] TooLong),
    /// The link failed in a way reconnecting cannot fix (a pty that broke).
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// Runs a device until `shutdown` completes. Over TCP it reconnects with backoff and says
/// hello on every new connection; over a pty it publishes the link once and serves it.
pub async fn run_device(
    cfg: DeviceConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DeviceError> {
    let responder = Responder::new(&cfg.id, &cfg.firmware)?;
    let started = Instant::now();
    let mut shutdown = std::pin::pin!(shutdown.fuse());
    match &cfg.transport {
        Transport::Pty(path) => {
            let mut link = DeviceLink::open_pty(path)?;
            link.send(responder.hello()).await?;
            serve(&mut link, &responder, cfg.telemetry, started, &mut shutdown).await?;
            Ok(())
        }
        Transport::Tcp(addr) => {
            let mut backoff = MIN_BACKOFF;
            loop {
                let session = async {
                    let mut link = DeviceLink::connect_tcp(addr).await?;
                    tracing::info!(%addr, "connected");
                    link.send(responder.hello()).await?;
                    serve(&mut link, &responder, cfg.telemetry, started, &mut shutdown).await
                };
                match session.await {
                    Ok(Served::Shutdown) => return Ok(()),
                    Ok(Served::Closed) => {
                        tracing::warn!(%addr, "gateway closed the link");
                        backoff = MIN_BACKOFF;
                    }
                    Err(e) => tracing::warn!(%addr, cause = %e, ?backoff, "link down"),
                }
                futures::select! {
                    _ = tokio::time::sleep(backoff).fuse() => {}
                    _ = shutdown.as_mut() => return Ok(()),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// How [`serve`] ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// The shutdown signal fired.
    Shutdown,
    /// The host closed the link.
    Closed,
}

/// Answers host frames and sends telemetry on `link` until it closes or `shutdown` fires.
/// Bad frames from the host are logged and skipped. The caller says hello first.
pub async fn serve<S>(
    link: &mut DeviceLink,
    responder: &Responder,
    telemetry: Option<Duration>,
    started: Instant,
    shutdown: &mut std::pin::Pin<&mut S>,
) -> Result<Served, LinkError>
where
    S: futures::future::FusedFuture<Output = ()>,
{
    // Without telemetry the timer still exists but never fires in practice.
    let period = telemetry.unwrap_or(Duration::from_secs(86_400 * 365));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = shutdown.as_mut() => return Ok(Served::Shutdown),
            _ = ticker.tick(), if telemetry.is_some() => {
                link.send(responder.telemetry(started.elapsed().as_secs())).await?;
            }
            frame = link.recv_frame() => match frame {
                Ok(frame) => {
                    tracing::debug!(peer = %link.peer(), seq = frame.seq, msg = ?frame.msg, "received");
                    for msg in responder.on_frame(&frame) {
                        link.send(msg).await?;
                    }
                }
                Err(LinkError::Frame(e)) => {
                    tracing::warn!(peer = %link.peer(), cause = %e, "bad frame from host");
                }
                Err(LinkError::Closed) => return Ok(Served::Closed),
                Err(e) => return Err(e),
            },
        }
    }
}
