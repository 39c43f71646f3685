//! STOMP 1.2 frames and their codec, without I/O: [`decode`] takes bytes as
//! they arrive and yields whole frames (`Ok(None)` = need more bytes),
//! [`encode`] appends one frame's bytes.
//!
//! Sizes are checked before anything is buffered beyond them: the command
//! line and headers ([`MAX_HEAD`], [`MAX_HEADERS`]) and the body
//! ([`MAX_BODY`], from `content-length` when present).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes of command line plus headers, blank line included.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Header lines per frame.
pub(crate) const MAX_HEADERS: usize = 128;
/// Body bytes per frame.
pub(crate) const MAX_BODY: usize = 16 * 1024 * 1024;

/// One STOMP frame. Header order is kept; on repeats the first one counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) command: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Bytes,
}

impl Frame {
    pub(crate) fn new(command: &str) -> Self {
        Self {
            command: command.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub(crate) fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The value of header `name` (the first, if repeated).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        (self.headers.iter())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// CONNECT and CONNECTED headers are not escaped (STOMP 1.2 "Value Encoding").
    fn escapes(command: &str) -> bool {
        command != "CONNECT" && command != "CONNECTED"
    }
}

/// Why bytes are not a STOMP frame.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// No blank line within [`MAX_HEAD`] bytes.
    #[error("frame head longer than {MAX_HEAD} bytes")]
    HeadTooLong,
    /// More than [`MAX_HEADERS`] header lines.
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    /// A header line without a colon.
    #[error("header line without a colon")]
    MalformedHeader,
    /// A backslash not followed by `r`, `n`, `c` or `\`.
    #[error("invalid escape sequence in a header")]
    BadEscape,
    /// Command line or headers are not UTF-8.
    #[error("frame head is not UTF-8")]
    NotUtf8,
    /// `content-length` is not a decimal number.
    #[error("content-length {0:?} is not a number")]
    BadContentLength(String),
    /// The body exceeds [`MAX_BODY`].
    #[error("body of {0} bytes or more exceeds the limit")]
    BodyTooLarge(usize),
    /// The byte after a `content-length` body is not NUL.
    #[error("body not terminated by NUL")]
    MissingNul,
}

/// Takes the next frame off the front of `buf`, skipping the EOLs that
/// separate frames (heart-beats). `Ok(None)` leaves `buf` waiting for more.
pub(crate) fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    loop {
        if buf.first() == Some(&b'\n') {
            buf.advance(1);
        } else if buf.starts_with(b"\r\n") {
            buf.advance(2);
        } else {
            break;
        }
    }
    let Some((head_len, body_start)) = head_end(&buf[..buf.len().min(MAX_HEAD)]) else {
        return if buf.len() >= MAX_HEAD {
            Err(FrameError::HeadTooLong)
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..head_len]).map_err(|_| FrameError::NotUtf8)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let command = lines.next().unwrap_or_default().to_owned();
    let escapes = Frame::escapes(&command);
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        if headers.len() == MAX_HEADERS {
            return Err(FrameError::TooManyHeaders);
        }
        let (name, value) = line.split_once(':').ok_or(FrameError::MalformedHeader)?;
        headers.push(if escapes {
            (unescape(name)?, unescape(value)?)
        } else {
            (name.to_owned(), value.to_owned())
        });
    }
    let length = headers.iter().find(|(k, _)| k == "content-length");
    let body_len = match length {
        Some((_, v)) => {
            let n: usize = v
                .parse()
                .map_err(|_| FrameError::BadContentLength(v.clone()))?;
            if n > MAX_BODY {
                return Err(FrameError::BodyTooLarge(n));
            }
            if buf.len() <= body_start + n {
                return Ok(None);
            }
            if buf[body_start + n] != 0 {
                return Err(FrameError::MissingNul);
            }
            n
        }
        None => match buf[body_start..].iter().position(|&b| b == 0) {
            Some(n) => n,
            None if buf.len() - body_start > MAX_BODY => {
                return Err(FrameError::BodyTooLarge(buf.len() - body_start));
            }
            None => return Ok(None),
        },
    };
    let mut whole = buf.split_to(body_start + body_len + 1).freeze();
    whole.truncate(body_start + body_len);
    Ok(Some(Frame {
        command,
        headers,
        body: whole.slice(body_start..),
    }))
}

/// Where the head ends: (bytes of command line and headers, offset of the
/// body). None until the blank line has arrived.
fn head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut line_start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        let line = &buf[line_start..i];
        if line_start > 0 && (line.is_empty() || line == b"\r") {
            return Some((line_start, i + 1));
        }
        line_start = i + 1;
    }
    None
}

fn unescape(s: &str) -> Result<String, FrameError> {
    if !s.contains('\\') {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next() {
            Some('r') => '\r',
            Some('n') => '\n',
            Some('c') => ':',
            Some('\\') => '\\',
            _ => return Err(FrameError::BadEscape),
        });
    }
    Ok(out)
}

fn put_escaped(dst: &mut BytesMut, s: &str, escapes: bool) {
    if !escapes {
        dst.put_slice(s.as_bytes());
        return;
    }
    for c in s.chars() {
        match c {
            '\r' => dst.put_slice(b"\\r"),
            '\n' => dst.put_slice(b"\\n"),
            ':' => dst.put_slice(b"\\c"),
            '\\' => dst.put_slice(b"\\\\"),
            c => dst.put_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
}

/// Appends `frame` to `dst`, adding `content-length` to a non-empty body
/// that has none, so bodies may contain NUL.
pub(crate) fn encode(frame: &Frame, dst: &mut BytesMut) {
    let escapes = Frame::escapes(&frame.command);
    dst.reserve(frame.command.len() + 64 + frame.body.len());
    dst.put_slice(frame.command.as_bytes());
    dst.put_u8(b'\n');
    for (name, value) in &frame.headers {
        put_escaped(dst, name, escapes);
        dst.put_u8(b':');
        put_escaped(dst, value, escapes);
        dst.put_u8(b'\n');
    }
    if !frame.body.is_empty() && frame.get("content-length").is_none() {
        dst.put_slice(format!("content-length:{}\n", frame.body.len()).as_bytes());
    }
    dst.put_u8(b'\n');
    dst.put_slice(&frame.body);
    dst.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = decode(&mut buf)? {
            out.push(f);
        }
        assert!(
            buf.iter().all(|&b| b == b'\n' || b == b'\r'),
            "left over: {buf:?}"
        );
        Ok(out)
    }

    /// Feeds `bytes` split at every point and checks the frames are the same.
    fn check(bytes: &[u8], expected: &[Frame]) {
        assert_eq!(decode_all(bytes).as_deref(), Ok(expected));
        for split in 0..=bytes.len() {
            let mut buf = BytesMut::from(&bytes[..split]);
            let mut out = Vec::new();
            while let Some(f) = decode(&mut buf).unwrap() {
                out.push(f);
            }
            buf.extend_from_slice(&bytes[split..]);
            while let Some(f) = decode(&mut buf).unwrap() {
                out.push(f);
            }
            assert_eq!(out, expected, "split at {split}");
        }
    }

    fn message(body: &[u8]) -> Frame {
        Frame::new("MESSAGE")
            .header("destination", "/queue/a")
            .header("content-length", body.len().to_string())
            .body(body.to_vec())
    }

    #[test]
    fn nul_inside_a_content_length_body() {
        let body = b"\0\x01\0stamp\0";
        let mut wire = BytesMut::new();
        encode(&message(body), &mut wire);
        check(&wire, &[message(body)]);
    }

    #[test]
    fn heart_beat_eols_between_and_before_frames() {
        let wire = b"\n\r\nRECEIPT\nreceipt-id:1\n\n\0\n\n\r\nRECEIPT\r\nreceipt-id:2\r\n\r\n\0\n";
        check(
            wire,
            &[
                Frame::new("RECEIPT").header("receipt-id", "1"),
                Frame::new("RECEIPT").header("receipt-id", "2"),
            ],
        );
    }

    #[test]
    fn body_without_content_length_ends_at_nul() {
        check(
            b"MESSAGE\nack:7\n\nhello\0ERROR\nmessage:no\n\nwhy\0",
            &[
                Frame::new("MESSAGE").header("ack", "7").body(&b"hello"[..]),
                Frame::new("ERROR")
                    .header("message", "no")
                    .body(&b"why"[..]),
            ],
        );
    }

    #[test]
    fn headers_are_unescaped_except_in_connected() {
        check(
            b"MESSAGE\nmessage-id:a\\cb\\\\c\\nd\nx:1\nx:2\n\n\0",
            &[Frame::new("MESSAGE")
                .header("message-id", "a:b\\c\nd")
                .header("x", "1")
                .header("x", "2")],
        );
        let f = decode_all(b"CONNECTED\nserver:a\\c\n\n\0").unwrap();
        assert_eq!(f[0].get("server"), Some("a\\c"));
        assert_eq!(f[0].get("x"), None);
        assert_eq!(
            decode_all(b"MESSAGE\nbad:\\t\n\n\0"),
            Err(FrameError::BadEscape)
        );
    }

    #[test]
    fn encode_escapes_and_round_trips() {
        let frame = Frame::new("SEND")
            .header("destination", "/topic/a:b")
            .body(&b"x\0y"[..]);
        let mut wire = BytesMut::new();
        encode(&frame, &mut wire);
        assert_eq!(
            &wire[..],
            b"SEND\ndestination:/topic/a\\cb\ncontent-length:3\n\nx\0y\0"
        );
        let back = decode_all(&wire).unwrap();
        assert_eq!(back[0].get("destination"), Some("/topic/a:b"));
        assert_eq!(&back[0].body[..], b"x\0y");
    }

    #[test]
    fn limits_are_checked_before_buffering() {
        let huge = format!("MESSAGE\ncontent-length:{}\n\n", MAX_BODY + 1);
        assert_eq!(
            decode_all(huge.as_bytes()),
            Err(FrameError::BodyTooLarge(MAX_BODY + 1))
        );
        let mut long = b"MESSAGE\nx:".to_vec();
        long.resize(MAX_HEAD + 1, b'a');
        assert_eq!(decode_all(&long), Err(FrameError::HeadTooLong));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}:v\n")).collect();
        assert_eq!(
            decode_all(format!("MESSAGE\n{many}\n\0").as_bytes()),
            Err(FrameError::TooManyHeaders)
        );
        assert_eq!(
            decode_all(b"MESSAGE\ncontent-length:2\n\nabc\0"),
            Err(FrameError::MissingNul)
        );
        assert_eq!(
            decode_all(b"MESSAGE\ncontent-length:x\n\n\0"),
            Err(FrameError::BadContentLength("x".into()))
        );
        assert_eq!(
            decode_all(b"MESSAGE\nnocolon\n\n\0"),
            Err(FrameError::MalformedHeader)
        );
    }
}
