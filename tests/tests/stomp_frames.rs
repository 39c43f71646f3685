//! STOMP over raw TCP against a real `switchyard` process: every client
//! frame, version negotiation, heart-beats, ack modes, transactions,
//! receipts, destinations, header escaping per version, framing edge cases
//! and malformed input. The client is the hand-written one in
//! `common/stomp.rs`, so nothing second-guesses the bytes; every wait is
//! bounded by [`STEP`] or less.
//!
//! Malformed input must get an ERROR frame with a `message` header and a
//! close, and must only ever hurt its own connection: each such test keeps
//! a bystander client connected throughout and checks afterwards that it,
//! and a brand new client, still send and receive.

#[path = "common/stomp.rs"]
mod stomp;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use stomp::{Client, End, Frame, QUIET, STEP, Version, assert_broker_serves, encode};
use switchyard_tests::Broker;

/// `[stomp]` limits small enough to test both sides of each boundary.
const LIMITS: &str = "[stomp]\nmax_body_size = 1024\nmax_headers = 8\nmax_header_length = 128\n";

fn v12(broker: &Broker) -> Client {
    Client::connect(broker.stomp_addr(), Version::V12)
}

/// A 1.2 client subscribed to `dest` with `id` and extra headers,
/// confirmed by RECEIPT.
fn subscriber(broker: &Broker, dest: &str, id: &str, extra: &[(&str, &str)]) -> Client {
    let mut c = v12(broker);
    let mut h = vec![("destination", dest), ("id", id)];
    h.extend_from_slice(extra);
    c.receipt("SUBSCRIBE", &h, b"");
    c
}

/// Sends each body to `dest` from a fresh 1.2 client, confirmed by RECEIPT.
fn publish(broker: &Broker, dest: &str, bodies: &[&str]) {
    let mut p = v12(broker);
    for b in bodies {
        p.receipt("SEND", &[("destination", dest)], b.as_bytes());
    }
    p.disconnect();
}

fn bodies(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(Frame::body_str).collect()
}

// ---------------------------------------------------------------------------
// CONNECT / STOMP and version negotiation

// The highest version both sides speak is chosen, and CONNECTED says which.
#[test]
fn connect_negotiates_the_highest_common_version() {
    let broker = Broker::start();
    for (offer, want) in [
        ("1.0", "1.0"),
        ("1.1", "1.1"),
        ("1.2", "1.2"),
        ("1.0,1.1,1.2", "1.2"),
        ("1.2,1.0", "1.2"),
        ("1.1,1.0", "1.1"),
        ("1.0,1.1,9.9", "1.1"),
    ] {
        let (c, f) = Client::connect_with(
            broker.stomp_addr(),
            "CONNECT",
            &[
                ("accept-version", offer),
                ("host", "/"),
                ("login", "guest"),
                ("passcode", "guest"),
            ],
        );
        assert_eq!(f.command, "CONNECTED", "offer {offer}: {f:?}");
        assert_eq!(f.get("version"), Some(want), "offer {offer}: {f:?}");
        assert!(f.get("session").is_some(), "no session header: {f:?}");
        assert!(f.get("server").is_some(), "no server header: {f:?}");
        c.disconnect();
    }
}

// STOMP is CONNECT's 1.1+ name; the connection then works as usual.
#[test]
fn stomp_frame_connects() {
    let broker = Broker::start();
    let (mut c, f) = Client::connect_with(
        broker.stomp_addr(),
        "STOMP",
        &[("accept-version", "1.1,1.2"), ("host", "/")],
    );
    assert_eq!(f.command, "CONNECTED", "{f:?}");
    assert_eq!(f.get("version"), Some("1.2"), "{f:?}");
    c.receipt(
        "SUBSCRIBE",
        &[("destination", "/queue/s"), ("id", "0")],
        b"",
    );
    c.receipt("SEND", &[("destination", "/queue/s")], b"via STOMP");
    assert_eq!(c.message().body, b"via STOMP");
    c.disconnect();
}

// No accept-version is STOMP 1.0: no heart-beats even when asked, `id`
// optional on SUBSCRIBE (the destination names the subscription), and
// UNSUBSCRIBE by destination.
#[test]
fn connect_without_accept_version_is_1_0() {
    let broker = Broker::start();
    let (mut c, f) = Client::connect_with(
        broker.stomp_addr(),
        "CONNECT",
        &[
            ("login", "guest"),
            ("passcode", "guest"),
            ("heart-beat", "0,100"),
        ],
    );
    assert_eq!(f.command, "CONNECTED", "{f:?}");
    assert!(
        matches!(f.get("version"), None | Some("1.0")),
        "1.0 CONNECTED: {f:?}"
    );
    assert_eq!(f.get("heart-beat"), None, "1.0 has no heart-beats: {f:?}");
    assert_eq!(c.version(), Version::V10);
    c.assert_quiet(Duration::from_millis(600));
    assert_eq!(c.heartbeats(), 0, "heart-beats sent to a 1.0 client");

    c.receipt("SUBSCRIBE", &[("destination", "/queue/old")], b"");
    c.receipt("SEND", &[("destination", "/queue/old")], b"hello 1.0");
    let m = c.message();
    assert_eq!(m.body, b"hello 1.0", "{m:?}");
    assert_eq!(m.get("destination"), Some("/queue/old"), "{m:?}");
    c.receipt("UNSUBSCRIBE", &[("destination", "/queue/old")], b"");
    c.receipt("SEND", &[("destination", "/queue/old")], b"not for me");
    c.assert_quiet(QUIET);
    c.disconnect();
}

// No common version: ERROR with a `version` header listing what the
// server speaks, then close.
#[test]
fn unsupported_version_gets_error_with_version_header() {
    let broker = Broker::start();
    let (mut c, f) = Client::connect_with(
        broker.stomp_addr(),
        "CONNECT",
        &[("accept-version", "2.0,3.1"), ("host", "/")],
    );
    assert_eq!(f.command, "ERROR", "{f:?}");
    assert!(f.get("message").is_some(), "{f:?}");
    let versions: Vec<&str> = f.header("version").split(',').map(str::trim).collect();
    for v in ["1.0", "1.1", "1.2"] {
        assert!(versions.contains(&v), "version header lacks {v}: {f:?}");
    }
    let (rest, closed) = c.read_to_close(STEP);
    assert!(rest.is_empty(), "frames after ERROR: {rest:?}");
    assert!(closed, "connection not closed after version ERROR");
    assert_broker_serves(broker.stomp_addr());
}

// A wrong passcode or an unknown login is refused with ERROR and close.
#[test]
fn bad_credentials_get_error_and_close() {
    let broker = Broker::start();
    for (login, pass) in [("guest", "wrong"), ("nobody", "guest")] {
        let (mut c, f) = Client::connect_with(
            broker.stomp_addr(),
            "CONNECT",
            &[
                ("accept-version", "1.2"),
                ("host", "/"),
                ("login", login),
                ("passcode", pass),
            ],
        );
        assert_eq!(f.command, "ERROR", "{login}/{pass}: {f:?}");
        assert!(f.get("message").is_some(), "{f:?}");
        let (rest, closed) = c.read_to_close(STEP);
        assert!(rest.is_empty(), "frames after ERROR: {rest:?}");
        assert!(closed, "connection not closed after refused login");
    }
    assert_broker_serves(broker.stomp_addr());
}

// CONNECT on a connected session is a protocol error.
#[test]
fn second_connect_is_an_error() {
    let broker = Broker::start();
    let mut c = v12(&broker);
    c.send("CONNECT", &[("accept-version", "1.2"), ("host", "/")], b"");
    c.expect_error_and_close();
    assert_broker_serves(broker.stomp_addr());
}

// Anything but CONNECT / STOMP first gets ERROR and close.
#[test]
fn frames_before_connect_get_error() {
    let broker = Broker::start();
    let frames: [&[u8]; 4] = [
        b"SEND\ndestination:/queue/a\n\nearly\0",
        b"SUBSCRIBE\ndestination:/queue/a\nid:0\n\n\0",
        b"BEGIN\ntransaction:t\n\n\0",
        b"DISCONNECT\nreceipt:r\n\n\0",
    ];
    for bytes in frames {
        let mut c = Client::open(broker.stomp_addr());
        c.write(bytes).expect("write");
        let e = c.expect_error_and_close();
        eprintln!("pre-CONNECT {:?} → {e:?}", String::from_utf8_lossy(bytes));
    }
    assert_broker_serves(broker.stomp_addr());
}

// CONNECT and STOMP headers are never unescaped: `\t` is no escape in any
// version, yet a 1.2 CONNECT carrying it is accepted.
#[test]
fn connect_headers_are_not_unescaped() {
    let broker = Broker::start();
    for cmd in ["CONNECT", "STOMP"] {
        let mut c = Client::open(broker.stomp_addr());
        let raw = format!("{cmd}\naccept-version:1.2\nhost:/\nx-raw:a\\tb\\qc\n\n\0");
        c.write(raw.as_bytes()).expect("write");
        let f = c.next();
        assert_eq!(f.command, "CONNECTED", "{cmd} with a raw backslash: {f:?}");
        assert_eq!(f.get("version"), Some("1.2"));
        c.disconnect();
    }
}

// ---------------------------------------------------------------------------
// Heart-beats

// CONNECTED answers `heart-beat:cx,cy` with `sx,sy`: the server sends every
// cy and expects every cx, never below its 100 ms minimum; a malformed
// header means none.
#[test]
fn heart_beat_negotiation() {
    let broker = Broker::start();
    for (ask, want) in [
        ("0,0", "0,0"),
        ("500,1000", "1000,500"),
        ("0,10", "100,0"),
        ("10,0", "0,100"),
        ("nonsense", "0,0"),
    ] {
        for version in ["1.1", "1.2"] {
            let (c, f) = Client::connect_with(
                broker.stomp_addr(),
                "CONNECT",
                &[
                    ("accept-version", version),
                    ("host", "/"),
                    ("heart-beat", ask),
                ],
            );
            assert_eq!(f.command, "CONNECTED", "{f:?}");
            assert_eq!(
                f.get("heart-beat"),
                Some(want),
                "{version} heart-beat:{ask}: {f:?}"
            );
            drop(c);
        }
    }
}

// A client that wants heart-beats every 200 ms gets EOLs while idle, and
// nothing else.
#[test]
fn server_sends_heart_beats_when_idle() {
    let broker = Broker::start();
    let (mut c, f) = Client::connect_with(
        broker.stomp_addr(),
        "CONNECT",
        &[
            ("accept-version", "1.2"),
            ("host", "/"),
            ("heart-beat", "0,200"),
        ],
    );
    assert_eq!(f.get("heart-beat"), Some("200,0"), "{f:?}");
    c.assert_quiet(Duration::from_millis(1500));
    let n = c.heartbeats();
    assert!(n >= 3, "only {n} heart-beats in 1.5 s at 200 ms");
    // Still a working connection.
    c.receipt("BEGIN", &[("transaction", "t")], b"");
    c.disconnect();
}

// A client that promises heart-beats every 200 ms stays connected while it
// sends them (LF or CRLF), and is dropped once silent for twice that.
#[test]
fn client_heart_beats_keep_the_connection_and_silence_ends_it() {
    let broker = Broker::start();
    let (mut c, f) = Client::connect_with(
        broker.stomp_addr(),
        "CONNECT",
        &[
            ("accept-version", "1.2"),
            ("host", "/"),
            ("heart-beat", "200,0"),
        ],
    );
    assert_eq!(f.get("heart-beat"), Some("0,200"), "{f:?}");
    for i in 0..12 {
        let eol: &[u8] = if i % 2 == 0 { b"\n" } else { b"\r\n" };
        c.write(eol).expect("heart-beat write");
        thread::sleep(Duration::from_millis(100));
    }
    // 1.2 s, well past 2 × 200 ms, and the connection still works.
    c.receipt(
        "SUBSCRIBE",
        &[("destination", "/queue/hb"), ("id", "0")],
        b"",
    );
    let silent_since = Instant::now();
    let (frames, closed) = c.read_to_close(STEP);
    assert!(closed, "silent client not disconnected within {STEP:?}");
    let waited = silent_since.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "closed after {waited:?}, before twice the 200 ms interval"
    );
    assert!(
        frames.iter().all(|f| f.command == "ERROR"),
        "unexpected frames before the close: {frames:?}"
    );
    assert_broker_serves(broker.stomp_addr());
}

// Heart-beat intervals are client input: the largest numbers a header can
// hold must not break the connection (CONNECTED, then normal service).
#[test]
fn huge_heart_beat_values_are_survived() {
    let broker = Broker::start();
    let max = u64::MAX.to_string();
    let half = (u64::MAX / 2 + 1).to_string();
    let mut failures = Vec::new();
    for hb in [
        format!("{max},0"),
        format!("0,{max}"),
        format!("{max},{max}"),
        format!("{half},0"),
        format!("{},0", u64::MAX / 2),
    ] {
        let mut c = Client::open(broker.stomp_addr());
        c.send(
            "CONNECT",
            &[
                ("accept-version", "1.2"),
                ("host", "/"),
                ("heart-beat", &hb),
            ],
            b"",
        );
        let connected = c.read(STEP);
        if !matches!(&connected, Ok(f) if f.command == "CONNECTED") {
            failures.push(format!(
                "CONNECT heart-beat:{hb} → {connected:?}, expected CONNECTED"
            ));
            continue;
        }
        c.send(
            "SEND",
            &[("destination", "/queue/hb-huge"), ("receipt", "r")],
            b"x",
        );
        match c.read(STEP) {
            Ok(r) if r.command == "RECEIPT" => c.disconnect(),
            other => failures.push(format!(
                "after CONNECTED for heart-beat:{hb}, SEND with receipt → {other:?}"
            )),
        }
    }
    assert_broker_serves(broker.stomp_addr());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// EOLs between (and before) frames are heart-beats, not frames.
#[test]
fn heart_beat_eols_between_frames_are_skipped() {
    let broker = Broker::start();
    let mut c = v12(&broker);
    let mut bytes = b"\n\r\n\n".to_vec();
    bytes.extend(encode(
        "SUBSCRIBE",
        &[("destination", "/queue/eol"), ("id", "0")],
        b"",
        Version::V12,
    ));
    bytes.extend_from_slice(b"\r\n\n\r\n");
    bytes.extend(encode(
        "SEND",
        &[("destination", "/queue/eol")],
        b"between heart-beats",
        Version::V12,
    ));
    bytes.extend_from_slice(b"\n");
    c.write(&bytes).expect("write");
    assert_eq!(c.message().body, b"between heart-beats");
    c.write(b"\n\n").expect("write");
    c.receipt("SEND", &[("destination", "/queue/eol")], b"after");
    assert_eq!(c.message().body, b"after");
    c.disconnect();
}

// ---------------------------------------------------------------------------
// SEND, SUBSCRIBE, MESSAGE, UNSUBSCRIBE

// A SEND to /queue/ reaches the subscriber with the STOMP headers, the
// properties and the custom headers; auto ack means it is gone afterwards.
#[test]
fn send_and_subscribe_on_a_queue() {
    let broker = Broker::start();
    let mut sub = subscriber(&broker, "/queue/q1", "s1", &[]);
    let mut p = v12(&broker);
    p.receipt(
        "SEND",
        &[
            ("destination", "/queue/q1"),
            ("content-type", "text/plain"),
            ("x-custom", "hello header"),
        ],
        b"hello",
    );
    let m = sub.message();
    assert_eq!(m.body, b"hello", "{m:?}");
    assert_eq!(m.get("subscription"), Some("s1"), "{m:?}");
    assert_eq!(m.get("destination"), Some("/queue/q1"), "{m:?}");
    assert!(!m.header("message-id").is_empty(), "{m:?}");
    assert_eq!(m.get("content-type"), Some("text/plain"), "{m:?}");
    assert_eq!(m.get("x-custom"), Some("hello header"), "{m:?}");
    assert_eq!(m.get("content-length"), Some("5"), "{m:?}");
    assert_eq!(m.get("ack"), None, "auto ack needs no ack header: {m:?}");
    assert_eq!(m.get("receipt"), None, "protocol header leaked: {m:?}");
    p.receipt("SEND", &[("destination", "/queue/q1")], b"second");
    let m2 = sub.message();
    assert_eq!(m2.body, b"second");
    assert_ne!(m.get("message-id"), m2.get("message-id"), "ids must differ");
    sub.disconnect();
    // Auto-acked: nothing left for the next subscriber.
    let mut again = subscriber(&broker, "/queue/q1", "s2", &[]);
    again.assert_quiet(QUIET);
    again.disconnect();
    p.disconnect();
}

// A body containing NUL bytes (and bytes that are not UTF-8) survives with
// content-length.
#[test]
fn body_with_nul_bytes_via_content_length() {
    let broker = Broker::start();
    let mut c = subscriber(&broker, "/queue/bin", "0", &[]);
    let body = b"a\0b\0\0\xff\xfe end";
    c.send_len("SEND", &[("destination", "/queue/bin")], body);
    let m = c.message();
    assert_eq!(m.body, body, "{m:?}");
    assert_eq!(
        m.get("content-length"),
        Some(body.len().to_string().as_str())
    );
    // An empty body with content-length:0.
    c.send_len("SEND", &[("destination", "/queue/bin")], b"");
    let m = c.message();
    assert!(m.body.is_empty(), "{m:?}");
    c.disconnect();
}

// Without content-length the body ends at the first NUL.
#[test]
fn body_without_content_length_ends_at_nul() {
    let broker = Broker::start();
    let mut c = subscriber(&broker, "/queue/nul", "0", &[]);
    c.write(b"SEND\ndestination:/queue/nul\n\nhello world\0SEND\ndestination:/queue/nul\n\n\0")
        .expect("write");
    let m = c.message();
    assert_eq!(m.body, b"hello world", "{m:?}");
    assert_eq!(m.get("content-length"), Some("11"), "{m:?}");
    let m = c.message();
    assert!(m.body.is_empty(), "{m:?}");
    c.disconnect();
}

// `\r\n` line endings are accepted everywhere, and never end up in values.
#[test]
fn crlf_line_endings_are_accepted() {
    let broker = Broker::start();
    let mut c = Client::open(broker.stomp_addr());
    c.write(b"CONNECT\r\naccept-version:1.2\r\nhost:/\r\n\r\n\0")
        .expect("write");
    let f = c.expect("CONNECTED");
    assert_eq!(f.get("version"), Some("1.2"));
    c.write(b"SUBSCRIBE\r\nid:0\r\ndestination:/queue/crlf\r\nreceipt:r1\r\n\r\n\0")
        .expect("write");
    let r = c.expect("RECEIPT");
    assert_eq!(r.get("receipt-id"), Some("r1"), "{r:?}");
    c.write(b"SEND\r\ndestination:/queue/crlf\r\nx-k:v\r\ncontent-length:4\r\n\r\nbody\0")
        .expect("write");
    let m = c.message();
    assert_eq!(m.body, b"body", "{m:?}");
    assert_eq!(m.get("x-k"), Some("v"), "{m:?}");
    c.disconnect();
}

// CONNECT, SUBSCRIBE and SEND written one byte at a time.
#[test]
fn frames_split_into_single_byte_writes() {
    let broker = Broker::start();
    let mut bytes = encode(
        "CONNECT",
        &[("accept-version", "1.2"), ("host", "/")],
        b"",
        Version::V12,
    );
    bytes.extend(encode(
        "SUBSCRIBE",
        &[
            ("destination", "/queue/split"),
            ("id", "0"),
            ("receipt", "sub"),
        ],
        b"",
        Version::V12,
    ));
    bytes.extend(encode(
        "SEND",
        &[
            ("destination", "/queue/split"),
            ("x-esc", "a:b"),
            ("content-length", "9"),
        ],
        b"byte\0wise",
        Version::V12,
    ));
    let mut c = Client::open(broker.stomp_addr());
    for b in &bytes {
        c.write(std::slice::from_ref(b)).expect("write one byte");
        thread::sleep(Duration::from_millis(1));
    }
    c.expect("CONNECTED");
    let mut got: Vec<Frame> = (0..2).map(|_| c.next()).collect();
    got.sort_by(|a, b| a.command.cmp(&b.command));
    assert_eq!(got[0].command, "MESSAGE", "{got:?}");
    assert_eq!(got[0].body, b"byte\0wise", "{got:?}");
    assert_eq!(got[0].get("x-esc"), Some("a:b"), "{got:?}");
    assert_eq!(got[1].command, "RECEIPT", "{got:?}");
    assert_eq!(got[1].get("receipt-id"), Some("sub"), "{got:?}");
    c.disconnect();
}

// CONNECT, SUBSCRIBE and four SENDs in a single write.
#[test]
fn several_frames_in_one_write() {
    let broker = Broker::start();
    let mut bytes = encode(
        "CONNECT",
        &[("accept-version", "1.2"), ("host", "/")],
        b"",
        Version::V12,
    );
    bytes.extend(encode(
        "SUBSCRIBE",
        &[("destination", "/queue/batch"), ("id", "0")],
        b"",
        Version::V12,
    ));
    for i in 1..=3 {
        let body = format!("m{i}");
        bytes.extend(encode(
            "SEND",
            &[("destination", "/queue/batch")],
            body.as_bytes(),
            Version::V12,
        ));
    }
    bytes.extend(encode(
        "SEND",
        &[("destination", "/queue/batch"), ("receipt", "last")],
        b"m4",
        Version::V12,
    ));
    let mut c = Client::open(broker.stomp_addr());
    c.write(&bytes).expect("write");
    c.expect("CONNECTED");
    let frames: Vec<Frame> = (0..5).map(|_| c.next()).collect();
    let messages: Vec<Frame> = frames
        .iter()
        .filter(|f| f.command == "MESSAGE")
        .cloned()
        .collect();
    assert_eq!(bodies(&messages), ["m1", "m2", "m3", "m4"], "{frames:?}");
    let receipts: Vec<&Frame> = frames.iter().filter(|f| f.command == "RECEIPT").collect();
    assert_eq!(receipts.len(), 1, "{frames:?}");
    assert_eq!(receipts[0].get("receipt-id"), Some("last"));
    c.disconnect();
}

// UNSUBSCRIBE stops deliveries to that subscription only; the queue keeps
// the message for the next consumer.
#[test]
fn unsubscribe_stops_delivery() {
    let broker = Broker::start();
    let mut c = subscriber(&broker, "/queue/u1", "a", &[]);
    c.receipt(
        "SUBSCRIBE",
        &[("destination", "/queue/u2"), ("id", "b")],
        b"",
    );
    c.receipt("UNSUBSCRIBE", &[("id", "a")], b"");
    c.receipt("SEND", &[("destination", "/queue/u1")], b"kept");
    c.receipt("SEND", &[("destination", "/queue/u2")], b"still b");
    let m = c.message();
    assert_eq!(
        (m.get("subscription"), m.body.as_slice()),
        (Some("b"), &b"still b"[..]),
        "{m:?}"
    );
    c.assert_quiet(QUIET);
    let mut other = subscriber(&broker, "/queue/u1", "x", &[]);
    assert_eq!(other.message().body, b"kept");
    // Unknown id: ERROR.
    c.send("UNSUBSCRIBE", &[("id", "a")], b"");
    c.expect_error_and_close();
    other.disconnect();
}

// Every client frame with a `receipt` header gets a RECEIPT naming it, and
// DISCONNECT's RECEIPT comes before the close.
#[test]
fn every_frame_with_receipt_gets_a_receipt() {
    let broker = Broker::start();
    let mut c = v12(&broker);
    c.receipt(
        "SUBSCRIBE",
        &[
            ("destination", "/queue/rc"),
            ("id", "s"),
            ("ack", "client-individual"),
        ],
        b"",
    );
    c.receipt("SEND", &[("destination", "/queue/rc")], b"one");
    c.receipt("SEND", &[("destination", "/queue/rc")], b"two");
    let one = c.message();
    let two = c.message();
    assert_eq!(bodies(&[one.clone(), two.clone()]), ["one", "two"]);
    c.receipt("BEGIN", &[("transaction", "t1")], b"");
    c.receipt(
        "SEND",
        &[("destination", "/queue/rc"), ("transaction", "t1")],
        b"three",
    );
    c.receipt("COMMIT", &[("transaction", "t1")], b"");
    let three = c.message();
    assert_eq!(three.body, b"three");
    c.receipt("ACK", &[("id", one.header("ack"))], b"");
    c.receipt("NACK", &[("id", two.header("ack"))], b"");
    let two_again = c.message();
    assert_eq!(two_again.body, b"two");
    c.receipt("ACK", &[("id", two_again.header("ack"))], b"");
    c.receipt("BEGIN", &[("transaction", "t2")], b"");
    c.receipt(
        "ACK",
        &[("id", three.header("ack")), ("transaction", "t2")],
        b"",
    );
    c.receipt("ABORT", &[("transaction", "t2")], b"");
    c.receipt("ACK", &[("id", three.header("ack"))], b"");
    c.receipt("UNSUBSCRIBE", &[("id", "s")], b"");
    c.disconnect();
}

// RECEIPTs leave in the order of the frames that asked for them, whether
// or not a frame had to wait for the disk first.
#[test]
fn receipts_arrive_in_frame_order() {
    let broker = Broker::start();
    let mut c = v12(&broker);
    let frames: [(&str, Vec<(&str, &str)>); 6] = [
        (
            "SEND",
            vec![("destination", "/queue/ord"), ("persistent", "true")],
        ),
        (
            "SUBSCRIBE",
            vec![("destination", "/queue/other"), ("id", "0")],
        ),
        ("SEND", vec![("destination", "/topic/ord")]),
        ("BEGIN", vec![("transaction", "t")]),
        (
            "SEND",
            vec![("destination", "/queue/ord"), ("persistent", "true")],
        ),
        ("ABORT", vec![("transaction", "t")]),
    ];
    let mut bytes = Vec::new();
    for (i, (cmd, headers)) in frames.iter().enumerate() {
        let id = format!("r{i}");
        let mut h = headers.clone();
        h.push(("receipt", &id));
        bytes.extend(encode(cmd, &h, b"x", Version::V12));
    }
    c.write(&bytes).expect("write");
    let got: Vec<String> = (0..frames.len())
        .map(|_| c.expect("RECEIPT").header("receipt-id").to_owned())
        .collect();
    assert_eq!(got, ["r0", "r1", "r2", "r3", "r4", "r5"]);
    c.disconnect();
}

// A frame processed before the one that causes an ERROR still gets its
// RECEIPT, before the ERROR: its message was routed, and a client told
// nothing would send it again. Checked for a transient SEND (/topic/) and
// a persistent one (/queue/, whose RECEIPT waits for the disk).
#[test]
fn receipts_owed_before_an_error_are_sent() {
    let broker = Broker::start();
    let mut watcher = subscriber(&broker, "/topic/owed", "w", &[]);
    for dest in ["/topic/owed", "/queue/owed"] {
        let mut c = v12(&broker);
        let mut bytes = encode(
            "SEND",
            &[("destination", dest), ("receipt", "r1")],
            b"accepted",
            Version::V12,
        );
        bytes.extend_from_slice(b"FOO\n\n\0");
        c.write(&bytes).expect("write");
        let (frames, closed) = c.read_to_close(STEP);
        assert!(closed, "not closed after ERROR");
        let commands: Vec<&str> = frames.iter().map(|f| f.command.as_str()).collect();
        assert_eq!(
            commands,
            ["RECEIPT", "ERROR"],
            "SEND to {dest} with receipt:r1 followed by a bad frame: {frames:?}"
        );
        assert_eq!(frames[0].get("receipt-id"), Some("r1"), "{frames:?}");
    }
    // The SENDs were processed either way.
    assert_eq!(watcher.message().body, b"accepted");
    let mut q = subscriber(&broker, "/queue/owed", "q", &[]);
    assert_eq!(q.message().body, b"accepted");
    q.disconnect();
    watcher.disconnect();
}

// A persistent SEND just before DISCONNECT is in the queue once
// DISCONNECT's RECEIPT has arrived.
#[test]
fn disconnect_receipt_covers_earlier_frames() {
    let broker = Broker::start();
    let mut c = v12(&broker);
    c.send(
        "SEND",
        &[("destination", "/queue/last"), ("persistent", "true")],
        b"before disconnect",
    );
    c.disconnect();
    let mut s = subscriber(&broker, "/queue/last", "0", &[]);
    assert_eq!(s.message().body, b"before disconnect");
    s.disconnect();
}

// ---------------------------------------------------------------------------
// ACK / NACK

// client-individual: each ACK settles one message; what is not acked comes
// back, redelivered, to the next subscriber.
#[test]
fn ack_client_individual() {
    let broker = Broker::start();
    let mut c = subscriber(&broker, "/queue/ci", "s", &[("ack", "client-individual")]);
    publish(&broker, "/queue/ci", &["m1", "m2", "m3"]);
    let ms: Vec<Frame> = (0..3).map(|_| c.message()).collect();
    assert_eq!(bodies(&ms), ["m1", "m2", "m3"]);
    for m in &ms {
        assert!(
            m.get("ack").is_some(),
            "1.2 MESSAGE needing ACK has no ack header: {m:?}"
        );
        assert_eq!(m.get("redelivered"), Some("false"), "{m:?}");
    }
    c.receipt("ACK", &[("id", ms[1].header("ack"))], b"");
    c.disconnect();
    let mut d = subscriber(&broker, "/queue/ci", "t", &[]);
    let back: Vec<Frame> = (0..2).map(|_| d.message()).collect();
    assert_eq!(bodies(&back), ["m1", "m3"], "{back:?}");
    for m in &back {
        assert_eq!(m.get("redelivered"), Some("true"), "{m:?}");
    }
    d.assert_quiet(QUIET);
    d.disconnect();
}

// client: an ACK settles that message and every earlier one on the
// subscription.
#[test]
fn ack_client_is_cumulative() {
    let broker = Broker::start();
    let mut c = subscriber(&broker, "/queue/cc", "s", &[("ack", "client")]);
    publish(&broker, "/queue/cc", &["m1", "m2", "m3"]);
    let ms: Vec<Frame> = (0..3).map(|_| c.message()).collect();
    assert_eq!(bodies(&ms), ["m1", "m2", "m3"]);
    c.receipt("ACK", &[("id", ms[1].header("ack"))], b"");
    c.disconnect();
    let mut d = subscriber(&broker, "/queue/cc", "t", &[]);
    let m = d.message();
    assert_eq!(m.body, b"m3", "{m:?}");
    assert_eq!(m.get("redelivered"), Some("true"), "{m:?}");
    d.assert_quiet(QUIET);
    d.disconnect();
}

// prefetch-count bounds the unacknowledged messages in flight.
#[test]
fn prefetch_count_limits_unacked_messages() {
    let broker = Broker::start();
    let mut c = subscriber(
        &broker,
        "/queue/pf",
        "s",
        &[("ack", "client-individual"), ("prefetch-count", "1")],
    );
    publish(&broker, "/queue/pf", &["m1", "m2", "m3"]);
    for want in ["m1", "m2", "m3"] {
        let m = c.message();
        assert_eq!(m.body_str(), want, "{m:?}");
        c.assert_quiet(QUIET);
        c.receipt("ACK", &[("id", m.header("ack"))], b"");
    }
    c.assert_quiet(QUIET);
    c.disconnect();
}

// NACK puts the message back: it comes again with redelivered:true.
#[test]
fn nack_redelivers_with_redelivered_true() {
    let broker = Broker::start();
    let mut c = subscriber(&broker, "/queue/nk", "s", &[("ack", "client-individual")]);
    publish(&broker, "/queue/nk", &["retry me"]);
    let m = c.message();
    assert_eq!(m.get("redelivered"), Some("false"), "{m:?}");
    c.receipt("NACK", &[("id", m.header("ack"))], b"");
    let again = c.message();
    assert_eq!(again.body, b"retry me", "{again:?}");
    assert_eq!(again.get("redelivered"), Some("true"), "{again:?}");
    c.receipt("ACK", &[("id", again.header("ack"))], b"");
    c.disconnect();
    let mut d = subscriber(&broker, "/queue/nk", "t", &[]);
    d.assert_quiet(QUIET);
    d.disconnect();
}

// STOMP 1.1 acks by `message-id` and `subscription`.
#[test]
fn ack_and_nack_in_1_1_use_message_id_and_subscription() {
    let broker = Broker::start();
    let mut c = Client::connect(broker.stomp_addr(), Version::V11);
    c.receipt(
        "SUBSCRIBE",
        &[
            ("destination", "/queue/a11"),
            ("id", "s11"),
            ("ack", "client-individual"),
        ],
        b"",
    );
    publish(&broker, "/queue/a11", &["m1", "m2"]);
    let m1 = c.message();
    let m2 = c.message();
    assert_eq!(bodies(&[m1.clone(), m2.clone()]), ["m1", "m2"]);
    c.receipt(
        "ACK",
        &[
            ("message-id", m1.header("message-id")),
            ("subscription", "s11"),
        ],
        b"",
    );
    c.receipt(
        "NACK",
        &[
            ("message-id", m2.header("message-id")),
            ("subscription", "s11"),
        ],
        b"",
    );
    let again = c.message();
    assert_eq!(again.body, b"m2");
    assert_eq!(again.get("redelivered"), Some("true"), "{again:?}");
    c.receipt(
        "ACK",
        &[
            ("message-id", again.header("message-id")),
            ("subscription", "s11"),
        ],
        b"",
    );
    c.disconnect();
    let mut d = subscriber(&broker, "/queue/a11", "t", &[]);
    d.assert_quiet(QUIET);
    d.disconnect();
}

// STOMP 1.0 acks by `message-id`.
#[test]
fn ack_in_1_0_uses_message_id() {
    let broker = Broker::start();
    let mut c = Client::connect(broker.stomp_addr(), Version::V10);
    c.receipt(
        "SUBSCRIBE",
        &[("destination", "/queue/a10"), ("ack", "client")],
        b"",
    );
    publish(&broker, "/queue/a10", &["m1", "m2"]);
    let _m1 = c.message();
    let m2 = c.message();
    assert_eq!(m2.body, b"m2");
    c.receipt("ACK", &[("message-id", m2.header("message-id"))], b"");
    c.disconnect();
    let mut d = subscriber(&broker, "/queue/a10", "t", &[]);
    d.assert_quiet(QUIET);
    d.disconnect();
}

// ACK of an id that was never delivered is an error.
#[test]
fn ack_of_unknown_id_is_an_error() {
    let broker = Broker::start();
    let mut c = subscriber(&broker, "/queue/uk", "s", &[("ack", "client")]);
    c.send("ACK", &[("id", "99999")], b"");
    c.expect_error_and_close();
    assert_broker_serves(broker.stomp_addr());
}

/// Publishes `n` numbered messages to `dest` in one write; returns once a
/// RECEIPT after them has arrived (frames are handled in order).
fn flood(broker: &Broker, dest: &str, n: usize) {
    let mut p = v12(broker);
    let mut bytes = Vec::new();
    for i in 0..n {
        bytes.extend(encode(
            "SEND",
            &[("destination", dest)],
            i.to_string().as_bytes(),
            Version::V12,
        ));
    }
    p.write(&bytes).expect("write");
    p.receipt("BEGIN", &[("transaction", "after-flood")], b"");
    p.disconnect();
}

/// Every message left in `dest`, taken by a fresh auto-ack subscriber
/// until nothing arrives for [`QUIET`].
fn drain(broker: &Broker, dest: &str) -> Vec<String> {
    let mut d = subscriber(broker, dest, "drain", &[]);
    let mut out = Vec::new();
    while let Ok(f) = d.read(QUIET) {
        assert_eq!(f.command, "MESSAGE", "{f:?}");
        out.push(f.body_str());
    }
    d.disconnect();
    out
}

/// Asserts that `got` and `left` together are exactly 0..n, once each.
#[track_caller]
fn assert_all_accounted_for(got: &[String], left: &[String], n: usize) {
    let mut all: Vec<usize> = got
        .iter()
        .chain(left)
        .map(|b| b.parse().expect("numbered body"))
        .collect();
    all.sort_unstable();
    let total = all.len();
    all.dedup();
    assert_eq!(total, all.len(), "messages duplicated");
    assert_eq!(
        total,
        n,
        "{} of {n} messages lost: {} delivered to the subscriber, {} left in the queue",
        n - total,
        got.len(),
        left.len()
    );
}

// Control for the two tests below: a plain flood and drain loses nothing.
#[test]
fn flood_and_drain_accounts_for_every_message() {
    let broker = Broker::start();
    flood(&broker, "/queue/fl", 2000);
    let left = drain(&broker, "/queue/fl");
    assert_all_accounted_for(&[], &left, 2000);
}

// An auto-ack subscription ended by UNSUBSCRIBE while deliveries to it are
// still on their way must not lose them: every message is either sent to
// the client or still in the queue.
#[test]
fn unsubscribe_loses_no_auto_ack_messages() {
    let broker = Broker::start();
    flood(&broker, "/queue/fl", 2000);
    let mut c = v12(&broker);
    let mut bytes = encode(
        "SUBSCRIBE",
        &[("destination", "/queue/fl"), ("id", "s")],
        b"",
        Version::V12,
    );
    bytes.extend(encode(
        "UNSUBSCRIBE",
        &[("id", "s"), ("receipt", "u")],
        b"",
        Version::V12,
    ));
    c.write(&bytes).expect("write");
    let mut got = Vec::new();
    loop {
        match c.read(QUIET) {
            Ok(f) if f.command == "MESSAGE" => got.push(f.body_str()),
            Ok(f) if f.command == "RECEIPT" => {}
            Ok(f) => panic!("unexpected {f:?}"),
            Err(End::Timeout) => break,
            Err(End::Closed) => panic!("connection closed"),
        }
    }
    c.disconnect();
    let left = drain(&broker, "/queue/fl");
    assert_all_accounted_for(&got, &left, 2000);
}

// The same when DISCONNECT ends the subscription.
#[test]
fn disconnect_loses_no_undelivered_auto_ack_messages() {
    let broker = Broker::start();
    flood(&broker, "/queue/fl", 2000);
    let mut c = v12(&broker);
    let mut bytes = encode(
        "SUBSCRIBE",
        &[("destination", "/queue/fl"), ("id", "s")],
        b"",
        Version::V12,
    );
    bytes.extend(encode(
        "DISCONNECT",
        &[("receipt", "bye")],
        b"",
        Version::V12,
    ));
    c.write(&bytes).expect("write");
    let (frames, closed) = c.read_to_close(STEP);
    assert!(closed, "not closed after DISCONNECT");
    let got: Vec<String> = frames
        .iter()
        .filter(|f| f.command == "MESSAGE")
        .map(Frame::body_str)
        .collect();
    let left = drain(&broker, "/queue/fl");
    assert_all_accounted_for(&got, &left, 2000);
}

// ---------------------------------------------------------------------------
// BEGIN / COMMIT / ABORT

// SENDs in a transaction are held until COMMIT and dropped by ABORT.
#[test]
fn transaction_commit_delivers_and_abort_discards() {
    let broker = Broker::start();
    let mut c = subscriber(&broker, "/queue/tx", "s", &[]);
    c.receipt("BEGIN", &[("transaction", "t1")], b"");
    for b in ["t1-a", "t1-b"] {
        c.receipt(
            "SEND",
            &[("destination", "/queue/tx"), ("transaction", "t1")],
            b.as_bytes(),
        );
    }
    c.assert_quiet(QUIET);
    c.receipt("COMMIT", &[("transaction", "t1")], b"");
    let got: Vec<Frame> = (0..2).map(|_| c.message()).collect();
    assert_eq!(bodies(&got), ["t1-a", "t1-b"]);

    c.receipt("BEGIN", &[("transaction", "t2")], b"");
    c.receipt(
        "SEND",
        &[("destination", "/queue/tx"), ("transaction", "t2")],
        b"t2",
    );
    c.receipt("ABORT", &[("transaction", "t2")], b"");
    c.receipt("SEND", &[("destination", "/queue/tx")], b"plain");
    assert_eq!(c.message().body, b"plain");
    c.assert_quiet(QUIET);
    // A committed transaction is gone: committing it again is an error.
    c.send("COMMIT", &[("transaction", "t1")], b"");
    c.expect_error_and_close();
}

// An ACK inside an aborted transaction is not applied; one inside a
// committed transaction is.
#[test]
fn acks_in_transactions() {
    let broker = Broker::start();
    let mut c = subscriber(&broker, "/queue/txa", "s", &[("ack", "client-individual")]);
    publish(&broker, "/queue/txa", &["a", "b"]);
    let a = c.message();
    let b = c.message();
    c.receipt("BEGIN", &[("transaction", "t1")], b"");
    c.receipt(
        "ACK",
        &[("id", a.header("ack")), ("transaction", "t1")],
        b"",
    );
    c.receipt("ABORT", &[("transaction", "t1")], b"");
    c.receipt("BEGIN", &[("transaction", "t2")], b"");
    c.receipt(
        "ACK",
        &[("id", b.header("ack")), ("transaction", "t2")],
        b"",
    );
    c.receipt("COMMIT", &[("transaction", "t2")], b"");
    c.disconnect();
    let mut d = subscriber(&broker, "/queue/txa", "t", &[]);
    let m = d.message();
    assert_eq!(m.body, b"a", "the aborted ACK must not count: {m:?}");
    d.assert_quiet(QUIET);
    d.disconnect();
}

// Frames naming a transaction that is not open are errors.
#[test]
fn unknown_transaction_is_an_error() {
    let broker = Broker::start();
    for (cmd, headers) in [
        ("COMMIT", vec![("transaction", "nope")]),
        ("ABORT", vec![("transaction", "nope")]),
        (
            "SEND",
            vec![("destination", "/queue/x"), ("transaction", "nope")],
        ),
    ] {
        let mut c = v12(&broker);
        c.send(cmd, &headers, b"");
        let e = c.expect_error_and_close();
        eprintln!("{cmd} in unknown transaction → {e:?}");
    }
    let mut c = v12(&broker);
    c.receipt("BEGIN", &[("transaction", "dup")], b"");
    c.send("BEGIN", &[("transaction", "dup")], b"");
    c.expect_error_and_close();
    assert_broker_serves(broker.stomp_addr());
}

// ---------------------------------------------------------------------------
// Destinations

// /topic/ fans out to every matching subscription (amq.topic patterns);
// nothing is kept for subscribers that are gone.
#[test]
fn topic_fans_out_to_matching_subscribers() {
    let broker = Broker::start();
    let mut a = subscriber(&broker, "/topic/news.*", "a", &[]);
    let mut b = subscriber(&broker, "/topic/news.#", "b", &[]);
    let mut c = subscriber(&broker, "/topic/sport.*", "c", &[]);
    publish(&broker, "/topic/news.uk", &["headline"]);
    for (client, id) in [(&mut a, "a"), (&mut b, "b")] {
        let m = client.message();
        assert_eq!(m.body, b"headline", "{m:?}");
        assert_eq!(m.get("destination"), Some("/topic/news.uk"), "{m:?}");
        assert_eq!(m.get("subscription"), Some(id), "{m:?}");
    }
    c.assert_quiet(QUIET);
    a.disconnect();
    publish(&broker, "/topic/news.uk", &["missed"]);
    assert_eq!(b.message().body, b"missed");
    let mut a2 = subscriber(&broker, "/topic/news.*", "a", &[]);
    a2.assert_quiet(QUIET);
    for x in [a2, b, c] {
        x.disconnect();
    }
}

// /exchange/<name>/<key> publishes to and binds on any exchange.
#[test]
fn exchange_destinations() {
    let broker = Broker::start();
    let mut t = subscriber(&broker, "/exchange/amq.topic/k.*", "t", &[]);
    let mut d = subscriber(&broker, "/exchange/amq.direct/dk", "d", &[]);
    publish(&broker, "/exchange/amq.topic/k.x", &["via topic"]);
    publish(&broker, "/exchange/amq.direct/dk", &["via direct"]);
    publish(&broker, "/exchange/amq.direct/other", &["nobody"]);
    let m = t.message();
    assert_eq!(m.body, b"via topic", "{m:?}");
    assert!(m.header("destination").ends_with("k.x"), "{m:?}");
    let m = d.message();
    assert_eq!(m.body, b"via direct", "{m:?}");
    assert_eq!(
        m.get("destination"),
        Some("/exchange/amq.direct/dk"),
        "{m:?}"
    );
    d.assert_quiet(QUIET);
    t.assert_quiet(Duration::from_millis(100));
    t.disconnect();
    d.disconnect();
    // An exchange that does not exist.
    let mut c = v12(&broker);
    c.send(
        "SUBSCRIBE",
        &[("destination", "/exchange/no-such-exchange/k"), ("id", "0")],
        b"",
    );
    c.expect_error_and_close();
}

// /amq/queue/ consumes an existing queue and never declares one.
#[test]
fn amq_queue_existing_and_missing() {
    let broker = Broker::start();
    publish(&broker, "/queue/exists", &["one"]);
    let mut c = subscriber(&broker, "/amq/queue/exists", "0", &[]);
    assert_eq!(c.message().body, b"one");
    c.receipt("SEND", &[("destination", "/amq/queue/exists")], b"two");
    assert_eq!(c.message().body, b"two");
    c.disconnect();

    let mut m = v12(&broker);
    m.send(
        "SUBSCRIBE",
        &[
            ("destination", "/amq/queue/missing"),
            ("id", "0"),
            ("receipt", "r-missing"),
        ],
        b"",
    );
    let e = m.expect_error_and_close();
    assert_eq!(e.get("message"), Some("not_found"), "{e:?}");
    assert_eq!(
        e.get("receipt-id"),
        Some("r-missing"),
        "ERROR for a frame with a receipt should name it: {e:?}"
    );
    assert_broker_serves(broker.stomp_addr());
}

// Request / reply through /temp-queue/: the replier sees a reply-to it can
// SEND to, and the answer arrives without a SUBSCRIBE.
#[test]
fn temp_queue_reply_flow() {
    let broker = Broker::start();
    let mut server = subscriber(&broker, "/queue/rpc", "srv", &[]);
    let mut client = v12(&broker);
    client.receipt(
        "SEND",
        &[
            ("destination", "/queue/rpc"),
            ("reply-to", "/temp-queue/answers"),
            ("correlation-id", "c-7"),
        ],
        b"ping",
    );
    let req = server.message();
    assert_eq!(req.body, b"ping");
    let reply_to = req.header("reply-to").to_owned();
    assert!(
        reply_to.starts_with("/reply-queue/"),
        "reply-to should be a /reply-queue/ destination: {req:?}"
    );
    server.receipt(
        "SEND",
        &[("destination", &reply_to), ("correlation-id", "c-7")],
        b"pong",
    );
    let resp = client.message();
    assert_eq!(resp.body, b"pong", "{resp:?}");
    assert_eq!(resp.get("correlation-id"), Some("c-7"), "{resp:?}");
    assert_eq!(
        resp.get("destination"),
        Some("/temp-queue/answers"),
        "{resp:?}"
    );
    // A temp queue cannot be subscribed to.
    client.send(
        "SUBSCRIBE",
        &[("destination", "/temp-queue/answers"), ("id", "x")],
        b"",
    );
    client.expect_error_and_close();
    server.disconnect();
}

// durable:true + id: messages published while the subscriber is away wait
// for it; UNSUBSCRIBE with durable:true deletes the subscription.
#[test]
fn durable_topic_subscription() {
    let broker = Broker::start();
    // RabbitMQ clients add auto-delete:false; durable:true alone must do.
    let dur = [("durable", "true")];
    let mut a = subscriber(&broker, "/topic/dur.x", "d1", &dur);
    publish(&broker, "/topic/dur.x", &["first"]);
    assert_eq!(a.message().body, b"first");
    a.disconnect();

    publish(&broker, "/topic/dur.x", &["while away 1", "while away 2"]);
    let mut b = subscriber(&broker, "/topic/dur.x", "d1", &dur);
    let got: Vec<Frame> = (0..2).map(|_| b.message()).collect();
    assert_eq!(bodies(&got), ["while away 1", "while away 2"]);
    b.assert_quiet(QUIET);
    b.receipt("UNSUBSCRIBE", &[("id", "d1"), ("durable", "true")], b"");
    b.disconnect();

    publish(&broker, "/topic/dur.x", &["after delete"]);
    let mut c = subscriber(&broker, "/topic/dur.x", "d1", &dur);
    c.assert_quiet(QUIET);
    c.disconnect();
}

// Destinations outside the known prefixes, and a missing one, are errors.
#[test]
fn invalid_or_missing_destination_is_an_error() {
    let broker = Broker::start();
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("SEND", &[("destination", "/bogus/x")]),
        ("SEND", &[]),
        ("SUBSCRIBE", &[("destination", "/queue/"), ("id", "0")]),
        ("SUBSCRIBE", &[("id", "0")]),
    ];
    for (cmd, headers) in cases {
        let mut c = v12(&broker);
        c.send(cmd, headers, b"x");
        let e = c.expect_error_and_close();
        eprintln!("{cmd} {headers:?} → {e:?}");
    }
    assert_broker_serves(broker.stomp_addr());
}

// ---------------------------------------------------------------------------
// Header escaping

// 1.2: `\n` `\c` `\\` `\r` in names and values round-trip SEND → MESSAGE.
#[test]
fn header_escaping_1_2_round_trips() {
    let broker = Broker::start();
    let mut c = subscriber(&broker, "/queue/esc12", "0", &[]);
    let value = "colon:back\\slash\nline\rcr";
    let name = "x:name\\with\nspecials\r";
    c.receipt(
        "SEND",
        &[
            ("destination", "/queue/esc12"),
            ("x-value", value),
            (name, "v"),
        ],
        b"e",
    );
    let m = c.message();
    assert_eq!(m.get("x-value"), Some(value), "{m:?}");
    assert_eq!(m.get(name), Some("v"), "{m:?}");
    // The same, written as raw escapes.
    c.write(b"SEND\ndestination:/queue/esc12\nx-raw:a\\cb\\nc\\\\d\\re\nk\\ce\\ny:1\n\nraw\0")
        .expect("write");
    let m = c.message();
    assert_eq!(m.get("x-raw"), Some("a:b\nc\\d\re"), "{m:?}");
    assert_eq!(m.get("k:e\ny"), Some("1"), "{m:?}");
    c.disconnect();
}

// 1.1: `\n` `\c` `\\` round-trip; `\r` is not a 1.1 escape.
#[test]
fn header_escaping_1_1() {
    let broker = Broker::start();
    let mut c = Client::connect(broker.stomp_addr(), Version::V11);
    c.receipt(
        "SUBSCRIBE",
        &[("destination", "/queue/esc11"), ("id", "0")],
        b"",
    );
    let value = "a:b\\c\nd";
    c.receipt(
        "SEND",
        &[
            ("destination", "/queue/esc11"),
            ("x-v", value),
            ("n:a\\m\ne", "1"),
        ],
        b"",
    );
    let m = c.message();
    assert_eq!(m.get("x-v"), Some(value), "{m:?}");
    assert_eq!(m.get("n:a\\m\ne"), Some("1"), "{m:?}");
    c.write(b"SEND\ndestination:/queue/esc11\nx:a\\rb\n\n\0")
        .expect("write");
    c.expect_error_and_close();
    assert_broker_serves(broker.stomp_addr());
}

// 1.0: no escaping; backslashes are literal, both ways, and a 1.2
// subscriber of the same message sees the same text.
#[test]
fn header_escaping_1_0_is_literal() {
    let broker = Broker::start();
    let mut old = Client::connect(broker.stomp_addr(), Version::V10);
    old.receipt(
        "SUBSCRIBE",
        &[("destination", "/topic/esc10"), ("id", "old")],
        b"",
    );
    let mut new = subscriber(&broker, "/topic/esc10", "new", &[]);
    old.write(b"SEND\ndestination:/topic/esc10\nx-path:C:\\dir\\new\\t\\c\n\nliteral\0")
        .expect("write");
    let want = "C:\\dir\\new\\t\\c";
    let m = old.message();
    assert_eq!(m.get("x-path"), Some(want), "1.0 subscriber: {m:?}");
    let m = new.message();
    assert_eq!(m.get("x-path"), Some(want), "1.2 subscriber: {m:?}");

    // A newline a 1.2 client put in a value cannot reach a 1.0 client
    // as a line break: the frame must still parse as the same headers.
    new.receipt(
        "SEND",
        &[("destination", "/topic/esc10"), ("x-nl", "a\nb:c")],
        b"nl",
    );
    let m = old.message();
    assert_eq!(m.body, b"nl");
    let v = m.header("x-nl");
    assert!(!v.contains('\n'), "{m:?}");
    assert!(m.get("b").is_none(), "value split into a header: {m:?}");
    old.disconnect();
    new.disconnect();
}

// When a header repeats, the first occurrence counts.
#[test]
fn repeated_header_first_one_wins() {
    let broker = Broker::start();
    let mut c = subscriber(&broker, "/queue/first", "0", &[]);
    c.receipt(
        "SUBSCRIBE",
        &[("destination", "/queue/second"), ("id", "1")],
        b"",
    );
    c.write(
        b"SEND\ndestination:/queue/first\ndestination:/queue/second\nx-rep:1\nx-rep:2\n\nrep\0",
    )
    .expect("write");
    let m = c.message();
    assert_eq!(m.get("subscription"), Some("0"), "{m:?}");
    assert_eq!(m.get("x-rep"), Some("1"), "{m:?}");
    c.assert_quiet(QUIET);
    c.disconnect();
}

// ---------------------------------------------------------------------------
// Malformed frames: ERROR with `message`, close, nobody else hurt

/// A connected 1.2 client subscribed to its own queue, to prove later that
/// a bad client did not hurt it.
struct Bystander {
    c: Client,
}

impl Bystander {
    fn connect(addr: SocketAddr) -> Self {
        let mut c = Client::connect(addr, Version::V12);
        c.receipt(
            "SUBSCRIBE",
            &[("destination", "/queue/bystander"), ("id", "b")],
            b"",
        );
        Self { c }
    }

    fn assert_unharmed(mut self, addr: SocketAddr) {
        self.c
            .receipt("SEND", &[("destination", "/queue/bystander")], b"fine");
        let m = self.c.message();
        assert_eq!(m.body, b"fine", "bystander: {m:?}");
        self.c.disconnect();
        assert_broker_serves(addr);
    }
}

/// Connects a 1.2 client, writes `bytes`, and asserts ERROR + close; the
/// bystander and a new client still work. Returns the ERROR.
fn rejected(broker: &Broker, bytes: &[u8]) -> Frame {
    let addr = broker.stomp_addr();
    let bystander = Bystander::connect(addr);
    let mut c = Client::connect(addr, Version::V12);
    if let Err(e) = c.write(bytes) {
        eprintln!("write failed (broker already closed?): {e}");
    }
    let e = c.expect_error_and_close();
    eprintln!("{:?} → {e:?}", String::from_utf8_lossy(bytes));
    bystander.assert_unharmed(addr);
    e
}

/// Connects a 1.2 client, writes `bytes` (one SEND to /queue/ok, with
/// receipt `ok`), and asserts it is accepted.
fn accepted(broker: &Broker, bytes: &[u8]) {
    let mut c = Client::connect(broker.stomp_addr(), Version::V12);
    c.write(bytes).expect("write");
    let r = c.next();
    assert_eq!(
        r.command, "RECEIPT",
        "frame within the limits refused: {r:?}"
    );
    assert_eq!(r.get("receipt-id"), Some("ok"), "{r:?}");
    c.disconnect();
}

#[test]
fn unknown_command_is_rejected() {
    let broker = Broker::start();
    rejected(&broker, b"FOO\ndestination:/queue/a\n\n\0");
}

#[test]
fn lowercase_command_is_rejected() {
    let broker = Broker::start();
    rejected(&broker, b"send\ndestination:/queue/a\n\nx\0");
}

#[test]
fn header_without_colon_is_rejected() {
    let broker = Broker::start();
    rejected(&broker, b"SEND\ndestination:/queue/a\nnocolon\n\nx\0");
}

#[test]
fn header_with_empty_name_is_rejected() {
    let broker = Broker::start();
    rejected(&broker, b"SEND\ndestination:/queue/a\n:value\n\nx\0");
}

#[test]
fn invalid_escape_is_rejected() {
    let broker = Broker::start();
    rejected(&broker, b"SEND\ndestination:/queue/a\nx:a\\tb\n\nx\0");
}

#[test]
fn invalid_utf8_header_is_rejected() {
    let broker = Broker::start();
    rejected(&broker, b"SEND\ndestination:/queue/a\nx:\xff\xfe\n\nx\0");
}

#[test]
fn bare_carriage_return_is_rejected() {
    let broker = Broker::start();
    rejected(&broker, b"SEND\ndestination:/queue/a\nx:a\rb\n\nx\0");
}

#[test]
fn non_numeric_content_length_is_rejected() {
    let broker = Broker::start();
    rejected(
        &broker,
        b"SEND\ndestination:/queue/a\ncontent-length:abc\n\nxyz\0",
    );
}

#[test]
fn content_length_body_not_followed_by_nul_is_rejected() {
    let broker = Broker::start();
    rejected(
        &broker,
        b"SEND\ndestination:/queue/a\ncontent-length:3\n\nabcdef\0",
    );
}

#[test]
fn server_frame_from_client_is_rejected() {
    let broker = Broker::start();
    rejected(&broker, b"MESSAGE\ndestination:/queue/a\n\nx\0");
}

/// A SEND with `n` headers in all (destination, receipt, fillers).
fn send_with_headers(n: usize) -> Vec<u8> {
    let mut s = String::from("SEND\ndestination:/queue/ok\nreceipt:ok\n");
    for i in 2..n {
        s.push_str(&format!("x-{i}:{i}\n"));
    }
    s.push_str("\nbody\0");
    s.into_bytes()
}

// max_headers = 8: eight headers pass, nine get ERROR.
#[test]
fn too_many_headers_are_rejected() {
    let broker = Broker::start_with_config(LIMITS);
    accepted(&broker, &send_with_headers(8));
    rejected(&broker, &send_with_headers(9));
}

/// A SEND whose `x-long` header line is `len` bytes.
fn send_with_header_line(len: usize) -> Vec<u8> {
    let value = "v".repeat(len - "x-long:".len());
    format!("SEND\ndestination:/queue/ok\nreceipt:ok\nx-long:{value}\n\nbody\0").into_bytes()
}

// max_header_length = 128: a 128-byte line passes, 129 bytes get ERROR,
// and so does an endless line that never ends.
#[test]
fn header_line_too_long_is_rejected() {
    let broker = Broker::start_with_config(LIMITS);
    accepted(&broker, &send_with_header_line(128));
    rejected(&broker, &send_with_header_line(129));
    let mut endless = b"SEND\ndestination:/queue/ok\nx-long:".to_vec();
    endless.extend(std::iter::repeat_n(b'v', 4096));
    rejected(&broker, &endless);
}

/// A SEND to /queue/ok with receipt `ok` and a `len`-byte body.
fn send_with_body(len: usize, content_length: bool) -> Vec<u8> {
    let mut s = b"SEND\ndestination:/queue/ok\nreceipt:ok\n".to_vec();
    if content_length {
        s.extend_from_slice(format!("content-length:{len}\n").as_bytes());
    }
    s.push(b'\n');
    s.extend(std::iter::repeat_n(b'b', len));
    s.push(0);
    s
}

// max_body_size = 1024 with content-length: 1024 passes; 1025 gets ERROR
// as soon as the header is read, before any body arrives.
#[test]
fn body_too_large_with_content_length_is_rejected() {
    let broker = Broker::start_with_config(LIMITS);
    accepted(&broker, &send_with_body(1024, true));
    rejected(&broker, &send_with_body(1025, true));
    rejected(
        &broker,
        b"SEND\ndestination:/queue/ok\ncontent-length:1025\n\n",
    );
}

// max_body_size = 1024 without content-length: 1024 bytes then NUL pass;
// 1025 get ERROR, and so does a body that never ends.
#[test]
fn body_too_large_without_content_length_is_rejected() {
    let broker = Broker::start_with_config(LIMITS);
    accepted(&broker, &send_with_body(1024, false));
    rejected(&broker, &send_with_body(1025, false));
    let mut endless = b"SEND\ndestination:/queue/ok\n\n".to_vec();
    endless.extend(std::iter::repeat_n(b'b', 4096));
    rejected(&broker, &endless);
}

// The same limits bind before CONNECT.
#[test]
fn limits_apply_before_connect() {
    let broker = Broker::start_with_config(LIMITS);
    let addr = broker.stomp_addr();
    let bystander = Bystander::connect(addr);
    let mut c = Client::open(addr);
    let mut bytes = b"CONNECT\naccept-version:1.2\nx-long:".to_vec();
    bytes.extend(std::iter::repeat_n(b'v', 4096));
    if let Err(e) = c.write(&bytes) {
        eprintln!("write failed (broker already closed?): {e}");
    }
    c.expect_error_and_close();
    bystander.assert_unharmed(addr);
}

// A header line exactly at max_header_length, ending in CRLF, is within
// the limit even when the `\r` and the `\n` arrive in different reads.
#[test]
fn header_line_at_the_limit_split_inside_crlf() {
    let broker = Broker::start_with_config(LIMITS);
    let value = "v".repeat(128 - "x-long:".len());
    let head = format!("SEND\r\ndestination:/queue/ok\r\nreceipt:ok\r\nx-long:{value}\r");
    let tail = b"\n\r\nbody\0";
    let mut c = Client::connect(broker.stomp_addr(), Version::V12);
    c.write(head.as_bytes()).expect("write");
    // Let the broker read the head up to the `\r` on its own.
    thread::sleep(Duration::from_millis(200));
    if let Err(e) = c.write(tail) {
        eprintln!("write failed (broker already closed?): {e}");
    }
    let r = c.next();
    assert_eq!(
        r.command, "RECEIPT",
        "a 128-byte header line (limit 128) refused because its CRLF was split: {r:?}"
    );
    c.disconnect();
}

// The same boundary with the line arriving whole.
#[test]
fn header_line_at_the_limit_with_crlf() {
    let broker = Broker::start_with_config(LIMITS);
    let value = "v".repeat(128 - "x-long:".len());
    let frame =
        format!("SEND\r\ndestination:/queue/ok\r\nreceipt:ok\r\nx-long:{value}\r\n\r\nbody\0");
    accepted(&broker, frame.as_bytes());
}

// Frames after the one that caused an ERROR, in the same write, are not
// acted on.
#[test]
fn frames_after_an_error_are_ignored() {
    let broker = Broker::start();
    let mut watcher = subscriber(&broker, "/queue/after", "w", &[]);
    let mut c = v12(&broker);
    let mut bytes = b"FOO\n\n\0".to_vec();
    bytes.extend(encode(
        "SEND",
        &[("destination", "/queue/after")],
        b"must not be sent",
        Version::V12,
    ));
    if let Err(e) = c.write(&bytes) {
        eprintln!("write failed (broker already closed?): {e}");
    }
    c.expect_error_and_close();
    watcher.assert_quiet(QUIET);
    watcher.disconnect();
}

// Frames after DISCONNECT, in the same write, are not acted on.
#[test]
fn frames_after_disconnect_are_ignored() {
    let broker = Broker::start();
    let mut watcher = subscriber(&broker, "/queue/after", "w", &[]);
    let mut c = v12(&broker);
    let mut bytes = encode("DISCONNECT", &[("receipt", "bye")], b"", Version::V12);
    bytes.extend(encode(
        "SEND",
        &[("destination", "/queue/after")],
        b"must not be sent",
        Version::V12,
    ));
    c.write(&bytes).expect("write");
    let (frames, closed) = c.read_to_close(STEP);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].get("receipt-id"), Some("bye"), "{frames:?}");
    assert!(closed, "not closed after DISCONNECT");
    watcher.assert_quiet(QUIET);
    watcher.disconnect();
}

// SUBSCRIBE errors: a duplicate id, an unknown ack mode, a bad
// prefetch-count, and more subscriptions than stomp.max_subscriptions.
#[test]
fn subscribe_errors() {
    let broker = Broker::start_with_config("[stomp]\nmax_subscriptions = 2\n");
    let cases: [&[(&str, &str)]; 3] = [
        &[("destination", "/queue/b"), ("id", "dup")],
        &[
            ("destination", "/queue/b"),
            ("id", "x"),
            ("ack", "sometimes"),
        ],
        &[
            ("destination", "/queue/b"),
            ("id", "x"),
            ("prefetch-count", "many"),
        ],
    ];
    for headers in cases {
        let mut c = subscriber(&broker, "/queue/a", "dup", &[]);
        c.send("SUBSCRIBE", headers, b"");
        let e = c.expect_error_and_close();
        eprintln!("SUBSCRIBE {headers:?} → {e:?}");
    }
    let mut c = subscriber(&broker, "/queue/a", "1", &[]);
    c.receipt(
        "SUBSCRIBE",
        &[("destination", "/queue/b"), ("id", "2")],
        b"",
    );
    c.send(
        "SUBSCRIBE",
        &[("destination", "/queue/c"), ("id", "3")],
        b"",
    );
    c.expect_error_and_close();
    assert_broker_serves(broker.stomp_addr());
}

// A client that never sends CONNECT is dropped after
// stomp.connect_timeout_ms.
#[test]
fn no_connect_within_the_timeout_closes() {
    let broker = Broker::start_with_config("[stomp]\nconnect_timeout_ms = 500\n");
    let mut c = Client::open(broker.stomp_addr());
    let started = Instant::now();
    let (frames, closed) = c.read_to_close(STEP);
    assert!(closed, "silent client not closed within {STEP:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed after {:?}, before the 500 ms CONNECT deadline",
        started.elapsed()
    );
    assert!(
        frames.iter().all(|f| f.command == "ERROR"),
        "unexpected frames: {frames:?}"
    );
    assert_broker_serves(broker.stomp_addr());
}

// A connection ended by an ERROR gives its unacknowledged messages back.
#[test]
fn unacked_messages_are_requeued_after_an_error() {
    let broker = Broker::start();
    let mut c = subscriber(&broker, "/queue/err-requeue", "s", &[("ack", "client")]);
    publish(&broker, "/queue/err-requeue", &["pending"]);
    let m = c.message();
    assert_eq!(m.body, b"pending");
    c.write(b"FOO\n\n\0").expect("write");
    c.expect_error_and_close();
    let mut d = subscriber(&broker, "/queue/err-requeue", "t", &[]);
    let m = d.message();
    assert_eq!(m.body, b"pending", "{m:?}");
    assert_eq!(m.get("redelivered"), Some("true"), "{m:?}");
    d.disconnect();
}

// A connection closed mid-frame does not hurt anyone either.
#[test]
fn eof_mid_frame_only_closes_that_connection() {
    let broker = Broker::start();
    let addr = broker.stomp_addr();
    let bystander = Bystander::connect(addr);
    let mut c = Client::connect(addr, Version::V12);
    c.write(b"SEND\ndestination:/queue/a\ncontent-length:100\n\nonly part")
        .expect("write");
    c.shutdown_write();
    let (frames, closed) = c.read_to_close(STEP);
    assert!(closed, "half-closed client not closed by the broker");
    assert!(
        frames.iter().all(|f| f.command == "ERROR"),
        "unexpected frames: {frames:?}"
    );
    assert!(matches!(
        c.read(Duration::from_millis(10)),
        Err(End::Closed)
    ));
    bystander.assert_unharmed(addr);
}
