//! The `[mqtt]` section of the configuration: raw file form and validated
//! form, resolved with the same precedence rules as the rest (see
//! [`crate::config`]).

use crate::config::{ConfigError, DISABLED, Key, Resolver, millis, parse_listen};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroUsize};
use std::time::Duration;

const DEFAULT_LISTEN: &str = "127.0.0.1:1883";
const DEFAULT_MAX_PACKET_SIZE: usize = 16 << 20;
const DEFAULT_MAX_INFLIGHT: u16 = 64;
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_MAX_CONNECTIONS: usize = 65_536;
const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 4096;
const DEFAULT_PARK_AFTER_MS: u64 = 2000;
const DEFAULT_MAX_KEEP_ALIVE: u16 = 0;

const LISTEN: Key = Key {
    file: "mqtt.listen",
    flag: Some(("--mqtt", "SWITCHYARD_MQTT")),
};
const MAX_PACKET_SIZE: Key = Key {
    file: "mqtt.max_packet_size",
    flag: None,
};
const MAX_INFLIGHT: Key = Key {
    file: "mqtt.max_inflight",
    flag: None,
};
const CONNECT_TIMEOUT: Key = Key {
    file: "mqtt.connect_timeout_ms",
    flag: None,
};
const MAX_CONNECTIONS: Key = Key {
    file: "mqtt.max_connections",
    flag: None,
};
const MAX_CONNECTIONS_PER_IP: Key = Key {
    file: "mqtt.max_connections_per_ip",
    flag: None,
};

const PARK_AFTER: Key = Key {
    file: "mqtt.park_after_ms",
    flag: None,
};

/// `[mqtt]` as written.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MqttFile {
    pub(crate) listen: Option<String>,
    pub(crate) max_packet_size: Option<usize>,
    pub(crate) max_inflight: Option<u16>,
    pub(crate) connect_timeout_ms: Option<u64>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_connections_per_ip: Option<usize>,
    pub(crate) park_after_ms: Option<u64>,
    pub(crate) max_keep_alive: Option<u16>,
}

/// The MQTT listener and its per-connection limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MqttListenerConfig {
    /// `None`: the listener is disabled.
    pub(crate) listen: Option<SocketAddr>,
    /// Largest packet (remaining length) accepted, in bytes.
    pub(crate) max_packet_size: NonZeroUsize,
    /// QoS 1/2 deliveries in flight per client.
    pub(crate) max_inflight: NonZeroU16,
    /// Deadline for CONNECT after the socket opens.
    pub(crate) connect_timeout: Duration,
    /// Most simultaneous MQTT connections.
    pub(crate) max_connections: NonZeroUsize,
    /// Most simultaneous MQTT connections from one source address.
    pub(crate) max_connections_per_ip: NonZeroUsize,
    /// An idle client silent this long is parked; `None`: never.
    pub(crate) park_after: Option<Duration>,
    /// Longest keep-alive accepted, in seconds; 0: no limit.
    pub(crate) max_keep_alive: u16,
}

impl MqttListenerConfig {
    pub(crate) fn resolve(
        r: &Resolver<'_>,
        file: &MqttFile,
        flag: Option<String>,
    ) -> Result<Self, ConfigError> {
        let listen = r.pick(flag, file.listen.clone(), DEFAULT_LISTEN.to_owned());
        let addr = parse_listen(&listen.0).map_err(|p| r.error(LISTEN, listen.1, &listen.0, p))?;
        let size = r.pick(None, file.max_packet_size, DEFAULT_MAX_PACKET_SIZE);
        let inflight = r.pick(None, file.max_inflight, DEFAULT_MAX_INFLIGHT);
        let timeout = r.pick(None, file.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS);
        let conns = r.pick(None, file.max_connections, DEFAULT_MAX_CONNECTIONS);
        let per_ip = r.pick(
            None,
            file.max_connections_per_ip,
            DEFAULT_MAX_CONNECTIONS_PER_IP,
        );
        let park = r.pick(None, file.park_after_ms, DEFAULT_PARK_AFTER_MS);
        let park_after = match park.0 {
            0 => None,
            _ => Some(r.millis(PARK_AFTER, park)?),
        };
        let max_keep_alive = r.pick(None, file.max_keep_alive, DEFAULT_MAX_KEEP_ALIVE).0;
        Ok(Self {
            park_after,
            max_keep_alive,
            listen: addr,
            max_packet_size: NonZeroUsize::new(size.0)
                .ok_or_else(|| r.error(MAX_PACKET_SIZE, size.1, 0, "must be at least 1"))?,
            max_inflight: NonZeroU16::new(inflight.0)
                .ok_or_else(|| r.error(MAX_INFLIGHT, inflight.1, 0, "must be at least 1"))?,
            connect_timeout: r.millis(CONNECT_TIMEOUT, timeout)?,
            max_connections: NonZeroUsize::new(conns.0)
                .ok_or_else(|| r.error(MAX_CONNECTIONS, conns.1, 0, "must be at least 1"))?,
            max_connections_per_ip: NonZeroUsize::new(per_ip.0).ok_or_else(|| {
                r.error(MAX_CONNECTIONS_PER_IP, per_ip.1, 0, "must be at least 1")
            })?,
        })
    }

    pub(crate) fn to_file(&self) -> MqttFile {
        MqttFile {
            listen: Some(
                self.listen
                    .map_or_else(|| DISABLED.to_owned(), |a| a.to_string()),
            ),
            max_packet_size: Some(self.max_packet_size.get()),
            max_inflight: Some(self.max_inflight.get()),
            connect_timeout_ms: Some(millis(self.connect_timeout)),
            max_connections: Some(self.max_connections.get()),
            max_connections_per_ip: Some(self.max_connections_per_ip.get()),
            max_keep_alive: Some(self.max_keep_alive),
            park_after_ms: Some(self.park_after.map_or(0, millis)),
        }
    }

    /// The protocol crate's settings.
    pub(crate) fn protocol(&self) -> switchyard_mqtt::MqttConfig {
        switchyard_mqtt::MqttConfig {
            max_packet_size: self.max_packet_size.get(),
            max_inflight: self.max_inflight.get(),
            connect_timeout: self.connect_timeout,
            max_connections: self.max_connections.get(),
            max_connections_per_ip: self.max_connections_per_ip.get(),
            park_after: self.park_after,
            max_keep_alive: self.max_keep_alive,
            // Set from `server.tcp_recv_buffer` by the caller.
            recv_buffer: None,
        }
    }
}
