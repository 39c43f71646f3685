//! Engine errors. Each variant says which rule was broken; adapters map them
//! to wire codes in exactly one place (e.g. AMQP reply codes, STOMP ERROR).

use thiserror::Error;

/// Why an engine operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The named vhost does not exist.
    #[error("no vhost '{0}'")]
    VhostNotFound(String),
    /// The named exchange does not exist.
    #[error("no exchange '{0}' in vhost '{1}'")]
    ExchangeNotFound(String, String),
    /// The named queue does not exist.
    #[error("no queue '{0}' in vhost '{1}'")]
    QueueNotFound(String, String),
    /// A redeclare differs from the existing entity (AMQP 406).
    #[error("inequivalent arg '{arg}' for {what} '{name}'")]
    Inequivalent {
        /// "queue" or "exchange".
        what: &'static str,
        /// Entity name.
        name: String,
        /// The differing argument.
        arg: String,
    },
    /// An exclusive queue belongs to another connection (AMQP 405).
    #[error("cannot obtain exclusive access to locked queue '{0}'")]
    QueueLocked(String),
    /// A name uses a reserved prefix or the operation touches a built-in.
    #[error("access refused: {0}")]
    AccessRefused(String),
    /// A precondition failed (if-unused, if-empty, bad argument, ...).
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// The request is syntactically fine but not allowed (AMQP 530 / 406).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// `exchange.declare` named a type the engine does not have.
    #[error("unknown exchange type '{0}'")]
    UnknownExchangeType(String),
    /// An operation on the default exchange or another built-in that is
    /// never allowed.
    #[error("operation not permitted on {0}")]
    NotPermitted(String),
    /// A configured resource limit was reached.
    #[error("resource limit: {0}")]
    ResourceLimit(String),
    /// A feature the engine does not implement.
    #[error("not implemented: {0}")]
    NotImplemented(String),
}

/// Shorthand for engine results.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
