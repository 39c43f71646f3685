//! AMQP basic properties and field tables to and from the shared model.
//! Lossless both ways: every AMQP field type has a model counterpart.

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable as AmqpTable, LongString,
    ShortString,
};
use bytes::Bytes;
use switchyard_model::{FieldTable, FieldValue, Message, Properties};

/// AMQP table to model table.
pub(crate) fn table_in(t: &AmqpTable) -> FieldTable {
    t.inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), value_in(v)))
        .collect()
}

fn value_in(v: &AMQPValue) -> FieldValue {
    match v {
        AMQPValue::Boolean(b) => FieldValue::Bool(*b),
        AMQPValue::ShortShortInt(n) => FieldValue::I8(*n),
        AMQPValue::ShortShortUInt(n) => FieldValue::U8(*n),
        AMQPValue::ShortInt(n) => FieldValue::I16(*n),
        AMQPValue::ShortUInt(n) => FieldValue::U16(*n),
        AMQPValue::LongInt(n) => FieldValue::I32(*n),
        AMQPValue::LongUInt(n) => FieldValue::U32(*n),
        AMQPValue::LongLongInt(n) => FieldValue::I64(*n),
        AMQPValue::Float(f) => FieldValue::F32(*f),
        AMQPValue::Double(f) => FieldValue::F64(*f),
        AMQPValue::DecimalValue(d) => FieldValue::Decimal {
            scale: d.scale,
            value: d.value,
        },
        AMQPValue::ShortString(s) => {
            FieldValue::LongString(Bytes::copy_from_slice(s.as_str().as_bytes()))
        }
        AMQPValue::LongString(s) => FieldValue::LongString(Bytes::copy_from_slice(s.as_bytes())),
        AMQPValue::FieldArray(a) => FieldValue::Array(a.as_slice().iter().map(value_in).collect()),
        AMQPValue::Timestamp(t) => FieldValue::Timestamp(*t),
        AMQPValue::FieldTable(t) => FieldValue::Table(table_in(t)),
        AMQPValue::ByteArray(b) => FieldValue::Bytes(Bytes::copy_from_slice(b.as_slice())),
        AMQPValue::Void => FieldValue::Void,
    }
}

/// AMQP short strings (property values, table keys) hold at most 255 bytes.
const SHORT_MAX: usize = 255;

/// Model table to AMQP table.
pub(crate) fn table_out(t: &FieldTable) -> AmqpTable {
    let mut out = AmqpTable::default();
    for (k, v) in t {
        // A key AMQP cannot carry (other protocols allow longer ones) is
        // left out rather than failing the whole delivery.
        if k.len() <= SHORT_MAX {
            out.insert(ShortString::from(k.as_str()), value_out(v));
        }
    }
    out
}

fn value_out(v: &FieldValue) -> AMQPValue {
    match v {
        FieldValue::Void => AMQPValue::Void,
        FieldValue::Bool(b) => AMQPValue::Boolean(*b),
        FieldValue::I8(n) => AMQPValue::ShortShortInt(*n),
        FieldValue::U8(n) => AMQPValue::ShortShortUInt(*n),
        FieldValue::I16(n) => AMQPValue::ShortInt(*n),
        FieldValue::U16(n) => AMQPValue::ShortUInt(*n),
        FieldValue::I32(n) => AMQPValue::LongInt(*n),
        FieldValue::U32(n) => AMQPValue::LongUInt(*n),
        FieldValue::I64(n) => AMQPValue::LongLongInt(*n),
        FieldValue::F32(f) => AMQPValue::Float(*f),
        FieldValue::F64(f) => AMQPValue::Double(*f),
        FieldValue::Decimal { scale, value } => AMQPValue::DecimalValue(DecimalValue {
            scale: *scale,
            value: *value,
        }),
        // amq-protocol tags ShortString with a type RabbitMQ clients do not
        // parse; on the wire every string is a long string (`S`).
        FieldValue::ShortString(s) => {
            AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
        }
        FieldValue::LongString(b) => AMQPValue::LongString(LongString::from(b.to_vec())),
        FieldValue::Bytes(b) => AMQPValue::ByteArray(ByteArray::from(b.to_vec())),
        FieldValue::Timestamp(t) => AMQPValue::Timestamp(*t),
        FieldValue::Table(t) => AMQPValue::FieldTable(table_out(t)),
        FieldValue::Array(a) => AMQPValue::FieldArray(FieldArray::from(
            a.iter().map(value_out).collect::<Vec<_>>(),
        )),
    }
}

fn s(v: &Option<ShortString>) -> Option<String> {
    v.as_ref().map(|s| s.as_str().to_owned())
}

/// AMQP basic properties to model properties.
pub(crate) fn properties_in(p: &BasicProperties) -> Properties {
    Properties {
        content_type: s(p.content_type()),
        content_encoding: s(p.content_encoding()),
        headers: p.headers().as_ref().map(table_in),
        delivery_mode: *p.delivery_mode(),
        priority: *p.priority(),
        correlation_id: s(p.correlation_id()),
        reply_to: s(p.reply_to()),
        expiration: s(p.expiration()),
        message_id: s(p.message_id()),
        timestamp: *p.timestamp(),
        kind: s(p.kind()),
        user_id: s(p.user_id()),
        app_id: s(p.app_id()),
        cluster_id: s(p.cluster_id()),
    }
}

/// The routing key and properties a delivery of `m` carries. A routing key
/// longer than an AMQP short string (an MQTT topic or STOMP key may be) is
/// cut at 255 bytes, on a character boundary, and the whole key is added as
/// the header `x-routing-key`.
pub(crate) fn delivery_out(m: &Message) -> (ShortString, BasicProperties) {
    let rk = &m.routing_key;
    if rk.len() <= SHORT_MAX {
        return (
            ShortString::from(rk.as_str()),
            properties_out(&m.properties),
        );
    }
    let mut cut = SHORT_MAX;
    while !rk.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut p = m.properties.clone();
    p.headers
        .get_or_insert_with(FieldTable::new)
        .insert("x-routing-key".into(), FieldValue::string(rk.as_str()));
    (ShortString::from(&rk[..cut]), properties_out(&p))
}

/// Model properties to AMQP basic properties. A property value longer than
/// an AMQP short string (other protocols allow that: an MQTT 5 response
/// topic or correlation data, a STOMP header) travels instead as a long
/// string header named after it (`x-correlation-id`, `x-reply-to`, …), so
/// nothing is lost and the frame stays encodable.
pub(crate) fn properties_out(p: &Properties) -> BasicProperties {
    let mut out = BasicProperties::default();
    let mut overflow = FieldTable::new();
    let mut short = |name: &str, v: &Option<String>| -> Option<ShortString> {
        let v = v.as_ref()?;
        if v.len() <= SHORT_MAX {
            return Some(ShortString::from(v.as_str()));
        }
        overflow.insert(format!("x-{name}"), FieldValue::string(v.as_str()));
        None
    };
    if let Some(v) = short("content-type", &p.content_type) {
        out = out.with_content_type(v);
    }
    if let Some(v) = short("content-encoding", &p.content_encoding) {
        out = out.with_content_encoding(v);
    }
    if let Some(v) = short("correlation-id", &p.correlation_id) {
        out = out.with_correlation_id(v);
    }
    if let Some(v) = short("reply-to", &p.reply_to) {
        out = out.with_reply_to(v);
    }
    if let Some(v) = short("expiration", &p.expiration) {
        out = out.with_expiration(v);
    }
    if let Some(v) = short("message-id", &p.message_id) {
        out = out.with_message_id(v);
    }
    if let Some(v) = short("type", &p.kind) {
        out = out.with_type(v);
    }
    if let Some(v) = short("user-id", &p.user_id) {
        out = out.with_user_id(v);
    }
    if let Some(v) = short("app-id", &p.app_id) {
        out = out.with_app_id(v);
    }
    if let Some(v) = short("cluster-id", &p.cluster_id) {
        out = out.with_cluster_id(v);
    }
    if let Some(v) = p.delivery_mode {
        out = out.with_delivery_mode(v);
    }
    if let Some(v) = p.priority {
        out = out.with_priority(v);
    }
    if let Some(v) = p.timestamp {
        out = out.with_timestamp(v);
    }
    match (&p.headers, overflow.is_empty()) {
        (Some(h), true) => out = out.with_headers(table_out(h)),
        (h, false) => {
            let mut all = h.clone().unwrap_or_default();
            all.append(&mut overflow);
            out = out.with_headers(table_out(&all));
        }
        (None, true) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_round_trip() {
        let mut headers = FieldTable::new();
        headers.insert("n".into(), FieldValue::I64(-3));
        headers.insert("s".into(), FieldValue::string("x"));
        headers.insert(
            "arr".into(),
            FieldValue::Array(vec![FieldValue::Bool(true), FieldValue::Void]),
        );
        headers.insert(
            "bin".into(),
            FieldValue::Bytes(Bytes::from_static(&[0, 255])),
        );
        let p = Properties {
            content_type: Some("text/plain".into()),
            headers: Some(headers),
            delivery_mode: Some(2),
            priority: Some(5),
            correlation_id: Some("c".into()),
            reply_to: Some("r".into()),
            expiration: Some("1000".into()),
            message_id: Some("m".into()),
            timestamp: Some(42),
            kind: Some("t".into()),
            user_id: Some("guest".into()),
            app_id: Some("a".into()),
            ..Default::default()
        };
        assert_eq!(properties_in(&properties_out(&p)), p);
    }

    #[test]
    fn over_long_routing_keys_are_cut_and_kept_in_a_header() {
        let rk = "é".repeat(200);
        let m = Message {
            exchange: "amq.topic".into(),
            routing_key: rk.clone(),
            properties: Properties::default(),
            body: Bytes::new(),
        };
        let (short, props) = delivery_out(&m);
        assert!(short.as_str().len() <= 255 && rk.starts_with(short.as_str()));
        let back = properties_in(&props);
        assert_eq!(
            back.headers.unwrap()["x-routing-key"].as_str(),
            Some(rk.as_str())
        );
    }

    #[test]
    fn over_long_values_move_to_headers_instead_of_failing() {
        let long = "r".repeat(300);
        let p = Properties {
            reply_to: Some(long.clone()),
            correlation_id: Some("c".repeat(256)),
            ..Default::default()
        };
        let mut headers = FieldTable::new();
        headers.insert("k".repeat(256), FieldValue::string("dropped"));
        let p = Properties {
            headers: Some(headers),
            ..p
        };
        let back = properties_in(&properties_out(&p));
        assert_eq!(back.reply_to, None);
        let h = back.headers.expect("headers");
        assert_eq!(h["x-reply-to"].as_str(), Some(long.as_str()));
        assert_eq!(h["x-correlation-id"].as_str().map(str::len), Some(256));
        assert_eq!(h.len(), 2, "a key over 255 bytes is left out");
        // And the frame encodes.
        let mut buf = bytes::BytesMut::new();
        crate::codec::Encoder::default().content(
            1,
            properties_out(&p),
            &Bytes::from_static(b"x"),
            131_072,
            &mut buf,
        );
        assert!(!buf.is_empty());
    }
}
