//! `/api/overview`, `/api/whoami`, `/api/nodes` and the health checks.

use crate::Admin;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::{ListQuery, rate};
use crate::stats::{QueueCounters, Totals};
use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::UNIX_EPOCH;
use switchyard_engine::{Command, QueueSpec};

/// The node name every object reports.
pub(crate) const NODE: &str = "switchyard@localhost";

/// The RabbitMQ version whose management API this one follows (clients
/// such as rabbitmqadmin look at it).
pub(crate) const RABBITMQ_API_VERSION: &str = "3.10.8";

/// The exchange types offered.
fn exchange_types() -> Value {
    json!([
        {"name": "direct", "description": "AMQP direct exchange, as per the AMQP specification", "enabled": true},
        {"name": "fanout", "description": "AMQP fanout exchange, as per the AMQP specification", "enabled": true},
        {"name": "headers", "description": "AMQP headers exchange, as per the AMQP specification", "enabled": true},
        {"name": "topic", "description": "AMQP topic exchange, as per the AMQP specification", "enabled": true},
        {"name": "x-delayed-message", "description": "Delayed message exchange", "enabled": true},
    ])
}

/// `message_stats` with counters and rates, from `names`, `counts` and
/// `rates` in the same order.
pub(crate) fn message_stats(names: &[&str], counts: &[u64], rates: &[f64]) -> Value {
    let mut m = Map::new();
    for ((name, count), r) in names.iter().zip(counts).zip(rates) {
        m.insert((*name).to_owned(), json!(count));
        m.insert(format!("{name}_details"), rate(*r));
    }
    Value::Object(m)
}

/// The overview's `message_stats`: what the protocols count (publishes,
/// acks, confirms, unroutables) and what the queues count (deliveries and
/// gets). `disk_reads` and `disk_writes` are not counted yet: always 0.
fn overview_stats(totals: &Totals, summed: &QueueCounters, admin: &Admin) -> Value {
    let mut stats = message_stats(&Totals::NAMES, &totals.0, &admin.rates.totals());
    let queue_side = message_stats(
        &QueueCounters::NAMES[1..],
        &summed.0[1..],
        &admin.rates.queue_sum()[1..],
    );
    if let (Some(o), Value::Object(q)) = (stats.as_object_mut(), queue_side) {
        o.extend(q);
        for name in ["disk_reads", "disk_writes"] {
            o.insert(name.into(), json!(0));
            o.insert(format!("{name}_details"), rate(0.0));
        }
    }
    stats
}

pub(crate) async fn overview(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let broker = &admin.broker;
    let (mut ready, mut unacked, mut consumers) = (0, 0, 0);
    let (mut exchanges, mut queues) = (0, 0);
    let mut summed = QueueCounters::default();
    for v in broker.vhosts() {
        if !caller.may_see(&v.name) {
            continue;
        }
        exchanges += v.exchange_count();
        for queue in v.queues() {
            let (r, u, c) = queue.tallies();
            ready += r;
            unacked += u;
            consumers += c;
            queues += 1;
            summed.add(&QueueCounters::of(&queue));
        }
    }
    let conns: Vec<_> = broker
        .connections()
        .list()
        .into_iter()
        .filter(|c| caller.sees_everything() || c.user() == caller.id.user)
        .collect();
    let channels: usize = conns
        .iter()
        .map(|c| super::connections::channel_count(c))
        .sum();
    let totals = Totals::of(broker);
    let listeners: Vec<Value> = admin
        .listeners
        .iter()
        .map(|(protocol, addr)| {
            json!({
                "node": NODE,
                "protocol": protocol,
                "ip_address": addr.ip().to_string(),
                "port": addr.port(),
                "socket_opts": {},
            })
        })
        .collect();
    let body = json!({
        "management_version": RABBITMQ_API_VERSION,
        "rates_mode": "basic",
        "sample_retention_policies": {"global": [600, 3600, 28800, 86400], "basic": [600, 3600], "detailed": [600]},
        "exchange_types": exchange_types(),
        "product_version": env!("CARGO_PKG_VERSION"),
        "product_name": "Switchyard",
        "rabbitmq_version": RABBITMQ_API_VERSION,
        "cluster_name": NODE,
        "erlang_version": "none",
        "erlang_full_version": "none (Switchyard is written in Rust)",
        "disable_stats": false,
        "enable_queue_totals": true,
        "message_stats": overview_stats(&totals, &summed, &admin),
        "churn_rates": {},
        "queue_totals": {
            "messages": ready + unacked,
            "messages_details": rate(0.0),
            "messages_ready": ready,
            "messages_ready_details": rate(0.0),
            "messages_unacknowledged": unacked,
            "messages_unacknowledged_details": rate(0.0),
        },
        "object_totals": {
            "channels": channels,
            "connections": conns.len(),
            "consumers": consumers,
            "exchanges": exchanges,
            "queues": queues,
        },
        "statistics_db_event_queue": 0,
        "node": NODE,
        "listeners": listeners,
        "contexts": [],
    });
    Ok(Json(q.columns_of(body)))
}

pub(crate) async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({"name": caller.id.user, "tags": caller.id.tags}))
}

pub(crate) async fn nodes(State(admin): State<Arc<Admin>>, _caller: Caller) -> Json<Value> {
    let uptime = admin.started.elapsed().map_or(0, |d| d.as_millis());
    let started = admin
        .started
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mem = crate::metrics::resident_bytes().unwrap_or(0);
    let fds = crate::metrics::open_fds().unwrap_or(0);
    let disk_free =
        rustix::fs::statvfs(&admin.data_dir).map_or(0, |s| s.f_bavail.saturating_mul(s.f_frsize));
    let sockets = admin.broker.connections().len();
    Json(json!([{
        "name": NODE,
        "type": "disc",
        "running": true,
        "os_pid": std::process::id().to_string(),
        "uptime": uptime,
        "started_at": started,
        "mem_used": mem,
        "mem_limit": crate::metrics::memory_total().unwrap_or(0),
        "mem_alarm": false,
        "mem_calculation_strategy": "rss",
        "disk_free": disk_free,
        "disk_free_limit": 0,
        "disk_free_alarm": false,
        "db_dir": admin.data_dir.display().to_string(),
        "fd_used": fds,
        "fd_total": crate::metrics::fd_limit().unwrap_or(0),
        "sockets_used": sockets,
        "sockets_total": crate::metrics::fd_limit().unwrap_or(0),
        "proc_used": crate::metrics::threads().unwrap_or(0),
        "proc_total": crate::metrics::threads().unwrap_or(0),
        "run_queue": 0,
        "net_ticktime": 0,
        "auth_mechanisms": [{"name": "PLAIN", "enabled": true}, {"name": "AMQPLAIN", "enabled": true}],
        "processors": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "exchange_types": exchange_types(),
        "rates_mode": "basic",
        "partitions": [],
    }]))
}

pub(crate) async fn healthcheck(_caller: Caller) -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Declares `aliveness-test` in the vhost, publishes to it and gets the
/// message back, as RabbitMQ's check does.
pub(crate) async fn aliveness(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    let Some(v) = admin.broker.vhost(&vhost) else {
        return Err(ApiError::not_found());
    };
    caller.require_write(&vhost)?;
    v.apply(
        Command::DeclareQueue(QueueSpec {
            name: "aliveness-test".into(),
            durable: false,
            exclusive_owner: None,
            auto_delete: false,
            arguments: Default::default(),
        }),
        switchyard_engine::OPERATOR,
    )?;
    let message = switchyard_model::Message {
        exchange: String::new(),
        routing_key: "aliveness-test".into(),
        properties: Default::default(),
        body: bytes::Bytes::from_static(b"test_message"),
    };
    v.publish(message, false)?;
    let q = v
        .find_queue("aliveness-test")
        .ok_or_else(ApiError::not_found)?;
    match q.get(true) {
        Some(_) => Ok(Json(json!({"status": "ok"}))),
        None => Ok(Json(
            json!({"status": "failed", "reason": "message not delivered"}),
        )),
    }
}
