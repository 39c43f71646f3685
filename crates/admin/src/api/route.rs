//! `POST /api/switchyard/route`, the route tester: where a message would
//! go, through which bindings, and which consumers (AMQP consumers, MQTT
//! sessions, STOMP subscriptions) would receive it. Given an exchange and
//! routing key, an MQTT topic (published on `amq.topic` as the MQTT
//! adapter publishes it), or a STOMP destination (as a SEND to it).
//! Nothing is published.

use super::topology::{binding_json, exchange_name};
use crate::Admin;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::{JsonBody, object_to_table, text};
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use std::sync::Arc;
use switchyard_model::{Message, Properties};
use switchyard_stomp::destination::Destination;

/// The exchange and routing key a request names.
fn target(body: &Value) -> ApiResult<(String, String)> {
    let given = ["exchange", "mqtt_topic", "stomp_destination"]
        .iter()
        .filter(|k| body.get(**k).is_some())
        .count();
    if given != 1 {
        return Err(ApiError::bad_request(
            "name exactly one of exchange (with routing_key), mqtt_topic or stomp_destination",
        ));
    }
    if let Some(x) = text(body, "exchange") {
        let key = text(body, "routing_key").unwrap_or("");
        return Ok((exchange_name(x).to_owned(), key.to_owned()));
    }
    if let Some(topic) = text(body, "mqtt_topic") {
        switchyard_mqtt::topic::check_name(topic)
            .map_err(|e| ApiError::bad_request(format!("invalid MQTT topic: {e}")))?;
        return Ok((
            "amq.topic".into(),
            switchyard_mqtt::topic::to_routing_key(topic),
        ));
    }
    let dest = text(body, "stomp_destination")
        .ok_or_else(|| ApiError::bad_request("stomp_destination must be a string"))?;
    match Destination::parse(dest).map_err(|e| ApiError::bad_request(e.to_string()))? {
        Destination::Queue(q) | Destination::AmqQueue(q) | Destination::ReplyQueue(q) => {
            Ok((String::new(), q))
        }
        Destination::Topic(k) => Ok(("amq.topic".into(), k)),
        Destination::Exchange { exchange, key } => Ok((exchange, key)),
        Destination::TempQueue(_) => Err(ApiError::bad_request(
            "a temp-queue destination names a queue private to one connection",
        )),
    }
}

/// What kind of subscriber a consumer of this protocol is.
fn kind(protocol: &str) -> &'static str {
    if protocol.contains("MQTT") {
        "MQTT session"
    } else if protocol.contains("STOMP") {
        "STOMP subscription"
    } else {
        "AMQP consumer"
    }
}

pub(crate) async fn trace(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let vhost = text(&body, "vhost").unwrap_or("/");
    let v = admin.broker.vhost(vhost).ok_or_else(ApiError::not_found)?;
    caller.require_read(vhost)?;
    let (exchange, routing_key) = target(&body)?;
    let headers = match body.get("headers") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(object_to_table(o)),
        Some(_) => return Err(ApiError::bad_request("headers must be an object")),
    };
    let message = Message {
        exchange: exchange.clone(),
        routing_key: routing_key.clone(),
        properties: Properties {
            headers,
            ..Properties::default()
        },
        body: bytes::Bytes::new(),
    };
    let trace = v.trace(&exchange, &message).ok_or_else(|| {
        ApiError::not_found_because(format!("no exchange '{exchange}' in vhost '{vhost}'"))
    })?;
    let conns = admin.broker.connections();
    let routes: Vec<Value> = trace
        .routes
        .iter()
        .map(|r| {
            let consumers: Vec<Value> = r
                .queue
                .snapshot()
                .consumers
                .iter()
                .map(|c| {
                    let conn = conns.get(c.outbox.owner());
                    let protocol = conn.as_ref().map_or("", |x| x.protocol());
                    json!({
                        "protocol": protocol,
                        "connection": conn.as_ref().map(|x| x.name()),
                        "client_id": conn.as_ref().and_then(|x| x.login().client_id.clone()),
                        "user": conn.as_ref().map(|x| x.user().to_owned()),
                        "consumer_tag": c.spec.tag,
                        "kind": kind(protocol),
                    })
                })
                .collect();
            json!({
                "vhost": vhost,
                "queue": r.queue.spec.name,
                "path": r.path.iter().map(|b| binding_json(vhost, b)).collect::<Vec<_>>(),
                "consumers": consumers,
            })
        })
        .collect();
    Ok(Json(json!({
        "exchange": exchange,
        "routing_key": routing_key,
        "routes": routes,
        "alternate_exchanges": trace.alternates,
        "unroutable": trace.routes.is_empty(),
    })))
}
