"""Web-STOMP and Web-MQTT from a real browser: headless Chromium, @stomp/stompjs
and MQTT.js, against AMQP (pika) on the other side.

tests/browser/page is served by a static HTTP server on 127.0.0.1 started here;
tests/browser/drive.mjs (playwright-core) opens it in Debian's /usr/bin/chromium
and talks to this test with JSON lines over its stdin/stdout:

  1. the page connects to ws://127.0.0.1:<web_stomp>/ws (subprotocols
     v12.stomp, v11.stomp, v10.stomp) and ws://127.0.0.1:<web_mqtt>/ws
     (subprotocol mqtt, MQTT 3.1.1), subscribes STOMP /topic/browser.<uniq> and
     MQTT browser/<uniq>/in, and the driver says "ready" once the STOMP receipt
     and the MQTT SUBACK are in;
  2. pika publishes to amq.topic with routing keys browser.<uniq> and
     browser.<uniq>.in; the page must receive both;
  3. the page sends over STOMP to /queue/browser-<uniq> (receipt) and over MQTT
     to browser/<uniq>/out (QoS 1, PUBACK); pika consumes both;
  4. the verdict is shown on the page and a screenshot is kept at
     target/browser/page.png (the driver's log beside it, drive.log).

Chromium and node_modules are installed by tests/browser/setup.sh (.ci/run
calls it); when they are missing the test fails, it does not skip.  Every wait
is bounded (STEP_TIMEOUT_S) and the driver, started in its own session, is
stopped by its pid at teardown.
"""

from __future__ import annotations

import functools
import http.server
import json
import queue
import subprocess
import threading
import time
from urllib.parse import urlencode

import pika
import pytest

from conftest import EXTERNAL, REPO_ROOT
from browser_helpers import (
    BROWSER_DIR,
    CHROMIUM,
    STOP_GRACE_S,
    require_browser_tools,
    stop_driver,
    track_driver,
)
from helpers import process_until

ARTIFACT_DIR = REPO_ROOT / "target" / "browser"
SCREENSHOT = ARTIFACT_DIR / "page.png"
DRIVER_LOG = ARTIFACT_DIR / "drive.log"

STEP_TIMEOUT_S = 30.0  # bound on any single wait for the driver or a message


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


@pytest.fixture
def static_server():
    """tests/browser over HTTP on 127.0.0.1 (page/ and node_modules/)."""
    handler = functools.partial(_QuietHandler, directory=str(BROWSER_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class Driver:
    """drive.mjs as a child process; JSON lines both ways."""

    def __init__(self, node: str, url: str) -> None:
        ARTIFACT_DIR.mkdir(parents=True, exist_ok=True)
        try:
            SCREENSHOT.unlink()
        except FileNotFoundError:
            pass
        self.log = open(DRIVER_LOG, "wb")
        self.proc = subprocess.Popen(
            [node, "drive.mjs", "--url", url, "--screenshot", str(SCREENSHOT), "--chromium", str(CHROMIUM)],
            cwd=BROWSER_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            start_new_session=True,
        )
        track_driver(self.proc)
        self.events: queue.Queue[dict | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                self.events.put(json.loads(line))
            except ValueError:
                self.events.put({"event": "garbage", "line": line})
        self.events.put(None)  # EOF

    def log_tail(self, lines: int = 40) -> str:
        self.log.flush()
        try:
            text = DRIVER_LOG.read_text(errors="replace")
        except FileNotFoundError:
            return "(no driver log)"
        # stompjs' frame-level debug lines are noisy; keep the rest.
        kept = [ln for ln in text.splitlines() if not ln.startswith("[page debug]")]
        return f"--- last lines of {DRIVER_LOG} ---\n" + "\n".join(kept[-lines:])

    def expect(self, event: str, timeout: float = STEP_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"browser driver: no {event!r} event within {timeout:.0f}s\n{self.log_tail()}"
                )
            try:
                msg = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if msg is None:
                code = self.proc.wait(timeout=STOP_GRACE_S)
                raise AssertionError(
                    f"browser driver exited (code {code}) before {event!r}\n{self.log_tail()}"
                )
            if msg.get("event") == event:
                return msg
            if msg.get("event") == "error":
                raise AssertionError(
                    f"browser driver failed before {event!r}: {msg.get('message')}\n"
                    f"page results: {_summary(msg.get('results'))}\n"
                    f"screenshot: {SCREENSHOT}\n{self.log_tail()}"
                )
            raise AssertionError(f"browser driver: expected {event!r}, got {msg}\n{self.log_tail()}")

    def send(self, cmd: dict) -> None:
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def close(self) -> None:
        stop_driver(self.proc, close_stdin=True)
        self.log.close()


def _summary(results) -> str:
    if not isinstance(results, dict):
        return repr(results)
    keep = {k: results.get(k) for k in ("stomp", "mqtt", "sockets", "amqp", "errors")}
    return json.dumps(keep, ensure_ascii=False)


def _web_ports(broker) -> tuple[int, int]:
    ports = (broker.web_stomp_port, broker.web_mqtt_port)
    if None in ports:
        msg = "the broker announced no web_stomp= / web_mqtt= listener"
        if EXTERNAL:
            pytest.skip(msg + " (set SWITCHYARD_EXTERNAL_WEB_STOMP and SWITCHYARD_EXTERNAL_WEB_MQTT)")
        pytest.fail(msg, pytrace=False)
    return ports


def test_browser_web_stomp_and_web_mqtt(broker, connections, static_server, uniq):
    node = require_browser_tools(
        (
            "node_modules/@stomp/stompjs/bundles/stomp.umd.min.js",
            "node_modules/mqtt/dist/mqtt.min.js",
        )
    )
    web_stomp, web_mqtt = _web_ports(broker)

    # AMQP side first, so that whatever the page sends has somewhere to go.
    conn = connections.open()
    ch = conn.channel()
    out_q = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(out_q, "amq.topic", routing_key=f"browser.{uniq}.out")
    # What a STOMP SEND to /queue/browser-<uniq> declares (RabbitMQ: durable,
    # not auto-delete); declared here with the same properties so the message
    # has a home whichever side declares first.  Deleted at the end.
    stomp_q = f"browser-{uniq}"
    ch.queue_declare(queue=stomp_q, durable=True, auto_delete=False)

    to_stomp = f"amqp→stomp {uniq} ✓"
    to_mqtt = f"amqp→mqtt {uniq} ✓"
    from_stomp = f"stomp→amqp {uniq} ✓"
    from_mqtt = f"mqtt→amqp {uniq} ✓"

    url = f"{static_server}/page/index.html?" + urlencode(
        {"host": "127.0.0.1", "stomp": web_stomp, "mqtt": web_mqtt, "uniq": uniq}
    )
    driver = Driver(node, url)
    try:
        # 1. connected and subscribed over both WebSockets
        ready = driver.expect("ready")["results"]
        sockets = {s["url"]: s for s in ready["sockets"]}
        stomp_ws = sockets[ready["stomp"]["url"]]
        mqtt_ws = sockets[ready["mqtt"]["url"]]
        assert stomp_ws["offered"] == ["v12.stomp", "v11.stomp", "v10.stomp"], stomp_ws
        assert stomp_ws["protocol"] == "v12.stomp", f"Web-STOMP negotiated {stomp_ws}"
        assert ready["stomp"]["version"] == "1.2", ready["stomp"]
        assert mqtt_ws["offered"] == ["mqtt"], mqtt_ws
        assert mqtt_ws["protocol"] == "mqtt", f"Web-MQTT negotiated {mqtt_ws}"
        assert ready["mqtt"]["grantedQos"] == 1, ready["mqtt"]

        # 2. AMQP -> browser
        props = pika.BasicProperties(content_type="text/plain")
        ch.basic_publish("amq.topic", f"browser.{uniq}", to_stomp.encode(), props)
        ch.basic_publish("amq.topic", f"browser.{uniq}.in", to_mqtt.encode(), props)
        driver.send({"cmd": "wait_received"})
        got = driver.expect("received")["results"]
        assert [m["body"] for m in got["stomp"]["received"]] == [to_stomp], got["stomp"]
        assert [m["body"] for m in got["mqtt"]["received"]] == [to_mqtt], got["mqtt"]
        assert got["mqtt"]["received"][0]["where"] == f"browser/{uniq}/in", got["mqtt"]

        # 3. browser -> AMQP
        driver.send({"cmd": "send", "stomp": from_stomp, "mqtt": from_mqtt})
        sent = driver.expect("sent")["results"]
        assert sent["stomp"]["sent"] and sent["mqtt"]["sent"], _summary(sent)

        bodies: dict[str, bytes] = {}

        def on_message(name):
            def cb(chan, method, props, body):
                bodies[name] = body

            return cb

        ch.basic_consume(out_q, on_message("mqtt"), auto_ack=True)
        ch.basic_consume(stomp_q, on_message("stomp"), auto_ack=True)
        verdict_ok, detail = False, ""
        try:
            process_until(
                conn,
                lambda: len(bodies) == 2,
                timeout=STEP_TIMEOUT_S,
                what=f"the browser's messages on queues {stomp_q} and {out_q}",
            )
            assert bodies["stomp"].decode() == from_stomp, bodies
            assert bodies["mqtt"].decode() == from_mqtt, bodies
            verdict_ok = True
            detail = f"{stomp_q}: {from_stomp!r}; browser.{uniq}.out: {from_mqtt!r}"
        except AssertionError as e:
            detail = f"{e}; got {bodies!r}"
            raise
        finally:
            # 4. verdict on the page, screenshot, clean exit
            try:
                driver.send({"cmd": "amqp", "ok": verdict_ok, "detail": detail})
                driver.expect("screenshot")
                driver.send({"cmd": "quit"})
                driver.expect("bye")
            except Exception:
                if verdict_ok:
                    raise
        assert SCREENSHOT.is_file() and SCREENSHOT.stat().st_size > 0, f"no screenshot at {SCREENSHOT}"
        code = driver.proc.wait(timeout=STOP_GRACE_S)
        assert code == 0, f"driver exited with {code}\n{driver.log_tail()}"
    finally:
        driver.close()
        try:
            if conn.is_open:
                ch.queue_delete(stomp_q)
        except Exception:
            pass
