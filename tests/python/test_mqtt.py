"""MQTT 3.1.1 end to end with paho-mqtt 2.x (protocol MQTTv311).

The shared `broker` fixture serves the tests that need no restart; topics and
client ids carry a unique suffix (`uniq`) because retained messages and
persistent sessions outlive a test on that broker. The restart test uses
`own_broker`. Every wait is bounded.
"""

from __future__ import annotations

import queue
import socket
import threading
import time

import paho.mqtt.client as mqtt
import pytest

WAIT = 10.0  # bound on any single wait, seconds
QUIET = 0.5  # how long to watch for something that must not arrive


def mqtt_port(endpoint) -> int:
    if endpoint.mqtt_port is None:
        pytest.skip("the broker announced no MQTT listener")
    return endpoint.mqtt_port


class Mq:
    """A paho client on its own network thread; callbacks feed queues.

    reconnect_on_failure is off: a connection the broker ends stays ended, so
    a test sees exactly what the broker did."""

    def __init__(
        self,
        endpoint,
        client_id: str,
        clean_session: bool = True,
        will: tuple[str, bytes, int] | None = None,
        keepalive: int = 30,
    ) -> None:
        self.client_id = client_id
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._connack: queue.Queue = queue.Queue()
        self._subacks: queue.Queue = queue.Queue()
        self.disconnected = threading.Event()
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        c.on_connect = lambda _c, _u, flags, rc, _p: self._connack.put((flags, rc))
        c.on_message = lambda _c, _u, msg: self.messages.put(msg)
        c.on_subscribe = lambda _c, _u, mid, codes, _p: self._subacks.put((mid, codes))
        c.on_disconnect = lambda *_args: self.disconnected.set()
        if will is not None:
            topic, payload, qos = will
            c.will_set(topic, payload, qos=qos, retain=False)
        self.c = c
        c.connect(endpoint.host, mqtt_port(endpoint), keepalive=keepalive)
        c.loop_start()
        try:
            flags, rc = self._connack.get(timeout=WAIT)
        except queue.Empty:
            c.loop_stop()
            pytest.fail(f"no CONNACK for {client_id!r} within {WAIT}s")
        assert not rc.is_failure, f"CONNACK for {client_id!r}: {rc}"
        self.session_present = bool(flags.session_present)

    def subscribe(self, topic: str, qos: int) -> None:
        rc, mid = self.c.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe {topic!r}: {rc}"
        got_mid, codes = self._subacks.get(timeout=WAIT)
        assert got_mid == mid
        assert [c.value for c in codes] == [qos], f"SUBACK for {topic!r}: {codes}"

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> None:
        """Publish and wait for PUBACK/PUBCOMP (QoS 1/2) or the write (QoS 0)."""
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published(), f"publish to {topic!r} at QoS {qos} not completed"

    def next_message(self, timeout: float = WAIT) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"{self.client_id!r}: no message within {timeout}s")

    def assert_no_message(self, within: float = QUIET) -> None:
        try:
            msg = self.messages.get(timeout=within)
        except queue.Empty:
            return
        pytest.fail(f"{self.client_id!r}: unexpected message {msg.topic} {msg.payload!r}")

    def disconnect(self) -> None:
        """Clean DISCONNECT, then stop the network thread."""
        self.c.disconnect()
        assert self.disconnected.wait(WAIT), f"{self.client_id!r}: disconnect not done"
        self.c.loop_stop()

    def drop(self) -> None:
        """Abnormal disconnect: stop the thread, close the socket, no DISCONNECT."""
        self.c.loop_stop()
        sock = self.c.socket()
        assert sock is not None, "no socket to drop"
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def close(self) -> None:
        """Teardown: stop everything, whatever state the client is in."""
        try:
            if not self.disconnected.is_set():
                self.c.disconnect()
            self.c.loop_stop()
        except Exception:
            pass


@pytest.fixture
def clients():
    opened: list[Mq] = []

    def open_client(endpoint, client_id, **kwargs) -> Mq:
        m = Mq(endpoint, client_id, **kwargs)
        opened.append(m)
        return m

    try:
        yield open_client
    finally:
        for m in opened:
            m.close()


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_round_trip(broker, clients, uniq, qos):
    sub = clients(broker, f"rt-sub-{uniq}")
    sub.subscribe(f"rt/{uniq}/+/value", qos)
    pub = clients(broker, f"rt-pub-{uniq}")
    payload = f"payload at QoS {qos}".encode() + bytes(range(256))
    pub.publish(f"rt/{uniq}/a/value", payload, qos)
    pub.publish(f"rt/{uniq}/a/other", b"not matched", qos)
    pub.publish(f"rt/{uniq}/b/value", b"second", qos)

    msg = sub.next_message()
    assert (msg.topic, msg.payload, msg.qos) == (f"rt/{uniq}/a/value", payload, qos)
    assert not msg.retain
    msg = sub.next_message()
    assert (msg.topic, msg.payload) == (f"rt/{uniq}/b/value", b"second")
    sub.assert_no_message()


def test_retained_with_wildcards(broker, clients, uniq):
    base = f"home-{uniq}"
    pub = clients(broker, f"ret-pub-{uniq}")
    pub.publish(f"{base}/kitchen/temp", b"20", 1, retain=True)
    pub.publish(f"{base}/kitchen/temp", b"21", 1, retain=True)  # replaces 20
    pub.publish(f"{base}/hall/temp", b"19", 0, retain=True)
    pub.publish(f"{base}/hall/light", b"on", 1, retain=False)

    s1 = clients(broker, f"ret-s1-{uniq}")
    s1.subscribe(f"{base}/+/temp", 1)
    got = sorted((m.topic, m.payload, m.retain) for m in (s1.next_message(), s1.next_message()))
    assert got == [
        (f"{base}/hall/temp", b"19", True),
        (f"{base}/kitchen/temp", b"21", True),
    ]
    s1.assert_no_message()

    # An empty retained payload clears the topic's retained message.
    pub.publish(f"{base}/kitchen/temp", b"", 1, retain=True)
    s2 = clients(broker, f"ret-s2-{uniq}")
    s2.subscribe(f"{base}/#", 1)
    msg = s2.next_message()
    assert (msg.topic, msg.payload, msg.retain) == (f"{base}/hall/temp", b"19", True)
    s2.assert_no_message()


def test_will_on_abnormal_disconnect_only(broker, clients, uniq):
    watcher = clients(broker, f"will-watch-{uniq}")
    watcher.subscribe(f"wills-{uniq}/#", 1)

    # A clean DISCONNECT discards the will.
    polite = clients(broker, f"will-polite-{uniq}", will=(f"wills-{uniq}/polite", b"bye", 1))
    polite.disconnect()
    watcher.assert_no_message()

    # A dropped socket publishes it.
    dev = clients(broker, f"will-dev-{uniq}", will=(f"wills-{uniq}/dev", b"dev gone", 1))
    watcher.assert_no_message()
    dev.drop()
    msg = watcher.next_message()
    assert (msg.topic, msg.payload, msg.qos) == (f"wills-{uniq}/dev", b"dev gone", 1)
    watcher.assert_no_message()


def test_persistent_session_survives_restart(own_broker, clients, uniq):
    n = 10
    sid = f"ps-{uniq}"
    sub = clients(own_broker.endpoint, sid, clean_session=False)
    assert not sub.session_present
    sub.subscribe("ps/#", 1)
    sub.disconnect()

    # While the subscriber is away: n QoS 1 messages for it, and a restart.
    pub = clients(own_broker.endpoint, f"ps-pub-{uniq}")
    for i in range(n):
        pub.publish(f"ps/dev/{i % 3}", f"m{i}".encode(), 1)
    pub.disconnect()
    endpoint = own_broker.restart()

    sub = clients(endpoint, sid, clean_session=False)
    assert sub.session_present, "session present flag after restart"
    got = []
    for _ in range(n):
        msg = sub.next_message()
        assert msg.qos == 1
        got.append(msg.payload.decode())
    assert got == [f"m{i}" for i in range(n)]
    sub.assert_no_message()

    # The subscription survived too.
    pub = clients(endpoint, f"ps-pub2-{uniq}")
    pub.publish("ps/after", b"after restart", 1)
    msg = sub.next_message()
    assert (msg.topic, msg.payload) == ("ps/after", b"after restart")


def test_qos2_exactly_once_count(broker, clients, uniq):
    n = 200
    sub = clients(broker, f"eo-sub-{uniq}")
    sub.subscribe(f"eo-{uniq}/#", 2)
    pub = clients(broker, f"eo-pub-{uniq}")
    infos = [pub.c.publish(f"eo-{uniq}/{i % 7}", str(i).encode(), qos=2) for i in range(n)]
    deadline = time.monotonic() + 60
    for info in infos:
        info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
        assert info.is_published(), f"QoS 2 publish mid={info.mid} not completed"

    seen: list[int] = []
    while len(set(seen)) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(set(seen))} of {n} distinct messages arrived"
        msg = sub.next_message(timeout=min(WAIT, left))
        assert msg.qos == 2
        seen.append(int(msg.payload))
    sub.assert_no_message(within=1.0)
    dups = sorted(i for i in set(seen) if seen.count(i) > 1)
    assert not dups, f"duplicates delivered: {dups}"
    assert sorted(seen) == list(range(n))
