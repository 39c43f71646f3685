//! MQTT adapter for Switchyard (MQTT 3.1.1; MQTT 5 is not built yet).
//!
//! Three layers, as every adapter:
//! - [`codec`]: bytes to packets (via `mqttbytes`, after our own size and
//!   type checks) and packets to bytes. No I/O.
//! - [`session`]: one client's state machine — CONNECT, subscriptions as
//!   bindings of the client's queue to `amq.topic`, QoS 0/1/2 both ways,
//!   retained messages (kept by the engine, persisted), wills. No sockets.
//! - [`conn`]: the tokio task that owns a socket and drives a session.
//!
//! Topics map onto the engine as RabbitMQ's MQTT plugin does: topic `a/b/c`
//! is routing key `a.b.c` on `amq.topic`, filters translate `+` to `*`.

pub mod codec;
pub mod conn;
pub mod fuzzing;
pub mod session;
pub mod signal;
pub mod topic;

pub use conn::{MqttConfig, serve};
pub use session::Shared;
