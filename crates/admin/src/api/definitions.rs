//! `/api/definitions`: export and import in RabbitMQ's definitions JSON
//! (users with their hashes, vhosts, permissions, topic permissions,
//! policies, durable queues, exchanges and bindings).

use super::no_content;
use super::overview::RABBITMQ_API_VERSION;
use super::topology::exchange_name;
use super::users::{
    password_of, permission_from, permission_json, policy_from, policy_json, topic_json,
    topic_permission_from, user_json,
};
use crate::Admin;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::{arguments, flag, table_to_json, text};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{Value, json};
use std::sync::Arc;
use switchyard_access::{PasswordSpec, parse_tags};
use switchyard_engine::exchange::Binding;
use switchyard_engine::inspect::destination;
use switchyard_engine::store::DestinationKind;
use switchyard_engine::{
    BUILTIN_EXCHANGES, Command, DELAYED_TYPE, ExchangeKind, OPERATOR, QueueSpec,
};
use switchyard_model::FieldValue;

/// Queues, exchanges and bindings of one vhost; `with_vhost` adds the
/// `vhost` field (whole-broker export).
fn topology(admin: &Admin, vhost: &str, with_vhost: bool) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let Some(v) = admin.broker.vhost(vhost) else {
        return (Vec::new(), Vec::new(), Vec::new());
    };
    let tag = |mut o: Value| {
        if with_vhost {
            o["vhost"] = json!(vhost);
        }
        o
    };
    let queues = v
        .queues()
        .iter()
        .filter(|q| q.spec.durable && q.spec.exclusive_owner.is_none())
        .map(|q| {
            tag(json!({
                "name": q.spec.name,
                "durable": true,
                "auto_delete": q.spec.auto_delete,
                "arguments": table_to_json(&q.spec.arguments),
            }))
        })
        .collect();
    let exported_queues: std::collections::HashSet<String> = v
        .queues()
        .iter()
        .filter(|q| q.spec.durable && q.spec.exclusive_owner.is_none())
        .map(|q| q.spec.name.clone())
        .collect();
    let all_exchanges = v.exchanges_info();
    let durable_exchange = |name: &str| {
        all_exchanges.iter().any(|x| {
            x.name == name && (x.durable || BUILTIN_EXCHANGES.iter().any(|(b, _)| *b == name))
        })
    };
    let exchanges = all_exchanges
        .iter()
        .filter(|x| x.durable && !BUILTIN_EXCHANGES.iter().any(|(b, _)| *b == x.name))
        .map(|x| {
            let kind = if x.arguments.contains_key(DELAYED_TYPE) {
                "x-delayed-message"
            } else {
                x.kind.as_str()
            };
            tag(json!({
                "name": x.name,
                "type": kind,
                "durable": x.durable,
                "auto_delete": x.auto_delete,
                "internal": x.internal,
                "arguments": table_to_json(&x.arguments),
            }))
        })
        .collect();
    // Only bindings between exported (durable) ends: a definitions file
    // must import on its own.
    let bindings = v
        .bindings_info()
        .iter()
        .filter(|b| !b.source.is_empty() && durable_exchange(&b.source))
        .filter(|b| match b.destination_kind {
            DestinationKind::Queue => exported_queues.contains(&b.destination),
            DestinationKind::Exchange => durable_exchange(&b.destination),
        })
        .map(|b| {
            tag(json!({
                "source": b.source,
                "destination": b.destination,
                "destination_type": match b.destination_kind {
                    DestinationKind::Queue => "queue",
                    DestinationKind::Exchange => "exchange",
                },
                "routing_key": b.routing_key,
                "arguments": table_to_json(&b.arguments),
            }))
        })
        .collect();
    (queues, exchanges, bindings)
}

pub(crate) async fn export(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let (mut queues, mut exchanges, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    let vhosts: Vec<Value> = admin
        .broker
        .vhosts()
        .iter()
        .map(|v| {
            let (q, x, b) = topology(&admin, &v.name, true);
            queues.extend(q);
            exchanges.extend(x);
            bindings.extend(b);
            let (description, tags) = admin.vhost_meta.get(&v.name);
            json!({
                "name": v.name,
                "description": description,
                "tags": tags,
                "metadata": {"description": description, "tags": tags},
            })
        })
        .collect();
    Ok(Json(json!({
        "rabbit_version": RABBITMQ_API_VERSION,
        "rabbitmq_version": RABBITMQ_API_VERSION,
        "product_name": "Switchyard",
        "product_version": env!("CARGO_PKG_VERSION"),
        "users": admin.access.users().iter().map(user_json).collect::<Vec<_>>(),
        "vhosts": vhosts,
        "permissions": admin.access.permissions().iter().map(permission_json).collect::<Vec<_>>(),
        "topic_permissions": admin.access.topic_permissions().iter().map(topic_json).collect::<Vec<_>>(),
        "parameters": [],
        "global_parameters": [],
        "policies": admin.broker.policies().list().iter().map(policy_json).collect::<Vec<_>>(),
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })))
}

pub(crate) async fn export_vhost(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    admin.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    let (queues, exchanges, bindings) = topology(&admin, &vhost, false);
    let policies: Vec<Value> = admin
        .broker
        .policies()
        .list()
        .iter()
        .filter(|p| p.vhost == vhost)
        .map(|p| {
            let mut j = policy_json(p);
            if let Some(o) = j.as_object_mut() {
                o.remove("vhost");
            }
            j
        })
        .collect();
    Ok(Json(json!({
        "rabbit_version": RABBITMQ_API_VERSION,
        "parameters": [],
        "policies": policies,
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })))
}

fn list<'a>(doc: &'a Value, key: &str) -> &'a [Value] {
    doc.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The vhost of an entry: its own `vhost`, or the one imported into.
fn vhost_of<'a>(entry: &'a Value, into: Option<&'a str>) -> ApiResult<&'a str> {
    into.or_else(|| text(entry, "vhost"))
        .ok_or_else(|| ApiError::bad_request("an entry has no vhost"))
}

fn need_vhost(admin: &Admin, name: &str) -> ApiResult<Arc<switchyard_engine::Vhost>> {
    admin
        .broker
        .vhost(name)
        .ok_or_else(|| ApiError::bad_request(format!("[\"no_such_vhost\", \"{name}\"]")))
}

/// The `vhost` and `user` of a (topic) permission entry.
fn owner(entry: &Value) -> (String, String) {
    let field = |k: &str| text(entry, k).unwrap_or_default().to_owned();
    (field("vhost"), field("user"))
}

fn name_of(entry: &Value) -> ApiResult<&str> {
    text(entry, "name").ok_or_else(|| ApiError::bad_request("an entry has no name"))
}

/// Applies a definitions document; `into` is the vhost of a per-vhost
/// import (entries then name none).
fn apply(admin: &Admin, doc: &Value, into: Option<&str>) -> ApiResult<()> {
    if into.is_none() {
        for u in list(doc, "users") {
            let name = name_of(u)?;
            let password = match password_of(u)? {
                PasswordSpec::Keep => PasswordSpec::None,
                p => p,
            };
            let tags = u
                .get("tags")
                .map_or(Some(Vec::new()), parse_tags)
                .ok_or_else(|| ApiError::bad_request("tags must be a string or a list"))?;
            admin
                .access
                .put_user(name, password, tags)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
        for v in list(doc, "vhosts") {
            let name = name_of(v)?;
            admin.broker.add_vhost(name);
            // Top-level fields, or `metadata` as RabbitMQ 3.10 also writes.
            let meta = v.get("metadata").unwrap_or(v);
            let description = text(v, "description")
                .or_else(|| text(meta, "description"))
                .unwrap_or_default()
                .to_owned();
            let tags = v
                .get("tags")
                .or_else(|| meta.get("tags"))
                .and_then(parse_tags)
                .unwrap_or_default();
            admin.vhost_meta.set(&admin.broker, name, description, tags);
        }
        for p in list(doc, "permissions") {
            let (vhost, user) = owner(p);
            need_vhost(admin, &vhost)?;
            admin
                .access
                .set_permission(permission_from(p, vhost, user))
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
        for p in list(doc, "topic_permissions") {
            let (vhost, user) = owner(p);
            need_vhost(admin, &vhost)?;
            admin
                .access
                .set_topic_permission(topic_permission_from(p, vhost, user))
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
    }
    for p in list(doc, "policies") {
        let vhost = vhost_of(p, into)?;
        need_vhost(admin, vhost)?;
        admin
            .broker
            .set_policy(policy_from(vhost, name_of(p)?, p)?)?;
    }
    for q in list(doc, "queues") {
        let v = need_vhost(admin, vhost_of(q, into)?)?;
        v.apply(
            Command::DeclareQueue(QueueSpec {
                name: name_of(q)?.to_owned(),
                durable: flag(q, "durable", true)?,
                exclusive_owner: None,
                auto_delete: flag(q, "auto_delete", false)?,
                arguments: arguments(q.get("arguments"))?,
            }),
            OPERATOR,
        )?;
    }
    for x in list(doc, "exchanges") {
        let v = need_vhost(admin, vhost_of(x, into)?)?;
        let name = name_of(x)?;
        if name.is_empty() || name.starts_with("amq.") {
            continue;
        }
        let args = arguments(x.get("arguments"))?;
        let kind_name = text(x, "type").unwrap_or("direct");
        let kind = if kind_name == "x-delayed-message" {
            args.get(DELAYED_TYPE)
                .and_then(FieldValue::as_str)
                .and_then(ExchangeKind::parse)
        } else {
            ExchangeKind::parse(kind_name)
        }
        .ok_or_else(|| ApiError::bad_request(format!("unknown exchange type '{kind_name}'")))?;
        v.apply(
            Command::DeclareExchange {
                name: name.to_owned(),
                kind,
                durable: flag(x, "durable", true)?,
                auto_delete: flag(x, "auto_delete", false)?,
                internal: flag(x, "internal", false)?,
                arguments: args,
            },
            OPERATOR,
        )?;
    }
    for b in list(doc, "bindings") {
        let v = need_vhost(admin, vhost_of(b, into)?)?;
        let source = exchange_name(text(b, "source").unwrap_or("")).to_owned();
        if source.is_empty() {
            continue;
        }
        let kind = match text(b, "destination_type") {
            Some("exchange") => DestinationKind::Exchange,
            _ => DestinationKind::Queue,
        };
        let dest = text(b, "destination").unwrap_or("");
        v.apply(
            Command::Bind {
                source,
                binding: Binding {
                    destination: destination(kind, dest),
                    routing_key: text(b, "routing_key").unwrap_or("").to_owned(),
                    arguments: arguments(b.get("arguments"))?,
                },
            },
            OPERATOR,
        )?;
    }
    Ok(())
}

fn parse(body: &Bytes) -> ApiResult<Value> {
    serde_json::from_slice(body).map_err(|_| ApiError::bad_request("failed_to_parse_json"))
}

pub(crate) async fn import(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let doc = parse(&body)?;
    apply(&admin, &doc, None)?;
    Ok(no_content())
}

pub(crate) async fn import_vhost(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(vhost): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_admin()?;
    admin.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    let doc = parse(&body)?;
    apply(&admin, &doc, Some(&vhost))?;
    Ok(no_content())
}
