//! The mps2-an385 interrupt table as QEMU wires it: [`Irq`] numbers for the NVIC and the
//! vector table cortex-m-rt places after the core exceptions. Handlers are weak symbols
//! (see `device.x`); a module defines the one it serves. Does not enable anything.

use cortex_m::interrupt::InterruptNumber;

/// Interrupt lines used by this crate and its sibling binaries (QEMU's `hw/arm/mps2.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Irq {
    /// CMSDK UART0 receive.
    Uart0Rx = 0,
    /// CMSDK UART0 transmit.
    Uart0Tx = 1,
    /// Any UART's overrun, ORed.
    UartOverflow = 12,
    /// LAN9118 Ethernet controller.
    Ethernet = 13,
}

// SAFETY: the values are the board's interrupt numbers, all below the 32 QEMU implements.
unsafe impl InterruptNumber for Irq {
    fn number(self) -> u16 {
        self as u16
    }
}

/// A vector table slot.
#[derive(Clone, Copy)]
pub union Vector {
    handler: unsafe extern "C" fn(),
    reserved: usize,
}

unsafe extern "C" {
    fn UART0RX();
    fn UART0TX();
    fn UART1RX();
    fn UART1TX();
    fn UART2RX();
    fn UART2TX();
    fn GPIO0();
    fn GPIO1();
    fn TIMER0();
    fn TIMER1();
    fn DUALTIMER();
    fn SPI();
    fn UARTOVF();
    fn ETHERNET();
}

const fn h(handler: unsafe extern "C" fn()) -> Vector {
    Vector { handler }
}

const NONE: Vector = Vector { reserved: 0 };

/// Device interrupts 0..32 (QEMU's NVIC for this board has 32 lines; unused ones are 0).
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
pub static __INTERRUPTS: [Vector; 32] = [
    h(UART0RX),
    h(UART0TX),
    h(UART1RX),
    h(UART1TX),
    h(UART2RX),
    h(UART2TX),
    h(GPIO0),
    h(GPIO1),
    h(TIMER0),
    h(TIMER1),
    h(DUALTIMER),
    h(SPI),
    h(UARTOVF),
    h(ETHERNET),
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
    NONE,
];
