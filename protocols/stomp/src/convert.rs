//! STOMP headers ↔ the shared message model.
//!
//! SEND headers that name an AMQP property (`content-type`, `persistent`,
//! `correlation-id`, `reply-to`, …) set that property; every other header
//! that is not part of the STOMP protocol itself becomes an AMQP header with
//! a string value. MESSAGE frames carry the properties back under the same
//! names, and each message header rendered as text: strings as they are,
//! numbers and booleans in decimal/`true`/`false`, byte arrays as base64, and
//! tables and arrays as JSON, so nothing an AMQP publisher set (`x-death`,
//! say) is dropped on the way to a browser. The full table is in
//! `docs/stomp.md`.

use bytes::Bytes;
use std::fmt::Write as _;
use switchyard_model::{FieldTable, FieldValue, Properties};

/// Headers that belong to STOMP itself and never become message headers.
const PROTOCOL_HEADERS: &[&str] = &[
    "destination",
    "receipt",
    "transaction",
    "content-length",
    "message-id",
    "subscription",
    "ack",
    "id",
    "redelivered",
    "durable",
    "auto-delete",
    "exclusive",
    "prefetch-count",
    "x-queue-name",
    "x-queue-type",
];

/// Headers that map to a message property.
const PROPERTY_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "persistent",
    "priority",
    "correlation-id",
    "reply-to",
    "expiration",
    "amqp-message-id",
    "timestamp",
    "type",
    "user-id",
    "app-id",
];

/// Whether a SEND header is copied into the message's headers.
fn is_custom(name: &str) -> bool {
    !PROTOCOL_HEADERS.contains(&name) && !PROPERTY_HEADERS.contains(&name)
}

/// Properties for a SEND frame's headers. `persistent` defaults to
/// `default_persistent`; `reply_to` is the already rewritten reply address.
pub(crate) fn properties_from_send(
    headers: &[(String, String)],
    default_persistent: bool,
    reply_to: Option<String>,
) -> Properties {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let persistent = match get("persistent").as_deref() {
        Some("true") => true,
        Some(_) => false,
        None => default_persistent,
    };
    let mut custom = FieldTable::new();
    for (k, v) in headers {
        if is_custom(k) && !custom.contains_key(k) {
            custom.insert(
                k.clone(),
                FieldValue::LongString(Bytes::copy_from_slice(v.as_bytes())),
            );
        }
    }
    Properties {
        content_type: get("content-type"),
        content_encoding: get("content-encoding"),
        headers: (!custom.is_empty()).then_some(custom),
        delivery_mode: Some(if persistent { 2 } else { 1 }),
        priority: get("priority").and_then(|p| p.trim().parse().ok()),
        correlation_id: get("correlation-id"),
        reply_to,
        expiration: get("expiration"),
        message_id: get("amqp-message-id"),
        timestamp: get("timestamp").and_then(|t| t.trim().parse().ok()),
        kind: get("type"),
        user_id: get("user-id"),
        app_id: get("app-id"),
        cluster_id: None,
    }
}

/// Append the MESSAGE headers for `props`.
pub(crate) fn headers_for_message(props: &Properties, out: &mut Vec<(String, String)>) {
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            out.push((k.to_owned(), v));
        }
    };
    put("content-type", props.content_type.clone());
    put("content-encoding", props.content_encoding.clone());
    if props.delivery_mode == Some(2) {
        put("persistent", Some("true".into()));
    }
    put("priority", props.priority.map(|p| p.to_string()));
    put("correlation-id", props.correlation_id.clone());
    // A bare queue name (the usual AMQP reply-to) is not a STOMP
    // destination; `/reply-queue/` makes it one a STOMP client can SEND to.
    put(
        "reply-to",
        props.reply_to.as_ref().map(|r| {
            if r.starts_with('/') {
                r.clone()
            } else {
                format!("/reply-queue/{r}")
            }
        }),
    );
    put("expiration", props.expiration.clone());
    put("amqp-message-id", props.message_id.clone());
    put("timestamp", props.timestamp.map(|t| t.to_string()));
    put("type", props.kind.clone());
    put("user-id", props.user_id.clone());
    put("app-id", props.app_id.clone());
    if let Some(headers) = &props.headers {
        for (k, v) in headers {
            // Never let a message header impersonate a protocol header.
            if is_custom(k) {
                out.push((k.clone(), render(v)));
            }
        }
    }
}

/// A header value as STOMP text.
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
    out.push_str(&serde_json::Value::String(s.to_owned()).to_string());
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
            let mut s = String::new();
            scalar(v, &mut s);
            if s.parse::<f64>().is_ok_and(f64::is_finite) {
                out.push_str(&s);
            } else {
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

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn send_headers_to_properties_and_back() {
        let headers = h(&[
            ("destination", "/queue/a"),
            ("content-type", "application/json"),
            ("correlation-id", "c1"),
            ("priority", "5"),
            ("persistent", "true"),
            ("x-custom", "v1"),
            ("x-custom", "v2"),
            ("receipt", "r1"),
        ]);
        let p = properties_from_send(&headers, false, Some("q-reply".into()));
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        assert_eq!(p.delivery_mode, Some(2));
        assert_eq!(p.priority, Some(5));
        let custom = p.headers.as_ref().unwrap();
        assert_eq!(custom.len(), 1, "protocol headers are not copied");
        assert_eq!(custom["x-custom"].as_str(), Some("v1"), "first wins");
        let mut out = Vec::new();
        headers_for_message(&p, &mut out);
        let get = |k: &str| out.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("reply-to"), Some("/reply-queue/q-reply"));
        assert_eq!(get("x-custom"), Some("v1"));
        assert_eq!(get("persistent"), Some("true"));
        assert_eq!(get("receipt"), None);
    }

    #[test]
    fn renders_every_value_type() {
        let mut t = FieldTable::new();
        t.insert("count".into(), FieldValue::I64(2));
        t.insert("reason".into(), FieldValue::string("rejected"));
        let v = FieldValue::Array(vec![FieldValue::Table(t), FieldValue::Bool(true)]);
        assert_eq!(render(&v), r#"[{"count":2,"reason":"rejected"},true]"#);
        assert_eq!(
            render(&FieldValue::Bytes(Bytes::from_static(b"ab\0"))),
            "YWIA"
        );
        assert_eq!(render(&FieldValue::Bytes(Bytes::from_static(b"a"))), "YQ==");
        assert_eq!(
            render(&FieldValue::Decimal {
                scale: 2,
                value: 1234
            }),
            "12.34"
        );
        assert_eq!(render(&FieldValue::I32(-7)), "-7");
        assert_eq!(render(&FieldValue::Void), "");
    }
}
