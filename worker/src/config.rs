//! The worker's configuration: the `[worker]` section of `switchboard.toml`.
//!
//! Owns the defaults and the loader; it does not read other sections (the gateway and the
//! supervisor own theirs) and it does not apply CLI overrides (that is `main.rs`'s job).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Gateway a worker links to when the config names none: the gateway's default `worker_listen`.
pub const DEFAULT_GATEWAY: &str = "127.0.0.1:8482";
/// The development secret shipped in `switchboard.toml`; fine on a laptop, nowhere else.
pub const DEFAULT_SECRET: &str = "switchboard-dev-secret";
/// Relative to the working directory, like the supervisor's `run_dir`, so `switchboard start`
/// from the repo root keeps everything in one place (and `/data` is git-ignored).
pub const DEFAULT_DATA_DIR: &str = "data";
/// memcached's own default port on this host: what `apt-get install memcached` runs.
pub const DEFAULT_MEMCACHED: &str = "127.0.0.1:11211";
/// Starts every key this chat stores in memcached, so it can share a server with others.
pub const DEFAULT_MEMCACHED_PREFIX: &str = "switchboard:";
/// memcached keys are at most 250 bytes; the prefix leaves room for the longest key part
/// (`offline:` + an escaped 24-byte device id + two counters).
pub const MAX_MEMCACHED_PREFIX: usize = 100;

/// Store backends a worker can use.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// sled, embedded in the worker process; one process per data directory.
    #[default]
    Sled,
    /// memcached servers shared by several workers (`memcached`, `memcached_prefix`).
    Memcached,
}

/// Where a worker sends uid and group commands (`sendToUid`, `sendToGroup`).
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// Only to the gateways that hold a recipient, from the table the gateways keep every
    /// worker up to date with.
    #[default]
    Targeted,
    /// To every gateway, as GatewayWorker does: for comparison and for diagnosing the table.
    Everywhere,
}

/// The `[worker]` section. Every key is optional; unknown keys are an error so a typo is
/// noticed instead of silently falling back to a default.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Gateways to link to (their `worker_listen` addresses).
    pub gateways: Vec<String>,
    /// Shared secret; must match the gateways' `secret`.
    pub secret: String,
    /// Store backend.
    pub store: StoreKind,
    /// The store's data directory (sled).
    pub data_dir: PathBuf,
    /// memcached servers (`host:port`), in the same order in every worker.
    pub memcached: Vec<String>,
    /// Prefix of every memcached key.
    pub memcached_prefix: String,
    /// Where uid and group commands go.
    pub routing: Routing,
    /// Runtime threads: 1 (the default) runs everything on one thread; 0 one per CPU.
    pub threads: usize,
    /// memcached servers where gateways announce themselves; the worker links to every
    /// gateway found there as well as to `gateways`, and drops those that leave.
    pub discovery: Vec<String>,
    /// Prefix of the discovery keys; the same as the gateways'.
    pub discovery_prefix: String,
    /// Name the worker gives itself in the link `Hello`, for the gateways' logs. Not a file
    /// key: it comes from `--name` (default `worker-PID`).
    #[serde(skip)]
    pub name: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            gateways: vec![DEFAULT_GATEWAY.to_string()],
            secret: DEFAULT_SECRET.to_string(),
            store: StoreKind::Sled,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            memcached: vec![DEFAULT_MEMCACHED.to_string()],
            memcached_prefix: DEFAULT_MEMCACHED_PREFIX.to_string(),
            routing: Routing::Targeted,
            threads: 1,
            discovery: Vec::new(),
            discovery_prefix: DEFAULT_MEMCACHED_PREFIX.to_string(),
            name: default_name(),
        }
    }
}

/// `worker-PID`: unique enough among the workers of one host for reading logs.
pub fn default_name() -> String {
    format!("worker-{}", std::process::id())
}

/// Why a config file could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or `[worker]` has a bad or unknown key.
    #[error("invalid config file {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: toml::de::Error,
    },
}

impl WorkerConfig {
    /// Reads `path` and returns its `[worker]` section (defaults when the section is absent).
    pub fn load(path: &Path) -> Result<WorkerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parses a whole config file's text and returns its `[worker]` section.
    pub fn from_toml(text: &str) -> Result<WorkerConfig, toml::de::Error> {
        let mut table: toml::Table = toml::from_str(text)?;
        let config: WorkerConfig = match table.remove("worker") {
            Some(section) => section.try_into()?,
            None => WorkerConfig::default(),
        };
        config
            .validate()
            .map_err(<toml::de::Error as serde::de::Error>::custom)?;
        Ok(config)
    }

    /// What serde cannot check alone: the keys the chosen store needs.
    pub fn validate(&self) -> Result<(), String> {
        if self.store == StoreKind::Memcached && self.memcached.is_empty() {
            return Err(
                "[worker] store = \"memcached\" needs at least one server in `memcached`".into(),
            );
        }
        if self.gateways.is_empty() && self.discovery.is_empty() {
            return Err(
                "[worker] needs gateways to link to: list them in `gateways`, or name discovery servers in `discovery`".into(),
            );
        }
        for (key, servers) in [
            ("memcached", &self.memcached),
            ("discovery", &self.discovery),
        ] {
            if let Some(bad) = servers
                .iter()
                .find(|s| s.trim().is_empty() || s.contains(char::is_whitespace))
            {
                return Err(format!(
                    "[worker] {key}: bad server address {bad:?} (want host:port)"
                ));
            }
        }
        for (key, prefix) in [
            ("memcached_prefix", &self.memcached_prefix),
            ("discovery_prefix", &self.discovery_prefix),
        ] {
            if prefix.len() > MAX_MEMCACHED_PREFIX
                || prefix.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(format!(
                    "[worker] {key} {prefix:?}: at most {MAX_MEMCACHED_PREFIX} bytes, no spaces or control characters"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_example_workers_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/cluster");
        for file in ["host-a.toml", "host-b.toml", "host-c.toml"] {
            let config = WorkerConfig::load(&dir.join(file)).expect(file);
            assert!(config.gateways.is_empty(), "{file}: found by discovery");
            assert_eq!(config.discovery.len(), 2, "{file}");
            assert_eq!(config.store, StoreKind::Memcached, "{file}");
        }
    }

    #[test]
    fn a_worker_needs_gateways_or_discovery() {
        let err =
            WorkerConfig::from_toml("[worker]\ngateways = []\n").expect_err("nothing to link");
        assert!(err.to_string().contains("discovery"), "{err}");
        let config = WorkerConfig::from_toml("[worker]\ngateways = []\ndiscovery = ['h:1']\n")
            .expect("discovery alone is enough");
        assert_eq!(config.routing, Routing::Targeted);
    }

    #[test]
    fn repo_config_matches_defaults() {
        let text = include_str!("../../switchboard.toml");
        let config = WorkerConfig::from_toml(text).unwrap();
        let defaults = WorkerConfig::default();
        assert_eq!(config.gateways, defaults.gateways);
        assert_eq!(config.secret, defaults.secret);
        assert_eq!(config.store, defaults.store);
        assert_eq!(config.data_dir, defaults.data_dir);
        assert_eq!(config.memcached, defaults.memcached);
        assert_eq!(config.memcached_prefix, defaults.memcached_prefix);
    }

    #[test]
    fn memcached_store_is_chosen_and_checked() {
        let config = WorkerConfig::from_toml(
            "[worker]\nstore = \"memcached\"\nmemcached = [\"10.0.0.5:11211\", \"m2:11211\"]\nmemcached_prefix = \"chat1:\"\n",
        )
        .unwrap();
        assert_eq!(config.store, StoreKind::Memcached);
        assert_eq!(config.memcached, ["10.0.0.5:11211", "m2:11211"]);
        assert_eq!(config.memcached_prefix, "chat1:");
        let err = WorkerConfig::from_toml("[worker]\nstore = \"memcached\"\nmemcached = []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least one server"), "{err}");
        // Without store = "memcached" an empty list is not used, so not an error.
        WorkerConfig::from_toml("[worker]\nmemcached = []\n").unwrap();
        let err = WorkerConfig::from_toml("[worker]\nmemcached_prefix = \"a b\"\n").unwrap_err();
        assert!(err.to_string().contains("memcached_prefix"), "{err}");
        let err = WorkerConfig::from_toml("[worker]\nstore = \"memcached\"\nmemcached = [\"\"]\n")
            .unwrap_err();
        assert!(err.to_string().contains("bad server address"), "{err}");
    }

    #[test]
    fn missing_keys_take_defaults_and_other_sections_are_ignored() {
        let config = WorkerConfig::from_toml(
            "[gateway]\nid = 7\nnonsense = 1\n[worker]\ngateways = [\"10.0.0.1:1\", \"h:2\"]\n",
        )
        .unwrap();
        assert_eq!(config.gateways, ["10.0.0.1:1", "h:2"]);
        assert_eq!(config.secret, DEFAULT_SECRET);
        assert_eq!(
            WorkerConfig::from_toml("").unwrap().gateways,
            [DEFAULT_GATEWAY]
        );
    }

    #[test]
    fn unknown_keys_and_stores_are_refused() {
        let err = WorkerConfig::from_toml("[worker]\nsecrett = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("secrett"), "{err}");
        let err = WorkerConfig::from_toml("[worker]\nstore = \"redis\"\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("redis") && text.contains("`sled`") && text.contains("`memcached`"),
            "{text}"
        );
        assert!(WorkerConfig::from_toml("[worker]\nname = \"w\"\n").is_err());
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let err = WorkerConfig::load(&missing).unwrap_err();
        assert!(err.to_string().contains("nope.toml"), "{err}");
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[worker]\ngateways = 3\n").unwrap();
        let err = WorkerConfig::load(&bad).unwrap_err();
        assert!(err.to_string().contains("bad.toml"), "{err}");
    }
}
