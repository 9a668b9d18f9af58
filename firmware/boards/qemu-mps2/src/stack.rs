//! Stack high-water mark: paint the unused stack at boot, later count the paint still
//! intact above its bottom. The stack grows down from the top of RAM to the end of the
//! static data (`_stack_end`, from cortex-m-rt). Does not guard against overflow.

use core::ptr::{addr_of, read_volatile, write_volatile};

const PAINT: u32 = 0xDEAD_BEEF;
/// Left unpainted below the current stack pointer: room for `paint`'s own frame.
const MARGIN: usize = 256;

unsafe extern "C" {
    static _stack_end: u32;
}

fn bottom() -> usize {
    addr_of!(_stack_end) as usize
}

/// Paints the stack below the current frame. Call once, early in `main`, before interrupts
/// are enabled (an interrupt frame lives below the stack pointer).
pub fn paint() {
    let top = cortex_m::register::msp::read() as usize - MARGIN;
    let mut p = bottom();
    while p + 4 <= top {
        // SAFETY: between the end of static data and below the live stack: unused RAM.
        unsafe { write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// Bytes of stack never used since [`paint`].
pub fn free() -> u32 {
    let mut p = bottom();
    let top = cortex_m::register::msp::read() as usize;
    // SAFETY: reading RAM between the static data and the live stack pointer.
    while p < top && unsafe { read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    (p - bottom()) as u32
}
