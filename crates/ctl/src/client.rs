//! The HTTP side: sends a [`Request`] with basic auth and a timeout, and sorts
//! the outcome into a JSON reply or a [`CtlError`].
//!
//! The only module that does network I/O. Blocking (ureq), plain HTTP, one
//! request at a time; no retries, since a retried POST could publish twice.

use crate::cli::GlobalArgs;
use crate::error::CtlError;
use crate::request::Request;
use base64::Engine as _;
use serde_json::Value;
use std::time::Duration;
use ureq::http;

/// Replies larger than this are refused (a definitions export of a big
/// broker is the largest thing the API returns).
const MAX_REPLY_BYTES: u64 = 1 << 30;

/// A connection to one management API.
pub(crate) struct Client {
    agent: ureq::Agent,
    /// Base URL without a trailing `/`.
    base: String,
    /// The `Authorization` header value.
    auth: String,
    /// Shown when authentication fails.
    user: String,
    /// `--timeout`, for messages.
    timeout_secs: u64,
}

impl Client {
    pub(crate) fn new(global: &GlobalArgs) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(global.timeout)))
            // Error statuses carry the server's explanation in the body.
            .http_status_as_error(false)
            .user_agent(concat!("switchyard-ctl/", env!("CARGO_PKG_VERSION")))
            .build();
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", global.user, global.password));
        Self {
            agent: config.into(),
            base: global.url.clone(),
            auth: format!("Basic {token}"),
            user: global.user.clone(),
            timeout_secs: global.timeout,
        }
    }

    /// Sends `req`; the reply body as JSON (`Value::Null` when empty, as for
    /// 201/204) on a 2xx status.
    pub(crate) fn send(&self, req: &Request) -> Result<Value, CtlError> {
        let url = format!("{}{}", self.base, req.path);
        let unreachable = |source| match source {
            ureq::Error::Timeout(_) => CtlError::Timeout {
                url: url.clone(),
                secs: self.timeout_secs,
            },
            source => CtlError::Unreachable {
                url: url.clone(),
                source,
            },
        };
        let mut builder = http::Request::builder()
            .method(req.method.as_str())
            .uri(&url)
            // No `Accept: application/json`: RabbitMQ answers 406 to it on
            // DELETE .../contents (purge), whose reply has no body.
            .header("authorization", &self.auth);
        if let Some(reason) = &req.reason {
            builder = builder.header("x-reason", reason);
        }
        // The URL and the X-Reason text were checked when parsing arguments,
        // so building fails only on what those checks missed.
        let invalid = |e: http::Error| CtlError::Usage(e.to_string());
        let result = match &req.body {
            Some(body) => {
                let builder = builder.header("content-type", "application/json");
                let request = builder.body(body.to_string()).map_err(invalid)?;
                self.agent.run(request)
            }
            // `()`, not an empty body: no `content-length: 0` on GET.
            None => self.agent.run(builder.body(()).map_err(invalid)?),
        };
        let mut reply = result.map_err(unreachable)?;
        let status = reply.status().as_u16();
        let text = reply
            .body_mut()
            .with_config()
            .limit(MAX_REPLY_BYTES)
            .lossy_utf8(true)
            .read_to_string()
            .map_err(unreachable)?;
        classify(req, status, &text, &self.user)
    }
}

/// The reply's meaning: JSON on 2xx, else the matching error.
fn classify(req: &Request, status: u16, text: &str, user: &str) -> Result<Value, CtlError> {
    if (200..300).contains(&status) {
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_str(text).map_err(|source| CtlError::BadReply {
            method: req.method.as_str(),
            path: req.path.clone(),
            source,
        });
    }
    let json: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let field = |name: &str| json.get(name).and_then(Value::as_str).map(str::to_owned);
    let (error, reason) = (field("error"), field("reason"));
    if status == 401 {
        return Err(CtlError::Unauthorized {
            user: user.to_owned(),
            error,
            reason,
        });
    }
    // A non-JSON error page: show its first line rather than nothing.
    let error = error.or_else(|| {
        if json.is_null() {
            text.lines()
                .next()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
        } else {
            None
        }
    });
    Err(CtlError::Refused {
        method: req.method.as_str(),
        path: req.path.clone(),
        status,
        error,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Method;

    fn get() -> Request {
        Request {
            method: Method::Get,
            path: "/api/x".into(),
            body: None,
            reason: None,
        }
    }

    #[test]
    fn success_replies() {
        assert_eq!(classify(&get(), 204, "", "u").ok(), Some(Value::Null));
        assert_eq!(
            classify(&get(), 200, "[1]", "u").ok(),
            Some(serde_json::json!([1]))
        );
        assert!(matches!(
            classify(&get(), 200, "<html>", "u"),
            Err(CtlError::BadReply { .. })
        ));
    }

    #[test]
    fn error_replies() {
        let e = classify(
            &get(),
            401,
            r#"{"error":"not_authorized","reason":"Login failed"}"#,
            "bob",
        );
        assert!(matches!(e, Err(CtlError::Unauthorized { ref user, .. }) if user == "bob"));
        match classify(
            &get(),
            404,
            r#"{"error":"Object Not Found","reason":"Not Found"}"#,
            "u",
        ) {
            Err(CtlError::Refused {
                status: 404,
                error,
                reason,
                ..
            }) => {
                assert_eq!(
                    (error.as_deref(), reason.as_deref()),
                    (Some("Object Not Found"), Some("Not Found"))
                );
            }
            other => panic!("{other:?}"),
        }
        match classify(&get(), 502, "Bad Gateway\nmore", "u") {
            Err(CtlError::Refused {
                status: 502,
                error,
                reason: None,
                ..
            }) => {
                assert_eq!(error.as_deref(), Some("Bad Gateway"));
            }
            other => panic!("{other:?}"),
        }
    }
}
