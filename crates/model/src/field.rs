//! Protocol-neutral header values: the tree that AMQP field tables, MQTT 5
//! user properties and STOMP headers all map onto.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A header table: names to values. Ordered so that encodings are
/// deterministic and tables compare equal regardless of insertion order.
pub type FieldTable = BTreeMap<String, FieldValue>;

/// One header value. Variants follow AMQP 0-9-1's field types (as RabbitMQ
/// reads them), which is the superset of what the other protocols carry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FieldValue {
    /// No value (AMQP `V`).
    Void,
    /// Boolean (AMQP `t`).
    Bool(bool),
    /// Signed 8-bit (AMQP `b`).
    I8(i8),
    /// Unsigned 8-bit (AMQP `B`).
    U8(u8),
    /// Signed 16-bit (AMQP `s`).
    I16(i16),
    /// Unsigned 16-bit (AMQP `u`).
    U16(u16),
    /// Signed 32-bit (AMQP `I`).
    I32(i32),
    /// Unsigned 32-bit (AMQP `i`).
    U32(u32),
    /// Signed 64-bit (AMQP `l`).
    I64(i64),
    /// 32-bit float (AMQP `f`).
    F32(f32),
    /// 64-bit float (AMQP `d`).
    F64(f64),
    /// Decimal: `value / 10^scale` (AMQP `D`).
    Decimal {
        /// Number of decimal digits after the point.
        scale: u8,
        /// Unscaled value.
        value: u32,
    },
    /// Short UTF-8 string. AMQP adapters send it as a long string (`S`),
    /// since RabbitMQ's dialect has no short-string field type.
    ShortString(String),
    /// Long string (AMQP `S`): bytes, usually but not necessarily UTF-8.
    LongString(Bytes),
    /// Byte array (AMQP `x`).
    Bytes(Bytes),
    /// Seconds since the Unix epoch (AMQP `T`).
    Timestamp(u64),
    /// Nested table (AMQP `F`).
    Table(FieldTable),
    /// Array of values (AMQP `A`).
    Array(Vec<Self>),
}

impl FieldValue {
    /// A long string from UTF-8 text.
    pub fn string(s: impl Into<String>) -> Self {
        Self::LongString(Bytes::from(s.into()))
    }

    /// The value as text if it is a string type holding valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::ShortString(s) => Some(s),
            Self::LongString(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer if it is any integer type.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::I8(v) => Some(v.into()),
            Self::U8(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::I32(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::I64(v) => Some(v),
            Self::Timestamp(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a boolean if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// Equality as a headers exchange sees it: strings compare by content
    /// whatever their width, integers by value whatever their width.
    pub fn matches(&self, other: &Self) -> bool {
        if let (Some(a), Some(b)) = (self.as_str(), other.as_str()) {
            return a == b;
        }
        if let (Some(a), Some(b)) = (self.as_i64(), other.as_i64()) {
            return a == b;
        }
        self == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_across_widths() {
        assert!(FieldValue::I8(5).matches(&FieldValue::I64(5)));
        assert!(FieldValue::ShortString("a".into()).matches(&FieldValue::string("a")));
        assert!(!FieldValue::I8(5).matches(&FieldValue::string("5")));
        assert!(!FieldValue::Bool(true).matches(&FieldValue::Bool(false)));
    }
}
