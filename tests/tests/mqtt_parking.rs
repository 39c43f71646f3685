//! Parked MQTT connections, seen from the outside.
//!
//! An MQTT TCP client whose session is idle (connected; no reply owed or
//! unwritten, no delivery waiting) and that has been silent for
//! `mqtt.park_after_ms` (a freshly connected one: as soon as its CONNACK is
//! written) is parked: its task ends and one broker thread watches its
//! socket. A session with nothing subscribed or in flight is kept compactly
//! (`whole=false`); one with a queue (a subscription, once made, or a
//! persistent session) or deliveries in flight is kept whole (`whole=true`)
//! and a delivery for it wakes it. These tests check that a user never
//! notices: a parked client is served as soon as it speaks or a message
//! arrives for it, its session state, keep-alive and will still hold, a
//! takeover and a shutdown still reach it.
//!
//! The broker runs with `park_after_ms = 200` and debug logs of
//! `switchyard_mqtt::conn`, whose lines are the evidence that parking really
//! happened:
//!
//! ```text
//! … MQTT connection parked whole=false client_id="park2"
//! … MQTT connection resumed why=Readable client_id="park2"
//! ```
//!
//! Each test follows the clients under test by id (the id is the last field,
//! so `park2` never matches `park2-pub`); the other clients it uses may park
//! or not.
//!
//! Blocking clients (common/mqtt.rs, plus MQTT 5 packets built here); every
//! wait is bounded, and the log is polled rather than assumed.

#[path = "common/mqtt.rs"]
mod mqtt;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use mqtt::{CONNACK, Client, End, PUBACK, Packet, Publish, STEP, SUBACK};
use switchyard_tests::Broker;

/// Park idle clients after 200 ms of silence.
const PARKING: &str = "[mqtt]\npark_after_ms = 200\n";
/// Never park.
const NO_PARKING: &str = "[mqtt]\npark_after_ms = 0\n";
const LOG_FILTER: &str = "info,switchyard_mqtt::conn=debug";
const PARKED: &str = "MQTT connection parked";
const RESUMED: &str = "MQTT connection resumed";
/// Bound on waiting for log lines.
const LOG_WAIT: Duration = Duration::from_secs(10);
/// Several times `park_after_ms`: a client that could park has by then.
const IDLE: Duration = Duration::from_secs(1);
/// How soon a message reaches a parked subscriber.
const PROMPT: Duration = Duration::from_secs(1);

fn start(toml: &str) -> Broker {
    Broker::start_with_config_logging(toml, LOG_FILTER)
}

// ---------------------------------------------------------------------------
// The broker log
// ---------------------------------------------------------------------------

/// One "parked" or "resumed" line of the log.
#[derive(Debug)]
struct Event<'a> {
    client_id: &'a str,
    parked: bool,
    /// What the line says before `client_id`: `whole=…` or `why=…`.
    fields: &'a str,
}

/// Every parked and resumed line, oldest first.
fn events(log: &str) -> impl Iterator<Item = Event<'_>> {
    log.lines().filter_map(|line| {
        let (parked, rest) = match (line.split_once(PARKED), line.split_once(RESUMED)) {
            (Some((_, rest)), _) => (true, rest),
            (None, Some((_, rest))) => (false, rest),
            (None, None) => return None,
        };
        let (fields, id) = rest.rsplit_once(" client_id=")?;
        let client_id = id.strip_prefix('"')?.strip_suffix('"')?;
        Some(Event {
            client_id,
            parked,
            fields: fields.trim(),
        })
    })
}

/// How `id` was held each time it parked, oldest first (`true`: whole).
fn parks(log: &str, id: &str) -> Vec<bool> {
    events(log)
        .filter(|e| e.parked && e.client_id == id)
        .map(|e| match e.fields {
            "whole=true" => true,
            "whole=false" => false,
            other => panic!("park line of {id:?} with fields {other:?}"),
        })
        .collect()
}

/// Why `id` was resumed each time (`Readable`, `Asked`, …), oldest first.
fn resumes<'a>(log: &'a str, id: &str) -> Vec<&'a str> {
    events(log)
        .filter(|e| !e.parked && e.client_id == id)
        .map(|e| {
            e.fields
                .strip_prefix("why=")
                .unwrap_or_else(|| panic!("resume line of {id:?}: {e:?}"))
        })
        .collect()
}

/// Parked lines minus resumed lines, per client id: 1 while parked.
fn balances(log: &str) -> BTreeMap<&str, isize> {
    let mut by_id = BTreeMap::new();
    for e in events(log) {
        *by_id.entry(e.client_id).or_default() += if e.parked { 1 } else { -1 };
    }
    by_id
}

/// Whether `id` is parked now, per the log (parked minus resumed lines).
fn parked_now(log: &str, id: &str) -> isize {
    balances(log).get(id).copied().unwrap_or_default()
}

/// Polls the log until `ok` holds, for at most [`LOG_WAIT`]; returns the log
/// that satisfied it.
#[track_caller]
fn wait_log(broker: &Broker, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let log = broker.log();
        if ok(&log) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "log never showed {what} within {LOG_WAIT:?}; parked/resumed lines:\n{}",
            events(&log)
                .map(|e| format!("{e:?}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `id` is parked, kept `whole` (or compactly), having parked
/// more than `before` times; returns how often it has parked.
#[track_caller]
fn wait_parked_after(broker: &Broker, id: &str, whole: bool, before: usize) -> usize {
    let what = format!("{id:?} parked whole={whole} (after {before} parks)");
    let log = wait_log(broker, &what, |log| {
        let parks = parks(log, id);
        parked_now(log, id) == 1 && parks.len() > before && parks.last() == Some(&whole)
    });
    parks(&log, id).len()
}

/// [`wait_parked_after`] its first park.
#[track_caller]
fn wait_parked(broker: &Broker, id: &str, whole: bool) -> usize {
    wait_parked_after(broker, id, whole, 0)
}

/// Waits until `id` has been resumed more than `before` times; returns why
/// it was last.
#[track_caller]
fn wait_resumed_after(broker: &Broker, id: &str, before: usize) -> String {
    let what = format!("{id:?} resumed (after {before} resumes)");
    let log = wait_log(broker, &what, |log| resumes(log, id).len() > before);
    resumes(&log, id)[before].to_owned()
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

fn open(addr: SocketAddr) -> Client {
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to MQTT at {addr}: {e}"));
    Client::over(sock)
}

/// A 3.1.1 clean-session client subscribed to `filter`.
fn subscriber(addr: SocketAddr, id: &str, filter: &str, qos: u8) -> Client {
    let (mut c, _) = Client::connect(addr, id, true);
    c.subscribe(filter, qos);
    c
}

fn mqtt_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u16::try_from(s.len()).expect("short string").to_be_bytes());
    out.extend_from_slice(s);
}

/// 3.1.1 CONNECT, clean session, with a QoS 1 will.
fn connect_with_will(id: &str, keep_alive: u16, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string(&mut body, b"MQTT");
    body.push(4);
    body.push(0x02 | 0x04 | 0x08);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    mqtt_string(&mut body, id.as_bytes());
    mqtt_string(&mut body, topic.as_bytes());
    mqtt_string(&mut body, payload);
    mqtt::packet(0x10, &body)
}

fn unsubscribe(pkid: u16, filter: &str) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    mqtt_string(&mut body, filter.as_bytes());
    mqtt::packet(0xA2, &body)
}

/// MQTT 5 CONNECT, clean start, keep-alive 60, no properties.
fn connect5(id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string(&mut body, b"MQTT");
    body.extend_from_slice(&[5, 0x02, 0, 60, 0]);
    mqtt_string(&mut body, id.as_bytes());
    mqtt::packet(0x10, &body)
}

/// MQTT 5 PUBLISH at QoS 1, no properties.
fn publish5(topic: &str, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string(&mut body, topic.as_bytes());
    body.extend_from_slice(&pkid.to_be_bytes());
    body.push(0);
    body.extend_from_slice(payload);
    mqtt::packet(0x32, &body)
}

/// MQTT 5 SUBSCRIBE to one filter, no properties.
fn subscribe5(pkid: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    body.push(0);
    mqtt_string(&mut body, filter.as_bytes());
    body.push(qos);
    mqtt::packet(0x82, &body)
}

/// An MQTT 5 client that connected and got CONNACK "success".
fn connect_v5(addr: SocketAddr, id: &str) -> Client {
    let mut c = open(addr);
    c.send(&connect5(id));
    let ack = c.expect_packet();
    assert_eq!(
        ack.first, CONNACK,
        "expected CONNACK for {id:?}, got {ack:?}"
    );
    assert_eq!(ack.body[1], 0, "CONNACK reason for {id:?}");
    c
}

/// Everything the broker sends until it closes the connection; panics if it
/// does not close within `within`.
#[track_caller]
fn packets_until_close(c: &mut Client, within: Duration) -> Vec<Packet> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    loop {
        match c.read_packet(deadline.saturating_duration_since(Instant::now())) {
            Ok(p) => got.push(p),
            Err(End::Closed) => return got,
            Err(End::Timeout) => panic!("still open after {within:?}; got {got:02x?}"),
        }
    }
}

/// Exactly one DISCONNECT with `reason`, then the close.
#[track_caller]
fn assert_disconnect(packets: &[Packet], reason: u8) {
    let [d] = packets else {
        panic!("expected one DISCONNECT, got {packets:02x?}");
    };
    assert_eq!(d.first, 0xE0, "expected DISCONNECT, got {d:02x?}");
    assert_eq!(d.body.first(), Some(&reason), "DISCONNECT reason: {d:02x?}");
}

#[track_caller]
fn expect_message(c: &mut Client, topic: &str, payload: &[u8]) {
    let p = c.next_publish();
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice()),
        (topic, payload),
        "unexpected PUBLISH {p:?}"
    );
}

/// The next packet, a PUBLISH arriving within `within`, not acknowledged.
#[track_caller]
fn publish_within(c: &mut Client, within: Duration) -> Publish {
    let p = c
        .read_packet(within)
        .unwrap_or_else(|e| panic!("no PUBLISH within {within:?}: {e:?}"));
    p.publish()
        .unwrap_or_else(|| panic!("expected PUBLISH, got {p:?}"))
}

/// [`expect_message`] arriving within [`PROMPT`]; acknowledged at QoS 1.
#[track_caller]
fn expect_message_promptly(c: &mut Client, topic: &str, payload: &[u8]) -> Publish {
    let p = publish_within(c, PROMPT);
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice()),
        (topic, payload),
        "unexpected PUBLISH {p:?}"
    );
    if p.qos == 1 {
        c.send(&mqtt::puback(p.pkid));
    }
    p
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

// A client that says nothing after CONNECT parks at once, compactly; PINGREQ
// and a QoS 1 PUBLISH, sent once it has been parked for longer than
// `park_after_ms`, wake it and are answered; silent again, it parks again.
#[test]
fn parked_client_publishes_and_pings() {
    let broker = start(PARKING);
    let addr = broker.mqtt_addr();
    let mut sub = subscriber(addr, "park1-sub", "park1/t", 1);
    let (mut c, _) = Client::connect(addr, "park1", true);
    let parked = wait_parked(&broker, "park1", false);
    assert_eq!(parked, 1, "parked twice without a word");
    // Parked past its park deadline, as a quiet device would be.
    thread::sleep(Duration::from_millis(400));
    c.ping();
    c.publish_qos1("park1/t", 7, b"hello");
    expect_message(&mut sub, "park1/t", b"hello");
    assert_eq!(resumes(&broker.log(), "park1"), ["Readable"]);

    wait_parked_after(&broker, "park1", false, parked);
    // Parked again and still served.
    c.ping();
    assert_eq!(resumes(&broker.log(), "park1"), ["Readable"; 2]);
}

// Subscribing wakes a parked client: SUBACK, the retained message, then
// live messages. Subscribed, it parks whole when quiet and every message
// still reaches it promptly: the delivery wakes it.
#[test]
fn parked_client_subscribes_and_gets_retained_and_live_messages() {
    let broker = start(PARKING);
    let addr = broker.mqtt_addr();
    let (mut publ, _) = Client::connect(addr, "park2-pub", true);
    let mut retained = mqtt::publish("park2/t", 1, 1, b"kept");
    retained[0] |= 0x01;
    publ.send(&retained);
    let ack = publ.expect_packet();
    assert_eq!((ack.first, ack.pkid()), (PUBACK, 1), "PUBACK: {ack:?}");

    let (mut c, _) = Client::connect(addr, "park2", true);
    let parked = wait_parked(&broker, "park2", false);
    c.send(&mqtt::subscribe(1, "park2/t", 1));
    let ack = c.expect_packet();
    assert_eq!((ack.first, ack.body), (SUBACK, vec![0, 1, 1]));
    let p = c.expect_packet();
    assert_eq!(p.first & 0x01, 0x01, "retained flag not set on {p:?}");
    let kept = p
        .publish()
        .unwrap_or_else(|| panic!("expected PUBLISH: {p:?}"));
    assert_eq!(
        (kept.topic.as_str(), kept.payload.as_slice()),
        ("park2/t", &b"kept"[..])
    );
    c.send(&mqtt::puback(kept.pkid));
    let parked = wait_parked_after(&broker, "park2", true, parked);

    // Live messages for about a second, 100 ms apart; the client only
    // reads, so it parks between them and each one wakes it.
    let flow = Instant::now();
    let mut sent = 0;
    while flow.elapsed() < IDLE {
        let payload = format!("live{sent}");
        publ.send(&mqtt::publish("park2/t", 0, 0, payload.as_bytes()));
        expect_message_promptly(&mut c, "park2/t", payload.as_bytes());
        sent += 1;
        thread::sleep(Duration::from_millis(100));
    }
    let parked = wait_parked_after(&broker, "park2", true, parked);

    thread::sleep(IDLE);
    let log = broker.log();
    assert_eq!(parked_now(&log, "park2"), 1, "not parked after {IDLE:?}");
    let woken = resumes(&log, "park2").len();
    publ.send(&mqtt::publish("park2/t", 0, 0, b"late"));
    expect_message_promptly(&mut c, "park2/t", b"late");
    assert_eq!(wait_resumed_after(&broker, "park2", woken), "Asked");
    wait_parked_after(&broker, "park2", true, parked);
}

// A parked client that stays silent (socket open) is closed when its
// keep-alive runs out (1.5 × 1 s), and its will is published.
#[test]
fn keep_alive_expires_while_parked_and_will_is_published() {
    let broker = start(PARKING);
    let addr = broker.mqtt_addr();
    let mut watcher = subscriber(addr, "park3-watch", "park3/will", 1);
    let mut c = open(addr);
    c.send(&connect_with_will("park3", 1, "park3/will", b"gone"));
    let ack = c.expect_packet();
    let connected = Instant::now();
    assert_eq!((ack.first, ack.body), (CONNACK, vec![0, 0]));
    wait_parked(&broker, "park3", false);

    let end = c.read_packet(Duration::from_secs(6));
    let took = connected.elapsed();
    assert_eq!(end, Err(End::Closed), "3.1.1: closed without a packet");
    assert!(
        took >= Duration::from_millis(1400) && took <= Duration::from_millis(3500),
        "closed {took:?} after CONNACK, keep-alive 1 s"
    );
    expect_message(&mut watcher, "park3/will", b"gone");
    let log = broker.log();
    assert_eq!(resumes(&log, "park3"), ["Deadline"]);
    assert_eq!(parked_now(&log, "park3"), 0);
}

// A second connection with the client id of a parked one takes over: an
// MQTT 5 client is told DISCONNECT 0x8E, a 3.1.1 client is closed; the new
// connection works.
#[test]
fn takeover_of_a_parked_session() {
    let broker = start(PARKING);
    let addr = broker.mqtt_addr();
    let mut sub = subscriber(addr, "park4-sub", "park4/#", 1);

    let mut a = connect_v5(addr, "park4-v5");
    wait_parked(&broker, "park4-v5", false);
    let mut b = connect_v5(addr, "park4-v5");
    assert_disconnect(&packets_until_close(&mut a, STEP), 0x8E);
    b.ping();
    b.send(&publish5("park4/v5", 3, b"from b"));
    let ack = b.expect_packet();
    assert_eq!((ack.first, ack.pkid()), (PUBACK, 3), "PUBACK: {ack:?}");
    expect_message(&mut sub, "park4/v5", b"from b");
    b.disconnect();
    let log = broker.log();
    let woken = resumes(&log, "park4-v5");
    assert_eq!(woken.first(), Some(&"Asked"), "resumes {woken:?}");
    assert_eq!(woken.iter().filter(|w| **w == "Asked").count(), 1);
    assert_eq!(parked_now(&log, "park4-v5"), 0);

    let (mut a, _) = Client::connect(addr, "park4-v4", true);
    wait_parked(&broker, "park4-v4", false);
    let (mut b, _) = Client::connect(addr, "park4-v4", true);
    assert_eq!(
        packets_until_close(&mut a, STEP),
        [],
        "3.1.1: closed, no packet"
    );
    b.publish_qos1("park4/v4", 4, b"from b");
    expect_message(&mut sub, "park4/v4", b"from b");
    let log = broker.log();
    let woken = resumes(&log, "park4-v4");
    assert_eq!(woken.first(), Some(&"Asked"), "resumes {woken:?}");
    assert_eq!(woken.iter().filter(|w| **w == "Asked").count(), 1);
}

// A graceful stop reaches parked MQTT 5 clients, compact and whole (one is
// subscribed): each is told DISCONNECT 0x8B (server shutting down), then
// closed; the broker exits cleanly and promptly.
#[test]
fn shutdown_reaches_parked_v5_clients() {
    let mut broker = start(PARKING);
    let addr = broker.mqtt_addr();
    let ids: Vec<String> = (0..4).map(|i| format!("park5-{i}")).collect();
    let mut clients: Vec<Client> = ids.iter().map(|id| connect_v5(addr, id)).collect();
    for id in &ids {
        wait_parked(&broker, id, false);
    }
    let mut sub = connect_v5(addr, "park5-sub");
    sub.send(&subscribe5(1, "park5/t", 1));
    let ack = sub.expect_packet();
    assert_eq!((ack.first, ack.body), (SUBACK, vec![0, 1, 0, 1]));
    wait_parked(&broker, "park5-sub", true);
    clients.push(sub);

    let stopping = Instant::now();
    let status = broker.stop();
    let took = stopping.elapsed();
    assert!(status.success(), "broker exit status {status}");
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    for c in &mut clients {
        assert_disconnect(&packets_until_close(c, STEP), 0x8B);
    }
    let log = broker.log();
    for id in &ids {
        assert_eq!(resumes(&log, id), ["Shutdown"], "{id}");
        assert_eq!(parked_now(&log, id), 0, "{id}");
    }
    assert_eq!(resumes(&log, "park5-sub").last(), Some(&"Shutdown"));
    assert_eq!(parked_now(&log, "park5-sub"), 0);
}

// A persistent session (clean session 0) parks, whole (its queue exists
// from CONNECT on), with or without a subscription, and its state survives:
// unsubscribed it gets nothing, subscribed again a message wakes it, and
// its subscription outlives the connection.
#[test]
fn persistent_session_parks_and_resumes_state() {
    let broker = start(PARKING);
    let addr = broker.mqtt_addr();
    let (mut publ, _) = Client::connect(addr, "park6-pub", true);
    let (mut c, present) = Client::connect(addr, "park6", false);
    assert!(!present, "new session reported as present");
    let parked = wait_parked(&broker, "park6", true);
    c.subscribe("park6/t", 1);
    c.send(&unsubscribe(2, "park6/t"));
    let ack = c.expect_packet();
    assert_eq!((ack.first, ack.pkid()), (0xB0, 2), "UNSUBACK: {ack:?}");
    let parked = wait_parked_after(&broker, "park6", true, parked);
    publ.publish_qos1("park6/t", 1, b"unsubscribed");

    c.subscribe("park6/t", 1);
    let parked = wait_parked_after(&broker, "park6", true, parked);
    let woken = resumes(&broker.log(), "park6").len();
    publ.publish_qos1("park6/t", 2, b"after");
    expect_message_promptly(&mut c, "park6/t", b"after");
    assert_eq!(wait_resumed_after(&broker, "park6", woken), "Asked");
    wait_parked_after(&broker, "park6", true, parked);

    // The session outlives the connection, with its subscription.
    c.disconnect();
    publ.publish_qos1("park6/t", 3, b"offline");
    let (mut c, present) = Client::connect(addr, "park6", false);
    assert!(present, "persistent session lost");
    expect_message(&mut c, "park6/t", b"offline");
}

// A session with a QoS 1 delivery in flight (not yet PUBACKed) parks too,
// whole; the PUBACK wakes it and counts. A takeover while another delivery
// is in flight hands the session over: the new connection gets that one
// again (DUP, same packet id), not the acknowledged one.
#[test]
fn parked_with_a_delivery_in_flight() {
    let broker = start(PARKING);
    let addr = broker.mqtt_addr();
    let (mut publ, _) = Client::connect(addr, "park10-pub", true);
    let (mut c, _) = Client::connect(addr, "park10", false);
    c.subscribe("park10/t", 1);
    let parked = wait_parked(&broker, "park10", true);

    publ.publish_qos1("park10/t", 1, b"one");
    let one = publish_within(&mut c, PROMPT);
    assert_eq!((one.payload.as_slice(), one.qos), (&b"one"[..], 1));
    let parked = wait_parked_after(&broker, "park10", true, parked);
    let woken = resumes(&broker.log(), "park10").len();
    c.send(&mqtt::puback(one.pkid));
    assert_eq!(wait_resumed_after(&broker, "park10", woken), "Readable");
    let parked = wait_parked_after(&broker, "park10", true, parked);

    publ.publish_qos1("park10/t", 2, b"two");
    let two = publish_within(&mut c, PROMPT);
    assert_eq!((two.payload.as_slice(), two.qos), (&b"two"[..], 1));
    wait_parked_after(&broker, "park10", true, parked);

    let woken = resumes(&broker.log(), "park10").len();
    let (mut c2, present) = Client::connect(addr, "park10", false);
    assert!(present, "persistent session lost");
    assert_eq!(
        packets_until_close(&mut c, STEP),
        [],
        "3.1.1: closed, no packet"
    );
    assert_eq!(wait_resumed_after(&broker, "park10", woken), "Asked");
    let again = c2.next_publish();
    assert_eq!(
        (again.payload.as_slice(), again.dup, again.pkid),
        (&b"two"[..], true, two.pkid),
        "redelivered {again:?}"
    );
    publ.publish_qos1("park10/t", 3, b"three");
    expect_message(&mut c2, "park10/t", b"three");
}

// A subscribed client parks whole when silent; 20 QoS 1 messages 50 ms
// apart all reach it in order (it acknowledges each), the first waking it;
// it parks again afterwards, and a QoS 0 message then still arrives within
// a second.
#[test]
fn subscribed_client_parks_whole_and_is_woken_by_deliveries() {
    let broker = start(PARKING);
    let addr = broker.mqtt_addr();
    let mut c = subscriber(addr, "park9", "park9/t", 1);
    let parked = wait_parked(&broker, "park9", true);
    let (mut publ, _) = Client::connect(addr, "park9-pub", true);

    let woken = resumes(&broker.log(), "park9").len();
    let mut pkids = BTreeSet::new();
    for i in 0..20u16 {
        let payload = format!("m{i}");
        publ.publish_qos1("park9/t", i + 1, payload.as_bytes());
        let p = expect_message_promptly(&mut c, "park9/t", payload.as_bytes());
        assert_eq!(p.qos, 1, "delivered at QoS {}", p.qos);
        pkids.insert(p.pkid);
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(pkids.len(), 20, "packet ids reused while in flight");
    assert_eq!(wait_resumed_after(&broker, "park9", woken), "Asked");

    let parked = wait_parked_after(&broker, "park9", true, parked);
    let woken = resumes(&broker.log(), "park9").len();
    publ.send(&mqtt::publish("park9/t", 0, 0, b"late"));
    let late = expect_message_promptly(&mut c, "park9/t", b"late");
    assert_eq!(late.qos, 0);
    assert_eq!(wait_resumed_after(&broker, "park9", woken), "Asked");
    wait_parked_after(&broker, "park9", true, parked);
    c.ping();
}

// 500 clients park; all publish at once and every message arrives, each
// client woken once for it (not parked again before its PUBLISH is read);
// they park again; all disconnect; the broker logs no error.
#[test]
fn many_parked_clients_then_all_resume() {
    const CLIENTS: usize = 500;
    let broker = start(PARKING);
    let addr = broker.mqtt_addr();
    let parked_clients = |log: &str| {
        balances(log)
            .into_iter()
            .filter(|(id, n)| id.starts_with("park7-") && *n == 1)
            .count()
    };
    let client_resumes = |log: &str| {
        events(log)
            .filter(|e| !e.parked && e.client_id.starts_with("park7-"))
            .count()
    };
    let mut sub = subscriber(addr, "sub7", "park7/t", 0);
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|i| Client::connect(addr, &format!("park7-{i}"), true).0)
        .collect();
    wait_log(&broker, "all clients parked", |log| {
        parked_clients(log) == CLIENTS
    });

    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&mqtt::publish("park7/t", 0, 0, format!("m{i}").as_bytes()));
    }
    let want: BTreeSet<String> = (0..CLIENTS).map(|i| format!("m{i}")).collect();
    let mut got = BTreeSet::new();
    for _ in 0..CLIENTS {
        let p = sub.next_publish();
        got.insert(String::from_utf8(p.payload).expect("utf-8 payload"));
    }
    assert_eq!(got, want);
    let resumed = client_resumes(&broker.log());
    assert!(
        resumed <= CLIENTS + CLIENTS / 100,
        "{resumed} resumes (and as many parks) for {CLIENTS} clients each woken by one PUBLISH"
    );
    wait_log(&broker, "all clients parked again", |log| {
        parked_clients(log) == CLIENTS
    });

    for c in &mut clients {
        c.send(&mqtt::DISCONNECT);
    }
    for c in &mut clients {
        assert_eq!(packets_until_close(c, STEP), [], "closed after DISCONNECT");
    }
    wait_log(&broker, "no client parked", |log| parked_clients(log) == 0);
    sub.ping();
    let log = broker.log();
    assert!(
        !log.contains("ERROR") && !log.contains("panicked"),
        "errors in the broker log:\n{}",
        log.lines()
            .filter(|l| l.contains("ERROR") || l.contains("panicked"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// `park_after_ms = 0`: nothing ever parks, subscribed or not, and a silent
// client still works.
#[test]
fn parking_disabled_with_zero() {
    let broker = start(NO_PARKING);
    let addr = broker.mqtt_addr();
    let mut sub = subscriber(addr, "park8-sub", "park8/t", 1);
    let (mut c, _) = Client::connect(addr, "park8", true);
    thread::sleep(IDLE);
    c.ping();
    c.publish_qos1("park8/t", 1, b"awake");
    expect_message(&mut sub, "park8/t", b"awake");
    let log = broker.log();
    assert_eq!(events(&log).count(), 0, "parked with park_after_ms = 0");
}
