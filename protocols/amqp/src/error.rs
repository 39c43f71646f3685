//! AMQP reply codes and the one place engine errors become wire errors.

use switchyard_engine::EngineError;

/// An AMQP 0-9-1 reply code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReplyCode(pub u16);

impl ReplyCode {
    /// Normal completion.
    pub const REPLY_SUCCESS: Self = Self(200);
    /// Operator closed the connection (shutdown).
    pub const CONNECTION_FORCED: Self = Self(320);
    /// Mandatory message could not be routed.
    pub const NO_ROUTE: Self = Self(312);
    /// Access refused (auth, reserved names, exclusive consumers).
    pub const ACCESS_REFUSED: Self = Self(403);
    /// Entity not found.
    pub const NOT_FOUND: Self = Self(404);
    /// Exclusive queue owned by another connection.
    pub const RESOURCE_LOCKED: Self = Self(405);
    /// Precondition failed (inequivalent declare, unknown delivery tag...).
    pub const PRECONDITION_FAILED: Self = Self(406);
    /// Malformed frame.
    pub const FRAME_ERROR: Self = Self(501);
    /// Malformed method arguments.
    pub const SYNTAX_ERROR: Self = Self(502);
    /// Method not valid here.
    pub const COMMAND_INVALID: Self = Self(503);
    /// Channel misuse (unopened channel, reopened channel).
    pub const CHANNEL_ERROR: Self = Self(504);
    /// Frame out of sequence.
    pub const UNEXPECTED_FRAME: Self = Self(505);
    /// Server out of a resource.
    pub const RESOURCE_ERROR: Self = Self(506);
    /// Not allowed (unknown vhost, limits).
    pub const NOT_ALLOWED: Self = Self(530);
    /// Valid but unsupported.
    pub const NOT_IMPLEMENTED: Self = Self(540);
    /// Server bug.
    pub const INTERNAL_ERROR: Self = Self(541);

    /// The standard name RabbitMQ prefixes reply texts with.
    pub fn name(self) -> &'static str {
        match self.0 {
            200 => "REPLY_SUCCESS",
            312 => "NO_ROUTE",
            320 => "CONNECTION_FORCED",
            403 => "ACCESS_REFUSED",
            404 => "NOT_FOUND",
            405 => "RESOURCE_LOCKED",
            406 => "PRECONDITION_FAILED",
            501 => "FRAME_ERROR",
            502 => "SYNTAX_ERROR",
            503 => "COMMAND_INVALID",
            504 => "CHANNEL_ERROR",
            505 => "UNEXPECTED_FRAME",
            506 => "RESOURCE_ERROR",
            530 => "NOT_ALLOWED",
            540 => "NOT_IMPLEMENTED",
            _ => "INTERNAL_ERROR",
        }
    }
}

/// Whether an error closes the channel or the whole connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `channel.close`.
    Channel,
    /// `connection.close`.
    Connection,
}

/// An error to report to the client, with the method that caused it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmqpError {
    /// Channel or connection.
    pub scope: Scope,
    /// Reply code.
    pub code: ReplyCode,
    /// Human-readable reason (prefixed with the code name on the wire).
    pub text: String,
    /// Class of the offending method (0 if none).
    pub class_id: u16,
    /// Offending method (0 if none).
    pub method_id: u16,
}

impl AmqpError {
    /// A channel exception.
    pub fn channel(code: ReplyCode, text: impl Into<String>) -> Self {
        Self {
            scope: Scope::Channel,
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    /// A connection exception.
    pub fn connection(code: ReplyCode, text: impl Into<String>) -> Self {
        Self {
            scope: Scope::Connection,
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    /// Attach the offending method.
    pub fn at(mut self, class_id: u16, method_id: u16) -> Self {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    /// The reply text as RabbitMQ formats it: `CODE_NAME - reason`.
    pub fn reply_text(&self) -> String {
        let mut t = format!("{} - {}", self.code.name(), self.text);
        // A shortstr holds at most 255 bytes; cut at a char boundary.
        if t.len() > 255 {
            let mut end = 255;
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            t.truncate(end);
        }
        t
    }
}

impl From<EngineError> for AmqpError {
    fn from(e: EngineError) -> Self {
        let text = e.to_string();
        match e {
            EngineError::VhostNotFound(_) => Self::connection(ReplyCode::NOT_ALLOWED, text),
            EngineError::ExchangeNotFound(..) | EngineError::QueueNotFound(..) => {
                Self::channel(ReplyCode::NOT_FOUND, text)
            }
            EngineError::Inequivalent { .. }
            | EngineError::PreconditionFailed(_)
            | EngineError::InvalidArgument(_)
            | EngineError::ResourceLimit(_) => Self::channel(ReplyCode::PRECONDITION_FAILED, text),
            EngineError::QueueLocked(_) => Self::channel(ReplyCode::RESOURCE_LOCKED, text),
            EngineError::AccessRefused(_) | EngineError::NotPermitted(_) => {
                Self::channel(ReplyCode::ACCESS_REFUSED, text)
            }
            EngineError::UnknownExchangeType(_) => {
                Self::connection(ReplyCode::COMMAND_INVALID, text)
            }
            EngineError::NotImplemented(_) => Self::connection(ReplyCode::NOT_IMPLEMENTED, text),
            _ => Self::connection(ReplyCode::INTERNAL_ERROR, text),
        }
    }
}
