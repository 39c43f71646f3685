//! STOMP 1.0, 1.1 and 1.2 for Switchyard.
//!
//! Three layers, as every protocol adapter: [`codec`] (bytes ↔ frames, nom,
//! no I/O), [`session`] (one connection's state machine over the engine, no
//! sockets) and [`conn`] (the tokio task that owns a byte stream — TCP or a
//! WebSocket bridged by the server — and drives a session).

pub mod codec;
pub mod conn;
mod convert;
pub mod destination;
pub mod fuzzing;
pub mod session;

pub use codec::{Command, DecodeError, Decoder, Frame, Limits, Version};
pub use conn::{StompConfig, serve};
pub use session::Shared;
