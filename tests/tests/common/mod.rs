//! Helpers shared by the lapin-based integration tests.
//!
//! Every await on the broker goes through [`t!`], which bounds it by [`STEP`]
//! and panics with the awaited expression if it does not finish, so that no
//! test can hang.
//!
//! Deliveries are read through [`Sub`], which installs a consumer delegate
//! forwarding each delivery into a tokio channel (lapin's `Consumer` is a
//! `futures_core::Stream`, which this crate cannot name). The delegate runs
//! synchronously in lapin's reader, so deliveries keep their wire order. A
//! `Sub` also sees channel errors (`Err`) and cancellation (`Ok(None)`),
//! which makes it the way to observe asynchronous channel closes (after
//! `basic.ack`, `basic.publish`, ...).
//!
//! [`raw`] is a hand-driven AMQP client for traffic lapin would not send.

#![allow(dead_code, unused_macros)] // each test file uses a different subset

use std::fmt::Debug;
use std::time::{Duration, Instant};

use lapin::message::{BasicGetMessage, Delivery, DeliveryResult};
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer, ErrorKind,
    Queue,
};
use switchyard_tests::Broker;
use tokio::sync::mpsc;

/// Bound on any single await.
pub(crate) const STEP: Duration = Duration::from_secs(15);

/// How long to watch for something that must *not* arrive.
pub(crate) const QUIET: Duration = Duration::from_millis(500);

/// `t!(future)`: awaits `future` for at most [`STEP`], panicking on timeout.
macro_rules! t {
    ($fut:expr) => {
        ::tokio::time::timeout(crate::common::STEP, $fut)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out after {:?} awaiting `{}`",
                    crate::common::STEP,
                    stringify!($fut)
                )
            })
    };
}

pub(crate) mod raw;

/// Persistent (`delivery_mode = 2`) message properties.
pub(crate) fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Transient (`delivery_mode = 1`) message properties.
pub(crate) fn transient() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(1)
}

/// Connects as guest to vhost "/".
pub(crate) async fn connect(broker: &Broker) -> Connection {
    t!(Connection::connect(
        &broker.amqp_uri(),
        ConnectionProperties::default()
    ))
    .unwrap_or_else(|e| panic!("connect to {}: {e}", broker.amqp_uri()))
}

/// Opens a channel.
pub(crate) async fn channel(conn: &Connection) -> Channel {
    t!(conn.create_channel()).expect("open channel")
}

/// Opens a channel in publisher-confirm mode.
pub(crate) async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = channel(conn).await;
    t!(ch.confirm_select(ConfirmSelectOptions::default())).expect("confirm.select");
    ch
}

/// The AMQP reply code carried by a lapin error (channel or connection
/// close), if it is one.
pub(crate) fn reply_code(err: &lapin::Error) -> Option<u16> {
    match err.kind() {
        ErrorKind::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    }
}

/// Asserts that `res` failed with AMQP reply code `code`.
#[track_caller]
pub(crate) fn assert_code<T: Debug>(res: lapin::Result<T>, code: u16) {
    match res {
        Ok(v) => panic!("expected reply code {code}, got success: {v:?}"),
        Err(e) => assert_eq!(
            reply_code(&e),
            Some(code),
            "expected reply code {code}, got error {e:?}"
        ),
    }
}

/// Declares a queue with the given options and no arguments.
pub(crate) async fn declare(ch: &Channel, name: &str, opts: QueueDeclareOptions) -> Queue {
    t!(ch.queue_declare(name.into(), opts, FieldTable::default()))
        .unwrap_or_else(|e| panic!("declare queue {name:?}: {e}"))
}

/// Publishes and awaits the publisher confirm (which is
/// [`Confirmation::NotRequested`] outside confirm mode).
pub(crate) async fn publish_with(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Confirmation {
    let confirm = t!(ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        body,
        props
    ))
    .unwrap_or_else(|e| panic!("publish to {exchange:?}/{key:?}: {e}"));
    t!(confirm).unwrap_or_else(|e| panic!("confirm of publish to {exchange:?}/{key:?}: {e}"))
}

/// Publishes a default-property message; in confirm mode also asserts that
/// the broker acked it.
pub(crate) async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8]) {
    let c = publish_with(ch, exchange, key, body, BasicProperties::default()).await;
    assert!(
        matches!(c, Confirmation::Ack(None) | Confirmation::NotRequested),
        "publish to {exchange:?}/{key:?} not acked: {c:?}"
    );
}

/// `basic.get` with manual ack; `None` on get-empty.
pub(crate) async fn get(ch: &Channel, queue: &str) -> Option<BasicGetMessage> {
    t!(ch.basic_get(queue.into(), BasicGetOptions { no_ack: false }))
        .unwrap_or_else(|e| panic!("basic.get {queue:?}: {e}"))
}

/// Takes every message from `queue` with `basic.get` (auto-ack) and returns
/// the bodies as strings, in order.
pub(crate) async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = t!(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
        .unwrap_or_else(|e| panic!("basic.get {queue:?}: {e}"))
    {
        out.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
        assert!(out.len() <= 100_000, "queue {queue:?} never runs empty");
    }
    out
}

/// A consumer whose deliveries are forwarded, in order, into a channel.
pub(crate) struct Sub {
    /// Kept alive: dropping the last handle cancels the consumer.
    pub(crate) consumer: Consumer,
    rx: mpsc::UnboundedReceiver<DeliveryResult>,
}

impl Sub {
    /// Starts consuming `queue` with the given options.
    pub(crate) async fn start(
        ch: &Channel,
        queue: &str,
        opts: BasicConsumeOptions,
    ) -> lapin::Result<Self> {
        let consumer = t!(ch.basic_consume(queue.into(), "".into(), opts, FieldTable::default()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        consumer.set_delegate(move |delivery: DeliveryResult| {
            // Forward synchronously so that order is kept; the returned
            // future does nothing.
            let _ = tx.send(delivery);
            async {}
        });
        Ok(Self { consumer, rx })
    }

    /// The next event within `within`, or `None` if nothing arrived.
    pub(crate) async fn next_within(&mut self, within: Duration) -> Option<DeliveryResult> {
        match tokio::time::timeout(within, self.rx.recv()).await {
            Ok(Some(r)) => Some(r),
            // lapin drops the delegate (and our sender) once the consumer
            // is gone; a client-side cancel ends it without an Ok(None).
            Ok(None) => Some(Ok(None)),
            Err(_) => None,
        }
    }

    /// The next delivery; panics on timeout, cancellation or error.
    pub(crate) async fn next(&mut self) -> Delivery {
        match self.next_within(STEP).await {
            Some(Ok(Some(d))) => d,
            Some(Ok(None)) => panic!("consumer cancelled while waiting for a delivery"),
            Some(Err(e)) => panic!("consumer error while waiting for a delivery: {e:?}"),
            None => panic!("no delivery within {STEP:?}"),
        }
    }

    /// The next delivery's body as a string, after acking it.
    pub(crate) async fn next_acked(&mut self) -> String {
        let d = self.next().await;
        t!(d.ack(Default::default())).expect("ack");
        String::from_utf8_lossy(&d.data).into_owned()
    }

    /// Asserts that nothing arrives for [`QUIET`].
    pub(crate) async fn assert_quiet(&mut self) {
        if let Some(r) = self.next_within(QUIET).await {
            let what = match r {
                Ok(Some(d)) => format!("delivery {:?}", String::from_utf8_lossy(&d.data)),
                other => format!("{other:?}"),
            };
            panic!("expected nothing, got {what}");
        }
    }

    /// Waits for the server's cancel notification (or the end of the
    /// consumer), skipping nothing: a delivery first is a failure.
    pub(crate) async fn expect_cancelled(&mut self) {
        match self.next_within(STEP).await {
            Some(Ok(None)) => {}
            other => panic!("expected consumer cancellation, got {other:?}"),
        }
    }

    /// Waits for the channel error that ended this consumer, skipping any
    /// deliveries still in flight, and returns its reply code.
    pub(crate) async fn expect_error_code(&mut self) -> u16 {
        loop {
            match self.next_within(STEP).await {
                Some(Ok(Some(_))) => continue,
                Some(Err(e)) => {
                    return reply_code(&e)
                        .unwrap_or_else(|| panic!("consumer error without reply code: {e:?}"));
                }
                Some(Ok(None)) => panic!("consumer cancelled without an error"),
                None => panic!("no channel error within {STEP:?}"),
            }
        }
    }
}

/// A consumer on a fresh server-named exclusive queue of `ch`: it receives
/// nothing but sees the error if the broker closes `ch`.
pub(crate) async fn probe(ch: &Channel) -> Sub {
    let q = declare(
        ch,
        "",
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
    )
    .await;
    Sub::start(ch, q.name().as_str(), BasicConsumeOptions::default())
        .await
        .expect("consume probe queue")
}

/// Round-trips one message through a fresh server-named queue on a new
/// channel of `conn`: proof that the connection and broker still work.
pub(crate) async fn assert_round_trip(conn: &Connection) {
    let ch = channel(conn).await;
    let q = declare(
        &ch,
        "",
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
    )
    .await;
    let name = q.name().as_str();
    let mut sub = Sub::start(&ch, name, BasicConsumeOptions::default())
        .await
        .expect("consume");
    publish(&ch, "", name, b"still alive").await;
    assert_eq!(sub.next_acked().await, "still alive");
}

// ---------------------------------------------------------------------------
// Queue-argument helpers (tests of dead-lettering, limits, priorities, ...)

/// Bound on waiting for something the broker does on its own (a timer,
/// dead-lettering, a requeue after a close).
pub(crate) const DEADLINE: Duration = Duration::from_secs(5);

/// Interval between polls of a queue.
pub(crate) const POLL: Duration = Duration::from_millis(20);

pub(crate) fn args(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

/// Polls `queue` with `basic.get` (auto-ack) until a message arrives;
/// panics after [`DEADLINE`].
pub(crate) async fn await_get(ch: &Channel, queue: &str) -> Delivery {
    let start = Instant::now();
    loop {
        let got = t!(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
            .unwrap_or_else(|e| panic!("basic.get {queue:?}: {e}"));
        if let Some(m) = got {
            return m.delivery;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no message in {queue:?} within {DEADLINE:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

pub(crate) async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    t!(ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default()
    ))
    .unwrap_or_else(|e| panic!("bind {queue:?} to {exchange:?} with {key:?}: {e}"));
}

pub(crate) fn body(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.data).into_owned()
}

/// A 32-bit signed integer argument (what most clients send for small ints).
pub(crate) fn int(n: i32) -> AMQPValue {
    AMQPValue::LongInt(n)
}

pub(crate) fn string_value(v: &AMQPValue, what: &str) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        other => panic!("{what}: expected a string, got {other:?}"),
    }
}

/// A long-string argument.
pub(crate) fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}
