//! MQTT 5.0 conformance on the wire, against a real `switchyard` process:
//! what the broker must answer where the specification (OASIS MQTT Version
//! 5.0, 2019) leaves no choice, checked byte for byte.
//!
//! * Session resumption (§3.1.2.4, MQTT-3.1.2-4/-5): Clean Start 0 resumes an
//!   existing session whatever the new Session Expiry Interval; an interval
//!   of 0 (or none) only means the session now ends with this connection —
//!   in memory and in the store.
//! * PUBACK / PUBREC 0x10 (No matching subscribers) is not an error: it
//!   carries no Reason String and no properties, three bytes after the fixed
//!   header as Mosquitto sends it. Once the client set Request Problem
//!   Information to 0, no acknowledgement says why (§3.1.2.11.7).
//! * Receive Maximum (§3.3.4, MQTT-3.3.4-9): a client with more QoS 1/2
//!   publishes unacknowledged than the broker announced gets DISCONNECT
//!   0x93; one that stays within it never does. MQTT 3.1.1 has no such
//!   limit.
//!
//! Blocking clients from `common/mqtt.rs` over loopback; every read is
//! bounded by a deadline.

#[path = "common/mqtt.rs"]
mod mqtt;

use std::net::SocketAddr;
use std::time::Duration;

use mqtt::{
    Client, DISCONNECT_FIRST, End, PUBACK, PUBCOMP, PUBREC, Packet, RECEIVE_MAXIMUM,
    REQUEST_PROBLEM_INFORMATION, SUBACK, connect5, publish5, pubrel, read_properties,
    session_expiry, subscribe5,
};
use switchyard_tests::Broker;

/// How long to watch for something that must *not* arrive.
const QUIET: Duration = Duration::from_millis(500);

/// Receive Maximum the flow-control tests announce (`mqtt.max_inflight`).
const SMALL_WINDOW: &str = "[mqtt]\nmax_inflight = 2\n";

/// Whether a CONNACK says session present.
fn present(connack: &Packet) -> bool {
    connack.body[0] & 1 == 1
}

/// The reason code of a PUBACK / PUBREC / PUBCOMP (0 in the 2-byte form).
fn ack_reason(p: &Packet) -> u8 {
    p.body.get(2).copied().unwrap_or(0)
}

/// An MQTT 5 clean-start client without properties.
fn plain5(addr: SocketAddr, id: &str) -> Client {
    Client::connect5(addr, &connect5(id, true, 60, &[])).0
}

/// SUBSCRIBE one filter and check the SUBACK grants `qos` (no properties).
#[track_caller]
fn subscribe(c: &mut Client, filter: &str, qos: u8) {
    c.send(&subscribe5(1, filter, qos));
    let ack = c.expect_packet();
    assert_eq!(
        ack.wire(),
        [SUBACK, 0x04, 0x00, 0x01, 0x00, qos],
        "SUBACK for {filter:?}"
    );
}

/// PUBLISH at QoS 1 and return the PUBACK's reason code.
#[track_caller]
fn publish_qos1(c: &mut Client, topic: &str, pkid: u16, payload: &[u8]) -> u8 {
    c.send(&publish5(topic, 1, pkid, payload));
    let ack = c.expect_packet();
    assert_eq!(
        (ack.first, ack.pkid()),
        (PUBACK, pkid),
        "PUBACK: {ack:02x?}"
    );
    ack_reason(&ack)
}

/// The next packet is a QoS 1 PUBLISH of `payload`; it is acknowledged.
#[track_caller]
fn expect_delivery(c: &mut Client, payload: &[u8]) {
    let p = c.expect_packet();
    let publish = p
        .publish5()
        .unwrap_or_else(|| panic!("expected PUBLISH, got {p:02x?}"));
    assert_eq!(
        (publish.qos, publish.payload.as_slice()),
        (1, payload),
        "delivery {publish:?}"
    );
    c.send(&mqtt::puback(publish.pkid));
}

#[track_caller]
fn assert_silent(c: &mut Client) {
    match c.read_packet(QUIET) {
        Err(End::Timeout) => {}
        other => panic!("expected nothing, got {other:02x?}"),
    }
}

#[track_caller]
fn expect_ack(c: &mut Client, first: u8, pkid: u16) -> Packet {
    let p = c.expect_packet();
    assert_eq!(
        (p.first, p.pkid()),
        (first, pkid),
        "expected {first:#04x} for {pkid}, got {p:02x?}"
    );
    p
}

// ---------------------------------------------------------------------------
// Session resumption
// ---------------------------------------------------------------------------

/// How the resumed connection ends.
#[derive(Debug, Clone, Copy)]
enum End2 {
    /// DISCONNECT, reason 0.
    Disconnect,
    /// The socket closes without DISCONNECT.
    Drop,
}

// A session kept by its expiry interval (60 s, 99999 s) is resumed by
// Clean Start 0 with no Session Expiry Interval or an explicit 0: CONNACK
// says session present, the QoS 1 messages queued while the client was away
// are delivered (MQTT-3.1.2-4/-5). Its new expiry of 0 ends it with that
// connection (by DISCONNECT or not): a third Clean Start 0 finds nothing,
// and the topic has no subscriber left.
#[test]
fn clean_start_0_resumes_the_session_whatever_the_new_expiry() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let mut publ = plain5(addr, "resume-pub");
    let cases: [(&str, u32, Vec<u8>, End2); 3] = [
        ("resume-absent", 60, Vec::new(), End2::Disconnect),
        ("resume-zero", 99_999, session_expiry(0), End2::Disconnect),
        ("resume-dropped", 60, Vec::new(), End2::Drop),
    ];
    let mut pkid = 0;
    for (id, expiry, resume_props, end) in cases {
        let topic = format!("{id}/t");
        let (mut dev, ack) =
            Client::connect5(addr, &connect5(id, true, 60, &session_expiry(expiry)));
        assert!(!present(&ack), "{id}: clean start reported a session");
        subscribe(&mut dev, &topic, 1);
        dev.disconnect();

        for m in [&b"m1"[..], b"m2"] {
            pkid += 1;
            assert_eq!(
                publish_qos1(&mut publ, &topic, pkid, m),
                0x00,
                "{id}: the away session's subscription should match"
            );
        }

        let (mut dev, ack) = Client::connect5(addr, &connect5(id, false, 60, &resume_props));
        assert!(
            present(&ack),
            "{id}: Clean Start 0 did not resume the session: {ack:02x?}"
        );
        expect_delivery(&mut dev, b"m1");
        expect_delivery(&mut dev, b"m2");
        assert_silent(&mut dev);
        match end {
            End2::Disconnect => dev.disconnect(),
            End2::Drop => drop(dev),
        }

        // Connecting again waits for the previous connection to let go of
        // the session (takeover), so the dropped case cannot race.
        let (mut dev, ack) = Client::connect5(addr, &connect5(id, false, 60, &[]));
        assert!(
            !present(&ack),
            "{id}: session outlived a connection with expiry 0"
        );
        pkid += 1;
        assert_eq!(
            publish_qos1(&mut publ, &topic, pkid, b"m3"),
            0x10,
            "{id}: a subscription survived the session"
        );
        assert_silent(&mut dev);
        dev.disconnect();
    }
}

// The persistence path: a session with expiry 99999 survives a restart and
// is resumed (with its queued message) by Clean Start 0 without an expiry;
// once that connection closes the session is deleted from the store too, so
// it does not come back after the next restart.
#[test]
fn session_resumed_with_expiry_0_does_not_come_back_after_a_restart() {
    let mut broker = Broker::start();
    let addr = broker.mqtt_addr();
    let (mut dev, _) = Client::connect5(
        addr,
        &connect5("restart-dev", true, 60, &session_expiry(99_999)),
    );
    subscribe(&mut dev, "restart/t", 1);
    dev.disconnect();
    let mut publ = plain5(addr, "restart-pub");
    assert_eq!(publish_qos1(&mut publ, "restart/t", 1, b"kept"), 0x00);
    publ.disconnect();

    assert!(broker.stop().success());
    broker.restart();
    let addr = broker.mqtt_addr();
    let (mut dev, ack) = Client::connect5(addr, &connect5("restart-dev", false, 60, &[]));
    assert!(present(&ack), "session not resumed after restart");
    expect_delivery(&mut dev, b"kept");
    dev.disconnect();

    assert!(broker.stop().success());
    broker.restart();
    let addr = broker.mqtt_addr();
    let (mut dev, ack) = Client::connect5(
        addr,
        &connect5("restart-dev", false, 60, &session_expiry(60)),
    );
    assert!(!present(&ack), "session ended with expiry 0 came back");
    let mut publ = plain5(addr, "restart-pub");
    assert_eq!(
        publish_qos1(&mut publ, "restart/t", 2, b"late"),
        0x10,
        "its subscription came back"
    );
    assert_silent(&mut dev);
}

// A session resumed with expiry 0 ends with its connection even when that
// connection ends by the broker dying (SIGKILL): after the restart there is
// no session and no subscription.
#[test]
fn session_resumed_with_expiry_0_ends_even_if_the_broker_dies() {
    let mut broker = Broker::start();
    let addr = broker.mqtt_addr();
    let (mut dev, _) = Client::connect5(
        addr,
        &connect5("crash-dev", true, 60, &session_expiry(99_999)),
    );
    subscribe(&mut dev, "crash/t", 1);
    dev.disconnect();
    let (mut dev, ack) = Client::connect5(addr, &connect5("crash-dev", false, 60, &[]));
    assert!(present(&ack), "session not resumed");
    // Its PUBACK waits for the durable queue's write, which the store
    // commits after everything the resuming CONNECT wrote.
    let mut publ = plain5(addr, "crash-pub");
    assert_eq!(publish_qos1(&mut publ, "crash/t", 1, b"live"), 0x00);
    expect_delivery(&mut dev, b"live");
    dev.ping();

    broker.kill();
    broker.restart();
    let addr = broker.mqtt_addr();
    let (mut dev, ack) =
        Client::connect5(addr, &connect5("crash-dev", false, 60, &session_expiry(60)));
    assert!(!present(&ack), "session with expiry 0 outlived the broker");
    let mut publ = plain5(addr, "crash-pub");
    assert_eq!(
        publish_qos1(&mut publ, "crash/t", 2, b"late"),
        0x10,
        "its subscription outlived the broker"
    );
    assert_silent(&mut dev);
}

// ---------------------------------------------------------------------------
// Acknowledgements: reason codes and reason strings
// ---------------------------------------------------------------------------

// PUBACK / PUBREC 0x10 (No matching subscribers, §3.4.2.1, §3.5.2.1) is a
// success: packet id and reason code, no properties, whatever Request
// Problem Information says. PUBCOMP after it is the 2-byte success form.
// With a subscriber the same publishes get the 2-byte success form.
#[test]
fn no_matching_subscribers_acks_have_no_properties() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let problem_info = [
        Vec::new(),
        vec![REQUEST_PROBLEM_INFORMATION, 1],
        vec![REQUEST_PROBLEM_INFORMATION, 0],
    ];
    for (i, props) in problem_info.iter().enumerate() {
        let (mut c, _) = Client::connect5(addr, &connect5(&format!("nms-{i}"), true, 60, props));
        c.send(&publish5("nobody/home", 1, 0x1234, b"x"));
        assert_eq!(
            c.expect_packet().wire(),
            [PUBACK, 0x03, 0x12, 0x34, 0x10],
            "QoS 1, properties {props:02x?}"
        );
        c.send(&publish5("nobody/home", 2, 0x0102, b"x"));
        assert_eq!(
            c.expect_packet().wire(),
            [PUBREC, 0x03, 0x01, 0x02, 0x10],
            "QoS 2, properties {props:02x?}"
        );
        c.send(&pubrel(0x0102));
        assert_eq!(c.expect_packet().wire(), [PUBCOMP, 0x02, 0x01, 0x02]);
    }

    let mut sub = plain5(addr, "nms-sub");
    subscribe(&mut sub, "somebody/home", 0);
    let mut c = plain5(addr, "nms-pub");
    c.send(&publish5("somebody/home", 1, 7, b"y"));
    assert_eq!(c.expect_packet().wire(), [PUBACK, 0x02, 0x00, 0x07]);
    c.send(&publish5("somebody/home", 2, 8, b"z"));
    assert_eq!(c.expect_packet().wire(), [PUBREC, 0x02, 0x00, 0x08]);
}

// With Request Problem Information 0 the broker must not send a Reason
// String (or User Properties) on anything but PUBLISH, CONNACK and
// DISCONNECT (§3.1.2.11.7): error acknowledgements — SUBACK 0x8F (topic
// filter invalid), PUBCOMP 0x92 (packet identifier not found) — are packet
// id and reason code only, as is PUBACK 0x10.
#[test]
fn acks_carry_no_reason_string_when_problem_information_is_off() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    let (mut c, _) = Client::connect5(
        addr,
        &connect5("why-quiet", true, 60, &[REQUEST_PROBLEM_INFORMATION, 0]),
    );
    c.send(&subscribe5(5, "a/#/b", 0x01));
    assert_eq!(
        c.expect_packet().wire(),
        [SUBACK, 0x04, 0x00, 0x05, 0x00, 0x8F],
        "SUBACK 0x8F"
    );
    c.send(&pubrel(9));
    assert_eq!(
        c.expect_packet().wire(),
        [PUBCOMP, 0x03, 0x00, 0x09, 0x92],
        "PUBCOMP 0x92"
    );
    c.send(&publish5("nobody/home", 1, 10, b"x"));
    assert_eq!(
        c.expect_packet().wire(),
        [PUBACK, 0x03, 0x00, 0x0A, 0x10],
        "PUBACK 0x10"
    );
    c.ping();
}

// ---------------------------------------------------------------------------
// Receive Maximum
// ---------------------------------------------------------------------------

/// An MQTT 5 client of a [`SMALL_WINDOW`] broker; checks that CONNACK
/// announces Receive Maximum 2.
fn windowed(addr: SocketAddr, id: &str) -> Client {
    let (c, ack) = Client::connect5(addr, &connect5(id, true, 60, &[]));
    let (props, _) = read_properties(&ack.body[2..]);
    let announced = props.iter().find(|(id, _)| *id == RECEIVE_MAXIMUM);
    assert_eq!(
        announced.map(|(_, v)| v.as_slice()),
        Some(&[0x00, 0x02][..]),
        "CONNACK Receive Maximum: {ack:02x?}"
    );
    c
}

// With Receive Maximum 2 announced, a third QoS 2 PUBLISH while two wait
// for their PUBREL — or a QoS 1 PUBLISH then — is "Receive Maximum
// exceeded" (MQTT-3.3.4-9): DISCONNECT 0x93 and the connection closes.
// The publish over the limit is not processed: a subscriber gets the first
// two messages only.
#[test]
fn receive_maximum_exceeded_disconnects_0x93() {
    let broker = Broker::start_with_config(SMALL_WINDOW);
    let addr = broker.mqtt_addr();
    let (mut watcher, _) = Client::connect(addr, "rmx-watch", true);
    watcher.subscribe("rmx/#", 0);
    for (id, third_qos) in [("rmx-qos2", 2), ("rmx-qos1", 1)] {
        let mut c = windowed(addr, id);
        let mut burst = publish5("rmx/t", 2, 1, b"one");
        burst.extend(publish5("rmx/t", 2, 2, b"two"));
        burst.extend(publish5("rmx/t", third_qos, 3, b"three"));
        c.send(&burst);
        let got = c.until_close(Duration::from_secs(5));
        let seen: Vec<(u8, u8)> = got
            .iter()
            .map(|p| (p.first, p.body.get(1).copied().unwrap_or(0)))
            .collect();
        assert_eq!(
            seen.len(),
            3,
            "{id}: expected PUBREC 1, PUBREC 2, DISCONNECT, close; got {got:02x?}"
        );
        assert_eq!(
            (seen[0], seen[1]),
            ((PUBREC, 1), (PUBREC, 2)),
            "{id}: {got:02x?}"
        );
        assert_eq!(
            (got[2].first, got[2].body.first()),
            (DISCONNECT_FIRST, Some(&0x93)),
            "{id}: expected DISCONNECT 0x93, got {got:02x?}"
        );
        for m in [&b"one"[..], b"two"] {
            let p = watcher.next_publish();
            assert_eq!(p.payload, m, "{id}");
        }
        match watcher.read_packet(QUIET) {
            Err(End::Timeout) => {}
            other => panic!("{id}: the publish over the limit was routed: {other:02x?}"),
        }
    }
}

// A client that keeps within Receive Maximum 2 is never disconnected:
// QoS 2 one at a time, bursts of exactly two (QoS 2, QoS 1, mixed), and a
// sliding window of two. Publishes go to a persistent session's durable
// queue, so each PUBACK / PUBREC waits for the store, as in production.
#[test]
fn a_client_within_receive_maximum_is_never_disconnected() {
    let broker = Broker::start_with_config(SMALL_WINDOW);
    let addr = broker.mqtt_addr();
    let (mut sub, _) = Client::connect5(addr, &connect5("rmw-sub", true, 60, &session_expiry(300)));
    subscribe(&mut sub, "rmw/#", 1);
    sub.disconnect();

    let mut c = windowed(addr, "rmw-pub");
    let mut next = 0u16;
    let mut id = || {
        next += 1;
        next
    };
    for _ in 0..30 {
        let n = id();
        c.send(&publish5("rmw/one", 2, n, b"x"));
        assert_eq!(ack_reason(&expect_ack(&mut c, PUBREC, n)), 0x00);
        c.send(&pubrel(n));
        expect_ack(&mut c, PUBCOMP, n);
    }
    for _ in 0..10 {
        let (a, b) = (id(), id());
        let mut burst = publish5("rmw/two", 2, a, b"x");
        burst.extend(publish5("rmw/two", 2, b, b"y"));
        c.send(&burst);
        expect_ack(&mut c, PUBREC, a);
        expect_ack(&mut c, PUBREC, b);
        let mut rels = pubrel(a);
        rels.extend(pubrel(b));
        c.send(&rels);
        expect_ack(&mut c, PUBCOMP, a);
        expect_ack(&mut c, PUBCOMP, b);

        let (a, b) = (id(), id());
        let mut burst = publish5("rmw/two", 1, a, b"x");
        burst.extend(publish5("rmw/two", 1, b, b"y"));
        c.send(&burst);
        expect_ack(&mut c, PUBACK, a);
        expect_ack(&mut c, PUBACK, b);

        // One QoS 2 waiting for its PUBREL plus one QoS 1.
        let (a, b) = (id(), id());
        c.send(&publish5("rmw/mixed", 2, a, b"x"));
        expect_ack(&mut c, PUBREC, a);
        c.send(&publish5("rmw/mixed", 1, b, b"y"));
        expect_ack(&mut c, PUBACK, b);
        c.send(&pubrel(a));
        expect_ack(&mut c, PUBCOMP, a);
    }
    // Sliding window: a new publish as soon as one completes. PUBRECs and
    // PUBCOMPs of the two in flight may interleave either way.
    const SLIDE: usize = 40;
    let mut in_flight = 0;
    let (mut sent, mut completed) = (0, 0);
    while completed < SLIDE {
        while in_flight < 2 && sent < SLIDE {
            c.send(&publish5("rmw/slide", 2, id(), b"s"));
            in_flight += 1;
            sent += 1;
        }
        let p = c.expect_packet();
        match p.first {
            PUBREC => c.send(&pubrel(p.pkid())),
            PUBCOMP => {
                in_flight -= 1;
                completed += 1;
            }
            _ => panic!("sliding window: unexpected {p:02x?}"),
        }
    }
    c.ping();
    c.disconnect();
}

// MQTT 3.1.1 has no Receive Maximum: a 3.1.1 client of the same broker may
// leave more QoS 2 publishes waiting for PUBREL than the MQTT 5 limit.
#[test]
fn v311_clients_have_no_receive_maximum() {
    let broker = Broker::start_with_config(SMALL_WINDOW);
    let addr = broker.mqtt_addr();
    let (mut c, _) = Client::connect(addr, "rm-v311", true);
    let mut burst = Vec::new();
    for n in 1..=5u16 {
        burst.extend(mqtt::publish("rm311/t", 2, n, b"x"));
    }
    c.send(&burst);
    for n in 1..=5u16 {
        assert_eq!(expect_ack(&mut c, PUBREC, n).body.len(), 2);
    }
    c.ping();
    for n in 1..=5u16 {
        c.send(&pubrel(n));
        expect_ack(&mut c, PUBCOMP, n);
    }
    c.disconnect();
}
