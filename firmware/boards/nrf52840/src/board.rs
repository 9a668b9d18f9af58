//! The nRF52840-DK as the app sees it: which pins and peripherals carry the link and the LED,
//! the clock setup, and the device id. Nothing here knows the protocol.
//!
//! - UARTE0: TX P0.06, RX P0.08, 115200 8N1, no flow control. The DK's on-board J-Link
//!   bridges these pins to its USB virtual COM port (`/dev/ttyACM0` on Linux).
//! - LED1: P0.13, active low.

use embassy_nrf::buffered_uarte::{self, BufferedUarte, BufferedUarteRx, BufferedUarteTx};
use embassy_nrf::gpio::{Level, Output, OutputDrive};
use embassy_nrf::{bind_interrupts, config, pac, peripherals, uarte, Peripherals};

bind_interrupts!(struct Irqs {
    UARTE0 => buffered_uarte::InterruptHandler<peripherals::UARTE0>;
});

/// Bytes the UART driver buffers each way. A frame is at most `MAX_WIRE_LEN` (~260) bytes;
/// two frames of slack each way cover a burst while the app is busy. Must be even (RX is
/// double-buffered by halves).
pub const UART_BUF_LEN: usize = 1024;

/// `nrf-` and 8 hex digits.
pub const DEVICE_ID_LEN: usize = 12;

/// Clocks for the DK: both crystals. The internal 64 MHz RC oscillator is only ±1.5 %
/// accurate, too loose for a UART at 115200; the DK has a 32 MHz and a 32.768 kHz crystal.
pub fn config() -> config::Config {
    let mut config = config::Config::default();
    config.hfclk_source = config::HfclkSource::ExternalXtal;
    config.lfclk_source = config::LfclkSource::ExternalXtal;
    config
}

/// What `main` hands to the tasks.
pub struct Parts {
    pub rx: BufferedUarteRx<'static>,
    pub tx: BufferedUarteTx<'static>,
    pub board: Dk,
}

/// Claims the DK's UART and LED. The buffers live as long as the program (`StaticCell`s in
/// `main`).
pub fn split(
    p: Peripherals,
    rx_buf: &'static mut [u8; UART_BUF_LEN],
    tx_buf: &'static mut [u8; UART_BUF_LEN],
) -> Parts {
    let mut uart_config = uarte::Config::default();
    uart_config.baudrate = uarte::Baudrate::Baud115200;
    uart_config.parity = uarte::Parity::Excluded;
    // TIMER0 counts received bytes and the PPI channels/group hand RX buffers over without
    // losing bytes between DMA transfers; all three are otherwise unused here.
    let uart = BufferedUarte::new(
        p.UARTE0,
        p.TIMER0,
        p.PPI_CH0,
        p.PPI_CH1,
        p.PPI_GROUP0,
        p.P0_08,
        p.P0_06,
        Irqs,
        uart_config,
        rx_buf,
        tx_buf,
    );
    let (rx, tx) = uart.split();
    // Active low: high is off.
    let led = Output::new(p.P0_13, Level::High, OutputDrive::Standard);
    Parts {
        rx,
        tx,
        board: Dk { led },
    }
}

/// `nrf-` and the low 32 bits of FICR DEVICEID in hex: programmed at the factory, different
/// on every chip, so every board joins the chat under its own name.
pub fn device_id(buf: &'static mut [u8; DEVICE_ID_LEN]) -> &'static str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let id = pac::FICR.deviceid(0).read();
    buf[..4].copy_from_slice(b"nrf-");
    for (i, byte) in buf[4..].iter_mut().enumerate() {
        *byte = HEX[((id >> (28 - 4 * i)) & 0xf) as usize];
    }
    // Only ASCII was written.
    core::str::from_utf8(buf).unwrap_or("nrf-unknown")
}

/// The app's view of the board: LED1.
pub struct Dk {
    led: Output<'static>,
}

impl app::Board for Dk {
    const NAME: &'static str = "nrf52840-dk";

    fn set_led(&mut self, on: bool) {
        self.led
            .set_level(if on { Level::Low } else { Level::High });
    }

    fn led(&self) -> bool {
        self.led.is_set_low()
    }

    fn free_stack(&self) -> Option<u32> {
        Some(stack_paint::never_used())
    }
}
