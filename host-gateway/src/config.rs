//! The gateway's configuration: the `[gateway]` section of `switchboard.toml`, its defaults
//! and the loader. Command-line overrides are `main.rs`'s business, not this module's.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Gateway id: 1, so the first gateway's client ids start with `0001`.
pub const DEFAULT_ID: u16 = 1;
/// Loopback only: a fresh install must not be reachable from other hosts.
pub const DEFAULT_TELNET_LISTEN: &str = "127.0.0.1:8480";
/// Loopback only, like telnet; devices on the LAN need an explicit `0.0.0.0`.
pub const DEFAULT_DEVICE_LISTEN: &str = "127.0.0.1:8481";
/// Loopback only: the worker link carries every message and must stay private.
pub const DEFAULT_WORKER_LISTEN: &str = "127.0.0.1:8482";
/// A development secret, known to everyone; deployments change it.
pub const DEFAULT_SECRET: &str = "switchboard-dev-secret";
/// Long enough for any chat line a person types, short enough to bound a user's buffer.
pub const DEFAULT_MAX_LINE: usize = 4096;
/// About a second of a busy chat for one client; a client further behind is stuck, not slow.
pub const DEFAULT_CLIENT_QUEUE: usize = 1024;
/// Enough to ride out a worker restart (`switchboard reload`) under load, bounded in memory.
pub const DEFAULT_PENDING_EVENTS: usize = 10_000;
/// Unacked events per worker link. A worker acks each event as it finishes it, so this
/// only needs to cover a link's round trip at a busy rate; it also bounds what a crashed
/// worker hands back to the pending buffer (where redelivered events are held past its limit).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1000;
/// Times an event is redelivered after its worker died on it before it is dropped as
/// poison: rides out a couple of unrelated crashes or kills, stops a crash loop quickly.
pub const DEFAULT_MAX_REDELIVERIES: u32 = 3;
/// Quiet time before a peer is pinged. GatewayWorker's usual 25 s: well inside the idle
/// timeouts of NAT boxes and proxies (30 s and up), rare enough to cost nothing.
pub const DEFAULT_PING_INTERVAL_MS: u64 = 25_000;
/// Silent intervals before a device is closed. Two, so one lost ping or pong is forgiven
/// and a dead device is noticed within a minute or so at the default interval.
pub const DEFAULT_PING_NOT_RESPONSE_LIMIT: u32 = 2;
/// Silent intervals before a telnet user is closed: never. A person reading the chat sends
/// nothing for as long as they like; a dead peer's socket still fails, once TCP gives up
/// retransmitting the pings to it (minutes, the kernel's retransmission limit).
pub const DEFAULT_TELNET_IDLE_LIMIT: u32 = 0;
/// Starts every discovery key, the same in every gateway and worker of one cluster; the
/// same default as the worker's store prefix, so one memcached serves both.
pub const DEFAULT_DISCOVERY_PREFIX: &str = "switchboard:";
/// One thread: every wake-up stays on it, which costs a message least CPU (measured with
/// `cargo xtask bench`: 27 against 46 µs per private message with two threads); a busier
/// machine runs more gateway processes, or sets more threads.
pub const DEFAULT_THREADS: usize = 1;
/// The usual rate of USB CDC-ACM boards and of most UART consoles.
pub const DEFAULT_BAUD: u32 = 115_200;

/// The `[gateway]` section. Every key is optional; unknown keys are an error, so a typo
/// is caught at startup instead of silently using a default.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// This gateway's id: the top 16 bits of every client id it hands out.
    pub id: u16,
    /// Address telnet users connect to.
    pub telnet_listen: String,
    /// Address devices speaking the framed protocol over TCP connect to.
    pub device_listen: String,
    /// Address workers connect to.
    pub worker_listen: String,
    /// Shared secret a worker must present.
    pub secret: String,
    /// Longest telnet line in bytes; longer lines are refused with a `!` line.
    pub max_line: usize,
    /// Messages queued for one client before it is disconnected as too slow.
    pub client_queue: usize,
    /// Events held while no worker can take them; past it a client's message is refused.
    /// Connect, Close and redelivered events are held past it.
    pub pending_events: usize,
    /// Unacked events one worker link may hold; past it, its events wait in the buffer.
    pub max_in_flight: usize,
    /// Redeliveries of an event whose worker died on it before it is dropped as poison.
    pub max_redeliveries: u32,
    /// Milliseconds a peer may stay silent before it is pinged (a `Ping` frame to a
    /// device, an invisible IAC NOP to a telnet user), and again every interval it stays
    /// silent. 0 turns heartbeats off.
    pub ping_interval_ms: u64,
    /// A device (TCP or serial) silent for this many intervals is closed; any valid frame,
    /// a `Pong` or anything else, counts as an answer. 0 never closes, only pings.
    pub ping_not_response_limit: u32,
    /// A telnet user who sends no byte for this many intervals is closed; 0 never closes.
    pub telnet_idle_limit: u32,
    /// Serial ports to open.
    pub serial: Vec<SerialConfig>,
    /// Runtime threads: 1 runs everything on one thread; 0 one per CPU.
    pub threads: usize,
    /// memcached servers to announce this gateway on, for workers to find it; empty: the
    /// workers' static `gateways` lists are the only way to find it.
    pub discovery: Vec<String>,
    /// Prefix of the discovery keys.
    pub discovery_prefix: String,
    /// The worker-link address announced (`host:port` other hosts reach); empty: the bound
    /// `worker_listen` address, which must then not be a wildcard.
    pub announce: String,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            id: DEFAULT_ID,
            telnet_listen: DEFAULT_TELNET_LISTEN.to_owned(),
            device_listen: DEFAULT_DEVICE_LISTEN.to_owned(),
            worker_listen: DEFAULT_WORKER_LISTEN.to_owned(),
            secret: DEFAULT_SECRET.to_owned(),
            max_line: DEFAULT_MAX_LINE,
            client_queue: DEFAULT_CLIENT_QUEUE,
            pending_events: DEFAULT_PENDING_EVENTS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_redeliveries: DEFAULT_MAX_REDELIVERIES,
            ping_interval_ms: DEFAULT_PING_INTERVAL_MS,
            ping_not_response_limit: DEFAULT_PING_NOT_RESPONSE_LIMIT,
            telnet_idle_limit: DEFAULT_TELNET_IDLE_LIMIT,
            serial: Vec::new(),
            threads: DEFAULT_THREADS,
            discovery: Vec::new(),
            discovery_prefix: DEFAULT_DISCOVERY_PREFIX.to_owned(),
            announce: String::new(),
        }
    }
}

/// One `[[gateway.serial]]` entry.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    /// Device path (`/dev/ttyACM0`, or a stable `/dev/serial/by-id/...` symlink).
    pub path: PathBuf,
    /// Baud rate.
    #[serde(default = "default_baud")]
    pub baud: u32,
}

fn default_baud() -> u32 {
    DEFAULT_BAUD
}

/// Why a configuration could not be loaded. Causes are part of the message rather than
/// `source()`, so an error chain prints them once.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// The file is not valid TOML, or `[gateway]` has a wrong or unknown key.
    #[error("invalid config file {}: {cause}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause, with line and column.
        cause: toml::de::Error,
    },
    /// A value is out of range.
    #[error("invalid config{}: gateway.{key} {reason}", path.as_ref().map(|p| format!(" file {}", p.display())).unwrap_or_default())]
    Invalid {
        /// The file, if the value came from one.
        path: Option<PathBuf>,
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The whole file as far as the gateway cares: the other sections belong to other processes.
#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    gateway: GatewayConfig,
}

impl GatewayConfig {
    /// Reads `path` and returns its `[gateway]` section (defaults if there is none).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        let config = Self::parse(&text).map_err(|cause| ConfigError::Parse {
            path: path.to_owned(),
            cause,
        })?;
        config.validate().map_err(|err| match err {
            ConfigError::Invalid { key, reason, .. } => ConfigError::Invalid {
                path: Some(path.to_owned()),
                key,
                reason,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Parses TOML text and returns its `[gateway]` section, without validating values.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str::<ConfigFile>(text).map(|file| file.gateway)
    }

    /// Checks the values a gateway cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason| {
            Err(ConfigError::Invalid {
                path: None,
                key,
                reason,
            })
        };
        if self.max_line == 0 {
            return invalid("max_line", "must be at least 1");
        }
        if self.client_queue == 0 {
            return invalid("client_queue", "must be at least 1");
        }
        if self.max_in_flight == 0 {
            return invalid("max_in_flight", "must be at least 1");
        }
        if self.secret.is_empty() {
            return invalid("secret", "must not be empty");
        }
        if !self.discovery.is_empty() && self.announce.is_empty() {
            let wildcard = self
                .worker_listen
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|addr| addr.ip().is_unspecified());
            if wildcard {
                return invalid(
                    "announce",
                    "must be set (the address workers reach) when worker_listen is a wildcard and discovery is on",
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_config_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../switchboard.toml");
        let config = GatewayConfig::load(&path).expect("repo config loads");
        assert_eq!(config, GatewayConfig::default());
    }

    #[test]
    fn cluster_example_gateways_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/cluster");
        for (file, id) in [("host-a.toml", 1), ("host-b.toml", 2)] {
            let config = GatewayConfig::load(&dir.join(file)).expect(file);
            assert_eq!(config.id, id);
            assert_eq!(config.discovery.len(), 2, "{file}");
        }
    }

    #[test]
    fn discovery_on_a_wildcard_worker_listen_needs_announce() {
        let mut config = GatewayConfig::parse(
            "[gateway]\nworker_listen = '0.0.0.0:8482'\ndiscovery = ['10.0.0.1:11211']\n",
        )
        .expect("parses");
        let err = config.validate().expect_err("nothing to announce");
        assert!(err.to_string().contains("gateway.announce"), "{err}");
        config.announce = "10.0.0.1:8482".into();
        config.validate().expect("announce given");
    }

    #[test]
    fn other_sections_are_ignored_and_serial_ports_parse() {
        let config = GatewayConfig::parse(
            "[worker]\nstore = 'sled'\n[gateway]\nid = 7\n[[gateway.serial]]\npath = '/dev/ttyACM0'\n\
             [[gateway.serial]]\npath = '/dev/ttyUSB0'\nbaud = 9600\n[supervisor]\nrun_dir = 'x'\n",
        )
        .expect("parses");
        assert_eq!(config.id, 7);
        assert_eq!(config.max_line, DEFAULT_MAX_LINE);
        assert_eq!(
            config.serial,
            vec![
                SerialConfig {
                    path: "/dev/ttyACM0".into(),
                    baud: DEFAULT_BAUD
                },
                SerialConfig {
                    path: "/dev/ttyUSB0".into(),
                    baud: 9600
                },
            ]
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[gateway]\nmax_lines = 5\n").expect("write");
        let err = GatewayConfig::load(&path).expect_err("unknown key refused");
        let text = err.to_string();
        assert!(text.contains("bad.toml"), "{text}");
        assert!(text.contains("max_lines"), "{text}");
    }

    #[test]
    fn zero_queue_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("zero.toml");
        std::fs::write(&path, "[gateway]\nclient_queue = 0\n").expect("write");
        let text = GatewayConfig::load(&path).expect_err("refused").to_string();
        assert!(
            text.contains("zero.toml") && text.contains("client_queue"),
            "{text}"
        );
    }
}
