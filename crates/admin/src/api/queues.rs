//! Queues: list (paginated for very many), declare, delete, purge, get
//! messages; and publishing through an exchange.

use super::overview::{NODE, message_stats};
use super::topology::{binding_json, exchange_name, vhost, visible};
use super::{created, no_content};
use crate::Admin;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::{
    JsonBody, ListQuery, arguments, flag, json_to_field, rate, require_keys, table_to_json, text,
};
use crate::stats::QueueCounters;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use switchyard_engine::store::DestinationKind;
use switchyard_engine::{Command, OPERATOR, Queue, QueueSpec, Settle, Unsettled};
use switchyard_model::{Message, Properties};

/// A queue's full JSON object.
fn queue_json(admin: &Admin, q: &Queue) -> Value {
    let snap = q.snapshot();
    let counters = QueueCounters::of(q);
    let rates = admin.rates.queue(q.id);
    let messages = snap.ready + snap.unacked;
    let bytes = snap.ready_bytes + snap.unacked_bytes;
    let policy = admin.broker.policies().for_queue(&q.vhost, &q.spec.name);
    let has_stats = counters.0.iter().any(|c| *c > 0);
    let mut body = json!({
        "name": q.spec.name,
        "vhost": q.vhost,
        "type": "classic",
        "durable": q.spec.durable,
        "auto_delete": q.spec.auto_delete,
        "exclusive": q.spec.exclusive_owner.is_some(),
        "arguments": table_to_json(&q.spec.arguments),
        "node": NODE,
        "state": "running",
        "consumers": snap.consumers.len(),
        "consumer_capacity": if snap.consumers.is_empty() { 0.0 } else { 1.0 },
        "consumer_utilisation": if snap.consumers.is_empty() { 0.0 } else { 1.0 },
        "messages": messages,
        "messages_details": rate(0.0),
        "messages_ready": snap.ready,
        "messages_ready_details": rate(0.0),
        "messages_unacknowledged": snap.unacked,
        "messages_unacknowledged_details": rate(0.0),
        "messages_ram": messages,
        "message_bytes": bytes,
        "message_bytes_ready": snap.ready_bytes,
        "message_bytes_unacknowledged": snap.unacked_bytes,
        "message_bytes_ram": bytes,
        "memory": crate::stats::memory(&snap),
        "policy": policy.as_ref().map(|p| p.name.clone()),
        "effective_policy_definition": policy
            .as_ref()
            .map_or_else(|| json!({}), |p| table_to_json(&p.definition)),
        "operator_policy": null,
        "exclusive_consumer_tag": null,
        "single_active_consumer_tag": null,
        "head_message_timestamp": null,
        "idle_since": null,
    });
    if has_stats {
        body["message_stats"] = message_stats(&QueueCounters::NAMES, &counters.0, &rates);
    }
    body
}

/// Queues of `vhosts` as the listing asks: filtered by name and sorted on
/// cheap fields before any JSON is built, so a page out of 100,000
/// queues costs one object per row shown.
fn list(
    admin: &Admin,
    vhosts: &[Arc<switchyard_engine::Vhost>],
    q: &ListQuery,
) -> ApiResult<Value> {
    let keep = q.name_filter()?;
    let mut all: Vec<Arc<Queue>> = vhosts.iter().flat_map(|v| v.queues()).collect();
    let total = all.len();
    if q.name.is_some() {
        all.retain(|x| keep(&x.spec.name));
    }
    let sort = q.sort.as_deref().unwrap_or("");
    let reverse = q.sort_reverse.as_deref() == Some("true");
    let key = |x: &Queue| -> (u64, f64) {
        match sort {
            "messages" => {
                let (r, u, _) = x.tallies();
                (r + u, 0.0)
            }
            "messages_ready" => (u64::from(x.counts().0), 0.0),
            "messages_unacknowledged" => (x.unacked_count() as u64, 0.0),
            "consumers" => (u64::from(x.counts().1), 0.0),
            "message_stats.publish_details.rate" => (0, admin.rates.queue(x.id)[0]),
            _ => (0, 0.0),
        }
    };
    match sort {
        "" | "name" => all.sort_by(|a, b| (&a.vhost, &a.spec.name).cmp(&(&b.vhost, &b.spec.name))),
        "vhost" => all.sort_by(|a, b| a.vhost.cmp(&b.vhost)),
        _ => {
            let mut keyed: Vec<((u64, f64), Arc<Queue>)> =
                all.into_iter().map(|x| (key(&x), x)).collect();
            keyed.sort_by(|a, b| {
                a.0.0.cmp(&b.0.0).then(
                    a.0.1
                        .partial_cmp(&b.0.1)
                        .unwrap_or(std::cmp::Ordering::Equal),
                )
            });
            all = keyed.into_iter().map(|(_, x)| x).collect();
        }
    }
    if reverse {
        all.reverse();
    }
    let filtered = all.len();
    match q.window(filtered)? {
        None => Ok(Value::Array(
            q.columns(all.iter().map(|x| queue_json(admin, x)).collect()),
        )),
        Some(w) => {
            let rows = all
                .iter()
                .skip(w.skip)
                .take(w.size)
                .map(|x| queue_json(admin, x))
                .collect();
            Ok(q.shape(&w, rows, filtered, total))
        }
    }
}

pub(crate) async fn queues(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let vhosts = visible(&admin, &caller);
    Ok(Json(list(&admin, &vhosts, &q)?))
}

pub(crate) async fn queues_in(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(vh): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let v = vhost(&admin, &caller, &vh)?;
    Ok(Json(list(&admin, &[v], &q)?))
}

pub(crate) async fn queue(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let v = vhost(&admin, &caller, &vh)?;
    let queue = v.find_queue(&name).ok_or_else(ApiError::not_found)?;
    let mut body = queue_json(&admin, &queue);
    let details: Vec<Value> = queue
        .snapshot()
        .consumers
        .iter()
        .map(|c| super::connections::consumer_json(&admin, &queue, c))
        .collect();
    body["consumer_details"] = Value::Array(details);
    body["deliveries"] = json!([]);
    body["incoming"] = json!([]);
    Ok(Json(q.columns_of(body)))
}

pub(crate) async fn put_queue(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let v = super::topology::declaring_in(&admin, &caller, &vh, &name)?;
    let new = v.find_queue(&name).is_none();
    let spec = QueueSpec {
        name,
        durable: flag(&body, "durable", true)?,
        exclusive_owner: None,
        auto_delete: flag(&body, "auto_delete", false)?,
        arguments: arguments(body.get("arguments"))?,
    };
    v.apply(Command::DeclareQueue(spec), OPERATOR)?;
    Ok(created(new))
}

pub(crate) async fn delete_queue(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> ApiResult<Response> {
    let v = admin.broker.vhost(&vh).ok_or_else(ApiError::not_found)?;
    caller.require_write(&vh)?;
    if v.find_queue(&name).is_none() {
        return Err(ApiError::not_found());
    }
    v.apply(
        Command::DeleteQueue {
            name,
            if_unused: params.get("if-unused").is_some_and(|s| s == "true"),
            if_empty: params.get("if-empty").is_some_and(|s| s == "true"),
        },
        OPERATOR,
    )?;
    Ok(no_content())
}

pub(crate) async fn queue_bindings(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let v = vhost(&admin, &caller, &vh)?;
    v.find_queue(&name).ok_or_else(ApiError::not_found)?;
    let items = v
        .bindings_info()
        .iter()
        .filter(|b| b.destination_kind == DestinationKind::Queue && b.destination == name)
        .map(|b| binding_json(&v.name, b))
        .collect();
    Ok(Json(Value::Array(items)))
}

pub(crate) async fn purge(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let v = admin.broker.vhost(&vh).ok_or_else(ApiError::not_found)?;
    caller.require_write(&vh)?;
    if v.find_queue(&name).is_none() {
        return Err(ApiError::not_found());
    }
    v.apply(Command::PurgeQueue { name }, OPERATOR)?;
    Ok(no_content())
}

/// A number that may come as a string (rabbitmqadmin sends strings).
fn number(body: &Value, key: &str) -> Option<u64> {
    match body.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn properties_json(p: &Properties) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_owned(), v);
        }
    };
    put("content_type", p.content_type.clone().map(Value::String));
    put(
        "content_encoding",
        p.content_encoding.clone().map(Value::String),
    );
    put("headers", p.headers.as_ref().map(table_to_json));
    put("delivery_mode", p.delivery_mode.map(|d| json!(d)));
    put("priority", p.priority.map(|d| json!(d)));
    put(
        "correlation_id",
        p.correlation_id.clone().map(Value::String),
    );
    put("reply_to", p.reply_to.clone().map(Value::String));
    put("expiration", p.expiration.clone().map(Value::String));
    put("message_id", p.message_id.clone().map(Value::String));
    put("timestamp", p.timestamp.map(|d| json!(d)));
    put("type", p.kind.clone().map(Value::String));
    put("user_id", p.user_id.clone().map(Value::String));
    put("app_id", p.app_id.clone().map(Value::String));
    Value::Object(m)
}

fn properties_from(v: &Value) -> ApiResult<Properties> {
    let Some(o) = v.as_object() else {
        return Err(ApiError::bad_request("properties must be an object"));
    };
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
    let n = |k: &str| {
        o.get(k).and_then(|v| match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        })
    };
    let headers = match o.get("headers") {
        Some(Value::Object(h)) => Some(
            h.iter()
                .map(|(k, v)| (k.clone(), json_to_field(v)))
                .collect(),
        ),
        _ => None,
    };
    Ok(Properties {
        content_type: s("content_type"),
        content_encoding: s("content_encoding"),
        headers,
        delivery_mode: n("delivery_mode").and_then(|d| u8::try_from(d).ok()),
        priority: n("priority").and_then(|d| u8::try_from(d).ok()),
        correlation_id: s("correlation_id"),
        reply_to: s("reply_to"),
        expiration: s("expiration"),
        message_id: s("message_id"),
        timestamp: n("timestamp"),
        kind: s("type"),
        user_id: s("user_id"),
        app_id: s("app_id"),
        cluster_id: None,
    })
}

pub(crate) async fn get_messages(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let v = admin.broker.vhost(&vh).ok_or_else(ApiError::not_found)?;
    caller.require_write(&vh)?;
    let queue = v.find_queue(&name).ok_or_else(|| {
        ApiError::not_found_because(format!("NOT_FOUND - no queue '{name}' in vhost '{vh}'"))
    })?;
    require_keys(&body, &["ackmode", "encoding"], |_| true)?;
    let count = number(&body, "count").unwrap_or(1);
    let truncate = number(&body, "truncate").map(|t| usize::try_from(t).unwrap_or(usize::MAX));
    let (requeue, reject) = match text(&body, "ackmode") {
        Some("ack_requeue_true" | "reject_requeue_true") => (true, false),
        Some("ack_requeue_false") => (false, false),
        Some("reject_requeue_false") => (false, true),
        other => {
            return Err(ApiError::bad_request(format!("invalid ackmode {other:?}")));
        }
    };
    let base64 = match text(&body, "encoding") {
        Some("auto") => None,
        Some("base64") => Some(true),
        other => return Err(ApiError::bad_request(format!("invalid encoding {other:?}"))),
    };
    let mut out = Vec::new();
    let mut held = Vec::new();
    for _ in 0..count {
        let Some(got) = queue.get(false) else { break };
        let m = &got.message;
        let payload = match truncate {
            Some(t) if t < m.body.len() => &m.body[..t],
            _ => &m.body[..],
        };
        let (payload, encoding) = match (base64, std::str::from_utf8(payload)) {
            (None, Ok(text)) => (text.to_owned(), "string"),
            _ => (STANDARD.encode(payload), "base64"),
        };
        out.push(json!({
            "payload_bytes": m.body.len(),
            "redelivered": got.redelivered,
            "exchange": m.exchange,
            "routing_key": m.routing_key,
            "message_count": got.remaining,
            "properties": properties_json(&m.properties),
            "payload": payload,
            "payload_encoding": encoding,
        }));
        held.push(Unsettled {
            queue: queue.clone(),
            seq: got.seq,
            consumer: None,
        });
    }
    // Settled after all were taken, so a requeued message is not taken
    // again by this request.
    let how = match (requeue, reject) {
        (true, _) => Settle::Requeue,
        (false, false) => Settle::Ack,
        (false, true) => Settle::Reject,
    };
    for u in held {
        u.settle(how);
    }
    Ok(Json(Value::Array(out)))
}

pub(crate) async fn publish(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let v = admin.broker.vhost(&vh).ok_or_else(ApiError::not_found)?;
    caller.require_write(&vh)?;
    require_keys(
        &body,
        &["properties", "routing_key", "payload", "payload_encoding"],
        |_| true,
    )?;
    let exchange = exchange_name(&name).to_owned();
    if !v.has_exchange(&exchange) {
        return Err(ApiError::bad_request(format!(
            "404 NOT_FOUND - no exchange '{name}' in vhost '{vh}'"
        )));
    }
    let payload = text(&body, "payload").unwrap_or("");
    let body_bytes = match text(&body, "payload_encoding") {
        Some("string") => bytes::Bytes::from(payload.to_owned()),
        Some("base64") => bytes::Bytes::from(
            STANDARD
                .decode(payload)
                .map_err(|_| ApiError::bad_request("payload is not valid base64"))?,
        ),
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid payload_encoding {other:?}"
            )));
        }
    };
    let properties = properties_from(body.get("properties").unwrap_or(&Value::Null))?;
    let message = Message {
        exchange,
        routing_key: text(&body, "routing_key").unwrap_or("").to_owned(),
        properties,
        body: body_bytes,
    };
    let persistent = message.is_persistent();
    let published = v.publish(message, persistent)?;
    if let Some(ticket) = published.durable {
        let _ = ticket.await;
    }
    Ok(Json(json!({"routed": published.queues > 0})))
}
