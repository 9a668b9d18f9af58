//! The simulated device's life: connect to the gateway, run the app until the link drops,
//! wait, connect again; for ever. Backoff doubles from [`MIN_BACKOFF`] to [`MAX_BACKOFF`] and
//! starts over after a link that stayed up for [`STABLE`].

use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use app::{Config, Stats};
use embassy_time::{Duration, Timer};

use crate::board::SimBoard;
use crate::link;

/// First wait after a failed connection or a lost link.
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between attempts: a restarted gateway is found within this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A link up this long was healthy; the next failure starts the backoff over.
const STABLE: std::time::Duration = std::time::Duration::from_secs(10);
/// Connecting blocks the executor; on loopback it succeeds or is refused at once.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs the device against the gateway at `addr` for ever.
pub async fn serve(addr: SocketAddr, config: &'static Config, stats: &'static Stats) -> ! {
    let mut board = SimBoard::default();
    let mut backoff = MIN_BACKOFF;
    loop {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).and_then(link::split) {
            Ok((rx, tx)) => {
                log::info!("connected to {addr}");
                let up = Instant::now();
                let end = app::run(rx, tx, &mut board, config, stats).await;
                log::warn!("link to {addr} ended: {end:?}");
                if up.elapsed() >= STABLE {
                    backoff = MIN_BACKOFF;
                }
            }
            Err(err) => log::warn!("cannot connect to {addr}: {err}"),
        }
        log::info!("reconnecting in {} ms", backoff.as_millis());
        Timer::after(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
