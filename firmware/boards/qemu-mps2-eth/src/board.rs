//! [`app::Board`] for the Ethernet build: the mps2 board support's [`Mps2`] (LED variable,
//! painted-stack free figure) under its own name, so `info` tells the two QEMU builds apart.

use app::Board;
use board_qemu_mps2::board::Mps2;

/// The mps2-an385 with its LAN9118 as the application sees it.
#[derive(Debug, Default)]
pub struct QemuEthBoard(Mps2);

impl Board for QemuEthBoard {
    const NAME: &'static str = "qemu-mps2-eth";

    fn set_led(&mut self, on: bool) {
        self.0.set_led(on)
    }

    fn led(&self) -> bool {
        self.0.led()
    }

    fn free_stack(&self) -> Option<u32> {
        self.0.free_stack()
    }
}
