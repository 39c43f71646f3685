//! Channel-level errors: the broker closes the channel with the reply code
//! RabbitMQ uses, and the connection (and other channels) keep working.

#[macro_use]
mod common;

use common::*;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, ExchangeKind};
use switchyard_tests::Broker;

const ACCESS_REFUSED: u16 = 403;
const NOT_FOUND: u16 = 404;
const RESOURCE_LOCKED: u16 = 405;
const PRECONDITION_FAILED: u16 = 406;

/// After a channel error the channel is unusable but the connection is not.
async fn assert_channel_closed(ch: &Channel) {
    // lapin processes channel.close before the failed call returns, but
    // give it a moment in case the close-ok is still being written.
    for _ in 0..50 {
        if !ch.status().connected() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!ch.status().connected(), "channel should be closed");
}

/// Asserts that basic.consume is answered with a channel close carrying
/// `code` instead of consume-ok. If consume-ok came first, reports what
/// followed it (e.g. a late channel.close).
async fn assert_consume_refused(ch: &Channel, queue: &str, opts: BasicConsumeOptions, code: u16) {
    match Sub::start(ch, queue, opts).await {
        Err(e) => assert_eq!(reply_code(&e), Some(code), "consume {queue:?}: {e:?}"),
        Ok(mut sub) => {
            let after = match sub.next_within(QUIET).await {
                Some(Err(e)) => format!("then channel closed with {:?}", reply_code(&e)),
                other => format!("then {other:?}"),
            };
            panic!("consume {queue:?}: expected refusal {code}, got consume-ok; {after}");
        }
    }
}

// queue.declare(passive) of a missing queue closes the channel with 404
// NOT_FOUND; the connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_missing_queue_is_404() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let res = t!(ch.queue_declare(
        "no-such-queue".into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default()
    ));
    assert_code(res, NOT_FOUND);
    assert_channel_closed(&ch).await;
    assert_round_trip(&conn).await;
}

// queue.delete(if-empty) of a queue holding messages fails with 406 and
// leaves the queue and its messages alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_empty_on_nonempty_queue_is_406() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, "full", QueueDeclareOptions::default()).await;
    publish(&ch, "", "full", b"keep me").await;
    let del = channel(&conn).await;
    let res = t!(del.queue_delete(
        "full".into(),
        QueueDeleteOptions {
            if_empty: true,
            ..Default::default()
        }
    ));
    assert_code(res, PRECONDITION_FAILED);
    assert_eq!(drain(&ch, "full").await, ["keep me"]);
}

// queue.delete(if-unused) of a queue with a consumer fails with 406.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused_on_consumed_queue_is_406() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, "used", QueueDeclareOptions::default()).await;
    let mut sub = Sub::start(&ch, "used", BasicConsumeOptions::default())
        .await
        .expect("consume");
    let del = channel(&conn).await;
    let res = t!(del.queue_delete(
        "used".into(),
        QueueDeleteOptions {
            if_unused: true,
            ..Default::default()
        }
    ));
    assert_code(res, PRECONDITION_FAILED);
    publish(&ch, "", "used", b"still here").await;
    assert_eq!(sub.next_acked().await, "still here");
}

// Redeclaring a queue with a different `durable` flag is an inequivalent
// declaration: 406 PRECONDITION_FAILED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_different_durable_is_406() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare(&ch, "dq", QueueDeclareOptions::durable()).await;
    // Identical redeclaration is fine.
    declare(&ch, "dq", QueueDeclareOptions::durable()).await;
    let res = t!(ch.queue_declare(
        "dq".into(),
        QueueDeclareOptions::default(),
        FieldTable::default()
    ));
    assert_code(res, PRECONDITION_FAILED);
    assert_channel_closed(&ch).await;
    assert_round_trip(&conn).await;
}

// basic.consume on a queue that does not exist: 404 NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_from_missing_queue_is_404() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    assert_consume_refused(&ch, "ghost", BasicConsumeOptions::default(), NOT_FOUND).await;
    assert_round_trip(&conn).await;
}

// An exclusive queue can only be used by its declaring connection; others
// get 405 RESOURCE_LOCKED (declare, consume, get).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_from_other_connection_is_405() {
    let broker = Broker::start();
    let owner = connect(&broker).await;
    let owner_ch = channel(&owner).await;
    declare(
        &owner_ch,
        "mine",
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
    )
    .await;
    let other = connect(&broker).await;

    let ch = channel(&other).await;
    assert_consume_refused(&ch, "mine", BasicConsumeOptions::default(), RESOURCE_LOCKED).await;

    let ch = channel(&other).await;
    let res = t!(ch.queue_declare(
        "mine".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default()
    ));
    assert_code(res, RESOURCE_LOCKED);

    let ch = channel(&other).await;
    let res = t!(ch.basic_get("mine".into(), Default::default()));
    assert_code(res, RESOURCE_LOCKED);

    // The owner still uses it freely.
    publish(&owner_ch, "", "mine", b"ok").await;
    assert_eq!(drain(&owner_ch, "mine").await, ["ok"]);
    assert_round_trip(&other).await;
}

// Acking the same delivery tag twice: the second ack names an unknown
// delivery tag, so the channel is closed with 406 PRECONDITION_FAILED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_ack_is_406() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = channel(&conn).await;
    declare(&pub_ch, "twice", QueueDeclareOptions::default()).await;
    let mut sub = Sub::start(&ch, "twice", BasicConsumeOptions::default())
        .await
        .expect("consume");
    publish(&pub_ch, "", "twice", b"x").await;
    let d = sub.next().await;
    // Raw channel acks: lapin's Acker would refuse the second one locally.
    t!(ch.basic_ack(d.delivery_tag, BasicAckOptions::default())).expect("first ack");
    t!(ch.basic_ack(d.delivery_tag, BasicAckOptions::default())).expect("second ack sent");
    assert_eq!(sub.expect_error_code().await, PRECONDITION_FAILED);
    assert_channel_closed(&ch).await;
    // The first ack took effect: the message is gone.
    assert!(get(&pub_ch, "twice").await.is_none());
    assert_round_trip(&conn).await;
}

// basic.publish to an exchange that does not exist closes the channel with
// 404 NOT_FOUND (asynchronously: the pending confirm fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_missing_exchange_is_404() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let mut probe = probe(&ch).await;
    let confirm = t!(ch.basic_publish(
        "no-such-exchange".into(),
        "k".into(),
        BasicPublishOptions::default(),
        b"lost",
        BasicProperties::default()
    ))
    .expect("publish sent");
    assert_code(t!(confirm), NOT_FOUND);
    assert_eq!(probe.expect_error_code().await, NOT_FOUND);
    assert_channel_closed(&ch).await;
    assert_round_trip(&conn).await;
}

// Names starting with "amq." are reserved: declaring such an exchange or
// queue is refused with 403 ACCESS_REFUSED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declaring_amq_prefixed_names_is_403() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let res = t!(ch.exchange_declare(
        "amq.foo".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default()
    ));
    assert_code(res, ACCESS_REFUSED);

    let ch = channel(&conn).await;
    let res = t!(ch.queue_declare(
        "amq.bar".into(),
        QueueDeclareOptions::default(),
        FieldTable::default()
    ));
    assert_code(res, ACCESS_REFUSED);

    // Passive declares of the predeclared amq.* exchanges succeed.
    let ch = channel(&conn).await;
    for (name, kind) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
    ] {
        t!(ch.exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default()
        ))
        .unwrap_or_else(|e| panic!("passive declare of {name}: {e}"));
    }
}

fn exclusive() -> BasicConsumeOptions {
    BasicConsumeOptions {
        exclusive: true,
        ..Default::default()
    }
}

// An exclusive consumer must be the queue's only consumer: asking for one
// while another consumer exists is refused with 403 ACCESS_REFUSED
// (RabbitMQ: check_exclusive_access(none, true, _) -> in_use unless unused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_consume_on_queue_with_consumer_is_403() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare(&ch, "shared", QueueDeclareOptions::default()).await;
    let _plain = Sub::start(&ch, "shared", BasicConsumeOptions::default())
        .await
        .expect("plain consumer");
    let ch2 = channel(&conn).await;
    assert_consume_refused(&ch2, "shared", exclusive(), ACCESS_REFUSED).await;
    assert!(ch.status().connected(), "the first channel is unaffected");
}

// Any consumer next to an exclusive one is refused with 403 ACCESS_REFUSED
// ("queue ... in exclusive use").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_next_to_exclusive_consumer_is_403() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare(&ch, "solo", QueueDeclareOptions::default()).await;
    let _solo = Sub::start(&ch, "solo", exclusive())
        .await
        .expect("exclusive consumer on an unused queue");
    let ch2 = channel(&conn).await;
    assert_consume_refused(&ch2, "solo", BasicConsumeOptions::default(), ACCESS_REFUSED).await;
    let ch3 = channel(&conn).await;
    assert_consume_refused(&ch3, "solo", exclusive(), ACCESS_REFUSED).await;
    assert!(ch.status().connected(), "the first channel is unaffected");
}
