//! Broker settings: defaults that just work, a TOML file, `WARREN_*` environment overrides,
//! and (in the CLI) flags on top.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A user allowed to connect.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct UserConfig {
    /// Login name.
    pub name: String,
    /// Password (PLAIN / AMQPLAIN).
    pub password: String,
    /// Only connections from a loopback address may log in as this user (RabbitMQ's rule for
    /// `guest`).
    #[serde(default)]
    pub loopback_only: bool,
}

/// Every setting of a broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the AMQP listener binds.
    pub bind: SocketAddr,
    /// Where durable data lives.
    pub data_dir: PathBuf,
    /// Store durable definitions and persistent messages in `data_dir`. Off, the broker keeps
    /// everything in memory (embedded brokers in tests).
    pub persistence: bool,
    /// Page cache of the store, in MiB.
    pub store_cache_mb: u64,
    /// Connections held at once; more wait in the accept queue.
    pub max_connections: usize,
    /// Largest frame the broker accepts and proposes in connection.tune.
    pub frame_max: u32,
    /// Highest channel number a connection may open.
    pub channel_max: u16,
    /// Heartbeat interval proposed to clients, in seconds (0 disables).
    pub heartbeat: u16,
    /// Largest message body accepted, in bytes (RabbitMQ's max_message_size).
    pub max_message_size: u64,
    /// Time a client has to finish the handshake, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// Users; when empty, `guest`/`guest` from loopback only.
    pub users: Vec<UserConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 5672)),
            data_dir: PathBuf::from("./warren-data"),
            persistence: true,
            store_cache_mb: 32,
            max_connections: 65_536,
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            max_message_size: 128 * 1024 * 1024,
            handshake_timeout_ms: 10_000,
            users: Vec::new(),
        }
    }
}

/// A setting that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid value {value:?} for {var}: {reason}")]
    Env {
        var: String,
        value: String,
        reason: String,
    },
}

impl Config {
    /// A config for tests and embedding: an ephemeral port on loopback, everything in memory.
    pub fn ephemeral() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            persistence: false,
            ..Config::default()
        }
    }

    /// Defaults, then the TOML file if given, then `WARREN_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    source,
                })?
            }
            None => Config::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        Ok(config)
    }

    /// Applies `WARREN_BIND`, `WARREN_DATA_DIR`, `WARREN_MAX_CONNECTIONS`, `WARREN_FRAME_MAX`,
    /// `WARREN_CHANNEL_MAX`, `WARREN_HEARTBEAT`, `WARREN_MAX_MESSAGE_SIZE`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(var: &str, value: String) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.parse().map_err(|e: T::Err| ConfigError::Env {
                var: var.to_owned(),
                value,
                reason: e.to_string(),
            })
        }
        if let Some(v) = get("WARREN_BIND") {
            self.bind = parse("WARREN_BIND", v)?;
        }
        if let Some(v) = get("WARREN_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("WARREN_MAX_CONNECTIONS") {
            self.max_connections = parse("WARREN_MAX_CONNECTIONS", v)?;
        }
        if let Some(v) = get("WARREN_FRAME_MAX") {
            self.frame_max = parse("WARREN_FRAME_MAX", v)?;
        }
        if let Some(v) = get("WARREN_CHANNEL_MAX") {
            self.channel_max = parse("WARREN_CHANNEL_MAX", v)?;
        }
        if let Some(v) = get("WARREN_HEARTBEAT") {
            self.heartbeat = parse("WARREN_HEARTBEAT", v)?;
        }
        if let Some(v) = get("WARREN_MAX_MESSAGE_SIZE") {
            self.max_message_size = parse("WARREN_MAX_MESSAGE_SIZE", v)?;
        }
        Ok(())
    }

    /// The handshake timeout as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// The configured users, or the default guest.
    pub fn effective_users(&self) -> Vec<UserConfig> {
        if self.users.is_empty() {
            vec![UserConfig {
                name: "guest".into(),
                password: "guest".into(),
                loopback_only: true,
            }]
        } else {
            self.users.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults() {
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "WARREN_BIND" => Some("127.0.0.1:6000".into()),
            "WARREN_HEARTBEAT" => Some("5".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.bind.port(), 6000);
        assert_eq!(c.heartbeat, 5);
    }

    #[test]
    fn bad_environment_value_is_named() {
        let err = Config::default()
            .apply_env(|k| (k == "WARREN_FRAME_MAX").then(|| "lots".into()))
            .unwrap_err();
        assert!(err.to_string().contains("WARREN_FRAME_MAX"));
    }

    #[test]
    fn toml_file_sets_fields() {
        let c: Config = toml::from_str("heartbeat = 10\nchannel_max = 16\n").unwrap();
        assert_eq!((c.heartbeat, c.channel_max, c.frame_max), (10, 16, 131_072));
    }
}
