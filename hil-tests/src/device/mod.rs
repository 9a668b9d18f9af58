//! The simulated device: a peer speaking the device protocol over TCP or a pty, standing in
//! for firmware in the tests and the demo.
//!
//! [`run_device`] is the whole device (hello, answers, telemetry, reconnects, failover between
//! gateways); [`serve`] runs one link; [`DeviceLink`] is the raw link for tests that need to
//! misbehave; [`Responder`] decides what to say; [`Failover`] which gateway to try next. No
//! chat logic of the host lives here.

mod failover;
mod link;
mod pty;
mod responder;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::FutureExt;

pub use failover::Failover;
pub use link::{DeviceLink, LinkError};
pub use pty::{PtyError, PtyLink};
pub use responder::{reply_text, text, Responder, TooLong, HELP_TEXT, SIM_FIRMWARE};

/// First wait before reconnecting to an absent gateway; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reconnects: a restarted gateway is found within 2 s.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a connect may take. A gateway whose host is down or cut off answers nothing, not
/// even a RST: on its LAN the kernel gives up after about 3 s of unanswered ARP, behind a
/// router only after two minutes of SYN retries; a device with other gateways moves on
/// sooner. 2 s is far beyond any round trip to a live gateway.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How the device reaches the gateway.
#[derive(Debug, Clone)]
pub enum Transport {
    /// The device TCP ports of the gateways, `host:port`, tried in turn (see [`Failover`]).
    Tcp(Vec<String>),
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
    /// [`Transport::Tcp`] with no address.
    #[error("no gateway address to connect to")]
    NoGateway,
}

/// Runs a device until `shutdown` completes. Over TCP it says hello on every new connection
/// and, on each failed connect or lost link, tries the next gateway, waiting only after a
/// round over all of them, with backoff if none answered ([`Failover`]); over a pty it
/// publishes the link once and serves it.
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
        Transport::Tcp(addrs) => {
            let failover = Failover::new(addrs.clone()).ok_or(DeviceError::NoGateway)?;
            run_tcp(failover, &responder, cfg.telemetry, started, &mut shutdown).await;
            Ok(())
        }
    }
}

/// Connects to the gateways in turn until `shutdown` fires, serving each link while it lasts.
async fn run_tcp<S>(
    mut failover: Failover,
    responder: &Responder,
    telemetry: Option<Duration>,
    started: Instant,
    shutdown: &mut std::pin::Pin<&mut S>,
) where
    S: futures::future::FusedFuture<Output = ()>,
{
    loop {
        let addr = failover.next_addr().to_owned();
        let link = futures::select! {
            link = connect_tcp(&addr).fuse() => link,
            _ = shutdown.as_mut() => return,
        };
        let connected = link.is_ok();
        let session = match link {
            Ok(mut link) => {
                tracing::info!(%addr, "connected");
                match link.send(responder.hello()).await {
                    Ok(_) => serve(&mut link, responder, telemetry, started, shutdown).await,
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match session {
            Ok(Served::Shutdown) => return,
            Ok(Served::Closed) => tracing::warn!(%addr, "gateway closed the link"),
            Err(e) if connected => tracing::warn!(%addr, cause = %e, "link down"),
            Err(e) => tracing::warn!(%addr, cause = %e, "cannot connect"),
        }
        if let Some(wait) = failover.ended(connected) {
            tracing::debug!(
                gateways = failover.addrs().len(),
                ?wait,
                "every gateway tried; waiting"
            );
            futures::select! {
                _ = tokio::time::sleep(wait).fuse() => {}
                _ = shutdown.as_mut() => return,
            }
        }
    }
}

/// [`DeviceLink::connect_tcp`] giving up after [`CONNECT_TIMEOUT`].
async fn connect_tcp(addr: &str) -> Result<DeviceLink, LinkError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, DeviceLink::connect_tcp(addr)).await {
        Ok(link) => link,
        Err(_) => Err(LinkError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {CONNECT_TIMEOUT:?}"),
        ))),
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
