//! `[management]`, `[prometheus]` and `[auth]`: the HTTP listeners of the
//! management API (and web UI) and of the Prometheus metrics, and the
//! first user of a fresh store.

use crate::config::{ConfigError, Key, Resolver, parse_listen};
use crate::config_stomp::listen_text;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

const DEFAULT_MANAGEMENT_LISTEN: &str = "127.0.0.1:15672";
const DEFAULT_PROMETHEUS_LISTEN: &str = "127.0.0.1:15692";

const MANAGEMENT_LISTEN: Key = Key {
    file: "management.listen",
    flag: Some(("--management", "SWITCHYARD_MANAGEMENT")),
};
const PROMETHEUS_LISTEN: Key = Key {
    file: "prometheus.listen",
    flag: Some(("--prometheus", "SWITCHYARD_PROMETHEUS")),
};

/// `[management]` or `[prometheus]` as written.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpFile {
    pub(crate) listen: Option<String>,
}

/// `[auth]` as written.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthFile {
    pub(crate) default_user: Option<String>,
    pub(crate) default_pass: Option<String>,
    pub(crate) loopback_users: Option<Vec<String>>,
}

/// Which HTTP listener.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HttpKind {
    Management,
    Prometheus,
}

/// An HTTP listener's address (`None`: disabled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpListenerConfig {
    pub(crate) listen: Option<SocketAddr>,
}

impl HttpListenerConfig {
    pub(crate) fn resolve(
        r: &Resolver<'_>,
        kind: HttpKind,
        file: &HttpFile,
        flag: Option<String>,
    ) -> Result<Self, ConfigError> {
        let (key, default) = match kind {
            HttpKind::Management => (MANAGEMENT_LISTEN, DEFAULT_MANAGEMENT_LISTEN),
            HttpKind::Prometheus => (PROMETHEUS_LISTEN, DEFAULT_PROMETHEUS_LISTEN),
        };
        let listen = r.pick(flag, file.listen.clone(), default.to_owned());
        let addr = parse_listen(&listen.0).map_err(|p| r.error(key, listen.1, &listen.0, p))?;
        Ok(Self { listen: addr })
    }

    pub(crate) fn to_file(&self) -> HttpFile {
        HttpFile {
            listen: Some(listen_text(self.listen)),
        }
    }
}

/// The first user of a fresh store, and the loopback-only users. The
/// environment (`SWITCHYARD_DEFAULT_USER`, `SWITCHYARD_DEFAULT_PASS`)
/// overrides the file, as RabbitMQ's `RABBITMQ_DEFAULT_USER` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthConfig {
    pub(crate) default_user: String,
    pub(crate) default_pass: String,
    pub(crate) loopback_users: Vec<String>,
}

impl AuthConfig {
    pub(crate) fn resolve(
        file: &AuthFile,
        env_user: Option<String>,
        env_pass: Option<String>,
    ) -> Self {
        Self {
            default_user: env_user
                .or_else(|| file.default_user.clone())
                .unwrap_or_else(|| "guest".into()),
            default_pass: env_pass
                .or_else(|| file.default_pass.clone())
                .unwrap_or_else(|| "guest".into()),
            loopback_users: file
                .loopback_users
                .clone()
                .unwrap_or_else(|| vec!["guest".into()]),
        }
    }

    /// In file form; the password is not printed.
    pub(crate) fn to_file(&self) -> AuthFile {
        AuthFile {
            default_user: Some(self.default_user.clone()),
            default_pass: None,
            loopback_users: Some(self.loopback_users.clone()),
        }
    }

    /// What `switchyard-access` makes the first user from.
    pub(crate) fn defaults(&self) -> switchyard_access::Defaults {
        switchyard_access::Defaults {
            user: self.default_user.clone(),
            password: self.default_pass.clone(),
            loopback_users: self.loopback_users.clone(),
        }
    }
}
