"""STOMP test helpers: a stomp.py client that collects frames into queues, and
a raw-socket client with a small bounded frame reader for exact wire checks.

Every wait is bounded (WAIT seconds at most); nothing here sleeps to decide
whether something happened, except `assert_no_message`, which by nature
watches for a while (QUIET seconds) for something that must not arrive.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

import pytest
import stomp

WAIT = 10.0  # bound on any single wait, seconds
QUIET = 0.7  # how long to watch for something that must not arrive

VERSIONS = ["1.0", "1.1", "1.2"]

_CONNECTION_CLASSES = {
    "1.0": stomp.StompConnection10,
    "1.1": stomp.StompConnection11,
    "1.2": stomp.StompConnection12,
}


def stomp_port(endpoint) -> int:
    if endpoint.stomp_port is None:
        pytest.skip("the broker announced no STOMP listener")
    return endpoint.stomp_port


def new_id(prefix: str = "r") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------
# stomp.py client
# ---------------------------------------------------------------------------


class StompClient(stomp.ConnectionListener):
    """One stomp.py connection of a given protocol version.

    Frames the broker sends are collected by the listener callbacks (on
    stomp.py's receiver thread) into queues that the test reads with bounded
    waits. reconnect_attempts_max is 1: a connection the broker ends stays
    ended, so a test sees exactly what the broker did. Bodies are bytes
    (auto_decode off)."""

    def __init__(
        self,
        endpoint,
        version: str = "1.2",
        heartbeats: tuple[int, int] = (0, 0),
        heart_beat_receive_scale: float = 1.5,
    ) -> None:
        self.version = version
        self.messages: queue.Queue = queue.Queue()
        self.errors: queue.Queue = queue.Queue()
        self.heartbeats_received = 0
        self.heartbeat_timeout = threading.Event()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connected_frame = None
        self._receipts: set[str] = set()
        self._receipt_cond = threading.Condition()
        cls = _CONNECTION_CLASSES[version]
        kwargs = dict(
            host_and_ports=[(endpoint.host, stomp_port(endpoint))],
            reconnect_attempts_max=1,
            timeout=WAIT,
            auto_decode=False,
        )
        if version != "1.0":
            # `host` names the virtual host (1.2 requires it; stomp.py would
            # otherwise send the IP address, which is no vhost).
            kwargs.update(
                heartbeats=heartbeats,
                heart_beat_receive_scale=heart_beat_receive_scale,
                vhost="/",
            )
        self.conn = cls(**kwargs)
        self.conn.set_listener("test", self)

    # -- listener callbacks (receiver thread) --------------------------------

    def on_connected(self, frame):
        self.connected_frame = frame
        self.connected.set()

    def on_message(self, frame):
        self.messages.put(frame)

    def on_error(self, frame):
        self.errors.put(frame)

    def on_receipt(self, frame):
        with self._receipt_cond:
            self._receipts.add(frame.headers.get("receipt-id"))
            self._receipt_cond.notify_all()

    def on_heartbeat(self):
        self.heartbeats_received += 1

    def on_heartbeat_timeout(self):
        self.heartbeat_timeout.set()

    def on_disconnected(self):
        self.disconnected.set()
        with self._receipt_cond:
            self._receipt_cond.notify_all()

    # -- connection ------------------------------------------------------------

    def connect(self, login: str = "guest", passcode: str = "guest", **headers):
        """CONNECT (STOMP for 1.1/1.2) and wait for CONNECTED; fail on ERROR."""
        self.conn.connect(login, passcode, wait=False, headers=headers)
        deadline = time.monotonic() + WAIT
        while not self.connected.is_set():
            if not self.errors.empty():
                err = self.errors.get_nowait()
                pytest.fail(f"STOMP {self.version} CONNECT refused: {err.headers} {err.body!r}")
            if self.disconnected.is_set():
                pytest.fail(f"STOMP {self.version}: connection closed before CONNECTED")
            if time.monotonic() > deadline:
                pytest.fail(f"STOMP {self.version}: no CONNECTED within {WAIT}s")
            self.connected.wait(0.02)
        return self.connected_frame

    def wait_receipt(self, receipt: str, what: str = "frame") -> None:
        deadline = time.monotonic() + WAIT
        with self._receipt_cond:
            while receipt not in self._receipts:
                if not self.errors.empty():
                    err = self.errors.queue[0]
                    pytest.fail(f"ERROR instead of RECEIPT for {what}: {err.headers} {err.body!r}")
                if self.disconnected.is_set():
                    pytest.fail(f"connection closed before the RECEIPT for {what}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"no RECEIPT {receipt!r} for {what} within {WAIT}s")
                self._receipt_cond.wait(min(remaining, 0.05))
            self._receipts.discard(receipt)

    def has_receipt(self, receipt: str) -> bool:
        with self._receipt_cond:
            return receipt in self._receipts

    # -- frames ----------------------------------------------------------------

    def send(self, destination: str, body: bytes | str, wait: bool = True, **headers) -> None:
        """SEND, by default with a receipt that is waited for (so that the
        broker has processed it before the test goes on)."""
        if wait:
            headers["receipt"] = new_id("send")
        self.conn.send(destination, body, headers=headers)
        if wait:
            self.wait_receipt(headers["receipt"], f"SEND to {destination}")

    def subscribe(self, destination: str, sub_id: str, ack: str = "auto", wait=True, **headers):
        if wait:
            headers["receipt"] = new_id("sub")
        if self.version == "1.0":
            self.conn.subscribe(destination, id=sub_id, ack=ack, headers=headers)
        else:
            self.conn.subscribe(destination, sub_id, ack=ack, headers=headers)
        if wait:
            self.wait_receipt(headers["receipt"], f"SUBSCRIBE to {destination}")

    def unsubscribe(self, sub_id: str, wait: bool = True, **headers) -> None:
        if wait:
            headers["receipt"] = new_id("unsub")
        if self.version == "1.0":
            self.conn.unsubscribe(id=sub_id, headers=headers)
        else:
            self.conn.unsubscribe(sub_id, headers=headers)
        if wait:
            self.wait_receipt(headers["receipt"], f"UNSUBSCRIBE {sub_id}")

    def _ack_headers(self, msg) -> dict:
        if self.version == "1.2":
            return {"id": msg.headers["ack"]}
        if self.version == "1.1":
            return {"message-id": msg.headers["message-id"], "subscription": msg.headers["subscription"]}
        return {"message-id": msg.headers["message-id"]}

    def ack(self, msg, transaction: str | None = None, wait: bool = True) -> None:
        self._ack_or_nack("ACK", msg, transaction, wait)

    def nack(self, msg, transaction: str | None = None, wait: bool = True) -> None:
        self._ack_or_nack("NACK", msg, transaction, wait)

    def _ack_or_nack(self, cmd, msg, transaction, wait) -> None:
        headers = self._ack_headers(msg)
        if transaction:
            headers["transaction"] = transaction
        if wait:
            headers["receipt"] = new_id(cmd.lower())
        self.conn.send_frame(cmd, headers)
        if wait:
            self.wait_receipt(headers["receipt"], cmd)

    def tx(self, cmd: str, transaction: str, wait: bool = True) -> None:
        """BEGIN / COMMIT / ABORT."""
        headers = {"transaction": transaction}
        if wait:
            headers["receipt"] = new_id(cmd.lower())
        self.conn.send_frame(cmd, headers)
        if wait:
            self.wait_receipt(headers["receipt"], f"{cmd} {transaction}")

    def next_message(self, timeout: float = WAIT):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            errs = list(self.errors.queue)
            pytest.fail(f"STOMP {self.version}: no MESSAGE within {timeout}s (errors: {errs})")

    def messages_n(self, n: int, timeout: float = WAIT) -> list:
        deadline = time.monotonic() + timeout
        got = []
        for _ in range(n):
            got.append(self.next_message(max(0.01, deadline - time.monotonic())))
        return got

    def assert_no_message(self, within: float = QUIET) -> None:
        try:
            msg = self.messages.get(timeout=within)
        except queue.Empty:
            return
        pytest.fail(f"unexpected MESSAGE {msg.headers} {msg.body!r}")

    def next_error(self, timeout: float = WAIT):
        try:
            return self.errors.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no ERROR frame within {timeout}s")

    def disconnect(self) -> None:
        """DISCONNECT with a receipt, wait for it and for the socket to close."""
        receipt = new_id("disc")
        self.conn.disconnect(receipt=receipt)
        assert self.disconnected.wait(WAIT), "DISCONNECT not completed"

    def close(self) -> None:
        """Teardown: end the connection whatever state it is in."""
        try:
            if self.conn.is_connected():
                self.conn.disconnect()
        except Exception:
            pass
        try:
            self.conn.transport.disconnect_socket()
        except Exception:
            pass


# ---------------------------------------------------------------------------
# raw socket client
# ---------------------------------------------------------------------------


@dataclass
class RawFrame:
    command: str
    # Header lines as sent, in order, values NOT unescaped.
    header_list: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def headers(self) -> dict[str, str]:
        """First occurrence of each header wins (STOMP 1.2, section
        'Repeated Header Entries')."""
        out: dict[str, str] = {}
        for k, v in self.header_list:
            out.setdefault(k, v)
        return out


class ConnectionClosed(Exception):
    pass


def encode_frame(
    command: str, headers: list[tuple[str, str]] | dict | None = None, body: bytes = b"", eol: bytes = b"\n"
) -> bytes:
    """A frame with header text exactly as given (no escaping)."""
    if isinstance(headers, dict):
        headers = list(headers.items())
    out = command.encode() + eol
    for k, v in headers or []:
        out += f"{k}:{v}".encode() + eol
    return out + eol + body + b"\x00"


class RawStomp:
    """A plain TCP socket speaking STOMP; frames are read with bounded waits."""

    def __init__(self, endpoint) -> None:
        self.sock = socket.create_connection((endpoint.host, stomp_port(endpoint)), timeout=WAIT)
        self.buf = b""
        self.eof = False
        self.heartbeats: list[float] = []  # monotonic times of EOLs received between frames

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, command, headers=None, body: bytes = b"", eol: bytes = b"\n") -> None:
        self.send_raw(encode_frame(command, headers, body, eol))

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError from None
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            raise ConnectionClosed
        self.buf += data

    def read_frame(self, timeout: float = WAIT) -> RawFrame:
        """The next frame (heart-beat EOLs in between are recorded and skipped).

        Raises TimeoutError if none is complete within `timeout`, and
        ConnectionClosed if the broker closes the socket first."""
        deadline = time.monotonic() + timeout
        while True:
            # Skip heart-beats / EOLs between frames.
            while self.buf[:1] in (b"\n", b"\r"):
                if self.buf[:1] == b"\n":
                    self.heartbeats.append(time.monotonic())
                self.buf = self.buf[1:]
            frame = self._try_parse()
            if frame is not None:
                return frame
            self._fill(deadline)

    def _try_parse(self) -> RawFrame | None:
        end = self.buf.find(b"\n\n")
        end_crlf = self.buf.find(b"\r\n\r\n")
        if end_crlf != -1 and (end == -1 or end_crlf < end):
            head, body_start = self.buf[:end_crlf], end_crlf + 4
        elif end != -1:
            head, body_start = self.buf[:end], end + 2
        else:
            return None
        lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in head.split(b"\n")]
        command = lines[0].decode()
        header_list = []
        for ln in lines[1:]:
            k, _, v = ln.decode("utf-8", errors="surrogateescape").partition(":")
            header_list.append((k, v))
        frame = RawFrame(command, header_list)
        length = frame.headers.get("content-length")
        if length is not None:
            n = int(length)
            if len(self.buf) < body_start + n + 1:
                return None
            assert self.buf[body_start + n : body_start + n + 1] == b"\x00", (
                f"{command}: byte after content-length {n} body is not NUL: "
                f"{self.buf[body_start:body_start + n + 8]!r}"
            )
            frame.body = self.buf[body_start : body_start + n]
            self.buf = self.buf[body_start + n + 1 :]
        else:
            nul = self.buf.find(b"\x00", body_start)
            if nul == -1:
                return None
            frame.body = self.buf[body_start:nul]
            self.buf = self.buf[nul + 1 :]
        return frame

    def expect(self, command: str, timeout: float = WAIT) -> RawFrame:
        try:
            frame = self.read_frame(timeout)
        except ConnectionClosed:
            pytest.fail(f"connection closed while waiting for {command}")
        except TimeoutError:
            pytest.fail(f"no {command} frame within {timeout}s")
        assert frame.command == command, f"expected {command}, got {frame.command} {frame.header_list} {frame.body!r}"
        return frame

    def connect(self, version: str | None = "1.2", command: str = "CONNECT", eol=b"\n", **extra) -> RawFrame:
        headers = []
        if version is not None:
            headers.append(("accept-version", version))
            headers.append(("host", "/"))
        headers += [("login", "guest"), ("passcode", "guest")]
        headers += list(extra.items())
        self.send_frame(command, headers, eol=eol)
        return self.expect("CONNECTED")

    def wait_closed(self, timeout: float = WAIT) -> list[RawFrame]:
        """Read until the broker closes the socket; return the frames read.
        Fails if the socket is still open after `timeout` seconds."""
        frames = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                frames.append(self.read_frame(max(0.001, deadline - time.monotonic())))
            except ConnectionClosed:
                return frames
            except TimeoutError:
                pytest.fail(
                    f"connection still open {timeout}s later; frames read: "
                    f"{[(f.command, f.header_list) for f in frames]}"
                )

    def is_open_after(self, seconds: float) -> bool:
        """Watch the socket for `seconds`: False if the broker closed it
        (frames and heart-beats read meanwhile are dropped / recorded)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.read_frame(max(0.001, deadline - time.monotonic()))
            except ConnectionClosed:
                return False
            except TimeoutError:
                return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

