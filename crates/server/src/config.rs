//! Configuration in two stages (as ripgrep's `lowargs`/`hiargs`).
//!
//! Stage one is raw: [`FileConfig`] mirrors `config/switchyard.toml` field for
//! field, every field optional, unknown keys rejected; [`Overrides`] holds what
//! the command line and `SWITCHYARD_*` environment variables set. Stage two is
//! [`Config`]: each value taken from the first of flag/env, file, built-in
//! default that has it, then validated into the types the broker runs on
//! (`SocketAddr`, `Duration`, `NonZero*`). Every error names the option as the
//! user wrote it (`--amqp` or `amqp.listen in FILE`).
//!
//! This module does no I/O besides reading the config file; it knows nothing of
//! sockets, the store or the runtime.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use crate::config_admin::{
    AuthConfig, AuthFile, HttpFile, HttpKind, HttpListenerConfig,
};
pub(crate) use crate::config_mqtt::{MqttFile, MqttListenerConfig};
pub(crate) use crate::config_stomp::{
    StompFile, StompListenerConfig, WebFile, WebKind, WebListenerConfig,
};

/// Where the config file is looked for when `--config` is not given.
pub(crate) const DEFAULT_PATH: &str = "config/switchyard.toml";

/// The word that disables a listener in place of an address.
pub(crate) const DISABLED: &str = "none";
/// AMQP 0-9-1 `frame-min-size`: no peer may be offered a smaller frame.
const AMQP_FRAME_MIN: u32 = 4096;

// Built-in defaults; `config/switchyard.toml` repeats them (a test checks).
const DEFAULT_DATA_DIR: &str = "./data";
const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_AMQP_LISTEN: &str = "127.0.0.1:5672";
const DEFAULT_AMQP_FRAME_MAX: u32 = 131_072;
const DEFAULT_AMQP_CHANNEL_MAX: u16 = 2_047;
const DEFAULT_AMQP_HEARTBEAT: u16 = 60;
const DEFAULT_AMQP_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_AMQP_MAX_CONNECTIONS: usize = 65_536;
const DEFAULT_AMQP_MAX_MESSAGE_SIZE: u64 = 128 << 20;
const DEFAULT_AMQP_MAX_CONNECTIONS_PER_IP: usize = 4_096;
const DEFAULT_AMQP_MAX_CONSUMERS_PER_CHANNEL: usize = 65_536;
/// One above the largest `basic.qos` prefetch count (a `u16`), so the cap
/// never lowers a prefetch a client asked for; it bounds the channels that
/// asked for none.
const DEFAULT_AMQP_MAX_UNACKED_PER_CHANNEL: u32 = 65_536;
const DEFAULT_MAX_QUEUES_PER_VHOST: usize = 100_000;

/// `config/switchyard.toml` as written: every key optional.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    #[serde(default)]
    pub(crate) server: ServerFile,
    #[serde(default)]
    pub(crate) amqp: AmqpFile,
    #[serde(default)]
    pub(crate) mqtt: MqttFile,
    #[serde(default)]
    pub(crate) stomp: StompFile,
    #[serde(default)]
    pub(crate) web_stomp: WebFile,
    #[serde(default)]
    pub(crate) web_mqtt: WebFile,
    #[serde(default)]
    pub(crate) management: HttpFile,
    #[serde(default)]
    pub(crate) prometheus: HttpFile,
    #[serde(default)]
    pub(crate) auth: AuthFile,
}

/// `[server]`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerFile {
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) shutdown_timeout_ms: Option<u64>,
    pub(crate) max_queues_per_vhost: Option<usize>,
    pub(crate) consumer_timeout_ms: Option<u64>,
    pub(crate) flow_backlog: Option<usize>,
    pub(crate) tcp_recv_buffer: Option<usize>,
}

/// `[amqp]`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AmqpFile {
    pub(crate) listen: Option<String>,
    pub(crate) frame_max: Option<u32>,
    pub(crate) channel_max: Option<u16>,
    pub(crate) heartbeat: Option<u16>,
    pub(crate) handshake_timeout_ms: Option<u64>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_message_size: Option<u64>,
    pub(crate) max_connections_per_ip: Option<usize>,
    pub(crate) max_consumers_per_channel: Option<usize>,
    pub(crate) max_unacked_per_channel: Option<u32>,
}

/// What the command line and environment set; `None` defers to the file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Overrides {
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) amqp: Option<String>,
    pub(crate) amqp_heartbeat: Option<u16>,
    pub(crate) amqp_frame_max: Option<u32>,
    pub(crate) mqtt: Option<String>,
    pub(crate) stomp: Option<String>,
    pub(crate) web_stomp: Option<String>,
    pub(crate) web_mqtt: Option<String>,
    pub(crate) management: Option<String>,
    pub(crate) prometheus: Option<String>,
    pub(crate) default_user: Option<String>,
    pub(crate) default_pass: Option<String>,
}

/// A parsed config file and where it came from (`None`: no file, built-in
/// defaults only).
#[derive(Debug, Default, Clone)]
pub(crate) struct LoadedFile {
    pub(crate) config: FileConfig,
    pub(crate) path: Option<PathBuf>,
}

/// The validated configuration the broker runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) server: ServerConfig,
    pub(crate) amqp: AmqpListenerConfig,
    pub(crate) mqtt: MqttListenerConfig,
    pub(crate) stomp: StompListenerConfig,
    pub(crate) web_stomp: WebListenerConfig,
    pub(crate) web_mqtt: WebListenerConfig,
    pub(crate) management: HttpListenerConfig,
    pub(crate) prometheus: HttpListenerConfig,
    pub(crate) auth: AuthConfig,
}

/// Process-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerConfig {
    /// Directory of the durable store.
    pub(crate) data_dir: PathBuf,
    /// How long shutdown waits for connections before flushing anyway.
    pub(crate) shutdown_timeout: Duration,
    /// Most queues one vhost may hold.
    pub(crate) max_queues_per_vhost: NonZeroUsize,
    /// A delivery left unacknowledged this long closes its channel (406);
    /// `None` never.
    pub(crate) consumer_timeout: Option<Duration>,
    /// Ready messages above which a queue with consumers pauses its
    /// publishers that consume nothing (0: never).
    pub(crate) flow_backlog: usize,
    /// Accepted sockets' kernel receive buffer in bytes; `None`: the OS's
    /// autotuning.
    pub(crate) tcp_recv_buffer: Option<usize>,
}

/// The AMQP 0-9-1 listener and the limits it offers each connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AmqpListenerConfig {
    /// `None`: the listener is disabled.
    pub(crate) listen: Option<SocketAddr>,
    /// Largest frame offered in `connection.tune`; at least 4096.
    pub(crate) frame_max: u32,
    /// Most channels offered in `connection.tune`.
    pub(crate) channel_max: NonZeroU16,
    /// Heartbeat proposed in `connection.tune`, in seconds; 0 proposes none.
    pub(crate) heartbeat: u16,
    /// Deadline for the handshake up to `connection.open`.
    pub(crate) handshake_timeout: Duration,
    /// Most simultaneous connections.
    pub(crate) max_connections: NonZeroUsize,
    /// Largest message body accepted, in bytes.
    pub(crate) max_message_size: NonZeroU64,
    /// Most simultaneous connections from one source address.
    pub(crate) max_connections_per_ip: NonZeroUsize,
    /// Most consumers on one channel.
    pub(crate) max_consumers_per_channel: NonZeroUsize,
    /// Most unacknowledged consumer deliveries on one channel, whatever its
    /// prefetch: beyond it the channel's consumers wait for acks.
    pub(crate) max_unacked_per_channel: NonZeroU32,
}

/// An invalid option value, with the option named as the user set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Read the config file: `explicit` if given (it must exist), else
/// [`DEFAULT_PATH`] if it exists, else none.
pub(crate) fn load_file(explicit: Option<&Path>) -> anyhow::Result<LoadedFile> {
    let path = match explicit {
        Some(path) => path.to_owned(),
        None if Path::new(DEFAULT_PATH).is_file() => PathBuf::from(DEFAULT_PATH),
        None => return Ok(LoadedFile::default()),
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let config =
        parse_file(&text).with_context(|| format!("invalid config file {}", path.display()))?;
    Ok(LoadedFile {
        config,
        path: Some(path),
    })
}

/// Parse config file text.
pub(crate) fn parse_file(text: &str) -> Result<FileConfig, toml::de::Error> {
    toml::from_str(text)
}

/// One option: its key in the file, and its flag and variable if it has them.
#[derive(Clone, Copy)]
pub(crate) struct Key {
    pub(crate) file: &'static str,
    pub(crate) flag: Option<(&'static str, &'static str)>,
}

const DATA_DIR: Key = Key {
    file: "server.data_dir",
    flag: Some(("--data-dir", "SWITCHYARD_DATA_DIR")),
};
const SHUTDOWN_TIMEOUT: Key = Key {
    file: "server.shutdown_timeout_ms",
    flag: None,
};
const AMQP_LISTEN: Key = Key {
    file: "amqp.listen",
    flag: Some(("--amqp", "SWITCHYARD_AMQP")),
};
const AMQP_FRAME_MAX: Key = Key {
    file: "amqp.frame_max",
    flag: Some(("--amqp-frame-max", "SWITCHYARD_AMQP_FRAME_MAX")),
};
const AMQP_CHANNEL_MAX: Key = Key {
    file: "amqp.channel_max",
    flag: None,
};
const AMQP_HANDSHAKE_TIMEOUT: Key = Key {
    file: "amqp.handshake_timeout_ms",
    flag: None,
};
const AMQP_MAX_CONNECTIONS: Key = Key {
    file: "amqp.max_connections",
    flag: None,
};
const AMQP_MAX_MESSAGE_SIZE: Key = Key {
    file: "amqp.max_message_size",
    flag: None,
};
const AMQP_MAX_CONNECTIONS_PER_IP: Key = Key {
    file: "amqp.max_connections_per_ip",
    flag: None,
};
const AMQP_MAX_CONSUMERS_PER_CHANNEL: Key = Key {
    file: "amqp.max_consumers_per_channel",
    flag: None,
};
const AMQP_MAX_UNACKED_PER_CHANNEL: Key = Key {
    file: "amqp.max_unacked_per_channel",
    flag: None,
};
const MAX_QUEUES_PER_VHOST: Key = Key {
    file: "server.max_queues_per_vhost",
    flag: None,
};

/// RabbitMQ's `consumer_timeout` default: 30 minutes.
const DEFAULT_CONSUMER_TIMEOUT_MS: u64 = 1_800_000;

/// Where a value came from.
#[derive(Clone, Copy)]
pub(crate) enum Origin {
    Flag,
    File,
    Default,
}

/// Picks each value from its highest-precedence source and words errors.
pub(crate) struct Resolver<'a> {
    file_path: Option<&'a Path>,
}

impl Resolver<'_> {
    pub(crate) fn pick<T>(&self, flag: Option<T>, file: Option<T>, default: T) -> (T, Origin) {
        match (flag, file) {
            (Some(v), _) => (v, Origin::Flag),
            (None, Some(v)) => (v, Origin::File),
            (None, None) => (default, Origin::Default),
        }
    }

    pub(crate) fn error(
        &self,
        key: Key,
        origin: Origin,
        value: impl fmt::Debug,
        problem: &str,
    ) -> ConfigError {
        let place = match (origin, key.flag) {
            (Origin::Flag, Some((flag, env))) => format!("{flag} (or {env})"),
            (Origin::File, _) => match self.file_path {
                Some(path) => format!("{} in {}", key.file, path.display()),
                None => key.file.to_owned(),
            },
            _ => format!("{} (built-in default)", key.file),
        };
        ConfigError(format!("invalid value {value:?} for {place}: {problem}"))
    }

    pub(crate) fn at_least<T: PartialOrd + Copy + fmt::Display + fmt::Debug>(
        &self,
        key: Key,
        (value, origin): (T, Origin),
        min: T,
    ) -> Result<T, ConfigError> {
        if value >= min {
            Ok(value)
        } else {
            Err(self.error(key, origin, value, &format!("must be at least {min}")))
        }
    }

    pub(crate) fn millis(&self, key: Key, picked: (u64, Origin)) -> Result<Duration, ConfigError> {
        self.at_least(key, picked, 1).map(Duration::from_millis)
    }
}

/// A duration as the milliseconds a file states it in.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Parse a listener address: an IP socket address, or `none`.
pub(crate) fn parse_listen(text: &str) -> Result<Option<SocketAddr>, &'static str> {
    let text = text.trim();
    if text.eq_ignore_ascii_case(DISABLED) {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        "expected an IP address and port such as 127.0.0.1:5672, or \"none\" to disable the listener"
    })
}

impl Config {
    /// Merge `overrides` over `file` over the built-in defaults, and validate.
    pub(crate) fn resolve(file: &LoadedFile, overrides: &Overrides) -> Result<Self, ConfigError> {
        let r = Resolver {
            file_path: file.path.as_deref(),
        };
        let (server, amqp) = (&file.config.server, &file.config.amqp);

        let data_dir = r.pick(
            overrides.data_dir.clone(),
            server.data_dir.clone(),
            PathBuf::from(DEFAULT_DATA_DIR),
        );
        if data_dir.0.as_os_str().is_empty() {
            return Err(r.error(DATA_DIR, data_dir.1, "", "must not be empty"));
        }
        let shutdown_timeout = r.pick(
            None,
            server.shutdown_timeout_ms,
            DEFAULT_SHUTDOWN_TIMEOUT_MS,
        );

        let listen = r.pick(
            overrides.amqp.clone(),
            amqp.listen.clone(),
            DEFAULT_AMQP_LISTEN.to_owned(),
        );
        let listen =
            parse_listen(&listen.0).map_err(|p| r.error(AMQP_LISTEN, listen.1, &listen.0, p))?;
        let frame_max = r.pick(
            overrides.amqp_frame_max,
            amqp.frame_max,
            DEFAULT_AMQP_FRAME_MAX,
        );
        let channel_max = r.pick(None, amqp.channel_max, DEFAULT_AMQP_CHANNEL_MAX);
        let heartbeat = r.pick(
            overrides.amqp_heartbeat,
            amqp.heartbeat,
            DEFAULT_AMQP_HEARTBEAT,
        );
        let handshake = r.pick(
            None,
            amqp.handshake_timeout_ms,
            DEFAULT_AMQP_HANDSHAKE_TIMEOUT_MS,
        );
        let max_conn = r.pick(None, amqp.max_connections, DEFAULT_AMQP_MAX_CONNECTIONS);
        let max_msg = r.pick(None, amqp.max_message_size, DEFAULT_AMQP_MAX_MESSAGE_SIZE);
        let per_ip = r.pick(
            None,
            amqp.max_connections_per_ip,
            DEFAULT_AMQP_MAX_CONNECTIONS_PER_IP,
        );
        let per_ch = r.pick(
            None,
            amqp.max_consumers_per_channel,
            DEFAULT_AMQP_MAX_CONSUMERS_PER_CHANNEL,
        );
        let unacked = r.pick(
            None,
            amqp.max_unacked_per_channel,
            DEFAULT_AMQP_MAX_UNACKED_PER_CHANNEL,
        );
        let max_queues = r.pick(
            None,
            server.max_queues_per_vhost,
            DEFAULT_MAX_QUEUES_PER_VHOST,
        );
        let consumer_timeout = r.pick(
            None,
            server.consumer_timeout_ms,
            DEFAULT_CONSUMER_TIMEOUT_MS,
        );
        let flow_backlog = r.pick(
            None,
            server.flow_backlog,
            switchyard_engine::DEFAULT_FLOW_BACKLOG,
        );
        let recv_buffer = r.pick(None, server.tcp_recv_buffer, 0);
        let at_least_one = |key: Key, v: (usize, Origin)| {
            NonZeroUsize::new(v.0).ok_or_else(|| r.error(key, v.1, 0, "must be at least 1"))
        };

        Ok(Self {
            server: ServerConfig {
                data_dir: data_dir.0,
                shutdown_timeout: r.millis(SHUTDOWN_TIMEOUT, shutdown_timeout)?,
                max_queues_per_vhost: at_least_one(MAX_QUEUES_PER_VHOST, max_queues)?,
                // 0 turns it off, as RabbitMQ's `consumer_timeout = false`.
                consumer_timeout: (consumer_timeout.0 > 0)
                    .then(|| Duration::from_millis(consumer_timeout.0)),
                flow_backlog: flow_backlog.0,
                tcp_recv_buffer: (recv_buffer.0 > 0).then_some(recv_buffer.0),
            },
            amqp: AmqpListenerConfig {
                listen,
                frame_max: r.at_least(AMQP_FRAME_MAX, frame_max, AMQP_FRAME_MIN)?,
                channel_max: NonZeroU16::new(channel_max.0).ok_or_else(|| {
                    r.error(AMQP_CHANNEL_MAX, channel_max.1, 0, "must be at least 1")
                })?,
                heartbeat: heartbeat.0,
                handshake_timeout: r.millis(AMQP_HANDSHAKE_TIMEOUT, handshake)?,
                max_connections: NonZeroUsize::new(max_conn.0).ok_or_else(|| {
                    r.error(AMQP_MAX_CONNECTIONS, max_conn.1, 0, "must be at least 1")
                })?,
                max_message_size: NonZeroU64::new(max_msg.0).ok_or_else(|| {
                    r.error(AMQP_MAX_MESSAGE_SIZE, max_msg.1, 0, "must be at least 1")
                })?,
                max_connections_per_ip: at_least_one(AMQP_MAX_CONNECTIONS_PER_IP, per_ip)?,
                max_consumers_per_channel: at_least_one(AMQP_MAX_CONSUMERS_PER_CHANNEL, per_ch)?,
                max_unacked_per_channel: NonZeroU32::new(unacked.0).ok_or_else(|| {
                    r.error(
                        AMQP_MAX_UNACKED_PER_CHANNEL,
                        unacked.1,
                        0,
                        "must be at least 1",
                    )
                })?,
            },
            mqtt: MqttListenerConfig::resolve(&r, &file.config.mqtt, overrides.mqtt.clone())?,
            stomp: StompListenerConfig::resolve(&r, &file.config.stomp, overrides.stomp.clone())?,
            web_stomp: WebListenerConfig::resolve(
                &r,
                WebKind::Stomp,
                &file.config.web_stomp,
                overrides.web_stomp.clone(),
            )?,
            web_mqtt: WebListenerConfig::resolve(
                &r,
                WebKind::Mqtt,
                &file.config.web_mqtt,
                overrides.web_mqtt.clone(),
            )?,
            management: HttpListenerConfig::resolve(
                &r,
                HttpKind::Management,
                &file.config.management,
                overrides.management.clone(),
            )?,
            prometheus: HttpListenerConfig::resolve(
                &r,
                HttpKind::Prometheus,
                &file.config.prometheus,
                overrides.prometheus.clone(),
            )?,
            auth: AuthConfig::resolve(
                &file.config.auth,
                overrides.default_user.clone(),
                overrides.default_pass.clone(),
            ),
        })
    }

    /// This configuration in file form, every key set (for `check-config`;
    /// resolving it again yields `self`).
    pub(crate) fn to_file(&self) -> FileConfig {
        let a = &self.amqp;
        FileConfig {
            server: ServerFile {
                data_dir: Some(self.server.data_dir.clone()),
                shutdown_timeout_ms: Some(millis(self.server.shutdown_timeout)),
                max_queues_per_vhost: Some(self.server.max_queues_per_vhost.get()),
                consumer_timeout_ms: Some(self.server.consumer_timeout.map_or(0, millis)),
                flow_backlog: Some(self.server.flow_backlog),
                tcp_recv_buffer: Some(self.server.tcp_recv_buffer.unwrap_or(0)),
            },
            amqp: AmqpFile {
                listen: Some(
                    a.listen
                        .map_or_else(|| DISABLED.to_owned(), |s| s.to_string()),
                ),
                frame_max: Some(a.frame_max),
                channel_max: Some(a.channel_max.get()),
                heartbeat: Some(a.heartbeat),
                handshake_timeout_ms: Some(millis(a.handshake_timeout)),
                max_connections: Some(a.max_connections.get()),
                max_message_size: Some(a.max_message_size.get()),
                max_connections_per_ip: Some(a.max_connections_per_ip.get()),
                max_consumers_per_channel: Some(a.max_consumers_per_channel.get()),
                max_unacked_per_channel: Some(a.max_unacked_per_channel.get()),
            },
            mqtt: self.mqtt.to_file(),
            stomp: self.stomp.to_file(),
            web_stomp: self.web_stomp.to_file(),
            web_mqtt: self.web_mqtt.to_file(),
            management: self.management.to_file(),
            prometheus: self.prometheus.to_file(),
            auth: self.auth.to_file(),
        }
    }

    /// This configuration as TOML in the config file's format.
    pub(crate) fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string(&self.to_file()).context("cannot print the configuration as TOML")
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
