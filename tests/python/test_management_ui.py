"""The management web UI (crates/admin/ui) in headless Chromium, against real
traffic of all three protocols.

Before the browser starts, this test makes the broker busy:

  * pika declares queue `ui-demo` with 3 messages (text/plain), a topic
    exchange `ui-demo.ingress` bound to amq.topic (exchange-to-exchange,
    key plant.#) and to ui-demo (key plant.*.temp), and three more queues
    `ui-extra-<uniq>-<n>` so that the name filter has something to remove;
  * a paho-mqtt client (MQTT 3.1.1, clean_session=False) subscribes to
    plant/+/temp with QoS 1;
  * a stomp.py client (STOMP 1.2) subscribes to /topic/plant.#;
  * one more pika connection, for the UI to close (its name, learnt from
    GET /api/connections, is passed to the driver);
  * a pika publisher (publisher confirms) sends to amq.topic, key
    plant.7.temp, five messages a second until the end, so the overview's
    rate charts have something to draw and both subscribers receive.

Then tests/browser/ui.mjs (playwright-core, Debian's /usr/bin/chromium) logs
in as guest/guest on the management listener, visits every page, checks its
content (connections by protocol, ui-demo with 3 messages among the ui-*
queues, the name filter narrowing that to ui-demo*, server-side pagination
and sorting,
Get and Publish on the queue page, the route tester for MQTT topic
plant/7/temp reaching the MQTT session and the STOMP subscription, ...),
keeps a screenshot of each page as target/browser/ui-<page>.png, and ends
with a wrong password, which must show the login error.  Afterwards the
broker's state is checked for what the UI changed (ui-demo has the published
4th message, the queue added and deleted from the UI is gone, the queue
imported from definitions exists).

Every wait is bounded; the driver runs in its own session and is stopped by
its pid (then its process group) at teardown.
"""

from __future__ import annotations

import base64
import json
import queue
import subprocess
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt
import pika
import pika.exceptions
import pytest
from conftest import EXTERNAL, REPO_ROOT
from browser_helpers import BROWSER_DIR, CHROMIUM, require_browser_tools, stop_driver, track_driver
from stomp_helpers import StompClient

ARTIFACT_DIR = REPO_ROOT / "target" / "browser"
DRIVER_LOG = ARTIFACT_DIR / "ui.log"

QUEUE = "ui-demo"
EXCHANGE = "ui-demo.ingress"
DRIVER_TIMEOUT_S = 175.0  # ui.mjs has its own 170 s watchdog
WAIT_S = 15.0  # any single wait on the client side

SCREENSHOTS = [
    "login",
    "overview",
    "connections",
    "channels",
    "consumers",
    "queues",
    "queues-filtered",
    "queue",
    "exchanges",
    "exchange",
    "route",
    "route-chain",
    "users",
    "vhosts",
    "permissions",
    "policies",
    "definitions",
    "login-error",
]

def _log_tail(lines: int = 60) -> str:
    try:
        text = DRIVER_LOG.read_text(errors="replace")
    except FileNotFoundError:
        return "(no driver log)"
    return f"--- last lines of {DRIVER_LOG} ---\n" + "\n".join(text.splitlines()[-lines:])


# -- traffic -------------------------------------------------------------------


class MqttSubscriber:
    """paho-mqtt 3.1.1, persistent session, QoS 1 subscription."""

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.client_id = client_id
        self.events: queue.Queue = queue.Queue()
        self.received = 0
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        c.username_pw_set("guest", "guest")
        c.on_connect = lambda cl, ud, flags, rc, props: self.events.put(("connack", rc))
        c.on_subscribe = lambda cl, ud, mid, rcs, props: self.events.put(("suback", [int(r.value) for r in rcs]))
        c.on_message = self._on_message
        self.client = c
        c.connect(host, port, keepalive=30)
        c.loop_start()
        self._expect("connack")

    def _on_message(self, client, userdata, msg) -> None:
        self.received += 1

    def _expect(self, kind: str):
        deadline = time.monotonic() + WAIT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"MQTT: no {kind} within {WAIT_S:.0f}s")
            try:
                got, value = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if got == kind:
                if kind == "connack" and value.is_failure:
                    raise AssertionError(f"MQTT CONNACK refused: {value}")
                return value

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        granted = self._expect("suback")
        assert granted == [1], f"MQTT SUBACK granted {granted}"

    def close(self, host: str, port: int) -> None:
        """Disconnect, then end the persistent session (a clean-session
        connect with the same client id) so no session queue is left."""
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True, protocol=mqtt.MQTTv311)
        c.username_pw_set("guest", "guest")
        done = threading.Event()
        c.on_connect = lambda *a: done.set()
        try:
            c.connect(host, port, keepalive=10)
            c.loop_start()
            done.wait(WAIT_S)
            c.disconnect()
        except OSError:
            pass
        finally:
            c.loop_stop()


class Publisher(threading.Thread):
    """Publishes to amq.topic (plant.7.temp) with confirms, 5 messages a
    second, on its own connection, until stopped."""

    def __init__(self, endpoint) -> None:
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.stop_event = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = self.endpoint.connect()
            try:
                ch = conn.channel()
                ch.confirm_delivery()
                props = pika.BasicProperties(content_type="application/json")
                while not self.stop_event.is_set():
                    ch.basic_publish("amq.topic", "plant.7.temp", json.dumps({"t": time.time(), "c": 21.5}).encode(), props)
                    self.sent += 1
                    conn.process_data_events(time_limit=0.2)
            finally:
                if conn.is_open:
                    conn.close()
        except BaseException as e:  # reported by the test
            self.error = e

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=WAIT_S)


class Pump(threading.Thread):
    """Runs one pika connection's I/O (and nothing else touches it) until
    it ends; `outcome` is the exception that ended it."""

    def __init__(self, conn) -> None:
        super().__init__(daemon=True)
        self.conn = conn
        self.outcome: BaseException | None = None
        self.stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.conn.process_data_events(time_limit=0.1)
        except BaseException as e:  # the end we wait for: ConnectionClosedByBroker
            self.outcome = e


def _api_connections(host: str, port: int) -> list[dict]:
    req = urllib.request.Request(f"http://{host}:{port}/api/connections")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(req, timeout=WAIT_S) as resp:
        return json.load(resp)


def _open_victim(connections, host: str, port: int, uniq: str):
    """An AMQP connection for the UI to close, and its name in the API: the
    connection with our client-provided name or, as the server may not list
    client properties, the one whose peer port is our socket's local port."""
    tag = f"ui-close-{uniq}"
    victim = connections.open(client_properties={"connection_name": tag})
    local_port = victim._impl._transport._sock.getsockname()[1]  # pika 1.x internals
    deadline = time.monotonic() + WAIT_S
    while True:
        for c in _api_connections(host, port):
            props = c.get("client_properties") or {}
            if (isinstance(props, dict) and props.get("connection_name") == tag) or c.get("peer_port") == local_port:
                return victim, c["name"]
        assert time.monotonic() < deadline, f"connection {tag} (local port {local_port}) not in /api/connections"
        victim.process_data_events(time_limit=0.2)


def _queue_exists(endpoint, name: str) -> int | None:
    """Messages in queue `name`, or None if it does not exist."""
    conn = endpoint.connect()
    try:
        ch = conn.channel()
        try:
            return ch.queue_declare(queue=name, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 404, e
            return None
    finally:
        if conn.is_open:
            conn.close()


# -- the test -------------------------------------------------------------------


def test_management_ui(broker, connections, uniq):
    node = require_browser_tools()
    if broker.management_port is None:
        msg = "the broker announced no management= listener"
        if EXTERNAL:
            pytest.skip(msg + " (set SWITCHYARD_EXTERNAL_MANAGEMENT)")
        pytest.fail(msg, pytrace=False)
    for name in ("mqtt_port", "stomp_port"):
        if getattr(broker, name) is None:
            pytest.fail(f"the broker announced no {name.removesuffix('_port')}= listener", pytrace=False)

    host = broker.host
    extras = [f"ui-extra-{uniq}-{n}" for n in (1, 2, 3)]
    added = f"ui-added-{uniq}"
    imported = f"ui-imported-{uniq}"
    conn = connections.open()
    ch = conn.channel()
    # closed from the Connections page; its name is learnt from the API
    victim, victim_name = _open_victim(connections, host, broker.management_port, uniq)
    # answers the broker's connection.close (RabbitMQ waits for close-ok)
    victim_pump = Pump(victim)
    victim_pump.start()
    mqtt_sub = stomp_sub = publisher = None
    proc = None
    log = None
    try:
        # -- AMQP: queues, exchanges, bindings, messages
        ch.queue_delete(QUEUE)
        ch.queue_declare(QUEUE, durable=True)
        ch.exchange_declare(EXCHANGE, "topic", durable=True)
        ch.exchange_bind(destination="amq.topic", source=EXCHANGE, routing_key="plant.#")
        ch.queue_bind(QUEUE, EXCHANGE, routing_key="plant.*.temp")
        props = pika.BasicProperties(content_type="text/plain", delivery_mode=2, headers={"origin": "test_management_ui"})
        for n in (1, 2, 3):
            ch.basic_publish("", QUEUE, f"{QUEUE} message {n}".encode(), props)
        for n, name in enumerate(extras, start=1):
            ch.queue_declare(name, auto_delete=False)
            for i in range(n):
                ch.basic_publish("", name, f"extra {i}".encode())

        # -- MQTT and STOMP subscribers
        mqtt_sub = MqttSubscriber(host, broker.mqtt_port, f"ui-demo-{uniq}")
        mqtt_sub.subscribe("plant/+/temp")
        stomp_sub = StompClient(broker)
        stomp_sub.connect()
        stomp_sub.subscribe("/topic/plant.#", "ui-1")

        publisher = Publisher(broker)
        publisher.start()

        # -- the browser
        ARTIFACT_DIR.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACT_DIR.glob("ui-*.png"):
            old.unlink()
        log = open(DRIVER_LOG, "wb")
        url = f"http://{host}:{broker.management_port}/"
        proc = subprocess.Popen(
            [
                node, "ui.mjs",
                "--url", url,
                "--out", str(ARTIFACT_DIR),
                "--uniq", uniq,
                "--queue", QUEUE,
                "--exchange", EXCHANGE,
                "--close-connection", victim_name,
                "--user", "guest",
                "--password", "guest",
                "--chromium", str(CHROMIUM),
            ],
            cwd=BROWSER_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
        track_driver(proc)
        try:
            out, _ = proc.communicate(timeout=DRIVER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stop_driver(proc)
            log.flush()
            pytest.fail(f"ui.mjs did not finish within {DRIVER_TIMEOUT_S:.0f}s\n{_log_tail()}", pytrace=False)
        log.flush()

        events = []
        for line in out.decode("utf-8", "replace").splitlines():
            line = line.strip()
            if line:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    events.append({"event": "garbage", "line": line})
        errors = [e for e in events if e.get("event") == "error"]
        done = [e for e in events if e.get("event") == "done"]
        passed = [e["step"] for e in events if e.get("event") == "step" and e.get("ok")]
        if errors or not done or proc.returncode != 0:
            err = errors[0] if errors else {}
            pytest.fail(
                f"the UI check failed in step {err.get('step')!r} (exit {proc.returncode}): {err.get('message')}\n"
                f"steps passed: {passed}\nscreenshot: {err.get('screenshot')}\n{_log_tail()}",
                pytrace=False,
            )

        steps = {e["step"]: e.get("detail") for e in events if e.get("event") == "step"}
        for required in (
            "login", "overview", "connections", "channels", "consumers", "queues", "add-and-delete-queue",
            "queue", "exchanges", "route", "users", "vhosts", "permissions", "policies", "definitions",
            "overview-charts", "wrong-password",
        ):
            assert required in steps, f"step {required} missing from {list(steps)}"

        # the overview counted every protocol we connected with
        by_proto = steps["overview"]["byProtocol"]
        for family in ("AMQP", "MQTT", "STOMP"):
            assert any(p.startswith(family) and n >= 1 for p, n in by_proto.items()), by_proto

        # the filter narrowed the list to ui-demo* queues
        q = steps["queues"]
        assert QUEUE in q["after"] and all(QUEUE in n for n in q["after"]), q
        assert q["before"] > len(q["after"]), q

        # Get showed the first message, requeued; Publish routed a 4th
        assert steps["queue"]["got"]["payload"] == f"{QUEUE} message 1", steps["queue"]
        assert steps["queue"]["routed"] is True

        # the route tester reached the MQTT session and the STOMP subscription
        kinds = {(c["kind"], c["protocol"].split()[0]) for r in steps["route"]["mqtt"] for c in r["consumers"]}
        assert ("MQTT session", "MQTT") in kinds, steps["route"]
        assert ("STOMP subscription", "STOMP") in kinds, steps["route"]

        # the queue list never asked for all queues at once
        queue_lists = done[0]["requests"]["queueLists"]
        assert queue_lists, "the UI never listed queues"
        for req in queue_lists:
            assert "pagination=true" in req and "page_size=" in req, f"queue list without pagination: {req}"
        assert any("sort=messages&" in r or r.endswith("sort=messages") for r in queue_lists), queue_lists
        assert any(f"name={QUEUE}" in r for r in queue_lists), queue_lists

        assert "Login failed" in steps["wrong-password"]["text"], steps["wrong-password"]

        # the Close button closed that connection (connection.close 320)
        assert steps["connections"]["closed"] == victim_name, steps["connections"]
        victim_pump.join(timeout=WAIT_S)
        assert victim_pump.outcome is not None, f"connection {victim_name} still open after the UI closed it"
        assert isinstance(victim_pump.outcome, pika.exceptions.ConnectionClosedByBroker), victim_pump.outcome
        assert victim_pump.outcome.reply_code == 320, victim_pump.outcome

        for name in SCREENSHOTS:
            path = ARTIFACT_DIR / f"ui-{name}.png"
            assert path.is_file() and path.stat().st_size > 5000, f"screenshot {path} missing or empty"

        # -- what the UI did, seen from the broker
        assert _queue_exists(broker, QUEUE) == 4, "ui-demo should hold the 3 messages plus the one published from the UI"
        assert _queue_exists(broker, added) is None, f"{added} was deleted from the UI"
        assert _queue_exists(broker, imported) == 0, f"{imported} should exist after the definitions upload"
        assert publisher.error is None, publisher.error
        assert mqtt_sub.received > 0 and stomp_sub.messages.qsize() > 0, (mqtt_sub.received, stomp_sub.messages.qsize())
    finally:
        if proc is not None:
            stop_driver(proc)
        victim_pump.stop_event.set()
        victim_pump.join(timeout=WAIT_S)
        if log is not None:
            log.close()
        if publisher is not None:
            publisher.stop()
        if stomp_sub is not None:
            stomp_sub.close()
        if mqtt_sub is not None:
            mqtt_sub.close(host, broker.mqtt_port)
        try:
            if conn.is_open:
                ch = conn.channel()
                for name in [QUEUE, added, imported, *extras]:
                    ch.queue_delete(name)
                ch.exchange_delete(EXCHANGE)
        except Exception:
            pass
