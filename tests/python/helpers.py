"""Bounded-wait helpers shared by the pika tests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

DEFAULT_TIMEOUT_S = 15.0


@dataclass
class Delivery:
    method: pika.spec.Basic.Deliver
    properties: pika.BasicProperties
    body: bytes


def process_until(
    conn: BlockingConnection,
    done: Callable[[], bool],
    timeout: float = DEFAULT_TIMEOUT_S,
    what: str = "condition",
) -> None:
    """Pump `conn` until `done()` holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        conn.process_data_events(time_limit=min(0.05, remaining))


def pump(conns: list[BlockingConnection], seconds: float) -> None:
    """Pump several connections for a while (to let stray messages arrive)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for c in conns:
            c.process_data_events(time_limit=0.01)


def consume(
    conn: BlockingConnection,
    ch: BlockingChannel,
    queue: str,
    count: int,
    timeout: float = DEFAULT_TIMEOUT_S,
    auto_ack: bool = True,
) -> list[Delivery]:
    """Consume exactly `count` messages from `queue` (then cancel the consumer)."""
    got: list[Delivery] = []

    def on_message(chan, method, props, body):
        got.append(Delivery(method, props, body))
        if not auto_ack:
            chan.basic_ack(method.delivery_tag)

    tag = ch.basic_consume(queue=queue, on_message_callback=on_message, auto_ack=auto_ack)
    try:
        process_until(
            conn, lambda: len(got) >= count, timeout, f"{count} messages on {queue!r}"
        )
    finally:
        if ch.is_open:
            ch.basic_cancel(tag)
    return got


def get_all(ch: BlockingChannel, queue: str, limit: int = 100_000) -> list[bytes]:
    """basic_get (auto-ack) until the queue reports empty."""
    bodies: list[bytes] = []
    for _ in range(limit):
        method, _props, body = ch.basic_get(queue=queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)
    raise AssertionError(f"queue {queue!r} still not empty after {limit} gets")


def wait_get(ch: BlockingChannel, queue: str, timeout: float = DEFAULT_TIMEOUT_S):
    """basic_get (auto-ack) until a message arrives; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        method, props, body = ch.basic_get(queue=queue, auto_ack=True)
        if method is not None:
            return method, props, body
        if time.monotonic() > deadline:
            raise AssertionError(f"no message in {queue!r} within {timeout:.1f}s")
        ch.connection.process_data_events(time_limit=0.02)


def wait_for(
    cond: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT_S, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(0.02)


def join(thread: threading.Thread, timeout: float = DEFAULT_TIMEOUT_S) -> None:
    thread.join(timeout)
    assert not thread.is_alive(), f"thread {thread.name} did not finish within {timeout}s"


class Worker(threading.Thread):
    """A thread that records any exception so that the test can re-raise it."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # noqa: BLE001 - reported by check()
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"thread {self.name} failed: {self.error!r}") from self.error
