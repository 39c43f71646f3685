//! Engine behaviour through its public API, on the in-memory store.

use crate::exchange::Binding;
use crate::store::MemoryStore;
use crate::*;
use std::sync::Arc;
use switchyard_model::{FieldTable, Message, Properties};

fn broker() -> (Arc<Broker>, Arc<Vhost>) {
    let b = Broker::open(Arc::new(MemoryStore)).unwrap();
    let v = b.vhost(DEFAULT_VHOST).unwrap();
    (b, v)
}

fn msg(exchange: &str, key: &str, body: &str) -> Message {
    Message {
        exchange: exchange.into(),
        routing_key: key.into(),
        properties: Properties::default(),
        body: body.as_bytes().to_vec().into(),
    }
}

fn declare(v: &Vhost, name: &str) -> String {
    let spec = QueueSpec {
        name: name.into(),
        durable: false,
        exclusive_owner: None,
        auto_delete: false,
        arguments: Default::default(),
    };
    match v.apply(Command::DeclareQueue(spec), 1).unwrap() {
        Outcome::Queue { name, .. } => name,
        o => panic!("unexpected {o:?}"),
    }
}

fn bind(v: &Vhost, x: &str, q: &str, key: &str) {
    v.apply(
        Command::Bind {
            source: x.into(),
            binding: Binding {
                destination: Destination::queue(q),
                routing_key: key.into(),
                arguments: Default::default(),
            },
        },
        1,
    )
    .unwrap();
}

fn consumer(prefetch: u32, no_ack: bool) -> (Arc<Consumer>, Arc<Outbox>) {
    let outbox = Arc::new(Outbox::default());
    let spec = ConsumerSpec {
        tag: "c".into(),
        prefetch,
        no_ack,
        ..Default::default()
    };
    (
        Arc::new(Consumer::new(spec, Arc::default(), outbox.clone())),
        outbox,
    )
}

fn drain(outbox: &Outbox) -> Vec<(u64, String, bool)> {
    let mut evs = Vec::new();
    outbox.drain_into(&mut evs);
    evs.into_iter()
        .map(|e| match e {
            OutboxEvent::Deliver(d) => {
                d.consumer.written();
                (
                    d.seq,
                    String::from_utf8(d.message.body.to_vec()).unwrap(),
                    d.redelivered,
                )
            }
            OutboxEvent::Cancelled(_) => (u64::MAX, "cancelled".into(), false),
        })
        .collect()
}

#[test]
fn default_exchange_and_topic_routing() {
    let (_b, v) = broker();
    let q = declare(&v, "q1");
    bind(&v, "amq.topic", &q, "plant.*.temp");
    assert_eq!(v.publish(msg("", "q1", "a"), false).unwrap().queues, 1);
    assert_eq!(
        v.publish(msg("amq.topic", "plant.7.temp", "b"), false)
            .unwrap()
            .queues,
        1
    );
    assert_eq!(
        v.publish(msg("amq.topic", "plant.7.hum", "c"), false)
            .unwrap()
            .queues,
        0
    );
    let queue = v.queue("q1", 1).unwrap();
    assert_eq!(queue.counts().0, 2);
    assert!(matches!(
        v.publish(msg("nope", "k", "x"), false),
        Err(EngineError::ExchangeNotFound(..))
    ));
}

#[test]
fn prefetch_limits_and_requeue_keeps_order() {
    let (_b, v) = broker();
    declare(&v, "q");
    let queue = v.queue("q", 1).unwrap();
    for i in 0..5 {
        v.publish(msg("", "q", &i.to_string()), false).unwrap();
    }
    let (c, outbox) = consumer(2, false);
    queue.add_consumer(c.clone()).unwrap();
    let first = drain(&outbox);
    assert_eq!(
        first.iter().map(|d| d.1.as_str()).collect::<Vec<_>>(),
        ["0", "1"]
    );
    // Requeue "0": it goes back to the head, redelivered.
    let held = |seq| Unsettled {
        queue: queue.clone(),
        seq,
        consumer: Some(c.clone()),
    };
    held(first[0].0).settle(Settle::Requeue);
    let next = drain(&outbox);
    assert_eq!(next, vec![(first[0].0, "0".into(), true)]);
    let mut acks = Settlement::default();
    acks.add(held(first[0].0));
    acks.add(held(first[1].0));
    acks.apply(Settle::Ack);
    assert_eq!(
        drain(&outbox)
            .iter()
            .map(|d| d.1.as_str())
            .collect::<Vec<_>>(),
        ["2", "3"]
    );
}

#[test]
fn redeclare_mismatch_and_exclusive() {
    let (_b, v) = broker();
    declare(&v, "q");
    let durable = QueueSpec {
        name: "q".into(),
        durable: true,
        exclusive_owner: None,
        auto_delete: false,
        arguments: Default::default(),
    };
    assert!(matches!(
        v.apply(Command::DeclareQueue(durable), 1),
        Err(EngineError::Inequivalent { .. })
    ));
    let excl = QueueSpec {
        name: "ex".into(),
        durable: false,
        exclusive_owner: Some(7),
        auto_delete: false,
        arguments: Default::default(),
    };
    v.apply(Command::DeclareQueue(excl), 7).unwrap();
    assert!(matches!(v.queue("ex", 8), Err(EngineError::QueueLocked(_))));
    v.drop_connection(7);
    assert!(v.queue("ex", 7).is_err());
    let generated = declare(&v, "");
    assert!(generated.starts_with("amq.gen-"));
}

#[test]
fn round_robin_and_delete_cancels() {
    let (_b, v) = broker();
    declare(&v, "q");
    let queue = v.queue("q", 1).unwrap();
    let (c1, o1) = consumer(0, true);
    let (c2, o2) = consumer(0, true);
    queue.add_consumer(c1).unwrap();
    queue.add_consumer(c2).unwrap();
    for i in 0..4 {
        v.publish(msg("", "q", &i.to_string()), false).unwrap();
    }
    assert_eq!(drain(&o1).len(), 2);
    assert_eq!(drain(&o2).len(), 2);
    v.apply(
        Command::DeleteQueue {
            name: "q".into(),
            if_unused: false,
            if_empty: false,
        },
        1,
    )
    .unwrap();
    assert_eq!(drain(&o1)[0].1, "cancelled");
}

#[test]
fn alternate_and_e2e() {
    let (_b, v) = broker();
    declare(&v, "unrouted");
    declare(&v, "fan");
    let mut args = FieldTable::new();
    args.insert(
        "alternate-exchange".into(),
        switchyard_model::FieldValue::string("ae"),
    );
    for (name, kind, arguments) in [
        ("ae", ExchangeKind::Fanout, Default::default()),
        ("main", ExchangeKind::Direct, args),
        ("f", ExchangeKind::Fanout, Default::default()),
    ] {
        v.apply(
            Command::DeclareExchange {
                name: name.into(),
                kind,
                durable: false,
                auto_delete: false,
                internal: false,
                arguments,
            },
            1,
        )
        .unwrap();
    }
    bind(&v, "ae", "unrouted", "");
    bind(&v, "f", "fan", "");
    v.apply(
        Command::Bind {
            source: "main".into(),
            binding: Binding {
                destination: Destination::exchange("f"),
                routing_key: "k".into(),
                arguments: Default::default(),
            },
        },
        1,
    )
    .unwrap();
    assert_eq!(v.publish(msg("main", "k", "x"), false).unwrap().queues, 1);
    assert_eq!(v.queue("fan", 1).unwrap().counts().0, 1);
    assert_eq!(
        v.publish(msg("main", "other", "y"), false).unwrap().queues,
        1
    );
    assert_eq!(v.queue("unrouted", 1).unwrap().counts().0, 1);
}

#[test]
fn full_queue_throttles_publishers_until_drained() {
    let (_b, v) = broker();
    declare(&v, "big");
    let queue = v.queue("big", 1).unwrap();
    let body = vec![0u8; 1 << 20];
    let mut throttled_at = None;
    for i in 0..400 {
        let m = Message {
            body: body.clone().into(),
            ..msg("", "big", "")
        };
        if !v.publish(m, false).unwrap().throttle.is_empty() {
            throttled_at = Some(i);
            break;
        }
    }
    let at = throttled_at.expect("a 256 MiB backlog must throttle");
    assert!((250..=260).contains(&at), "throttled after {at} MiB");
    assert!(queue.is_full());
    // Draining below the low-water mark releases it.
    while queue.is_full() {
        queue.get(true).unwrap();
    }
    assert!(queue.counts().0 < 200);
}

#[test]
fn expired_messages_are_dropped_before_delivery() {
    let (_b, v) = broker();
    let q = declare(&v, "ttl");
    let mut short = msg("", &q, "short");
    short.properties.expiration = Some("20".into());
    let mut long = msg("", &q, "long");
    long.properties.expiration = Some("60000".into());
    v.publish(short, false).unwrap();
    v.publish(long, false).unwrap();
    v.publish(msg("", &q, "forever"), false).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let queue = v.queue(&q, 1).unwrap();
    let first = queue.get(true).expect("a live message");
    assert_eq!(
        &first.message.body[..],
        b"long",
        "the expired head was dropped"
    );
    let (c, outbox) = consumer(0, true);
    queue.add_consumer(c).unwrap();
    let got = drain(&outbox);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, "forever");
}

#[test]
fn queue_message_ttl_applies_to_every_message() {
    let (_b, v) = broker();
    let mut arguments = FieldTable::new();
    arguments.insert(
        "x-message-ttl".into(),
        switchyard_model::FieldValue::I64(10),
    );
    let spec = QueueSpec {
        name: "qttl".into(),
        durable: false,
        exclusive_owner: None,
        auto_delete: false,
        arguments,
    };
    v.apply(Command::DeclareQueue(spec), 1).unwrap();
    v.publish(msg("", "qttl", "gone"), false).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(30));
    assert!(v.queue("qttl", 1).unwrap().get(true).is_none());
    assert_eq!(v.queue("qttl", 1).unwrap().counts().0, 0);
}

#[test]
fn outbox_waker_is_called_when_an_empty_outbox_gets_an_event() {
    let (_b, v) = broker();
    let q = declare(&v, "wq");
    let queue = v.queue(&q, 1).unwrap();
    let (c, outbox) = consumer(0, true);
    queue.add_consumer(c).unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    outbox.set_waker(Some(OutboxWaker::new(move || {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    })));
    let count = || calls.load(std::sync::atomic::Ordering::SeqCst);
    v.publish(msg("", "wq", "a"), false).unwrap();
    assert_eq!(count(), 1, "first event wakes");
    v.publish(msg("", "wq", "b"), false).unwrap();
    assert_eq!(count(), 1, "outbox not empty: no second wake");
    assert_eq!(drain(&outbox).len(), 2);
    v.publish(msg("", "wq", "c"), false).unwrap();
    assert_eq!(count(), 2, "empty again: wakes again");
    outbox.set_waker(None);
    drain(&outbox);
    v.publish(msg("", "wq", "d"), false).unwrap();
    assert_eq!(count(), 2, "cleared");
    assert!(outbox.has_events());
}

#[test]
fn cc_and_bcc_route_to_more_keys_and_bcc_is_removed() {
    let (_b, v) = broker();
    for q in ["main", "copy", "blind", "other"] {
        declare(&v, q);
    }
    let mut m = msg("", "main", "x");
    let keys = |ks: &[&str]| {
        switchyard_model::FieldValue::Array(
            ks.iter()
                .map(|k| switchyard_model::FieldValue::string(*k))
                .collect(),
        )
    };
    let mut headers = FieldTable::new();
    headers.insert("CC".into(), keys(&["copy"]));
    headers.insert("BCC".into(), keys(&["blind", "main"]));
    m.properties.headers = Some(headers);
    let published = v.publish(m, false).unwrap();
    assert_eq!(published.queues, 3, "main once, copy, blind");
    for q in ["main", "copy", "blind"] {
        let got = v.queue(q, 1).unwrap().get(true).expect(q);
        let h = got.message.properties.headers.clone().unwrap_or_default();
        assert!(h.contains_key("CC"), "{q}: CC stays");
        assert!(!h.contains_key("BCC"), "{q}: BCC removed");
    }
    assert!(v.queue("other", 1).unwrap().get(true).is_none());
}
