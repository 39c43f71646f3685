//! Web-STOMP and Web-MQTT: STOMP and MQTT over WebSocket at path `/ws`,
//! with tokio-tungstenite as the client against a real `switchyard`
//! process. Protocol frames may span or share WebSocket messages; the
//! HTTP upgrade checks the path and the subprotocol. Every wait is bounded
//! by [`STEP`].

#[macro_use]
#[path = "common/stomp.rs"]
mod stomp;

use stomp::amqp;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use stomp::{Client, Frame, Parser, STEP, Version, encode};
use switchyard_tests::Broker;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async};

/// A body no text protocol could carry as-is.
const BINARY: &[u8] = b"\x00ws\xff\xfe\x00 \xc3\x28 end\x80\x00";

type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket to `ws://addr{path}` offering `protocols` (none if
/// empty). Returns the socket and the subprotocol the server chose, or
/// the HTTP status of a refused upgrade.
async fn open(
    addr: SocketAddr,
    path: &str,
    protocols: &str,
) -> Result<(Ws, Option<String>), StatusCode> {
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    if !protocols.is_empty() {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocols).expect("header value"),
        );
    }
    let tcp = w!(TcpStream::connect(addr)).expect("TCP connect");
    match w!(client_async(req, tcp)) {
        Ok((ws, resp)) => {
            let chosen = resp
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().expect("ASCII subprotocol").to_owned());
            Ok((ws, chosen))
        }
        Err(WsError::Http(resp)) => Err(resp.status()),
        Err(e) => panic!("WebSocket handshake to {addr}{path} failed oddly: {e}"),
    }
}

/// The next data message's payload and whether it was a text message;
/// `None` once the server closed.
async fn recv(ws: &mut Ws, within: Duration) -> Option<(Vec<u8>, bool)> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = match tokio::time::timeout(left, ws.next()).await {
            Err(_) => panic!("no WebSocket message within {within:?}"),
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return None,
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            Message::Text(t) => return Some((t.as_bytes().to_vec(), true)),
            Message::Binary(b) => return Some((b.to_vec(), false)),
            _ => {}
        }
    }
}

/// A Web-STOMP client: WebSocket messages in, STOMP frames out.
struct WsStomp {
    ws: Ws,
    parser: Parser,
    /// Whether each data message received so far was text.
    kinds: Vec<bool>,
}

impl WsStomp {
    async fn open(addr: SocketAddr, protocols: &str) -> (Self, Option<String>) {
        let (ws, chosen) = open(addr, "/ws", protocols)
            .await
            .unwrap_or_else(|s| panic!("Web-STOMP upgrade refused: {s}"));
        let c = Self {
            ws,
            parser: Parser::new(),
            kinds: Vec::new(),
        };
        (c, chosen)
    }

    /// Opened with `v12.stomp` and connected (1.2).
    async fn connect(addr: SocketAddr) -> Self {
        let (mut c, chosen) = Self::open(addr, "v12.stomp").await;
        assert_eq!(chosen.as_deref(), Some("v12.stomp"));
        c.send_text(&encode(
            "CONNECT",
            &[("accept-version", "1.2"), ("host", "/")],
            b"",
            Version::V12,
        ))
        .await;
        let f = c.expect("CONNECTED").await;
        assert_eq!(f.get("version"), Some("1.2"), "{f:?}");
        c
    }

    async fn send_text(&mut self, bytes: &[u8]) {
        let s = std::str::from_utf8(bytes).expect("text frame is UTF-8");
        w!(self.ws.send(Message::text(s))).expect("send text message");
    }

    async fn send_binary(&mut self, bytes: &[u8]) {
        w!(self.ws.send(Message::binary(bytes.to_vec()))).expect("send binary message");
    }

    /// The next frame; `None` once the server closed.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            match self.parser.next() {
                Ok(Some(f)) => {
                    if f.command == "CONNECTED" {
                        self.parser.version = Version::V12;
                    }
                    return Some(f);
                }
                Ok(None) => {}
                Err(e) => panic!("server sent bytes that are not STOMP: {e}"),
            }
            let (data, text) = recv(&mut self.ws, STEP).await?;
            self.kinds.push(text);
            self.parser.push(&data);
        }
    }

    async fn expect(&mut self, command: &str) -> Frame {
        let f = self
            .frame()
            .await
            .unwrap_or_else(|| panic!("WebSocket closed; expected {command}"));
        assert_eq!(f.command, command, "{f:?}");
        f
    }
}

// ---------------------------------------------------------------------------
// AMQP helpers

async fn amqp_publish(ch: &Channel, key: &str, body: &[u8]) {
    w!(ch.confirm_select(ConfirmSelectOptions::default())).expect("confirm.select");
    let confirm = w!(ch.basic_publish(
        "amq.topic".into(),
        key.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default()
    ))
    .expect("publish");
    assert!(w!(confirm).expect("confirm").is_ack());
}

// ---------------------------------------------------------------------------
// Web-STOMP

// `v12.stomp` is echoed in the upgrade response; CONNECT / SUBSCRIBE /
// SEND work and frames come back as text messages while they are UTF-8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_stomp_v12_round_trip() {
    let broker = Broker::start();
    let mut c = WsStomp::connect(broker.web_stomp_addr()).await;
    c.send_text(&encode(
        "SUBSCRIBE",
        &[("destination", "/queue/ws"), ("id", "0"), ("receipt", "s")],
        b"",
        Version::V12,
    ))
    .await;
    let r = c.expect("RECEIPT").await;
    assert_eq!(r.get("receipt-id"), Some("s"));
    c.send_text(&encode(
        "SEND",
        &[("destination", "/queue/ws"), ("x-h", "a:b")],
        b"over websocket",
        Version::V12,
    ))
    .await;
    let m = c.expect("MESSAGE").await;
    assert_eq!(m.body, b"over websocket", "{m:?}");
    assert_eq!(m.get("x-h"), Some("a:b"), "{m:?}");
    assert!(
        c.kinds.iter().all(|&text| text),
        "UTF-8 frames should arrive as text messages: {:?}",
        c.kinds
    );
}

// A STOMP frame split across two WebSocket messages (CONNECT cut in its
// header, SEND cut inside a binary body) is reassembled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_stomp_frame_split_across_two_messages() {
    let broker = Broker::start();
    let (mut c, chosen) = WsStomp::open(broker.web_stomp_addr(), "v12.stomp").await;
    assert_eq!(chosen.as_deref(), Some("v12.stomp"));
    let connect = encode(
        "CONNECT",
        &[("accept-version", "1.2"), ("host", "/")],
        b"",
        Version::V12,
    );
    let (a, b) = connect.split_at(12);
    c.send_text(a).await;
    c.send_text(b).await;
    c.expect("CONNECTED").await;
    c.send_text(&encode(
        "SUBSCRIBE",
        &[
            ("destination", "/queue/split"),
            ("id", "0"),
            ("receipt", "s"),
        ],
        b"",
        Version::V12,
    ))
    .await;
    c.expect("RECEIPT").await;
    let len = BINARY.len().to_string();
    let send = encode(
        "SEND",
        &[("destination", "/queue/split"), ("content-length", &len)],
        BINARY,
        Version::V12,
    );
    let cut = send.len() - BINARY.len() / 2;
    c.send_binary(&send[..cut]).await;
    c.send_binary(&send[cut..]).await;
    let m = c.expect("MESSAGE").await;
    assert_eq!(m.body, BINARY, "{m:?}");
    assert_eq!(
        c.kinds.last(),
        Some(&false),
        "a MESSAGE with a non-UTF-8 body cannot be a text message"
    );
}

// Two frames in one WebSocket message are both handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_stomp_two_frames_in_one_message() {
    let broker = Broker::start();
    let mut c = WsStomp::connect(broker.web_stomp_addr()).await;
    let mut both = encode(
        "SUBSCRIBE",
        &[("destination", "/queue/two"), ("id", "0")],
        b"",
        Version::V12,
    );
    both.extend(encode(
        "SEND",
        &[("destination", "/queue/two")],
        b"second frame",
        Version::V12,
    ));
    c.send_text(&both).await;
    let m = c.expect("MESSAGE").await;
    assert_eq!(m.body, b"second frame", "{m:?}");
    assert_eq!(m.get("subscription"), Some("0"), "{m:?}");
}

// Web-STOMP and STOMP over TCP share the broker: each reaches the other,
// binary bodies included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_stomp_and_tcp_stomp_interoperate() {
    let broker = Broker::start();
    let tcp_addr = broker.stomp_addr();
    let mut tcp = tokio::task::block_in_place(|| {
        let mut t = Client::connect(tcp_addr, Version::V12);
        t.receipt(
            "SUBSCRIBE",
            &[("destination", "/topic/bridge.to-tcp"), ("id", "t")],
            b"",
        );
        t
    });
    let mut ws = WsStomp::connect(broker.web_stomp_addr()).await;
    ws.send_text(&encode(
        "SUBSCRIBE",
        &[
            ("destination", "/topic/bridge.to-ws"),
            ("id", "w"),
            ("receipt", "s"),
        ],
        b"",
        Version::V12,
    ))
    .await;
    ws.expect("RECEIPT").await;
    let len = BINARY.len().to_string();
    ws.send_binary(&encode(
        "SEND",
        &[
            ("destination", "/topic/bridge.to-tcp"),
            ("content-length", &len),
        ],
        BINARY,
        Version::V12,
    ))
    .await;
    tokio::task::block_in_place(|| {
        let m = tcp.message();
        assert_eq!(m.body, BINARY, "WS → TCP: {m:?}");
        tcp.send_len("SEND", &[("destination", "/topic/bridge.to-ws")], BINARY);
    });
    let m = ws.expect("MESSAGE").await;
    assert_eq!(m.body, BINARY, "TCP → WS: {m:?}");
    tokio::task::block_in_place(|| tcp.disconnect());
}

// The first subprotocol the client offers that the server speaks is
// chosen; no offer at all is accepted too (as RabbitMQ does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_stomp_subprotocol_choice() {
    let broker = Broker::start();
    let addr = broker.web_stomp_addr();
    for (offer, want) in [
        ("v12.stomp", Some("v12.stomp")),
        ("v11.stomp", Some("v11.stomp")),
        ("v10.stomp", Some("v10.stomp")),
        ("mqtt, v11.stomp, v12.stomp", Some("v11.stomp")),
        ("", None),
    ] {
        let (mut c, chosen) = WsStomp::open(addr, offer).await;
        assert_eq!(chosen.as_deref(), want, "offer {offer:?}");
        c.send_text(&encode(
            "CONNECT",
            &[("accept-version", "1.0,1.1,1.2"), ("host", "/")],
            b"",
            Version::V12,
        ))
        .await;
        c.expect("CONNECTED").await;
    }
}

// A protocol error over WebSocket: ERROR, then the WebSocket closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_stomp_error_closes_the_websocket() {
    let broker = Broker::start();
    let mut c = WsStomp::connect(broker.web_stomp_addr()).await;
    c.send_text(b"FOO\n\n\0").await;
    let e = c.expect("ERROR").await;
    assert!(e.get("message").is_some(), "{e:?}");
    assert!(
        c.frame().await.is_none(),
        "WebSocket still open after ERROR"
    );
    // The listener still serves.
    let mut again = WsStomp::connect(broker.web_stomp_addr()).await;
    again
        .send_text(&encode(
            "DISCONNECT",
            &[("receipt", "bye")],
            b"",
            Version::V12,
        ))
        .await;
    let r = again.expect("RECEIPT").await;
    assert_eq!(r.get("receipt-id"), Some("bye"));
}

// ---------------------------------------------------------------------------
// Upgrade refusals

// Any path but /ws is a 404, on both listeners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_path_is_404() {
    let broker = Broker::start();
    for (addr, proto) in [
        (broker.web_stomp_addr(), "v12.stomp"),
        (broker.web_mqtt_addr(), "mqtt"),
    ] {
        for path in ["/", "/stomp", "/ws/x", "/mqtt"] {
            match open(addr, path, proto).await {
                Err(status) => assert_eq!(status, StatusCode::NOT_FOUND, "{addr}{path}"),
                Ok((_, chosen)) => panic!("upgrade on {addr}{path} accepted ({chosen:?})"),
            }
        }
    }
}

// Offering only subprotocols the listener does not speak is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_subprotocol_is_refused() {
    let broker = Broker::start();
    for (addr, proto) in [
        (broker.web_stomp_addr(), "mqtt"),
        (broker.web_stomp_addr(), "v13.stomp, chat"),
        (broker.web_mqtt_addr(), "v12.stomp"),
        (broker.web_mqtt_addr(), "mqttv5"),
    ] {
        match open(addr, "/ws", proto).await {
            Err(status) => assert!(
                status.is_client_error(),
                "{addr} offered {proto:?}: status {status}"
            ),
            Ok((_, chosen)) => panic!("{addr} accepted {proto:?} (chose {chosen:?})"),
        }
    }
}

// ---------------------------------------------------------------------------
// Web-MQTT

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

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(remaining_length(body.len()));
    out.extend_from_slice(body);
    out
}

fn mqtt_string(s: &str) -> Vec<u8> {
    let mut out = u16::try_from(s.len())
        .expect("short")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

/// MQTT 3.1.1 CONNECT: clean session, keep-alive 60.
fn mqtt_connect(id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    body.extend(mqtt_string(id));
    packet(0x10, &body)
}

fn mqtt_subscribe(pkid: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    body.extend(mqtt_string(filter));
    body.push(qos);
    packet(0x82, &body)
}

/// A QoS 0 PUBLISH.
fn mqtt_publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = mqtt_string(topic);
    body.extend_from_slice(payload);
    packet(0x30, &body)
}

/// A Web-MQTT client: binary messages in, MQTT packets out.
struct WsMqtt {
    ws: Ws,
    buf: Vec<u8>,
}

impl WsMqtt {
    async fn send(&mut self, bytes: &[u8]) {
        w!(self.ws.send(Message::binary(bytes.to_vec()))).expect("send");
    }

    /// The next packet: (first byte, body).
    async fn packet(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 2 {
                let mut len = 0usize;
                let mut shift = 0;
                let mut i = 1;
                let mut complete = false;
                while i < self.buf.len() && i <= 4 {
                    let b = self.buf[i];
                    len |= usize::from(b & 0x7f) << shift;
                    shift += 7;
                    i += 1;
                    if b & 0x80 == 0 {
                        complete = true;
                        break;
                    }
                }
                if complete && self.buf.len() >= i + len {
                    let first = self.buf[0];
                    let body = self.buf[i..i + len].to_vec();
                    self.buf.drain(..i + len);
                    return (first, body);
                }
            }
            let (data, text) = recv(&mut self.ws, STEP)
                .await
                .expect("Web-MQTT closed while waiting for a packet");
            assert!(!text, "MQTT must come as binary messages");
            self.buf.extend(data);
        }
    }
}

// Web-MQTT with subprotocol `mqtt`: a hand-built MQTT 3.1.1 CONNECT (split
// across two messages), SUBSCRIBE and PUBLISH; a message published over
// AMQP arrives, and the client's own PUBLISH reaches AMQP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_mqtt_connect_subscribe_publish() {
    let broker = Broker::start();
    let (ws, chosen) = open(broker.web_mqtt_addr(), "/ws", "mqtt")
        .await
        .unwrap_or_else(|s| panic!("Web-MQTT upgrade refused: {s}"));
    assert_eq!(chosen.as_deref(), Some("mqtt"));
    let mut m = WsMqtt {
        ws,
        buf: Vec::new(),
    };
    let connect = mqtt_connect("ws-client");
    m.send(&connect[..5]).await;
    m.send(&connect[5..]).await;
    let (first, body) = m.packet().await;
    assert_eq!((first, body.as_slice()), (0x20, &[0u8, 0][..]), "CONNACK");
    m.send(&mqtt_subscribe(1, "a/b", 0)).await;
    let (first, body) = m.packet().await;
    assert_eq!((first, body.as_slice()), (0x90, &[0u8, 1, 0][..]), "SUBACK");

    let (_conn, ch) = amqp(&broker).await;
    amqp_publish(&ch, "a.b", BINARY).await;
    let (first, body) = m.packet().await;
    assert_eq!(first & 0xf0, 0x30, "PUBLISH expected, got {first:#04x}");
    assert_eq!(first & 0x06, 0, "QoS 0 subscription gets QoS 0");
    let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    assert_eq!(&body[2..2 + topic_len], b"a/b");
    assert_eq!(&body[2 + topic_len..], BINARY, "payload");

    // And the other way: the WebSocket client publishes, AMQP receives.
    let q = w!(ch.queue_declare(
        "".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default()
    ))
    .expect("declare")
    .name()
    .as_str()
    .to_owned();
    w!(ch.queue_bind(
        q.as_str().into(),
        "amq.topic".into(),
        "from.ws".into(),
        QueueBindOptions::default(),
        FieldTable::default()
    ))
    .expect("bind");
    m.send(&mqtt_publish("from/ws", BINARY)).await;
    // PINGREQ → PINGRESP: the publish before it has been read.
    m.send(&[0xC0, 0x00]).await;
    let (first, _) = m.packet().await;
    assert_eq!(first, 0xD0, "PINGRESP");
    let deadline = Instant::now() + STEP;
    let got = loop {
        if let Some(g) = w!(ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }))
            .expect("basic.get")
        {
            break g;
        }
        assert!(
            Instant::now() < deadline,
            "Web-MQTT publish never reached AMQP"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(&got.delivery.data[..], BINARY);
    assert_eq!(got.delivery.routing_key.as_str(), "from.ws");

    // A clean DISCONNECT ends the WebSocket.
    m.send(&[0xE0, 0x00]).await;
    assert!(
        recv(&mut m.ws, STEP).await.is_none(),
        "WebSocket still open after DISCONNECT"
    );
}

// Web-MQTT also accepts `mqttv3.1`, and an MQTT client on it is served
// like one on TCP (a second client proves the first one's messages are
// routed per subscription).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_mqtt_accepts_mqttv31_and_routes_between_clients() {
    let broker = Broker::start();
    let addr = broker.web_mqtt_addr();
    let (ws, chosen) = open(addr, "/ws", "mqttv3.1")
        .await
        .unwrap_or_else(|s| panic!("Web-MQTT upgrade refused: {s}"));
    assert_eq!(chosen.as_deref(), Some("mqttv3.1"));
    let mut sub = WsMqtt {
        ws,
        buf: Vec::new(),
    };
    sub.send(&mqtt_connect("ws-sub")).await;
    assert_eq!(sub.packet().await.0, 0x20);
    sub.send(&mqtt_subscribe(7, "room/+", 0)).await;
    assert_eq!(sub.packet().await, (0x90, vec![0, 7, 0]));

    let (ws, _) = open(addr, "/ws", "mqtt").await.expect("second upgrade");
    let mut publ = WsMqtt {
        ws,
        buf: Vec::new(),
    };
    publ.send(&mqtt_connect("ws-pub")).await;
    assert_eq!(publ.packet().await.0, 0x20);
    let mut two = mqtt_publish("hall/1", b"not for room");
    two.extend(mqtt_publish("room/1", b"for room"));
    publ.send(&two).await;
    let (first, body) = sub.packet().await;
    assert_eq!(first & 0xf0, 0x30);
    let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    assert_eq!(&body[2..2 + topic_len], b"room/1");
    assert_eq!(&body[2 + topic_len..], b"for room");
    // hall/1 was published first on the same connection: had it matched
    // it would have come before room/1. Nothing else is waiting either:
    // PINGREQ's answer comes next.
    sub.send(&[0xC0, 0x00]).await;
    assert_eq!(sub.packet().await.0, 0xD0, "PINGRESP, not another PUBLISH");
}

// ---------------------------------------------------------------------------
// Garbage over WebSocket

/// `n` pseudo-random bytes (xorshift; fixed seeds keep failures replayable).
fn garbage(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_be_bytes()[0]
        })
        .collect()
}

// A binary message of random bytes on Web-STOMP: an ERROR, then the
// WebSocket closes within a second, as on TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_stomp_garbage_closes_within_a_second() {
    let broker = Broker::start();
    for seed in 1..=6 {
        let (mut c, _) = WsStomp::open(broker.web_stomp_addr(), "v12.stomp").await;
        let bytes = garbage(seed, 48 * usize::try_from(seed).expect("small"));
        c.send_binary(&bytes).await;
        let within = Duration::from_secs(1);
        let e = tokio::time::timeout(within, c.frame())
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: no ERROR within {within:?}"))
            .unwrap_or_else(|| panic!("seed {seed}: closed without an ERROR"));
        assert_eq!(e.command, "ERROR", "seed {seed}: {e:?}");
        let closed = tokio::time::timeout(within, c.frame())
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: still open {within:?} after the ERROR"));
        assert!(
            closed.is_none(),
            "seed {seed}: more after the ERROR: {closed:?}"
        );
    }
}

// Random bytes on Web-MQTT: the WebSocket closes within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_mqtt_garbage_closes_within_a_second() {
    let broker = Broker::start();
    for seed in 1..=6 {
        let (mut ws, _) = open(broker.web_mqtt_addr(), "/ws", "mqtt")
            .await
            .unwrap_or_else(|s| panic!("Web-MQTT upgrade refused: {s}"));
        let bytes = garbage(seed, 48);
        w!(ws.send(Message::binary(bytes))).expect("send");
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, ws.next()).await {
                Err(_) => panic!("seed {seed}: Web-MQTT still open a second after garbage"),
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => break,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}
