"""Persistence across a graceful restart and across SIGKILL.

These tests start their own broker (fixture `own_broker`) on a private data
dir, and restart or kill it; they are skipped under SWITCHYARD_EXTERNAL.
"""

from __future__ import annotations

import threading
import time

import pika
import pytest

from helpers import Worker, consume, get_all, join, wait_for

PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)


def passive(conn, queue, durable=True):
    ch = conn.channel()
    try:
        return ch.queue_declare(queue=queue, durable=durable, passive=True).method
    finally:
        ch.close()


def test_500_persistent_messages_survive_restart(own_broker, connections):
    queue = "durable-500"
    n = 500
    bodies = [f"persistent-{i:04d}".encode() for i in range(n)]

    conn = connections.open(own_broker.endpoint)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue=queue, durable=True)
    for i, body in enumerate(bodies):
        props = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=str(i),
            headers={"seq": i},
        )
        ch.basic_publish(exchange="", routing_key=queue, body=body, properties=props)
    assert passive(conn, queue).message_count == n
    conn.close()

    endpoint = own_broker.restart()
    conn = connections.open(endpoint)
    assert passive(conn, queue).message_count == n, "message count after restart"
    ch = conn.channel()
    ch.basic_qos(prefetch_count=100)
    got = consume(conn, ch, queue, n, timeout=30, auto_ack=False)
    assert [d.body for d in got] == bodies, "exactly the 500 messages, in publish order"
    for i, d in enumerate(got):
        assert d.properties.delivery_mode == 2
        assert d.properties.message_id == str(i)
        assert d.properties.headers == {"seq": i}
    # Nothing beyond them.
    assert ch.basic_get(queue=queue) == (None, None, None)
    assert passive(conn, queue).message_count == 0
    conn.close()

    # The acks were durable too: after another restart the queue is empty.
    endpoint = own_broker.restart()
    conn = connections.open(endpoint)
    m = passive(conn, queue)
    assert (m.message_count, m.consumer_count) == (0, 0), "acked messages came back"


def test_topology_survives_restart(own_broker, connections):
    conn = connections.open(own_broker.endpoint)
    ch = conn.channel()
    ch.exchange_declare(exchange="dx", exchange_type="direct", durable=True)
    ch.exchange_declare(exchange="tx", exchange_type="topic", durable=True)
    ch.queue_declare(queue="dq", durable=True)
    ch.queue_bind(queue="dq", exchange="dx", routing_key="k1")
    ch.queue_bind(queue="dq", exchange="tx", routing_key="a.*.c")
    ch.queue_declare(queue="transient-q", durable=False)
    ch.exchange_declare(exchange="transient-x", exchange_type="fanout", durable=False)
    conn.close()

    endpoint = own_broker.restart()
    conn = connections.open(endpoint)
    ch = conn.channel()
    ch.confirm_delivery()
    # Durable exchanges, queue and bindings are back (a passive declare checks
    # existence; a non-passive one with the same arguments must not 406).
    ch.exchange_declare(exchange="dx", exchange_type="direct", durable=True, passive=True)
    ch.exchange_declare(exchange="tx", exchange_type="topic", durable=True)
    ch.queue_declare(queue="dq", durable=True)
    ch.basic_publish(exchange="dx", routing_key="k1", body=b"via dx", mandatory=True)
    ch.basic_publish(exchange="tx", routing_key="a.b.c", body=b"via tx", mandatory=True)
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish(exchange="dx", routing_key="k2", body=b"x", mandatory=True)
    assert get_all(ch, "dq") == [b"via dx", b"via tx"]

    # Transient entities are gone.
    for declare in (
        lambda c: c.queue_declare(queue="transient-q", passive=True),
        lambda c: c.exchange_declare(exchange="transient-x", passive=True),
    ):
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            declare(conn.channel())
        assert exc.value.reply_code == 404


def test_unacked_messages_survive_restart(own_broker, connections):
    queue = "unacked"
    bodies = [f"u{i}".encode() for i in range(10)]
    conn = connections.open(own_broker.endpoint)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue=queue, durable=True)
    for body in bodies:
        ch.basic_publish(exchange="", routing_key=queue, body=body, properties=PERSISTENT)
    taken = []
    for _ in range(5):
        method, _props, body = ch.basic_get(queue=queue, auto_ack=False)
        taken.append(body)
    assert taken == bodies[:5]
    # Restart with the deliveries still unacked (the client connection is
    # still open when SIGTERM arrives).
    endpoint = own_broker.restart()

    conn = connections.open(endpoint)
    ch = conn.channel()
    assert passive(conn, queue).message_count == 10
    assert get_all(ch, queue) == bodies


def test_sigkill_mid_publish_keeps_confirmed_messages(own_broker, connections):
    queue = "crash"
    min_confirmed = 300
    confirmed: list[int] = []
    outcome: dict[str, BaseException] = {}
    stop = threading.Event()
    endpoint = own_broker.endpoint

    conn = connections.open(endpoint)
    conn.channel().queue_declare(queue=queue, durable=True)
    conn.close()

    def publish() -> None:
        pconn = endpoint.connect()
        ch = pconn.channel()
        ch.confirm_delivery()
        i = 0
        try:
            while not stop.is_set() and i < 1_000_000:
                # Returns only once the broker confirmed the message.
                ch.basic_publish(
                    exchange="",
                    routing_key=queue,
                    body=f"crash-{i:07d}".encode(),
                    properties=PERSISTENT,
                )
                confirmed.append(i)
                i += 1
        except (pika.exceptions.AMQPError, OSError) as exc:
            outcome["error"] = exc

    publisher = Worker("publisher", publish)
    publisher.start()
    try:
        wait_for(
            lambda: len(confirmed) >= min_confirmed or not publisher.is_alive(),
            timeout=60,
            what=f"{min_confirmed} confirmed publishes",
        )
        publisher.check()
        assert publisher.is_alive(), f"publisher stopped early: {outcome}"
        own_broker.kill()  # SIGKILL while the publisher is still going
        join(publisher, 30)
    finally:
        stop.set()
        join(publisher, 30)
    publisher.check()
    assert "error" in outcome, "publisher never noticed the broker died"
    n_confirmed = len(confirmed)
    assert n_confirmed >= min_confirmed

    endpoint = own_broker.start()
    conn = connections.open(endpoint)
    ch = conn.channel()
    bodies = get_all(ch, queue)
    indices = [int(b.split(b"-")[1]) for b in bodies]
    # Every confirmed message is there, once, in order.  At most the one
    # publish that was in flight at the kill may be there too.
    assert indices[:n_confirmed] == list(range(n_confirmed)), (
        f"confirmed {n_confirmed}, recovered {len(indices)}; first missing/odd index: "
        f"{next((k for k, v in enumerate(indices) if k != v), None)}"
    )
    assert indices in (list(range(n_confirmed)), list(range(n_confirmed + 1))), (
        f"unexpected extra messages after the confirmed ones: {indices[n_confirmed:][:10]}"
    )

    # And the broker works normally after recovery.
    ch.confirm_delivery()
    ch.basic_publish(exchange="", routing_key=queue, body=b"after", properties=PERSISTENT)
    assert get_all(ch, queue) == [b"after"]


def test_repeated_crashes(own_broker, connections):
    """Three SIGKILL/recover cycles, each adding to the same durable queue."""
    queue = "crash-cycles"
    expected: list[bytes] = []
    endpoint = own_broker.endpoint
    for cycle in range(3):
        conn = connections.open(endpoint)
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(queue=queue, durable=True)
        for i in range(50):
            body = f"c{cycle}-{i:02d}".encode()
            ch.basic_publish(exchange="", routing_key=queue, body=body, properties=PERSISTENT)
            expected.append(body)
        own_broker.kill()
        time.sleep(0.1)
        endpoint = own_broker.start()
    conn = connections.open(endpoint)
    assert passive(conn, queue).message_count == len(expected)
    assert get_all(conn.channel(), queue) == expected
