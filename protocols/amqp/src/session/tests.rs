//! Deterministic session tests: frames in, frames out, no sockets.

use super::*;
use crate::codec::{Decoder, Encoder, Frame, PROTOCOL_HEADER};
use amq_protocol::protocol::BasicProperties;
use amq_protocol::protocol::{AMQPClass, basic, channel, confirm, connection, queue};
use switchyard_engine::store::MemoryStore;

struct Peer {
    s: Session,
    enc: Encoder,
}

impl Peer {
    fn new() -> Self {
        Self::with_config(SessionConfig::default())
    }

    fn with_config(config: SessionConfig) -> Self {
        let broker = Broker::open(Arc::new(MemoryStore)).unwrap();
        let s = Session::new(
            broker,
            config,
            "127.0.0.1:1".parse().unwrap(),
            std::time::Instant::now(),
        );
        Self {
            s,
            enc: Encoder::default(),
        }
    }

    fn frames(&mut self) -> Vec<Frame> {
        let dec = Decoder::new(0);
        let mut out = std::mem::take(self.s.output());
        let mut v = Vec::new();
        while let Some(f) = dec.decode(&mut out).unwrap() {
            v.push(f);
        }
        v
    }

    fn method(&mut self, ch: u16, m: AMQPClass) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        self.enc.method(ch, m, &mut buf);
        let f = Decoder::new(0).decode(&mut buf).unwrap().unwrap();
        self.s.handle_frame(f);
        self.s.handle_outbox();
        self.frames()
    }

    fn open(&mut self) {
        self.open_with(Default::default());
    }

    fn open_with(&mut self, client_properties: amq_protocol::types::FieldTable) {
        self.s.handle_protocol_header(PROTOCOL_HEADER);
        assert!(matches!(
            self.frames()[0],
            Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(_)))
        ));
        let ok = connection::StartOk {
            client_properties,
            mechanism: "PLAIN".into(),
            response: "\0guest\0guest".into(),
            locale: "en_US".into(),
        };
        let out = self.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(ok)),
        );
        assert!(matches!(
            out[0],
            Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(_)))
        ));
        let tune = connection::TuneOk {
            channel_max: 10,
            frame_max: 4096,
            heartbeat: 0,
        };
        assert!(
            self.method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::TuneOk(tune))
            )
            .is_empty()
        );
        let open = connection::Open {
            virtual_host: "/".into(),
        };
        let out = self.method(0, AMQPClass::Connection(connection::AMQPMethod::Open(open)));
        assert!(matches!(
            out[0],
            Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)))
        ));
        let out = self.method(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        );
        assert!(matches!(
            out[0],
            Frame::Method(1, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)))
        ));
        assert_eq!(self.s.phase(), Phase::Running);
    }

    fn publish(&mut self, ch: u16, key: &str, body: &[u8]) -> Vec<Frame> {
        let p = basic::Publish {
            exchange: "".into(),
            routing_key: key.into(),
            mandatory: true,
            immediate: false,
        };
        assert!(
            self.method(ch, AMQPClass::Basic(basic::AMQPMethod::Publish(p)))
                .is_empty()
        );
        let mut buf = BytesMut::new();
        self.enc.content(
            ch,
            BasicProperties::default().with_delivery_mode(2),
            body,
            4096,
            &mut buf,
        );
        let dec = Decoder::new(0);
        while let Some(f) = dec.decode(&mut buf).unwrap() {
            self.s.handle_frame(f);
        }
        self.s.handle_outbox();
        self.frames()
    }
}

fn close_code(f: &Frame) -> Option<u16> {
    match f {
        Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Close(c))) => Some(c.reply_code),
        Frame::Method(_, AMQPClass::Connection(connection::AMQPMethod::Close(c))) => {
            Some(c.reply_code)
        }
        _ => None,
    }
}

#[test]
fn wrong_header_gets_ours_back() {
    let mut p = Peer::new();
    p.s.handle_protocol_header(b"AMQP\x00\x00\x09\x00");
    assert_eq!(&p.s.output()[..], PROTOCOL_HEADER);
    assert_eq!(p.s.phase(), Phase::Closed);
}

#[test]
fn bad_login_is_refused_with_403() {
    let mut p = Peer::new();
    p.s.handle_protocol_header(PROTOCOL_HEADER);
    p.frames();
    let ok = connection::StartOk {
        client_properties: Default::default(),
        mechanism: "PLAIN".into(),
        response: "\0guest\0wrong".into(),
        locale: "en_US".into(),
    };
    let out = p.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(ok)),
    );
    assert_eq!(close_code(&out[0]), Some(403));
    assert_eq!(p.s.phase(), Phase::Closed);
}

#[test]
fn publish_consume_ack_and_double_ack() {
    let mut p = Peer::new();
    p.open();
    let d = queue::Declare {
        queue: "q".into(),
        ..Default::default()
    };
    let out = p.method(1, AMQPClass::Queue(queue::AMQPMethod::Declare(d)));
    assert!(matches!(
        out[0],
        Frame::Method(1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_)))
    ));
    assert!(p.publish(1, "q", b"hello").is_empty());
    // Unroutable mandatory publish comes back as basic.return 312.
    let out = p.publish(1, "nowhere", b"x");
    assert!(
        matches!(&out[0], Frame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Return(r))) if r.reply_code == 312)
    );
    let c = basic::Consume {
        queue: "q".into(),
        consumer_tag: "t".into(),
        ..Default::default()
    };
    let out = p.method(1, AMQPClass::Basic(basic::AMQPMethod::Consume(c)));
    assert!(matches!(
        out[0],
        Frame::Method(1, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_)))
    ));
    let Frame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Deliver(d))) = &out[1] else {
        panic!("{out:?}")
    };
    assert_eq!(out[3], Frame::Body(1, bytes::Bytes::from_static(b"hello")));
    let ack = basic::Ack {
        delivery_tag: d.delivery_tag,
        multiple: false,
    };
    assert!(
        p.method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(ack.clone())))
            .is_empty()
    );
    let out = p.method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(ack)));
    assert_eq!(close_code(&out[0]), Some(406));
}

#[test]
fn confirms_and_unopened_channel() {
    let mut p = Peer::new();
    p.open();
    let out = p.method(
        1,
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        })),
    );
    assert!(matches!(
        out[0],
        Frame::Method(1, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)))
    ));
    let out = p.publish(1, "nowhere", b"x");
    assert!(
        matches!(out.last(), Some(Frame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(a)))) if a.delivery_tag == 1)
    );
    let d = queue::Declare {
        queue: "q".into(),
        ..Default::default()
    };
    let out = p.method(7, AMQPClass::Queue(queue::AMQPMethod::Declare(d)));
    assert_eq!(close_code(&out[0]), Some(504));
    assert_eq!(p.s.phase(), Phase::Closing);
}

#[test]
fn blocked_only_for_clients_that_asked() {
    use amq_protocol::types::{AMQPValue, FieldTable};
    let mut plain = Peer::new();
    plain.open();
    plain.s.handle_pressure(true);
    assert!(plain.frames().is_empty());

    let mut caps = FieldTable::default();
    caps.insert("connection.blocked".into(), AMQPValue::Boolean(true));
    let mut props = FieldTable::default();
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    let mut p = Peer::new();
    p.open_with(props);
    p.s.handle_pressure(true);
    p.s.handle_pressure(true);
    let out = p.frames();
    assert_eq!(out.len(), 1, "blocked is sent once: {out:?}");
    assert!(matches!(
        out[0],
        Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Blocked(_)))
    ));
    p.s.handle_pressure(false);
    assert!(matches!(
        p.frames()[0],
        Frame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Unblocked(_))
        )
    ));
}

/// Delivery tags of the `basic.deliver` frames in `frames`.
fn delivered(frames: &[Frame]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Deliver(d))) => {
                Some(d.delivery_tag)
            }
            _ => None,
        })
        .collect()
}

/// A session whose channels hold at most `cap` unacked deliveries, with
/// queue "q" holding `n` messages.
fn capped_with_backlog(cap: u32, n: usize) -> Peer {
    let mut p = Peer::with_config(SessionConfig {
        max_unacked_per_channel: cap,
        ..SessionConfig::default()
    });
    p.open();
    let d = queue::Declare {
        queue: "q".into(),
        ..Default::default()
    };
    p.method(1, AMQPClass::Queue(queue::AMQPMethod::Declare(d)));
    for i in 0..n {
        assert!(p.publish(1, "q", format!("m{i}").as_bytes()).is_empty());
    }
    p
}

fn consume(p: &mut Peer, tag: &str, no_ack: bool) -> Vec<u64> {
    let c = basic::Consume {
        queue: "q".into(),
        consumer_tag: tag.into(),
        no_ack,
        ..Default::default()
    };
    delivered(&p.method(1, AMQPClass::Basic(basic::AMQPMethod::Consume(c))))
}

fn ack(p: &mut Peer, delivery_tag: u64, multiple: bool) -> Vec<u64> {
    let a = basic::Ack {
        delivery_tag,
        multiple,
    };
    delivered(&p.method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(a))))
}

fn qos(p: &mut Peer, prefetch_count: u16, global: bool) -> Vec<u64> {
    let q = basic::Qos {
        prefetch_count,
        global,
    };
    delivered(&p.method(1, AMQPClass::Basic(basic::AMQPMethod::Qos(q))))
}

#[test]
fn unacked_cap_applies_without_prefetch_until_acks_arrive() {
    let mut p = capped_with_backlog(3, 6);
    assert_eq!(consume(&mut p, "c", false), [1, 2, 3]);
    // Nothing more while three are unacked; a publish does not get past it.
    assert!(p.publish(1, "q", b"m6").is_empty());
    assert_eq!(ack(&mut p, 2, false), [4]);
    assert_eq!(ack(&mut p, 4, true), [5, 6, 7]);
    assert_eq!(ack(&mut p, 0, true), [] as [u64; 0]);
}

#[test]
fn unacked_cap_bounds_larger_prefetches_and_keeps_smaller_ones() {
    let mut p = capped_with_backlog(3, 10);
    // A global prefetch above the cap is lowered to it, a per-consumer one
    // too (the channel's window holds every consumer).
    assert!(qos(&mut p, 10, true).is_empty());
    assert!(qos(&mut p, 10, false).is_empty());
    assert_eq!(consume(&mut p, "c", false), [1, 2, 3]);
    assert_eq!(ack(&mut p, 3, true), [4, 5, 6]);
    // A smaller global prefetch wins; 0 goes back to the cap, not unlimited.
    assert!(qos(&mut p, 1, true).is_empty());
    assert_eq!(ack(&mut p, 6, true), [7]);
    assert_eq!(qos(&mut p, 0, true), [8, 9]);
    assert_eq!(ack(&mut p, 0, true), [10]);
}

#[test]
fn unacked_cap_spares_no_ack_consumers_and_basic_get() {
    let mut p = capped_with_backlog(2, 4);
    assert_eq!(consume(&mut p, "c", false), [1, 2]);
    let g = basic::Get {
        queue: "q".into(),
        no_ack: false,
    };
    let out = p.method(1, AMQPClass::Basic(basic::AMQPMethod::Get(g)));
    assert!(
        matches!(
            &out[0],
            Frame::Method(1, AMQPClass::Basic(basic::AMQPMethod::GetOk(ok))) if ok.delivery_tag == 3
        ),
        "{out:?}"
    );
    // The capped consumer still waits; a no-ack consumer takes the rest.
    assert_eq!(consume(&mut p, "auto", true), [4]);
}

/// Replays the committed `amqp_session` fuzz corpus through the session on
/// stable Rust, with the fuzz target's oracle.
#[test]
fn replay_session_fuzz_corpus() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/corpus/amqp_session"
    );
    let mut n = 0;
    for e in std::fs::read_dir(dir)
        .expect("session corpus directory")
        .flatten()
    {
        let data = std::fs::read(e.path()).unwrap();
        drive_for_fuzzing(&data);
        n += 1;
    }
    assert!(n > 0, "session corpus is empty");
}
