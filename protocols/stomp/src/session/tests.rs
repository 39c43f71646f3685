//! Session tests over an in-memory broker: frames in, frames out.

use super::*;
use crate::codec::{Decoder, Limits};
use switchyard_engine::store::MemoryStore;

struct Harness {
    session: Session,
    reader: Decoder,
}

fn harness() -> Harness {
    let broker = Broker::open(Arc::new(MemoryStore)).expect("broker");
    harness_on(Shared::new(broker))
}

fn harness_on(shared: Arc<Shared>) -> Harness {
    let peer = SocketAddr::from(([127, 0, 0, 1], 5000));
    Harness {
        session: Session::new(
            shared,
            SessionConfig::default(),
            peer,
            std::time::Instant::now(),
        ),
        reader: Decoder::new(Limits::default()),
    }
}

fn frame(cmd: Command, headers: &[(&str, &str)], body: &str) -> Frame {
    let mut f = Frame::new(cmd);
    for (k, v) in headers {
        f = f.header(*k, *v);
    }
    f.body = Bytes::copy_from_slice(body.as_bytes());
    f
}

impl Harness {
    fn put(&mut self, cmd: Command, headers: &[(&str, &str)], body: &str) {
        self.session.handle_frame(frame(cmd, headers, body));
        self.reader.set_version(self.session.version());
        self.session.handle_outbox();
        while self.session.take_ticket().is_some() {
            self.session.handle_durable(true);
        }
    }

    fn take(&mut self) -> Vec<Frame> {
        self.session.handle_outbox();
        let mut out = std::mem::take(self.session.output());
        let mut frames = Vec::new();
        while let Some(f) = self
            .reader
            .decode(&mut out)
            .expect("session output decodes")
        {
            frames.push(f);
        }
        frames
    }

    fn connect(&mut self, version: &str) -> Frame {
        self.put(
            Command::Connect,
            &[("accept-version", version), ("heart-beat", "0,0")],
            "",
        );
        let mut f = self.take();
        assert_eq!(f.len(), 1);
        f.remove(0)
    }
}

#[test]
fn negotiates_the_highest_common_version() {
    let mut h = harness();
    let c = h.connect("1.0,1.1,1.2");
    assert_eq!(c.command, Command::Connected);
    assert_eq!(c.get("version"), Some("1.2"));
    assert_eq!(h.session.phase(), Phase::Connected);

    let mut h = harness();
    let c = h.connect("2.0,3.1");
    assert_eq!(c.command, Command::Error);
    assert_eq!(c.get("version"), Some("1.0,1.1,1.2"));
    assert_eq!(h.session.phase(), Phase::Closed);
}

#[test]
fn bad_login_is_an_error() {
    let mut h = harness();
    h.put(
        Command::Connect,
        &[
            ("accept-version", "1.2"),
            ("login", "guest"),
            ("passcode", "x"),
        ],
        "",
    );
    let f = h.take();
    assert_eq!(f[0].command, Command::Error);
    assert_eq!(f[0].get("message"), Some("Bad CONNECT"));
    assert_eq!(&f[0].body[..], b"Access refused for user 'guest'");
}

#[test]
fn heartbeats_negotiate_per_spec() {
    let mut h = harness();
    h.put(
        Command::Stomp,
        &[("accept-version", "1.1"), ("heart-beat", "5000,20")],
        "",
    );
    let c = h.take().remove(0);
    // Server sends every max(cy, floor), expects within cx.
    assert_eq!(c.get("heart-beat"), Some("100,5000"));
    assert_eq!(h.session.heartbeat(), (100, 5000));
}

#[test]
fn queue_send_subscribe_client_individual_ack_and_nack() {
    let mut h = harness();
    h.connect("1.2");
    h.put(
        Command::Subscribe,
        &[
            ("destination", "/queue/q1"),
            ("id", "s1"),
            ("ack", "client-individual"),
        ],
        "",
    );
    h.put(
        Command::Send,
        &[("destination", "/queue/q1"), ("receipt", "r1")],
        "one",
    );
    h.put(Command::Send, &[("destination", "/queue/q1")], "two");
    let frames = h.take();
    let kinds: Vec<Command> = frames.iter().map(|f| f.command).collect();
    assert_eq!(
        kinds,
        [Command::Receipt, Command::Message, Command::Message],
        "{frames:?}"
    );
    assert_eq!(frames[0].get("receipt-id"), Some("r1"));
    let m1 = &frames[1];
    assert_eq!(m1.get("subscription"), Some("s1"));
    assert_eq!(m1.get("destination"), Some("/queue/q1"));
    assert_eq!(m1.get("redelivered"), Some("false"));
    assert_eq!(&m1.body[..], b"one");
    let id1 = m1.get("ack").unwrap().to_owned();
    let id2 = frames[2].get("ack").unwrap().to_owned();
    // NACK the first: it comes back redelivered.
    h.put(Command::Nack, &[("id", &id1)], "");
    let again = h.take();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].get("redelivered"), Some("true"));
    assert_eq!(&again[0].body[..], b"one");
    // ACK both; an ACK of an unknown id is an error.
    let id3 = again[0].get("ack").unwrap().to_owned();
    h.put(Command::Ack, &[("id", &id2)], "");
    h.put(Command::Ack, &[("id", &id3)], "");
    assert!(h.take().is_empty());
    h.put(Command::Ack, &[("id", &id3), ("receipt", "bad")], "");
    let err = h.take().remove(0);
    assert_eq!(err.command, Command::Error);
    assert_eq!(err.get("receipt-id"), Some("bad"));
}

#[test]
fn client_ack_is_cumulative() {
    let mut h = harness();
    h.connect("1.1");
    h.put(
        Command::Subscribe,
        &[("destination", "/queue/q2"), ("id", "s"), ("ack", "client")],
        "",
    );
    for body in ["a", "b", "c"] {
        h.put(Command::Send, &[("destination", "/queue/q2")], body);
    }
    let frames = h.take();
    assert_eq!(frames.len(), 3);
    // 1.1: no `ack` header; ack by message-id + subscription.
    assert_eq!(frames[0].get("ack"), None);
    let second = frames[1].get("message-id").unwrap();
    h.put(
        Command::Ack,
        &[("message-id", second), ("subscription", "s")],
        "",
    );
    assert_eq!(h.session.unacked.len(), 1, "a and b acked, c not");
}

#[test]
fn transactions_publish_on_commit_only() {
    let mut h = harness();
    h.connect("1.2");
    h.put(
        Command::Subscribe,
        &[("destination", "/topic/t.x"), ("id", "s")],
        "",
    );
    h.put(Command::Begin, &[("transaction", "tx1")], "");
    h.put(
        Command::Send,
        &[("destination", "/topic/t.x"), ("transaction", "tx1")],
        "in-tx",
    );
    assert!(h.take().is_empty(), "nothing before COMMIT");
    h.put(
        Command::Commit,
        &[("transaction", "tx1"), ("receipt", "c")],
        "",
    );
    let frames = h.take();
    assert_eq!(frames.len(), 2, "{frames:?}");
    let msg = frames.iter().find(|f| f.command == Command::Message);
    assert_eq!(msg.and_then(|m| m.get("destination")), Some("/topic/t.x"));
    let receipt = frames.iter().find(|f| f.command == Command::Receipt);
    assert_eq!(receipt.and_then(|r| r.get("receipt-id")), Some("c"));

    h.put(Command::Begin, &[("transaction", "tx2")], "");
    h.put(
        Command::Send,
        &[("destination", "/topic/t.x"), ("transaction", "tx2")],
        "dropped",
    );
    h.put(Command::Abort, &[("transaction", "tx2")], "");
    assert!(h.take().is_empty());
    h.put(Command::Commit, &[("transaction", "tx2")], "");
    assert_eq!(h.take()[0].command, Command::Error, "tx2 is gone");
}

#[test]
fn errors_name_the_problem_and_close() {
    for (cmd, headers) in [
        (Command::Send, vec![]),
        (Command::Send, vec![("destination", "/nowhere/x")]),
        (Command::Subscribe, vec![("destination", "/queue/a")]),
        (
            Command::Subscribe,
            vec![("destination", "/amq/queue/missing"), ("id", "x")],
        ),
        (Command::Message, vec![]),
    ] {
        let mut h = harness();
        h.connect("1.2");
        h.put(cmd, &headers, "");
        let f = h.take();
        assert_eq!(f.len(), 1, "{cmd:?} {headers:?}: {f:?}");
        assert_eq!(f[0].command, Command::Error);
        assert!(f[0].get("message").is_some());
        assert_eq!(h.session.phase(), Phase::Closed);
    }
}

#[test]
fn frames_before_connect_are_refused() {
    let mut h = harness();
    h.put(Command::Send, &[("destination", "/queue/a")], "x");
    assert_eq!(h.take()[0].command, Command::Error);
    assert_eq!(h.session.phase(), Phase::Closed);
}

#[test]
fn disconnect_receipt_then_close_and_requeue() {
    let broker = Broker::open(Arc::new(MemoryStore)).expect("broker");
    let shared = Shared::new(broker);
    let mut a = harness_on(shared.clone());
    a.connect("1.2");
    a.put(
        Command::Subscribe,
        &[("destination", "/queue/q3"), ("id", "s"), ("ack", "client")],
        "",
    );
    a.put(Command::Send, &[("destination", "/queue/q3")], "keep");
    assert_eq!(a.take().len(), 1);
    a.put(Command::Disconnect, &[("receipt", "bye")], "");
    let f = a.take();
    assert_eq!(f[0].get("receipt-id"), Some("bye"));
    assert_eq!(a.session.phase(), Phase::Closed);
    // The unacked message went back to the queue for the next consumer.
    let mut b = harness_on(shared);
    b.connect("1.2");
    b.put(
        Command::Subscribe,
        &[("destination", "/queue/q3"), ("id", "s")],
        "",
    );
    let f = b.take();
    assert_eq!(f.len(), 1);
    assert_eq!(&f[0].body[..], b"keep");
    assert_eq!(f[0].get("redelivered"), Some("true"));
}

#[test]
fn temp_queue_reply_to_is_rewritten_and_answers_arrive() {
    let mut h = harness();
    h.connect("1.2");
    h.put(
        Command::Subscribe,
        &[("destination", "/queue/svc"), ("id", "s")],
        "",
    );
    h.put(
        Command::Send,
        &[("destination", "/queue/svc"), ("reply-to", "/temp-queue/r")],
        "ping",
    );
    let req = h.take().remove(0);
    let reply_to = req.get("reply-to").unwrap().to_owned();
    assert!(
        reply_to.starts_with("/reply-queue/stomp-temp-"),
        "{reply_to}"
    );
    h.put(Command::Send, &[("destination", &reply_to)], "pong");
    let resp = h.take().remove(0);
    assert_eq!(resp.get("subscription"), Some("/temp-queue/r"));
    assert_eq!(resp.get("destination"), Some("/temp-queue/r"));
    assert_eq!(&resp.body[..], b"pong");
}

#[test]
fn prefetch_count_limits_unacked_deliveries() {
    let mut h = harness();
    h.connect("1.2");
    h.put(
        Command::Subscribe,
        &[
            ("destination", "/queue/q4"),
            ("id", "s"),
            ("ack", "client-individual"),
            ("prefetch-count", "2"),
        ],
        "",
    );
    for i in 0..5 {
        h.put(
            Command::Send,
            &[("destination", "/queue/q4")],
            &i.to_string(),
        );
    }
    let first = h.take();
    assert_eq!(first.len(), 2);
    h.put(Command::Ack, &[("id", first[0].get("ack").unwrap())], "");
    assert_eq!(h.take().len(), 1, "one ack frees one slot");
}

#[test]
fn unacked_cap_bounds_subscriptions_without_or_above_prefetch() {
    let broker = Broker::open(Arc::new(MemoryStore)).expect("broker");
    let config = SessionConfig {
        max_unacked: 3,
        ..SessionConfig::default()
    };
    let peer = SocketAddr::from(([127, 0, 0, 1], 5000));
    for prefetch in [None, Some("10")] {
        let mut h = Harness {
            session: Session::new(
                Shared::new(broker.clone()),
                config.clone(),
                peer,
                std::time::Instant::now(),
            ),
            reader: Decoder::new(Limits::default()),
        };
        h.connect("1.2");
        let dest = format!("/queue/cap-{}", prefetch.unwrap_or("none"));
        let mut headers = vec![
            ("destination", dest.as_str()),
            ("id", "s"),
            ("ack", "client-individual"),
        ];
        if let Some(p) = prefetch {
            headers.push(("prefetch-count", p));
        }
        h.put(Command::Subscribe, &headers, "");
        for i in 0..6 {
            h.put(
                Command::Send,
                &[("destination", dest.as_str())],
                &i.to_string(),
            );
        }
        let first = h.take();
        assert_eq!(first.len(), 3, "prefetch {prefetch:?}: the cap, not more");
        h.put(Command::Ack, &[("id", first[0].get("ack").unwrap())], "");
        assert_eq!(h.take().len(), 1, "one ack frees one slot");
    }
    // Auto ack is settled as written: the cap does not hold it back.
    let mut h = Harness {
        session: Session::new(Shared::new(broker), config, peer, std::time::Instant::now()),
        reader: Decoder::new(Limits::default()),
    };
    h.connect("1.2");
    h.put(
        Command::Subscribe,
        &[("destination", "/queue/cap-auto"), ("id", "a")],
        "",
    );
    for i in 0..6 {
        h.put(
            Command::Send,
            &[("destination", "/queue/cap-auto")],
            &i.to_string(),
        );
    }
    let mut got = 0;
    for _ in 0..6 {
        got += h.take().len();
    }
    assert_eq!(got, 6);
}

#[test]
fn a_heartbeat_floor_above_a_day_is_capped_not_a_panic() {
    let broker = Broker::open(Arc::new(MemoryStore)).expect("broker");
    let config = SessionConfig {
        min_heartbeat_ms: 100_000_000,
        ..SessionConfig::default()
    };
    let mut h = Harness {
        session: Session::new(
            Shared::new(broker),
            config,
            SocketAddr::from(([127, 0, 0, 1], 5000)),
            std::time::Instant::now(),
        ),
        reader: Decoder::new(Limits::default()),
    };
    h.put(
        Command::Connect,
        &[("accept-version", "1.2"), ("heart-beat", "5000,20")],
        "",
    );
    assert_eq!(h.session.heartbeat(), (86_400_000, 86_400_000));
}
