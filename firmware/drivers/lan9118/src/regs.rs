//! The LAN9118's memory-mapped registers: offsets, bits, and the only `unsafe` in this crate.
//!
//! The chip is programmed I/O over a 256-byte window of 32-bit registers. Reading a FIFO port
//! pops the FIFO, so every access must be a real, ordered bus access: hence
//! `read_volatile`/`write_volatile` on raw addresses, which is `unsafe` because nothing in the
//! type system knows that `base` is this device. That promise is made once, in [`Regs::new`]
//! (or by [`Regs::take_mps2_an385`], which hands out the one known instance once); every access
//! after that is safe to call. The indirect MAC/PHY registers and the FIFO protocols live in
//! `csr.rs` and `lib.rs`; this file only knows addresses.
//!
//! Offsets and bits are from the LAN9118 datasheet (SMSC DS00002266), restricted to what QEMU's
//! `hw/net/lan9118.c` implements, which is what this driver is tested against.

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, Ordering};

/// Where the MPS2 FPGA images (AN385 and siblings) map the LAN9118.
pub const MPS2_AN385_BASE: usize = 0x4020_0000;
/// The NVIC interrupt line of the LAN9118 on mps2-an385.
pub const MPS2_AN385_IRQ: u16 = 13;

/// A register, by byte offset from the base address.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
pub enum Reg {
    /// RX data FIFO port (0x00..0x1c are aliases; reading pops a word).
    RxData = 0x00,
    /// TX data FIFO port (0x20..0x3c are aliases; writing pushes a word).
    TxData = 0x20,
    /// RX status FIFO port (reading pops one status word per received frame).
    RxStatus = 0x40,
    /// TX status FIFO port (reading pops one status word per sent frame).
    TxStatus = 0x48,
    IdRev = 0x50,
    IrqCfg = 0x54,
    IntSts = 0x58,
    IntEn = 0x5c,
    ByteTest = 0x64,
    FifoInt = 0x68,
    RxCfg = 0x6c,
    TxCfg = 0x70,
    HwCfg = 0x74,
    RxFifoInf = 0x7c,
    TxFifoInf = 0x80,
    PmtCtrl = 0x84,
    MacCsrCmd = 0xa4,
    MacCsrData = 0xa8,
}

/// `BYTE_TEST` always reads this on a LAN9118 with a correctly wired (32-bit, little-endian) bus.
pub const BYTE_TEST_MAGIC: u32 = 0x8765_4321;
/// `ID_REV[31:16]`: the chip id.
pub const CHIP_ID: u32 = 0x0118;

// IRQ_CFG
/// Master interrupt enable for the IRQ pin.
pub const IRQ_CFG_EN: u32 = 1 << 8;
/// Active-high polarity. QEMU drives the line *inverted* (asserted while idle) unless both
/// this and `IRQ_CFG_TYPE_PUSH_PULL` are set, so both are always set before the NVIC line is
/// unmasked.
pub const IRQ_CFG_POL_HIGH: u32 = 1 << 4;
pub const IRQ_CFG_TYPE_PUSH_PULL: u32 = 1 << 0;

// INT_STS / INT_EN
/// PHY interrupt (link change), mirrored from the PHY's interrupt source register.
pub const INT_PHY: u32 = 1 << 18;
/// RX error: the RX data FIFO was read past the end of a frame.
pub const INT_RXE: u32 = 1 << 14;
/// TX error.
pub const INT_TXE: u32 = 1 << 13;
/// RX status FIFO level: more status words than `FIFO_INT[7:0]`, i.e. a frame arrived.
pub const INT_RSFL: u32 = 1 << 3;

/// `FIFO_INT`: TX data available level 0x48 (reset value), RX status level 0 (an interrupt
/// per received frame).
pub const FIFO_INT_VALUE: u32 = 0x4800_0000;

// RX_CFG
/// Discard everything in the RX data and status FIFOs.
pub const RX_CFG_RX_DUMP: u32 = 1 << 15;

// TX_CFG
pub const TX_CFG_TX_ON: u32 = 1 << 1;
/// Let the TX status FIFO overrun instead of stalling transmission.
pub const TX_CFG_TXSAO: u32 = 1 << 2;

// HW_CFG
pub const HW_CFG_SRST: u32 = 1 << 0;

// PMT_CTRL
/// The device is ready to be accessed after a reset.
pub const PMT_CTRL_READY: u32 = 1 << 0;

// MAC_CSR_CMD
pub const MAC_CSR_BUSY: u32 = 1 << 31;
pub const MAC_CSR_READ: u32 = 1 << 30;

/// The chip's registers at one base address.
pub struct Regs {
    base: usize,
}

/// Set once [`Regs::take_mps2_an385`] has handed out the instance.
static MPS2_TAKEN: AtomicBool = AtomicBool::new(false);

impl Regs {
    /// The registers of the LAN9118 at `base`.
    ///
    /// # Safety
    /// `base` must be the address of a LAN9118's register window (256 bytes of device memory),
    /// and no other code may access that window while the returned value is alive, except
    /// through [`crate::on_interrupt`], which only reads and acknowledges `INT_STS`.
    pub const unsafe fn new(base: usize) -> Self {
        Self { base }
    }

    /// The LAN9118 of the MPS2 AN385 image (QEMU `-machine mps2-an385`), once: `None` after the
    /// first call, so two drivers can never share the FIFOs.
    pub fn take_mps2_an385() -> Option<Self> {
        if MPS2_TAKEN.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: the address is fixed by the board, and the flag above makes this the only
        // instance.
        Some(unsafe { Self::new(MPS2_AN385_BASE) })
    }

    pub(crate) fn base(&self) -> usize {
        self.base
    }

    /// One 32-bit read. Reading a FIFO port pops it.
    #[inline]
    pub fn read(&self, reg: Reg) -> u32 {
        // SAFETY: `new`'s contract: `base` is a LAN9118 window, and every `Reg` offset is an
        // aligned register inside it.
        unsafe { read_volatile((self.base + reg as usize) as *const u32) }
    }

    /// One 32-bit write.
    #[inline]
    pub fn write(&self, reg: Reg, value: u32) {
        // SAFETY: as in `read`.
        unsafe { write_volatile((self.base + reg as usize) as *mut u32, value) }
    }
}

/// Reads and acknowledges `INT_STS` of the device at `base` from an interrupt handler; returns
/// the bits that were set.
pub(crate) fn ack_interrupts(base: usize) -> u32 {
    // SAFETY: `base` was stored by a driver built from a `Regs`, whose contract allows the
    // interrupt handler to touch `INT_STS` (write-one-to-clear, so it cannot disturb the
    // driver's own accesses).
    unsafe {
        let sts = (base + Reg::IntSts as usize) as *mut u32;
        let bits = read_volatile(sts);
        write_volatile(sts, bits);
        bits
    }
}
