//! Why a ctl command failed, and the exit code each failure maps to.

use std::path::PathBuf;
use std::process::ExitCode;

/// A failed command. [`CtlError::exit_code`] is the one place failures become
/// exit codes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CtlError {
    /// The server answered with an HTTP error status other than 401.
    #[error("{method} {path} refused with {status}{}", detail(.error, .reason))]
    Refused {
        /// Request method.
        method: &'static str,
        /// Request path.
        path: String,
        /// HTTP status code.
        status: u16,
        /// The reply's `error` field, if any.
        error: Option<String>,
        /// The reply's `reason` field, if any.
        reason: Option<String>,
    },
    /// The server answered 401: wrong user or password, or (RabbitMQ answers
    /// access refusals with 401 too) the user may not do this.
    #[error("not authorised as user {user:?} (401){}", detail(.error, .reason))]
    Unauthorized {
        /// The user that was tried.
        user: String,
        /// The reply's `error` field, if any.
        error: Option<String>,
        /// The reply's `reason` field, if any.
        reason: Option<String>,
    },
    /// No HTTP reply: connection refused, unknown host, timeout, or something
    /// that does not speak HTTP.
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        /// The URL requested.
        url: String,
        /// What the HTTP client reported.
        #[source]
        source: ureq::Error,
    },
    /// The request could not be formed from the arguments given.
    #[error("invalid request: {0}")]
    Usage(String),
    /// No complete reply within `--timeout`.
    #[error("no reply from {url} within {secs} s (--timeout)")]
    Timeout {
        /// The URL requested.
        url: String,
        /// The timeout, in seconds.
        secs: u64,
    },
    /// A 2xx reply whose body was not the JSON expected.
    #[error("{method} {path}: the reply is not valid JSON: {source}")]
    BadReply {
        /// Request method.
        method: &'static str,
        /// Request path.
        path: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// `unbind` found no binding with that routing key and those arguments.
    #[error(
        "no binding from exchange {exchange:?} to {destination:?} with routing key {routing_key:?} and these arguments"
    )]
    NoSuchBinding {
        /// Source exchange.
        exchange: String,
        /// Destination name.
        destination: String,
        /// Routing key asked for.
        routing_key: String,
    },
    /// A local file (or stdin/stdout) could not be read or written.
    #[error("{}: {source}", .path.display())]
    File {
        /// The file; `-` for stdin/stdout.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A definitions file to import is not JSON.
    #[error("{}: not valid JSON: {source}", .path.display())]
    BadFile {
        /// The file; `-` for stdin.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

impl CtlError {
    /// 1 refused or failed, 3 unreachable, 4 not authorised (401) (2, usage
    /// errors, comes from clap before a command runs).
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } => ExitCode::from(3),
            Self::Unauthorized { .. } => ExitCode::from(4),
            Self::Usage(_) => ExitCode::from(2),
            Self::Refused { .. }
            | Self::BadReply { .. }
            | Self::NoSuchBinding { .. }
            | Self::File { .. }
            | Self::BadFile { .. } => ExitCode::FAILURE,
        }
    }
}

/// `: error: reason` from whichever of the two the server gave.
fn detail(error: &Option<String>, reason: &Option<String>) -> String {
    match (error, reason) {
        (Some(e), Some(r)) if e != r => format!(": {e}: {r}"),
        (Some(x), _) | (None, Some(x)) => format!(": {x}"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_show_the_servers_error_and_reason() {
        let e = CtlError::Refused {
            method: "DELETE",
            path: "/api/queues/%2F/nope".into(),
            status: 404,
            error: Some("Object Not Found".into()),
            reason: Some("Not Found".into()),
        };
        assert_eq!(
            e.to_string(),
            "DELETE /api/queues/%2F/nope refused with 404: Object Not Found: Not Found"
        );
        assert_eq!(e.exit_code(), ExitCode::FAILURE);
        let e = CtlError::Unauthorized {
            user: "guest".into(),
            error: Some("not_authorized".into()),
            reason: None,
        };
        assert_eq!(
            e.to_string(),
            "not authorised as user \"guest\" (401): not_authorized"
        );
        assert_eq!(e.exit_code(), ExitCode::from(4));
        assert_eq!(detail(&None, &None), "");
        assert_eq!(detail(&Some("x".into()), &Some("x".into())), ": x");
    }
}
