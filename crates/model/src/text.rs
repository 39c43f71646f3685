//! Header values as text, for protocols whose headers are strings (STOMP
//! headers, MQTT 5 user properties): strings as they are, numbers and
//! booleans in decimal / `true` / `false`, timestamps as seconds, decimals
//! as `12.34`, byte arrays as base64, tables and arrays as JSON. Nothing an
//! AMQP publisher set is dropped on the way (`x-death`, say).

use crate::FieldValue;
use std::fmt::Write as _;

impl FieldValue {
    /// The value rendered as text (see the module docs).
    pub fn to_text(&self) -> String {
        render(self)
    }
}

/// The value as text, for protocols whose headers are strings (STOMP
/// headers, MQTT 5 user properties).
pub(crate) fn render(v: &FieldValue) -> String {
    match v {
        FieldValue::ShortString(s) => s.clone(),
        FieldValue::LongString(b) => String::from_utf8_lossy(b).into_owned(),
        FieldValue::Table(_) | FieldValue::Array(_) => {
            let mut s = String::new();
            json(v, &mut s);
            s
        }
        other => {
            let mut s = String::new();
            scalar(other, &mut s);
            s
        }
    }
}

fn scalar(v: &FieldValue, out: &mut String) {
    let _ = match v {
        FieldValue::Void => Ok(()),
        FieldValue::Bool(b) => write!(out, "{b}"),
        FieldValue::I8(n) => write!(out, "{n}"),
        FieldValue::U8(n) => write!(out, "{n}"),
        FieldValue::I16(n) => write!(out, "{n}"),
        FieldValue::U16(n) => write!(out, "{n}"),
        FieldValue::I32(n) => write!(out, "{n}"),
        FieldValue::U32(n) => write!(out, "{n}"),
        FieldValue::I64(n) => write!(out, "{n}"),
        FieldValue::F32(n) => write!(out, "{n}"),
        FieldValue::F64(n) => write!(out, "{n}"),
        FieldValue::Decimal { scale, value } => {
            let scale = u32::from(*scale);
            match 10u64.checked_pow(scale) {
                Some(p) if scale > 0 => write!(
                    out,
                    "{}.{:0width$}",
                    u64::from(*value) / p,
                    u64::from(*value) % p,
                    width = scale as usize
                ),
                _ => write!(out, "{value}"),
            }
        }
        FieldValue::Timestamp(t) => write!(out, "{t}"),
        FieldValue::Bytes(b) => {
            base64(b, out);
            Ok(())
        }
        FieldValue::ShortString(_)
        | FieldValue::LongString(_)
        | FieldValue::Table(_)
        | FieldValue::Array(_) => Ok(()),
    };
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json(v: &FieldValue, out: &mut String) {
    match v {
        FieldValue::Table(t) => {
            out.push('{');
            for (i, (k, v)) in t.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(k, out);
                out.push(':');
                json(v, out);
            }
            out.push('}');
        }
        FieldValue::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json(v, out);
            }
            out.push(']');
        }
        FieldValue::Void => out.push_str("null"),
        FieldValue::Bool(_)
        | FieldValue::I8(_)
        | FieldValue::U8(_)
        | FieldValue::I16(_)
        | FieldValue::U16(_)
        | FieldValue::I32(_)
        | FieldValue::U32(_)
        | FieldValue::I64(_)
        | FieldValue::Timestamp(_) => scalar(v, out),
        FieldValue::F32(_) | FieldValue::F64(_) | FieldValue::Decimal { .. } => {
            // JSON has no infinity or NaN: those become strings.
            let finite = match v {
                FieldValue::F32(f) => f.is_finite(),
                FieldValue::F64(f) => f.is_finite(),
                _ => true,
            };
            if finite {
                scalar(v, out);
            } else {
                let mut s = String::new();
                scalar(v, &mut s);
                json_string(&s, out);
            }
        }
        other => json_string(&render(other), out),
    }
}

fn base64(bytes: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FieldTable;
    use bytes::Bytes;

    #[test]
    fn renders_every_value_type() {
        let mut t = FieldTable::new();
        t.insert("count".into(), FieldValue::I64(2));
        t.insert("reason".into(), FieldValue::string("rejected"));
        let v = FieldValue::Array(vec![FieldValue::Table(t), FieldValue::Bool(true)]);
        assert_eq!(
            FieldValue::to_text(&v),
            r#"[{"count":2,"reason":"rejected"},true]"#
        );
        assert_eq!(
            FieldValue::to_text(&FieldValue::Bytes(Bytes::from_static(b"ab\0"))),
            "YWIA"
        );
        assert_eq!(
            FieldValue::to_text(&FieldValue::Bytes(Bytes::from_static(b"a"))),
            "YQ=="
        );
        assert_eq!(
            FieldValue::to_text(&FieldValue::Decimal {
                scale: 2,
                value: 1234
            }),
            "12.34"
        );
        assert_eq!(FieldValue::to_text(&FieldValue::I32(-7)), "-7");
        assert_eq!(FieldValue::to_text(&FieldValue::Void), "");
    }

    #[test]
    fn floats_in_json_are_numbers_unless_not_finite() {
        let v = FieldValue::Array(vec![
            FieldValue::F64(1.5),
            FieldValue::F32(f32::INFINITY),
            FieldValue::F64(f64::NAN),
        ]);
        assert_eq!(v.to_text(), r#"[1.5,"inf","NaN"]"#);
    }

    #[test]
    fn json_strings_are_escaped() {
        let v = FieldValue::Array(vec![FieldValue::string("a\"b\\c\n\u{1}")]);
        assert_eq!(v.to_text(), r#"["a\"b\\c\n\u0001"]"#);
    }
}
