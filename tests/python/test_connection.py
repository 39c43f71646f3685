"""Connection-level behaviour: authentication, vhosts, heartbeats, framing,
channels and consumer flow control."""

from __future__ import annotations

import time

import pika
import pytest

from helpers import consume, process_until, pump


def test_wrong_password_is_refused(broker):
    params = pika.ConnectionParameters(
        host=broker.host,
        port=broker.port,
        credentials=pika.PlainCredentials("guest", "not-the-password"),
        connection_attempts=1,
        socket_timeout=10,
        stack_timeout=20,
    )
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as exc:
        pika.BlockingConnection(params)
    assert "403" in str(exc.value) or "ACCESS_REFUSED" in str(exc.value), exc.value


def test_unknown_vhost_is_refused(broker):
    params = pika.ConnectionParameters(
        host=broker.host,
        port=broker.port,
        virtual_host="no-such-vhost",
        credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1,
        socket_timeout=10,
        stack_timeout=20,
    )
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as exc:
        pika.BlockingConnection(params)
    assert "530" in str(exc.value) or "NOT_ALLOWED" in str(exc.value), exc.value


def test_heartbeats_keep_idle_connection_alive(broker):
    # With a 1 s heartbeat pika drops the connection if it hears nothing from
    # the broker for a few intervals; so staying open for 5 s of silence means
    # the broker sends heartbeats (and accepts ours).
    conn = broker.connect(heartbeat=1)
    try:
        ch = conn.channel()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.2)
        assert conn.is_open
        ok = ch.queue_declare(queue="", exclusive=True)
        assert ok.method.queue
    finally:
        if conn.is_open:
            conn.close()


def test_large_messages_span_frames(connections, uniq):
    conn = connections.open()
    ch = conn.channel()
    ch.confirm_delivery()
    queue = f"large-{uniq}"
    ch.queue_declare(queue=queue, exclusive=True)
    bodies = [
        bytes((i * 7 + n) % 251 for i in range(size))
        for n, size in enumerate([131_072 - 8, 131_072, 131_073, 1 << 20, 5 << 20])
    ]
    for body in bodies:
        ch.basic_publish(exchange="", routing_key=queue, body=body)
    got = consume(conn, ch, queue, len(bodies), timeout=30)
    assert [len(d.body) for d in got] == [len(b) for b in bodies]
    assert [d.body for d in got] == bodies


def test_many_channels(connections, uniq):
    conn = connections.open()
    channels = [conn.channel() for _ in range(64)]
    numbers = [ch.channel_number for ch in channels]
    assert len(set(numbers)) == 64
    for i, ch in enumerate(channels):
        ch.queue_declare(queue=f"chan-{uniq}-{i}", exclusive=True)
        ch.basic_publish(exchange="", routing_key=f"chan-{uniq}-{i}", body=str(i))
    # Close half, the rest keep working.
    for ch in channels[::2]:
        ch.close()
    for i, ch in enumerate(channels):
        if i % 2:
            _m, _p, body = ch.basic_get(queue=f"chan-{uniq}-{i}", auto_ack=True)
            assert body == str(i).encode()


def test_prefetch_and_multiple_ack(connections, uniq):
    conn = connections.open()
    ch = conn.channel()
    queue = f"qos-{uniq}"
    ch.queue_declare(queue=queue, exclusive=True)
    pub = connections.open().channel()
    pub.confirm_delivery()
    for i in range(25):
        pub.basic_publish(exchange="", routing_key=queue, body=f"{i:02d}".encode())

    ch.basic_qos(prefetch_count=10)
    got = []
    tag = ch.basic_consume(
        queue=queue, on_message_callback=lambda c, m, p, b: got.append((m, b))
    )
    process_until(conn, lambda: len(got) >= 10, what="first 10 deliveries")
    pump([conn], 0.3)
    assert len(got) == 10, "prefetch_count=10 allows 10 unacked deliveries"

    # Ack the first 5 with one multiple-ack: 5 more arrive.
    ch.basic_ack(delivery_tag=got[4][0].delivery_tag, multiple=True)
    process_until(conn, lambda: len(got) >= 15, what="5 more deliveries")
    pump([conn], 0.3)
    assert len(got) == 15

    # Ack everything so far: the last 10 arrive.
    ch.basic_ack(delivery_tag=got[-1][0].delivery_tag, multiple=True)
    process_until(conn, lambda: len(got) >= 25, what="the rest")
    ch.basic_ack(delivery_tag=got[-1][0].delivery_tag, multiple=True)
    assert [b for _, b in got] == [f"{i:02d}".encode() for i in range(25)]
    tags = [m.delivery_tag for m, _ in got]
    assert tags == sorted(tags) and len(set(tags)) == 25, "delivery tags increase per channel"

    # Nothing is left (all acked), not even after the consumer is cancelled.
    ch.basic_cancel(tag)
    ok = ch.queue_declare(queue=queue, passive=True)
    assert ok.method.message_count == 0
