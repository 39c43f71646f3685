//! The `[stomp]`, `[web_stomp]` and `[web_mqtt]` sections of the
//! configuration: raw file form and validated form, resolved with the same
//! precedence rules as the rest (see [`crate::config`]). The WebSocket
//! listeners serve the same sessions as their TCP counterparts, so they
//! share the limits of `[stomp]` and `[mqtt]`; their own section only says
//! where they listen.

use crate::config::{ConfigError, DISABLED, Key, Resolver, millis, parse_listen};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

const DEFAULT_LISTEN: &str = "127.0.0.1:61613";
const DEFAULT_WEB_STOMP_LISTEN: &str = "127.0.0.1:15674";
const DEFAULT_WEB_MQTT_LISTEN: &str = "127.0.0.1:15675";
const DEFAULT_MAX_BODY_SIZE: usize = 16 << 20;
const DEFAULT_MAX_HEADERS: usize = 100;
const DEFAULT_MAX_HEADER_LENGTH: usize = 8192;
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_MAX_UNACKED: u32 = 65_536;
const DEFAULT_MAX_CONNECTIONS: usize = 65_536;
const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 4096;
const DEFAULT_MAX_SUBSCRIPTIONS: usize = 1024;
const DEFAULT_MIN_HEARTBEAT_MS: u64 = 100;

const LISTEN: Key = Key {
    file: "stomp.listen",
    flag: Some(("--stomp", "SWITCHYARD_STOMP")),
};
const WEB_STOMP_LISTEN: Key = Key {
    file: "web_stomp.listen",
    flag: Some(("--web-stomp", "SWITCHYARD_WEB_STOMP")),
};
const WEB_MQTT_LISTEN: Key = Key {
    file: "web_mqtt.listen",
    flag: Some(("--web-mqtt", "SWITCHYARD_WEB_MQTT")),
};
const MAX_BODY_SIZE: Key = Key {
    file: "stomp.max_body_size",
    flag: None,
};
const MAX_HEADERS: Key = Key {
    file: "stomp.max_headers",
    flag: None,
};
const MAX_HEADER_LENGTH: Key = Key {
    file: "stomp.max_header_length",
    flag: None,
};
const CONNECT_TIMEOUT: Key = Key {
    file: "stomp.connect_timeout_ms",
    flag: None,
};
const MAX_CONNECTIONS: Key = Key {
    file: "stomp.max_connections",
    flag: None,
};
const MAX_CONNECTIONS_PER_IP: Key = Key {
    file: "stomp.max_connections_per_ip",
    flag: None,
};
const MAX_SUBSCRIPTIONS: Key = Key {
    file: "stomp.max_subscriptions",
    flag: None,
};
const MIN_HEARTBEAT: Key = Key {
    file: "stomp.min_heartbeat_ms",
    flag: None,
};
const MAX_UNACKED: Key = Key {
    file: "stomp.max_unacked_per_subscription",
    flag: None,
};

/// `[stomp]` as written.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StompFile {
    pub(crate) listen: Option<String>,
    pub(crate) max_body_size: Option<usize>,
    pub(crate) max_headers: Option<usize>,
    pub(crate) max_header_length: Option<usize>,
    pub(crate) connect_timeout_ms: Option<u64>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_connections_per_ip: Option<usize>,
    pub(crate) max_subscriptions: Option<usize>,
    pub(crate) min_heartbeat_ms: Option<u64>,
    pub(crate) max_unacked_per_subscription: Option<u32>,
}

/// `[web_stomp]` or `[web_mqtt]` as written.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebFile {
    pub(crate) listen: Option<String>,
}

/// The STOMP listener and its per-connection limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StompListenerConfig {
    /// `None`: the listener is disabled.
    pub(crate) listen: Option<SocketAddr>,
    /// Largest frame body accepted, in bytes.
    pub(crate) max_body_size: NonZeroUsize,
    /// Most headers in one frame.
    pub(crate) max_headers: NonZeroUsize,
    /// Longest header line, in bytes.
    pub(crate) max_header_length: NonZeroUsize,
    /// Deadline for CONNECT after the socket opens.
    pub(crate) connect_timeout: Duration,
    /// Most simultaneous STOMP connections (TCP and WebSocket each).
    pub(crate) max_connections: NonZeroUsize,
    /// Most simultaneous STOMP connections from one source address.
    pub(crate) max_connections_per_ip: NonZeroUsize,
    /// Most subscriptions on one connection.
    pub(crate) max_subscriptions: NonZeroUsize,
    /// Shortest heart-beat interval the broker agrees to.
    pub(crate) min_heartbeat: Duration,
    /// Most unacknowledged MESSAGEs per client-ack subscription.
    pub(crate) max_unacked_per_subscription: u32,
}

fn at_least_one(
    r: &Resolver<'_>,
    key: Key,
    v: (usize, crate::config::Origin),
) -> Result<NonZeroUsize, ConfigError> {
    NonZeroUsize::new(v.0).ok_or_else(|| r.error(key, v.1, 0, "must be at least 1"))
}

pub(crate) fn listen_text(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| DISABLED.to_owned(), |a| a.to_string())
}

impl StompListenerConfig {
    pub(crate) fn resolve(
        r: &Resolver<'_>,
        file: &StompFile,
        flag: Option<String>,
    ) -> Result<Self, ConfigError> {
        let listen = r.pick(flag, file.listen.clone(), DEFAULT_LISTEN.to_owned());
        let addr = parse_listen(&listen.0).map_err(|p| r.error(LISTEN, listen.1, &listen.0, p))?;
        let body = r.pick(None, file.max_body_size, DEFAULT_MAX_BODY_SIZE);
        let headers = r.pick(None, file.max_headers, DEFAULT_MAX_HEADERS);
        let header_len = r.pick(None, file.max_header_length, DEFAULT_MAX_HEADER_LENGTH);
        let timeout = r.pick(None, file.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS);
        let conns = r.pick(None, file.max_connections, DEFAULT_MAX_CONNECTIONS);
        let per_ip = r.pick(
            None,
            file.max_connections_per_ip,
            DEFAULT_MAX_CONNECTIONS_PER_IP,
        );
        let subs = r.pick(None, file.max_subscriptions, DEFAULT_MAX_SUBSCRIPTIONS);
        let heartbeat = r.pick(None, file.min_heartbeat_ms, DEFAULT_MIN_HEARTBEAT_MS);
        let unacked = r.pick(None, file.max_unacked_per_subscription, DEFAULT_MAX_UNACKED);
        Ok(Self {
            max_unacked_per_subscription: r.at_least(MAX_UNACKED, unacked, 1)?,
            listen: addr,
            max_body_size: at_least_one(r, MAX_BODY_SIZE, body)?,
            max_headers: at_least_one(r, MAX_HEADERS, headers)?,
            max_header_length: NonZeroUsize::new(r.at_least(MAX_HEADER_LENGTH, header_len, 64)?)
                .ok_or_else(|| {
                    r.error(MAX_HEADER_LENGTH, header_len.1, 0, "must be at least 64")
                })?,
            connect_timeout: r.millis(CONNECT_TIMEOUT, timeout)?,
            max_connections: at_least_one(r, MAX_CONNECTIONS, conns)?,
            max_connections_per_ip: at_least_one(r, MAX_CONNECTIONS_PER_IP, per_ip)?,
            max_subscriptions: at_least_one(r, MAX_SUBSCRIPTIONS, subs)?,
            min_heartbeat: r.millis(MIN_HEARTBEAT, heartbeat)?,
        })
    }

    pub(crate) fn to_file(&self) -> StompFile {
        StompFile {
            listen: Some(listen_text(self.listen)),
            max_body_size: Some(self.max_body_size.get()),
            max_headers: Some(self.max_headers.get()),
            max_header_length: Some(self.max_header_length.get()),
            connect_timeout_ms: Some(millis(self.connect_timeout)),
            max_connections: Some(self.max_connections.get()),
            max_connections_per_ip: Some(self.max_connections_per_ip.get()),
            max_subscriptions: Some(self.max_subscriptions.get()),
            min_heartbeat_ms: Some(millis(self.min_heartbeat)),
            max_unacked_per_subscription: Some(self.max_unacked_per_subscription),
        }
    }

    /// The protocol crate's settings.
    pub(crate) fn protocol(&self) -> switchyard_stomp::StompConfig {
        switchyard_stomp::StompConfig {
            limits: switchyard_stomp::Limits {
                max_headers: self.max_headers.get(),
                max_header_length: self.max_header_length.get(),
                max_body: self.max_body_size.get(),
            },
            connect_timeout: self.connect_timeout,
            max_connections: self.max_connections.get(),
            max_connections_per_ip: self.max_connections_per_ip.get(),
            max_subscriptions: self.max_subscriptions.get(),
            min_heartbeat_ms: millis(self.min_heartbeat),
            max_unacked: self.max_unacked_per_subscription,
            // Set from `server.consumer_timeout_ms` and
            // `server.tcp_recv_buffer` by the caller.
            consumer_timeout: None,
            recv_buffer: None,
        }
    }
}

/// Which WebSocket listener a [`WebListenerConfig`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WebKind {
    Stomp,
    Mqtt,
}

/// A WebSocket listener (`/ws`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebListenerConfig {
    /// `None`: the listener is disabled.
    pub(crate) listen: Option<SocketAddr>,
}

impl WebListenerConfig {
    pub(crate) fn resolve(
        r: &Resolver<'_>,
        kind: WebKind,
        file: &WebFile,
        flag: Option<String>,
    ) -> Result<Self, ConfigError> {
        let (key, default) = match kind {
            WebKind::Stomp => (WEB_STOMP_LISTEN, DEFAULT_WEB_STOMP_LISTEN),
            WebKind::Mqtt => (WEB_MQTT_LISTEN, DEFAULT_WEB_MQTT_LISTEN),
        };
        let listen = r.pick(flag, file.listen.clone(), default.to_owned());
        let addr = parse_listen(&listen.0).map_err(|p| r.error(key, listen.1, &listen.0, p))?;
        Ok(Self { listen: addr })
    }

    pub(crate) fn to_file(&self) -> WebFile {
        WebFile {
            listen: Some(listen_text(self.listen)),
        }
    }
}
