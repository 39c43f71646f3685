//! AMQP 0-9-1 frames and their codec, without I/O. [`decode`] reads one
//! frame from the front of a byte slice and borrows from it (no copy, no
//! allocation: a consumer parses a whole read buffer, then drops the bytes it
//! used); `Ok(None)` means more bytes are needed, never an error. [`encode`]
//! appends one frame's bytes.
//!
//! The declared frame size is checked against the negotiated frame-max before
//! anything waits for the rest of the frame, and every field read is bounds
//! checked: bad input is an error, never a panic.

use super::method::Method;
use bytes::{BufMut, BytesMut};

/// What a client sends first (spec 4.2.2).
pub(crate) const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// The smallest frame-max a peer may ask for (spec 4.2.3, `frame-min-size`).
pub(crate) const MIN_FRAME_MAX: u32 = 4096;
/// Frame header (type, channel, size) plus frame-end octet.
pub(crate) const FRAME_OVERHEAD: usize = 8;

const METHOD: u8 = 1;
const HEADER: u8 = 2;
const BODY: u8 = 3;
const HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;

/// One frame, borrowing its variable-length parts from the decoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    Method {
        channel: u16,
        method: Method<'a>,
    },
    /// A content header: what follows is `body_size` bytes of body frames.
    Header {
        channel: u16,
        class_id: u16,
        body_size: u64,
        /// Property flags and property list, undecoded.
        properties: &'a [u8],
    },
    Body {
        channel: u16,
        payload: &'a [u8],
    },
    Heartbeat,
}

/// Why bytes are not an AMQP frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// The peer sent a protocol header: it refused our protocol version and
    /// names the one it speaks (its last four octets).
    #[error("broker refused AMQP 0-9-1 and offered protocol header {0:?}")]
    ProtocolHeader([u8; 4]),
    /// A frame type other than method, header, body or heartbeat.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// A frame declared larger than the negotiated frame-max.
    #[error("frame of {size} bytes exceeds frame-max {max}")]
    TooLarge { size: usize, max: usize },
    /// The octet after the payload is not the frame-end marker 0xCE.
    #[error("frame end is {0:#04x}, not 0xce")]
    BadFrameEnd(u8),
    /// A method or content header shorter than its fields.
    #[error("truncated {0}")]
    Truncated(&'static str),
}

/// Decodes the frame at the front of `buf`, if it holds a whole one: the frame
/// and the bytes it took. `max_frame` bounds the whole frame, overhead
/// included (the negotiated frame-max).
pub(crate) fn decode(
    buf: &[u8],
    max_frame: usize,
) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    match kind {
        METHOD | HEADER | BODY | HEARTBEAT => {}
        b'A' => {
            if buf.len() < PROTOCOL_HEADER.len() {
                return Ok(None);
            }
            let mut version = [0; 4];
            version.copy_from_slice(&buf[4..8]);
            return Err(FrameError::ProtocolHeader(version));
        }
        other => return Err(FrameError::UnknownType(other)),
    }
    if buf.len() < 7 {
        return Ok(None);
    }
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    let total = size.saturating_add(FRAME_OVERHEAD);
    if total > max_frame {
        return Err(FrameError::TooLarge {
            size: total,
            max: max_frame,
        });
    }
    if buf.len() < total {
        return Ok(None);
    }
    if buf[total - 1] != FRAME_END {
        return Err(FrameError::BadFrameEnd(buf[total - 1]));
    }
    let payload = &buf[7..total - 1];
    let frame = match kind {
        METHOD => Frame::Method {
            channel,
            method: Method::decode(payload)?,
        },
        HEADER => {
            let mut c = Cursor::new(payload, "content header");
            let class_id = c.u16()?;
            let _weight = c.u16()?;
            let body_size = c.u64()?;
            let properties = c.rest();
            if properties.len() < 2 {
                return Err(FrameError::Truncated("content header"));
            }
            Frame::Header {
                channel,
                class_id,
                body_size,
                properties,
            }
        }
        BODY => Frame::Body { channel, payload },
        _ => Frame::Heartbeat,
    };
    Ok(Some((frame, total)))
}

/// Appends `frame`. Heartbeats go on channel 0 as the spec requires.
pub(crate) fn encode(frame: &Frame<'_>, out: &mut BytesMut) {
    match frame {
        Frame::Method { channel, method } => encode_method(*channel, method, out),
        Frame::Header {
            channel,
            class_id,
            body_size,
            properties,
        } => {
            let at = begin(out, HEADER, *channel);
            out.put_u16(*class_id);
            out.put_u16(0);
            out.put_u64(*body_size);
            out.put_slice(properties);
            finish(out, at);
        }
        Frame::Body { channel, payload } => {
            let at = begin(out, BODY, *channel);
            out.put_slice(payload);
            finish(out, at);
        }
        Frame::Heartbeat => {
            let at = begin(out, HEARTBEAT, 0);
            finish(out, at);
        }
    }
}

/// Appends a method frame (what [`encode`] does for [`Frame::Method`],
/// without building the frame).
pub(crate) fn encode_method(channel: u16, method: &Method<'_>, out: &mut BytesMut) {
    let at = begin(out, METHOD, channel);
    method.encode(out);
    finish(out, at);
}

/// Writes type, channel and a size placeholder; returns where the size goes.
fn begin(out: &mut BytesMut, kind: u8, channel: u16) -> usize {
    out.put_u8(kind);
    out.put_u16(channel);
    let at = out.len();
    out.put_u32(0);
    at
}

/// Fills in the size written by [`begin`] and appends the frame end.
fn finish(out: &mut BytesMut, at: usize) {
    // A frame's payload is bounded by what we encode: short strings, a few
    // fields, or a body already split to frame-max, all far below 4 GiB.
    let size = u32::try_from(out.len() - at - 4).unwrap_or(u32::MAX);
    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
    out.put_u8(FRAME_END);
}

/// A bounds-checked reader over a method's or header's fields.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    /// Named in [`FrameError::Truncated`] when a field runs past the end.
    what: &'static str,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.buf.len() < n {
            return Err(FrameError::Truncated(self.what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, FrameError> {
        let mut w = [0; 4];
        w.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(w))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, FrameError> {
        let mut w = [0; 8];
        w.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(w))
    }

    /// A short string: one length octet, then the bytes.
    pub(crate) fn short(&mut self) -> Result<&'a [u8], FrameError> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A long string or a field table: four length octets, then the bytes.
    pub(crate) fn long(&mut self) -> Result<&'a [u8], FrameError> {
        let n = self.u32()?;
        self.take(n as usize)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

/// Appends a short string. Callers pass at most 255 bytes (names we chose
/// or checked); longer input is cut rather than corrupting the frame.
pub(crate) fn put_short(out: &mut BytesMut, s: &[u8]) {
    let s = &s[..s.len().min(255)];
    out.put_u8(s.len() as u8);
    out.put_slice(s);
}

/// Appends a long string or a field table's encoded entries.
pub(crate) fn put_long(out: &mut BytesMut, s: &[u8]) {
    out.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
    out.put_slice(s);
}

#[cfg(test)]
mod tests;
