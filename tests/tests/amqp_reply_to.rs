//! Direct reply-to (`amq.rabbitmq.reply-to`, as RabbitMQ): a requester
//! consumes the pseudo-queue with no-ack and publishes with that reply-to;
//! a responder on AMQP or STOMP answers through the default exchange and
//! the answer reaches the requester's channel.

#[macro_use]
mod common;
#[macro_use]
#[path = "common/stomp.rs"]
mod stomp;

use common::{Sub, channel, connect, declare, get, publish_with};
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use std::time::Duration;
use switchyard_tests::Broker;

const REPLY_TO: &str = "amq.rabbitmq.reply-to";

async fn requester(ch: &lapin::Channel) -> Sub {
    let opts = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    Sub::start(ch, REPLY_TO, opts)
        .await
        .expect("consume amq.rabbitmq.reply-to")
}

fn request_props(corr: &str) -> BasicProperties {
    BasicProperties::default()
        .with_reply_to(REPLY_TO.into())
        .with_correlation_id(corr.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_responder_answers_direct_reply_to() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let client = channel(&conn).await;
    let server = channel(&conn).await;
    declare(&server, "rpc", QueueDeclareOptions::default()).await;
    let mut replies = requester(&client).await;
    publish_with(&client, "", "rpc", b"ping", request_props("c-1")).await;

    let req = get(&server, "rpc").await.expect("request");
    let reply_to = req
        .delivery
        .properties
        .reply_to()
        .as_ref()
        .map(|r| r.as_str().to_owned())
        .expect("reply_to");
    assert!(
        reply_to.starts_with("amq.rabbitmq.reply-to."),
        "reply_to rewritten: {reply_to}"
    );
    let answer = BasicProperties::default().with_correlation_id("c-1".into());
    publish_with(&server, "", &reply_to, b"pong", answer).await;
    let d = replies.next().await;
    assert_eq!(&d.data[..], b"pong");
    assert_eq!(
        d.properties.correlation_id().as_ref().map(|c| c.as_str()),
        Some("c-1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_responder_answers_direct_reply_to() {
    let broker = Broker::start();
    let stomp = broker.stomp_addr();
    let conn = connect(&broker).await;
    let client = channel(&conn).await;
    let mut replies = requester(&client).await;
    declare(&client, "stomp-svc", QueueDeclareOptions::default()).await;

    // The responder subscribes over STOMP and answers to the reply-to it
    // is given (`/reply-queue/<queue>`).
    let reply = tokio::task::spawn_blocking(move || {
        let mut s = stomp::Client::connect(stomp, stomp::Version::V12);
        s.receipt(
            "SUBSCRIBE",
            &[("destination", "/amq/queue/stomp-svc"), ("id", "0")],
            b"",
        );
        let req = s.message();
        let reply_to = req.header("reply-to").to_owned();
        s.receipt(
            "SEND",
            &[("destination", &reply_to), ("correlation-id", "c-2")],
            b"pong",
        );
        reply_to
    });
    // Let the STOMP subscription exist before the request.
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish_with(&client, "", "stomp-svc", b"ping", request_props("c-2")).await;
    let reply_to = reply.await.expect("responder");
    assert!(
        reply_to.starts_with("/reply-queue/amq.rabbitmq.reply-to."),
        "{reply_to}"
    );
    let d = replies.next().await;
    assert_eq!(&d.data[..], b"pong");
    assert_eq!(
        d.properties.correlation_id().as_ref().map(|c| c.as_str()),
        Some("c-2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_to_without_the_consumer_is_refused() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let publish = ch
        .basic_publish(
            "".into(),
            "anywhere".into(),
            Default::default(),
            b"x",
            request_props("c-3"),
        )
        .await;
    // The channel is closed with 406 PRECONDITION_FAILED.
    let closed = match publish {
        Err(e) => e.to_string(),
        Ok(_) => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            format!("{:?}", ch.status())
        }
    };
    assert!(!ch.status().connected(), "channel still open: {closed}");
    // A declare of a queue with the reserved prefix is refused (403).
    let ch = channel(&conn).await;
    let r = ch
        .queue_declare(
            "amq.rabbitmq.reply-to.mine".into(),
            QueueDeclareOptions::default(),
            Default::default(),
        )
        .await;
    assert!(r.is_err(), "reserved name declared");
}

/// The reply queue goes with its consumer; consuming the pseudo-queue again
/// on the channel gives a working one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_consumer_can_be_cancelled_and_started_again() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let client = channel(&conn).await;
    let server = channel(&conn).await;
    declare(&server, "rpc2", QueueDeclareOptions::default()).await;
    for round in ["first", "second"] {
        let replies = requester(&client).await;
        publish_with(&client, "", "rpc2", round.as_bytes(), request_props(round)).await;
        let req = get(&server, "rpc2").await.expect("request");
        let reply_to = req
            .delivery
            .properties
            .reply_to()
            .as_ref()
            .map(|r| r.as_str().to_owned())
            .expect("reply_to");
        publish_with(
            &server,
            "",
            &reply_to,
            round.as_bytes(),
            BasicProperties::default(),
        )
        .await;
        let mut replies = replies;
        assert_eq!(&replies.next().await.data[..], round.as_bytes(), "{round}");
        t!(client.basic_cancel(replies.consumer.tag().as_str().into(), Default::default()))
            .expect("cancel");
    }
}
