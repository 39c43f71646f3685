"""Publisher confirms, mandatory/returns, basic.get, properties, channel errors."""

from __future__ import annotations

import datetime
import decimal

import pika
import pytest

from helpers import get_all, process_until


def passive_count(conn, queue):
    ch = conn.channel()
    try:
        return ch.queue_declare(queue=queue, passive=True).method.message_count
    finally:
        ch.close()


# --------------------------------------------------------------------------
# Publisher confirms and mandatory
# --------------------------------------------------------------------------


def test_publisher_confirms_and_unroutable(connections, uniq):
    conn = connections.open()
    ch = conn.channel()
    ch.confirm_delivery()
    queue = f"confirms-{uniq}"
    ch.queue_declare(queue=queue, exclusive=True)

    # With confirms on, basic_publish returns only once the broker acked.
    for i in range(200):
        ch.basic_publish(exchange="", routing_key=queue, body=f"c{i}".encode())
    assert passive_count(conn, queue) == 200

    # Mandatory and routable: fine.
    ch.basic_publish(exchange="", routing_key=queue, body=b"routable", mandatory=True)

    # Mandatory and unroutable through the default exchange: returned (312 NO_ROUTE).
    missing = f"no-such-queue-{uniq}"
    with pytest.raises(pika.exceptions.UnroutableError) as exc:
        ch.basic_publish(exchange="", routing_key=missing, body=b"lost", mandatory=True)
    returned = exc.value.messages
    assert len(returned) == 1
    assert returned[0].body == b"lost"
    assert returned[0].method.reply_code == 312
    assert returned[0].method.exchange == ""
    assert returned[0].method.routing_key == missing

    # Same through a direct exchange without bindings.
    exchange = f"nobind-{uniq}"
    ch.exchange_declare(exchange=exchange, exchange_type="direct", auto_delete=True)
    with pytest.raises(pika.exceptions.UnroutableError) as exc:
        ch.basic_publish(exchange=exchange, routing_key="k", body=b"lost2", mandatory=True)
    assert [m.body for m in exc.value.messages] == [b"lost2"]
    assert exc.value.messages[0].method.exchange == exchange

    # Not mandatory and unroutable: silently dropped, still confirmed.
    ch.basic_publish(exchange=exchange, routing_key="k", body=b"dropped")
    ch.basic_publish(exchange="", routing_key=missing, body=b"dropped")

    # The channel is still usable and nothing unroutable leaked into the queue.
    ch.basic_publish(exchange="", routing_key=queue, body=b"last")
    bodies = get_all(ch, queue)
    assert bodies == [f"c{i}".encode() for i in range(200)] + [b"routable", b"last"]
    ch.exchange_delete(exchange=exchange)


def test_mandatory_return_without_confirms(connections, uniq):
    conn = connections.open()
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda c, method, props, body: returned.append((method, props, body)))
    ch.basic_publish(
        exchange="",
        routing_key=f"nowhere-{uniq}",
        body=b"bounce",
        properties=pika.BasicProperties(message_id="m-1"),
        mandatory=True,
    )
    process_until(conn, lambda: returned, what="basic.return")
    method, props, body = returned[0]
    assert method.reply_code == 312
    assert method.reply_text == "NO_ROUTE"
    assert body == b"bounce"
    assert props.message_id == "m-1"


def test_publish_to_missing_exchange_is_404(connections, uniq):
    conn = connections.open()
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        ch.basic_publish(exchange=f"missing-{uniq}", routing_key="k", body=b"x")
    assert exc.value.reply_code == 404
    assert ch.is_closed
    assert conn.is_open
    conn.channel().queue_declare(queue="", exclusive=True)


# --------------------------------------------------------------------------
# basic.get
# --------------------------------------------------------------------------


def test_basic_get(connections, uniq):
    conn = connections.open()
    ch = conn.channel()
    queue = f"get-{uniq}"
    ch.queue_declare(queue=queue, exclusive=True)

    # Empty queue: get-empty.
    assert ch.basic_get(queue=queue) == (None, None, None)

    for i in range(3):
        ch.basic_publish(exchange="", routing_key=queue, body=f"m{i}".encode())
    process_until(conn, lambda: passive_count(conn, queue) == 3, what="3 messages queued")

    method, props, body = ch.basic_get(queue=queue, auto_ack=True)
    assert body == b"m0"
    assert method.message_count == 2  # messages left after this one
    assert method.redelivered is False
    assert method.exchange == ""
    assert method.routing_key == queue

    # Manual ack: reject with requeue puts it back at the head, marked redelivered.
    method, _, body = ch.basic_get(queue=queue, auto_ack=False)
    assert body == b"m1"
    assert method.message_count == 1
    ch.basic_nack(delivery_tag=method.delivery_tag, requeue=True)
    method, _, body = ch.basic_get(queue=queue, auto_ack=False)
    assert body == b"m1"
    assert method.redelivered is True
    ch.basic_ack(delivery_tag=method.delivery_tag)

    # Reject without requeue drops it.
    method, _, body = ch.basic_get(queue=queue, auto_ack=False)
    assert body == b"m2"
    assert method.message_count == 0
    ch.basic_reject(delivery_tag=method.delivery_tag, requeue=False)
    assert ch.basic_get(queue=queue) == (None, None, None)
    assert passive_count(conn, queue) == 0

    # Unacked messages go back to the queue when their channel closes.
    ch.basic_publish(exchange="", routing_key=queue, body=b"m3")
    process_until(conn, lambda: passive_count(conn, queue) == 1, what="m3 queued")
    ch2 = conn.channel()
    method, _, body = ch2.basic_get(queue=queue, auto_ack=False)
    assert body == b"m3"
    ch2.close()
    method, _, body = ch.basic_get(queue=queue, auto_ack=True)
    assert body == b"m3"
    assert method.redelivered is True


def test_properties_and_headers_roundtrip(connections, uniq):
    conn = connections.open()
    ch = conn.channel()
    queue = f"props-{uniq}"
    ch.queue_declare(queue=queue, exclusive=True)
    headers = {
        "str": "text é",
        "int": 42,
        "neg": -7,
        "big": 2**40,
        "true": True,
        "false": False,
        "none": None,
        "bytes": b"\x00\x01raw",
        "decimal": decimal.Decimal("3.14"),
        "when": datetime.datetime(2024, 5, 17, 12, 30, 0, tzinfo=datetime.timezone.utc),
        "list": [1, "two", [3], {"four": 4}],
        "nested": {"k": "v", "deeper": {"n": 1}},
    }
    props = pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        headers=headers,
        delivery_mode=2,
        priority=5,
        correlation_id="corr-1",
        reply_to="reply-here",
        expiration="600000",
        message_id="msg-1",
        timestamp=1_700_000_000,
        type="example.type",
        app_id="pytest",
    )
    body = bytes(range(256)) * 40  # binary, > 8 KiB
    ch.basic_publish(exchange="", routing_key=queue, body=body, properties=props)
    ch.basic_publish(exchange="", routing_key=queue, body=b"")  # empty body
    # Same channel: the get is processed after both publishes.
    method, rprops, rbody = ch.basic_get(queue=queue, auto_ack=True)
    assert method is not None
    assert rbody == body
    assert rprops.headers == headers
    for attr in (
        "content_type",
        "content_encoding",
        "delivery_mode",
        "priority",
        "correlation_id",
        "reply_to",
        "expiration",
        "message_id",
        "timestamp",
        "type",
        "app_id",
    ):
        assert getattr(rprops, attr) == getattr(props, attr), attr
    method, rprops, rbody = ch.basic_get(queue=queue, auto_ack=True)
    assert method is not None and rbody == b""
    assert rprops.headers is None and rprops.content_type is None


# --------------------------------------------------------------------------
# Channel-level errors
# --------------------------------------------------------------------------


def test_redeclare_with_different_durable_is_406(connections, uniq):
    conn = connections.open()
    ch = conn.channel()
    queue = f"redeclare-{uniq}"
    ch.queue_declare(queue=queue, durable=True)
    # Same arguments again: fine.
    ch.queue_declare(queue=queue, durable=True)

    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        ch.queue_declare(queue=queue, durable=False)
    assert exc.value.reply_code == 406
    assert "PRECONDITION_FAILED" in exc.value.reply_text
    assert ch.is_closed
    # Only the channel is closed; the connection and the queue are fine.
    assert conn.is_open
    ch = conn.channel()
    ok = ch.queue_declare(queue=queue, durable=True, passive=True)
    assert ok.method.queue == queue

    # Exchanges too: a different type is a 406.
    exchange = f"redeclare-x-{uniq}"
    ch.exchange_declare(exchange=exchange, exchange_type="direct")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        ch.exchange_declare(exchange=exchange, exchange_type="fanout")
    assert exc.value.reply_code == 406

    ch = conn.channel()
    ch.exchange_delete(exchange=exchange)
    ch.queue_delete(queue=queue)


def test_passive_declare_of_missing_queue_is_404(connections, uniq):
    conn = connections.open()
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        ch.queue_declare(queue=f"missing-{uniq}", passive=True)
    assert exc.value.reply_code == 404
    assert conn.is_open


def test_purge_and_delete_report_counts(connections, uniq):
    conn = connections.open()
    ch = conn.channel()
    ch.confirm_delivery()
    queue = f"purge-{uniq}"
    ch.queue_declare(queue=queue)
    for i in range(7):
        ch.basic_publish(exchange="", routing_key=queue, body=str(i))
    assert ch.queue_purge(queue=queue).method.message_count == 7
    for i in range(4):
        ch.basic_publish(exchange="", routing_key=queue, body=str(i))
    assert ch.queue_delete(queue=queue).method.message_count == 4
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        conn.channel().queue_declare(queue=queue, passive=True)
    assert exc.value.reply_code == 404
