//! The shared message model of Switchyard.
//!
//! Every protocol adapter parses its wire format into these types and renders
//! them back; the engine routes and stores nothing else. The model is shaped
//! after AMQP 0-9-1's basic properties because that is the richest of the
//! three protocols, but it knows no wire format: there is no parsing or
//! encoding of any protocol here.
//!
//! Main types: [`Message`] (body as [`bytes::Bytes`], cheap to clone into many
//! queues), [`Properties`], and the header tree [`FieldValue`] / [`FieldTable`].

mod field;
mod message;

mod text;

pub use field::{FieldTable, FieldValue};
pub use message::{DeliveryMode, Message, Properties};
