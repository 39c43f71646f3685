//! Deterministic session tests: packets in, packets out, no sockets.

use super::*;
use crate::codec::Decoder;
use mqttbytes::v5::{Connect, LastWill, Publish, Subscribe};
use switchyard_engine::store::MemoryStore;

fn shared() -> Arc<Shared> {
    Shared::new(Broker::open(Arc::new(MemoryStore)).unwrap())
}

fn session(shared: &Arc<Shared>) -> Session {
    Session::new(
        shared.clone(),
        SessionConfig::default(),
        "127.0.0.1:1".parse().unwrap(),
    )
}

fn out(s: &mut Session) -> Vec<Packet> {
    s.handle_outbox();
    let mut buf = std::mem::take(s.output());
    let mut v = Vec::new();
    // Server packets (CONNACK, SUBACK...) must parse at the client's level.
    let mut reader = Decoder::with_protocol(1 << 20, s.protocol());
    while !buf.is_empty() {
        match reader.decode(&mut buf) {
            Ok(Some(p)) => v.push(p),
            other => panic!("undecodable output: {other:?}"),
        }
    }
    v
}

fn connect(s: &mut Session, id: &str, clean: bool) -> Vec<Packet> {
    let mut c = Connect::new(id);
    c.protocol = Protocol::V4;
    c.clean_session = clean;
    s.handle_packet(Packet::Connect(c));
    out(s)
}

fn publish(topic: &str, qos: QoS, pkid: u16, body: &str) -> Packet {
    let mut p = Publish::new(topic, qos, body.as_bytes().to_vec());
    p.pkid = pkid;
    Packet::Publish(p)
}

#[test]
fn connect_subscribe_publish_qos1_round_trip() {
    let sh = shared();
    let mut s = session(&sh);
    let acks = connect(&mut s, "dev1", true);
    assert!(
        matches!(&acks[0], Packet::ConnAck(a) if a.code == v5::ConnectReturnCode::Success && !a.session_present)
    );
    s.handle_packet(Packet::Subscribe(Subscribe::new(
        "plant/+/temp",
        QoS::AtLeastOnce,
    )));
    assert!(
        matches!(&out(&mut s)[0], Packet::SubAck(a) if a.return_codes == vec![v5::SubscribeReasonCode::QoS1])
    );
    s.handle_packet(publish("plant/7/temp", QoS::AtLeastOnce, 5, "21.5"));
    let got = out(&mut s);
    assert!(
        got.iter()
            .any(|p| matches!(p, Packet::PubAck(a) if a.pkid == 5)),
        "{got:?}"
    );
    let delivered = got.iter().find_map(|p| match p {
        Packet::Publish(p) => Some(p.clone()),
        _ => None,
    });
    let d = delivered.expect("delivered to own subscription");
    assert_eq!(
        (d.topic.as_str(), d.qos, &d.payload[..]),
        ("plant/7/temp", QoS::AtLeastOnce, &b"21.5"[..])
    );
    s.handle_packet(Packet::PubAck(v5::PubAck::new(d.pkid)));
    assert_eq!(s.queue.as_ref().unwrap().unacked_count(), 0);
}

#[test]
fn qos2_inbound_is_exactly_once() {
    let sh = shared();
    let mut s = session(&sh);
    connect(&mut s, "dev2", true);
    s.handle_packet(Packet::Subscribe(Subscribe::new("x", QoS::AtMostOnce)));
    out(&mut s);
    s.handle_packet(publish("x", QoS::ExactlyOnce, 9, "once"));
    s.handle_packet(publish("x", QoS::ExactlyOnce, 9, "once"));
    let got = out(&mut s);
    let recs = got
        .iter()
        .filter(|p| matches!(p, Packet::PubRec(r) if r.pkid == 9))
        .count();
    let pubs = got
        .iter()
        .filter(|p| matches!(p, Packet::Publish(_)))
        .count();
    assert_eq!((recs, pubs), (2, 1), "{got:?}");
    s.handle_packet(Packet::PubRel(v5::PubRel::new(9)));
    assert!(matches!(&out(&mut s)[0], Packet::PubComp(c) if c.pkid == 9));
}

#[test]
fn retained_reaches_wildcard_subscription_and_clears() {
    let sh = shared();
    let mut a = session(&sh);
    connect(&mut a, "pub", true);
    let mut p = Publish::new("home/kitchen/light", QoS::AtLeastOnce, b"on".to_vec());
    p.pkid = 1;
    p.retain = true;
    a.handle_packet(Packet::Publish(p));
    let mut b = session(&sh);
    connect(&mut b, "sub", true);
    b.handle_packet(Packet::Subscribe(Subscribe::new(
        "home/#",
        QoS::AtLeastOnce,
    )));
    let got = out(&mut b);
    assert!(
        got.iter()
            .any(|p| matches!(p, Packet::Publish(p) if p.retain && &p.payload[..] == b"on")),
        "{got:?}"
    );
    let mut clear = Publish::new("home/kitchen/light", QoS::AtMostOnce, Vec::new());
    clear.retain = true;
    a.handle_packet(Packet::Publish(clear));
    let mut c = session(&sh);
    connect(&mut c, "late", true);
    c.handle_packet(Packet::Subscribe(Subscribe::new(
        "home/#",
        QoS::AtLeastOnce,
    )));
    assert!(!out(&mut c).iter().any(|p| matches!(p, Packet::Publish(_))));
}

#[test]
fn will_on_abnormal_close_not_on_disconnect() {
    let sh = shared();
    let mut watcher = session(&sh);
    connect(&mut watcher, "watcher", true);
    watcher.handle_packet(Packet::Subscribe(Subscribe::new(
        "status/#",
        QoS::AtMostOnce,
    )));
    out(&mut watcher);
    for (id, graceful) in [("gone", false), ("polite", true)] {
        let mut s = session(&sh);
        let mut c = Connect::new(id);
        c.protocol = Protocol::V4;
        c.last_will = Some(LastWill::new(
            format!("status/{id}"),
            "offline",
            QoS::AtMostOnce,
            false,
        ));
        s.handle_packet(Packet::Connect(c));
        if graceful {
            s.handle_packet(Packet::Disconnect(v5::Disconnect::new()));
        } else {
            s.handle_keepalive_timeout();
        }
    }
    let wills: Vec<String> = out(&mut watcher)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.topic),
            _ => None,
        })
        .collect();
    assert_eq!(wills, vec!["status/gone".to_owned()]);
}

#[test]
fn persistent_session_keeps_subscription_and_messages() {
    let sh = shared();
    let mut s = session(&sh);
    assert!(matches!(&connect(&mut s, "keep", false)[0], Packet::ConnAck(a) if !a.session_present));
    s.handle_packet(Packet::Subscribe(Subscribe::new("a/b", QoS::AtLeastOnce)));
    out(&mut s);
    s.handle_packet(Packet::Disconnect(v5::Disconnect::new()));
    drop(s);
    let mut p = session(&sh);
    connect(&mut p, "other", true);
    p.handle_packet(publish("a/b", QoS::AtLeastOnce, 3, "queued"));
    let mut s = session(&sh);
    let got = connect(&mut s, "keep", false);
    assert!(matches!(&got[0], Packet::ConnAck(a) if a.session_present));
    assert!(got.iter().any(|p| matches!(p, Packet::Publish(p) if &p.payload[..] == b"queued" && p.qos == QoS::AtLeastOnce)), "{got:?}");
}

#[test]
fn takeover_cancels_the_first_connection() {
    let sh = shared();
    let mut first = session(&sh);
    connect(&mut first, "same", true);
    let signal = first.signal().clone();
    let mut second = session(&sh);
    connect(&mut second, "same", true);
    assert!(signal.is_stopped());
}

#[test]
fn first_packet_must_be_connect_and_bad_login_is_refused() {
    let sh = shared();
    let mut s = session(&sh);
    s.handle_packet(Packet::PingReq);
    assert_eq!(s.phase(), Phase::Closed);
    let mut s = session(&sh);
    let mut c = Connect::new("x");
    c.protocol = Protocol::V4;
    c.set_login("guest", "wrong");
    s.handle_packet(Packet::Connect(c));
    assert!(
        matches!(&out(&mut s)[0], Packet::ConnAck(a) if a.code == v5::ConnectReturnCode::BadUserNamePassword)
    );
}

#[test]
fn mqtt31_needs_a_client_id_and_never_says_session_present() {
    let sh = shared();
    let mut s = session(&sh);
    s.set_mqtt31(true);
    let mut c = Connect::new("");
    c.protocol = Protocol::V4;
    s.handle_packet(Packet::Connect(c));
    assert_eq!(s.phase(), Phase::Closed);
    // A persistent 3.1 session resumes, but CONNACK's byte stays 0.
    for round in 0..2 {
        let mut s = session(&sh);
        s.set_mqtt31(true);
        let got = connect(&mut s, "v31-keep", false);
        assert!(
            matches!(&got[0], Packet::ConnAck(a) if !a.session_present && a.code == v5::ConnectReturnCode::Success),
            "round {round}: {got:?}"
        );
    }
}

/// The QoS of every PUBLISH `s` writes.
fn delivered_qos(s: &mut Session) -> Vec<(String, QoS)> {
    out(s)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.topic.clone(), p.qos)),
            _ => None,
        })
        .collect()
}

#[test]
fn few_and_many_subscriptions_match_alike() {
    for extra in [2usize, 40] {
        let sh = shared();
        let mut s = session(&sh);
        connect(&mut s, &format!("many{extra}"), true);
        s.handle_packet(Packet::Subscribe(Subscribe::new("m/#", QoS::AtLeastOnce)));
        s.handle_packet(Packet::Subscribe(Subscribe::new("m/+/x", QoS::ExactlyOnce)));
        for i in 0..extra {
            s.handle_packet(Packet::Subscribe(Subscribe::new(
                format!("m/{i}"),
                QoS::AtMostOnce,
            )));
        }
        s.handle_packet(Packet::Subscribe(Subscribe::new("+/#", QoS::AtMostOnce)));
        out(&mut s);
        let mut publisher = session(&sh);
        connect(&mut publisher, &format!("many{extra}-pub"), true);
        for (pkid, t) in (1..).zip(["m/1", "m/1/x", "other", "m"]) {
            publisher.handle_packet(publish(t, QoS::ExactlyOnce, pkid, t));
        }
        // PUBRECs for the publisher; its PUBRELs release nothing more.
        out(&mut publisher);
        let got = delivered_qos(&mut s);
        assert_eq!(
            got,
            vec![
                ("m/1".to_owned(), QoS::AtLeastOnce),
                ("m/1/x".to_owned(), QoS::ExactlyOnce),
                ("other".to_owned(), QoS::AtMostOnce),
                ("m".to_owned(), QoS::AtLeastOnce),
            ],
            "with {extra} more subscriptions"
        );
        // Unsubscribing `m/#` lowers `m/1` to `+/#`'s QoS 0.
        s.handle_packet(Packet::Unsubscribe(v5::Unsubscribe::new("m/#")));
        out(&mut s);
        publisher.handle_packet(publish("m/1", QoS::ExactlyOnce, 9, "again"));
        out(&mut publisher);
        assert_eq!(
            delivered_qos(&mut s),
            vec![("m/1".to_owned(), QoS::AtMostOnce)]
        );
    }
}
