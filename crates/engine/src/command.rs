//! Topology changes as values.
//!
//! Every change to exchanges, queues and bindings is a [`Command`] applied by
//! [`crate::Vhost::apply`]. Today it is applied locally and written through
//! the store; a replicated deployment would append the same value to a Raft
//! log first and apply it on every node.

use crate::exchange::{Binding, ExchangeKind};
use crate::queue::QueueSpec;
use switchyard_model::FieldTable;

/// A topology change in one vhost.
#[derive(Debug, Clone)]
pub enum Command {
    /// Create an exchange, or check an existing one is equivalent.
    DeclareExchange {
        /// Name.
        name: String,
        /// Routing algorithm.
        kind: ExchangeKind,
        /// Survives restarts.
        durable: bool,
        /// Deleted with its last binding.
        auto_delete: bool,
        /// Not publishable by clients.
        internal: bool,
        /// Arguments.
        arguments: FieldTable,
    },
    /// Delete an exchange.
    DeleteExchange {
        /// Name.
        name: String,
        /// Refuse if it has bindings.
        if_unused: bool,
    },
    /// Create a queue (an empty name gets a server-generated one), or check
    /// an existing one is equivalent.
    DeclareQueue(QueueSpec),
    /// Delete a queue, cancelling its consumers.
    DeleteQueue {
        /// Name.
        name: String,
        /// Refuse if it has consumers.
        if_unused: bool,
        /// Refuse if it has ready messages.
        if_empty: bool,
    },
    /// Add a binding from `source`.
    Bind {
        /// Source exchange.
        source: String,
        /// Destination, key and arguments.
        binding: Binding,
    },
    /// Remove a binding from `source` (absent bindings are not an error).
    Unbind {
        /// Source exchange.
        source: String,
        /// Destination, key and arguments.
        binding: Binding,
    },
    /// Drop a queue's ready messages.
    PurgeQueue {
        /// Name.
        name: String,
    },
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to report.
    Done,
    /// A queue exists after declare.
    Queue {
        /// Its (possibly generated) name.
        name: String,
        /// Ready messages.
        messages: u32,
        /// Consumers.
        consumers: u32,
    },
    /// Messages dropped by delete or purge.
    Messages(u32),
}
