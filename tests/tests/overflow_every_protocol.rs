//! `x-overflow: reject-publish` as each protocol's publisher hears it: a
//! full queue refuses a message, and the publisher is told so — AMQP by a
//! confirm nack (in amqp_queue_arguments.rs), MQTT 5 by PUBACK / PUBREC
//! 0x97 (Quota exceeded), STOMP by an ERROR for a SEND that asked for a
//! RECEIPT. An MQTT 3.1.1 client, which has no way to hear it, gets its
//! plain PUBACK (the message is dropped), as RabbitMQ does.
//!
//! The full queue is declared over AMQP and bound to `amq.topic`, where
//! MQTT topic `full/<n>` and STOMP `/topic/full.<n>` publish.

#[macro_use]
#[path = "common/stomp.rs"]
mod stomp;

use stomp::amqp;
#[path = "common/mqtt.rs"]
mod mqtt;

use lapin::Channel;
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use mqtt::{Client as Mqtt, PUBACK, PUBREC, connect, connect5, publish, publish5};
use stomp::{Client as Stomp, Version};
use switchyard_tests::Broker;

/// Declares queue `name` holding at most one message, refusing more, bound
/// to `amq.topic` with `key`.
async fn full_queue(ch: &Channel, name: &str, key: &str) {
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(1));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    w!(ch.queue_declare(name.into(), QueueDeclareOptions::default(), args)).expect("declare");
    w!(ch.queue_bind(
        name.into(),
        "amq.topic".into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default()
    ))
    .expect("bind");
}

/// The bodies in `queue`, drained.
async fn bodies(ch: &Channel, queue: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(m) =
        w!(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true })).expect("get")
    {
        out.push(m.delivery.data.clone());
    }
    out
}

/// A PUBACK / PUBREC's reason code (0 when the short form omits it).
fn reason(p: &mqtt::Packet) -> u8 {
    p.body.get(2).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_publisher_gets_quota_exceeded() {
    let broker = Broker::start();
    let (_conn, ch) = amqp(&broker).await;
    full_queue(&ch, "full-mqtt5", "full.5").await;
    let addr = broker.mqtt_addr();
    let acks = tokio::task::block_in_place(|| {
        let (mut c, _) = Mqtt::connect5(addr, &connect5("overflow-5", true, 60, &[]));
        c.send(&publish5("full/5", 1, 1, b"first"));
        let a1 = c.expect_packet();
        c.send(&publish5("full/5", 1, 2, b"second"));
        let a2 = c.expect_packet();
        c.send(&publish5("full/5", 2, 3, b"third"));
        let a3 = c.expect_packet();
        [a1, a2, a3]
    });
    assert_eq!(
        (acks[0].first, reason(&acks[0])),
        (PUBACK, 0x00),
        "{acks:02x?}"
    );
    assert_eq!(
        (acks[1].first, reason(&acks[1])),
        (PUBACK, 0x97),
        "{acks:02x?}"
    );
    assert_eq!(
        (acks[2].first, reason(&acks[2])),
        (PUBREC, 0x97),
        "{acks:02x?}"
    );
    assert_eq!(bodies(&ch, "full-mqtt5").await, [b"first".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt311_publisher_gets_a_plain_puback_and_the_message_is_dropped() {
    let broker = Broker::start();
    let (_conn, ch) = amqp(&broker).await;
    full_queue(&ch, "full-mqtt3", "full.3").await;
    let addr = broker.mqtt_addr();
    let acks = tokio::task::block_in_place(|| {
        let sock = std::net::TcpStream::connect(addr).expect("connect");
        let mut c = Mqtt::over(sock);
        c.send(&connect("overflow-3", true, 60));
        let connack = c.expect_packet();
        assert_eq!(connack.body, [0, 0], "{connack:02x?}");
        c.send(&publish("full/3", 1, 1, b"first"));
        let a1 = c.expect_packet();
        c.send(&publish("full/3", 1, 2, b"second"));
        let a2 = c.expect_packet();
        [a1, a2]
    });
    for a in &acks {
        assert_eq!(a.wire().len(), 4, "3.1.1 PUBACK: {a:02x?}");
        assert_eq!(a.first, PUBACK);
    }
    assert_eq!(bodies(&ch, "full-mqtt3").await, [b"first".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_send_with_receipt_into_a_full_queue_is_an_error() {
    let broker = Broker::start();
    let (_conn, ch) = amqp(&broker).await;
    full_queue(&ch, "full-stomp", "full.s").await;
    let addr = broker.stomp_addr();
    let e = tokio::task::block_in_place(|| {
        let mut c = Stomp::connect(addr, Version::V12);
        c.receipt("SEND", &[("destination", "/topic/full.s")], b"first");
        // Without a receipt nothing is owed: refused silently, as RabbitMQ.
        c.send("SEND", &[("destination", "/topic/full.s")], b"quiet");
        c.send(
            "SEND",
            &[("destination", "/topic/full.s"), ("receipt", "r-full")],
            b"second",
        );
        c.expect_error_and_close()
    });
    assert_eq!(e.get("message"), Some("Message rejected"), "{e:?}");
    assert_eq!(e.get("receipt-id"), Some("r-full"), "{e:?}");
    assert_eq!(bodies(&ch, "full-stomp").await, [b"first".to_vec()]);
}
