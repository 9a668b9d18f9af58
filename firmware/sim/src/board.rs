//! [`app::Board`] for the simulation: the LED is a variable (its changes are logged), the
//! stack size is unknown.

/// The simulated board.
#[derive(Debug, Default)]
pub struct SimBoard {
    led: bool,
}

impl app::Board for SimBoard {
    const NAME: &'static str = "sim";

    fn set_led(&mut self, on: bool) {
        log::info!("LED {}", if on { "on" } else { "off" });
        self.led = on;
    }

    fn led(&self) -> bool {
        self.led
    }
}
