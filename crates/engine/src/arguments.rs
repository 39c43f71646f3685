//! Declare arguments (queue and exchange `x-*` tables): what a queue's
//! arguments mean, parsed once at declare ([`QueueArguments`]), and when a
//! redeclare is equivalent to what exists.
//!
//! Equivalence is RabbitMQ's: a number is a number whatever width or
//! signedness it was sent with (STOMP sends every integer as 64-bit, pika a
//! 32-bit one), a string is a string whether short or long, and nested
//! tables and arrays compare element by element under the same rules.
//!
//! The list of queue arguments Switchyard knows lives here. An argument it
//! does not implement but RabbitMQ would act on is refused (406), never
//! accepted and ignored; unknown `x-` names are kept, as RabbitMQ keeps
//! them.

use crate::error::{EngineError, Result};
use switchyard_model::{FieldTable, FieldValue};

/// What happens to a publish that would take a full queue over its limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overflow {
    /// The oldest ready message is dropped (or dead-lettered, `maxlen`).
    #[default]
    DropHead,
    /// The new message is refused (publisher confirm nack).
    RejectPublish,
    /// Refused, and dead-lettered (`maxlen`).
    RejectPublishDlx,
}

/// A queue's arguments as the engine acts on them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueArguments {
    /// `x-message-ttl`, ms.
    pub message_ttl: Option<u64>,
    /// `x-expires`, ms: deleted after being unused this long.
    pub expires: Option<u64>,
    /// `x-max-length`: most ready messages.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`: most ready body bytes.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub overflow: Overflow,
    /// `x-dead-letter-exchange` (may be `""`, the default exchange).
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key`.
    pub dead_letter_routing_key: Option<String>,
    /// `x-max-priority`: priorities 0..=this are kept apart (1–255).
    pub max_priority: Option<u8>,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
}

/// The queue arguments a declare may set that the engine acts on (and
/// `x-queue-mode`, accepted and ignored as RabbitMQ ignores it): what an
/// adapter whose clients send arguments as loose headers (STOMP) passes on.
pub const QUEUE_ARGUMENTS: &[&str] = &[
    "x-queue-type",
    "x-max-length",
    "x-max-length-bytes",
    "x-message-ttl",
    "x-expires",
    "x-max-priority",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-overflow",
    "x-single-active-consumer",
    "x-queue-mode",
];

/// The queue argument a policy definition key sets (`message-ttl` →
/// `x-message-ttl`, ...), for the keys RabbitMQ's policies may set on
/// classic queues; `None` for others (exchange keys such as
/// `alternate-exchange`, or keys this build does not apply).
#[must_use]
pub fn policy_key(key: &str) -> Option<&'static str> {
    Some(match key {
        "message-ttl" => "x-message-ttl",
        "expires" => "x-expires",
        "max-length" => "x-max-length",
        "max-length-bytes" => "x-max-length-bytes",
        "overflow" => "x-overflow",
        "dead-letter-exchange" => "x-dead-letter-exchange",
        "dead-letter-routing-key" => "x-dead-letter-routing-key",
        "queue-mode" => "x-queue-mode",
        _ => return None,
    })
}

/// Queue types: only `classic` is built.
const QUEUE_TYPES_LATER: &[&str] = &["quorum", "stream"];

impl QueueArguments {
    /// Parse and check a declare's arguments, as RabbitMQ checks them.
    pub fn parse(args: &FieldTable) -> Result<Self> {
        let mut a = Self::default();
        for (name, value) in args {
            let bad =
                |why: &str| EngineError::PreconditionFailed(format!("invalid arg '{name}': {why}"));
            let non_negative = || match value.as_i64() {
                Some(n) if n >= 0 => Ok(n.unsigned_abs()),
                Some(n) => Err(bad(&format!("{n} is negative"))),
                None => Err(bad("expected an integer")),
            };
            let text = || value.as_str().ok_or_else(|| bad("expected a string"));
            match name.as_str() {
                "x-message-ttl" => a.message_ttl = Some(non_negative()?),
                "x-expires" => match non_negative()? {
                    0 => return Err(bad("must be positive")),
                    n => a.expires = Some(n),
                },
                "x-max-length" => a.max_length = Some(non_negative()?),
                "x-max-length-bytes" => a.max_length_bytes = Some(non_negative()?),
                "x-overflow" => {
                    a.overflow = match text()? {
                        "drop-head" => Overflow::DropHead,
                        "reject-publish" => Overflow::RejectPublish,
                        "reject-publish-dlx" => Overflow::RejectPublishDlx,
                        other => {
                            return Err(bad(&format!(
                                "'{other}' is not drop-head, reject-publish or reject-publish-dlx"
                            )));
                        }
                    }
                }
                "x-dead-letter-exchange" => a.dead_letter_exchange = Some(text()?.to_owned()),
                "x-dead-letter-routing-key" => {
                    a.dead_letter_routing_key = Some(text()?.to_owned());
                }
                "x-max-priority" => match non_negative()? {
                    0 => {}
                    n => {
                        let p = u8::try_from(n)
                            .map_err(|_| bad(&format!("{n} is above the maximum 255")))?;
                        a.max_priority = Some(p);
                    }
                },
                "x-single-active-consumer" => {
                    a.single_active_consumer =
                        value.as_bool().ok_or_else(|| bad("expected a boolean"))?;
                }
                "x-queue-type" => match text()? {
                    "classic" => {}
                    t if QUEUE_TYPES_LATER.contains(&t) => {
                        return Err(bad(&format!(
                            "queue type '{t}' is not supported yet (only classic queues are)"
                        )));
                    }
                    t => return Err(bad(&format!("unknown queue type '{t}'"))),
                },
                // Quorum- and stream-only arguments RabbitMQ refuses on a
                // classic queue.
                "x-delivery-limit"
                | "x-quorum-initial-group-size"
                | "x-max-age"
                | "x-stream-max-segment-size-bytes" => {
                    return Err(bad(
                        "applies to quorum or stream queues, which are not supported yet",
                    ));
                }
                // Accepted and ignored, as RabbitMQ ignores them on one node
                // (`x-queue-mode` since 3.12; locators choose among nodes).
                "x-queue-mode" | "x-queue-master-locator" | "x-queue-leader-locator" => {}
                _ => {}
            }
        }
        if a.dead_letter_routing_key.is_some() && a.dead_letter_exchange.is_none() {
            return Err(EngineError::PreconditionFailed(
                "invalid arg 'x-dead-letter-routing-key': requires x-dead-letter-exchange".into(),
            ));
        }
        Ok(a)
    }
}

/// Whether two argument tables declare the same thing.
pub(crate) fn equivalent(a: &FieldTable, b: &FieldTable) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && same_value(va, vb))
}

/// The first argument (in name order) that `current` and `new` do not
/// agree on: set in one only, or set to different values. RabbitMQ names
/// it in its 406.
pub(crate) fn difference<'a>(current: &'a FieldTable, new: &'a FieldTable) -> Option<&'a str> {
    let changed = current
        .iter()
        .find(|(k, v)| !new.get(*k).is_some_and(|n| same_value(v, n)))
        .map(|(k, _)| k.as_str());
    let added = new
        .keys()
        .find(|k| !current.contains_key(*k))
        .map(String::as_str);
    match (changed, added) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The integer a value holds, whatever its width.
fn integer(v: &FieldValue) -> Option<i128> {
    Some(match *v {
        FieldValue::I8(n) => n.into(),
        FieldValue::U8(n) => n.into(),
        FieldValue::I16(n) => n.into(),
        FieldValue::U16(n) => n.into(),
        FieldValue::I32(n) => n.into(),
        FieldValue::U32(n) => n.into(),
        FieldValue::I64(n) => n.into(),
        _ => return None,
    })
}

/// The bytes a string value holds, short or long.
fn text(v: &FieldValue) -> Option<&[u8]> {
    match v {
        FieldValue::ShortString(s) => Some(s.as_bytes()),
        FieldValue::LongString(b) => Some(b),
        _ => None,
    }
}

fn same_value(a: &FieldValue, b: &FieldValue) -> bool {
    if let (Some(x), Some(y)) = (integer(a), integer(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (text(a), text(b)) {
        return x == y;
    }
    match (a, b) {
        (FieldValue::Table(x), FieldValue::Table(y)) => equivalent(x, y),
        (FieldValue::Array(x), FieldValue::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_value(p, q))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn table(pairs: &[(&str, FieldValue)]) -> FieldTable {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn integer_widths_are_one_number() {
        let long = table(&[("x-max-length", FieldValue::I64(10))]);
        for v in [
            FieldValue::I32(10),
            FieldValue::U32(10),
            FieldValue::I16(10),
            FieldValue::U8(10),
        ] {
            assert!(
                equivalent(&long, &table(&[("x-max-length", v.clone())])),
                "{v:?}"
            );
        }
        assert!(!equivalent(
            &long,
            &table(&[("x-max-length", FieldValue::I32(11))])
        ));
        assert!(!equivalent(
            &long,
            &table(&[("x-max-length", FieldValue::string("10"))])
        ));
    }

    #[test]
    fn strings_short_or_long_and_nesting() {
        let a = table(&[(
            "x-dead-letter-exchange",
            FieldValue::ShortString("dlx".into()),
        )]);
        let b = table(&[(
            "x-dead-letter-exchange",
            FieldValue::LongString(Bytes::from_static(b"dlx")),
        )]);
        assert!(equivalent(&a, &b));
        let nested = |v| {
            table(&[(
                "t",
                FieldValue::Array(vec![FieldValue::Table(table(&[("n", v)]))]),
            )])
        };
        assert!(equivalent(
            &nested(FieldValue::I8(1)),
            &nested(FieldValue::I64(1))
        ));
        assert!(!equivalent(
            &nested(FieldValue::I8(1)),
            &nested(FieldValue::I64(2))
        ));
    }

    fn parse(pairs: &[(&str, FieldValue)]) -> Result<QueueArguments> {
        QueueArguments::parse(&table(pairs))
    }

    #[test]
    fn queue_arguments_parse_as_rabbitmq_checks_them() {
        let a = parse(&[
            ("x-message-ttl", FieldValue::I32(100)),
            ("x-expires", FieldValue::I64(5000)),
            ("x-max-length", FieldValue::U16(10)),
            ("x-max-length-bytes", FieldValue::I64(1 << 20)),
            ("x-overflow", FieldValue::string("reject-publish-dlx")),
            ("x-dead-letter-exchange", FieldValue::string("dlx")),
            ("x-dead-letter-routing-key", FieldValue::string("dead")),
            ("x-max-priority", FieldValue::U8(10)),
            ("x-single-active-consumer", FieldValue::Bool(true)),
            ("x-queue-type", FieldValue::string("classic")),
            ("x-queue-mode", FieldValue::string("lazy")),
            ("x-something-else", FieldValue::I8(1)),
        ])
        .unwrap();
        assert_eq!(
            a,
            QueueArguments {
                message_ttl: Some(100),
                expires: Some(5000),
                max_length: Some(10),
                max_length_bytes: Some(1 << 20),
                overflow: Overflow::RejectPublishDlx,
                dead_letter_exchange: Some("dlx".into()),
                dead_letter_routing_key: Some("dead".into()),
                max_priority: Some(10),
                single_active_consumer: true,
            }
        );
        assert_eq!(parse(&[]).unwrap(), QueueArguments::default());
        assert_eq!(
            parse(&[("x-max-priority", FieldValue::I32(0))])
                .unwrap()
                .max_priority,
            None
        );
    }

    #[test]
    fn invalid_queue_arguments_are_refused() {
        for (name, v, says) in [
            (
                "x-max-priority",
                FieldValue::I32(300),
                "above the maximum 255",
            ),
            ("x-overflow", FieldValue::string("bogus"), "'bogus'"),
            (
                "x-queue-type",
                FieldValue::string("quorum"),
                "not supported yet",
            ),
            (
                "x-queue-type",
                FieldValue::string("stream"),
                "not supported yet",
            ),
            (
                "x-queue-type",
                FieldValue::string("nope"),
                "unknown queue type",
            ),
            ("x-message-ttl", FieldValue::I32(-1), "negative"),
            ("x-expires", FieldValue::I32(0), "positive"),
            ("x-max-length", FieldValue::I64(-1), "negative"),
            ("x-max-length", FieldValue::string("5"), "integer"),
            ("x-dead-letter-exchange", FieldValue::I32(1), "string"),
            (
                "x-single-active-consumer",
                FieldValue::string("yes"),
                "boolean",
            ),
            ("x-delivery-limit", FieldValue::I32(5), "quorum"),
        ] {
            match parse(&[(name, v)]) {
                Err(EngineError::PreconditionFailed(m)) => {
                    assert!(m.contains(name) && m.contains(says), "{name}: {m}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        let e = parse(&[("x-dead-letter-routing-key", FieldValue::string("k"))]).unwrap_err();
        assert!(
            e.to_string().contains("requires x-dead-letter-exchange"),
            "{e}"
        );
    }

    #[test]
    fn keys_must_match() {
        let a = table(&[("x-a", FieldValue::I64(1))]);
        let b = table(&[("x-b", FieldValue::I64(1))]);
        assert!(!equivalent(&a, &b));
        assert_eq!(difference(&a, &b), Some("x-a"));
        assert_eq!(difference(&b, &a), Some("x-a"));
        assert_eq!(difference(&a, &FieldTable::new()), Some("x-a"));
        assert_eq!(difference(&FieldTable::new(), &b), Some("x-b"));
        assert_eq!(difference(&a, &table(&[("x-a", FieldValue::U8(1))])), None);
        assert_eq!(
            difference(&a, &table(&[("x-a", FieldValue::U8(2))])),
            Some("x-a")
        );
        assert!(!equivalent(&a, &FieldTable::new()));
        assert!(equivalent(&FieldTable::new(), &FieldTable::new()));
    }
}
