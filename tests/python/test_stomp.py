"""STOMP 1.0 / 1.1 / 1.2 end to end with stomp.py, plus raw-socket wire checks.

Semantics follow RabbitMQ's STOMP plugin (destinations /queue/, /topic/,
/exchange/, /amq/queue/, /temp-queue/; durable topic subscriptions; receipts;
emulated transactions; prefetch-count), which is what Switchyard implements.
Where RabbitMQ itself departs from the STOMP specification the test asserts
the specification and says so in a comment marked "RabbitMQ deviation".

Names carry the `uniq` suffix because the shared broker (or an external
RabbitMQ) outlives a test; queues that /queue/ destinations create are deleted
at teardown. Every wait is bounded (helpers' WAIT).
"""

from __future__ import annotations

import time

import pika
import pytest

from helpers import wait_get
from stomp_helpers import VERSIONS, WAIT, RawStomp, StompClient, encode_frame, stomp_port

V11_UP = ["1.1", "1.2"]


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------


@pytest.fixture
def stomp_client(broker):
    """stomp_client(version, endpoint=None, connect=True, **kw) -> StompClient."""
    opened: list[StompClient] = []

    def open_client(version="1.2", endpoint=None, connect=True, **kwargs) -> StompClient:
        c = StompClient(endpoint or broker, version, **kwargs)
        opened.append(c)
        if connect:
            c.connect()
        return c

    try:
        yield open_client
    finally:
        for c in opened:
            c.close()


@pytest.fixture
def raw(broker):
    """raw(endpoint=None) -> RawStomp (not yet connected at STOMP level)."""
    opened: list[RawStomp] = []

    def open_raw(endpoint=None) -> RawStomp:
        r = RawStomp(endpoint or broker)
        opened.append(r)
        return r

    try:
        yield open_raw
    finally:
        for r in opened:
            r.close()


@pytest.fixture
def amqp(connections):
    """A pika channel on the shared broker."""
    return connections.open().channel()


@pytest.fixture
def queues(broker):
    """Names of queues to delete at teardown (those that /queue/ creates)."""
    names: list[str] = []
    yield names
    if not names:
        return
    try:
        conn = broker.connect()
    except Exception:
        return
    try:
        for name in names:
            try:
                ch = conn.channel()
                ch.queue_delete(queue=name)
                ch.close()
            except Exception:
                pass
    finally:
        try:
            conn.close()
        except Exception:
            pass


def amqp_get(ch, queue: str, timeout: float = WAIT):
    """basic_get (auto-ack) until one message arrives; bounded."""
    return wait_get(ch, queue, timeout)


def message_count(ch, queue: str) -> int:
    return ch.queue_declare(queue=queue, passive=True).method.message_count


def header_text(value) -> str:
    """pika gives AMQP longstr table values as str when they are UTF-8."""
    return value.decode() if isinstance(value, bytes) else value


# STOMP 1.2 "ERROR": the server "MUST then close the connection just after
# sending the ERROR frame". A few seconds of slack, no more.
ERROR_CLOSE = 5.0


def ack_mode(version: str) -> str:
    """The per-message ack mode: client-individual exists from 1.1 on."""
    return "client" if version == "1.0" else "client-individual"


# ---------------------------------------------------------------------------
# connection and version negotiation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "accept,expected",
    [(None, "1.0"), ("1.0", "1.0"), ("1.1", "1.1"), ("1.2", "1.2"), ("1.0,1.1,1.2", "1.2"), ("1.1,1.0", "1.1")],
)
def test_version_negotiation(raw, accept, expected):
    r = raw()
    connected = r.connect(version=accept)
    headers = connected.headers
    if expected == "1.0":
        # STOMP 1.0 has no version header; if sent it must say 1.0.
        assert headers.get("version", "1.0") == "1.0"
    else:
        assert headers.get("version") == expected, connected.header_list
    assert headers.get("session"), f"no session header: {connected.header_list}"


@pytest.mark.parametrize("version", VERSIONS)
def test_stomp_py_connects(stomp_client, version):
    c = stomp_client(version)
    frame = c.connected_frame
    # (stomp.py 1.1/1.2 send the STOMP command rather than CONNECT.)
    if version != "1.0":
        assert frame.headers.get("version") == version
    assert c.conn.is_connected()
    c.disconnect()
    assert not c.conn.is_connected()


def test_unsupported_version_is_error(raw):
    # RabbitMQ deviation: RabbitMQ 3.10 sends the ERROR at once but closes the
    # socket only ~10 s later (its handshake timeout); the spec wants the close
    # "just after" the ERROR.
    r = raw()
    r.send_frame("CONNECT", [("accept-version", "2.0,3.1"), ("host", "/"), ("login", "guest"), ("passcode", "guest")])
    frames = r.wait_closed(ERROR_CLOSE)
    assert frames and frames[0].command == "ERROR", [(f.command, f.header_list) for f in frames]
    err = frames[0].headers
    assert err.get("message"), frames[0].header_list
    # STOMP 1.2 "Protocol Negotiation": the ERROR carries the server's versions.
    assert set(err.get("version", "").split(",")) >= {"1.0", "1.1", "1.2"}, frames[0].header_list


@pytest.mark.parametrize("version", [None, "1.1", "1.2"])
def test_bad_login_is_error(raw, version):
    # RabbitMQ deviation: RabbitMQ 3.10 sends the ERROR at once but closes the
    # socket only ~10 s later; the spec wants the close "just after" the ERROR.
    r = raw()
    headers = [("login", "guest"), ("passcode", "not-the-password")]
    if version is not None:
        headers = [("accept-version", version), ("host", "/")] + headers
    r.send_frame("CONNECT", headers)
    frames = r.wait_closed(ERROR_CLOSE)
    assert frames and frames[0].command == "ERROR", [(f.command, f.header_list) for f in frames]
    assert frames[0].headers.get("message"), frames[0].header_list
    assert all(f.command != "CONNECTED" for f in frames)


def test_frame_before_connect_is_error(raw, uniq):
    # RabbitMQ deviation: ERROR at once, close only ~10 s later (as above).
    r = raw()
    r.send_frame("SEND", [("destination", f"/queue/early-{uniq}")], b"too early")
    frames = r.wait_closed(ERROR_CLOSE)
    assert frames and frames[0].command == "ERROR", [(f.command, f.header_list) for f in frames]
    assert frames[0].headers.get("message")


# ---------------------------------------------------------------------------
# queues and topics
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_queue_round_trip(stomp_client, queues, uniq, version):
    q = f"q-{version}-{uniq}"
    queues.append(q)
    dest = f"/queue/{q}"
    prod = stomp_client(version)
    for i in range(3):
        prod.send(dest, f"m{i}".encode(), **{"content-type": "text/plain", "x-seq": str(i)})

    cons = stomp_client(version)
    cons.subscribe(dest, "s1")
    msgs = cons.messages_n(3)
    assert [m.body for m in msgs] == [b"m0", b"m1", b"m2"]
    assert [m.headers.get("x-seq") for m in msgs] == ["0", "1", "2"]
    for m in msgs:
        assert m.headers["destination"] == dest
        assert m.headers["subscription"] == "s1"
        assert m.headers["content-type"] == "text/plain"
    ids = [m.headers["message-id"] for m in msgs]
    assert len(set(ids)) == 3, f"message-ids not unique: {ids}"
    cons.assert_no_message()


def test_queue_destination_is_a_durable_amqp_queue(stomp_client, amqp, queues, uniq):
    q = f"qd-{uniq}"
    queues.append(q)
    stomp_client("1.2").send(f"/queue/{q}", b"x")
    # /queue/NAME is the AMQP queue NAME, declared durable, not auto-delete:
    # redeclaring it so succeeds (a mismatch would be 406 PRECONDITION_FAILED).
    ok = amqp.queue_declare(queue=q, durable=True, auto_delete=False)
    assert ok.method.message_count == 1


def test_queue_competing_consumers(stomp_client, queues, uniq):
    q = f"qc-{uniq}"
    queues.append(q)
    dest = f"/queue/{q}"
    a = stomp_client("1.2")
    b = stomp_client("1.1")
    a.subscribe(dest, "a")
    b.subscribe(dest, "b")
    prod = stomp_client("1.2")
    n = 10
    for i in range(n):
        prod.send(dest, str(i).encode())
    got_a, got_b = [], []
    deadline = time.monotonic() + WAIT
    while len(got_a) + len(got_b) < n:
        assert time.monotonic() < deadline, f"only {len(got_a) + len(got_b)} of {n} arrived"
        for client, got in ((a, got_a), (b, got_b)):
            if not client.messages.empty():
                got.append(int(client.messages.get_nowait().body))
        time.sleep(0.01)
    a.assert_no_message(within=0.3)
    b.assert_no_message(within=0.3)
    assert sorted(got_a + got_b) == list(range(n)), (got_a, got_b)
    assert got_a and got_b, f"one consumer got everything: a={got_a} b={got_b}"


@pytest.mark.parametrize("version", VERSIONS)
def test_topic_fanout(stomp_client, uniq, version):
    key = f"t-{version}-{uniq}"
    s1 = stomp_client(version)
    s2 = stomp_client(version)
    other = stomp_client(version)
    s1.subscribe(f"/topic/{key}", "one")
    s2.subscribe(f"/topic/{key}", "two")
    other.subscribe(f"/topic/{key}-other", "three")
    pub = stomp_client(version)
    pub.send(f"/topic/{key}", b"to all")
    for client, sub_id in ((s1, "one"), (s2, "two")):
        m = client.next_message()
        assert m.body == b"to all"
        assert m.headers["destination"] == f"/topic/{key}"
        assert m.headers["subscription"] == sub_id
    other.assert_no_message()
    s1.assert_no_message(within=0.2)


def test_topic_wildcards(stomp_client, uniq):
    base = f"w-{uniq}"
    star = stomp_client("1.2")
    hash_ = stomp_client("1.2")
    star.subscribe(f"/topic/{base}.*", "star")
    hash_.subscribe(f"/topic/{base}.#", "hash")
    pub = stomp_client("1.2")
    pub.send(f"/topic/{base}.a", b"one level")
    pub.send(f"/topic/{base}.a.b", b"two levels")
    assert star.next_message().body == b"one level"
    star.assert_no_message()
    assert [m.body for m in hash_.messages_n(2)] == [b"one level", b"two levels"]
    hash_.assert_no_message(within=0.2)


def test_topic_message_without_subscriber_is_dropped(stomp_client, uniq):
    key = f"drop-{uniq}"
    pub = stomp_client("1.2")
    pub.send(f"/topic/{key}", b"nobody listens")
    sub = stomp_client("1.2")
    sub.subscribe(f"/topic/{key}", "late")
    sub.assert_no_message()
    pub.send(f"/topic/{key}", b"now someone does")
    assert sub.next_message().body == b"now someone does"


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_stops_delivery(stomp_client, queues, uniq, version):
    q = f"unsub-{version}-{uniq}"
    queues.append(q)
    c = stomp_client(version)
    c.subscribe(f"/queue/{q}", "s")
    c.send(f"/queue/{q}", b"before")
    assert c.next_message().body == b"before"
    c.unsubscribe("s")
    c.send(f"/queue/{q}", b"after")
    c.assert_no_message()


# ---------------------------------------------------------------------------
# durable topic subscriptions
# ---------------------------------------------------------------------------

DURABLE = {"durable": "true", "auto-delete": "false"}


@pytest.mark.parametrize("version", VERSIONS)
def test_durable_topic_subscription(stomp_client, uniq, version):
    key = f"dur-{version}-{uniq}"
    dest = f"/topic/{key}"
    sub_id = f"dsub-{uniq}"
    sub = stomp_client(version)
    sub.subscribe(dest, sub_id, **DURABLE)
    pub = stomp_client(version)
    pub.send(dest, b"while connected")
    assert sub.next_message().body == b"while connected"
    sub.disconnect()

    # Published while the subscriber is away: kept for it.
    pub.send(dest, b"away 1")
    pub.send(dest, b"away 2")

    sub = stomp_client(version)
    try:
        sub.subscribe(dest, sub_id, **DURABLE)
        msgs = sub.messages_n(2)
        assert [m.body for m in msgs] == [b"away 1", b"away 2"]
        assert all(m.headers["subscription"] == sub_id for m in msgs)
        sub.assert_no_message()
    finally:
        # UNSUBSCRIBE with durable:true removes the subscription (and its queue).
        if sub.conn.is_connected():
            sub.unsubscribe(sub_id, **DURABLE)


def test_durable_unsubscribe_removes_subscription(stomp_client, uniq):
    dest = f"/topic/durx-{uniq}"
    sub_id = f"dsubx-{uniq}"
    sub = stomp_client("1.2")
    sub.subscribe(dest, sub_id, **DURABLE)
    sub.unsubscribe(sub_id, **DURABLE)
    sub.disconnect()

    pub = stomp_client("1.2")
    pub.send(dest, b"after the subscription was removed")
    sub = stomp_client("1.2")
    sub.subscribe(dest, sub_id, **DURABLE)
    try:
        sub.assert_no_message()
    finally:
        sub.unsubscribe(sub_id, **DURABLE)


def test_non_durable_topic_subscription_is_not_kept(stomp_client, uniq):
    dest = f"/topic/nondur-{uniq}"
    sub = stomp_client("1.2")
    sub.subscribe(dest, "s")
    sub.disconnect()
    stomp_client("1.2").send(dest, b"lost")
    sub = stomp_client("1.2")
    sub.subscribe(dest, "s")
    sub.assert_no_message()


# ---------------------------------------------------------------------------
# acknowledgements
# ---------------------------------------------------------------------------


def _fill(stomp_client, version, dest, n):
    prod = stomp_client(version)
    for i in range(n):
        prod.send(dest, f"m{i}".encode())


@pytest.mark.parametrize("version", V11_UP)
def test_client_individual_ack_redelivers_unacked(stomp_client, queues, uniq, version):
    q = f"ci-{version}-{uniq}"
    queues.append(q)
    dest = f"/queue/{q}"
    _fill(stomp_client, version, dest, 3)

    cons = stomp_client(version)
    cons.subscribe(dest, "s", ack="client-individual")
    msgs = cons.messages_n(3)
    assert [m.body for m in msgs] == [b"m0", b"m1", b"m2"]
    assert all(m.headers.get("redelivered", "false") == "false" for m in msgs)
    if version == "1.2":
        # STOMP 1.2: a MESSAGE needing an ACK carries an `ack` header.
        assert all(m.headers.get("ack") for m in msgs), [m.headers for m in msgs]
    cons.ack(msgs[1])  # only the middle one
    cons.disconnect()

    again = stomp_client(version)
    again.subscribe(dest, "s2", ack="client-individual")
    redelivered = again.messages_n(2)
    assert [m.body for m in redelivered] == [b"m0", b"m2"]
    assert all(m.headers.get("redelivered") == "true" for m in redelivered), [m.headers for m in redelivered]
    again.assert_no_message()
    for m in redelivered:
        again.ack(m)
    again.disconnect()


@pytest.mark.parametrize("version", VERSIONS)
def test_client_ack_is_cumulative(stomp_client, queues, uniq, version):
    q = f"cum-{version}-{uniq}"
    queues.append(q)
    dest = f"/queue/{q}"
    _fill(stomp_client, version, dest, 3)

    cons = stomp_client(version)
    cons.subscribe(dest, "s", ack="client")
    msgs = cons.messages_n(3)
    assert [m.body for m in msgs] == [b"m0", b"m1", b"m2"]
    cons.ack(msgs[1])  # acknowledges m0 and m1
    cons.disconnect()

    again = stomp_client(version)
    again.subscribe(dest, "s", ack="client")
    m = again.next_message()
    assert m.body == b"m2"
    assert m.headers.get("redelivered") == "true", m.headers
    again.assert_no_message()
    again.ack(m)


@pytest.mark.parametrize("version", V11_UP)
def test_nack_requeues_with_redelivered(stomp_client, amqp, queues, uniq, version):
    q = f"nack-{version}-{uniq}"
    queues.append(q)
    dest = f"/queue/{q}"
    cons = stomp_client(version)
    cons.subscribe(dest, "s", ack="client-individual")
    cons.send(dest, b"try again")
    first = cons.next_message()
    assert first.body == b"try again"
    assert first.headers.get("redelivered", "false") == "false"
    cons.nack(first)
    second = cons.next_message()
    assert second.body == b"try again"
    assert second.headers.get("redelivered") == "true", second.headers
    cons.ack(second)
    cons.assert_no_message()
    cons.disconnect()
    assert message_count(amqp, q) == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_auto_ack_removes_messages(stomp_client, amqp, queues, uniq, version):
    q = f"auto-{version}-{uniq}"
    queues.append(q)
    dest = f"/queue/{q}"
    _fill(stomp_client, version, dest, 2)
    cons = stomp_client(version)
    cons.subscribe(dest, "s")
    assert [m.body for m in cons.messages_n(2)] == [b"m0", b"m1"]
    cons.disconnect()
    assert message_count(amqp, q) == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_prefetch_count_limits_unacked(stomp_client, queues, uniq, version):
    q = f"pf-{version}-{uniq}"
    queues.append(q)
    dest = f"/queue/{q}"
    _fill(stomp_client, version, dest, 5)
    mode = ack_mode(version)

    cons = stomp_client(version)
    cons.subscribe(dest, "s", ack=mode, **{"prefetch-count": "2"})
    first = cons.messages_n(2)
    assert [m.body for m in first] == [b"m0", b"m1"]
    cons.assert_no_message()  # two unacked: no third
    cons.ack(first[0])
    third = cons.next_message()
    assert third.body == b"m2"
    cons.assert_no_message()
    cons.ack(first[1])
    cons.ack(third)
    assert [m.body for m in cons.messages_n(2)] == [b"m3", b"m4"]


# ---------------------------------------------------------------------------
# transactions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_transaction_commit_and_abort(stomp_client, queues, uniq, version):
    q = f"tx-{version}-{uniq}"
    queues.append(q)
    dest = f"/queue/{q}"
    cons = stomp_client(version)
    cons.subscribe(dest, "s")
    prod = stomp_client(version)

    # No receipts on the transactional SENDs themselves: RabbitMQ sends
    # those only once the transaction commits.
    prod.tx("BEGIN", "t1")
    prod.send(dest, b"in t1 a", wait=False, transaction="t1")
    prod.send(dest, b"in t1 b", wait=False, transaction="t1")
    cons.assert_no_message()  # nothing before COMMIT
    prod.tx("COMMIT", "t1")
    assert [m.body for m in cons.messages_n(2)] == [b"in t1 a", b"in t1 b"]

    prod.tx("BEGIN", "t2")
    prod.send(dest, b"in t2", wait=False, transaction="t2")
    prod.tx("ABORT", "t2")
    prod.send(dest, b"outside")
    assert cons.next_message().body == b"outside"
    cons.assert_no_message()


@pytest.mark.parametrize("version", VERSIONS)
def test_ack_inside_transaction(stomp_client, amqp, queues, uniq, version):
    q = f"txack-{version}-{uniq}"
    queues.append(q)
    dest = f"/queue/{q}"
    _fill(stomp_client, version, dest, 1)
    mode = ack_mode(version)

    cons = stomp_client(version)
    cons.subscribe(dest, "s", ack=mode)
    m = cons.next_message()
    cons.tx("BEGIN", "ta")
    cons.ack(m, transaction="ta")
    cons.tx("ABORT", "ta")  # the ACK is discarded
    cons.disconnect()

    cons = stomp_client(version)
    cons.subscribe(dest, "s", ack=mode)
    m = cons.next_message()
    assert m.body == b"m0"
    assert m.headers.get("redelivered") == "true", m.headers
    cons.tx("BEGIN", "tc")
    cons.ack(m, transaction="tc")
    cons.tx("COMMIT", "tc")
    cons.disconnect()
    assert message_count(amqp, q) == 0


def test_commit_unknown_transaction_is_error(stomp_client):
    c = stomp_client("1.2")
    c.conn.send_frame("COMMIT", {"transaction": "never-begun", "receipt": "r-commit"})
    err = c.next_error()
    assert err.headers.get("message"), err.headers
    assert not c.has_receipt("r-commit")


# ---------------------------------------------------------------------------
# receipts
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_receipts_and_disconnect(raw, queues, uniq, version):
    q = f"rc-{version}-{uniq}"
    queues.append(q)
    r = raw()
    r.connect(version=None if version == "1.0" else version)
    r.send_frame("SUBSCRIBE", [("destination", f"/queue/{q}"), ("id", "s"), ("receipt", "r-sub")])
    assert r.expect("RECEIPT").headers["receipt-id"] == "r-sub"
    r.send_frame("SEND", [("destination", f"/queue/{q}"), ("receipt", "r-send")], b"hello")
    frames = [r.read_frame(), r.read_frame()]  # RECEIPT and MESSAGE, in either order
    by_cmd = {f.command: f for f in frames}
    assert set(by_cmd) == {"RECEIPT", "MESSAGE"}, [(f.command, f.header_list) for f in frames]
    assert by_cmd["RECEIPT"].headers["receipt-id"] == "r-send"
    assert by_cmd["MESSAGE"].body == b"hello"
    r.send_frame("UNSUBSCRIBE", [("id", "s"), ("receipt", "r-unsub")])
    assert r.expect("RECEIPT").headers["receipt-id"] == "r-unsub"

    r.send_frame("DISCONNECT", [("receipt", "r-bye")])
    frames = r.wait_closed()  # the broker closes the socket after the receipt
    assert [(f.command, f.headers.get("receipt-id")) for f in frames] == [("RECEIPT", "r-bye")]


# ---------------------------------------------------------------------------
# heart-beats
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", V11_UP)
def test_heartbeats_keep_idle_connection_up(stomp_client, queues, uniq, version):
    c = stomp_client(version, heartbeats=(1000, 1000), heart_beat_receive_scale=2.5)
    sx, sy = (int(x) for x in c.connected_frame.headers["heart-beat"].split(","))
    assert sx > 0 and sy > 0, f"broker refused heart-beats: {c.connected_frame.headers}"
    assert sx <= 5000, f"broker would heart-beat only every {sx} ms"
    time.sleep(4.5)  # idle: only heart-beats flow
    assert c.conn.is_connected(), "connection dropped while heart-beating"
    assert not c.heartbeat_timeout.is_set()
    assert c.heartbeats_received >= 2, f"only {c.heartbeats_received} heart-beats in 4.5 s"
    q = f"hb-{version}-{uniq}"
    queues.append(q)
    c.subscribe(f"/queue/{q}", "s")
    c.send(f"/queue/{q}", b"still here")
    assert c.next_message().body == b"still here"


def test_server_sends_heartbeats(raw):
    r = raw()
    connected = r.connect(version="1.2", **{"heart-beat": "0,1000"})
    sx, _sy = (int(x) for x in connected.headers["heart-beat"].split(","))
    assert 0 < sx <= 5000, connected.header_list
    start = time.monotonic()
    assert r.is_open_after(4.0)
    beats = [t - start for t in r.heartbeats]
    assert len(beats) >= 2, f"heart-beats seen at {beats}"
    gaps = [b - a for a, b in zip([0.0] + beats, beats)]
    assert max(gaps) < max(sx, 1000) / 1000 * 2 + 0.5, f"heart-beat gaps {gaps}"


def test_silent_client_is_disconnected(raw):
    r = raw()
    connected = r.connect(version="1.2", **{"heart-beat": "1000,0"})
    _sx, sy = (int(x) for x in connected.headers["heart-beat"].split(","))
    assert sy > 0, f"broker does not expect heart-beats: {connected.header_list}"
    start = time.monotonic()
    r.wait_closed(timeout=WAIT)
    elapsed = time.monotonic() - start
    # Some tolerance is due (STOMP 1.2 "Heart-beating"), but not forever.
    assert elapsed >= sy / 1000 * 0.9, f"closed after only {elapsed:.2f}s"


def test_heartbeating_client_is_kept(raw, queues, uniq):
    r = raw()
    r.connect(version="1.2", **{"heart-beat": "1000,0"})
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:
        r.send_raw(b"\n")
        assert r.is_open_after(0.4), "closed although the client heart-beats"
    q = f"hbk-{uniq}"
    queues.append(q)
    r.send_frame("SEND", [("destination", f"/queue/{q}"), ("receipt", "r1")], b"x")
    assert r.expect("RECEIPT").headers["receipt-id"] == "r1"


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_send_without_destination_is_error(raw, version):
    # RabbitMQ deviation: RabbitMQ 3.10 sends the ERROR but keeps the
    # connection open; the spec (and the issue) want it closed after an ERROR.
    r = raw()
    r.connect(version=None if version == "1.0" else version)
    r.send_frame("SEND", [("receipt", "r-x")], b"where to?")
    frames = r.wait_closed(ERROR_CLOSE)
    assert frames and frames[0].command == "ERROR", [(f.command, f.header_list) for f in frames]
    assert frames[0].headers.get("message"), frames[0].header_list
    assert all(f.command != "RECEIPT" for f in frames)


def test_unknown_command_is_error(raw):
    # RabbitMQ deviation: as above, RabbitMQ 3.10 keeps the connection open.
    r = raw()
    r.connect(version="1.2")
    r.send_frame("FROBNICATE", [("x", "y")])
    frames = r.wait_closed(ERROR_CLOSE)
    assert frames and frames[0].command == "ERROR", [(f.command, f.header_list) for f in frames]
    assert frames[0].headers.get("message")


def test_error_carries_receipt_id(raw):
    """STOMP 1.2: an ERROR caused by a frame with a receipt header SHOULD
    carry its receipt-id."""
    # RabbitMQ deviation: RabbitMQ 3.10 sends no receipt-id on this ERROR.
    r = raw()
    r.connect(version="1.2")
    r.send_frame("SEND", [("receipt", "r-bad")], b"no destination")
    err = r.expect("ERROR")
    assert err.headers.get("receipt-id") == "r-bad", err.header_list


def test_invalid_header_escape_is_error_in_12(raw, queues, uniq):
    q = f"badesc-{uniq}"
    queues.append(q)
    r = raw()
    r.connect(version="1.2")
    # \t is no STOMP escape: "MUST be treated as a fatal protocol error".
    r.send_frame("SEND", [("destination", f"/queue/{q}"), ("x-bad", "a\\tb"), ("receipt", "r1")], b"x")
    frames = r.wait_closed(ERROR_CLOSE)
    # Closed, with an ERROR first or nothing at all (RabbitMQ just closes).
    assert all(f.command == "ERROR" for f in frames), [(f.command, f.header_list) for f in frames]


def test_subscribe_to_missing_amq_queue_is_error(stomp_client, uniq):
    c = stomp_client("1.2")
    # (No check on the RECEIPT here: RabbitMQ sometimes sends one before the ERROR.)
    c.subscribe(f"/amq/queue/missing-{uniq}", "s", wait=False, receipt="r-sub")
    err = c.next_error()
    assert err.headers.get("message"), err.headers


def test_send_to_missing_exchange_is_error(stomp_client, uniq):
    c = stomp_client("1.2")
    c.conn.send(f"/exchange/missing-{uniq}/key", b"x", headers={"receipt": "r-send"})
    err = c.next_error()
    assert err.headers.get("message"), err.headers
    assert not c.has_receipt("r-send")


def test_bad_destination_is_error(stomp_client):
    c = stomp_client("1.2")
    c.conn.send("/nonsense/foo", b"x", headers={"receipt": "r-send"})
    err = c.next_error()
    assert err.headers.get("message"), err.headers


# ---------------------------------------------------------------------------
# /exchange/ and /amq/queue/ destinations
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_exchange_destination(stomp_client, amqp, uniq, version):
    base = f"ex-{version}-{uniq}"
    sub = stomp_client(version)
    sub.subscribe(f"/exchange/amq.topic/{base}.*", "s")
    pub = stomp_client(version)
    pub.send(f"/exchange/amq.topic/{base}.a", b"via stomp")
    m = sub.next_message()
    assert m.body == b"via stomp"
    # RabbitMQ names amq.topic deliveries /topic/KEY.
    assert m.headers["destination"] in (f"/topic/{base}.a", f"/exchange/amq.topic/{base}.a")
    amqp.basic_publish(exchange="amq.topic", routing_key=f"{base}.b", body=b"via amqp")
    m = sub.next_message()
    assert m.body == b"via amqp"
    amqp.basic_publish(exchange="amq.topic", routing_key=f"{base}.b.c", body=b"not matched")
    sub.assert_no_message()


def test_exchange_destination_custom_exchange(stomp_client, amqp, uniq):
    ex = f"sx-{uniq}"
    amqp.exchange_declare(exchange=ex, exchange_type="direct", auto_delete=False)
    try:
        q = amqp.queue_declare(queue="", exclusive=True).method.queue
        amqp.queue_bind(queue=q, exchange=ex, routing_key="k1")
        sub = stomp_client("1.2")
        sub.subscribe(f"/exchange/{ex}/k2", "s")
        c = stomp_client("1.2")
        c.send(f"/exchange/{ex}/k1", b"to amqp")
        c.send(f"/exchange/{ex}/k2", b"to stomp")
        c.send(f"/exchange/{ex}/k3", b"unrouted")
        _m, _p, body = amqp_get(amqp, q)
        assert body == b"to amqp"
        m = sub.next_message()
        assert m.body == b"to stomp"
        assert m.headers["destination"] == f"/exchange/{ex}/k2"
        sub.assert_no_message()
        assert message_count(amqp, q) == 0
    finally:
        amqp.exchange_delete(exchange=ex)


@pytest.mark.parametrize("version", VERSIONS)
def test_amq_queue_destination(stomp_client, amqp, uniq, version):
    q = f"amqq-{version}-{uniq}"
    # An AMQP-declared queue with properties STOMP's /queue/ would not use:
    # /amq/queue/ must use it as it is, without redeclaring it.
    amqp.queue_declare(queue=q, durable=False, auto_delete=False, arguments={"x-max-length": 100})
    try:
        c = stomp_client(version)
        c.send(f"/amq/queue/{q}", b"from stomp")
        _m, _p, body = amqp_get(amqp, q)
        assert body == b"from stomp"

        c.subscribe(f"/amq/queue/{q}", "s")
        amqp.basic_publish(exchange="", routing_key=q, body=b"from amqp")
        m = c.next_message()
        assert m.body == b"from amqp"
        # RabbitMQ names it /queue/NAME (from exchange "" and the queue name).
        assert m.headers["destination"] in (f"/amq/queue/{q}", f"/queue/{q}")
        assert m.headers["subscription"] == "s"
    finally:
        amqp.queue_delete(queue=q)


# ---------------------------------------------------------------------------
# cross-protocol: STOMP <-> AMQP 0-9-1
# ---------------------------------------------------------------------------

BINARY = b"\x00head\x00" + bytes(range(256)) + b"\x00tail\x00"


@pytest.mark.parametrize("version", VERSIONS)
def test_stomp_send_to_amqp_consumer(stomp_client, amqp, queues, uniq, version):
    q = f"xs-{version}-{uniq}"
    queues.append(q)
    c = stomp_client(version)
    c.send(
        f"/queue/{q}",
        BINARY,
        **{
            "content-type": "application/octet-stream",
            "correlation-id": "corr-7",
            "persistent": "true",
            "x-custom": "hello",
            "x-other": "two words",
        },
    )
    _method, props, body = amqp_get(amqp, q)
    assert body == BINARY
    assert props.content_type == "application/octet-stream"
    assert props.correlation_id == "corr-7"
    assert props.delivery_mode == 2
    headers = {k: header_text(v) for k, v in (props.headers or {}).items()}
    assert headers.get("x-custom") == "hello", headers
    assert headers.get("x-other") == "two words", headers
    # (RabbitMQ copies `receipt` and `content-length` into the AMQP headers,
    # but not `destination`.)
    assert "destination" not in headers, headers


def test_stomp_headers_to_amqp_properties(stomp_client, amqp, queues, uniq):
    q = f"xp-{uniq}"
    queues.append(q)
    stomp_client("1.2").send(
        f"/queue/{q}",
        b"props",
        **{
            "priority": "5",
            "expiration": "50000",
            "type": "order",
            "app-id": "billing",
            "content-encoding": "identity",
            "amqp-message-id": "mid-9",
            "timestamp": "1700000001",
            "reply-to": "/queue/answers",
        },
    )
    _m, props, body = amqp_get(amqp, q)
    assert body == b"props"
    assert props.priority == 5
    assert props.expiration == "50000"
    assert props.type == "order"
    assert props.app_id == "billing"
    assert props.content_encoding == "identity"
    assert props.message_id == "mid-9"
    assert props.timestamp == 1700000001
    assert props.reply_to == "/queue/answers"


def test_send_with_persistent_false_is_transient(stomp_client, amqp, queues, uniq):
    # persistent:false makes a SEND transient (delivery mode 1).
    # (/amq/queue/: RabbitMQ takes persistent:false on a /queue/ SEND as a
    # queue declaration argument, making an exclusive queue.)
    q = f"tr-{uniq}"
    queues.append(q)
    amqp.queue_declare(queue=q, durable=True, auto_delete=False)
    stomp_client("1.2").send(f"/amq/queue/{q}", b"transient", persistent="false")
    _m, props, _b = amqp_get(amqp, q)
    assert props.delivery_mode != 2, props


def test_queue_send_is_persistent_by_default(stomp_client, amqp, queues, uniq):
    # Switchyard deviates from RabbitMQ on purpose (docs/stomp.md): a SEND to
    # a queue destination without a persistent header is persistent, so a
    # RECEIPT for it means it is on disk. RabbitMQ leaves it transient.
    q = f"pd-{uniq}"
    queues.append(q)
    amqp.queue_declare(queue=q, durable=True, auto_delete=False)
    stomp_client("1.2").send(f"/amq/queue/{q}", b"kept")
    _m, props, _b = amqp_get(amqp, q)
    assert props.delivery_mode == 2, props


@pytest.mark.parametrize("version", VERSIONS)
def test_amqp_publish_to_stomp_topic_subscriber(stomp_client, amqp, uniq, version):
    key = f"xa-{version}-{uniq}"
    c = stomp_client(version)
    c.subscribe(f"/topic/{key}", "s")
    amqp.basic_publish(
        exchange="amq.topic",
        routing_key=key,
        body=BINARY,
        properties=pika.BasicProperties(
            content_type="application/x-test",
            correlation_id="corr-42",
            reply_to=f"replies-{uniq}",
            message_id="mid-1",
            headers={"x-app": "v1", "x-num": 42},
            delivery_mode=2,
            priority=3,
            expiration="60000",
            type="t",
            app_id="app",
            timestamp=1700000000,
            content_encoding="gzip",
        ),
    )
    m = c.next_message()
    assert m.body == BINARY
    h = m.headers
    assert h["destination"] == f"/topic/{key}"
    assert h["subscription"] == "s"
    assert h.get("content-type") == "application/x-test", h
    assert h.get("correlation-id") == "corr-42", h
    # A plain AMQP reply_to (a queue name) shows as a /reply-queue/ destination.
    assert h.get("reply-to") == f"/reply-queue/replies-{uniq}", h
    # The STOMP message-id is the broker's delivery id; the AMQP one is amqp-message-id.
    assert h.get("amqp-message-id") == "mid-1", h
    assert h.get("x-app") == "v1", h
    assert h.get("x-num") == "42", h
    assert h.get("persistent") == "true", h
    assert (h.get("priority"), h.get("expiration"), h.get("type")) == ("3", "60000", "t"), h
    assert (h.get("app-id"), h.get("timestamp"), h.get("content-encoding")) == ("app", "1700000000", "gzip"), h
    assert int(h["content-length"]) == len(BINARY)


@pytest.mark.parametrize("version", VERSIONS)
def test_stomp_topic_send_to_amqp_binding(stomp_client, amqp, uniq, version):
    key = f"xt-{version}-{uniq}"
    q = amqp.queue_declare(queue="", exclusive=True).method.queue
    amqp.queue_bind(queue=q, exchange="amq.topic", routing_key=f"{key}.#")
    stomp_client(version).send(f"/topic/{key}.x", b"to amqp", **{"x-h": "v"})
    method, props, body = amqp_get(amqp, q)
    assert body == b"to amqp"
    assert method.exchange == "amq.topic"
    assert method.routing_key == f"{key}.x"
    assert header_text((props.headers or {}).get("x-h")) == "v"


@pytest.mark.parametrize("version", VERSIONS)
def test_temp_queue_rpc(stomp_client, connections, queues, uniq, version):
    svc = f"svc-{version}-{uniq}"
    queues.append(svc)
    conn = connections.open()
    ch = conn.channel()
    # Declared as /queue/ declares it, so the STOMP SEND below matches.
    ch.queue_declare(queue=svc, durable=True, auto_delete=False)

    client = stomp_client(version)
    client.send(f"/queue/{svc}", b"ping 1", **{"reply-to": "/temp-queue/answers"})
    _m, props, body = amqp_get(ch, svc)
    assert body == b"ping 1"
    reply_to = props.reply_to
    assert reply_to and reply_to != "/temp-queue/answers", f"reply_to = {reply_to!r}"
    # RabbitMQ: /reply-queue/amq.gen-...
    ch.basic_publish(
        exchange="",
        routing_key=reply_to,
        body=b"pong 1",
        properties=pika.BasicProperties(correlation_id="c1"),
    )
    m = client.next_message()
    assert m.body == b"pong 1"
    # Delivered without a SUBSCRIBE: the subscription is the temp destination.
    assert m.headers.get("subscription") == "/temp-queue/answers", m.headers
    assert m.headers.get("correlation-id") == "c1"

    # The same temp-queue name reuses the same reply queue on this connection.
    client.send(f"/queue/{svc}", b"ping 2", **{"reply-to": "/temp-queue/answers"})
    _m, props2, body = amqp_get(ch, svc)
    assert body == b"ping 2"
    assert props2.reply_to == reply_to
    ch.basic_publish(exchange="", routing_key=reply_to, body=b"pong 2")
    assert client.next_message().body == b"pong 2"

    # The reply queue goes away with the connection.
    client.disconnect()
    queue_name = reply_to.rsplit("/", 1)[-1]
    deadline = time.monotonic() + WAIT
    while True:
        probe = conn.channel()
        try:
            probe.queue_declare(queue=queue_name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            assert exc.reply_code == 404
            break
        probe.close()
        assert time.monotonic() < deadline, f"reply queue {queue_name!r} outlived its connection"
        time.sleep(0.05)


# ---------------------------------------------------------------------------
# wire format (raw socket)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_body_with_nul_via_content_length(raw, queues, uniq, version):
    q = f"nul-{version}-{uniq}"
    queues.append(q)
    accept = None if version == "1.0" else version
    sub = raw()
    sub.connect(version=accept)
    sub.send_frame("SUBSCRIBE", [("destination", f"/queue/{q}"), ("id", "s"), ("receipt", "r0")])
    sub.expect("RECEIPT")

    pub = raw()
    pub.connect(version=accept)
    body1 = b"a\x00b\x00\x00c"
    body2 = b"\x00"
    # Two frames in one write, the second without content-length.
    pub.send_raw(
        encode_frame("SEND", [("destination", f"/queue/{q}"), ("content-length", str(len(body1)))], body1)
        + encode_frame("SEND", [("destination", f"/queue/{q}"), ("content-length", "1")], body2)
        + encode_frame("SEND", [("destination", f"/queue/{q}"), ("receipt", "r1")], b"plain text")
    )
    pub.expect("RECEIPT")
    m1, m2, m3 = sub.expect("MESSAGE"), sub.expect("MESSAGE"), sub.expect("MESSAGE")
    assert (m1.body, m2.body, m3.body) == (body1, body2, b"plain text")
    assert m1.headers.get("content-length") == str(len(body1)), m1.header_list
    assert m2.headers.get("content-length") == "1", m2.header_list


def test_crlf_line_endings_12(raw, queues, uniq):
    q = f"crlf-{uniq}"
    queues.append(q)
    r = raw()
    r.connect(version="1.2", eol=b"\r\n")
    r.send_frame("SUBSCRIBE", [("destination", f"/queue/{q}"), ("id", "s"), ("receipt", "r0")], eol=b"\r\n")
    assert r.expect("RECEIPT").headers["receipt-id"] == "r0"
    r.send_frame("SEND", [("destination", f"/queue/{q}"), ("x-h", "value"), ("receipt", "r1")], b"crlf body", eol=b"\r\n")
    frames = [r.read_frame(), r.read_frame()]
    by_cmd = {f.command: f for f in frames}
    assert set(by_cmd) == {"RECEIPT", "MESSAGE"}, [(f.command, f.header_list) for f in frames]
    assert by_cmd["RECEIPT"].headers["receipt-id"] == "r1"
    msg = by_cmd["MESSAGE"]
    assert msg.headers["x-h"] == "value"
    assert msg.headers["destination"] == f"/queue/{q}"
    assert msg.body == b"crlf body"


def _escape_round_trip(raw, amqp, q, version, wire_value):
    """SEND a header as `wire_value` on a `version` session; return what an
    AMQP consumer sees and what a raw subscriber of the same version gets."""
    accept = None if version == "1.0" else version
    sub = raw()
    sub.connect(version=accept)
    sub.send_frame("SUBSCRIBE", [("destination", f"/topic/{q}"), ("id", "s"), ("receipt", "r0")])
    sub.expect("RECEIPT")
    amqp_q = amqp.queue_declare(queue="", exclusive=True).method.queue
    amqp.queue_bind(queue=amqp_q, exchange="amq.topic", routing_key=q)
    pub = raw()
    pub.connect(version=accept)
    pub.send_frame("SEND", [("destination", f"/topic/{q}"), ("x-esc", wire_value), ("receipt", "r1")], b"e")
    pub.expect("RECEIPT")
    _m, props, _b = amqp_get(amqp, amqp_q)
    msg = sub.expect("MESSAGE")
    return header_text((props.headers or {}).get("x-esc")), msg.headers.get("x-esc")


def test_header_escaping_12(raw, amqp, uniq):
    wire = "a\\nb\\cc\\\\d\\re"  # a<LF>b:c\d<CR>e
    as_amqp, as_stomp = _escape_round_trip(raw, amqp, f"esc12-{uniq}", "1.2", wire)
    assert as_amqp == "a\nb:c\\d\re"
    assert as_stomp == wire


def test_header_escaping_11(raw, amqp, uniq):
    wire = "a\\nb\\cc\\\\d"  # a<LF>b:c\d (1.1 has no \r escape)
    as_amqp, as_stomp = _escape_round_trip(raw, amqp, f"esc11-{uniq}", "1.1", wire)
    assert as_amqp == "a\nb:c\\d"
    assert as_stomp == wire


def test_no_header_escaping_in_10(raw, amqp, uniq):
    # STOMP 1.0 defines no escapes: backslashes are plain characters, and a
    # colon in a value needs none.
    # RabbitMQ deviation: RabbitMQ 3.10 unescapes (and escapes) 1.0 headers too.
    wire = "a\\cb\\\\n:x"
    as_amqp, as_stomp = _escape_round_trip(raw, amqp, f"esc10-{uniq}", "1.0", wire)
    assert as_amqp == wire
    assert as_stomp == wire


def test_connect_headers_are_not_unescaped(raw):
    # STOMP 1.2: CONNECT and CONNECTED frames do not escape; a backslash
    # sequence there is text, not a (here undefined, so fatal) escape.
    # RabbitMQ deviation: RabbitMQ 3.10 parses CONNECT escapes like any frame.
    r = raw()
    connected = r.connect(version="1.2", **{"x-client-note": "C:\\temp\\new"})
    assert connected.command == "CONNECTED"


def test_repeated_header_first_wins(raw, amqp, uniq):
    q = f"rep-{uniq}"
    amqp_q = amqp.queue_declare(queue="", exclusive=True).method.queue
    amqp.queue_bind(queue=amqp_q, exchange="amq.topic", routing_key=q)
    r = raw()
    r.connect(version="1.2")
    r.send_frame(
        "SEND",
        [("destination", f"/topic/{q}"), ("x-dup", "first"), ("x-dup", "second"), ("receipt", "r1")],
        b"dup",
    )
    r.expect("RECEIPT")
    _m, props, _b = amqp_get(amqp, amqp_q)
    assert header_text((props.headers or {}).get("x-dup")) == "first"


# ---------------------------------------------------------------------------
# persistence (own broker: Switchyard only)
# ---------------------------------------------------------------------------


def test_persistent_message_survives_restart(own_broker, uniq):
    q = f"persist-{uniq}"
    c = StompClient(own_broker.endpoint, "1.2")
    try:
        c.connect()
        c.send(f"/queue/{q}", b"keep me", persistent="true", **{"x-h": "kept"})
        c.send(f"/queue/{q}", BINARY, persistent="true")
        c.disconnect()
    finally:
        c.close()
    endpoint = own_broker.restart()
    c = StompClient(endpoint, "1.2")
    try:
        c.connect()
        c.subscribe(f"/queue/{q}", "s", ack="client-individual")
        m1, m2 = c.messages_n(2)
        assert (m1.body, m1.headers.get("x-h")) == (b"keep me", "kept")
        assert m2.body == BINARY
        c.ack(m1)
        c.ack(m2)
        c.assert_no_message()
    finally:
        c.close()


def test_durable_subscription_survives_restart(own_broker, uniq):
    dest = f"/topic/dpersist-{uniq}"
    sub_id = f"dp-{uniq}"
    c = StompClient(own_broker.endpoint, "1.2")
    try:
        c.connect()
        c.subscribe(dest, sub_id, **DURABLE)
        c.disconnect()
    finally:
        c.close()
    p = StompClient(own_broker.endpoint, "1.1")
    try:
        p.connect()
        p.send(dest, b"for the durable subscriber", persistent="true")
        p.disconnect()
    finally:
        p.close()
    endpoint = own_broker.restart()
    c = StompClient(endpoint, "1.2")
    try:
        c.connect()
        c.subscribe(dest, sub_id, **DURABLE)
        assert c.next_message().body == b"for the durable subscriber"
        # And the subscription still receives new messages after the restart.
        c.send(dest, b"after restart")
        assert c.next_message().body == b"after restart"
    finally:
        c.close()


# ---------------------------------------------------------------------------
# to the letter of RabbitMQ's plugin, with stomp.py (issue 13)
# ---------------------------------------------------------------------------


def test_duplicate_subscription_error_as_rabbitmq_words_it(stomp_client, queues, uniq):
    q = f"dup-{uniq}"
    queues.append(q)
    c = stomp_client("1.2")
    c.subscribe(f"/queue/{q}", "s1")
    c.subscribe(f"/queue/{q}", "s1", wait=False)
    err = c.next_error()
    assert err.headers.get("message") == "Duplicated subscription identifier", err.headers
    assert err.body == b"A subscription identified by 'T_s1' already exists.", err.body
    assert c.disconnected.wait(WAIT), "connection still open after the ERROR"


@pytest.mark.parametrize("spelling", ["False", "FALSE", "false"])
def test_nack_requeue_false_any_case_discards(stomp_client, amqp, queues, uniq, spelling):
    q = f"nackf-{uniq}"
    queues.append(q)
    dest = f"/queue/{q}"
    c = stomp_client("1.2")
    c.send(dest, b"poison")
    c.subscribe(dest, "s", ack="client-individual")
    m = c.next_message()
    receipt = f"nack-{uniq}"
    c.conn.send_frame("NACK", {"id": m.headers["ack"], "requeue": spelling, "receipt": receipt})
    c.wait_receipt(receipt, "NACK")
    c.assert_no_message()
    c.disconnect()
    assert message_count(amqp, q) == 0


def test_persistent_true_capitalised_reaches_amqp_as_persistent(stomp_client, amqp, uniq):
    key = f"cap.{uniq}"
    q = amqp.queue_declare(queue="", exclusive=True).method.queue
    amqp.queue_bind(queue=q, exchange="amq.topic", routing_key=key)
    c = stomp_client("1.2")
    c.send(f"/topic/{key}", b"keep me", persistent="True")
    _method, props, body = amqp_get(amqp, q)
    assert body == b"keep me"
    assert props.delivery_mode == 2, props


def test_stomp_1_0_connected_says_heart_beat_0_0(stomp_client):
    c = stomp_client("1.0")
    assert c.connected_frame.headers.get("heart-beat") == "0,0", c.connected_frame.headers


def test_unknown_vhost_is_refused(broker):
    import stomp

    errors = []

    class Listener(stomp.ConnectionListener):
        def on_error(self, frame):
            errors.append(frame)

    conn = stomp.Connection12(
        host_and_ports=[(broker.host, stomp_port(broker))],
        vhost="no-such-vhost",
        reconnect_attempts_max=1,
        auto_decode=False,
    )
    conn.set_listener("l", Listener())
    try:
        conn.connect("guest", "guest", wait=False)
        deadline = time.monotonic() + WAIT
        while not errors and time.monotonic() < deadline:
            time.sleep(0.02)
        assert errors, "no ERROR for an unknown vhost"
        assert errors[0].headers.get("message") == "Bad CONNECT", errors[0].headers
        assert errors[0].body == b"Virtual host 'no-such-vhost' access denied", errors[0].body
    finally:
        try:
            conn.disconnect()
        except Exception:
            pass
