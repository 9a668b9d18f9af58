//! Switchboard device on QEMU mps2-an385 over Ethernet: the app on a TCP connection to the
//! gateway's device port at 10.0.2.2 (QEMU's user network; the host's loopback), through the
//! LAN9118 and embassy-net. Device id and port from the QEMU command line
//! (`-append "id=eth1 port=18481"`); defmt on semihosting stdout.
//!
//! `main` only brings the board and the NIC up and spawns two tasks: the network stack and the
//! device (connect, run the app, reconnect).
#![no_std]
#![no_main]

mod board;
mod cmdline;
mod net;

use app::{Config, Stats};
use board_qemu_mps2::executor;
use board_qemu_mps2::interrupt::Irq;
use embassy_net::{Stack, StackResources};
use lan9118::Lan9118;
use static_cell::StaticCell;

use crate::board::QemuEthBoard;

/// Firmware version as reported in Hello.
const FIRMWARE: &str = concat!(env!("CARGO_PKG_VERSION"), "+qemu-mps2-eth");
/// Device id when the command line names none.
const DEFAULT_ID: &str = match option_env!("SWITCHBOARD_DEVICE_ID") {
    Some(id) => id,
    None => "mps2-eth-1",
};
/// The gateway's device TCP port when the command line names none (the gateway's default).
const DEFAULT_PORT: u16 = 8481;
/// Sockets in the stack: the one TCP connection to the gateway.
const SOCKETS: usize = 1;

static STATS: Stats = Stats::new();

#[cortex_m_rt::entry]
fn main() -> ! {
    let config = board_qemu_mps2::boot(DEFAULT_ID, FIRMWARE);
    let port = cmdline::gateway_port(DEFAULT_PORT);
    let id_hash = fnv1a(config.device_id.as_bytes());
    let mac = local_mac(id_hash);

    let Some(regs) = lan9118::Regs::take_mps2_an385() else {
        panic!("LAN9118 taken twice");
    };
    // The driver (two 1.5 KiB frame buffers) lives in a static, not in the net task's future,
    // and is built in place rather than moved through `main`'s stack.
    static NIC: StaticCell<Lan9118> = StaticCell::new();
    let nic = match Lan9118::new(regs, lan9118::Config { mac }) {
        Ok(nic) => NIC.init(nic),
        Err(err) => {
            defmt::error!(
                "no LAN9118 ({}); run QEMU with -nic user,model=lan9118",
                err
            );
            panic!("no network interface");
        }
    };
    // SAFETY: the handler (`ETHERNET` below) is in place and the driver has set the line's
    // polarity; no critical section relies on this line being masked.
    unsafe { cortex_m::peripheral::NVIC::unmask(Irq::Ethernet) };

    static RESOURCES: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
    // The seed picks TCP initial sequence numbers and local ports: the id keeps devices apart,
    // the boot time keeps one device's reboots apart.
    let seed = u64::from(id_hash) << 32 | embassy_time::Instant::now().as_ticks();
    let (stack, runner) = embassy_net::new(
        nic,
        net::ip_config(),
        RESOURCES.init(StackResources::new()),
        seed,
    );
    defmt::info!(
        "{=str} starting as {=str}, mac {=[u8]:02x}, gateway port {=u16}",
        FIRMWARE,
        config.device_id,
        mac,
        port
    );
    executor::run(|spawner| {
        spawner.spawn(net::net_task(runner).expect("one net task"));
        spawner.spawn(device(stack, port, config).expect("one device task"));
    })
}

/// The app over TCP to the gateway, reconnecting for ever.
#[embassy_executor::task]
async fn device(stack: Stack<'static>, port: u16, config: &'static Config) {
    let mut board = QemuEthBoard::default();
    net::link_loop(stack, port, &mut board, config, &STATS).await
}

/// The LAN9118's interrupt line (IRQ 13): overrides the weak default from `board-qemu-mps2`.
#[unsafe(no_mangle)]
extern "C" fn ETHERNET() {
    lan9118::on_interrupt();
}

/// A locally administered unicast MAC address derived from the device id, so devices with
/// different ids never share one (`02:53:` + 32 bits of hash).
fn local_mac(id_hash: u32) -> [u8; 6] {
    let [a, b, c, d] = id_hash.to_be_bytes();
    [0x02, 0x53, a, b, c, d]
}

/// FNV-1a: a few lines, good enough to spread short ids over a MAC and a seed.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}
