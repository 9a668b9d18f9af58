//! The supervisor's view of the configuration file: its own `[supervisor]` section, plus the
//! gateway's addresses and secret it needs to wait for readiness and to ask for status.
//!
//! The gateway and worker sections are parsed by those processes; the supervisor only passes
//! the file on, as an absolute path, so a daemon and its children agree on it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use gateway::config::GatewayConfig;
use serde::Deserialize;

/// Default configuration file looked up in the current directory.
const DEFAULT_CONFIG: &str = "switchboard.toml";
/// Default directory for the pid file, the state file and the daemon's log.
const DEFAULT_RUN_DIR: &str = "run";

/// The `[supervisor]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorSection {
    /// Pid file, state file and daemon log live here.
    pub run_dir: PathBuf,
    /// Start the simulated demo device on the gateway's device port.
    pub demo_device: bool,
    /// Where the gateway, worker and device binaries are; default: next to `switchboard`.
    pub bin_dir: Option<PathBuf>,
}

impl Default for SupervisorSection {
    fn default() -> Self {
        Self {
            run_dir: PathBuf::from(DEFAULT_RUN_DIR),
            demo_device: true,
            bin_dir: None,
        }
    }
}

#[derive(Deserialize, Default)]
struct File {
    #[serde(default)]
    supervisor: SupervisorSection,
}

/// Everything the supervisor needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// The configuration file, absolute, if one was given or found.
    pub file: Option<PathBuf>,
    /// The `[supervisor]` section.
    pub supervisor: SupervisorSection,
    /// The `[gateway]` section, parsed as the gateway parses it.
    pub gateway: GatewayConfig,
}

impl Config {
    /// Loads `path`, or `./switchboard.toml` if it exists, or the defaults.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let file = match path {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
        };
        let Some(file) = file else {
            return Ok(Self {
                file: None,
                supervisor: SupervisorSection::default(),
                gateway: GatewayConfig::default(),
            });
        };
        let file = std::path::absolute(&file)
            .with_context(|| format!("resolving config path {}", file.display()))?;
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading config file {}", file.display()))?;
        let parsed: File = toml::from_str(&text)
            .with_context(|| format!("invalid [supervisor] section in {}", file.display()))?;
        let gateway = GatewayConfig::load(&file)?;
        Ok(Self {
            file: Some(file),
            supervisor: parsed.supervisor,
            gateway,
        })
    }

    /// `-c FILE` for a child process, if there is a file.
    pub fn child_args(&self) -> Vec<std::ffi::OsString> {
        match &self.file {
            Some(f) => vec!["-c".into(), f.clone().into_os_string()],
            None => Vec::new(),
        }
    }

    /// Where the gateway, worker and device binaries are.
    pub fn bin_dir(&self) -> Result<PathBuf> {
        if let Some(dir) = &self.supervisor.bin_dir {
            return Ok(dir.clone());
        }
        let exe = std::env::current_exe().context("locating the switchboard binary")?;
        Ok(exe
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")))
    }

    /// The telnet address users connect to; readiness means it accepts.
    pub fn telnet_addr(&self) -> &str {
        &self.gateway.telnet_listen
    }

    /// The pid file of a running supervisor.
    pub fn pid_file(&self) -> PathBuf {
        self.supervisor.run_dir.join("switchboard.pid")
    }

    /// The state file the supervisor rewrites when a process starts or stops.
    pub fn state_file(&self) -> PathBuf {
        self.supervisor.run_dir.join("state.toml")
    }

    /// The daemon's log.
    pub fn log_file(&self) -> PathBuf {
        self.supervisor.run_dir.join("switchboard.log")
    }
}
