//! Declare arguments (queue and exchange `x-*` tables): when a redeclare is
//! equivalent to what exists.
//!
//! Equivalence is RabbitMQ's: a number is a number whatever width or
//! signedness it was sent with (STOMP sends every integer as 64-bit, pika a
//! 32-bit one), a string is a string whether short or long, and nested
//! tables and arrays compare element by element under the same rules.

use switchyard_model::{FieldTable, FieldValue};

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
