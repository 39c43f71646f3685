//! The cross-protocol interop matrix, against a real `switchyard` process.
//!
//! Every publisher protocol — AMQP 0-9-1 (lapin), MQTT 3.1.1 (rumqttc),
//! MQTT 5.0 (rumqttc v5) and STOMP 1.2 (the raw client of
//! `common/stomp.rs`) — publishes one message carrying every field it can
//! set, and every consumer protocol checks that it sees exactly what the
//! mapping tables promise: `docs/amqp.md` ("Property and field-table
//! mapping"), `docs/mqtt.md` (the mapping table and the MQTT 5 property
//! table) and `docs/stomp.md` ("Headers ↔ message model", destinations).
//! "Exactly" means both ways: every promised field is there with the
//! promised value, and nothing the tables do not promise shows up (an AMQP
//! header, a STOMP header, an MQTT 5 property).
//!
//! The expectations are written out per publisher ([`cases`]): what an
//! AMQP, a STOMP and an MQTT 5 consumer must see of that message (an MQTT
//! 3.1.1 consumer only ever sees topic, payload and QoS). The checks
//! collect every mismatch in a [`Report`] naming the pair, the route and the
//! field, so one failing run lists all of them.
//!
//! Routing shapes:
//!
//! * **topic** — `amq.topic`, key `a.b` = MQTT topic `a/b` = STOMP
//!   `/topic/a.b`: all 4 × 4 pairs.
//! * **fanout** — an exchange declared with lapin. AMQP publishes to it,
//!   STOMP SENDs to `/exchange/<name>`; AMQP consumers bind a queue, STOMP
//!   subscribes `/exchange/<name>`. MQTT can neither publish to nor
//!   subscribe on any exchange but `amq.topic`, so MQTT pairs are **not
//!   directly expressible**; they are run through an exchange-to-exchange
//!   binding instead (fanout → `amq.topic` for MQTT consumers, `amq.topic`
//!   → fanout for MQTT publishers). MQTT → MQTT through a fanout is not
//!   run: both ends would only ever touch `amq.topic` (that is the topic
//!   shape).
//! * **queue** — AMQP's default exchange with the queue name as key, STOMP
//!   `/queue/q` (declared) and `/amq/queue/q` (existing). MQTT cannot
//!   address a queue at all, neither to publish nor to consume: **no MQTT
//!   pairs** in this shape. A queue hands each message to one consumer, so
//!   every consumer gets its own queue and the publisher sends to each.
//!
//! Also: acknowledgement semantics across protocols (MQTT QoS 1 → AMQP
//! nack with requeue → STOMP `ack:client` with `redelivered:true`) and
//! request/response (MQTT 5 response topic + correlation data, and STOMP
//! `reply-to:/temp-queue/`, each answered by an AMQP service).
//!
//! Where the broker differs from the docs, the docs' version is kept in a
//! test of its own marked `#[ignore = "FINDING: …"]` (and left out of the
//! matrix with a comment pointing there), so the rest stays checked.
//!
//! Every wait is bounded by [`STEP`] (10 s) or less; everything is on
//! loopback.

#[macro_use]
#[path = "common/stomp.rs"]
mod stomp;

use std::collections::VecDeque;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lapin::message::{Delivery, DeliveryResult};
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
    ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, ByteArray, FieldArray, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, Filter, Packet, PubAckReason, Publish, PublishProperties,
    SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions};
use stomp::{Client as StompClient, End, Frame, QUIET, STEP, Version};
use switchyard_tests::Broker;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A body no text protocol could carry as-is: NUL bytes and bytes that
/// are not UTF-8.
const BODY: &[u8] = b"\x00bin\xff\xfe\x00 \xc3\x28 end\x80\x00";
/// The routing key of the topic shape, and its MQTT topic.
const TOPIC_KEY: &str = "a.b";
const MQTT_TOPIC: &str = "a/b";
/// The fanout exchange of the fanout shape.
const FANOUT: &str = "matrix.fanout";
/// A large expiration, so that nothing expires while the test runs.
const EXPIRATION_MS: &str = "60000";
const EXPIRY_S: u32 = 60;
/// Client ids of the MQTT publishers (they show up in `x-mqtt-client-id`).
const MQTT3_ID: &str = "pub-v311";
const MQTT5_ID: &str = "pub-v5";
/// Correlation data that is not UTF-8, and its base64 (padded, standard
/// alphabet), which is how a STOMP header renders a byte array.
const BINARY_CORRELATION: &[u8] = &[0x00, 0xff, 0xfe, b'i', b'd', 0x80];
const BINARY_CORRELATION_B64: &str = "AP/+aWSA";
/// After the last expected delivery, how long to watch for extra ones
/// (once for all consumers), then how long each consumer is polled.
const SETTLE: Duration = Duration::from_millis(500);
const POLL: Duration = Duration::from_millis(50);

/// Awaits `fut` for at most [`STEP`], as `w!` does, for futures whose
/// output is a `Result` with a large error (rumqttc v5's `ClientError`).
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {STEP:?} awaiting {what}"),
    }
}

/// Runs blocking STOMP I/O without stalling the runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn short(v: &Option<ShortString>) -> Option<&str> {
    v.as_ref().map(ShortString::as_str)
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------
// Protocols, addresses, expectations
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Amqp,
    Mqtt3,
    Mqtt5,
    Stomp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Self::Amqp => "AMQP",
            Self::Mqtt3 => "MQTT 3.1.1",
            Self::Mqtt5 => "MQTT 5",
            Self::Stomp => "STOMP 1.2",
        }
    }
}

/// Where a publisher sends a message, in each protocol's terms, and the
/// exchange and routing key the message then carries (which consumers see:
/// AMQP's `basic.deliver`, STOMP's `destination`, MQTT's topic).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Address {
    exchange: String,
    key: String,
    /// The STOMP SEND destination.
    stomp: String,
    /// The MQTT topic; `None` where MQTT cannot publish.
    mqtt: Option<String>,
}

impl Address {
    fn topic() -> Self {
        Self {
            exchange: "amq.topic".into(),
            key: TOPIC_KEY.into(),
            stomp: format!("/topic/{TOPIC_KEY}"),
            mqtt: Some(MQTT_TOPIC.into()),
        }
    }

    fn fanout() -> Self {
        Self {
            exchange: FANOUT.into(),
            key: TOPIC_KEY.into(),
            stomp: format!("/exchange/{FANOUT}/{TOPIC_KEY}"),
            mqtt: None,
        }
    }

    /// The default exchange with key `queue`, sent by STOMP to `stomp`
    /// (`/queue/<queue>` or `/amq/queue/<queue>`).
    fn queue(queue: &str, stomp: &str) -> Self {
        Self {
            exchange: String::new(),
            key: queue.into(),
            stomp: stomp.into(),
            mqtt: None,
        }
    }

    /// docs/stomp.md: "MESSAGE `destination` is the message's own route".
    fn message_destination(&self) -> String {
        match self.exchange.as_str() {
            "" => format!("/queue/{}", self.key),
            "amq.topic" => format!("/topic/{}", self.key),
            e => format!("/exchange/{e}/{}", self.key),
        }
    }

    /// docs/mqtt.md: routing key `a.b.c` is topic `a/b/c`.
    fn mqtt_topic(&self) -> String {
        self.key.replace('.', "/")
    }
}

/// One message as its publisher's protocol writes it.
#[derive(Debug, Clone)]
enum Sample {
    Amqp(BasicProperties),
    /// MQTT 3.1.1 has nothing but topic, payload, QoS (1 here) and retain.
    Mqtt3,
    Mqtt5(PublishProperties),
    /// SEND headers other than `destination`, `receipt`, `content-length`.
    Stomp(Vec<(&'static str, &'static str)>),
}

/// An expected AMQP header value.
#[derive(Debug, Clone)]
enum Hv {
    /// This value with this type tag.
    Exact(AMQPValue),
    /// A string (long or short) with this text: the docs say "string"
    /// without naming a type.
    Str(String),
    /// An integer of any width with this value: the docs give no type.
    Int(i64),
}

impl Hv {
    fn str(s: &str) -> Self {
        Self::Str(s.to_owned())
    }

    fn matches(&self, v: &AMQPValue) -> bool {
        match self {
            Self::Exact(e) => e == v,
            Self::Str(s) => match v {
                AMQPValue::LongString(l) => l.as_bytes() == s.as_bytes(),
                AMQPValue::ShortString(x) => x.as_str() == s,
                _ => false,
            },
            Self::Int(n) => int_of(v) == Some(*n),
        }
    }
}

fn int_of(v: &AMQPValue) -> Option<i64> {
    Some(match *v {
        AMQPValue::ShortShortInt(n) => n.into(),
        AMQPValue::ShortShortUInt(n) => n.into(),
        AMQPValue::ShortInt(n) => n.into(),
        AMQPValue::ShortUInt(n) => n.into(),
        AMQPValue::LongInt(n) => n.into(),
        AMQPValue::LongUInt(n) => n.into(),
        AMQPValue::LongLongInt(n) => n,
        _ => return None,
    })
}

/// What an AMQP consumer must see: every property (`None` = absent) and
/// exactly these headers.
#[derive(Debug, Clone, Default)]
struct AmqpView {
    content_type: Option<&'static str>,
    content_encoding: Option<&'static str>,
    delivery_mode: Option<u8>,
    priority: Option<u8>,
    correlation_id: Option<&'static str>,
    reply_to: Option<&'static str>,
    expiration: Option<&'static str>,
    message_id: Option<&'static str>,
    timestamp: Option<u64>,
    kind: Option<&'static str>,
    user_id: Option<&'static str>,
    app_id: Option<&'static str>,
    cluster_id: Option<&'static str>,
    headers: Vec<(String, Hv)>,
}

/// What an MQTT 5 consumer must see in the PUBLISH properties.
#[derive(Debug, Clone)]
struct Mqtt5View {
    content_type: Option<&'static str>,
    response_topic: Option<&'static str>,
    correlation_data: Option<Vec<u8>>,
    payload_format: Option<u8>,
    /// The interval published; the one delivered counts down (1..=this).
    expiry: Option<u32>,
    /// Exactly these user properties (as a multiset); a repeated key keeps
    /// its order.
    user_properties: Vec<(String, String)>,
}

/// What the doc tables promise each consumer protocol sees of one sample.
/// Every sample is published persistent / at QoS 1, so MQTT consumers
/// (subscribed at QoS 1) get it at QoS 1.
#[derive(Debug, Clone)]
struct Expect {
    amqp: AmqpView,
    /// Message headers (all but STOMP's own) a STOMP consumer must see.
    stomp: Vec<(String, String)>,
    /// `None`: the PUBLISH carries no properties at all.
    mqtt5: Option<Mqtt5View>,
}

/// A named sample and its expectations.
struct Case {
    label: &'static str,
    sample: Sample,
    expect: Expect,
}

fn exact_headers(t: &FieldTable) -> Vec<(String, Hv)> {
    t.inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), Hv::Exact(v.clone())))
        .collect()
}

/// The headers of the AMQP sample: a string and the non-string types of
/// docs/amqp.md's field table that other protocols must render.
fn amqp_headers() -> FieldTable {
    let mut inner = FieldTable::default();
    inner.insert("k".into(), AMQPValue::LongString("v".into()));
    inner.insert("n".into(), AMQPValue::LongInt(1));
    let mut h = FieldTable::default();
    h.insert("h-str".into(), AMQPValue::LongString("hello world".into()));
    h.insert("h-int".into(), AMQPValue::LongInt(42));
    h.insert("h-bool".into(), AMQPValue::Boolean(true));
    h.insert("h-table".into(), AMQPValue::FieldTable(inner));
    h.insert(
        "h-array".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongInt(1),
            AMQPValue::LongString("two".into()),
            AMQPValue::Boolean(false),
        ])),
    );
    h
}

/// AMQP: every basic property, and typed headers.
fn amqp_cases() -> Vec<Case> {
    let props = BasicProperties::default()
        .with_content_type("application/x-matrix".into())
        .with_content_encoding("identity".into())
        .with_headers(amqp_headers())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-amqp".into())
        .with_reply_to("replies.amqp".into())
        .with_expiration(EXPIRATION_MS.into())
        .with_message_id("mid-amqp".into())
        .with_timestamp(1_700_000_000)
        .with_type("type-amqp".into())
        .with_user_id("guest".into())
        .with_app_id("app-amqp".into())
        .with_cluster_id("cluster-amqp".into());
    // docs/amqp.md: every property round-trips, values keep their type.
    let amqp = AmqpView {
        content_type: Some("application/x-matrix"),
        content_encoding: Some("identity"),
        delivery_mode: Some(2),
        priority: Some(7),
        correlation_id: Some("corr-amqp"),
        reply_to: Some("replies.amqp"),
        expiration: Some(EXPIRATION_MS),
        message_id: Some("mid-amqp"),
        timestamp: Some(1_700_000_000),
        kind: Some("type-amqp"),
        user_id: Some("guest"),
        app_id: Some("app-amqp"),
        cluster_id: Some("cluster-amqp"),
        headers: exact_headers(&amqp_headers()),
    };
    // docs/stomp.md: properties under their STOMP names (a bare reply_to as
    // /reply-queue/<name>); cluster-id has no STOMP header; non-string
    // headers as text, tables and arrays as JSON.
    let stomp = owned(&[
        ("content-type", "application/x-matrix"),
        ("content-encoding", "identity"),
        ("persistent", "true"),
        ("priority", "7"),
        ("correlation-id", "corr-amqp"),
        ("reply-to", "/reply-queue/replies.amqp"),
        ("expiration", EXPIRATION_MS),
        ("amqp-message-id", "mid-amqp"),
        ("timestamp", "1700000000"),
        ("type", "type-amqp"),
        ("user-id", "guest"),
        ("app-id", "app-amqp"),
        ("h-str", "hello world"),
        ("h-int", "42"),
        ("h-bool", "true"),
        ("h-table", r#"{"k":"v","n":1}"#),
        ("h-array", r#"[1,"two",false]"#),
    ]);
    // docs/mqtt.md (MQTT 5 table): content type, reply_to as response
    // topic, correlation_id as correlation data, expiration as message
    // expiry; other headers as user properties rendered as text, an array
    // one property per element. Nothing else has an MQTT 5 property.
    let mqtt5 = Mqtt5View {
        content_type: Some("application/x-matrix"),
        response_topic: Some("replies.amqp"),
        correlation_data: Some(b"corr-amqp".to_vec()),
        payload_format: None,
        expiry: Some(EXPIRY_S),
        user_properties: owned(&[
            ("h-array", "1"),
            ("h-array", "two"),
            ("h-array", "false"),
            ("h-bool", "true"),
            ("h-int", "42"),
            ("h-str", "hello world"),
            ("h-table", r#"{"k":"v","n":1}"#),
        ]),
    };
    vec![Case {
        label: "all AMQP properties",
        sample: Sample::Amqp(props),
        expect: Expect {
            amqp,
            stomp,
            mqtt5: Some(mqtt5),
        },
    }]
}

/// STOMP: every header of docs/stomp.md's table, custom headers (one
/// escaped, one repeated).
fn stomp_cases() -> Vec<Case> {
    let send = vec![
        ("content-type", "text/x-matrix"),
        ("content-encoding", "identity"),
        ("persistent", "true"),
        ("priority", "5"),
        ("correlation-id", "corr-stomp"),
        ("reply-to", "/queue/stomp-replies"),
        ("expiration", EXPIRATION_MS),
        ("amqp-message-id", "mid-stomp"),
        ("timestamp", "1700000001"),
        ("type", "type-stomp"),
        ("user-id", "guest"),
        ("app-id", "app-stomp"),
        ("h-custom", "hello"),
        ("h-escaped", "line1\nline2:colon\\slash"),
        ("h-rep", "first"),
        ("h-rep", "second"),
    ];
    let amqp = AmqpView {
        content_type: Some("text/x-matrix"),
        content_encoding: Some("identity"),
        delivery_mode: Some(2),
        priority: Some(5),
        correlation_id: Some("corr-stomp"),
        // Not a temp queue: carried as written.
        reply_to: Some("/queue/stomp-replies"),
        expiration: Some(EXPIRATION_MS),
        message_id: Some("mid-stomp"),
        timestamp: Some(1_700_000_001),
        kind: Some("type-stomp"),
        user_id: Some("guest"),
        app_id: Some("app-stomp"),
        cluster_id: None,
        // "any other header: headers[name] as a string (first occurrence)".
        headers: vec![
            ("h-custom".into(), Hv::str("hello")),
            ("h-escaped".into(), Hv::str("line1\nline2:colon\\slash")),
            ("h-rep".into(), Hv::str("first")),
        ],
    };
    let stomp = owned(&[
        ("content-type", "text/x-matrix"),
        ("content-encoding", "identity"),
        ("persistent", "true"),
        ("priority", "5"),
        ("correlation-id", "corr-stomp"),
        ("reply-to", "/queue/stomp-replies"),
        ("expiration", EXPIRATION_MS),
        ("amqp-message-id", "mid-stomp"),
        ("timestamp", "1700000001"),
        ("type", "type-stomp"),
        ("user-id", "guest"),
        ("app-id", "app-stomp"),
        ("h-custom", "hello"),
        ("h-escaped", "line1\nline2:colon\\slash"),
        ("h-rep", "first"),
    ]);
    let mqtt5 = Mqtt5View {
        content_type: Some("text/x-matrix"),
        response_topic: Some("/queue/stomp-replies"),
        correlation_data: Some(b"corr-stomp".to_vec()),
        payload_format: None,
        expiry: Some(EXPIRY_S),
        user_properties: owned(&[
            ("h-custom", "hello"),
            ("h-escaped", "line1\nline2:colon\\slash"),
            ("h-rep", "first"),
        ]),
    };
    vec![Case {
        label: "all STOMP headers",
        sample: Sample::Stomp(send),
        expect: Expect {
            amqp,
            stomp,
            mqtt5: Some(mqtt5),
        },
    }]
}

/// The headers docs/mqtt.md puts on every message an MQTT client
/// publishes (anonymous clients act as `guest`).
fn mqtt_identity(client_id: &str) -> Vec<(String, Hv)> {
    vec![
        ("x-mqtt-client-id".into(), Hv::str(client_id)),
        ("x-mqtt-username".into(), Hv::str("guest")),
        ("x-mqtt-publish-qos".into(), Hv::Int(1)),
    ]
}

fn mqtt_identity_stomp(client_id: &str) -> Vec<(String, String)> {
    owned(&[
        ("x-mqtt-client-id", client_id),
        ("x-mqtt-username", "guest"),
        ("x-mqtt-publish-qos", "1"),
    ])
}

/// MQTT 3.1.1: topic, payload, QoS 1.
fn mqtt3_cases() -> Vec<Case> {
    let mut stomp = owned(&[("persistent", "true")]);
    stomp.extend(mqtt_identity_stomp(MQTT3_ID));
    vec![Case {
        label: "QoS 1 PUBLISH",
        sample: Sample::Mqtt3,
        expect: Expect {
            amqp: AmqpView {
                delivery_mode: Some(2),
                headers: mqtt_identity(MQTT3_ID),
                ..AmqpView::default()
            },
            stomp,
            // x-mqtt-* headers are not sent: no properties at all.
            mqtt5: None,
        },
    }]
}

fn mqtt5_properties(correlation: &[u8]) -> PublishProperties {
    PublishProperties {
        // 0: unspecified bytes — the body is not UTF-8.
        payload_format_indicator: Some(0),
        message_expiry_interval: Some(EXPIRY_S),
        topic_alias: None,
        response_topic: Some("resp/v5".into()),
        correlation_data: Some(correlation.to_vec().into()),
        user_properties: owned(&[("site", "north"), ("tag", "x"), ("tag", "y")]),
        subscription_identifiers: Vec::new(),
        content_type: Some("application/x-matrix-5".into()),
    }
}

/// MQTT 5: every PUBLISH property of docs/mqtt.md's table, twice: with
/// UTF-8 correlation data (→ `correlation_id`) and with binary correlation
/// data (→ header `x-mqtt-correlation-data`).
fn mqtt5_cases() -> Vec<Case> {
    let tags = AMQPValue::FieldArray(FieldArray::from(vec![
        AMQPValue::LongString("x".into()),
        AMQPValue::LongString("y".into()),
    ]));
    let mut headers = vec![
        ("site".to_owned(), Hv::str("north")),
        ("tag".to_owned(), Hv::Exact(tags)),
        ("x-mqtt-payload-format".to_owned(), Hv::Int(0)),
    ];
    headers.extend(mqtt_identity(MQTT5_ID));
    let amqp = AmqpView {
        content_type: Some("application/x-matrix-5"),
        delivery_mode: Some(2),
        correlation_id: Some("corr-v5"),
        reply_to: Some("resp/v5"),
        expiration: Some(EXPIRATION_MS),
        headers,
        ..AmqpView::default()
    };
    let mut stomp = owned(&[
        ("content-type", "application/x-matrix-5"),
        ("persistent", "true"),
        ("correlation-id", "corr-v5"),
        // docs/interop.md: an MQTT response topic is shown as /topic/<key>.
        ("reply-to", "/topic/resp.v5"),
        ("expiration", EXPIRATION_MS),
        ("site", "north"),
        ("tag", r#"["x","y"]"#),
        ("x-mqtt-payload-format", "0"),
    ]);
    stomp.extend(mqtt_identity_stomp(MQTT5_ID));
    let mqtt5 = Mqtt5View {
        content_type: Some("application/x-matrix-5"),
        response_topic: Some("resp/v5"),
        correlation_data: Some(b"corr-v5".to_vec()),
        payload_format: Some(0),
        expiry: Some(EXPIRY_S),
        user_properties: owned(&[("site", "north"), ("tag", "x"), ("tag", "y")]),
    };
    let text = Expect {
        amqp: amqp.clone(),
        stomp: stomp.clone(),
        mqtt5: Some(mqtt5.clone()),
    };

    let mut amqp_bin = amqp;
    amqp_bin.correlation_id = None;
    amqp_bin.headers.push((
        "x-mqtt-correlation-data".into(),
        Hv::Exact(AMQPValue::ByteArray(ByteArray::from(BINARY_CORRELATION))),
    ));
    let mut stomp_bin: Vec<(String, String)> = stomp
        .into_iter()
        .filter(|(k, _)| k != "correlation-id")
        .collect();
    stomp_bin.push((
        "x-mqtt-correlation-data".into(),
        BINARY_CORRELATION_B64.into(),
    ));
    let mut mqtt5_bin = mqtt5;
    mqtt5_bin.correlation_data = Some(BINARY_CORRELATION.to_vec());
    vec![
        Case {
            label: "UTF-8 correlation data",
            sample: Sample::Mqtt5(mqtt5_properties(b"corr-v5")),
            expect: text,
        },
        Case {
            label: "binary correlation data",
            sample: Sample::Mqtt5(mqtt5_properties(BINARY_CORRELATION)),
            expect: Expect {
                amqp: amqp_bin,
                stomp: stomp_bin,
                mqtt5: Some(mqtt5_bin),
            },
        },
    ]
}

fn cases(publisher: Proto) -> Vec<Case> {
    match publisher {
        Proto::Amqp => amqp_cases(),
        Proto::Mqtt3 => mqtt3_cases(),
        Proto::Mqtt5 => mqtt5_cases(),
        Proto::Stomp => stomp_cases(),
    }
}

// ---------------------------------------------------------------------------
// Collecting mismatches
// ---------------------------------------------------------------------------

/// Every mismatch of one test, each naming the pair, route and field.
#[derive(Default)]
struct Report {
    failures: Vec<String>,
    checked: usize,
}

impl Report {
    fn check<T: PartialEq + Debug>(&mut self, pair: &str, field: &str, got: T, want: T) {
        self.checked += 1;
        if got != want {
            self.failures
                .push(format!("{pair}: {field}: expected {want:?}, got {got:?}"));
        }
    }

    fn fail(&mut self, pair: &str, field: &str, what: String) {
        self.checked += 1;
        self.failures.push(format!("{pair}: {field}: {what}"));
    }

    #[track_caller]
    fn finish(self) {
        assert!(self.checked > 0, "nothing was checked");
        assert!(
            self.failures.is_empty(),
            "{} mismatch(es) with the docs:\n  {}",
            self.failures.len(),
            self.failures.join("\n  ")
        );
    }
}

fn check_amqp(r: &mut Report, pair: &str, d: &Delivery, to: &Address, want: &AmqpView) {
    r.check(pair, "body", &d.data[..], BODY);
    r.check(pair, "exchange", d.exchange.as_str(), to.exchange.as_str());
    r.check(pair, "routing key", d.routing_key.as_str(), to.key.as_str());
    r.check(pair, "redelivered", d.redelivered, false);
    let p = &d.properties;
    r.check(
        pair,
        "content-type",
        short(p.content_type()),
        want.content_type,
    );
    r.check(
        pair,
        "content-encoding",
        short(p.content_encoding()),
        want.content_encoding,
    );
    r.check(
        pair,
        "delivery-mode",
        *p.delivery_mode(),
        want.delivery_mode,
    );
    r.check(pair, "priority", *p.priority(), want.priority);
    r.check(
        pair,
        "correlation-id",
        short(p.correlation_id()),
        want.correlation_id,
    );
    r.check(pair, "reply-to", short(p.reply_to()), want.reply_to);
    r.check(pair, "expiration", short(p.expiration()), want.expiration);
    r.check(pair, "message-id", short(p.message_id()), want.message_id);
    r.check(pair, "timestamp", *p.timestamp(), want.timestamp);
    r.check(pair, "type", short(p.kind()), want.kind);
    r.check(pair, "user-id", short(p.user_id()), want.user_id);
    r.check(pair, "app-id", short(p.app_id()), want.app_id);
    r.check(pair, "cluster-id", short(p.cluster_id()), want.cluster_id);
    let empty = FieldTable::default();
    let got = p.headers().as_ref().unwrap_or(&empty).inner();
    for (k, hv) in &want.headers {
        match got.iter().find(|(n, _)| n.as_str() == k) {
            None => r.fail(
                pair,
                &format!("header {k:?}"),
                format!("missing, expected {hv:?}"),
            ),
            Some((_, v)) if !hv.matches(v) => r.fail(
                pair,
                &format!("header {k:?}"),
                format!("expected {hv:?}, got {v:?}"),
            ),
            Some(_) => r.checked += 1,
        }
    }
    for (k, v) in got {
        if !want.headers.iter().any(|(w, _)| w == k.as_str()) {
            r.fail(
                pair,
                &format!("header {:?}", k.as_str()),
                format!("not promised by the docs, got {v:?}"),
            );
        }
    }
}

/// STOMP's own MESSAGE headers (docs/stomp.md), never message headers.
const STOMP_OWN: &[&str] = &[
    "subscription",
    "destination",
    "message-id",
    "ack",
    "redelivered",
    "content-length",
];

fn check_stomp(
    r: &mut Report,
    pair: &str,
    f: &Frame,
    sub: &str,
    to: &Address,
    want: &[(String, String)],
) {
    r.check(pair, "command", f.command.as_str(), "MESSAGE");
    r.check(pair, "body", &f.body[..], BODY);
    r.check(pair, "subscription", f.get("subscription"), Some(sub));
    let dest = to.message_destination();
    r.check(
        pair,
        "destination",
        f.get("destination"),
        Some(dest.as_str()),
    );
    let len = BODY.len().to_string();
    r.check(
        pair,
        "content-length",
        f.get("content-length"),
        Some(len.as_str()),
    );
    r.check(pair, "redelivered", f.get("redelivered"), Some("false"));
    r.check(pair, "ack (auto mode)", f.get("ack"), None);
    if f.get("message-id").is_none() {
        r.fail(pair, "message-id", "missing".into());
    }
    for (i, (k, _)) in f.headers.iter().enumerate() {
        if f.headers[..i].iter().any(|(n, _)| n == k) {
            r.fail(pair, &format!("header {k:?}"), "repeated".into());
        }
    }
    for (k, v) in want {
        r.check(pair, &format!("header {k:?}"), f.get(k), Some(v.as_str()));
    }
    for (k, v) in &f.headers {
        if !STOMP_OWN.contains(&k.as_str()) && !want.iter().any(|(w, _)| w == k) {
            r.fail(
                pair,
                &format!("header {k:?}"),
                format!("not promised by the docs, got {v:?}"),
            );
        }
    }
}

fn check_mqtt5(r: &mut Report, pair: &str, p: &Publish, to: &Address, want: &Option<Mqtt5View>) {
    let topic = String::from_utf8_lossy(&p.topic);
    r.check(pair, "topic", topic.as_ref(), to.mqtt_topic().as_str());
    r.check(pair, "payload", &p.payload[..], BODY);
    r.check(pair, "QoS", p.qos, QoS::AtLeastOnce);
    r.check(pair, "retain", p.retain, false);
    r.check(pair, "dup", p.dup, false);
    let (w, got) = match (want, &p.properties) {
        (None, None) => return,
        (None, Some(got)) => {
            return r.fail(pair, "properties", format!("none promised, got {got:?}"));
        }
        (Some(w), None) => {
            return r.fail(pair, "properties", format!("missing, expected {w:?}"));
        }
        (Some(w), Some(got)) => (w, got),
    };
    r.check(
        pair,
        "content type",
        got.content_type.as_deref(),
        w.content_type,
    );
    r.check(
        pair,
        "response topic",
        got.response_topic.as_deref(),
        w.response_topic,
    );
    r.check(
        pair,
        "correlation data",
        got.correlation_data.as_deref(),
        w.correlation_data.as_deref(),
    );
    r.check(
        pair,
        "payload format indicator",
        got.payload_format_indicator,
        w.payload_format,
    );
    match (w.expiry, got.message_expiry_interval) {
        (Some(max), Some(s)) if (1..=max).contains(&s) => r.checked += 1,
        (None, None) => r.checked += 1,
        (want, got) => r.fail(
            pair,
            "message expiry interval",
            format!("expected 1..={want:?}, got {got:?}"),
        ),
    }
    // The AMQP properties MQTT 5 has no field for travel as `amqp-*` user
    // properties (docs/interop.md); `amqp_properties_reach_mqtt5_as_user_properties`
    // checks them, so they are left out of the per-header comparison here.
    let mut got_up: Vec<(String, String)> = got
        .user_properties
        .iter()
        .filter(|(k, _)| !k.starts_with("amqp-"))
        .cloned()
        .collect();
    let mut want_up = w.user_properties.clone();
    // A repeated key keeps its order (MQTT-3.3.2-18); compare per key
    // before sorting.
    for (k, _) in &want_up {
        let seq = |v: &[(String, String)]| -> Vec<String> {
            v.iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .collect()
        };
        r.check(
            pair,
            &format!("user property {k:?} (in order)"),
            seq(&got_up),
            seq(&want_up),
        );
    }
    got_up.sort();
    want_up.sort();
    r.check(pair, "user properties", got_up, want_up);
    r.check(pair, "topic alias", got.topic_alias, None);
    r.check(
        pair,
        "subscription identifiers",
        got.subscription_identifiers.clone(),
        Vec::new(),
    );
}

fn check_mqtt3(r: &mut Report, pair: &str, p: &rumqttc::Publish, to: &Address) {
    // docs/mqtt.md: nothing but the payload (and topic, QoS) reaches 3.1.1.
    r.check(pair, "topic", p.topic.as_str(), to.mqtt_topic().as_str());
    r.check(pair, "payload", &p.payload[..], BODY);
    r.check(pair, "QoS", p.qos, rumqttc::QoS::AtLeastOnce);
    r.check(pair, "retain", p.retain, false);
    r.check(pair, "dup", p.dup, false);
}

// ---------------------------------------------------------------------------
// AMQP (lapin)
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

async fn declare_queue(ch: &Channel, name: &str, opts: QueueDeclareOptions) -> String {
    w!(ch.queue_declare(name.into(), opts, FieldTable::default()))
        .unwrap_or_else(|e| panic!("declare queue {name:?}: {e}"))
        .name()
        .as_str()
        .to_owned()
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    w!(ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default()
    ))
    .unwrap_or_else(|e| panic!("bind {queue:?} to {exchange:?} with {key:?}: {e}"));
}

async fn declare_fanout(ch: &Channel) {
    w!(ch.exchange_declare(
        FANOUT.into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default()
    ))
    .expect("declare fanout exchange");
}

async fn exchange_bind(ch: &Channel, destination: &str, source: &str, key: &str) {
    w!(ch.exchange_bind(
        destination.into(),
        source.into(),
        key.into(),
        ExchangeBindOptions::default(),
        FieldTable::default()
    ))
    .unwrap_or_else(|e| panic!("exchange.bind {source:?} → {destination:?}: {e}"));
}

/// A consumer on its own connection whose deliveries are forwarded, in
/// order, into a channel.
struct AmqpSub {
    _conn: Connection,
    ch: Channel,
    consumer: Consumer,
    rx: mpsc::UnboundedReceiver<DeliveryResult>,
}

impl AmqpSub {
    /// Consumes `queue`, which exists, on `ch` of `conn`.
    async fn start(conn: Connection, ch: Channel, queue: &str, no_ack: bool) -> Self {
        let consumer = w!(ch.basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack,
                ..Default::default()
            },
            FieldTable::default()
        ))
        .unwrap_or_else(|e| panic!("consume {queue:?}: {e}"));
        let (tx, rx) = mpsc::unbounded_channel();
        consumer.set_delegate(move |d: DeliveryResult| {
            let _ = tx.send(d);
            async {}
        });
        Self {
            _conn: conn,
            ch,
            consumer,
            rx,
        }
    }

    /// An exclusive server-named queue bound to `exchange` with `key`.
    async fn bound(broker: &Broker, exchange: &str, key: &str) -> Self {
        let (conn, ch) = amqp(broker).await;
        let q = declare_queue(
            &ch,
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await;
        bind(&ch, &q, exchange, key).await;
        Self::start(conn, ch, &q, true).await
    }

    /// The queue `name` (declared, shared, non-durable).
    async fn queue(broker: &Broker, name: &str) -> Self {
        let (conn, ch) = amqp(broker).await;
        declare_queue(&ch, name, QueueDeclareOptions::default()).await;
        Self::start(conn, ch, name, true).await
    }

    async fn next_within(&mut self, within: Duration) -> Option<Delivery> {
        match tokio::time::timeout(within, self.rx.recv()).await {
            Ok(Some(Ok(Some(d)))) => Some(d),
            Ok(other) => panic!("AMQP consumer ended: {other:?}"),
            Err(_) => None,
        }
    }

    async fn next(&mut self) -> Delivery {
        self.next_within(STEP)
            .await
            .unwrap_or_else(|| panic!("no AMQP delivery within {STEP:?}"))
    }
}

// ---------------------------------------------------------------------------
// MQTT 5 (rumqttc v5), as in mqtt5.rs
// ---------------------------------------------------------------------------

#[derive(Debug)]
enum Ev5 {
    Event(Box<Event>),
    Ended(ConnectionError),
}

/// A rumqttc v5 client whose event loop runs in a task of its own; the
/// task stops at the first error, so rumqttc never reconnects.
struct Mq5 {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Ev5>,
    task: JoinHandle<()>,
    /// Publishes that arrived while waiting for something else, in order.
    publishes: VecDeque<Publish>,
}

impl Drop for Mq5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mq5 {
    async fn start(addr: SocketAddr, id: &str) -> Self {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut el) = AsyncClient::new(o, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(ev) => {
                        if tx.send(Ev5::Event(Box::new(ev))).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Ev5::Ended(e));
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
        let code = mq
            .wait_for(&format!("CONNACK for {id:?}"), |e| match e {
                Event::Incoming(Packet::ConnAck(a)) => Some(a.code),
                _ => None,
            })
            .await;
        assert_eq!(code, ConnectReturnCode::Success, "CONNACK of {id:?}");
        mq
    }

    async fn wait_for<T>(&mut self, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Err(_) => panic!("no {what} within {STEP:?}"),
                Ok(None) => panic!("MQTT 5 event loop gone while waiting for {what}"),
                Ok(Some(Ev5::Ended(e))) => {
                    panic!("MQTT 5 connection ended waiting for {what}: {e:?}")
                }
                Ok(Some(Ev5::Event(ev))) => {
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

    /// The next PUBLISH if one arrives within `within`.
    async fn try_next_publish(&mut self, within: Duration) -> Option<Publish> {
        if let Some(p) = self.publishes.pop_front() {
            return Some(p);
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Err(_) => return None,
                Ok(None) => panic!("MQTT 5 event loop gone"),
                Ok(Some(Ev5::Ended(e))) => panic!("MQTT 5 connection ended: {e:?}"),
                Ok(Some(Ev5::Event(ev))) => {
                    if let Event::Incoming(Packet::Publish(p)) = *ev {
                        return Some(p);
                    }
                }
            }
        }
    }

    async fn next_publish(&mut self) -> Publish {
        self.try_next_publish(STEP)
            .await
            .unwrap_or_else(|| panic!("no MQTT 5 PUBLISH within {STEP:?}"))
    }

    async fn subscribe(&mut self, filter: &str) {
        let filters = vec![Filter::new(filter, QoS::AtLeastOnce)];
        within("SUBSCRIBE", self.client.subscribe_many(filters))
            .await
            .expect("queue SUBSCRIBE");
        let pkid = self
            .wait_for("outgoing SUBSCRIBE", |e| match e {
                Event::Outgoing(Outgoing::Subscribe(id)) => Some(*id),
                _ => None,
            })
            .await;
        let codes = self
            .wait_for(&format!("SUBACK {pkid}"), |e| match e {
                Event::Incoming(Packet::SubAck(s)) if s.pkid == pkid => {
                    Some(s.return_codes.clone())
                }
                _ => None,
            })
            .await;
        assert_eq!(
            codes,
            [SubscribeReasonCode::Success(QoS::AtLeastOnce)],
            "SUBACK for {filter:?}"
        );
    }

    /// QoS 1 PUBLISH with `properties`; returns the PUBACK reason.
    async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        properties: PublishProperties,
    ) -> PubAckReason {
        let publish = self.client.publish_with_properties(
            topic,
            QoS::AtLeastOnce,
            false,
            payload.to_vec(),
            properties,
        );
        within("PUBLISH", publish).await.expect("queue PUBLISH");
        let pkid = self
            .wait_for(&format!("outgoing PUBLISH to {topic:?}"), |e| match e {
                Event::Outgoing(Outgoing::Publish(id)) => Some(*id),
                _ => None,
            })
            .await;
        self.wait_for(&format!("PUBACK {pkid}"), |e| match e {
            Event::Incoming(Packet::PubAck(a)) if a.pkid == pkid => Some(a.reason),
            _ => None,
        })
        .await
    }
}

// ---------------------------------------------------------------------------
// MQTT 3.1.1 (rumqttc), as in mqtt5.rs
// ---------------------------------------------------------------------------

/// A rumqttc 3.1.1 client (protocol level 4).
struct Mq4 {
    client: rumqttc::AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<rumqttc::Event, String>>,
    task: JoinHandle<()>,
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
        let code = mq
            .wait_for("3.1.1 CONNACK", |e| match e {
                rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a)) => Some(a.code),
                _ => None,
            })
            .await;
        assert_eq!(
            code,
            rumqttc::ConnectReturnCode::Success,
            "CONNACK of {id:?}"
        );
        mq
    }

    async fn wait_for<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&rumqttc::Event) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Err(_) => panic!("no {what} within {STEP:?}"),
                Ok(None) => panic!("3.1.1 event loop gone while waiting for {what}"),
                Ok(Some(Err(e))) => panic!("3.1.1 connection ended waiting for {what}: {e}"),
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

    async fn try_next_publish(&mut self, within: Duration) -> Option<rumqttc::Publish> {
        if let Some(p) = self.publishes.pop_front() {
            return Some(p);
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Err(_) => return None,
                Ok(None) => panic!("3.1.1 event loop gone"),
                Ok(Some(Err(e))) => panic!("3.1.1 connection ended: {e}"),
                Ok(Some(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))))) => {
                    return Some(p);
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    async fn subscribe(&mut self, filter: &str) {
        w!(self.client.subscribe(filter, rumqttc::QoS::AtLeastOnce)).expect("queue SUBSCRIBE");
        let codes = self
            .wait_for("3.1.1 SUBACK", |e| match e {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(s)) => {
                    Some(s.return_codes.clone())
                }
                _ => None,
            })
            .await;
        assert_eq!(
            codes,
            [rumqttc::SubscribeReasonCode::Success(
                rumqttc::QoS::AtLeastOnce
            )],
            "SUBACK for {filter:?}"
        );
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
}

// ---------------------------------------------------------------------------
// STOMP
// ---------------------------------------------------------------------------

/// A 1.2 client subscribed (auto ack) to `dest` as `id`, RECEIPT awaited.
fn stomp_subscriber(addr: SocketAddr, dest: &str, id: &str) -> StompClient {
    let mut c = StompClient::connect(addr, Version::V12);
    c.receipt("SUBSCRIBE", &[("destination", dest), ("id", id)], b"");
    c
}

/// SEND with `headers`, the body and its `content-length`, and wait for
/// the RECEIPT.
fn stomp_send(c: &mut StompClient, dest: &str, headers: &[(&str, &str)], body: &[u8]) {
    let len = body.len().to_string();
    let mut all = vec![("destination", dest)];
    all.extend_from_slice(headers);
    all.push(("content-length", &len));
    c.receipt("SEND", &all, body);
}

// ---------------------------------------------------------------------------
// The matrix
// ---------------------------------------------------------------------------

enum Live {
    Amqp(Box<AmqpSub>),
    Mqtt3(Mq4),
    Mqtt5(Mq5),
    Stomp { client: StompClient, id: String },
}

/// One consumer: its protocol, how it subscribed, and the address its
/// messages are published to.
struct Endpoint {
    proto: Proto,
    how: String,
    to: Address,
    live: Live,
}

impl Endpoint {
    async fn amqp_bound(broker: &Broker, exchange: &str, key: &str, to: Address) -> Self {
        Self {
            proto: Proto::Amqp,
            how: format!("queue bound to {exchange:?} with {key:?}"),
            to,
            live: Live::Amqp(Box::new(AmqpSub::bound(broker, exchange, key).await)),
        }
    }

    async fn amqp_queue(broker: &Broker, queue: &str, to: Address) -> Self {
        Self {
            proto: Proto::Amqp,
            how: format!("basic.consume {queue:?}"),
            to,
            live: Live::Amqp(Box::new(AmqpSub::queue(broker, queue).await)),
        }
    }

    async fn mqtt3(broker: &Broker, filter: &str, how: &str, to: Address) -> Self {
        let mut mq = Mq4::start(broker.mqtt_addr(), "sub-v311").await;
        mq.subscribe(filter).await;
        Self {
            proto: Proto::Mqtt3,
            how: format!("SUBSCRIBE {filter:?} QoS 1{how}"),
            to,
            live: Live::Mqtt3(mq),
        }
    }

    async fn mqtt5(broker: &Broker, filter: &str, how: &str, to: Address) -> Self {
        let mut mq = Mq5::start(broker.mqtt_addr(), "sub-v5").await;
        mq.subscribe(filter).await;
        Self {
            proto: Proto::Mqtt5,
            how: format!("SUBSCRIBE {filter:?} QoS 1{how}"),
            to,
            live: Live::Mqtt5(mq),
        }
    }

    fn stomp(broker: &Broker, dest: &str, to: Address) -> Self {
        let addr = broker.stomp_addr();
        let id = format!("sub-{dest}");
        let client = blocking(|| stomp_subscriber(addr, dest, &id));
        Self {
            proto: Proto::Stomp,
            how: format!("SUBSCRIBE {dest}"),
            to,
            live: Live::Stomp { client, id },
        }
    }

    /// Receives the next message and checks it against `want`.
    async fn check_next(&mut self, r: &mut Report, pair: &str, want: &Expect) {
        match &mut self.live {
            Live::Amqp(sub) => match sub.next_within(STEP).await {
                Some(d) => check_amqp(r, pair, &d, &self.to, &want.amqp),
                None => r.fail(pair, "delivery", format!("nothing within {STEP:?}")),
            },
            Live::Mqtt3(mq) => match mq.try_next_publish(STEP).await {
                Some(p) => check_mqtt3(r, pair, &p, &self.to),
                None => r.fail(pair, "delivery", format!("nothing within {STEP:?}")),
            },
            Live::Mqtt5(mq) => match mq.try_next_publish(STEP).await {
                Some(p) => check_mqtt5(r, pair, &p, &self.to, &want.mqtt5),
                None => r.fail(pair, "delivery", format!("nothing within {STEP:?}")),
            },
            Live::Stomp { client, id } => match blocking(|| client.read(STEP)) {
                Ok(f) => check_stomp(r, pair, &f, id, &self.to, &want.stomp),
                Err(e) => r.fail(pair, "delivery", format!("no frame within {STEP:?}: {e:?}")),
            },
        }
    }

    /// Nothing more may arrive (a duplicate, say).
    async fn check_no_more(&mut self, r: &mut Report, pair: &str) {
        let extra = match &mut self.live {
            Live::Amqp(sub) => sub.next_within(POLL).await.map(|d| format!("{d:?}")),
            Live::Mqtt3(mq) => mq.try_next_publish(POLL).await.map(|p| format!("{p:?}")),
            Live::Mqtt5(mq) => mq.try_next_publish(POLL).await.map(|p| format!("{p:?}")),
            Live::Stomp { client, .. } => match blocking(|| client.read(POLL)) {
                Ok(f) => Some(format!("{f:?}")),
                Err(End::Timeout) => None,
                Err(End::Closed) => Some("connection closed".into()),
            },
        };
        match extra {
            Some(what) => r.fail(pair, "extra delivery", what),
            None => r.checked += 1,
        }
    }
}

/// A connected publisher.
enum Publisher {
    Amqp { _conn: Box<Connection>, ch: Channel },
    Mqtt3(Mq4),
    Mqtt5(Mq5),
    Stomp(StompClient),
}

impl Publisher {
    async fn connect(proto: Proto, broker: &Broker) -> Self {
        match proto {
            Proto::Amqp => {
                let (conn, ch) = amqp(broker).await;
                w!(ch.confirm_select(ConfirmSelectOptions::default())).expect("confirm.select");
                Self::Amqp {
                    _conn: Box::new(conn),
                    ch,
                }
            }
            Proto::Mqtt3 => Self::Mqtt3(Mq4::start(broker.mqtt_addr(), MQTT3_ID).await),
            Proto::Mqtt5 => Self::Mqtt5(Mq5::start(broker.mqtt_addr(), MQTT5_ID).await),
            Proto::Stomp => {
                let addr = broker.stomp_addr();
                Self::Stomp(blocking(|| StompClient::connect(addr, Version::V12)))
            }
        }
    }

    /// Publishes `sample` to `to` and waits until the broker has it
    /// (confirm, PUBACK, RECEIPT).
    async fn publish(&mut self, sample: &Sample, to: &Address) {
        let mqtt_topic = || {
            to.mqtt
                .clone()
                .unwrap_or_else(|| panic!("MQTT cannot publish to {to:?}"))
        };
        match (self, sample) {
            (Self::Amqp { ch, .. }, Sample::Amqp(props)) => {
                let confirm = w!(ch.basic_publish(
                    to.exchange.as_str().into(),
                    to.key.as_str().into(),
                    BasicPublishOptions::default(),
                    BODY,
                    props.clone()
                ))
                .expect("basic.publish");
                let c = w!(confirm).expect("publisher confirm");
                assert!(c.is_ack(), "publish to {to:?} not acked: {c:?}");
            }
            (Self::Mqtt3(mq), Sample::Mqtt3) => mq.publish_qos1(&mqtt_topic(), BODY).await,
            (Self::Mqtt5(mq), Sample::Mqtt5(props)) => {
                let reason = mq.publish(&mqtt_topic(), BODY, props.clone()).await;
                assert_eq!(
                    reason,
                    PubAckReason::Success,
                    "PUBACK of a publish to {to:?}"
                );
            }
            (Self::Stomp(c), Sample::Stomp(headers)) => {
                blocking(|| stomp_send(c, &to.stomp, headers, BODY));
            }
            (_, s) => unreachable!("sample {s:?} for another publisher"),
        }
    }
}

/// Publishes every case of `publisher` to every consumer's address (once
/// per distinct address), then checks what each consumer got, in order,
/// and that nothing else arrives.
async fn run_matrix(broker: &Broker, publisher: Proto, shape: &str, mut consumers: Vec<Endpoint>) {
    let cases = cases(publisher);
    let mut p = Publisher::connect(publisher, broker).await;
    let mut addresses: Vec<Address> = Vec::new();
    for c in &consumers {
        if !addresses.contains(&c.to) {
            addresses.push(c.to.clone());
        }
    }
    for case in &cases {
        for to in &addresses {
            p.publish(&case.sample, to).await;
        }
    }
    let mut r = Report::default();
    let pair = |c: &Endpoint, label: &str| {
        format!(
            "{} → {} [{shape}: {}; {label}]",
            publisher.name(),
            c.proto.name(),
            c.how
        )
    };
    for c in &mut consumers {
        for case in &cases {
            let name = pair(c, case.label);
            c.check_next(&mut r, &name, &case.expect).await;
        }
    }
    tokio::time::sleep(SETTLE).await;
    for c in &mut consumers {
        let name = pair(c, "after the last message");
        c.check_no_more(&mut r, &name).await;
    }
    r.finish();
}

// --- topic shape: all 16 pairs ---------------------------------------------

async fn topic_matrix(publisher: Proto) {
    let broker = Broker::start();
    let to = Address::topic();
    let consumers = vec![
        Endpoint::amqp_bound(&broker, "amq.topic", TOPIC_KEY, to.clone()).await,
        Endpoint::mqtt3(&broker, MQTT_TOPIC, "", to.clone()).await,
        Endpoint::mqtt5(&broker, MQTT_TOPIC, "", to.clone()).await,
        Endpoint::stomp(&broker, &to.stomp, to.clone()),
    ];
    run_matrix(&broker, publisher, "amq.topic", consumers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_from_amqp() {
    topic_matrix(Proto::Amqp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_from_mqtt311() {
    topic_matrix(Proto::Mqtt3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_from_mqtt5() {
    topic_matrix(Proto::Mqtt5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_from_stomp() {
    topic_matrix(Proto::Stomp).await;
}

// --- fanout shape ------------------------------------------------------------

/// AMQP and STOMP publish to the fanout exchange itself; AMQP and STOMP
/// consumers bind to it. MQTT consumers cannot: they are reached through
/// an exchange-to-exchange binding fanout → `amq.topic` (the message keeps
/// its routing key `a.b`, which is what their filter matches).
async fn fanout_matrix(publisher: Proto) {
    let broker = Broker::start();
    let (_admin, ch) = amqp(&broker).await;
    declare_fanout(&ch).await;
    exchange_bind(&ch, "amq.topic", FANOUT, "").await;
    let to = Address::fanout();
    let bridged = format!(" via exchange.bind {FANOUT} → amq.topic");
    let consumers = vec![
        // A fanout exchange ignores the binding key.
        Endpoint::amqp_bound(&broker, FANOUT, "", to.clone()).await,
        Endpoint::stomp(&broker, &format!("/exchange/{FANOUT}"), to.clone()),
        Endpoint::mqtt3(&broker, MQTT_TOPIC, &bridged, to.clone()).await,
        Endpoint::mqtt5(&broker, MQTT_TOPIC, &bridged, to.clone()).await,
    ];
    run_matrix(&broker, publisher, "fanout", consumers).await;
}

/// MQTT can only publish to `amq.topic`; its messages reach the fanout
/// exchange's consumers through an exchange-to-exchange binding
/// `amq.topic` → fanout with key `a.b`. They carry the exchange and key
/// they were published with (`amq.topic`, `a.b`). MQTT consumers are left
/// out here: they would read `amq.topic` directly, which is the topic
/// shape.
async fn fanout_matrix_from_mqtt(publisher: Proto) {
    let broker = Broker::start();
    let (_admin, ch) = amqp(&broker).await;
    declare_fanout(&ch).await;
    exchange_bind(&ch, FANOUT, "amq.topic", TOPIC_KEY).await;
    let to = Address::topic();
    let consumers = vec![
        Endpoint::amqp_bound(&broker, FANOUT, "", to.clone()).await,
        Endpoint::stomp(&broker, &format!("/exchange/{FANOUT}"), to.clone()),
    ];
    let shape = format!("fanout via exchange.bind amq.topic → {FANOUT}");
    run_matrix(&broker, publisher, &shape, consumers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_from_amqp() {
    fanout_matrix(Proto::Amqp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_from_stomp() {
    fanout_matrix(Proto::Stomp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_from_mqtt311_via_exchange_binding() {
    fanout_matrix_from_mqtt(Proto::Mqtt3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_from_mqtt5_via_exchange_binding() {
    fanout_matrix_from_mqtt(Proto::Mqtt5).await;
}

// --- queue shape: AMQP and STOMP only ---------------------------------------

/// A queue hands each message to one consumer, so each consumer has its
/// own: an AMQP consumer of `q.amqp`, a STOMP subscriber of `/queue/`
/// (which declares it) and one of `/amq/queue/` (declared by AMQP first).
/// STOMP publishes to `/queue/<name>`, or `/amq/queue/<name>` for the
/// last; AMQP to the default exchange. MQTT cannot address queues, as
/// publisher or consumer: not expressible.
async fn queue_matrix(publisher: Proto) {
    let broker = Broker::start();
    let (_admin, ch) = amqp(&broker).await;
    declare_queue(&ch, "q.stomp-amq", QueueDeclareOptions::default()).await;
    let consumers = vec![
        Endpoint::amqp_queue(&broker, "q.amqp", Address::queue("q.amqp", "/queue/q.amqp")).await,
        Endpoint::stomp(
            &broker,
            "/queue/q.stomp",
            Address::queue("q.stomp", "/queue/q.stomp"),
        ),
        Endpoint::stomp(
            &broker,
            "/amq/queue/q.stomp-amq",
            Address::queue("q.stomp-amq", "/amq/queue/q.stomp-amq"),
        ),
    ];
    run_matrix(&broker, publisher, "queue", consumers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_from_amqp() {
    queue_matrix(Proto::Amqp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_from_stomp() {
    queue_matrix(Proto::Stomp).await;
}

// ---------------------------------------------------------------------------
// Acknowledgement semantics across protocols
// ---------------------------------------------------------------------------

// An MQTT QoS 1 message lands in a queue; an AMQP consumer takes it, leaves
// (the delivery stays unacked) and nacks it with requeue=true; the message
// goes back and reaches a STOMP ack:client subscriber of that queue marked
// redelivered:true, with its body and headers intact. Once the STOMP client
// ACKs it, it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacked_mqtt_message_is_redelivered_to_stomp() {
    let broker = Broker::start();
    let (conn, ch) = amqp(&broker).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    declare_queue(&ch, "work", durable).await;
    bind(&ch, "work", "amq.topic", "jobs.#").await;
    let mut worker = AmqpSub::start(conn, ch, "work", false).await;

    let mut dev = Mq4::start(broker.mqtt_addr(), "dev-1").await;
    dev.publish_qos1("jobs/1", BODY).await;

    let d = worker.next().await;
    assert_eq!(&d.data[..], BODY);
    assert!(!d.redelivered, "first delivery marked redelivered");
    assert_eq!(d.routing_key.as_str(), "jobs.1");
    assert_eq!(*d.properties.delivery_mode(), Some(2), "QoS 1 → persistent");

    let addr = broker.stomp_addr();
    let mut s = blocking(|| {
        let mut c = StompClient::connect(addr, Version::V12);
        c.receipt(
            "SUBSCRIBE",
            &[
                ("destination", "/amq/queue/work"),
                ("id", "w"),
                ("ack", "client"),
            ],
            b"",
        );
        // The message is unacked on the AMQP channel: nothing to deliver.
        c.assert_quiet(QUIET);
        c
    });
    w!(worker
        .ch
        .basic_cancel(worker.consumer.tag(), BasicCancelOptions::default()))
    .expect("basic.cancel");
    let requeued = w!(d.nack(BasicNackOptions {
        requeue: true,
        multiple: false
    }))
    .expect("basic.nack");
    assert!(requeued, "nack not sent");

    let m = blocking(|| s.message());
    assert_eq!(m.body, BODY, "{m:?}");
    assert_eq!(m.get("redelivered"), Some("true"), "{m:?}");
    assert_eq!(m.get("subscription"), Some("w"), "{m:?}");
    assert_eq!(m.get("destination"), Some("/topic/jobs.1"), "{m:?}");
    assert_eq!(m.get("persistent"), Some("true"), "{m:?}");
    assert_eq!(m.get("x-mqtt-client-id"), Some("dev-1"), "{m:?}");
    assert_eq!(m.get("x-mqtt-publish-qos"), Some("1"), "{m:?}");
    let ack = m.header("ack").to_owned();
    blocking(|| {
        s.receipt("ACK", &[("id", &ack)], b"");
        s.assert_quiet(QUIET);
        s.disconnect();
    });
    // ACKed, then disconnected: nothing went back to the queue.
    let (_conn, ch) = amqp(&broker).await;
    let q = w!(ch.queue_declare(
        "work".into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default()
    ))
    .expect("passive declare");
    assert_eq!(q.message_count(), 0, "message back in the queue after ACK");
    // lapin closes the delegate's channel once the consumer is cancelled.
    if let Ok(Some(Ok(Some(d)))) = tokio::time::timeout(POLL, worker.rx.recv()).await {
        panic!("cancelled AMQP consumer got a delivery: {d:?}");
    }
}

// ---------------------------------------------------------------------------
// Request / response
// ---------------------------------------------------------------------------

/// An AMQP service on `svc.request` (amq.topic) answering to the MQTT
/// response topic: routing key = reply_to with `/` → `.`, the request's
/// correlation id, and `x-mqtt-correlation-data` echoed if present (the
/// header carrying binary correlation data, docs/mqtt.md).
async fn mqtt5_request_through_amqp_service(correlation: &[u8]) {
    let broker = Broker::start();
    let mut service = AmqpSub::bound(&broker, "amq.topic", "svc.request").await;
    let mut requester = Mq5::start(broker.mqtt_addr(), "requester").await;
    requester.subscribe("resp/requester/1").await;
    let props = PublishProperties {
        response_topic: Some("resp/requester/1".into()),
        correlation_data: Some(correlation.to_vec().into()),
        content_type: Some("application/x-request".into()),
        ..Default::default()
    };
    let reason = requester.publish("svc/request", b"question", props).await;
    assert_eq!(reason, PubAckReason::Success);

    let req = service.next().await;
    assert_eq!(&req.data[..], b"question");
    let reply_to = short(req.properties.reply_to())
        .expect("response topic as reply_to")
        .to_owned();
    assert_eq!(reply_to, "resp/requester/1");
    let mut reply = BasicProperties::default().with_content_type("application/x-answer".into());
    if let Some(c) = req.properties.correlation_id() {
        reply = reply.with_correlation_id(c.clone());
    }
    if let Some(h) = req.properties.headers()
        && let Some((_, v)) = h
            .inner()
            .iter()
            .find(|(k, _)| k.as_str() == "x-mqtt-correlation-data")
    {
        let mut echo = FieldTable::default();
        echo.insert("x-mqtt-correlation-data".into(), v.clone());
        reply = reply.with_headers(echo);
    }
    let confirm = w!(service.ch.basic_publish(
        "amq.topic".into(),
        reply_to.replace('/', ".").as_str().into(),
        BasicPublishOptions::default(),
        BODY,
        reply
    ))
    .expect("publish reply");
    w!(confirm).expect("reply confirm");

    let p = requester.next_publish().await;
    assert_eq!(&p.topic[..], b"resp/requester/1");
    assert_eq!(&p.payload[..], BODY);
    let pr = p.properties.expect("reply has properties");
    assert_eq!(
        pr.correlation_data.as_deref(),
        Some(correlation),
        "correlation data of the reply: {pr:?}"
    );
    assert_eq!(pr.content_type.as_deref(), Some("application/x-answer"));
    assert!(
        pr.user_properties.is_empty(),
        "internal headers leaked: {pr:?}"
    );
    assert!(requester.try_next_publish(QUIET).await.is_none());
}

// An MQTT 5 request (response topic + UTF-8 correlation data) answered by
// an AMQP service with correlation_id reaches the requester with the same
// correlation data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_request_answered_by_amqp_service() {
    mqtt5_request_through_amqp_service(b"req-42").await;
}

// The same with binary correlation data: the service sees it in the header
// x-mqtt-correlation-data, echoes the header, and the requester gets the
// bytes back as correlation data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_binary_correlation_survives_an_amqp_service() {
    mqtt5_request_through_amqp_service(BINARY_CORRELATION).await;
}

// A STOMP request with reply-to:/temp-queue/r reaches an AMQP service with a
// bare queue name as reply_to (the same one for every request of the
// connection); the service's answers through the default exchange arrive
// on the STOMP connection without a SUBSCRIBE, correlation id and
// properties intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_request_answered_by_amqp_service() {
    let broker = Broker::start();
    let mut service = {
        let (conn, ch) = amqp(&broker).await;
        declare_queue(&ch, "svc.stomp", QueueDeclareOptions::default()).await;
        AmqpSub::start(conn, ch, "svc.stomp", true).await
    };
    let addr = broker.stomp_addr();
    let mut c = blocking(|| StompClient::connect(addr, Version::V12));
    let mut reply_tos = Vec::new();
    for corr in ["corr-s1", "corr-s2"] {
        blocking(|| {
            stomp_send(
                &mut c,
                "/queue/svc.stomp",
                &[("reply-to", "/temp-queue/r"), ("correlation-id", corr)],
                b"request",
            );
        });
        let req = service.next().await;
        assert_eq!(&req.data[..], b"request");
        assert_eq!(short(req.properties.correlation_id()), Some(corr));
        let reply_to = short(req.properties.reply_to())
            .expect("reply_to set")
            .to_owned();
        assert!(
            !reply_to.starts_with('/'),
            "an AMQP service needs a queue name, got {reply_to:?}"
        );
        let props = BasicProperties::default()
            .with_correlation_id(corr.into())
            .with_content_type("application/x-answer".into());
        w!(service.ch.basic_publish(
            "".into(),
            reply_to.as_str().into(),
            BasicPublishOptions::default(),
            BODY,
            props
        ))
        .expect("publish reply");
        reply_tos.push(reply_to);

        let m = blocking(|| c.message());
        assert_eq!(m.body, BODY, "{m:?}");
        assert_eq!(m.get("correlation-id"), Some(corr), "{m:?}");
        assert_eq!(m.get("content-type"), Some("application/x-answer"), "{m:?}");
        assert_eq!(m.get("subscription"), Some("/temp-queue/r"), "{m:?}");
        assert_eq!(m.get("destination"), Some("/temp-queue/r"), "{m:?}");
    }
    assert_eq!(
        reply_tos[0], reply_tos[1],
        "one temp queue per connection and name"
    );
    blocking(|| {
        c.assert_quiet(QUIET);
        c.disconnect();
    });
}

// ---------------------------------------------------------------------------
// STOMP answering an MQTT 5 request
// ---------------------------------------------------------------------------

// docs/interop.md: a STOMP consumer sees an MQTT 5 response topic as
// `reply-to:/topic/<routing key>`, and a SEND there reaches the requester.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_service_answers_an_mqtt5_request() {
    let broker = Broker::start();
    let addr = broker.stomp_addr();
    let mut svc = blocking(|| stomp_subscriber(addr, "/topic/svc.request", "svc"));
    let mut requester = Mq5::start(broker.mqtt_addr(), "requester").await;
    requester.subscribe("resp/r1").await;
    let props = PublishProperties {
        response_topic: Some("resp/r1".into()),
        correlation_data: Some(b"c-1".to_vec().into()),
        ..Default::default()
    };
    let reason = requester.publish("svc/request", b"question", props).await;
    assert_eq!(reason, PubAckReason::Success);
    let svc = blocking(move || {
        let m = svc.message();
        assert_eq!(m.body, b"question", "{m:?}");
        assert_eq!(m.get("correlation-id"), Some("c-1"), "{m:?}");
        let reply_to = m.header("reply-to").to_owned();
        assert_eq!(reply_to, "/topic/resp.r1", "{m:?}");
        svc.send(
            "SEND",
            &[
                ("destination", &reply_to),
                ("correlation-id", "c-1"),
                ("receipt", "answered"),
            ],
            b"answer",
        );
        let f = svc.next();
        assert_eq!(
            (f.command.as_str(), f.get("receipt-id")),
            ("RECEIPT", Some("answered")),
            "SEND to the reply-to a MESSAGE carried: {f:?}"
        );
        svc
    });
    let answer = requester.next_publish().await;
    assert_eq!(&answer.payload[..], b"answer");
    let props = answer.properties.expect("properties");
    assert_eq!(props.correlation_data.as_deref(), Some(&b"c-1"[..]));
    drop(svc);
}

// ---------------------------------------------------------------------------
// Findings about MQTT 5 user properties (isolated from the matrix)
// ---------------------------------------------------------------------------

// docs/interop.md: the AMQP properties MQTT 5 has no field for (message id,
// type, priority, timestamp, app id, user id, content encoding) reach an
// MQTT 5 subscriber as `amqp-*` user properties, beside the headers.
// Checked for an AMQP and a STOMP publisher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_properties_reach_mqtt5_as_user_properties() {
    let broker = Broker::start();
    let mut sub = Mq5::start(broker.mqtt_addr(), "sub-v5").await;
    sub.subscribe(MQTT_TOPIC).await;

    let mut headers = FieldTable::default();
    headers.insert("site".into(), AMQPValue::LongString("south".into()));
    let props = BasicProperties::default()
        .with_headers(headers)
        .with_message_id("m-1".into())
        .with_type("t-1".into())
        .with_priority(7)
        .with_timestamp(1_700_000_000)
        .with_app_id("app".into())
        .with_user_id("guest".into())
        .with_content_encoding("gzip".into());
    let mut amqp_pub = Publisher::connect(Proto::Amqp, &broker).await;
    amqp_pub
        .publish(&Sample::Amqp(props), &Address::topic())
        .await;
    let mut stomp_pub = Publisher::connect(Proto::Stomp, &broker).await;
    let send = vec![
        ("site", "south"),
        ("amqp-message-id", "m-1"),
        ("type", "t-1"),
        ("priority", "7"),
        ("timestamp", "1700000000"),
        ("app-id", "app"),
        ("user-id", "guest"),
        ("content-encoding", "gzip"),
    ];
    stomp_pub
        .publish(&Sample::Stomp(send), &Address::topic())
        .await;

    let mut want = owned(&[
        ("site", "south"),
        ("amqp-message-id", "m-1"),
        ("amqp-type", "t-1"),
        ("amqp-priority", "7"),
        ("amqp-timestamp", "1700000000"),
        ("amqp-app-id", "app"),
        ("amqp-user-id", "guest"),
        ("amqp-content-encoding", "gzip"),
    ]);
    want.sort();
    for from in ["AMQP", "STOMP"] {
        let p = sub.next_publish().await;
        assert_eq!(&p.payload[..], BODY, "from {from}");
        let mut user = p
            .properties
            .map(|pr| pr.user_properties)
            .unwrap_or_default();
        user.sort();
        assert_eq!(user, want, "{from} → MQTT 5 user properties");
    }
}

// docs/interop.md: an MQTT 5 publisher's `amqp-*` user properties set the
// AMQP properties they name (so a message survives AMQP → MQTT 5 → AMQP);
// a value that does not parse stays an ordinary header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_amqp_user_properties_set_properties() {
    let broker = Broker::start();
    let mut sub = AmqpSub::bound(&broker, "amq.topic", TOPIC_KEY).await;
    let mut publ = Mq5::start(broker.mqtt_addr(), MQTT5_ID).await;
    let props = PublishProperties {
        user_properties: owned(&[
            ("amqp-type", "t"),
            ("amqp-priority", "high"),
            ("site", "north"),
        ]),
        ..Default::default()
    };
    let reason = publ.publish(MQTT_TOPIC, BODY, props).await;
    assert_eq!(reason, PubAckReason::Success);
    let d = sub.next().await;
    assert_eq!(
        d.properties.kind().as_ref().map(|k| k.as_str()),
        Some("t"),
        "amqp-type sets the AMQP type"
    );
    assert_eq!(*d.properties.priority(), None, "unparsable priority");
    let headers = d.properties.headers().clone().unwrap_or_default();
    let text = |k: &str| match headers.inner().get(k) {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    };
    assert_eq!(text("amqp-priority").as_deref(), Some("high"));
    assert_eq!(text("site").as_deref(), Some("north"));
    assert_eq!(
        text("amqp-type"),
        None,
        "used as the property, not a header"
    );
}
