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
    let decoder = Decoder::new(1 << 16);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(packet)) = decoder.decode(&mut buf) {
        let mut again = BytesMut::new();
        encode(&packet, &mut again);
        match decoder.decode(&mut again) {
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
    let decoder = Decoder::new(1 << 16);
    let mut input = BytesMut::from(data);
    let mut out = BytesMut::new();
    for _ in 0..10_000 {
        if session.phase() == Phase::Closed {
            break;
        }
        match decoder.decode(&mut input) {
            Ok(Some(p)) => session.handle_packet(p),
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
    while !out.is_empty() {
        if let Err(e) = mqttbytes::v4::read(&mut out, 1 << 20) {
            panic!("session wrote an undecodable packet: {e:?}");
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

    /// Seeds: what a real client sends. Written by
    /// `SWITCHYARD_WRITE_CORPUS=1 cargo test -p switchyard-mqtt write_seed_corpus`.
    #[test]
    fn write_seed_corpus() {
        use crate::codec::Packet;
        use mqttbytes::QoS;
        use mqttbytes::v4::{Connect, LastWill, PubRel, Publish, Subscribe, Unsubscribe};
        if std::env::var_os("SWITCHYARD_WRITE_CORPUS").is_none() {
            return;
        }
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus");
        let mut c = Connect::new("device-1");
        c.keep_alive = 30;
        c.clean_session = false;
        c.last_will = Some(LastWill::new(
            "status/device-1",
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        let mut p1 = Publish::new("plant/7/temp", QoS::AtLeastOnce, b"21.5".to_vec());
        p1.pkid = 1;
        let mut p2 = Publish::new("plant/7/hum", QoS::ExactlyOnce, b"40".to_vec());
        p2.pkid = 2;
        p2.retain = true;
        let packets = [
            Packet::Connect(c),
            Packet::Subscribe(Subscribe::new("plant/+/temp", QoS::AtLeastOnce)),
            Packet::Publish(p1),
            Packet::Publish(p2),
            Packet::PubRel(PubRel::new(2)),
            Packet::PingReq,
            Packet::Unsubscribe(Unsubscribe::new("plant/+/temp")),
            Packet::Disconnect,
        ];
        let mut all = BytesMut::new();
        for (i, p) in packets.iter().enumerate() {
            let mut one = BytesMut::new();
            encode(p, &mut one);
            std::fs::write(format!("{root}/mqtt_packet/seed{i}"), &one).expect("write seed");
            all.extend_from_slice(&one);
        }
        std::fs::write(format!("{root}/mqtt_session/conversation"), &all).expect("write seed");
    }
}
