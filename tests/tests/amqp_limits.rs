//! Hostile and greedy clients: each gets its documented error or is simply
//! not served, and a well-behaved client connected at the same time keeps
//! working. Limits come from a config file written by the test.

#[macro_use]
mod common;

use amq_protocol::protocol::{AMQPClass, basic};
use common::raw::{Raw, blocking};
use common::*;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use switchyard_tests::Broker;

/// A consumer that never reads its socket: the broker stops writing to it
/// once the socket and its own per-consumer credit are full (RabbitMQ: the
/// writer blocks on TCP), the rest stays in that queue, and a consumer of
/// another queue fed by the same publishes receives everything.
#[tokio::test(flavor = "multi_thread")]
async fn never_reading_consumer_does_not_stall_others() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    for q in ["stuck", "live"] {
        declare(&ch, q, QueueDeclareOptions::default()).await;
        t!(ch.queue_bind(
            q.into(),
            "amq.fanout".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default()
        ))
        .expect("bind");
    }
    let addr = broker.amqp_addr();
    let mut stuck = blocking(move || {
        let mut raw = Raw::handshake(addr);
        raw.open_channel(1);
        let consume = basic::Consume {
            queue: "stuck".into(),
            consumer_tag: "never-reads".into(),
            no_ack: true,
            ..Default::default()
        };
        raw.send_method(1, AMQPClass::Basic(basic::AMQPMethod::Consume(consume)));
        raw
    })
    .await;

    let mut live = Sub::start(
        &ch,
        "live",
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await
    .expect("consume live");
    const N: usize = 40_000;
    let body = vec![b'x'; 1024];
    for _ in 0..N {
        publish(&ch, "amq.fanout", "", &body).await;
    }
    for i in 0..N {
        let d = live.next_within(STEP).await;
        assert!(
            matches!(d, Some(Ok(Some(_)))),
            "live consumer got {i} of {N}, then {d:?}"
        );
    }
    // 40 MB cannot all sit in loopback socket buffers: the broker held the
    // rest back in the queue instead of buffering it for the stuck client.
    let q = declare(
        &ch,
        "stuck",
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
    )
    .await;
    assert!(
        q.message_count() > 0,
        "broker claims to have written all {N} messages to a client that never reads"
    );
    // The stuck connection is still open and the broker still serves others.
    publish(&ch, "", "live", b"after").await;
    assert!(matches!(live.next_within(STEP).await, Some(Ok(Some(_)))));
    let _ = stuck
        .sock
        .stream()
        .peer_addr()
        .expect("stuck connection still open");
    blocking(move || drop(stuck)).await;
}

/// Connections per source address are capped; closing one frees its slot.
#[tokio::test(flavor = "multi_thread")]
async fn per_address_connection_limit() {
    let broker = Broker::start_with_config("[amqp]\nmax_connections_per_ip = 3\n");
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(connect(&broker).await);
    }
    let refused = tokio::time::timeout(
        STEP,
        lapin::Connection::connect(&broker.amqp_uri(), lapin::ConnectionProperties::default()),
    )
    .await
    .expect("refusal must be prompt");
    assert!(
        refused.is_err(),
        "a 4th connection from 127.0.0.1 was accepted"
    );
    // The three admitted connections keep working.
    let ch = channel(&conns[0]).await;
    declare(&ch, "still-works", QueueDeclareOptions::default()).await;
    t!(conns.pop().expect("three").close(200, "bye".into())).expect("close");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = connect(&broker).await;
    let ch = channel(&again).await;
    declare(&ch, "slot-freed", QueueDeclareOptions::default()).await;
}

/// queue.declare beyond `server.max_queues_per_vhost` is 406.
#[tokio::test(flavor = "multi_thread")]
async fn queue_limit_per_vhost() {
    let broker = Broker::start_with_config("[server]\nmax_queues_per_vhost = 3\n");
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    for q in ["q1", "q2", "q3"] {
        declare(&ch, q, QueueDeclareOptions::default()).await;
    }
    // Redeclaring an existing queue is not a new queue.
    declare(&ch, "q1", QueueDeclareOptions::default()).await;
    let res = t!(ch.queue_declare(
        "q4".into(),
        QueueDeclareOptions::default(),
        FieldTable::default()
    ));
    assert_code(res, 406);
    let ch = channel(&conn).await;
    t!(ch.queue_delete("q3".into(), Default::default())).expect("delete");
    declare(&ch, "q4", QueueDeclareOptions::default()).await;
}

/// basic.consume beyond `amqp.max_consumers_per_channel` closes the
/// connection with 530 NOT_ALLOWED.
#[tokio::test(flavor = "multi_thread")]
async fn consumer_limit_per_channel() {
    let broker = Broker::start_with_config("[amqp]\nmax_consumers_per_channel = 2\n");
    let addr = broker.amqp_addr();
    let code = blocking(move || {
        let mut raw = Raw::handshake(addr);
        raw.open_channel(1);
        for tag in ["a", "b", "c"] {
            let consume = basic::Consume {
                queue: "amq.gen-never".into(),
                consumer_tag: tag.into(),
                ..Default::default()
            };
            // Declare a queue per consumer through the default name rule.
            let declare = amq_protocol::protocol::queue::Declare {
                queue: "".into(),
                ..Default::default()
            };
            raw.send_method(
                1,
                AMQPClass::Queue(amq_protocol::protocol::queue::AMQPMethod::Declare(declare)),
            );
            let _ = raw.expect_method("queue.declare-ok");
            let consume = basic::Consume {
                queue: "".into(),
                ..consume
            };
            raw.send_method(1, AMQPClass::Basic(basic::AMQPMethod::Consume(consume)));
            if tag != "c" {
                let _ = raw.expect_method("basic.consume-ok");
            }
        }
        raw.expect_close()
    })
    .await;
    assert_eq!(code, Some(530));
}

/// Sockets that connect and never speak are dropped at the handshake
/// deadline, while a real client connected meanwhile is served.
#[tokio::test(flavor = "multi_thread")]
async fn silent_connections_time_out_during_handshake() {
    let broker = Broker::start_with_config("[amqp]\nhandshake_timeout_ms = 500\n");
    let addr = broker.amqp_addr();
    let silent = blocking(move || {
        (0..400)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect::<Vec<_>>()
    })
    .await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare(&ch, "served", QueueDeclareOptions::default()).await;
    let closed = blocking(move || {
        let started = Instant::now();
        silent
            .into_iter()
            .filter(|s| {
                let mut s = s;
                s.set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let mut buf = [0u8; 16];
                // EOF or reset is a close; a read timeout is not.
                let closed = match s.read(&mut buf) {
                    Ok(0) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                    Ok(_) => false,
                };
                closed
                    && started.elapsed() < Duration::from_secs(10)
                    && started.elapsed() < Duration::from_secs(10)
            })
            .count()
    })
    .await;
    assert_eq!(
        closed, 400,
        "every silent socket must be closed by the broker"
    );
    // The handshake deadline does not apply once a connection is open.
    tokio::time::sleep(Duration::from_millis(700)).await;
    declare(&ch, "still-served", QueueDeclareOptions::default()).await;
}

/// `amqp.max_unacked_per_channel` caps a manual-ack consumer that set no
/// prefetch: the broker stops delivering at the cap, the rest stay ready in
/// the queue, and each ack lets as many more through.
#[tokio::test(flavor = "multi_thread")]
async fn unacked_cap_without_prefetch() {
    const CAP: usize = 5;
    const N: usize = 12;
    let broker = Broker::start_with_config(&format!("[amqp]\nmax_unacked_per_channel = {CAP}\n"));
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare(&ch, "capped", QueueDeclareOptions::default()).await;
    for i in 0..N {
        publish(&ch, "", "capped", format!("m{i}").as_bytes()).await;
    }
    let ready = |ch: lapin::Channel| async move {
        let opts = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        declare(&ch, "capped", opts).await.message_count()
    };
    let body = |d: &lapin::message::Delivery| String::from_utf8_lossy(&d.data).into_owned();

    // No basic.qos: only the cap holds the consumer back.
    let consumer_ch = channel(&conn).await;
    let mut sub = Sub::start(&consumer_ch, "capped", BasicConsumeOptions::default())
        .await
        .expect("consume");
    let mut first = Vec::new();
    for _ in 0..CAP {
        first.push(sub.next().await);
    }
    let bodies: Vec<String> = first.iter().map(body).collect();
    assert_eq!(bodies, ["m0", "m1", "m2", "m3", "m4"]);
    sub.assert_quiet().await;
    assert_eq!(
        ready(ch.clone()).await,
        u32::try_from(N - CAP).expect("small")
    );

    // One ack, one more delivery.
    t!(first[0].ack(BasicAckOptions::default())).expect("ack");
    let d = sub.next().await;
    assert_eq!(body(&d), "m5");
    sub.assert_quiet().await;

    // Acking all five outstanding lets five more through, and no more.
    t!(d.ack(BasicAckOptions { multiple: true })).expect("ack multiple");
    let mut next = Vec::new();
    for _ in 0..CAP {
        next.push(sub.next().await);
    }
    let bodies: Vec<String> = next.iter().map(body).collect();
    assert_eq!(bodies, ["m6", "m7", "m8", "m9", "m10"]);
    sub.assert_quiet().await;
    assert_eq!(ready(ch.clone()).await, 1);

    let last = next.last().expect("five");
    t!(last.ack(BasicAckOptions { multiple: true })).expect("ack multiple");
    assert_eq!(sub.next_acked().await, "m11");
    assert_eq!(ready(ch).await, 0);
}
