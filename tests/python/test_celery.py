"""Celery end to end: a real `celery worker` process (solo pool) against the
broker, with the rpc:// result backend.

The worker is started by the `celery_rig` fixture from celery_app.py (the app
is configured through SY_CELERY_* environment variables; it refuses any broker
but amqp://...@127.0.0.1), with late acks and prefetch 1.  The fixture stops
exactly the processes it started (SIGTERM, then SIGKILL after a bound), and a
failing test's report carries the log of each worker it started.

Expectations follow Celery's documentation (task_acks_late, Reject, retry,
countdown/ETA, priorities) and RabbitMQ's (priority queues, dead-lettering and
x-death).  Every wait is bounded; every name carries the test's unique suffix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery.exceptions import TimeoutError as CeleryTimeoutError

from celery_app import (
    ENV_BROKER,
    ENV_QUEUE,
    ENV_QUEUE_ARGS,
    ENV_STATE_DIR,
    make_app,
)
from conftest import stop_process, track_process
from helpers import wait_get

TESTS_DIR = Path(__file__).resolve().parent
READY_TIMEOUT_S = 30.0
STOP_GRACE_S = 10.0
LOG_TAIL_LINES = 120

class Worker:
    """One `celery worker` process, started and stopped by the fixture only."""

    def __init__(self, name: str, queue: str, queue_args: dict, broker_url: str, run_dir: Path, state_dir: Path):
        self.name = name
        self.queue = queue
        self.log_path = run_dir / f"{name}.log"
        self.cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_app",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "-Q",
            queue,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "info",
            "-n",
            f"{name}@localhost",
        ]
        # No CELERY_* setting (which Celery lets override the app's broker) and
        # no SWITCHYARD_* setting leaks in.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CELERY_", "SWITCHYARD_", "SY_CELERY_"))
        }
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        env[ENV_BROKER] = broker_url
        env[ENV_QUEUE] = queue
        env[ENV_QUEUE_ARGS] = json.dumps(queue_args)
        env[ENV_STATE_DIR] = str(state_dir)
        self.env = env
        self.cwd = run_dir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"===== {' '.join(self.cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
            )
        track_process(self.proc)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    def check_alive(self) -> None:
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None:
            pytest.fail(f"celery worker {self.name} exited with code {code}\n{self.log_tail()}", pytrace=False)

    def wait_logged_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until the worker logs `<name>@localhost ready.` (consumer started)."""
        deadline = time.monotonic() + timeout
        marker = f"{self.name}@localhost ready."
        while marker not in self.log_text():
            self.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"celery worker {self.name} not ready within {timeout:.0f}s\n{self.log_tail()}", pytrace=False)
            time.sleep(0.05)

    def stop(self, grace: float = STOP_GRACE_S) -> int | None:
        """SIGTERM (Celery's warm shutdown), then SIGKILL after `grace` s."""
        return stop_process(self.proc, grace)


class CeleryRig:
    """Client apps and workers of one test; torn down by the fixture."""

    def __init__(self, request, broker_url: str, tmp_path: Path):
        self.request = request
        self.broker_url = broker_url
        self.run_dir = tmp_path / "celery"
        self.state_dir = tmp_path / "celery-state"
        self.run_dir.mkdir()
        self.state_dir.mkdir()
        self.workers: list[Worker] = []
        self.apps = []
        request.node._celery_workers = self.workers

    def client(self, queue: str, queue_args: dict | None = None):
        app = make_app(self.broker_url, queue, queue_args or {})
        self.apps.append(app)
        return app

    def start_worker(self, queue: str, queue_args: dict | None = None) -> Worker:
        worker = Worker(
            f"w{len(self.workers) + 1}-{queue}",
            queue,
            queue_args or {},
            self.broker_url,
            self.run_dir,
            self.state_dir,
        )
        self.workers.append(worker)
        worker.start()
        return worker

    def wait_ping(self, app, worker: Worker, timeout: float = READY_TIMEOUT_S) -> None:
        """A trivial task round trip through the worker's queue."""
        worker.wait_logged_ready(timeout)
        result = app.tasks["celery_app.ping"].delay()
        deadline = time.monotonic() + timeout
        while True:
            try:
                assert result.get(timeout=0.5) == "pong"
                return
            except CeleryTimeoutError:
                worker.check_alive()
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"ping task not answered within {timeout:.0f}s\n{worker.log_tail()}",
                        pytrace=False,
                    )

    def state_lines(self, name: str) -> list[str]:
        try:
            return (self.state_dir / name).read_text().splitlines()
        except FileNotFoundError:
            return []

    def close(self) -> None:
        errors = []
        for worker in self.workers:
            try:
                worker.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(exc)
        for app in self.apps:
            try:
                # The rpc:// result consumer has a connection of its own.
                consumer = app.backend.result_consumer
                if getattr(consumer, "_connection", None) is not None:
                    consumer.stop()
            except Exception:
                pass
            try:
                app.close()
            except Exception:
                pass
        if errors:
            raise errors[0]


class _WorkerLogReporter:
    """Attaches the worker logs to the report of a failing test."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        if report.when in ("setup", "call") and report.failed:
            for worker in getattr(item, "_celery_workers", ()):
                report.sections.append((f"celery worker log ({worker.name})", worker.log_tail()))
        return report


@pytest.fixture(scope="module", autouse=True)
def _worker_log_reporter(request):
    plugin = _WorkerLogReporter()
    request.config.pluginmanager.register(plugin, f"celery-worker-logs-{id(plugin)}")
    try:
        yield
    finally:
        request.config.pluginmanager.unregister(plugin)


@pytest.fixture
def celery_rig(request, broker, tmp_path, monkeypatch) -> CeleryRig:
    if broker.host != "127.0.0.1":
        pytest.skip(f"the Celery tests only run against 127.0.0.1, not {broker.host}")
    for key in list(os.environ):
        if key.startswith("CELERY_"):
            monkeypatch.delenv(key)
    rig = CeleryRig(request, f"amqp://guest:guest@127.0.0.1:{broker.port}//", tmp_path)
    try:
        yield rig
    finally:
        rig.close()


def wait_message_count(ch, queue: str, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        seen = ch.queue_declare(queue=queue, passive=True).method.message_count
        if seen == count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{queue!r} holds {seen} messages, {count} expected")
        ch.connection.process_data_events(time_limit=0.05)


# -- tests --------------------------------------------------------------------


def test_task_round_trip(celery_rig, uniq):
    queue = f"celery-rt-{uniq}"
    app = celery_rig.client(queue)
    worker = celery_rig.start_worker(queue)
    celery_rig.wait_ping(app, worker)

    result = app.tasks["celery_app.add"].delay(2, 3)
    assert result.get(timeout=20) == 5
    assert result.successful()
    runs = [json.loads(line) for line in celery_rig.state_lines("add.log")]
    assert [r["args"] for r in runs] == [[2, 3]], runs


def test_priority_queue_runs_highest_priority_first(celery_rig, connections, uniq):
    """Tasks published to an x-max-priority queue before any worker consumes
    it run highest priority first (FIFO within a priority; no priority counts
    as 0) on a worker with prefetch 1 and late acks."""
    queue = f"celery-prio-{uniq}"
    args = {"x-max-priority": 10}
    app = celery_rig.client(queue, args)
    record = app.tasks["celery_app.record"]
    published = [("p3", 3), ("none", None), ("p9", 9), ("p5a", 5), ("p1", 1), ("p10", 10), ("p5b", 5)]
    results = []
    for tag, priority in published:
        options = {} if priority is None else {"priority": priority}
        results.append(record.apply_async((tag,), **options))

    # Every message is in the queue before the worker starts consuming it.
    ch = connections.open().channel()
    wait_message_count(ch, queue, len(published))

    worker = celery_rig.start_worker(queue, args)
    worker.wait_logged_ready()
    for (tag, _), result in zip(published, results):
        assert result.get(timeout=20) == tag
    assert celery_rig.state_lines("order.log") == ["p10", "p9", "p5a", "p5b", "p3", "p1", "none"]


def test_reject_dead_letters_with_x_death(celery_rig, connections, uniq):
    """With late acks, a task raising Reject(requeue=False) makes the worker
    basic.reject the message; the queue's dead-letter exchange routes it to
    the DLQ, with an x-death entry of reason "rejected"."""
    queue = f"celery-rej-{uniq}"
    dlx = f"celery-dlx-{uniq}"
    dlq = f"celery-dlq-{uniq}"
    ch = connections.open().channel()
    ch.exchange_declare(exchange=dlx, exchange_type="fanout", auto_delete=True)
    ch.queue_declare(queue=dlq, exclusive=True)
    ch.queue_bind(queue=dlq, exchange=dlx)
    args = {"x-dead-letter-exchange": dlx}

    app = celery_rig.client(queue, args)
    worker = celery_rig.start_worker(queue, args)
    celery_rig.wait_ping(app, worker)

    result = app.tasks["celery_app.reject_me"].delay("r1")
    _method, props, body = wait_get(ch, dlq, timeout=20)

    headers = props.headers or {}
    assert headers.get("task") == "celery_app.reject_me", headers
    assert headers.get("id") == result.id, headers
    assert json.loads(body)[0] == ["r1"], body
    deaths = headers.get("x-death")
    assert isinstance(deaths, list) and len(deaths) == 1, headers
    death = deaths[0]
    assert death.get("reason") == "rejected", death
    assert death.get("queue") == queue, death
    assert death.get("count") == 1, death
    assert queue in (death.get("routing-keys") or []), death
    # Rejected once, not requeued: it ran exactly once and left the queue.
    assert celery_rig.state_lines("rejected.log") == ["r1"]
    wait_message_count(ch, queue, 0)
    worker.check_alive()


def test_late_ack_survives_worker_crash(celery_rig, uniq):
    """task_acks_late: a task that kills its worker before the ack is not lost.
    The broker requeues the unacked message when the worker's connection
    drops and delivers it to the next worker with redelivered set."""
    queue = f"celery-crash-{uniq}"
    app = celery_rig.client(queue)
    first = celery_rig.start_worker(queue)
    celery_rig.wait_ping(app, first)

    result = app.tasks["celery_app.crash_once"].delay(uniq)
    first.proc.wait(timeout=20)
    assert first.proc.returncode == 17, first.log_tail()
    with pytest.raises(CeleryTimeoutError):
        result.get(timeout=0.5)

    second = celery_rig.start_worker(queue)
    second.wait_logged_ready()
    value = result.get(timeout=20)
    assert value["runs"] == 2, value
    assert value["delivery_info"].get("redelivered") is True, value
    runs = [json.loads(line) for line in celery_rig.state_lines(f"crash-{uniq}.log")]
    assert [r["redelivered"] for r in runs] == [False, True], runs


def test_retry_then_success(celery_rig, uniq):
    """self.retry(countdown=1) twice, then success: three executions, each
    retry at least ~1 s after the previous attempt."""
    queue = f"celery-retry-{uniq}"
    app = celery_rig.client(queue)
    worker = celery_rig.start_worker(queue)
    celery_rig.wait_ping(app, worker)

    result = app.tasks["celery_app.flaky"].delay(uniq, 2)
    assert result.get(timeout=30) == {"attempt": 3, "retries": 2}
    attempts = [json.loads(line) for line in celery_rig.state_lines(f"flaky-{uniq}.log")]
    assert [a["attempt"] for a in attempts] == [1, 2, 3], attempts
    for before, after in zip(attempts, attempts[1:]):
        assert after["at"] - before["at"] >= 0.9, attempts


def test_countdown_delays_execution(celery_rig, uniq):
    """countdown=2: the worker receives the message at once, holds it unacked
    until its ETA, then runs it, not before ~2 s."""
    queue = f"celery-eta-{uniq}"
    app = celery_rig.client(queue)
    worker = celery_rig.start_worker(queue)
    celery_rig.wait_ping(app, worker)

    sent_at = time.time()
    result = app.tasks["celery_app.add"].apply_async((1, 1), countdown=2)
    # The broker delivers it at once (well before the ETA); the worker holds
    # it, unacked, instead of running it.
    received = f"celery_app.add[{result.id}] received"
    while received not in worker.log_text():
        assert time.time() < sent_at + 1.8, f"task not delivered before its ETA\n{worker.log_tail()}"
        time.sleep(0.02)
    assert celery_rig.state_lines("add.log") == [], "ran before its ETA"

    assert result.get(timeout=20) == 2
    runs = [json.loads(line) for line in celery_rig.state_lines("add.log")]
    assert [r["args"] for r in runs] == [[1, 1]], runs
    delay = runs[0]["ran_at"] - sent_at
    assert 1.9 <= delay < 15, f"ran {delay:.3f}s after publishing"
