"""The six RabbitMQ tutorials (https://www.rabbitmq.com/tutorials), as tests.

Each tutorial is run as written for pika, with assertions on what every party
received.  Names carry a unique suffix so tests never interfere.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid

import pika
import pytest

from helpers import Worker, join, process_until, pump

SENTINEL = b"__end__"


def collect_until_sentinel(conn, ch, queues, timeout=15.0):
    """Consume from every queue until each one has delivered SENTINEL.

    The sentinel is published last, on the same channel, so (per-channel FIFO)
    everything routed to a queue before it has been delivered when it arrives:
    the returned lists are then exactly the queue's contents."""
    got = {q: [] for q in queues}
    done = set()

    def make_cb(q):
        def cb(_ch, _method, _props, body):
            assert q not in done, f"{q} got {body!r} after its sentinel"
            if body == SENTINEL:
                done.add(q)
            else:
                got[q].append(body)

        return cb

    tags = [
        ch.basic_consume(queue=q, on_message_callback=make_cb(q), auto_ack=True) for q in queues
    ]
    process_until(conn, lambda: len(done) == len(queues), timeout, "sentinels on all queues")
    for tag in tags:
        ch.basic_cancel(tag)
    return got


def publish_sentinels(ch, queues):
    for q in queues:
        ch.basic_publish(exchange="", routing_key=q, body=SENTINEL)


# --------------------------------------------------------------------------
# 1. Hello World
# --------------------------------------------------------------------------


def test_1_hello_world(connections, uniq):
    queue = f"hello-{uniq}"

    # send.py
    sender = connections.open()
    sch = sender.channel()
    sch.queue_declare(queue=queue)
    sch.basic_publish(exchange="", routing_key=queue, body="Hello World!")
    sender.close()

    # receive.py
    receiver = connections.open()
    rch = receiver.channel()
    ok = rch.queue_declare(queue=queue)
    assert ok.method.queue == queue
    received = []

    def callback(ch, method, properties, body):
        received.append((method, body))

    rch.basic_consume(queue=queue, on_message_callback=callback, auto_ack=True)
    process_until(receiver, lambda: received, what="Hello World!")
    pump([receiver], 0.2)

    assert len(received) == 1
    method, body = received[0]
    assert body == b"Hello World!"
    assert method.exchange == ""
    assert method.routing_key == queue
    assert method.redelivered is False
    rch.queue_delete(queue=queue)


# --------------------------------------------------------------------------
# 2. Work queues: durable queue, persistent messages, manual ack, fair dispatch
# --------------------------------------------------------------------------


def test_2_work_queues_fair_dispatch(broker, connections, uniq):
    queue = f"task_queue-{uniq}"
    n_tasks = 30
    delays = {"fast": 0.01, "slow": 0.3}

    setup = connections.open()
    sch = setup.channel()
    ok = sch.queue_declare(queue=queue, durable=True)
    assert ok.method.message_count == 0

    lock = threading.Lock()
    processed: dict[str, list[bytes]] = {name: [] for name in delays}
    delivery_modes: list[int] = []
    ready = {name: threading.Event() for name in delays}
    stop = threading.Event()

    def run_worker(name: str) -> None:
        conn = broker.connect()
        try:
            ch = conn.channel()
            ch.queue_declare(queue=queue, durable=True)
            ch.basic_qos(prefetch_count=1)

            def callback(chan, method, properties, body):
                time.sleep(delays[name])  # "work"
                with lock:
                    processed[name].append(body)
                    delivery_modes.append(properties.delivery_mode)
                chan.basic_ack(delivery_tag=method.delivery_tag)

            ch.basic_consume(queue=queue, on_message_callback=callback)
            ready[name].set()
            deadline = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < deadline:
                conn.process_data_events(time_limit=0.05)
        finally:
            if conn.is_open:
                conn.close()

    workers = [Worker(f"worker-{name}", lambda name=name: run_worker(name)) for name in delays]
    for w in workers:
        w.start()
    try:
        for name, ev in ready.items():
            assert ev.wait(15), f"worker {name} did not start consuming"

        # new_task.py
        tasks = [f"task {i:02d}".encode() for i in range(n_tasks)]
        for body in tasks:
            sch.basic_publish(
                exchange="",
                routing_key=queue,
                body=body,
                properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
            )

        def total():
            with lock:
                return sum(len(v) for v in processed.values())

        deadline = time.monotonic() + 30
        while total() < n_tasks and time.monotonic() < deadline:
            setup.process_data_events(time_limit=0.05)
            for w in workers:
                w.check()
        assert total() >= n_tasks, f"only {total()} of {n_tasks} tasks processed in 30s"
        time.sleep(0.5)  # let any duplicate delivery show up
    finally:
        stop.set()
        for w in workers:
            join(w, 15)
    for w in workers:
        w.check()

    everything = processed["fast"] + processed["slow"]
    dupes = [b for b, c in collections.Counter(everything).items() if c > 1]
    assert not dupes, f"tasks processed more than once: {dupes}"
    assert sorted(everything) == sorted(tasks), "every task processed exactly once"
    assert set(delivery_modes) == {2}, "messages keep delivery_mode=2 (persistent)"
    # Fair dispatch: with prefetch_count=1 the slow worker only gets a new task
    # when it has acked its previous one, so the fast worker does most of the
    # work.  (Round-robin without prefetch would split them 15/15.)
    fast, slow = len(processed["fast"]), len(processed["slow"])
    assert fast > slow, f"fast worker processed {fast}, slow worker {slow}"
    assert slow < n_tasks // 3, f"slow worker got {slow} of {n_tasks}: prefetch not honoured?"
    # Each worker processes its own tasks in queue order.
    for name, bodies in processed.items():
        assert bodies == sorted(bodies), f"{name} saw tasks out of order: {bodies}"

    # All acked: nothing left, no consumers.
    def queue_state():
        ok = sch.queue_declare(queue=queue, durable=True, passive=True)
        return ok.method.message_count, ok.method.consumer_count

    deadline = time.monotonic() + 10
    while queue_state() != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert queue_state() == (0, 0)
    sch.queue_delete(queue=queue)


# --------------------------------------------------------------------------
# 3. Publish/Subscribe: fanout exchange, exclusive server-named queues
# --------------------------------------------------------------------------


def test_3_publish_subscribe(connections, uniq):
    exchange = f"logs-{uniq}"
    n_subscribers, n_msgs = 3, 20

    emitter = connections.open()
    ech = emitter.channel()
    ech.exchange_declare(exchange=exchange, exchange_type="fanout")
    # No queue bound yet: a fanout exchange drops this.
    ech.basic_publish(exchange=exchange, routing_key="", body=b"nobody hears this")
    # Synchronous round trip so the drop has happened before anyone binds.
    ech.exchange_declare(exchange=exchange, exchange_type="fanout", passive=True)

    subs = []
    for _ in range(n_subscribers):
        conn = connections.open()
        ch = conn.channel()
        ok = ch.queue_declare(queue="", exclusive=True)
        qname = ok.method.queue
        ch.queue_bind(exchange=exchange, queue=qname)
        got: list[bytes] = []
        ch.basic_consume(
            queue=qname, on_message_callback=lambda c, m, p, b, got=got: got.append(b), auto_ack=True
        )
        subs.append((conn, ch, qname, got))

    names = [s[2] for s in subs]
    assert all(names), f"server-named queues must have names: {names}"
    assert len(set(names)) == n_subscribers, f"server-named queues must differ: {names}"

    # emit_log.py
    msgs = [f"log line {i}".encode() for i in range(n_msgs)]
    for body in msgs:
        ech.basic_publish(exchange=exchange, routing_key="", body=body)
    for conn, _ch, qname, got in subs:
        process_until(conn, lambda got=got: len(got) >= n_msgs, what=f"{n_msgs} logs on {qname}")
    pump([s[0] for s in subs], 0.3)
    for _conn, _ch, qname, got in subs:
        assert got == msgs, f"subscriber {qname} received {got}"

    # Exclusive: another connection may not use the queue (405 RESOURCE_LOCKED).
    other = connections.open()
    och = other.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
        och.queue_declare(queue=names[0], passive=True)
    assert exc.value.reply_code == 405

    # Exclusive queues go away with their connection.
    subs[0][0].close()
    deadline = time.monotonic() + 10
    while True:
        och = other.channel()
        try:
            och.queue_declare(queue=names[0], passive=True)
        except pika.exceptions.ChannelClosedByBroker as e:
            if e.reply_code == 404:
                break
            raise
        assert time.monotonic() < deadline, "exclusive queue outlived its connection"
        time.sleep(0.05)
    # ... and the other subscribers still work.
    ech.basic_publish(exchange=exchange, routing_key="", body=b"after one left")
    for conn, _ch, _qname, got in subs[1:]:
        process_until(conn, lambda got=got: got[-1:] == [b"after one left"], what="late log")
    ech.exchange_delete(exchange=exchange)


def test_3b_server_named_queue_convention(connections):
    """RabbitMQ names server-named queues "amq.gen-..."; clients sometimes rely on it."""
    conn = connections.open()
    ch = conn.channel()
    ok = ch.queue_declare(queue="", exclusive=True)
    assert ok.method.queue.startswith("amq.gen-"), ok.method.queue


# --------------------------------------------------------------------------
# 4. Routing: direct exchange, multiple bindings
# --------------------------------------------------------------------------


def test_4_routing_direct(connections, uniq):
    exchange = f"direct_logs-{uniq}"
    conn = connections.open()
    ch = conn.channel()
    ch.exchange_declare(exchange=exchange, exchange_type="direct")

    bindings = {
        f"errors-{uniq}": ["error"],
        f"all-{uniq}": ["info", "warning", "error"],
        # Two queues bound with the same key both get the message.
        f"black1-{uniq}": ["black"],
        f"black2-{uniq}": ["black", "green"],
    }
    for q, keys in bindings.items():
        ch.queue_declare(queue=q, exclusive=True)
        for key in keys:
            ch.queue_bind(exchange=exchange, queue=q, routing_key=key)
    # Binding the same key twice is idempotent (still one copy per message).
    ch.queue_bind(exchange=exchange, queue=f"errors-{uniq}", routing_key="error")

    # emit_log_direct.py
    pub = connections.open()
    pch = pub.channel()
    sent = [
        ("info", b"i1"),
        ("warning", b"w1"),
        ("error", b"e1"),
        ("debug", b"d1"),  # no binding: dropped
        ("black", b"b1"),
        ("green", b"g1"),
        ("info", b"i2"),
        ("error", b"e2"),
        ("ERROR", b"E3"),  # keys are case-sensitive: dropped
    ]
    for key, body in sent:
        pch.basic_publish(exchange=exchange, routing_key=key, body=body)
    publish_sentinels(pch, list(bindings))

    got = collect_until_sentinel(conn, ch, list(bindings))
    assert got[f"errors-{uniq}"] == [b"e1", b"e2"]
    assert got[f"all-{uniq}"] == [b"i1", b"w1", b"e1", b"i2", b"e2"]
    assert got[f"black1-{uniq}"] == [b"b1"]
    assert got[f"black2-{uniq}"] == [b"b1", b"g1"]

    # Unbinding stops the flow.
    ch.queue_unbind(exchange=exchange, queue=f"all-{uniq}", routing_key="error")
    pch.basic_publish(exchange=exchange, routing_key="error", body=b"e4")
    pch.basic_publish(exchange=exchange, routing_key="info", body=b"i4")
    publish_sentinels(pch, [f"all-{uniq}", f"errors-{uniq}"])
    got = collect_until_sentinel(conn, ch, [f"all-{uniq}", f"errors-{uniq}"])
    assert got[f"all-{uniq}"] == [b"i4"]
    assert got[f"errors-{uniq}"] == [b"e4"]
    pch.exchange_delete(exchange=exchange)


# --------------------------------------------------------------------------
# 5. Topics: '*' matches one word, '#' zero or more
# --------------------------------------------------------------------------


def test_5_topics(connections, uniq):
    exchange = f"topic_logs-{uniq}"
    conn = connections.open()
    ch = conn.channel()
    ch.exchange_declare(exchange=exchange, exchange_type="topic")

    bindings = {
        "Q1": ["*.orange.*"],
        "Q2": ["*.*.rabbit", "lazy.#"],
        "Q3": ["#"],
        "Q4": ["*"],
        "Q5": ["#.rabbit"],
    }
    qname = {q: f"{q}-{uniq}" for q in bindings}
    for q, keys in bindings.items():
        ch.queue_declare(queue=qname[q], exclusive=True)
        for key in keys:
            ch.queue_bind(exchange=exchange, queue=qname[q], routing_key=key)

    keys = [
        "quick.orange.rabbit",
        "lazy.orange.elephant",
        "quick.orange.fox",
        "lazy.brown.fox",
        "lazy.pink.rabbit",  # matches both Q2 bindings: delivered once
        "quick.brown.fox",
        "orange",
        "quick.orange.male.rabbit",
        "lazy.orange.male.rabbit",
        "lazy",
        "rabbit",
    ]
    expected = {
        "Q1": ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"],
        "Q2": [
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "lazy.brown.fox",
            "lazy.pink.rabbit",
            "lazy.orange.male.rabbit",
            "lazy",
        ],
        "Q3": keys,
        "Q4": ["orange", "lazy", "rabbit"],
        "Q5": [
            "quick.orange.rabbit",
            "lazy.pink.rabbit",
            "quick.orange.male.rabbit",
            "lazy.orange.male.rabbit",
            "rabbit",
        ],
    }

    # emit_log_topic.py (body = routing key)
    pub = connections.open()
    pch = pub.channel()
    for key in keys:
        pch.basic_publish(exchange=exchange, routing_key=key, body=key.encode())
    publish_sentinels(pch, list(qname.values()))

    got = collect_until_sentinel(conn, ch, list(qname.values()))
    for q in bindings:
        assert [b.decode() for b in got[qname[q]]] == expected[q], f"{q} bound to {bindings[q]}"
    pch.exchange_delete(exchange=exchange)


# --------------------------------------------------------------------------
# 6. RPC: reply_to + correlation_id
# --------------------------------------------------------------------------


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def test_6_rpc(broker, connections, uniq):
    rpc_queue = f"rpc_queue-{uniq}"
    setup = connections.open()
    setup.channel().queue_declare(queue=rpc_queue)

    served = []
    server_ready = threading.Event()
    stop = threading.Event()

    # rpc_server.py
    def serve() -> None:
        conn = broker.connect()
        try:
            ch = conn.channel()
            ch.queue_declare(queue=rpc_queue)
            ch.basic_qos(prefetch_count=1)

            def on_request(chan, method, props, body):
                n = int(body)
                served.append(n)
                chan.basic_publish(
                    exchange="",
                    routing_key=props.reply_to,
                    properties=pika.BasicProperties(correlation_id=props.correlation_id),
                    body=str(fib(n)),
                )
                chan.basic_ack(delivery_tag=method.delivery_tag)

            ch.basic_consume(queue=rpc_queue, on_message_callback=on_request)
            server_ready.set()
            deadline = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < deadline:
                conn.process_data_events(time_limit=0.05)
        finally:
            if conn.is_open:
                conn.close()

    server = Worker("rpc-server", serve)
    server.start()

    # rpc_client.py, twice, with several calls in flight per client.
    class FibonacciRpcClient:
        def __init__(self):
            self.connection = connections.open()
            self.channel = self.connection.channel()
            result = self.channel.queue_declare(queue="", exclusive=True)
            self.callback_queue = result.method.queue
            self.channel.basic_consume(
                queue=self.callback_queue, on_message_callback=self.on_response, auto_ack=True
            )
            self.pending: dict[str, int] = {}
            self.answers: dict[str, int] = {}
            self.stray: list = []

        def on_response(self, ch, method, props, body):
            if props.correlation_id in self.pending and props.correlation_id not in self.answers:
                self.answers[props.correlation_id] = int(body)
            else:
                self.stray.append((props.correlation_id, body))

        def call(self, n: int) -> str:
            corr_id = str(uuid.uuid4())
            self.pending[corr_id] = n
            self.channel.basic_publish(
                exchange="",
                routing_key=rpc_queue,
                properties=pika.BasicProperties(
                    reply_to=self.callback_queue, correlation_id=corr_id
                ),
                body=str(n),
            )
            return corr_id

        def done(self):
            return len(self.answers) == len(self.pending)

    try:
        assert server_ready.wait(15), "RPC server did not start"
        clients = [FibonacciRpcClient(), FibonacciRpcClient()]
        assert clients[0].callback_queue != clients[1].callback_queue
        requests = [[0, 1, 2, 10, 30, 90], [3, 5, 20, 50, 64]]
        for client, ns in zip(clients, requests):
            for n in ns:
                client.call(n)
        for client in clients:
            process_until(client.connection, client.done, 20, "RPC answers")
        pump([c.connection for c in clients], 0.2)
        server.check()
    finally:
        stop.set()
        join(server, 15)
    server.check()

    for client, ns in zip(clients, requests):
        assert client.stray == [], f"unexpected responses: {client.stray}"
        assert set(client.answers) == set(client.pending)
        for corr_id, n in client.pending.items():
            assert client.answers[corr_id] == fib(n), f"fib({n}) for {corr_id}"
        assert sorted(client.pending.values()) == sorted(ns)
    assert sorted(served) == sorted(requests[0] + requests[1])
    assert fib(90) == 2880067194370816120
    setup.channel().queue_delete(queue=rpc_queue)
