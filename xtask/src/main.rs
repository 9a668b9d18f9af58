//! Developer tasks, run as `cargo xtask <task>` (alias in `.cargo/config.toml`).
//!
//! - `start`: builds the release binaries and runs `switchboard start` on `switchboard.toml`.
//! - `bench`: runs the benchmark scenarios against Switchboard and the reference chat
//!   server, alternately, and prints the table with the ratios.
//! - `ci`: installs what the tests need on a fresh machine, then runs every check and test,
//!   builds every firmware board and checks the QEMU build's size. `.ci/run` calls exactly this.
//!
//! Only orchestration lives here: no product code, nothing the binaries depend on.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod bench;
mod firmware;

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
    /// Install what the tests need, then run formatting, lint, the firmware builds and
    /// every test.
    Ci {
        /// Skip installing system packages and rustup targets.
        #[arg(long)]
        no_install: bool,
    },
    /// Build every firmware board (release) and print its flash and RAM use.
    Firmware,
    /// Benchmark Switchboard against the reference chat server, side by side (release builds).
    Bench {
        /// `full` (minutes, 19,000 idle connections) or `quick` (about a minute).
        #[arg(long, value_enum, default_value = "full")]
        size: bench::Size,
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
        Task::Ci { no_install } => ci(&root, no_install),
        Task::Firmware => firmware::build_all(&root),
        Task::Bench { size } => bench::bench(&root, size),
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
    let bin_dir = target.join("release");
    // The demo device is the firmware's std simulation: the same app code the boards run.
    // It lives in the firmware workspace; install it next to the supervisor, which looks there.
    let firmware = root.join("firmware");
    run(cargo(&["build", "--release", "-p", "switchboard-sim"]).current_dir(&firmware))?;
    let sim = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| firmware.join("target"))
        .join("release")
        .join("switchboard-sim");
    let installed = bin_dir.join("switchboard-sim");
    if sim != installed {
        std::fs::copy(&sim, &installed)
            .with_context(|| format!("installing {} in {}", sim.display(), bin_dir.display()))?;
    }
    let exe = bin_dir.join("switchboard");
    let mut cmd = Command::new(&exe);
    cmd.args(["-c", "switchboard.toml", "start"]).args(args);
    run(&mut cmd)
}

fn ci(root: &Path, no_install: bool) -> Result<()> {
    if !no_install {
        install_test_needs()?;
    }
    // A full run rebuilds nearly everything anyway; incremental caches would add 1.3 GB of
    // disk (a CI clone has little to spare) for no speed. Set it to 1 to keep them.
    if std::env::var_os("CARGO_INCREMENTAL").is_none() {
        std::env::set_var("CARGO_INCREMENTAL", "0");
    }
    run(&mut cargo(&["fmt", "--all", "--check"]))?;
    run(cargo(&["fmt", "--all", "--check"]).current_dir(root.join("firmware")))?;
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
    // Every board, each in its own cargo invocation; fails if the QEMU build outgrows its
    // budget. Before the tests, so the end-to-end tests find the firmware built.
    firmware::build_all(root)?;
    firmware::host_tests(root)?;
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
/// Every board's target: QEMU mps2 (M3), nRF52840 (M4F), RP2040 (M0+).
const FIRMWARE_TARGETS: &[&str] = &[
    "thumbv7m-none-eabi",
    "thumbv7em-none-eabihf",
    "thumbv6m-none-eabi",
];

/// What a fresh Debian machine with rustup lacks for the test suite.
fn install_test_needs() -> Result<()> {
    // rustfmt and clippy come with the default rustup profile but not the minimal one.
    run(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))?;
    run(Command::new("rustup")
        .args(["target", "add"])
        .args(FIRMWARE_TARGETS))?;
    // The end-to-end tests run the real firmware in QEMU; the worker's store tests start a
    // real memcached.
    let missing: Vec<&str> = ["qemu-system-arm", "memcached"]
        .into_iter()
        .filter(|program| !has_program(program))
        .collect();
    if !missing.is_empty() {
        let apt = |args: &[&str]| -> Command {
            let mut cmd = if is_root() {
                Command::new("apt-get")
            } else {
                let mut sudo = Command::new("sudo");
                sudo.arg("apt-get");
                sudo
            };
            cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            cmd
        };
        run(&mut apt(&["update"]))?;
        run(apt(&["install", "-y"]).args(&missing))?;
    }
    Ok(())
}

/// Can `program` be started (is it on PATH)?
fn has_program(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
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
