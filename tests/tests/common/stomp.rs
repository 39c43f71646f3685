//! A small blocking STOMP client for the black-box tests, written from the
//! STOMP 1.0–1.2 specifications rather than from the broker's codec, so that
//! the two check each other.
//!
//! * [`encode`] writes a frame the way a client would, escaping header names
//!   and values as the version says (none in 1.0; `\n` `\c` `\\` in 1.1; and
//!   `\r` in 1.2; never for CONNECT / STOMP / CONNECTED).
//! * [`Parser`] reads server output incrementally: heart-beat EOLs between
//!   frames are counted, `content-length` bodies may hold NUL bytes, header
//!   values are unescaped per the negotiated version, and anything the
//!   specification does not allow is reported as an error.
//! * [`Client`] drives one TCP connection with every read bounded by a
//!   deadline ([`STEP`] unless told otherwise).
//!
//! Include with `#[macro_use] #[path = "common/stomp.rs"] mod stomp;`.

#![allow(dead_code, unused_macros)] // each test file uses a different subset

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Bound on any single wait.
pub(crate) const STEP: Duration = Duration::from_secs(10);

/// How long to watch for something that must *not* arrive.
pub(crate) const QUIET: Duration = Duration::from_millis(500);

/// `w!(future)`: awaits `future` for at most [`STEP`], panicking on timeout.
macro_rules! w {
    ($fut:expr) => {
        ::tokio::time::timeout($crate::stomp::STEP, $fut)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out after {:?} awaiting `{}`",
                    $crate::stomp::STEP,
                    stringify!($fut)
                )
            })
    };
}

/// A STOMP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Version {
    V10,
    V11,
    V12,
}

impl Version {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::V10 => "1.0",
            Self::V11 => "1.1",
            Self::V12 => "1.2",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "1.0" => Some(Self::V10),
            "1.1" => Some(Self::V11),
            "1.2" => Some(Self::V12),
            _ => None,
        }
    }
}

/// One frame, headers unescaped and in wire order.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) command: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.command)?;
        for (k, v) in &self.headers {
            write!(f, "\n  {k:?}: {v:?}")?;
        }
        write!(f, "\n  body: {:?}", String::from_utf8_lossy(&self.body))
    }
}

impl Frame {
    /// The first header called `name` (STOMP: the first occurrence wins).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first header called `name`; panics, showing the frame, if absent.
    #[track_caller]
    pub(crate) fn header(&self, name: &str) -> &str {
        self.get(name)
            .unwrap_or_else(|| panic!("no {name:?} header in {self:?}"))
    }

    pub(crate) fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Frames whose headers are never escaped.
fn raw_headers(command: &str) -> bool {
    matches!(command, "CONNECT" | "STOMP" | "CONNECTED")
}

/// `s` escaped as `version` writes a header name or value.
pub(crate) fn escape(s: &str, version: Version) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match (c, version) {
            (_, Version::V10) => out.push(c),
            ('\\', _) => out.push_str("\\\\"),
            ('\n', _) => out.push_str("\\n"),
            (':', _) => out.push_str("\\c"),
            ('\r', Version::V12) => out.push_str("\\r"),
            _ => out.push(c),
        }
    }
    out
}

/// Undo [`escape`]; an escape the version does not define is an error.
pub(crate) fn unescape(s: &str, version: Version) -> Result<String, String> {
    if version == Version::V10 {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('c') => out.push(':'),
            Some('r') if version == Version::V12 => out.push('\r'),
            other => return Err(format!("undefined escape \\{other:?} in {s:?}")),
        }
    }
    Ok(out)
}

/// A frame as a `version` client writes it: escaped headers, the body as
/// given, then NUL. No `content-length` is added.
pub(crate) fn encode(
    command: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    version: Version,
) -> Vec<u8> {
    let esc = |s: &str| {
        if raw_headers(command) {
            s.to_owned()
        } else {
            escape(s, version)
        }
    };
    let mut out = Vec::with_capacity(64 + body.len());
    out.extend_from_slice(command.as_bytes());
    out.push(b'\n');
    for (k, v) in headers {
        out.extend_from_slice(esc(k).as_bytes());
        out.push(b':');
        out.extend_from_slice(esc(v).as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out.push(0);
    out
}

/// Incremental parser of what a STOMP server sends.
#[derive(Debug)]
pub(crate) struct Parser {
    buf: Vec<u8>,
    /// Selects header unescaping; set from CONNECTED by [`Client`].
    pub(crate) version: Version,
    /// EOLs seen between frames (heart-beats).
    pub(crate) heartbeats: usize,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    pub(crate) fn new() -> Self {
        Self {
            buf: Vec::new(),
            version: Version::V10,
            heartbeats: 0,
        }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a complete frame.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The next complete frame, `None` while it is incomplete, or why the
    /// bytes are not STOMP.
    pub(crate) fn next(&mut self) -> Result<Option<Frame>, String> {
        loop {
            if self.buf.first() == Some(&b'\n') {
                self.buf.drain(..1);
                self.heartbeats += 1;
            } else if self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
                self.heartbeats += 1;
            } else {
                break;
            }
        }
        if self.buf.is_empty() || self.buf == b"\r" {
            return Ok(None);
        }
        let mut lines: Vec<&[u8]> = Vec::new();
        let mut pos = 0;
        let body_start = loop {
            let Some(nl) = self.buf[pos..].iter().position(|&b| b == b'\n') else {
                return Ok(None);
            };
            let line = &self.buf[pos..pos + nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            pos += nl + 1;
            if line.is_empty() {
                break pos;
            }
            if line.contains(&b'\r') {
                return Err(format!(
                    "bare CR in line {:?}",
                    String::from_utf8_lossy(line)
                ));
            }
            lines.push(line);
        };
        let utf8 = |b: &[u8]| {
            std::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|_| format!("line not UTF-8: {b:02x?}"))
        };
        let command = utf8(lines[0])?;
        let escaped = !raw_headers(&command);
        let mut headers = Vec::new();
        for line in &lines[1..] {
            let line = utf8(line)?;
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| format!("header line without colon: {line:?}"))?;
            let (k, v) = if escaped {
                (unescape(k, self.version)?, unescape(v, self.version)?)
            } else {
                (k.to_owned(), v.to_owned())
            };
            headers.push((k, v));
        }
        let content_length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| {
                v.parse::<usize>()
                    .map_err(|_| format!("bad content-length {v:?}"))
            })
            .transpose()?;
        let rest = &self.buf[body_start..];
        let body_len = match content_length {
            Some(n) => {
                if rest.len() <= n {
                    return Ok(None);
                }
                if rest[n] != 0 {
                    return Err(format!("byte {:#04x} instead of NUL after body", rest[n]));
                }
                n
            }
            None => match rest.iter().position(|&b| b == 0) {
                Some(n) => n,
                None => return Ok(None),
            },
        };
        let body = rest[..body_len].to_vec();
        self.buf.drain(..body_start + body_len + 1);
        Ok(Some(Frame {
            command,
            headers,
            body,
        }))
    }
}

/// Why a read ended without a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Timeout,
    Closed,
}

/// One blocking STOMP connection over TCP.
#[derive(Debug)]
pub(crate) struct Client {
    sock: TcpStream,
    parser: Parser,
    /// Frames read while waiting for something else (a RECEIPT).
    pending: VecDeque<Frame>,
    receipts: u64,
    closed: bool,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

impl Client {
    /// A TCP connection, nothing sent yet.
    pub(crate) fn open(addr: SocketAddr) -> Self {
        let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to STOMP at {addr}: {e}"));
        sock.set_nodelay(true).expect("nodelay");
        sock.set_write_timeout(Some(STEP)).expect("write timeout");
        Self {
            sock,
            parser: Parser::new(),
            pending: VecDeque::new(),
            receipts: 0,
            closed: false,
        }
    }

    /// Connected as guest with `accept-version` exactly `version` and no
    /// heart-beats; asserts CONNECTED names that version.
    pub(crate) fn connect(addr: SocketAddr, version: Version) -> Self {
        let (c, f) = Self::connect_with(
            addr,
            "CONNECT",
            &[
                ("accept-version", version.as_str()),
                ("host", "/"),
                ("login", "guest"),
                ("passcode", "guest"),
                ("heart-beat", "0,0"),
            ],
        );
        assert_eq!(f.command, "CONNECTED", "reply to CONNECT: {f:?}");
        assert_eq!(c.version(), version, "negotiated version in {f:?}");
        c
    }

    /// Sends `command` (CONNECT or STOMP) with `headers` and returns the
    /// connection and the first frame the server answers with.
    pub(crate) fn connect_with(
        addr: SocketAddr,
        command: &str,
        headers: &[(&str, &str)],
    ) -> (Self, Frame) {
        let mut c = Self::open(addr);
        c.send(command, headers, b"");
        let f = c.next();
        (c, f)
    }

    /// The version headers are (un)escaped with: the one CONNECTED named.
    pub(crate) fn version(&self) -> Version {
        self.parser.version
    }

    /// Heart-beat EOLs received so far.
    pub(crate) fn heartbeats(&self) -> usize {
        self.parser.heartbeats
    }

    /// Writes raw bytes.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.sock.write_all(bytes)?;
        self.sock.flush()
    }

    /// Writes a frame in this connection's version; panics if the socket
    /// fails.
    pub(crate) fn send(&mut self, command: &str, headers: &[(&str, &str)], body: &[u8]) {
        let bytes = encode(command, headers, body, self.version());
        self.write(&bytes)
            .unwrap_or_else(|e| panic!("write {command}: {e}"));
    }

    /// As [`Client::send`], with a `content-length` header for `body`.
    pub(crate) fn send_len(&mut self, command: &str, headers: &[(&str, &str)], body: &[u8]) {
        let len = body.len().to_string();
        let mut all = headers.to_vec();
        all.push(("content-length", &len));
        self.send(command, &all, body);
    }

    /// Sends the frame with a fresh `receipt` header and waits for its
    /// RECEIPT; frames arriving first are kept for later reads. An ERROR
    /// instead fails the test.
    pub(crate) fn receipt(&mut self, command: &str, headers: &[(&str, &str)], body: &[u8]) {
        self.receipt_within(command, headers, body, STEP);
    }

    /// [`Client::receipt`], waiting up to `within` for the RECEIPT.
    pub(crate) fn receipt_within(
        &mut self,
        command: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        within: Duration,
    ) {
        self.receipts += 1;
        let id = format!("rcpt-{}", self.receipts);
        let mut all = headers.to_vec();
        all.push(("receipt", &id));
        self.send(command, &all, body);
        self.wait_receipt_within(&id, within);
    }

    /// Waits for the RECEIPT `id`, keeping other frames for later reads.
    pub(crate) fn wait_receipt(&mut self, id: &str) {
        self.wait_receipt_within(id, STEP);
    }

    /// [`Client::wait_receipt`], waiting up to `within`.
    pub(crate) fn wait_receipt_within(&mut self, id: &str, within: Duration) {
        let deadline = Instant::now() + within;
        let mut held = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_socket_frame(left) {
                Ok(f) if f.command == "RECEIPT" && f.get("receipt-id") == Some(id) => break,
                Ok(f) if f.command == "ERROR" => panic!("ERROR instead of RECEIPT {id}: {f:?}"),
                Ok(f) if f.command == "RECEIPT" => panic!("RECEIPT out of order: {f:?}; want {id}"),
                Ok(f) => held.push(f),
                Err(e) => panic!("no RECEIPT {id} within {within:?}: {e:?}; held {held:?}"),
            }
        }
        self.pending.extend(held);
    }

    fn fill(&mut self, deadline: Instant) -> Result<(), End> {
        if self.closed {
            return Err(End::Closed);
        }
        let mut buf = [0u8; 16 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(End::Timeout);
            }
            if self.sock.set_read_timeout(Some(left)).is_err() {
                self.closed = true;
                return Err(End::Closed);
            }
            match self.sock.read(&mut buf) {
                Ok(0) => {
                    self.closed = true;
                    return Err(End::Closed);
                }
                Ok(n) => {
                    self.parser.push(&buf[..n]);
                    return Ok(());
                }
                Err(e) if is_timeout(&e) => {}
                Err(_) => {
                    self.closed = true;
                    return Err(End::Closed);
                }
            }
        }
    }

    fn read_socket_frame(&mut self, timeout: Duration) -> Result<Frame, End> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.parser.next() {
                Ok(Some(f)) => {
                    if f.command == "CONNECTED" {
                        self.parser.version = f
                            .get("version")
                            .and_then(Version::parse)
                            .unwrap_or(Version::V10);
                    }
                    return Ok(f);
                }
                Ok(None) => self.fill(deadline)?,
                Err(e) => panic!(
                    "server sent bytes that are not STOMP: {e}; buffered {:?}",
                    String::from_utf8_lossy(self.parser.buffered())
                ),
            }
        }
    }

    /// The next frame within `timeout`.
    pub(crate) fn read(&mut self, timeout: Duration) -> Result<Frame, End> {
        if let Some(f) = self.pending.pop_front() {
            return Ok(f);
        }
        self.read_socket_frame(timeout)
    }

    /// The next frame within [`STEP`]; panics if none arrives.
    #[track_caller]
    pub(crate) fn next(&mut self) -> Frame {
        match self.read(STEP) {
            Ok(f) => f,
            Err(e) => panic!("no frame within {STEP:?}: {e:?}"),
        }
    }

    /// The next frame, which must be a `command`.
    #[track_caller]
    pub(crate) fn expect(&mut self, command: &str) -> Frame {
        let f = self.next();
        assert_eq!(f.command, command, "expected {command}, got {f:?}");
        f
    }

    /// The next frame, which must be a MESSAGE.
    #[track_caller]
    pub(crate) fn message(&mut self) -> Frame {
        self.expect("MESSAGE")
    }

    /// Asserts that no frame arrives within `within` (heart-beats are
    /// fine) and the connection stays open.
    #[track_caller]
    pub(crate) fn assert_quiet(&mut self, within: Duration) {
        match self.read(within) {
            Err(End::Timeout) => {}
            Err(End::Closed) => panic!("connection closed; expected it to stay quiet"),
            Ok(f) => panic!("expected no frame, got {f:?}"),
        }
    }

    /// Reads frames until the server closes or `timeout` passes; returns
    /// them and whether it closed.
    pub(crate) fn read_to_close(&mut self, timeout: Duration) -> (Vec<Frame>, bool) {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read(left) {
                Ok(f) => frames.push(f),
                Err(End::Closed) => return (frames, true),
                Err(End::Timeout) => return (frames, false),
            }
        }
    }

    /// The server answers with an ERROR (carrying a `message` header) and
    /// closes the connection; returns the ERROR.
    #[track_caller]
    pub(crate) fn expect_error_and_close(&mut self) -> Frame {
        let (frames, closed) = self.read_to_close(STEP);
        let errors: Vec<&Frame> = frames.iter().filter(|f| f.command == "ERROR").collect();
        assert_eq!(
            errors.len(),
            1,
            "expected exactly one ERROR, got {frames:?}"
        );
        let e = errors[0].clone();
        assert!(
            e.get("message").is_some(),
            "ERROR without message header: {e:?}"
        );
        assert_eq!(
            frames.last().map(|f| f.command.as_str()),
            Some("ERROR"),
            "ERROR must be the last frame: {frames:?}"
        );
        assert!(closed, "connection still open {STEP:?} after {e:?}");
        e
    }

    /// Whether the server has closed (as far as reads have seen).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// DISCONNECT with a receipt: the RECEIPT arrives, then the close.
    pub(crate) fn disconnect(mut self) {
        self.send("DISCONNECT", &[("receipt", "bye")], b"");
        let (frames, closed) = self.read_to_close(STEP);
        let last = frames
            .last()
            .unwrap_or_else(|| panic!("no RECEIPT for DISCONNECT"));
        assert_eq!(last.command, "RECEIPT", "after DISCONNECT: {frames:?}");
        assert_eq!(last.get("receipt-id"), Some("bye"), "{last:?}");
        assert!(closed, "connection not closed after DISCONNECT's RECEIPT");
    }

    /// Half-closes the writing side.
    pub(crate) fn shutdown_write(&mut self) {
        let _ = self.sock.shutdown(Shutdown::Write);
    }
}

/// A new, well-behaved 1.2 client on `addr` can subscribe, send and
/// receive: the broker still serves STOMP.
#[track_caller]
pub(crate) fn assert_broker_serves(addr: SocketAddr) {
    let mut c = Client::connect(addr, Version::V12);
    c.receipt(
        "SUBSCRIBE",
        &[("destination", "/queue/health-check"), ("id", "hc")],
        b"",
    );
    c.receipt(
        "SEND",
        &[("destination", "/queue/health-check")],
        b"still serving",
    );
    let m = c.message();
    assert_eq!(m.body, b"still serving", "{m:?}");
    assert_eq!(m.get("subscription"), Some("hc"), "{m:?}");
    c.disconnect();
}

/// The AMQP side of a cross-protocol test: a lapin connection to `broker`
/// and a channel on it.
pub(crate) async fn amqp(broker: &switchyard_tests::Broker) -> (lapin::Connection, lapin::Channel) {
    let conn = w!(lapin::Connection::connect(
        &broker.amqp_uri(),
        lapin::ConnectionProperties::default()
    ))
    .expect("AMQP connect");
    let ch = w!(conn.create_channel()).expect("channel");
    (conn, ch)
}
