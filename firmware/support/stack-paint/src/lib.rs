//! Stack high-water mark for the boards built with cortex-m-rt's `paint-stack` (nRF52840,
//! RP2040): cortex-m-rt fills the stack region with `STACK_PAINT_VALUE` at reset; words still
//! holding it were never used. The embassy tasks live in statics, so the stack only carries
//! interrupt handlers and task polls. (The QEMU board paints its own, smaller, region.)
#![no_std]

use cortex_m_rt::STACK_PAINT_VALUE;

extern "C" {
    /// Lowest address the stack may grow to (end of `.bss`/`.uninit`), from `link.x`.
    static _stack_end: u32;
    /// Initial stack pointer (top of RAM), from `link.x`.
    static _stack_start: u32;
}

/// Bytes at the bottom of the stack never written since reset. Scans upward from the limit,
/// so it takes time proportional to the free space (one read per free word: a few ms for 256 KiB).
pub fn never_used() -> u32 {
    let mut word = &raw const _stack_end;
    let top = &raw const _stack_start;
    let mut free = 0;
    // SAFETY: every address between the two linker symbols is RAM reserved for the stack;
    // reading it races with nothing that matters (a word changing under us only shifts the
    // figure by four bytes).
    while word < top && unsafe { word.read_volatile() } == STACK_PAINT_VALUE {
        free += 4;
        word = unsafe { word.add(1) };
    }
    free
}
