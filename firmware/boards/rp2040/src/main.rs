//! Switchboard firmware for the Raspberry Pi Pico: the shared app (`app::run`) over UART0 on
//! GP0/GP1. Logs go out over RTT (defmt), read by `probe-rs run`. Pins are in `board`; the
//! protocol and commands are the app's.
#![no_std]
#![no_main]

mod board;

use app::{Board as _, Config, Stats};
use board::{DEVICE_ID_LEN, UART_BUF_LEN};
use embassy_executor::Spawner;
use embassy_rp::uart::{BufferedUartRx, BufferedUartTx};
use embassy_time::{Duration, Timer};
use static_cell::ConstStaticCell;
use {defmt_rtt as _, panic_probe as _};

/// Pause before `run` starts again after a link failure, so a line that keeps failing (noise,
/// a held break) costs a Hello a few times a second, not a busy loop.
const RESTART_AFTER: Duration = Duration::from_millis(250);

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_rp::init(Default::default());

    static RX_BUF: ConstStaticCell<[u8; UART_BUF_LEN]> = ConstStaticCell::new([0; UART_BUF_LEN]);
    static TX_BUF: ConstStaticCell<[u8; UART_BUF_LEN]> = ConstStaticCell::new([0; UART_BUF_LEN]);
    static ID: ConstStaticCell<[u8; DEVICE_ID_LEN]> = ConstStaticCell::new([0; DEVICE_ID_LEN]);
    let parts = board::split(p, RX_BUF.take(), TX_BUF.take());
    // probe-rs reads the RTT control block, which points into flash, right after reset; leaving
    // execute-in-place then would hand it garbage (knurling-rs/defmt#683). 10 ms, as in
    // embassy-rp's flash example.
    Timer::after_millis(10).await;
    let device_id = board::device_id(parts.flash, ID.take());
    defmt::info!("{} up as {}", board::Pico::NAME, device_id);

    let config = Config {
        device_id,
        firmware: concat!(env!("CARGO_PKG_VERSION"), "+rp2040-pico"),
        telemetry_every: Config::DEFAULT_TELEMETRY_EVERY,
    };
    spawner.spawn(device(parts.rx, parts.tx, parts.board, config).unwrap());
}

/// The app on the UART, for ever: `run` returns when the link fails (an RX overrun, a break
/// or framing error) and starts again with a fresh Hello.
#[embassy_executor::task]
async fn device(
    mut rx: BufferedUartRx,
    mut tx: BufferedUartTx,
    mut board: board::Pico,
    config: Config,
) {
    static STATS: Stats = Stats::new();
    loop {
        // `run` logs why it returned.
        app::run(&mut rx, &mut tx, &mut board, &config, &STATS).await;
        Timer::after(RESTART_AFTER).await;
    }
}
