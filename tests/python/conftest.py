"""Fixtures for the pika end-to-end tests.

The broker binary is started by these fixtures; they never touch a process they
did not start themselves, and they stop it through its Popen handle only
(SIGTERM, then SIGKILL after 10 s).

Environment:
  SWITCHYARD_BIN       broker binary (default: <repo>/target/release/switchyard)
  SWITCHYARD_EXTERNAL  host:port of an already running AMQP broker (for example a
                       real RabbitMQ used to sanity-check the tests).  No binary is
                       started then, and tests that restart or kill the broker are
                       skipped.  Never set by .ci/run.  The other listeners of that
                       broker are given by SWITCHYARD_EXTERNAL_MQTT,
                       SWITCHYARD_EXTERNAL_STOMP, SWITCHYARD_EXTERNAL_WEB_STOMP and
                       SWITCHYARD_EXTERNAL_WEB_MQTT (ports on the same host).
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "release" / "switchyard"

READY_TIMEOUT_S = 20.0
STOP_GRACE_S = 10.0
LOG_TAIL_LINES = 80

EXTERNAL = os.environ.get("SWITCHYARD_EXTERNAL", "").strip()

# Every process started by this module, so that an abnormal exit of pytest still
# stops them (and only them).
_STARTED: list[subprocess.Popen] = []
# Brokers whose log is attached to the report of a failing test.
_LOGGED_BROKERS: list["BrokerProcess"] = []


@atexit.register
def _kill_leftovers() -> None:
    for proc in _STARTED:
        if proc.poll() is None:
            proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def track_process(proc: subprocess.Popen) -> None:
    """Kill `proc` when pytest exits, if it is still running (a test that
    ended abnormally did not stop it)."""
    _STARTED.append(proc)


def stop_process(proc: subprocess.Popen | None, grace: float) -> int | None:
    """Stop a process this test suite started: SIGTERM, wait up to `grace`
    seconds, then SIGKILL. Returns its exit code (None if never started)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


# Listeners besides AMQP the broker is started with, as the ready file names
# them.
LISTENERS = ("mqtt", "stomp", "web_stomp", "web_mqtt", "management", "prometheus")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    # Other listeners' ports, from the ready file's `mqtt=`, `stomp=`,
    # `web_stomp=` and `web_mqtt=` lines (None if absent).
    mqtt_port: int | None = None
    stomp_port: int | None = None
    web_stomp_port: int | None = None
    web_mqtt_port: int | None = None
    management_port: int | None = None
    prometheus_port: int | None = None

    def params(self, heartbeat: int = 30, **kwargs) -> pika.ConnectionParameters:
        return pika.ConnectionParameters(
            host=self.host,
            port=self.port,
            virtual_host="/",
            credentials=pika.PlainCredentials("guest", "guest"),
            heartbeat=heartbeat,
            connection_attempts=1,
            socket_timeout=10,
            stack_timeout=20,
            blocked_connection_timeout=30,
            **kwargs,
        )

    def connect(self, **kwargs) -> pika.BlockingConnection:
        return pika.BlockingConnection(self.params(**kwargs))


def _parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ValueError(f"not host:port: {text!r}")
    return host, int(port)


class BrokerProcess:
    """One switchyard broker process on a given data dir; can be restarted."""

    def __init__(self, binary: Path, data_dir: Path, work_dir: Path) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.work_dir = work_dir
        self.ready_file = work_dir / "ready"
        self.log_path = work_dir / "broker.log"
        self.proc: subprocess.Popen | None = None
        self.endpoint: Endpoint | None = None
        self.starts = 0

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Endpoint:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if not self.binary.is_file() or not os.access(self.binary, os.X_OK):
            pytest.fail(
                f"broker binary {self.binary} not found or not executable; build it with "
                "`cargo build --release -p switchyard-server` or set SWITCHYARD_BIN",
                pytrace=False,
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.ready_file.unlink()
        except FileNotFoundError:
            pass
        self.starts += 1
        cmd = [
            str(self.binary),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--amqp",
            "127.0.0.1:0",
            "--mqtt",
            "127.0.0.1:0",
            "--stomp",
            "127.0.0.1:0",
            "--web-stomp",
            "127.0.0.1:0",
            "--web-mqtt",
            "127.0.0.1:0",
            "--management",
            "127.0.0.1:0",
            "--prometheus",
            "127.0.0.1:0",
            "--ready-file",
            str(self.ready_file),
        ]
        # Hermetic: no SWITCHYARD_* settings (config file, data dir, ...) leak in
        # from the environment; the cwd is private so no ./config file is found.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
        env.setdefault("RUST_BACKTRACE", "1")
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.work_dir,
                env=env,
                # Own session: a Ctrl-C aimed at pytest does not hit the broker
                # first; we stop it ourselves in teardown.
                start_new_session=True,
            )
        track_process(self.proc)
        self.endpoint = self._wait_ready()
        return self.endpoint

    def _wait_ready(self) -> Endpoint:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                pytest.fail(
                    f"broker exited with code {code} before becoming ready\n{self.log_tail()}",
                    pytrace=False,
                )
            try:
                text = self.ready_file.read_text()
            except FileNotFoundError:
                text = ""
            amqp = None
            ports: dict[str, int] = {}
            for line in text.splitlines():
                key, sep, value = line.partition("=")
                if sep and key.strip() == "amqp":
                    amqp = _parse_hostport(value)
                elif sep and key.strip() in LISTENERS:
                    ports[f"{key.strip()}_port"] = _parse_hostport(value)[1]
            # The broker writes the file once every listener is bound.
            if amqp is not None and len(ports) == len(LISTENERS):
                host, port = amqp
                if host in ("0.0.0.0", "::", ""):
                    host = "127.0.0.1"
                return Endpoint(host, port, **ports)
            time.sleep(0.02)
        self.stop()
        pytest.fail(
            f"broker did not write an amqp= line to {self.ready_file} within "
            f"{READY_TIMEOUT_S:.0f}s\n{self.log_tail()}",
            pytrace=False,
        )

    def stop(self, grace: float = STOP_GRACE_S) -> int | None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL. Returns the exit code."""
        code = stop_process(self.proc, grace)
        self.endpoint = None
        return code

    def kill(self) -> None:
        """SIGKILL (crash simulation)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        self.endpoint = None

    def restart(self) -> Endpoint:
        code = self.stop()
        # A graceful shutdown should exit cleanly; a non-zero code (or having
        # needed SIGKILL) is a broker bug worth surfacing.
        assert code == 0, f"broker exited with {code} on SIGTERM\n{self.log_tail()}"
        return self.start()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no broker log)"
        tail = text.splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)


def _external_endpoint() -> Endpoint:
    host, port = _parse_hostport(EXTERNAL)
    ports = {}
    for name in LISTENERS:
        value = os.environ.get(f"SWITCHYARD_EXTERNAL_{name.upper()}", "").strip()
        if value:
            ports[f"{name}_port"] = int(value)
    return Endpoint(host, port, **ports)


def _binary() -> Path:
    return Path(os.environ.get("SWITCHYARD_BIN", str(DEFAULT_BIN))).resolve()


# -- fixtures -----------------------------------------------------------------


@pytest.fixture(scope="session")
def broker(tmp_path_factory) -> Endpoint:
    """A broker shared by the tests that need no restart."""
    if EXTERNAL:
        yield _external_endpoint()
        return
    base = tmp_path_factory.mktemp("shared-broker")
    bp = BrokerProcess(_binary(), base / "data", base / "run")
    _LOGGED_BROKERS.append(bp)
    try:
        yield bp.start()
    finally:
        bp.stop()
        _LOGGED_BROKERS.remove(bp)


@pytest.fixture
def own_broker(tmp_path) -> BrokerProcess:
    """A broker private to one test, which the test may restart or kill."""
    if EXTERNAL:
        pytest.skip(
            "SWITCHYARD_EXTERNAL is set: this test restarts/kills the broker, "
            "which needs a broker started by the test itself"
        )
    bp = BrokerProcess(_binary(), tmp_path / "data", tmp_path / "run")
    _LOGGED_BROKERS.append(bp)
    try:
        bp.start()
        yield bp
    finally:
        bp.stop()
        _LOGGED_BROKERS.remove(bp)


class Connections:
    """Opens connections and closes every one of them at teardown.

    Without an explicit endpoint, connections go to the shared `broker` fixture,
    which is only started on first such use (so tests with their own broker do
    not start the shared one)."""

    def __init__(self, request) -> None:
        self._request = request
        self._opened: list[pika.BlockingConnection] = []

    def open(self, endpoint: Endpoint | None = None, **kwargs) -> pika.BlockingConnection:
        if endpoint is None:
            endpoint = self._request.getfixturevalue("broker")
        conn = endpoint.connect(**kwargs)
        self._opened.append(conn)
        return conn

    def close_all(self) -> None:
        for conn in self._opened:
            try:
                if conn.is_open:
                    conn.close()
            except Exception:
                pass
        self._opened.clear()


@pytest.fixture
def connections(request) -> Connections:
    conns = Connections(request)
    try:
        yield conns
    finally:
        conns.close_all()


@pytest.fixture
def uniq() -> str:
    """A short unique suffix so that names never collide, even on a shared or
    external broker."""
    return uuid.uuid4().hex[:10]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed:
        for bp in _LOGGED_BROKERS:
            report.sections.append(("switchyard broker log", bp.log_tail()))
    return report
