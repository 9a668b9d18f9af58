//! The device's network side: the embassy-net stack over the LAN9118 (static IPv4 in QEMU's
//! user network) and the link loop that keeps one TCP connection to the gateway's device port,
//! running the app on it and reconnecting with backoff when it drops.
//!
//! It does not own the chip's bring-up (the `lan9118` driver) or the device's behaviour (`app`).

use embassy_net::tcp::TcpSocket;
use embassy_net::{Ipv4Address, Ipv4Cidr, Stack, StaticConfigV4};
use embassy_time::{Duration, Timer};
use lan9118::Lan9118;

use crate::board::QemuEthBoard;

/// QEMU's user network (slirp) is always 10.0.2.0/24: the guest is conventionally 10.0.2.15
/// (what its DHCP server would hand out), and 10.0.2.2 is the host's loopback. A static
/// address saves the DHCP client's flash and a round of packets at boot.
pub const GUEST_ADDRESS: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
pub const HOST_ADDRESS: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
const PREFIX_LEN: u8 = 24;

/// First and longest wait between connection attempts: quick after a blip, at most one attempt
/// every 5 s (each refused attempt costs a SYN and an RST) while the gateway is away.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A peer that stops acknowledging for this long is gone (the gateway crashed without its
/// kernel sending a reset, or slirp lost the host socket).
const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);
/// Probes an idle connection this often so a vanished gateway is noticed within the timeout
/// even when the device has nothing to say.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Socket buffers: a few protocol frames (`protocol::MAX_WIRE_LEN` each) in each direction; the
/// app reads frames as they come and writes one at a time, so more would only hold stale bytes.
pub const SOCKET_RX: usize = 1024;
pub const SOCKET_TX: usize = 1024;

/// The stack's static address configuration.
pub fn ip_config() -> embassy_net::Config {
    embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(GUEST_ADDRESS, PREFIX_LEN),
        gateway: Some(HOST_ADDRESS),
        dns_servers: Default::default(),
    })
}

/// Runs the stack: moves frames between the driver and the sockets. Never returns.
#[embassy_executor::task]
pub async fn net_task(mut runner: embassy_net::Runner<'static, &'static mut Lan9118>) -> ! {
    runner.run().await
}

/// Keeps the device connected to the gateway at `HOST_ADDRESS:port`, forever.
pub async fn link_loop(
    stack: Stack<'static>,
    port: u16,
    board: &mut QemuEthBoard,
    config: &app::Config,
    stats: &app::Stats,
) -> ! {
    let mut rx_buf = [0u8; SOCKET_RX];
    let mut tx_buf = [0u8; SOCKET_TX];
    stack.wait_config_up().await;
    defmt::info!(
        "net up: {} -> gateway {}:{}",
        GUEST_ADDRESS,
        HOST_ADDRESS,
        port
    );
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut socket = TcpSocket::new(stack, &mut rx_buf, &mut tx_buf);
        socket.set_timeout(Some(SOCKET_TIMEOUT));
        socket.set_keep_alive(Some(KEEP_ALIVE));
        match socket.connect((HOST_ADDRESS, port)).await {
            Ok(()) => {
                defmt::info!("connected to {}:{}", HOST_ADDRESS, port);
                backoff = BACKOFF_MIN;
                let (reader, writer) = socket.split();
                let end = app::run(reader, writer, board, config, stats).await;
                defmt::warn!("connection ended: {}", end);
                // A reset rather than a close: the app already lost the link, and a half-open
                // connection would only delay the next Hello.
                socket.abort();
                let _ = socket.flush().await;
            }
            Err(err) => defmt::warn!("connect to {}:{} failed: {}", HOST_ADDRESS, port, err),
        }
        drop(socket);
        Timer::after(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
