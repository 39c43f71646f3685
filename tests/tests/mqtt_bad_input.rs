//! Malformed traffic on the MQTT port over raw TCP. Each test keeps a lapin
//! client connected throughout and checks afterwards that it still works,
//! and that a new MQTT client is still served: a bad client must only ever
//! hurt its own connection.
//!
//! The broker gives a client 10 s to send CONNECT; every "closed" below must
//! happen well before that ([`PROMPT`]), so that it is the bad input, not the
//! CONNECT deadline, that ends the connection.

#[macro_use]
mod common;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::raw::blocking;
use common::*;
use switchyard_tests::{Broker, RawClient, ReadOutcome};

/// Well under the broker's 10 s CONNECT deadline.
const PROMPT: Duration = Duration::from_secs(4);

/// A valid MQTT 3.1.1 CONNECT: clean session, keep-alive 60, client `id`.
fn connect_packet(id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    body.extend_from_slice(&u16::try_from(id.len()).expect("short").to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    let mut out = vec![0x10, u8::try_from(body.len()).expect("short packet")];
    out.extend_from_slice(&body);
    out
}

/// MQTT variable-length encoding of a remaining length.
fn remaining_length(mut len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut b = u8::try_from(len % 128).expect("7 bits");
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            return out;
        }
    }
}

/// Sends `bytes` on a fresh connection (after a CONNECT if `connect_first`)
/// and reads until the broker closes or [`PROMPT`] passes.
async fn send_and_watch(addr: SocketAddr, connect_first: bool, bytes: Vec<u8>) -> ReadOutcome {
    blocking(move || {
        let mut c = RawClient::connect(addr).expect("connect");
        if connect_first {
            c.send(&connect_packet("bad-after-connect"))
                .expect("send CONNECT");
            let ack = c.read_exact(4, PROMPT).expect("CONNACK");
            assert_eq!(ack, [0x20, 0x02, 0x00, 0x00], "CONNACK");
        }
        // The broker may close (and reset) while we are still writing.
        if let Err(e) = c.send(&bytes) {
            eprintln!("send failed (broker already closed?): {e}");
        }
        c.read_to_close(PROMPT).expect("read")
    })
    .await
}

/// A lapin client connected before the bad traffic.
struct Bystander {
    conn: lapin::Connection,
}

impl Bystander {
    async fn connect(broker: &Broker) -> Self {
        let conn = connect(broker).await;
        assert_round_trip(&conn).await;
        Self { conn }
    }

    /// The AMQP connection still works, and the MQTT port still serves a
    /// well-behaved client (CONNECT → CONNACK 0, PINGREQ → PINGRESP).
    async fn assert_unharmed(self, broker: &Broker) {
        assert!(
            self.conn.status().connected(),
            "bystander connection dropped"
        );
        assert_round_trip(&self.conn).await;
        let addr = broker.mqtt_addr();
        blocking(move || {
            let mut c = RawClient::connect(addr).expect("connect");
            c.send(&connect_packet("good-client")).expect("send");
            let ack = c.read_exact(4, PROMPT).expect("CONNACK");
            assert_eq!(ack, [0x20, 0x02, 0x00, 0x00], "CONNACK to a good client");
            c.send(&[0xC0, 0x00]).expect("send PINGREQ");
            let resp = c.read_exact(2, PROMPT).expect("PINGRESP");
            assert_eq!(resp, [0xD0, 0x00], "PINGRESP");
        })
        .await;
    }
}

// The first packet must be CONNECT (3.1.0-1); anything else closes the
// connection without a reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_packet_not_connect_is_closed() {
    let broker = Broker::start();
    let bystander = Bystander::connect(&broker).await;
    let addr = broker.mqtt_addr();
    let cases: [(&str, Vec<u8>); 4] = [
        ("PINGREQ", vec![0xC0, 0x00]),
        (
            "PUBLISH QoS 0",
            vec![0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'],
        ),
        (
            "SUBSCRIBE",
            vec![0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'#', 0x00],
        ),
        ("DISCONNECT", vec![0xE0, 0x00]),
    ];
    for (what, bytes) in cases {
        let start = Instant::now();
        let got = send_and_watch(addr, false, bytes).await;
        assert!(
            got.closed,
            "{what} as first packet: not closed within {PROMPT:?}"
        );
        assert!(
            got.data.is_empty(),
            "{what} as first packet got a reply {:02x?}",
            got.data
        );
        eprintln!("{what}: closed after {:?}", start.elapsed());
    }
    bystander.assert_unharmed(&broker).await;
}

// Bytes that are not MQTT at all close the connection promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_closed() {
    let broker = Broker::start();
    let bystander = Bystander::connect(&broker).await;
    let addr = broker.mqtt_addr();
    let mut http = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n".to_vec();
    http.resize(300, b'x');
    let cases: [(&str, Vec<u8>); 5] = [
        ("reserved packet type 0", vec![0x00, 0x00]),
        ("reserved packet type 15", vec![0xF0, 0x00]),
        (
            "remaining length longer than 4 bytes",
            vec![0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 0, 0, 0, 0],
        ),
        ("HTTP request", http),
        (
            "CONNECT with a wrong protocol name",
            vec![
                0x10, 0x0C, 0, 4, b'A', b'M', b'Q', b'P', 4, 0x02, 0, 60, 0, 0,
            ],
        ),
    ];
    for (what, bytes) in cases {
        let got = send_and_watch(addr, false, bytes).await;
        assert!(got.closed, "{what}: not closed within {PROMPT:?}");
    }
    // Also after a successful CONNECT.
    let got = send_and_watch(addr, true, vec![0x00, 0x00, 0xFF, 0xFF]).await;
    assert!(got.closed, "garbage after CONNECT: not closed");
    assert!(got.data.is_empty(), "reply to garbage {:02x?}", got.data);
    bystander.assert_unharmed(&broker).await;
}

/// Sends a packet header claiming `CLAIMED` bytes, then keeps writing 64 KiB
/// chunks until the broker's close makes a write fail. Returns how much was
/// written and how long it took to be refused.
fn stream_until_refused(c: &mut RawClient, header: &[u8]) -> (usize, Duration, io::Error) {
    const CHUNK: usize = 64 * 1024;
    const GIVE_UP: usize = 64 << 20;
    let start = Instant::now();
    c.send(header).expect("send header");
    let chunk = vec![0x55u8; CHUNK];
    let mut sent = 0;
    loop {
        match c.send(&chunk) {
            Ok(()) => sent += CHUNK,
            Err(e) => return (sent, start.elapsed(), e),
        }
        assert!(
            sent < GIVE_UP,
            "broker accepted {sent} bytes of a packet over its limit"
        );
    }
}

const CLAIMED: usize = 200 << 20;

// A packet announcing 200 MiB (over the 16 MiB limit) is refused as soon as
// its fixed header is read: the connection is closed long before that much
// could be sent, both as the first packet and after CONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_remaining_length_is_closed_promptly() {
    let broker = Broker::start();
    let bystander = Bystander::connect(&broker).await;
    let addr = broker.mqtt_addr();

    for connect_first in [false, true] {
        let (sent, took, err, tail) = blocking(move || {
            let mut c = RawClient::connect(addr).expect("connect");
            let mut header = if connect_first {
                c.send(&connect_packet("huge")).expect("send CONNECT");
                let ack = c.read_exact(4, PROMPT).expect("CONNACK");
                assert_eq!(ack, [0x20, 0x02, 0x00, 0x00], "CONNACK");
                vec![0x30] // PUBLISH QoS 0
            } else {
                vec![0x10] // CONNECT
            };
            header.extend_from_slice(&remaining_length(CLAIMED));
            let (sent, took, err) = stream_until_refused(&mut c, &header);
            let tail = c.read_to_close(PROMPT).expect("read");
            (sent, took, err, tail)
        })
        .await;
        let which = if connect_first {
            "PUBLISH after CONNECT"
        } else {
            "CONNECT"
        };
        eprintln!("{which}: refused after {sent} bytes in {took:?}: {err}");
        assert!(
            !matches!(
                err.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            "{which}: broker stopped reading but did not close ({err}) after {sent} bytes"
        );
        assert!(
            took < PROMPT,
            "{which}: closing took {took:?} after {sent} bytes"
        );
        assert!(
            sent < 32 << 20,
            "{which}: broker accepted {sent} bytes of a {CLAIMED}-byte packet"
        );
        assert!(tail.closed, "{which}: socket not closed");
    }
    bystander.assert_unharmed(&broker).await;
}

// A CONNECT announcing 200 MiB but sending only the header: closed at once
// (the broker does not wait for, or allocate, the rest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_connect_header_alone_is_closed() {
    let broker = Broker::start();
    let bystander = Bystander::connect(&broker).await;
    let addr = broker.mqtt_addr();
    let mut header = vec![0x10];
    header.extend_from_slice(&remaining_length(CLAIMED));
    let start = Instant::now();
    let got = send_and_watch(addr, false, header).await;
    assert!(got.closed, "not closed within {PROMPT:?}");
    assert!(got.data.is_empty(), "reply {:02x?}", got.data);
    eprintln!("closed after {:?}", start.elapsed());
    bystander.assert_unharmed(&broker).await;
}

// A second CONNECT on a connected session is a protocol violation
// (3.1.0-2): the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connect_is_closed() {
    let broker = Broker::start();
    let bystander = Bystander::connect(&broker).await;
    let addr = broker.mqtt_addr();
    let got = send_and_watch(addr, true, connect_packet("again")).await;
    assert!(got.closed, "second CONNECT: not closed");
    assert!(got.data.is_empty(), "reply {:02x?}", got.data);
    bystander.assert_unharmed(&broker).await;
}

// A client that connects and sends nothing is dropped at the CONNECT
// deadline (10 s), not kept forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_dropped_at_connect_deadline() {
    let broker = Broker::start();
    let bystander = Bystander::connect(&broker).await;
    let addr = broker.mqtt_addr();
    let (got, took) = blocking(move || {
        let start = Instant::now();
        let mut c = RawClient::connect(addr).expect("connect");
        let got = c.read_to_close(Duration::from_secs(14)).expect("read");
        (got, start.elapsed())
    })
    .await;
    assert!(got.closed, "silent client still connected after {took:?}");
    assert!(got.data.is_empty());
    assert!(
        took >= Duration::from_secs(5),
        "silent client dropped after only {took:?}"
    );
    bystander.assert_unharmed(&broker).await;
}

// After CONNECT: a PUBLISH whose topic holds a wildcard (3.3.2-2), a PUBLISH
// with both QoS bits set (3.3.1-4), and packets whose reserved fixed-header
// flags are wrong (2.2.2-2: SUBSCRIBE must be 0x82, PUBREL 0x62,
// UNSUBSCRIBE 0xA2) each close the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_packets_after_connect_are_closed() {
    let broker = Broker::start();
    let bystander = Bystander::connect(&broker).await;
    let addr = broker.mqtt_addr();
    let cases: [(&str, Vec<u8>); 6] = [
        (
            "PUBLISH to a/+",
            vec![0x30, 0x07, 0x00, 0x03, b'a', b'/', b'+', b'h', b'i'],
        ),
        (
            "PUBLISH to a/#",
            vec![0x30, 0x07, 0x00, 0x03, b'a', b'/', b'#', b'h', b'i'],
        ),
        (
            "PUBLISH with QoS 3",
            vec![
                0x36, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01, b'h', b'i',
            ],
        ),
        (
            "SUBSCRIBE with flags 0",
            vec![0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'#', 0x00],
        ),
        ("PUBREL with flags 0", vec![0x60, 0x02, 0x00, 0x01]),
        (
            "UNSUBSCRIBE with flags 0",
            vec![0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'#'],
        ),
    ];
    let mut failures = Vec::new();
    for (what, bytes) in cases {
        let got = send_and_watch(addr, true, bytes).await;
        if !got.closed {
            failures.push(format!("{what}: not closed (got {:02x?})", got.data));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    bystander.assert_unharmed(&broker).await;
}

/// `mqtt.max_connections_per_ip` (and `stomp.max_connections_per_ip`): one
/// address cannot take more connections; the admitted ones keep working,
/// and a freed slot is usable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_connection_limit() {
    let broker = Broker::start_with_config(
        "[mqtt]\nmax_connections_per_ip = 2\n[stomp]\nmax_connections_per_ip = 1\n",
    );
    let addr = broker.mqtt_addr();
    let stomp = broker.stomp_addr();
    blocking(move || {
        let connack = [0x20, 0x02, 0x00, 0x00];
        let mut admitted = Vec::new();
        for i in 0..2 {
            let mut c = RawClient::connect(addr).expect("connect");
            c.send(&connect_packet(&format!("per-ip-{i}")))
                .expect("CONNECT");
            assert_eq!(c.read_exact(4, STEP).expect("CONNACK"), connack);
            admitted.push(c);
        }
        let mut third = RawClient::connect(addr).expect("TCP accept");
        let _ = third.send(&connect_packet("per-ip-2"));
        let got = third.read_to_close(STEP).expect("read");
        assert!(
            got.closed && got.data.is_empty(),
            "third connection served: {got:?}"
        );
        // The admitted ones still work: PINGREQ → PINGRESP.
        admitted[0].send(&[0xC0, 0x00]).expect("PINGREQ");
        assert_eq!(
            admitted[0].read_exact(2, STEP).expect("PINGRESP"),
            [0xD0, 0x00]
        );
        drop(admitted.pop());
        std::thread::sleep(Duration::from_millis(200));
        let mut again = RawClient::connect(addr).expect("connect");
        again.send(&connect_packet("per-ip-3")).expect("CONNECT");
        assert_eq!(again.read_exact(4, STEP).expect("CONNACK"), connack);

        // STOMP: one connection from 127.0.0.1, the second is closed.
        let mut s1 = RawClient::connect(stomp).expect("connect");
        s1.send(b"CONNECT\naccept-version:1.2\n\n\0")
            .expect("CONNECT");
        let first = s1.read_exact(9, STEP).expect("CONNECTED");
        assert_eq!(&first[..], b"CONNECTED");
        let mut s2 = RawClient::connect(stomp).expect("TCP accept");
        let _ = s2.send(b"CONNECT\naccept-version:1.2\n\n\0");
        let got = s2.read_to_close(STEP).expect("read");
        assert!(
            got.closed && got.data.is_empty(),
            "second STOMP connection served: {got:?}"
        );
    })
    .await;
}

/// A client that half-closes right after a QoS 1 PUBLISH (as a one-shot
/// script does) still gets its PUBACK once the message is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puback_reaches_a_client_that_half_closed() {
    let broker = Broker::start();
    let addr = broker.mqtt_addr();
    blocking(move || {
        use std::io::{Read, Write};
        // A persistent subscriber makes the publish go to a durable queue,
        // so its PUBACK waits for the disk.
        let mut sub = RawClient::connect(addr).expect("connect");
        let mut connect = vec![0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x00, 0, 60, 0, 3];
        connect.extend_from_slice(b"sub");
        sub.send(&connect).expect("CONNECT");
        assert_eq!(sub.read_exact(4, STEP).expect("CONNACK")[3], 0);
        sub.send(&[0x82, 8, 0, 1, 0, 3, b'h', b'/', b'#', 1])
            .expect("SUBSCRIBE");
        assert_eq!(sub.read_exact(5, STEP).expect("SUBACK"), [0x90, 3, 0, 1, 1]);
        sub.send(&[0xE0, 0]).expect("DISCONNECT");

        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(STEP)).expect("timeout");
        let mut bytes = connect_packet("half-closer");
        // PUBLISH QoS 1, topic "h/1", packet id 7, payload "x".
        bytes.extend_from_slice(&[0x32, 0x08, 0x00, 0x03, b'h', b'/', b'1', 0x00, 0x07, b'x']);
        s.write_all(&bytes).expect("write");
        s.shutdown(std::net::Shutdown::Write).expect("half-close");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert_eq!(&got[..4], [0x20, 0x02, 0x00, 0x00], "CONNACK: {got:02x?}");
        assert_eq!(&got[4..], [0x40, 0x02, 0x00, 0x07], "PUBACK: {got:02x?}");
    })
    .await;
}
