//! Hostile clients at scale (issue #7): ten thousand half-open connections
//! spread over the AMQP, MQTT and STOMP listeners. While they are open,
//! well-behaved clients of every protocol are served and the broker's memory
//! stays bounded; at the handshake deadline the broker drops every one of
//! them, and durable messages published before are still there.
//!
//! Limits: the test process and the broker may each hold 20 000 file
//! descriptors here; the test keeps [`HALF_OPEN`] sockets plus a handful of
//! clients. The broker's per-address limit (`*.max_connections_per_ip`,
//! default 4096 per listener) is left at its default: the half-open sockets
//! are bound to [`SOURCES`] loopback addresses 127.0.0.2, 127.0.0.3, … before
//! connecting (Linux routes all of 127/8 to loopback), about 334 per address
//! and listener, so they never reach it, and the well-behaved clients on
//! 127.0.0.1 do not compete with them for slots.

#[macro_use]
mod common;
#[path = "common/mqtt.rs"]
mod mqtt;
#[path = "common/stomp.rs"]
mod stomp;

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::raw::blocking;
use common::*;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use switchyard_tests::Broker;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

/// Half-open connections, a third per listener.
const HALF_OPEN: usize = 10_000;

/// Source addresses 127.0.0.2 ..= 127.0.0.(1 + SOURCES).
const SOURCES: usize = 10;

/// Every fourth half-open connection sends a partial header and stops.
const PARTIAL_EVERY: usize = 4;

/// `amqp.handshake_timeout_ms`, `mqtt.connect_timeout_ms` and
/// `stomp.connect_timeout_ms`. Long enough for the well-behaved clients to
/// finish while every half-open socket is still open (checked, not assumed),
/// short enough to keep the test well under a minute.
const HANDSHAKE: Duration = Duration::from_secs(4);

/// Connects in flight at once while opening the half-open sockets.
const CONNECT_CONCURRENCY: usize = 128;

/// Bound on the broker's RSS growth while the half-open sockets are open.
const RSS_GROWTH_BOUND: u64 = 200 << 20;

/// The broker's file descriptors beyond its baseline that may remain once
/// the half-open sockets are closed (the well-behaved clients' connections).
const FD_SLACK: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Amqp,
    Mqtt,
    Stomp,
}

impl Proto {
    fn of(i: usize) -> Self {
        match i % 3 {
            0 => Self::Amqp,
            1 => Self::Mqtt,
            _ => Self::Stomp,
        }
    }

    /// The start of a first packet that a client stops sending part way.
    fn partial(self) -> &'static [u8] {
        match self {
            // Six of the eight protocol-header bytes.
            Self::Amqp => b"AMQP\x00\x00",
            // CONNECT announcing 32 bytes of which 4 arrive.
            Self::Mqtt => &[0x10, 32, 0x00, 0x04, b'M', b'Q'],
            // CONNECT with its headers but no blank line or NUL.
            Self::Stomp => b"CONNECT\naccept-version:1.2\nhost:/\n",
        }
    }
}

/// Opens half-open connection number `i`: from 127.0.0.(2 + i % SOURCES)
/// to its protocol's listener, sending nothing or a partial header.
async fn open_half(i: usize, targets: [SocketAddr; 3]) -> io::Result<TcpStream> {
    let proto = Proto::of(i);
    let target = targets[i % 3];
    let host = 2 + u8::try_from(i % SOURCES).expect("few sources");
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), 0)))?;
    let mut stream = sock.connect(target).await?;
    if i % PARTIAL_EVERY == PARTIAL_EVERY - 1 {
        stream.write_all(proto.partial()).await?;
    }
    stream.into_std()
}

/// Polls `f` every 50 ms until it holds or `within` passes; returns how long
/// it took, or `None`.
async fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

/// Whether the broker has closed `s`: a non-blocking read sees EOF or a
/// reset (after whatever the broker wrote first, e.g. a STOMP ERROR).
fn closed_by_broker(s: &TcpStream) -> bool {
    s.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 4096];
    let mut reader = s;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// Persistent messages put in durable places before the flood: an AMQP
/// durable queue, a STOMP `/queue/` and an offline MQTT persistent session.
async fn publish_before(broker: &Broker) {
    let conn = connect(broker).await;
    let ch = confirm_channel(&conn).await;
    declare(
        &ch,
        "hostile-before",
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
    )
    .await;
    let c = publish_with(&ch, "", "hostile-before", b"amqp before", persistent()).await;
    assert!(c.is_ack(), "persistent publish not confirmed: {c:?}");
    t!(conn.close(200, "bye".into())).expect("close");

    let (stomp_addr, mqtt_addr) = (broker.stomp_addr(), broker.mqtt_addr());
    blocking(move || {
        let mut s = stomp::Client::connect(stomp_addr, stomp::Version::V12);
        s.receipt(
            "SEND",
            &[("destination", "/queue/hostile-before-stomp")],
            b"stomp before",
        );
        s.disconnect();

        let (mut sub, _) = mqtt::Client::connect(mqtt_addr, "hostile-before", false);
        sub.subscribe("hostile/before", 1);
        sub.disconnect();
        let (mut p, _) = mqtt::Client::connect(mqtt_addr, "hostile-before-pub", true);
        p.publish_qos1("hostile/before", 1, b"mqtt before");
        p.disconnect();
    })
    .await;
}

/// Each protocol's well-behaved client connects, publishes a persistent
/// message and receives it.
async fn well_behaved_round_trips(broker: &Broker) {
    let conn = connect(broker).await;
    let ch = confirm_channel(&conn).await;
    declare(
        &ch,
        "hostile-live",
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
    )
    .await;
    let mut sub = Sub::start(&ch, "hostile-live", BasicConsumeOptions::default())
        .await
        .expect("consume");
    let c = publish_with(&ch, "", "hostile-live", b"amqp live", persistent()).await;
    assert!(c.is_ack(), "persistent publish not confirmed: {c:?}");
    assert_eq!(sub.next_acked().await, "amqp live");
    t!(conn.close(200, "bye".into())).expect("close");

    let (stomp_addr, mqtt_addr) = (broker.stomp_addr(), broker.mqtt_addr());
    blocking(move || {
        let mut s = stomp::Client::connect(stomp_addr, stomp::Version::V12);
        s.receipt(
            "SUBSCRIBE",
            &[("destination", "/queue/hostile-live-stomp"), ("id", "s")],
            b"",
        );
        s.receipt(
            "SEND",
            &[("destination", "/queue/hostile-live-stomp")],
            b"stomp live",
        );
        let m = s.message();
        assert_eq!(m.body_str(), "stomp live");
        assert_eq!(m.get("persistent"), Some("true"), "{m:?}");
        s.disconnect();

        let (mut m, _) = mqtt::Client::connect(mqtt_addr, "hostile-live", true);
        m.subscribe("hostile/live", 1);
        m.send(&mqtt::publish("hostile/live", 1, 7, b"mqtt live"));
        // PUBACK and the PUBLISH may come in either order.
        let (mut acked, mut got) = (false, None);
        while !acked || got.is_none() {
            let p = m.expect_packet();
            if p.first == mqtt::PUBACK {
                assert_eq!(p.pkid(), 7, "{p:?}");
                acked = true;
            } else {
                let publish = p.publish().unwrap_or_else(|| panic!("unexpected {p:?}"));
                m.send(&mqtt::puback(publish.pkid));
                got = Some(publish);
            }
        }
        let got = got.expect("loop ends with a PUBLISH");
        assert_eq!((got.qos, got.payload.as_slice()), (1, &b"mqtt live"[..]));
        m.disconnect();
    })
    .await;
}

/// The messages of [`publish_before`] are delivered.
async fn before_messages_delivered(broker: &Broker) {
    let conn = connect(broker).await;
    let ch = channel(&conn).await;
    let got = get(&ch, "hostile-before").await.expect("AMQP message kept");
    assert_eq!(got.delivery.data, b"amqp before");
    t!(got.delivery.ack(Default::default())).expect("ack");

    let (stomp_addr, mqtt_addr) = (broker.stomp_addr(), broker.mqtt_addr());
    blocking(move || {
        let mut s = stomp::Client::connect(stomp_addr, stomp::Version::V12);
        s.receipt(
            "SUBSCRIBE",
            &[("destination", "/queue/hostile-before-stomp"), ("id", "b")],
            b"",
        );
        assert_eq!(s.message().body_str(), "stomp before");
        s.disconnect();

        let (mut m, present) = mqtt::Client::connect(mqtt_addr, "hostile-before", false);
        assert!(present, "persistent MQTT session lost");
        let p = m.next_publish();
        assert_eq!(
            (p.topic.as_str(), p.payload.as_slice()),
            ("hostile/before", &b"mqtt before"[..])
        );
        m.ping();
        m.disconnect();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_half_open_connections() {
    let ms = HANDSHAKE.as_millis();
    let broker = Broker::start_with_config(&format!(
        "[amqp]\nhandshake_timeout_ms = {ms}\n\
         [mqtt]\nconnect_timeout_ms = {ms}\n\
         [stomp]\nconnect_timeout_ms = {ms}\n"
    ));
    publish_before(&broker).await;
    // Let the clients' sockets above go before taking the baseline.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fds_before = broker.open_fds().expect("broker fd count");
    let rss_before = broker.rss_bytes().expect("broker RSS");

    let targets = [broker.amqp_addr(), broker.mqtt_addr(), broker.stomp_addr()];
    let started = Instant::now();
    let half_open: Vec<TcpStream> = t!(futures_util::stream::iter(0..HALF_OPEN)
        .map(|i| open_half(i, targets))
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect::<Vec<_>>())
    .into_iter()
    .collect::<io::Result<_>>()
    .expect("open a half-open connection");
    let opened = started.elapsed();
    let accepted = wait_until(STEP, || {
        broker
            .open_fds()
            .is_some_and(|n| n >= fds_before + HALF_OPEN)
    })
    .await;
    let accepted = accepted.unwrap_or_else(|| {
        panic!(
            "broker holds {:?} fds {STEP:?} after {HALF_OPEN} connects (baseline {fds_before})",
            broker.open_fds()
        )
    });
    eprintln!(
        "{HALF_OPEN} half-open connections opened in {opened:?}, all accepted {accepted:?} later"
    );
    let rss_open = broker.rss_bytes().expect("broker RSS");

    let live = Instant::now();
    well_behaved_round_trips(&broker).await;
    let live = live.elapsed();
    let fds_during = broker.open_fds().expect("broker fd count");
    let rss_during = broker.rss_bytes().expect("broker RSS");
    // The round trips happened while every half-open socket was still open.
    assert!(
        fds_during >= fds_before + HALF_OPEN,
        "half-open sockets closed before the well-behaved clients finished \
         ({fds_during} fds, baseline {fds_before}; {:?} since the first connect, deadline {HANDSHAKE:?})",
        started.elapsed()
    );
    let growth = rss_during.saturating_sub(rss_before);
    eprintln!(
        "broker RSS: {:.1} MiB before, {:.1} MiB with {HALF_OPEN} half-open, {:.1} MiB after the \
         round trips ({live:?}); growth {:.1} MiB ({:.0} bytes per connection)",
        mib(rss_before),
        mib(rss_open),
        mib(rss_during),
        mib(growth),
        growth as f64 / HALF_OPEN as f64
    );
    assert!(
        growth < RSS_GROWTH_BOUND,
        "broker RSS grew by {:.1} MiB with {HALF_OPEN} half-open connections",
        mib(growth)
    );

    // The deadline passes: the broker closes every half-open socket.
    let dropped = wait_until(HANDSHAKE + STEP, || {
        broker
            .open_fds()
            .is_some_and(|n| n <= fds_before + FD_SLACK)
    })
    .await;
    let dropped = dropped.unwrap_or_else(|| {
        panic!(
            "broker still holds {:?} fds (baseline {fds_before}) {:?} after the first connect",
            broker.open_fds(),
            started.elapsed()
        )
    });
    let since_start = started.elapsed();
    let rss_after = broker.rss_bytes().expect("broker RSS");
    // The fd count allows some slack: poll the sockets themselves until
    // each has seen its close, bounded.
    let deadline = started + HANDSHAKE + STEP;
    let (closed, total) = blocking(move || {
        let total = half_open.len();
        let mut open = half_open;
        loop {
            open.retain(|s| !closed_by_broker(s));
            if open.is_empty() || Instant::now() >= deadline {
                return (total - open.len(), total);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await;
    eprintln!(
        "broker closed {closed} of {total} half-open sockets within {since_start:?} of the first \
         connect ({dropped:?} after the round trips; deadline {HANDSHAKE:?}); RSS then {:.1} MiB",
        mib(rss_after)
    );
    assert_eq!(closed, total, "half-open sockets the broker left open");
    assert!(
        since_start >= HANDSHAKE,
        "half-open sockets closed after {since_start:?}, before the {HANDSHAKE:?} deadline"
    );

    before_messages_delivered(&broker).await;
    // And a new client of each protocol is still served.
    well_behaved_round_trips(&broker).await;
    assert!(
        !broker.log().contains("panicked"),
        "broker panicked:\n{}",
        broker.log()
    );
}
