"""The management HTTP API (RabbitMQ-compatible), the Prometheus endpoint, the
route tester, and Debian's `rabbitmqadmin` driving the API.

Expectations are RabbitMQ 3.10's observed behaviour (status codes, field names,
error shapes): create -> 201, update -> 204, delete -> 204, missing -> 404,
bad input -> 400 {"error","reason"}, authentication and authorisation failures
-> 401 (RabbitMQ never answers 403).

Oracle mode: with MGMT_ORACLE=host:port the API tests run against that
RabbitMQ management listener instead of a Switchyard broker started by the
fixtures; AMQP goes to MGMT_ORACLE_AMQP (default 5691) on the same host, MQTT
and STOMP to the ports the node lists in /api/overview `listeners`. Tests of
Switchyard-only features (Prometheus, /api/switchyard/route, MQTT 5) are
skipped in oracle mode only.

The shared `broker` fixture serves these tests; every name carries the test's
unique suffix (`uniq`); every wait is bounded; all traffic is on loopback.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import os
import queue
import shutil
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import paho.mqtt.client as mqtt
import pika
import pika.exceptions
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from helpers import process_until, wait_get
from stomp_helpers import StompClient

ORACLE = os.environ.get("MGMT_ORACLE", "").strip()
GUEST = ("guest", "guest")
HTTP_TIMEOUT = 10.0  # seconds, any single HTTP request
WAIT = 10.0  # bound on a protocol-level wait
# RabbitMQ refreshes its statistics every collect_statistics_interval (5 s by
# default): counters and connection lists may lag that long.
STATS_WAIT = 20.0

oracle_skip = pytest.mark.skipif(
    bool(ORACLE), reason="Switchyard-only feature; MGMT_ORACLE targets RabbitMQ"
)


# -- the API under test ---------------------------------------------------------


@dataclass
class Api:
    base: str  # http://host:port
    host: str
    amqp_port: int
    mqtt_port: int | None
    stomp_port: int | None
    prometheus_port: int | None
    oracle: bool

    def url(self, path: str) -> str:
        return self.base + path

    def request(self, method: str, path: str, auth=GUEST, **kw) -> requests.Response:
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return requests.request(method, self.url(path), auth=auth, **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return self.request("GET", path, **kw)

    def put(self, path: str, body: Any = None, **kw) -> requests.Response:
        if body is not None:
            kw["json"] = body
        return self.request("PUT", path, **kw)

    def post(self, path: str, body: Any = None, **kw) -> requests.Response:
        if body is not None:
            kw["json"] = body
        return self.request("POST", path, **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return self.request("DELETE", path, **kw)

    def json(self, path: str, **kw) -> Any:
        r = self.get(path, **kw)
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text[:500]}"
        assert r.headers.get("content-type", "").startswith("application/json"), r.headers
        return r.json()

    def amqp_params(self, user="guest", password="guest", vhost="/", name=None):
        props = {"connection_name": name} if name else None
        return pika.ConnectionParameters(
            host=self.host,
            port=self.amqp_port,
            virtual_host=vhost,
            credentials=pika.PlainCredentials(user, password),
            heartbeat=30,
            connection_attempts=1,
            socket_timeout=10,
            stack_timeout=20,
            blocked_connection_timeout=30,
            client_properties=props,
        )

    @property
    def endpoint(self) -> SimpleNamespace:
        """What stomp_helpers.StompClient wants."""
        return SimpleNamespace(host=self.host, stomp_port=self.stomp_port)


def q(name: str) -> str:
    """Percent-encode one path segment ('/' -> %2F)."""
    return urllib.parse.quote(name, safe="")


def expect(r: requests.Response, status: int, what: str = "") -> requests.Response:
    assert r.status_code == status, (
        f"{r.request.method} {r.request.url} {what}: expected {status}, got "
        f"{r.status_code} {r.text[:600]}"
    )
    return r


def expect_error(r: requests.Response, status: int) -> dict:
    """An error answer: status, JSON body {"error": ..., "reason": ...}."""
    expect(r, status)
    body = r.json()
    assert isinstance(body, dict) and "error" in body and "reason" in body, body
    return body


def poll(fetch: Callable[[], Any], ok: Callable[[Any], bool], what: str, timeout=STATS_WAIT):
    """Call fetch() until ok(value); fail after `timeout` s showing the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {value!r}"[:3000])
        time.sleep(0.25)


def rabbit_hash(password: str, salt: bytes = b"\x90\x8d\xb4\x3b") -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt ++ sha256(salt ++ pw))."""
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def assert_password_hash(user: dict) -> None:
    """RabbitMQ hashes with salted SHA-256; Switchyard stores new passwords
    with Argon2id (and accepts RabbitMQ's hashes on import / PUT)."""
    algo, h = user["hashing_algorithm"], user["password_hash"]
    if algo == "rabbit_password_hashing_sha256":
        assert len(base64.b64decode(h)) == 36, user
    else:
        assert algo == "switchyard_argon2id" and h.startswith("$argon2id$"), user


def _oracle_api() -> Api:
    host, _, port = ORACLE.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    base = f"http://{host}:{int(port)}"
    r = requests.get(base + "/api/overview", auth=GUEST, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, f"MGMT_ORACLE {ORACLE}: /api/overview -> {r.status_code}"
    ports = {l["protocol"]: int(l["port"]) for l in r.json().get("listeners", [])}
    return Api(
        base=base,
        host=host,
        amqp_port=int(os.environ.get("MGMT_ORACLE_AMQP", "5691")),
        mqtt_port=ports.get("mqtt"),
        stomp_port=ports.get("stomp"),
        prometheus_port=None,
        oracle=True,
    )


def _switchyard_api(endpoint) -> Api:
    if endpoint.management_port is None:
        pytest.fail("the broker announced no management= listener in its ready file", pytrace=False)
    return Api(
        base=f"http://{endpoint.host}:{endpoint.management_port}",
        host=endpoint.host,
        amqp_port=endpoint.port,
        mqtt_port=endpoint.mqtt_port,
        stomp_port=endpoint.stomp_port,
        prometheus_port=endpoint.prometheus_port,
        oracle=False,
    )


@pytest.fixture(scope="session")
def api(request) -> Api:
    if ORACLE:
        return _oracle_api()
    return _switchyard_api(request.getfixturevalue("broker"))


# -- clients --------------------------------------------------------------------


class Clients:
    """Every AMQP / MQTT / STOMP client a test opens; all closed at teardown."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._close: list[Callable[[], None]] = []

    def amqp(self, **kw) -> pika.BlockingConnection:
        conn = pika.BlockingConnection(self.api.amqp_params(**kw))
        self._close.append(lambda: conn.close() if conn.is_open else None)
        return conn

    def mqtt(self, client_id: str, protocol=mqtt.MQTTv311, clean=True) -> "Mqtt":
        m = Mqtt(self.api, client_id, protocol, clean)
        self._close.append(m.close)
        return m

    def stomp(self) -> StompClient:
        if self.api.stomp_port is None:
            pytest.fail("the broker has no STOMP listener", pytrace=False)
        s = StompClient(self.api.endpoint, "1.2")
        self._close.append(s.close)
        s.connect()
        return s

    def close_all(self) -> None:
        for fn in reversed(self._close):
            try:
                fn()
            except Exception:
                pass
        self._close.clear()


@pytest.fixture
def clients(api) -> Clients:
    c = Clients(api)
    try:
        yield c
    finally:
        c.close_all()


class Mqtt:
    """A paho client (3.1.1 or 5) on its own network thread; no reconnects."""

    def __init__(self, api: Api, client_id: str, protocol, clean: bool) -> None:
        if api.mqtt_port is None:
            pytest.fail("the broker has no MQTT listener", pytrace=False)
        self.messages: queue.Queue = queue.Queue()
        self._connack: queue.Queue = queue.Queue()
        self._subacks: queue.Queue = queue.Queue()
        self.disconnects: queue.Queue = queue.Queue()
        kw = dict(client_id=client_id, protocol=protocol, reconnect_on_failure=False)
        if protocol != mqtt.MQTTv5:
            kw["clean_session"] = clean
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kw)
        c.username_pw_set("guest", "guest")
        c.on_connect = lambda _c, _u, flags, rc, _p: self._connack.put(rc)
        c.on_message = lambda _c, _u, msg: self.messages.put(msg)
        c.on_subscribe = lambda _c, _u, mid, codes, _p: self._subacks.put((mid, codes))
        c.on_disconnect = lambda _c, _u, _flags, rc, _p: self.disconnects.put(rc)
        self.c = c
        if protocol == mqtt.MQTTv5:
            c.connect(api.host, api.mqtt_port, keepalive=30, clean_start=clean)
        else:
            c.connect(api.host, api.mqtt_port, keepalive=30)
        c.loop_start()
        try:
            rc = self._connack.get(timeout=WAIT)
        except queue.Empty:
            c.loop_stop()
            pytest.fail(f"no CONNACK for {client_id!r} within {WAIT}s")
        assert not rc.is_failure, f"CONNACK for {client_id!r}: {rc}"

    @property
    def local_port(self) -> int:
        return self.c.socket().getsockname()[1]

    def subscribe(self, topic: str, qos: int) -> None:
        rc, mid = self.c.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        got_mid, codes = self._subacks.get(timeout=WAIT)
        assert got_mid == mid and not codes[0].is_failure, codes

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        info = self.c.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published(), f"MQTT publish to {topic!r} not acknowledged"

    def close(self) -> None:
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()


def amqp_local_port(conn: pika.BlockingConnection) -> int:
    return conn._impl._transport._sock.getsockname()[1]


def stomp_local_port(s: StompClient) -> int:
    return s.conn.transport.socket.getsockname()[1]


def find_connection(api: Api, peer_port: int, timeout=STATS_WAIT) -> dict:
    """The /api/connections entry of the client whose local port is peer_port."""

    def match(conns):
        return [c for c in conns if c.get("peer_port") == peer_port]

    found = poll(lambda: api.json("/api/connections"), lambda cs: len(match(cs)) == 1,
                 f"a connection with peer_port {peer_port}", timeout)
    return match(found)[0]


# -- overview, whoami, authentication --------------------------------------------


def test_overview_has_totals_stats_listeners_and_node(api, clients, uniq):
    conn = clients.amqp()
    ch = conn.channel()
    ch.confirm_delivery()
    name = f"ov-{uniq}"
    ch.queue_declare(queue=name, auto_delete=False)
    ch.basic_publish("", name, b"x")
    try:
        ov = poll(lambda: api.json("/api/overview"),
                  lambda o: (o.get("queue_totals") or {}).get("messages", 0) >= 1
                  and (o.get("message_stats") or {}).get("publish", 0) >= 1,
                  "queue_totals.messages and message_stats.publish to count the message")
        totals = ov["object_totals"]
        for key in ("channels", "connections", "consumers", "exchanges", "queues"):
            assert isinstance(totals[key], int) and totals[key] >= 0, totals
        assert totals["connections"] >= 1 and totals["channels"] >= 1 and totals["queues"] >= 1
        assert totals["exchanges"] == len(api.json("/api/exchanges")), "object_totals.exchanges vs the list"
        qt = ov["queue_totals"]
        for key in ("messages", "messages_ready", "messages_unacknowledged"):
            assert isinstance(qt[key], int), qt
            assert isinstance(qt[f"{key}_details"]["rate"], (int, float)), qt
        ms = ov["message_stats"]
        assert isinstance(ms["publish_details"]["rate"], (int, float)), ms
        amqp = [l for l in ov["listeners"] if l["protocol"] == "amqp"]
        assert [l["port"] for l in amqp] == [api.amqp_port], ov["listeners"]
        assert all({"node", "protocol", "ip_address", "port"} <= set(l) for l in ov["listeners"])
        assert isinstance(ov["node"], str) and ov["node"], ov["node"]
        assert amqp[0]["node"] == ov["node"]
        assert isinstance(ov.get("rabbitmq_version"), str) and isinstance(ov.get("management_version"), str)
    finally:
        ch.queue_delete(queue=name)


def test_whoami_guest(api):
    me = api.json("/api/whoami")
    assert me["name"] == "guest" and me["tags"] == ["administrator"], me


def test_guest_from_loopback_by_name_and_address(api):
    port = urllib.parse.urlsplit(api.base).port
    for host in ("127.0.0.1", "localhost"):
        r = requests.get(f"http://{host}:{port}/api/whoami", auth=GUEST, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200 and r.json()["name"] == "guest", (host, r.status_code, r.text)


def test_no_credentials_is_401_with_basic_challenge(api):
    for path in ("/api/overview", "/api/queues", "/api/whoami"):
        r = api.get(path, auth=None)
        expect(r, 401)
        assert r.headers.get("www-authenticate", "").lower().startswith("basic"), r.headers


def test_wrong_password_and_unknown_user_are_401(api):
    for auth in (("guest", "not-the-password"), ("nobody-at-all", "x")):
        r = api.get("/api/overview", auth=auth)
        body = expect_error(r, 401)
        assert body["reason"] == "Login failed", body


# -- vhosts ------------------------------------------------------------------------


def test_vhost_crud(api, uniq):
    v = f"vh-{uniq}"
    expect(api.get(f"/api/vhosts/{q(v)}"), 404)
    expect(api.put(f"/api/vhosts/{q(v)}"), 201, "create")
    try:
        expect(api.put(f"/api/vhosts/{q(v)}", {"description": "for tests", "tags": "a,b"}), 204, "update")
        got = api.json(f"/api/vhosts/{q(v)}")
        assert got["name"] == v and got["description"] == "for tests", got
        assert sorted(got["tags"]) == ["a", "b"], got
        assert v in [x["name"] for x in api.json("/api/vhosts")]
        root = api.json("/api/vhosts/%2F")
        assert root["name"] == "/"
        # The creating user gets full permissions on the new vhost (RabbitMQ
        # does that for a vhost created through the API), so it is usable at once.
        assert api.json(f"/api/permissions/{q(v)}/guest") == {
            "user": "guest", "vhost": v, "configure": ".*", "write": ".*", "read": ".*"}
        conn = pika.BlockingConnection(api.amqp_params(vhost=v))
        try:
            conn.channel().queue_declare(queue="in-new-vhost")
        finally:
            conn.close()
        expect(api.put(f"/api/vhosts/{q(v)}", data=b"not json",
                       headers={"content-type": "application/json"}), 400)
    finally:
        expect(api.delete(f"/api/vhosts/{q(v)}"), 204, "delete")
    expect(api.get(f"/api/vhosts/{q(v)}"), 404)
    expect(api.delete(f"/api/vhosts/{q(v)}"), 404)
    assert v not in [x["name"] for x in api.json("/api/vhosts")]


# -- users, permissions ------------------------------------------------------------


def test_user_crud_and_amqp_login(api, uniq):
    u, v, pw = f"bob-{uniq}", f"bobv-{uniq}", f"pw-{uniq}"
    expect(api.get(f"/api/users/{q(u)}"), 404)
    expect(api.put(f"/api/users/{q(u)}", {"password": pw, "tags": "administrator,monitoring"}), 201)
    expect(api.put(f"/api/vhosts/{q(v)}"), 201)
    try:
        got = api.json(f"/api/users/{q(u)}")
        assert got["name"] == u and sorted(got["tags"]) == ["administrator", "monitoring"], got
        assert_password_hash(got)
        assert u in [x["name"] for x in api.json("/api/users")]
        # Update: tags as a JSON list, a new password.
        pw2 = pw + "-2"
        expect(api.put(f"/api/users/{q(u)}", {"password": pw2, "tags": ["monitoring"]}), 204)
        assert api.json(f"/api/users/{q(u)}")["tags"] == ["monitoring"]
        # The API sees the new password only.
        me = api.json("/api/whoami", auth=(u, pw2))
        assert (me["name"], me["tags"]) == (u, ["monitoring"]), me
        expect_error(api.get("/api/whoami", auth=(u, pw)), 401)
        # AMQP login on a vhost the user has permissions for.
        expect(api.put(f"/api/permissions/{q(v)}/{q(u)}", {"configure": ".*", "write": ".*", "read": ".*"}), 201)
        conn = pika.BlockingConnection(api.amqp_params(user=u, password=pw2, vhost=v))
        try:
            ch = conn.channel()
            ch.queue_declare(queue="mine", exclusive=True)
            ch.basic_publish("", "mine", b"hi")
            assert wait_get(ch, "mine")[2] == b"hi"
        finally:
            conn.close()
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(api.amqp_params(user=u, password="wrong", vhost=v))
        # Missing password and password_hash with no tags either: 400.
        expect_error(api.put(f"/api/users/{q(u)}-x", {}), 400)
    finally:
        expect(api.delete(f"/api/users/{q(u)}"), 204)
        expect(api.delete(f"/api/vhosts/{q(v)}"), 204)
    expect(api.get(f"/api/users/{q(u)}"), 404)
    expect(api.delete(f"/api/users/{q(u)}"), 404)
    expect_error(api.get("/api/whoami", auth=(u, pw + "-2")), 401)


def test_user_with_password_hash_can_log_in(api, clients, uniq):
    u, pw = f"hashed-{uniq}", f"secret-{uniq}"
    h = rabbit_hash(pw)
    expect(api.put(f"/api/users/{q(u)}", {"password_hash": h, "tags": "management"}), 201)
    try:
        got = api.json(f"/api/users/{q(u)}")
        assert got["password_hash"] == h and got["tags"] == ["management"], got
        assert api.json("/api/whoami", auth=(u, pw))["name"] == u
        expect(api.put(f"/api/permissions/%2F/{q(u)}", {"configure": "", "write": ".*", "read": ".*"}), 201)
        clients.amqp(user=u, password=pw).channel()
        # An empty hash: nobody can log in with any password.
        expect(api.put(f"/api/users/{q(u)}", {"password_hash": "", "tags": ""}), 204)
        expect_error(api.get("/api/whoami", auth=(u, pw)), 401)
        assert api.json(f"/api/users/{q(u)}")["tags"] == []
    finally:
        expect(api.delete(f"/api/users/{q(u)}"), 204)


def test_permissions_crud(api, uniq):
    u = f"perm-{uniq}"
    path = f"/api/permissions/%2F/{q(u)}"
    expect(api.put(f"/api/users/{q(u)}", {"password": "pw", "tags": ""}), 201)
    try:
        expect(api.get(path), 404)
        expect(api.put(path, {"configure": "^a", "write": ".*", "read": ".*"}), 201)
        expect(api.put(path, {"configure": "^b", "write": "^w", "read": "^r"}), 204)
        assert api.json(path) == {"user": u, "vhost": "/", "configure": "^b", "write": "^w", "read": "^r"}
        assert {"user": u, "vhost": "/", "configure": "^b", "write": "^w", "read": "^r"} in api.json("/api/permissions")
        assert u in [p["user"] for p in api.json("/api/vhosts/%2F/permissions")]
        assert [p["vhost"] for p in api.json(f"/api/users/{q(u)}/permissions")] == ["/"]
        body = expect_error(api.put(path, {"configure": ".*"}), 400)
        assert "write" in body["reason"] and "read" in body["reason"], body
        expect_error(api.put(f"/api/permissions/%2F/nouser-{uniq}", {"configure": ".*", "write": ".*", "read": ".*"}), 400)
        expect(api.delete(path), 204)
        expect(api.get(path), 404)
        expect(api.delete(path), 404)
    finally:
        expect(api.delete(f"/api/users/{q(u)}"), 204)


def test_topic_permissions_crud(api, uniq):
    u = f"tp-{uniq}"
    path = f"/api/topic-permissions/%2F/{q(u)}"
    expect(api.put(f"/api/users/{q(u)}", {"password": "pw", "tags": ""}), 201)
    try:
        expect(api.get(path), 404)
        expect(api.put(path, {"exchange": "amq.topic", "write": "^plant", "read": ".*"}), 201)
        expect(api.put(path, {"exchange": "amq.topic", "write": "^x", "read": "^y"}), 204)
        want = {"user": u, "vhost": "/", "exchange": "amq.topic", "write": "^x", "read": "^y"}
        assert api.json(path) == [want]
        assert want in api.json("/api/topic-permissions")
        body = expect_error(api.put(path, {"write": ".*", "read": ".*"}), 400)
        assert "exchange" in body["reason"], body
        expect(api.delete(path), 204)
        expect(api.get(path), 404)
        expect(api.delete(path), 404)
    finally:
        expect(api.delete(f"/api/users/{q(u)}"), 204)


# -- exchanges, publish -------------------------------------------------------------


def test_exchange_declare_get_delete_and_type_mismatch(api, clients, uniq):
    x = f"ex-{uniq}"
    path = f"/api/exchanges/%2F/{q(x)}"
    expect(api.get(path), 404)
    expect(api.put(path, {"type": "direct", "durable": True, "auto_delete": False, "arguments": {}}), 201)
    try:
        expect(api.put(path, {"type": "direct", "durable": True}), 204, "equivalent re-declare")
        got = api.json(path)
        for key, want in (("name", x), ("vhost", "/"), ("type", "direct"), ("durable", True),
                          ("auto_delete", False), ("internal", False), ("arguments", {})):
            assert got[key] == want, (key, got)
        body = expect_error(api.put(path, {"type": "fanout", "durable": True}), 400)
        assert "inequivalent arg 'type'" in body["reason"], body
        assert x in [e["name"] for e in api.json("/api/exchanges/%2F")]
        listed = {(e["vhost"], e["name"]): e for e in api.json("/api/exchanges")}
        assert listed[("/", x)]["type"] == "direct"
        assert listed[("/", "")]["type"] == "direct", "the default exchange is listed with name ''"
        topic = api.json("/api/exchanges/%2F/amq.topic")
        assert topic["type"] == "topic" and topic["durable"] is True
        expect_error(api.put(f"/api/exchanges/%2F/bad-{uniq}", {"type": "no-such-type"}), 400)
        # The exchange is real: AMQP passive declare sees it.
        clients.amqp().channel().exchange_declare(exchange=x, passive=True)
        expect_error(api.delete("/api/exchanges/%2F/amq.topic"), 401)
    finally:
        expect(api.delete(path), 204)
    expect(api.get(path), 404)
    expect(api.delete(path), 404)


def test_publish_endpoint_reports_routed(api, clients, uniq):
    name = f"pub-{uniq}"
    expect(api.put(f"/api/queues/%2F/{q(name)}", {"durable": False, "auto_delete": False}), 201)
    try:
        r = expect(api.post("/api/exchanges/%2F/amq.default/publish",
                            {"properties": {"content_type": "text/plain", "headers": {"k": "v"}},
                             "routing_key": name, "payload": "hello", "payload_encoding": "string"}), 200)
        assert r.json() == {"routed": True}
        r = expect(api.post("/api/exchanges/%2F/amq.default/publish",
                            {"properties": {}, "routing_key": name,
                             "payload": base64.b64encode(b"\x00bin").decode(), "payload_encoding": "base64"}), 200)
        assert r.json() == {"routed": True}
        r = expect(api.post("/api/exchanges/%2F/amq.default/publish",
                            {"properties": {}, "routing_key": f"nowhere-{uniq}", "payload": "x",
                             "payload_encoding": "string"}), 200)
        assert r.json() == {"routed": False}
        expect_error(api.post(f"/api/exchanges/%2F/nope-{uniq}/publish",
                              {"properties": {}, "routing_key": "k", "payload": "x", "payload_encoding": "string"}), 400)
        expect_error(api.post("/api/exchanges/%2F/amq.default/publish", {"routing_key": name, "payload": "x"}), 400)
        ch = clients.amqp().channel()
        _m, props, body = wait_get(ch, name)
        assert body == b"hello" and props.content_type == "text/plain" and props.headers == {"k": "v"}
        assert wait_get(ch, name)[2] == b"\x00bin"
    finally:
        expect(api.delete(f"/api/queues/%2F/{q(name)}"), 204)


# -- queues ---------------------------------------------------------------------------


def test_queue_declare_get_delete_and_inequivalent_args(api, clients, uniq):
    name = f"qd-{uniq}"
    path = f"/api/queues/%2F/{q(name)}"
    expect(api.get(path), 404)
    spec = {"durable": True, "auto_delete": False, "arguments": {"x-max-length": 10}}
    expect(api.put(path, spec), 201)
    try:
        expect(api.put(path, spec), 204, "equivalent re-declare")
        got = api.json(path)
        for key, want in (("name", name), ("vhost", "/"), ("durable", True), ("auto_delete", False),
                          ("exclusive", False), ("arguments", {"x-max-length": 10})):
            assert got[key] == want, (key, got)
        # Counters appear with the first statistics sample.
        poll(lambda: api.json(path), lambda x: x.get("messages") == 0 and x.get("consumers") == 0
             and x.get("messages_ready") == 0 and x.get("messages_unacknowledged") == 0,
             "messages/consumers 0 on a new queue")
        body = expect_error(api.put(path, {**spec, "arguments": {"x-max-length": 20}}), 400)
        assert "inequivalent arg 'x-max-length'" in body["reason"], body
        body = expect_error(api.put(path, {"durable": False}), 400)
        assert "inequivalent arg 'durable'" in body["reason"], body
        assert name in [x["name"] for x in api.json("/api/queues/%2F")]
        assert name in [x["name"] for x in api.json("/api/queues")]
        # AMQP sees the same queue.
        ok = clients.amqp().channel().queue_declare(queue=name, passive=True)
        assert ok.method.message_count == 0
        expect_error(api.put(f"/api/queues/no-vhost-{uniq}/x", {}), 404)
    finally:
        expect(api.delete(path), 204)
    expect(api.get(path), 404)
    expect(api.delete(path), 404)


def test_queue_counts_and_message_stats_after_traffic(api, clients, uniq):
    name = f"qs-{uniq}"
    conn = clients.amqp()
    pub = conn.channel()
    pub.confirm_delivery()
    pub.queue_declare(queue=name, auto_delete=False)
    try:
        for i in range(5):
            pub.basic_publish("", name, f"m{i}".encode())
        sub = conn.channel()
        sub.basic_qos(prefetch_count=2)
        got = []
        sub.basic_consume(name, lambda ch, m, p, b: got.append(m.delivery_tag), consumer_tag=f"ct-{uniq}")
        process_until(conn, lambda: len(got) == 2, what="2 deliveries")
        path = f"/api/queues/%2F/{q(name)}"

        def settled(qd):
            ms = qd.get("message_stats") or {}
            return (qd.get("messages") == 5 and qd.get("messages_ready") == 3
                    and qd.get("messages_unacknowledged") == 2 and qd.get("consumers") == 1
                    and ms.get("publish") == 5 and ms.get("deliver") == 2)

        qd = poll(lambda: api.json(path), settled, "queue counts after 5 publishes and 2 deliveries")
        ms = qd["message_stats"]
        for key in ("publish", "deliver", "deliver_get"):
            assert isinstance(ms[f"{key}_details"]["rate"], (int, float)), ms
        assert ms["deliver_get"] >= 2
        for key in ("messages", "messages_ready", "messages_unacknowledged"):
            assert isinstance(qd[f"{key}_details"]["rate"], (int, float)), qd
        for tag in got:
            sub.basic_ack(tag)
        process_until(conn, lambda: len(got) == 4, what="2 more deliveries after the acks")
        poll(lambda: api.json(path),
             lambda x: (x.get("message_stats") or {}).get("ack") == 2 and x.get("messages") == 3
             and x.get("messages_unacknowledged") == 2,
             "ack count 2 and 3 messages left")
    finally:
        pub.queue_delete(queue=name)


def test_queue_pagination_shape(api, clients, uniq):
    prefix = f"pg-{uniq}"
    names = [f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"]
    ch = clients.amqp().channel()
    for n in names:
        ch.queue_declare(queue=n, auto_delete=False)
    try:
        page1 = api.json(f"/api/queues?page=1&page_size=2&name={prefix}&use_regex=false")
        assert set(page1) >= {"filtered_count", "item_count", "items", "page", "page_count",
                              "page_size", "total_count"}, page1.keys()
        assert (page1["filtered_count"], page1["item_count"], page1["page"], page1["page_count"],
                page1["page_size"]) == (3, 2, 1, 2, 2), {k: v for k, v in page1.items() if k != "items"}
        assert page1["total_count"] >= 3
        assert [i["name"] for i in page1["items"]] == names[:2]
        page2 = api.json(f"/api/queues/%2F?page=2&page_size=2&name={prefix}&use_regex=false")
        assert [i["name"] for i in page2["items"]] == names[2:] and page2["item_count"] == 1
        rx = api.json("/api/queues?page=1&page_size=10&use_regex=true&name="
                      + urllib.parse.quote(f"^{prefix}-[ab]$"))
        assert [i["name"] for i in rx["items"]] == names[:2] and rx["filtered_count"] == 2
        expect_error(api.get(f"/api/queues?page=99&page_size=2&name={prefix}"), 400)
        # Without `page` the answer is a plain list.
        assert isinstance(api.json("/api/queues"), list)
    finally:
        for n in names:
            ch.queue_delete(queue=n)


def test_queue_columns_parameter(api, clients, uniq):
    name = f"col-{uniq}"
    ch = clients.amqp().channel()
    ch.confirm_delivery()
    ch.queue_declare(queue=name, auto_delete=False)
    try:
        ch.basic_publish("", name, b"x")
        rows = poll(lambda: api.json("/api/queues/%2F?columns=name,messages"),
                    lambda rs: {"name": name, "messages": 1} in rs, "messages=1 in the columns listing")
        assert all(set(r) == {"name", "messages"} for r in rows), rows[:3]
    finally:
        ch.queue_delete(queue=name)


def test_purge(api, clients, uniq):
    name = f"purge-{uniq}"
    ch = clients.amqp().channel()
    ch.confirm_delivery()
    ch.queue_declare(queue=name, auto_delete=False)
    try:
        for i in range(3):
            ch.basic_publish("", name, b"x")
        expect(api.delete(f"/api/queues/%2F/{q(name)}/contents"), 204)
        assert ch.queue_declare(queue=name, passive=True).method.message_count == 0
        poll(lambda: api.json(f"/api/queues/%2F/{q(name)}"), lambda x: x.get("messages") == 0,
             "messages 0 after the purge")
        expect(api.delete(f"/api/queues/%2F/nope-{uniq}/contents"), 404)
    finally:
        ch.queue_delete(queue=name)


def test_get_ackmodes(api, clients, uniq):
    name = f"get-{uniq}"
    ch = clients.amqp().channel()
    ch.confirm_delivery()
    ch.queue_declare(queue=name, auto_delete=False)
    path = f"/api/queues/%2F/{q(name)}/get"
    try:
        for i in range(2):
            ch.basic_publish("", name, f"m{i}".encode(),
                             pika.BasicProperties(content_type="text/plain", headers={"i": i}))
        r = expect(api.post(path, {"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto"}), 200)
        msgs = r.json()
        assert [m["payload"] for m in msgs] == ["m0", "m1"], msgs
        first = msgs[0]
        assert first["payload_encoding"] == "string" and first["payload_bytes"] == 2
        assert first["exchange"] == "" and first["routing_key"] == name
        assert first["redelivered"] is False and first["message_count"] == 1
        assert first["properties"]["content_type"] == "text/plain"
        assert first["properties"]["headers"] == {"i": 0}
        # ack_requeue_true put them back.
        assert ch.queue_declare(queue=name, passive=True).method.message_count == 2
        r = expect(api.post(path, {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}), 200)
        [m] = r.json()
        assert m["payload"] == "m0" and m["redelivered"] is True, m
        assert ch.queue_declare(queue=name, passive=True).method.message_count == 1
        r = expect(api.post(path, {"count": 5, "ackmode": "ack_requeue_false", "encoding": "base64"}), 200)
        [m] = r.json()
        assert m["payload_encoding"] == "base64" and base64.b64decode(m["payload"]) == b"m1", m
        assert ch.queue_declare(queue=name, passive=True).method.message_count == 0
        assert expect(api.post(path, {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}), 200).json() == []
        expect_error(api.post(path, {"count": 1}), 400)
        expect(api.post(f"/api/queues/%2F/nope-{uniq}/get",
                        {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}), 404)
    finally:
        ch.queue_delete(queue=name)


# -- bindings ---------------------------------------------------------------------------


def test_bindings_create_list_delete(api, clients, uniq):
    x, name = f"bx-{uniq}", f"bq-{uniq}"
    expect(api.put(f"/api/exchanges/%2F/{q(x)}", {"type": "topic", "durable": False}), 201)
    expect(api.put(f"/api/queues/%2F/{q(name)}", {"durable": False}), 201)
    base = f"/api/bindings/%2F/e/{q(x)}/q/{q(name)}"
    try:
        r = expect(api.post(base, {"routing_key": "plant.*.temp", "arguments": {}}), 201)
        loc = r.headers.get("location")
        assert loc, f"no Location header: {r.headers}"
        listed = api.json(base)
        assert len(listed) == 1, listed
        b = listed[0]
        for key, want in (("source", x), ("vhost", "/"), ("destination", name), ("destination_type", "queue"),
                          ("routing_key", "plant.*.temp"), ("arguments", {})):
            assert b[key] == want, (key, b)
        props = b["properties_key"]
        # Location is relative to the POSTed URL ("q/<encoded props key>"):
        # following it finds the binding.
        followed = requests.get(urllib.parse.urljoin(api.url(base), loc), auth=GUEST, timeout=HTTP_TIMEOUT)
        assert followed.status_code == 200, (loc, followed.url, followed.status_code, followed.text[:300])
        assert followed.json()["routing_key"] == "plant.*.temp", followed.json()
        assert api.json(f"{base}/{q(props)}")["routing_key"] == "plant.*.temp"
        assert any(e["source"] == x and e["destination"] == name for e in api.json("/api/bindings/%2F"))
        assert any(e["source"] == x and e["destination"] == name for e in api.json("/api/bindings"))
        assert any(e["source"] == x for e in api.json(f"/api/queues/%2F/{q(name)}/bindings"))
        assert [e["destination"] for e in api.json(f"/api/exchanges/%2F/{q(x)}/bindings/source")] == [name]
        assert api.json(f"/api/exchanges/%2F/{q(x)}/bindings/destination") == []
        # The binding routes.
        pub = {"properties": {}, "routing_key": "plant.7.temp", "payload": "t", "payload_encoding": "string"}
        assert api.post(f"/api/exchanges/%2F/{q(x)}/publish", pub).json() == {"routed": True}
        expect(api.post(f"/api/bindings/%2F/e/{q(x)}/q/nope-{uniq}", {"routing_key": "k"}), 404)
        expect(api.delete(f"{base}/{q(props)}"), 204)
        expect(api.get(f"{base}/{q(props)}"), 404)
        expect(api.delete(f"{base}/{q(props)}"), 404)
        assert api.json(base) == []
        assert api.post(f"/api/exchanges/%2F/{q(x)}/publish", pub).json() == {"routed": False}
    finally:
        api.delete(f"/api/queues/%2F/{q(name)}")
        api.delete(f"/api/exchanges/%2F/{q(x)}")


def test_binding_with_arguments_and_exchange_destination(api, uniq):
    src, dst = f"src-{uniq}", f"dst-{uniq}"
    for x in (src, dst):
        expect(api.put(f"/api/exchanges/%2F/{q(x)}", {"type": "headers", "durable": False}), 201)
    base = f"/api/bindings/%2F/e/{q(src)}/e/{q(dst)}"
    try:
        expect(api.post(base, {"routing_key": "", "arguments": {"x-match": "all", "a": "1"}}), 201)
        [b] = api.json(base)
        assert b["destination_type"] == "exchange" and b["arguments"] == {"x-match": "all", "a": "1"}, b
        assert b["properties_key"] != "", b
        expect(api.delete(f"{base}/{q(b['properties_key'])}"), 204)
        assert api.json(base) == []
    finally:
        for x in (src, dst):
            api.delete(f"/api/exchanges/%2F/{q(x)}")


# -- connections, channels, consumers --------------------------------------------------------


def test_connections_list_protocols(api, clients, uniq):
    conn = clients.amqp(name=f"amqp-{uniq}")
    m = clients.mqtt(f"mq-{uniq}")
    s = clients.stomp()
    want = {amqp_local_port(conn): "AMQP 0-9-1", m.local_port: "MQTT 3.1.1", stomp_local_port(s): "STOMP 1.2"}
    for port, proto in want.items():
        c = find_connection(api, port)
        assert c["protocol"] == proto, c
        assert c["user"] == "guest" and c["vhost"] == "/", c
        assert isinstance(c["name"], str) and c["name"], c
        one = api.json(f"/api/connections/{q(c['name'])}")
        assert one["protocol"] == proto and one["peer_port"] == port, one
    amqp = find_connection(api, amqp_local_port(conn))
    assert amqp["user_provided_name"] == f"amqp-{uniq}", amqp
    props = amqp["client_properties"]
    assert props.get("connection_name") == f"amqp-{uniq}", props
    assert props.get("product") == "Pika Python Client Library", props
    assert props.get("capabilities", {}).get("publisher_confirms") is True, props
    expect(api.get(f"/api/connections/{q('no such connection ' + uniq)}"), 404)


@pytest.mark.parametrize("reason", [None, "maintenance window"])
def test_delete_connection_forces_amqp_close_320(api, clients, uniq, reason):
    conn = clients.amqp(name=f"victim-{uniq}")
    conn.channel()
    c = find_connection(api, amqp_local_port(conn))
    headers = {"X-Reason": reason} if reason else {}
    expect(api.delete(f"/api/connections/{q(c['name'])}", headers=headers), 204)
    deadline = time.monotonic() + WAIT
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
    assert info.value.reply_code == 320, info.value
    text = reason or "Closed via management plugin"
    assert info.value.reply_text == f"CONNECTION_FORCED - {text}", info.value
    poll(lambda: api.get(f"/api/connections/{q(c['name'])}").status_code, lambda s: s == 404,
         "the deleted connection to disappear")


@oracle_skip
def test_delete_connection_mqtt5_disconnect_reason_0x98(api, clients, uniq):
    m = clients.mqtt(f"mq5-{uniq}", protocol=mqtt.MQTTv5)
    c = find_connection(api, m.local_port)
    # RabbitMQ 3.13+ calls it "MQTT 5-0"; 3.10 has no MQTT 5.
    assert c["protocol"].startswith("MQTT 5"), c
    expect(api.delete(f"/api/connections/{q(c['name'])}"), 204)
    try:
        rc = m.disconnects.get(timeout=WAIT)
    except queue.Empty:
        pytest.fail(f"the MQTT 5 client saw no disconnect within {WAIT}s")
    assert rc.value == 0x98, f"DISCONNECT reason {rc!r} ({rc.value:#x}), want 0x98 Administrative action"


def test_channels_and_consumers(api, clients, uniq):
    name = f"cons-{uniq}"
    conn = clients.amqp(name=f"chan-{uniq}")
    ch1 = conn.channel()
    ch2 = conn.channel()
    ch1.queue_declare(queue=name, exclusive=True)
    ch2.basic_qos(prefetch_count=7)
    tag = f"ctag-{uniq}"
    ch2.basic_consume(name, lambda *a: None, consumer_tag=tag)
    cname = find_connection(api, amqp_local_port(conn))["name"]

    def mine(chs):
        return sorted((c for c in chs if (c.get("connection_details") or {}).get("name") == cname),
                      key=lambda c: c["number"])

    chans = poll(lambda: api.json("/api/channels"), lambda cs: len(mine(cs)) == 2, "two channels")
    chans = mine(chans)
    assert [c["number"] for c in chans] == [1, 2]
    assert chans[1]["consumer_count"] == 1 and chans[1]["prefetch_count"] == 7, chans[1]
    assert chans[0]["user"] == "guest" and chans[0]["vhost"] == "/"
    assert all(isinstance(c["name"], str) and c["name"] for c in chans)
    per_conn = api.json(f"/api/connections/{q(cname)}/channels")
    assert sorted(c["number"] for c in per_conn) == [1, 2]

    def ours(cs):
        return [c for c in cs if c.get("consumer_tag") == tag]

    cons = ours(poll(lambda: api.json("/api/consumers"), lambda cs: len(ours(cs)) == 1, "our consumer"))[0]
    assert cons["queue"] == {"name": name, "vhost": "/"}, cons
    assert cons["channel_details"]["connection_name"] == cname, cons
    assert cons["channel_details"]["number"] == 2, cons
    assert cons["ack_required"] is True and cons["exclusive"] is False and cons["prefetch_count"] == 7, cons
    assert ours(api.json("/api/consumers/%2F")), "the vhost-scoped consumer list has it too"
    qd = poll(lambda: api.json(f"/api/queues/%2F/{q(name)}"), lambda x: x.get("consumers") == 1, "consumers 1")
    assert qd["exclusive"] is True


# -- definitions --------------------------------------------------------------------------------


def test_definitions_export_import_round_trip(api, request, clients, uniq):
    v, u, pw = f"defv-{uniq}", f"defu-{uniq}", f"defpw-{uniq}"
    x, name, pol = f"defx-{uniq}", f"defq-{uniq}", f"defp-{uniq}"
    vq = q(v)
    expect(api.put(f"/api/vhosts/{vq}"), 201)
    expect(api.put(f"/api/users/{q(u)}", {"password": pw, "tags": "management"}), 201)
    expect(api.put(f"/api/permissions/{vq}/{q(u)}", {"configure": ".*", "write": ".*", "read": ".*"}), 201)
    expect(api.put(f"/api/exchanges/{vq}/{q(x)}", {"type": "fanout", "durable": True}), 201)
    expect(api.put(f"/api/queues/{vq}/{q(name)}", {"durable": True, "arguments": {"x-max-length": 50}}), 201)
    expect(api.post(f"/api/bindings/{vq}/e/{q(x)}/q/{q(name)}", {"routing_key": "rk", "arguments": {}}), 201)
    expect(api.put(f"/api/policies/{vq}/{q(pol)}",
                   {"pattern": "^defq", "definition": {"max-length": 5}, "priority": 1, "apply-to": "queues"}), 201)
    defs = api.json("/api/definitions")
    for key in ("users", "vhosts", "permissions", "queues", "exchanges", "bindings", "policies"):
        assert isinstance(defs[key], list), key
    [user] = [x_ for x_ in defs["users"] if x_["name"] == u]
    assert_password_hash(user)
    assert {"name": name, "vhost": v, "durable": True, "auto_delete": False,
            "arguments": {"x-max-length": 50}}.items() <= [x_ for x_ in defs["queues"] if x_["name"] == name][0].items()
    assert any(b["source"] == x and b["destination"] == name and b["routing_key"] == "rk" for b in defs["bindings"])
    assert any(p["name"] == pol and p["vhost"] == v for p in defs["policies"])
    assert any(p["user"] == u and p["vhost"] == v for p in defs["permissions"])
    assert any(e["name"] == x and e["type"] == "fanout" for e in defs["exchanges"])

    if api.oracle:
        # No second RabbitMQ: delete what was exported, import it back.
        target = api
        expect(api.delete(f"/api/vhosts/{vq}"), 204)
        expect(api.delete(f"/api/users/{q(u)}"), 204)
        expect(api.get(f"/api/users/{q(u)}"), 404)
    else:
        fresh = request.getfixturevalue("own_broker")
        target = _switchyard_api(fresh.endpoint)
        expect(target.get(f"/api/users/{q(u)}"), 404)
    try:
        expect(target.post("/api/definitions", defs), 204, "import")
        assert target.json(f"/api/queues/{vq}/{q(name)}")["arguments"] == {"x-max-length": 50}
        assert target.json(f"/api/exchanges/{vq}/{q(x)}")["type"] == "fanout"
        assert target.json(f"/api/policies/{vq}/{q(pol)}")["definition"] == {"max-length": 5}
        assert target.json(f"/api/users/{q(u)}")["tags"] == ["management"]
        # The imported hash lets the user in, over HTTP and AMQP, and the binding routes.
        assert target.json("/api/whoami", auth=(u, pw))["name"] == u
        conn = pika.BlockingConnection(target.amqp_params(user=u, password=pw, vhost=v))
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_publish(x, "anything", b"via-import")
            assert wait_get(ch, name)[2] == b"via-import"
        finally:
            conn.close()
        expect_error(target.post("/api/definitions", data=b"{not json",
                                 headers={"content-type": "application/json"}), 400)
    finally:
        api.delete(f"/api/vhosts/{vq}")
        api.delete(f"/api/users/{q(u)}")


# -- policies -----------------------------------------------------------------------------------


def test_policies_crud(api, uniq):
    p = f"pol-{uniq}"
    path = f"/api/policies/%2F/{q(p)}"
    expect(api.get(path), 404)
    expect(api.put(path, {"pattern": f"^polq-{uniq}", "definition": {"max-length": 2},
                          "priority": 3, "apply-to": "queues"}), 201)
    try:
        got = api.json(path)
        assert got == {"vhost": "/", "name": p, "pattern": f"^polq-{uniq}", "apply-to": "queues",
                       "definition": {"max-length": 2}, "priority": 3}, got
        expect(api.put(path, {"pattern": f"^polq-{uniq}", "definition": {"max-length": 2},
                              "priority": 4, "apply-to": "queues"}), 204)
        assert api.json(path)["priority"] == 4
        assert p in [x["name"] for x in api.json("/api/policies/%2F")]
        assert p in [x["name"] for x in api.json("/api/policies")]
        expect_error(api.put(f"/api/policies/%2F/bad-{uniq}", {"pattern": "^x"}), 400)
        expect_error(api.put(f"/api/policies/%2F/bad-{uniq}",
                             {"pattern": "^x", "definition": {"max-length": 1}, "apply-to": "nonsense"}), 400)
        # Defaults: apply-to all, priority 0.
        expect(api.put(f"/api/policies/%2F/def-{uniq}", {"pattern": "^zz-none", "definition": {"max-length": 9}}), 201)
        d = api.json(f"/api/policies/%2F/def-{uniq}")
        assert d["apply-to"] == "all" and d["priority"] == 0, d
        expect(api.delete(f"/api/policies/%2F/def-{uniq}"), 204)
    finally:
        expect(api.delete(path), 204)
    expect(api.get(path), 404)
    expect(api.delete(path), 404)


def test_policy_max_length_applies(api, clients, uniq):
    p = f"ml-{uniq}"
    name = f"mlq-{uniq}"
    expect(api.put(f"/api/policies/%2F/{q(p)}", {"pattern": f"^{name}$", "definition": {"max-length": 2},
                                                 "priority": 0, "apply-to": "queues"}), 201)
    ch = clients.amqp().channel()
    ch.confirm_delivery()
    ch.queue_declare(queue=name, auto_delete=False)
    try:
        for i in range(5):
            ch.basic_publish("", name, f"m{i}".encode())
        assert ch.queue_declare(queue=name, passive=True).method.message_count == 2
        assert wait_get(ch, name)[2] == b"m3", "max-length drops from the head"
        qd = poll(lambda: api.json(f"/api/queues/%2F/{q(name)}"), lambda x: x.get("policy") == p,
                  "the queue to name its policy")
        assert qd["policy"] == p
    finally:
        ch.queue_delete(queue=name)
        api.delete(f"/api/policies/%2F/{q(p)}")


# -- health ----------------------------------------------------------------------------------------


def test_healthchecks_and_aliveness(api, uniq):
    assert api.json("/api/healthchecks/node") == {"status": "ok"}
    assert api.json("/api/aliveness-test/%2F") == {"status": "ok"}
    expect(api.get(f"/api/aliveness-test/nope-{uniq}"), 404)
    expect(api.get("/api/healthchecks/node", auth=None), 401)


def test_nodes(api):
    ov = api.json("/api/overview")
    nodes = api.json("/api/nodes")
    assert [n["name"] for n in nodes] == [ov["node"]]
    assert nodes[0]["running"] is True, nodes[0].get("running")


# -- authorisation by user tag ------------------------------------------------------------------


@pytest.fixture
def make_user(api, uniq):
    made: list[str] = []

    def make(prefix: str, tags: str, perms_on: str | None = None) -> tuple[str, str]:
        u, pw = f"{prefix}-{uniq}", f"pw-{prefix}-{uniq}"
        expect(api.put(f"/api/users/{q(u)}", {"password": pw, "tags": tags}), 201)
        made.append(u)
        if perms_on is not None:
            expect(api.put(f"/api/permissions/{q(perms_on)}/{q(u)}",
                           {"configure": ".*", "write": ".*", "read": ".*"}), 201)
        return u, pw

    yield make
    for u in made:
        api.delete(f"/api/users/{q(u)}")


def test_monitoring_user_can_read_but_not_administer(api, make_user, uniq):
    auth = make_user("mon", "monitoring")
    assert api.json("/api/whoami", auth=auth)["tags"] == ["monitoring"]
    assert "object_totals" in api.json("/api/overview", auth=auth)
    # monitoring sees every vhost.
    assert "/" in [v["name"] for v in api.json("/api/vhosts", auth=auth)]
    body = expect_error(api.put(f"/api/vhosts/monv-{uniq}", auth=auth), 401)
    assert body["reason"] == "Not administrator user", body
    expect_error(api.put(f"/api/users/monu-{uniq}", {"password": "x", "tags": ""}, auth=auth), 401)
    expect_error(api.put(f"/api/permissions/%2F/{q(auth[0])}",
                         {"configure": ".*", "write": ".*", "read": ".*"}, auth=auth), 401)
    # No permissions on /: declaring a queue there is refused too.
    expect_error(api.put(f"/api/queues/%2F/monq-{uniq}", {"durable": False}, auth=auth), 401)
    expect_error(api.get("/api/users", auth=auth), 401)
    expect(api.get(f"/api/vhosts/monv-{uniq}"), 404)


def test_management_user_sees_only_its_vhosts(api, make_user, uniq):
    v = f"mv-{uniq}"
    other = f"mo-{uniq}"
    expect(api.put(f"/api/vhosts/{q(v)}"), 201)
    expect(api.put(f"/api/vhosts/{q(other)}"), 201)
    try:
        auth = make_user("mgmt", "management", perms_on=v)
        assert [x["name"] for x in api.json("/api/vhosts", auth=auth)] == [v]
        body = expect_error(api.get(f"/api/vhosts/{q(other)}", auth=auth), 401)
        assert body["error"] == "not_authorised", body
        expect_error(api.get(f"/api/queues/{q(other)}", auth=auth), 401)
        expect_error(api.put(f"/api/queues/{q(other)}/x", {}, auth=auth), 401)
        assert api.json(f"/api/queues/{q(v)}", auth=auth) == []
        expect(api.put(f"/api/queues/{q(v)}/mine", {"durable": False}, auth=auth), 201)
        assert [x["name"] for x in api.json("/api/queues", auth=auth)] == ["mine"]
        expect_error(api.get("/api/users", auth=auth), 401)
        expect_error(api.get("/api/definitions", auth=auth), 401)
    finally:
        expect(api.delete(f"/api/vhosts/{q(v)}"), 204)
        expect(api.delete(f"/api/vhosts/{q(other)}"), 204)


def test_user_without_tags_cannot_use_the_api_but_can_use_amqp(api, make_user, clients):
    auth = make_user("plain", "", perms_on="/")
    for path in ("/api/overview", "/api/whoami", "/api/queues"):
        body = expect_error(api.get(path, auth=auth), 401)
        assert body["reason"] == "Not management user", (path, body)
    clients.amqp(user=auth[0], password=auth[1]).channel()


# -- rabbitmqadmin ----------------------------------------------------------------------------------


def rabbitmqadmin_path() -> str:
    candidates = [shutil.which("rabbitmqadmin")] + sorted(glob.glob(
        "/usr/lib/rabbitmq/lib/rabbitmq_server-*/plugins/rabbitmq_management-*/priv/www/cli/rabbitmqadmin"))
    for c in candidates:
        if c and os.path.isfile(c):
            return c
    pytest.fail("Debian's rabbitmqadmin was not found (not on PATH, not in the rabbitmq_management "
                "plugin); install the rabbitmq-server package", pytrace=False)


def admin(api: Api, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    port = urllib.parse.urlsplit(api.base).port
    cmd = [sys.executable, rabbitmqadmin_path(), "-H", api.host, "-P", str(port),
           "-u", "guest", "-p", "guest", "-V", "/", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if ok:
        assert res.returncode == 0, f"{' '.join(args)}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def table(text: str) -> list[dict[str, str]]:
    """Rows of rabbitmqadmin's +---+ table output."""
    lines = [l for l in text.splitlines() if l.startswith("|")]
    if not lines:
        return []
    cells = [[c.strip() for c in l.strip().strip("|").split("|")] for l in lines]
    return [dict(zip(cells[0], row)) for row in cells[1:]]


def test_rabbitmqadmin_queue_lifecycle(api, uniq):
    name = f"adm-{uniq}"
    try:
        res = admin(api, "declare", "queue", f"name={name}", "durable=true")
        assert res.stdout.strip() == "queue declared", res.stdout
        assert api.json(f"/api/queues/%2F/{q(name)}")["durable"] is True
        rows = {r["name"]: r for r in table(admin(api, "list", "queues").stdout)}
        assert set(rows[name]) == {"name", "messages"} and rows[name]["messages"] in ("0", ""), rows[name]
        res = admin(api, "publish", "exchange=amq.default", f"routing_key={name}", "payload=hello")
        assert res.stdout.strip() == "Message published", res.stdout
        res = admin(api, "publish", "exchange=amq.default", f"routing_key=nowhere-{uniq}", "payload=x")
        assert res.stdout.strip() == "Message published but NOT routed", res.stdout
        poll(lambda: {r["name"]: r for r in table(admin(api, "list", "queues").stdout)}.get(name, {}),
             lambda r: r.get("messages") == "1", "rabbitmqadmin to list 1 message")
        [row] = table(admin(api, "get", f"queue={name}", "ackmode=ack_requeue_false").stdout)
        assert (row["payload"], row["routing_key"], row["payload_bytes"], row["redelivered"],
                row["message_count"]) == ("hello", name, "5", "False", "0"), row
        assert admin(api, "get", f"queue={name}", "ackmode=ack_requeue_false").stdout.strip() == "No items"
        res = admin(api, "delete", "queue", f"name={name}")
        assert res.stdout.strip() == "queue deleted", res.stdout
        expect(api.get(f"/api/queues/%2F/{q(name)}"), 404)
        assert name not in [r["name"] for r in table(admin(api, "list", "queues").stdout)]
        res = admin(api, "get", f"queue={name}", ok=False)
        assert res.returncode != 0 and "Not found" in (res.stdout + res.stderr), res
    finally:
        api.delete(f"/api/queues/%2F/{q(name)}")


def test_rabbitmqadmin_list_exchanges_and_connections(api, clients, uniq):
    x = f"admx-{uniq}"
    expect(api.put(f"/api/exchanges/%2F/{q(x)}", {"type": "topic", "durable": False}), 201)
    conn = clients.amqp(name=f"adm-{uniq}")
    try:
        rows = {r["name"]: r["type"] for r in table(admin(api, "list", "exchanges").stdout)}
        assert rows[x] == "topic" and rows["amq.topic"] == "topic" and rows["amq.fanout"] == "fanout", rows
        assert rows[""] == "direct", "the default exchange row"
        cname = find_connection(api, amqp_local_port(conn))["name"]
        crows = {r["name"]: r for r in table(admin(api, "list", "connections").stdout)}
        assert crows[cname]["user"] == "guest" and crows[cname]["channels"] in ("0", "1"), crows.get(cname)
        [ov] = table(admin(api, "show", "overview").stdout)
        assert set(ov) == {"rabbitmq_version", "cluster_name", "queue_totals.messages", "object_totals.queues"}, ov
        assert ov["rabbitmq_version"] and int(ov["object_totals.queues"]) >= 0, ov
        res = admin(api, "-f", "raw_json", "list", "queues", "name")
        assert all(set(r) == {"name"} for r in json.loads(res.stdout))
        res = admin(api, "-u", "guest", "-p", "wrong", "list", "queues", ok=False)
        assert res.returncode != 0 and "Access refused" in (res.stdout + res.stderr), res
    finally:
        api.delete(f"/api/exchanges/%2F/{q(x)}")


def test_rabbitmqadmin_export_import(api, tmp_path, uniq):
    name, imported = f"exp-{uniq}", f"imp-{uniq}"
    expect(api.put(f"/api/queues/%2F/{q(name)}", {"durable": True, "arguments": {"x-max-length": 7}}), 201)
    path = tmp_path / "defs.json"
    try:
        res = admin(api, "export", str(path))
        assert res.stdout.startswith("Exported definitions"), res.stdout
        defs = json.loads(path.read_text())
        [mine] = [x for x in defs["queues"] if x["name"] == name]
        assert mine["durable"] is True and mine["arguments"] == {"x-max-length": 7}, mine
        assert not any(e["name"] == "amq.topic" for e in defs.get("exchanges", [])), \
            "built-in exchanges are not exported"
        # Import a changed copy: one more queue.
        defs["queues"].append({**mine, "name": imported, "arguments": {}})
        path.write_text(json.dumps(defs))
        res = admin(api, "import", str(path))
        assert res.stdout.startswith("Uploaded definitions"), res.stdout
        got = api.json(f"/api/queues/%2F/{q(imported)}")
        assert got["durable"] is True and got["arguments"] == {}, got
    finally:
        api.delete(f"/api/queues/%2F/{q(name)}")
        api.delete(f"/api/queues/%2F/{q(imported)}")


# -- Prometheus (Switchyard only) -------------------------------------------------------------------


class Metrics:
    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def family(self, name: str):
        """A family by its exposed name; the parser strips counters' _total."""
        f = self.families.get(name) or self.families.get(name.removesuffix("_total"))
        assert f is not None, f"metric family {name} missing; have {sorted(self.families)}"
        return f

    def sample_family(self, name: str):
        """The family a sample name (x_total, x_count, x_sum, x_bucket) belongs to."""
        if name in self.families:
            return self.families[name]
        for suffix in ("_total", "_count", "_sum", "_bucket"):
            if name.endswith(suffix) and name.removesuffix(suffix) in self.families:
                return self.families[name.removesuffix(suffix)]
        return None

    def value(self, name: str, **labels) -> float | None:
        """The sum of the samples called `name` that carry these labels (as
        PromQL's sum by those labels would; other labels are summed over).
        None if there is no such sample, also when the whole family is
        missing (`family()` asserts existence)."""
        fam = self.sample_family(name)
        if fam is None:
            return None
        hits = [s.value for s in fam.samples
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        return sum(hits) if hits else None


def scrape(api: Api, path: str = "/metrics") -> Metrics:
    """`/metrics` (queue families summed over every queue, as RabbitMQ's
    endpoint), or `/metrics/per-object` (per queue)."""
    assert api.prometheus_port is not None, "the broker announced no prometheus= listener"
    r = requests.get(f"http://{api.host}:{api.prometheus_port}{path}", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.status_code
    assert r.headers.get("content-type", "").startswith("text/plain"), r.headers
    return Metrics(r.text)


def zero_if_none(v: float | None) -> float:
    return 0.0 if v is None else v


@oracle_skip
def test_prometheus_parses_and_has_process_and_alarm_gauges(api):
    m = scrape(api)
    assert m.family("process_resident_memory_bytes").type == "gauge"
    assert m.value("process_resident_memory_bytes") > 1_000_000
    assert m.value("process_open_fds") >= 3
    qm = m.family("switchyard_queue_memory_bytes")
    assert qm.type == "gauge" and all(s.value >= 0 for s in qm.samples)
    alarm = m.family("switchyard_alarm")
    assert alarm.type == "gauge"
    assert {s.labels.get("resource") for s in alarm.samples} >= {"memory", "disk"}
    assert all(s.value in (0, 1) for s in alarm.samples)
    assert m.value("switchyard_alarm", resource="memory") == 0
    assert m.value("switchyard_alarm", resource="disk") == 0


@oracle_skip
def test_prometheus_message_counters_by_protocol(api, clients, uniq):
    name = f"prom-{uniq}"
    before = scrape(api)
    counters = ("switchyard_messages_published_total", "switchyard_messages_delivered_total",
                "switchyard_messages_acked_total", "switchyard_messages_confirmed_total",
                "switchyard_messages_unroutable_dropped_total", "switchyard_messages_unroutable_returned_total")

    def b(c, proto):
        return zero_if_none(before.value(c, protocol=proto))

    conn = clients.amqp()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue=name, exclusive=True)
    ch.queue_bind(name, "amq.topic", f"prom.{uniq}")
    for i in range(3):
        ch.basic_publish("", name, b"a")
    ch.basic_publish("", f"nowhere-{uniq}", b"dropped")  # unroutable, not mandatory
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("", f"nowhere-{uniq}", b"returned", mandatory=True)
    got = []
    ch.basic_consume(name, lambda c_, m_, p_, body: (got.append(body), c_.basic_ack(m_.delivery_tag)))
    process_until(conn, lambda: len(got) == 3, what="3 AMQP deliveries")
    # MQTT and STOMP publish to amq.topic (prom.<uniq>), and each consumes one.
    m = clients.mqtt(f"prom-{uniq}")
    m.subscribe(f"promm/{uniq}", 1)
    m.publish(f"prom/{uniq}", b"m")
    m.publish(f"promm/{uniq}", b"self")
    assert m.messages.get(timeout=WAIT).payload == b"self"
    s = clients.stomp()
    s.subscribe(f"/queue/proms-{uniq}", "s1", ack="client-individual")
    s.send(f"/topic/prom.{uniq}", b"s")
    s.send(f"/queue/proms-{uniq}", b"self")
    msg = s.next_message()
    s.ack(msg)
    process_until(conn, lambda: len(got) == 5, what="the MQTT and STOMP messages on the AMQP queue")

    def check(after: Metrics) -> list[str]:
        bad = []
        want = [("switchyard_messages_published_total", "amqp", 5),
                ("switchyard_messages_published_total", "mqtt", 2),
                ("switchyard_messages_published_total", "stomp", 2),
                ("switchyard_messages_delivered_total", "amqp", 5),
                ("switchyard_messages_delivered_total", "mqtt", 1),
                ("switchyard_messages_delivered_total", "stomp", 1),
                ("switchyard_messages_acked_total", "amqp", 5),
                ("switchyard_messages_acked_total", "stomp", 1),
                ("switchyard_messages_confirmed_total", "amqp", 5),
                ("switchyard_messages_unroutable_dropped_total", "amqp", 1),
                ("switchyard_messages_unroutable_returned_total", "amqp", 1)]
        for c, proto, n in want:
            delta = zero_if_none(after.value(c, protocol=proto)) - b(c, proto)
            if delta < n:
                bad.append(f"{c}{{protocol={proto}}} grew by {delta}, want >= {n}")
        return bad

    problems = poll(lambda: check(scrape(api)), lambda bad: not bad, "the protocol counters", timeout=WAIT)
    assert problems == []
    after = scrape(api)
    for c in counters:
        fam = after.family(c)
        assert fam.type == "counter", (c, fam.type)
        assert {s.labels.get("protocol") for s in fam.samples if s.name == c} <= {"amqp", "mqtt", "stomp"}, fam.samples


@oracle_skip
def test_prometheus_queue_metrics(api, clients, uniq):
    name = f"promq-{uniq}"
    conn = clients.amqp()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue=name, exclusive=True)
    for i in range(4):
        ch.basic_publish("", name, b"x")
    ch.basic_qos(prefetch_count=1)
    got = []
    ch.basic_consume(name, lambda c_, m_, p_, body: got.append(m_.delivery_tag))
    process_until(conn, lambda: len(got) == 1, what="1 delivery")
    ch.basic_ack(got[0])
    process_until(conn, lambda: len(got) == 2, what="a 2nd delivery")
    lbl = {"vhost": "/", "queue": name}
    want = {"switchyard_queue_messages_ready": 2, "switchyard_queue_messages_unacked": 1,
            "switchyard_queue_consumers": 1, "switchyard_queue_messages_published_total": 4,
            "switchyard_queue_messages_delivered_total": 2, "switchyard_queue_messages_acked_total": 1}

    def seen(m: Metrics) -> dict:
        return {k: m.value(k, **lbl) for k in want}

    per_object = "/metrics/per-object"
    got_vals = poll(lambda: seen(scrape(api, per_object)), lambda s: s == want, "the per-queue metrics",
                    timeout=WAIT)
    assert got_vals == want
    # /metrics sums the same families over every queue, without labels.
    agg = scrape(api)
    for k, v in want.items():
        fam = agg.family(k)
        assert all(not s.labels for s in fam.samples), f"{k} carries per-queue labels on /metrics"
        assert zero_if_none(agg.value(k)) >= v, f"{k} sum {agg.value(k)} below this queue's {v}"
    m = scrape(api, per_object)
    for k in ("switchyard_queue_messages_ready", "switchyard_queue_messages_unacked", "switchyard_queue_consumers"):
        assert m.family(k).type == "gauge", k
    for k in ("switchyard_queue_messages_published_total", "switchyard_queue_messages_delivered_total",
              "switchyard_queue_messages_acked_total"):
        assert m.family(k).type == "counter", k
    ch.queue_delete(queue=name)
    poll(lambda: scrape(api, per_object).value("switchyard_queue_messages_ready", **lbl), lambda v: v is None,
         "a deleted queue's series to go", timeout=WAIT)


@oracle_skip
def test_prometheus_connection_and_channel_gauges(api, clients, uniq):
    # Other tests' connections may still be closing: compare the gauges while
    # ours are open with the gauges after ours are closed.
    protos = ("amqp", "mqtt", "stomp")
    conn = clients.amqp()
    conn.channel()
    conn.channel()
    clients.mqtt(f"promc-{uniq}")
    clients.stomp()

    def gauges(m: Metrics) -> dict:
        d = {p: zero_if_none(m.value("switchyard_connections", protocol=p)) for p in protos}
        d["amqp channels"] = zero_if_none(m.value("switchyard_channels", protocol="amqp"))
        return d

    during = poll(lambda: gauges(scrape(api)),
                  lambda g: all(g[p] >= 1 for p in protos) and g["amqp channels"] >= 2,
                  "connection gauges >= 1 per protocol and 2 AMQP channels", timeout=WAIT)
    m = scrape(api)
    assert m.family("switchyard_connections").type == "gauge"
    assert m.family("switchyard_channels").type == "gauge"
    clients.close_all()
    poll(lambda: gauges(scrape(api)),
         lambda g: all(g[p] <= during[p] - 1 for p in protos) and g["amqp channels"] <= during["amqp channels"] - 2,
         f"the gauges to drop by our connections (while open: {during})", timeout=WAIT)


@oracle_skip
def test_prometheus_store_metrics(api, clients, uniq):
    name = f"proms-{uniq}"
    before = scrape(api)
    ch = clients.amqp().channel()
    ch.confirm_delivery()
    ch.queue_declare(queue=name, durable=True)
    try:
        for i in range(5):
            ch.basic_publish("", name, b"p" * 100, pika.BasicProperties(delivery_mode=2))
        after = poll(lambda: scrape(api),
                     lambda m: zero_if_none(m.value("switchyard_store_fsyncs_total"))
                     > zero_if_none(before.value("switchyard_store_fsyncs_total")),
                     "store fsyncs to grow after persistent confirmed publishes", timeout=WAIT)
        for h in ("switchyard_store_commit_seconds", "switchyard_store_batch_size"):
            fam = after.family(h)
            assert fam.type == "histogram", (h, fam.type)
            names = {s.name for s in fam.samples}
            assert {f"{h}_bucket", f"{h}_count", f"{h}_sum"} <= names, names
            inf = [s for s in fam.samples if s.name == f"{h}_bucket" and s.labels.get("le") == "+Inf"]
            assert inf and inf[0].value == after.value(f"{h}_count"), h
            assert after.value(f"{h}_count") > zero_if_none(before.value(f"{h}_count")), h
            buckets = [s.value for s in fam.samples if s.name == f"{h}_bucket"]
            assert buckets == sorted(buckets), f"{h} buckets must be cumulative"
        assert after.family("switchyard_store_fsyncs_total").type == "counter"
        assert after.value("switchyard_store_batch_size_sum") >= after.value("switchyard_store_batch_size_count")
    finally:
        ch.queue_delete(queue=name)


@oracle_skip
def test_prometheus_dead_lettered_by_reason(api, clients, uniq):
    dlx, work, dead = f"pdlx-{uniq}", f"pwork-{uniq}", f"pdead-{uniq}"
    before = scrape(api)
    conn = clients.amqp()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare(dlx, "fanout", auto_delete=True)
    ch.queue_declare(queue=dead, exclusive=True)
    ch.queue_bind(dead, dlx)
    ch.queue_declare(queue=work, exclusive=True, arguments={"x-dead-letter-exchange": dlx})
    ch.basic_publish("", work, b"r")
    m_, _, _ = ch.basic_get(work, auto_ack=False)
    assert m_ is not None
    ch.basic_reject(m_.delivery_tag, requeue=False)
    assert wait_get(ch, dead)[2] == b"r"
    base = zero_if_none(before.value("switchyard_messages_dead_lettered_total", reason="rejected"))
    poll(lambda: zero_if_none(scrape(api).value("switchyard_messages_dead_lettered_total", reason="rejected")),
         lambda v: v >= base + 1, "dead_lettered_total{reason=rejected} to grow", timeout=WAIT)
    assert scrape(api).family("switchyard_messages_dead_lettered_total").type == "counter"


# -- route tester (Switchyard only) ---------------------------------------------------------------


def route(api: Api, body: dict) -> requests.Response:
    return api.post("/api/switchyard/route", body)


@oracle_skip
def test_route_tester_exchange_to_exchange_path(api, clients, uniq):
    src, mid, q1 = f"rsrc-{uniq}", f"rmid-{uniq}", f"rq1-{uniq}"
    conn = clients.amqp(name=f"route-{uniq}")
    ch = conn.channel()
    ch.exchange_declare(src, "topic", auto_delete=True)
    ch.exchange_declare(mid, "topic", auto_delete=True)
    ch.exchange_bind(destination=mid, source=src, routing_key="plant.#")
    ch.queue_declare(queue=q1, exclusive=True)
    ch.queue_bind(q1, mid, "plant.*.temp")
    tag = f"rtag-{uniq}"
    ch.basic_consume(q1, lambda *a: None, consumer_tag=tag)
    cname = find_connection(api, amqp_local_port(conn))["name"]
    r = expect(route(api, {"vhost": "/", "exchange": src, "routing_key": "plant.7.temp"}), 200)
    body = r.json()
    assert body["exchange"] == src and body["routing_key"] == "plant.7.temp" and body["unroutable"] is False, body
    [rt] = body["routes"]
    assert rt["vhost"] == "/" and rt["queue"] == q1, rt
    keys = ("source", "destination", "destination_type", "routing_key", "arguments")
    assert [{k: hop.get(k) for k in keys} for hop in rt["path"]] == [
        {"source": src, "destination": mid, "destination_type": "exchange", "routing_key": "plant.#", "arguments": {}},
        {"source": mid, "destination": q1, "destination_type": "queue", "routing_key": "plant.*.temp", "arguments": {}},
    ], rt["path"]
    ckeys = ("protocol", "connection", "consumer_tag", "kind")
    assert [{k: c.get(k) for k in ckeys} for c in rt["consumers"]] == [
        {"protocol": "AMQP 0-9-1", "connection": cname, "consumer_tag": tag, "kind": "AMQP consumer"}
    ], rt["consumers"]
    # A key the chain does not match: no routes.
    body = expect(route(api, {"vhost": "/", "exchange": src, "routing_key": "plant.7.humidity.x"}), 200).json()
    assert body["routes"] == [] and body["unroutable"] is True, body


@oracle_skip
def test_route_tester_mqtt_session(api, clients, uniq):
    cid = f"rmq-{uniq}"
    m = clients.mqtt(cid, clean=False)
    try:
        m.subscribe("plant/+/temp", 1)
        cname = find_connection(api, m.local_port)["name"]
        body = expect(route(api, {"vhost": "/", "mqtt_topic": "plant/7/temp"}), 200).json()
        assert body["exchange"] == "amq.topic" and body["routing_key"] == "plant.7.temp", body
        assert body["unroutable"] is False
        ours = [rt for rt in body["routes"] if any(c["connection"] == cname for c in rt["consumers"])]
        assert len(ours) == 1, body["routes"]
        [rt] = ours
        assert rt["path"][-1]["source"] == "amq.topic" and rt["path"][-1]["routing_key"] == "plant.*.temp", rt
        assert rt["path"][-1]["destination"] == rt["queue"] and rt["path"][-1]["destination_type"] == "queue"
        [c] = [c for c in rt["consumers"] if c["connection"] == cname]
        assert c["protocol"] == "MQTT 3.1.1" and c["kind"] == "MQTT session", c
        assert isinstance(c["consumer_tag"], str)
    finally:
        # Drop the persistent session.
        m.close()
        clients.mqtt(cid, clean=True).close()


@oracle_skip
def test_route_tester_stomp_destination(api, clients, uniq):
    s = clients.stomp()
    s.subscribe(f"/topic/rst.{uniq}.*", f"sub-{uniq}")
    cname = find_connection(api, stomp_local_port(s))["name"]
    body = expect(route(api, {"vhost": "/", "stomp_destination": f"/topic/rst.{uniq}.x"}), 200).json()
    assert body["exchange"] == "amq.topic" and body["routing_key"] == f"rst.{uniq}.x", body
    [rt] = body["routes"]
    assert rt["path"][-1]["routing_key"] == f"rst.{uniq}.*", rt
    [c] = rt["consumers"]
    assert c["connection"] == cname and c["protocol"] == "STOMP 1.2" and c["kind"] == "STOMP subscription", c


@oracle_skip
def test_route_tester_headers_exchange(api, clients, uniq):
    x, name = f"rhx-{uniq}", f"rhq-{uniq}"
    ch = clients.amqp().channel()
    ch.exchange_declare(x, "headers", auto_delete=True)
    ch.queue_declare(queue=name, exclusive=True)
    ch.queue_bind(name, x, "", arguments={"x-match": "all", "kind": "temp", "plant": 7})
    hit = expect(route(api, {"vhost": "/", "exchange": x, "routing_key": "",
                             "headers": {"kind": "temp", "plant": 7}}), 200).json()
    [rt] = hit["routes"]
    assert rt["queue"] == name and hit["unroutable"] is False, hit
    assert rt["path"][0]["arguments"] == {"x-match": "all", "kind": "temp", "plant": 7}, rt
    miss = expect(route(api, {"vhost": "/", "exchange": x, "routing_key": "", "headers": {"kind": "temp"}}), 200).json()
    assert miss["routes"] == [] and miss["unroutable"] is True, miss
    none = expect(route(api, {"vhost": "/", "exchange": x, "routing_key": ""}), 200).json()
    assert none["routes"] == [] and none["unroutable"] is True, none


@oracle_skip
def test_route_tester_errors(api, uniq):
    expect(route(api, {"vhost": f"nope-{uniq}", "exchange": "amq.topic", "routing_key": "a"}), 404)
    expect(route(api, {"vhost": "/", "exchange": f"nope-{uniq}", "routing_key": "a"}), 404)
    expect(route(api, {"vhost": "/", "routing_key": "a"}), 400)
    expect(route(api, {"vhost": "/", "exchange": "amq.topic", "mqtt_topic": "a/b", "routing_key": "a"}), 400)
    expect(route(api, {"vhost": "/", "mqtt_topic": "a/b", "stomp_destination": "/topic/a"}), 400)
    expect(api.post("/api/switchyard/route", {"vhost": "/", "exchange": "amq.topic", "routing_key": "a"},
                    auth=None), 401)
