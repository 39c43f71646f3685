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
    let persistent = get("persistent")
        .as_deref()
        .and_then(crate::codec::boolean)
        .unwrap_or(default_persistent);
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
    // A reply-to must be a destination a STOMP client can SEND to: an MQTT
    // response topic becomes `/topic/<routing key>` (it answers through
    // `amq.topic`), a bare queue name (the usual AMQP reply-to)
    // `/reply-queue/<name>`.
    let from_mqtt = props
        .headers
        .as_ref()
        .is_some_and(|h| h.contains_key("x-mqtt-publish-qos"));
    put(
        "reply-to",
        props.reply_to.as_ref().map(|r| {
            if r.starts_with('/') {
                r.clone()
            } else if from_mqtt {
                format!("/topic/{}", mqtt_topic_to_key(r))
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
                out.push((k.clone(), v.to_text()));
            }
        }
    }
}

/// An MQTT topic as the `amq.topic` routing key (`/` and `.` swap).
fn mqtt_topic_to_key(topic: &str) -> String {
    topic
        .chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            c => c,
        })
        .collect()
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
}
