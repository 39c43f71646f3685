//! Exchanges and bindings: list, declare, delete, bind and unbind.

use super::{created, no_content};
use crate::Admin;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::{JsonBody, ListQuery, arguments, flag, rate, table_to_json, text};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use switchyard_engine::exchange::Binding;
use switchyard_engine::inspect::{BindingInfo, ExchangeInfo, destination};
use switchyard_engine::store::DestinationKind;
use switchyard_engine::{Command, DELAYED_TYPE, ExchangeKind, OPERATOR, Vhost};
use switchyard_model::FieldValue;

pub(crate) use super::queues::{
    delete_queue, get_messages, publish, purge, put_queue, queue, queue_bindings, queues, queues_in,
};

/// The API's name of the default exchange in paths.
const DEFAULT_EXCHANGE: &str = "amq.default";

/// The engine's name for an exchange named in a path.
pub(crate) fn exchange_name(name: &str) -> &str {
    if name == DEFAULT_EXCHANGE { "" } else { name }
}

/// A vhost the caller may read, or 404.
pub(crate) fn vhost(admin: &Admin, caller: &Caller, name: &str) -> ApiResult<Arc<Vhost>> {
    let v = admin.broker.vhost(name).ok_or_else(ApiError::not_found)?;
    caller.require_read(name)?;
    Ok(v)
}

/// The vhost a caller declares a resource named `name` in: 404
/// `vhost_not_found`, 401 without permissions there, 401 `Access refused.`
/// for a reserved `amq.` name.
pub(crate) fn declaring_in(
    admin: &Admin,
    caller: &Caller,
    vh: &str,
    name: &str,
) -> ApiResult<Arc<Vhost>> {
    let v = admin
        .broker
        .vhost(vh)
        .ok_or_else(|| ApiError::not_found_because("vhost_not_found"))?;
    caller.require_write(vh)?;
    if name.starts_with("amq.") {
        return Err(ApiError::not_authorised("Access refused."));
    }
    Ok(v)
}

/// Every vhost the caller may read.
pub(crate) fn visible(admin: &Admin, caller: &Caller) -> Vec<Arc<Vhost>> {
    admin
        .broker
        .vhosts()
        .into_iter()
        .filter(|v| caller.may_see(&v.name))
        .collect()
}

fn exchange_json(admin: &Admin, vhost: &str, x: &ExchangeInfo) -> Value {
    let mut body = json!({
        "name": x.name,
        "vhost": vhost,
        "type": if x.arguments.contains_key(DELAYED_TYPE) {
            "x-delayed-message"
        } else {
            x.kind.as_str()
        },
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": table_to_json(&x.arguments),
        "user_who_performed_action": "",
    });
    if x.publish_in > 0 {
        let (rate_in, rate_out) = admin.rates.exchange(vhost, &x.name);
        body["message_stats"] = json!({
            "publish_in": x.publish_in,
            "publish_in_details": rate(rate_in),
            "publish_out": x.publish_out,
            "publish_out_details": rate(rate_out),
        });
    }
    body
}

pub(crate) async fn exchanges(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let items = visible(&admin, &caller)
        .iter()
        .flat_map(|v| {
            v.exchanges_info()
                .iter()
                .map(|x| exchange_json(&admin, &v.name, x))
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(Json(q.respond(items)?))
}

pub(crate) async fn exchanges_in(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(vh): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let v = vhost(&admin, &caller, &vh)?;
    let items = v
        .exchanges_info()
        .iter()
        .map(|x| exchange_json(&admin, &v.name, x))
        .collect();
    Ok(Json(q.respond(items)?))
}

pub(crate) async fn exchange(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let v = vhost(&admin, &caller, &vh)?;
    let x = v
        .exchange_info(exchange_name(&name))
        .ok_or_else(ApiError::not_found)?;
    let mut body = exchange_json(&admin, &v.name, &x);
    body["incoming"] = json!([]);
    body["outgoing"] = json!([]);
    Ok(Json(q.columns_of(body)))
}

pub(crate) async fn put_exchange(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let v = declaring_in(&admin, &caller, &vh, &name)?;
    let kind_name = text(&body, "type").unwrap_or("direct");
    let args = arguments(body.get("arguments"))?;
    let delayed = args.get(DELAYED_TYPE).and_then(FieldValue::as_str);
    let kind = match (kind_name, delayed) {
        ("x-delayed-message", Some(t)) => ExchangeKind::parse(t),
        ("x-delayed-message", None) => None,
        (_, Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "'x-delayed-type' applies to exchanges of type 'x-delayed-message', not '{kind_name}'"
            )));
        }
        (k, None) => ExchangeKind::parse(k),
    }
    .ok_or_else(|| ApiError::bad_request(format!("unknown exchange type '{kind_name}'")))?;
    let new = !v.has_exchange(&name);
    v.apply(
        Command::DeclareExchange {
            name,
            kind,
            durable: flag(&body, "durable", true)?,
            auto_delete: flag(&body, "auto_delete", false)?,
            internal: flag(&body, "internal", false)?,
            arguments: args,
        },
        OPERATOR,
    )?;
    Ok(created(new))
}

pub(crate) async fn delete_exchange(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> ApiResult<Response> {
    let v = admin.broker.vhost(&vh).ok_or_else(ApiError::not_found)?;
    caller.require_write(&vh)?;
    if name.starts_with("amq.") || name == DEFAULT_EXCHANGE {
        return Err(ApiError::not_authorised("Access refused."));
    }
    if !v.has_exchange(&name) {
        return Err(ApiError::not_found());
    }
    v.apply(
        Command::DeleteExchange {
            name,
            if_unused: params.get("if-unused").is_some_and(|s| s == "true"),
        },
        OPERATOR,
    )?;
    Ok(no_content())
}

// ---------------------------------------------------------------------------
// Bindings

/// RabbitMQ's `properties_key`: the routing key percent-encoded (`~`
/// when empty), and a digest of the arguments when there are any.
pub(crate) fn properties_key(b: &BindingInfo) -> String {
    if b.arguments.is_empty() {
        return if b.routing_key.is_empty() {
            "~".to_owned()
        } else {
            pct(&b.routing_key)
        };
    }
    let mut h: u32 = 0x811c_9dc5;
    for byte in table_to_json(&b.arguments).to_string().bytes() {
        h = (h ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    format!("{}~{h:08x}", pct(&b.routing_key))
}

/// Whether a properties key from a path names the binding whose key is
/// `key`: the path may carry it encoded once (as listed) or twice (as the
/// `Location` of a new binding), as RabbitMQ accepts both.
fn same_key(from_path: &str, key: &str) -> bool {
    from_path == key || unpct(from_path) == key || from_path == unpct(key)
}

/// Decodes `%XX` escapes (anything malformed is kept as is).
fn unpct(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn binding_json(vhost: &str, b: &BindingInfo) -> Value {
    json!({
        "source": b.source,
        "vhost": vhost,
        "destination": b.destination,
        "destination_type": match b.destination_kind {
            DestinationKind::Queue => "queue",
            DestinationKind::Exchange => "exchange",
        },
        "routing_key": b.routing_key,
        "arguments": table_to_json(&b.arguments),
        "properties_key": properties_key(b),
    })
}

fn bindings_of(v: &Vhost) -> Vec<Value> {
    v.bindings_info()
        .iter()
        .map(|b| binding_json(&v.name, b))
        .collect()
}

pub(crate) async fn bindings(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let items: Vec<Value> = visible(&admin, &caller)
        .iter()
        .flat_map(|v| bindings_of(v))
        .collect();
    let total = items.len();
    Ok(Json(q.page_of(items, total)?))
}

pub(crate) async fn bindings_in(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(vh): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let v = vhost(&admin, &caller, &vh)?;
    Ok(Json(Value::Array(q.columns(bindings_of(&v)))))
}

fn kind_of(segment: &str) -> ApiResult<DestinationKind> {
    match segment {
        "q" => Ok(DestinationKind::Queue),
        "e" => Ok(DestinationKind::Exchange),
        _ => Err(ApiError::not_found()),
    }
}

fn between(v: &Vhost, source: &str, kind: DestinationKind, dest: &str) -> Vec<BindingInfo> {
    v.bindings_info()
        .into_iter()
        .filter(|b| b.source == source && b.destination_kind == kind && b.destination == dest)
        .collect()
}

pub(crate) async fn bindings_between(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vh, source, kind, dest)): Path<(String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    let v = vhost(&admin, &caller, &vh)?;
    let kind = kind_of(&kind)?;
    let items = between(&v, exchange_name(&source), kind, &dest)
        .iter()
        .map(|b| binding_json(&v.name, b))
        .collect();
    Ok(Json(Value::Array(items)))
}

pub(crate) async fn binding(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vh, source, kind, dest, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    let v = vhost(&admin, &caller, &vh)?;
    let kind = kind_of(&kind)?;
    between(&v, exchange_name(&source), kind, &dest)
        .iter()
        .find(|b| same_key(&props, &properties_key(b)))
        .map(|b| Json(binding_json(&v.name, b)))
        .ok_or_else(ApiError::not_found)
}

/// Percent-encodes everything but unreserved characters.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) async fn bind(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vh, source, kind, dest)): Path<(String, String, String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let v = admin.broker.vhost(&vh).ok_or_else(ApiError::not_found)?;
    caller.require_write(&vh)?;
    let kind = kind_of(&kind)?;
    if source == DEFAULT_EXCHANGE || source.is_empty() {
        return Err(ApiError::not_authorised("Access refused."));
    }
    if !v.has_exchange(&source) {
        return Err(ApiError::not_found_because(format!(
            "no exchange '{source}' in vhost '{vh}'"
        )));
    }
    match kind {
        DestinationKind::Queue if v.find_queue(&dest).is_none() => {
            return Err(ApiError::not_found_because(format!(
                "no queue '{dest}' in vhost '{vh}'"
            )));
        }
        DestinationKind::Exchange if !v.has_exchange(&dest) => {
            return Err(ApiError::not_found_because(format!(
                "no exchange '{dest}' in vhost '{vh}'"
            )));
        }
        _ => {}
    }
    let routing_key = text(&body, "routing_key").unwrap_or("").to_owned();
    let args = arguments(body.get("arguments"))?;
    let info = BindingInfo {
        source: source.clone(),
        destination: dest.clone(),
        destination_kind: kind,
        routing_key: routing_key.clone(),
        arguments: args.clone(),
    };
    v.apply(
        Command::Bind {
            source,
            binding: Binding {
                destination: destination(kind, &dest),
                routing_key,
                arguments: args,
            },
        },
        OPERATOR,
    )?;
    let location = format!("{}/{}", pct(&dest), pct(&properties_key(&info)));
    let mut r = StatusCode::CREATED.into_response();
    if let Ok(h) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, h);
    }
    Ok(r)
}

pub(crate) async fn unbind(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vh, source, kind, dest, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<Response> {
    let v = admin.broker.vhost(&vh).ok_or_else(ApiError::not_found)?;
    caller.require_write(&vh)?;
    let kind = kind_of(&kind)?;
    let source = exchange_name(&source).to_owned();
    let Some(b) = between(&v, &source, kind, &dest)
        .into_iter()
        .find(|b| same_key(&props, &properties_key(b)))
    else {
        return Err(ApiError::not_found());
    };
    if source.is_empty() {
        return Err(ApiError::not_authorised("Access refused."));
    }
    v.apply(
        Command::Unbind {
            source,
            binding: Binding {
                destination: destination(kind, &dest),
                routing_key: b.routing_key,
                arguments: b.arguments,
            },
        },
        OPERATOR,
    )?;
    Ok(no_content())
}

/// The bindings of exchange `name` that `which` keeps.
fn exchange_bindings(
    admin: &Admin,
    caller: &Caller,
    vh: &str,
    name: &str,
    which: impl Fn(&BindingInfo, &str) -> bool,
) -> ApiResult<Json<Value>> {
    let v = vhost(admin, caller, vh)?;
    let name = exchange_name(name);
    v.exchange_info(name).ok_or_else(ApiError::not_found)?;
    let items = v
        .bindings_info()
        .iter()
        .filter(|b| which(b, name))
        .map(|b| binding_json(&v.name, b))
        .collect();
    Ok(Json(Value::Array(items)))
}

pub(crate) async fn exchange_bindings_source(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    exchange_bindings(&admin, &caller, &vh, &name, |b, x| b.source == x)
}

pub(crate) async fn exchange_bindings_destination(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    exchange_bindings(&admin, &caller, &vh, &name, |b, x| {
        b.destination_kind == DestinationKind::Exchange && b.destination == x
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_model::FieldTable;

    fn b(key: &str) -> BindingInfo {
        BindingInfo {
            source: "x".into(),
            destination: "q".into(),
            destination_kind: DestinationKind::Queue,
            routing_key: key.into(),
            arguments: FieldTable::default(),
        }
    }

    #[test]
    fn properties_keys_are_encoded_as_rabbitmq_encodes_them() {
        assert_eq!(properties_key(&b("plant.*.temp")), "plant.%2A.temp");
        assert_eq!(properties_key(&b("")), "~");
        assert_eq!(properties_key(&b("a.b")), "a.b");
        let key = properties_key(&b("plant.#"));
        assert!(same_key("plant.%23", &key));
        assert!(
            same_key("plant.%2523", &key),
            "twice encoded, as Location gives it"
        );
        assert!(!same_key("plant.x", &key));
    }
}
