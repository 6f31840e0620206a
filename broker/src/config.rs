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
    /// Tags (RabbitMQ's: `administrator`, `monitoring`, `management`, ...); none given:
    /// `administrator`.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

/// Every setting of a broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the AMQP listener binds (a host name in the file is resolved, see
    /// [`parse_bind`]).
    #[serde(deserialize_with = "deserialize_bind")]
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
    /// Queues one connection may have declared and not yet deleted (until per-vhost and
    /// per-user limits exist); one more is refused as RabbitMQ refuses a vhost's max-queues.
    pub max_queues_per_connection: usize,
    /// Users that seed the user store on first start; when empty, `guest`/`guest`. Each is an
    /// administrator with every permission on `/` unless `tags` says otherwise.
    pub users: Vec<UserConfig>,
    /// Users that may only log in from a loopback address (RabbitMQ's `loopback_users`;
    /// default `["guest"]`, `[]` lets guest in from anywhere). A `[[users]]` entry's
    /// `loopback_only` adds or removes its user.
    pub loopback_users: Vec<String>,
    /// Address of the management HTTP API (RabbitMQ's port 15672); `"off"` in the file (or
    /// the environment, or the flag) turns it off.
    #[serde(deserialize_with = "deserialize_optional_bind")]
    pub http_bind: Option<SocketAddr>,
    /// Address of the Prometheus endpoint (RabbitMQ's port 15692); `"off"` turns it off.
    #[serde(deserialize_with = "deserialize_optional_bind")]
    pub prometheus_bind: Option<SocketAddr>,
    /// TLS: certificate, key, CA, client certificates (the `[tls]` section). Without it there
    /// is no `amqps` listener.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Address of the `amqps` listener (RabbitMQ's port 5671), when `tls` is set; `"off"`
    /// leaves only the plain listener.
    #[serde(deserialize_with = "deserialize_optional_bind")]
    pub amqps_bind: Option<SocketAddr>,
    /// Resident memory, as a fraction of the machine's, above which publishers are blocked
    /// (RabbitMQ's `vm_memory_high_watermark.relative`); 0 turns the memory alarm off.
    pub memory_high_watermark: f64,
    /// The same as an absolute number of bytes (`vm_memory_high_watermark.absolute`); wins
    /// over the relative one when set.
    pub memory_high_watermark_bytes: Option<u64>,
    /// Free space on the data directory's file system below which publishers are blocked
    /// (RabbitMQ's `disk_free_limit.absolute`, 50 MB by default).
    pub disk_free_limit_bytes: u64,
    /// Vhost and user limits applied at every start (the `[limits.vhosts."/"]` and
    /// `[limits.users.NAME]` tables): the API's vhost-limits and user-limits, publish rate
    /// limits included. A limit set here wins over one set through the API at the next start.
    pub limits: LimitsConfig,
}

/// Limits set in the config file, by vhost and by user: name to value (negative: none).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub vhosts: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>>,
    pub users: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>>,
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
            max_queues_per_connection: 100_000,
            users: Vec::new(),
            loopback_users: vec!["guest".into()],
            http_bind: Some(SocketAddr::from(([127, 0, 0, 1], 15672))),
            prometheus_bind: Some(SocketAddr::from(([127, 0, 0, 1], 15692))),
            tls: None,
            amqps_bind: Some(SocketAddr::from(([127, 0, 0, 1], 5671))),
            memory_high_watermark: 0.6,
            memory_high_watermark_bytes: None,
            disk_free_limit_bytes: 50_000_000,
            limits: LimitsConfig::default(),
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
            // Many embedded brokers run at once (tests): no fixed ports. A test that wants
            // the API sets 127.0.0.1:0.
            http_bind: None,
            prometheus_bind: None,
            amqps_bind: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
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
    /// `WARREN_CHANNEL_MAX`, `WARREN_HEARTBEAT`, `WARREN_MAX_MESSAGE_SIZE`,
    /// `WARREN_MAX_QUEUES_PER_CONNECTION`, `WARREN_HTTP_BIND`, `WARREN_PROMETHEUS_BIND`,
    /// `WARREN_AMQPS_BIND`, `WARREN_MEMORY_HIGH_WATERMARK`, `WARREN_DISK_FREE_LIMIT_BYTES`.
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
            self.bind = parse_bind(&v).map_err(|reason| ConfigError::Env {
                var: "WARREN_BIND".into(),
                value: v,
                reason,
            })?;
        }
        for (var, slot) in [
            ("WARREN_HTTP_BIND", &mut self.http_bind),
            ("WARREN_PROMETHEUS_BIND", &mut self.prometheus_bind),
            ("WARREN_AMQPS_BIND", &mut self.amqps_bind),
        ] {
            if let Some(v) = get(var) {
                *slot = parse_optional_bind(&v).map_err(|reason| ConfigError::Env {
                    var: var.into(),
                    value: v,
                    reason,
                })?;
            }
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
        if let Some(v) = get("WARREN_MEMORY_HIGH_WATERMARK") {
            self.memory_high_watermark = parse("WARREN_MEMORY_HIGH_WATERMARK", v)?;
        }
        if let Some(v) = get("WARREN_DISK_FREE_LIMIT_BYTES") {
            self.disk_free_limit_bytes = parse("WARREN_DISK_FREE_LIMIT_BYTES", v)?;
        }
        if let Some(v) = get("WARREN_MAX_QUEUES_PER_CONNECTION") {
            self.max_queues_per_connection = parse("WARREN_MAX_QUEUES_PER_CONNECTION", v)?;
        }
        Ok(())
    }

    /// The memory watermark in bytes (0: no memory alarm).
    pub fn memory_limit(&self) -> u64 {
        match self.memory_high_watermark_bytes {
            Some(b) => b,
            None => crate::alarms::total_memory_bytes().map_or(0, |t| {
                (t as f64 * self.memory_high_watermark.max(0.0)) as u64
            }),
        }
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
                tags: None,
            }]
        } else {
            self.users.clone()
        }
    }
}

/// Reads a listen address: `IP:PORT` (`[::]:5672` for IPv6), or `HOST:PORT` with the host
/// resolved (an IPv4 address preferred, as the clients' default URL is `127.0.0.1`).
pub fn parse_bind(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let expected = "expected IP:PORT or HOST:PORT, for example 127.0.0.1:5672, [::]:5672 or \
                    localhost:5672";
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("no port in '{text}'; {expected}"));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("invalid port '{port}' in '{text}'; {expected}"));
    }
    if host.is_empty() {
        return Err(format!("no host in '{text}'; {expected}"));
    }
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{host}' ({e}); {expected}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("'{host}' resolves to no address; {expected}"))
}

/// A listen address, or `off` (also `none`, `false`, or empty) for a server that is off.
pub fn parse_optional_bind(text: &str) -> Result<Option<SocketAddr>, String> {
    match text.trim() {
        "" | "off" | "none" | "false" => Ok(None),
        t => parse_bind(t).map(Some),
    }
}

fn deserialize_optional_bind<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    parse_optional_bind(&text).map_err(serde::de::Error::custom)
}

fn deserialize_bind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    parse_bind(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_read_from_their_tables() {
        let c: Config = toml::from_str(
            "[limits.vhosts.\"/\"]\nmax-publish-rate = 300\n\
             [limits.users.app]\nmax-publish-bytes-rate = 1000\nmax-channels = 5\n",
        )
        .unwrap();
        assert_eq!(c.limits.vhosts["/"]["max-publish-rate"], 300);
        assert_eq!(c.limits.users["app"]["max-channels"], 5);
        assert!(toml::from_str::<Config>("[limits.queues]\n").is_err());
    }

    #[test]
    fn management_listeners_default_to_rabbitmqs_ports_and_can_be_turned_off() {
        let c = Config::default();
        assert_eq!(c.http_bind, Some("127.0.0.1:15672".parse().unwrap()));
        assert_eq!(c.prometheus_bind, Some("127.0.0.1:15692".parse().unwrap()));
        let mut c: Config =
            toml::from_str("http_bind = \"off\"\nprometheus_bind = \"127.0.0.1:9419\"\n").unwrap();
        assert_eq!(c.http_bind, None);
        assert_eq!(c.prometheus_bind, Some("127.0.0.1:9419".parse().unwrap()));
        c.apply_env(|k| match k {
            "WARREN_HTTP_BIND" => Some("127.0.0.1:0".into()),
            "WARREN_PROMETHEUS_BIND" => Some("off".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.http_bind, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(c.prometheus_bind, None);
        assert!(Config::default()
            .apply_env(|k| (k == "WARREN_HTTP_BIND").then(|| "nowhere".into()))
            .is_err());
    }

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
    fn bind_takes_addresses_and_host_names() {
        assert_eq!(
            parse_bind("[::]:5682").unwrap(),
            "[::]:5682".parse::<SocketAddr>().unwrap()
        );
        let local = parse_bind("localhost:5682").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 5682, "{local}");
        assert!(parse_bind("localhost").unwrap_err().contains("IP:PORT"));
        assert!(parse_bind("localhost:lots").unwrap_err().contains("port"));
        let c: Config = toml::from_str("bind = \"localhost:6001\"\n").unwrap();
        assert_eq!(c.bind.port(), 6001);
        let err = Config::default()
            .apply_env(|k| (k == "WARREN_BIND").then(|| "5672".into()))
            .unwrap_err();
        assert!(err.to_string().contains("IP:PORT"), "{err}");
    }

    #[test]
    fn queue_limit_comes_from_the_file_and_the_environment() {
        assert_eq!(Config::default().max_queues_per_connection, 100_000);
        let mut c: Config = toml::from_str("max_queues_per_connection = 50\n").unwrap();
        assert_eq!(c.max_queues_per_connection, 50);
        c.apply_env(|k| (k == "WARREN_MAX_QUEUES_PER_CONNECTION").then(|| "7".into()))
            .unwrap();
        assert_eq!(c.max_queues_per_connection, 7);
        let err = c
            .apply_env(|k| (k == "WARREN_MAX_QUEUES_PER_CONNECTION").then(|| "-1".into()))
            .unwrap_err();
        assert!(err.to_string().contains("WARREN_MAX_QUEUES_PER_CONNECTION"));
    }

    #[test]
    fn toml_file_sets_fields() {
        let c: Config = toml::from_str("heartbeat = 10\nchannel_max = 16\n").unwrap();
        assert_eq!((c.heartbeat, c.channel_max, c.frame_max), (10, 16, 131_072));
    }
}
