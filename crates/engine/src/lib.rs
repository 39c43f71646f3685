//! Switchyard's routing engine: vhosts, exchanges, bindings, queues,
//! consumers with credit, and acknowledgements.
//!
//! The engine knows no protocol: no AMQP, MQTT or STOMP type appears in its
//! API, and it does no I/O except through the [`store::Store`] trait, which it
//! defines and `switchyard-store` implements. Every call is synchronous and
//! short; locks are never held across an await because the engine never
//! awaits. Deliveries leave through a per-connection [`Outbox`] that the
//! adapter's connection task drains.
//!
//! Driving it: open a [`Broker`] over a store, look up a [`Vhost`], change its
//! topology with [`Vhost::apply`] and a [`Command`], publish with
//! [`Vhost::publish`], consume by adding a [`Consumer`] to a [`Queue`],
//! drain deliveries through an [`OutboxDrain`] and settle each with one
//! [`Settle`] ([`Unsettled::settle`], [`Settlement`]).

mod arguments;
mod auth;
mod backpressure;
mod broker;
mod command;
pub mod connections;
mod consumer;
mod dead_letter;
mod delayed;
mod error;
pub mod exchange;
pub mod inspect;
pub mod inthash;
pub mod policy;
mod queue;
mod retained;
mod route;
mod settle;
pub mod store;
mod timers;
mod vhost;

pub use arguments::{Overflow, QUEUE_ARGUMENTS, QueueArguments, policy_key};
pub use auth::{Authenticator, Identity, PermissionKind, Refused};
pub use backpressure::{FLOW_STALL, OwedReplies, Relief, StoreFailed, Throttle, wait_durable};
pub use broker::{Broker, DEFAULT_FLOW_BACKLOG, DEFAULT_VHOST};
pub use command::{Command, Outcome};
pub use consumer::{
    ChannelCredit, Consumer, ConsumerSpec, Delivery, Outbox, OutboxEvent, OutboxWaker,
    PENDING_LIMIT,
};
pub use delayed::DELAYED_TYPE;
pub use error::{EngineError, Result};
pub use exchange::{Destination, ExchangeKind};
pub use queue::{
    Got, QUEUE_HIGH_WATER_BYTES, QUEUE_LOW_WATER_BYTES, Queue, QueueSnapshot, QueueSpec, QueueStats,
};
pub use retained::{Retained, RetainedMessage};
pub use settle::{OutboxDrain, Settle, Settlement, Unsettled};
pub use store::Durable;
pub use vhost::{BUILTIN_EXCHANGES, OPERATOR, Published, Vhost};

#[cfg(test)]
mod tests;
