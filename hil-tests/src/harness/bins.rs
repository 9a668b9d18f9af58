//! Finds the real binaries under test, building them once per test process.
//!
//! `cargo test -p hil-tests` builds only this crate's binaries; the gateway and the worker
//! are other packages, so the first test to ask runs `cargo build --bins` for all three.
//! The build's output is kept and shown only if it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Paths of the built binaries, in the profile the tests were built with: `cargo test`
/// drives debug binaries, `cargo test --release` release ones (for figures worth quoting).
#[derive(Debug, Clone)]
pub struct Bins {
    /// The supervisor.
    pub switchboard: PathBuf,
    /// The gateway.
    pub gateway: PathBuf,
    /// The worker.
    pub worker: PathBuf,
    /// The simulated device.
    pub device: PathBuf,
    /// The load generator (`bench/`).
    pub bench: PathBuf,
    /// The reference chat server the benchmarks compare with (`bench/`).
    pub reference: PathBuf,
}

/// Packages whose binaries the tests run.
const PACKAGES: &[&str] = &[
    "switchboard-gateway",
    "switchboard-worker",
    "hil-tests",
    "switchboard-bench",
];

/// The workspace root: this crate's parent.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Builds the binaries on first call and returns their paths. Panics with cargo's output
/// if the build fails: no test can run without them.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Result<Bins, String>> = OnceLock::new();
    match BINS.get_or_init(build) {
        Ok(bins) => bins,
        Err(e) => panic!("{e}"),
    }
}

/// The cargo profile of this test build, and so of the binaries under test.
const PROFILE: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

fn build() -> Result<Bins, String> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root).args(["build", "--bins"]);
    if PROFILE == "release" {
        cmd.arg("--release");
    }
    for p in PACKAGES {
        cmd.args(["-p", p]);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the binaries under test failed ({:?}, {}):\n{}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| root.join(t)) // `join` keeps an absolute path as it is
        .unwrap_or_else(|| root.join("target"));
    let dir = target.join(PROFILE);
    let bins = Bins {
        switchboard: dir.join("switchboard"),
        gateway: dir.join("switchboard-gateway"),
        worker: dir.join("switchboard-worker"),
        device: dir.join("switchboard-device"),
        bench: dir.join("switchboard-bench"),
        reference: dir.join("chat-reference"),
    };
    for p in [&bins.gateway, &bins.worker, &bins.device] {
        if !p.is_file() {
            return Err(format!(
                "{} is missing after a successful build",
                p.display()
            ));
        }
    }
    Ok(bins)
}
