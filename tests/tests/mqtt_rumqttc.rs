//! MQTT 3.1.1 end to end through rumqttc (protocol level 4) against a real
//! `switchyard` process started with `--mqtt 127.0.0.1:0`.
//!
//! Each client's event loop runs in its own task and forwards every event
//! into a channel ([`Mq`]); the task stops at the first connection error, so
//! that rumqttc never reconnects behind a test's back. Aborting that task
//! drops the socket without a DISCONNECT: that is how an abnormal disconnect
//! (will, takeover) is produced. Every wait is bounded by [`STEP`] (or an
//! explicit deadline), so no test can hang.
//!
//! Spec references are to MQTT 3.1.1 (OASIS standard, 2014).

#[macro_use]
mod common;

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::raw::blocking;
use common::{QUIET, STEP};
use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, ConnectionError, Event, LastWill, MqttOptions,
    Outgoing, Packet, Publish, QoS, SubscribeReasonCode,
};
use switchyard_tests::{Broker, RawClient};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the event-loop task reports.
#[derive(Debug)]
enum Ev {
    Event(Event),
    /// The connection ended (the task has stopped).
    Ended(ConnectionError),
}

/// One rumqttc client whose event loop runs in a task of its own.
struct Mq {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Ev>,
    task: Option<JoinHandle<()>>,
    /// Publishes that arrived while waiting for something else, in order.
    publishes: VecDeque<Publish>,
}

fn opts(addr: SocketAddr, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

fn persistent_opts(addr: SocketAddr, id: &str) -> MqttOptions {
    let mut o = opts(addr, id);
    o.set_clean_session(false);
    o
}

impl Mq {
    fn spawn(o: MqttOptions) -> Self {
        let (client, mut el) = AsyncClient::new(o, 256);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(ev) => {
                        if tx.send(Ev::Event(ev)).is_err() {
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
            .wait_for(&format!("CONNACK for {id:?}"), STEP, |e| match e {
                Event::Incoming(Packet::ConnAck(a)) => Some(a.clone()),
                _ => None,
            })
            .await;
        assert_eq!(ack.code, ConnectReturnCode::Success, "CONNACK of {id:?}");
        (mq, ack)
    }

    async fn start(addr: SocketAddr, id: &str) -> Self {
        let (mq, ack) = Self::connect(opts(addr, id)).await;
        assert!(!ack.session_present, "clean session reported as present");
        mq
    }

    /// The next event within `within`; `None` on timeout.
    async fn recv(&mut self, within: Duration) -> Option<Ev> {
        match tokio::time::timeout(within, self.rx.recv()).await {
            Ok(Some(ev)) => Some(ev),
            Ok(None) => panic!("event loop task gone without reporting an error"),
            Err(_) => None,
        }
    }

    /// Waits (at most `within`) for the first event `f` accepts. Publishes
    /// it does not accept are kept for [`Mq::next_publish`]; anything else
    /// is skipped. Panics if the connection ends first.
    async fn wait_for<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut f: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                None => panic!("no {what} within {within:?}"),
                Some(Ev::Ended(e)) => panic!("connection ended while waiting for {what}: {e:?}"),
                Some(Ev::Event(ev)) => {
                    if let Some(t) = f(&ev) {
                        return t;
                    }
                    if let Event::Incoming(Packet::Publish(p)) = ev {
                        self.publishes.push_back(p);
                    }
                }
            }
        }
    }

    /// The next PUBLISH from the broker.
    async fn next_publish(&mut self) -> Publish {
        if let Some(p) = self.publishes.pop_front() {
            return p;
        }
        self.wait_for("PUBLISH", STEP, |e| match e {
            Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// The next PUBLISH within `within`, if any.
    async fn next_publish_within(&mut self, within: Duration) -> Option<Publish> {
        if let Some(p) = self.publishes.pop_front() {
            return Some(p);
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                None => return None,
                Some(Ev::Event(Event::Incoming(Packet::Publish(p)))) => return Some(p),
                Some(Ev::Event(_)) => {}
                Some(Ev::Ended(e)) => panic!("connection ended: {e:?}"),
            }
        }
    }

    /// The next `n` publishes as (topic, payload) strings.
    async fn next_publishes(&mut self, n: usize) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let p = self.next_publish().await;
            out.push((
                p.topic.clone(),
                String::from_utf8_lossy(&p.payload).into_owned(),
            ));
        }
        out
    }

    /// Asserts that no PUBLISH arrives within `within`.
    async fn assert_no_publish(&mut self, within: Duration) {
        if let Some(p) = self.publishes.pop_front() {
            panic!("expected no PUBLISH, got {p:?}");
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                None => return,
                Some(Ev::Event(Event::Incoming(Packet::Publish(p)))) => {
                    panic!("expected no PUBLISH, got {p:?}")
                }
                Some(Ev::Event(_)) => {}
                Some(Ev::Ended(e)) => panic!("connection ended: {e:?}"),
            }
        }
    }

    /// SUBSCRIBE and wait for its SUBACK, which must grant `qos`.
    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        t!(self.client.subscribe(filter, qos)).expect("queue SUBSCRIBE");
        let codes = self
            .wait_for(&format!("SUBACK for {filter:?}"), STEP, |e| match e {
                Event::Incoming(Packet::SubAck(s)) => Some(s.return_codes.clone()),
                _ => None,
            })
            .await;
        assert_eq!(
            codes,
            vec![SubscribeReasonCode::Success(qos)],
            "SUBACK for {filter:?}"
        );
    }

    /// PUBLISH and wait until the broker has taken it: written (QoS 0),
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2).
    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        t!(self.client.publish(topic, qos, retain, payload.to_vec())).expect("queue PUBLISH");
        let pkid = self
            .wait_for(
                &format!("outgoing PUBLISH to {topic:?}"),
                STEP,
                |e| match e {
                    Event::Outgoing(Outgoing::Publish(id)) => Some(*id),
                    _ => None,
                },
            )
            .await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.wait_for(&format!("PUBACK {pkid}"), STEP, |e| match e {
                    Event::Incoming(Packet::PubAck(a)) if a.pkid == pkid => Some(()),
                    _ => None,
                })
                .await;
            }
            QoS::ExactlyOnce => {
                self.wait_for(&format!("PUBCOMP {pkid}"), STEP, |e| match e {
                    Event::Incoming(Packet::PubComp(c)) if c.pkid == pkid => Some(()),
                    _ => None,
                })
                .await;
            }
        }
    }

    /// Waits for the connection to end (broker closed it), skipping events.
    async fn expect_end(&mut self, within: Duration) -> ConnectionError {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                None => panic!("connection still open after {within:?}"),
                Some(Ev::Ended(e)) => return e,
                Some(Ev::Event(Event::Incoming(Packet::Publish(p)))) => {
                    self.publishes.push_back(p);
                }
                Some(Ev::Event(_)) => {}
            }
        }
    }

    /// Clean DISCONNECT; waits until the broker has closed the socket.
    async fn disconnect(mut self) {
        t!(self.client.disconnect()).expect("queue DISCONNECT");
        self.wait_for("outgoing DISCONNECT", STEP, |e| {
            matches!(e, Event::Outgoing(Outgoing::Disconnect)).then_some(())
        })
        .await;
        self.expect_end(STEP).await;
    }

    /// Drops the socket without DISCONNECT (an abnormal disconnect).
    async fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // Once the task is reaped, the event loop and its socket are gone.
            let _ = t!(task);
        }
    }
}

impl Drop for Mq {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn text(p: &Publish) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

async fn round_trip(qos: QoS) {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut sub = Mq::start(addr, "rt-sub").await;
    sub.subscribe("rt/+/value", qos).await;
    let mut publ = Mq::start(addr, "rt-pub").await;
    let payload = format!("payload at {qos:?} \u{e9}\u{0} end");
    publ.publish("rt/one/value", qos, false, payload.as_bytes())
        .await;
    // Not matched by the filter: must not arrive.
    publ.publish("rt/one/other", qos, false, b"nope").await;
    publ.publish("rt/two/value", qos, false, b"second").await;

    let p = sub.next_publish().await;
    assert_eq!(p.topic, "rt/one/value");
    assert_eq!(&p.payload[..], payload.as_bytes());
    assert_eq!(p.qos, qos, "delivered at the granted QoS");
    assert!(!p.retain, "live delivery must not carry RETAIN (3.3.1.3)");
    let p = sub.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), text(&p).as_str()),
        ("rt/two/value", "second")
    );
    sub.assert_no_publish(QUIET).await;
    publ.disconnect().await;
    sub.disconnect().await;
}

// QoS 0: subscribe, publish, the subscriber gets topic and payload unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_round_trip() {
    round_trip(QoS::AtMostOnce).await;
}

// QoS 1: PUBACK to the publisher, delivery at QoS 1 acked by rumqttc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_round_trip() {
    round_trip(QoS::AtLeastOnce).await;
}

// QoS 2: PUBREC/PUBREL/PUBCOMP both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_round_trip() {
    round_trip(QoS::ExactlyOnce).await;
}

// The delivery QoS is the minimum of publish and subscription QoS (3.8.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_qos_is_min_of_publish_and_subscription() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut low = Mq::start(addr, "min-low").await;
    low.subscribe("min/x", QoS::AtMostOnce).await;
    let mut high = Mq::start(addr, "min-high").await;
    high.subscribe("min/x", QoS::ExactlyOnce).await;
    let mut publ = Mq::start(addr, "min-pub").await;
    publ.publish("min/x", QoS::AtLeastOnce, false, b"q1").await;
    publ.publish("min/x", QoS::ExactlyOnce, false, b"q2").await;
    publ.publish("min/x", QoS::AtMostOnce, false, b"q0").await;
    for (want_low, want_high, body) in [
        (QoS::AtMostOnce, QoS::AtLeastOnce, "q1"),
        (QoS::AtMostOnce, QoS::ExactlyOnce, "q2"),
        (QoS::AtMostOnce, QoS::AtMostOnce, "q0"),
    ] {
        let l = low.next_publish().await;
        assert_eq!(
            (text(&l).as_str(), l.qos),
            (body, want_low),
            "QoS 0 subscriber"
        );
        let h = high.next_publish().await;
        assert_eq!(
            (text(&h).as_str(), h.qos),
            (body, want_high),
            "QoS 2 subscriber"
        );
    }
}

// `+` matches exactly one level, `#` any number including none ("sport/#"
// matches "sport", 4.7.1.2); neither matches other prefixes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plus_and_hash_filters() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut plus = Mq::start(addr, "wild-plus").await;
    plus.subscribe("sensors/+/temp", QoS::AtLeastOnce).await;
    let mut hash = Mq::start(addr, "wild-hash").await;
    hash.subscribe("sensors/#", QoS::AtLeastOnce).await;
    let mut all = Mq::start(addr, "wild-all").await;
    all.subscribe("#", QoS::AtLeastOnce).await;

    let mut publ = Mq::start(addr, "wild-pub").await;
    let topics = [
        "sensors/1/temp",
        "sensors/1/humidity",
        "sensors/1/temp/raw",
        "other/1/temp",
        "sensors",
        "sensorsX/1/temp",
        "sensors/end/temp",
    ];
    for t in topics {
        publ.publish(t, QoS::AtLeastOnce, false, t.as_bytes()).await;
    }
    let got = plus.next_publishes(2).await;
    assert_eq!(
        got,
        [
            ("sensors/1/temp".to_owned(), "sensors/1/temp".to_owned()),
            ("sensors/end/temp".to_owned(), "sensors/end/temp".to_owned()),
        ]
    );
    let want_hash = [
        "sensors/1/temp",
        "sensors/1/humidity",
        "sensors/1/temp/raw",
        "sensors",
        "sensors/end/temp",
    ];
    let got: Vec<String> = hash
        .next_publishes(5)
        .await
        .into_iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(got, want_hash);
    let got: Vec<String> = all
        .next_publishes(7)
        .await
        .into_iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(got, topics);
    plus.assert_no_publish(QUIET).await;
    hash.assert_no_publish(Duration::ZERO).await;
    all.assert_no_publish(Duration::ZERO).await;
}

// A retained message goes to every later subscription whose filter matches,
// wildcards included, with RETAIN set (3.3.1.3); a newer one replaces it; a
// retained PUBLISH with an empty payload removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_to_later_wildcard_subscriber_and_cleared() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut publ = Mq::start(addr, "ret-pub").await;
    publ.publish("home/kitchen/temp", QoS::AtLeastOnce, true, b"20")
        .await;
    publ.publish("home/kitchen/temp", QoS::AtLeastOnce, true, b"21")
        .await;
    publ.publish("home/hall/temp", QoS::AtMostOnce, true, b"19")
        .await;
    publ.publish("home/hall/light", QoS::AtLeastOnce, false, b"not retained")
        .await;

    let mut s1 = Mq::start(addr, "ret-sub1").await;
    s1.subscribe("home/+/temp", QoS::AtLeastOnce).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = s1.next_publish().await;
        assert!(p.retain, "retained message without RETAIN flag: {p:?}");
        got.push((p.topic.clone(), text(&p)));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("home/hall/temp".to_owned(), "19".to_owned()),
            ("home/kitchen/temp".to_owned(), "21".to_owned()),
        ]
    );
    s1.assert_no_publish(QUIET).await;

    // Clear the kitchen: an empty retained payload.
    publ.publish("home/kitchen/temp", QoS::AtLeastOnce, true, b"")
        .await;
    let mut s2 = Mq::start(addr, "ret-sub2").await;
    s2.subscribe("home/#", QoS::AtLeastOnce).await;
    let p = s2.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), text(&p).as_str(), p.retain),
        ("home/hall/temp", "19", true)
    );
    s2.assert_no_publish(QUIET).await;

    // An exact filter gets nothing for the cleared topic either.
    let mut s3 = Mq::start(addr, "ret-sub3").await;
    s3.subscribe("home/kitchen/temp", QoS::AtLeastOnce).await;
    s3.assert_no_publish(QUIET).await;
}

fn with_will(mut o: MqttOptions, topic: &str, payload: &[u8]) -> MqttOptions {
    o.set_last_will(LastWill::new(
        topic,
        payload.to_vec(),
        QoS::AtLeastOnce,
        false,
    ));
    o
}

// A connection that ends without DISCONNECT publishes its will (3.1.2.5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_on_abnormal_disconnect() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut watcher = Mq::start(addr, "will-watch").await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;

    let (dev, _) = Mq::connect(with_will(opts(addr, "will-dev"), "wills/dev", b"dev gone")).await;
    watcher.assert_no_publish(QUIET).await;
    dev.kill().await;
    let p = watcher.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), text(&p).as_str()),
        ("wills/dev", "dev gone")
    );
    assert_eq!(p.qos, QoS::AtLeastOnce, "will QoS");
    watcher.assert_no_publish(QUIET).await;
}

// A clean DISCONNECT discards the will (3.14.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_will_after_clean_disconnect() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut watcher = Mq::start(addr, "nowill-watch").await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;

    let (dev, _) = Mq::connect(with_will(opts(addr, "nowill-dev"), "wills/dev", b"gone")).await;
    dev.disconnect().await;
    // A marker published afterwards is the next thing the watcher sees.
    let mut publ = Mq::start(addr, "nowill-pub").await;
    publ.publish("wills/marker", QoS::AtLeastOnce, false, b"marker")
        .await;
    let p = watcher.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), text(&p).as_str()),
        ("wills/marker", "marker"),
        "will published after a clean DISCONNECT"
    );
    watcher.assert_no_publish(QUIET).await;
}

// A client that stays silent past 1.5 × keep-alive is disconnected (3.1.2.10)
// and, not having sent DISCONNECT, its will is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_timeout_closes_and_publishes_will() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut watcher = Mq::start(addr, "ka-watch").await;
    watcher.subscribe("ka/#", QoS::AtLeastOnce).await;

    // keep-alive 1 s, will "ka/dev" = "timeout" at QoS 1.
    let connect = connect_packet(4, "ka-dev", 1, Some(("ka/dev", b"timeout")));
    let (elapsed, closed) = blocking(move || {
        let mut c = RawClient::connect(addr).expect("connect");
        c.send(&connect).expect("send CONNECT");
        let ack = c.read_exact(4, STEP).expect("CONNACK");
        assert_eq!(ack, [0x20, 0x02, 0x00, 0x00], "CONNACK");
        let start = Instant::now();
        let r = c.read_to_close(Duration::from_secs(10)).expect("read");
        (start.elapsed(), r.closed)
    })
    .await;
    assert!(closed, "silent client not disconnected within 10 s");
    assert!(
        elapsed >= Duration::from_millis(1000) && elapsed <= Duration::from_secs(4),
        "silent client with keep-alive 1 s closed after {elapsed:?} (expected about 1.5 s)"
    );
    let p = watcher.next_publish().await;
    assert_eq!((p.topic.as_str(), text(&p).as_str()), ("ka/dev", "timeout"));
}

// A client that pings within its keep-alive stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_pings_keep_the_connection() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut o = opts(addr, "ka-pinger");
    o.set_keep_alive(Duration::from_secs(2));
    let (mut c, _) = Mq::connect(o).await;
    // rumqttc pings every 2 s; the broker would give up after 3 s of
    // silence. After 7 s the connection is still usable.
    tokio::time::sleep(Duration::from_secs(7)).await;
    c.subscribe("ka/self", QoS::AtLeastOnce).await;
    c.publish("ka/self", QoS::AtLeastOnce, false, b"alive")
        .await;
    assert_eq!(text(&c.next_publish().await), "alive");
}

// A second connection with the same client id ends the first (3.1.4-2); the
// second one works normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_closes_first_connection() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut first = Mq::start(addr, "twin").await;
    first.subscribe("twin/a", QoS::AtLeastOnce).await;
    let mut second = Mq::start(addr, "twin").await;
    let e = first.expect_end(STEP).await;
    eprintln!("first connection ended with {e:?}");
    second.subscribe("twin/b", QoS::AtLeastOnce).await;
    let mut publ = Mq::start(addr, "twin-pub").await;
    publ.publish("twin/b", QoS::AtLeastOnce, false, b"to second")
        .await;
    let p = second.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), text(&p).as_str()),
        ("twin/b", "to second")
    );
    // The clean second session did not inherit the first one's subscription.
    publ.publish("twin/a", QoS::AtLeastOnce, false, b"to first")
        .await;
    second.assert_no_publish(QUIET).await;
    // Still connected.
    second
        .publish("twin/b", QoS::AtLeastOnce, false, b"again")
        .await;
    assert_eq!(text(&second.next_publish().await), "again");
}

// Takeover of a persistent session: the new connection resumes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_of_persistent_session_resumes_it() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let (mut first, ack) = Mq::connect(persistent_opts(addr, "twin-ps")).await;
    assert!(!ack.session_present);
    first.subscribe("twinps/#", QoS::AtLeastOnce).await;
    let (mut second, ack) = Mq::connect(persistent_opts(addr, "twin-ps")).await;
    assert!(
        ack.session_present,
        "persistent session not present on takeover"
    );
    first.expect_end(STEP).await;
    let mut publ = Mq::start(addr, "twin-ps-pub").await;
    publ.publish("twinps/x", QoS::AtLeastOnce, false, b"resumed")
        .await;
    let p = second.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), text(&p).as_str()),
        ("twinps/x", "resumed")
    );
}

const QUEUED: usize = 10;

/// Subscribes `id` persistently to `ps/#` at QoS 1 and disconnects cleanly.
async fn persistent_subscriber(addr: SocketAddr, id: &str) {
    let (mut sub, ack) = Mq::connect(persistent_opts(addr, id)).await;
    assert!(!ack.session_present, "new session reported as present");
    sub.subscribe("ps/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
}

async fn publish_queued(addr: SocketAddr) {
    let mut publ = Mq::start(addr, "ps-pub").await;
    for i in 0..QUEUED {
        publ.publish(
            &format!("ps/dev/{}", i % 3),
            QoS::AtLeastOnce,
            false,
            format!("m{i}").as_bytes(),
        )
        .await;
    }
    publ.disconnect().await;
}

async fn expect_queued(sub: &mut Mq) {
    let mut got = Vec::new();
    for _ in 0..QUEUED {
        let p = sub.next_publish().await;
        assert_eq!(p.qos, QoS::AtLeastOnce, "{p:?}");
        got.push(text(&p));
    }
    let want: Vec<String> = (0..QUEUED).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want, "queued messages (in publish order, 4.6)");
    sub.assert_no_publish(QUIET).await;
}

// clean_session=false: QoS 1 messages published while the client is away are
// kept and delivered on reconnect, with session present = 1 (3.2.2.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_gets_messages_queued_while_offline() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    persistent_subscriber(addr, "ps-client").await;
    publish_queued(addr).await;

    let (mut sub, ack) = Mq::connect(persistent_opts(addr, "ps-client")).await;
    assert!(ack.session_present, "session present flag after reconnect");
    expect_queued(&mut sub).await;
    // The subscription itself is part of the session.
    let mut publ = Mq::start(addr, "ps-pub2").await;
    publ.publish("ps/live", QoS::AtLeastOnce, false, b"live")
        .await;
    assert_eq!(text(&sub.next_publish().await), "live");
    sub.disconnect().await;

    // A clean session with the same id discards the stored state (3.1.2.4),
    // and a persistent one afterwards starts anew.
    let (c, ack) = Mq::connect(opts(addr, "ps-client")).await;
    assert!(!ack.session_present);
    c.disconnect().await;
    publ.publish("ps/after-clean", QoS::AtLeastOnce, false, b"lost")
        .await;
    let (mut sub, ack) = Mq::connect(persistent_opts(addr, "ps-client")).await;
    assert!(!ack.session_present, "session survived a clean session");
    sub.assert_no_publish(QUIET).await;
}

// The same across a graceful broker restart: the session queue, its binding
// and the QoS 1 messages are durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_survives_broker_restart() {
    let mut broker = Broker::start();
    let addr = broker.mqtt_addr();
    persistent_subscriber(addr, "ps-restart").await;
    publish_queued(addr).await;

    let status = broker.stop();
    assert!(status.success(), "broker exit status {status}");
    broker.restart();
    let addr = broker.mqtt_addr();

    let (mut sub, ack) = Mq::connect(persistent_opts(addr, "ps-restart")).await;
    assert!(ack.session_present, "session present flag after restart");
    expect_queued(&mut sub).await;
    let mut publ = Mq::start(addr, "ps-pub-after").await;
    publ.publish("ps/after", QoS::AtLeastOnce, false, b"after restart")
        .await;
    let p = sub.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), text(&p).as_str()),
        ("ps/after", "after restart"),
        "subscription lost across restart"
    );
}

// Exactly once end to end: N QoS 2 publishes, a QoS 2 subscriber sees each
// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_exactly_once_count() {
    const N: usize = 200;
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut sub = Mq::start(addr, "eo-sub").await;
    sub.subscribe("eo/#", QoS::ExactlyOnce).await;
    let mut publ = Mq::start(addr, "eo-pub").await;
    for i in 0..N {
        t!(publ.client.publish(
            format!("eo/{}", i % 7),
            QoS::ExactlyOnce,
            false,
            format!("{i}").into_bytes()
        ))
        .expect("queue PUBLISH");
    }
    let mut done = 0;
    publ.wait_for("PUBCOMP for every publish", Duration::from_secs(60), |e| {
        if let Event::Incoming(Packet::PubComp(_)) = e {
            done += 1;
        }
        (done == N).then_some(())
    })
    .await;

    let mut seen = BTreeSet::new();
    let mut dups = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < N {
        assert!(
            Instant::now() < deadline,
            "only {} of {N} distinct messages arrived",
            seen.len()
        );
        let p = sub.next_publish().await;
        assert_eq!(p.qos, QoS::ExactlyOnce, "{p:?}");
        let i: usize = text(&p).parse().expect("numeric payload");
        assert!(i < N, "unexpected payload {i}");
        if !seen.insert(i) {
            dups.push(i);
        }
    }
    sub.assert_no_publish(Duration::from_secs(1)).await;
    assert!(dups.is_empty(), "duplicates delivered: {dups:?}");
    assert_eq!(seen.len(), N);
}

fn mqtt_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u16::try_from(s.len()).expect("short").to_be_bytes());
    out.extend_from_slice(s);
}

/// Fixed header byte, remaining length, body.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut b = u8::try_from(len % 128).expect("7 bits");
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A CONNECT packet for protocol `level` (4 = 3.1.1, 5 = MQTT 5) with the
/// given clean-session flag and keep-alive and an optional QoS 1 will.
fn connect_packet_with(
    level: u8,
    id: &str,
    clean: bool,
    keep_alive: u16,
    will: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string(&mut body, b"MQTT");
    body.push(level);
    let mut flags = if clean { 0x02 } else { 0x00 };
    if will.is_some() {
        flags |= 0x04 | 0x08; // will flag, will QoS 1
    }
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if level == 5 {
        body.push(0); // no properties
    }
    mqtt_string(&mut body, id.as_bytes());
    if let Some((topic, payload)) = will {
        if level == 5 {
            body.push(0); // no will properties
        }
        mqtt_string(&mut body, topic.as_bytes());
        mqtt_string(&mut body, payload);
    }
    packet(0x10, &body)
}

/// A clean-session CONNECT.
fn connect_packet(level: u8, id: &str, keep_alive: u16, will: Option<(&str, &[u8])>) -> Vec<u8> {
    connect_packet_with(level, id, true, keep_alive, will)
}

fn publish_packet(topic: &str, qos: u8, pkid: u16, dup: bool, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (u8::from(dup) << 3) | (qos << 1), &body)
}

fn ack_packet(first: u8, pkid: u16) -> Vec<u8> {
    packet(first, &pkid.to_be_bytes())
}

const PUBACK: u8 = 0x40;
const PUBREC: u8 = 0x50;
const PUBREL: u8 = 0x62;
const PUBCOMP: u8 = 0x70;

/// A packet read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RawPacket {
    first: u8,
    body: Vec<u8>,
}

impl RawPacket {
    fn kind(&self) -> u8 {
        self.first >> 4
    }

    fn pkid(&self) -> u16 {
        u16::from_be_bytes([self.body[0], self.body[1]])
    }

    /// (topic, qos, dup, pkid, payload) of a PUBLISH.
    fn publish(&self) -> (String, u8, bool, u16, Vec<u8>) {
        assert_eq!(self.kind(), 3, "not a PUBLISH: {self:?}");
        let qos = (self.first >> 1) & 3;
        let dup = self.first & 0x08 != 0;
        let tlen = usize::from(u16::from_be_bytes([self.body[0], self.body[1]]));
        let topic = String::from_utf8_lossy(&self.body[2..2 + tlen]).into_owned();
        let mut rest = &self.body[2 + tlen..];
        let mut pkid = 0;
        if qos > 0 {
            pkid = u16::from_be_bytes([rest[0], rest[1]]);
            rest = &rest[2..];
        }
        (topic, qos, dup, pkid, rest.to_vec())
    }
}

/// A hand-driven MQTT 3.1.1 client (blocking; run it through [`blocking`]).
struct RawMqtt {
    c: RawClient,
}

impl RawMqtt {
    /// CONNECT with keep-alive 60; returns the session present flag.
    fn connect(addr: SocketAddr, id: &str, clean: bool) -> (Self, bool) {
        let mut c = RawClient::connect(addr).expect("raw connect");
        c.send(&connect_packet_with(4, id, clean, 60, None))
            .expect("send CONNECT");
        let mut m = Self { c };
        let ack = m.expect_packet();
        assert_eq!(ack.first, 0x20, "expected CONNACK, got {ack:?}");
        assert_eq!(ack.body.len(), 2, "CONNACK {ack:?}");
        assert_eq!(ack.body[1], 0, "CONNACK return code for {id:?}");
        (m, ack.body[0] & 1 == 1)
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
            let b = self.c.read_exact(1, STEP).expect("remaining length")[0];
            len |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                break;
            }
        }
        let body = self.c.read_exact(len, STEP).expect("packet body");
        Some(RawPacket { first, body })
    }

    fn expect_packet(&mut self) -> RawPacket {
        self.read_packet(STEP)
            .unwrap_or_else(|| panic!("no packet within {STEP:?}"))
    }

    /// Reads packets until none arrives for `quiet`.
    fn read_all(&mut self, quiet: Duration) -> Vec<RawPacket> {
        let mut out = Vec::new();
        while let Some(p) = self.read_packet(quiet) {
            out.push(p);
        }
        out
    }

    fn subscribe(&mut self, filter: &str, qos: u8) {
        let mut body = vec![0x00, 0x01];
        mqtt_string(&mut body, filter.as_bytes());
        body.push(qos);
        self.send(&packet(0x82, &body));
        let ack = self.expect_packet();
        assert_eq!(ack.first, 0x90, "expected SUBACK, got {ack:?}");
        assert_eq!(ack.body, [0x00, 0x01, qos], "SUBACK");
    }

    /// PINGREQ → PINGRESP: everything sent before has been processed.
    fn ping(&mut self) {
        self.send(&[0xC0, 0x00]);
        let p = self.expect_packet();
        assert_eq!(p.first, 0xD0, "expected PINGRESP, got {p:?}");
    }

    fn expect_ack(&mut self, first: u8, pkid: u16) {
        let p = self.expect_packet();
        assert_eq!(
            (p.first, p.pkid()),
            (first, pkid),
            "expected ack {first:#04x} for {pkid}, got {p:?}"
        );
    }
}

// An unknown protocol level (6) gets CONNACK with return code 0x01
// (unacceptable protocol level) and the connection is closed (3.1.2-2);
// level 5 is MQTT 5 and is served (see mqtt5.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_protocol_level_is_refused_and_v5_is_served() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let connect = connect_packet(6, "v6-client", 60, None);
    let got = blocking(move || {
        let mut c = RawClient::connect(addr).expect("connect");
        c.send(&connect).expect("send CONNECT");
        c.read_to_close(Duration::from_secs(5)).expect("read")
    })
    .await;
    assert_eq!(
        got.data,
        [0x20, 0x02, 0x00, 0x01],
        "reply {:02x?}",
        got.data
    );
    assert!(got.closed, "connection not closed after refusing level 6");

    // Level 5: an MQTT 5 CONNACK (session present 0, reason 0x00 success,
    // then properties), and the connection stays open.
    let connect = connect_packet(5, "v5-client", 60, None);
    let got = blocking(move || {
        let mut c = RawClient::connect(addr).expect("connect");
        c.send(&connect).expect("send CONNECT");
        c.read_to_close(Duration::from_millis(500)).expect("read")
    })
    .await;
    assert_eq!(got.data.first(), Some(&0x20), "reply {:02x?}", got.data);
    assert_eq!(
        got.data.get(2..4),
        Some(&[0x00, 0x00][..]),
        "reply {:02x?}",
        got.data
    );
    assert!(
        got.data.len() > 5,
        "CONNACK properties expected: {:02x?}",
        got.data
    );
    assert!(!got.closed, "an MQTT 5 client is served");

    // A 3.1.1 client is still served.
    let mut c = Mq::start(addr, "after-v5").await;
    c.subscribe("v5/x", QoS::AtMostOnce).await;
}

// Only guest/guest (or anonymous) is accepted; a wrong password gets
// CONNACK 0x04 (3.2.2.3). `vhost:user` selects the vhost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_vhost_username() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut o = opts(addr, "bad-pass");
    o.set_credentials("guest", "wrong");
    let mut bad = Mq::spawn(o);
    match bad.recv(STEP).await {
        Some(Ev::Ended(ConnectionError::ConnectionRefused(code))) => {
            assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
        }
        other => panic!("expected CONNACK refusal, got {other:?}"),
    }

    let mut o = opts(addr, "vhost-user");
    o.set_credentials("/:guest", "guest");
    let (mut c, _) = Mq::connect(o).await;
    c.subscribe("vh/x", QoS::AtLeastOnce).await;
    c.publish("vh/x", QoS::AtLeastOnce, false, b"in /").await;
    assert_eq!(text(&c.next_publish().await), "in /");

    let mut o = opts(addr, "no-vhost");
    o.set_credentials("no-such-vhost:guest", "guest");
    let mut nv = Mq::spawn(o);
    match nv.recv(STEP).await {
        Some(Ev::Ended(ConnectionError::ConnectionRefused(code))) => {
            assert_ne!(code, ConnectReturnCode::Success);
        }
        other => panic!("expected CONNACK refusal, got {other:?}"),
    }
}

// A retransmitted QoS 2 PUBLISH (same packet id, DUP) before PUBREL is
// acknowledged again but not routed again (4.3.3, method B); after PUBREL
// the packet id may be reused for a new message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_qos2_retransmission_is_routed_once() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut sub = Mq::start(addr, "eo2-sub").await;
    sub.subscribe("eo2/#", QoS::ExactlyOnce).await;
    blocking(move || {
        let (mut m, _) = RawMqtt::connect(addr, "eo2-raw", true);
        m.send(&publish_packet("eo2/x", 2, 1, false, b"x"));
        m.expect_ack(PUBREC, 1);
        m.send(&publish_packet("eo2/x", 2, 1, true, b"x"));
        m.expect_ack(PUBREC, 1);
        m.send(&ack_packet(PUBREL, 1));
        m.expect_ack(PUBCOMP, 1);
        m.send(&publish_packet("eo2/x", 2, 1, false, b"y"));
        m.expect_ack(PUBREC, 1);
        m.send(&ack_packet(PUBREL, 1));
        m.expect_ack(PUBCOMP, 1);
    })
    .await;
    assert_eq!(text(&sub.next_publish().await), "x");
    assert_eq!(
        text(&sub.next_publish().await),
        "y",
        "retransmitted QoS 2 PUBLISH routed twice"
    );
    sub.assert_no_publish(QUIET).await;
}

// The packet ids of inbound QoS 2 messages not yet released are part of a
// persistent session's state (4.1): a client that reconnects with
// clean_session=0 and re-sends the PUBLISH (4.4) must not cause a second
// delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_qos2_state_survives_reconnect_of_persistent_session() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut sub = Mq::start(addr, "eo3-sub").await;
    sub.subscribe("eo3/#", QoS::ExactlyOnce).await;
    blocking(move || {
        let (mut m, present) = RawMqtt::connect(addr, "eo3-raw", false);
        assert!(!present);
        m.send(&publish_packet("eo3/x", 2, 5, false, b"once"));
        // The broker has the message; pretend its PUBREC got lost.
        m.expect_ack(PUBREC, 5);
        drop(m);
        let (mut m, present) = RawMqtt::connect(addr, "eo3-raw", false);
        assert!(present, "session present after reconnect");
        m.send(&publish_packet("eo3/x", 2, 5, true, b"once"));
        m.expect_ack(PUBREC, 5);
        m.send(&ack_packet(PUBREL, 5));
        m.expect_ack(PUBCOMP, 5);
    })
    .await;
    assert_eq!(text(&sub.next_publish().await), "once");
    sub.assert_no_publish(Duration::from_secs(1)).await;
}

// The same across a broker restart: the session's protocol state is in the
// store with its queue, so the retransmitted PUBLISH is still not routed a
// second time, and the outbound PUBREL owed before the restart is re-sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_session_state_survives_broker_restart() {
    let mut broker = Broker::start();
    let addr = broker.mqtt_addr();
    // A persistent subscriber session counts deliveries across the restart.
    let (mut sub, _) = Mq::connect(persistent_opts(addr, "eo4-sub")).await;
    sub.subscribe("eo4/#", QoS::ExactlyOnce).await;
    sub.disconnect().await;
    blocking(move || {
        let (mut m, _) = RawMqtt::connect(addr, "eo4-raw", false);
        m.send(&publish_packet("eo4/x", 2, 9, false, b"once"));
        m.expect_ack(PUBREC, 9);
    })
    .await;
    // Give the released session a moment to be written, then a graceful
    // stop (the store is flushed) and a restart.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = broker.stop();
    assert!(status.success(), "graceful stop: {status:?}");
    broker.restart();
    let addr = broker.mqtt_addr();
    blocking(move || {
        let (mut m, present) = RawMqtt::connect(addr, "eo4-raw", false);
        assert!(present, "session present after the restart");
        m.send(&publish_packet("eo4/x", 2, 9, true, b"once"));
        m.expect_ack(PUBREC, 9);
        m.send(&ack_packet(PUBREL, 9));
        m.expect_ack(PUBCOMP, 9);
    })
    .await;
    let (mut sub, _) = Mq::connect(persistent_opts(addr, "eo4-sub")).await;
    assert_eq!(text(&sub.next_publish().await), "once");
    sub.assert_no_publish(Duration::from_secs(1)).await;
}

// Once the broker has sent PUBREL for an outbound QoS 2 message it must not
// send that PUBLISH again (4.3.3-1); after a reconnect of the persistent
// session it re-sends the PUBREL (4.4.0-1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_qos2_not_resent_after_pubrel() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let m = blocking(move || {
        let (mut m, _) = RawMqtt::connect(addr, "q2-raw-sub", false);
        m.subscribe("q2/#", 2);
        m
    })
    .await;
    let mut publ = Mq::start(addr, "q2-pub").await;
    publ.publish("q2/a", QoS::ExactlyOnce, false, b"m").await;
    let pkid = blocking(move || {
        let mut m = m;
        let p = m.expect_packet();
        let (topic, qos, _, pkid, payload) = p.publish();
        assert_eq!((topic.as_str(), qos, &payload[..]), ("q2/a", 2, &b"m"[..]));
        m.send(&ack_packet(PUBREC, pkid));
        m.expect_ack(PUBREL, pkid);
        // Gone before PUBCOMP.
        drop(m);
        pkid
    })
    .await;
    let got = blocking(move || {
        let (mut m, present) = RawMqtt::connect(addr, "q2-raw-sub", false);
        assert!(present, "session present after reconnect");
        let got = m.read_all(Duration::from_secs(1));
        for p in &got {
            if p.first == PUBREL {
                m.send(&ack_packet(PUBCOMP, p.pkid()));
            }
        }
        got
    })
    .await;
    let publishes: Vec<_> = got
        .iter()
        .filter(|p| p.kind() == 3)
        .map(RawPacket::publish)
        .collect();
    assert!(
        publishes.is_empty(),
        "PUBLISH re-sent after its PUBREL (4.3.3-1; a duplicate for the client): {publishes:?}"
    );
    assert!(
        got.iter().any(|p| p.first == PUBREL && p.pkid() == pkid),
        "PUBREL {pkid} not re-sent on reconnect (4.4.0-1); got {got:?}"
    );
}

// An outbound QoS 2 PUBLISH left unacknowledged by a persistent session is
// re-sent on reconnect with DUP set and its original packet id (4.4.0-1),
// so that a client which already has it can recognise the duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_redelivery_keeps_packet_id() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let m = blocking(move || {
        let (mut m, _) = RawMqtt::connect(addr, "pk-raw-sub", false);
        m.subscribe("pk/#", 2);
        m
    })
    .await;
    let mut publ = Mq::start(addr, "pk-pub").await;
    for body in ["1", "2", "3"] {
        publ.publish("pk/a", QoS::ExactlyOnce, false, body.as_bytes())
            .await;
    }
    let third = blocking(move || {
        let mut m = m;
        // Complete 1 and 2; only receive 3.
        let mut publishes = Vec::new();
        let mut released = 0;
        while publishes.len() < 3 || released < 2 {
            let p = m.expect_packet();
            if p.kind() == 3 {
                let (_, qos, dup, pkid, payload) = p.publish();
                assert_eq!(qos, 2);
                assert!(!dup, "first delivery with DUP");
                if publishes.len() < 2 {
                    m.send(&ack_packet(PUBREC, pkid));
                }
                publishes.push((pkid, payload));
            } else if p.first == PUBREL {
                m.send(&ack_packet(PUBCOMP, p.pkid()));
                released += 1;
            } else {
                panic!("unexpected {p:?}");
            }
        }
        let bodies: Vec<&[u8]> = publishes.iter().map(|(_, b)| &b[..]).collect();
        assert_eq!(bodies, [&b"1"[..], b"2", b"3"]);
        // PINGRESP proves the PUBCOMPs before it were processed.
        m.ping();
        drop(m);
        publishes[2].0
    })
    .await;
    let (pkid, dup, payload) = blocking(move || {
        let (mut m, present) = RawMqtt::connect(addr, "pk-raw-sub", false);
        assert!(present);
        let (_, _, dup, pkid, payload) = m.expect_packet().publish();
        m.send(&ack_packet(PUBREC, pkid));
        (pkid, dup, payload)
    })
    .await;
    assert_eq!(payload, b"3", "redelivered message");
    assert!(dup, "redelivery without DUP (3.3.1.1)");
    assert_eq!(
        pkid, third,
        "redelivered QoS 2 PUBLISH has packet id {pkid}, originally {third} (4.4.0-1)"
    );
}

// A client that completes a QoS 2 delivery (PUBREC, PUBREL, PUBCOMP), sends
// DISCONNECT and reconnects its persistent session at once must not get the
// message again: the broker sent PUBREL, so it may not re-send the PUBLISH
// (4.3.3-1), whether or not it read the PUBCOMP before the new CONNECT.
// Which of the two happens first is up to the broker's scheduling, so the
// cycle is repeated; a correct broker passes every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_qos2_not_redelivered_after_quick_reconnect() {
    const ROUNDS: usize = 15;
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut m = blocking(move || {
        let (mut m, _) = RawMqtt::connect(addr, "quick-sub", false);
        m.subscribe("quick/#", 2);
        m
    })
    .await;
    let mut publ = Mq::start(addr, "quick-pub").await;
    for round in 0..ROUNDS {
        let body = format!("done-{round}");
        publ.publish("quick/a", QoS::ExactlyOnce, false, body.as_bytes())
            .await;
        let (next, got) = blocking(move || {
            let mut m = m;
            let (_, qos, _, pkid, payload) = m.expect_packet().publish();
            assert_eq!((qos, payload), (2, body.into_bytes()));
            m.send(&ack_packet(PUBREC, pkid));
            m.expect_ack(PUBREL, pkid);
            m.send(&ack_packet(PUBCOMP, pkid));
            m.send(&[0xE0, 0x00]); // DISCONNECT
            drop(m);
            let (mut m, present) = RawMqtt::connect(addr, "quick-sub", false);
            assert!(present);
            let got = m.read_all(Duration::from_millis(300));
            (m, got)
        })
        .await;
        m = next;
        let publishes: Vec<_> = got
            .iter()
            .filter(|p| p.kind() == 3)
            .map(RawPacket::publish)
            .collect();
        assert!(
            publishes.is_empty(),
            "round {round}: completed QoS 2 message delivered again after reconnect: \
             {publishes:?}"
        );
    }
}

// A QoS 1 delivery not acknowledged before the connection dropped is
// delivered again, with DUP, when the persistent session reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_qos1_redelivered_with_dup_after_reconnect() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut o = persistent_opts(addr, "redeliver");
    o.set_manual_acks(true);
    let (mut sub, _) = Mq::connect(o).await;
    sub.subscribe("rd/#", QoS::AtLeastOnce).await;
    let mut publ = Mq::start(addr, "redeliver-pub").await;
    publ.publish("rd/a", QoS::AtLeastOnce, false, b"acked")
        .await;
    publ.publish("rd/a", QoS::AtLeastOnce, false, b"unacked")
        .await;
    let p = sub.next_publish().await;
    assert_eq!(text(&p), "acked");
    t!(sub.client.ack(&p)).expect("ack");
    let p = sub.next_publish().await;
    assert_eq!((text(&p).as_str(), p.dup), ("unacked", false));
    // Let the PUBACK of the first reach the broker before dropping.
    tokio::time::sleep(QUIET).await;
    sub.kill().await;

    let (mut sub, ack) = Mq::connect(persistent_opts(addr, "redeliver")).await;
    assert!(ack.session_present);
    let p = sub.next_publish().await;
    assert_eq!(text(&p), "unacked");
    assert!(p.dup, "redelivery without DUP (3.3.1.1): {p:?}");
    sub.assert_no_publish(QUIET).await;
}

// Filters starting with a wildcard must not match topic names starting
// with `$` (4.7.2-1); an explicit `$` filter does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dollar_topics_not_matched_by_leading_wildcards() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut hash = Mq::start(addr, "dollar-hash").await;
    hash.subscribe("#", QoS::AtLeastOnce).await;
    let mut plus = Mq::start(addr, "dollar-plus").await;
    plus.subscribe("+/x", QoS::AtLeastOnce).await;
    let mut exact = Mq::start(addr, "dollar-exact").await;
    exact.subscribe("$app/x", QoS::AtLeastOnce).await;
    let mut publ = Mq::start(addr, "dollar-pub").await;
    publ.publish("$app/x", QoS::AtLeastOnce, false, b"dollar")
        .await;
    publ.publish("t/x", QoS::AtLeastOnce, false, b"plain").await;
    assert_eq!(exact.next_publish().await.topic, "$app/x");
    let p = hash.next_publish().await;
    assert_eq!(p.topic, "t/x", "`#` matched a `$` topic (4.7.2-1)");
    let p = plus.next_publish().await;
    assert_eq!(p.topic, "t/x", "`+/x` matched a `$` topic (4.7.2-1)");
}

// Overlapping subscriptions: the message is delivered respecting the
// highest QoS of the matching subscriptions (3.3.5-1); extra copies, one per
// further subscription, are allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_use_max_qos() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut sub = Mq::start(addr, "ov-sub").await;
    sub.subscribe("ov/+", QoS::AtMostOnce).await;
    sub.subscribe("ov/#", QoS::AtLeastOnce).await;
    let mut publ = Mq::start(addr, "ov-pub").await;
    publ.publish("ov/a", QoS::ExactlyOnce, false, b"o").await;
    let mut copies = vec![sub.next_publish().await];
    while let Some(p) = sub.next_publish_within(QUIET).await {
        copies.push(p);
    }
    assert!(
        copies.len() <= 2,
        "{} copies for 2 subscriptions",
        copies.len()
    );
    assert!(
        copies.iter().any(|p| p.qos == QoS::AtLeastOnce),
        "no copy at the highest subscribed QoS: {copies:?}"
    );
}

// Subscribing again to the same filter replaces the subscription and its
// QoS (3.8.4-3): one delivery, at the new QoS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribe_replaces_qos() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut sub = Mq::start(addr, "rs-sub").await;
    let mut publ = Mq::start(addr, "rs-pub").await;
    for (i, qos) in [QoS::AtMostOnce, QoS::ExactlyOnce, QoS::AtLeastOnce]
        .into_iter()
        .enumerate()
    {
        sub.subscribe("rs/x", qos).await;
        publ.publish("rs/x", QoS::ExactlyOnce, false, format!("{i}").as_bytes())
            .await;
        let p = sub.next_publish().await;
        assert_eq!((text(&p), p.qos), (format!("{i}"), qos));
        sub.assert_no_publish(QUIET).await;
    }
}

// UNSUBSCRIBE removes exactly the named filter (3.10.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut sub = Mq::start(addr, "us-sub").await;
    sub.subscribe("us/#", QoS::AtLeastOnce).await;
    sub.subscribe("us/a", QoS::AtLeastOnce).await;
    t!(sub.client.unsubscribe("us/#")).expect("queue UNSUBSCRIBE");
    sub.wait_for("UNSUBACK", STEP, |e| {
        matches!(e, Event::Incoming(Packet::UnsubAck(_))).then_some(())
    })
    .await;
    let mut publ = Mq::start(addr, "us-pub").await;
    publ.publish("us/b", QoS::AtLeastOnce, false, b"b").await;
    publ.publish("us/a", QoS::AtLeastOnce, false, b"a").await;
    let p = sub.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), text(&p).as_str()),
        ("us/a", "a"),
        "delivery for an unsubscribed filter"
    );
    sub.assert_no_publish(QUIET).await;
}

// PUBACK / PUBCOMP mean the message is safe: every acknowledged publish to a
// persistent session survives SIGKILL of the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_publishes_survive_sigkill() {
    const EACH: usize = 20;
    let mut broker = Broker::start();
    let addr = broker.mqtt_addr();
    let (sub, _) = Mq::connect(persistent_opts(addr, "kill-sub")).await;
    let mut sub = sub;
    sub.subscribe("kill/#", QoS::ExactlyOnce).await;
    sub.disconnect().await;
    let mut publ = Mq::start(addr, "kill-pub").await;
    for i in 0..EACH {
        publ.publish(
            "kill/q1",
            QoS::AtLeastOnce,
            false,
            format!("a{i}").as_bytes(),
        )
        .await;
        publ.publish(
            "kill/q2",
            QoS::ExactlyOnce,
            false,
            format!("b{i}").as_bytes(),
        )
        .await;
    }
    broker.kill();
    drop(publ);
    broker.restart();
    let addr = broker.mqtt_addr();
    let (mut sub, ack) = Mq::connect(persistent_opts(addr, "kill-sub")).await;
    assert!(ack.session_present, "session lost by SIGKILL");
    let mut got = Vec::new();
    for _ in 0..2 * EACH {
        got.push(text(&sub.next_publish().await));
    }
    sub.assert_no_publish(QUIET).await;
    let want: Vec<String> = (0..EACH)
        .flat_map(|i| [format!("a{i}"), format!("b{i}")])
        .collect();
    assert_eq!(got, want, "acknowledged messages after SIGKILL (in order)");
}

// A 1 MiB payload round-trips unchanged at QoS 1 (split across many reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payload_round_trip() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let big = |id: &str| {
        let mut o = opts(addr, id);
        o.set_max_packet_size(4 << 20, 4 << 20);
        o
    };
    let (mut sub, _) = Mq::connect(big("big-sub")).await;
    sub.subscribe("big/x", QoS::AtLeastOnce).await;
    let (mut publ, _) = Mq::connect(big("big-pub")).await;
    let payload: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    publ.publish("big/x", QoS::AtLeastOnce, false, &payload)
        .await;
    let p = sub.next_publish().await;
    assert_eq!(p.payload.len(), payload.len());
    assert!(p.payload[..] == payload[..], "payload changed in transit");
}

// An empty client id needs clean session 1; otherwise CONNACK 0x02
// (identifier rejected) and close (3.1.3-8). With clean session the broker
// assigns an id (3.1.3-6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_client_id() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    blocking(move || {
        let mut c = RawClient::connect(addr).expect("connect");
        c.send(&connect_packet_with(4, "", false, 60, None))
            .expect("send");
        let got = c.read_to_close(Duration::from_secs(5)).expect("read");
        assert_eq!(
            got.data,
            [0x20, 0x02, 0x00, 0x02],
            "reply {:02x?}",
            got.data
        );
        assert!(got.closed, "not closed after refusing the empty id");

        let (mut m, present) = RawMqtt::connect(addr, "", true);
        assert!(!present);
        m.subscribe("anon/x", 1);
        m.send(&publish_packet("anon/x", 1, 9, false, b"self"));
        let mut got = m.read_all(QUIET);
        got.sort_by_key(|p| p.first);
        assert!(
            got.iter().any(|p| p.first == PUBACK && p.pkid() == 9),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|p| p.kind() == 3 && p.publish().4 == b"self"),
            "{got:?}"
        );
    })
    .await;
}

// A will with RETAIN set is also kept as the retained message of its topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_will() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut o = opts(addr, "rw-dev");
    o.set_last_will(LastWill::new(
        "rw/dev",
        b"offline".to_vec(),
        QoS::AtLeastOnce,
        true,
    ));
    let (dev, _) = Mq::connect(o).await;
    dev.kill().await;
    // The will is published when the broker notices; poll for the retained
    // copy with fresh subscriptions.
    let deadline = Instant::now() + STEP;
    loop {
        let mut s = Mq::start(addr, "rw-sub").await;
        s.subscribe("rw/#", QoS::AtLeastOnce).await;
        if let Some(p) = s.next_publish_within(QUIET).await {
            assert_eq!(
                (p.topic.as_str(), text(&p).as_str(), p.retain),
                ("rw/dev", "offline", true)
            );
            break;
        }
        assert!(Instant::now() < deadline, "retained will never appeared");
        s.disconnect().await;
    }
}

/// Publishes retained messages (QoS 1, no subscribers), then stops the
/// broker (gracefully or with SIGKILL right after the last PUBACK), restarts
/// it and returns what a new `ret/#` subscriber gets.
async fn retained_after_restart(graceful: bool) -> Vec<(String, String, bool)> {
    let mut broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut publ = Mq::start(addr, "retr-pub").await;
    publ.publish("ret/gone", QoS::AtLeastOnce, true, b"x").await;
    publ.publish("ret/a", QoS::AtLeastOnce, true, b"old").await;
    publ.publish("ret/gone", QoS::AtLeastOnce, true, b"").await;
    publ.publish("ret/a", QoS::AtLeastOnce, true, b"new").await;
    publ.publish("ret/b", QoS::AtLeastOnce, true, b"b").await;
    if graceful {
        publ.disconnect().await;
        let status = broker.stop();
        assert!(status.success(), "broker exit status {status}");
    } else {
        broker.kill();
        drop(publ);
    }
    broker.restart();
    let addr = broker.mqtt_addr();
    let mut sub = Mq::start(addr, "retr-sub").await;
    sub.subscribe("ret/#", QoS::AtLeastOnce).await;
    let mut got = Vec::new();
    while let Some(p) = sub.next_publish_within(Duration::from_secs(1)).await {
        got.push((p.topic.clone(), text(&p), p.retain));
    }
    got.sort();
    got
}

fn retained_want() -> Vec<(String, String, bool)> {
    vec![
        ("ret/a".to_owned(), "new".to_owned(), true),
        ("ret/b".to_owned(), "b".to_owned(), true),
    ]
}

// Retained messages are kept by the engine's store: they survive a graceful
// restart, with replacements and clears applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_survive_graceful_restart() {
    assert_eq!(retained_after_restart(true).await, retained_want());
}

// A PUBACK for a retained publish means the retained copy is safe too, even
// when no subscriber received the message: it survives SIGKILL right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_retained_survive_sigkill() {
    assert_eq!(retained_after_restart(false).await, retained_want());
}
