//! Entry points for the `mqtt_packet` and `mqtt_session` fuzz targets and
//! the corpus replay tests. Public so the fuzz crate can call them; they
//! touch nothing outside a throwaway in-memory broker.

use crate::codec::{Decoder, encode};
use crate::session::{Phase, Session, SessionConfig, Shared};
use bytes::BytesMut;
use std::sync::Arc;
use switchyard_engine::Broker;
use switchyard_engine::store::MemoryStore;

/// Decode arbitrary bytes; every packet decoded must re-encode to bytes
/// that decode to the same packet.
pub fn decode_for_fuzzing(data: &[u8]) {
    // As after CONNECT, so every packet type is reachable.
    let mut decoder = Decoder::resume(1 << 16, mqttbytes::Protocol::V4);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(packet)) = decoder.decode(&mut buf) {
        let mut again = BytesMut::new();
        encode(&packet, decoder.protocol(), &mut again);
        match decoder.clone().decode(&mut again) {
            Ok(Some(p)) => assert_eq!(p, packet, "decode → encode → decode changed the packet"),
            other => panic!("re-encoded {packet:?} does not decode: {other:?}"),
        }
    }
}

/// Feed arbitrary client bytes through a fresh session, draining
/// deliveries and durability tickets after every packet. Panics only if
/// the session writes bytes that are not whole MQTT 3.1.1 packets.
pub fn drive_for_fuzzing(data: &[u8]) {
    let Ok(broker) = Broker::open(Arc::new(MemoryStore)) else {
        return;
    };
    let shared = Shared::new(broker);
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
    let mut session = Session::new(shared, SessionConfig::default(), peer);
    let mut decoder = Decoder::new(1 << 16);
    let mut input = BytesMut::from(data);
    let mut out = BytesMut::new();
    for _ in 0..10_000 {
        if session.phase() == Phase::Closed {
            break;
        }
        match decoder.decode(&mut input) {
            Ok(Some(p)) => {
                if matches!(p, crate::codec::Packet::Connect(_)) {
                    session.set_mqtt31(decoder.is_mqtt31());
                }
                session.handle_packet(p);
            }
            Ok(None) => break,
            Err(e) => {
                session.handle_decode_error(e);
                break;
            }
        }
        session.handle_outbox();
        if session.take_ticket().is_some() {
            session.handle_durable(true);
        }
        out.extend_from_slice(&std::mem::take(session.output()));
    }
    session.handle_keepalive_timeout();
    out.extend_from_slice(&std::mem::take(session.output()));
    let mut reader = Decoder::with_protocol(1 << 20, session.protocol());
    while !out.is_empty() {
        match reader.decode(&mut out) {
            Ok(Some(_)) => {}
            other => panic!("session wrote bytes that are not a packet: {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(name: &str) -> Vec<Vec<u8>> {
        let dir = format!("{}/../../fuzz/corpus/{name}", env!("CARGO_MANIFEST_DIR"));
        let files: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .flatten()
            .map(|e| std::fs::read(e.path()).expect("read corpus file"))
            .collect();
        assert!(!files.is_empty(), "{dir} is empty");
        files
    }

    /// Replays the committed fuzz corpora on stable Rust.
    #[test]
    fn replay_fuzz_corpora() {
        for data in corpus("mqtt_packet") {
            decode_for_fuzzing(&data);
        }
        for data in corpus("mqtt_session") {
            drive_for_fuzzing(&data);
        }
    }

    /// Seeds: what real 3.1.1 and 5.0 clients send. Written by
    /// `SWITCHYARD_WRITE_CORPUS=1 cargo test -p switchyard-mqtt write_seed_corpus`.
    #[test]
    fn write_seed_corpus() {
        use crate::codec::{Packet, Protocol};
        use mqttbytes::QoS;
        use mqttbytes::v5::{
            Connect, ConnectProperties, Disconnect, LastWill, PubRel, Publish, PublishProperties,
            Subscribe, SubscribeProperties, Unsubscribe,
        };
        if std::env::var_os("SWITCHYARD_WRITE_CORPUS").is_none() {
            return;
        }
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus");
        for (protocol, prefix, conversation) in [
            (Protocol::V4, "seed", "conversation"),
            (Protocol::V5, "v5_seed", "conversation_v5"),
        ] {
            let v5 = protocol == Protocol::V5;
            let mut c = Connect::new("device-1");
            c.protocol = protocol;
            c.keep_alive = 30;
            c.clean_session = false;
            c.last_will = Some(LastWill::new(
                "status/device-1",
                "offline",
                QoS::AtLeastOnce,
                true,
            ));
            if v5 {
                c.properties = Some(ConnectProperties {
                    session_expiry_interval: Some(3600),
                    receive_maximum: Some(10),
                    max_packet_size: Some(65536),
                    topic_alias_max: Some(4),
                    request_response_info: None,
                    request_problem_info: None,
                    user_properties: vec![("fleet".into(), "north".into())],
                    authentication_method: None,
                    authentication_data: None,
                });
            }
            let mut p1 = Publish::new("plant/7/temp", QoS::AtLeastOnce, b"21.5".to_vec());
            p1.pkid = 1;
            if v5 {
                p1.properties = Some(PublishProperties {
                    payload_format_indicator: Some(1),
                    message_expiry_interval: Some(60),
                    topic_alias: Some(1),
                    response_topic: Some("replies/device-1".into()),
                    correlation_data: Some(bytes::Bytes::from_static(b"req-1")),
                    user_properties: vec![("unit".into(), "C".into())],
                    subscription_identifiers: vec![],
                    content_type: Some("text/plain".into()),
                });
            }
            let mut p2 = Publish::new("plant/7/hum", QoS::ExactlyOnce, b"40".to_vec());
            p2.pkid = 2;
            p2.retain = true;
            let mut sub = Subscribe::new("plant/+/temp", QoS::AtLeastOnce);
            sub.pkid = 3;
            if v5 {
                sub.properties = Some(SubscribeProperties {
                    id: Some(5),
                    user_properties: vec![],
                });
                sub.filters[0].nolocal = true;
            }
            let packets = [
                Packet::Connect(c),
                Packet::Subscribe(sub),
                Packet::Publish(p1),
                Packet::Publish(p2),
                Packet::PubRel(PubRel::new(2)),
                Packet::PingReq,
                Packet::Unsubscribe({
                    let mut u = Unsubscribe::new("plant/+/temp");
                    u.pkid = 4;
                    u
                }),
                Packet::Disconnect(Disconnect::new()),
            ];
            let mut all = BytesMut::new();
            for (i, p) in packets.iter().enumerate() {
                let mut one = BytesMut::new();
                encode(p, protocol, &mut one);
                // Packets after CONNECT only decode at the right level; the
                // packet corpus holds each after its CONNECT.
                let mut framed = BytesMut::new();
                if i > 0 {
                    encode(&packets[0], protocol, &mut framed);
                }
                framed.extend_from_slice(&one);
                std::fs::write(format!("{root}/mqtt_packet/{prefix}{i}"), &framed)
                    .expect("write seed");
                all.extend_from_slice(&one);
            }
            std::fs::write(format!("{root}/mqtt_session/{conversation}"), &all)
                .expect("write seed");
        }
    }
}
