//! AMQP basic properties and field tables to and from the shared model.
//! Lossless both ways: every AMQP field type has a model counterpart.

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable as AmqpTable, LongString,
    ShortString,
};
use bytes::Bytes;
use switchyard_model::{FieldTable, FieldValue, Properties};

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

/// Model table to AMQP table.
pub(crate) fn table_out(t: &FieldTable) -> AmqpTable {
    let mut out = AmqpTable::default();
    for (k, v) in t {
        out.insert(ShortString::from(k.as_str()), value_out(v));
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

/// Model properties to AMQP basic properties.
pub(crate) fn properties_out(p: &Properties) -> BasicProperties {
    let mut out = BasicProperties::default();
    let sh = |v: &String| ShortString::from(v.as_str());
    if let Some(v) = &p.content_type {
        out = out.with_content_type(sh(v));
    }
    if let Some(v) = &p.content_encoding {
        out = out.with_content_encoding(sh(v));
    }
    if let Some(v) = &p.headers {
        out = out.with_headers(table_out(v));
    }
    if let Some(v) = p.delivery_mode {
        out = out.with_delivery_mode(v);
    }
    if let Some(v) = p.priority {
        out = out.with_priority(v);
    }
    if let Some(v) = &p.correlation_id {
        out = out.with_correlation_id(sh(v));
    }
    if let Some(v) = &p.reply_to {
        out = out.with_reply_to(sh(v));
    }
    if let Some(v) = &p.expiration {
        out = out.with_expiration(sh(v));
    }
    if let Some(v) = &p.message_id {
        out = out.with_message_id(sh(v));
    }
    if let Some(v) = p.timestamp {
        out = out.with_timestamp(v);
    }
    if let Some(v) = &p.kind {
        out = out.with_type(sh(v));
    }
    if let Some(v) = &p.user_id {
        out = out.with_user_id(sh(v));
    }
    if let Some(v) = &p.app_id {
        out = out.with_app_id(sh(v));
    }
    if let Some(v) = &p.cluster_id {
        out = out.with_cluster_id(sh(v));
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
}
