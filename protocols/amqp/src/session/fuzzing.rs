//! Drives a whole session from raw client bytes, for the `amqp_session` fuzz
//! target and the corpus replay test. Public so the fuzz crate can call it;
//! it touches nothing outside a throwaway in-memory broker.

use super::{Phase, Session, SessionConfig};
use crate::codec::{Decoder, PROTOCOL_HEADER};
use bytes::BytesMut;
use std::sync::Arc;
use switchyard_engine::Broker;
use switchyard_engine::store::MemoryStore;

/// Feed `client_bytes` (everything a client sends after the protocol
/// header) through a fresh session, draining deliveries and confirms after
/// every frame. Panics only if the session writes bytes that do not decode.
pub fn drive_for_fuzzing(client_bytes: &[u8]) {
    let Ok(broker) = Broker::open(Arc::new(MemoryStore)) else {
        return;
    };
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
    let mut session = Session::new(
        broker,
        SessionConfig::default(),
        peer,
        std::time::Instant::now(),
    );
    session.handle_protocol_header(PROTOCOL_HEADER);
    let mut input = BytesMut::from(client_bytes);
    let mut decoder = Decoder::new(0);
    let out_decoder = Decoder::new(0);
    let mut out = BytesMut::new();
    for _ in 0..10_000 {
        if matches!(session.phase(), Phase::Closed) {
            break;
        }
        decoder.set_frame_max(session.frame_max());
        match decoder.decode(&mut input) {
            Ok(Some(frame)) => session.handle_frame(frame),
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
    session.handle_shutdown();
    out.extend_from_slice(&std::mem::take(session.output()));
    // The start frame is preceded by nothing; every byte written must be a
    // whole, decodable frame.
    loop {
        match out_decoder.decode(&mut out) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => panic!("session wrote an undecodable frame: {e}"),
        }
    }
    assert!(out.is_empty(), "session wrote a partial frame");
}
