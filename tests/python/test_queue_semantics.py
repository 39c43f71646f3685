"""Queue arguments as applications use them: dead-letter retry loops, x-death as
pika decodes it, reject-publish overflow seen by a confirming publisher, and a
kombu priority queue.

Expectations follow RabbitMQ's guides ("Dead Letter Exchanges", "Queue Length
Limit", "Time-To-Live and Expiration", "Classic Queues Support Priorities").
Every wait is bounded; every name carries the test's unique suffix.
"""

from __future__ import annotations

import datetime
import socket
import time

import kombu
import pika
import pytest

from helpers import get_all, process_until, pump, wait_get

DEADLINE_S = 5.0


def death_entry(props, queue: str, reason: str) -> dict:
    """The x-death entry for {queue, reason}; fails if there is none."""
    deaths = (props.headers or {}).get("x-death")
    assert isinstance(deaths, list), f"x-death must be an array: {props.headers!r}"
    matches = [d for d in deaths if d.get("queue") == queue and d.get("reason") == reason]
    assert len(matches) == 1, f"one x-death entry for {queue}/{reason} expected: {deaths!r}"
    return matches[0]


def test_retry_loop_x_death_count_grows(connections, uniq):
    """work --reject--> retry exchange --> wait queue (TTL) --> back to work.

    The consumer reads how often the message was rejected from x-death and
    parks it after three failures: the count seen must grow 0, 1, 2, 3, and
    the last delivery carries one entry per {queue, reason}, each counted 3."""
    conn = connections.open()
    ch = conn.channel()
    ch.confirm_delivery()
    jobs = f"jobs-{uniq}"
    retry = f"retry-{uniq}"
    work = f"work-{uniq}"
    wait = f"wait-{uniq}"
    parking = f"parking-{uniq}"
    ch.exchange_declare(exchange=jobs, exchange_type="direct", auto_delete=True)
    ch.exchange_declare(exchange=retry, exchange_type="fanout", auto_delete=True)
    ch.queue_declare(
        queue=work, exclusive=True, arguments={"x-dead-letter-exchange": retry}
    )
    ch.queue_bind(queue=work, exchange=jobs, routing_key="job")
    ch.queue_declare(
        queue=wait,
        exclusive=True,
        arguments={"x-message-ttl": 100, "x-dead-letter-exchange": jobs},
    )
    ch.queue_bind(queue=wait, exchange=retry, routing_key="")
    ch.queue_declare(queue=parking, exclusive=True)

    seen: list[int] = []
    last_props: list[pika.BasicProperties] = []
    max_retries = 3

    def on_message(chan, method, props, body):
        headers = props.headers or {}
        rejected = 0
        if "x-death" in headers:
            rejected = death_entry(props, work, "rejected")["count"]
        seen.append(rejected)
        last_props[:] = [props]
        if rejected < max_retries:
            chan.basic_reject(delivery_tag=method.delivery_tag, requeue=False)
        else:
            # Give up: park it for a human, then ack.
            chan.basic_publish(
                exchange="",
                routing_key=parking,
                body=body,
                properties=pika.BasicProperties(
                    message_id=props.message_id, headers={"retries": rejected}
                ),
            )
            chan.basic_ack(delivery_tag=method.delivery_tag)

    consumer_ch = conn.channel()
    consumer_ch.basic_consume(queue=work, on_message_callback=on_message)
    ch.basic_publish(
        exchange=jobs,
        routing_key="job",
        body=b"flaky",
        properties=pika.BasicProperties(message_id=f"job-{uniq}"),
    )
    process_until(conn, lambda: len(seen) >= max_retries + 1, what="four deliveries")
    assert seen == [0, 1, 2, 3]

    # The last delivery's x-death: one entry per {queue, reason}, each
    # counted three times, the most recent (the wait queue's expiry) first.
    props = last_props[0]
    rejected = death_entry(props, work, "rejected")
    expired = death_entry(props, wait, "expired")
    assert rejected["count"] == 3
    assert expired["count"] == 3
    assert rejected["exchange"] == jobs
    assert expired["exchange"] == retry
    assert rejected["routing-keys"] == ["job"]
    assert expired["routing-keys"] == ["job"]
    assert len(props.headers["x-death"]) == 2
    assert props.headers["x-death"][0]["queue"] == wait, "most recent entry first"
    assert props.headers["x-first-death-queue"] == work
    assert props.headers["x-first-death-reason"] == "rejected"
    assert props.headers["x-last-death-queue"] == wait
    assert props.headers["x-last-death-reason"] == "expired"

    _, parked, body = wait_get(ch, parking, DEADLINE_S)
    assert body == b"flaky"
    assert parked.message_id == f"job-{uniq}"
    assert parked.headers == {"retries": 3}
    # Nothing else goes round once it is parked.
    pump([conn], 0.5)
    assert len(seen) == max_retries + 1
    assert ch.basic_get(queue=wait) == (None, None, None)


def test_dead_letter_headers_decode_in_pika(connections, uniq):
    """A message rejected without requeue reaches the DLX's queue with the
    dead-letter routing key, and its x-death decodes to the types pika users
    rely on: count an int, time a datetime, routing-keys a list of str."""
    conn = connections.open()
    ch = conn.channel()
    ch.confirm_delivery()
    src = f"src-{uniq}"
    dlx = f"dlx-{uniq}"
    dlq = f"dlq-{uniq}"
    ch.exchange_declare(exchange=dlx, exchange_type="direct", auto_delete=True)
    ch.queue_declare(queue=dlq, exclusive=True)
    ch.queue_bind(queue=dlq, exchange=dlx, routing_key="dead")
    ch.queue_declare(
        queue=src,
        exclusive=True,
        arguments={"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dead"},
    )
    ch.basic_publish(
        exchange="",
        routing_key=src,
        body=b"bad input",
        properties=pika.BasicProperties(headers={"trace": "t-1"}),
    )
    method, _, body = ch.basic_get(queue=src, auto_ack=False)
    assert body == b"bad input"
    ch.basic_reject(delivery_tag=method.delivery_tag, requeue=False)

    method, props, body = wait_get(ch, dlq)
    assert body == b"bad input"
    assert method.exchange == dlx
    assert method.routing_key == "dead"
    assert props.headers["trace"] == "t-1"
    deaths = props.headers["x-death"]
    assert len(deaths) == 1, deaths
    death = deaths[0]
    assert death["queue"] == src
    assert death["reason"] == "rejected"
    assert death["exchange"] == ""
    assert death["routing-keys"] == [src]
    assert isinstance(death["count"], int) and not isinstance(death["count"], bool)
    assert death["count"] == 1
    assert isinstance(death["time"], datetime.datetime), death["time"]
    assert props.headers["x-first-death-queue"] == src
    assert props.headers["x-first-death-reason"] == "rejected"
    assert props.headers["x-first-death-exchange"] == ""
    assert props.headers["x-last-death-queue"] == src
    assert props.headers["x-last-death-reason"] == "rejected"
    assert props.headers["x-last-death-exchange"] == ""
    assert ch.basic_get(queue=src) == (None, None, None)


def test_reject_publish_overflow_nacks_publisher(connections, uniq):
    """x-max-length 2 with x-overflow reject-publish: a confirming publisher
    sees the third publish nacked (pika raises NackError), the queue keeps the
    first two, and the channel stays usable."""
    conn = connections.open()
    ch = conn.channel()
    ch.confirm_delivery()
    queue = f"bounded-{uniq}"
    ch.queue_declare(
        queue=queue,
        exclusive=True,
        arguments={"x-max-length": 2, "x-overflow": "reject-publish"},
    )
    ch.basic_publish(exchange="", routing_key=queue, body=b"m1")
    ch.basic_publish(exchange="", routing_key=queue, body=b"m2")
    with pytest.raises(pika.exceptions.NackError) as exc:
        ch.basic_publish(exchange="", routing_key=queue, body=b"m3")
    assert ch.is_open
    assert ch.queue_declare(queue=queue, passive=True).method.message_count == 2
    assert get_all(ch, queue) == [b"m1", b"m2"]
    # Room again: accepted.
    ch.basic_publish(exchange="", routing_key=queue, body=b"m4")
    assert get_all(ch, queue) == [b"m4"]


def test_kombu_priority_queue(broker, uniq):
    """kombu's Queue(max_priority=10) declares x-max-priority; messages
    published with priorities are consumed highest first, FIFO within a
    priority, no priority as 0 and above the maximum as the maximum."""
    url = f"amqp://guest:guest@{broker.host}:{broker.port}//"
    exchange = kombu.Exchange(f"prio-x-{uniq}", type="direct", auto_delete=True)
    queue = kombu.Queue(
        f"prio-{uniq}", exchange, routing_key="task", max_priority=10, auto_delete=True
    )
    published = [
        ("p1-a", 1),
        ("p5-a", 5),
        ("p9", 9),
        ("none-a", None),
        ("p200", 200),
        ("p5-b", 5),
        ("none-b", None),
        ("p1-b", 1),
    ]
    with kombu.Connection(url, connect_timeout=10) as conn:
        conn.ensure_connection(max_retries=1)
        producer = conn.Producer(serializer="json")
        for name, priority in published:
            # kombu sends priority 0 when none is given: the same as none.
            producer.publish(
                {"name": name},
                exchange=exchange,
                routing_key="task",
                declare=[queue],
                retry=False,
                priority=priority or 0,
            )
        # Confirms are off in kombu by default: wait (bounded) until the broker
        # holds all of them before consuming, so that none is dispatched before
        # the others are queued.
        deadline = time.monotonic() + DEADLINE_S
        while True:
            _, count, _ = queue(conn.default_channel).queue_declare(passive=True)
            if count == len(published):
                break
            assert time.monotonic() < deadline, f"only {count} messages queued"
            time.sleep(0.02)

        got: list[str] = []

        def on_message(body, message):
            got.append(body["name"])
            message.ack()

        with conn.Consumer(queue, callbacks=[on_message], accept=["json"], prefetch_count=1):
            deadline = time.monotonic() + DEADLINE_S * 2
            while len(got) < len(published):
                assert time.monotonic() < deadline, f"consumed only {got}"
                try:
                    conn.drain_events(timeout=0.2)
                except (socket.timeout, TimeoutError):
                    pass
    assert got == ["p200", "p9", "p5-a", "p5-b", "p1-a", "p1-b", "none-a", "none-b"]
