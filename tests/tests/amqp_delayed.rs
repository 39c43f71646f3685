//! Delayed messages as the RabbitMQ delayed-message plugin offers them: an
//! exchange of type `x-delayed-message` routes like its `x-delayed-type`
//! and holds a message with an `x-delay` header (ms) until the delay has
//! passed — also across a `kill -9` for a persistent message confirmed on a
//! durable exchange. lapin against a real `switchyard`; waits are bounded.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use switchyard_tests::Broker;

const STEP: Duration = Duration::from_secs(10);

async fn amqp(broker: &Broker) -> (Connection, Channel) {
    let conn = common::connect(broker).await;
    let ch = common::channel(&conn).await;
    (conn, ch)
}

fn delayed_args(kind: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-delayed-type".into(), AMQPValue::LongString(kind.into()));
    args
}

/// A delayed exchange `x` of `kind` with queue `q` bound by `key`.
async fn setup(ch: &Channel, x: &str, kind: &str, q: &str, key: &str, durable: bool) {
    ch.exchange_declare(
        x.into(),
        ExchangeKind::Custom("x-delayed-message".into()),
        ExchangeDeclareOptions {
            durable,
            ..Default::default()
        },
        delayed_args(kind),
    )
    .await
    .expect("declare delayed exchange");
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            durable,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare queue");
    ch.queue_bind(
        q.into(),
        x.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
}

fn delay(ms: i32) -> BasicProperties {
    let mut h = FieldTable::default();
    h.insert("x-delay".into(), AMQPValue::LongInt(ms));
    BasicProperties::default().with_headers(h)
}

async fn get(ch: &Channel, q: &str) -> Option<Vec<u8>> {
    ch.basic_get(q.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .map(|m| m.delivery.data)
}

/// Polls `q` until a message arrives; returns it and when.
async fn arrival(ch: &Channel, q: &str, within: Duration) -> (Vec<u8>, Instant) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(body) = get(ch, q).await {
            return (body, Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "nothing in {q} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_delay_holds_the_message_until_due() {
    let broker = Broker::start();
    let (_conn, ch) = amqp(&broker).await;
    setup(&ch, "later", "direct", "later-q", "k", false).await;
    let sent = Instant::now();
    ch.basic_publish(
        "later".into(),
        "k".into(),
        BasicPublishOptions::default(),
        b"in a while",
        delay(600),
    )
    .await
    .expect("publish");
    ch.basic_publish(
        "later".into(),
        "k".into(),
        BasicPublishOptions::default(),
        b"now",
        BasicProperties::default(),
    )
    .await
    .expect("publish");
    // Without x-delay: routed at once.
    let (now, _) = arrival(&ch, "later-q", STEP).await;
    assert_eq!(now, b"now");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(&ch, "later-q").await, None, "released early");
    let (body, at) = arrival(&ch, "later-q", STEP).await;
    assert_eq!(body, b"in a while");
    let waited = at - sent;
    assert!(
        waited >= Duration::from_millis(550),
        "released after {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "released after {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_topic_exchange_routes_by_pattern_and_order_follows_due_time() {
    let broker = Broker::start();
    let (_conn, ch) = amqp(&broker).await;
    setup(&ch, "later-topic", "topic", "later-t", "jobs.*", false).await;
    for (key, ms, body) in [
        ("jobs.b", 500, &b"second"[..]),
        ("jobs.a", 200, &b"first"[..]),
        ("other.x", 100, &b"unrouted"[..]),
    ] {
        ch.basic_publish(
            "later-topic".into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            delay(ms),
        )
        .await
        .expect("publish");
    }
    let (a, _) = arrival(&ch, "later-t", STEP).await;
    let (b, _) = arrival(&ch, "later-t", STEP).await;
    assert_eq!(
        (a.as_slice(), b.as_slice()),
        (&b"first"[..], &b"second"[..])
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&ch, "later-t").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_delayed_message_survives_kill_9() {
    let mut broker = Broker::start();
    let sent;
    {
        let (conn, ch) = amqp(&broker).await;
        setup(&ch, "durable-later", "direct", "durable-later-q", "k", true).await;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        sent = Instant::now();
        let confirm = ch
            .basic_publish(
                "durable-later".into(),
                "k".into(),
                BasicPublishOptions::default(),
                b"kept",
                delay(2500).with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "{confirm:?}");
        drop(conn);
    }
    broker.kill();
    broker.restart();
    let (_conn, ch) = amqp(&broker).await;
    assert_eq!(get(&ch, "durable-later-q").await, None, "released early");
    let (body, at) = arrival(&ch, "durable-later-q", STEP).await;
    assert_eq!(body, b"kept");
    let waited = at - sent;
    assert!(
        waited >= Duration::from_millis(2400),
        "released after {waited:?}"
    );
    // Released once: the stored copy is gone, a second restart brings
    // nothing back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.stop();
    broker.restart();
    let (_conn, ch) = amqp(&broker).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&ch, "durable-later-q").await, None, "released twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_type_is_checked() {
    let broker = Broker::start();
    let (conn, _ch) = amqp(&broker).await;
    for (kind, args) in [
        ("x-delayed-message", FieldTable::default()),
        ("x-delayed-message", delayed_args("x-nope")),
        ("direct", delayed_args("direct")),
    ] {
        let ch = conn.create_channel().await.expect("channel");
        let err = ch
            .exchange_declare(
                "bad-delayed".into(),
                ExchangeKind::Custom(kind.into()),
                ExchangeDeclareOptions::default(),
                args,
            )
            .await
            .expect_err(kind);
        assert!(
            err.to_string().contains("PRECONDITION_FAILED"),
            "{kind}: {err}"
        );
    }
}
