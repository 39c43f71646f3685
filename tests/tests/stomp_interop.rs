//! STOMP ↔ AMQP ↔ MQTT through a real `switchyard` process: `/topic/a.b`
//! is routing key `a.b` on `amq.topic`, which is MQTT topic `a/b`. Bodies
//! are binary (NUL bytes, bytes that are not UTF-8); STOMP headers become
//! AMQP properties and headers and back (see `docs/stomp.md` / convert.rs);
//! persistent SENDs survive a broker crash once their RECEIPT has arrived.
//!
//! The STOMP side is the blocking client of `common/stomp.rs`, run through
//! [`blocking`]; lapin and rumqttc are async. Every wait is bounded by
//! [`STEP`].

#[macro_use]
#[path = "common/stomp.rs"]
mod stomp;

use stomp::amqp;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lapin::message::Delivery;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, ByteArray, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Outgoing, Packet, Publish, QoS};
use stomp::{Client, Frame, QUIET, STEP, Version};
use switchyard_tests::Broker;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A message body no text protocol could carry as-is.
const BINARY: &[u8] = b"\x00bin\xff\xfe\x00 \xc3\x28 end\x80\x00";

/// Runs blocking STOMP I/O without stalling the runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

// ---------------------------------------------------------------------------
// AMQP side (lapin)

/// An exclusive server-named queue bound to amq.topic with `key`.
async fn topic_queue(ch: &Channel, key: &str) -> String {
    let q = w!(ch.queue_declare(
        "".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default()
    ))
    .expect("declare");
    let name = q.name().as_str().to_owned();
    w!(ch.queue_bind(
        name.as_str().into(),
        "amq.topic".into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default()
    ))
    .expect("bind");
    name
}

/// The next message of `queue` (auto-ack), polled for at most [`STEP`].
async fn get_one(ch: &Channel, queue: &str) -> Delivery {
    let deadline = Instant::now() + STEP;
    loop {
        let got = w!(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
            .unwrap_or_else(|e| panic!("basic.get {queue}: {e}"));
        if let Some(m) = got {
            return m.delivery;
        }
        assert!(
            Instant::now() < deadline,
            "no message in {queue} within {STEP:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn header<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(&ShortString::from(name)))
}

#[track_caller]
fn header_str(props: &BasicProperties, name: &str) -> String {
    match header(props, name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        other => panic!("header {name:?}: {other:?} in {:?}", props.headers()),
    }
}

fn short(s: &Option<ShortString>) -> Option<&str> {
    s.as_ref().map(ShortString::as_str)
}

// ---------------------------------------------------------------------------
// MQTT side (rumqttc)

struct Mq {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<Event, String>>,
    task: JoinHandle<()>,
}

impl Drop for Mq {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mq {
    async fn connect(addr: SocketAddr, id: &str) -> Self {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut el) = AsyncClient::new(o, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let ev = el.poll().await.map_err(|e| e.to_string());
                let end = ev.is_err();
                if tx.send(ev).is_err() || end {
                    return;
                }
            }
        });
        let mut mq = Self { client, rx, task };
        let code = mq
            .wait_for("CONNACK", |e| match e {
                Event::Incoming(Packet::ConnAck(a)) => Some(a.code),
                _ => None,
            })
            .await;
        assert_eq!(code, ConnectReturnCode::Success);
        mq
    }

    async fn wait_for<T>(&mut self, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Err(_) => panic!("no {what} within {STEP:?}"),
                Ok(None) => panic!("MQTT event loop gone while waiting for {what}"),
                Ok(Some(Err(e))) => panic!("MQTT connection ended waiting for {what}: {e}"),
                Ok(Some(Ok(ev))) => {
                    if let Some(t) = f(&ev) {
                        return t;
                    }
                }
            }
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        w!(self.client.subscribe(filter, qos)).expect("SUBSCRIBE");
        self.wait_for("SUBACK", |e| match e {
            Event::Incoming(Packet::SubAck(_)) => Some(()),
            _ => None,
        })
        .await;
    }

    async fn publish(&mut self, topic: &str, payload: &[u8]) {
        w!(self
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec()))
        .expect("PUBLISH");
        let pkid = self
            .wait_for("outgoing PUBLISH", |e| match e {
                Event::Outgoing(Outgoing::Publish(id)) => Some(*id),
                _ => None,
            })
            .await;
        self.wait_for("PUBACK", |e| match e {
            Event::Incoming(Packet::PubAck(a)) if a.pkid == pkid => Some(()),
            _ => None,
        })
        .await;
    }

    async fn next_publish(&mut self) -> Publish {
        self.wait_for("PUBLISH", |e| match e {
            Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
        .await
    }
}

/// A 1.2 STOMP client subscribed to `dest` as `id`.
fn stomp_subscriber(addr: SocketAddr, dest: &str, id: &str) -> Client {
    let mut c = Client::connect(addr, Version::V12);
    c.receipt("SUBSCRIBE", &[("destination", dest), ("id", id)], b"");
    c
}

// ---------------------------------------------------------------------------
// STOMP → AMQP

// A STOMP SEND to /topic/a.b reaches an AMQP queue bound with a.b: body
// byte for byte, property headers as properties, custom headers (unescaped)
// as string headers, STOMP's own headers nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_send_reaches_amqp_with_properties_and_headers() {
    let broker = Broker::start();
    let (_conn, ch) = amqp(&broker).await;
    let q = topic_queue(&ch, "a.b").await;
    let addr = broker.stomp_addr();
    blocking(|| {
        let mut c = Client::connect(addr, Version::V12);
        c.send_len(
            "SEND",
            &[
                ("destination", "/topic/a.b"),
                ("receipt", "r1"),
                ("content-type", "application/octet-stream"),
                ("content-encoding", "identity"),
                ("correlation-id", "corr-1"),
                ("reply-to", "/queue/replies"),
                ("persistent", "true"),
                ("priority", "4"),
                ("type", "kind-x"),
                ("app-id", "stomp-test"),
                ("amqp-message-id", "mid-1"),
                ("expiration", "60000"),
                ("x-custom", "hello"),
                ("x-escaped", "line1\nline2:colon\\slash"),
            ],
            BINARY,
        );
        c.wait_receipt("r1");
        c.disconnect();
    });
    let d = get_one(&ch, &q).await;
    assert_eq!(&d.data[..], BINARY, "body");
    assert_eq!(d.exchange.as_str(), "amq.topic");
    assert_eq!(d.routing_key.as_str(), "a.b");
    let p = &d.properties;
    assert_eq!(short(p.content_type()), Some("application/octet-stream"));
    assert_eq!(short(p.content_encoding()), Some("identity"));
    assert_eq!(short(p.correlation_id()), Some("corr-1"));
    assert_eq!(short(p.reply_to()), Some("/queue/replies"));
    assert_eq!(
        *p.delivery_mode(),
        Some(2),
        "persistent:true → delivery_mode 2"
    );
    assert_eq!(*p.priority(), Some(4));
    assert_eq!(short(p.kind()), Some("kind-x"));
    assert_eq!(short(p.app_id()), Some("stomp-test"));
    assert_eq!(short(p.message_id()), Some("mid-1"));
    assert_eq!(short(p.expiration()), Some("60000"));
    assert_eq!(header_str(p, "x-custom"), "hello");
    assert_eq!(header_str(p, "x-escaped"), "line1\nline2:colon\\slash");
    let headers = p.headers().as_ref().expect("headers");
    for protocol in [
        "destination",
        "receipt",
        "content-length",
        "persistent",
        "content-type",
        "correlation-id",
    ] {
        assert!(
            !headers.inner().contains_key(&ShortString::from(protocol)),
            "{protocol:?} copied into AMQP headers: {headers:?}"
        );
    }
}

// Without persistent:true a /topic/ SEND is transient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_topic_send_is_transient_by_default() {
    let broker = Broker::start();
    let (_conn, ch) = amqp(&broker).await;
    let q = topic_queue(&ch, "a.b").await;
    let addr = broker.stomp_addr();
    blocking(|| {
        let mut c = Client::connect(addr, Version::V12);
        c.receipt("SEND", &[("destination", "/topic/a.b")], b"plain");
        c.disconnect();
    });
    let d = get_one(&ch, &q).await;
    assert_eq!(&d.data[..], b"plain");
    assert_ne!(*d.properties.delivery_mode(), Some(2), "{:?}", d.properties);
}

// ---------------------------------------------------------------------------
// AMQP → STOMP

// An AMQP publish with properties and typed headers reaches a STOMP
// subscriber: properties under their STOMP names, numbers and booleans as
// text, tables and arrays as JSON, byte arrays as base64, and no message
// header can pose as a STOMP protocol header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_publish_reaches_stomp_with_headers() {
    let broker = Broker::start();
    let addr = broker.stomp_addr();
    let mut s = blocking(|| stomp_subscriber(addr, "/topic/a.b", "s1"));
    let (_conn, ch) = amqp(&broker).await;

    let mut inner = FieldTable::default();
    inner.insert("k".into(), AMQPValue::LongString("v:w".into()));
    inner.insert("n".into(), AMQPValue::LongInt(1));
    let mut h = FieldTable::default();
    h.insert(
        "x-str".into(),
        AMQPValue::LongString(LongString::from("colon:back\\slash\nnl")),
    );
    h.insert("x-int".into(), AMQPValue::LongInt(42));
    h.insert("x-neg".into(), AMQPValue::LongLongInt(-7));
    h.insert("x-bool".into(), AMQPValue::Boolean(true));
    h.insert("x-table".into(), AMQPValue::FieldTable(inner));
    h.insert(
        "x-array".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongInt(1),
            AMQPValue::LongString("two".into()),
        ])),
    );
    h.insert(
        "x-bytes".into(),
        AMQPValue::ByteArray(ByteArray::from(&b"ab\0"[..])),
    );
    h.insert(
        "subscription".into(),
        AMQPValue::LongString("forged".into()),
    );
    h.insert("message-id".into(), AMQPValue::LongString("forged".into()));
    let props = BasicProperties::default()
        .with_content_type("application/x-bin".into())
        .with_correlation_id("c-2".into())
        .with_reply_to("amqp-replies".into())
        .with_message_id("m-2".into())
        .with_priority(7)
        .with_delivery_mode(2)
        .with_timestamp(1_700_000_000)
        .with_type("t-2".into())
        .with_app_id("lapin".into())
        .with_expiration("60000".into())
        .with_headers(h);
    w!(ch.confirm_select(ConfirmSelectOptions::default())).expect("confirm.select");
    let confirm = w!(ch.basic_publish(
        "amq.topic".into(),
        "a.b".into(),
        BasicPublishOptions::default(),
        BINARY,
        props
    ))
    .expect("publish");
    assert!(w!(confirm).expect("confirm").is_ack());

    let m = blocking(|| s.message());
    assert_eq!(m.body, BINARY, "{m:?}");
    let want = [
        ("subscription", "s1"),
        ("destination", "/topic/a.b"),
        ("content-type", "application/x-bin"),
        ("correlation-id", "c-2"),
        ("reply-to", "/reply-queue/amqp-replies"),
        ("amqp-message-id", "m-2"),
        ("priority", "7"),
        ("persistent", "true"),
        ("timestamp", "1700000000"),
        ("type", "t-2"),
        ("app-id", "lapin"),
        ("expiration", "60000"),
        ("x-str", "colon:back\\slash\nnl"),
        ("x-int", "42"),
        ("x-neg", "-7"),
        ("x-bool", "true"),
        ("x-table", r#"{"k":"v:w","n":1}"#),
        ("x-array", r#"[1,"two"]"#),
        ("x-bytes", "YWIA"),
    ];
    for (k, v) in want {
        assert_eq!(m.get(k), Some(v), "header {k:?} in {m:?}");
    }
    assert_eq!(
        m.get("content-length"),
        Some(BINARY.len().to_string().as_str()),
        "{m:?}"
    );
    for k in ["subscription", "message-id"] {
        let n = m.headers.iter().filter(|(n, _)| n == k).count();
        assert_eq!(n, 1, "{k:?} repeated (forged by an AMQP header?): {m:?}");
    }
    assert_ne!(m.get("message-id"), Some("forged"), "{m:?}");
    blocking(|| s.disconnect());
}

// An AMQP reply-to (a bare queue name) is usable by a STOMP replier:
// SEND to the /reply-queue/ it is shown as reaches that queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_replies_to_an_amqp_reply_to() {
    let broker = Broker::start();
    let addr = broker.stomp_addr();
    let mut s = blocking(|| stomp_subscriber(addr, "/queue/service", "srv"));
    let (_conn, ch) = amqp(&broker).await;
    let replies = w!(ch.queue_declare(
        "".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default()
    ))
    .expect("declare")
    .name()
    .as_str()
    .to_owned();
    let props = BasicProperties::default()
        .with_reply_to(replies.as_str().into())
        .with_correlation_id("rpc-1".into());
    w!(ch.basic_publish(
        "".into(),
        "service".into(),
        BasicPublishOptions::default(),
        b"question",
        props
    ))
    .expect("publish");
    blocking(|| {
        let req = s.message();
        assert_eq!(req.body, b"question");
        let reply_to = req.header("reply-to").to_owned();
        assert_eq!(reply_to, format!("/reply-queue/{replies}"), "{req:?}");
        s.receipt(
            "SEND",
            &[("destination", &reply_to), ("correlation-id", "rpc-1")],
            b"answer",
        );
        s.disconnect();
    });
    let d = get_one(&ch, &replies).await;
    assert_eq!(&d.data[..], b"answer");
    assert_eq!(short(d.properties.correlation_id()), Some("rpc-1"));
}

// A STOMP request with reply-to:/temp-queue/ reaches an AMQP service as a
// plain queue name; the service's reply through the default exchange
// arrives on the STOMP connection without a SUBSCRIBE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_service_replies_to_a_stomp_temp_queue() {
    let broker = Broker::start();
    let (_conn, ch) = amqp(&broker).await;
    w!(ch.queue_declare(
        "rpc-service".into(),
        QueueDeclareOptions::default(),
        FieldTable::default()
    ))
    .expect("declare");
    let addr = broker.stomp_addr();
    let mut c = blocking(|| {
        let mut c = Client::connect(addr, Version::V12);
        c.receipt(
            "SEND",
            &[
                ("destination", "/queue/rpc-service"),
                ("reply-to", "/temp-queue/mine"),
                ("correlation-id", "q-1"),
            ],
            b"request",
        );
        c
    });
    let req = get_one(&ch, "rpc-service").await;
    assert_eq!(&req.data[..], b"request");
    let reply_to = short(req.properties.reply_to())
        .expect("reply_to set")
        .to_owned();
    assert!(
        !reply_to.starts_with('/'),
        "an AMQP service needs a queue name, got {reply_to:?}"
    );
    let props = BasicProperties::default().with_correlation_id("q-1".into());
    w!(ch.basic_publish(
        "".into(),
        reply_to.as_str().into(),
        BasicPublishOptions::default(),
        BINARY,
        props
    ))
    .expect("publish reply");
    blocking(|| {
        let m = c.message();
        assert_eq!(m.body, BINARY, "{m:?}");
        assert_eq!(m.get("correlation-id"), Some("q-1"), "{m:?}");
        assert_eq!(m.get("destination"), Some("/temp-queue/mine"), "{m:?}");
        c.disconnect();
    });
}

// ---------------------------------------------------------------------------
// MQTT ↔ STOMP

// An MQTT publish to a/b reaches a STOMP subscriber of /topic/a.b (and of
// a wildcard), byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_publish_reaches_stomp_topic_subscriber() {
    let broker = Broker::start();
    let addr = broker.stomp_addr();
    let mut exact = blocking(|| stomp_subscriber(addr, "/topic/a.b", "exact"));
    let mut wild = blocking(|| stomp_subscriber(addr, "/topic/a.*", "wild"));
    let mut other = blocking(|| stomp_subscriber(addr, "/topic/a.c", "other"));
    let mut dev = Mq::connect(broker.mqtt_addr(), "mqtt-to-stomp").await;
    dev.publish("a/b", BINARY).await;
    blocking(|| {
        for (c, id) in [(&mut exact, "exact"), (&mut wild, "wild")] {
            let m = c.message();
            assert_eq!(m.body, BINARY, "{m:?}");
            assert_eq!(m.get("destination"), Some("/topic/a.b"), "{m:?}");
            assert_eq!(m.get("subscription"), Some(id), "{m:?}");
            assert_eq!(
                m.get("content-length"),
                Some(BINARY.len().to_string().as_str())
            );
        }
        other.assert_quiet(QUIET);
        for c in [exact, wild, other] {
            c.disconnect();
        }
    });
}

// A STOMP SEND to /topic/a.b reaches an MQTT subscriber of a/b: persistent
// at QoS 1, transient at QoS 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_send_reaches_mqtt_subscriber() {
    let broker = Broker::start();
    let mut app = Mq::connect(broker.mqtt_addr(), "stomp-to-mqtt").await;
    app.subscribe("a/b", QoS::AtLeastOnce).await;
    let addr = broker.stomp_addr();
    blocking(|| {
        let mut c = Client::connect(addr, Version::V12);
        c.send_len(
            "SEND",
            &[
                ("destination", "/topic/a.b"),
                ("persistent", "true"),
                ("receipt", "p"),
            ],
            BINARY,
        );
        c.wait_receipt("p");
        c.receipt("SEND", &[("destination", "/topic/a.b")], b"transient");
        c.receipt("SEND", &[("destination", "/topic/a.c")], b"elsewhere");
        c.disconnect();
    });
    let p = app.next_publish().await;
    assert_eq!(p.topic, "a/b");
    assert_eq!(&p.payload[..], BINARY);
    assert_eq!(p.qos, QoS::AtLeastOnce, "persistent:true → QoS 1");
    let p = app.next_publish().await;
    assert_eq!(p.topic, "a/b");
    assert_eq!(&p.payload[..], b"transient");
    assert_eq!(p.qos, QoS::AtMostOnce, "transient → QoS 0");
}

// ---------------------------------------------------------------------------
// Persistence

// Once the RECEIPT of a SEND to /queue/ (persistent by default) has
// arrived, the message survives SIGKILL; so do the SENDs of a committed
// transaction and a durable topic subscription with what it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipted_sends_survive_a_crash() {
    let mut broker = Broker::start();
    let addr = broker.stomp_addr();
    blocking(|| {
        let mut c = Client::connect(addr, Version::V12);
        c.receipt(
            "SUBSCRIBE",
            &[
                ("destination", "/topic/keep.t"),
                ("id", "dur"),
                ("durable", "true"),
            ],
            b"",
        );
        c.receipt("UNSUBSCRIBE", &[("id", "dur")], b"");
        c.send_len(
            "SEND",
            &[
                ("destination", "/queue/q"),
                ("x-keep", "yes"),
                ("receipt", "q"),
            ],
            BINARY,
        );
        c.wait_receipt("q");
        c.receipt("BEGIN", &[("transaction", "tx")], b"");
        for b in ["tx-1", "tx-2"] {
            c.send(
                "SEND",
                &[("destination", "/queue/txq"), ("transaction", "tx")],
                b.as_bytes(),
            );
        }
        c.receipt("COMMIT", &[("transaction", "tx")], b"");
        c.receipt(
            "SEND",
            &[("destination", "/topic/keep.t"), ("persistent", "true")],
            b"for the durable subscriber",
        );
        // No DISCONNECT: the crash comes right after the receipts.
    });
    broker.kill();
    broker.restart();
    let addr = broker.stomp_addr();
    blocking(|| {
        let mut c = stomp_subscriber(addr, "/queue/q", "q");
        let m = c.message();
        assert_eq!(m.body, BINARY, "{m:?}");
        assert_eq!(m.get("x-keep"), Some("yes"), "{m:?}");
        assert_eq!(m.get("persistent"), Some("true"), "{m:?}");
        c.assert_quiet(QUIET);

        c.receipt(
            "SUBSCRIBE",
            &[("destination", "/queue/txq"), ("id", "tx")],
            b"",
        );
        let got: Vec<Frame> = (0..2).map(|_| c.message()).collect();
        let bodies: Vec<String> = got.iter().map(Frame::body_str).collect();
        assert_eq!(bodies, ["tx-1", "tx-2"]);

        c.receipt(
            "SUBSCRIBE",
            &[
                ("destination", "/topic/keep.t"),
                ("id", "dur"),
                ("durable", "true"),
            ],
            b"",
        );
        let m = c.message();
        assert_eq!(m.body, b"for the durable subscriber", "{m:?}");
        c.disconnect();
    });
}
