//! MQTT 5 session tests: packets in, packets out, no sockets.

use super::*;
use crate::codec::Decoder;
use mqttbytes::v5::{
    Connect, ConnectProperties, Publish, PublishProperties, RetainForwardRule, Subscribe,
    SubscribeProperties, UnsubAckReason, Unsubscribe,
};
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
    while s.take_ticket().is_some() {
        s.handle_durable(true);
    }
    let mut buf = std::mem::take(s.output());
    let mut reader = Decoder::with_protocol(1 << 20, s.protocol());
    let mut v = Vec::new();
    while !buf.is_empty() {
        match reader.decode(&mut buf) {
            Ok(Some(p)) => v.push(p),
            other => panic!("undecodable output: {other:?}"),
        }
    }
    v
}

fn connect(s: &mut Session, id: &str, expiry: Option<u32>) -> v5::ConnAck {
    match connect_with(s, id, 0, |p| p.session_expiry_interval = expiry).remove(0) {
        Packet::ConnAck(a) => a,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// CONNECT properties with nothing set.
fn connect_properties() -> ConnectProperties {
    ConnectProperties {
        session_expiry_interval: None,
        receive_maximum: None,
        max_packet_size: None,
        topic_alias_max: None,
        request_response_info: None,
        request_problem_info: None,
        user_properties: vec![],
        authentication_method: None,
        authentication_data: None,
    }
}

fn props() -> PublishProperties {
    props::empty_publish_properties()
}

fn publishes(p: &[Packet]) -> Vec<&Publish> {
    p.iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect()
}

#[test]
fn connack_carries_limits_and_assigned_id() {
    let sh = shared();
    let mut s = session(&sh);
    let ack = connect(&mut s, "", None);
    assert_eq!(ack.code, v5::ConnectReturnCode::Success);
    let p = ack.properties.expect("CONNACK properties");
    assert_eq!(p.receive_max, Some(64));
    assert_eq!(p.topic_alias_max, Some(64));
    assert_eq!(p.shared_subscription_available, Some(1));
    assert!(
        p.assigned_client_identifier
            .is_some_and(|id| !id.is_empty())
    );
}

#[test]
fn properties_survive_the_trip_and_subscription_ids_are_echoed() {
    let sh = shared();
    let mut s = session(&sh);
    connect(&mut s, "p1", None);
    let mut sub = Subscribe::new("a/+", QoS::AtLeastOnce);
    sub.pkid = 1;
    sub.properties = Some(SubscribeProperties {
        id: Some(42),
        user_properties: vec![],
    });
    s.handle_packet(Packet::Subscribe(sub));
    out(&mut s);
    let mut p = Publish::new("a/b", QoS::AtLeastOnce, b"x".to_vec());
    p.pkid = 2;
    p.properties = Some(PublishProperties {
        content_type: Some("text/plain".into()),
        response_topic: Some("r/1".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"c1")),
        user_properties: vec![("k".into(), "v".into())],
        ..props()
    });
    s.handle_packet(Packet::Publish(p));
    let got = out(&mut s);
    let d = publishes(&got)[0];
    let dp = d.properties.as_ref().expect("properties delivered");
    assert_eq!(dp.content_type.as_deref(), Some("text/plain"));
    assert_eq!(dp.response_topic.as_deref(), Some("r/1"));
    assert_eq!(dp.correlation_data.as_deref(), Some(&b"c1"[..]));
    assert_eq!(dp.user_properties, vec![("k".to_owned(), "v".to_owned())]);
    assert_eq!(dp.subscription_identifiers, vec![42]);
}

#[test]
fn no_local_skips_own_messages_only() {
    let sh = shared();
    let mut a = session(&sh);
    connect(&mut a, "nl-a", None);
    let mut sub = Subscribe::new("t", QoS::AtMostOnce);
    sub.pkid = 1;
    sub.filters[0].nolocal = true;
    a.handle_packet(Packet::Subscribe(sub));
    out(&mut a);
    a.handle_packet(Packet::Publish(Publish::new(
        "t",
        QoS::AtMostOnce,
        b"own".to_vec(),
    )));
    assert!(publishes(&out(&mut a)).is_empty(), "own message skipped");
    let mut b = session(&sh);
    connect(&mut b, "nl-b", None);
    b.handle_packet(Packet::Publish(Publish::new(
        "t",
        QoS::AtMostOnce,
        b"other".to_vec(),
    )));
    let got = out(&mut a);
    assert_eq!(&publishes(&got)[0].payload[..], b"other");
}

#[test]
fn topic_alias_sets_then_resolves_and_unknown_alias_disconnects() {
    let sh = shared();
    let mut s = session(&sh);
    connect(&mut s, "alias", None);
    let mut sub = Subscribe::new("long/topic/name", QoS::AtMostOnce);
    sub.pkid = 1;
    s.handle_packet(Packet::Subscribe(sub));
    out(&mut s);
    let mut first = Publish::new("long/topic/name", QoS::AtMostOnce, b"1".to_vec());
    first.properties = Some(PublishProperties {
        topic_alias: Some(3),
        ..props()
    });
    s.handle_packet(Packet::Publish(first));
    let mut second = Publish::new("", QoS::AtMostOnce, b"2".to_vec());
    second.properties = Some(PublishProperties {
        topic_alias: Some(3),
        ..props()
    });
    s.handle_packet(Packet::Publish(second));
    let got = out(&mut s);
    let topics: Vec<&str> = publishes(&got).iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, ["long/topic/name", "long/topic/name"]);
    let mut bad = Publish::new("", QoS::AtMostOnce, b"3".to_vec());
    bad.properties = Some(PublishProperties {
        topic_alias: Some(9),
        ..props()
    });
    s.handle_packet(Packet::Publish(bad));
    let got = out(&mut s);
    assert!(matches!(&got[0], Packet::Disconnect(d)
        if d.reason_code == DisconnectReasonCode::TopicAliasInvalid));
    assert_eq!(s.phase(), Phase::Closed);
}

#[test]
fn reason_codes_for_acks() {
    let sh = shared();
    let mut s = session(&sh);
    connect(&mut s, "rc", None);
    let mut p = Publish::new("nobody/listens", QoS::AtLeastOnce, b"x".to_vec());
    p.pkid = 7;
    s.handle_packet(Packet::Publish(p));
    assert!(matches!(&out(&mut s)[0], Packet::PubAck(a)
        if a.reason == v5::PubAckReason::NoMatchingSubscribers));
    let mut u = Unsubscribe::new("never/subscribed");
    u.pkid = 8;
    s.handle_packet(Packet::Unsubscribe(u));
    assert!(matches!(&out(&mut s)[0], Packet::UnsubAck(a)
        if a.reasons == vec![UnsubAckReason::NoSubscriptionExisted]));
    let mut bad_shared = Subscribe::new("$share/g+/t", QoS::AtMostOnce);
    bad_shared.pkid = 9;
    s.handle_packet(Packet::Subscribe(bad_shared));
    assert!(matches!(&out(&mut s)[0], Packet::SubAck(a)
        if a.return_codes == vec![v5::SubscribeReasonCode::TopicFilterInvalid]));
}

#[test]
fn shared_subscription_spreads_messages_over_members() {
    let sh = shared();
    let mut members: Vec<Session> = (0..2).map(|_| session(&sh)).collect();
    for (i, m) in members.iter_mut().enumerate() {
        connect(m, &format!("member-{i}"), None);
        let mut sub = Subscribe::new("$share/workers/jobs/+", QoS::AtLeastOnce);
        sub.pkid = 1;
        m.handle_packet(Packet::Subscribe(sub));
        assert!(matches!(&out(m)[0], Packet::SubAck(a)
            if a.return_codes == vec![v5::SubscribeReasonCode::QoS1]));
    }
    let mut producer = session(&sh);
    connect(&mut producer, "producer", None);
    for i in 0..6u16 {
        let mut p = Publish::new("jobs/x", QoS::AtLeastOnce, vec![b'0' + i as u8]);
        p.pkid = i + 1;
        producer.handle_packet(Packet::Publish(p));
    }
    out(&mut producer);
    let mut seen = Vec::new();
    for m in &mut members {
        let got = out(m);
        let mine = publishes(&got);
        assert!(!mine.is_empty(), "every member gets some");
        for p in &mine {
            assert_eq!(p.topic, "jobs/x");
            m.handle_packet(Packet::PubAck(v5::PubAck::new(p.pkid)));
        }
        seen.extend(mine.iter().map(|p| p.payload[0]));
    }
    seen.sort_unstable();
    assert_eq!(seen, b"012345", "each message to exactly one member");
    // The last member leaving deletes the group's queue.
    for mut m in members {
        m.release();
    }
    let vhost = sh.broker.vhost("/").unwrap();
    assert!(vhost.queue("mqtt-shared/workers/jobs/+", 0).is_err());
}

#[test]
fn retain_handling_never_and_retain_as_published() {
    let sh = shared();
    let mut s = session(&sh);
    connect(&mut s, "rh", None);
    let mut r = Publish::new("state/x", QoS::AtMostOnce, b"on".to_vec());
    r.retain = true;
    s.handle_packet(Packet::Publish(r));
    let mut sub = Subscribe::new("state/#", QoS::AtMostOnce);
    sub.pkid = 1;
    sub.filters[0].retain_forward_rule = RetainForwardRule::Never;
    sub.filters[0].preserve_retain = true;
    s.handle_packet(Packet::Subscribe(sub));
    let got = out(&mut s);
    assert!(publishes(&got).is_empty(), "retain handling 2: {got:?}");
    let mut live = Publish::new("state/x", QoS::AtMostOnce, b"off".to_vec());
    live.retain = true;
    s.handle_packet(Packet::Publish(live));
    let got = out(&mut s);
    assert!(publishes(&got)[0].retain, "retain as published");
}

#[test]
fn persistent_session_by_expiry_and_takeover_says_why() {
    let sh = shared();
    let mut a = session(&sh);
    let ack = connect(&mut a, "exp", Some(60));
    assert!(!ack.session_present);
    let mut sub = Subscribe::new("q/1", QoS::AtLeastOnce);
    sub.pkid = 1;
    a.handle_packet(Packet::Subscribe(sub));
    out(&mut a);
    a.handle_stop();
    let got = out(&mut a);
    assert!(matches!(&got[0], Packet::Disconnect(d)
        if d.reason_code == DisconnectReasonCode::SessionTakenOver));
    let mut b = session(&sh);
    let mut c = Connect::new("exp");
    c.clean_session = false;
    c.properties = Some(ConnectProperties {
        session_expiry_interval: Some(60),
        ..connect_properties()
    });
    b.handle_packet(Packet::Connect(c));
    assert!(matches!(&out(&mut b)[0], Packet::ConnAck(a) if a.session_present));
}

#[test]
fn delayed_will_and_session_expiry_are_deferred() {
    let sh = shared();
    let mut s = session(&sh);
    let mut c = Connect::new("deferred");
    c.clean_session = false;
    c.properties = Some(ConnectProperties {
        session_expiry_interval: Some(30),
        ..connect_properties()
    });
    let mut will = v5::LastWill::new("gone/deferred", "bye", QoS::AtMostOnce, false);
    will.properties = Some(v5::WillProperties {
        delay_interval: Some(5),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: vec![],
    });
    c.last_will = Some(will);
    s.handle_packet(Packet::Connect(c));
    out(&mut s);
    // A watcher sees no will at the abnormal end: it waits for its delay.
    let mut watcher = session(&sh);
    connect(&mut watcher, "watcher", None);
    let mut sub = Subscribe::new("gone/#", QoS::AtMostOnce);
    sub.pkid = 1;
    watcher.handle_packet(Packet::Subscribe(sub));
    out(&mut watcher);
    s.handle_keepalive_timeout();
    assert!(publishes(&out(&mut watcher)).is_empty(), "will held back");
    let d = s.take_deferred().expect("deferred will and expiry");
    assert_eq!(d.will.as_ref().map(|(after, _)| after.as_secs()), Some(5));
    assert_eq!(d.expiry.map(|e| e.as_secs()), Some(30));
    // The client coming back calls it off.
    let mut back = session(&sh);
    let mut again = Connect::new("deferred");
    again.clean_session = false;
    back.handle_packet(Packet::Connect(again));
    assert!(
        d.token.is_cancelled(),
        "reconnect cancels the deferred will"
    );

    // 3.1.1 sessions defer nothing.
    let mut v4 = session(&sh);
    let mut c = Connect::new("v4-none");
    c.protocol = Protocol::V4;
    c.clean_session = false;
    v4.handle_packet(Packet::Connect(c));
    v4.handle_keepalive_timeout();
    assert!(v4.take_deferred().is_none());
}

/// CONNECT with `props` edited by `f`.
fn connect_with(
    s: &mut Session,
    id: &str,
    keep_alive: u16,
    f: impl FnOnce(&mut ConnectProperties),
) -> Vec<Packet> {
    let mut c = Connect::new(id);
    c.keep_alive = keep_alive;
    let mut p = connect_properties();
    f(&mut p);
    c.properties = Some(p);
    s.handle_packet(Packet::Connect(c));
    out(s)
}

#[test]
fn server_keep_alive_caps_the_clients_and_fills_in_none() {
    let sh = shared();
    let config = SessionConfig {
        max_keep_alive: 30,
        ..SessionConfig::default()
    };
    for (asked, given) in [(60, Some(30)), (0, Some(30)), (10, None)] {
        let mut s = Session::new(sh.clone(), config.clone(), "127.0.0.1:1".parse().unwrap());
        let got = connect_with(&mut s, &format!("ka{asked}"), asked, |_| {});
        let Packet::ConnAck(a) = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(a.code, v5::ConnectReturnCode::Success);
        let p = a.properties.as_ref().expect("properties");
        assert_eq!(p.server_keep_alive, given, "asked {asked}");
        assert_eq!(s.keep_alive(), given.unwrap_or(asked));
    }
    // 3.1.1 cannot be told: refused.
    let mut s = Session::new(sh, config, "127.0.0.1:1".parse().unwrap());
    let mut c = Connect::new("old");
    c.protocol = Protocol::V4;
    c.keep_alive = 600;
    s.handle_packet(Packet::Connect(c));
    assert_eq!(s.phase(), Phase::Closed);
}

#[test]
fn reason_strings_on_error_acks_unless_problem_information_is_off() {
    let sh = shared();
    let mut p = Publish::new("nobody/listens", QoS::AtLeastOnce, "x");
    p.pkid = 1;
    for (id, problem_info, says_why) in [("rs1", None, true), ("rs2", Some(0), false)] {
        let mut s = session(&sh);
        connect_with(&mut s, id, 0, |p| p.request_problem_info = problem_info);
        // 0x10 is no error: no properties at all, whatever the client asked.
        s.handle_packet(Packet::Publish(p.clone()));
        let got = out(&mut s);
        let Packet::PubAck(ack) = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(ack.reason, v5::PubAckReason::NoMatchingSubscribers);
        assert!(ack.properties.is_none(), "{id}: {ack:?}");
        assert_eq!(s.ack_reason_string(0x10, "nobody"), None);
        // An error (0x80 and above) says why if the client lets it.
        let why = s.ack_reason_string(0x80, "publish failed");
        assert_eq!(why.is_some(), says_why, "{id}: {why:?}");
        // DISCONNECT carries one anyway (MQTT-3.1.2-29 allows it).
        s.handle_keepalive_timeout();
        let got = out(&mut s);
        let Packet::Disconnect(d) = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(d.reason_code, DisconnectReasonCode::KeepAliveTimeout);
        assert!(
            d.properties
                .as_ref()
                .and_then(|p| p.reason_string.as_ref())
                .is_some()
        );
    }
}

#[test]
fn refused_connack_says_why() {
    let sh = shared();
    let mut s = session(&sh);
    let mut c = Connect::new("bad");
    c.set_login("guest", "wrong");
    s.handle_packet(Packet::Connect(c));
    let got = out(&mut s);
    let Packet::ConnAck(a) = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(a.code, v5::ConnectReturnCode::BadUserNamePassword);
    let why = a.properties.as_ref().and_then(|p| p.reason_string.clone());
    assert_eq!(why.as_deref(), Some("bad credentials"));
}

#[test]
fn outbound_topic_aliases_up_to_the_clients_maximum() {
    let sh = shared();
    let mut s = session(&sh);
    connect_with(&mut s, "alias-out", 0, |p| p.topic_alias_max = Some(2));
    s.handle_packet(Packet::Subscribe(Subscribe::new("t/#", QoS::AtMostOnce)));
    out(&mut s);
    let mut publisher = session(&sh);
    connect(&mut publisher, "alias-pub", None);
    for t in ["t/a", "t/b", "t/a", "t/c", "t/b", "t/c"] {
        publisher.handle_packet(Packet::Publish(Publish::new(t, QoS::AtMostOnce, t)));
    }
    out(&mut publisher);
    let got = out(&mut s);
    let seen: Vec<(String, Option<u16>, String)> = publishes(&got)
        .iter()
        .map(|p| {
            (
                p.topic.clone(),
                p.properties.as_ref().and_then(|pr| pr.topic_alias),
                String::from_utf8_lossy(&p.payload).into_owned(),
            )
        })
        .collect();
    let expect = [
        ("t/a", Some(1), "t/a"),
        ("t/b", Some(2), "t/b"),
        ("", Some(1), "t/a"),
        ("t/c", None, "t/c"),
        ("", Some(2), "t/b"),
        ("t/c", None, "t/c"),
    ];
    let expect: Vec<(String, Option<u16>, String)> = expect
        .iter()
        .map(|(t, a, b)| ((*t).to_owned(), *a, (*b).to_owned()))
        .collect();
    assert_eq!(seen, expect);
}

#[test]
fn park_and_unpark_keep_what_an_idle_session_needs() {
    let sh = shared();
    let mut s = session(&sh);
    connect_with(&mut s, "parky", 30, |p| {
        p.topic_alias_max = Some(5);
        p.request_problem_info = Some(0);
    });
    assert!(s.parkable());
    let parked = s.park();
    drop(s); // releases nothing: the client is still connected
    assert!(!parked.signal().is_finished());
    let mut s = Session::unpark(sh.clone(), SessionConfig::default(), parked);
    assert_eq!(s.keep_alive(), 30);
    assert_eq!(s.phase(), Phase::Connected);
    // Still registered: a takeover stops it.
    let signal = s.signal().clone();
    let mut second = session(&sh);
    connect(&mut second, "parky", None);
    assert!(signal.is_stopped());
    // Subscribing makes it unparkable.
    s.handle_packet(Packet::Subscribe(Subscribe::new("x/y", QoS::AtLeastOnce)));
    out(&mut s);
    assert!(!s.parkable());
}

#[test]
fn receive_maximum_still_bounds_all_consumers_after_park_and_unpark() {
    let sh = shared();
    let mut s = session(&sh);
    connect_with(&mut s, "rm-park", 0, |p| p.receive_maximum = Some(2));
    assert!(s.parkable());
    let parked = s.park();
    drop(s);
    let mut s = Session::unpark(sh.clone(), SessionConfig::default(), parked);
    // Every message reaches both the session queue and the group's queue.
    for f in ["rm/#", "$share/g/rm/#"] {
        let mut sub = Subscribe::new(f, QoS::AtLeastOnce);
        sub.pkid = 1;
        s.handle_packet(Packet::Subscribe(sub));
    }
    out(&mut s);
    let mut publisher = session(&sh);
    connect(&mut publisher, "rm-pub", None);
    for i in 1..=5 {
        let mut p = Publish::new("rm/t", QoS::AtLeastOnce, "x");
        p.pkid = i;
        publisher.handle_packet(Packet::Publish(p));
    }
    out(&mut publisher);
    let got = out(&mut s);
    assert_eq!(
        publishes(&got).len(),
        2,
        "receive maximum 2 over both consumers"
    );
}

/// CONNECT with Clean Start 0 and `expiry` (`None`: the property is absent);
/// the CONNACK (what follows it is left in the output).
fn resume(s: &mut Session, id: &str, expiry: Option<u32>) -> v5::ConnAck {
    let mut c = Connect::new(id);
    c.clean_session = false;
    c.properties = Some(ConnectProperties {
        session_expiry_interval: expiry,
        ..connect_properties()
    });
    s.handle_packet(Packet::Connect(c));
    match written(s).remove(0) {
        Packet::ConnAck(a) => a,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[test]
fn clean_start_0_resumes_the_session_whatever_the_new_expiry() {
    let sh = shared();
    for (id, expiry) in [("resume-none", None), ("resume-zero", Some(0))] {
        let mut a = session(&sh);
        assert!(!connect(&mut a, id, Some(60)).session_present);
        let mut sub = Subscribe::new(format!("{id}/t"), QoS::AtLeastOnce);
        sub.pkid = 1;
        a.handle_packet(Packet::Subscribe(sub));
        out(&mut a);
        a.handle_packet(Packet::Disconnect(v5::Disconnect::new()));
        let key = ("/".to_owned(), id.to_owned());
        assert!(sh.saved.lock().contains_key(&key), "{id}: session saved");

        let mut publisher = session(&sh);
        connect(&mut publisher, &format!("{id}-pub"), None);
        let mut p = Publish::new(format!("{id}/t"), QoS::AtLeastOnce, "queued");
        p.pkid = 1;
        publisher.handle_packet(Packet::Publish(p));
        out(&mut publisher);

        let mut b = session(&sh);
        let ack = resume(&mut b, id, expiry);
        assert!(ack.session_present, "{id}: not resumed");
        let got = out(&mut b);
        assert_eq!(&publishes(&got)[0].payload[..], b"queued", "{id}");
        b.handle_packet(Packet::PubAck(v5::PubAck::new(publishes(&got)[0].pkid)));
        // While it is connected, all that is stored ends it should the
        // broker die.
        assert!(
            sh.saved
                .lock()
                .get(&key)
                .is_some_and(|s| s.expires.is_some_and(|e| e <= unix_ms()) && s.pkids.is_empty()),
            "{id}: state taken"
        );
        // Expiry 0: the session ends with this connection, queue and all.
        b.handle_keepalive_timeout();
        assert!(b.take_deferred().is_none(), "{id}: nothing outlives it");
        assert!(
            !sh.saved.lock().contains_key(&key),
            "{id}: state saved again"
        );
        let vhost = sh.broker.vhost("/").unwrap();
        assert!(
            vhost.queue(&format!("mqtt-session-{id}"), 0).is_err(),
            "{id}: session queue left"
        );
        let mut c = session(&sh);
        assert!(!resume(&mut c, id, None).session_present, "{id}");
    }
}

/// A store that holds every durability ticket until told to complete them,
/// as a disk slower than the client would.
#[derive(Default)]
struct HeldStore {
    held: Mutex<Vec<tokio::sync::oneshot::Sender<()>>>,
}

impl HeldStore {
    fn complete_all(&self) {
        for tx in self.held.lock().drain(..) {
            let _ = tx.send(());
        }
    }
}

impl switchyard_engine::store::Store for HeldStore {
    fn load(
        &self,
    ) -> Result<switchyard_engine::store::Snapshot, switchyard_engine::store::StoreError> {
        Ok(switchyard_engine::store::Snapshot::default())
    }

    fn submit(
        &self,
        _op: switchyard_engine::store::StoreOp,
        durable: Option<tokio::sync::oneshot::Sender<()>>,
    ) {
        if let Some(tx) = durable {
            self.held.lock().push(tx);
        }
    }

    fn backlog(&self) -> usize {
        0
    }

    fn flush(&self) {}
}

/// What the session wrote, without completing any durability ticket.
fn written(s: &mut Session) -> Vec<Packet> {
    let mut buf = std::mem::take(s.output());
    let mut reader = Decoder::with_protocol(1 << 20, s.protocol());
    let mut v = Vec::new();
    while let Ok(Some(p)) = reader.decode(&mut buf) {
        v.push(p);
    }
    assert!(buf.is_empty(), "undecodable output");
    v
}

fn window_of_two() -> SessionConfig {
    SessionConfig {
        max_inflight: 2,
        ..SessionConfig::default()
    }
}

fn publish_packet(qos: QoS, pkid: u16) -> Packet {
    let mut p = Publish::new("rm/t", qos, "x");
    p.pkid = pkid;
    Packet::Publish(p)
}

#[track_caller]
fn assert_receive_maximum_exceeded(got: &[Packet]) {
    assert!(
        matches!(got.last(), Some(Packet::Disconnect(d))
            if d.reason_code == DisconnectReasonCode::ReceiveMaximumExceeded),
        "{got:?}"
    );
}

#[test]
fn receive_maximum_counts_qos1_publishes_until_their_puback_is_written() {
    let store = Arc::new(HeldStore::default());
    let sh = Shared::new(Broker::open(store.clone()).unwrap());
    let peer = "127.0.0.1:1".parse().unwrap();
    // A durable queue takes the messages: each PUBACK waits for the store.
    let mut sub = Session::new(sh.clone(), window_of_two(), peer);
    connect(&mut sub, "rm-durable", Some(60));
    sub.handle_packet(Packet::Subscribe(Subscribe::new("rm/#", QoS::AtLeastOnce)));
    store.complete_all();
    out(&mut sub);

    let mut s = Session::new(sh, window_of_two(), peer);
    connect(&mut s, "rm-q1", None);
    s.handle_packet(publish_packet(QoS::AtLeastOnce, 1));
    s.handle_packet(publish_packet(QoS::AtLeastOnce, 2));
    assert!(written(&mut s).is_empty(), "PUBACKs wait for the store");
    // Once written, they no longer count.
    store.complete_all();
    while s.take_ticket().is_some() {
        s.handle_durable(true);
    }
    assert_eq!(written(&mut s).len(), 2, "two PUBACKs");
    s.handle_packet(publish_packet(QoS::AtLeastOnce, 3));
    s.handle_packet(publish_packet(QoS::AtLeastOnce, 4));
    assert_eq!(s.phase(), Phase::Connected);
    // A third while two wait for the store is one too many.
    s.handle_packet(publish_packet(QoS::AtLeastOnce, 5));
    assert_receive_maximum_exceeded(&written(&mut s));
    assert_eq!(s.phase(), Phase::Closed);
}

#[test]
fn receive_maximum_counts_qos2_until_pubcomp_but_not_what_a_previous_connection_left() {
    let sh = shared();
    let peer = "127.0.0.1:1".parse().unwrap();
    let mut a = Session::new(sh.clone(), window_of_two(), peer);
    connect(&mut a, "rm-q2", Some(60));
    a.handle_packet(publish_packet(QoS::ExactlyOnce, 1));
    a.handle_packet(publish_packet(QoS::ExactlyOnce, 2));
    // A retransmission of an id awaiting PUBREL takes no more room.
    a.handle_packet(publish_packet(QoS::ExactlyOnce, 2));
    assert_eq!(out(&mut a).len(), 3, "three PUBRECs");
    a.handle_keepalive_timeout();

    // Ids 1 and 2 await PUBREL from the previous connection: the new one
    // has its whole window.
    let mut b = Session::new(sh, window_of_two(), peer);
    assert!(resume(&mut b, "rm-q2", Some(60)).session_present);
    b.handle_packet(publish_packet(QoS::ExactlyOnce, 3));
    b.handle_packet(publish_packet(QoS::ExactlyOnce, 4));
    b.handle_packet(Packet::PubRel(v5::PubRel::new(1)));
    let got = out(&mut b);
    assert!(
        matches!(&got[..], [Packet::PubRec(_), Packet::PubRec(_), Packet::PubComp(c)]
            if c.reason == v5::PubCompReason::Success),
        "{got:?}"
    );
    assert_eq!(b.phase(), Phase::Connected);
    // Id 2 sent again on this connection now counts: one too many.
    b.handle_packet(publish_packet(QoS::ExactlyOnce, 2));
    assert_receive_maximum_exceeded(&out(&mut b));
}

#[test]
fn mqtt_311_has_no_receive_maximum() {
    let sh = shared();
    let mut s = Session::new(sh, window_of_two(), "127.0.0.1:1".parse().unwrap());
    let mut c = Connect::new("rm-v4");
    c.protocol = Protocol::V4;
    s.handle_packet(Packet::Connect(c));
    out(&mut s);
    for pkid in 1..=5 {
        s.handle_packet(publish_packet(QoS::ExactlyOnce, pkid));
    }
    let got = out(&mut s);
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(got.iter().all(|p| matches!(p, Packet::PubRec(_))));
    assert_eq!(s.phase(), Phase::Connected);
}
