//! The message every adapter produces and consumes.

use crate::field::FieldTable;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Whether a message should survive a broker restart (AMQP delivery-mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryMode {
    /// Kept in memory only (delivery-mode 1).
    Transient,
    /// Written to disk when it lands in a durable queue (delivery-mode 2).
    Persistent,
}

/// Message metadata, shaped after AMQP 0-9-1 basic properties. Every field is
/// optional because every protocol leaves most of them unset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Properties {
    /// MIME type of the body.
    pub content_type: Option<String>,
    /// MIME content encoding of the body.
    pub content_encoding: Option<String>,
    /// Application headers.
    pub headers: Option<FieldTable>,
    /// Raw delivery mode as sent (1 transient, 2 persistent); kept raw so it
    /// round-trips exactly.
    pub delivery_mode: Option<u8>,
    /// Priority 0–255 (queues honour 0–9 style ranges later).
    pub priority: Option<u8>,
    /// Correlation id for RPC.
    pub correlation_id: Option<String>,
    /// Where replies go.
    pub reply_to: Option<String>,
    /// Per-message TTL in milliseconds, as a decimal string (AMQP form).
    pub expiration: Option<String>,
    /// Application message id.
    pub message_id: Option<String>,
    /// Seconds since the Unix epoch.
    pub timestamp: Option<u64>,
    /// Application message type (AMQP `type`).
    pub kind: Option<String>,
    /// Authenticated user id claimed by the publisher.
    pub user_id: Option<String>,
    /// Publishing application id.
    pub app_id: Option<String>,
    /// Deprecated AMQP cluster id, carried only so it round-trips.
    pub cluster_id: Option<String>,
}

impl Properties {
    /// Persistent if delivery-mode is 2, transient otherwise.
    pub fn delivery_mode(&self) -> DeliveryMode {
        if self.delivery_mode == Some(2) {
            DeliveryMode::Persistent
        } else {
            DeliveryMode::Transient
        }
    }
}

/// One published message. The body is reference-counted: routing a message
/// to many queues clones pointers, never bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Exchange the message was published to (`""` for the default).
    pub exchange: String,
    /// Routing key it was published with.
    pub routing_key: String,
    /// Metadata.
    pub properties: Properties,
    /// Payload, never copied between queues or protocols.
    pub body: Bytes,
}

impl Message {
    /// Whether the publisher asked for the message to survive restarts.
    pub fn is_persistent(&self) -> bool {
        self.properties.delivery_mode() == DeliveryMode::Persistent
    }

    /// Approximate memory held by the message, for queue byte accounting.
    pub fn size_hint(&self) -> usize {
        self.body.len() + self.exchange.len() + self.routing_key.len() + 64
    }
}
