"""MQTT 5 end to end with paho-mqtt 2.x (protocol MQTTv5) and pika.

PUBLISH properties map onto the AMQP model (protocols/mqtt/src/session/props.rs):
content type, response topic -> reply_to, correlation data -> correlation_id
(or the x-mqtt-correlation-data header when not UTF-8), message expiry ->
expiration in ms, user properties <-> headers (a repeated key is an array). That
makes MQTT 5 request/response work with an AMQP responder.

The shared `broker` fixture serves these tests; topics and client ids carry a
unique suffix (`uniq`). Every wait is bounded.
"""

from __future__ import annotations

import queue
import threading

import paho.mqtt.client as mqtt
import pika
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from helpers import consume

WAIT = 10.0  # bound on any single wait, seconds
QUIET = 0.5  # how long to watch for something that must not arrive


def mqtt_port(endpoint) -> int:
    if endpoint.mqtt_port is None:
        pytest.skip("the broker announced no MQTT listener")
    return endpoint.mqtt_port


class Mq5:
    """A paho MQTT 5 client on its own network thread; callbacks feed queues.

    reconnect_on_failure is off: a connection the broker ends stays ended."""

    def __init__(self, endpoint, client_id: str) -> None:
        self.client_id = client_id
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._connack: queue.Queue = queue.Queue()
        self._subacks: queue.Queue = queue.Queue()
        self._acks: dict[int, mqtt.ReasonCode] = {}
        self._acks_cond = threading.Condition()
        self.disconnected = threading.Event()
        c = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        c.on_connect = lambda _c, _u, flags, rc, props: self._connack.put((flags, rc, props))
        c.on_message = lambda _c, _u, msg: self.messages.put(msg)
        c.on_subscribe = lambda _c, _u, mid, codes, _p: self._subacks.put((mid, codes))
        c.on_publish = self._on_publish
        c.on_disconnect = lambda *_args: self.disconnected.set()
        self.c = c
        c.connect(endpoint.host, mqtt_port(endpoint), keepalive=30, clean_start=True)
        c.loop_start()
        try:
            flags, rc, props = self._connack.get(timeout=WAIT)
        except queue.Empty:
            c.loop_stop()
            pytest.fail(f"no CONNACK for {client_id!r} within {WAIT}s")
        assert not rc.is_failure, f"CONNACK for {client_id!r}: {rc}"
        self.connack_properties = props

    def _on_publish(self, _c, _u, mid, rc, _props) -> None:
        with self._acks_cond:
            self._acks[mid] = rc
            self._acks_cond.notify_all()

    def subscribe(self, topic: str, qos: int) -> None:
        rc, mid = self.c.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe {topic!r}: {rc}"
        got_mid, codes = self._subacks.get(timeout=WAIT)
        assert got_mid == mid
        assert [c.value for c in codes] == [qos], f"SUBACK for {topic!r}: {codes}"

    def publish(
        self, topic: str, payload: bytes, qos: int, properties: Properties | None = None
    ) -> mqtt.ReasonCode:
        """Publish and wait for the broker's acknowledgement; returns its reason
        code (PUBACK / PUBREC), or success for QoS 0 once written."""
        info = self.c.publish(topic, payload, qos=qos, properties=properties)
        with self._acks_cond:
            done = self._acks_cond.wait_for(lambda: info.mid in self._acks, timeout=WAIT)
            assert done, f"publish to {topic!r} at QoS {qos} not acknowledged within {WAIT}s"
            return self._acks.pop(info.mid)

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

    def close(self) -> None:
        try:
            if not self.disconnected.is_set():
                self.c.disconnect()
                self.disconnected.wait(WAIT)
            self.c.loop_stop()
        except Exception:
            pass


@pytest.fixture
def clients():
    opened: list[Mq5] = []

    def open_client(endpoint, client_id) -> Mq5:
        m = Mq5(endpoint, client_id)
        opened.append(m)
        return m

    try:
        yield open_client
    finally:
        for m in opened:
            m.close()


def bound_queue(ch, key: str) -> str:
    q = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(queue=q, exchange="amq.topic", routing_key=key)
    return q


def publish_properties(**kw) -> Properties:
    p = Properties(PacketTypes.PUBLISH)
    for name, value in kw.items():
        setattr(p, name, value)
    return p


def test_v5_publish_properties_reach_pika_consumer(broker, connections, clients, uniq):
    conn = connections.open()
    ch = conn.channel()
    q = bound_queue(ch, f"py5.{uniq}.#")
    dev = clients(broker, f"py5-pub-{uniq}")

    props = publish_properties(
        ContentType="application/json",
        ResponseTopic=f"py5/{uniq}/reply",
        CorrelationData=b"corr-1",
        UserProperty=[("site", "north"), ("tag", "a"), ("tag", "b")],
        MessageExpiryInterval=120,
        PayloadFormatIndicator=1,
    )
    rc = dev.publish(f"py5/{uniq}/data", b'{"t": 21}', 1, props)
    assert rc.value == 0, f"PUBACK reason {rc}"
    binary = bytes([0, 0xFF, 0x10, 0x80])
    dev.publish(f"py5/{uniq}/bin", b"b", 1, publish_properties(CorrelationData=binary))

    first, second = consume(conn, ch, q, 2, timeout=WAIT)
    assert first.method.routing_key == f"py5.{uniq}.data"
    assert first.body == b'{"t": 21}'
    p = first.properties
    assert p.content_type == "application/json"
    assert p.reply_to == f"py5/{uniq}/reply"
    assert p.correlation_id == "corr-1"
    assert p.expiration == "120000"
    assert p.delivery_mode == 2, "QoS 1 is persistent"
    assert p.headers["site"] == "north"
    assert p.headers["tag"] == ["a", "b"], p.headers
    assert p.headers["x-mqtt-client-id"] == f"py5-pub-{uniq}"
    assert p.headers["x-mqtt-payload-format"] == 1

    # Correlation data that is not UTF-8 travels as a byte-array header.
    assert second.method.routing_key == f"py5.{uniq}.bin"
    assert second.properties.correlation_id is None
    assert bytes(second.properties.headers["x-mqtt-correlation-data"]) == binary


def _answer_requests(conn, ch, q: str, count: int, echo_header: bool) -> list:
    """An AMQP responder: for each request, publish an answer to the request's
    response topic (as a routing key) with its correlation id."""
    answered = []
    for d in consume(conn, ch, q, count, timeout=WAIT):
        req = d.properties
        assert req.reply_to, f"request without response topic: {req}"
        headers = {"answered-by": "pika"}
        if echo_header and req.headers and "x-mqtt-correlation-data" in req.headers:
            headers["x-mqtt-correlation-data"] = req.headers["x-mqtt-correlation-data"]
        ch.basic_publish(
            exchange="amq.topic",
            routing_key=req.reply_to.replace("/", "."),
            body=b"answer to " + d.body,
            properties=pika.BasicProperties(
                correlation_id=req.correlation_id,
                content_type="text/plain",
                headers=headers,
                delivery_mode=2,
            ),
        )
        answered.append(d)
    return answered


def test_request_response_with_amqp_responder(broker, connections, clients, uniq):
    conn = connections.open()
    ch = conn.channel()
    q = bound_queue(ch, f"req.{uniq}")

    requester = clients(broker, f"py5-req-{uniq}")
    response_topic = f"resp/{uniq}/py5-req"
    requester.subscribe(response_topic, 1)
    for n in range(3):
        corr = f"req-{uniq}-{n}".encode()
        props = publish_properties(ResponseTopic=response_topic, CorrelationData=corr)
        requester.publish(f"req/{uniq}", f"question {n}".encode(), 1, props)

    answered = _answer_requests(conn, ch, q, 3, echo_header=False)
    assert [d.properties.correlation_id for d in answered] == [
        f"req-{uniq}-{n}" for n in range(3)
    ]

    for n in range(3):
        msg = requester.next_message()
        assert msg.topic == response_topic
        assert msg.payload == f"answer to question {n}".encode()
        assert msg.qos == 1
        mp = msg.properties
        assert mp.CorrelationData == f"req-{uniq}-{n}".encode()
        assert mp.ContentType == "text/plain"
        assert ("answered-by", "pika") in mp.UserProperty
    requester.assert_no_message()


def test_request_response_binary_correlation_echoed_as_header(
    broker, connections, clients, uniq
):
    """Binary correlation data reaches AMQP as the x-mqtt-correlation-data
    header; a responder that copies that header back gives the requester its
    correlation data unchanged."""
    conn = connections.open()
    ch = conn.channel()
    q = bound_queue(ch, f"breq.{uniq}")
    requester = clients(broker, f"py5-breq-{uniq}")
    response_topic = f"bresp/{uniq}"
    requester.subscribe(response_topic, 1)
    corr = bytes([0xDE, 0xAD, 0x00, 0xBE, 0xEF])
    props = publish_properties(ResponseTopic=response_topic, CorrelationData=corr)
    requester.publish(f"breq/{uniq}", b"q", 1, props)

    (req,) = _answer_requests(conn, ch, q, 1, echo_header=True)
    assert req.properties.correlation_id is None

    msg = requester.next_message()
    assert msg.payload == b"answer to q"
    assert msg.properties.CorrelationData == corr
    assert all(k != "x-mqtt-correlation-data" for k, _ in msg.properties.UserProperty)
