//! Who is calling: HTTP basic authentication against the broker's users,
//! and what their tags let them do, as RabbitMQ's management plugin
//! decides it (`administrator` changes anything, `monitoring` sees every
//! vhost, `policymaker` manages policies, `management` sees the vhosts it
//! has permissions in; a user with none of these may not use the API).

use crate::Admin;
use crate::error::ApiError;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::net::SocketAddr;
use std::sync::Arc;
use switchyard_engine::{Identity, Refused};

/// Tags that let a user into the API at all.
const MANAGEMENT_TAGS: [&str; 4] = ["administrator", "monitoring", "policymaker", "management"];

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The user and its tags.
    pub(crate) id: Identity,
    admin: Arc<Admin>,
}

impl Caller {
    /// Has the `administrator` tag.
    pub(crate) fn is_admin(&self) -> bool {
        self.id.has_tag("administrator")
    }

    /// May see every vhost (`administrator` or `monitoring`).
    pub(crate) fn sees_everything(&self) -> bool {
        self.is_admin() || self.id.has_tag("monitoring")
    }

    /// 401 unless an administrator.
    pub(crate) fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Not administrator user"))
        }
    }

    /// Whether the caller may see `vhost` in listings.
    pub(crate) fn may_see(&self, vhost: &str) -> bool {
        self.sees_everything() || self.admin.access.may_use_vhost(&self.id.user, vhost)
    }

    /// 401 unless the caller may read `vhost`.
    pub(crate) fn require_read(&self, vhost: &str) -> Result<(), ApiError> {
        if self.may_see(vhost) {
            Ok(())
        } else {
            Err(ApiError::not_authorised(
                "User not authorised to access virtual host",
            ))
        }
    }

    /// 401 unless the caller has permissions in `vhost` (changing things
    /// there, as in RabbitMQ, needs them whatever the tags).
    pub(crate) fn require_write(&self, vhost: &str) -> Result<(), ApiError> {
        if self.admin.access.may_use_vhost(&self.id.user, vhost) {
            Ok(())
        } else {
            Err(ApiError::not_authorised(
                "User not authorised to access virtual host",
            ))
        }
    }

    /// 401 unless the caller may change policies in `vhost`.
    pub(crate) fn require_policymaker(&self, vhost: &str) -> Result<(), ApiError> {
        if (self.is_admin() || self.id.has_tag("policymaker"))
            && self.admin.access.may_use_vhost(&self.id.user, vhost)
        {
            Ok(())
        } else {
            Err(ApiError::not_authorised(
                "User not authorised to access object",
            ))
        }
    }
}

/// `user:password` from a `Basic` authorization header.
fn credentials(parts: &Parts) -> Option<(String, String)> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

impl FromRequestParts<Arc<Admin>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, admin: &Arc<Admin>) -> Result<Self, ApiError> {
        let Some((user, pass)) = credentials(parts) else {
            return Err(ApiError::login_failed("Not_Authorized"));
        };
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| std::net::Ipv4Addr::LOCALHOST.into(), |c| c.0.ip());
        let id = match admin.access.authenticate(&user, &pass, peer) {
            Ok(id) => id,
            Err(Refused::BadCredentials) => {
                tracing::warn!(%peer, %user, "management API login refused");
                return Err(ApiError::login_failed("Login failed"));
            }
            Err(Refused::LoopbackOnly) => {
                return Err(ApiError::login_failed("User can only log in via localhost"));
            }
        };
        if !MANAGEMENT_TAGS.iter().any(|t| id.has_tag(t)) {
            return Err(ApiError::not_authorised("Not management user"));
        }
        Ok(Self {
            id,
            admin: admin.clone(),
        })
    }
}
