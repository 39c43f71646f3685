//! MQTT 5.0 end to end against a real `switchyard` process: rumqttc's v5
//! client for what it can send, lapin for the AMQP side of the property
//! mapping, rumqttc's 3.1.1 client for interop, and raw bytes
//! ([`RawClient`]) for what no client library sends (AUTH, unknown topic
//! aliases, an authentication method, DISCONNECT without a reason code...).
//!
//! Each rumqttc client's event loop runs in its own task and forwards every
//! event into a channel ([`Mq5`]); the task stops at the first connection
//! error, so rumqttc never reconnects behind a test's back. Every wait is
//! bounded by [`WAIT`] (10 s) or less.
//!
//! Spec references are to MQTT Version 5.0 (OASIS standard, 2019).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lapin::message::DeliveryResult;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectReturnCode, DisconnectReasonCode, Filter, LastWill, LastWillProperties, Packet,
    PubAckReason, PubRecReason, Publish, PublishProperties, RetainForwardRule, SubscribeProperties,
    SubscribeReasonCode, UnsubAckReason,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
use switchyard_tests::{Broker, RawClient};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bound on any single wait.
const WAIT: Duration = Duration::from_secs(10);
/// How long to watch for something that must *not* arrive.
const QUIET: Duration = Duration::from_millis(500);
/// Bound on one raw-socket read (well under the broker's 10 s CONNECT
/// deadline, so a close seen within it is the broker's answer).
const READ: Duration = Duration::from_secs(5);

/// `w!(future)`: awaits `future` for at most [`WAIT`].
macro_rules! w {
    ($fut:expr) => {
        match ::tokio::time::timeout(WAIT, $fut).await {
            Ok(v) => v,
            Err(_) => panic!("timed out after {WAIT:?} awaiting `{}`", stringify!($fut)),
        }
    };
}

// ---------------------------------------------------------------------------
// rumqttc v5 client driven from a task
// ---------------------------------------------------------------------------

/// What the event-loop task reports.
#[derive(Debug)]
enum Ev {
    Event(Box<Event>),
    /// The connection ended (the task has stopped).
    Ended(ConnectionError),
}

/// One rumqttc v5 client whose event loop runs in a task of its own.
struct Mq5 {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Ev>,
    task: Option<JoinHandle<()>>,
    /// Publishes that arrived while waiting for something else, in order.
    publishes: VecDeque<Publish>,
}

/// How the broker acknowledged a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acked {
    /// QoS 0: written.
    Sent,
    PubAck(PubAckReason),
    /// QoS 2: the PUBREC reason (PUBCOMP was awaited too).
    PubRec(PubRecReason),
}

fn opts(addr: SocketAddr, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// A session that outlives the connection (session expiry 300 s).
fn persistent_opts(addr: SocketAddr, id: &str, clean_start: bool) -> MqttOptions {
    let mut o = opts(addr, id);
    o.set_clean_start(clean_start);
    o.set_session_expiry_interval(Some(300));
    o
}

fn topic(p: &Publish) -> String {
    String::from_utf8_lossy(&p.topic).into_owned()
}

fn text(p: &Publish) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

fn pprops(p: &Publish) -> PublishProperties {
    p.properties
        .clone()
        .unwrap_or_else(|| panic!("PUBLISH without properties: {p:?}"))
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Mq5 {
    fn spawn(o: MqttOptions) -> Self {
        let (client, mut el) = AsyncClient::new(o, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(ev) => {
                        if tx.send(Ev::Event(Box::new(ev))).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Ev::Ended(e));
                        return;
                    }
                }
            }
        });
        Self {
            client,
            rx,
            task: Some(task),
            publishes: VecDeque::new(),
        }
    }

    /// Connects and returns the CONNACK; panics if refused.
    async fn connect(o: MqttOptions) -> (Self, ConnAck) {
        let id = o.client_id();
        let mut mq = Self::spawn(o);
        let ack = mq
            .wait_for(&format!("CONNACK for {id:?}"), |e| match e {
                Event::Incoming(Packet::ConnAck(a)) => Some(a.clone()),
                _ => None,
            })
            .await;
        assert_eq!(ack.code, ConnectReturnCode::Success, "CONNACK of {id:?}");
        (mq, ack)
    }

    /// A clean-start client (session ends with the connection).
    async fn start(addr: SocketAddr, id: &str) -> Self {
        let (mq, ack) = Self::connect(opts(addr, id)).await;
        assert!(!ack.session_present, "clean start reported as present");
        mq
    }

    async fn recv(&mut self, within: Duration) -> Option<Ev> {
        match tokio::time::timeout(within, self.rx.recv()).await {
            Ok(Some(ev)) => Some(ev),
            Ok(None) => panic!("event loop task gone without reporting an error"),
            Err(_) => None,
        }
    }

    /// Waits (at most [`WAIT`]) for the first event `f` accepts. Publishes
    /// it does not accept are kept for [`Mq5::next_publish`].
    async fn wait_for<T>(&mut self, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                None => panic!("no {what} within {WAIT:?}"),
                Some(Ev::Ended(e)) => panic!("connection ended while waiting for {what}: {e:?}"),
                Some(Ev::Event(ev)) => {
                    if let Some(t) = f(&ev) {
                        return t;
                    }
                    if let Event::Incoming(Packet::Publish(p)) = *ev {
                        self.publishes.push_back(p);
                    }
                }
            }
        }
    }

    async fn next_publish(&mut self) -> Publish {
        if let Some(p) = self.publishes.pop_front() {
            return p;
        }
        self.wait_for("PUBLISH", |e| match e {
            Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// The next PUBLISH if one arrives within `within`.
    async fn try_next_publish(&mut self, within: Duration) -> Option<Publish> {
        if let Some(p) = self.publishes.pop_front() {
            return Some(p);
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                None => return None,
                Some(Ev::Event(ev)) => {
                    if let Event::Incoming(Packet::Publish(p)) = *ev {
                        return Some(p);
                    }
                }
                Some(Ev::Ended(e)) => panic!("connection ended: {e:?}"),
            }
        }
    }

    async fn assert_no_publish(&mut self, within: Duration) {
        if let Some(p) = self.publishes.pop_front() {
            panic!("expected no PUBLISH, got {p:?}");
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                None => return,
                Some(Ev::Event(ev)) => {
                    if let Event::Incoming(Packet::Publish(p)) = *ev {
                        panic!("expected no PUBLISH, got {p:?}")
                    }
                }
                Some(Ev::Ended(e)) => panic!("connection ended: {e:?}"),
            }
        }
    }

    /// SUBSCRIBE with these filters (and properties) and return the SUBACK
    /// reason codes.
    async fn subscribe_filters(
        &mut self,
        filters: Vec<Filter>,
        properties: Option<SubscribeProperties>,
    ) -> Vec<SubscribeReasonCode> {
        match properties {
            Some(p) => w!(self.client.subscribe_many_with_properties(filters, p)),
            None => w!(self.client.subscribe_many(filters)),
        }
        .expect("queue SUBSCRIBE");
        let pkid = self
            .wait_for("outgoing SUBSCRIBE", |e| match e {
                Event::Outgoing(Outgoing::Subscribe(id)) => Some(*id),
                _ => None,
            })
            .await;
        self.wait_for(&format!("SUBACK {pkid}"), |e| match e {
            Event::Incoming(Packet::SubAck(s)) if s.pkid == pkid => Some(s.return_codes.clone()),
            _ => None,
        })
        .await
    }

    /// SUBSCRIBE one filter, which must be granted `qos`.
    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        let codes = self
            .subscribe_filters(vec![Filter::new(filter, qos)], None)
            .await;
        assert_eq!(
            codes,
            [SubscribeReasonCode::Success(qos)],
            "SUBACK for {filter:?}"
        );
    }

    async fn unsubscribe(&mut self, filter: &str) -> Vec<UnsubAckReason> {
        w!(self.client.unsubscribe(filter)).expect("queue UNSUBSCRIBE");
        let pkid = self
            .wait_for("outgoing UNSUBSCRIBE", |e| match e {
                Event::Outgoing(Outgoing::Unsubscribe(id)) => Some(*id),
                _ => None,
            })
            .await;
        self.wait_for(&format!("UNSUBACK {pkid}"), |e| match e {
            Event::Incoming(Packet::UnsubAck(u)) if u.pkid == pkid => Some(u.reasons.clone()),
            _ => None,
        })
        .await
    }

    /// PUBLISH and wait until the broker has taken it: written (QoS 0),
    /// PUBACK (QoS 1) or PUBREC and PUBCOMP (QoS 2).
    async fn publish_with(
        &mut self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: &[u8],
        properties: Option<PublishProperties>,
    ) -> Acked {
        match properties {
            Some(p) => {
                w!(self
                    .client
                    .publish_with_properties(topic, qos, retain, payload.to_vec(), p))
            }
            None => w!(self.client.publish(topic, qos, retain, payload.to_vec())),
        }
        .expect("queue PUBLISH");
        let pkid = self
            .wait_for(&format!("outgoing PUBLISH to {topic:?}"), |e| match e {
                Event::Outgoing(Outgoing::Publish(id)) => Some(*id),
                _ => None,
            })
            .await;
        match qos {
            QoS::AtMostOnce => Acked::Sent,
            QoS::AtLeastOnce => {
                self.wait_for(&format!("PUBACK {pkid}"), |e| match e {
                    Event::Incoming(Packet::PubAck(a)) if a.pkid == pkid => {
                        Some(Acked::PubAck(a.reason))
                    }
                    _ => None,
                })
                .await
            }
            QoS::ExactlyOnce => {
                let rec = self
                    .wait_for(&format!("PUBREC {pkid}"), |e| match e {
                        Event::Incoming(Packet::PubRec(r)) if r.pkid == pkid => Some(r.reason),
                        _ => None,
                    })
                    .await;
                self.wait_for(&format!("PUBCOMP {pkid}"), |e| match e {
                    Event::Incoming(Packet::PubComp(c)) if c.pkid == pkid => Some(()),
                    _ => None,
                })
                .await;
                Acked::PubRec(rec)
            }
        }
    }

    async fn publish(&mut self, topic: &str, qos: QoS, payload: &[u8]) -> Acked {
        self.publish_with(topic, qos, false, payload, None).await
    }

    /// Waits for the connection to end, skipping other events (publishes
    /// are kept).
    async fn expect_end(&mut self) -> ConnectionError {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                None => panic!("connection still open after {WAIT:?}"),
                Some(Ev::Ended(e)) => return e,
                Some(Ev::Event(ev)) => {
                    if let Event::Incoming(Packet::Publish(p)) = *ev {
                        self.publishes.push_back(p);
                    }
                }
            }
        }
    }

    /// Clean DISCONNECT; waits until the broker has closed the socket.
    async fn disconnect(mut self) {
        w!(self.client.disconnect()).expect("queue DISCONNECT");
        self.wait_for("outgoing DISCONNECT", |e| {
            matches!(e, Event::Outgoing(Outgoing::Disconnect)).then_some(())
        })
        .await;
        self.expect_end().await;
    }

    /// Drops the socket without DISCONNECT (an abnormal disconnect).
    async fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = w!(task);
        }
    }
}

impl Drop for Mq5 {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The DISCONNECT reason code a connection error carries, if the client
/// decoded a server DISCONNECT.
fn server_disconnect_reason(e: &ConnectionError) -> Option<DisconnectReasonCode> {
    match e {
        ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. }) => {
            Some(*reason_code)
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// rumqttc 3.1.1 client, for interop
// ---------------------------------------------------------------------------

/// A rumqttc 3.1.1 client (protocol level 4).
struct Mq4 {
    client: rumqttc::AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<rumqttc::Event, String>>,
    task: JoinHandle<()>,
    /// Publishes that arrived while waiting for something else, in order.
    publishes: VecDeque<rumqttc::Publish>,
}

impl Drop for Mq4 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mq4 {
    async fn start(addr: SocketAddr, id: &str) -> Self {
        let mut o = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut el) = rumqttc::AsyncClient::new(o, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
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
        });
        let mut mq = Self {
            client,
            rx,
            task,
            publishes: VecDeque::new(),
        };
        let ack = mq
            .wait_for("3.1.1 CONNACK", |e| match e {
                rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a)) => Some(a.clone()),
                _ => None,
            })
            .await;
        assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
        assert!(!ack.session_present);
        mq
    }

    async fn wait_for<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&rumqttc::Event) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Err(_) => panic!("no {what} within {WAIT:?}"),
                Ok(None) => panic!("event loop gone while waiting for {what}"),
                Ok(Some(Err(e))) => panic!("connection ended while waiting for {what}: {e}"),
                Ok(Some(Ok(ev))) => {
                    if let Some(t) = f(&ev) {
                        return t;
                    }
                    if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = ev {
                        self.publishes.push_back(p);
                    }
                }
            }
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: rumqttc::QoS) {
        w!(self.client.subscribe(filter, qos)).expect("queue SUBSCRIBE");
        let codes = self
            .wait_for("3.1.1 SUBACK", |e| match e {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(s)) => {
                    Some(s.return_codes.clone())
                }
                _ => None,
            })
            .await;
        assert_eq!(codes, [rumqttc::SubscribeReasonCode::Success(qos)]);
    }

    /// QoS 1 PUBLISH, waiting for the PUBACK.
    async fn publish_qos1(&mut self, topic: &str, payload: &[u8]) {
        w!(self
            .client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.to_vec()))
        .expect("queue PUBLISH");
        let pkid = self
            .wait_for("3.1.1 outgoing PUBLISH", |e| match e {
                rumqttc::Event::Outgoing(Outgoing::Publish(id)) => Some(*id),
                _ => None,
            })
            .await;
        self.wait_for("3.1.1 PUBACK", |e| match e {
            rumqttc::Event::Incoming(rumqttc::Packet::PubAck(a)) if a.pkid == pkid => Some(()),
            _ => None,
        })
        .await;
    }

    async fn next_publish(&mut self) -> rumqttc::Publish {
        if let Some(p) = self.publishes.pop_front() {
            return p;
        }
        self.wait_for("3.1.1 PUBLISH", |e| match e {
            rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
        .await
    }
}

// ---------------------------------------------------------------------------
// lapin helpers (every await bounded by WAIT)
// ---------------------------------------------------------------------------

async fn amqp(broker: &Broker) -> (Connection, Channel) {
    let conn = w!(Connection::connect(
        &broker.amqp_uri(),
        ConnectionProperties::default()
    ))
    .expect("AMQP connect");
    let ch = w!(conn.create_channel()).expect("AMQP channel");
    (conn, ch)
}

/// An exclusive server-named queue bound to `amq.topic` with `key`,
/// consumed (no-ack) into a channel.
struct AmqpSub {
    _consumer: Consumer,
    rx: mpsc::UnboundedReceiver<DeliveryResult>,
}

impl AmqpSub {
    async fn bind(ch: &Channel, key: &str) -> Self {
        let q = w!(ch.queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default()
        ))
        .expect("declare queue");
        let name = q.name().as_str().to_owned();
        w!(ch.queue_bind(
            name.as_str().into(),
            "amq.topic".into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default()
        ))
        .expect("bind to amq.topic");
        let consumer = w!(ch.basic_consume(
            name.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default()
        ))
        .expect("consume");
        let (tx, rx) = mpsc::unbounded_channel();
        consumer.set_delegate(move |d: DeliveryResult| {
            let _ = tx.send(d);
            async {}
        });
        Self {
            _consumer: consumer,
            rx,
        }
    }

    async fn next(&mut self) -> lapin::message::Delivery {
        match tokio::time::timeout(WAIT, self.rx.recv()).await {
            Ok(Some(Ok(Some(d)))) => d,
            Ok(other) => panic!("AMQP consumer ended: {other:?}"),
            Err(_) => panic!("no AMQP delivery within {WAIT:?}"),
        }
    }

    async fn assert_quiet(&mut self) {
        if let Ok(got) = tokio::time::timeout(QUIET, self.rx.recv()).await {
            panic!("expected no AMQP delivery, got {got:?}");
        }
    }
}

async fn amqp_publish(ch: &Channel, key: &str, body: &[u8], props: BasicProperties) {
    let confirm = w!(ch.basic_publish(
        "amq.topic".into(),
        key.into(),
        BasicPublishOptions::default(),
        body,
        props
    ))
    .expect("basic.publish");
    w!(confirm).expect("publish confirm");
}

fn header<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().iter().find(|(k, _)| k.as_str() == name))
        .map(|(_, v)| v)
}

fn amqp_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        other => panic!("not a string: {other:?}"),
    }
}

fn short(v: &Option<ShortString>) -> Option<&str> {
    v.as_ref().map(ShortString::as_str)
}

// ---------------------------------------------------------------------------
// CONNECT / CONNACK
// ---------------------------------------------------------------------------

// CONNACK properties (3.2.2.3): receive maximum 64 (the broker's in-flight
// limit), topic alias maximum 64, maximum packet size, retain / wildcard /
// subscription identifiers available, shared subscriptions not; no
// assigned client identifier when the client chose one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_properties() {
    let broker = Broker::start();
    let (mq, ack) = Mq5::connect(opts(broker.mqtt_addr(), "props-client")).await;
    assert!(!ack.session_present);
    let p = ack.properties.expect("CONNACK properties");
    assert_eq!(p.receive_max, Some(64), "receive maximum");
    assert_eq!(p.topic_alias_max, Some(64), "topic alias maximum");
    assert_eq!(p.max_packet_size, Some(16 << 20), "maximum packet size");
    assert_eq!(p.retain_available, Some(1), "retain available");
    assert_eq!(p.wildcard_subscription_available, Some(1));
    assert_eq!(p.subscription_identifiers_available, Some(1));
    assert_eq!(p.shared_subscription_available, Some(1));
    assert_eq!(p.assigned_client_identifier, None);
    assert_eq!(p.max_qos, None, "QoS 2 is supported: no maximum QoS");
    assert!(p.authentication_method.is_none());
    mq.disconnect().await;
}

// An empty client id is assigned one (3.1.3.1, 3.2.2.3.7); two such
// clients get different ids, and the id is the one the session uses (the
// AMQP side sees it as x-mqtt-client-id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigned_client_identifier_for_empty_id() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let (_conn, ch) = amqp(&broker).await;
    let mut sub = AmqpSub::bind(&ch, "assigned.#").await;

    let (mut a, ack_a) = Mq5::connect(opts(addr, "")).await;
    let id_a = ack_a
        .properties
        .and_then(|p| p.assigned_client_identifier)
        .expect("assigned client identifier");
    let (b, ack_b) = Mq5::connect(opts(addr, "")).await;
    let id_b = ack_b
        .properties
        .and_then(|p| p.assigned_client_identifier)
        .expect("assigned client identifier");
    assert!(!id_a.is_empty() && !id_b.is_empty());
    assert_ne!(id_a, id_b, "two empty-id clients got the same id");

    a.publish("assigned/x", QoS::AtLeastOnce, b"who").await;
    let d = sub.next().await;
    let who = header(&d.properties, "x-mqtt-client-id").map(amqp_text);
    assert_eq!(who.as_deref(), Some(id_a.as_str()));
    a.disconnect().await;
    b.disconnect().await;
}

// ---------------------------------------------------------------------------
// Publish / subscribe
// ---------------------------------------------------------------------------

// QoS 0, 1 and 2 from a v5 publisher to a v5 subscriber granted QoS 2: each
// arrives once, in order, at the QoS it was published with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_0_1_2_round_trip() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut sub = Mq5::start(addr, "rt5-sub").await;
    sub.subscribe("rt5/#", QoS::ExactlyOnce).await;
    let mut publ = Mq5::start(addr, "rt5-pub").await;
    assert_eq!(
        publ.publish("rt5/a", QoS::AtMostOnce, b"zero").await,
        Acked::Sent
    );
    assert_eq!(
        publ.publish("rt5/b", QoS::AtLeastOnce, b"one").await,
        Acked::PubAck(PubAckReason::Success)
    );
    assert_eq!(
        publ.publish("rt5/c/d", QoS::ExactlyOnce, b"two").await,
        Acked::PubRec(PubRecReason::Success)
    );
    for (t, body, qos) in [
        ("rt5/a", "zero", QoS::AtMostOnce),
        ("rt5/b", "one", QoS::AtLeastOnce),
        ("rt5/c/d", "two", QoS::ExactlyOnce),
    ] {
        let p = sub.next_publish().await;
        assert_eq!(
            (topic(&p).as_str(), text(&p).as_str(), p.qos),
            (t, body, qos)
        );
        assert!(!p.retain && !p.dup);
    }
    sub.assert_no_publish(QUIET).await;
    publ.disconnect().await;
    sub.disconnect().await;
}

fn rich_properties(correlation: &[u8]) -> PublishProperties {
    PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        topic_alias: None,
        response_topic: Some("resp/dev-1".into()),
        correlation_data: Some(correlation.to_vec().into()),
        user_properties: pairs(&[("site", "north"), ("tag", "x"), ("tag", "y")]),
        subscription_identifiers: Vec::new(),
        content_type: Some("application/json".into()),
    }
}

// PUBLISH properties reach a v5 subscriber (3.3.2.3): content type,
// response topic, correlation data (UTF-8 and binary), user properties in
// order with a repeated key, payload format, and a message expiry no larger
// than the one published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_properties_reach_v5_subscriber() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut sub = Mq5::start(addr, "props-sub").await;
    sub.subscribe("props/#", QoS::AtLeastOnce).await;
    let mut publ = Mq5::start(addr, "props-pub").await;
    let binary = [0x00u8, 0xff, 0xfe, b'i', b'd'];
    for (t, corr) in [("props/text", &b"req-42"[..]), ("props/bin", &binary[..])] {
        publ.publish_with(
            t,
            QoS::AtLeastOnce,
            false,
            b"{\"t\":21}",
            Some(rich_properties(corr)),
        )
        .await;
        let p = sub.next_publish().await;
        assert_eq!(topic(&p), t);
        assert_eq!(&p.payload[..], b"{\"t\":21}");
        let pr = pprops(&p);
        assert_eq!(pr.content_type.as_deref(), Some("application/json"));
        assert_eq!(pr.response_topic.as_deref(), Some("resp/dev-1"));
        assert_eq!(pr.correlation_data.as_deref(), Some(corr), "on {t}");
        assert_eq!(pr.payload_format_indicator, Some(1));
        let expiry = pr.message_expiry_interval.expect("message expiry interval");
        assert!((1..=60).contains(&expiry), "expiry {expiry}");
        assert_eq!(
            sorted(pr.user_properties.clone()),
            pairs(&[("site", "north"), ("tag", "x"), ("tag", "y")])
        );
        // The repeated key keeps its order (3.3.2.3.7).
        let tags: Vec<&str> = pr
            .user_properties
            .iter()
            .filter(|(k, _)| k == "tag")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(tags, ["x", "y"]);
        assert!(
            pr.user_properties.iter().all(|(k, _)| !k.starts_with("x-")),
            "broker-internal headers leaked: {:?}",
            pr.user_properties
        );
        assert_eq!(pr.topic_alias, None);
        assert!(pr.subscription_identifiers.is_empty());
    }
    // Without properties, none arrive.
    publ.publish("props/plain", QoS::AtLeastOnce, b"plain")
        .await;
    let p = sub.next_publish().await;
    assert_eq!(p.properties, None, "properties on a plain publish");
}

// The same properties as the AMQP model (props.rs): content_type, reply_to
// = the response topic as written, correlation_id for UTF-8 correlation
// data or the x-mqtt-correlation-data header (bytes) for binary, expiration
// in ms, user properties as headers, a repeated key as an array.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_properties_reach_amqp_consumer() {
    let broker = Broker::start();
    let (_conn, ch) = amqp(&broker).await;
    let mut sub = AmqpSub::bind(&ch, "mprops.#").await;
    let mut publ = Mq5::start(broker.mqtt_addr(), "props-amqp-pub").await;

    publ.publish_with(
        "mprops/text",
        QoS::AtLeastOnce,
        false,
        b"t",
        Some(rich_properties(b"req-42")),
    )
    .await;
    let d = sub.next().await;
    assert_eq!(d.routing_key.as_str(), "mprops.text");
    let p = &d.properties;
    assert_eq!(short(p.content_type()), Some("application/json"));
    assert_eq!(short(p.reply_to()), Some("resp/dev-1"));
    assert_eq!(short(p.correlation_id()), Some("req-42"));
    assert_eq!(short(p.expiration()), Some("60000"));
    assert_eq!(*p.delivery_mode(), Some(2));
    assert_eq!(header(p, "site").map(amqp_text).as_deref(), Some("north"));
    match header(p, "tag") {
        Some(AMQPValue::FieldArray(a)) => {
            let tags: Vec<String> = a.as_slice().iter().map(amqp_text).collect();
            assert_eq!(tags, ["x", "y"]);
        }
        other => panic!("header tag is not an array: {other:?}"),
    }
    assert!(header(p, "x-mqtt-correlation-data").is_none());

    let binary = [0x00u8, 0xff, 0xfe, b'i', b'd'];
    publ.publish_with(
        "mprops/bin",
        QoS::AtLeastOnce,
        false,
        b"b",
        Some(rich_properties(&binary)),
    )
    .await;
    let d = sub.next().await;
    assert_eq!(d.routing_key.as_str(), "mprops.bin");
    assert_eq!(short(d.properties.correlation_id()), None);
    match header(&d.properties, "x-mqtt-correlation-data") {
        Some(AMQPValue::ByteArray(b)) => assert_eq!(b.as_slice(), binary),
        other => panic!("x-mqtt-correlation-data: {other:?}"),
    }
    sub.assert_quiet().await;
}

// An AMQP publish's properties reach a v5 subscriber: headers as user
// properties (as text; an array as one property per element), correlation
// id as correlation data, reply-to as response topic, content type,
// expiration as message expiry (seconds). Persistent → QoS 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_properties_reach_v5_subscriber() {
    let broker = Broker::start();
    let mut sub = Mq5::start(broker.mqtt_addr(), "from-amqp").await;
    sub.subscribe("fromamqp/+", QoS::AtLeastOnce).await;
    let (_conn, ch) = amqp(&broker).await;
    let mut headers = FieldTable::default();
    headers.insert(
        "site".into(),
        AMQPValue::LongString(LongString::from("south")),
    );
    headers.insert("count".into(), AMQPValue::LongInt(7));
    headers.insert("flag".into(), AMQPValue::Boolean(true));
    headers.insert(
        "tags".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongString(LongString::from("x")),
            AMQPValue::LongString(LongString::from("y")),
        ])),
    );
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers)
        .with_correlation_id("corr-1".into())
        .with_reply_to("replies/amqp".into())
        .with_content_type("text/plain".into())
        .with_expiration("30000".into());
    amqp_publish(&ch, "fromamqp.x", b"from amqp", props).await;

    let p = sub.next_publish().await;
    assert_eq!(topic(&p), "fromamqp/x");
    assert_eq!(text(&p), "from amqp");
    assert_eq!(p.qos, QoS::AtLeastOnce, "persistent → QoS 1");
    let pr = pprops(&p);
    assert_eq!(pr.content_type.as_deref(), Some("text/plain"));
    assert_eq!(pr.response_topic.as_deref(), Some("replies/amqp"));
    assert_eq!(pr.correlation_data.as_deref(), Some(&b"corr-1"[..]));
    let expiry = pr.message_expiry_interval.expect("message expiry");
    assert!((1..=30).contains(&expiry), "expiry {expiry}");
    assert_eq!(
        sorted(pr.user_properties),
        pairs(&[
            ("count", "7"),
            ("flag", "true"),
            ("site", "south"),
            ("tags", "x"),
            ("tags", "y"),
        ])
    );
    sub.assert_no_publish(QUIET).await;
}

// MQTT 5 and 3.1.1 clients on one broker: a v5 publish with properties
// reaches a 3.1.1 subscriber (payload only); a 3.1.1 publish reaches a v5
// subscriber without any (internal headers stay in the broker); a 3.1.1
// publish nobody subscribed to still gets a plain PUBACK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_and_v311_interop() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut old = Mq4::start(addr, "mix-v4").await;
    old.subscribe("mix/#", rumqttc::QoS::AtLeastOnce).await;
    let mut new = Mq5::start(addr, "mix-v5").await;
    new.subscribe("mix/#", QoS::AtLeastOnce).await;

    new.publish_with(
        "mix/from5",
        QoS::AtLeastOnce,
        false,
        b"five",
        Some(rich_properties(b"c5")),
    )
    .await;
    let p = old.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos),
        ("mix/from5", &b"five"[..], rumqttc::QoS::AtLeastOnce)
    );
    let p = new.next_publish().await;
    assert_eq!(topic(&p), "mix/from5");
    assert_eq!(pprops(&p).correlation_data.as_deref(), Some(&b"c5"[..]));

    old.publish_qos1("mix/from4", b"four").await;
    let p = old.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("mix/from4", &b"four"[..])
    );
    let p = new.next_publish().await;
    assert_eq!(
        (topic(&p).as_str(), text(&p).as_str()),
        ("mix/from4", "four")
    );
    assert_eq!(p.qos, QoS::AtLeastOnce);
    assert_eq!(
        p.properties, None,
        "3.1.1 publish delivered with properties"
    );

    // No subscriber: 3.1.1 has no reason code, the PUBACK is plain.
    old.publish_qos1("nobody/v4", b"void").await;
    old.subscribe("after/v4", rumqttc::QoS::AtMostOnce).await;
}

// A subscription identifier (3.8.2.1.2) comes back in every PUBLISH the
// subscription matches; a message matching two subscriptions of one client
// arrives once with both identifiers; a subscription without one adds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_identifiers_echoed() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut sub = Mq5::start(addr, "sid-sub").await;
    let with_id = |id| SubscribeProperties {
        id: Some(id),
        user_properties: Vec::new(),
    };
    let codes = sub
        .subscribe_filters(
            vec![Filter::new("sid/+", QoS::AtLeastOnce)],
            Some(with_id(42)),
        )
        .await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    let codes = sub
        .subscribe_filters(
            vec![Filter::new("sid/#", QoS::AtLeastOnce)],
            Some(with_id(7)),
        )
        .await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    sub.subscribe("noid/x", QoS::AtLeastOnce).await;

    let mut publ = Mq5::start(addr, "sid-pub").await;
    publ.publish("sid/a", QoS::AtLeastOnce, b"both").await;
    publ.publish("sid/a/b", QoS::AtLeastOnce, b"hash only")
        .await;
    publ.publish("noid/x", QoS::AtLeastOnce, b"none").await;

    let p = sub.next_publish().await;
    assert_eq!(text(&p), "both");
    let mut ids = pprops(&p).subscription_identifiers;
    ids.sort_unstable();
    assert_eq!(ids, [7, 42]);
    let p = sub.next_publish().await;
    assert_eq!(text(&p), "hash only");
    assert_eq!(pprops(&p).subscription_identifiers, [7]);
    let p = sub.next_publish().await;
    assert_eq!(text(&p), "none");
    assert!(
        p.properties
            .is_none_or(|pr| pr.subscription_identifiers.is_empty()),
        "identifier on a subscription without one"
    );
    sub.assert_no_publish(QUIET).await;
}

// No Local (3.8.3.1): the subscriber's own publishes are not sent back, a
// second client's are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut me = Mq5::start(addr, "nl-me").await;
    let mut f = Filter::new("nl/t", QoS::AtLeastOnce);
    f.nolocal = true;
    let codes = me.subscribe_filters(vec![f], None).await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    me.publish("nl/t", QoS::AtLeastOnce, b"own").await;
    me.publish("nl/t", QoS::AtMostOnce, b"own0").await;
    let mut other = Mq5::start(addr, "nl-other").await;
    other.publish("nl/t", QoS::AtLeastOnce, b"other").await;
    let p = me.next_publish().await;
    assert_eq!(text(&p), "other", "own message delivered despite no-local");
    me.assert_no_publish(QUIET).await;

    // Without no-local the own message comes back.
    let mut echo = Mq5::start(addr, "nl-echo").await;
    echo.subscribe("nl/echo", QoS::AtLeastOnce).await;
    echo.publish("nl/echo", QoS::AtLeastOnce, b"mine").await;
    assert_eq!(text(&echo.next_publish().await), "mine");
}

fn filter_with(path: &str, rule: RetainForwardRule, rap: bool) -> Filter {
    let mut f = Filter::new(path, QoS::AtLeastOnce);
    f.retain_forward_rule = rule;
    f.preserve_retain = rap;
    f
}

// Retain Handling (3.8.3.1): 0 sends retained messages on every SUBSCRIBE,
// 1 only when the subscription is new, 2 never; live messages still flow
// with 2. Retained messages sent on subscribe carry RETAIN and the
// subscription identifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut publ = Mq5::start(addr, "rh-pub").await;
    publ.publish_with("rh/t", QoS::AtLeastOnce, true, b"kept", None)
        .await;

    // 2: never.
    let mut never = Mq5::start(addr, "rh-never").await;
    let codes = never
        .subscribe_filters(
            vec![filter_with("rh/t", RetainForwardRule::Never, false)],
            None,
        )
        .await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    never.assert_no_publish(QUIET).await;

    // 0: every time, with the subscription identifier.
    let mut every = Mq5::start(addr, "rh-every").await;
    for round in 0..2 {
        let props = SubscribeProperties {
            id: Some(5),
            user_properties: Vec::new(),
        };
        every
            .subscribe_filters(
                vec![filter_with(
                    "rh/+",
                    RetainForwardRule::OnEverySubscribe,
                    false,
                )],
                Some(props),
            )
            .await;
        let p = every.next_publish().await;
        assert_eq!((topic(&p).as_str(), text(&p).as_str()), ("rh/t", "kept"));
        assert!(p.retain, "retained message without RETAIN (round {round})");
        assert_eq!(pprops(&p).subscription_identifiers, [5]);
    }

    // 1: only for a new subscription.
    let mut new_only = Mq5::start(addr, "rh-new").await;
    for round in 0..2 {
        new_only
            .subscribe_filters(
                vec![filter_with(
                    "rh/t",
                    RetainForwardRule::OnNewSubscribe,
                    false,
                )],
                None,
            )
            .await;
        if round == 0 {
            let p = new_only.next_publish().await;
            assert_eq!(text(&p), "kept");
            assert!(p.retain);
        } else {
            new_only.assert_no_publish(QUIET).await;
        }
    }

    // Live messages reach the retain-handling-2 subscriber.
    publ.publish("rh/t", QoS::AtLeastOnce, b"live").await;
    let p = never.next_publish().await;
    assert_eq!(text(&p), "live");
    assert!(!p.retain);
}

// Retain As Published (3.8.3.1): with it, a live message keeps the RETAIN
// flag it was published with; without it, RETAIN is 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_as_published() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut keep = Mq5::start(addr, "rap-keep").await;
    keep.subscribe_filters(
        vec![filter_with("rap/t", RetainForwardRule::Never, true)],
        None,
    )
    .await;
    let mut clear = Mq5::start(addr, "rap-clear").await;
    clear
        .subscribe_filters(
            vec![filter_with("rap/t", RetainForwardRule::Never, false)],
            None,
        )
        .await;
    let mut publ = Mq5::start(addr, "rap-pub").await;
    publ.publish_with("rap/t", QoS::AtLeastOnce, true, b"r1", None)
        .await;
    publ.publish_with("rap/t", QoS::AtLeastOnce, false, b"n1", None)
        .await;
    for (body, retain) in [("r1", true), ("n1", false)] {
        let p = keep.next_publish().await;
        assert_eq!((text(&p).as_str(), p.retain), (body, retain), "RAP=1");
        let p = clear.next_publish().await;
        assert_eq!((text(&p).as_str(), p.retain), (body, false), "RAP=0");
    }
}

// PUBACK / PUBREC reason 0x10 when no subscription matched (3.4.2.1);
// 0x00 once one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puback_reason_no_matching_subscribers() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut publ = Mq5::start(addr, "nms-pub").await;
    assert_eq!(
        publ.publish("nobody/home", QoS::AtLeastOnce, b"x").await,
        Acked::PubAck(PubAckReason::NoMatchingSubscribers)
    );
    assert_eq!(
        publ.publish("nobody/home", QoS::ExactlyOnce, b"x").await,
        Acked::PubRec(PubRecReason::NoMatchingSubscribers)
    );
    let mut sub = Mq5::start(addr, "nms-sub").await;
    sub.subscribe("somebody/+", QoS::AtMostOnce).await;
    assert_eq!(
        publ.publish("somebody/home", QoS::AtLeastOnce, b"y").await,
        Acked::PubAck(PubAckReason::Success)
    );
    assert_eq!(
        publ.publish("somebody/home", QoS::ExactlyOnce, b"z").await,
        Acked::PubRec(PubRecReason::Success)
    );
    assert_eq!(text(&sub.next_publish().await), "y");
    assert_eq!(text(&sub.next_publish().await), "z");
}

// UNSUBACK reason 0x11 for a filter with no subscription (3.11.2.1), 0x00
// for one that existed; afterwards nothing is delivered for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsuback_no_subscription_existed() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut c = Mq5::start(addr, "unsub5").await;
    assert_eq!(
        c.unsubscribe("never/subscribed").await,
        [UnsubAckReason::NoSubscriptionExisted]
    );
    c.subscribe("was/here", QoS::AtLeastOnce).await;
    assert_eq!(c.unsubscribe("was/here").await, [UnsubAckReason::Success]);
    assert_eq!(
        c.unsubscribe("was/here").await,
        [UnsubAckReason::NoSubscriptionExisted]
    );
    assert_eq!(
        c.publish("was/here", QoS::AtLeastOnce, b"late").await,
        Acked::PubAck(PubAckReason::NoMatchingSubscribers)
    );
    c.assert_no_publish(QUIET).await;
}

// Shared subscriptions (4.8.2): members of `$share/g/…` split the messages
// between them (each message to exactly one member), an ordinary
// subscriber of the same topic still gets every message. (A malformed share
// name, which rumqttc refuses to send, is covered by the session tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_splits_messages_between_members() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut a = Mq5::start(addr, "share-a").await;
    let mut b = Mq5::start(addr, "share-b").await;
    let mut all = Mq5::start(addr, "share-all").await;
    for m in [&mut a, &mut b] {
        let codes = m
            .subscribe_filters(
                vec![Filter::new("$share/g/shared/t", QoS::AtLeastOnce)],
                None,
            )
            .await;
        assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    }
    all.subscribe("shared/t", QoS::AtLeastOnce).await;
    let mut publ = Mq5::start(addr, "share-pub").await;
    const N: usize = 10;
    for i in 0..N {
        publ.publish("shared/t", QoS::AtLeastOnce, format!("m{i}").as_bytes())
            .await;
    }
    let mut everyone = Vec::new();
    for _ in 0..N {
        everyone.push(text(&all.next_publish().await));
    }
    assert_eq!(everyone.len(), N);
    let mut split = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while split.len() < N && Instant::now() < deadline {
        for m in [&mut a, &mut b] {
            if let Some(p) = m.try_next_publish(Duration::from_millis(100)).await {
                split.push(text(&p));
            }
        }
    }
    split.sort();
    let mut expected: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    expected.sort();
    assert_eq!(split, expected, "each message to exactly one member");
    a.assert_no_publish(QUIET).await;
    b.assert_no_publish(QUIET).await;
}

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

// Session expiry interval > 0 (3.1.2.11.2): after a clean DISCONNECT the
// session remains; a reconnect with Clean Start 0 finds it (session
// present) and gets the QoS 1 message queued meanwhile. Clean Start 1
// discards it: no session present, no subscription left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_keeps_session_and_clean_start_discards() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let (mut dev, ack) = Mq5::connect(persistent_opts(addr, "sess5", false)).await;
    assert!(!ack.session_present, "no session existed yet");
    dev.subscribe("sess5/t", QoS::AtLeastOnce).await;
    dev.disconnect().await;

    let mut publ = Mq5::start(addr, "sess5-pub").await;
    assert_eq!(
        publ.publish("sess5/t", QoS::AtLeastOnce, b"queued").await,
        Acked::PubAck(PubAckReason::Success),
        "the offline session's subscription should match"
    );

    let (mut dev, ack) = Mq5::connect(persistent_opts(addr, "sess5", false)).await;
    assert!(ack.session_present, "session not present after reconnect");
    let p = dev.next_publish().await;
    assert_eq!(
        (topic(&p).as_str(), text(&p).as_str()),
        ("sess5/t", "queued")
    );
    assert_eq!(p.qos, QoS::AtLeastOnce);
    dev.disconnect().await;

    // Clean Start 1: the session (and its subscription) is gone.
    let (mut dev, ack) = Mq5::connect(persistent_opts(addr, "sess5", true)).await;
    assert!(!ack.session_present, "clean start reported a session");
    assert_eq!(
        publ.publish("sess5/t", QoS::AtLeastOnce, b"after clean")
            .await,
        Acked::PubAck(PubAckReason::NoMatchingSubscribers)
    );
    dev.assert_no_publish(QUIET).await;
}

// Clean Start 1 with a session expiry > 0 starts a new session that still
// outlives the connection (3.1.2.4, 3.1.2.11.2): the usual MQTT 5 pattern
// of a client that wants a fresh session kept while it is away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_start_with_session_expiry_outlives_connection() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let (mut dev, ack) = Mq5::connect(persistent_opts(addr, "fresh5", true)).await;
    assert!(!ack.session_present);
    dev.subscribe("fresh5/t", QoS::AtLeastOnce).await;
    dev.disconnect().await;
    let mut publ = Mq5::start(addr, "fresh5-pub").await;
    assert_eq!(
        publ.publish("fresh5/t", QoS::AtLeastOnce, b"kept for me")
            .await,
        Acked::PubAck(PubAckReason::Success),
        "the offline session's subscription should match"
    );
    let (mut dev, ack) = Mq5::connect(persistent_opts(addr, "fresh5", false)).await;
    assert!(ack.session_present, "session not present after reconnect");
    assert_eq!(text(&dev.next_publish().await), "kept for me");
}

// Session expiry interval 0 (absent): the session ends with the connection
// even with Clean Start 0 (3.1.2.11.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_zero_ends_with_connection() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut o = opts(addr, "sess0");
    o.set_clean_start(false);
    let (mut dev, ack) = Mq5::connect(o.clone()).await;
    assert!(!ack.session_present);
    dev.subscribe("sess0/t", QoS::AtLeastOnce).await;
    dev.disconnect().await;
    let mut publ = Mq5::start(addr, "sess0-pub").await;
    assert_eq!(
        publ.publish("sess0/t", QoS::AtLeastOnce, b"lost").await,
        Acked::PubAck(PubAckReason::NoMatchingSubscribers)
    );
    let (mut dev, ack) = Mq5::connect(o).await;
    assert!(!ack.session_present, "session kept without an expiry");
    dev.assert_no_publish(QUIET).await;
}

// Takeover (3.1.4): a second connection with the same client id ends the
// first, which is told DISCONNECT 0x8E (session taken over); the second
// one works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_disconnects_first_with_0x8e() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut first = Mq5::start(addr, "twin5").await;
    first.subscribe("twin5/t", QoS::AtLeastOnce).await;
    let mut second = Mq5::start(addr, "twin5").await;
    let e = first.expect_end().await;
    assert_eq!(
        server_disconnect_reason(&e),
        Some(DisconnectReasonCode::SessionTakenOver),
        "first connection ended with {e:?}"
    );
    second.subscribe("twin5/t", QoS::AtLeastOnce).await;
    second.publish("twin5/t", QoS::AtLeastOnce, b"me").await;
    assert_eq!(text(&second.next_publish().await), "me");
}

// A broker shutting down tells MQTT 5 clients so: DISCONNECT 0x8B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_disconnects_with_0x8b() {
    let mut broker = Broker::start();
    let mut c = Mq5::start(broker.mqtt_addr(), "bye5").await;
    c.subscribe("bye/t", QoS::AtMostOnce).await;
    let stopper = tokio::task::spawn_blocking(move || {
        let status = broker.stop();
        (broker, status)
    });
    let e = c.expect_end().await;
    let (_broker, status) = w!(stopper).expect("stop task");
    assert!(status.success(), "broker exit status {status}");
    assert_eq!(
        server_disconnect_reason(&e),
        Some(DisconnectReasonCode::ServerShuttingDown),
        "connection ended with {e:?}"
    );
}

// ---------------------------------------------------------------------------
// Topic aliases, packet size, will
// ---------------------------------------------------------------------------

fn alias(n: u16) -> PublishProperties {
    PublishProperties {
        topic_alias: Some(n),
        ..Default::default()
    }
}

// Topic alias (3.3.2.3.4): a PUBLISH with topic and alias sets it, a later
// one with an empty topic and the alias goes to the full topic; an alias
// can be remapped. Subscribers see full topics and no alias.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_topic_alias() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut sub = Mq5::start(addr, "alias-sub").await;
    sub.subscribe("alias/#", QoS::AtLeastOnce).await;
    let mut publ = Mq5::start(addr, "alias-pub").await;
    let steps = [
        ("alias/full/topic", 3, "first", "alias/full/topic"),
        ("", 3, "second", "alias/full/topic"),
        ("alias/other", 64, "third", "alias/other"),
        ("", 64, "fourth", "alias/other"),
        ("alias/remapped", 3, "fifth", "alias/remapped"),
        ("", 3, "sixth", "alias/remapped"),
    ];
    for (t, n, body, _) in steps {
        assert_eq!(
            publ.publish_with(t, QoS::AtLeastOnce, false, body.as_bytes(), Some(alias(n)))
                .await,
            Acked::PubAck(PubAckReason::Success),
            "publish {body}"
        );
    }
    for (_, _, body, want) in steps {
        let p = sub.next_publish().await;
        assert_eq!((topic(&p).as_str(), text(&p).as_str()), (want, body));
        assert!(
            p.properties.is_none_or(|pr| pr.topic_alias.is_none()),
            "alias sent to subscriber"
        );
    }
}

// Maximum Packet Size from the client (3.1.2.11.4): a message larger than
// it is not sent to that client (MQTT-3.1.2-25), smaller ones are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_maximum_packet_size_respected() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut o = opts(addr, "small-sub");
    o.set_max_packet_size(Some(1024));
    let (mut sub, _) = Mq5::connect(o).await;
    sub.subscribe("size/#", QoS::AtLeastOnce).await;
    let mut big = Mq5::start(addr, "size-pub").await;
    big.publish("size/big", QoS::AtLeastOnce, &[b'x'; 2000])
        .await;
    big.publish("size/small", QoS::AtLeastOnce, b"fits").await;
    let p = sub.next_publish().await;
    assert_eq!(
        (topic(&p).as_str(), text(&p).as_str()),
        ("size/small", "fits")
    );
    sub.assert_no_publish(QUIET).await;
}

// The same limit holds for retained messages sent on SUBSCRIBE
// (MQTT-3.1.2-24): the oversized one is skipped, the connection stays up and
// the one that fits arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_maximum_packet_size_respected_for_retained() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut publ = Mq5::start(addr, "rsize-pub").await;
    publ.publish_with("rsize/big", QoS::AtLeastOnce, true, &[b'x'; 2000], None)
        .await;
    publ.publish_with("rsize/small", QoS::AtLeastOnce, true, b"fits", None)
        .await;
    let mut o = opts(addr, "rsize-sub");
    o.set_max_packet_size(Some(1024));
    let (mut sub, _) = Mq5::connect(o).await;
    sub.subscribe("rsize/#", QoS::AtLeastOnce).await;
    let p = sub.next_publish().await;
    assert_eq!(
        (topic(&p).as_str(), text(&p).as_str(), p.retain),
        ("rsize/small", "fits", true)
    );
    sub.assert_no_publish(QUIET).await;
}

// A will with properties (3.1.3.2) is published with them on an abnormal
// disconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_properties_carried() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut watcher = Mq5::start(addr, "will5-watch").await;
    watcher.subscribe("will5/#", QoS::AtLeastOnce).await;
    let mut o = opts(addr, "will5-dev");
    let wp = LastWillProperties {
        delay_interval: None,
        payload_format_indicator: Some(1),
        message_expiry_interval: None,
        content_type: Some("text/plain".into()),
        response_topic: Some("will5/reply".into()),
        correlation_data: Some(b"w-1".to_vec().into()),
        user_properties: pairs(&[("reason", "crash")]),
    };
    o.set_last_will(LastWill::new(
        "will5/dev",
        b"gone".to_vec(),
        QoS::AtLeastOnce,
        false,
        Some(wp),
    ));
    let (dev, _) = Mq5::connect(o).await;
    dev.kill().await;
    let p = watcher.next_publish().await;
    assert_eq!(
        (topic(&p).as_str(), text(&p).as_str()),
        ("will5/dev", "gone")
    );
    let pr = pprops(&p);
    assert_eq!(pr.content_type.as_deref(), Some("text/plain"));
    assert_eq!(pr.response_topic.as_deref(), Some("will5/reply"));
    assert_eq!(pr.correlation_data.as_deref(), Some(&b"w-1"[..]));
    assert_eq!(pr.payload_format_indicator, Some(1));
    assert_eq!(pr.user_properties, pairs(&[("reason", "crash")]));
}

fn delayed_will_opts(addr: SocketAddr, id: &str, delay: u32, expiry: u32) -> MqttOptions {
    let mut o = opts(addr, id);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(expiry));
    let wp = LastWillProperties {
        delay_interval: Some(delay),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    };
    o.set_last_will(LastWill::new(
        format!("delayed/{id}"),
        b"late".to_vec(),
        QoS::AtLeastOnce,
        false,
        Some(wp),
    ));
    o
}

// Will delay (3.1.3.2.2): the will of a session that outlives its
// connection waits for its delay; it is published then, and not at all if
// the client reconnects first (MQTT-3.1.3-9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_delay_waits_and_a_reconnect_cancels_it() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut watcher = Mq5::start(addr, "delay-watch").await;
    watcher.subscribe("delayed/#", QoS::AtLeastOnce).await;

    let (dev, _) = Mq5::connect(delayed_will_opts(addr, "late-dev", 1, 60)).await;
    let killed = Instant::now();
    dev.kill().await;
    let p = watcher.next_publish().await;
    assert_eq!(topic(&p), "delayed/late-dev");
    assert!(
        killed.elapsed() >= Duration::from_millis(900),
        "will published after {:?}, before its 1 s delay",
        killed.elapsed()
    );

    let (dev, _) = Mq5::connect(delayed_will_opts(addr, "back-dev", 2, 60)).await;
    dev.kill().await;
    let (back, ack) = Mq5::connect(delayed_will_opts(addr, "back-dev", 2, 60)).await;
    assert!(ack.session_present);
    watcher.assert_no_publish(Duration::from_secs(3)).await;
    back.disconnect().await;
}

// Session expiry (3.1.2.11.2): a session whose interval passed after its
// connection ended is gone; the next CONNECT finds no session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_interval_ends_the_session() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut o = opts(addr, "short-lived");
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(1));
    let (dev, ack) = Mq5::connect(o.clone()).await;
    assert!(!ack.session_present);
    dev.disconnect().await;
    let (dev, ack) = Mq5::connect(o.clone()).await;
    assert!(
        ack.session_present,
        "within its interval the session is kept"
    );
    dev.disconnect().await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (_dev, ack) = Mq5::connect(o).await;
    assert!(!ack.session_present, "expired session still present");
}

// Message expiry (3.3.2.3.3): a message whose interval has passed while it
// waited is not delivered (MQTT-3.3.2-5), and one still delivered carries
// the remaining interval, not the original (MQTT-3.3.2-6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_expiry_enforced_and_counted_down() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let (mut dev, _) = Mq5::connect(persistent_opts(addr, "exp5", true)).await;
    dev.subscribe("exp5/t", QoS::AtLeastOnce).await;
    dev.disconnect().await;
    let mut publ = Mq5::start(addr, "exp5-pub").await;
    let expiring = |s| PublishProperties {
        message_expiry_interval: Some(s),
        ..Default::default()
    };
    publ.publish_with(
        "exp5/t",
        QoS::AtLeastOnce,
        false,
        b"short",
        Some(expiring(1)),
    )
    .await;
    publ.publish_with(
        "exp5/t",
        QoS::AtLeastOnce,
        false,
        b"long",
        Some(expiring(60)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (mut dev, ack) = Mq5::connect(persistent_opts(addr, "exp5", false)).await;
    assert!(ack.session_present);
    let p = dev.next_publish().await;
    assert_eq!(text(&p), "long", "expired message delivered");
    let left = pprops(&p).message_expiry_interval.expect("expiry");
    assert!(left <= 58, "expiry not counted down: {left}");
}

// AMQP short strings (correlation-id, reply-to, content-type, header
// names) hold at most 255 bytes; MQTT strings up to 65535. A v5 publish
// whose correlation data or response topic is longer reaches a v5
// subscriber unchanged, and must reach an AMQP consumer with the value
// kept (as the property or in a header) without hurting the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_correlation_data_reaches_amqp_consumer() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let corr = "c".repeat(300);
    let long = || PublishProperties {
        correlation_data: Some(corr.clone().into_bytes().into()),
        ..Default::default()
    };
    let mut v5 = Mq5::start(addr, "long-sub").await;
    v5.subscribe("long/v5", QoS::AtLeastOnce).await;
    let mut publ = Mq5::start(addr, "long-pub").await;
    publ.publish_with("long/v5", QoS::AtLeastOnce, false, b"l", Some(long()))
        .await;
    let got = v5.next_publish().await;
    assert_eq!(
        pprops(&got).correlation_data.as_deref(),
        Some(corr.as_bytes())
    );

    let (conn, ch) = amqp(&broker).await;
    let mut sub = AmqpSub::bind(&ch, "long.amqp").await;
    publ.publish_with("long/amqp", QoS::AtLeastOnce, false, b"l", Some(long()))
        .await;
    let d = sub.next().await;
    let carried = short(d.properties.correlation_id())
        .map(str::to_owned)
        .or_else(|| {
            // Too long for the AMQP property: carried in the header named
            // after it (docs/amqp.md), or as MQTT's own correlation data.
            let h = header(&d.properties, "x-correlation-id")
                .or_else(|| header(&d.properties, "x-mqtt-correlation-data"));
            match h {
                Some(AMQPValue::ByteArray(b)) => Some(String::from_utf8_lossy(b.as_slice()).into()),
                Some(v) => Some(amqp_text(v)),
                None => None,
            }
        });
    assert_eq!(carried.as_deref(), Some(corr.as_str()));
    assert!(conn.status().connected(), "AMQP connection lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_response_topic_reaches_amqp_consumer() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let rt = format!("replies/{}", "r".repeat(300));
    let long = || PublishProperties {
        response_topic: Some(rt.clone()),
        ..Default::default()
    };
    let mut v5 = Mq5::start(addr, "longrt-sub").await;
    v5.subscribe("longrt/v5", QoS::AtLeastOnce).await;
    let mut publ = Mq5::start(addr, "longrt-pub").await;
    publ.publish_with("longrt/v5", QoS::AtLeastOnce, false, b"l", Some(long()))
        .await;
    let got = v5.next_publish().await;
    assert_eq!(pprops(&got).response_topic.as_deref(), Some(rt.as_str()));

    let (conn, ch) = amqp(&broker).await;
    let mut sub = AmqpSub::bind(&ch, "longrt.amqp").await;
    publ.publish_with("longrt/amqp", QoS::AtLeastOnce, false, b"l", Some(long()))
        .await;
    let d = sub.next().await;
    assert_eq!(&d.data[..], b"l");
    let kept = short(d.properties.reply_to()) == Some(rt.as_str())
        || d.properties.headers().as_ref().is_some_and(|h| {
            h.inner()
                .values()
                .any(|v| matches!(v, AMQPValue::LongString(s) if s.as_bytes() == rt.as_bytes()))
        });
    assert!(kept, "response topic lost: {:?}", d.properties);
    assert!(conn.status().connected(), "AMQP connection lost");
}

// ---------------------------------------------------------------------------
// Raw bytes: what rumqttc cannot send
// ---------------------------------------------------------------------------

fn var_int(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut b = u8::try_from(n % 128).expect("7 bits");
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return out;
        }
    }
}

fn mqtt_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u16::try_from(s.len()).expect("short").to_be_bytes());
    out.extend_from_slice(s);
}

/// Fixed header byte, remaining length, body.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(var_int(body.len()));
    out.extend_from_slice(body);
    out
}

/// A property list: variable-length size, then the properties.
fn properties(raw: &[u8]) -> Vec<u8> {
    let mut out = var_int(raw.len());
    out.extend_from_slice(raw);
    out
}

/// An MQTT 5 CONNECT with the given properties (raw, without their length)
/// and an optional QoS 1 will (no will properties).
fn connect5(
    id: &str,
    clean: bool,
    keep_alive: u16,
    props: &[u8],
    will: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string(&mut body, b"MQTT");
    body.push(5);
    let mut flags = if clean { 0x02 } else { 0x00 };
    if will.is_some() {
        flags |= 0x04 | 0x08;
    }
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.extend(properties(props));
    mqtt_string(&mut body, id.as_bytes());
    if let Some((topic, payload)) = will {
        body.push(0);
        mqtt_string(&mut body, topic.as_bytes());
        mqtt_string(&mut body, payload);
    }
    packet(0x10, &body)
}

/// An MQTT 5 PUBLISH with the given properties.
fn publish5(topic: &str, qos: u8, pkid: u16, props: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend(properties(props));
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// An MQTT 5 SUBSCRIBE (no properties) of `filters` with these option bytes.
fn subscribe5(pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    body.push(0);
    for (f, o) in filters {
        mqtt_string(&mut body, f.as_bytes());
        body.push(*o);
    }
    packet(0x82, &body)
}

fn string_prop(id: u8, s: &str) -> Vec<u8> {
    let mut out = vec![id];
    mqtt_string(&mut out, s.as_bytes());
    out
}

/// A packet read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RawPacket {
    first: u8,
    body: Vec<u8>,
}

/// Splits `data` into packets; panics on a truncated one.
fn parse_packets(mut data: &[u8]) -> Vec<RawPacket> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let first = data[0];
        let mut len = 0usize;
        let mut i = 1;
        loop {
            let b = *data
                .get(i)
                .unwrap_or_else(|| panic!("truncated length {data:02x?}"));
            len |= usize::from(b & 0x7f) << (7 * (i - 1));
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let body = data
            .get(i..i + len)
            .unwrap_or_else(|| panic!("truncated packet {data:02x?}"))
            .to_vec();
        out.push(RawPacket { first, body });
        data = &data[i + len..];
    }
    out
}

/// A hand-driven MQTT 5 client (blocking; run it through [`blocking`]).
struct Raw5 {
    c: RawClient,
}

impl Raw5 {
    fn open(addr: SocketAddr) -> Self {
        Self {
            c: RawClient::connect(addr).expect("raw connect"),
        }
    }

    /// Sends `connect` and returns the CONNACK, which must accept.
    fn connect_with(addr: SocketAddr, connect: &[u8]) -> (Self, RawPacket) {
        let mut m = Self::open(addr);
        m.send(connect);
        let ack = m.expect_packet();
        assert_eq!(ack.first, 0x20, "expected CONNACK, got {ack:?}");
        assert_eq!(ack.body[1], 0x00, "CONNACK reason {ack:?}");
        (m, ack)
    }

    fn connect(addr: SocketAddr, id: &str) -> Self {
        Self::connect_with(addr, &connect5(id, true, 60, &[], None)).0
    }

    fn send(&mut self, bytes: &[u8]) {
        self.c.send(bytes).expect("raw send");
    }

    /// The next packet within `within`; `None` on timeout. Panics if the
    /// broker closes the connection.
    fn read_packet(&mut self, within: Duration) -> Option<RawPacket> {
        let first = match self.c.read_exact(1, within) {
            Ok(b) => b[0],
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return None,
            Err(e) => panic!("reading a packet: {e}"),
        };
        let mut len = 0usize;
        for i in 0..4 {
            let b = self.c.read_exact(1, READ).expect("remaining length")[0];
            len |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                break;
            }
        }
        let body = self.c.read_exact(len, READ).expect("packet body");
        Some(RawPacket { first, body })
    }

    fn expect_packet(&mut self) -> RawPacket {
        self.read_packet(READ)
            .unwrap_or_else(|| panic!("no packet within {READ:?}"))
    }

    /// Reads until the broker closes (bounded by [`READ`]); returns the
    /// packets it sent first. Panics if it does not close.
    fn expect_close(&mut self) -> Vec<RawPacket> {
        let got = self.c.read_to_close(READ).expect("read");
        assert!(
            got.closed,
            "connection still open after {READ:?}; got {:02x?}",
            got.data
        );
        parse_packets(&got.data)
    }

    /// PINGREQ → PINGRESP: the connection is alive and everything sent
    /// before has been processed.
    fn ping(&mut self) {
        self.send(&[0xC0, 0x00]);
        let p = self.expect_packet();
        assert_eq!(p.first, 0xD0, "expected PINGRESP, got {p:?}");
    }
}

/// Runs blocking raw-socket work off the async workers, bounded by
/// [`WAIT`].
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    w!(tokio::task::spawn_blocking(f)).expect("raw client task panicked")
}

/// Asserts that the broker sent exactly one DISCONNECT with `reason` and
/// closed the connection.
#[track_caller]
fn assert_disconnect(packets: &[RawPacket], reason: u8) {
    assert_eq!(
        packets.len(),
        1,
        "expected one DISCONNECT, got {packets:02x?}"
    );
    let d = &packets[0];
    assert_eq!(d.first, 0xE0, "expected DISCONNECT, got {d:02x?}");
    assert_eq!(
        d.body.first(),
        Some(&reason),
        "DISCONNECT reason, got {d:02x?}"
    );
}

// A DISCONNECT with remaining length 0 is a normal disconnection (3.14.2.1):
// accepted, the will is discarded, the broker closes without a DISCONNECT
// of its own. DISCONNECT with reason 0x04 (and nothing else) publishes the
// will.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_empty_disconnect_accepted() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut watcher = Mq5::start(addr, "raw-will-watch").await;
    watcher.subscribe("rawwill/#", QoS::AtLeastOnce).await;

    let connect = connect5("raw-empty", true, 60, &[], Some(("rawwill/empty", b"no!")));
    let packets = blocking(move || {
        let (mut m, _) = Raw5::connect_with(addr, &connect);
        m.send(&[0xE0, 0x00]);
        m.expect_close()
    })
    .await;
    assert!(packets.is_empty(), "broker answered {packets:02x?}");
    watcher.assert_no_publish(QUIET).await;

    let connect = connect5("raw-with-will", true, 60, &[], Some(("rawwill/w", b"yes")));
    let packets = blocking(move || {
        let (mut m, _) = Raw5::connect_with(addr, &connect);
        m.send(&[0xE0, 0x01, 0x04]);
        m.expect_close()
    })
    .await;
    assert!(packets.is_empty(), "broker answered {packets:02x?}");
    let p = watcher.next_publish().await;
    assert_eq!(
        (topic(&p).as_str(), text(&p).as_str()),
        ("rawwill/w", "yes")
    );
}

// AUTH when no authentication method was agreed is a protocol error
// (4.12): DISCONNECT 0x82, then close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_auth_packet_is_protocol_error() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let packets = blocking(move || {
        let mut m = Raw5::connect(addr, "raw-auth");
        // AUTH, reason 0x18 (continue authentication), no properties.
        m.send(&[0xF0, 0x02, 0x18, 0x00]);
        m.expect_close()
    })
    .await;
    assert_disconnect(&packets, 0x82);
    let packets = blocking(move || {
        let mut m = Raw5::connect(addr, "raw-auth-empty");
        m.send(&[0xF0, 0x00]);
        m.expect_close()
    })
    .await;
    assert_disconnect(&packets, 0x82);
}

// A topic alias that was never set, 0, or above the maximum (64) is
// "Topic Alias invalid" (3.3.2.3.4): DISCONNECT 0x94.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_invalid_topic_alias_disconnects_0x94() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    for (name, t, n) in [
        ("unknown", "", 5u16),
        ("zero", "alias/z", 0),
        ("too-big", "alias/b", 65),
    ] {
        let mut props = vec![0x23];
        props.extend_from_slice(&n.to_be_bytes());
        let publish = publish5(t, 0, 0, &props, b"x");
        let packets = blocking(move || {
            let mut m = Raw5::connect(addr, &format!("raw-alias-{name}"));
            m.send(&publish);
            m.expect_close()
        })
        .await;
        assert_disconnect(&packets, 0x94);
    }
    // A set alias is accepted (control).
    let mut props = vec![0x23];
    props.extend_from_slice(&9u16.to_be_bytes());
    let set = publish5("alias/ok", 1, 1, &props, b"x");
    let use_it = publish5("", 1, 2, &props, b"y");
    blocking(move || {
        let mut m = Raw5::connect(addr, "raw-alias-ok");
        m.send(&set);
        let ack = m.expect_packet();
        assert_eq!((ack.first, &ack.body[..2]), (0x40, &[0, 1][..]), "{ack:?}");
        m.send(&use_it);
        let ack = m.expect_packet();
        assert_eq!((ack.first, &ack.body[..2]), (0x40, &[0, 2][..]), "{ack:?}");
    })
    .await;
}

// An authentication method in CONNECT asks for enhanced authentication,
// which is not offered: CONNACK 0x8C (bad authentication method), close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_authentication_method_refused_0x8c() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let connect = connect5(
        "raw-scram",
        true,
        60,
        &string_prop(0x15, "SCRAM-SHA-256"),
        None,
    );
    let packets = blocking(move || {
        let mut m = Raw5::open(addr);
        m.send(&connect);
        m.expect_close()
    })
    .await;
    assert_eq!(packets.len(), 1, "{packets:02x?}");
    assert_eq!(packets[0].first, 0x20, "expected CONNACK: {packets:02x?}");
    assert_eq!(
        &packets[0].body[..2],
        [0x00, 0x8C],
        "CONNACK {packets:02x?}"
    );
}

// MQTT 5 UNSUBSCRIBE has properties (user properties only, 3.10.2.1): they
// are parsed, and UNSUBACK carries a reason code per filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_unsubscribe_with_user_properties() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    blocking(move || {
        let mut m = Raw5::connect(addr, "raw-unsub");
        m.send(&subscribe5(1, &[("u/a", 0x01)]));
        let ack = m.expect_packet();
        assert_eq!((ack.first, ack.body), (0x90, vec![0, 1, 0, 0x01]));

        let mut user = vec![0x26];
        mqtt_string(&mut user, b"k");
        mqtt_string(&mut user, b"v");
        let mut body = vec![0x00, 0x09];
        body.extend(properties(&user));
        mqtt_string(&mut body, b"u/a");
        mqtt_string(&mut body, b"u/none");
        m.send(&packet(0xA2, &body));
        let ack = m.expect_packet();
        assert_eq!(ack.first, 0xB0, "expected UNSUBACK, got {ack:02x?}");
        assert_eq!(ack.body, [0x00, 0x09, 0x00, 0x00, 0x11], "UNSUBACK");
        m.ping();
    })
    .await;
}

// An invalid topic filter gets SUBACK 0x8F (topic filter invalid) in MQTT
// 5 and 0x80 in 3.1.1; the other filters of the SUBSCRIBE are granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_invalid_filter_suback() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    blocking(move || {
        let mut m = Raw5::connect(addr, "raw-badfilter");
        m.send(&subscribe5(3, &[("a/#/b", 0x01), ("ok/+", 0x01)]));
        let ack = m.expect_packet();
        assert_eq!(ack.first, 0x90, "{ack:02x?}");
        assert_eq!(ack.body, [0x00, 0x03, 0x00, 0x8F, 0x01], "SUBACK");
        m.ping();

        // 3.1.1 (no properties): 0x80.
        let mut c = RawClient::connect(addr).expect("connect");
        let mut body = Vec::new();
        mqtt_string(&mut body, b"MQTT");
        body.extend_from_slice(&[4, 0x02, 0, 60]);
        mqtt_string(&mut body, b"raw-badfilter-v4");
        c.send(&packet(0x10, &body)).expect("send");
        assert_eq!(
            c.read_exact(4, READ).expect("CONNACK"),
            [0x20, 0x02, 0x00, 0x00]
        );
        let mut body = vec![0x00, 0x04];
        mqtt_string(&mut body, b"a/#/b");
        body.push(1);
        mqtt_string(&mut body, b"ok/+");
        body.push(1);
        c.send(&packet(0x82, &body)).expect("send");
        assert_eq!(
            c.read_exact(6, READ).expect("SUBACK"),
            [0x90, 0x04, 0x00, 0x04, 0x80, 0x01]
        );
    })
    .await;
}

// No packet within 1.5 × keep-alive: DISCONNECT 0x8D (keep alive timeout),
// then close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_keep_alive_timeout_0x8d() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let connect = connect5("raw-ka", true, 1, &[], None);
    let (packets, took) = blocking(move || {
        let (mut m, _) = Raw5::connect_with(addr, &connect);
        let start = Instant::now();
        let p = m.expect_close();
        (p, start.elapsed())
    })
    .await;
    assert_disconnect(&packets, 0x8D);
    assert!(
        took >= Duration::from_millis(1000),
        "closed after {took:?}, before the keep-alive"
    );
}

// A packet larger than the broker's maximum (16 MiB, announced in CONNACK)
// gets DISCONNECT 0x95 (packet too large) as soon as its length is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_packet_too_large_0x95() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let packets = blocking(move || {
        let mut m = Raw5::connect(addr, "raw-big");
        // PUBLISH claiming 268 435 455 bytes.
        m.send(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]);
        m.expect_close()
    })
    .await;
    assert_disconnect(&packets, 0x95);
}

// A malformed packet (an unknown property identifier) gets DISCONNECT 0x81.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_malformed_packet_0x81() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let packets = blocking(move || {
        let mut m = Raw5::connect(addr, "raw-malformed");
        m.send(&publish5("m/x", 0, 0, &[0x7F, 0x00], b"x"));
        m.expect_close()
    })
    .await;
    assert_disconnect(&packets, 0x81);
}

// The client's Receive Maximum (3.1.2.11.3) bounds unacknowledged QoS 1
// deliveries: with 2, only two PUBLISHes come until one is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_client_receive_maximum_bounds_inflight() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let connect = connect5("raw-rm", true, 60, &[0x21, 0x00, 0x02], None);
    let m = blocking(move || {
        let (mut m, _) = Raw5::connect_with(addr, &connect);
        m.send(&subscribe5(1, &[("rm/t", 0x01)]));
        let ack = m.expect_packet();
        assert_eq!(ack.body, [0, 1, 0, 0x01], "SUBACK");
        m
    })
    .await;
    let mut publ = Mq5::start(addr, "rm-pub").await;
    for i in 0..5 {
        publ.publish("rm/t", QoS::AtLeastOnce, format!("m{i}").as_bytes())
            .await;
    }
    blocking(move || {
        let mut m = m;
        let mut first = Vec::new();
        while let Some(p) = m.read_packet(QUIET) {
            first.push(p);
        }
        assert_eq!(
            first.len(),
            2,
            "in flight beyond receive maximum: {first:02x?}"
        );
        for p in &first {
            assert_eq!(p.first & 0xF6, 0x32, "QoS 1 PUBLISH: {p:02x?}");
        }
        // Acknowledge one: exactly one more comes.
        let pkid = [first[0].body[6], first[0].body[7]];
        m.send(&packet(0x40, &pkid));
        let next = m.expect_packet();
        assert_eq!(next.first & 0xF0, 0x30, "{next:02x?}");
        assert!(
            m.read_packet(QUIET).is_none(),
            "more than one after a PUBACK"
        );
    })
    .await;
}

// DISCONNECT with session expiry interval 0 ends a session that was to
// outlive the connection (3.14.2.2.2): the next Clean Start 0 finds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_disconnect_session_expiry_zero_ends_session() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let expiry_300 = [0x11, 0x00, 0x00, 0x01, 0x2C];
    for (end_session, want_present) in [(false, true), (true, false)] {
        let id = format!("raw-sx-{end_session}");
        let first = connect5(&id, true, 60, &expiry_300, None);
        let again = connect5(&id, false, 60, &expiry_300, None);
        let present = blocking(move || {
            let (mut m, _) = Raw5::connect_with(addr, &first);
            m.send(&subscribe5(1, &[("sx/t", 0x01)]));
            assert_eq!(m.expect_packet().first, 0x90);
            if end_session {
                let mut body = vec![0x00];
                body.extend(properties(&[0x11, 0, 0, 0, 0]));
                m.send(&packet(0xE0, &body));
            } else {
                m.send(&[0xE0, 0x00]);
            }
            assert!(m.expect_close().is_empty());
            let (_m, ack) = Raw5::connect_with(addr, &again);
            ack.body[0] & 1 == 1
        })
        .await;
        assert_eq!(
            present, want_present,
            "session present after DISCONNECT (session expiry 0: {end_session})"
        );
    }
}

// Takeover seen on the wire: the first connection gets DISCONNECT 0x8E
// (session taken over), then the broker closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_takeover_disconnect_0x8e() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let packets = blocking(move || {
        let mut first = Raw5::connect(addr, "raw-twin");
        let _second = Raw5::connect(addr, "raw-twin");
        first.expect_close()
    })
    .await;
    assert_disconnect(&packets, 0x8E);
}

// Shutdown seen on the wire: DISCONNECT 0x8B (server shutting down), then
// close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_shutdown_disconnect_0x8b() {
    let mut broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut m = blocking(move || Raw5::connect(addr, "raw-bye")).await;
    let status = blocking(move || broker.stop()).await;
    assert!(status.success(), "broker exit status {status}");
    let packets = blocking(move || m.expect_close()).await;
    assert_disconnect(&packets, 0x8B);
}

/// The topic and the Topic Alias property (0x23) of a raw MQTT 5 QoS 0
/// PUBLISH.
fn raw_publish_topic_and_alias(p: &RawPacket) -> (String, Option<u16>, Vec<u8>) {
    assert_eq!(p.first & 0xF0, 0x30, "expected PUBLISH, got {p:02x?}");
    let b = &p.body;
    let tlen = usize::from(u16::from_be_bytes([b[0], b[1]]));
    let topic = String::from_utf8(b[2..2 + tlen].to_vec()).expect("UTF-8 topic");
    let mut i = 2 + tlen;
    let (plen, used) = {
        let mut n = 0usize;
        let mut k = 0;
        loop {
            let byte = b[i + k];
            n |= usize::from(byte & 0x7f) << (7 * k);
            k += 1;
            if byte & 0x80 == 0 {
                break (n, k);
            }
        }
    };
    i += used;
    let props = &b[i..i + plen];
    let mut alias = None;
    let mut j = 0;
    while j < props.len() {
        match props[j] {
            0x23 => {
                alias = Some(u16::from_be_bytes([props[j + 1], props[j + 2]]));
                j += 3;
            }
            // Anything else a QoS 0 delivery of a bare message could carry
            // is not expected here.
            other => panic!("unexpected property {other:#x} in {p:02x?}"),
        }
    }
    (topic, alias, b[i + plen..].to_vec())
}

// Topic aliases from server to client (3.3.2.3.4): with a Topic Alias
// Maximum in CONNECT, the broker sends a topic once with an alias, then the
// alias alone; past the maximum, topics go by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_topic_aliases() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let (mut m, _) = blocking(move || {
        // Topic Alias Maximum (0x22) = 2.
        Raw5::connect_with(addr, &connect5("alias-out", true, 60, &[0x22, 0, 2], None))
    })
    .await;
    let mut m = blocking(move || {
        m.send(&subscribe5(1, &[("ao/#", 0)]));
        let ack = m.expect_packet();
        assert_eq!(ack.first, 0x90, "SUBACK expected, got {ack:?}");
        m
    })
    .await;
    let mut publ = Mq5::start(addr, "alias-out-pub").await;
    let order = ["ao/a", "ao/b", "ao/a", "ao/c", "ao/b", "ao/c"];
    for t in order {
        publ.publish_with(t, QoS::AtLeastOnce, false, t.as_bytes(), None)
            .await;
    }
    let seen = blocking(move || {
        (0..order.len())
            .map(|_| raw_publish_topic_and_alias(&m.expect_packet()))
            .collect::<Vec<_>>()
    })
    .await;
    let want = [
        ("ao/a", Some(1), "ao/a"),
        ("ao/b", Some(2), "ao/b"),
        ("", Some(1), "ao/a"),
        ("ao/c", None, "ao/c"),
        ("", Some(2), "ao/b"),
        ("ao/c", None, "ao/c"),
    ];
    let want: Vec<(String, Option<u16>, Vec<u8>)> = want
        .iter()
        .map(|(t, a, b)| ((*t).to_owned(), *a, b.as_bytes().to_vec()))
        .collect();
    assert_eq!(seen, want);
}

// Server Keep Alive (3.2.2.3.14) and reason strings (3.2.2.3.9, 3.14.2.2.3):
// with `mqtt.max_keep_alive = 2`, a client asking for 60 s is told 2 s in
// CONNACK and is then held to it (DISCONNECT 0x8D with a reason string
// after 1.5 × 2 s of silence); a 3.1.1 client asking for 60 s is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_keep_alive_is_announced_and_enforced() {
    let broker = Broker::start_with_config("[mqtt]\nmax_keep_alive = 2\n");
    let addr = broker.mqtt_addr();
    let started = Instant::now();
    let (ack, closing) = blocking(move || {
        let (mut m, ack) = Raw5::connect_with(addr, &connect5("ska", true, 60, &[], None));
        (ack, m.expect_close())
    })
    .await;
    let waited = started.elapsed();
    // CONNACK: flags, reason, properties; Server Keep Alive is 0x13.
    let props = &ack.body[3..];
    let at = props
        .windows(3)
        .position(|w| w == [0x13, 0x00, 0x02])
        .unwrap_or_else(|| panic!("no Server Keep Alive = 2 in {ack:02x?}"));
    assert!(at < props.len());
    assert_disconnect(&closing, 0x8D);
    let d = &closing[0].body;
    // Reason String (0x1F) after the reason code and property length.
    assert_eq!(d.get(2), Some(&0x1F), "no reason string in {d:02x?}");
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(8),
        "held to the server's 2 s keep-alive: closed after {waited:?}"
    );

    let refused = blocking(move || {
        let mut c = RawClient::connect(addr).expect("connect");
        let mut body = Vec::new();
        mqtt_string(&mut body, b"MQTT");
        body.extend_from_slice(&[4, 0x02, 0, 60]);
        mqtt_string(&mut body, b"ska-311");
        c.send(&packet(0x10, &body)).expect("send");
        c.read_to_close(READ).expect("read")
    })
    .await;
    assert!(refused.closed, "3.1.1 client with keep-alive 60 not closed");
    assert_eq!(
        refused.data,
        vec![0x20, 0x02, 0x00, 0x02],
        "CONNACK 2 expected"
    );
}

// A delayed will and a session expiry outlive a broker restart: they are
// stored with the session and re-armed with the time they have left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_will_and_session_expiry_survive_a_restart() {
    let mut broker = Broker::start();
    let addr = broker.mqtt_addr();
    // The watcher's own session outlives the restart, so the will reaches
    // its queue whenever it is published.
    let (mut watcher, _) = Mq5::connect(persistent_opts(addr, "restart-watch", true)).await;
    watcher.subscribe("delayed/#", QoS::AtLeastOnce).await;
    watcher.disconnect().await;
    // The device's session expires 6 s after its connection ends, its
    // will is due after 3 s. Its connection drops (a graceful broker stop
    // would discard the will), then the broker stops before the will is due.
    let (dev, _) = Mq5::connect(delayed_will_opts(addr, "restart-dev", 3, 6)).await;
    dev.kill().await;
    let stopped = Instant::now();
    broker.stop();
    broker.restart();
    let addr = broker.mqtt_addr();
    let (mut watcher, ack) = Mq5::connect(persistent_opts(addr, "restart-watch", false)).await;
    assert!(ack.session_present);
    let p = watcher.next_publish().await;
    assert_eq!(
        (topic(&p).as_str(), text(&p).as_str()),
        ("delayed/restart-dev", "late")
    );
    assert!(
        stopped.elapsed() >= Duration::from_millis(2900),
        "will published {:?} after the connection ended, before its 3 s delay",
        stopped.elapsed()
    );
    // Once: not again after another restart.
    watcher.disconnect().await;
    broker.stop();
    broker.restart();
    let addr = broker.mqtt_addr();
    let (mut watcher, _) = Mq5::connect(persistent_opts(addr, "restart-watch", false)).await;
    watcher.assert_no_publish(QUIET).await;
    // The device's session is gone 6 s after its connection ended.
    let left = Duration::from_millis(6500).saturating_sub(stopped.elapsed());
    tokio::time::sleep(left).await;
    let mut o = delayed_will_opts(addr, "restart-dev", 3, 6);
    o.set_last_will(LastWill::new(
        "delayed/none",
        b"x".to_vec(),
        QoS::AtMostOnce,
        false,
        None,
    ));
    let (dev, ack) = Mq5::connect(o).await;
    assert!(
        !ack.session_present,
        "session outlived its expiry across restarts"
    );
    dev.disconnect().await;
}
