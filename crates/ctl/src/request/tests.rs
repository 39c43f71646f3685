//! Command lines parsed by clap and planned: the method, path and body each
//! command sends, and `unbind`'s lookup.

use super::*;
use crate::CtlArgs;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    ctl: CtlArgs,
}

/// Parses `switchyard ctl ARGS` and plans it.
fn plan_of(args: &[&str]) -> Plan {
    let cli = Cli::try_parse_from(std::iter::once("ctl").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    plan(&cli.ctl.command, &cli.ctl.global.vhost)
}

fn check(args: &[&str], method: Method, path: &str, body: Option<Value>) {
    let Plan::Send(req, _) = plan_of(args) else {
        panic!("{args:?}: not a single request")
    };
    assert_eq!(
        (req.method, req.path.as_str(), req.body.as_ref()),
        (method, path, body.as_ref()),
        "{args:?}"
    );
}

fn usage_error(args: &[&str]) {
    assert!(
        Cli::try_parse_from(std::iter::once("ctl").chain(args.iter().copied())).is_err(),
        "{args:?}"
    );
}

#[test]
fn lists() {
    check(&["list", "queues"], Method::Get, "/api/queues/%2F", None);
    check(
        &["list", "exchanges", "--vhost", "dev/1"],
        Method::Get,
        "/api/exchanges/dev%2F1",
        None,
    );
    check(
        &["--vhost", "v", "list", "bindings"],
        Method::Get,
        "/api/bindings/v",
        None,
    );
    check(
        &["list", "consumers"],
        Method::Get,
        "/api/consumers/%2F",
        None,
    );
    check(
        &["list", "policies"],
        Method::Get,
        "/api/policies/%2F",
        None,
    );
    check(
        &["list", "permissions"],
        Method::Get,
        "/api/vhosts/%2F/permissions",
        None,
    );
    check(
        &["list", "connections", "--vhost", "v"],
        Method::Get,
        "/api/connections",
        None,
    );
    check(&["list", "channels"], Method::Get, "/api/channels", None);
    check(&["list", "users"], Method::Get, "/api/users", None);
    check(&["list", "vhosts"], Method::Get, "/api/vhosts", None);
    usage_error(&["list", "widgets"]);
    usage_error(&["list"]);
}

#[test]
fn declare_and_delete() {
    check(
        &[
            "declare",
            "queue",
            "q 1",
            "--durable",
            "--arg",
            "x-max-length=10",
            "--arg",
            "x-queue-mode=lazy",
        ],
        Method::Put,
        "/api/queues/%2F/q%201",
        Some(json!({"durable": true, "auto_delete": false,
                    "arguments": {"x-max-length": 10, "x-queue-mode": "lazy"}})),
    );
    check(
        &[
            "declare",
            "exchange",
            "ex",
            "--type",
            "topic",
            "--auto-delete",
        ],
        Method::Put,
        "/api/exchanges/%2F/ex",
        Some(
            json!({"type": "topic", "durable": false, "auto_delete": true,
                    "internal": false, "arguments": {}}),
        ),
    );
    check(
        &["delete", "queue", "q/1"],
        Method::Delete,
        "/api/queues/%2F/q%2F1",
        None,
    );
    check(
        &["delete", "exchange", "ex", "--vhost", "v"],
        Method::Delete,
        "/api/exchanges/v/ex",
        None,
    );
    check(
        &["purge", "q"],
        Method::Delete,
        "/api/queues/%2F/q/contents",
        None,
    );
    usage_error(&["declare", "exchange", "ex"]);
    usage_error(&["declare", "queue", "q", "--arg", "nokey"]);
    usage_error(&["delete", "binding", "x"]);
    // An empty name would address the listing (`/api/queues/%2F/`).
    usage_error(&["declare", "queue", ""]);
    usage_error(&["delete", "exchange", ""]);
    usage_error(&["purge", ""]);
    usage_error(&["add-user", "", "pw"]);
    usage_error(&["bind", "--source", "", "--destination", "q"]);
}

#[test]
fn bindings() {
    check(
        &[
            "bind",
            "--source",
            "ex",
            "--destination",
            "q",
            "--routing-key",
            "a.*",
        ],
        Method::Post,
        "/api/bindings/%2F/e/ex/q/q",
        Some(json!({"routing_key": "a.*", "arguments": {}})),
    );
    check(
        &[
            "bind",
            "--source",
            "ex",
            "--destination",
            "ex2",
            "--destination-type",
            "exchange",
        ],
        Method::Post,
        "/api/bindings/%2F/e/ex/e/ex2",
        Some(json!({"routing_key": "", "arguments": {}})),
    );
    let Plan::Unbind {
        list,
        routing_key,
        arguments,
        ..
    } = plan_of(&[
        "unbind",
        "--source",
        "ex",
        "--destination",
        "q",
        "--routing-key",
        "k",
        "--arg",
        "x-match=all",
    ])
    else {
        panic!("unbind is not an Unbind plan")
    };
    assert_eq!(list, Request::get("/api/bindings/%2F/e/ex/q/q".into()));
    assert_eq!(routing_key, "k");
    assert_eq!(Value::Object(arguments), json!({"x-match": "all"}));
    usage_error(&["bind", "--source", "ex"]);
    usage_error(&[
        "bind",
        "--source",
        "e",
        "--destination",
        "q",
        "--destination-type",
        "topic",
    ]);
}

#[test]
fn unbind_finds_the_properties_key() {
    let listing = json!([
        {"routing_key": "k", "arguments": {"x": 1}, "properties_key": "k~abc"},
        {"routing_key": "other", "arguments": {}, "properties_key": "other"},
        {"routing_key": "k", "arguments": {}, "properties_key": "k"},
    ]);
    assert_eq!(find_binding(&listing, "k", &Map::new()), Some("k"));
    let x1: Map<String, Value> = [("x".to_owned(), json!(1))].into_iter().collect();
    assert_eq!(find_binding(&listing, "k", &x1), Some("k~abc"));
    assert_eq!(find_binding(&listing, "none", &Map::new()), None);
    assert_eq!(find_binding(&json!({}), "k", &Map::new()), None);
    let list = Request::get("/api/bindings/%2F/e/ex/q/q".into());
    assert_eq!(
        unbind(&list, "a/b~c").path,
        "/api/bindings/%2F/e/ex/q/q/a%2Fb~c"
    );
    assert_eq!(unbind(&list, "~").method, Method::Delete);
}

#[test]
fn users_permissions_policies() {
    check(
        &[
            "add-user",
            "bob",
            "s3cret",
            "--tags",
            "administrator,management",
        ],
        Method::Put,
        "/api/users/bob",
        Some(json!({"password": "s3cret", "tags": "administrator,management"})),
    );
    check(
        &["add-user", "b", "p"],
        Method::Put,
        "/api/users/b",
        Some(json!({"password": "p", "tags": ""})),
    );
    check(
        &["delete-user", "bob"],
        Method::Delete,
        "/api/users/bob",
        None,
    );
    check(
        &["set-permissions", "bob", "--read", "^q-"],
        Method::Put,
        "/api/permissions/%2F/bob",
        Some(json!({"configure": ".*", "write": ".*", "read": "^q-"})),
    );
    check(
        &[
            "set-policy",
            "ml",
            "^q",
            r#"{"max-length":5}"#,
            "--apply-to",
            "queues",
            "--priority",
            "3",
        ],
        Method::Put,
        "/api/policies/%2F/ml",
        Some(
            json!({"pattern": "^q", "definition": {"max-length": 5}, "apply-to": "queues", "priority": 3}),
        ),
    );
    check(
        &["clear-policy", "ml"],
        Method::Delete,
        "/api/policies/%2F/ml",
        None,
    );
    usage_error(&["set-policy", "ml", "^q", "[1]"]);
    usage_error(&["set-policy", "ml", "^q", "{}", "--apply-to", "streams"]);
}

#[test]
fn definitions_connections_messages() {
    assert_eq!(
        plan_of(&["export", "-"]),
        Plan::Export(Request::get("/api/definitions".into()), PathBuf::from("-"))
    );
    assert_eq!(
        plan_of(&["import", "defs.json"]),
        Plan::Import(PathBuf::from("defs.json"))
    );
    assert_eq!(
        import(json!({"queues": []})),
        Request::post("/api/definitions".into(), json!({"queues": []}))
    );
    let Plan::Send(close, _) = plan_of(&[
        "close-connection",
        "127.0.0.1:5000 -> 127.0.0.1:5672",
        "--reason",
        "bye",
    ]) else {
        panic!()
    };
    assert_eq!(
        close.path,
        "/api/connections/127.0.0.1%3A5000%20-%3E%20127.0.0.1%3A5672"
    );
    assert_eq!(
        (close.method, close.reason.as_deref()),
        (Method::Delete, Some("bye"))
    );
    check(
        &["publish", "--routing-key", "q", "hello"],
        Method::Post,
        "/api/exchanges/%2F/amq.default/publish",
        Some(
            json!({"properties": {}, "routing_key": "q", "payload": "hello", "payload_encoding": "string"}),
        ),
    );
    check(
        &["publish", "--exchange", "ex", "--routing-key", "k", "x"],
        Method::Post,
        "/api/exchanges/%2F/ex/publish",
        Some(
            json!({"properties": {}, "routing_key": "k", "payload": "x", "payload_encoding": "string"}),
        ),
    );
    check(
        &["get", "q", "--count", "3", "--requeue"],
        Method::Post,
        "/api/queues/%2F/q/get",
        Some(
            json!({"count": 3, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 50_000}),
        ),
    );
    check(
        &["get", "q"],
        Method::Post,
        "/api/queues/%2F/q/get",
        Some(
            json!({"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto", "truncate": 50_000}),
        ),
    );
    usage_error(&["get", "q", "--count", "0"]);
    usage_error(&["publish", "x"]);
}

#[test]
fn global_options() {
    let cli = Cli::try_parse_from([
        "ctl",
        "list",
        "users",
        "--url",
        "http://h:1/",
        "--format",
        "json",
        "--timeout",
        "5",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cli.ctl.global.url, "http://h:1");
    assert_eq!(cli.ctl.global.format, crate::cli::Format::Json);
    assert_eq!(cli.ctl.global.timeout, 5);
    // Positional names and passwords stay apart from --user/--password.
    let cli = Cli::try_parse_from([
        "ctl",
        "--user",
        "admin",
        "--password",
        "pw",
        "add-user",
        "bob",
        "s3cret",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (
            cli.ctl.global.user.as_str(),
            cli.ctl.global.password.as_str()
        ),
        ("admin", "pw")
    );
    let Plan::Send(req, _) = plan(&cli.ctl.command, "/") else {
        panic!()
    };
    assert_eq!(req.body, Some(json!({"password": "s3cret", "tags": ""})));
    let cli = Cli::try_parse_from(["ctl", "set-permissions", "bob", "--user", "admin"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cli.ctl.global.user, "admin");
    let Plan::Send(req, _) = plan(&cli.ctl.command, "/") else {
        panic!()
    };
    assert_eq!(req.path, "/api/permissions/%2F/bob");
    usage_error(&["list", "users", "--url", "https://h"]);
    usage_error(&["list", "users", "--format", "xml"]);
    usage_error(&["list", "users", "--timeout", "0"]);
}
