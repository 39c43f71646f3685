//! Connections (every protocol), channels and consumers; closing a
//! connection from outside.

use super::no_content;
use super::overview::NODE;
use crate::Admin;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::{ListQuery, rate, table_to_json};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use switchyard_engine::connections::{ChannelSummary, ConnectionEntry};
use switchyard_engine::{Consumer, Queue};

/// Whether the caller may see a connection: monitoring and administrators
/// see all, others their own.
fn visible(caller: &Caller, c: &ConnectionEntry) -> bool {
    caller.sees_everything() || c.user() == caller.id.user
}

fn connection_json(admin: &Admin, c: &ConnectionEntry) -> Value {
    let (rx_rate, tx_rate) = admin.rates.traffic(c.id);
    let is_amqp = has_channels(c);
    let channels = channel_count(c);
    let mut body = json!({
        "name": c.name(),
        "protocol": c.protocol(),
        "user": c.user(),
        "vhost": c.vhost(),
        "host": c.login().local.map(|l| l.ip().to_string()),
        "port": c.login().local.map(|l| l.port()),
        "peer_host": c.peer.ip().to_string(),
        "peer_port": c.peer.port(),
        "node": NODE,
        "type": "network",
        "state": "running",
        "ssl": false,
        "channels": channels,
        "timeout": c.login().timeout,
        "connected_at": c.login().connected_at,
        "auth_mechanism": if is_amqp { "PLAIN" } else { "" },
        "client_properties": table_to_json(&c.login().client_properties),
        "recv_oct": c.traffic.recv_oct.load(Ordering::Relaxed),
        "recv_oct_details": rate(rx_rate),
        "recv_cnt": c.traffic.recv_cnt.load(Ordering::Relaxed),
        "send_oct": c.traffic.send_oct.load(Ordering::Relaxed),
        "send_oct_details": rate(tx_rate),
        "send_cnt": c.traffic.send_cnt.load(Ordering::Relaxed),
        "send_pend": 0,
        "user_who_performed_action": c.user(),
    });
    if let Some(id) = &c.login().client_id {
        let key = if is_amqp {
            "user_provided_name"
        } else {
            "client_id"
        };
        body[key] = json!(id);
        if !is_amqp && c.login().client_properties.is_empty() {
            body["client_properties"] = json!({"client_id": id});
        }
    }
    body
}

fn channel_json(c: &ConnectionEntry, ch: &ChannelSummary) -> Value {
    json!({
        "name": format!("{} ({})", c.name(), ch.number),
        "number": ch.number,
        "connection_details": {
            "name": c.name(),
            "peer_host": c.peer.ip().to_string(),
            "peer_port": c.peer.port(),
        },
        "user": c.user(),
        "vhost": c.vhost(),
        "node": NODE,
        "state": "running",
        "consumer_count": ch.consumer_count,
        "prefetch_count": ch.prefetch_count,
        "global_prefetch_count": ch.global_prefetch_count,
        "confirm": ch.confirm,
        "transactional": ch.transactional,
        "messages_unacknowledged": 0,
        "messages_unconfirmed": 0,
        "messages_uncommitted": 0,
        "acks_uncommitted": 0,
        "user_who_performed_action": c.user(),
    })
}

/// A connection's channels: AMQP's own, and for MQTT and STOMP the one
/// pseudo-channel (number 1) their consumers are listed under, as
/// RabbitMQ's plugins list one channel per connection.
pub(crate) fn channels_of(
    c: &ConnectionEntry,
    consumers: &std::collections::HashMap<u64, u32>,
) -> Vec<ChannelSummary> {
    if has_channels(c) {
        return c.channels.lock().clone();
    }
    vec![ChannelSummary {
        number: 1,
        consumer_count: consumers.get(&c.id).copied().unwrap_or(0),
        ..ChannelSummary::default()
    }]
}

/// Whether a connection keeps AMQP channels (other protocols list one
/// pseudo-channel).
fn has_channels(c: &ConnectionEntry) -> bool {
    c.protocol().starts_with("AMQP")
}

/// How many channels a connection is listed with.
pub(crate) fn channel_count(c: &ConnectionEntry) -> usize {
    if has_channels(c) {
        c.channels.lock().len()
    } else {
        1
    }
}

/// The channel number a consumer is listed under.
pub(crate) fn channel_number(conn: Option<&Arc<ConnectionEntry>>, channel: u16) -> u16 {
    match conn {
        Some(c) if !has_channels(c) => 1,
        _ => channel,
    }
}

/// Consumers per connection id, counted over every queue.
fn consumer_counts(admin: &Admin) -> std::collections::HashMap<u64, u32> {
    let mut counts = std::collections::HashMap::new();
    for v in admin.broker.vhosts() {
        for q in v.queues() {
            for c in q.snapshot().consumers {
                *counts.entry(c.outbox.owner()).or_insert(0) += 1;
            }
        }
    }
    counts
}

fn sorted(admin: &Admin) -> Vec<Arc<ConnectionEntry>> {
    let mut all = admin.broker.connections().list();
    all.sort_by_key(|c| c.name());
    all
}

pub(crate) async fn connections(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let items = sorted(&admin)
        .iter()
        .filter(|c| visible(&caller, c))
        .map(|c| connection_json(&admin, c))
        .collect();
    Ok(Json(q.respond(items)?))
}

pub(crate) async fn vhost_connections(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_read(&vhost)?;
    let items = sorted(&admin)
        .iter()
        .filter(|c| c.vhost() == vhost && visible(&caller, c))
        .map(|c| connection_json(&admin, c))
        .collect();
    Ok(Json(Value::Array(items)))
}

fn find(admin: &Admin, caller: &Caller, name: &str) -> ApiResult<Arc<ConnectionEntry>> {
    admin
        .broker
        .connections()
        .by_name(name)
        .filter(|c| visible(caller, c))
        .ok_or_else(ApiError::not_found)
}

pub(crate) async fn connection(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = find(&admin, &caller, &name)?;
    Ok(Json(connection_json(&admin, &c)))
}

/// Closes the connection: AMQP clients get 320 CONNECTION_FORCED, MQTT 5
/// clients DISCONNECT 0x98, STOMP clients an ERROR; the `X-Reason` header
/// is the text, as RabbitMQ's.
pub(crate) async fn close(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let c = find(&admin, &caller, &name)?;
    if !caller.is_admin() && c.user() != caller.id.user {
        return Err(ApiError::not_authorised("Not administrator user"));
    }
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Closed via management plugin");
    c.kill.kill(reason);
    Ok(no_content())
}

pub(crate) async fn connection_channels(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = find(&admin, &caller, &name)?;
    let items = c
        .channels
        .lock()
        .iter()
        .map(|ch| channel_json(&c, ch))
        .collect();
    Ok(Json(Value::Array(items)))
}

pub(crate) async fn channels(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let mut items = Vec::new();
    let counts = consumer_counts(&admin);
    for c in sorted(&admin).iter().filter(|c| visible(&caller, c)) {
        for ch in channels_of(c, &counts) {
            items.push(channel_json(c, &ch));
        }
    }
    Ok(Json(q.respond(items)?))
}

/// A consumer of `queue` as `/api/consumers` and a queue's
/// `consumer_details` list it, with its connection and channel.
pub(crate) fn consumer_json(admin: &Admin, queue: &Queue, c: &Consumer) -> Value {
    let conn = admin.broker.connections().get(c.outbox.owner());
    let number = channel_number(conn.as_ref(), c.spec.channel);
    json!({
        "consumer_tag": c.spec.tag,
        "queue": {"name": queue.spec.name, "vhost": queue.vhost},
        "channel_details": {
            "name": conn.as_ref().map(|x| format!("{} ({number})", x.name())),
            "number": number,
            "connection_name": conn.as_ref().map(|x| x.name()),
            "peer_host": conn.as_ref().map(|x| x.peer.ip().to_string()),
            "peer_port": conn.as_ref().map(|x| x.peer.port()),
            "user": conn.as_ref().map(|x| x.user().to_owned()),
            "node": NODE,
        },
        "protocol": conn.as_ref().map(|x| x.protocol()),
        "ack_required": !c.spec.no_ack,
        "exclusive": c.spec.exclusive,
        "prefetch_count": c.spec.prefetch,
        "arguments": table_to_json(&c.spec.arguments),
        "active": true,
        "activity_status": "up",
    })
}

fn consumers_of(admin: &Admin, caller: &Caller, vhost: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    for v in admin.broker.vhosts() {
        if vhost.is_some_and(|x| x != v.name) || !caller.may_see(&v.name) {
            continue;
        }
        for q in v.queues() {
            for c in q.snapshot().consumers {
                out.push(consumer_json(admin, &q, &c));
            }
        }
    }
    out
}

pub(crate) async fn consumers(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    Ok(Json(Value::Array(consumers_of(&admin, &caller, None))))
}

pub(crate) async fn consumers_in(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_read(&vhost)?;
    Ok(Json(Value::Array(consumers_of(
        &admin,
        &caller,
        Some(&vhost),
    ))))
}
