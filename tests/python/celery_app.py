"""The Celery application of the Celery end-to-end tests (test_celery.py).

Both sides build their app with `make_app`: the test process (to publish tasks
and read results through the rpc:// backend) and the worker process, which
imports this module as `celery -A celery_app worker ...` and so builds `app`
from the environment variables set by the test fixture:

  SY_CELERY_BROKER_URL  amqp://guest:guest@127.0.0.1:PORT//  (loopback only)
  SY_CELERY_QUEUE       the one task queue of the test (unique name)
  SY_CELERY_QUEUE_ARGS  JSON object of queue arguments (x-max-priority, ...)
  SY_CELERY_STATE_DIR   a directory private to the test, where tasks leave
                        traces (execution order, attempt counts, timestamps)

Task names are explicit, so that both apps address the same tasks.  Every
Celery setting that could point elsewhere (CELERY_BROKER_URL and friends in
the environment) is refused: the app only ever talks to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

from celery import Celery, bootsteps
from celery.exceptions import Reject
from kombu import Queue

ENV_BROKER = "SY_CELERY_BROKER_URL"
ENV_QUEUE = "SY_CELERY_QUEUE"
ENV_QUEUE_ARGS = "SY_CELERY_QUEUE_ARGS"
ENV_STATE_DIR = "SY_CELERY_STATE_DIR"

# Environment variables that Celery reads and that would override the broker
# or result backend given to the app.
_OVERRIDING_ENV = (
    "CELERY_BROKER_URL",
    "CELERY_BROKER_READ_URL",
    "CELERY_BROKER_WRITE_URL",
    "CELERY_RESULT_BACKEND",
    "CELERY_CONFIG_MODULE",
)


def _check_loopback(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "amqp" or parts.hostname != "127.0.0.1":
        raise RuntimeError(f"the Celery test app only talks to amqp://127.0.0.1, not {url!r}")


def _state_dir() -> Path:
    path = os.environ.get(ENV_STATE_DIR)
    if not path:
        raise RuntimeError(f"{ENV_STATE_DIR} is not set")
    return Path(path)


def _append(name: str, line: str) -> None:
    with open(_state_dir() / name, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


# How often the worker's event loop wakes up at least (seconds); see _HubTick.
HUB_TICK_S = 0.2


def _noop() -> None:
    pass


class _HubTick(bootsteps.StartStopStep):
    """A no-op timer that keeps the worker's event loop (kombu Hub) from
    sleeping in epoll for up to 10 s when it has nothing scheduled.

    Without it, two client-side latencies of Celery 5.7 make the tests slow
    (not wrong): a warm shutdown (SIGTERM) is only noticed when the poll
    returns, and an ack that Celery defers with `call_soon` while it runs a
    task received by its start-up `_quick_drain` is only sent after the next
    poll -- with prefetch 1 the broker rightly delivers nothing more until
    then.  The broker is not involved: a readable socket still wakes the loop
    at once."""

    requires = ("celery.worker.components:Hub",)

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None

    def start(self, worker):
        if worker.hub is not None:
            self.tref = worker.hub.call_repeatedly(HUB_TICK_S, _noop)

    def stop(self, worker):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None


def make_app(broker_url: str, queue: str, queue_args: dict | None = None) -> Celery:
    """A Celery app on `broker_url` whose default (and only) queue is `queue`,
    declared with `queue_args`; rpc:// results; late acks, prefetch 1."""
    present = [name for name in _OVERRIDING_ENV if os.environ.get(name)]
    if present:
        raise RuntimeError(f"refusing to run with {present} set in the environment")
    _check_loopback(broker_url)
    app = Celery("celery_app", broker=broker_url, backend="rpc://", set_as_current=False)
    app.conf.update(
        task_queues=[Queue(queue, routing_key=queue, queue_arguments=dict(queue_args or {}))],
        task_default_queue=queue,
        task_default_routing_key=queue,
        task_create_missing_queues=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=True,
        worker_redirect_stdouts=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=3,
        broker_connection_timeout=10,
        broker_pool_limit=2,
        result_expires=300,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
    )
    # What Celery will really use (it lets the environment win over the app).
    _check_loopback(app.conf.broker_url)
    for url in (app.conf.broker_read_url, app.conf.broker_write_url):
        if url:
            _check_loopback(url)
    app.steps["worker"].add(_HubTick)
    _register_tasks(app)
    return app


def _register_tasks(app: Celery) -> None:
    @app.task(name="celery_app.ping", shared=False)
    def ping():
        return "pong"

    @app.task(name="celery_app.add", shared=False)
    def add(x, y):
        _append("add.log", json.dumps({"args": [x, y], "ran_at": time.time()}))
        return x + y

    @app.task(name="celery_app.record", shared=False)
    def record(tag):
        """Appends `tag` to order.log: the order in which tasks ran."""
        _append("order.log", tag)
        return tag

    @app.task(name="celery_app.reject_me", shared=False)
    def reject_me(tag):
        _append("rejected.log", tag)
        raise Reject(f"rejecting {tag}", requeue=False)

    @app.task(name="celery_app.flaky", shared=False, bind=True, max_retries=2)
    def flaky(self, key, failures):
        """Fails `failures` times (retrying after 1 s), then succeeds."""
        attempt = self.request.retries + 1
        _append(f"flaky-{key}.log", json.dumps({"attempt": attempt, "at": time.time()}))
        if attempt <= failures:
            raise self.retry(exc=RuntimeError(f"attempt {attempt} fails"), countdown=1)
        return {"attempt": attempt, "retries": self.request.retries}

    @app.task(name="celery_app.crash_once", shared=False, bind=True)
    def crash_once(self, key):
        """The first execution kills the whole (solo pool) worker process before
        the late ack; the redelivered message completes on the next worker."""
        _append(f"crash-{key}.log", json.dumps({"redelivered": self.request.delivery_info.get("redelivered")}))
        runs = (_state_dir() / f"crash-{key}.log").read_text().splitlines()
        if len(runs) == 1:
            os._exit(17)
        return {"runs": len(runs), "delivery_info": dict(self.request.delivery_info or {})}


# The worker process (`celery -A celery_app worker`) builds its app from the
# environment.  Imported by the tests without these variables set, the module
# only provides `make_app`.
if os.environ.get(ENV_BROKER):
    app = make_app(
        os.environ[ENV_BROKER],
        os.environ[ENV_QUEUE],
        json.loads(os.environ.get(ENV_QUEUE_ARGS) or "{}"),
    )
