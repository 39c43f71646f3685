//! MQTT 5 PUBLISH and will properties ↔ the shared message model.
//!
//! | MQTT 5 | model |
//! |---|---|
//! | content type | `content_type` |
//! | response topic | `reply_to` (the topic, as written) |
//! | correlation data | `correlation_id` if UTF-8, else header `x-mqtt-correlation-data` (bytes) |
//! | message expiry interval (s) | `expiration` (ms, as AMQP writes it) |
//! | payload format indicator | header `x-mqtt-payload-format` |
//! | user properties | headers; a repeated key becomes an array of strings |
//!
//! | (no MQTT 5 field) message id, type, priority, timestamp, app id, user id, content encoding | user properties `amqp-message-id`, `amqp-type`, `amqp-priority`, `amqp-timestamp`, `amqp-app-id`, `amqp-user-id`, `amqp-content-encoding` (read back into the properties when an MQTT 5 client publishes them) |
//!
//! Going out, every other header becomes a user property, rendered as
//! text ([`FieldValue::to_text`]); arrays become one property per element.
//! Headers the MQTT adapter itself sets (`x-mqtt-*`) stay in the broker.

use bytes::Bytes;
use mqttbytes::v5::{PublishProperties, WillProperties};
use std::time::Instant;
use switchyard_model::{FieldTable, FieldValue, Message, Properties};

/// Correlation data that is not UTF-8.
pub(super) const CORRELATION_HEADER: &str = "x-mqtt-correlation-data";
/// The payload format indicator.
pub(super) const PAYLOAD_FORMAT_HEADER: &str = "x-mqtt-payload-format";

/// The fields PUBLISH and will properties share.
pub(super) struct Carried<'a> {
    pub(super) content_type: Option<&'a String>,
    pub(super) response_topic: Option<&'a String>,
    pub(super) correlation_data: Option<&'a Bytes>,
    pub(super) expiry: Option<u32>,
    pub(super) payload_format: Option<u8>,
    pub(super) user_properties: &'a [(String, String)],
}

impl<'a> From<&'a PublishProperties> for Carried<'a> {
    fn from(p: &'a PublishProperties) -> Self {
        Self {
            content_type: p.content_type.as_ref(),
            response_topic: p.response_topic.as_ref(),
            correlation_data: p.correlation_data.as_ref(),
            expiry: p.message_expiry_interval,
            payload_format: p.payload_format_indicator,
            user_properties: &p.user_properties,
        }
    }
}

impl<'a> From<&'a WillProperties> for Carried<'a> {
    fn from(p: &'a WillProperties) -> Self {
        Self {
            content_type: p.content_type.as_ref(),
            response_topic: p.response_topic.as_ref(),
            correlation_data: p.correlation_data.as_ref(),
            expiry: p.message_expiry_interval,
            payload_format: p.payload_format_indicator,
            user_properties: &p.user_properties,
        }
    }
}

/// Properties MQTT 5 has no field for, carried as user properties.
const CARRIED_AS_USER_PROPERTY: [&str; 7] = [
    "amqp-message-id",
    "amqp-type",
    "amqp-priority",
    "amqp-timestamp",
    "amqp-app-id",
    "amqp-user-id",
    "amqp-content-encoding",
];

/// Set a property from its `amqp-*` user property; false if `k` is not one.
fn property_from_user(k: &str, v: &str, p: &mut Properties) -> bool {
    match k {
        "amqp-message-id" => p.message_id = Some(v.to_owned()),
        "amqp-type" => p.kind = Some(v.to_owned()),
        // A value that does not parse stays an ordinary header.
        "amqp-priority" => match v.trim().parse() {
            Ok(n) => p.priority = Some(n),
            Err(_) => return false,
        },
        "amqp-timestamp" => match v.trim().parse() {
            Ok(n) => p.timestamp = Some(n),
            Err(_) => return false,
        },
        "amqp-app-id" => p.app_id = Some(v.to_owned()),
        "amqp-user-id" => p.user_id = Some(v.to_owned()),
        "amqp-content-encoding" => p.content_encoding = Some(v.to_owned()),
        _ => return false,
    }
    true
}

/// The `amqp-*` user properties for what `p` has and MQTT 5 cannot say.
fn user_from_properties(p: &Properties, out: &mut Vec<(String, String)>) {
    let values = [
        p.message_id.clone(),
        p.kind.clone(),
        p.priority.map(|v| v.to_string()),
        p.timestamp.map(|v| v.to_string()),
        p.app_id.clone(),
        p.user_id.clone(),
        p.content_encoding.clone(),
    ];
    for (name, v) in CARRIED_AS_USER_PROPERTY.iter().zip(values) {
        if let Some(v) = v {
            out.push(((*name).to_owned(), v));
        }
    }
}

/// Set what `c` carries on `props` and `headers`. User properties are
/// applied first, so the adapter's own headers, set afterwards, win.
pub(super) fn apply(c: &Carried<'_>, props: &mut Properties, headers: &mut FieldTable) {
    for (k, v) in c.user_properties {
        if property_from_user(k, v, props) {
            continue;
        }
        let value = FieldValue::string(v.as_str());
        match headers.get_mut(k) {
            None => {
                headers.insert(k.clone(), value);
            }
            Some(FieldValue::Array(items)) => items.push(value),
            Some(first) => {
                let first = std::mem::replace(first, FieldValue::Void);
                headers.insert(k.clone(), FieldValue::Array(vec![first, value]));
            }
        }
    }
    props.content_type = c.content_type.cloned();
    props.reply_to = c.response_topic.cloned();
    if let Some(data) = c.correlation_data {
        match std::str::from_utf8(data) {
            Ok(s) => props.correlation_id = Some(s.to_owned()),
            Err(_) => {
                headers.insert(CORRELATION_HEADER.into(), FieldValue::Bytes(data.clone()));
            }
        }
    }
    props.expiration = c.expiry.map(|s| (u64::from(s) * 1000).to_string());
    if let Some(f) = c.payload_format {
        headers.insert(PAYLOAD_FORMAT_HEADER.into(), FieldValue::U8(f));
    }
}

/// PUBLISH properties with nothing set.
pub(super) fn empty_publish_properties() -> PublishProperties {
    PublishProperties {
        payload_format_indicator: None,
        message_expiry_interval: None,
        topic_alias: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
        subscription_identifiers: Vec::new(),
        content_type: None,
    }
}

/// The PUBLISH properties for delivering `m` to an MQTT 5 client, with the
/// identifiers of the subscriptions it matched. A message that expires at
/// `expires_at` carries the seconds it has left (MQTT-3.3.2-6).
pub(super) fn for_delivery(
    m: &Message,
    subscription_ids: Vec<usize>,
    expires_at: Option<Instant>,
) -> Option<PublishProperties> {
    let p = &m.properties;
    let headers = p.headers.as_ref();
    let header = |k: &str| headers.and_then(|h| h.get(k));
    let correlation_data = match header(CORRELATION_HEADER) {
        Some(FieldValue::Bytes(b)) => Some(b.clone()),
        _ => p
            .correlation_id
            .as_ref()
            .map(|c| Bytes::copy_from_slice(c.as_bytes())),
    };
    let mut user_properties = Vec::new();
    user_from_properties(p, &mut user_properties);
    for (k, v) in headers.into_iter().flatten() {
        if k.starts_with("x-mqtt-") {
            continue;
        }
        match v {
            FieldValue::Array(items) => {
                for item in items {
                    user_properties.push((k.clone(), item.to_text()));
                }
            }
            other => user_properties.push((k.clone(), other.to_text())),
        }
    }
    let expiry = match expires_at {
        Some(t) => {
            let left = t.saturating_duration_since(Instant::now()).as_millis();
            Some(u32::try_from(left.div_ceil(1000).max(1)).unwrap_or(u32::MAX))
        }
        None => p
            .expiration
            .as_deref()
            .and_then(|e| e.trim().parse::<u64>().ok())
            .map(|ms| u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX)),
    };
    let props = PublishProperties {
        payload_format_indicator: header(PAYLOAD_FORMAT_HEADER)
            .and_then(FieldValue::as_i64)
            .and_then(|f| u8::try_from(f).ok()),
        message_expiry_interval: expiry,
        topic_alias: None,
        response_topic: p.reply_to.clone(),
        correlation_data,
        user_properties,
        subscription_identifiers: subscription_ids,
        content_type: p.content_type.clone(),
    };
    let empty = props.payload_format_indicator.is_none()
        && props.message_expiry_interval.is_none()
        && props.response_topic.is_none()
        && props.correlation_data.is_none()
        && props.user_properties.is_empty()
        && props.subscription_identifiers.is_empty()
        && props.content_type.is_none();
    (!empty).then_some(props)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_the_model() {
        let inbound = PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(30),
            topic_alias: None,
            response_topic: Some("replies/dev1".into()),
            correlation_data: Some(Bytes::from_static(b"\xff\x00id")),
            user_properties: vec![
                ("site".into(), "a".into()),
                ("tag".into(), "x".into()),
                ("tag".into(), "y".into()),
            ],
            subscription_identifiers: vec![],
            content_type: Some("application/json".into()),
        };
        let mut props = Properties::default();
        let mut headers = FieldTable::new();
        apply(&(&inbound).into(), &mut props, &mut headers);
        assert_eq!(props.reply_to.as_deref(), Some("replies/dev1"));
        assert_eq!(props.expiration.as_deref(), Some("30000"));
        assert!(
            props.correlation_id.is_none(),
            "binary data is kept as bytes"
        );
        assert!(matches!(headers.get("tag"), Some(FieldValue::Array(v)) if v.len() == 2));
        props.headers = Some(headers);
        let m = Message {
            exchange: "amq.topic".into(),
            routing_key: "a".into(),
            properties: props,
            body: Bytes::new(),
        };
        let out = for_delivery(&m, vec![7], None).expect("properties");
        assert_eq!(out.content_type, inbound.content_type);
        assert_eq!(out.response_topic, inbound.response_topic);
        assert_eq!(out.correlation_data, inbound.correlation_data);
        assert_eq!(out.message_expiry_interval, Some(30));
        assert_eq!(out.payload_format_indicator, Some(1));
        assert_eq!(out.subscription_identifiers, vec![7]);
        let mut user = out.user_properties;
        user.sort();
        assert_eq!(user, {
            let mut u = inbound.user_properties.clone();
            u.sort();
            u
        });
    }

    #[test]
    fn properties_without_an_mqtt_field_travel_as_user_properties() {
        let p = Properties {
            message_id: Some("m-1".into()),
            kind: Some("order.created".into()),
            priority: Some(7),
            timestamp: Some(1_700_000_000),
            app_id: Some("shop".into()),
            user_id: Some("guest".into()),
            content_encoding: Some("gzip".into()),
            ..Properties::default()
        };
        let m = Message {
            exchange: String::new(),
            routing_key: String::new(),
            properties: p.clone(),
            body: Bytes::new(),
        };
        let out = for_delivery(&m, vec![], None).expect("properties");
        assert_eq!(out.user_properties.len(), 7);
        let mut back = Properties::default();
        let mut headers = FieldTable::new();
        apply(&(&out).into(), &mut back, &mut headers);
        assert!(headers.is_empty(), "not left as headers: {headers:?}");
        assert_eq!(back, p);
    }

    #[test]
    fn expiry_counts_down() {
        let m = Message {
            exchange: String::new(),
            routing_key: String::new(),
            properties: Properties {
                expiration: Some("60000".into()),
                ..Properties::default()
            },
            body: Bytes::new(),
        };
        let soon = Instant::now() + std::time::Duration::from_millis(2500);
        let out = for_delivery(&m, vec![], Some(soon)).expect("properties");
        assert_eq!(
            out.message_expiry_interval,
            Some(3),
            "time left, rounded up"
        );
    }

    #[test]
    fn user_properties_cannot_impersonate_and_internal_headers_stay_home() {
        let mut props = Properties::default();
        let mut headers = FieldTable::new();
        let user = [("x-mqtt-client-id".to_owned(), "someone-else".to_owned())];
        let c = Carried {
            content_type: None,
            response_topic: None,
            correlation_data: None,
            expiry: None,
            payload_format: None,
            user_properties: &user,
        };
        apply(&c, &mut props, &mut headers);
        // The session sets its own x-mqtt-client-id after this, replacing it.
        headers.insert("x-mqtt-client-id".into(), FieldValue::string("me"));
        props.headers = Some(headers);
        let m = Message {
            exchange: String::new(),
            routing_key: String::new(),
            properties: props,
            body: Bytes::new(),
        };
        assert!(for_delivery(&m, vec![], None).is_none());
    }
}
