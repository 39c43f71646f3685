//! Users, vhosts, permissions and policies made through the management
//! API, seen by every protocol: a user logs in over AMQP, MQTT (`vhost:user`)
//! and STOMP (`login`, `host`) only where it has permissions; all of it
//! survives a restart; a configured first user replaces guest; and a
//! connection closed through the API tells its STOMP or MQTT client.
//!
//! Against the real binary over loopback, with a minimal HTTP client
//! ([`http`]); every wait is bounded.

#[macro_use]
mod common;
#[path = "common/http.rs"]
mod http;
#[path = "common/mqtt.rs"]
mod mqtt;
#[path = "common/stomp.rs"]
mod stomp;

use std::net::SocketAddr;
use std::time::Duration;

use common::{channel, connect, declare};
use http::{request, seg};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;
use switchyard_tests::Broker;

const GUEST: (&str, &str) = ("guest", "guest");

/// `PUT` as guest, asserting 201 or 204.
fn put(api: SocketAddr, path: &str, body: serde_json::Value) {
    let r = request(api, "PUT", path, GUEST, Some(&body));
    assert!(
        r.status == 201 || r.status == 204,
        "PUT {path}: {} {}",
        r.status,
        r.body
    );
}

/// The vhost `plant`, and the user `dev` (password `pw`, no tags) with
/// every permission there and none on `/`.
fn make_dev(api: SocketAddr) {
    put(
        api,
        "/api/vhosts/plant",
        json!({"description": "the plant"}),
    );
    put(api, "/api/users/dev", json!({"password": "pw", "tags": ""}));
    put(
        api,
        "/api/permissions/plant/dev",
        json!({"configure": ".*", "write": ".*", "read": ".*"}),
    );
}

fn amqp_uri(addr: SocketAddr, user: &str, pass: &str, vhost: &str) -> String {
    format!(
        "amqp://{user}:{pass}@{}:{}/{}",
        addr.ip(),
        addr.port(),
        seg(vhost)
    )
}

async fn amqp_login(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    vhost: &str,
) -> Result<Connection, String> {
    t!(Connection::connect(
        &amqp_uri(addr, user, pass, vhost),
        ConnectionProperties::default()
    ))
    .map_err(|e| e.to_string())
}

/// MQTT 3.1.1 CONNECT with credentials; the CONNACK return code.
fn mqtt_login(addr: SocketAddr, user: &str, pass: &str) -> u8 {
    let mut body = Vec::new();
    let string = |out: &mut Vec<u8>, s: &[u8]| {
        out.extend_from_slice(&u16::try_from(s.len()).expect("short").to_be_bytes());
        out.extend_from_slice(s);
    };
    string(&mut body, b"MQTT");
    body.push(4);
    body.push(0x02 | 0x80 | 0x40); // clean session, username, password
    body.extend_from_slice(&30u16.to_be_bytes());
    string(&mut body, b"users-test");
    string(&mut body, user.as_bytes());
    string(&mut body, pass.as_bytes());
    let sock =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    let mut c = mqtt::Client::over(sock);
    c.send(&mqtt::packet(0x10, &body));
    let p = c.expect_packet();
    assert_eq!(p.first, 0x20, "expected CONNACK, got {p:?}");
    p.body[1]
}

/// STOMP 1.2 CONNECT; the command of the answer.
fn stomp_login(addr: SocketAddr, user: &str, pass: &str, host: &str) -> String {
    let (_, f) = stomp::Client::connect_with(
        addr,
        "CONNECT",
        &[
            ("accept-version", "1.2"),
            ("host", host),
            ("login", user),
            ("passcode", pass),
        ],
    );
    f.command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_made_through_the_api_logs_in_on_every_protocol_where_permitted() {
    let broker = Broker::start();
    let api = broker.management_addr();
    make_dev(api);
    let amqp = broker.amqp_addr();

    // AMQP: its vhost yes; wrong password and a vhost without permissions no.
    let conn = amqp_login(amqp, "dev", "pw", "plant")
        .await
        .expect("dev on plant");
    t!(conn.close(200, "bye".into())).expect("close");
    let e = amqp_login(amqp, "dev", "nope", "plant")
        .await
        .expect_err("wrong password");
    assert!(e.contains("ACCESS_REFUSED") || e.contains("403"), "{e}");
    let e = amqp_login(amqp, "dev", "pw", "/")
        .await
        .expect_err("no permissions on /");
    assert!(e.contains("NOT_ALLOWED") || e.contains("530"), "{e}");

    // MQTT 3.1.1: `vhost:user` selects the vhost.
    let mqtt = broker.mqtt_addr();
    assert_eq!(mqtt_login(mqtt, "plant:dev", "pw"), 0, "accepted");
    assert_eq!(
        mqtt_login(mqtt, "plant:dev", "nope"),
        4,
        "bad user name or password"
    );
    assert_eq!(mqtt_login(mqtt, "dev", "pw"), 5, "not authorised on /");

    // STOMP: `host` is the vhost.
    let stomp = broker.stomp_addr();
    assert_eq!(stomp_login(stomp, "dev", "pw", "plant"), "CONNECTED");
    assert_eq!(stomp_login(stomp, "dev", "nope", "plant"), "ERROR");
    assert_eq!(stomp_login(stomp, "dev", "pw", "/"), "ERROR");

    // A user without tags may not use the API.
    let r = request(api, "GET", "/api/overview", ("dev", "pw"), None);
    assert_eq!(r.status, 401, "{}", r.body);
    // Deleted: no protocol lets it in any more.
    assert_eq!(
        request(api, "DELETE", "/api/users/dev", GUEST, None).status,
        204
    );
    assert!(amqp_login(amqp, "dev", "pw", "plant").await.is_err());
    assert_eq!(mqtt_login(mqtt, "plant:dev", "pw"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_vhosts_permissions_and_policies_survive_a_crash() {
    let mut broker = Broker::start();
    let api = broker.management_addr();
    make_dev(api);
    put(
        api,
        "/api/policies/plant/short",
        json!({"pattern": "^short", "definition": {"max-length": 2}, "apply-to": "queues"}),
    );
    // SIGKILL: what the API answered for is on disk already.
    broker.kill();
    broker.restart();
    let api = broker.management_addr();

    let vhost = request(api, "GET", "/api/vhosts/plant", GUEST, None);
    assert_eq!(vhost.status, 200);
    assert_eq!(vhost.json()["description"], "the plant");
    let perm = request(api, "GET", "/api/permissions/plant/dev", GUEST, None);
    assert_eq!(perm.status, 200, "{}", perm.body);
    let policy = request(api, "GET", "/api/policies/plant/short", GUEST, None);
    assert_eq!(policy.json()["definition"], json!({"max-length": 2}));

    // The policy applies to a queue declared after the restart.
    let conn = amqp_login(broker.amqp_addr(), "dev", "pw", "plant")
        .await
        .expect("dev still logs in");
    let ch = channel(&conn).await;
    declare(&ch, "short-q", QueueDeclareOptions::default()).await;
    for i in 0..5u8 {
        t!(ch.basic_publish(
            "".into(),
            "short-q".into(),
            BasicPublishOptions::default(),
            &[i],
            BasicProperties::default()
        ))
        .expect("publish");
    }
    let depth = |ch: lapin::Channel| async move {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        t!(ch.queue_declare("short-q".into(), passive, FieldTable::default()))
            .expect("passive declare")
            .message_count()
    };
    // Publishes are asynchronous: wait (bounded) for all five to be taken.
    let mut stats = serde_json::Value::Null;
    for _ in 0..100 {
        stats = request(api, "GET", "/api/queues/plant/short-q", GUEST, None).json();
        if stats["message_stats"]["publish"] == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats["message_stats"]["publish"], 5, "{stats}");
    assert_eq!(depth(ch).await, 2, "max-length 2 from the policy");
    assert_eq!(stats["policy"], "short");

    // Cleared, the queue takes more again.
    assert_eq!(
        request(api, "DELETE", "/api/policies/plant/short", GUEST, None).status,
        204
    );
    let ch = channel(&conn).await;
    for i in 0..3u8 {
        t!(ch.basic_publish(
            "".into(),
            "short-q".into(),
            BasicPublishOptions::default(),
            &[i],
            BasicProperties::default()
        ))
        .expect("publish");
    }
    let mut n = 0;
    for _ in 0..100 {
        n = depth(ch.clone()).await;
        if n == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(n, 5, "no limit once the policy is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_first_user_replaces_guest() {
    let broker =
        Broker::start_with_config("[auth]\ndefault_user = \"admin\"\ndefault_pass = \"s3cret\"\n");
    let amqp = broker.amqp_addr();
    assert!(
        amqp_login(amqp, "guest", "guest", "/").await.is_err(),
        "no guest"
    );
    let conn = amqp_login(amqp, "admin", "s3cret", "/")
        .await
        .expect("admin");
    drop(conn);
    let who = request(
        broker.management_addr(),
        "GET",
        "/api/whoami",
        ("admin", "s3cret"),
        None,
    );
    assert_eq!(
        who.json(),
        json!({"name": "admin", "tags": ["administrator"]})
    );
    let users = request(
        broker.management_addr(),
        "GET",
        "/api/users",
        ("admin", "s3cret"),
        None,
    );
    let hash = users.json()[0]["password_hash"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("s3cret"));
}

/// The connection of `client_id`'s MQTT session, or of the STOMP client,
/// as the API lists it.
fn connection_named(api: SocketAddr, protocol: &str) -> String {
    for _ in 0..100 {
        let list = request(api, "GET", "/api/connections", GUEST, None).json();
        if let Some(c) = list
            .as_array()
            .and_then(|l| l.iter().find(|c| c["protocol"] == protocol))
        {
            return c["name"].as_str().expect("name").to_owned();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no {protocol} connection listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_through_the_api_tells_stomp_and_ends_mqtt() {
    let broker = Broker::start();
    let api = broker.management_addr();
    let keep = connect(&broker).await; // a bystander that must stay open

    let mut s = stomp::Client::connect(broker.stomp_addr(), stomp::Version::V12);
    let name = connection_named(api, "STOMP 1.2");
    let r = request(
        api,
        "DELETE",
        &format!("/api/connections/{}", seg(&name)),
        GUEST,
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let err = s.expect_error_and_close();
    assert!(
        err.body_str().contains("Closed via management plugin"),
        "{err:?}"
    );

    let (mut m, _) = mqtt::Client::connect(broker.mqtt_addr(), "closed-by-api", true);
    let name = connection_named(api, "MQTT 3.1.1");
    let r = request(
        api,
        "DELETE",
        &format!("/api/connections/{}", seg(&name)),
        GUEST,
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    // 3.1.1 has no DISCONNECT from the server: the socket closes.
    assert!(
        matches!(
            m.read_packet(Duration::from_secs(10)),
            Err(mqtt::End::Closed)
        ),
        "MQTT connection not closed"
    );
    assert!(
        keep.status().connected(),
        "the AMQP bystander was closed too"
    );
    let gone = request(
        api,
        "GET",
        &format!("/api/connections/{}", seg(&name)),
        GUEST,
        None,
    );
    assert_eq!(gone.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_policy_names_an_alternate_exchange() {
    let broker = Broker::start();
    let api = broker.management_addr();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    put(api, "/api/exchanges/%2F/orders", json!({"type": "direct"}));
    put(api, "/api/exchanges/%2F/ae", json!({"type": "fanout"}));
    declare(&ch, "lost", QueueDeclareOptions::default()).await;
    let r = request(
        api,
        "POST",
        "/api/bindings/%2F/e/ae/q/lost",
        GUEST,
        Some(&json!({})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let publish = |n: u8| {
        let ch = ch.clone();
        async move {
            t!(ch.basic_publish(
                "orders".into(),
                "nowhere".into(),
                BasicPublishOptions::default(),
                &[n],
                BasicProperties::default()
            ))
            .expect("publish");
        }
    };
    let ready = || {
        request(api, "GET", "/api/queues/%2F/lost", GUEST, None).json()["messages_ready"].clone()
    };

    put(
        api,
        "/api/policies/%2F/ae-policy",
        json!({"pattern": "^orders$", "definition": {"alternate-exchange": "ae"}, "apply-to": "exchanges"}),
    );
    publish(1).await;
    let mut seen = serde_json::Value::Null;
    for _ in 0..100 {
        seen = ready();
        if seen == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen, 1,
        "the unroutable message went to the policy's alternate exchange"
    );

    assert_eq!(
        request(api, "DELETE", "/api/policies/%2F/ae-policy", GUEST, None).status,
        204
    );
    publish(2).await;
    // A later message on the same channel is handled after the first: a
    // passive declare round trip orders them.
    declare(
        &ch,
        "lost",
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ready(), 1, "without the policy the message is dropped");
}

/// An AMQP channel call that must be refused with 403 ACCESS_REFUSED.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(r: Result<T, lapin::Error>, what: &str) {
    let e = r.expect_err(what);
    let text = e.to_string();
    assert!(
        text.contains("ACCESS_REFUSED") || text.contains("403"),
        "{what}: expected 403, got {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_enforces_configure_write_and_read_patterns() {
    let broker = Broker::start();
    let api = broker.management_addr();
    put(api, "/api/users/lim", json!({"password": "pw", "tags": ""}));
    put(
        api,
        "/api/permissions/%2F/lim",
        json!({"configure": "^lim-", "write": "^lim-|^amq\\.default$", "read": "^lim-"}),
    );
    let conn = amqp_login(broker.amqp_addr(), "lim", "pw", "/")
        .await
        .expect("lim logs in");

    // Configure: its own prefix only; a server-named queue is refused and gone.
    let ch = channel(&conn).await;
    declare(&ch, "lim-q", QueueDeclareOptions::default()).await;
    assert_refused(
        t!(ch.queue_declare(
            "other".into(),
            QueueDeclareOptions::default(),
            FieldTable::default()
        )),
        "declare a queue outside the pattern",
    );
    let ch = channel(&conn).await;
    assert_refused(
        t!(ch.queue_declare(
            "".into(),
            QueueDeclareOptions::default(),
            FieldTable::default()
        )),
        "declare a server-named queue (amq.gen-…)",
    );
    let queues = request(api, "GET", "/api/queues/%2F", GUEST, None).json();
    let names: Vec<&str> = queues
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|q| q["name"].as_str())
        .collect();
    assert_eq!(names, ["lim-q"], "the refused server-named queue is gone");

    // Read: binding from amq.topic needs read on amq.topic.
    let ch = channel(&conn).await;
    assert_refused(
        t!(ch.queue_bind(
            "lim-q".into(),
            "amq.topic".into(),
            "k".into(),
            lapin::options::QueueBindOptions::default(),
            FieldTable::default()
        )),
        "bind from amq.topic",
    );

    // Write: the default exchange yes, amq.direct no.
    let ch = channel(&conn).await;
    t!(ch.basic_publish(
        "".into(),
        "lim-q".into(),
        BasicPublishOptions::default(),
        b"ok",
        BasicProperties::default()
    ))
    .expect("publish to the default exchange");
    t!(ch.basic_publish(
        "amq.direct".into(),
        "k".into(),
        BasicPublishOptions::default(),
        b"no",
        BasicProperties::default()
    ))
    .expect("the publish is sent");
    // The refusal closes the channel: the next call on it fails.
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    assert!(
        t!(ch.queue_declare("lim-q".into(), passive, FieldTable::default())).is_err(),
        "the channel was closed by the refused publish"
    );

    // Read: its own queue yes, and the message sent to it arrived.
    let ch = channel(&conn).await;
    let got = t!(ch.basic_get(
        "lim-q".into(),
        lapin::options::BasicGetOptions { no_ack: true }
    ))
    .expect("get")
    .expect("a message");
    assert_eq!(got.delivery.data, b"ok");
    // Guest, with .* everywhere, is unaffected.
    let guest = connect(&broker).await;
    declare(
        &channel(&guest).await,
        "other",
        QueueDeclareOptions::default(),
    )
    .await;
}
