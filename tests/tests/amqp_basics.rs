//! Routing through every exchange type, queue basics and ordering, driven by
//! lapin against a real `switchyard` process.
//!
//! Publishes go through confirm-mode channels, so that by the time a publish
//! returns the message has been routed and `basic.get` can observe the
//! outcome deterministically.

#[macro_use]
mod common;

use common::*;
use lapin::options::{
    BasicConsumeOptions, ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use switchyard_tests::Broker;

async fn exchange(ch: &Channel, name: &str, kind: ExchangeKind, args: FieldTable) {
    t!(ch.exchange_declare(name.into(), kind, ExchangeDeclareOptions::default(), args))
        .unwrap_or_else(|e| panic!("declare exchange {name:?}: {e}"));
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str, args: FieldTable) {
    t!(ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        args
    ))
    .unwrap_or_else(|e| panic!("bind {queue:?} to {exchange:?} with {key:?}: {e}"));
}

async fn queues(ch: &Channel, names: &[&str]) {
    for name in names {
        declare(ch, name, QueueDeclareOptions::default()).await;
    }
}

fn table(entries: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(
            ShortString::from(*k),
            AMQPValue::LongString(LongString::from(*v)),
        );
    }
    t
}

// The default exchange ("") routes to the queue named by the routing key and
// deliveries report exchange "" and that key (AMQP 0-9-1 §3.1.3.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_exchange_delivers_to_queue_named_by_key() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare(&ch, "greetings", QueueDeclareOptions::default()).await;
    let mut sub = Sub::start(&ch, "greetings", BasicConsumeOptions::default())
        .await
        .expect("consume");
    publish(&ch, "", "greetings", b"hello").await;
    let d = sub.next().await;
    assert_eq!(d.data, b"hello");
    assert_eq!(d.exchange.as_str(), "");
    assert_eq!(d.routing_key.as_str(), "greetings");
    assert!(!d.redelivered);
    t!(d.ack(Default::default())).expect("ack");
    sub.assert_quiet().await;
}

// A direct exchange delivers to queues whose binding key equals the routing
// key exactly; unmatched keys are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_exchange_matches_exact_key() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    exchange(&ch, "d", ExchangeKind::Direct, FieldTable::default()).await;
    queues(&ch, &["qa", "qb"]).await;
    bind(&ch, "qa", "d", "a", FieldTable::default()).await;
    bind(&ch, "qb", "d", "b", FieldTable::default()).await;
    bind(&ch, "qb", "d", "shared", FieldTable::default()).await;
    bind(&ch, "qa", "d", "shared", FieldTable::default()).await;
    for key in ["a", "b", "c", "A", "shared"] {
        publish(&ch, "d", key, key.as_bytes()).await;
    }
    assert_eq!(drain(&ch, "qa").await, ["a", "shared"]);
    assert_eq!(drain(&ch, "qb").await, ["b", "shared"]);
}

// A fanout exchange copies every message to every bound queue, ignoring the
// routing key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_exchange_copies_to_all_bound_queues() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    exchange(&ch, "f", ExchangeKind::Fanout, FieldTable::default()).await;
    queues(&ch, &["f1", "f2", "f3", "unbound"]).await;
    for (q, key) in [("f1", ""), ("f2", "ignored"), ("f3", "x.y")] {
        bind(&ch, q, "f", key, FieldTable::default()).await;
    }
    publish(&ch, "f", "anything", b"m1").await;
    publish(&ch, "f", "", b"m2").await;
    for q in ["f1", "f2", "f3"] {
        assert_eq!(drain(&ch, q).await, ["m1", "m2"], "queue {q}");
    }
    assert!(drain(&ch, "unbound").await.is_empty());
}

// Topic bindings: `*` matches exactly one word, `#` zero or more; a message
// matching several bindings of one queue is delivered to it once
// (RabbitMQ tutorial 5 cases).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_exchange_star_and_hash() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    exchange(&ch, "t", ExchangeKind::Topic, FieldTable::default()).await;
    queues(&ch, &["q1", "q2", "all", "exact"]).await;
    bind(&ch, "q1", "t", "*.orange.*", FieldTable::default()).await;
    bind(&ch, "q2", "t", "*.*.rabbit", FieldTable::default()).await;
    bind(&ch, "q2", "t", "lazy.#", FieldTable::default()).await;
    bind(&ch, "all", "t", "#", FieldTable::default()).await;
    bind(&ch, "exact", "t", "quick.brown.fox", FieldTable::default()).await;
    let keys = [
        "quick.orange.rabbit",
        "lazy.orange.elephant",
        "quick.orange.fox",
        "lazy.brown.fox",
        "lazy.pink.rabbit",
        "quick.brown.fox",
        "orange",
        "quick.orange.male.rabbit",
        "lazy.orange.male.rabbit",
        "lazy",
        "",
    ];
    for key in keys {
        publish(&ch, "t", key, key.as_bytes()).await;
    }
    assert_eq!(
        drain(&ch, "q1").await,
        [
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "quick.orange.fox"
        ]
    );
    assert_eq!(
        drain(&ch, "q2").await,
        [
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "lazy.brown.fox",
            "lazy.pink.rabbit",
            "lazy.orange.male.rabbit",
            "lazy",
        ]
    );
    assert_eq!(drain(&ch, "all").await, keys);
    assert_eq!(drain(&ch, "exact").await, ["quick.brown.fox"]);
}

// Headers exchange: x-match=all needs every bound header to match,
// x-match=any at least one; the routing key is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_exchange_all_and_any() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    exchange(&ch, "h", ExchangeKind::Headers, FieldTable::default()).await;
    queues(&ch, &["h_all", "h_any"]).await;
    let spec = [("format", "pdf"), ("type", "report")];
    let mut all = table(&spec);
    all.insert("x-match".into(), AMQPValue::LongString("all".into()));
    let mut any = table(&spec);
    any.insert("x-match".into(), AMQPValue::LongString("any".into()));
    bind(&ch, "h_all", "h", "", all).await;
    bind(&ch, "h_any", "h", "", any).await;

    let cases: [(&str, &[(&str, &str)]); 5] = [
        ("both", &[("format", "pdf"), ("type", "report")]),
        (
            "both+extra",
            &[("format", "pdf"), ("type", "report"), ("x", "y")],
        ),
        ("format-only", &[("format", "pdf")]),
        ("type-mismatch", &[("format", "zip"), ("type", "report")]),
        ("none", &[("format", "zip")]),
    ];
    for (body, headers) in cases {
        let props = BasicProperties::default().with_headers(table(headers));
        let c = publish_with(&ch, "h", "some.key", body.as_bytes(), props).await;
        assert!(c.is_ack(), "{body}: {c:?}");
    }
    let no_headers = publish_with(&ch, "h", "", b"no-headers", BasicProperties::default()).await;
    assert!(no_headers.is_ack());

    assert_eq!(drain(&ch, "h_all").await, ["both", "both+extra"]);
    assert_eq!(
        drain(&ch, "h_any").await,
        ["both", "both+extra", "format-only", "type-mismatch"]
    );
}

// exchange.bind (a RabbitMQ extension): messages routed by the source
// exchange to a destination exchange are routed again by the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_to_exchange_binding() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    exchange(&ch, "src", ExchangeKind::Topic, FieldTable::default()).await;
    exchange(&ch, "dst", ExchangeKind::Fanout, FieldTable::default()).await;
    queues(&ch, &["via_dst"]).await;
    bind(&ch, "via_dst", "dst", "", FieldTable::default()).await;
    t!(ch.exchange_bind(
        "dst".into(),
        "src".into(),
        "a.#".into(),
        ExchangeBindOptions::default(),
        FieldTable::default()
    ))
    .expect("exchange.bind");
    publish(&ch, "src", "a.b", b"a.b").await;
    publish(&ch, "src", "b.a", b"b.a").await;
    publish(&ch, "src", "a", b"a").await;
    assert_eq!(drain(&ch, "via_dst").await, ["a.b", "a"]);
}

// alternate-exchange: a message the exchange cannot route goes to the
// alternate exchange instead of being dropped (and is not returned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternate_exchange_receives_unroutable() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    exchange(&ch, "ae", ExchangeKind::Fanout, FieldTable::default()).await;
    let mut args = FieldTable::default();
    args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString("ae".into()),
    );
    exchange(&ch, "main", ExchangeKind::Direct, args).await;
    queues(&ch, &["routed", "unrouted"]).await;
    bind(&ch, "routed", "main", "k", FieldTable::default()).await;
    bind(&ch, "unrouted", "ae", "", FieldTable::default()).await;
    publish(&ch, "main", "k", b"to-routed").await;
    publish(&ch, "main", "other", b"to-ae").await;
    let mandatory = t!(ch.basic_publish(
        "main".into(),
        "nobody".into(),
        lapin::options::BasicPublishOptions {
            mandatory: true,
            immediate: false
        },
        b"mandatory-to-ae",
        BasicProperties::default()
    ))
    .expect("publish");
    let c = t!(mandatory).expect("confirm");
    assert_eq!(
        c,
        lapin::Confirmation::Ack(None),
        "routed via AE: not returned"
    );
    assert_eq!(drain(&ch, "routed").await, ["to-routed"]);
    assert_eq!(drain(&ch, "unrouted").await, ["to-ae", "mandatory-to-ae"]);
}

// queue.declare with an empty name makes the server generate one, prefixed
// "amq.gen-", usable like any other queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_named_queue() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let opts = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let q1 = declare(&ch, "", opts).await;
    let q2 = declare(&ch, "", opts).await;
    let n1 = q1.name().as_str().to_owned();
    assert!(n1.starts_with("amq.gen-"), "server-named queue {n1:?}");
    assert!(n1.len() > "amq.gen-".len(), "{n1:?}");
    assert_ne!(n1, q2.name().as_str(), "names are unique");
    assert_eq!(q1.message_count(), 0);
    assert_eq!(q1.consumer_count(), 0);
    publish(&ch, "", &n1, b"x").await;
    assert_eq!(drain(&ch, &n1).await, ["x"]);
}

// queue.purge removes the ready messages and reports how many it removed;
// queue.declare-ok reports the ready message count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_reports_count() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, "p", QueueDeclareOptions::default()).await;
    for i in 0..7 {
        publish(&ch, "", "p", format!("{i}").as_bytes()).await;
    }
    let q = declare(
        &ch,
        "p",
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(q.message_count(), 7);
    let purged = t!(ch.queue_purge("p".into(), QueuePurgeOptions::default())).expect("purge");
    assert_eq!(purged, 7);
    assert!(get(&ch, "p").await.is_none(), "queue empty after purge");
    let again = t!(ch.queue_purge("p".into(), QueuePurgeOptions::default())).expect("purge");
    assert_eq!(again, 0);
}

// Messages published on one channel to one queue are delivered in publish
// order (RabbitMQ's per-channel ordering guarantee).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_messages_keep_order() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let pub_ch = channel(&conn).await;
    let sub_ch = channel(&conn).await;
    declare(&pub_ch, "ordered", QueueDeclareOptions::default()).await;
    let mut sub = Sub::start(&sub_ch, "ordered", BasicConsumeOptions::default())
        .await
        .expect("consume");
    for i in 0..1000 {
        publish(&pub_ch, "", "ordered", format!("{i}").as_bytes()).await;
    }
    for i in 0..1000 {
        let d = sub.next().await;
        assert_eq!(String::from_utf8_lossy(&d.data), format!("{i}"));
        assert_eq!(d.delivery_tag, i + 1, "delivery tags count from 1");
        t!(d.ack(Default::default())).expect("ack");
    }
    sub.assert_quiet().await;
}
