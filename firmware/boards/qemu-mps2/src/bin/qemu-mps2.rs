//! Switchboard device on QEMU mps2-an385: the app over UART0, device id from the QEMU
//! command line (`-append "id=dev1"`), defmt on semihosting stdout.
#![no_std]
#![no_main]

use app::{Config, LinkError, Stats};
use board_qemu_mps2::{board::Mps2, executor, uart, FIRMWARE};
use embassy_time::{Duration, Timer};

/// Device id when the command line names none.
const DEFAULT_ID: &str = match option_env!("SWITCHBOARD_DEVICE_ID") {
    Some(id) => id,
    None => "mps2-1",
};

static STATS: Stats = Stats::new();

#[cortex_m_rt::entry]
fn main() -> ! {
    let config = board_qemu_mps2::boot(DEFAULT_ID, FIRMWARE);
    let Some(uart) = uart::Uart0::take() else {
        panic!("UART0 taken twice");
    };
    defmt::info!("{=str} starting as {=str}", FIRMWARE, config.device_id);
    executor::run(|spawner| spawner.spawn(device(uart, config).expect("one device task")))
}

/// The app over UART0 for ever; a UART never fails, but if `run` returns it starts over.
#[embassy_executor::task]
async fn device(uart: uart::Uart0, config: &'static Config) {
    let (mut rx, mut tx) = uart.split();
    let mut board = Mps2::new();
    loop {
        let end: LinkError = app::run(&mut rx, &mut tx, &mut board, config, &STATS).await;
        defmt::warn!("link ended ({}), restarting", end);
        Timer::after(Duration::from_secs(1)).await;
    }
}
