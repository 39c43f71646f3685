//! What survives a broker restart: graceful (SIGTERM) and crash (SIGKILL).
//!
//! Each test restarts the broker on the same data directory
//! ([`Broker::restart`]) and reconnects, since the port changes.

#[macro_use]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::raw::Raw;
use common::*;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Confirmation, ExchangeKind};
use switchyard_tests::Broker;

const CONNECTION_FORCED: u16 = 320;
const NOT_FOUND: u16 = 404;

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions::durable()
}

fn passive_durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        durable: true,
        ..Default::default()
    }
}

/// Stops the broker with SIGTERM, asserting a clean exit, and starts it
/// again on the same data directory.
/// Blocking, so it runs in `block_in_place`: lapin's tasks keep running
/// on the other worker meanwhile.
fn graceful_restart(broker: &mut Broker) {
    tokio::task::block_in_place(|| {
        let status = broker.stop();
        assert!(status.success(), "graceful shutdown exit status: {status}");
        broker.restart();
    });
}

// SIGTERM is a graceful shutdown: connected clients get connection.close
// 320 CONNECTION_FORCED and the process exits successfully.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_connections_with_320() {
    let mut broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let mut sub = probe(&ch).await;
    let mut raw = Raw::handshake_async(broker.amqp_addr()).await;
    let close = tokio::task::spawn_blocking(move || raw.expect_close());
    let status = tokio::task::block_in_place(|| broker.stop());
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let code = t!(close).expect("raw client task");
    assert_eq!(
        code,
        Some(CONNECTION_FORCED),
        "raw client: connection.close code"
    );
    // lapin reports a server-closed connection to consumers as cancellation.
    assert!(matches!(
        sub.next_within(STEP).await,
        Some(Ok(None) | Err(_))
    ));
    assert!(!conn.status().connected());
}

// Persistent messages in a durable queue, confirmed before shutdown, are all
// there after a graceful restart, in publish order, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_persistent_messages_survive_graceful_restart() {
    let mut broker = Broker::start();
    {
        let conn = connect(&broker).await;
        let ch = confirm_channel(&conn).await;
        declare(&ch, "keep", durable()).await;
        let mut pending = Vec::with_capacity(1000);
        for i in 0..1000 {
            let c = t!(ch.basic_publish(
                "".into(),
                "keep".into(),
                BasicPublishOptions::default(),
                format!("{i}").as_bytes(),
                persistent()
            ))
            .expect("publish");
            pending.push(c);
        }
        for (i, c) in pending.into_iter().enumerate() {
            assert_eq!(t!(c).expect("confirm"), Confirmation::Ack(None), "msg {i}");
        }
        // The connection is still open when SIGTERM arrives.
        graceful_restart(&mut broker);
        drop(conn);
    }

    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare(&ch, "keep", passive_durable()).await;
    assert_eq!(q.message_count(), 1000);
    let mut sub = Sub::start(&ch, "keep", BasicConsumeOptions::default())
        .await
        .expect("consume");
    for i in 0..1000 {
        let d = sub.next().await;
        assert_eq!(String::from_utf8_lossy(&d.data), format!("{i}"));
        assert_eq!(d.properties.delivery_mode(), &Some(2));
        t!(d.ack(Default::default())).expect("ack");
    }
    sub.assert_quiet().await;
}

// Only persistent messages of a durable queue survive; transient ones, and
// non-durable queues and exchanges, are gone. Durable exchanges, bindings
// and queue arguments survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_durable_topology_and_persistent_messages_only() {
    let mut broker = Broker::start();
    {
        let conn = connect(&broker).await;
        let ch = confirm_channel(&conn).await;
        t!(ch.exchange_declare(
            "dx".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default()
        ))
        .expect("durable exchange");
        t!(ch.exchange_declare(
            "tx".into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default()
        ))
        .expect("transient exchange");
        declare(&ch, "mixed", durable()).await;
        declare(&ch, "temp", QueueDeclareOptions::default()).await;
        t!(ch.queue_bind(
            "mixed".into(),
            "dx".into(),
            "logs.*".into(),
            QueueBindOptions::default(),
            FieldTable::default()
        ))
        .expect("bind");
        for i in 0..20 {
            let props = if i % 2 == 0 {
                persistent()
            } else {
                transient()
            };
            let c = publish_with(&ch, "", "mixed", format!("{i}").as_bytes(), props).await;
            assert!(c.is_ack());
        }
        let c = publish_with(&ch, "", "temp", b"t", persistent()).await;
        assert!(c.is_ack());
        graceful_restart(&mut broker);
        drop(conn);
    }

    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let expected: Vec<String> = (0..20).step_by(2).map(|i| format!("{i}")).collect();
    assert_eq!(
        drain(&ch, "mixed").await,
        expected,
        "only persistent messages"
    );

    // Durable exchange and its binding still route.
    t!(ch.exchange_declare(
        "dx".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default()
    ))
    .expect("durable exchange survives");
    let c = publish_with(&ch, "dx", "logs.error", b"via-binding", persistent()).await;
    assert!(c.is_ack());
    assert_eq!(drain(&ch, "mixed").await, ["via-binding"]);

    let gone = channel(&conn).await;
    let res = t!(gone.queue_declare(
        "temp".into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default()
    ));
    assert_code(res, NOT_FOUND);
    let gone = channel(&conn).await;
    let res = t!(gone.exchange_declare(
        "tx".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default()
    ));
    assert_code(res, NOT_FOUND);
}

// A persistent message delivered but not acked when the broker stops is not
// lost: it is back in the queue after restart; an acked one is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_persistent_messages_survive_restart() {
    let mut broker = Broker::start();
    {
        let conn = connect(&broker).await;
        let ch = confirm_channel(&conn).await;
        declare(&ch, "inflight", durable()).await;
        for body in ["x", "y"] {
            assert!(
                publish_with(&ch, "", "inflight", body.as_bytes(), persistent())
                    .await
                    .is_ack()
            );
        }
        let reader = channel(&conn).await;
        let mut sub = Sub::start(&reader, "inflight", BasicConsumeOptions::default())
            .await
            .expect("consume");
        let x = sub.next().await;
        let _y = sub.next().await;
        t!(x.ack(Default::default())).expect("ack x");
        // Make sure the ack was processed before stopping.
        t!(reader.basic_qos(10, Default::default())).expect("sync");
        graceful_restart(&mut broker);
        drop(conn);
    }
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let m = get(&ch, "inflight").await.expect("y is back");
    assert_eq!(m.delivery.data, b"y");
    assert!(get(&ch, "inflight").await.is_none(), "x was acked");
}

// Crash safety: every message whose publisher confirm arrived before a
// SIGKILL is still there after restart (unconfirmed ones may or may not
// be), in publish order, without duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_sigkill() {
    let mut broker = Broker::start();
    let confirmed: Arc<Mutex<Vec<u64>>> = Arc::default();
    {
        let conn = connect(&broker).await;
        let ch = confirm_channel(&conn).await;
        declare(&ch, "crash", durable()).await;
        let (tx, mut rx) = tokio::sync::mpsc::channel(256);
        let publisher = tokio::spawn({
            let ch = ch.clone();
            async move {
                for i in 0..1_000_000u64 {
                    let res = ch
                        .basic_publish(
                            "".into(),
                            "crash".into(),
                            BasicPublishOptions::default(),
                            format!("{i}").as_bytes(),
                            persistent(),
                        )
                        .await;
                    let Ok(confirm) = res else { break };
                    if tx.send((i, confirm)).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut collector = tokio::spawn({
            let confirmed = Arc::clone(&confirmed);
            async move {
                while let Some((i, confirm)) = rx.recv().await {
                    match confirm.await {
                        Ok(Confirmation::Ack(None)) => confirmed.lock().unwrap().push(i),
                        _ => break,
                    }
                }
            }
        });

        let deadline = Instant::now() + Duration::from_secs(60);
        while confirmed.lock().unwrap().len() < 200 {
            assert!(
                Instant::now() < deadline,
                "fewer than 200 confirms within 60 s ({} so far)",
                confirmed.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::task::block_in_place(|| broker.kill());
        // Confirms already on the wire when the broker died still count:
        // let the collector drain them (it stops at the first error).
        let _ = tokio::time::timeout(STEP, &mut collector).await;
        collector.abort();
        publisher.abort();
        let _ = tokio::time::timeout(STEP, publisher).await;
        drop(ch);
        drop(conn);
    }
    let confirmed = confirmed.lock().unwrap().clone();
    assert!(confirmed.len() >= 200);

    tokio::task::block_in_place(|| broker.restart());
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let recovered: Vec<u64> = drain(&ch, "crash")
        .await
        .iter()
        .map(|s| s.parse().expect("numeric body"))
        .collect();
    assert!(
        recovered.windows(2).all(|w| w[0] < w[1]),
        "recovered messages out of order or duplicated: first problem near {:?}",
        recovered.windows(2).find(|w| w[0] >= w[1])
    );
    let missing: Vec<u64> = confirmed
        .iter()
        .copied()
        .filter(|i| recovered.binary_search(i).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} confirmed messages lost after SIGKILL (e.g. {:?}); {} recovered",
        missing.len(),
        confirmed.len(),
        &missing[..missing.len().min(10)],
        recovered.len()
    );
    eprintln!(
        "SIGKILL after {} confirms; {} messages recovered",
        confirmed.len(),
        recovered.len()
    );
    // The restarted broker works normally.
    assert_round_trip(&conn).await;
}
