//! Queue arguments with RabbitMQ's semantics, driven by lapin against a real
//! `switchyard` process: validation at `queue.declare`, dead-letter
//! exchanges (`x-death` and the `x-first-death-*` / `x-last-death-*`
//! headers, cycles), message TTL (per queue and per message), length limits
//! and overflow behaviours, priorities and queue expiry.
//!
//! Expectations come from RabbitMQ's guides "Dead Letter Exchanges",
//! "Queue Length Limit", "Time-To-Live and Expiration", "Classic Queues
//! Support Priorities" and "Queues" (optional arguments), and from the
//! argument checks of `rabbit_amqqueue` (406 PRECONDITION_FAILED whose text
//! names the argument).
//!
//! Everything the broker does on a timer (expiry, dead-lettering after
//! expiry, queue deletion) is awaited by polling with a bounded deadline,
//! never by an unbounded wait.

#[macro_use]
mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicRejectOptions,
    ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ErrorKind, ExchangeKind, Queue};
use switchyard_tests::Broker;

const NOT_FOUND: u16 = 404;
const PRECONDITION_FAILED: u16 = 406;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Declares queue `name` with `table`; panics if the broker refuses.
async fn declare_args(ch: &Channel, name: &str, table: FieldTable) -> Queue {
    t!(ch.queue_declare(name.into(), QueueDeclareOptions::default(), table.clone()))
        .unwrap_or_else(|e| panic!("declare queue {name:?} with {table:?}: {e}"))
}

async fn exchange(ch: &Channel, name: &str, kind: ExchangeKind) {
    t!(ch.exchange_declare(
        name.into(),
        kind,
        ExchangeDeclareOptions::default(),
        FieldTable::default()
    ))
    .unwrap_or_else(|e| panic!("declare exchange {name:?}: {e}"));
}

/// Declares exchange `dlx` of `kind` and a plain queue `dlq` bound to it with
/// `key`: the usual dead-letter target.
async fn dead_letter_target(ch: &Channel, dlx: &str, kind: ExchangeKind, dlq: &str, key: &str) {
    exchange(ch, dlx, kind).await;
    declare(ch, dlq, QueueDeclareOptions::default()).await;
    bind(ch, dlq, dlx, key).await;
}

/// Publishes with `props` in confirm mode and asserts the broker acked.
async fn publish_acked(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    let c = publish_with(ch, exchange, key, body, props).await;
    assert!(
        c.is_ack(),
        "publish of {:?} to {exchange:?}/{key:?} not acked: {c:?}",
        String::from_utf8_lossy(body)
    );
}

/// The ready-message count of `queue` (passive declare).
async fn ready(ch: &Channel, queue: &str) -> u32 {
    declare(
        ch,
        queue,
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
    )
    .await
    .message_count()
}

/// Whether queue `name` exists, by a passive declare on a fresh channel
/// (a 404 closes that channel, not the caller's).
async fn exists(conn: &Connection, name: &str) -> bool {
    let ch = channel(conn).await;
    let res = t!(ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default()
    ));
    match res {
        Ok(_) => {
            let _ = t!(ch.close(200, "done".into()));
            true
        }
        Err(e) if reply_code(&e) == Some(NOT_FOUND) => false,
        Err(e) => panic!("passive declare of {name:?}: {e:?}"),
    }
}

/// Polls until `queue` holds at least `n` ready messages; panics after
/// [`DEADLINE`].
async fn await_ready(ch: &Channel, queue: &str, n: u32) {
    let start = Instant::now();
    loop {
        let have = ready(ch, queue).await;
        if have >= n {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{queue:?} holds {have} messages, not {n}, after {DEADLINE:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Samples `queue` every 50 ms for `span` and panics if it ever holds a
/// ready message.
async fn assert_stays_empty(ch: &Channel, queue: &str, span: Duration) {
    let start = Instant::now();
    while start.elapsed() < span {
        let have = ready(ch, queue).await;
        assert_eq!(
            have,
            0,
            "{queue:?} holds {have} messages {:?} into a window where it must stay empty",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The reply text of a channel or connection close carried by `err`.
fn reply_text(err: &lapin::Error) -> String {
    match err.kind() {
        ErrorKind::ProtocolError(e) => e.get_message().as_str().to_owned(),
        _ => String::new(),
    }
}

/// After a channel error the channel is unusable (lapin may still be writing
/// close-ok when the failed call returns, so give it a bounded moment).
async fn assert_channel_closed(ch: &Channel) {
    for _ in 0..50 {
        if !ch.status().connected() {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("channel should be closed after the error");
}

/// `queue.declare` of `name` with `table` is refused with 406 whose reply
/// text names `arg`; the channel is closed, the queue is not created and
/// the connection keeps working.
async fn assert_declare_refused(conn: &Connection, name: &str, table: FieldTable, arg: &str) {
    let ch = channel(conn).await;
    let res = t!(ch.queue_declare(name.into(), QueueDeclareOptions::default(), table.clone()));
    match res {
        Ok(q) => panic!("declare {name:?} with {table:?}: expected 406 naming {arg:?}, got {q:?}"),
        Err(e) => {
            assert_eq!(
                reply_code(&e),
                Some(PRECONDITION_FAILED),
                "declare {name:?} with {table:?}: {e:?}"
            );
            let said = reply_text(&e);
            assert!(
                said.contains(arg),
                "406 for {table:?} should name {arg:?}: {said:?}"
            );
        }
    }
    assert_channel_closed(&ch).await;
    assert!(
        !exists(conn, name).await,
        "a refused declare must not create {name:?}"
    );
}

fn headers(d: &Delivery) -> &FieldTable {
    d.properties.headers().as_ref().unwrap_or_else(|| {
        panic!(
            "message {:?} has no headers: {:?}",
            String::from_utf8_lossy(&d.data),
            d.properties
        )
    })
}

/// A string header of `d`; panics if missing or not a string.
fn header_text(d: &Delivery, key: &str) -> String {
    let v = headers(d)
        .inner()
        .get(key)
        .unwrap_or_else(|| panic!("no {key:?} header in {:?}", headers(d)));
    string_value(v, key)
}

/// One entry of the `x-death` header.
#[derive(Debug)]
struct Death {
    queue: String,
    reason: String,
    count: i64,
    exchange: String,
    routing_keys: Vec<String>,
    /// Seconds since the epoch.
    time: u64,
    original_expiration: Option<String>,
}

/// The `x-death` header of `d`, most recent entry first, with the field
/// types RabbitMQ uses: `count` a long (`l`), `time` a timestamp,
/// `routing-keys` an array of long strings, the rest long strings.
fn deaths(d: &Delivery) -> Vec<Death> {
    let h = headers(d);
    let Some(v) = h.inner().get("x-death") else {
        panic!("no x-death header in {h:?}");
    };
    let AMQPValue::FieldArray(entries) = v else {
        panic!("x-death must be an array, got {v:?}");
    };
    entries
        .as_slice()
        .iter()
        .map(|e| {
            let AMQPValue::FieldTable(t) = e else {
                panic!("x-death entry must be a table, got {e:?}");
            };
            let f = t.inner();
            let field = |k: &str| {
                f.get(k)
                    .unwrap_or_else(|| panic!("x-death entry without {k:?}: {t:?}"))
            };
            let count = match field("count") {
                AMQPValue::LongLongInt(n) => *n,
                other => panic!("x-death count must be a long ('l'), got {other:?}"),
            };
            let time = match field("time") {
                AMQPValue::Timestamp(ts) => *ts,
                other => panic!("x-death time must be a timestamp, got {other:?}"),
            };
            let routing_keys = match field("routing-keys") {
                AMQPValue::FieldArray(keys) => keys
                    .as_slice()
                    .iter()
                    .map(|k| string_value(k, "x-death routing-keys element"))
                    .collect(),
                other => panic!("x-death routing-keys must be an array, got {other:?}"),
            };
            Death {
                queue: string_value(field("queue"), "x-death queue"),
                reason: string_value(field("reason"), "x-death reason"),
                count,
                exchange: string_value(field("exchange"), "x-death exchange"),
                routing_keys,
                time,
                original_expiration: f
                    .get("original-expiration")
                    .map(|v| string_value(v, "x-death original-expiration")),
            }
        })
        .collect()
}

/// Asserts that `death` records one dead-lettering of a message published
/// to `exchange` with `keys`, from `queue` for `reason`, `count` times, at
/// about the current time.
#[track_caller]
fn assert_death(
    death: &Death,
    queue: &str,
    reason: &str,
    count: i64,
    exchange: &str,
    keys: &[&str],
) {
    assert_eq!(death.queue, queue, "x-death queue in {death:?}");
    assert_eq!(death.reason, reason, "x-death reason in {death:?}");
    assert_eq!(death.count, count, "x-death count in {death:?}");
    assert_eq!(death.exchange, exchange, "x-death exchange in {death:?}");
    assert_eq!(
        death.routing_keys, keys,
        "x-death routing-keys in {death:?}"
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    assert!(
        death.time.abs_diff(now) <= 60,
        "x-death time {} is not about now ({now}): {death:?}",
        death.time
    );
}

/// Asserts the six `x-first-death-*` / `x-last-death-*` headers.
#[track_caller]
fn assert_first_last(d: &Delivery, first: (&str, &str, &str), last: (&str, &str, &str)) {
    let (queue, reason, exchange) = first;
    assert_eq!(header_text(d, "x-first-death-queue"), queue);
    assert_eq!(header_text(d, "x-first-death-reason"), reason);
    assert_eq!(header_text(d, "x-first-death-exchange"), exchange);
    let (queue, reason, exchange) = last;
    assert_eq!(header_text(d, "x-last-death-queue"), queue);
    assert_eq!(header_text(d, "x-last-death-reason"), reason);
    assert_eq!(header_text(d, "x-last-death-exchange"), exchange);
}

// ---------------------------------------------------------------------------
// Argument validation at queue.declare
// ---------------------------------------------------------------------------

// x-max-priority must be an integer in 0..=255 (rabbit_amqqueue's
// check_max_priority_arg, MAX_SUPPORTED_PRIORITY = 255).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_priority_above_255_is_406() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    for (i, n) in [300, 256, -1].into_iter().enumerate() {
        let table = args(&[("x-max-priority", int(n))]);
        assert_declare_refused(&conn, &format!("prio-{i}"), table, "x-max-priority").await;
    }
    assert_round_trip(&conn).await;
}

// x-overflow accepts only drop-head, reject-publish and reject-publish-dlx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_overflow_is_406() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    for (i, v) in ["bogus", "drop_head", ""].into_iter().enumerate() {
        let table = args(&[("x-max-length", int(1)), ("x-overflow", text(v))]);
        assert_declare_refused(&conn, &format!("ovf-{i}"), table, "x-overflow").await;
    }
    assert_round_trip(&conn).await;
}

// Switchyard has only classic queues: quorum and stream queue types are
// refused with 406 naming x-queue-type (rather than silently declaring a
// classic queue that lacks their guarantees).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_and_stream_queue_types_are_406() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    for kind in ["quorum", "stream"] {
        let ch = channel(&conn).await;
        let res = t!(ch.queue_declare(
            format!("typed-{kind}").as_str().into(),
            QueueDeclareOptions::durable(),
            args(&[("x-queue-type", text(kind))])
        ));
        let e = res.expect_err("declare of an unsupported queue type must fail");
        assert_eq!(reply_code(&e), Some(PRECONDITION_FAILED), "{kind}: {e:?}");
        let said = reply_text(&e);
        assert!(said.contains("x-queue-type"), "{kind}: {said:?}");
        assert_channel_closed(&ch).await;
        assert!(!exists(&conn, &format!("typed-{kind}")).await, "{kind}");
    }
    assert_round_trip(&conn).await;
}

// Message TTL and length limits must be non-negative, queue expiry positive
// (the TTL guide: "unlike message TTL it cannot be 0").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_limits_and_zero_expires_are_406() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let cases = [
        ("x-message-ttl", -1),
        ("x-expires", 0),
        ("x-expires", -5),
        ("x-max-length", -1),
        ("x-max-length-bytes", -1),
    ];
    for (i, (arg, n)) in cases.into_iter().enumerate() {
        let table = args(&[(arg, int(n))]);
        assert_declare_refused(&conn, &format!("neg-{i}"), table, arg).await;
    }
    assert_round_trip(&conn).await;
}

// A dead-letter routing key is meaningless without a dead-letter exchange:
// 406 (routing_key_but_no_dlx_defined) naming x-dead-letter-routing-key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_routing_key_without_exchange_is_406() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let table = args(&[("x-dead-letter-routing-key", text("somewhere"))]);
    assert_declare_refused(&conn, "dlrk-only", table, "x-dead-letter-routing-key").await;
    assert_round_trip(&conn).await;
}

// The boundary values are accepted: x-queue-type classic, x-max-priority
// 255, zero message TTL and length limits, x-expires 1, each overflow mode,
// a dead-letter exchange that does not exist yet, the default exchange as
// DLX with a routing key, and integers of any width (TTL guide: short-short,
// short, long or long-long).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boundary_arguments_are_accepted() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let cases: Vec<(&str, FieldTable)> = vec![
        ("classic", args(&[("x-queue-type", text("classic"))])),
        ("prio-255", args(&[("x-max-priority", int(255))])),
        (
            "prio-byte",
            args(&[("x-max-priority", AMQPValue::ShortShortUInt(10))]),
        ),
        ("ttl-0", args(&[("x-message-ttl", int(0))])),
        (
            "ttl-long",
            args(&[("x-message-ttl", AMQPValue::LongLongInt(60_000))]),
        ),
        (
            "ttl-short",
            args(&[("x-message-ttl", AMQPValue::ShortInt(1_000))]),
        ),
        ("len-0", args(&[("x-max-length", int(0))])),
        ("bytes-0", args(&[("x-max-length-bytes", int(0))])),
        ("expires-1", args(&[("x-expires", int(1))])),
        ("drop-head", args(&[("x-overflow", text("drop-head"))])),
        (
            "reject-publish",
            args(&[("x-overflow", text("reject-publish"))]),
        ),
        (
            "reject-publish-dlx",
            args(&[("x-overflow", text("reject-publish-dlx"))]),
        ),
        (
            "dlx-missing",
            args(&[("x-dead-letter-exchange", text("not-declared-yet"))]),
        ),
        (
            "dlx-default",
            args(&[
                ("x-dead-letter-exchange", text("")),
                ("x-dead-letter-routing-key", text("elsewhere")),
            ]),
        ),
    ];
    for (name, table) in cases {
        declare_args(&ch, name, table).await;
    }
    assert!(ch.status().connected(), "no declare closed the channel");
    // expires-1 may be gone by now; the others are still there.
    for name in ["classic", "prio-255", "ttl-0", "len-0", "dlx-default"] {
        assert!(exists(&conn, name).await, "{name} was declared");
    }
}

// ---------------------------------------------------------------------------
// Dead-lettering
// ---------------------------------------------------------------------------

// basic.reject(requeue=false) republishes the message to the queue's DLX
// with its original routing key (no x-dead-letter-routing-key), body and
// properties kept, and adds x-death (one entry: queue, reason "rejected",
// count 1 as a long, time, exchange and routing-keys of the original
// publish) and the x-first-death-* / x-last-death-* headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_without_requeue_dead_letters_with_x_death() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    exchange(&ch, "orders", ExchangeKind::Direct).await;
    // Bound with the original key only: the message gets there only if
    // dead-lettering keeps it.
    dead_letter_target(&ch, "dlx", ExchangeKind::Direct, "dead", "order.created").await;
    declare_args(
        &ch,
        "work",
        args(&[("x-dead-letter-exchange", text("dlx"))]),
    )
    .await;
    bind(&ch, "work", "orders", "order.created").await;

    let props = BasicProperties::default()
        .with_message_id("m-1".into())
        .with_headers(args(&[("app-header", text("kept"))]));
    publish_acked(&ch, "orders", "order.created", b"order 42", props).await;
    let m = get(&ch, "work").await.expect("message in work");
    t!(m.reject(BasicRejectOptions { requeue: false })).expect("reject");

    let d = await_get(&ch, "dead").await;
    assert_eq!(body(&d), "order 42");
    assert_eq!(d.exchange.as_str(), "dlx", "delivered from the DLX");
    assert_eq!(d.routing_key.as_str(), "order.created", "original key kept");
    assert_eq!(
        d.properties.message_id().as_ref().map(ShortString::as_str),
        Some("m-1")
    );
    assert_eq!(header_text(&d, "app-header"), "kept");
    let ds = deaths(&d);
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_death(&ds[0], "work", "rejected", 1, "orders", &["order.created"]);
    assert_eq!(ds[0].original_expiration, None);
    let fl = ("work", "rejected", "orders");
    assert_first_last(&d, fl, fl);
    assert_eq!(ready(&ch, "work").await, 0, "the source queue let it go");
}

// basic.nack(multiple, requeue=false) dead-letters every message it covers,
// in order, routed with the queue's x-dead-letter-routing-key instead of
// the original key; x-death still records the original key and exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_without_requeue_uses_dead_letter_routing_key() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "dlx", ExchangeKind::Direct, "failed-tasks", "failed").await;
    // Would catch messages dead-lettered with their original key.
    declare(&ch, "by-old-key", QueueDeclareOptions::default()).await;
    bind(&ch, "by-old-key", "dlx", "tasks").await;
    declare_args(
        &ch,
        "tasks",
        args(&[
            ("x-dead-letter-exchange", text("dlx")),
            ("x-dead-letter-routing-key", text("failed")),
        ]),
    )
    .await;

    let sub_ch = channel(&conn).await;
    let mut sub = Sub::start(&sub_ch, "tasks", BasicConsumeOptions::default())
        .await
        .expect("consume");
    publish(&ch, "", "tasks", b"t1").await;
    publish(&ch, "", "tasks", b"t2").await;
    let first = sub.next().await;
    let second = sub.next().await;
    assert_eq!((body(&first), body(&second)), ("t1".into(), "t2".into()));
    t!(sub_ch.basic_nack(
        second.delivery_tag,
        BasicNackOptions {
            multiple: true,
            requeue: false
        }
    ))
    .expect("nack");

    for expected in ["t1", "t2"] {
        let d = await_get(&ch, "failed-tasks").await;
        assert_eq!(body(&d), expected);
        assert_eq!(d.exchange.as_str(), "dlx");
        assert_eq!(
            d.routing_key.as_str(),
            "failed",
            "x-dead-letter-routing-key"
        );
        let ds = deaths(&d);
        assert_eq!(ds.len(), 1, "{ds:?}");
        assert_death(&ds[0], "tasks", "rejected", 1, "", &["tasks"]);
        assert_first_last(&d, ("tasks", "rejected", ""), ("tasks", "rejected", ""));
    }
    assert!(drain(&ch, "by-old-key").await.is_empty());
    sub.assert_quiet().await;
}

// Requeueing (basic.reject or basic.nack with requeue=true) is not
// dead-lettering: the message comes back, marked redelivered, and nothing
// reaches the DLX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_does_not_dead_letter() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "dlx", ExchangeKind::Fanout, "dead", "").await;
    declare_args(
        &ch,
        "retry-me",
        args(&[("x-dead-letter-exchange", text("dlx"))]),
    )
    .await;
    publish(&ch, "", "retry-me", b"again").await;

    let m = get(&ch, "retry-me").await.expect("first get");
    t!(m.reject(BasicRejectOptions { requeue: true })).expect("reject requeue");
    let m = get(&ch, "retry-me").await.expect("back after reject");
    assert_eq!(body(&m.delivery), "again");
    assert!(m.delivery.redelivered);
    t!(m.nack(BasicNackOptions {
        multiple: false,
        requeue: true
    }))
    .expect("nack requeue");
    let m = get(&ch, "retry-me").await.expect("back after nack");
    assert_eq!(body(&m.delivery), "again");
    assert!(m.delivery.redelivered);
    assert!(
        m.delivery
            .properties
            .headers()
            .as_ref()
            .is_none_or(|h| !h.contains_key("x-death")),
        "a requeued message has no x-death: {:?}",
        m.delivery.properties
    );
    t!(m.ack(Default::default())).expect("ack");

    tokio::time::sleep(QUIET).await;
    assert!(drain(&ch, "dead").await.is_empty(), "nothing dead-lettered");
}

// A DLX that does not exist when the message is dead-lettered: the message
// is silently dropped (DLX guide), with no channel or connection error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_to_missing_exchange_drops_message() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let mut watch = probe(&ch).await;
    declare_args(
        &ch,
        "orphan",
        args(&[("x-dead-letter-exchange", text("no-such-dlx"))]),
    )
    .await;
    publish(&ch, "", "orphan", b"doomed").await;
    let m = get(&ch, "orphan").await.expect("message");
    t!(m.reject(BasicRejectOptions { requeue: false })).expect("reject");

    watch.assert_quiet().await;
    assert!(ch.status().connected(), "the channel stays open");
    assert!(get(&ch, "orphan").await.is_none(), "not requeued either");
    publish(&ch, "", "orphan", b"next").await;
    assert_eq!(drain(&ch, "orphan").await, ["next"]);
    assert_round_trip(&conn).await;
}

// The retry loop applications build: work queue --reject--> retry exchange
// --> wait queue (TTL 100 ms) --expire--> back to the work exchange. x-death
// keeps one entry per {queue, reason}, most recent first, and counts each
// round; x-first-death-* stay at the first event, x-last-death-* follow the
// last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_loop_counts_each_queue_and_reason() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    exchange(&ch, "jobs", ExchangeKind::Direct).await;
    exchange(&ch, "retry", ExchangeKind::Fanout).await;
    declare_args(
        &ch,
        "work",
        args(&[("x-dead-letter-exchange", text("retry"))]),
    )
    .await;
    bind(&ch, "work", "jobs", "job").await;
    declare_args(
        &ch,
        "wait",
        args(&[
            ("x-message-ttl", int(100)),
            ("x-dead-letter-exchange", text("jobs")),
        ]),
    )
    .await;
    bind(&ch, "wait", "retry", "").await;

    let sub_ch = channel(&conn).await;
    let mut sub = Sub::start(&sub_ch, "work", BasicConsumeOptions::default())
        .await
        .expect("consume");
    publish(&ch, "jobs", "job", b"flaky job").await;

    for round in 0..=3i64 {
        let d = sub.next().await;
        assert_eq!(body(&d), "flaky job", "round {round}");
        assert_eq!(d.routing_key.as_str(), "job", "round {round}");
        if round == 0 {
            assert!(
                d.properties
                    .headers()
                    .as_ref()
                    .is_none_or(|h| !h.contains_key("x-death")),
                "fresh message has no x-death"
            );
        } else {
            let ds = deaths(&d);
            assert_eq!(
                ds.len(),
                2,
                "round {round}: one entry per queue+reason: {ds:?}"
            );
            assert_death(&ds[0], "wait", "expired", round, "retry", &["job"]);
            assert_death(&ds[1], "work", "rejected", round, "jobs", &["job"]);
            assert_first_last(
                &d,
                ("work", "rejected", "jobs"),
                ("wait", "expired", "retry"),
            );
        }
        if round < 3 {
            t!(d.reject(BasicRejectOptions { requeue: false })).expect("reject");
        } else {
            t!(d.ack(Default::default())).expect("ack");
        }
    }
    sub.assert_quiet().await;
}

// A queue whose expired messages are dead-lettered back to itself (through
// a fanout DLX that also feeds an observer queue): with no rejection in the
// cycle the copy for the same queue is dropped (DLX guide, "Dead-letter
// cycle"), so the observer gets exactly one copy and the queue stays empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_cycle_back_to_same_queue_is_dropped() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    exchange(&ch, "loop-dlx", ExchangeKind::Fanout).await;
    declare_args(
        &ch,
        "looping",
        args(&[
            ("x-message-ttl", int(100)),
            ("x-dead-letter-exchange", text("loop-dlx")),
        ]),
    )
    .await;
    declare(&ch, "observer", QueueDeclareOptions::default()).await;
    bind(&ch, "looping", "loop-dlx", "").await;
    bind(&ch, "observer", "loop-dlx", "").await;
    publish(&ch, "", "looping", b"round and round").await;

    await_ready(&ch, "observer", 1).await;
    // Ten TTLs: a looping message would be back in the queue most of the
    // time and in the observer again.
    assert_stays_empty(&ch, "looping", Duration::from_secs(1)).await;
    assert_eq!(ready(&ch, "observer").await, 1, "exactly one copy observed");
    let d = await_get(&ch, "observer").await;
    let ds = deaths(&d);
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_death(&ds[0], "looping", "expired", 1, "", &["looping"]);
}

// The cycle the DLX guide names: dead-lettering to the default exchange
// without a dead-letter routing key sends an expired message back to its
// own queue. RabbitMQ drops it instead of looping forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_cycle_through_default_exchange_is_dropped() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    declare_args(
        &ch,
        "self-loop",
        args(&[
            ("x-message-ttl", int(100)),
            ("x-dead-letter-exchange", text("")),
        ]),
    )
    .await;
    publish(&ch, "", "self-loop", b"once").await;

    let start = Instant::now();
    while ready(&ch, "self-loop").await > 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "self-loop still holds the message after {DEADLINE:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    assert_stays_empty(&ch, "self-loop", Duration::from_secs(1)).await;
    assert!(get(&ch, "self-loop").await.is_none());
}

// ---------------------------------------------------------------------------
// Message TTL
// ---------------------------------------------------------------------------

// x-message-ttl: a message nobody consumes is dead-lettered with reason
// "expired" promptly after its TTL, not before it, without any client
// touching the source queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_ttl_expiry_dead_letters_promptly_without_consumer() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "ttl-dlx", ExchangeKind::Fanout, "expired", "").await;
    declare_args(
        &ch,
        "short-lived",
        args(&[
            ("x-message-ttl", int(200)),
            ("x-dead-letter-exchange", text("ttl-dlx")),
        ]),
    )
    .await;
    let start = Instant::now();
    publish(&ch, "", "short-lived", b"tick").await;

    let d = await_get(&ch, "expired").await;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(190),
        "dead-lettered after {elapsed:?}, before its 200 ms TTL"
    );
    assert_eq!(body(&d), "tick");
    assert_eq!(d.routing_key.as_str(), "short-lived");
    let ds = deaths(&d);
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_death(&ds[0], "short-lived", "expired", 1, "", &["short-lived"]);
    assert_eq!(
        ds[0].original_expiration, None,
        "no per-message TTL was set"
    );
    let fl = ("short-lived", "expired", "");
    assert_first_last(&d, fl, fl);
    assert!(get(&ch, "short-lived").await.is_none());
}

// The per-message `expiration` property works like x-message-ttl, and the
// lower of the two wins. On dead-lettering the property is removed (so the
// message does not expire again downstream) and kept in x-death as
// original-expiration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_message_expiration_dead_letters_and_records_original() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "exp-dlx", ExchangeKind::Fanout, "expired", "").await;
    declare_args(
        &ch,
        "patient",
        args(&[
            ("x-message-ttl", int(60_000)),
            ("x-dead-letter-exchange", text("exp-dlx")),
        ]),
    )
    .await;
    let props = BasicProperties::default().with_expiration("200".into());
    let start = Instant::now();
    publish_acked(&ch, "", "patient", b"hurry", props).await;

    let d = await_get(&ch, "expired").await;
    assert!(
        start.elapsed() >= Duration::from_millis(190),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(body(&d), "hurry");
    assert_eq!(d.properties.expiration(), &None, "expiration removed");
    let ds = deaths(&d);
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_death(&ds[0], "patient", "expired", 1, "", &["patient"]);
    assert_eq!(ds[0].original_expiration.as_deref(), Some("200"));
    assert!(get(&ch, "patient").await.is_none());
}

// x-message-ttl 0: a message that cannot be delivered at once expires on
// arrival: basic.get never sees it, and it is dead-lettered as "expired".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_zero_expires_message_without_waiting_consumer() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "now-dlx", ExchangeKind::Fanout, "missed", "").await;
    declare_args(
        &ch,
        "now-or-never",
        args(&[
            ("x-message-ttl", int(0)),
            ("x-dead-letter-exchange", text("now-dlx")),
        ]),
    )
    .await;
    publish(&ch, "", "now-or-never", b"too late").await;
    assert!(
        get(&ch, "now-or-never").await.is_none(),
        "an expired message is never in basic.get-ok"
    );
    let d = await_get(&ch, "missed").await;
    assert_eq!(body(&d), "too late");
    assert_death(
        &deaths(&d)[0],
        "now-or-never",
        "expired",
        1,
        "",
        &["now-or-never"],
    );
}

// x-message-ttl 0 with a consumer waiting: the message is delivered (the
// TTL guide's alternative to the `immediate` flag), not dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_zero_delivers_to_waiting_consumer() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "now-dlx", ExchangeKind::Fanout, "missed", "").await;
    declare_args(
        &ch,
        "now-or-never",
        args(&[
            ("x-message-ttl", int(0)),
            ("x-dead-letter-exchange", text("now-dlx")),
        ]),
    )
    .await;
    let sub_ch = channel(&conn).await;
    let mut sub = Sub::start(&sub_ch, "now-or-never", BasicConsumeOptions::default())
        .await
        .expect("consume");
    publish(&ch, "", "now-or-never", b"just in time").await;
    assert_eq!(sub.next_acked().await, "just in time");
    tokio::time::sleep(QUIET).await;
    assert!(drain(&ch, "missed").await.is_empty(), "not dead-lettered");
}

// ---------------------------------------------------------------------------
// Length limits
// ---------------------------------------------------------------------------

// x-max-length with the default overflow (drop-head): publishes are all
// accepted and the oldest messages make room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_length_drops_oldest() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    declare_args(&ch, "capped", args(&[("x-max-length", int(2))])).await;
    for m in ["m1", "m2", "m3"] {
        publish(&ch, "", "capped", m.as_bytes()).await;
    }
    assert_eq!(ready(&ch, "capped").await, 2);
    assert_eq!(drain(&ch, "capped").await, ["m2", "m3"]);
}

// drop-head with a DLX: the dropped messages are dead-lettered, oldest
// first, with reason "maxlen".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_length_drop_head_dead_letters_with_reason_maxlen() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "len-dlx", ExchangeKind::Fanout, "overflowed", "").await;
    declare_args(
        &ch,
        "capped",
        args(&[
            ("x-max-length", int(2)),
            ("x-dead-letter-exchange", text("len-dlx")),
        ]),
    )
    .await;
    for m in ["m1", "m2", "m3", "m4"] {
        publish(&ch, "", "capped", m.as_bytes()).await;
    }
    assert_eq!(drain(&ch, "capped").await, ["m3", "m4"]);
    for expected in ["m1", "m2"] {
        let d = await_get(&ch, "overflowed").await;
        assert_eq!(body(&d), expected);
        let ds = deaths(&d);
        assert_eq!(ds.len(), 1, "{ds:?}");
        assert_death(&ds[0], "capped", "maxlen", 1, "", &["capped"]);
        assert_first_last(&d, ("capped", "maxlen", ""), ("capped", "maxlen", ""));
    }
    assert!(get(&ch, "overflowed").await.is_none());
}

// x-max-length-bytes counts message bodies only (not properties or
// headers); a queue exactly at the limit is not over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_length_bytes_counts_body_bytes_only() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    declare_args(&ch, "small", args(&[("x-max-length-bytes", int(10))])).await;
    let big_header = "h".repeat(1000);
    for m in ["aaaa", "bbbb", "cccc"] {
        let props = BasicProperties::default().with_headers(args(&[("pad", text(&big_header))]));
        publish_acked(&ch, "", "small", m.as_bytes(), props).await;
    }
    // 12 body bytes > 10: the oldest went; 8 left.
    assert_eq!(ready(&ch, "small").await, 2);
    // 8 + 2 = 10 bytes: at the limit, nothing dropped.
    publish(&ch, "", "small", b"dd").await;
    assert_eq!(drain(&ch, "small").await, ["bbbb", "cccc", "dd"]);
}

// x-overflow reject-publish: once full, new publishes are refused with
// basic.nack (confirm mode) and not dead-lettered even though a DLX is set;
// the queue keeps its first messages and accepts again once there is room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_publish_nacks_new_messages_and_keeps_old() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "rp-dlx", ExchangeKind::Fanout, "never", "").await;
    declare_args(
        &ch,
        "full",
        args(&[
            ("x-max-length", int(2)),
            ("x-overflow", text("reject-publish")),
            ("x-dead-letter-exchange", text("rp-dlx")),
        ]),
    )
    .await;
    let mut outcomes = Vec::new();
    for m in ["m1", "m2", "m3"] {
        let c = publish_with(&ch, "", "full", m.as_bytes(), BasicProperties::default()).await;
        outcomes.push(if c.is_ack() {
            "ack"
        } else if c.is_nack() {
            "nack"
        } else {
            "?"
        });
    }
    assert_eq!(outcomes, ["ack", "ack", "nack"]);
    assert_eq!(ready(&ch, "full").await, 2);
    let first = get(&ch, "full").await.expect("m1");
    assert_eq!(body(&first.delivery), "m1");
    t!(first.ack(Default::default())).expect("ack");
    // Room for one again.
    publish(&ch, "", "full", b"m4").await;
    assert_eq!(drain(&ch, "full").await, ["m2", "m4"]);
    assert_eq!(
        ready(&ch, "never").await,
        0,
        "reject-publish does not dead-letter"
    );
}

// x-overflow reject-publish-dlx: like reject-publish, and the refused
// message is dead-lettered with reason "maxlen".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_publish_dlx_nacks_and_dead_letters() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "rpd-dlx", ExchangeKind::Fanout, "refused", "").await;
    declare_args(
        &ch,
        "full",
        args(&[
            ("x-max-length", int(2)),
            ("x-overflow", text("reject-publish-dlx")),
            ("x-dead-letter-exchange", text("rpd-dlx")),
        ]),
    )
    .await;
    publish(&ch, "", "full", b"m1").await;
    publish(&ch, "", "full", b"m2").await;
    let c = publish_with(&ch, "", "full", b"m3", BasicProperties::default()).await;
    assert!(c.is_nack(), "third publish must be nacked: {c:?}");
    assert_eq!(drain(&ch, "full").await, ["m1", "m2"]);
    let d = await_get(&ch, "refused").await;
    assert_eq!(body(&d), "m3");
    let ds = deaths(&d);
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_death(&ds[0], "full", "maxlen", 1, "", &["full"]);
    assert!(get(&ch, "refused").await.is_none());
}

// x-max-length 0 (drop-head): every message is dropped on arrival and,
// with a DLX, dead-lettered as "maxlen"; the publisher still gets acks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_length_zero_dead_letters_every_message() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "zero-dlx", ExchangeKind::Fanout, "spill", "").await;
    declare_args(
        &ch,
        "zero",
        args(&[
            ("x-max-length", int(0)),
            ("x-dead-letter-exchange", text("zero-dlx")),
        ]),
    )
    .await;
    publish(&ch, "", "zero", b"z1").await;
    publish(&ch, "", "zero", b"z2").await;
    assert_eq!(ready(&ch, "zero").await, 0);
    assert!(get(&ch, "zero").await.is_none());
    for expected in ["z1", "z2"] {
        let d = await_get(&ch, "spill").await;
        assert_eq!(body(&d), expected);
        assert_death(&deaths(&d)[0], "zero", "maxlen", 1, "", &["zero"]);
    }
}

// ---------------------------------------------------------------------------
// Priorities
// ---------------------------------------------------------------------------

// x-max-priority 10: highest priority first, FIFO within a priority, no
// priority property counts as 0, above the maximum counts as the maximum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_queue_orders_by_priority_then_fifo() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    declare_args(&ch, "prio", args(&[("x-max-priority", int(10))])).await;
    let published: [(&str, Option<u8>); 10] = [
        ("p1-a", Some(1)),
        ("p5-a", Some(5)),
        ("p9", Some(9)),
        ("none-a", None),
        ("p200", Some(200)),
        ("p5-b", Some(5)),
        ("p0", Some(0)),
        ("none-b", None),
        ("p1-b", Some(1)),
        ("p10", Some(10)),
    ];
    for (b, p) in published {
        let props = match p {
            Some(p) => BasicProperties::default().with_priority(p),
            None => BasicProperties::default(),
        };
        publish_acked(&ch, "", "prio", b.as_bytes(), props).await;
    }
    assert_eq!(
        drain(&ch, "prio").await,
        [
            "p200", "p10", "p9", "p5-a", "p5-b", "p1-a", "p1-b", "none-a", "p0", "none-b"
        ]
    );
}

// A message nacked with requeue goes back among its own priority: after a
// higher-priority message that arrived meanwhile, before lower ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeued_message_keeps_its_priority() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    declare_args(&ch, "prio", args(&[("x-max-priority", int(10))])).await;
    let with = |p: u8| BasicProperties::default().with_priority(p);
    publish_acked(&ch, "", "prio", b"mid", with(5)).await;
    publish_acked(&ch, "", "prio", b"low", with(1)).await;
    let m = get(&ch, "prio").await.expect("mid");
    assert_eq!(body(&m.delivery), "mid");
    publish_acked(&ch, "", "prio", b"high", with(9)).await;
    t!(m.nack(BasicNackOptions {
        multiple: false,
        requeue: true
    }))
    .expect("nack requeue");

    let mut order = Vec::new();
    while let Some(m) = get(&ch, "prio").await {
        order.push((body(&m.delivery), m.delivery.redelivered));
        t!(m.ack(Default::default())).expect("ack");
        assert!(order.len() <= 3, "more messages than published: {order:?}");
    }
    assert_eq!(
        order,
        [
            ("high".to_owned(), false),
            ("mid".to_owned(), true),
            ("low".to_owned(), false)
        ]
    );
}

// ---------------------------------------------------------------------------
// Queue expiry
// ---------------------------------------------------------------------------

/// Polls, 700 ms apart (longer than the 500 ms expiry, so that a broker
/// that renews the lease on passive declares still expires the queue),
/// until `name` is gone; panics after six seconds.
async fn await_deleted(conn: &Connection, name: &str) {
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        if !exists(conn, name).await {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "queue {name:?} still exists after {:?}",
            start.elapsed()
        );
    }
}

// x-expires: a queue with no consumers that nobody declares or polls is
// deleted after the period, messages and all (they are not dead-lettered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_queue_expires() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "exp-dlx", ExchangeKind::Fanout, "leftovers", "").await;
    declare_args(
        &ch,
        "ephemeral",
        args(&[
            ("x-expires", int(500)),
            ("x-dead-letter-exchange", text("exp-dlx")),
        ]),
    )
    .await;
    publish(&ch, "", "ephemeral", b"left behind").await;
    assert!(exists(&conn, "ephemeral").await, "not expired yet");
    await_deleted(&conn, "ephemeral").await;
    assert!(
        drain(&ch, "leftovers").await.is_empty(),
        "an expiring queue does not dead-letter its messages"
    );
}

// A queue with a consumer is in use and does not expire; once the consumer
// is cancelled the lease runs out and the queue is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_with_consumer_does_not_expire() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    declare_args(&ch, "kept", args(&[("x-expires", int(500))])).await;
    let sub_ch = channel(&conn).await;
    let mut sub = Sub::start(&sub_ch, "kept", BasicConsumeOptions::default())
        .await
        .expect("consume");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        exists(&conn, "kept").await,
        "a consumed queue does not expire"
    );
    publish(&ch, "", "kept", b"still here").await;
    assert_eq!(sub.next_acked().await, "still here");

    t!(sub_ch.basic_cancel(sub.consumer.tag(), BasicCancelOptions::default())).expect("cancel");
    await_deleted(&conn, "kept").await;
}
