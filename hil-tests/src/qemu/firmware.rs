//! Builds the device firmware once per test process and loads its defmt table.
//!
//! Each board is built with `cargo build --release` from its own directory, so its
//! `.cargo/config.toml` (target, linker scripts, `DEFMT_LOG`) applies, exactly as a
//! developer would build it. Boards are separate cargo invocations on purpose: two
//! executors in one build collide on `__pender`. Flashing and running are elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use defmt_decoder::Table;

use crate::harness::workspace_root;

/// A firmware image the tests can run: a board crate and one of its binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Board {
    /// Directory under `firmware/boards/`.
    pub dir: &'static str,
    /// Binary name (the ELF's file name).
    pub bin: &'static str,
    /// Rust target triple, as the board's `.cargo/config.toml` sets it.
    pub target: &'static str,
}

/// The QEMU mps2-an385 board talking over UART0.
pub const QEMU_UART: Board = Board {
    dir: "qemu-mps2",
    bin: "qemu-mps2",
    target: "thumbv7m-none-eabi",
};

/// The QEMU mps2-an385 board talking over its LAN9118 Ethernet (embassy-net, TCP out).
pub const QEMU_ETH: Board = Board {
    dir: "qemu-mps2-eth",
    bin: "qemu-mps2-eth",
    target: "thumbv7m-none-eabi",
};

/// The nRF52840 DK.
pub const NRF52840: Board = Board {
    dir: "nrf52840",
    bin: "nrf52840",
    target: "thumbv7em-none-eabihf",
};

/// The Raspberry Pi Pico (RP2040).
pub const RP2040: Board = Board {
    dir: "rp2040",
    bin: "rp2040",
    target: "thumbv6m-none-eabi",
};

impl Board {
    /// The board crate's directory.
    pub fn crate_dir(&self) -> PathBuf {
        firmware_root().join("boards").join(self.dir)
    }

    /// Where `cargo build --release` puts the ELF.
    pub fn elf_path(&self) -> PathBuf {
        firmware_root()
            .join("target")
            .join(self.target)
            .join("release")
            .join(self.bin)
    }
}

/// A built firmware image: its ELF and the defmt table to decode its logs.
#[derive(Debug)]
pub struct Firmware {
    /// The board it was built for.
    pub board: Board,
    /// The ELF file QEMU or probe-rs loads.
    pub elf: PathBuf,
    /// The defmt string table read from the ELF; `None` if it logs nothing with defmt.
    pub table: Option<Table>,
}

/// The firmware workspace: `firmware/` beside the host workspace's crates.
pub fn firmware_root() -> PathBuf {
    workspace_root().join("firmware")
}

/// Builds `board` on first call (per process) and returns the image. Panics with cargo's
/// output if the build fails: no device test can run without it.
pub fn firmware(board: Board) -> &'static Firmware {
    type Slot = OnceLock<Result<Firmware, String>>;
    static SLOTS: [(Board, Slot); 4] = [
        (QEMU_UART, OnceLock::new()),
        (QEMU_ETH, OnceLock::new()),
        (NRF52840, OnceLock::new()),
        (RP2040, OnceLock::new()),
    ];
    let slot = SLOTS
        .iter()
        .find(|(b, _)| *b == board)
        .map(|(_, slot)| slot)
        .unwrap_or_else(|| panic!("unknown board {board:?}"));
    match slot.get_or_init(|| build(board)) {
        Ok(fw) => fw,
        Err(e) => panic!("{e}"),
    }
}

fn build(board: Board) -> Result<Firmware, String> {
    let dir = board.crate_dir();
    if !dir.join("Cargo.toml").is_file() {
        return Err(format!("no board crate at {}", dir.display()));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&dir)
        .args(["build", "--release", "--bin", board.bin]);
    // `cargo test` hands its own build settings to the tests; they are for the host
    // workspace, not for firmware: the board's config must decide target and flags.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the {} firmware failed ({:?} in {}, {}):\n{}",
            board.dir,
            cmd,
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let elf = board.elf_path();
    let bytes = std::fs::read(&elf)
        .map_err(|e| format!("{} is missing after a successful build: {e}", elf.display()))?;
    let table = Table::parse(&bytes)
        .map_err(|e| format!("reading the defmt table of {}: {e}", elf.display()))?;
    Ok(Firmware { board, elf, table })
}

/// `path` as UTF-8, for command lines.
pub(crate) fn path_str(path: &Path) -> &str {
    path.to_str().expect("firmware and temp paths are UTF-8")
}
