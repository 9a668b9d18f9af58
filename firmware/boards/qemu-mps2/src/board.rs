//! [`app::Board`] for QEMU: no LED to light, so the LED is a variable; free stack from the
//! painted stack.

use crate::stack;

/// The mps2-an385 as the application sees it.
#[derive(Debug, Default)]
pub struct Mps2 {
    led: bool,
}

impl Mps2 {
    /// LED off.
    pub const fn new() -> Self {
        Self { led: false }
    }
}

impl app::Board for Mps2 {
    const NAME: &'static str = "qemu-mps2";

    fn set_led(&mut self, on: bool) {
        defmt::info!("led {=bool}", on);
        self.led = on;
    }

    fn led(&self) -> bool {
        self.led
    }

    fn free_stack(&self) -> Option<u32> {
        Some(stack::free())
    }
}
