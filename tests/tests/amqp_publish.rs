//! Publishing features: mandatory returns, publisher confirms and
//! transactions.

#[macro_use]
mod common;

use common::*;
use lapin::options::{BasicAckOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::{BasicProperties, Confirmation};
use switchyard_tests::Broker;

const NO_ROUTE: u16 = 312;

fn mandatory() -> BasicPublishOptions {
    BasicPublishOptions {
        mandatory: true,
        immediate: false,
    }
}

// A mandatory message that no queue receives comes back as basic.return
// with 312 NO_ROUTE (before the confirm, which is still an ack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_unroutable_is_returned_with_312() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let confirm = t!(ch.basic_publish(
        "amq.direct".into(),
        "nobody-home".into(),
        mandatory(),
        b"boomerang",
        BasicProperties::default().with_message_id("m-1".into())
    ))
    .expect("publish");
    let c = t!(confirm).expect("confirm");
    assert!(c.is_ack(), "unroutable messages are still acked: {c:?}");
    let ret = c.take_message().expect("a basic.return");
    assert_eq!(ret.reply_code, NO_ROUTE);
    assert_eq!(ret.delivery.exchange.as_str(), "amq.direct");
    assert_eq!(ret.delivery.routing_key.as_str(), "nobody-home");
    assert_eq!(ret.delivery.data, b"boomerang");
    assert_eq!(
        ret.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("m-1")
    );

    // Also via the default exchange with an unknown queue name.
    let confirm = t!(ch.basic_publish(
        "".into(),
        "no-such-queue".into(),
        mandatory(),
        b"again",
        BasicProperties::default()
    ))
    .expect("publish");
    let ret = t!(confirm)
        .expect("confirm")
        .take_message()
        .expect("return");
    assert_eq!(ret.reply_code, NO_ROUTE);
}

// A mandatory message that is routed is not returned; a non-mandatory
// unroutable one is silently dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routable_mandatory_and_unroutable_plain_are_not_returned() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, "there", QueueDeclareOptions::default()).await;
    let confirm = t!(ch.basic_publish(
        "".into(),
        "there".into(),
        mandatory(),
        b"routed",
        BasicProperties::default()
    ))
    .expect("publish");
    assert_eq!(t!(confirm).expect("confirm"), Confirmation::Ack(None));
    let c = publish_with(&ch, "", "not-there", b"dropped", BasicProperties::default()).await;
    assert_eq!(c, Confirmation::Ack(None));
    let returned = t!(ch.wait_for_confirms()).expect("wait_for_confirms");
    assert!(returned.is_empty(), "nothing returned: {returned:?}");
    assert_eq!(drain(&ch, "there").await, ["routed"]);
}

// confirm.select: every publish is acked; confirms can be awaited
// individually or all at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_confirms_ack_every_message() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    assert!(ch.status().confirm());
    declare(&ch, "confirmed", QueueDeclareOptions::durable()).await;
    let mut pending = Vec::new();
    for i in 0..200 {
        let props = if i % 2 == 0 {
            persistent()
        } else {
            transient()
        };
        let confirm = t!(ch.basic_publish(
            "".into(),
            "confirmed".into(),
            BasicPublishOptions::default(),
            format!("{i}").as_bytes(),
            props
        ))
        .expect("publish");
        pending.push(confirm);
    }
    for (i, confirm) in pending.into_iter().enumerate() {
        assert_eq!(
            t!(confirm).expect("confirm"),
            Confirmation::Ack(None),
            "msg {i}"
        );
    }
    for i in 200..210 {
        t!(ch.basic_publish(
            "".into(),
            "confirmed".into(),
            BasicPublishOptions::default(),
            format!("{i}").as_bytes(),
            persistent()
        ))
        .expect("publish");
    }
    let returned = t!(ch.wait_for_confirms()).expect("wait_for_confirms");
    assert!(returned.is_empty());
    let q = declare(
        &ch,
        "confirmed",
        QueueDeclareOptions {
            passive: true,
            durable: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(q.message_count(), 210);
}

// tx.rollback discards the publishes of the transaction; tx.commit makes
// them visible, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_commit_and_rollback_of_publishes() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let reader = channel(&conn).await;
    declare(&ch, "txq", QueueDeclareOptions::default()).await;
    t!(ch.tx_select()).expect("tx.select");

    for body in ["r1", "r2", "r3"] {
        publish(&ch, "", "txq", body.as_bytes()).await;
    }
    // Uncommitted publishes are invisible.
    assert!(get(&reader, "txq").await.is_none());
    t!(ch.tx_rollback()).expect("tx.rollback");
    assert!(get(&reader, "txq").await.is_none(), "rolled back");

    for body in ["c1", "c2"] {
        publish(&ch, "", "txq", body.as_bytes()).await;
    }
    t!(ch.tx_commit()).expect("tx.commit");
    assert_eq!(drain(&reader, "txq").await, ["c1", "c2"]);

    // The channel stays transactional: the next batch also waits for commit.
    publish(&ch, "", "txq", b"c3").await;
    assert!(get(&reader, "txq").await.is_none());
    t!(ch.tx_commit()).expect("tx.commit");
    assert_eq!(drain(&reader, "txq").await, ["c3"]);
}

// Acks inside a transaction take effect on commit; on rollback the
// messages stay unacked (RabbitMQ does not requeue them on rollback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_acks_apply_on_commit() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let feed = confirm_channel(&conn).await;
    declare(&feed, "txa", QueueDeclareOptions::default()).await;
    publish(&feed, "", "txa", b"a").await;
    publish(&feed, "", "txa", b"b").await;

    let ch = channel(&conn).await;
    t!(ch.tx_select()).expect("tx.select");
    let a = get(&ch, "txa").await.expect("a");
    let b = get(&ch, "txa").await.expect("b");
    t!(ch.basic_ack(a.delivery.delivery_tag, BasicAckOptions::default())).expect("ack a");
    t!(ch.tx_rollback()).expect("tx.rollback");
    t!(ch.basic_ack(b.delivery.delivery_tag, BasicAckOptions::default())).expect("ack b");
    t!(ch.tx_commit()).expect("tx.commit");
    // Closing the channel requeues what is still unacked: only `a`.
    t!(ch.close(200, "done".into())).expect("close");
    let left = drain(&feed, "txa").await;
    assert_eq!(left, ["a"]);
}
