//! Interrupt-driven CMSDK APB UART0 (0x4000_4000, RX IRQ 0, TX IRQ 1) as
//! `embedded_io_async::{Read, Write}`. Received bytes go to a ring buffer from the RX
//! interrupt; a full ring stops draining the UART (QEMU then holds further input back) until
//! the reader makes room, so nothing is dropped. Reads are cancel-safe. No baud-rate
//! accuracy, parity or flow-control pins: QEMU does not model them.

use core::cell::RefCell;
use core::convert::Infallible;
use core::future::poll_fn;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::Poll;

use critical_section::{CriticalSection, Mutex};
use embassy_sync::waitqueue::AtomicWaker;
use heapless::Deque;

use crate::interrupt::Irq;
use crate::time_driver::CORE_HZ;

const BASE: usize = 0x4000_4000;
const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
/// INTSTATUS on read, INTCLEAR on write.
const INTCLEAR: usize = 0x0C;
const BAUDDIV: usize = 0x10;

const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const CTRL_TX_EN: u32 = 1 << 0;
const CTRL_RX_EN: u32 = 1 << 1;
const CTRL_TX_INT: u32 = 1 << 2;
const CTRL_RX_INT: u32 = 1 << 3;
const INT_TX: u32 = 1 << 0;
const INT_RX: u32 = 1 << 1;

/// Line speed written to BAUDDIV. QEMU does not throttle to it, but its model refuses to
/// move bytes with a divider below 16, and a real board would want this rate.
pub const BAUD: u32 = 115_200;
/// Receive ring size: one largest frame (`protocol::MAX_WIRE_LEN`, 260 bytes) with slack.
const RX_RING: usize = 512;

static RX: Mutex<RefCell<Deque<u8, RX_RING>>> = Mutex::new(RefCell::new(Deque::new()));
static RX_WAKER: AtomicWaker = AtomicWaker::new();
static TX_WAKER: AtomicWaker = AtomicWaker::new();
static TAKEN: AtomicBool = AtomicBool::new(false);

fn read(offset: usize) -> u32 {
    // SAFETY: an aligned device register of UART0, readable at any time.
    unsafe { read_volatile((BASE + offset) as *const u32) }
}

fn write(offset: usize, value: u32) {
    // SAFETY: an aligned device register of UART0; the values written are the documented bits.
    unsafe { write_volatile((BASE + offset) as *mut u32, value) }
}

/// Changes CTRL bits. Callers hold a critical section (interrupt handlers change CTRL too).
fn ctrl_update(_cs: CriticalSection<'_>, set: u32, clear: u32) {
    write(CTRL, (read(CTRL) | set) & !clear);
}

/// Moves received bytes into the ring until the UART is empty or the ring is full; in the
/// latter case RX interrupts stay off until [`UartRx::read`] makes room and calls this again.
fn drain_rx(cs: CriticalSection<'_>) {
    let mut ring = RX.borrow_ref_mut(cs);
    while read(STATE) & STATE_RX_FULL != 0 {
        if ring.is_full() {
            ctrl_update(cs, 0, CTRL_RX_INT);
            return;
        }
        // Cannot fail: not full.
        let _ = ring.push_back(read(DATA) as u8);
    }
    ctrl_update(cs, CTRL_RX_INT, 0);
}

#[unsafe(no_mangle)]
extern "C" fn UART0RX() {
    // Clear first, then drain: a byte landing after the drain raises a fresh interrupt.
    // The other order can swallow that interrupt and leave RX stuck.
    write(INTCLEAR, INT_RX);
    critical_section::with(drain_rx);
    RX_WAKER.wake();
}

#[unsafe(no_mangle)]
extern "C" fn UART0TX() {
    write(INTCLEAR, INT_TX);
    // One-shot: `UartTx` enables it only while waiting for room.
    critical_section::with(|cs| ctrl_update(cs, 0, CTRL_TX_INT));
    TX_WAKER.wake();
}

/// UART0, configured and with its interrupts unmasked; split it to read and write.
pub struct Uart0 {
    _private: (),
}

impl Uart0 {
    /// Sets up UART0 at [`BAUD`]; `None` if it was taken already.
    pub fn take() -> Option<Self> {
        if TAKEN.swap(true, Ordering::AcqRel) {
            return None;
        }
        write(BAUDDIV, CORE_HZ / BAUD);
        write(INTCLEAR, INT_RX | INT_TX);
        write(CTRL, CTRL_TX_EN | CTRL_RX_EN | CTRL_RX_INT);
        // SAFETY: the handlers above are ready and touch only this driver's state.
        unsafe {
            cortex_m::peripheral::NVIC::unmask(Irq::Uart0Rx);
            cortex_m::peripheral::NVIC::unmask(Irq::Uart0Tx);
        }
        Some(Self { _private: () })
    }

    /// The receive and transmit halves.
    pub fn split(self) -> (UartRx, UartTx) {
        (UartRx { _private: () }, UartTx { _private: () })
    }
}

/// UART0's receive half.
pub struct UartRx {
    _private: (),
}

/// UART0's transmit half.
pub struct UartTx {
    _private: (),
}

impl embedded_io_async::ErrorType for UartRx {
    type Error = Infallible;
}

impl embedded_io_async::ErrorType for UartTx {
    type Error = Infallible;
}

impl embedded_io_async::Read for UartRx {
    /// Waits for at least one byte; returns what the ring holds, up to `buf.len()`.
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        if buf.is_empty() {
            return Ok(0);
        }
        poll_fn(|cx| {
            RX_WAKER.register(cx.waker());
            let n = critical_section::with(|cs| {
                let mut ring = RX.borrow_ref_mut(cs);
                let mut n = 0;
                for slot in buf.iter_mut() {
                    let Some(byte) = ring.pop_front() else { break };
                    *slot = byte;
                    n += 1;
                }
                let stalled = read(CTRL) & CTRL_RX_INT == 0;
                drop(ring);
                if n > 0 && stalled {
                    drain_rx(cs); // room again: take what the UART held back
                }
                n
            });
            if n == 0 {
                Poll::Pending
            } else {
                Poll::Ready(Ok(n))
            }
        })
        .await
    }
}

impl UartTx {
    /// Ready once the transmit register has room, arming the TX interrupt while it has not.
    fn poll_room(cx: &mut core::task::Context<'_>) -> Poll<()> {
        if read(STATE) & STATE_TX_FULL == 0 {
            return Poll::Ready(());
        }
        TX_WAKER.register(cx.waker());
        critical_section::with(|cs| ctrl_update(cs, CTRL_TX_INT, 0));
        // Room may have appeared before the interrupt was armed.
        if read(STATE) & STATE_TX_FULL == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl embedded_io_async::Write for UartTx {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        if buf.is_empty() {
            return Ok(0);
        }
        poll_fn(Self::poll_room).await;
        let mut n = 0;
        for &byte in buf {
            if read(STATE) & STATE_TX_FULL != 0 {
                break;
            }
            write(DATA, u32::from(byte));
            n += 1;
        }
        Ok(n)
    }

    async fn flush(&mut self) -> Result<(), Infallible> {
        poll_fn(Self::poll_room).await;
        Ok(())
    }
}
