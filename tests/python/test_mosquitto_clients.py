"""MQTT 3.1.1 and 5.0 end to end with Debian's mosquitto_pub / mosquitto_sub
(package `mosquitto-clients`), plus pika on the AMQP side.

The command-line clients are a second, independent MQTT implementation
(libmosquitto) next to paho in test_mqtt.py / test_mqtt5.py. They are run as
subprocesses: every run is bounded twice (mosquitto_sub's own `-W` / `-C`, and
a subprocess timeout), and a subscriber still running at the end of a test is
killed through its own Popen handle, never by name.

Readiness: a subscriber started with `-d` prints `Subscribed (mid: ...)` once
its SUBACK is in; its stdout is made line-buffered with `stdbuf -oL`
(coreutils), otherwise libc would hold the lines back while it runs. Messages
are printed with `-F` and a `MSG|` prefix, so they stand apart from the debug
lines.

The binaries are required: if they are missing the tests fail (CI installs
`mosquitto-clients`), they are not skipped. mosquitto_pub / mosquitto_sub read
default options from $XDG_CONFIG_HOME; it points to an empty directory here.

The shared `broker` fixture serves the tests that need no restart; topics and
client ids carry a unique suffix (`uniq`). The restart tests use `own_broker`,
whose ports change on every restart.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import threading
import time

import pika
import pytest

from helpers import consume

WAIT = 10.0  # bound on any single wait, seconds
QUIET = 0.5  # how long to watch for something that must not arrive
PROC_TIMEOUT = 15.0  # subprocess timeout for one mosquitto_pub / mosquitto_sub run
MARK = "MSG|"  # prefix of the lines mosquitto_sub prints for messages in -d mode

VERSIONS = ["mqttv31", "mqttv311", "mqttv5"]

# mosquitto_sub's exit status when -W ran out before -C was reached.
SUB_TIMED_OUT = 27

_REQUIRED = ("mosquitto_pub", "mosquitto_sub", "stdbuf")
_CONFIG_DIR: str | None = None


def _require_tools() -> None:
    missing = [t for t in _REQUIRED if shutil.which(t) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found on PATH: these tests drive the broker with "
            "Debian's MQTT command-line clients; install them with "
            "`apt-get install -y mosquitto-clients` (stdbuf is in coreutils)",
            pytrace=False,
        )


def _env() -> dict[str, str]:
    """The environment for the clients: no user default options file."""
    global _CONFIG_DIR
    if _CONFIG_DIR is None:
        _CONFIG_DIR = tempfile.mkdtemp(prefix="mosquitto-clients-config-")
        atexit.register(shutil.rmtree, _CONFIG_DIR, True)
    env = dict(os.environ)
    env["XDG_CONFIG_HOME"] = _CONFIG_DIR
    return env


def mqtt_port(endpoint) -> int:
    if endpoint.mqtt_port is None:
        pytest.skip("the broker announced no MQTT listener")
    return endpoint.mqtt_port


def conn_args(endpoint, version: str) -> list[str]:
    return [
        "-h",
        endpoint.host,
        "-p",
        str(mqtt_port(endpoint)),
        "-u",
        "guest",
        "-P",
        "guest",
        "-V",
        version,
    ]


def show(argv: list[str]) -> str:
    return " ".join(a if a and " " not in a else repr(a) for a in argv)


def mosquitto_pub(endpoint, version: str, *args: str, stdin: bytes | None = None) -> None:
    """Run mosquitto_pub to completion; fail the test unless it exits 0.

    At QoS 1 / 2 mosquitto_pub exits only after PUBACK / PUBCOMP."""
    _require_tools()
    argv = ["mosquitto_pub", *conn_args(endpoint, version), *args]
    try:
        done = subprocess.run(
            argv,
            input=stdin if stdin is not None else b"",
            capture_output=True,
            timeout=PROC_TIMEOUT,
            env=_env(),
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"`{show(argv)}` did not finish within {PROC_TIMEOUT}s: {e.stderr!r}")
    assert done.returncode == 0, (
        f"`{show(argv)}` exited {done.returncode}\n"
        f"stdout: {done.stdout.decode(errors='replace')}\n"
        f"stderr: {done.stderr.decode(errors='replace')}"
    )


def sub_once(endpoint, version: str, *args: str) -> tuple[int, str, str]:
    """Run mosquitto_sub to completion (the caller bounds it with -C / -W / -E)."""
    _require_tools()
    argv = ["mosquitto_sub", *conn_args(endpoint, version), *args]
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROC_TIMEOUT,
            env=_env(),
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(
            f"`{show(argv)}` did not finish within {PROC_TIMEOUT}s\n"
            f"stdout: {e.stdout!r}\nstderr: {e.stderr!r}"
        )
    return (
        done.returncode,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
    )


class Sub:
    """A mosquitto_sub running in the background, with -d and a MSG| format.

    stdout is read line by line on a thread; `wait_subscribed` waits for the
    SUBACK, `messages` gives the message lines (without the prefix)."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._stderr = b""
        self.proc = subprocess.Popen(
            ["stdbuf", "-oL", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(),
        )
        self._out_thread = threading.Thread(target=self._read_stdout, daemon=True)
        self._err_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._out_thread.start()
        self._err_thread.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self._lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self._stderr = self.proc.stderr.read()

    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def messages(self) -> list[str]:
        return [line[len(MARK) :] for line in self.lines() if line.startswith(MARK)]

    def describe(self) -> str:
        out = "\n".join(self.lines())
        return (
            f"`{show(self.argv)}` (exit status {self.proc.poll()})\n--- stdout ---\n{out}\n"
            f"--- stderr ---\n{self._stderr.decode(errors='replace')}"
        )

    def wait_for(self, pred, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self._lines):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    break
                self._cond.wait(remaining)
            ok = pred(self._lines)
        if not ok:
            self._err_thread.join(timeout=1)
            pytest.fail(f"no {what} within {timeout}s from {self.describe()}")

    def wait_subscribed(self, timeout: float = WAIT) -> None:
        self.wait_for(
            lambda lines: any(line.startswith("Subscribed (mid") for line in lines),
            timeout,
            "SUBACK",
        )

    def wait_messages(self, count: int, timeout: float = WAIT) -> list[str]:
        self.wait_for(
            lambda lines: sum(1 for line in lines if line.startswith(MARK)) >= count,
            timeout,
            f"{count} message(s)",
        )
        return self.messages()

    def finish(self, timeout: float = PROC_TIMEOUT) -> int:
        """Wait for the process to end by itself (-C / -W); its exit status."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"mosquitto_sub did not exit within {timeout}s: {self.describe()}")
        self._out_thread.join(timeout=5)
        self._err_thread.join(timeout=5)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: the client gets no chance to send DISCONNECT."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def subs():
    """Starts background mosquitto_sub processes; kills those still running at
    teardown (only these, through their Popen handles)."""
    started: list[Sub] = []

    def start(endpoint, version: str, *args: str, fmt: str = "%q|%r|%t|%p") -> Sub:
        _require_tools()
        argv = [
            "mosquitto_sub",
            *conn_args(endpoint, version),
            "-d",
            "-F",
            MARK + fmt,
            *args,
        ]
        s = Sub(argv)
        started.append(s)
        return s

    try:
        yield start
    finally:
        for s in started:
            s.stop()


def split(line: str, n: int) -> list[str]:
    """A MSG line's fields: the last one (the payload) may contain '|'."""
    return line.split("|", n - 1)


# -- (1) QoS 2 exactly once ---------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_qos2_exactly_once_counted(broker, subs, uniq, version):
    """mosquitto_pub -q 2 -l publishes N lines, a mosquitto_sub -q 2 -C N
    receives each exactly once, at QoS 2, in order."""
    n = 100
    topic = f"eo/{uniq}/{version}"
    payloads = [f"{uniq}-{i:03d}" for i in range(n)]
    sub = subs(
        broker,
        version,
        "-i",
        f"eos-{uniq}",
        "-q",
        "2",
        "-t",
        topic,
        "-C",
        str(n),
        "-W",
        str(int(PROC_TIMEOUT)),
        fmt="%q|%t|%p",
    )
    sub.wait_subscribed()
    mosquitto_pub(
        broker,
        version,
        "-i",
        f"eop-{uniq}",
        "-q",
        "2",
        "-t",
        topic,
        "-l",
        stdin=("\n".join(payloads) + "\n").encode(),
    )
    rc = sub.finish()
    assert rc == 0, f"mosquitto_sub -C {n}: {sub.describe()}"
    got = [split(line, 3) for line in sub.messages()]
    assert len(got) == n, sub.describe()
    bodies = [p for _q, _t, p in got]
    dupes = sorted({p for p in bodies if bodies.count(p) > 1})
    missing = sorted(set(payloads) - set(bodies))
    assert not dupes and not missing, f"duplicated: {dupes}, missing: {missing}"
    assert bodies == payloads, "order of one publisher's QoS 2 messages"
    assert {q for q, _t, _p in got} == {"2"}
    assert {t for _q, t, _p in got} == {topic}


# -- (2) retained messages ----------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_wildcard_and_clear(broker, subs, uniq, version):
    """A retained message reaches a later wildcard subscriber with the retain
    flag set; a live one does not carry it; an empty retained publish clears."""
    topic = f"t/{uniq}/a"
    body = f"kept {uniq}"
    mosquitto_pub(broker, version, "-q", "1", "-r", "-t", topic, "-m", body)

    # -v: "<topic> <payload>".
    rc, out, err = sub_once(broker, version, "-t", f"t/{uniq}/#", "-v", "-C", "1", "-W", "10")
    assert (rc, out) == (0, f"{topic} {body}\n"), f"exit {rc}, stdout {out!r}, stderr {err!r}"

    # -F '%r %t %p': the retain flag is 1.
    rc, out, err = sub_once(
        broker, version, "-t", f"t/{uniq}/#", "-F", "%r %t %p", "-C", "1", "-W", "10"
    )
    assert (rc, out) == (0, f"1 {topic} {body}\n"), f"exit {rc}, stdout {out!r}, stderr {err!r}"

    # Once subscribed, a live publish arrives with retain 0, after the retained one.
    live = subs(broker, version, "-q", "1", "-t", f"t/{uniq}/#", "-C", "2", "-W", "10")
    live.wait_subscribed()
    live.wait_messages(1)
    mosquitto_pub(broker, version, "-q", "1", "-t", f"t/{uniq}/b", "-m", "live")
    assert live.finish() == 0, live.describe()
    assert live.messages() == [f"1|1|{topic}|{body}", f"1|0|t/{uniq}/b|live"]

    # Empty retained publish: nothing is retained any more under t/<uniq>/.
    mosquitto_pub(broker, version, "-q", "1", "-r", "-n", "-t", topic)
    rc, out, err = sub_once(broker, version, "-t", f"t/{uniq}/#", "-v", "-W", "2")
    assert (rc, out) == (SUB_TIMED_OUT, ""), (
        f"after clearing: expected no message (exit {SUB_TIMED_OUT} on -W), "
        f"got exit {rc}, stdout {out!r}, stderr {err!r}"
    )


# -- (3) will -----------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_will_on_sigkill_not_on_clean_exit(broker, subs, uniq, version):
    """A client that ends with DISCONNECT leaves no will; one killed with
    SIGKILL (socket closed without DISCONNECT) has its will published."""
    will_topic = f"w/{uniq}"
    watcher = subs(broker, version, "-q", "1", "-t", will_topic, "-C", "1", "-W", "15")
    watcher.wait_subscribed()

    def will_args(tag: str) -> list[str]:
        return [
            "-i",
            f"w{tag}-{uniq}",
            "-t",
            f"v/{uniq}/{tag}",
            "--will-topic",
            will_topic,
            "--will-payload",
            f"{tag} gone {uniq}",
            "--will-qos",
            "1",
        ]

    # Clean: -E subscribes, then disconnects with DISCONNECT and exits.
    rc, out, err = sub_once(broker, version, *will_args("clean"), "-E", "-W", "10")
    assert rc == 0, f"mosquitto_sub -E: exit {rc}, stdout {out!r}, stderr {err!r}"
    time.sleep(QUIET)
    assert watcher.messages() == [], f"will published on a clean exit: {watcher.describe()}"

    victim = subs(broker, version, *will_args("killed"), "-W", "15")
    victim.wait_subscribed()
    victim.kill()
    got = watcher.wait_messages(1)
    assert got == [f"1|0|{will_topic}|killed gone {uniq}"], watcher.describe()
    assert watcher.finish() == 0


# -- (4) persistent session across a broker restart ---------------------------


def _persistent_sub_args(client_id: str, topic: str) -> list[str]:
    return ["-c", "-i", client_id, "-q", "1", "-t", topic]


@pytest.mark.parametrize("version", VERSIONS)
def test_persistent_session_survives_restart(own_broker, uniq, version):
    """mosquitto_sub -c creates the session and leaves (-E); after a broker
    restart, QoS 1 messages published for it are kept and delivered when it
    comes back."""
    n = 10
    client_id = f"ps-{uniq}"
    topic = f"x/{uniq}"
    rc, out, err = sub_once(
        own_broker.endpoint, version, *_persistent_sub_args(client_id, topic), "-E", "-W", "10"
    )
    assert rc == 0, f"mosquitto_sub -c -E: exit {rc}, stdout {out!r}, stderr {err!r}"

    endpoint = own_broker.restart()

    payloads = [f"after-{uniq}-{i}" for i in range(n)]
    mosquitto_pub(
        endpoint, version, "-q", "1", "-t", topic, "-l", stdin="\n".join(payloads).encode() + b"\n"
    )
    rc, out, err = sub_once(
        endpoint,
        version,
        *_persistent_sub_args(client_id, topic),
        "-C",
        str(n),
        "-W",
        "10",
        "-F",
        "%q|%t|%p",
    )
    assert rc == 0, f"reconnect -C {n}: exit {rc}, stdout {out!r}, stderr {err!r}"
    assert out.splitlines() == [f"1|{topic}|{p}" for p in payloads]


@pytest.mark.parametrize("version", VERSIONS)
def test_persistent_session_messages_queued_before_restart(own_broker, uniq, version):
    """QoS 1 messages queued for an offline persistent session before a
    restart are still delivered after it."""
    n = 10
    client_id = f"pq-{uniq}"
    topic = f"y/{uniq}"
    rc, out, err = sub_once(
        own_broker.endpoint, version, *_persistent_sub_args(client_id, topic), "-E", "-W", "10"
    )
    assert rc == 0, f"mosquitto_sub -c -E: exit {rc}, stdout {out!r}, stderr {err!r}"
    payloads = [f"before-{uniq}-{i}" for i in range(n)]
    mosquitto_pub(
        own_broker.endpoint,
        version,
        "-q",
        "1",
        "-t",
        topic,
        "-l",
        stdin="\n".join(payloads).encode() + b"\n",
    )

    endpoint = own_broker.restart()

    rc, out, err = sub_once(
        endpoint,
        version,
        *_persistent_sub_args(client_id, topic),
        "-C",
        str(n),
        "-W",
        "10",
        "-F",
        "%q|%t|%p",
    )
    assert rc == 0, f"reconnect -C {n}: exit {rc}, stdout {out!r}, stderr {err!r}"
    assert out.splitlines() == [f"1|{topic}|{p}" for p in payloads]


# -- (5) MQTT 5 properties to AMQP --------------------------------------------


def test_v5_publish_properties_reach_pika(broker, connections, uniq):
    conn = connections.open()
    ch = conn.channel()
    q = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(queue=q, exchange="amq.topic", routing_key=f"p.{uniq}.data")

    mosquitto_pub(
        broker,
        "mqttv5",
        "-i",
        f"pp-{uniq}",
        "-q",
        "1",
        "-t",
        f"p/{uniq}/data",
        "-m",
        "with properties",
        "-D",
        "publish",
        "user-property",
        "k",
        "v",
        "-D",
        "publish",
        "content-type",
        "text/plain",
        "-D",
        "publish",
        "correlation-data",
        "abc",
        "-D",
        "publish",
        "response-topic",
        f"r/{uniq}",
    )
    (d,) = consume(conn, ch, q, 1, timeout=WAIT)
    assert d.method.routing_key == f"p.{uniq}.data"
    assert d.body == b"with properties"
    p = d.properties
    assert p.content_type == "text/plain"
    assert p.correlation_id == "abc"
    assert p.reply_to == f"r/{uniq}"
    assert p.delivery_mode == 2, "QoS 1 is persistent"
    assert p.headers is not None, p
    assert p.headers.get("k") == "v", p.headers
    assert p.headers.get("x-mqtt-client-id") == f"pp-{uniq}", p.headers


# -- (6) AMQP to mosquitto_sub ------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_amqp_publish_reaches_mosquitto_sub(broker, connections, subs, uniq, version):
    """pika publishes to amq.topic; mosquitto_sub (granted QoS 1) gets the
    messages on the topic with '.' -> '/', persistent at QoS 1 and transient at
    QoS 0. An MQTT 5 subscriber also gets content type, correlation data and
    the headers as user properties."""
    fmt = "%q|%t|%C|%D|%P|%p" if version == "mqttv5" else "%q|%t|%p"
    sub = subs(broker, version, "-q", "1", "-t", f"a/{uniq}/+", "-C", "2", "-W", "15", fmt=fmt)
    sub.wait_subscribed()

    ch = connections.open().channel()
    ch.basic_publish(
        exchange="amq.topic",
        routing_key=f"a.{uniq}.one",
        body=b"persistent from pika",
        properties=pika.BasicProperties(
            delivery_mode=2,
            content_type="text/plain",
            correlation_id=f"c-{uniq}",
            headers={"k": "v"},
        ),
    )
    ch.basic_publish(
        exchange="amq.topic",
        routing_key=f"a.{uniq}.two",
        body=b"transient from pika",
        properties=pika.BasicProperties(delivery_mode=1),
    )
    assert sub.finish() == 0, sub.describe()
    msgs = sub.messages()
    if version == "mqttv5":
        got = {tuple(split(m, 6))[1]: split(m, 6) for m in msgs}
        assert set(got) == {f"a/{uniq}/one", f"a/{uniq}/two"}, sub.describe()
        q, _t, ctype, corr, user, body = got[f"a/{uniq}/one"]
        assert (q, ctype, corr, body) == ("1", "text/plain", f"c-{uniq}", "persistent from pika")
        assert "k:v" in user.split(), f"user properties {user!r}"
        q, _t, _ctype, _corr, _user, body = got[f"a/{uniq}/two"]
        assert (q, body) == ("0", "transient from pika")
    else:
        got = {split(m, 3)[1]: split(m, 3) for m in msgs}
        assert got == {
            f"a/{uniq}/one": ["1", f"a/{uniq}/one", "persistent from pika"],
            f"a/{uniq}/two": ["0", f"a/{uniq}/two", "transient from pika"],
        }, sub.describe()
