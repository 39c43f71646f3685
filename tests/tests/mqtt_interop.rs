//! MQTT ↔ AMQP through `amq.topic`: MQTT topic `a/b/c` is routing key
//! `a.b.c`, filter `+` is `*`. rumqttc on one side, lapin on the other,
//! against a real `switchyard` process. Every wait is bounded.

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS,
    SubscribeReasonCode,
};
use switchyard_tests::Broker;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A rumqttc client; its event loop runs in a task and forwards events.
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

fn drive(mut el: EventLoop, tx: mpsc::UnboundedSender<Result<Event, String>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(ev) => {
                    if tx.send(Ok(ev)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
    })
}

impl Mq {
    async fn connect(addr: SocketAddr, id: &str) -> Self {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        let (client, el) = AsyncClient::new(o, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut mq = Self {
            client,
            rx,
            task: drive(el, tx),
        };
        let code = mq
            .wait_for("CONNACK", |e| match e {
                Event::Incoming(Packet::ConnAck(a)) => Some(a.code),
                _ => None,
            })
            .await;
        assert_eq!(code, ConnectReturnCode::Success);
        mq
    }

    /// The first event `f` accepts within [`STEP`]; others are skipped.
    async fn wait_for<T>(&mut self, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Err(_) => panic!("no {what} within {STEP:?}"),
                Ok(None) => panic!("event loop gone while waiting for {what}"),
                Ok(Some(Err(e))) => panic!("connection ended while waiting for {what}: {e}"),
                Ok(Some(Ok(ev))) => {
                    if let Some(t) = f(&ev) {
                        return t;
                    }
                    assert!(
                        !matches!(ev, Event::Incoming(Packet::Publish(_))),
                        "unexpected {ev:?} while waiting for {what}"
                    );
                }
            }
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        t!(self.client.subscribe(filter, qos)).expect("queue SUBSCRIBE");
        let codes = self
            .wait_for("SUBACK", |e| match e {
                Event::Incoming(Packet::SubAck(s)) => Some(s.return_codes.clone()),
                _ => None,
            })
            .await;
        assert_eq!(codes, vec![SubscribeReasonCode::Success(qos)]);
    }

    /// PUBLISH and wait for PUBACK (QoS 1) or just the write (QoS 0).
    async fn publish(&mut self, topic: &str, qos: QoS, payload: &[u8]) {
        t!(self.client.publish(topic, qos, false, payload.to_vec())).expect("queue PUBLISH");
        let pkid = self
            .wait_for("outgoing PUBLISH", |e| match e {
                Event::Outgoing(Outgoing::Publish(id)) => Some(*id),
                _ => None,
            })
            .await;
        if qos == QoS::AtLeastOnce {
            self.wait_for("PUBACK", |e| match e {
                Event::Incoming(Packet::PubAck(a)) if a.pkid == pkid => Some(()),
                _ => None,
            })
            .await;
        }
    }

    async fn next_publish(&mut self) -> Publish {
        self.wait_for("PUBLISH", |e| match e {
            Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    async fn assert_no_publish(&mut self) {
        let deadline = Instant::now() + QUIET;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Err(_) => return,
                Ok(Some(Ok(Event::Incoming(Packet::Publish(p))))) => {
                    panic!("expected no PUBLISH, got {p:?}")
                }
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("connection ended: {other:?}"),
            }
        }
    }
}

/// An exclusive server-named queue bound to `amq.topic` with `key`.
async fn topic_queue(ch: &Channel, key: &str) -> String {
    let q = declare(
        ch,
        "",
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
    )
    .await;
    let name = q.name().as_str().to_owned();
    t!(ch.queue_bind(
        name.as_str().into(),
        "amq.topic".into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default()
    ))
    .expect("bind to amq.topic");
    name
}

fn header<'a>(props: &'a BasicProperties, name: &str) -> &'a AMQPValue {
    let headers = props
        .headers()
        .as_ref()
        .unwrap_or_else(|| panic!("no headers; expected {name:?}"));
    headers
        .inner()
        .iter()
        .find(|(k, _)| k.as_str() == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no header {name:?} in {headers:?}"))
}

fn header_str(props: &BasicProperties, name: &str) -> String {
    match header(props, name) {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        other => panic!("header {name:?} is not a string: {other:?}"),
    }
}

fn header_int(props: &BasicProperties, name: &str) -> i64 {
    match header(props, name) {
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        other => panic!("header {name:?} is not an integer: {other:?}"),
    }
}

// An MQTT publish reaches an AMQP queue bound to amq.topic with the
// translated key, with the publisher's identity in headers; QoS 1 is
// persistent (delivery_mode 2), QoS 0 transient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_publish_reaches_amqp_consumer() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = topic_queue(&ch, "plant.*.temp").await;
    let mut sub = Sub::start(&ch, &q, BasicConsumeOptions::default())
        .await
        .expect("consume");

    let mut dev = Mq::connect(broker.mqtt_addr(), "sensor-7").await;
    dev.publish("plant/7/temp", QoS::AtLeastOnce, b"21.5").await;
    dev.publish("plant/7/humidity", QoS::AtLeastOnce, b"not for q")
        .await;
    dev.publish("plant/8/temp", QoS::AtMostOnce, b"19.0").await;

    let d = sub.next().await;
    assert_eq!(&d.data[..], b"21.5");
    assert_eq!(d.exchange.as_str(), "amq.topic");
    assert_eq!(d.routing_key.as_str(), "plant.7.temp");
    assert_eq!(*d.properties.delivery_mode(), Some(2), "QoS 1 → persistent");
    assert_eq!(header_str(&d.properties, "x-mqtt-client-id"), "sensor-7");
    assert_eq!(header_str(&d.properties, "x-mqtt-username"), "guest");
    assert_eq!(header_int(&d.properties, "x-mqtt-publish-qos"), 1);
    t!(d.ack(Default::default())).expect("ack");

    let d = sub.next().await;
    assert_eq!(&d.data[..], b"19.0");
    assert_eq!(d.routing_key.as_str(), "plant.8.temp");
    assert_ne!(*d.properties.delivery_mode(), Some(2), "QoS 0 → transient");
    assert_eq!(header_int(&d.properties, "x-mqtt-publish-qos"), 0);
    assert_eq!(header_str(&d.properties, "x-mqtt-client-id"), "sensor-7");
    t!(d.ack(Default::default())).expect("ack");
    sub.assert_quiet().await;
}

// A topic with a dot maps to a routing key with a slash, and `#` works on
// the AMQP side too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_topic_levels_map_to_words() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = topic_queue(&ch, "site.#").await;
    let mut sub = Sub::start(&ch, &q, BasicConsumeOptions::default())
        .await
        .expect("consume");
    let mut dev = Mq::connect(broker.mqtt_addr(), "mapper").await;
    dev.publish("site/a/b/c", QoS::AtLeastOnce, b"deep").await;
    dev.publish("site/v1.2", QoS::AtLeastOnce, b"dotted").await;
    let d = sub.next().await;
    assert_eq!(
        (d.routing_key.as_str(), &d.data[..]),
        ("site.a.b.c", &b"deep"[..])
    );
    let d = sub.next().await;
    assert_eq!(
        (d.routing_key.as_str(), &d.data[..]),
        ("site.v1/2", &b"dotted"[..])
    );
}

// An AMQP publish to amq.topic reaches an MQTT subscriber whose filter
// matches the translated topic; a persistent message is delivered at QoS 1
// to a QoS 1 subscription, a transient one at QoS 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_publish_reaches_mqtt_subscriber() {
    let broker = Broker::start();
    let mut app = Mq::connect(broker.mqtt_addr(), "app").await;
    app.subscribe("plant/+/temp", QoS::AtLeastOnce).await;

    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let c = publish_with(&ch, "amq.topic", "plant.7.temp", b"22.0", persistent()).await;
    assert!(c.is_ack(), "publish not acked: {c:?}");
    publish(&ch, "amq.topic", "plant.7.pressure", b"no match").await;
    publish_with(&ch, "amq.topic", "plant.9.temp", b"18.5", transient()).await;

    let p = app.next_publish().await;
    assert_eq!(p.topic, "plant/7/temp");
    assert_eq!(&p.payload[..], b"22.0");
    assert_eq!(p.qos, QoS::AtLeastOnce);
    let p = app.next_publish().await;
    assert_eq!(p.topic, "plant/9/temp");
    assert_eq!(&p.payload[..], b"18.5");
    assert_eq!(p.qos, QoS::AtMostOnce);
    app.assert_no_publish().await;
}

// MQTT publisher to MQTT subscriber and AMQP consumer at once: one publish,
// fanned out by amq.topic to both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publish_fans_out_to_both_protocols() {
    let broker = Broker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = topic_queue(&ch, "fan.#").await;
    let mut amqp_sub = Sub::start(&ch, &q, BasicConsumeOptions::default())
        .await
        .expect("consume");
    let mut mqtt_sub = Mq::connect(broker.mqtt_addr(), "fan-sub").await;
    mqtt_sub.subscribe("fan/#", QoS::AtLeastOnce).await;
    let mut dev = Mq::connect(broker.mqtt_addr(), "fan-pub").await;
    dev.publish("fan/out", QoS::AtLeastOnce, b"both").await;
    assert_eq!(amqp_sub.next_acked().await, "both");
    let p = mqtt_sub.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("fan/out", &b"both"[..])
    );
}
