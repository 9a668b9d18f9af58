//! The Raspberry Pi Pico as the app sees it: which pins and peripherals carry the link and the
//! LED, and the device id. Nothing here knows the protocol.
//!
//! - UART0: TX GP0 (pin 1), RX GP1 (pin 2, pulled up), 115200 8N1, no flow control, 3.3 V
//!   levels. The host side is a USB-UART adapter or a debug probe's UART bridge.
//! - LED: GP25, active high (the Pico's on-board LED; not the Pico W's, which hangs off the
//!   wireless chip).

use embassy_rp::flash::{Blocking, Flash};
use embassy_rp::gpio::{Level, Output};
use embassy_rp::peripherals::{self, FLASH};
use embassy_rp::uart::{
    self, BufferedInterruptHandler, BufferedUart, BufferedUartRx, BufferedUartTx,
};
use embassy_rp::{bind_interrupts, pac, Peri, Peripherals};

bind_interrupts!(struct Irqs {
    UART0_IRQ => BufferedInterruptHandler<peripherals::UART0>;
});

/// Bytes the UART driver buffers each way. A frame is at most `MAX_WIRE_LEN` (~260) bytes;
/// two frames of slack each way cover a burst while the app is busy.
pub const UART_BUF_LEN: usize = 1024;

/// `rp-` and the flash chip's 64-bit unique id in hex.
pub const DEVICE_ID_LEN: usize = 19;

/// Used when the flash does not answer the unique-id command (other boards' flash chips may not
/// implement it).
const FALLBACK_ID: &str = "rp-pico";

/// The Pico's 2 MiB flash; the unique-id command does not depend on the size.
const FLASH_SIZE: usize = 2 * 1024 * 1024;

/// What `main` hands to the tasks.
pub struct Parts {
    pub rx: BufferedUartRx,
    pub tx: BufferedUartTx,
    pub board: Pico,
    pub flash: Peri<'static, FLASH>,
}

/// Claims the Pico's UART0 and LED. The buffers live as long as the program (`StaticCell`s in
/// `main`).
pub fn split(
    p: Peripherals,
    rx_buf: &'static mut [u8; UART_BUF_LEN],
    tx_buf: &'static mut [u8; UART_BUF_LEN],
) -> Parts {
    let mut uart_config = uart::Config::default();
    uart_config.baudrate = 115_200;
    let uart = BufferedUart::new(p.UART0, p.PIN_0, p.PIN_1, Irqs, tx_buf, rx_buf, uart_config);
    // The driver leaves RX without pulls. A UART line idles high, so a pull-up makes an
    // unplugged adapter read as a quiet line instead of noise (framing errors and breaks,
    // each of which would end the link).
    pac::PADS_BANK0.gpio(1).modify(|w| w.set_pue(true));
    let (tx, rx) = uart.split();
    let led = Output::new(p.PIN_25, Level::Low);
    Parts {
        rx,
        tx,
        board: Pico { led },
        flash: p.FLASH,
    }
}

/// `rp-` and the flash's unique id in hex: the RP2040 has no id of its own, but the Pico's
/// W25Q16 flash carries a factory-programmed 64-bit one, so every board joins the chat under
/// its own name.
///
/// Reading it leaves execute-in-place for a moment, with interrupts off. Call it once at
/// start-up, after probe-rs has had time to find the RTT block (see `main`).
pub fn device_id(
    flash: Peri<'static, FLASH>,
    buf: &'static mut [u8; DEVICE_ID_LEN],
) -> &'static str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut uid = [0u8; 8];
    let mut flash = Flash::<_, Blocking, FLASH_SIZE>::new_blocking(flash);
    if let Err(err) = flash.blocking_unique_id(&mut uid) {
        defmt::warn!("flash unique id: {}; using {}", err, FALLBACK_ID);
        return FALLBACK_ID;
    }
    buf[..3].copy_from_slice(b"rp-");
    for (pair, byte) in buf[3..].chunks_exact_mut(2).zip(uid) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    // Only ASCII was written.
    core::str::from_utf8(buf).unwrap_or(FALLBACK_ID)
}

/// The app's view of the board: the LED on GP25.
pub struct Pico {
    led: Output<'static>,
}

impl app::Board for Pico {
    const NAME: &'static str = "rp2040-pico";

    fn set_led(&mut self, on: bool) {
        self.led
            .set_level(if on { Level::High } else { Level::Low });
    }

    fn led(&self) -> bool {
        self.led.is_set_high()
    }

    fn free_stack(&self) -> Option<u32> {
        Some(stack_paint::never_used())
    }
}
