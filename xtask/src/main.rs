//! Developer tasks, run as `cargo xtask <task>` (alias in `.cargo/config.toml`).
//!
//! - `start`: builds the release binaries and runs `switchboard start` on `switchboard.toml`.
//! - `ci`: installs what the tests need on a fresh machine, then runs every check and test.
//!   `.ci/run` calls exactly this.
//!
//! Only orchestration lives here: no product code, nothing the binaries depend on.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Switchboard developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the release binaries and run `switchboard start` (extra args are passed on).
    Start {
        /// Arguments for `switchboard start`, e.g. `-d`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Install what the tests need, then run formatting, lint and every test.
    Ci {
        /// Skip installing system packages and rustup targets.
        #[arg(long)]
        no_install: bool,
    },
}

/// The binaries `switchboard` supervises; built together so `reload` finds a fresh worker.
const BIN_PACKAGES: &[&str] = &["switchboard-gateway", "switchboard-worker", "hil-tests"];

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root).context("entering the workspace root")?;
    match cli.task {
        Task::Start { args } => start(&root, &args),
        Task::Ci { no_install } => ci(no_install),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn start(root: &Path, args: &[String]) -> Result<()> {
    let mut build = cargo(&["build", "--release", "--bins"]);
    for p in BIN_PACKAGES {
        build.args(["-p", p]);
    }
    run(&mut build)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let exe = target.join("release").join("switchboard");
    let mut cmd = Command::new(&exe);
    cmd.args(["-c", "switchboard.toml", "start"]).args(args);
    run(&mut cmd)
}

fn ci(no_install: bool) -> Result<()> {
    if !no_install {
        install_test_needs()?;
    }
    run(&mut cargo(&["fmt", "--all", "--check"]))?;
    run(&mut cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The protocol crate is shared with device firmware: prove it builds bare-metal, no_std.
    run(&mut cargo(&[
        "build",
        "-p",
        "switchboard-protocol",
        "--target",
        FIRMWARE_TARGET,
        "--no-default-features",
        "--features",
        "defmt,golden",
    ]))?;
    // The end-to-end tests drive the real binaries; build them first so the tests
    // find them and the build's time is not charged to the first test's timeouts.
    let mut build = cargo(&["build", "--bins"]);
    for p in BIN_PACKAGES {
        build.args(["-p", p]);
    }
    run(&mut build)?;
    run(&mut cargo(&["test", "--workspace", "--no-fail-fast"]))?;
    println!("xtask ci: all checks and tests passed");
    Ok(())
}

/// The Cortex-M3 target of the QEMU board; the protocol crate must build for it.
const FIRMWARE_TARGET: &str = "thumbv7m-none-eabi";

/// What a fresh Debian machine with rustup lacks for the test suite.
fn install_test_needs() -> Result<()> {
    // rustfmt and clippy come with the default rustup profile but not the minimal one.
    run(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))?;
    run(Command::new("rustup").args(["target", "add", FIRMWARE_TARGET]))?;
    Ok(())
}

fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(args);
    cmd
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed: {status}", cmd.get_program());
    }
    Ok(())
}
