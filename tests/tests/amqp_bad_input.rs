//! Malformed traffic over raw TCP. Each test keeps a well-behaved lapin
//! client connected throughout and checks that it still publishes and
//! consumes afterwards, and that new connections are still accepted: a bad
//! client must only ever hurt its own connection.
//!
//! Raw frames are built and parsed with `amq_protocol`; the blocking socket
//! work runs on tokio's blocking pool, bounded in time.

#[macro_use]
mod common;

use amq_protocol::frame::{AMQPFrame, ProtocolVersion};
use amq_protocol::protocol::{AMQPClass, connection, queue};
use amq_protocol::types::FieldTable;
use common::raw::{READ, Raw, blocking};
use common::*;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use switchyard_tests::{Broker, RawClient};

const FRAME_ERROR: u16 = 501;
const COMMAND_INVALID: u16 = 503;
const CHANNEL_ERROR: u16 = 504;
const NOT_IMPLEMENTED: u16 = 540;

const AMQP_0_9_1: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// A lapin client with a consumer, connected before the bad client.
struct Bystander {
    conn: lapin::Connection,
    ch: lapin::Channel,
    sub: Sub,
}

impl Bystander {
    async fn connect(broker: &Broker) -> Self {
        let conn = connect(broker).await;
        let ch = confirm_channel(&conn).await;
        declare(&ch, "bystander", QueueDeclareOptions::default()).await;
        let mut sub = Sub::start(&ch, "bystander", BasicConsumeOptions::default())
            .await
            .expect("consume");
        publish(&ch, "", "bystander", b"before").await;
        assert_eq!(sub.next_acked().await, "before");
        Self { conn, ch, sub }
    }

    /// The existing connection still works, and so does a new one.
    async fn assert_unharmed(mut self, broker: &Broker) {
        assert!(
            self.conn.status().connected(),
            "bystander connection dropped"
        );
        publish(&self.ch, "", "bystander", b"after").await;
        assert_eq!(self.sub.next_acked().await, "after");
        assert_round_trip(&self.conn).await;
        let fresh = connect(broker).await;
        assert_round_trip(&fresh).await;
    }
}

// A protocol header for another AMQP version is answered with the header
// the broker supports (AMQP 0-9-1), then the socket is closed (spec §4.2.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_version_gets_0_9_1_header() {
    let broker = Broker::start();
    let bystander = Bystander::connect(&broker).await;
    let addr = broker.amqp_addr();
    let got = blocking(move || {
        let mut c = RawClient::connect(addr).expect("connect");
        c.send(b"AMQP\x00\x00\x09\x00").expect("send");
        c.read_to_close(READ).expect("read")
    })
    .await;
    assert!(got.closed, "socket not closed within {READ:?}");
    assert_eq!(got.data, AMQP_0_9_1, "reply {:02x?}", got.data);
    bystander.assert_unharmed(&broker).await;
}

// Something that is not AMQP at all (an HTTP request line) gets the same
// answer: the supported protocol header and a close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_amqp_header_gets_0_9_1_header() {
    let broker = Broker::start();
    let bystander = Bystander::connect(&broker).await;
    let addr = broker.amqp_addr();
    let got = blocking(move || {
        let mut c = RawClient::connect(addr).expect("connect");
        c.send(b"HTTP/1.1").expect("send");
        c.read_to_close(READ).expect("read")
    })
    .await;
    assert!(got.closed, "socket not closed within {READ:?}");
    assert_eq!(got.data, AMQP_0_9_1, "reply {:02x?}", got.data);
    bystander.assert_unharmed(&broker).await;
}

// Garbage where connection.start-ok should be: the connection is dropped
// (possibly after a connection.close with a 5xx frame/syntax error code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_valid_header_closes_connection() {
    let broker = Broker::start();
    let bystander = Bystander::connect(&broker).await;
    let addr = broker.amqp_addr();
    let code = blocking(move || {
        let mut raw = Raw::connect(addr);
        raw.send_frame(&AMQPFrame::ProtocolHeader(ProtocolVersion::amqp_0_9_1()));
        match raw.expect_method("connection.start") {
            AMQPClass::Connection(connection::AMQPMethod::Start(_)) => {}
            other => panic!("expected connection.start, got {other:?}"),
        }
        let garbage: Vec<u8> = (0..64u8).map(|i| 0xde ^ i.wrapping_mul(37)).collect();
        raw.sock.send(&garbage).expect("send garbage");
        raw.expect_close()
    })
    .await;
    eprintln!("garbage after header: connection.close code {code:?} (None = socket closed)");
    if let Some(code) = code {
        assert!(
            [FRAME_ERROR, 502, COMMAND_INVALID, 505].contains(&code),
            "connection.close code {code}"
        );
    }
    bystander.assert_unharmed(&broker).await;
}

// A frame header announcing a payload larger than the negotiated frame-max
// is a fatal 501 FRAME_ERROR (or the socket is simply closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_is_frame_error() {
    let broker = Broker::start();
    let bystander = Bystander::connect(&broker).await;
    let addr = broker.amqp_addr();
    let (huge, just_over) = blocking(move || {
        let mut raw = Raw::handshake(addr);
        raw.open_channel(1);
        raw.sock
            .send(&[1, 0, 1, 0x7f, 0xff, 0xff, 0xff])
            .expect("send header");
        let huge = raw.expect_close();

        // A frame exactly one payload-size over the limit (frame-max
        // counts the 8 octets of header and end marker), sent in full.
        let mut raw = Raw::handshake(addr);
        raw.open_channel(1);
        let just_over = (raw.frame_max != 0).then(|| {
            let size = raw.frame_max - 7;
            let mut frame = vec![1, 0, 1];
            frame.extend(size.to_be_bytes());
            frame.extend(std::iter::repeat_n(0u8, size as usize));
            frame.push(0xce);
            // The broker may close before reading it all.
            let _ = raw.sock.send(&frame);
            raw.expect_close()
        });
        (huge, just_over)
    })
    .await;
    eprintln!("oversized frames: close codes {huge:?} / {just_over:?} (None = socket closed)");
    assert!(
        matches!(huge, None | Some(FRAME_ERROR)),
        "0x7fffffff-byte frame: close code {huge:?}"
    );
    if let Some(code) = just_over {
        assert!(
            matches!(code, None | Some(FRAME_ERROR)),
            "frame of frame-max + 1 octets: close code {code:?}"
        );
    }
    bystander.assert_unharmed(&broker).await;
}

// A method on a channel that was never opened is a connection error:
// 504 CHANNEL_ERROR ("expected 'channel.open'" in RabbitMQ).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_on_unopened_channel_is_504() {
    let broker = Broker::start();
    let bystander = Bystander::connect(&broker).await;
    let addr = broker.amqp_addr();
    let code = blocking(move || {
        let mut raw = Raw::handshake(addr);
        raw.send_method(
            3,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "sneaky".into(),
                passive: false,
                durable: false,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        );
        raw.expect_close()
    })
    .await;
    assert_eq!(code, Some(CHANNEL_ERROR));
    // The queue was not declared.
    let ch = channel(&bystander.conn).await;
    let res = t!(ch.queue_declare(
        "sneaky".into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default()
    ));
    assert_code(res, 404);
    bystander.assert_unharmed(&broker).await;
}

// An unknown class or method id is answered with connection.close
// 540 NOT_IMPLEMENTED (503 COMMAND_INVALID is accepted as well; both are
// hard errors in the 0-9-1 spec).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_class_or_method_is_rejected() {
    let broker = Broker::start();
    let bystander = Bystander::connect(&broker).await;
    let addr = broker.amqp_addr();
    let codes = blocking(move || {
        let mut codes = Vec::new();
        // (class, method): an unknown class, then an unknown basic method.
        for (class, method) in [(9999u16, 1u16), (60, 999)] {
            let mut raw = Raw::handshake(addr);
            raw.open_channel(1);
            let mut frame = vec![1, 0, 1, 0, 0, 0, 4];
            frame.extend(class.to_be_bytes());
            frame.extend(method.to_be_bytes());
            frame.push(0xce);
            raw.sock.send(&frame).expect("send");
            codes.push(((class, method), raw.expect_close()));
        }
        codes
    })
    .await;
    eprintln!("unknown class/method: {codes:?}");
    for ((class, method), code) in codes {
        assert!(
            matches!(code, Some(NOT_IMPLEMENTED | COMMAND_INVALID)),
            "class {class} method {method}: close code {code:?}"
        );
    }
    bystander.assert_unharmed(&broker).await;
}
