//! An [`embassy_net_driver::Driver`] for the SMSC LAN9118 Ethernet controller, as QEMU emulates it
//! on the MPS2 boards (`-machine mps2-an385 -nic user,model=lan9118`).
//!
//! It owns the chip's bring-up (reset, MAC address, MAC/PHY enable), moving frames through the
//! FIFOs (TX data FIFO with command words A/B; RX status FIFO then RX data FIFO), the link state
//! from the internal PHY, and waking the network stack from the chip's interrupt. It does not own
//! the NVIC or the vector table: the board routes its interrupt line to [`on_interrupt`] and
//! unmasks it after [`Lan9118::new`] has configured the line's polarity.
//!
//! Frames from the wire never panic the driver: odd lengths and error frames are read out of the
//! FIFO and dropped, and a FIFO that stops making sense is dumped; both are counted in
//! [`COUNTERS`]. One device per program: the waker and counters are statics, which is what lets
//! the interrupt handler reach them.
//!
//! Known limits, all irrelevant under QEMU: no TX flow control beyond checking free FIFO space
//! (QEMU sends each frame as its last word is written), no multicast filter, and the PHY
//! interrupt is acknowledged the QEMU way (on real silicon it is level-triggered until the PHY's
//! source register is read, so the handler would have to mask it).
#![no_std]

mod csr;
pub mod frame;
mod regs;

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use core::task::Context;

use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
use embassy_sync::waitqueue::AtomicWaker;

use crate::csr::{MacReg, MAC_CR_FDPX, MAC_CR_RXEN, MAC_CR_TXEN};
use crate::frame::{RxDrop, MAX_FRAME};
use crate::regs::*;
pub use crate::regs::{Regs, MPS2_AN385_BASE, MPS2_AN385_IRQ};

/// Why the chip could not be brought up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// `BYTE_TEST` or `ID_REV` did not read as a LAN9118's (no NIC in QEMU: add
    /// `-nic user,model=lan9118`).
    NotFound { byte_test: u32, id_rev: u32 },
    /// A busy or reset bit never cleared.
    Timeout,
}

/// What the driver is told at start.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The station address. Use a locally administered unicast one (first byte `x2`, `x6`,
    /// `xA` or `xE`) unless you own an OUI.
    pub mac: [u8; 6],
}

/// Event counters, readable from anywhere (atomics, since the interrupt handler counts too).
pub struct Counters {
    pub rx_frames: AtomicU32,
    pub tx_frames: AtomicU32,
    /// Frames the MAC flagged as bad.
    pub rx_errors: AtomicU32,
    /// Frames of a length the stack cannot take (shorter than a header, longer than 1514).
    pub rx_bad_length: AtomicU32,
    /// Times the RX FIFOs disagreed with each other and were dumped (frames lost).
    pub rx_dumps: AtomicU32,
    /// Frames the stack asked to send that do not fit a frame (never sent).
    pub tx_dropped: AtomicU32,
    /// TX status words with the error bit set.
    pub tx_errors: AtomicU32,
    pub interrupts: AtomicU32,
}

/// The one device's counters.
pub static COUNTERS: Counters = Counters {
    rx_frames: AtomicU32::new(0),
    tx_frames: AtomicU32::new(0),
    rx_errors: AtomicU32::new(0),
    rx_bad_length: AtomicU32::new(0),
    rx_dumps: AtomicU32::new(0),
    tx_dropped: AtomicU32::new(0),
    tx_errors: AtomicU32::new(0),
    interrupts: AtomicU32::new(0),
};

fn count(counter: &AtomicU32) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Woken by the interrupt handler; registered by every `Driver` call.
static WAKER: AtomicWaker = AtomicWaker::new();
/// The device's base address for the interrupt handler; 0 until [`Lan9118::new`] succeeds.
static IRQ_BASE: AtomicUsize = AtomicUsize::new(0);
/// Set by the handler when the PHY reported a link event, so `link_state` re-reads the PHY only
/// then (each PHY read is a dozen register accesses).
static PHY_EVENT: AtomicBool = AtomicBool::new(true);

/// How many bad frames one `receive` call reads past before yielding (and asking to be polled
/// again), so a flood of garbage cannot monopolise the executor.
const RX_DROP_BUDGET: usize = 8;
/// TX FIFO space needed before a frame is accepted: the frame, its two command words, padding.
const TX_SPACE_NEEDED: u32 = (MAX_FRAME + 12) as u32;
/// Bounded wait for the soft reset and the ready bit. QEMU is done before the first poll.
const RESET_POLLS: u32 = 100_000;
/// The TX status FIFO holds up to 512 words; draining more than that per call is never needed.
const TX_STATUS_DRAIN_MAX: u32 = 512;

/// The interrupt handler's half of the driver: call it from the vector of the LAN9118's line
/// (IRQ 13 on mps2-an385). It acknowledges the chip's interrupt status and wakes the stack.
pub fn on_interrupt() {
    let base = IRQ_BASE.load(Ordering::Acquire);
    if base == 0 {
        return;
    }
    let bits = regs::ack_interrupts(base);
    if bits & INT_PHY != 0 {
        PHY_EVENT.store(true, Ordering::Release);
    }
    count(&COUNTERS.interrupts);
    WAKER.wake();
}

/// The driver. Hand it (by value or `&mut`) to `embassy_net::new`.
pub struct Lan9118 {
    regs: Regs,
    mac: [u8; 6],
    link: LinkState,
    tag: u16,
    rx_buf: [u8; MAX_FRAME],
    tx_buf: [u8; MAX_FRAME],
}

impl Lan9118 {
    /// Resets and configures the chip: station address, interrupt line (active high, RX status
    /// and PHY events), TX and RX on. The board unmasks the NVIC line afterwards.
    pub fn new(regs: Regs, config: Config) -> Result<Self, Error> {
        let byte_test = regs.read(Reg::ByteTest);
        let id_rev = regs.read(Reg::IdRev);
        if byte_test != BYTE_TEST_MAGIC || id_rev >> 16 != CHIP_ID {
            return Err(Error::NotFound { byte_test, id_rev });
        }
        reset(&regs)?;

        csr::set_mac_address(&regs, config.mac)?;
        regs.write(
            Reg::IrqCfg,
            IRQ_CFG_EN | IRQ_CFG_POL_HIGH | IRQ_CFG_TYPE_PUSH_PULL,
        );
        regs.write(Reg::FifoInt, FIFO_INT_VALUE);
        regs.write(Reg::RxCfg, 0);
        regs.write(Reg::TxCfg, TX_CFG_TX_ON | TX_CFG_TXSAO);
        csr::phy_write(
            &regs,
            csr::PHY_IMR,
            (csr::PHY_INT_AUTONEG_DONE | csr::PHY_INT_LINK_DOWN) as u16,
        )?;
        // Reset leaves the MAC promiscuous; filter on our address (broadcast still passes).
        csr::mac_write(&regs, MacReg::Cr, MAC_CR_TXEN | MAC_CR_RXEN | MAC_CR_FDPX)?;

        regs.write(Reg::IntSts, u32::MAX);
        regs.write(Reg::IntEn, INT_RSFL | INT_PHY | INT_RXE | INT_TXE);
        IRQ_BASE.store(regs.base(), Ordering::Release);
        Ok(Self {
            regs,
            mac: config.mac,
            link: LinkState::Down,
            tag: 0,
            rx_buf: [0; MAX_FRAME],
            tx_buf: [0; MAX_FRAME],
        })
    }

    /// Reads one frame from the FIFOs into `rx_buf`; `None` if none is waiting (or the budget
    /// of bad frames was spent).
    fn pull_frame(&mut self, cx: &mut Context) -> Option<usize> {
        for _ in 0..RX_DROP_BUDGET {
            let info = self.regs.read(Reg::RxFifoInf);
            let pending_frames = (info >> 16) & 0xff;
            let data_bytes = (info & 0xffff) as usize;
            if pending_frames == 0 {
                return None;
            }
            let frame = frame::rx_frame(self.regs.read(Reg::RxStatus));
            if frame.words * 4 > data_bytes {
                // The status promises more data than the FIFO holds: resynchronise.
                self.regs.write(Reg::RxCfg, RX_CFG_RX_DUMP);
                count(&COUNTERS.rx_dumps);
                return None;
            }
            match frame.verdict {
                Ok(len) => {
                    let regs = &self.regs;
                    frame::unpack_words(&mut self.rx_buf[..len], || regs.read(Reg::RxData));
                    self.discard_words(frame.words.saturating_sub(len.div_ceil(4)));
                    count(&COUNTERS.rx_frames);
                    return Some(len);
                }
                Err(why) => {
                    self.discard_words(frame.words);
                    count(match why {
                        RxDrop::Error => &COUNTERS.rx_errors,
                        RxDrop::TooLong | RxDrop::TooShort => &COUNTERS.rx_bad_length,
                    });
                }
            }
        }
        // More bad frames may be waiting: come back after others have run.
        cx.waker().wake_by_ref();
        None
    }

    fn discard_words(&self, words: usize) {
        for _ in 0..words {
            self.regs.read(Reg::RxData);
        }
    }

    /// Pops the TX status FIFO (one word per sent frame), counting errors.
    fn drain_tx_status(&self) {
        let used = (self.regs.read(Reg::TxFifoInf) >> 16) & 0xff;
        for _ in 0..used.min(TX_STATUS_DRAIN_MAX) {
            if self.regs.read(Reg::TxStatus) & (1 << 15) != 0 {
                count(&COUNTERS.tx_errors);
            }
        }
    }

    fn tx_token(&mut self) -> TxToken<'_> {
        self.tag = self.tag.wrapping_add(1);
        TxToken {
            regs: &self.regs,
            buf: &mut self.tx_buf,
            tag: self.tag,
        }
    }
}

/// Soft reset, then wait for the chip to say it is ready.
fn reset(regs: &Regs) -> Result<(), Error> {
    regs.write(Reg::HwCfg, HW_CFG_SRST);
    let ready = |regs: &Regs| {
        regs.read(Reg::HwCfg) & HW_CFG_SRST == 0 && regs.read(Reg::PmtCtrl) & PMT_CTRL_READY != 0
    };
    if (0..RESET_POLLS).any(|_| ready(regs)) {
        Ok(())
    } else {
        Err(Error::Timeout)
    }
}

impl embassy_net_driver::Driver for Lan9118 {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, cx: &mut Context) -> Option<(RxToken<'_>, TxToken<'_>)> {
        // Registered before looking, so a frame landing after the look still wakes us.
        WAKER.register(cx.waker());
        let len = self.pull_frame(cx)?;
        self.tag = self.tag.wrapping_add(1);
        let rx = RxToken {
            buf: &mut self.rx_buf[..len],
        };
        let tx = TxToken {
            regs: &self.regs,
            buf: &mut self.tx_buf,
            tag: self.tag,
        };
        Some((rx, tx))
    }

    fn transmit(&mut self, cx: &mut Context) -> Option<TxToken<'_>> {
        WAKER.register(cx.waker());
        self.drain_tx_status();
        if self.regs.read(Reg::TxFifoInf) & 0xffff < TX_SPACE_NEEDED {
            // Never under QEMU; real silicon would want the TX data available interrupt here.
            cx.waker().wake_by_ref();
            return None;
        }
        Some(self.tx_token())
    }

    fn link_state(&mut self, cx: &mut Context) -> LinkState {
        WAKER.register(cx.waker());
        if PHY_EVENT.swap(false, Ordering::AcqRel) {
            // Reading the source register acknowledges the PHY's latched events.
            let _ = csr::phy_read(&self.regs, csr::PHY_ISR);
            self.link = match csr::phy_read(&self.regs, csr::PHY_BSR) {
                Ok(bsr) if u32::from(bsr) & csr::PHY_BSR_LINK_UP != 0 => LinkState::Up,
                _ => LinkState::Down,
            };
        }
        self.link
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = MAX_FRAME;
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}

/// A received frame, already copied out of the FIFO.
pub struct RxToken<'a> {
    buf: &'a mut [u8],
}

impl embassy_net_driver::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        f(self.buf)
    }
}

/// Room for one frame to send; the frame goes into the TX FIFO when `consume` returns.
pub struct TxToken<'a> {
    regs: &'a Regs,
    buf: &'a mut [u8; MAX_FRAME],
    tag: u16,
}

impl embassy_net_driver::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // The stack never asks for more than the MTU; if it did, it gets a short buffer and the
        // frame is not sent.
        let fits = (1..=MAX_FRAME).contains(&len);
        let frame = &mut self.buf[..len.min(MAX_FRAME)];
        let result = f(frame);
        if !fits {
            count(&COUNTERS.tx_dropped);
            return result;
        }
        let (a, b) = frame::tx_commands(len, self.tag);
        self.regs.write(Reg::TxData, a);
        self.regs.write(Reg::TxData, b);
        frame::pack_words(frame, |word| self.regs.write(Reg::TxData, word));
        count(&COUNTERS.tx_frames);
        result
    }
}
