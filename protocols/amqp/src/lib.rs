//! AMQP 0-9-1 adapter for Switchyard.
//!
//! Three layers, in order of dependence:
//! - [`codec`]: bytes to frames and frames to bytes (via `amq-protocol`),
//!   with declared sizes checked before anything is buffered. No I/O.
//! - [`session`]: the per-connection state machine (handshake, channels,
//!   content assembly, engine calls, error mapping). No sockets; driven by
//!   `handle_*` calls and read out through its output buffer.
//! - [`conn`]: the tokio task that owns a socket and drives a session, with
//!   heartbeats, backpressure and graceful shutdown.
//!
//! It deliberately does not route, store or queue anything: that is the
//! engine's job.

pub mod codec;
pub mod conn;
pub mod error;
pub mod session;

mod channel;
mod convert;

pub use conn::{AmqpConfig, serve};
