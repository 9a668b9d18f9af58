//! Firmware tasks: build every board from its own directory and report its footprint.
//!
//! Each board is its own `cargo build --release` in `firmware/boards/<board>`, so its
//! `.cargo/config.toml` picks target and linker scripts, and two executors never meet in
//! one build (they would collide on `__pender`). Sizes come from the ELF's section
//! headers: flash is every allocated section with contents (vectors, code, read-only
//! data, the initial values of `.data`), static RAM every writable allocated one
//! (`.data`, `.bss`, `.uninit`); the stack is not included.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use object::elf::{SHF_ALLOC, SHF_WRITE};
use object::{Object, ObjectSection, SectionFlags};

use super::{cargo, run};

/// The QEMU UART build must fit a small MCU, so a feature that bloats it is noticed.
const QEMU_UART_BIN: &str = "qemu-mps2";
/// Flash budget of the QEMU UART build: a 32 KiB part.
const FLASH_BUDGET: u64 = 32 * 1024;
/// Static RAM budget of the QEMU UART build: an 8 KiB part, before the stack.
const RAM_BUDGET: u64 = 8 * 1024;

/// One linked firmware image and its footprint.
struct Image {
    board: String,
    elf: PathBuf,
    flash: u64,
    ram: u64,
}

/// Builds every board under `firmware/boards`, prints each image's flash and static RAM,
/// and fails if the QEMU UART image exceeds its budget.
pub fn build_all(root: &Path) -> Result<()> {
    let mut images = Vec::new();
    for board in boards(root)? {
        images.extend(build_board(&board)?);
    }
    println!("firmware sizes (release):");
    println!(
        "  {:<16} {:<18} {:>10} {:>10}",
        "board", "binary", "flash", "static RAM"
    );
    for img in &images {
        let bin = img.elf.file_name().unwrap_or_default().to_string_lossy();
        println!(
            "  {:<16} {:<18} {:>8} B {:>8} B",
            img.board, bin, img.flash, img.ram
        );
    }
    let Some(qemu) = images
        .iter()
        .find(|i| i.elf.file_name().is_some_and(|n| n == QEMU_UART_BIN))
    else {
        bail!("no `{QEMU_UART_BIN}` binary among the firmware builds");
    };
    if qemu.flash > FLASH_BUDGET || qemu.ram > RAM_BUDGET {
        bail!(
            "{QEMU_UART_BIN} uses {} B flash and {} B static RAM; the budget is {FLASH_BUDGET} B \
             and {RAM_BUDGET} B",
            qemu.flash,
            qemu.ram
        );
    }
    println!(
        "firmware: {QEMU_UART_BIN} fits its budget ({} of {FLASH_BUDGET} B flash, {} of \
         {RAM_BUDGET} B static RAM)",
        qemu.flash, qemu.ram
    );
    Ok(())
}

/// Firmware crates with host tests: (directory under `firmware/`, package).
const HOST_TESTED: &[(&str, &str)] = &[
    ("app", "switchboard-app"),
    ("sim", "switchboard-sim"),
    ("drivers/lan9118", "lan9118"),
];

/// Runs the firmware crates' host tests (the app's commands and protocol state machine,
/// the simulation, the LAN9118 driver's frame logic), one package per cargo invocation:
/// together, feature unification would give the app both its `defmt` and `log` backends.
pub fn host_tests(root: &Path) -> Result<()> {
    let dir = root.join("firmware");
    for (path, package) in HOST_TESTED {
        if dir.join(path).join("Cargo.toml").is_file() {
            run(&mut firmware_cargo(&dir, &["test", "-p", package]))?;
        }
    }
    Ok(())
}

/// Board crate directories, sorted.
fn boards(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join("firmware").join("boards");
    let mut boards: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    boards.sort();
    Ok(boards)
}

/// Builds one board crate and returns the footprint of each binary it links.
fn build_board(dir: &Path) -> Result<Vec<Image>> {
    let board = dir
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut cmd = firmware_cargo(
        dir,
        &[
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
        ],
    );
    cmd.stdout(Stdio::piped());
    eprintln!("xtask: running {cmd:?} in {}", dir.display());
    let out = cmd
        .output()
        .with_context(|| format!("building the {board} firmware"))?;
    if !out.status.success() {
        bail!("building the {board} firmware failed: {}", out.status);
    }
    let mut images = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_bin = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "bin"));
        let elf = msg["executable"].as_str();
        if msg["reason"] != "compiler-artifact" || !is_bin {
            continue;
        }
        let Some(elf) = elf else { continue };
        let (flash, ram) = footprint(Path::new(elf))?;
        images.push(Image {
            board: board.clone(),
            elf: PathBuf::from(elf),
            flash,
            ram,
        });
    }
    Ok(images)
}

/// Flash and static RAM of an ELF, from its section headers.
fn footprint(elf: &Path) -> Result<(u64, u64)> {
    let bytes = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    let file =
        object::File::parse(&*bytes).with_context(|| format!("parsing {}", elf.display()))?;
    let (mut flash, mut ram) = (0, 0);
    for section in file.sections() {
        let SectionFlags::Elf { sh_flags } = section.flags() else {
            continue;
        };
        if sh_flags & u64::from(SHF_ALLOC) == 0 {
            continue; // debug info, the defmt table: never loaded
        }
        // `.bss` and `.uninit` (SHT_NOBITS) take RAM but no bytes in the file or flash.
        if section.file_range().is_some() {
            flash += section.size();
        }
        if sh_flags & u64::from(SHF_WRITE) != 0 {
            ram += section.size();
        }
    }
    Ok((flash, ram))
}

/// `cargo ARGS` in a firmware directory, without the host build's overrides.
fn firmware_cargo(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = cargo(args);
    cmd.current_dir(dir);
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}
