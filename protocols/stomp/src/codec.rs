//! STOMP frames to and from bytes: no I/O, no engine.
//!
//! The decoder is incremental: [`Decoder::decode`] takes what a socket has
//! delivered so far and returns a frame once it is complete, `None` while it
//! is not, or a typed [`DecodeError`]. Limits (header count, header line
//! length, body size) are checked while bytes arrive, so a peer can never
//! make the buffer grow past them. End-of-line is `\n` or `\r\n` (accepted in
//! every version, as brokers do); EOLs between frames are heart-beats and are
//! skipped. Header escaping follows the negotiated [`Version`]: none in 1.0,
//! `\n` `\c` `\\` in 1.1, and `\r` too in 1.2; CONNECT, STOMP and CONNECTED
//! frames are never escaped. A bare `\r` inside a header line is rejected: no
//! version can carry it unescaped, and refusing it keeps decode → encode →
//! decode exact. A `content-length` body may hold NUL bytes; without one, the
//! body ends at the first NUL.
//!
//! The command line and header lines are parsed with nom once the header
//! block is known to be complete and within limits.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use nom::branch::alt;
use nom::bytes::complete::{tag, take_till, take_while1};
use nom::multi::many0;
use nom::sequence::terminated;
use nom::{IResult, Parser};

/// A STOMP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// STOMP 1.0.
    V1_0,
    /// STOMP 1.1.
    V1_1,
    /// STOMP 1.2.
    V1_2,
}

impl Version {
    /// The version as written in `accept-version` / `version`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1_0 => "1.0",
            Self::V1_1 => "1.1",
            Self::V1_2 => "1.2",
        }
    }

    /// Parse `1.0`, `1.1` or `1.2`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "1.0" => Some(Self::V1_0),
            "1.1" => Some(Self::V1_1),
            "1.2" => Some(Self::V1_2),
            _ => None,
        }
    }
}

/// A frame command, client or server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Command {
    Connect,
    Stomp,
    Send,
    Subscribe,
    Unsubscribe,
    Ack,
    Nack,
    Begin,
    Commit,
    Abort,
    Disconnect,
    Connected,
    Message,
    Receipt,
    Error,
}

impl Command {
    const ALL: [Self; 15] = [
        Self::Connect,
        Self::Stomp,
        Self::Send,
        Self::Subscribe,
        Self::Unsubscribe,
        Self::Ack,
        Self::Nack,
        Self::Begin,
        Self::Commit,
        Self::Abort,
        Self::Disconnect,
        Self::Connected,
        Self::Message,
        Self::Receipt,
        Self::Error,
    ];

    /// The command as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "CONNECT",
            Self::Stomp => "STOMP",
            Self::Send => "SEND",
            Self::Subscribe => "SUBSCRIBE",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::Ack => "ACK",
            Self::Nack => "NACK",
            Self::Begin => "BEGIN",
            Self::Commit => "COMMIT",
            Self::Abort => "ABORT",
            Self::Disconnect => "DISCONNECT",
            Self::Connected => "CONNECTED",
            Self::Message => "MESSAGE",
            Self::Receipt => "RECEIPT",
            Self::Error => "ERROR",
        }
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str().as_bytes() == b)
    }

    /// Frames whose headers are never escaped (STOMP 1.2 "Value Encoding").
    fn raw_headers(self) -> bool {
        matches!(self, Self::Connect | Self::Stomp | Self::Connected)
    }
}

/// One STOMP frame. Headers keep their wire order; when a name repeats, the
/// first occurrence is the one that counts ([`Frame::get`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The command.
    pub command: Command,
    /// Headers, unescaped, in wire order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and an empty body.
    pub fn new(command: Command) -> Self {
        Self {
            command,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Builder: add a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The value of the first header called `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean header ([`boolean`]); `None` when absent or not a boolean.
    pub fn flag(&self, name: &str) -> Option<bool> {
        self.get(name).and_then(boolean)
    }
}

/// `true` / `false` in any case (Python clients send `True`).
pub fn boolean(v: &str) -> Option<bool> {
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Size limits the decoder enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most headers in one frame.
    pub max_headers: usize,
    /// Longest header line (name, colon and value, escaped) in bytes.
    pub max_header_length: usize,
    /// Largest body in bytes.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_headers: 100,
            max_header_length: 8192,
            max_body: 16 << 20,
        }
    }
}

/// Why bytes are not a STOMP frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The first line is not a STOMP command.
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// A header line has no colon or an empty name.
    #[error("malformed header line")]
    MalformedHeader,
    /// A carriage return not followed by a line feed.
    #[error("bare carriage return in the frame head")]
    BareCarriageReturn,
    /// The command or a header is not UTF-8.
    #[error("frame head is not valid UTF-8")]
    InvalidUtf8,
    /// An escape sequence the version does not define.
    #[error("invalid escape sequence in header: \\{0}")]
    InvalidEscape(char),
    /// More headers than allowed.
    #[error("too many headers (limit {0})")]
    TooManyHeaders(usize),
    /// A header line longer than allowed.
    #[error("header line longer than {0} bytes")]
    HeaderTooLong(usize),
    /// A body larger than allowed.
    #[error("frame body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// `content-length` is not a number.
    #[error("invalid content-length {0:?}")]
    InvalidContentLength(String),
    /// The byte after a `content-length` body is not NUL.
    #[error("frame body is not followed by NUL")]
    MissingNul,
}

/// Incremental frame decoder for one connection.
#[derive(Debug, Clone)]
pub struct Decoder {
    limits: Limits,
    version: Version,
}

/// Where a complete frame head ends, found by [`scan_head`].
struct Head {
    /// Bytes of the command line and header lines, blank line excluded.
    len: usize,
    /// Offset of the first body byte.
    body_start: usize,
}

impl Decoder {
    /// A decoder for a connection that has not negotiated a version yet.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            version: Version::V1_0,
        }
    }

    /// The negotiated version (it selects the header escaping).
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    /// The version header escaping follows.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Take one complete frame off the front of `buf`, if there is one.
    /// Heart-beat EOLs before it are consumed.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        // Heart-beats: EOLs before the frame. A `\r` must start a `\r\n`.
        let mut eols = 0;
        loop {
            match (buf.get(eols), buf.get(eols + 1)) {
                (Some(b'\n'), _) => eols += 1,
                (Some(b'\r'), Some(b'\n')) => eols += 2,
                (Some(b'\r'), Some(_)) => return Err(DecodeError::BareCarriageReturn),
                // A lone `\r` at the end may be half of a `\r\n` still arriving.
                (Some(b'\r'), None) => {
                    buf.advance(eols);
                    return Ok(None);
                }
                _ => break,
            }
        }
        buf.advance(eols);
        if buf.is_empty() {
            return Ok(None);
        }
        check_command(buf)?;
        let Some(head) = scan_head(buf, &self.limits)? else {
            return Ok(None);
        };
        let (command, raw_headers) = parse_head(&buf[..head.len])?;
        let escaped = !command.raw_headers() && self.version != Version::V1_0;
        let mut headers = Vec::with_capacity(raw_headers.len());
        for (name, value) in raw_headers {
            let name = unescape(name, escaped, self.version)?;
            let value = unescape(value, escaped, self.version)?;
            headers.push((name, value));
        }
        let content_length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| DecodeError::InvalidContentLength(v.clone()))
            })
            .transpose()?;
        let rest = &buf[head.body_start..];
        let body_len = match content_length {
            Some(n) if n > self.limits.max_body => {
                return Err(DecodeError::BodyTooLarge(self.limits.max_body));
            }
            Some(n) => {
                if rest.len() <= n {
                    return Ok(None);
                }
                if rest[n] != 0 {
                    return Err(DecodeError::MissingNul);
                }
                n
            }
            None => match rest.iter().position(|&b| b == 0) {
                Some(n) if n > self.limits.max_body => {
                    return Err(DecodeError::BodyTooLarge(self.limits.max_body));
                }
                Some(n) => n,
                None if rest.len() > self.limits.max_body => {
                    return Err(DecodeError::BodyTooLarge(self.limits.max_body));
                }
                None => return Ok(None),
            },
        };
        buf.advance(head.body_start);
        let body = buf.split_to(body_len).freeze();
        buf.advance(1); // the NUL
        Ok(Some(Frame {
            command,
            headers,
            body,
        }))
    }
}

/// Refuse a frame as soon as its command line cannot be a command: a peer
/// sending garbage learns so at once, not when a blank line or a size limit
/// happens to arrive.
fn check_command(buf: &[u8]) -> Result<(), DecodeError> {
    /// Length of the longest command (`UNSUBSCRIBE`, `DISCONNECT`).
    const LONGEST: usize = 11;
    let end = buf.iter().take(LONGEST + 2).position(|&b| b == b'\n');
    let line = &buf[..end.unwrap_or(buf.len().min(LONGEST + 2))];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.contains(&b'\r') {
        // Not a command either, but the head parser names this error.
        return Ok(());
    }
    let possible = match end {
        Some(_) => Command::from_bytes(line).is_some(),
        None => {
            line.len() <= LONGEST
                && Command::ALL
                    .iter()
                    .any(|c| c.as_str().as_bytes().starts_with(line))
        }
    };
    if possible {
        return Ok(());
    }
    let shown = &line[..line.len().min(64)];
    Err(DecodeError::UnknownCommand(
        String::from_utf8_lossy(shown).into(),
    ))
}

/// Find the blank line ending the frame head, checking line limits on the
/// way. `None` while the head is incomplete.
fn scan_head(buf: &[u8], limits: &Limits) -> Result<Option<Head>, DecodeError> {
    let mut pos = 0;
    let mut lines = 0usize;
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            // A trailing `\r` may be the first half of the line's CRLF.
            let partial = &buf[pos..];
            let partial = partial.strip_suffix(b"\r").unwrap_or(partial);
            if partial.len() > limits.max_header_length {
                return Err(DecodeError::HeaderTooLong(limits.max_header_length));
            }
            return Ok(None);
        };
        let line = &buf[pos..pos + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > limits.max_header_length {
            return Err(DecodeError::HeaderTooLong(limits.max_header_length));
        }
        if line.is_empty() && lines > 0 {
            return Ok(Some(Head {
                len: pos,
                body_start: pos + nl + 1,
            }));
        }
        lines += 1;
        // The command line plus `max_headers` header lines.
        if lines > limits.max_headers.saturating_add(1) {
            return Err(DecodeError::TooManyHeaders(limits.max_headers));
        }
        pos += nl + 1;
    }
}

fn eol(i: &[u8]) -> IResult<&[u8], &[u8]> {
    alt((tag("\r\n"), tag("\n"))).parse(i)
}

fn command_line(i: &[u8]) -> IResult<&[u8], &[u8]> {
    terminated(take_while1(|c: u8| c != b'\n' && c != b'\r'), eol).parse(i)
}

fn header_line(i: &[u8]) -> IResult<&[u8], &[u8]> {
    terminated(take_till(|c| c == b'\n' || c == b'\r'), eol).parse(i)
}

type RawHeaders<'a> = Vec<(&'a [u8], &'a [u8])>;

/// Parse a complete head (command line and header lines, each ending in an
/// EOL) into the command and raw, still escaped, header pairs.
fn parse_head(head: &[u8]) -> Result<(Command, RawHeaders<'_>), DecodeError> {
    let parsed = (command_line, many0(header_line)).parse(head);
    let Ok((rest, (cmd, lines))) = parsed else {
        return Err(DecodeError::BareCarriageReturn);
    };
    if !rest.is_empty() {
        // Only a `\r` not followed by `\n` stops the line parsers early.
        return Err(DecodeError::BareCarriageReturn);
    }
    let command = Command::from_bytes(cmd).ok_or_else(|| {
        DecodeError::UnknownCommand(String::from_utf8_lossy(&cmd[..cmd.len().min(64)]).into())
    })?;
    let mut headers = Vec::with_capacity(lines.len());
    for line in lines {
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(DecodeError::MalformedHeader)?;
        if colon == 0 {
            return Err(DecodeError::MalformedHeader);
        }
        headers.push((&line[..colon], &line[colon + 1..]));
    }
    Ok((command, headers))
}

fn unescape(raw: &[u8], escaped: bool, version: Version) -> Result<String, DecodeError> {
    let s = std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8)?;
    if !escaped || !s.contains('\\') {
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
            Some('n') => out.push('\n'),
            Some('c') => out.push(':'),
            Some('\\') => out.push('\\'),
            Some('r') if version == Version::V1_2 => out.push('\r'),
            Some(other) => return Err(DecodeError::InvalidEscape(other)),
            None => return Err(DecodeError::InvalidEscape(' ')),
        }
    }
    Ok(out)
}

/// Append `s` to `out` as the version writes a header name or value.
fn put_escaped(out: &mut BytesMut, s: &str, escaped: bool, version: Version) {
    let special = |c: char| matches!(c, '\n' | '\r' | ':' | '\\');
    if !s.contains(special) {
        out.put_slice(s.as_bytes());
        return;
    }
    for c in s.chars() {
        match c {
            '\n' if escaped => out.put_slice(b"\\n"),
            ':' if escaped => out.put_slice(b"\\c"),
            '\\' if escaped => out.put_slice(b"\\\\"),
            '\r' if escaped && version == Version::V1_2 => out.put_slice(b"\\r"),
            // What the version cannot carry becomes a space (1.0 and the
            // unescaped frames have no escapes; 1.1 none for `\r`).
            '\n' | '\r' => out.put_u8(b' '),
            c => {
                let mut tmp = [0u8; 4];
                out.put_slice(c.encode_utf8(&mut tmp).as_bytes());
            }
        }
    }
}

/// Append a header's name; a colon in a name that cannot be escaped would
/// end it early, so it becomes `_`.
fn put_name(out: &mut BytesMut, name: &str, escaped: bool, version: Version) {
    if !escaped && name.contains(':') {
        put_escaped(out, &name.replace(':', "_"), escaped, version);
    } else {
        put_escaped(out, name, escaped, version);
    }
}

/// Append `frame` to `out` in the wire form of `version`.
pub fn encode(frame: &Frame, version: Version, out: &mut BytesMut) {
    let head: usize = frame
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.len() + 2)
        .sum();
    out.reserve(frame.command.as_str().len() + head + frame.body.len() + 3);
    let mut w = FrameWriter::begin(frame.command, version, out);
    for (name, value) in &frame.headers {
        w.header(name, value);
    }
    w.finish(&frame.body);
}

/// Writes a frame straight into an output buffer, header by header, with
/// the escaping of `version` (the delivery path builds no [`Frame`]).
#[derive(Debug)]
pub struct FrameWriter<'a> {
    out: &'a mut BytesMut,
    escaped: bool,
    version: Version,
}

impl<'a> FrameWriter<'a> {
    /// Starts a `command` frame.
    pub fn begin(command: Command, version: Version, out: &'a mut BytesMut) -> Self {
        out.put_slice(command.as_str().as_bytes());
        out.put_u8(b'\n');
        Self {
            out,
            escaped: !command.raw_headers() && version != Version::V1_0,
            version,
        }
    }

    /// Appends a header.
    pub fn header(&mut self, name: &str, value: &str) {
        put_name(self.out, name, self.escaped, self.version);
        self.out.put_u8(b':');
        put_escaped(self.out, value, self.escaped, self.version);
        self.out.put_u8(b'\n');
    }

    /// Appends a header whose value needs no escaping (numbers, ids made
    /// of digits and dashes), formatted in place.
    pub fn header_plain(&mut self, name: &str, value: std::fmt::Arguments<'_>) {
        use std::fmt::Write;
        put_name(self.out, name, self.escaped, self.version);
        self.out.put_u8(b':');
        // Writing into a BytesMut cannot fail.
        let _ = self.out.write_fmt(value);
        self.out.put_u8(b'\n');
    }

    /// Ends the headers and appends `body` and the NUL.
    pub fn finish(self, body: &[u8]) {
        self.out.put_u8(b'\n');
        self.out.put_slice(body);
        self.out.put_u8(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(v: Version, bytes: &[u8]) -> Result<Option<Frame>, DecodeError> {
        let mut d = Decoder::new(Limits::default());
        d.set_version(v);
        d.decode(&mut BytesMut::from(bytes))
    }

    fn one(v: Version, bytes: &[u8]) -> Frame {
        dec(v, bytes).expect("decodes").expect("complete")
    }

    #[test]
    fn simple_frame_and_heartbeats() {
        let mut buf = BytesMut::from(&b"\n\r\nSEND\ndestination:/queue/a\n\nhello\0\n"[..]);
        let d = Decoder::new(Limits::default());
        let f = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.command, Command::Send);
        assert_eq!(f.get("destination"), Some("/queue/a"));
        assert_eq!(&f.body[..], b"hello");
        assert_eq!(&buf[..], b"\n");
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn crlf_lines() {
        let f = one(
            Version::V1_2,
            b"SEND\r\ndestination:/queue/a\r\nx:y\r\n\r\nbody\0",
        );
        assert_eq!(f.get("x"), Some("y"));
        assert_eq!(&f.body[..], b"body");
    }

    #[test]
    fn incomplete_frames_wait() {
        let full: &[u8] = b"SEND\ndestination:/q\ncontent-length:3\n\na\0b\0";
        for cut in 0..full.len() {
            assert_eq!(dec(Version::V1_2, &full[..cut]), Ok(None), "cut at {cut}");
        }
        let f = one(Version::V1_2, full);
        assert_eq!(&f.body[..], b"a\0b");
    }

    #[test]
    fn content_length_must_be_followed_by_nul() {
        assert_eq!(
            dec(Version::V1_2, b"SEND\ncontent-length:1\n\nab\0"),
            Err(DecodeError::MissingNul)
        );
        assert_eq!(
            dec(Version::V1_2, b"SEND\ncontent-length:x\n\nab\0"),
            Err(DecodeError::InvalidContentLength("x".into()))
        );
    }

    #[test]
    fn escaping_per_version() {
        let raw = b"SEND\na\\cb:x\\ny\\\\z\\r\n\n\0";
        let f = one(Version::V1_2, raw);
        assert_eq!(f.headers[0], ("a:b".into(), "x\ny\\z\r".into()));
        assert_eq!(
            dec(Version::V1_1, raw),
            Err(DecodeError::InvalidEscape('r'))
        );
        let f = one(Version::V1_0, raw);
        assert_eq!(f.headers[0], ("a\\cb".into(), "x\\ny\\\\z\\r".into()));
        // CONNECT is never unescaped.
        let f = one(Version::V1_2, b"CONNECT\nlogin:a\\cb\n\n\0");
        assert_eq!(f.get("login"), Some("a\\cb"));
        assert_eq!(
            dec(Version::V1_2, b"SEND\na:\\t\n\n\0"),
            Err(DecodeError::InvalidEscape('t'))
        );
    }

    #[test]
    fn repeated_header_first_wins_and_colon_in_value() {
        let f = one(Version::V1_2, b"SEND\nk:1\nk:2\nurl:http://x\n\n\0");
        assert_eq!(f.get("k"), Some("1"));
        assert_eq!(f.get("url"), Some("http://x"));
        assert_eq!(f.headers.len(), 3);
    }

    #[test]
    fn garbage_is_refused_before_a_head_completes() {
        // No blank line, no NUL: nothing a head scan would ever finish.
        for garbage in [&b"\x93\x01zz"[..], b"HELLO WORLD", b"SENDX", b"xx\nyy"] {
            assert!(
                matches!(
                    dec(Version::V1_2, garbage),
                    Err(DecodeError::UnknownCommand(_))
                ),
                "{garbage:?}"
            );
        }
        // Every prefix of a real command is still just incomplete.
        for c in Command::ALL {
            let bytes = c.as_str().as_bytes();
            for n in 1..=bytes.len() {
                assert_eq!(dec(Version::V1_2, &bytes[..n]), Ok(None), "{c:?} {n}");
            }
            assert_eq!(dec(Version::V1_2, &[bytes, b"\r"].concat()), Ok(None));
            assert_eq!(dec(Version::V1_2, &[bytes, b"\n"].concat()), Ok(None));
        }
    }

    #[test]
    fn malformed_input_is_typed() {
        assert!(matches!(
            dec(Version::V1_2, b"FOO\n\n\0"),
            Err(DecodeError::UnknownCommand(_))
        ));
        assert_eq!(
            dec(Version::V1_2, b"SEND\nnocolon\n\n\0"),
            Err(DecodeError::MalformedHeader)
        );
        assert_eq!(
            dec(Version::V1_2, b"SEND\n:v\n\n\0"),
            Err(DecodeError::MalformedHeader)
        );
        assert_eq!(
            dec(Version::V1_2, b"SEND\na:b\rc\n\n\0"),
            Err(DecodeError::BareCarriageReturn)
        );
        assert_eq!(
            dec(Version::V1_2, b"SEND\na:\xff\n\n\0"),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            dec(Version::V1_2, b"\rX"),
            Err(DecodeError::BareCarriageReturn)
        );
    }

    #[test]
    fn limits_hold_before_the_frame_is_complete() {
        let limits = Limits {
            max_headers: 2,
            max_header_length: 16,
            max_body: 4,
        };
        let d = Decoder::new(limits);
        let check = |bytes: &[u8]| d.decode(&mut BytesMut::from(bytes));
        assert_eq!(
            check(b"SEND\na:1\nb:2\nc:3\n"),
            Err(DecodeError::TooManyHeaders(2))
        );
        assert_eq!(
            check(b"SEND\naaaaaaaaaaaaaaaaaaaaaaaa"),
            Err(DecodeError::HeaderTooLong(16))
        );
        assert_eq!(check(b"SEND\n\n12345"), Err(DecodeError::BodyTooLarge(4)));
        assert_eq!(
            check(b"SEND\ncontent-length:9\n\n"),
            Err(DecodeError::BodyTooLarge(4))
        );
        assert!(check(b"SEND\na:1\nb:2\n\n1234\0").unwrap().is_some());
        // A line exactly at the limit whose CRLF is split between reads.
        let at_limit = b"SEND\r\naaaaaaaaaaaaaa:1\r";
        assert_eq!(check(at_limit), Ok(None));
    }

    #[test]
    fn encode_round_trips_per_version() {
        let frame = Frame::new(Command::Message)
            .header("destination", "/topic/a:b")
            .header("weird\\key", "line1\nline2\r")
            .header("content-length", "3");
        let frame = Frame {
            body: Bytes::from_static(b"a\0b"),
            ..frame
        };
        let mut out = BytesMut::new();
        encode(&frame, Version::V1_2, &mut out);
        assert_eq!(one(Version::V1_2, &out), frame);
        // 1.0 cannot carry newlines: they become spaces.
        let mut out = BytesMut::new();
        encode(&frame, Version::V1_0, &mut out);
        let back = one(Version::V1_0, &out);
        assert_eq!(back.get("weird\\key"), Some("line1 line2 "));
        assert_eq!(back.get("destination"), Some("/topic/a:b"));
    }
}
