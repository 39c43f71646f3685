//! Queue semantics beyond the queue arguments themselves, against a real
//! `switchyard` process: single active consumer, consumer priorities
//! (`x-priority` on `basic.consume`), dead-lettering across a SIGKILL, and
//! dead letters reaching STOMP and MQTT 5 clients with their `x-death`
//! history.
//!
//! Expectations come from RabbitMQ's guides "Consumers" (Single Active
//! Consumer), "Consumer Priorities" and "Dead Letter Exchanges", and from
//! Switchyard's docs/stomp.md, docs/mqtt.md and docs/interop.md for how
//! table headers look in STOMP and MQTT 5 (tables and arrays as JSON text;
//! to MQTT 5 an array is one user property per element).
//!
//! lapin drives AMQP; the STOMP and MQTT 5 sides are the blocking clients of
//! `common/stomp.rs` and `common/mqtt.rs`, run in `block_in_place`. Every
//! wait is bounded.

#[macro_use]
mod common;
#[macro_use]
#[path = "common/stomp.rs"]
mod stomp;
#[path = "common/mqtt.rs"]
mod mqtt;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use lapin::message::{Delivery, DeliveryResult};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions,
    BasicRejectOptions, ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, Consumer, ExchangeKind};
use switchyard_tests::Broker;
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------
// AMQP helpers
// ---------------------------------------------------------------------------

async fn declare_args(ch: &Channel, name: &str, opts: QueueDeclareOptions, table: FieldTable) {
    t!(ch.queue_declare(name.into(), opts, table.clone()))
        .unwrap_or_else(|e| panic!("declare queue {name:?} with {table:?}: {e}"));
}

async fn exchange(ch: &Channel, name: &str, kind: ExchangeKind, durable: bool) {
    t!(ch.exchange_declare(
        name.into(),
        kind,
        ExchangeDeclareOptions {
            durable,
            ..Default::default()
        },
        FieldTable::default()
    ))
    .unwrap_or_else(|e| panic!("declare exchange {name:?}: {e}"));
}

/// Publishes `body` (also its message id) in confirm mode; asserts the ack.
async fn publish_acked(ch: &Channel, key: &str, body: &str, props: BasicProperties) {
    let props = props.with_message_id(body.into());
    let c = publish_with(ch, "", key, body.as_bytes(), props).await;
    assert!(
        c.is_ack(),
        "publish of {body:?} to {key:?} not acked: {c:?}"
    );
}

/// The ready-message count of `queue` (passive declare).
async fn ready(ch: &Channel, queue: &str) -> u32 {
    t!(ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default()
    ))
    .unwrap_or_else(|e| panic!("passive declare {queue:?}: {e}"))
    .message_count()
}

/// Polls until `queue` holds exactly `n` ready messages; panics after
/// [`DEADLINE`].
async fn await_ready(ch: &Channel, queue: &str, n: u32) {
    let start = Instant::now();
    loop {
        let have = ready(ch, queue).await;
        if have == n {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{queue:?} holds {have} ready messages, not {n}, after {DEADLINE:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Takes every message of `queue` (auto-ack), in order.
async fn drain_deliveries(ch: &Channel, queue: &str) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Some(m) = t!(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
        .unwrap_or_else(|e| panic!("basic.get {queue:?}: {e}"))
    {
        out.push(m.delivery);
        assert!(out.len() <= 10_000, "queue {queue:?} never runs empty");
    }
    out
}

fn bodies(ds: &[Delivery]) -> Vec<String> {
    ds.iter().map(body).collect()
}

fn header<'a>(d: &'a Delivery, key: &str) -> Option<&'a AMQPValue> {
    d.properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(key))
}

#[track_caller]
fn header_text(d: &Delivery, key: &str) -> String {
    let v = header(d, key)
        .unwrap_or_else(|| panic!("no {key:?} header in {:?}", d.properties.headers()));
    string_value(v, key)
}

/// The (queue, reason, count) of each `x-death` entry of `d`, most recent
/// first.
#[track_caller]
fn deaths(d: &Delivery) -> Vec<(String, String, i64)> {
    let Some(v) = header(d, "x-death") else {
        panic!(
            "no x-death header on {:?}: {:?}",
            body(d),
            d.properties.headers()
        );
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
                other => panic!("x-death count must be a long, got {other:?}"),
            };
            (
                string_value(field("queue"), "x-death queue"),
                string_value(field("reason"), "x-death reason"),
                count,
            )
        })
        .collect()
}

/// Asserts `d` was dead-lettered once, from `queue`, for `reason`.
#[track_caller]
fn assert_dead_once(d: &Delivery, queue: &str, reason: &str) {
    let ds = deaths(d);
    assert_eq!(
        ds,
        [(queue.to_owned(), reason.to_owned(), 1)],
        "x-death of {:?}",
        body(d)
    );
    assert_eq!(header_text(d, "x-first-death-reason"), reason);
    assert_eq!(header_text(d, "x-first-death-queue"), queue);
}

/// A consumer (with consumer arguments) whose deliveries are forwarded, in
/// order, into a channel; like `common::Sub`, which takes no arguments.
struct Cons {
    consumer: Consumer,
    rx: mpsc::UnboundedReceiver<DeliveryResult>,
}

impl Cons {
    /// A manual-ack consumer of `queue` with consumer arguments `table`.
    async fn start(ch: &Channel, queue: &str, table: FieldTable) -> Self {
        let consumer = t!(ch.basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            table.clone()
        ))
        .unwrap_or_else(|e| panic!("consume {queue:?} with {table:?}: {e}"));
        let (tx, rx) = mpsc::unbounded_channel();
        consumer.set_delegate(move |delivery: DeliveryResult| {
            let _ = tx.send(delivery);
            async {}
        });
        Self { consumer, rx }
    }

    /// The next delivery within `within`, or `None` if nothing arrived.
    async fn try_next(&mut self, within: Duration) -> Option<Delivery> {
        match tokio::time::timeout(within, self.rx.recv()).await {
            Err(_) => None,
            Ok(Some(Ok(Some(d)))) => Some(d),
            Ok(other) => panic!("consumer ended while waiting for a delivery: {other:?}"),
        }
    }

    /// The next delivery; panics after [`STEP`].
    async fn next(&mut self, who: &str) -> Delivery {
        self.try_next(STEP)
            .await
            .unwrap_or_else(|| panic!("{who}: no delivery within {STEP:?}"))
    }

    /// The next `n` deliveries, in order.
    async fn take(&mut self, who: &str, n: usize) -> Vec<Delivery> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let d = self.try_next(STEP).await.unwrap_or_else(|| {
                panic!("{who}: delivery {i} of {n} missing; got {:?}", bodies(&out))
            });
            out.push(d);
        }
        out
    }

    /// Asserts that nothing arrives for [`QUIET`].
    async fn assert_quiet(&mut self, who: &str) {
        if let Some(d) = self.try_next(QUIET).await {
            panic!("{who} should get nothing, got {:?}", body(&d));
        }
    }
}

async fn ack(d: &Delivery) {
    t!(d.ack(BasicAckOptions::default())).expect("basic.ack");
}

/// A channel whose consumers may hold `prefetch` unacknowledged messages
/// each (`basic.qos`, global = false).
async fn qos_channel(conn: &Connection, prefetch: u16) -> Channel {
    let ch = channel(conn).await;
    t!(ch.basic_qos(prefetch, BasicQosOptions { global: false })).expect("basic.qos");
    ch
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i:02}")).collect()
}

// ---------------------------------------------------------------------------
// Single active consumer
// ---------------------------------------------------------------------------

fn sac() -> FieldTable {
    args(&[("x-single-active-consumer", AMQPValue::Boolean(true))])
}

// Consumers guide, "Single Active Consumer": the first consumer registered
// is the active one and gets every message, even while its prefetch is
// full (the others stay idle; the rest waits in the queue). When it is
// cancelled, the next registered consumer takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_active_consumer_gets_everything_until_cancelled() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let pubch = confirm_channel(&conn).await;
    declare_args(&pubch, "sac", QueueDeclareOptions::default(), sac()).await;

    let ch_a = qos_channel(&conn, 10).await;
    let mut a = Cons::start(&ch_a, "sac", FieldTable::default()).await;
    let ch_b = qos_channel(&conn, 10).await;
    let mut b = Cons::start(&ch_b, "sac", FieldTable::default()).await;

    let first = names("m", 0..12);
    for m in &first {
        publish_acked(&pubch, "sac", m, BasicProperties::default()).await;
    }
    let got = a.take("active consumer", 10).await;
    assert_eq!(bodies(&got), first[..10], "active consumer, in order");
    b.assert_quiet("the inactive consumer (active one's prefetch full)")
        .await;
    assert_eq!(
        ready(&pubch, "sac").await,
        2,
        "the rest waits for the active consumer"
    );

    for d in &got {
        ack(d).await;
    }
    let rest = a.take("active consumer after acking", 2).await;
    assert_eq!(bodies(&rest), first[10..]);
    for d in &rest {
        ack(d).await;
    }
    b.assert_quiet("the inactive consumer").await;

    t!(ch_a.basic_cancel(a.consumer.tag(), BasicCancelOptions::default())).expect("cancel A");
    let second = names("n", 0..5);
    for m in &second {
        publish_acked(&pubch, "sac", m, BasicProperties::default()).await;
    }
    let got = b.take("consumer B after A's cancel", 5).await;
    assert_eq!(bodies(&got), second, "B took over, in order");
    assert!(got.iter().all(|d| !d.redelivered), "fresh messages");
    for d in &got {
        ack(d).await;
    }
    assert_eq!(ready(&pubch, "sac").await, 0);
}

// When the active consumer's connection goes away with messages
// unacknowledged, they are requeued (in their original order, marked
// redelivered) and delivered to the consumer that becomes active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_active_consumer_connection_close_requeues_to_next() {
    let broker = Broker::start();
    let conn_a = connect(&broker).await;
    let conn_b = connect(&broker).await;
    let pubch = confirm_channel(&conn_b).await;
    declare_args(&pubch, "sac-close", QueueDeclareOptions::default(), sac()).await;

    let ch_a = qos_channel(&conn_a, 10).await;
    let mut a = Cons::start(&ch_a, "sac-close", FieldTable::default()).await;
    let ch_b = qos_channel(&conn_b, 10).await;
    let mut b = Cons::start(&ch_b, "sac-close", FieldTable::default()).await;

    let msgs = names("m", 0..5);
    for m in &msgs {
        publish_acked(&pubch, "sac-close", m, BasicProperties::default()).await;
    }
    let held = a.take("active consumer A", 5).await;
    assert_eq!(bodies(&held), msgs);
    b.assert_quiet("inactive consumer B").await;

    // A never acks; its connection closes.
    t!(conn_a.close(200, "bye".into())).expect("close A's connection");

    let got = b.take("consumer B after A's connection closed", 5).await;
    assert_eq!(bodies(&got), msgs, "requeued in their original order");
    for d in &got {
        assert!(d.redelivered, "{:?} must be marked redelivered", body(d));
        ack(d).await;
    }
    b.assert_quiet("consumer B after the requeued ones").await;
    assert_eq!(ready(&pubch, "sac-close").await, 0);
}

// ---------------------------------------------------------------------------
// Consumer priorities
// ---------------------------------------------------------------------------

fn priority(n: i32) -> FieldTable {
    args(&[("x-priority", int(n))])
}

// Consumer Priorities guide: high priority consumers get messages while
// they are active; lower priority ones only once the higher ones block
// (prefetch reached). Registration order must not matter: the low one
// consumes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_priority_high_fills_its_prefetch_first() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let pubch = confirm_channel(&conn).await;
    declare_args(
        &pubch,
        "cp",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await;

    let ch_lo = qos_channel(&conn, 2).await;
    let mut lo = Cons::start(&ch_lo, "cp", priority(1)).await;
    let ch_hi = qos_channel(&conn, 2).await;
    let mut hi = Cons::start(&ch_hi, "cp", priority(10)).await;

    let msgs = names("m", 0..6);
    for m in &msgs {
        publish_acked(&pubch, "cp", m, BasicProperties::default()).await;
    }
    let hi_got = hi.take("x-priority 10", 2).await;
    assert_eq!(bodies(&hi_got), msgs[0..2], "high priority first");
    let lo_got = lo.take("x-priority 1", 2).await;
    assert_eq!(
        bodies(&lo_got),
        msgs[2..4],
        "low priority once high is blocked"
    );
    hi.assert_quiet("x-priority 10 (prefetch full)").await;
    lo.assert_quiet("x-priority 1 (prefetch full)").await;
    assert_eq!(ready(&pubch, "cp").await, 2, "two wait for credit");

    // One ack at the high-priority consumer: the next message is its.
    ack(&hi_got[0]).await;
    let d = hi.next("x-priority 10 after one ack").await;
    assert_eq!(body(&d), msgs[4]);
    lo.assert_quiet("x-priority 1 while x-priority 10 had credit")
        .await;
    assert_eq!(ready(&pubch, "cp").await, 1);

    // High is blocked again; an ack at the low one lets it take the last.
    ack(&lo_got[0]).await;
    let d = lo.next("x-priority 1 after one ack").await;
    assert_eq!(body(&d), msgs[5]);
    hi.assert_quiet("x-priority 10 (blocked)").await;
    assert_eq!(ready(&pubch, "cp").await, 0);
}

// Consumer Priorities guide: "messages are delivered round-robin if
// multiple active consumers exist with the same high priority"; a lower
// priority consumer with credit gets nothing while they are active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_consumer_priorities_share_round_robin() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let pubch = confirm_channel(&conn).await;
    declare_args(
        &pubch,
        "cp-rr",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await;

    let ch_low = qos_channel(&conn, 100).await;
    // No x-priority: the default, 0.
    let mut low = Cons::start(&ch_low, "cp-rr", FieldTable::default()).await;
    let ch_a = qos_channel(&conn, 100).await;
    let mut a = Cons::start(&ch_a, "cp-rr", priority(5)).await;
    let ch_b = qos_channel(&conn, 100).await;
    let mut b = Cons::start(&ch_b, "cp-rr", priority(5)).await;

    let msgs = names("m", 0..10);
    for m in &msgs {
        publish_acked(&pubch, "cp-rr", m, BasicProperties::default()).await;
    }
    let got_a = a.take("first x-priority 5", 5).await;
    let got_b = b.take("second x-priority 5", 5).await;
    a.assert_quiet("first x-priority 5 after its half").await;
    b.assert_quiet("second x-priority 5 after its half").await;
    low.assert_quiet("default priority consumer").await;
    let all: BTreeSet<String> = bodies(&got_a).into_iter().chain(bodies(&got_b)).collect();
    assert_eq!(
        all,
        msgs.iter().cloned().collect::<BTreeSet<_>>(),
        "every message once"
    );
    // Strict alternation: each takes every other message.
    let a_bodies = bodies(&got_a);
    let evens: Vec<String> = msgs.iter().step_by(2).cloned().collect();
    let odds: Vec<String> = msgs.iter().skip(1).step_by(2).cloned().collect();
    assert!(
        a_bodies == evens || a_bodies == odds,
        "round-robin alternates: first got {a_bodies:?}, second {:?}",
        bodies(&got_b)
    );
}

// ---------------------------------------------------------------------------
// Dead-lettering and SIGKILL
// ---------------------------------------------------------------------------

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions::durable()
}

/// Durable direct exchange `dlx`, durable queue `dlq` bound with key
/// `work`, durable queue `work` dead-lettering to `dlx`, and durable queue
/// `barrier`.
async fn durable_dead_letter_topology(ch: &Channel) {
    exchange(ch, "dlx", ExchangeKind::Direct, true).await;
    declare_args(ch, "dlq", durable(), FieldTable::default()).await;
    bind(ch, "dlq", "dlx", "work").await;
    declare_args(
        ch,
        "work",
        durable(),
        args(&[("x-dead-letter-exchange", text("dlx"))]),
    )
    .await;
    declare_args(ch, "barrier", durable(), FieldTable::default()).await;
}

/// Publishes `msgs` persistently to `work`, confirmed, then takes them all
/// with `basic.get` (manual ack) and rejects without requeue those that
/// `reject` selects, leaving the others unacknowledged.
async fn publish_take_reject(conn: &Connection, msgs: &[String], reject: impl Fn(usize) -> bool) {
    let pubch = confirm_channel(conn).await;
    for m in msgs {
        publish_acked(&pubch, "work", m, persistent()).await;
    }
    let ch = channel(conn).await;
    for (i, want) in msgs.iter().enumerate() {
        let m = get(&ch, "work")
            .await
            .unwrap_or_else(|| panic!("{want:?} missing from work"));
        assert_eq!(&body(&m.delivery), want, "basic.get order");
        if reject(i) {
            t!(m.reject(BasicRejectOptions { requeue: false })).expect("basic.reject");
        }
    }
}

/// After a restart: what `work` and `dlq` hold. Every message of `msgs` is
/// in exactly one of them; each dead-lettered one carries x-death
/// (work, rejected, 1). Returns the sets.
async fn check_after_restart(
    broker: &Broker,
    msgs: &[String],
) -> (BTreeSet<String>, BTreeSet<String>) {
    let conn = connect(broker).await;
    let ch = channel(&conn).await;
    let dead = drain_deliveries(&ch, "dlq").await;
    let work = drain_deliveries(&ch, "work").await;
    let dead_b = bodies(&dead);
    let work_b = bodies(&work);
    for d in &dead {
        assert_dead_once(d, "work", "rejected");
    }
    let dead_set: BTreeSet<String> = dead_b.iter().cloned().collect();
    let work_set: BTreeSet<String> = work_b.iter().cloned().collect();
    assert_eq!(
        dead_set.len(),
        dead_b.len(),
        "duplicates in dlq: {dead_b:?}"
    );
    assert_eq!(
        work_set.len(),
        work_b.len(),
        "duplicates in work: {work_b:?}"
    );
    for m in msgs {
        let (in_dead, in_work) = (dead_set.contains(m), work_set.contains(m));
        assert!(
            in_dead != in_work,
            "{m:?} must be in exactly one of dlq / work: dlq {in_dead}, work {in_work}\n\
             dlq: {dead_b:?}\nwork: {work_b:?}"
        );
    }
    let all: BTreeSet<String> = msgs.iter().cloned().collect();
    assert!(
        dead_set.is_subset(&all) && work_set.is_subset(&all),
        "unknown messages: dlq {dead_b:?}, work {work_b:?}"
    );
    (dead_set, work_set)
}

// Dead Letter Exchanges guide: a rejected (requeue=false) persistent
// message is republished to the DLX. Once that has happened (awaited here
// by the queue counts, then 500 ms and a confirmed publish elsewhere), a
// SIGKILL loses nothing and doubles nothing: after the restart every
// rejected message is in `dlq` once, with x-death reason "rejected", none
// is back in `work`, and the never-acked rest is in `work`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_survive_sigkill() {
    let mut broker = Broker::start();
    let msgs = names("m", 0..40);
    {
        let conn = connect(&broker).await;
        let ch = confirm_channel(&conn).await;
        durable_dead_letter_topology(&ch).await;
        publish_take_reject(&conn, &msgs, |i| i % 2 == 0).await;
        await_ready(&ch, "dlq", 20).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        publish_acked(&ch, "barrier", "barrier", persistent()).await;
        tokio::task::block_in_place(|| broker.kill());
    }
    tokio::task::block_in_place(|| broker.restart());

    let (dead, work) = check_after_restart(&broker, &msgs).await;
    let even: BTreeSet<String> = msgs.iter().step_by(2).cloned().collect();
    let odd: BTreeSet<String> = msgs.iter().skip(1).step_by(2).cloned().collect();
    assert_eq!(dead, even, "every rejected message is dead-lettered");
    assert_eq!(work, odd, "the unacknowledged rest is back in work");
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    assert_eq!(drain(&ch, "barrier").await, ["barrier"]);
}

// The same with the SIGKILL right after the rejects were written, so some
// may be in flight: whichever way each went, it is in exactly one of the
// two queues — never lost between them, never in both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettering_cut_by_sigkill_neither_loses_nor_doubles() {
    let mut broker = Broker::start();
    let msgs = names("m", 0..40);
    {
        let conn = connect(&broker).await;
        let ch = confirm_channel(&conn).await;
        durable_dead_letter_topology(&ch).await;
        publish_take_reject(&conn, &msgs, |_| true).await;
        tokio::task::block_in_place(|| broker.kill());
    }
    tokio::task::block_in_place(|| broker.restart());
    let (dead, work) = check_after_restart(&broker, &msgs).await;
    eprintln!(
        "after SIGKILL: {} dead-lettered, {} back in work",
        dead.len(),
        work.len()
    );
}

// ---------------------------------------------------------------------------
// Dead letters to STOMP
// ---------------------------------------------------------------------------

/// Runs blocking STOMP / MQTT I/O without stalling the runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Fanout `dlx` bound to `dlq`; `source` dead-letters to `dlx`.
async fn fanout_dead_letter_topology(ch: &Channel, dlx: &str, dlq: &str, source: &str) {
    exchange(ch, dlx, ExchangeKind::Fanout, false).await;
    declare_args(
        ch,
        dlq,
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await;
    bind(ch, dlq, dlx, "").await;
    declare_args(
        ch,
        source,
        QueueDeclareOptions::default(),
        args(&[("x-dead-letter-exchange", text(dlx))]),
    )
    .await;
}

/// Publishes `body` to `queue` (default exchange), takes it with
/// `basic.get` and rejects it without requeue.
async fn publish_and_reject(ch: &Channel, queue: &str, body_text: &str) {
    publish_acked(ch, queue, body_text, BasicProperties::default()).await;
    let m = get(ch, queue)
        .await
        .unwrap_or_else(|| panic!("{body_text:?} missing from {queue:?}"));
    assert_eq!(body(&m.delivery), body_text);
    t!(m.reject(BasicRejectOptions { requeue: false })).expect("basic.reject");
}

// docs/stomp.md: non-string headers are rendered as text, tables and
// arrays as JSON, so a STOMP consumer of a dead-letter queue sees x-death
// as `[{…}]` with the reason and queue, beside the x-first-death-* strings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_death_reaches_stomp_consumer_as_json() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    fanout_dead_letter_topology(&ch, "dlx", "dlq", "work").await;

    let addr = broker.stomp_addr();
    let mut st = blocking(|| {
        let mut c = stomp::Client::connect(addr, stomp::Version::V12);
        c.receipt(
            "SUBSCRIBE",
            &[("destination", "/amq/queue/dlq"), ("id", "dead")],
            b"",
        );
        c
    });
    publish_and_reject(&ch, "work", "doomed").await;

    let m = blocking(|| st.message());
    assert_eq!(m.body_str(), "doomed", "{m:?}");
    assert_eq!(m.get("subscription"), Some("dead"), "{m:?}");
    let xd = m.header("x-death");
    assert!(
        xd.starts_with("[{") && xd.ends_with("}]"),
        "x-death as a JSON array of one table: {xd:?}"
    );
    for part in [
        r#""reason":"rejected""#,
        r#""queue":"work""#,
        r#""count":1"#,
        r#""exchange":"""#,
        r#""routing-keys":["work"]"#,
    ] {
        assert!(xd.contains(part), "x-death {xd:?} should contain {part}");
    }
    assert_eq!(m.get("x-first-death-reason"), Some("rejected"), "{m:?}");
    assert_eq!(m.get("x-first-death-queue"), Some("work"), "{m:?}");
    assert_eq!(m.get("x-first-death-exchange"), Some(""), "{m:?}");
    assert_eq!(m.get("x-last-death-reason"), Some("rejected"), "{m:?}");
    assert_eq!(m.get("x-last-death-queue"), Some("work"), "{m:?}");
    blocking(|| st.disconnect());
}

// RabbitMQ's STOMP plugin: NACK requeues by default; with `requeue:false`
// it rejects, so the queue's DLX gets the message (x-death reason
// "rejected", as for basic.reject / basic.nack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_nack_without_requeue_dead_letters() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    fanout_dead_letter_topology(&ch, "dlx5", "dlq5", "nacked").await;

    let addr = broker.stomp_addr();
    let (mut st, first, again) = blocking(|| {
        let mut c = stomp::Client::connect(addr, stomp::Version::V12);
        c.receipt(
            "SUBSCRIBE",
            &[
                ("destination", "/amq/queue/nacked"),
                ("id", "s1"),
                ("ack", "client-individual"),
            ],
            b"",
        );
        c.receipt(
            "SEND",
            &[("destination", "/amq/queue/nacked")],
            b"refuse me",
        );
        let first = c.message();
        // A plain NACK requeues: the message comes back, redelivered.
        c.receipt("NACK", &[("id", first.header("ack"))], b"");
        let again = c.message();
        c.receipt(
            "NACK",
            &[("id", again.header("ack")), ("requeue", "false")],
            b"",
        );
        (c, first, again)
    });
    assert_eq!(first.body_str(), "refuse me", "{first:?}");
    assert_eq!(first.get("redelivered"), Some("false"), "{first:?}");
    assert_eq!(again.body_str(), "refuse me", "{again:?}");
    assert_eq!(again.get("redelivered"), Some("true"), "{again:?}");

    let d = await_get(&ch, "dlq5").await;
    assert_eq!(body(&d), "refuse me");
    assert_dead_once(&d, "nacked", "rejected");
    assert_eq!(ready(&ch, "nacked").await, 0, "gone from the source queue");
    blocking(|| {
        st.assert_quiet(stomp::QUIET);
        st.disconnect();
    });
}

// ---------------------------------------------------------------------------
// Dead letters to MQTT 5
// ---------------------------------------------------------------------------

/// A PUBLISH received by an MQTT 5 client, with its user properties.
#[derive(Debug)]
struct Publish5 {
    topic: String,
    qos: u8,
    pkid: u16,
    user: Vec<(String, String)>,
    payload: Vec<u8>,
}

impl Publish5 {
    fn parse(p: &mqtt::Packet) -> Self {
        assert_eq!(p.kind(), 3, "expected PUBLISH, got {p:02x?}");
        let qos = (p.first >> 1) & 3;
        let tlen = usize::from(u16::from_be_bytes([p.body[0], p.body[1]]));
        let topic = String::from_utf8_lossy(&p.body[2..2 + tlen]).into_owned();
        let mut rest = &p.body[2 + tlen..];
        let mut pkid = 0;
        if qos > 0 {
            pkid = u16::from_be_bytes([rest[0], rest[1]]);
            rest = &rest[2..];
        }
        let (props, payload) = mqtt::read_properties(rest);
        let user = props
            .into_iter()
            .filter(|(id, _)| *id == 0x26)
            .map(|(_, v)| {
                let klen = usize::from(u16::from_be_bytes([v[0], v[1]]));
                let k = String::from_utf8_lossy(&v[2..2 + klen]).into_owned();
                let v = &v[2 + klen..];
                let vlen = usize::from(u16::from_be_bytes([v[0], v[1]]));
                (k, String::from_utf8_lossy(&v[2..2 + vlen]).into_owned())
            })
            .collect();
        Self {
            topic,
            qos,
            pkid,
            user,
            payload: payload.to_vec(),
        }
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.user
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[track_caller]
    fn one(&self, key: &str) -> &str {
        let vs = self.all(key);
        assert_eq!(vs.len(), 1, "user property {key:?} once in {self:?}");
        vs[0]
    }
}

/// An MQTT 5 clean-start client subscribed to `filter` at QoS 1.
fn mqtt5_subscriber(addr: SocketAddr, id: &str, filter: &str) -> mqtt::Client {
    let (mut c, _) = mqtt::Client::connect5(addr, &mqtt::connect5(id, true, 60, &[]));
    c.send(&mqtt::subscribe5(1, filter, 1));
    let ack = c.expect_packet();
    assert_eq!(
        ack.wire(),
        [mqtt::SUBACK, 0x04, 0x00, 0x01, 0x00, 0x01],
        "SUBACK for {filter:?}"
    );
    c
}

/// The next PUBLISH within `within` (acknowledged if QoS 1).
fn next_publish5(c: &mut mqtt::Client, within: Duration) -> Publish5 {
    let p = c
        .read_packet(within)
        .unwrap_or_else(|e| panic!("no MQTT PUBLISH within {within:?}: {e:?}"));
    let p = Publish5::parse(&p);
    if p.qos == 1 {
        c.send(&mqtt::puback(p.pkid));
    }
    p
}

/// Asserts the dead-letter user properties of `p`: x-first-death-* and one
/// x-death property per x-death entry (here one), a JSON table with the
/// reason and queue.
#[track_caller]
fn assert_mqtt_death(p: &Publish5, queue: &str, reason: &str) {
    assert_eq!(p.one("x-first-death-reason"), reason, "{p:?}");
    assert_eq!(p.one("x-first-death-queue"), queue, "{p:?}");
    assert_eq!(p.one("x-last-death-reason"), reason, "{p:?}");
    let xd = p.one("x-death");
    assert!(
        xd.starts_with('{') && xd.ends_with('}'),
        "x-death entry as a JSON table (an array is one user property per element): {xd:?}"
    );
    for part in [
        format!(r#""reason":"{reason}""#),
        format!(r#""queue":"{queue}""#),
        r#""count":1"#.to_owned(),
    ] {
        assert!(xd.contains(&part), "x-death {xd:?} should contain {part}");
    }
}

// docs/mqtt.md / docs/interop.md: AMQP headers reach MQTT 5 subscribers as
// user properties rendered as text, tables as JSON, an array one property
// per element. A message dead-lettered to amq.topic with routing key
// `dead.letters` reaches the subscriber of `dead/letters` with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_death_reaches_mqtt5_subscriber_as_user_properties() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut mq = blocking(|| mqtt5_subscriber(addr, "dl-sub", "dead/letters"));

    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    declare_args(
        &ch,
        "work2",
        QueueDeclareOptions::default(),
        args(&[
            ("x-dead-letter-exchange", text("amq.topic")),
            ("x-dead-letter-routing-key", text("dead.letters")),
        ]),
    )
    .await;
    publish_and_reject(&ch, "work2", "bad news").await;

    let p = blocking(|| next_publish5(&mut mq, mqtt::STEP));
    assert_eq!(p.topic, "dead/letters", "{p:?}");
    assert_eq!(p.payload, b"bad news", "{p:?}");
    assert_mqtt_death(&p, "work2", "rejected");
    blocking(|| mq.disconnect());
}

// Time-To-Live guide: a message whose queue TTL passes is dead-lettered
// (reason "expired") promptly, with no consumer on the queue; an MQTT 5
// subscriber of the dead-letter topic gets it about the TTL (300 ms) after
// the publish — not before 250 ms, well within 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expiry_dead_letters_to_mqtt5_subscriber_on_time() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut mq = blocking(|| mqtt5_subscriber(addr, "ttl-sub", "expired/letters"));

    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    declare_args(
        &ch,
        "ttl-work",
        QueueDeclareOptions::default(),
        args(&[
            ("x-message-ttl", int(300)),
            ("x-dead-letter-exchange", text("amq.topic")),
            ("x-dead-letter-routing-key", text("expired.letters")),
        ]),
    )
    .await;
    let start = Instant::now();
    publish_acked(&ch, "ttl-work", "stale", BasicProperties::default()).await;
    let p = blocking(|| {
        let left = Duration::from_secs(3).saturating_sub(start.elapsed());
        next_publish5(&mut mq, left)
    });
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "dead-lettered after {took:?}, before the 300 ms TTL"
    );
    assert_eq!(p.topic, "expired/letters", "{p:?}");
    assert_eq!(p.payload, b"stale", "{p:?}");
    assert_mqtt_death(&p, "ttl-work", "expired");
    assert_eq!(
        ready(&ch, "ttl-work").await,
        0,
        "gone from the source queue"
    );
    blocking(|| mq.disconnect());
}

// ---------------------------------------------------------------------------
// STOMP consumer priorities

/// Two STOMP subscribers of one queue, `x-priority` 10 and 1 (as RabbitMQ's
/// plugin passes the header on), one unacknowledged message each at most:
/// the high-priority one is served first, the low one only while the high
/// one has no credit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_x_priority_serves_the_higher_subscriber_first() {
    let broker = Broker::start();
    let addr = broker.stomp_addr();
    tokio::task::block_in_place(|| {
        let sub = |prio: &str| {
            let mut c = stomp::Client::connect(addr, stomp::Version::V12);
            c.receipt(
                "SUBSCRIBE",
                &[
                    ("id", "s"),
                    ("destination", "/queue/prio-stomp"),
                    ("ack", "client-individual"),
                    ("prefetch-count", "1"),
                    ("x-priority", prio),
                ],
                b"",
            );
            c
        };
        // The low one subscribes first: order of attachment cannot explain
        // the result.
        let mut low = sub("1");
        let mut high = sub("10");
        let mut p = stomp::Client::connect(addr, stomp::Version::V12);
        for b in ["m1", "m2", "m3"] {
            p.receipt(
                "SEND",
                &[("destination", "/queue/prio-stomp")],
                b.as_bytes(),
            );
        }
        let h1 = high.message();
        assert_eq!(h1.body, b"m1");
        let l1 = low.message();
        assert_eq!(l1.body, b"m2");
        high.assert_quiet(stomp::QUIET);
        high.receipt("ACK", &[("id", h1.header("ack"))], b"");
        let h2 = high.message();
        assert_eq!(h2.body, b"m3");
        low.assert_quiet(stomp::QUIET);
    });
}

// ---------------------------------------------------------------------------
// x-expires and passive declares

/// A passive declare renews an `x-expires` lease, as RabbitMQ's `stat`
/// does: polled every 250 ms a queue with `x-expires` 700 outlives several
/// leases; left alone it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_renews_x_expires() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    w!(ch.queue_declare(
        "lease".into(),
        QueueDeclareOptions::default(),
        args(&[("x-expires", int(700))])
    ))
    .expect("declare");
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2100) {
        w!(ch.queue_declare("lease".into(), passive, FieldTable::default()))
            .expect("still there while polled");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let gone = w!(ch.queue_declare("lease".into(), passive, FieldTable::default()));
    assert!(gone.is_err(), "queue outlived its lease: {gone:?}");
}
