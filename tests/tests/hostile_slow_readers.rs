//! Never-reading subscribers on MQTT and STOMP (issue #7), as
//! `never_reading_consumer_does_not_stall_others` in `amqp_limits.rs` is for
//! AMQP: clients subscribe with tiny receive buffers and then stop reading
//! their sockets while a publisher pushes [`N`] persistent messages of
//! [`BODY`] bytes. The broker has no slow-consumer disconnect for these
//! protocols (docs/architecture.md, Backpressure): it stops writing to a
//! connection whose output is over 1 MiB, the queue stops handing that
//! consumer messages once its credit is used up, and the rest wait in the
//! subscriber's queue. So:
//!
//! * a well-behaved subscriber to the same topic receives everything, about
//!   as soon as it is published;
//! * the publisher is never blocked: every PUBACK / RECEIPT arrives, bounded
//!   by [`BOUND`] (and no single write waits longer than the clients' write
//!   timeout);
//! * the broker's RSS grows by roughly the messages held for the stuck
//!   subscribers, far below [`RSS_GROWTH_BOUND`] (the figure is printed);
//! * nothing is lost: a stuck clean/auto-ack subscriber that starts reading
//!   gets every message, and a stuck persistent subscriber's durable queue
//!   holds every message across a `kill -9` of the broker.

#[macro_use]
mod common;
#[path = "common/mqtt.rs"]
mod mqtt;
#[path = "common/stomp.rs"]
mod stomp;

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::STEP;
use lapin::options::QueueDeclareOptions;
use stomp::{Frame, Parser, Version, encode};
use switchyard_tests::Broker;
use tokio::net::TcpSocket;

/// Messages published.
const N: usize = 20_000;

/// Bytes per message body.
const BODY: usize = 1024;

/// `SO_RCVBUF` of the never-reading subscribers (the kernel rounds it up to
/// its minimum), so that little of what the broker writes hides in the
/// socket.
const RCVBUF: u32 = 4096;

/// Bound on publishing everything and the well-behaved subscriber getting
/// it, and on draining a queue afterwards.
const BOUND: Duration = Duration::from_secs(60);

/// Bound on the broker's RSS growth.
const RSS_GROWTH_BOUND: u64 = 200 << 20;

/// A body starting with its index as eight digits.
fn body(i: usize) -> Vec<u8> {
    let mut b = format!("{i:08}").into_bytes();
    b.resize(BODY, b'.');
    b
}

/// The index [`body`] wrote.
fn index(body: &[u8]) -> usize {
    std::str::from_utf8(body.get(..8).expect("body of at least 8 bytes"))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected body {:?}", String::from_utf8_lossy(body)))
}

/// Asserts that `got` holds every index below [`N`] and nothing else
/// (repeats are allowed: redeliveries the protocol permits).
#[track_caller]
fn assert_all(what: &str, got: &[usize]) {
    let distinct: BTreeSet<usize> = got.iter().copied().collect();
    let missing = N - distinct.range(..N).count();
    assert!(
        missing == 0 && distinct.len() == N,
        "{what}: {} messages, {} distinct, {missing} of {N} missing (first missing: {:?})",
        got.len(),
        distinct.len(),
        (0..N).find(|i| !distinct.contains(i))
    );
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

/// A blocking connection to `addr` with a [`RCVBUF`]-byte receive buffer.
async fn small_rcvbuf(addr: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(RCVBUF).expect("SO_RCVBUF");
    let stream = t!(sock.connect(addr)).expect("connect");
    let stream = stream.into_std().expect("into std");
    stream.set_nonblocking(false).expect("blocking");
    stream
}

/// Awaits `fut` (at most [`BOUND`]), sampling the broker's RSS every 100 ms;
/// returns its output and the largest RSS seen.
async fn watched<T>(broker: &Broker, what: &str, fut: impl Future<Output = T>) -> (T, u64) {
    let mut fut = std::pin::pin!(fut);
    let deadline = Instant::now() + BOUND;
    let mut peak = 0;
    loop {
        peak = peak.max(broker.rss_bytes().unwrap_or(0));
        match tokio::time::timeout(Duration::from_millis(100), &mut fut).await {
            Ok(v) => return (v, peak.max(broker.rss_bytes().unwrap_or(0))),
            Err(_) if Instant::now() >= deadline => panic!("{what}: not done within {BOUND:?}"),
            Err(_) => {}
        }
    }
}

/// Runs blocking client code on its own thread; its panics become ours.
async fn thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Ready messages in `queue`, by a passive `queue.declare` over AMQP.
async fn ready_in(broker: &Broker, queue: &str) -> u32 {
    let conn = common::connect(broker).await;
    let ch = common::channel(&conn).await;
    let opts = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let count = common::declare(&ch, queue, opts).await.message_count();
    t!(conn.close(200, "bye".into())).expect("close");
    count
}

fn report(what: &str, rss_before: u64, peak: u64, rss_after: u64, publish: Duration) {
    eprintln!(
        "{what}: {N} × {BODY} B published in {publish:?} ({:.0} msg/s); broker RSS {:.1} MiB \
         before, peak {:.1} MiB, {:.1} MiB after; growth {:.1} MiB",
        N as f64 / publish.as_secs_f64(),
        mib(rss_before),
        mib(peak),
        mib(rss_after),
        mib(peak.saturating_sub(rss_before))
    );
    assert!(
        peak.saturating_sub(rss_before) < RSS_GROWTH_BOUND,
        "{what}: broker RSS grew by {:.1} MiB",
        mib(peak.saturating_sub(rss_before))
    );
}

// ---------------------------------------------------------------------------
// MQTT

const MQTT_FILTER: &str = "slow/#";
const MQTT_TOPIC: &str = "slow/mqtt";

/// Publishes [`N`] QoS 1 messages pipelined (a writer thread) and waits for
/// every PUBACK; returns how long that took.
fn mqtt_publish_all(addr: SocketAddr) -> Duration {
    let (mut c, _) = mqtt::Client::connect(addr, "slow-publisher", true);
    let sock = c.stream().try_clone().expect("clone socket");
    sock.set_write_timeout(Some(mqtt::STEP))
        .expect("write timeout");
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut w = BufWriter::with_capacity(64 * 1024, sock);
        for i in 0..N {
            let pkid = u16::try_from(i + 1).expect("N < 65536: packet ids stay unique");
            w.write_all(&mqtt::publish(MQTT_TOPIC, 1, pkid, &body(i)))
                .unwrap_or_else(|e| panic!("publisher blocked: write of message {i}: {e}"));
        }
        w.flush().expect("publisher flush");
    });
    let deadline = start + BOUND;
    let mut acked = BTreeSet::new();
    while acked.len() < N {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.read_packet(left) {
            Ok(p) if p.first == mqtt::PUBACK => {
                acked.insert(p.pkid());
            }
            other => panic!(
                "publisher got {} of {N} PUBACKs within {:?}, then {other:?}",
                acked.len(),
                start.elapsed()
            ),
        }
    }
    let took = start.elapsed();
    writer.join().expect("publisher writer thread");
    c.disconnect();
    took
}

/// Reads PUBLISHes (acking QoS 1) until `n` have arrived; returns their
/// indices in arrival order.
fn mqtt_receive(c: &mut mqtt::Client, what: &str, n: usize) -> Vec<usize> {
    let start = Instant::now();
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let left = (start + BOUND).saturating_duration_since(Instant::now());
        let p = c.read_packet(left).unwrap_or_else(|e| {
            panic!(
                "{what}: got {} of {n} within {:?}, then {e:?}",
                got.len(),
                start.elapsed()
            )
        });
        let publish = p
            .publish()
            .unwrap_or_else(|| panic!("{what}: expected PUBLISH, got {p:?}"));
        if publish.qos == 1 {
            c.send(&mqtt::puback(publish.pkid));
        }
        got.push(index(&publish.payload));
    }
    got
}

/// An MQTT subscriber at QoS 0 (clean session) and one at QoS 1 (persistent
/// session) stop reading; a QoS 1 subscriber that reads gets everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_never_reading_subscribers_do_not_stall_others() {
    let mut broker = Broker::start();
    let addr = broker.mqtt_addr();
    let (q0, q1) = (small_rcvbuf(addr).await, small_rcvbuf(addr).await);
    let (stuck_q0, stuck_q1, mut good) = thread(move || {
        let (mut q0, _) = mqtt::Client::connect_over(q0, "stuck-q0", true);
        q0.subscribe(MQTT_FILTER, 0);
        let (mut q1, _) = mqtt::Client::connect_over(q1, "stuck-q1", false);
        q1.subscribe(MQTT_FILTER, 1);
        let (mut good, _) = mqtt::Client::connect(addr, "good", true);
        good.subscribe(MQTT_FILTER, 1);
        (q0, q1, good)
    })
    .await;
    let rss_before = broker.rss_bytes().expect("broker RSS");

    let started = Instant::now();
    let publisher = thread(move || mqtt_publish_all(addr));
    let receiver = thread(move || {
        let got = mqtt_receive(&mut good, "well-behaved subscriber", N);
        (got, Instant::now(), good)
    });
    let ((publish, (got, good_done, good)), peak) = watched(&broker, "MQTT publish", async {
        let publish = publisher.await;
        (publish, receiver.await)
    })
    .await;
    assert_all("well-behaved QoS 1 subscriber", &got);
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "well-behaved subscriber got messages out of order"
    );
    let lag = good_done.saturating_duration_since(started + publish);
    eprintln!("MQTT well-behaved subscriber had all {N} {lag:?} after the last PUBACK");
    assert!(lag < STEP, "well-behaved subscriber lagged {lag:?}");
    report(
        "MQTT",
        rss_before,
        peak,
        broker.rss_bytes().unwrap_or(0),
        publish,
    );
    drop(good);
    let held = ready_in(&broker, "mqtt-session-stuck-q1").await;
    eprintln!("MQTT: {held} of {N} messages wait in the stuck QoS 1 session's queue");
    assert!(
        held > 0,
        "all {N} messages written to a client that never reads"
    );

    // The QoS 0 subscriber starts reading: nothing was dropped for it.
    let mut stuck_q0 = stuck_q0;
    let drained = thread(move || {
        let got = mqtt_receive(&mut stuck_q0, "stuck QoS 0 subscriber", N);
        stuck_q0.ping();
        got
    })
    .await;
    assert_all("stuck QoS 0 subscriber after it starts reading", &drained);

    // The persistent session's durable queue holds every message, on disk:
    // drop the stuck connection, kill -9 the broker, and drain the session.
    drop(stuck_q1);
    broker.kill();
    broker.restart();
    let addr = broker.mqtt_addr();
    let recovered = thread(move || {
        let (mut c, present) = mqtt::Client::connect(addr, "stuck-q1", false);
        assert!(present, "persistent session lost");
        let mut got = mqtt_receive(&mut c, "recovered persistent session", N);
        // Deliveries that were in flight to the stuck connection may come
        // again (DUP); anything past N must be such a repeat.
        while let Ok(p) = c.read_packet(Duration::from_millis(500)) {
            let publish = p.publish().expect("PUBLISH");
            c.send(&mqtt::puback(publish.pkid));
            got.push(index(&publish.payload));
        }
        c.disconnect();
        got
    })
    .await;
    assert_all("persistent session after kill -9", &recovered);
}

// ---------------------------------------------------------------------------
// STOMP

const STOMP_TOPIC: &str = "/topic/slow.stomp";

/// A STOMP 1.2 connection driven by hand, for subscribers that stop reading
/// on a socket whose buffer size the test chose.
struct RawStomp {
    sock: TcpStream,
    parser: Parser,
}

impl RawStomp {
    /// CONNECT on `sock`, then SUBSCRIBE with `headers` and wait for its
    /// RECEIPT.
    fn subscribe(sock: TcpStream, headers: &[(&str, &str)]) -> Self {
        sock.set_write_timeout(Some(STEP)).expect("write timeout");
        let mut c = Self {
            sock,
            parser: Parser::new(),
        };
        c.send(
            "CONNECT",
            &[
                ("accept-version", "1.2"),
                ("host", "/"),
                ("login", "guest"),
                ("passcode", "guest"),
                ("heart-beat", "0,0"),
            ],
        );
        let f = c.frame(Instant::now() + STEP);
        assert_eq!(f.command, "CONNECTED", "{f:?}");
        c.parser.version = Version::V12;
        let mut all = headers.to_vec();
        all.push(("receipt", "subscribed"));
        c.send("SUBSCRIBE", &all);
        let f = c.frame(Instant::now() + STEP);
        assert_eq!(f.command, "RECEIPT", "{f:?}");
        c
    }

    fn send(&mut self, command: &str, headers: &[(&str, &str)]) {
        let bytes = encode(command, headers, b"", Version::V12);
        self.sock
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("write {command}: {e}"));
    }

    /// The next frame before `deadline`; panics on timeout or close.
    fn frame(&mut self, deadline: Instant) -> Frame {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.parser.next() {
                Ok(Some(f)) => return f,
                Ok(None) => {}
                Err(e) => panic!("not STOMP: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no STOMP frame in time");
            self.sock.set_read_timeout(Some(left)).expect("timeout");
            match self.sock.read(&mut buf) {
                Ok(0) => panic!("broker closed the connection"),
                Ok(n) => self.parser.push(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Reads `n` MESSAGE frames; returns their indices and the last one.
    fn messages(&mut self, what: &str, n: usize) -> (Vec<usize>, Option<Frame>) {
        let deadline = Instant::now() + BOUND;
        let mut got = Vec::with_capacity(n);
        let mut last = None;
        while got.len() < n {
            let f = self.frame(deadline);
            assert_eq!(f.command, "MESSAGE", "{what}: {f:?}");
            got.push(index(&f.body));
            last = Some(f);
        }
        (got, last)
    }
}

/// Sends [`N`] persistent messages to [`STOMP_TOPIC`] and a final RECEIPT,
/// which covers every SEND before it; returns how long that took.
fn stomp_publish_all(addr: SocketAddr) -> Duration {
    let mut p = stomp::Client::connect(addr, Version::V12);
    let start = Instant::now();
    for i in 0..N {
        // `send_len` panics if a write stays blocked for the client's write
        // timeout: the publisher must never be stalled that long.
        p.send_len(
            "SEND",
            &[("destination", STOMP_TOPIC), ("persistent", "true")],
            &body(i),
        );
    }
    p.receipt("SEND", &[("destination", "/queue/slow-marker")], b"end");
    let took = start.elapsed();
    p.disconnect();
    took
}

/// STOMP subscribers with ack auto and ack client (durable) stop reading;
/// an auto-ack subscriber that reads gets everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_never_reading_subscribers_do_not_stall_others() {
    let mut broker = Broker::start();
    let addr = broker.stomp_addr();
    let (auto, client) = (small_rcvbuf(addr).await, small_rcvbuf(addr).await);
    let (stuck_auto, stuck_client, mut good) = thread(move || {
        let auto = RawStomp::subscribe(auto, &[("destination", STOMP_TOPIC), ("id", "stuck-auto")]);
        let client = RawStomp::subscribe(
            client,
            &[
                ("destination", STOMP_TOPIC),
                ("id", "stuck-client"),
                ("ack", "client"),
                ("durable", "true"),
                ("auto-delete", "false"),
            ],
        );
        let mut good = stomp::Client::connect(addr, Version::V12);
        good.receipt(
            "SUBSCRIBE",
            &[("destination", STOMP_TOPIC), ("id", "good")],
            b"",
        );
        (auto, client, good)
    })
    .await;
    let rss_before = broker.rss_bytes().expect("broker RSS");

    let started = Instant::now();
    let publisher = thread(move || stomp_publish_all(addr));
    let receiver = thread(move || {
        let deadline = Instant::now() + BOUND;
        let mut got = Vec::with_capacity(N);
        while got.len() < N {
            let left = deadline.saturating_duration_since(Instant::now());
            match good.read(left) {
                Ok(f) if f.command == "MESSAGE" => got.push(index(&f.body)),
                other => panic!(
                    "well-behaved subscriber: got {} of {N}, then {other:?}",
                    got.len()
                ),
            }
        }
        (got, Instant::now(), good)
    });
    let ((publish, (got, good_done, good)), peak) = watched(&broker, "STOMP publish", async {
        let publish = publisher.await;
        (publish, receiver.await)
    })
    .await;
    assert_all("well-behaved auto-ack subscriber", &got);
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "well-behaved subscriber got messages out of order"
    );
    let lag = good_done.saturating_duration_since(started + publish);
    eprintln!("STOMP well-behaved subscriber had all {N} {lag:?} after the last RECEIPT");
    assert!(lag < STEP, "well-behaved subscriber lagged {lag:?}");
    report(
        "STOMP",
        rss_before,
        peak,
        broker.rss_bytes().unwrap_or(0),
        publish,
    );
    thread(move || good.disconnect()).await;
    // Unlimited unacked deliveries (ack client, no prefetch-count), yet
    // 20 MB cannot all sit in a 4 KiB socket buffer: the broker held the
    // rest back in the queue instead of buffering it for the stuck client.
    let held = ready_in(&broker, "stomp-subscription-stuck-client").await;
    eprintln!("STOMP: {held} of {N} messages wait in the stuck ack:client subscription's queue");
    assert!(
        held > 0,
        "all {N} messages written to a client that never reads"
    );

    // The auto-ack subscriber starts reading: nothing was dropped for it.
    let mut stuck_auto = stuck_auto;
    let (drained, _) = thread(move || stuck_auto.messages("stuck auto-ack subscriber", N)).await;
    assert_all(
        "stuck auto-ack subscriber after it starts reading",
        &drained,
    );

    // The durable subscription's queue holds every message, on disk: drop
    // the stuck connection (its unacked deliveries return to the queue),
    // kill -9 the broker, and consume the subscription again.
    drop(stuck_client);
    broker.kill();
    broker.restart();
    let addr = broker.stomp_addr();
    let recovered = thread(move || {
        let sock = TcpStream::connect(addr).expect("connect");
        let mut c = RawStomp::subscribe(
            sock,
            &[
                ("destination", STOMP_TOPIC),
                ("id", "stuck-client"),
                ("ack", "client"),
                ("durable", "true"),
                ("auto-delete", "false"),
            ],
        );
        let (got, last) = c.messages("recovered durable subscription", N);
        let last = last.expect("N > 0");
        c.send("ACK", &[("id", last.header("ack")), ("receipt", "acked")]);
        let f = c.frame(Instant::now() + STEP);
        assert_eq!(f.command, "RECEIPT", "{f:?}");
        got
    })
    .await;
    assert_all("durable subscription after kill -9", &recovered);
}
