//! STOMP behaviours that clients and test suites written for RabbitMQ's
//! STOMP plugin check to the letter: ERROR wording, CONNECTED headers,
//! boolean spelling, destination syntax, queue arguments on SEND, durable
//! subscriptions, 1.2 ACK ids, RECEIPTs inside transactions and unknown
//! virtual hosts. Raw frames over a real socket to a real `switchyard`
//! process; lapin checks what the AMQP side sees. Every wait is bounded.

#[macro_use]
#[path = "common/stomp.rs"]
mod stomp;

use stomp::amqp;

use lapin::ExchangeKind;
use lapin::options::{BasicGetOptions, ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use std::net::SocketAddr;
use stomp::{Client, Frame, QUIET, STEP, Version};
use switchyard_tests::Broker;

fn v12(broker: &Broker) -> Client {
    Client::connect(broker.stomp_addr(), Version::V12)
}

/// Sends one frame, then expects exactly one ERROR and the close.
#[track_caller]
fn refused(c: &mut Client, command: &str, headers: &[(&str, &str)]) -> Frame {
    c.send(command, headers, b"");
    c.expect_error_and_close()
}

#[track_caller]
fn assert_error(e: &Frame, message: &str, body: &str) {
    assert_eq!(e.get("message"), Some(message), "{e:?}");
    assert_eq!(e.body_str(), body, "{e:?}");
    assert_eq!(e.get("version"), Some("1.0,1.1,1.2"), "{e:?}");
    assert_eq!(e.get("content-type"), Some("text/plain"), "{e:?}");
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// ERROR wording (one test per answer)

#[test]
fn duplicate_subscription_id() {
    let broker = Broker::start();
    let mut c = v12(&broker);
    c.receipt(
        "SUBSCRIBE",
        &[("id", "s1"), ("destination", "/queue/dup")],
        b"",
    );
    let e = refused(
        &mut c,
        "SUBSCRIBE",
        &[("id", "s1"), ("destination", "/queue/dup")],
    );
    assert_error(
        &e,
        "Duplicated subscription identifier",
        "A subscription identified by 'T_s1' already exists.",
    );
}

#[test]
fn malformed_destinations_are_invalid() {
    let broker = Broker::start();
    for (dest, body) in [
        ("/queue/a/b", "'/a/b' is not a valid queue destination\n"),
        ("/topic/a/b", "'/a/b' is not a valid topic destination\n"),
        (
            "/exchange/amq.direct/key/extra",
            "'/amq.direct/key/extra' is not a valid exchange destination\n",
        ),
        ("/queue/", "'/' is not a valid queue destination\n"),
        (
            "/amq/queue/a/b",
            "'/a/b' is not a valid amqqueue destination\n",
        ),
    ] {
        for command in ["SEND", "SUBSCRIBE"] {
            let mut c = v12(&broker);
            let e = refused(&mut c, command, &[("destination", dest), ("id", "s")]);
            assert_error(&e, "Invalid destination", body);
        }
    }
}

#[test]
fn unknown_destination_prefix() {
    let broker = Broker::start();
    let mut c = v12(&broker);
    let e = refused(&mut c, "SEND", &[("destination", "/foo/bar")]);
    assert_error(
        &e,
        "Unknown destination",
        "'/foo/bar' is not a valid destination.\nValid destination types are: \
         /temp-queue, /exchange, /topic, /queue, /amq/queue, /reply-queue/.\n",
    );
}

#[test]
fn missing_destination() {
    let broker = Broker::start();
    for (command, body) in [
        ("SEND", "'SEND' must include a 'destination' header\n"),
        (
            "SUBSCRIBE",
            "'SUBSCRIBE' must include a 'destination' header\n",
        ),
    ] {
        let mut c = v12(&broker);
        let e = refused(&mut c, command, &[("id", "s")]);
        assert_error(&e, "Missing destination", body);
    }
}

#[test]
fn no_common_version() {
    let broker = Broker::start();
    let (mut c, e) = Client::connect_with(
        broker.stomp_addr(),
        "CONNECT",
        &[("accept-version", "2.0,3.1"), ("host", "/")],
    );
    assert_eq!(e.command, "ERROR", "{e:?}");
    assert_error(
        &e,
        "Version mismatch",
        "Supported versions are 1.0,1.1,1.2\n",
    );
    let (rest, closed) = c.read_to_close(STEP);
    assert!(rest.is_empty() && closed, "{rest:?} closed={closed}");
}

#[test]
fn unknown_command() {
    let broker = Broker::start();
    let mut c = v12(&broker);
    c.write(b"FOO\nx:y\n\n\0").expect("write");
    let e = c.expect_error_and_close();
    assert_error(&e, "Bad command", "Could not interpret command \"FOO\"\n");
}

#[test]
fn bad_login() {
    let broker = Broker::start();
    let (mut c, e) = Client::connect_with(
        broker.stomp_addr(),
        "CONNECT",
        &[
            ("accept-version", "1.2"),
            ("host", "/"),
            ("login", "bob"),
            ("passcode", "secret"),
        ],
    );
    assert_error(&e, "Bad CONNECT", "Access refused for user 'bob'");
    let (_, closed) = c.read_to_close(STEP);
    assert!(closed);
}

#[test]
fn message_id_on_send_is_refused_before_the_destination() {
    let broker = Broker::start();
    for headers in [
        &[("destination", "/queue/q"), ("message-id", "m1")][..],
        // No destination either: the header is what RabbitMQ names.
        &[("message-id", "m1")][..],
    ] {
        let mut c = v12(&broker);
        let e = refused(&mut c, "SEND", headers);
        assert_error(
            &e,
            "Invalid header",
            "'message-id' is not allowed on 'SEND'.\n",
        );
    }
}

// ---------------------------------------------------------------------------
// CONNECTED, booleans, destinations

#[test]
fn connected_always_carries_heart_beat() {
    let broker = Broker::start();
    // STOMP 1.0: no accept-version.
    let (_c, f) = Client::connect_with(
        broker.stomp_addr(),
        "CONNECT",
        &[("login", "guest"), ("passcode", "guest")],
    );
    assert_eq!(f.command, "CONNECTED", "{f:?}");
    assert_eq!(f.get("heart-beat"), Some("0,0"), "{f:?}");
    let c = v12(&broker);
    drop(c);
}

#[test]
fn nack_requeue_false_in_any_case_drops_the_message() {
    let broker = Broker::start();
    let mut c = v12(&broker);
    c.receipt("SEND", &[("destination", "/queue/nack-case")], b"one");
    c.receipt(
        "SUBSCRIBE",
        &[
            ("id", "s"),
            ("destination", "/queue/nack-case"),
            ("ack", "client-individual"),
        ],
        b"",
    );
    let m = c.message();
    c.receipt(
        "NACK",
        &[("id", m.header("ack")), ("requeue", "False")],
        b"",
    );
    c.assert_quiet(QUIET);
    // Not requeued: a new subscriber finds the queue empty.
    c.receipt("UNSUBSCRIBE", &[("id", "s")], b"");
    c.receipt(
        "SUBSCRIBE",
        &[("id", "t"), ("destination", "/queue/nack-case")],
        b"",
    );
    c.assert_quiet(QUIET);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capitalised_booleans_on_send_and_subscribe() {
    let broker = Broker::start();
    let addr = broker.stomp_addr();
    tokio::task::block_in_place(|| {
        let mut c = Client::connect(addr, Version::V12);
        // durable:True + auto-delete:FALSE: the subscription's queue outlives
        // the connection.
        c.receipt(
            "SUBSCRIBE",
            &[
                ("id", "keep"),
                ("destination", "/topic/bools"),
                ("durable", "True"),
                ("auto-delete", "FALSE"),
            ],
            b"",
        );
        c.disconnect();
    });
    let (_conn, ch) = amqp(&broker).await;
    let q = w!(ch.queue_declare(
        "stomp-subscription-keep".into(),
        passive(),
        FieldTable::default()
    ))
    .expect("durable subscription queue exists after disconnect");
    assert_eq!(q.message_count(), 0);
    // persistent:True on a /topic SEND (default transient) is persistent.
    tokio::task::block_in_place(|| {
        let mut c = Client::connect(addr, Version::V12);
        c.receipt(
            "SEND",
            &[("destination", "/topic/bools"), ("persistent", "True")],
            b"p",
        );
        c.disconnect();
    });
    let got = w!(ch.basic_get(
        "stomp-subscription-keep".into(),
        BasicGetOptions { no_ack: true }
    ))
    .expect("get")
    .expect("a message");
    assert_eq!(got.delivery.properties.delivery_mode(), &Some(2));
}

#[test]
fn a_bare_destination_is_a_queue() {
    let broker = Broker::start();
    let mut c = v12(&broker);
    c.receipt("SEND", &[("destination", "bare")], b"hello");
    c.receipt(
        "SUBSCRIBE",
        &[("id", "s"), ("destination", "/queue/bare")],
        b"",
    );
    let m = c.message();
    assert_eq!(m.body, b"hello");
    assert_eq!(m.get("destination"), Some("/queue/bare"));
}

#[test]
fn escaped_slash_names_and_empty_key_destinations() {
    let broker = Broker::start();
    let mut c = v12(&broker);
    // `%2F` is a `/` inside a name, both ways.
    c.receipt(
        "SUBSCRIBE",
        &[("id", "s"), ("destination", "/queue/a%2Fb")],
        b"",
    );
    c.receipt("SEND", &[("destination", "/queue/a%2Fb")], b"slash");
    let m = c.message();
    assert_eq!(m.body, b"slash");
    assert_eq!(m.get("destination"), Some("/queue/a%2Fb"));
    // An empty routing key: `/exchange/<name>`, no trailing `/`.
    c.receipt(
        "SUBSCRIBE",
        &[("id", "f"), ("destination", "/exchange/amq.fanout")],
        b"",
    );
    c.receipt("SEND", &[("destination", "/exchange/amq.fanout")], b"fan");
    let m = c.message();
    assert_eq!(m.body, b"fan");
    assert_eq!(m.get("destination"), Some("/exchange/amq.fanout"));
}

// ---------------------------------------------------------------------------
// Queue arguments and their equivalence

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_declares_its_queue_with_x_headers() {
    let broker = Broker::start();
    let addr = broker.stomp_addr();
    tokio::task::block_in_place(|| {
        let mut c = Client::connect(addr, Version::V12);
        c.receipt(
            "SEND",
            &[("destination", "/queue/sent-args"), ("x-max-length", "5")],
            b"m",
        );
        c.disconnect();
    });
    let (conn, ch) = amqp(&broker).await;
    // pika and lapin send the number as a 32-bit integer: equivalent.
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(5));
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let q = w!(ch.queue_declare("sent-args".into(), durable, args)).expect("equivalent");
    assert_eq!(q.message_count(), 1);
    // A different value is not: the queue was declared with the argument.
    let mut other = FieldTable::default();
    other.insert("x-max-length".into(), AMQPValue::LongInt(6));
    let err = w!(ch.queue_declare("sent-args".into(), durable, other))
        .expect_err("inequivalent x-max-length");
    let err = err.to_string();
    assert!(err.contains("PRECONDITION_FAILED"), "{err}");
    assert!(err.contains("'x-max-length'"), "names the argument: {err}");
    drop(conn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_widths_are_equivalent_on_redeclare() {
    let broker = Broker::start();
    let addr = broker.stomp_addr();
    // STOMP sends x-message-ttl as a 64-bit integer.
    tokio::task::block_in_place(|| {
        let mut c = Client::connect(addr, Version::V12);
        c.receipt(
            "SUBSCRIBE",
            &[
                ("id", "s"),
                ("destination", "/queue/widths"),
                ("x-message-ttl", "60000"),
            ],
            b"",
        );
        c.disconnect();
    });
    let (_conn, ch) = amqp(&broker).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for v in [
        AMQPValue::LongInt(60000),
        AMQPValue::LongLongInt(60000),
        AMQPValue::LongUInt(60000),
    ] {
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), v.clone());
        w!(ch.queue_declare("widths".into(), durable, args))
            .unwrap_or_else(|e| panic!("redeclare with {v:?}: {e}"));
    }
    // Exchanges too.
    for v in [AMQPValue::LongLongInt(7), AMQPValue::ShortInt(7)] {
        let mut args = FieldTable::default();
        args.insert("x-custom".into(), v.clone());
        w!(ch.exchange_declare(
            "widths-x".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            args
        ))
        .unwrap_or_else(|e| panic!("exchange redeclare with {v:?}: {e}"));
    }
}

// ---------------------------------------------------------------------------
// Durable subscriptions, ACK ids, transactions, vhosts

#[test]
fn durable_subscription_needs_an_id() {
    let broker = Broker::start();
    for (version, flag) in [
        (Version::V10, "durable"),
        (Version::V10, "persistent"),
        (Version::V12, "durable"),
    ] {
        let mut c = Client::connect(broker.stomp_addr(), version);
        let e = refused(
            &mut c,
            "SUBSCRIBE",
            &[("destination", "/topic/d"), (flag, "true")],
        );
        assert_error(
            &e,
            "Missing Header",
            "Header 'id' is required for durable subscriptions",
        );
    }
}

#[test]
fn stomp_1_2_ack_needs_id() {
    let broker = Broker::start();
    let mut c = v12(&broker);
    c.receipt("SEND", &[("destination", "/queue/ack12")], b"x");
    c.receipt(
        "SUBSCRIBE",
        &[
            ("id", "s"),
            ("destination", "/queue/ack12"),
            ("ack", "client"),
        ],
        b"",
    );
    let m = c.message();
    let message_id = m.header("message-id").to_owned();
    let e = refused(
        &mut c,
        "ACK",
        &[("message-id", &message_id), ("subscription", "s")],
    );
    assert_error(&e, "Missing header", "'ACK' must include the 'id' header\n");
}

#[test]
fn stomp_1_1_acks_by_message_id() {
    let broker = Broker::start();
    let mut c = Client::connect(broker.stomp_addr(), Version::V11);
    c.receipt("SEND", &[("destination", "/queue/ack11")], b"x");
    c.receipt(
        "SUBSCRIBE",
        &[
            ("id", "s"),
            ("destination", "/queue/ack11"),
            ("ack", "client"),
        ],
        b"",
    );
    let m = c.message();
    let message_id = m.header("message-id").to_owned();
    c.receipt(
        "ACK",
        &[("message-id", &message_id), ("subscription", "s")],
        b"",
    );
    c.disconnect();
}

#[test]
fn send_receipt_in_a_transaction_waits_for_commit() {
    let broker = Broker::start();
    let mut c = v12(&broker);
    c.receipt(
        "SUBSCRIBE",
        &[("id", "s"), ("destination", "/queue/txr")],
        b"",
    );
    c.receipt("BEGIN", &[("transaction", "t1")], b"");
    c.send(
        "SEND",
        &[
            ("destination", "/queue/txr"),
            ("transaction", "t1"),
            ("receipt", "in-tx"),
        ],
        b"held",
    );
    // Neither routed nor acknowledged before COMMIT.
    c.assert_quiet(QUIET);
    c.send(
        "COMMIT",
        &[("transaction", "t1"), ("receipt", "commit")],
        b"",
    );
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let f = c.next();
        seen.push(match f.command.as_str() {
            "RECEIPT" => f.header("receipt-id").to_owned(),
            "MESSAGE" => format!("MESSAGE {}", f.body_str()),
            _ => panic!("unexpected {f:?}"),
        });
    }
    let receipts: Vec<&String> = seen.iter().filter(|s| !s.starts_with("MESSAGE")).collect();
    assert_eq!(receipts, ["in-tx", "commit"], "{seen:?}");
    assert!(seen.contains(&"MESSAGE held".to_owned()), "{seen:?}");
}

#[test]
fn unknown_virtual_host_is_refused() {
    let broker = Broker::start();
    let (mut c, e) = Client::connect_with(
        broker.stomp_addr(),
        "CONNECT",
        &[
            ("accept-version", "1.2"),
            ("host", "no-such-vhost"),
            ("login", "guest"),
            ("passcode", "guest"),
        ],
    );
    assert_error(
        &e,
        "Bad CONNECT",
        "Virtual host 'no-such-vhost' access denied",
    );
    let (_, closed) = c.read_to_close(STEP);
    assert!(closed);
    // The server's own name or address still means the default vhost.
    for host in ["127.0.0.1", "localhost", "broker.example.com", "/"] {
        let (_c, f) = Client::connect_with(
            broker.stomp_addr(),
            "CONNECT",
            &[
                ("accept-version", "1.2"),
                ("host", host),
                ("login", "guest"),
                ("passcode", "guest"),
            ],
        );
        assert_eq!(f.command, "CONNECTED", "host {host}: {f:?}");
    }
}

// ---------------------------------------------------------------------------
// Garbage

/// Bytes with no NUL, no blank line: no head scan ever completes them.
const GARBAGE: &[u8] = b"\x93\xfa\x01zz\x7f\x12\nq\x88\xe1";

#[test]
fn garbage_is_refused_at_once_on_tcp() {
    let broker = Broker::start();
    let addr: SocketAddr = broker.stomp_addr();
    let mut c = Client::open(addr);
    c.write(GARBAGE).expect("write");
    let (frames, closed) = c.read_to_close(std::time::Duration::from_secs(1));
    assert!(closed, "still open a second after garbage: {frames:?}");
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].get("message"), Some("Bad command"), "{frames:?}");
}

// ---------------------------------------------------------------------------
// Checks RabbitMQ makes on what a SEND claims

#[test]
fn send_user_id_must_name_the_login() {
    let broker = Broker::start();
    let mut c = v12(&broker);
    c.receipt(
        "SEND",
        &[("destination", "/queue/uid"), ("user-id", "guest")],
        b"mine",
    );
    let e = refused(
        &mut c,
        "SEND",
        &[("destination", "/queue/uid"), ("user-id", "admin")],
    );
    assert_eq!(e.get("message"), Some("precondition_failed"), "{e:?}");
    assert_eq!(
        e.body_str(),
        "user_id property set to 'admin' but authenticated user was 'guest'"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_headers_on_an_existing_queue_must_be_equivalent() {
    let broker = Broker::start();
    let (_conn, ch) = amqp(&broker).await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(5));
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    w!(ch.queue_declare("existing-args".into(), durable, args)).expect("declare");
    let addr = broker.stomp_addr();
    let e = tokio::task::block_in_place(|| {
        let mut c = Client::connect(addr, Version::V12);
        // The same value (as STOMP's 64-bit integer): equivalent.
        c.receipt(
            "SEND",
            &[
                ("destination", "/queue/existing-args"),
                ("x-max-length", "5"),
            ],
            b"ok",
        );
        // No arguments: the queue as declared.
        c.receipt(
            "SEND",
            &[("destination", "/queue/existing-args")],
            b"ok too",
        );
        refused(
            &mut c,
            "SEND",
            &[
                ("destination", "/queue/existing-args"),
                ("x-max-length", "6"),
            ],
        )
    });
    assert_eq!(e.get("message"), Some("precondition_failed"), "{e:?}");
    assert!(e.body_str().contains("'x-max-length'"), "{e:?}");
}

// ---------------------------------------------------------------------------
// Consumer acknowledgement timeout

#[test]
fn unacked_message_past_the_consumer_timeout_ends_the_connection() {
    let broker = Broker::start_with_config("[server]\nconsumer_timeout_ms = 400\n");
    let mut c = v12(&broker);
    c.receipt("SEND", &[("destination", "/queue/slow-stomp")], b"job");
    c.receipt(
        "SUBSCRIBE",
        &[
            ("id", "s"),
            ("destination", "/queue/slow-stomp"),
            ("ack", "client-individual"),
        ],
        b"",
    );
    let started = std::time::Instant::now();
    let m = c.message();
    assert_eq!(m.get("redelivered"), Some("false"));
    let e = c.expect_error_and_close();
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(300),
        "timed out after {:?}",
        started.elapsed()
    );
    assert_eq!(e.get("message"), Some("precondition_failed"), "{e:?}");
    assert!(e.body_str().contains("Timeout value used: 400 ms"), "{e:?}");
    // The message went back to the queue.
    let mut d = v12(&broker);
    d.receipt(
        "SUBSCRIBE",
        &[("id", "t"), ("destination", "/queue/slow-stomp")],
        b"",
    );
    let again = d.message();
    assert_eq!(
        (again.body.as_slice(), again.get("redelivered")),
        (&b"job"[..], Some("true"))
    );
}
