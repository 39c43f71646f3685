"""`switchyard ctl` end to end: the real binary against the broker's management
API, each command once, its output and exit code checked, and what it declared
checked again over AMQP with pika.

The binary is `$SWITCHYARD_BIN ctl` (see conftest). SWITCHYARD_CTL, if set, is
a standalone ctl executable used instead (the crate's example,
`cargo build -p switchyard-ctl --example ctl` -> target/debug/examples/ctl):
with SWITCHYARD_EXTERNAL and SWITCHYARD_EXTERNAL_MANAGEMENT it runs these tests
against a RabbitMQ node with the management plugin, whose API this one copies.

Exit codes under test: 0 ok, 1 refused by the server, 2 usage error, 3 server
unreachable, 4 authentication failed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pika
import pytest

from conftest import Endpoint, _binary
from helpers import process_until, wait_for, wait_get

CTL_TIMEOUT_S = 60
# RabbitMQ's management API shows connections, channels and consumers only
# after its statistics collector has seen them.
LIST_TIMEOUT_S = 15.0


def ctl_command() -> list[str]:
    standalone = os.environ.get("SWITCHYARD_CTL", "").strip()
    if standalone:
        return [standalone]
    return [str(_binary()), "ctl"]


def run_ctl(
    url: str | None, *args: str, stdin: str | None = None, password: str | None = None
) -> subprocess.CompletedProcess:
    cmd = ctl_command()
    if url is not None:
        cmd += ["--url", url]
    if password is not None:
        cmd += ["--password", password]
    cmd += list(args)
    # Hermetic: no SWITCHYARD_CTL_* settings from the caller's environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_CTL_")}
    return subprocess.run(
        cmd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CTL_TIMEOUT_S,
        env=env,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def describe(res: subprocess.CompletedProcess) -> str:
    return f"{res.args} -> {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"


class Ctl:
    """Runs `switchyard ctl --url <the broker's management API> ...`."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.url = f"http://{endpoint.host}:{endpoint.management_port}"

    def run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return run_ctl(self.url, *args, **kwargs)

    def ok(self, *args: str, **kwargs) -> str:
        """Runs a command that must succeed; its stdout."""
        res = self.run(*args, **kwargs)
        assert res.returncode == 0, describe(res)
        assert res.stderr == "", describe(res)
        return res.stdout

    def fails(self, code: int, *args: str, **kwargs) -> subprocess.CompletedProcess:
        res = self.run(*args, **kwargs)
        assert res.returncode == code, describe(res)
        assert res.stdout == "", describe(res)
        assert res.stderr.startswith("switchyard ctl: error: "), describe(res)
        return res

    def json(self, *args: str) -> object:
        return json.loads(self.ok("--format", "json", *args))


@pytest.fixture(scope="module")
def ctl(broker) -> Ctl:
    if broker.management_port is None:
        pytest.skip("the broker under test has no management listener")
    return Ctl(broker)


def rows(table: str, header: list[str]) -> list[list[str]]:
    """The rows of a `list` table (cells split on whitespace, so only for
    names without spaces), after checking its header line."""
    lines = table.splitlines()
    assert lines and lines[0].split() == header, f"header of:\n{table}"
    return [line.split() for line in lines[1:]]


def row_of(table: str, header: list[str], **cells: str) -> list[str] | None:
    """The first row whose named cells have these values."""
    for row in rows(table, header):
        named = dict(zip(header, row))
        if all(named.get(k) == v for k, v in cells.items()):
            return row
    return None


def wait_listed(ctl: Ctl, kind: str, pred, what: str) -> list[dict]:
    """`list KIND --format json` until an item satisfies `pred`."""
    found: list[dict] = []

    def seen() -> bool:
        found[:] = [item for item in ctl.json("list", kind) if pred(item)]
        return bool(found)

    wait_for(seen, LIST_TIMEOUT_S, what)
    return found


def queue_exists(endpoint: Endpoint, name: str) -> bool:
    conn = endpoint.connect()
    try:
        conn.channel().queue_declare(queue=name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return False
    finally:
        if conn.is_open:
            conn.close()


def exchange_exists(endpoint: Endpoint, name: str) -> bool:
    conn = endpoint.connect()
    try:
        conn.channel().exchange_declare(exchange=name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return False
    finally:
        if conn.is_open:
            conn.close()


def login_params(endpoint: Endpoint, user: str, password: str) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        host=endpoint.host,
        port=endpoint.port,
        credentials=pika.PlainCredentials(user, password),
        connection_attempts=1,
        socket_timeout=10,
        stack_timeout=20,
    )


def message_count(ch, queue: str) -> int:
    return ch.queue_declare(queue=queue, passive=True).method.message_count


QUEUE_HEADER = ["vhost", "name", "messages", "ready", "unacked", "consumers", "durable"]
EXCHANGE_HEADER = ["vhost", "name", "type", "durable", "auto_delete", "internal"]
BINDING_HEADER = ["vhost", "source", "destination", "destination_type", "routing_key", "arguments"]


# --------------------------------------------------------------------------
# Exit codes and usage
# --------------------------------------------------------------------------


def test_help_documents_exit_codes():
    res = run_ctl(None, "--help")
    assert res.returncode == 0, describe(res)
    for line in ("0  success", "2  usage error", "3  cannot reach the server", "4  authentication"):
        assert line in res.stdout, describe(res)


def test_usage_error_is_2(ctl):
    res = ctl.run("list", "widgets")
    assert res.returncode == 2, describe(res)
    assert "widgets" in res.stderr
    res = ctl.run("declare", "exchange", "no-type")
    assert res.returncode == 2, describe(res)
    res = ctl.run("set-policy", "p", ".*", "not json")
    assert res.returncode == 2, describe(res)


def test_unreachable_server_is_3():
    # A port nobody listens on: bound, then released.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = run_ctl(f"http://127.0.0.1:{port}", "list", "queues")
    assert res.returncode == 3, describe(res)
    assert res.stdout == ""
    assert "cannot reach" in res.stderr


def test_silent_server_times_out_with_3():
    # Accepts the connection, never answers.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        started = time.monotonic()
        res = run_ctl(f"http://127.0.0.1:{port}", "--timeout", "1", "list", "queues")
        elapsed = time.monotonic() - started
    assert res.returncode == 3, describe(res)
    assert "within 1 s" in res.stderr, describe(res)
    assert elapsed < 10


def test_wrong_password_is_4(ctl):
    res = ctl.fails(4, "list", "queues", password="not-the-password")
    assert "401" in res.stderr


def test_deleting_a_missing_queue_is_1(ctl, uniq):
    res = ctl.fails(1, "delete", "queue", f"ctl-missing-{uniq}")
    # The server's status and its `error`/`reason` fields.
    assert "404" in res.stderr, describe(res)
    assert "refused with 404:" in res.stderr, describe(res)


# --------------------------------------------------------------------------
# Queues and exchanges
# --------------------------------------------------------------------------


def test_declare_list_delete_queue(ctl, broker, connections, uniq):
    name = f"ctl-q-{uniq}"
    out = ctl.ok("declare", "queue", name, "--durable", "--arg", "x-max-length=10")
    assert out == "queue declared\n"
    # Really there, with these properties: an equivalent declare is accepted
    # (a different one would be refused with 406).
    ch = connections.open().channel()
    ch.queue_declare(queue=name, durable=True, arguments={"x-max-length": 10})

    row = row_of(ctl.ok("list", "queues"), QUEUE_HEADER, name=name)
    assert row is not None and row[0] == "/" and row[-1] == "true", row
    (listed,) = [q for q in ctl.json("list", "queues") if q["name"] == name]
    assert listed["durable"] is True and listed["vhost"] == "/"
    assert listed["arguments"] == {"x-max-length": 10}

    assert ctl.ok("delete", "queue", name) == "queue deleted\n"
    assert not queue_exists(broker, name)
    assert row_of(ctl.ok("list", "queues"), QUEUE_HEADER, name=name) is None


def test_names_are_percent_encoded(ctl, broker, uniq):
    name = f"ctl q/{uniq}?#%"
    ctl.ok("declare", "queue", name, "--auto-delete")
    assert queue_exists(broker, name)
    assert name in [q["name"] for q in ctl.json("list", "queues")]
    ctl.ok("delete", "queue", name)
    assert not queue_exists(broker, name)


def test_declare_list_delete_exchange(ctl, broker, connections, uniq):
    name = f"ctl-x-{uniq}"
    assert ctl.ok("declare", "exchange", name, "--type", "topic", "--durable") == (
        "exchange declared\n"
    )
    ch = connections.open().channel()
    ch.exchange_declare(exchange=name, exchange_type="topic", durable=True)
    row = row_of(ctl.ok("list", "exchanges"), EXCHANGE_HEADER, name=name)
    assert row == ["/", name, "topic", "true", "false", "false"], row

    assert ctl.ok("delete", "exchange", name) == "exchange deleted\n"
    assert not exchange_exists(broker, name)
    ctl.fails(1, "delete", "exchange", name)


def test_purge(ctl, connections, uniq):
    queue = f"ctl-purge-{uniq}"
    ch = connections.open().channel()
    ch.confirm_delivery()
    ch.queue_declare(queue=queue, auto_delete=False)
    for i in range(3):
        ch.basic_publish(exchange="", routing_key=queue, body=f"m{i}".encode())
    assert message_count(ch, queue) == 3
    assert ctl.ok("purge", queue) == "queue purged\n"
    assert message_count(ch, queue) == 0
    ch.queue_delete(queue=queue)


# --------------------------------------------------------------------------
# Bindings
# --------------------------------------------------------------------------


def test_bind_and_unbind(ctl, connections, uniq):
    exchange, queue = f"ctl-bx-{uniq}", f"ctl-bq-{uniq}"
    ch = connections.open().channel()
    ch.confirm_delivery()
    ch.exchange_declare(exchange=exchange, exchange_type="topic", auto_delete=False)
    ch.queue_declare(queue=queue, auto_delete=False)
    try:
        out = ctl.ok(
            "bind", "--source", exchange, "--destination", queue, "--routing-key", "a.*"
        )
        assert out == "binding created\n"
        row = row_of(ctl.ok("list", "bindings"), BINDING_HEADER, source=exchange)
        assert row == ["/", exchange, queue, "queue", "a.*", "{}"], row
        ch.basic_publish(exchange=exchange, routing_key="a.b", body=b"bound")
        assert wait_get(ch, queue)[2] == b"bound"

        out = ctl.ok(
            "unbind", "--source", exchange, "--destination", queue, "--routing-key", "a.*"
        )
        assert out == "binding deleted\n"
        assert row_of(ctl.ok("list", "bindings"), BINDING_HEADER, source=exchange) is None
        ch.basic_publish(exchange=exchange, routing_key="a.b", body=b"unbound")
        assert message_count(ch, queue) == 0
        # No such binding any more.
        res = ctl.fails(
            1, "unbind", "--source", exchange, "--destination", queue, "--routing-key", "a.*"
        )
        assert "no binding" in res.stderr
    finally:
        ch.queue_delete(queue=queue)
        ch.exchange_delete(exchange=exchange)


def test_bind_exchange_to_exchange(ctl, connections, uniq):
    source, dest, queue = f"ctl-e2e-s-{uniq}", f"ctl-e2e-d-{uniq}", f"ctl-e2e-q-{uniq}"
    ch = connections.open().channel()
    ch.confirm_delivery()
    ch.exchange_declare(exchange=source, exchange_type="direct", auto_delete=False)
    ch.exchange_declare(exchange=dest, exchange_type="fanout", auto_delete=False)
    ch.queue_declare(queue=queue, auto_delete=False)
    ch.queue_bind(queue=queue, exchange=dest)
    try:
        ctl.ok(
            "bind",
            "--source",
            source,
            "--destination",
            dest,
            "--destination-type",
            "exchange",
            "--routing-key",
            "k",
        )
        ch.basic_publish(exchange=source, routing_key="k", body=b"via-e2e")
        assert wait_get(ch, queue)[2] == b"via-e2e"
        ctl.ok(
            "unbind",
            "--source",
            source,
            "--destination",
            dest,
            "--destination-type",
            "exchange",
            "--routing-key",
            "k",
        )
        ch.basic_publish(exchange=source, routing_key="k", body=b"gone")
        assert message_count(ch, queue) == 0
    finally:
        ch.queue_delete(queue=queue)
        ch.exchange_delete(exchange=source)
        ch.exchange_delete(exchange=dest)


# --------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------


def test_publish_and_get(ctl, connections, uniq):
    queue = f"ctl-msg-{uniq}"
    ch = connections.open().channel()
    ch.queue_declare(queue=queue, auto_delete=False)
    try:
        assert ctl.ok("publish", "--routing-key", queue, "hello ctl") == "message published\n"
        assert ctl.ok("publish", "--routing-key", f"nobody-{uniq}", "x") == (
            "message published but not routed\n"
        )
        wait_for(lambda: message_count(ch, queue) == 1, what="the published message")

        # --requeue leaves it in the queue.
        table = ctl.ok("get", queue, "--requeue")
        lines = table.splitlines()
        assert lines[0].split() == [
            "exchange", "routing_key", "redelivered", "remaining", "payload", "encoding"
        ]
        assert len(lines) == 2 and "hello ctl" in lines[1] and queue in lines[1], table
        assert message_count(ch, queue) == 1

        # Without it the message is taken.
        (msg,) = ctl.json("get", queue, "--count", "5")
        assert msg["payload"] == "hello ctl" and msg["routing_key"] == queue
        assert msg["redelivered"] is True
        assert message_count(ch, queue) == 0
        assert ctl.json("get", queue) == []
    finally:
        ch.queue_delete(queue=queue)


def test_publish_through_an_exchange(ctl, connections, uniq):
    exchange, queue = f"ctl-px-{uniq}", f"ctl-pq-{uniq}"
    ch = connections.open().channel()
    ch.exchange_declare(exchange=exchange, exchange_type="direct", auto_delete=False)
    ch.queue_declare(queue=queue, auto_delete=False)
    ch.queue_bind(queue=queue, exchange=exchange, routing_key="rk")
    try:
        out = ctl.ok("publish", "--exchange", exchange, "--routing-key", "rk", "via exchange")
        assert out == "message published\n"
        method, _props, body = wait_get(ch, queue)
        assert (body, method.exchange, method.routing_key) == (b"via exchange", exchange, "rk")
    finally:
        ch.queue_delete(queue=queue)
        ch.exchange_delete(exchange=exchange)


# --------------------------------------------------------------------------
# Users, permissions, vhosts
# --------------------------------------------------------------------------


def test_users_and_permissions(ctl, broker, uniq):
    user, password = f"ctl-user-{uniq}", f"pw-{uniq}"
    assert ctl.ok("add-user", user, password, "--tags", "management") == "user created\n"
    try:
        row = row_of(ctl.ok("list", "users"), ["name", "tags"], name=user)
        assert row == [user, "management"], row
        assert row_of(ctl.ok("list", "users"), ["name", "tags"], name="guest") is not None

        # No permissions in `/` yet: the user cannot open it over AMQP.
        with pytest.raises(pika.exceptions.AMQPConnectionError) as refused:
            pika.BlockingConnection(login_params(broker, user, password))
        assert not isinstance(refused.value, pika.exceptions.ProbableAuthenticationError)

        out = ctl.ok("set-permissions", user, "--configure", "^ctl-", "--read", "^ctl-")
        assert out == "permissions set\n"
        header = ["user", "vhost", "configure", "write", "read"]
        row = row_of(ctl.ok("list", "permissions"), header, user=user)
        assert row == [user, "/", "^ctl-", ".*", "^ctl-"], row

        # Now it can.
        conn = pika.BlockingConnection(login_params(broker, user, password))
        try:
            conn.channel().queue_declare(queue=f"ctl-perm-{uniq}", exclusive=True)
        finally:
            conn.close()

        # The management API accepts the new user's credentials too.
        res = run_ctl(ctl.url, "--user", user, "--password", password, "list", "vhosts")
        assert res.returncode == 0, describe(res)
    finally:
        assert ctl.ok("delete-user", user) == "user deleted\n"
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(login_params(broker, user, password))
    ctl.fails(1, "delete-user", user)
    ctl.fails(4, "--user", user, "--password", password, "list", "vhosts")


def test_list_vhosts(ctl):
    lines = ctl.ok("list", "vhosts").splitlines()
    assert lines[0].split() == ["name", "description", "messages"]
    assert any(line.split()[:1] == ["/"] for line in lines[1:]), lines
    assert "/" in [v["name"] for v in ctl.json("list", "vhosts")]


def test_unknown_vhost_is_refused(ctl, uniq):
    res = ctl.fails(1, "--vhost", f"no-such-vhost-{uniq}", "list", "queues")
    assert "404" in res.stderr


# --------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------


def test_set_list_clear_policy(ctl, uniq):
    name = f"ctl-pol-{uniq}"
    out = ctl.ok(
        "set-policy",
        name,
        f"^ctl-pol-{uniq}-",
        '{"max-length": 2}',
        "--apply-to",
        "queues",
        "--priority",
        "3",
    )
    assert out == "policy set\n"
    header = ["vhost", "name", "pattern", "apply_to", "priority", "definition"]
    row = row_of(ctl.ok("list", "policies"), header, name=name)
    assert row == ["/", name, f"^ctl-pol-{uniq}-", "queues", "3", '{"max-length":2}'], row
    (policy,) = [p for p in ctl.json("list", "policies") if p["name"] == name]
    assert policy["definition"] == {"max-length": 2} and policy["apply-to"] == "queues"
    assert policy["priority"] == 3

    assert ctl.ok("clear-policy", name) == "policy cleared\n"
    assert name not in [p["name"] for p in ctl.json("list", "policies")]
    ctl.fails(1, "clear-policy", name)


# --------------------------------------------------------------------------
# Definitions
# --------------------------------------------------------------------------


def test_export_and_import(ctl, broker, connections, uniq, tmp_path):
    kept = f"ctl-exported-{uniq}"
    ch = connections.open().channel()
    ch.queue_declare(queue=kept, durable=True)
    try:
        target = tmp_path / "defs.json"
        assert ctl.ok("export", str(target)) == f"definitions exported to {target}\n"
        exported = json.loads(target.read_text())
        assert kept in [q["name"] for q in exported["queues"]]
        assert "/" in [v["name"] for v in exported["vhosts"]]
        # `-` is stdout.
        assert kept in [q["name"] for q in json.loads(ctl.ok("export", "-"))["queues"]]

        # Import a file declaring a new queue (and re-declaring the old one).
        imported = f"ctl-imported-{uniq}"
        queue = {"vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}
        defs = {"queues": [dict(queue, name=imported), dict(queue, name=kept)]}
        source = tmp_path / "import.json"
        source.write_text(json.dumps(defs))
        assert ctl.ok("import", str(source)) == "definitions imported\n"
        assert queue_exists(broker, imported)
        ch.queue_delete(queue=imported)
        # `-` is stdin.
        assert ctl.ok("import", "-", stdin=json.dumps(defs)) == "definitions imported\n"
        assert queue_exists(broker, imported)
        ch.queue_delete(queue=imported)

        # Not JSON: refused before anything is sent.
        (tmp_path / "bad.json").write_text("{nope")
        res = ctl.fails(1, "import", str(tmp_path / "bad.json"))
        assert "not valid JSON" in res.stderr
    finally:
        ch.queue_delete(queue=kept)


# --------------------------------------------------------------------------
# Connections, channels, consumers
# --------------------------------------------------------------------------


def test_connections_channels_consumers_and_close(ctl, broker, connections, uniq):
    before = {c["name"] for c in ctl.json("list", "connections")}
    conn = connections.open()
    ch = conn.channel()
    queue = f"ctl-cons-{uniq}"
    ch.queue_declare(queue=queue, auto_delete=True)
    ch.basic_qos(prefetch_count=7)
    tag = f"ctl-tag-{uniq}"
    ch.basic_consume(queue=queue, on_message_callback=lambda *a: None, consumer_tag=tag)

    (mine,) = wait_listed(
        ctl, "connections", lambda c: c["name"] not in before, "the new connection"
    )
    name = mine["name"]
    assert mine["user"] == "guest" and mine["vhost"] == "/"
    lines = ctl.ok("list", "connections").splitlines()
    assert lines[0].split() == ["name", "protocol", "user", "vhost", "peer"]
    (line,) = [line for line in lines[1:] if line.startswith(name + " ")]
    assert line.split()[-3:] == ["guest", "/", f"{mine['peer_host']}:{mine['peer_port']}"], line

    wait_listed(
        ctl,
        "channels",
        lambda c: c.get("connection_details", {}).get("name") == name,
        "the new connection's channel",
    )
    channels = ctl.ok("list", "channels").splitlines()
    assert channels[0].split() == ["name", "user", "vhost", "consumers", "prefetch", "unacked"]
    assert any(line.startswith(name) for line in channels[1:]), channels

    wait_listed(ctl, "consumers", lambda c: c.get("consumer_tag") == tag, "the consumer")
    header = ["vhost", "queue", "consumer_tag", "channel", "ack_required", "prefetch", "exclusive"]
    consumers = ctl.ok("list", "consumers").splitlines()
    assert consumers[0].split() == header
    (line,) = [line for line in consumers[1:] if f" {tag} " in line]
    assert line.split()[:3] == ["/", queue, tag], line

    out = ctl.ok("close-connection", name, "--reason", "closed by ctl test")
    assert out == "connection closed\n"
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        process_until(conn, lambda: False, timeout=LIST_TIMEOUT_S, what="the close")
    assert closed.value.reply_code == 320
    assert "closed by ctl test" in closed.value.reply_text
    ctl.fails(1, "close-connection", name)
