//! What the Ethernet build reads from the QEMU command line besides the device id (which
//! `board_qemu_mps2::cmdline` reads): `port=N`, the gateway's device port, so tests can run
//! gateways on free ports with the same ELF: `-append "id=eth1 port=18481"`.

use board_qemu_mps2::cmdline::with_arg;

/// The gateway's device port: the first `port=N` argument, else `default`. A malformed value
/// is logged and ignored rather than guessed at.
pub fn gateway_port(default: u16) -> u16 {
    with_arg("port=", |found| {
        match found.map(|value| (value, value.parse::<u16>())) {
            None => default,
            Some((_, Ok(port))) if port != 0 => port,
            Some((value, _)) => {
                defmt::warn!("ignoring port={=str}; gateway port {=u16}", value, default);
                default
            }
        }
    })
}
