//! A real board on the bench: which one (from the environment), and flashing it with
//! probe-rs. Only `tests/hil_board.rs` uses it; without the variables it is skipped.
//!
//! ```sh
//! SWITCHBOARD_HIL_BOARD=nrf52840 SWITCHBOARD_HIL_CHIP=nRF52840_xxAA \
//! SWITCHBOARD_HIL_PORT=/dev/ttyACM0 cargo test -p hil-tests --test hil_board
//! ```
//!
//! probe-rs is not installed by CI (it takes ~20 minutes to build):
//! `cargo install probe-rs-tools --locked`.

use std::path::PathBuf;
use std::process::Command;

use super::firmware::{path_str, Board, Firmware, NRF52840, RP2040};

/// The variables that select a real board, all required.
pub const ENV_VARS: [&str; 3] = [
    "SWITCHBOARD_HIL_CHIP",
    "SWITCHBOARD_HIL_BOARD",
    "SWITCHBOARD_HIL_PORT",
];

/// A real board to test, as the environment describes it.
#[derive(Debug, Clone)]
pub struct BenchBoard {
    /// probe-rs chip name, e.g. `nRF52840_xxAA` or `RP2040`.
    pub chip: String,
    /// Which firmware to build.
    pub board: Board,
    /// The serial port the board's UART (or USB CDC-ACM) appears as.
    pub port: PathBuf,
}

/// Reads [`ENV_VARS`]: `Ok(None)` if none is set (skip), an error if only some are or the
/// board is unknown.
pub fn bench_board() -> Result<Option<BenchBoard>, String> {
    let get = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
    let (chip, board, port) = match ENV_VARS.map(get) {
        [None, None, None] => return Ok(None),
        [Some(chip), Some(board), Some(port)] => (chip, board, port),
        vals => {
            let missing: Vec<&str> = ENV_VARS
                .iter()
                .zip(&vals)
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| *k)
                .collect();
            return Err(format!("set all of {ENV_VARS:?}; missing {missing:?}"));
        }
    };
    let board = match board.as_str() {
        "nrf52840" => NRF52840,
        "rp2040" => RP2040,
        other => {
            return Err(format!(
                "SWITCHBOARD_HIL_BOARD={other:?}: expected nrf52840 or rp2040"
            ))
        }
    };
    Ok(Some(BenchBoard {
        chip,
        board,
        port: PathBuf::from(port),
    }))
}

impl BenchBoard {
    /// Writes `fw` to the board's flash and resets it, with probe-rs.
    pub fn flash(&self, fw: &Firmware) -> Result<(), String> {
        probe_rs(&["download", "--chip", &self.chip, path_str(&fw.elf)])?;
        self.reset()
    }

    /// Resets the board through its debug probe.
    pub fn reset(&self) -> Result<(), String> {
        probe_rs(&["reset", "--chip", &self.chip])
    }
}

fn probe_rs(args: &[&str]) -> Result<(), String> {
    let out = Command::new("probe-rs").args(args).output().map_err(|e| {
        format!("cannot run probe-rs: {e} (install it: cargo install probe-rs-tools --locked)")
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "probe-rs {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
