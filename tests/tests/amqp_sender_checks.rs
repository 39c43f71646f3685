//! What RabbitMQ checks about a publisher and a consumer beyond routing:
//! sender-selected distribution (`CC` / `BCC` headers), the `user-id`
//! property (406 unless it names the connection's user), and the consumer
//! acknowledgement timeout (`server.consumer_timeout_ms`: a delivery left
//! unacknowledged closes its channel with 406 and is requeued). lapin
//! against a real `switchyard` process; every wait is bounded.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use switchyard_tests::Broker;

const STEP: Duration = Duration::from_secs(10);

async fn amqp(broker: &Broker) -> (Connection, Channel) {
    let conn = common::connect(broker).await;
    let ch = common::channel(&conn).await;
    (conn, ch)
}

async fn declare(ch: &Channel, name: &str) {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("declare");
}

/// The next message of `queue` (no-ack), if any.
async fn get(ch: &Channel, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    ch.basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
}

fn keys(ks: &[&str]) -> AMQPValue {
    AMQPValue::FieldArray(FieldArray::from(
        ks.iter()
            .map(|k| AMQPValue::LongString((*k).into()))
            .collect::<Vec<_>>(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cc_and_bcc_reach_more_queues_and_bcc_is_removed() {
    let broker = Broker::start();
    let (_conn, ch) = amqp(&broker).await;
    for q in ["to", "cc", "bcc", "bystander"] {
        declare(&ch, q).await;
    }
    let mut headers = FieldTable::default();
    headers.insert("CC".into(), keys(&["cc"]));
    headers.insert("BCC".into(), keys(&["bcc"]));
    ch.basic_publish(
        "".into(),
        "to".into(),
        BasicPublishOptions::default(),
        b"hello",
        BasicProperties::default().with_headers(headers),
    )
    .await
    .expect("publish");
    for q in ["to", "cc", "bcc"] {
        let m = get(&ch, q)
            .await
            .unwrap_or_else(|| panic!("nothing in {q}"));
        assert_eq!(m.delivery.data, b"hello");
        let h = m.delivery.properties.headers().clone().unwrap_or_default();
        assert!(h.inner().contains_key("CC"), "{q}: CC is kept");
        assert!(!h.inner().contains_key("BCC"), "{q}: BCC is removed");
    }
    assert!(get(&ch, "bystander").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_id_must_name_the_connections_user() {
    let broker = Broker::start();
    let (conn, ch) = amqp(&broker).await;
    declare(&ch, "uid").await;
    ch.basic_publish(
        "".into(),
        "uid".into(),
        BasicPublishOptions::default(),
        b"mine",
        BasicProperties::default().with_user_id("guest".into()),
    )
    .await
    .expect("publish as guest");
    assert!(get(&ch, "uid").await.is_some(), "own user-id accepted");
    let _ = ch
        .basic_publish(
            "".into(),
            "uid".into(),
            BasicPublishOptions::default(),
            b"forged",
            BasicProperties::default().with_user_id("admin".into()),
        )
        .await;
    // The channel is closed with 406; the next call on it fails saying so.
    let err = tokio::time::timeout(STEP, ch.basic_get("uid".into(), BasicGetOptions::default()))
        .await
        .expect("answer in time")
        .expect_err("channel closed");
    let text = err.to_string();
    assert!(text.contains("PRECONDITION_FAILED"), "{text}");
    assert!(text.contains("user_id property set to 'admin'"), "{text}");
    let ch2 = conn.create_channel().await.expect("connection still open");
    assert!(
        get(&ch2, "uid").await.is_none(),
        "the forged message was not routed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_delivery_times_out_and_is_requeued() {
    let broker = Broker::start_with_config("[server]\nconsumer_timeout_ms = 400\n");
    let (conn, ch) = amqp(&broker).await;
    declare(&ch, "slow").await;
    ch.basic_publish(
        "".into(),
        "slow".into(),
        BasicPublishOptions::default(),
        b"job",
        BasicProperties::default(),
    )
    .await
    .expect("publish");
    let mut consumer = ch
        .basic_consume(
            "slow".into(),
            "sleepy".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let first = tokio::time::timeout(STEP, consumer.next())
        .await
        .expect("delivery in time")
        .expect("a delivery")
        .expect("ok delivery");
    assert!(!first.redelivered);
    let started = Instant::now();
    // Never acked: the channel closes with 406 after about 400 ms.
    let deadline = started + STEP;
    while ch.status().connected() {
        assert!(
            Instant::now() < deadline,
            "channel still open after {STEP:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed too early: {:?}",
        started.elapsed()
    );
    // The message went back, redelivered.
    let ch2 = conn.create_channel().await.expect("connection still open");
    let again = get(&ch2, "slow").await.expect("requeued");
    assert!(again.delivery.redelivered);
    assert_eq!(again.delivery.data, b"job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_in_time_is_never_timed_out() {
    let broker = Broker::start_with_config("[server]\nconsumer_timeout_ms = 400\n");
    let (_conn, ch) = amqp(&broker).await;
    declare(&ch, "quick").await;
    let mut consumer = ch
        .basic_consume(
            "quick".into(),
            "fast".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    for i in 0..6u8 {
        ch.basic_publish(
            "".into(),
            "quick".into(),
            BasicPublishOptions::default(),
            &[i],
            BasicProperties::default(),
        )
        .await
        .expect("publish");
        let d = tokio::time::timeout(STEP, consumer.next())
            .await
            .expect("delivery in time")
            .expect("a delivery")
            .expect("ok delivery");
        tokio::time::sleep(Duration::from_millis(150)).await;
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    assert!(
        ch.status().connected(),
        "a channel acking in time was closed"
    );
}
