//! Who is logging in: the [`Authenticator`] every protocol adapter asks,
//! through [`crate::Broker::authenticate`]. The engine only defines the
//! question; `switchyard-access` answers it from its user database. A
//! broker given no authenticator (unit tests, embedding) knows one user,
//! `guest`/`guest`, from loopback only, with access to every vhost.

use std::net::IpAddr;
use thiserror::Error;

/// A logged-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Its name.
    pub user: String,
    /// Its tags at login.
    pub tags: Vec<String>,
}

impl Identity {
    /// Whether the user has `tag`.
    #[must_use]
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// Why a login was refused. Adapters word it for their clients without
/// telling a wrong password from an unknown user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Refused {
    /// No such user, or the wrong password.
    #[error("invalid credentials")]
    BadCredentials,
    /// A loopback-only user (such as `guest`) from another address.
    #[error("user can only connect via localhost")]
    LoopbackOnly,
}

/// What an operation needs on a resource, as RabbitMQ's permissions name
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermissionKind {
    /// Declare and delete.
    Configure,
    /// Publish to, and bind to (the destination of a binding).
    Write,
    /// Consume, get, purge, and bind from (the source of a binding).
    Read,
}

/// Checks credentials and vhost access.
pub trait Authenticator: Send + Sync {
    /// Checks `password` for `user` connecting from `peer`. May take tens
    /// of milliseconds (a password KDF) the first time; implementations
    /// keep that off the runtime's worker threads.
    ///
    /// # Errors
    ///
    /// Why the login is refused.
    fn authenticate(&self, user: &str, password: &str, peer: IpAddr) -> Result<Identity, Refused>;

    /// Whether `user` may use `vhost` at all.
    fn may_use_vhost(&self, user: &str, vhost: &str) -> bool;

    /// Whether `user` may do what `permission` covers on the queue or
    /// exchange `resource` in `vhost` (every resource, unless overridden).
    fn permits(&self, user: &str, vhost: &str, permission: PermissionKind, resource: &str) -> bool {
        let _ = (user, vhost, permission, resource);
        true
    }
}

/// The authenticator of a broker given none: `guest`/`guest` from
/// loopback, everywhere.
#[derive(Debug, Default)]
pub(crate) struct GuestOnly;

impl Authenticator for GuestOnly {
    fn authenticate(&self, user: &str, password: &str, peer: IpAddr) -> Result<Identity, Refused> {
        if user != "guest" || password != "guest" {
            return Err(Refused::BadCredentials);
        }
        if !peer.is_loopback() {
            return Err(Refused::LoopbackOnly);
        }
        Ok(Identity {
            user: user.to_owned(),
            tags: vec!["administrator".into()],
        })
    }

    fn may_use_vhost(&self, user: &str, _vhost: &str) -> bool {
        user == "guest"
    }
}
