//! `/metrics` in the Prometheus text exposition format: message counters
//! by protocol, queue depths and consumers, connections and channels by
//! protocol, the store's commit latency and batch size histograms, process
//! memory, file descriptors and CPU, and the alarms. As RabbitMQ's
//! endpoint: the queue families are summed over every queue at
//! `/metrics` (cheap however many queues there are), and given per queue
//! (`vhost`, `queue` labels) at `/metrics/per-object`. Built from atomics
//! in one pass; no authentication.

use crate::Admin;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use switchyard_engine::connections::EngineCounters;
use switchyard_engine::store::{BATCH_SIZE_BUCKETS, COMMIT_SECONDS_BUCKETS};

/// `/metrics` (queue families summed) and `/metrics/per-object`.
pub(crate) fn router() -> Router<Arc<Admin>> {
    Router::new()
        .route("/metrics", get(aggregated))
        .route("/metrics/per-object", get(per_object))
}

async fn aggregated(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    exposition(render(&admin, false))
}

async fn per_object(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    exposition(render(&admin, true))
}

fn exposition(text: String) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// Reads one counter of an adapter's counters.
type CounterOf = fn(&switchyard_engine::connections::MessageCounters) -> u64;

/// A histogram family: `buckets` counts per bound (not cumulative; the
/// last slot is above every bound), with its `sum`.
fn histogram(
    out: &mut String,
    (name, help): (&str, &str),
    bounds: &[String],
    buckets: &[std::sync::atomic::AtomicU64],
    sum: &str,
) {
    family(out, name, "histogram", help);
    let mut cumulative = 0;
    for (bound, count) in bounds
        .iter()
        .map(String::as_str)
        .chain(["+Inf"])
        .zip(buckets)
    {
        cumulative += count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {cumulative}");
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes a family's HELP and TYPE lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The protocol family and version of a connection's protocol label
/// (`"MQTT 5.0"` → `("mqtt", "5.0")`, `"Web STOMP"` → `("stomp", "web")`).
fn protocol_labels(protocol: &str) -> (String, String) {
    match protocol.split_once(' ') {
        Some(("Web", family)) => (family.to_lowercase(), "web".into()),
        Some((family, version)) => (family.to_lowercase(), version.to_owned()),
        None => (protocol.to_lowercase(), String::new()),
    }
}

/// Resident memory of this process, in bytes.
pub(crate) fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Open file descriptors of this process.
pub(crate) fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

/// CPU seconds (user + system) of this process.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Threads of this process.
pub(crate) fn threads() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

/// The machine's memory, in bytes.
pub(crate) fn memory_total() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The open-file limit of this process.
pub(crate) fn fd_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The whole exposition; `per_object`: queue families per queue, else
/// summed.
pub(crate) fn render(admin: &Admin, per_object: bool) -> String {
    let broker = &admin.broker;
    let mut out = String::with_capacity(64 * 1024);

    // Messages by protocol.
    let counters = broker.connections().all_counters();
    let message_families: [(&str, &str, CounterOf); 6] = [
        (
            "switchyard_messages_published_total",
            "Messages received from publishers.",
            |c| c.published.load(Ordering::Relaxed),
        ),
        (
            "switchyard_messages_delivered_total",
            "Messages delivered to consumers (and fetched by get).",
            |c| c.delivered.load(Ordering::Relaxed),
        ),
        (
            "switchyard_messages_acked_total",
            "Deliveries acknowledged by consumers.",
            |c| c.acked.load(Ordering::Relaxed),
        ),
        (
            "switchyard_messages_confirmed_total",
            "Publishes confirmed to their publishers (confirm, PUBACK, PUBREC).",
            |c| c.confirmed.load(Ordering::Relaxed),
        ),
        (
            "switchyard_messages_unroutable_returned_total",
            "Unroutable publishes returned to the publisher.",
            |c| c.returned.load(Ordering::Relaxed),
        ),
        (
            "switchyard_messages_unroutable_dropped_total",
            "Unroutable publishes dropped.",
            |c| c.dropped.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, get) in message_families {
        family(&mut out, name, "counter", help);
        for protocol in ["amqp", "mqtt", "stomp"] {
            let v = counters
                .iter()
                .find(|(l, _)| *l == protocol)
                .map_or(0, |(_, c)| get(c));
            let _ = writeln!(out, "{name}{{protocol=\"{protocol}\"}} {v}");
        }
    }
    family(
        &mut out,
        "switchyard_messages_dead_lettered_total",
        "counter",
        "Messages handed to a dead-letter exchange, by reason.",
    );
    let engine = &broker.connections().engine;
    for (i, reason) in EngineCounters::REASONS.iter().enumerate() {
        let _ = writeln!(
            out,
            "switchyard_messages_dead_lettered_total{{reason=\"{reason}\"}} {}",
            engine.dead_lettered[i].load(Ordering::Relaxed)
        );
    }

    // Queues.
    let queue_families = [
        (
            "switchyard_queue_messages_ready",
            "gauge",
            "Messages ready for delivery.",
        ),
        (
            "switchyard_queue_messages_unacked",
            "gauge",
            "Messages delivered and not yet acknowledged.",
        ),
        (
            "switchyard_queue_consumers",
            "gauge",
            "Consumers of the queue.",
        ),
        (
            "switchyard_queue_messages_published_total",
            "counter",
            "Messages enqueued.",
        ),
        (
            "switchyard_queue_messages_delivered_total",
            "counter",
            "Messages delivered or fetched.",
        ),
        (
            "switchyard_queue_messages_acked_total",
            "counter",
            "Deliveries acknowledged.",
        ),
    ];
    let mut rows: [String; 6] = Default::default();
    let mut sums = [0u64; 6];
    let mut queue_memory = 0u64;
    let mut queues = 0usize;
    for v in broker.vhosts() {
        let vl = label(&v.name);
        for q in v.queues() {
            queues += 1;
            let snap = q.snapshot();
            queue_memory += crate::stats::memory(&snap);
            let ql = label(&q.spec.name);
            let values = [
                snap.ready,
                snap.unacked,
                snap.consumers.len() as u64,
                q.stats.published.load(Ordering::Relaxed),
                q.dispatched() + q.stats.got.load(Ordering::Relaxed),
                q.stats.acked.load(Ordering::Relaxed),
            ];
            for (sum, value) in sums.iter_mut().zip(values) {
                *sum += value;
            }
            if per_object {
                for ((row, (name, _, _)), value) in rows.iter_mut().zip(&queue_families).zip(values)
                {
                    let _ = writeln!(row, "{name}{{vhost=\"{vl}\",queue=\"{ql}\"}} {value}");
                }
            }
        }
    }
    for (((name, kind, help), row), sum) in queue_families.iter().zip(&rows).zip(sums) {
        family(&mut out, name, kind, help);
        if per_object {
            out.push_str(row);
        } else {
            let _ = writeln!(out, "{name} {sum}");
        }
    }
    family(&mut out, "switchyard_queues", "gauge", "Queues.");
    let _ = writeln!(out, "switchyard_queues {queues}");
    family(
        &mut out,
        "switchyard_queue_memory_bytes",
        "gauge",
        "Memory the broker accounts to queued messages (bodies plus an estimated per-message overhead).",
    );
    let _ = writeln!(out, "switchyard_queue_memory_bytes {queue_memory}");

    // Connections and channels.
    let mut conns: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for family_name in ["amqp", "mqtt", "stomp"] {
        conns
            .entry((family_name.into(), String::new()))
            .or_default();
    }
    for c in broker.connections().list() {
        let key = protocol_labels(c.protocol());
        let channels = crate::api::channel_count(&c) as u64;
        let e = conns.entry(key).or_default();
        e.0 += 1;
        e.1 += channels;
    }
    // A protocol with connections is listed by version; one without keeps
    // a 0 series (version "") so the family always has every protocol.
    let live: Vec<String> = conns
        .iter()
        .filter(|((_, v), (n, _))| !v.is_empty() && *n > 0)
        .map(|((p, _), _)| p.clone())
        .collect();
    conns.retain(|(p, version), (n, _)| {
        if version.is_empty() {
            !live.contains(p)
        } else {
            *n > 0
        }
    });
    family(
        &mut out,
        "switchyard_connections",
        "gauge",
        "Open client connections, by protocol.",
    );
    for ((p, version), (n, _)) in &conns {
        let _ = writeln!(
            out,
            "switchyard_connections{{protocol=\"{p}\",version=\"{version}\"}} {n}"
        );
    }
    family(
        &mut out,
        "switchyard_channels",
        "gauge",
        "Open channels (one per MQTT or STOMP connection), by protocol.",
    );
    for ((p, version), (n, ch)) in &conns {
        let value = if *n == 0 { 0 } else { *ch };
        let _ = writeln!(
            out,
            "switchyard_channels{{protocol=\"{p}\",version=\"{version}\"}} {value}"
        );
    }

    // Store.
    if let Some(m) = broker.store().metrics() {
        histogram(
            &mut out,
            (
                "switchyard_store_commit_seconds",
                "Time to commit (and sync) one batch.",
            ),
            &COMMIT_SECONDS_BUCKETS.map(|b| b.to_string()),
            &m.commit_buckets,
            &(m.commit_micros.load(Ordering::Relaxed) as f64 / 1e6).to_string(),
        );
        histogram(
            &mut out,
            (
                "switchyard_store_batch_size",
                "Operations committed per batch.",
            ),
            &BATCH_SIZE_BUCKETS.map(|b| b.to_string()),
            &m.batch_buckets,
            &m.batch_ops.load(Ordering::Relaxed).to_string(),
        );

        family(
            &mut out,
            "switchyard_store_fsyncs_total",
            "counter",
            "Durable commits, each of which syncs the store file.",
        );
        let _ = writeln!(
            out,
            "switchyard_store_fsyncs_total {}",
            m.commits.load(Ordering::Relaxed)
        );
    }
    family(
        &mut out,
        "switchyard_store_backlog",
        "gauge",
        "Store operations accepted and not yet committed.",
    );
    let _ = writeln!(out, "switchyard_store_backlog {}", broker.store().backlog());

    // Process.
    family(
        &mut out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
    );
    let _ = writeln!(
        out,
        "process_resident_memory_bytes {}",
        resident_bytes().unwrap_or(0)
    );
    family(
        &mut out,
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
    );
    let _ = writeln!(out, "process_open_fds {}", open_fds().unwrap_or(0));
    if let Some(max) = fd_limit() {
        family(
            &mut out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
        );
        let _ = writeln!(out, "process_max_fds {max}");
    }
    if let Some(cpu) = cpu_seconds() {
        family(
            &mut out,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent in seconds.",
        );
        let _ = writeln!(out, "process_cpu_seconds_total {cpu}");
    }
    if let Ok(d) = admin.started.duration_since(std::time::UNIX_EPOCH) {
        family(
            &mut out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch in seconds.",
        );
        let _ = writeln!(out, "process_start_time_seconds {}", d.as_secs());
    }

    // Alarms: none exist yet (memory and disk alarms are planned), so
    // both are always 0; see docs/management.md.
    family(
        &mut out,
        "switchyard_alarm",
        "gauge",
        "Whether a resource alarm is in effect (1) or not (0).",
    );
    for resource in ["memory", "disk"] {
        let _ = writeln!(out, "switchyard_alarm{{resource=\"{resource}\"}} 0");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_protocols_split() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(protocol_labels("MQTT 5.0"), ("mqtt".into(), "5.0".into()));
        assert_eq!(protocol_labels("Web STOMP"), ("stomp".into(), "web".into()));
        assert_eq!(
            protocol_labels("AMQP 0-9-1"),
            ("amqp".into(), "0-9-1".into())
        );
    }
}
