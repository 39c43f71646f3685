//! Entry points for the `stomp_frame` and `stomp_session` fuzz targets and
//! the corpus replay tests. Public so the fuzz crate can call them; they
//! touch nothing outside a throwaway in-memory broker.

use crate::codec::{Decoder, Limits, Version, encode};
use crate::session::{Phase, Session, SessionConfig, Shared};
use bytes::BytesMut;
use std::sync::Arc;
use switchyard_engine::Broker;
use switchyard_engine::store::MemoryStore;

fn limits() -> Limits {
    Limits {
        max_headers: 32,
        max_header_length: 1024,
        max_body: 1 << 16,
    }
}

/// Decode arbitrary bytes under each version (the first byte picks it);
/// every frame decoded must re-encode to bytes that decode to the same
/// frame.
pub fn decode_for_fuzzing(data: &[u8]) {
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let version = [Version::V1_0, Version::V1_1, Version::V1_2][usize::from(pick % 3)];
    let mut decoder = Decoder::new(limits());
    decoder.set_version(version);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        let mut again = BytesMut::new();
        encode(&frame, version, &mut again);
        let mut roomy = Decoder::new(Limits {
            max_header_length: usize::MAX,
            ..limits()
        });
        roomy.set_version(version);
        match roomy.decode(&mut again) {
            Ok(Some(f)) => assert_eq!(f, frame, "decode → encode → decode changed the frame"),
            other => panic!("re-encoded {frame:?} does not decode: {other:?}"),
        }
        assert!(again.is_empty(), "re-encoded frame left bytes behind");
    }
}

/// Feed arbitrary client bytes through a fresh session, draining
/// deliveries and durability tickets after every frame. Panics only if the
/// session writes bytes that are not whole STOMP frames.
pub fn drive_for_fuzzing(data: &[u8]) {
    let Ok(broker) = Broker::open(Arc::new(MemoryStore)) else {
        return;
    };
    let shared = Shared::new(broker);
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
    let mut session = Session::new(
        shared,
        SessionConfig::default(),
        peer,
        std::time::Instant::now(),
    );
    let mut decoder = Decoder::new(limits());
    let mut input = BytesMut::from(data);
    let mut out = BytesMut::new();
    for _ in 0..10_000 {
        if !matches!(session.phase(), Phase::Connect | Phase::Connected) {
            break;
        }
        match decoder.decode(&mut input) {
            Ok(Some(f)) => {
                session.handle_frame(f);
                decoder.set_version(session.version());
            }
            Ok(None) => break,
            Err(e) => {
                session.handle_decode_error(&e);
                break;
            }
        }
        session.handle_outbox();
        while session.take_ticket().is_some() {
            session.handle_durable(true);
        }
        out.extend_from_slice(&std::mem::take(session.output()));
    }
    session.handle_heartbeat_timeout();
    out.extend_from_slice(&std::mem::take(session.output()));
    let mut reader = Decoder::new(Limits {
        max_headers: usize::MAX,
        max_header_length: usize::MAX,
        max_body: usize::MAX,
    });
    reader.set_version(session.version());
    while !out.is_empty() {
        match reader.decode(&mut out) {
            Ok(Some(_)) => {}
            other => panic!("session wrote bytes that are not a frame: {other:?}"),
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
        for data in corpus("stomp_frame") {
            decode_for_fuzzing(&data);
        }
        for data in corpus("stomp_session") {
            drive_for_fuzzing(&data);
        }
    }
}
