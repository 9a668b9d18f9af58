//! The LAN9118's indirect registers: the MAC's CSRs (reached through `MAC_CSR_CMD`/`MAC_CSR_DATA`)
//! and the internal PHY's MII registers (reached through the MAC's `MII_ACC`/`MII_DATA`).
//!
//! Every wait on a busy bit is bounded: a chip that never clears it is reported as
//! [`Error::Timeout`], never a hang. QEMU completes each access at once, so the bounds only matter
//! on broken hardware.

use crate::regs::{Reg, Regs, MAC_CSR_BUSY, MAC_CSR_READ};
use crate::Error;

/// MAC CSR indices.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum MacReg {
    Cr = 1,
    AddrH = 2,
    AddrL = 3,
    MiiAcc = 6,
    MiiData = 7,
}

// MAC_CR bits.
pub const MAC_CR_RXEN: u32 = 1 << 2;
pub const MAC_CR_TXEN: u32 = 1 << 3;
pub const MAC_CR_FDPX: u32 = 1 << 20;

// PHY registers and bits (the internal PHY answers at MII address 1).
const PHY_ADDR: u32 = 1;
pub const PHY_BSR: u32 = 1;
pub const PHY_BSR_LINK_UP: u32 = 1 << 2;
/// Interrupt source register: reading it clears the latched PHY events.
pub const PHY_ISR: u32 = 29;
/// Interrupt mask register.
pub const PHY_IMR: u32 = 30;
pub const PHY_INT_AUTONEG_DONE: u32 = 1 << 6;
pub const PHY_INT_LINK_DOWN: u32 = 1 << 4;

const MII_ACC_BUSY: u32 = 1 << 0;
const MII_ACC_WRITE: u32 = 1 << 1;

/// How many times a busy bit is polled before giving up. Each poll is a bus read (~100 ns on a
/// real chip, where a MAC CSR access takes well under 1 µs), so this is generous.
const BUSY_POLLS: u32 = 10_000;

fn wait_mac_idle(regs: &Regs) -> Result<(), Error> {
    for _ in 0..BUSY_POLLS {
        if regs.read(Reg::MacCsrCmd) & MAC_CSR_BUSY == 0 {
            return Ok(());
        }
    }
    Err(Error::Timeout)
}

pub fn mac_read(regs: &Regs, reg: MacReg) -> Result<u32, Error> {
    wait_mac_idle(regs)?;
    regs.write(Reg::MacCsrCmd, MAC_CSR_BUSY | MAC_CSR_READ | reg as u32);
    wait_mac_idle(regs)?;
    Ok(regs.read(Reg::MacCsrData))
}

pub fn mac_write(regs: &Regs, reg: MacReg, value: u32) -> Result<(), Error> {
    wait_mac_idle(regs)?;
    regs.write(Reg::MacCsrData, value);
    regs.write(Reg::MacCsrCmd, MAC_CSR_BUSY | reg as u32);
    wait_mac_idle(regs)
}

fn wait_mii_idle(regs: &Regs) -> Result<(), Error> {
    for _ in 0..BUSY_POLLS {
        if mac_read(regs, MacReg::MiiAcc)? & MII_ACC_BUSY == 0 {
            return Ok(());
        }
    }
    Err(Error::Timeout)
}

fn mii_command(phy_reg: u32, write: bool) -> u32 {
    let write = if write { MII_ACC_WRITE } else { 0 };
    (PHY_ADDR << 11) | ((phy_reg & 0x1f) << 6) | write | MII_ACC_BUSY
}

pub fn phy_read(regs: &Regs, phy_reg: u32) -> Result<u16, Error> {
    wait_mii_idle(regs)?;
    mac_write(regs, MacReg::MiiAcc, mii_command(phy_reg, false))?;
    wait_mii_idle(regs)?;
    // MII data is 16 bits wide; the upper half of the CSR is reserved.
    Ok((mac_read(regs, MacReg::MiiData)? & 0xffff) as u16)
}

pub fn phy_write(regs: &Regs, phy_reg: u32, value: u16) -> Result<(), Error> {
    wait_mii_idle(regs)?;
    mac_write(regs, MacReg::MiiData, u32::from(value))?;
    mac_write(regs, MacReg::MiiAcc, mii_command(phy_reg, true))?;
    wait_mii_idle(regs)
}

/// Programs the station address the MAC filters unicast frames on.
pub fn set_mac_address(regs: &Regs, mac: [u8; 6]) -> Result<(), Error> {
    let low = u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let high = u32::from_le_bytes([mac[4], mac[5], 0, 0]);
    mac_write(regs, MacReg::AddrL, low)?;
    mac_write(regs, MacReg::AddrH, high)
}
