//! Which columns each listing shows and how API objects become table rows.
//!
//! A column reads one field of the object (a JSON pointer, so nested fields
//! such as `/queue/name` work) or joins two (`peer` is `host:port`). A field
//! the server does not report is an empty cell: RabbitMQ leaves statistics out
//! until it has collected them, so listings must tolerate gaps.

use crate::cli::Kind;
use crate::table::{Cell, Table};
use serde_json::Value;

/// Where a column's text comes from.
#[derive(Debug, Clone, Copy)]
enum Field {
    /// The value at this JSON pointer.
    At(&'static str),
    /// `host:port` from two pointers (empty if the host is absent).
    HostPort(&'static str, &'static str),
}

/// One column: header and field.
type Column = (&'static str, Field);

use Field::{At, HostPort};

const QUEUES: &[Column] = &[
    ("vhost", At("/vhost")),
    ("name", At("/name")),
    ("messages", At("/messages")),
    ("ready", At("/messages_ready")),
    ("unacked", At("/messages_unacknowledged")),
    ("consumers", At("/consumers")),
    ("durable", At("/durable")),
];
const EXCHANGES: &[Column] = &[
    ("vhost", At("/vhost")),
    ("name", At("/name")),
    ("type", At("/type")),
    ("durable", At("/durable")),
    ("auto_delete", At("/auto_delete")),
    ("internal", At("/internal")),
];
const BINDINGS: &[Column] = &[
    ("vhost", At("/vhost")),
    ("source", At("/source")),
    ("destination", At("/destination")),
    ("destination_type", At("/destination_type")),
    ("routing_key", At("/routing_key")),
    ("arguments", At("/arguments")),
];
const CONNECTIONS: &[Column] = &[
    ("name", At("/name")),
    ("protocol", At("/protocol")),
    ("user", At("/user")),
    ("vhost", At("/vhost")),
    ("peer", HostPort("/peer_host", "/peer_port")),
];
const CHANNELS: &[Column] = &[
    ("name", At("/name")),
    ("user", At("/user")),
    ("vhost", At("/vhost")),
    ("consumers", At("/consumer_count")),
    ("prefetch", At("/prefetch_count")),
    ("unacked", At("/messages_unacknowledged")),
];
const CONSUMERS: &[Column] = &[
    ("vhost", At("/queue/vhost")),
    ("queue", At("/queue/name")),
    ("consumer_tag", At("/consumer_tag")),
    ("channel", At("/channel_details/name")),
    ("ack_required", At("/ack_required")),
    ("prefetch", At("/prefetch_count")),
    ("exclusive", At("/exclusive")),
];
const USERS: &[Column] = &[("name", At("/name")), ("tags", At("/tags"))];
const VHOSTS: &[Column] = &[
    ("name", At("/name")),
    ("description", At("/description")),
    ("messages", At("/messages")),
];
const PERMISSIONS: &[Column] = &[
    ("user", At("/user")),
    ("vhost", At("/vhost")),
    ("configure", At("/configure")),
    ("write", At("/write")),
    ("read", At("/read")),
];
const POLICIES: &[Column] = &[
    ("vhost", At("/vhost")),
    ("name", At("/name")),
    ("pattern", At("/pattern")),
    ("apply_to", At("/apply-to")),
    ("priority", At("/priority")),
    ("definition", At("/definition")),
];
/// `get`'s messages.
const MESSAGES: &[Column] = &[
    ("exchange", At("/exchange")),
    ("routing_key", At("/routing_key")),
    ("redelivered", At("/redelivered")),
    ("remaining", At("/message_count")),
    ("payload", At("/payload")),
    ("encoding", At("/payload_encoding")),
];

fn columns(kind: Kind) -> &'static [Column] {
    match kind {
        Kind::Queues => QUEUES,
        Kind::Exchanges => EXCHANGES,
        Kind::Bindings => BINDINGS,
        Kind::Connections => CONNECTIONS,
        Kind::Channels => CHANNELS,
        Kind::Consumers => CONSUMERS,
        Kind::Users => USERS,
        Kind::Vhosts => VHOSTS,
        Kind::Permissions => PERMISSIONS,
        Kind::Policies => POLICIES,
    }
}

/// The table for a `list KIND` reply (a JSON array; anything else is shown
/// as no rows).
pub(crate) fn listing(kind: Kind, reply: &Value) -> Table {
    table(columns(kind), reply)
}

/// The table for a `get` reply.
pub(crate) fn messages(reply: &Value) -> Table {
    table(MESSAGES, reply)
}

fn table(columns: &[Column], reply: &Value) -> Table {
    let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    let mut table = Table::new(&headers);
    for object in reply.as_array().into_iter().flatten() {
        table.push(
            columns
                .iter()
                .map(|(_, field)| cell(object, *field))
                .collect(),
        );
    }
    table
}

fn cell(object: &Value, field: Field) -> Cell {
    match field {
        At(pointer) => object.pointer(pointer).map_or_else(Cell::empty, value_cell),
        HostPort(host, port) => match (object.pointer(host), object.pointer(port)) {
            (Some(Value::String(h)), Some(p)) if !h.is_empty() => {
                // IPv6 addresses are bracketed so the port stays readable.
                let h = if h.contains(':') {
                    format!("[{h}]")
                } else {
                    h.clone()
                };
                Cell::text(&format!("{h}:{}", plain(p)))
            }
            (Some(Value::String(h)), None) => Cell::text(h),
            _ => Cell::empty(),
        },
    }
}

fn value_cell(value: &Value) -> Cell {
    match value {
        Value::Number(n) => Cell::number(n.to_string()),
        Value::Null => Cell::empty(),
        other => Cell::text(&plain(other)),
    }
}

/// A value as text: strings unquoted, arrays of strings comma-joined (user
/// tags), other arrays and objects as compact JSON.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn queues_table() {
        let reply = json!([
            {"vhost": "/", "name": "orders", "messages": 12, "messages_ready": 10,
             "messages_unacknowledged": 2, "consumers": 1, "durable": true, "extra": "ignored"},
            {"vhost": "/", "name": "fresh", "durable": false},
        ]);
        assert_eq!(
            listing(Kind::Queues, &reply).render(),
            "vhost  name    messages  ready  unacked  consumers  durable\n\
             /      orders        12     10        2          1  true\n\
             /      fresh                                        false\n"
        );
    }

    #[test]
    fn connections_join_peer_and_read_nested_fields() {
        let reply = json!([
            {"name": "127.0.0.1:5000 -> 127.0.0.1:5672", "protocol": "AMQP 0-9-1", "user": "guest",
             "vhost": "/", "peer_host": "127.0.0.1", "peer_port": 5000},
            {"name": "c2", "peer_host": "::1", "peer_port": 6000},
        ]);
        assert_eq!(
            listing(Kind::Connections, &reply).render(),
            "name                              protocol    user   vhost  peer\n\
             127.0.0.1:5000 -> 127.0.0.1:5672  AMQP 0-9-1  guest  /      127.0.0.1:5000\n\
             c2                                                          [::1]:6000\n"
        );
        let consumers = json!([{"queue": {"name": "q", "vhost": "/"}, "consumer_tag": "ctag",
            "channel_details": {"name": "ch 1"}, "ack_required": true, "prefetch_count": 0, "exclusive": false}]);
        assert_eq!(
            listing(Kind::Consumers, &consumers).render(),
            "vhost  queue  consumer_tag  channel  ack_required  prefetch  exclusive\n\
             /      q      ctag          ch 1     true                 0  false\n"
        );
    }

    #[test]
    fn tags_arrays_join_and_objects_are_json() {
        let users = json!([{"name": "a", "tags": ["administrator", "management"]}, {"name": "b", "tags": "x,y"}]);
        assert_eq!(
            listing(Kind::Users, &users).render(),
            "name  tags\na     administrator,management\nb     x,y\n"
        );
        let policies = json!([{"vhost": "/", "name": "p", "pattern": "^q", "apply-to": "queues",
            "priority": 0, "definition": {"max-length": 5}}]);
        assert_eq!(
            listing(Kind::Policies, &policies).render(),
            "vhost  name  pattern  apply_to  priority  definition\n\
             /      p     ^q       queues           0  {\"max-length\":5}\n"
        );
    }

    #[test]
    fn not_an_array_is_no_rows() {
        assert_eq!(
            listing(Kind::Vhosts, &json!({"error": "x"})).render(),
            "name  description  messages\n"
        );
    }

    #[test]
    fn messages_table() {
        let reply = json!([{"payload_bytes": 5, "redelivered": false, "exchange": "", "routing_key": "q",
            "message_count": 1, "properties": {}, "payload": "hello", "payload_encoding": "string"}]);
        assert_eq!(
            messages(&reply).render(),
            "exchange  routing_key  redelivered  remaining  payload  encoding\n\
             \x20         q            false                1  hello    string\n"
        );
    }
}
