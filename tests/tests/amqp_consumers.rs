//! Consumer behaviour: round-robin, prefetch, nack/reject/recover
//! redelivery, basic.get and server-sent cancellation.

#[macro_use]
mod common;

use common::*;
use lapin::options::{
    BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRecoverOptions,
    BasicRejectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use switchyard_tests::Broker;

// With two ready consumers on one queue, messages are dispatched
// round-robin: each gets every other message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_between_two_consumers() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let ch_a = channel(&conn).await;
    let ch_b = channel(&conn).await;
    declare(&ch, "rr", QueueDeclareOptions::default()).await;
    let mut a = Sub::start(&ch_a, "rr", BasicConsumeOptions::default())
        .await
        .expect("consume a");
    let mut b = Sub::start(&ch_b, "rr", BasicConsumeOptions::default())
        .await
        .expect("consume b");
    for i in 0..10 {
        publish(&ch, "", "rr", format!("{i}").as_bytes()).await;
    }
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    for _ in 0..5 {
        got_a.push(a.next_acked().await.parse::<u32>().expect("number"));
        got_b.push(b.next_acked().await.parse::<u32>().expect("number"));
    }
    a.assert_quiet().await;
    b.assert_quiet().await;
    let mut all: Vec<u32> = got_a.iter().chain(&got_b).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..10).collect::<Vec<_>>(), "a={got_a:?} b={got_b:?}");
    // Strict alternation: one consumer has the even messages, the other
    // the odd ones.
    let parity = got_a[0] % 2;
    assert!(
        got_a.iter().all(|n| n % 2 == parity),
        "a={got_a:?} b={got_b:?}"
    );
    assert!(
        got_b.iter().all(|n| n % 2 != parity),
        "a={got_a:?} b={got_b:?}"
    );
}

// basic.qos prefetch_count=2 with manual acks: at most two unacked
// deliveries are outstanding; each ack lets exactly one more through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_limits_unacked_deliveries() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = channel(&conn).await;
    declare(&pub_ch, "pf", QueueDeclareOptions::default()).await;
    for i in 0..5 {
        publish(&pub_ch, "", "pf", format!("{i}").as_bytes()).await;
    }
    t!(ch.basic_qos(2, BasicQosOptions::default())).expect("qos");
    let mut sub = Sub::start(&ch, "pf", BasicConsumeOptions::default())
        .await
        .expect("consume");
    let d0 = sub.next().await;
    let d1 = sub.next().await;
    assert_eq!(
        (d0.data.as_slice(), d1.data.as_slice()),
        (&b"0"[..], &b"1"[..])
    );
    sub.assert_quiet().await;

    t!(d0.ack(Default::default())).expect("ack 0");
    let d2 = sub.next().await;
    assert_eq!(d2.data, b"2");
    sub.assert_quiet().await;

    // multiple=true acks both outstanding deliveries: two more may come.
    t!(ch.basic_ack(
        d2.delivery_tag,
        lapin::options::BasicAckOptions { multiple: true }
    ))
    .expect("ack multiple");
    let d3 = sub.next().await;
    let d4 = sub.next().await;
    assert_eq!(
        (d3.data.as_slice(), d4.data.as_slice()),
        (&b"3"[..], &b"4"[..])
    );
    sub.assert_quiet().await;
}

// basic.nack with requeue=true puts the message back; it is delivered again
// with the redelivered flag set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_requeue_redelivers_with_flag() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, "nq", QueueDeclareOptions::default()).await;
    publish(&ch, "", "nq", b"again").await;
    let mut sub = Sub::start(&ch, "nq", BasicConsumeOptions::default())
        .await
        .expect("consume");
    let first = sub.next().await;
    assert!(!first.redelivered);
    let nack = BasicNackOptions {
        multiple: false,
        requeue: true,
    };
    assert!(t!(first.nack(nack)).expect("nack"));
    let second = sub.next().await;
    assert_eq!(second.data, b"again");
    assert!(
        second.redelivered,
        "requeued message must be marked redelivered"
    );
    assert_ne!(second.delivery_tag, first.delivery_tag);
    t!(second.ack(Default::default())).expect("ack");
    sub.assert_quiet().await;
}

// basic.reject with requeue=true behaves like nack; with requeue=false the
// message is discarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_requeue_and_discard() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, "rq", QueueDeclareOptions::default()).await;
    publish(&ch, "", "rq", b"r").await;
    let mut sub = Sub::start(&ch, "rq", BasicConsumeOptions::default())
        .await
        .expect("consume");
    let first = sub.next().await;
    assert!(t!(first.reject(BasicRejectOptions { requeue: true })).expect("reject"));
    let second = sub.next().await;
    assert_eq!(second.data, b"r");
    assert!(second.redelivered);
    assert!(t!(second.reject(BasicRejectOptions { requeue: false })).expect("reject"));
    sub.assert_quiet().await;
    let q = declare(
        &ch,
        "rq",
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(q.message_count(), 0, "rejected without requeue: gone");
}

// basic.get returns one message plus the count still ready; an empty queue
// answers get-empty. An unacked got message is requeued when its channel
// closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_and_get_empty() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, "g", QueueDeclareOptions::default()).await;
    assert!(get(&ch, "g").await.is_none(), "get-empty on an empty queue");
    for body in ["one", "two", "three"] {
        publish(&ch, "", "g", body.as_bytes()).await;
    }
    let m = get(&ch, "g").await.expect("get-ok");
    assert_eq!(m.delivery.data, b"one");
    assert_eq!(m.message_count, 2, "two left after the first get");
    assert!(!m.delivery.redelivered);
    t!(m.delivery.ack(Default::default())).expect("ack");

    let other = channel(&conn).await;
    let m = get(&other, "g").await.expect("get-ok");
    assert_eq!(m.delivery.data, b"two");
    assert_eq!(m.message_count, 1);
    t!(other.close(200, "bye".into())).expect("close channel");

    let m = get(&ch, "g").await.expect("get-ok");
    assert_eq!(m.delivery.data, b"two", "requeued at its original position");
    assert!(m.delivery.redelivered);
    t!(m.delivery.ack(Default::default())).expect("ack");
    let m = get(&ch, "g").await.expect("get-ok");
    assert_eq!(m.delivery.data, b"three");
    assert_eq!(m.message_count, 0);
    t!(m.delivery.ack(Default::default())).expect("ack");
    assert!(get(&ch, "g").await.is_none());
}

// basic.recover(requeue=true) redelivers every unacked message of the
// channel, flagged redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_redelivers_unacked() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let pub_ch = confirm_channel(&conn).await;
    let ch = channel(&conn).await;
    declare(&pub_ch, "rec", QueueDeclareOptions::default()).await;
    let mut sub = Sub::start(&ch, "rec", BasicConsumeOptions::default())
        .await
        .expect("consume");
    for body in ["a", "b", "c"] {
        publish(&pub_ch, "", "rec", body.as_bytes()).await;
    }
    let a = sub.next().await;
    let _b = sub.next().await;
    let _c = sub.next().await;
    assert!(!a.redelivered);
    t!(a.ack(Default::default())).expect("ack a");
    t!(ch.basic_recover(BasicRecoverOptions { requeue: true })).expect("basic.recover");
    let mut again = Vec::new();
    for _ in 0..2 {
        let d = sub.next().await;
        assert!(d.redelivered, "recovered delivery must be flagged");
        again.push(String::from_utf8_lossy(&d.data).into_owned());
        t!(d.ack(Default::default())).expect("ack");
    }
    again.sort();
    assert_eq!(again, ["b", "c"]);
    sub.assert_quiet().await;
}

// Deleting a queue that has consumers sends them basic.cancel (the
// consumer_cancel_notify capability lapin advertises).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_cancelled_when_queue_deleted() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let admin = channel(&conn).await;
    declare(&admin, "doomed", QueueDeclareOptions::default()).await;
    let mut sub = Sub::start(&ch, "doomed", BasicConsumeOptions::default())
        .await
        .expect("consume");
    let deleted = t!(admin.queue_delete("doomed".into(), QueueDeleteOptions::default()))
        .expect("queue.delete");
    assert_eq!(deleted, 0);
    sub.expect_cancelled().await;
    // The consumer's channel stays open.
    assert!(ch.status().connected());
    declare(&ch, "after", QueueDeclareOptions::default()).await;
}

// basic.cancel from the client stops deliveries; remaining messages stay
// in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cancel_stops_deliveries() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, "cc", QueueDeclareOptions::default()).await;
    let mut sub = Sub::start(&ch, "cc", BasicConsumeOptions::default())
        .await
        .expect("consume");
    publish(&ch, "", "cc", b"before").await;
    assert_eq!(sub.next_acked().await, "before");
    t!(ch.basic_cancel(sub.consumer.tag(), Default::default())).expect("basic.cancel");
    publish(&ch, "", "cc", b"after").await;
    match sub.next_within(QUIET).await {
        None | Some(Ok(None)) => {}
        Some(other) => panic!("delivery after cancel: {other:?}"),
    }
    assert_eq!(drain(&ch, "cc").await, ["after"]);
}
