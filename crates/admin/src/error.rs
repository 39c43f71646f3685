//! API errors as RabbitMQ's management API words them: a status code and a
//! JSON body with exactly `error` and `reason`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use switchyard_engine::EngineError;

/// One failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The `error` field.
    pub error: &'static str,
    /// The `reason` field.
    pub reason: String,
}

/// A handler's result.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// 404 `Object Not Found`.
    pub fn not_found() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            error: "Object Not Found",
            reason: "Not Found".into(),
        }
    }

    /// 404 `not_found` with a reason.
    pub fn not_found_because(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            error: "not_found",
            reason: reason.into(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error: "bad_request",
            reason: reason.into(),
        }
    }

    /// 401 `not_authorized`: no or wrong credentials.
    pub fn login_failed(reason: &str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "not_authorized",
            reason: reason.into(),
        }
    }

    /// 401 `not_authorised` (RabbitMQ's spelling): logged in, not allowed.
    pub fn not_authorised(reason: &str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "not_authorised",
            reason: reason.into(),
        }
    }

    /// 405 for a method the path does not take.
    pub fn method_not_allowed() -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            error: "method_not_allowed",
            reason: "Method Not Allowed".into(),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::VhostNotFound(_) => Self::not_found_because("vhost_not_found"),
            EngineError::QueueNotFound(..) | EngineError::ExchangeNotFound(..) => {
                Self::not_found_because(e.to_string())
            }
            EngineError::AccessRefused(_) | EngineError::NotPermitted(_) => {
                Self::not_authorised("Access refused.")
            }
            EngineError::NotImplemented(_) => Self {
                status: StatusCode::NOT_IMPLEMENTED,
                error: "not_implemented",
                reason: e.to_string(),
            },
            _ => Self::bad_request(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "reason": self.reason});
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
            );
        }
        r
    }
}
