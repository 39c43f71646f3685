//! AMQP 0-9-1 frame codec: bytes to [`Frame`]s and back. No I/O.
//!
//! The frame header (type, channel, size) is read here and the declared size
//! checked against the negotiated frame-max *before* any payload is buffered;
//! `amq-protocol` is only handed complete method and header payloads (it
//! trusts lengths, we must not). Body payloads are split off the input buffer
//! without copying. Decoding is resumable at any split point: `Ok(None)`
//! means "need more bytes".

use amq_protocol::frame::parsing::parse_content_header;
use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, WriteContext, gen_frame};
use amq_protocol::protocol::{AMQPClass, BasicProperties, parse_class};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// The only protocol header we speak.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// Frame overhead: 7-byte header plus the end octet.
pub const FRAME_OVERHEAD: usize = 8;
/// Smallest frame-max a peer may negotiate (spec).
pub const MIN_FRAME_MAX: u32 = 4096;

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A method on a channel (0 = connection).
    Method(u16, AMQPClass),
    /// A content header.
    Header(u16, AMQPContentHeader),
    /// A slice of content body.
    Body(u16, Bytes),
    /// A heartbeat (channel must be 0).
    Heartbeat(u16),
}

/// Why bytes could not be decoded. Every variant is fatal for the connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Declared payload larger than the negotiated frame-max.
    #[error("frame size {size} exceeds frame_max {max}")]
    TooLarge {
        /// Declared frame size including overhead.
        size: u64,
        /// Negotiated limit.
        max: u32,
    },
    /// Frame type octet is not 1, 2, 3 or 8.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// The octet after the payload is not 0xCE.
    #[error("frame end octet {0:#04x} is not 0xce")]
    BadEnd(u8),
    /// Method payload names a class/method this protocol does not have.
    #[error("unknown class/method {class}/{method}")]
    UnknownMethod {
        /// Class id.
        class: u16,
        /// Method id.
        method: u16,
    },
    /// Method payload could not be parsed.
    #[error("malformed method {class}/{method}")]
    MalformedMethod {
        /// Class id.
        class: u16,
        /// Method id.
        method: u16,
    },
    /// Content header could not be parsed.
    #[error("malformed content header")]
    MalformedHeader,
    /// Method payload shorter than its class and method ids.
    #[error("method frame too short")]
    ShortMethod,
}

/// Resumable frame decoder with a size limit.
#[derive(Debug, Clone)]
pub struct Decoder {
    frame_max: u32,
}

impl Decoder {
    /// A decoder accepting frames up to `frame_max` bytes (0 = no limit other
    /// than `u32::MAX`, as the spec defines it).
    pub fn new(frame_max: u32) -> Self {
        Self { frame_max }
    }

    /// Change the limit (after tuning).
    pub fn set_frame_max(&mut self, frame_max: u32) {
        self.frame_max = frame_max;
    }

    /// Decode one frame from the front of `buf`, consuming it.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if buf.len() < 7 {
            return Ok(None);
        }
        let kind = buf[0];
        let channel = u16::from_be_bytes([buf[1], buf[2]]);
        let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
        if !matches!(
            kind,
            FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
        ) {
            return Err(DecodeError::UnknownType(kind));
        }
        let total = u64::from(size) + FRAME_OVERHEAD as u64;
        if self.frame_max != 0 && total > u64::from(self.frame_max) {
            return Err(DecodeError::TooLarge {
                size: total,
                max: self.frame_max,
            });
        }
        // `total` fits in usize: it is bounded by frame_max (u32) or u32::MAX + 8.
        let total = usize::try_from(total).unwrap_or(usize::MAX);
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let end = buf[total - 1];
        if end != FRAME_END {
            return Err(DecodeError::BadEnd(end));
        }
        let mut frame = buf.split_to(total);
        frame.advance(7);
        frame.truncate(frame.len() - 1);
        let payload = frame;
        match kind {
            FRAME_METHOD => decode_method(channel, &payload).map(Some),
            FRAME_HEADER => match parse_content_header(&payload[..]) {
                Ok(([], h)) => Ok(Some(Frame::Header(channel, h))),
                _ => Err(DecodeError::MalformedHeader),
            },
            FRAME_BODY => Ok(Some(Frame::Body(channel, payload.freeze()))),
            _ => Ok(Some(Frame::Heartbeat(channel))),
        }
    }
}

fn decode_method(channel: u16, payload: &[u8]) -> Result<Frame, DecodeError> {
    if payload.len() < 4 {
        return Err(DecodeError::ShortMethod);
    }
    let class = u16::from_be_bytes([payload[0], payload[1]]);
    let method = u16::from_be_bytes([payload[2], payload[3]]);
    match parse_class(payload) {
        Ok(([], m)) => Ok(Frame::Method(channel, m)),
        // Trailing bytes after a valid method are tolerated by RabbitMQ's
        // parser only for reserved fields; we treat them as malformed.
        Ok(_) => Err(DecodeError::MalformedMethod { class, method }),
        Err(_) if is_known(class, method) => Err(DecodeError::MalformedMethod { class, method }),
        Err(_) => Err(DecodeError::UnknownMethod { class, method }),
    }
}

/// Whether (class, method) exists in AMQP 0-9-1 (with RabbitMQ extensions).
pub fn is_known(class: u16, method: u16) -> bool {
    let methods: &[u16] = match class {
        10 => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71],
        20 => &[10, 11, 20, 21, 40, 41],
        30 => &[10, 11],
        40 => &[10, 11, 20, 21, 30, 31, 40, 51],
        50 => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51],
        60 => &[
            10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90, 100, 110, 111, 120,
        ],
        85 => &[10, 11],
        90 => &[10, 11, 20, 21, 30, 31],
        _ => &[],
    };
    methods.contains(&method)
}

/// Frame encoder with a reusable scratch buffer.
#[derive(Debug, Default)]
pub struct Encoder {
    scratch: Vec<u8>,
}

impl Encoder {
    /// Append the protocol header.
    pub fn protocol_header(out: &mut BytesMut) {
        out.extend_from_slice(PROTOCOL_HEADER);
    }

    /// Append a method frame.
    pub fn method(&mut self, channel: u16, method: AMQPClass, out: &mut BytesMut) {
        self.frame(&AMQPFrame::Method(channel, method), out);
    }

    /// Append a content header and the body split into frames of at most
    /// `frame_max` bytes (0 = unlimited).
    pub fn content(
        &mut self,
        channel: u16,
        properties: BasicProperties,
        body: &[u8],
        frame_max: u32,
        out: &mut BytesMut,
    ) {
        let header = AMQPContentHeader {
            class_id: 60,
            body_size: body.len() as u64,
            properties,
        };
        self.frame(&AMQPFrame::Header(channel, header), out);
        body_frames(channel, body, frame_max, out);
    }

    /// Append a `basic.deliver` method frame, encoded by hand: the one
    /// method sent per message, so no intermediate structures. `None` (and
    /// nothing written) if a name does not fit a short string.
    pub fn deliver(channel: u16, d: &Deliver<'_>, out: &mut BytesMut) -> Option<()> {
        let names = [d.consumer_tag, d.exchange, d.routing_key];
        if names.iter().any(|n| n.len() > usize::from(u8::MAX)) {
            return None;
        }
        let size = 4 + 8 + 1 + names.iter().map(|n| 1 + n.len()).sum::<usize>();
        out.reserve(size + FRAME_OVERHEAD);
        out.put_u8(FRAME_METHOD);
        out.put_u16(channel);
        out.put_u32(u32::try_from(size).ok()?);
        out.put_u16(CLASS_BASIC);
        out.put_u16(METHOD_DELIVER);
        short_string(d.consumer_tag, out);
        out.put_u64(d.delivery_tag);
        out.put_u8(u8::from(d.redelivered));
        short_string(d.exchange, out);
        short_string(d.routing_key, out);
        out.put_u8(FRAME_END);
        Some(())
    }

    /// Encode `properties` as a content header carries them (property
    /// flags, then the list), into `into` (cleared first).
    pub fn properties(&mut self, properties: BasicProperties, into: &mut Vec<u8>) {
        into.clear();
        let header = AMQPContentHeader {
            class_id: CLASS_BASIC,
            body_size: 0,
            properties,
        };
        let start = self.scratch_frame(&AMQPFrame::Header(0, header));
        // Frame header (7), class, weight and body size (12) ... frame end.
        if let Some(p) = self
            .scratch
            .get(start + 7 + 12..self.scratch.len().saturating_sub(1))
        {
            into.extend_from_slice(p);
        }
    }

    /// Append a content header whose properties are already encoded (see
    /// [`Encoder::properties`]) and the body split into frames of at most
    /// `frame_max` bytes (0 = unlimited).
    pub fn content_encoded(
        channel: u16,
        properties: &[u8],
        body: &[u8],
        frame_max: u32,
        out: &mut BytesMut,
    ) {
        let size = 12 + properties.len();
        out.reserve(size + FRAME_OVERHEAD);
        out.put_u8(FRAME_HEADER);
        out.put_u16(channel);
        out.put_u32(u32::try_from(size).unwrap_or(u32::MAX));
        out.put_u16(CLASS_BASIC);
        out.put_u16(0);
        out.put_u64(body.len() as u64);
        out.extend_from_slice(properties);
        out.put_u8(FRAME_END);
        body_frames(channel, body, frame_max, out);
    }

    /// Append a heartbeat frame.
    pub fn heartbeat(out: &mut BytesMut) {
        out.extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
    }

    fn frame(&mut self, frame: &AMQPFrame, out: &mut BytesMut) {
        let start = self.scratch_frame(frame);
        if let Some(bytes) = self.scratch.get(start..) {
            out.extend_from_slice(bytes);
        }
    }

    /// Encode `frame` into the scratch buffer (cleared first); returns
    /// where it starts: the buffer's end if it could not be encoded.
    fn scratch_frame(&mut self, frame: &AMQPFrame) -> usize {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        match gen_frame(frame)(WriteContext::from(scratch)) {
            Ok(ctx) => {
                self.scratch = ctx.write;
                0
            }
            // Generation into a Vec only fails on values that cannot be
            // represented (e.g. an over-long shortstr); drop the frame and
            // log rather than send garbage.
            Err(e) => {
                tracing::error!(error = %e, "failed to encode frame");
                self.scratch.len()
            }
        }
    }
}

/// The fields of a `basic.deliver`.
#[derive(Debug, Clone, Copy)]
pub struct Deliver<'a> {
    /// The consumer's tag.
    pub consumer_tag: &'a str,
    /// The channel's delivery tag.
    pub delivery_tag: u64,
    /// Delivered before.
    pub redelivered: bool,
    /// The exchange the message was published to.
    pub exchange: &'a str,
    /// Its routing key (at most 255 bytes).
    pub routing_key: &'a str,
}

const CLASS_BASIC: u16 = 60;
const METHOD_DELIVER: u16 = 60;

/// Append an AMQP short string (the caller checked it fits).
fn short_string(s: &str, out: &mut BytesMut) {
    out.put_u8(u8::try_from(s.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(s.as_bytes());
}

/// Append `body` as body frames of at most `frame_max` bytes (0 = unlimited).
fn body_frames(channel: u16, body: &[u8], frame_max: u32, out: &mut BytesMut) {
    let max_payload = if frame_max == 0 {
        usize::MAX
    } else {
        (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1)
    };
    for chunk in body.chunks(max_payload) {
        raw_frame(FRAME_BODY, channel, chunk, out);
    }
}

/// Append a frame whose payload is written as is (body, heartbeat).
/// Payloads are at most frame-max, which fits the u32 size field.
fn raw_frame(kind: u8, channel: u16, payload: &[u8], out: &mut BytesMut) {
    out.reserve(payload.len() + FRAME_OVERHEAD);
    out.put_u8(kind);
    out.put_u16(channel);
    out.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(payload);
    out.put_u8(FRAME_END);
}

/// Encode `frame` and decode it again (fuzzing oracle: must give `frame`).
/// `None` if the frame cannot be encoded as decoded (never expected).
pub fn round_trip(frame: &Frame) -> Option<Frame> {
    let mut enc = Encoder::default();
    let mut out = BytesMut::new();
    match frame {
        Frame::Method(ch, m) => enc.method(*ch, m.clone(), &mut out),
        Frame::Header(ch, h) => enc.frame(&AMQPFrame::Header(*ch, h.clone()), &mut out),
        Frame::Body(ch, b) => raw_frame(FRAME_BODY, *ch, b, &mut out),
        Frame::Heartbeat(ch) => raw_frame(FRAME_HEARTBEAT, *ch, &[], &mut out),
    }
    Decoder::new(0).decode(&mut out).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic;

    /// Replays the committed fuzz corpus (and regression inputs) through the
    /// decoder with the fuzz target's oracle, on stable Rust.
    #[test]
    fn replay_fuzz_corpus() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/amqp_frame");
        let entries = std::fs::read_dir(dir).expect("fuzz corpus directory");
        let mut n = 0;
        for e in entries.flatten() {
            let data = std::fs::read(e.path()).unwrap();
            let mut buf = BytesMut::from(&data[..]);
            let dec = Decoder::new(131_072);
            while let Ok(Some(f)) = dec.decode(&mut buf) {
                assert_eq!(round_trip(&f).as_ref(), Some(&f), "{:?}", e.path());
            }
            n += 1;
        }
        assert!(n > 0, "corpus is empty");
    }

    /// The hand-encoded delivery is byte for byte what amq-protocol encodes.
    #[test]
    fn hand_encoded_delivery_matches_the_generic_encoder() {
        let mut enc = Encoder::default();
        let props = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_delivery_mode(2)
            .with_priority(7);
        for redelivered in [false, true] {
            let mut generic = BytesMut::new();
            let deliver = basic::Deliver {
                consumer_tag: "ctag-1".into(),
                delivery_tag: 0x0102_0304_0506_0708,
                redelivered,
                exchange: "amq.topic".into(),
                routing_key: "a.b.c".into(),
            };
            enc.method(
                7,
                AMQPClass::Basic(basic::AMQPMethod::Deliver(deliver)),
                &mut generic,
            );
            enc.content(7, props.clone(), b"hello", 4096, &mut generic);
            let mut hand = BytesMut::new();
            let d = Deliver {
                consumer_tag: "ctag-1",
                delivery_tag: 0x0102_0304_0506_0708,
                redelivered,
                exchange: "amq.topic",
                routing_key: "a.b.c",
            };
            Encoder::deliver(7, &d, &mut hand).expect("fits");
            let mut encoded = Vec::new();
            enc.properties(props.clone(), &mut encoded);
            Encoder::content_encoded(7, &encoded, b"hello", 4096, &mut hand);
            assert_eq!(hand, generic);
        }
        let mut empty = Vec::new();
        enc.properties(BasicProperties::default(), &mut empty);
        assert_eq!(empty, [0, 0], "no properties: just zero flags");
        let long = "x".repeat(256);
        let d = Deliver {
            consumer_tag: &long,
            delivery_tag: 1,
            redelivered: false,
            exchange: "",
            routing_key: "",
        };
        let mut out = BytesMut::new();
        assert!(Encoder::deliver(1, &d, &mut out).is_none());
        assert!(
            out.is_empty(),
            "nothing written for a name that does not fit"
        );
    }

    fn encoded(frames: &[(u16, AMQPClass)]) -> BytesMut {
        let mut enc = Encoder::default();
        let mut out = BytesMut::new();
        for (ch, m) in frames {
            enc.method(*ch, m.clone(), &mut out);
        }
        out
    }

    fn publish() -> AMQPClass {
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "amq.topic".into(),
            routing_key: "a.b".into(),
            mandatory: true,
            immediate: false,
        }))
    }

    #[test]
    fn every_split_point_resumes() {
        let mut enc = Encoder::default();
        let mut bytes = encoded(&[(1, publish())]);
        enc.content(
            1,
            BasicProperties::default().with_delivery_mode(2),
            b"hello world",
            4096,
            &mut bytes,
        );
        let whole = bytes.freeze();
        for split in 0..whole.len() {
            let dec = Decoder::new(4096);
            let mut buf = BytesMut::from(&whole[..split]);
            let mut frames = Vec::new();
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                frames.push(f);
            }
            buf.extend_from_slice(&whole[split..]);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                frames.push(f);
            }
            assert_eq!(frames.len(), 3, "split at {split}");
            assert_eq!(frames[0], Frame::Method(1, publish()));
            assert_eq!(
                frames[2],
                Frame::Body(1, Bytes::from_static(b"hello world"))
            );
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn body_split_by_frame_max() {
        let mut enc = Encoder::default();
        let mut out = BytesMut::new();
        let body = vec![7u8; 10_000];
        enc.content(3, BasicProperties::default(), &body, 4096, &mut out);
        let dec = Decoder::new(4096);
        let mut sizes = Vec::new();
        while let Some(f) = dec.decode(&mut out).unwrap() {
            if let Frame::Body(_, b) = f {
                sizes.push(b.len());
            }
        }
        assert_eq!(sizes, vec![4088, 4088, 1824]);
    }

    #[test]
    fn rejects_bad_frames_before_buffering() {
        let dec = Decoder::new(4096);
        let mut huge = BytesMut::from(&[1u8, 0, 1, 0x7f, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            dec.decode(&mut huge),
            Err(DecodeError::TooLarge { .. })
        ));
        let mut kind = BytesMut::from(&[9u8, 0, 0, 0, 0, 0, 0, 0xce][..]);
        assert_eq!(dec.decode(&mut kind), Err(DecodeError::UnknownType(9)));
        let mut end = BytesMut::from(&[8u8, 0, 0, 0, 0, 0, 0, 0x00][..]);
        assert_eq!(dec.decode(&mut end), Err(DecodeError::BadEnd(0)));
        let mut unknown = BytesMut::from(&[1u8, 0, 1, 0, 0, 0, 4, 0, 99, 0, 1, 0xce][..]);
        assert_eq!(
            dec.decode(&mut unknown),
            Err(DecodeError::UnknownMethod {
                class: 99,
                method: 1
            })
        );
        let mut short = BytesMut::from(&[1u8, 0, 1, 0, 0, 0, 4, 0, 60, 0, 40, 0xce][..]);
        assert_eq!(
            dec.decode(&mut short),
            Err(DecodeError::MalformedMethod {
                class: 60,
                method: 40
            })
        );
        let mut heartbeat = BytesMut::from(&[8u8, 0, 0, 0, 0, 0, 0, 0xce][..]);
        assert_eq!(dec.decode(&mut heartbeat), Ok(Some(Frame::Heartbeat(0))));
    }
}

/// Seed corpus: frames real clients send, written by
/// `SWITCHYARD_WRITE_CORPUS=1 cargo test -p switchyard-amqp write_seed_corpus`.
#[cfg(test)]
mod seeds {
    use super::*;
    use amq_protocol::protocol::{basic, channel, connection, exchange, queue};

    #[test]
    fn write_seed_corpus() {
        if std::env::var_os("SWITCHYARD_WRITE_CORPUS").is_none() {
            return;
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/amqp_frame");
        let mut enc = Encoder::default();
        let seeds: Vec<(&str, Vec<AMQPClass>)> = vec![
            (
                "start_ok",
                vec![AMQPClass::Connection(connection::AMQPMethod::StartOk(
                    connection::StartOk {
                        client_properties: Default::default(),
                        mechanism: "PLAIN".into(),
                        response: "\0guest\0guest".into(),
                        locale: "en_US".into(),
                    },
                ))],
            ),
            (
                "tune_open",
                vec![
                    AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                        channel_max: 2047,
                        frame_max: 131072,
                        heartbeat: 60,
                    })),
                    AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                        virtual_host: "/".into(),
                    })),
                    AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
                ],
            ),
            (
                "declare_bind",
                vec![
                    AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                        exchange: "x".into(),
                        kind: "topic".into(),
                        durable: true,
                        ..Default::default()
                    })),
                    AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                        queue: "q".into(),
                        durable: true,
                        ..Default::default()
                    })),
                    AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                        queue: "q".into(),
                        exchange: "x".into(),
                        routing_key: "a.*.#".into(),
                        ..Default::default()
                    })),
                ],
            ),
            (
                "consume_ack",
                vec![
                    AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                        prefetch_count: 10,
                        global: false,
                    })),
                    AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                        queue: "q".into(),
                        consumer_tag: "c".into(),
                        ..Default::default()
                    })),
                    AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: 1,
                        multiple: true,
                    })),
                ],
            ),
        ];
        for (name, methods) in seeds {
            let mut out = BytesMut::new();
            for m in methods {
                enc.method(1, m, &mut out);
            }
            std::fs::write(format!("{dir}/{name}"), &out).unwrap();
        }
        let mut out = BytesMut::new();
        let p = basic::Publish {
            exchange: "amq.topic".into(),
            routing_key: "a.b".into(),
            mandatory: true,
            immediate: false,
        };
        enc.method(1, AMQPClass::Basic(basic::AMQPMethod::Publish(p)), &mut out);
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("text/plain".into());
        enc.content(1, props, b"hello world", 4096, &mut out);
        Encoder::heartbeat(&mut out);
        std::fs::write(format!("{dir}/publish"), &out).unwrap();

        // A whole client conversation for the session target.
        use amq_protocol::protocol::{confirm, tx};
        let session_dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/corpus/amqp_session"
        );
        let mut out = BytesMut::new();
        let conn = [
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: Default::default(),
                mechanism: "PLAIN".into(),
                response: "\0guest\0guest".into(),
                locale: "en_US".into(),
            })),
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: 16,
                frame_max: 4096,
                heartbeat: 0,
            })),
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })),
        ];
        for m in conn {
            enc.method(0, m, &mut out);
        }
        let setup = [
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "q".into(),
                ..Default::default()
            })),
            AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                nowait: false,
            })),
        ];
        for m in setup {
            enc.method(1, m, &mut out);
        }
        let p = basic::Publish {
            exchange: "".into(),
            routing_key: "q".into(),
            mandatory: true,
            immediate: false,
        };
        enc.method(1, AMQPClass::Basic(basic::AMQPMethod::Publish(p)), &mut out);
        enc.content(
            1,
            BasicProperties::default().with_delivery_mode(2),
            b"payload",
            4096,
            &mut out,
        );
        let tail = [
            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: 1,
                global: false,
            })),
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: "q".into(),
                consumer_tag: "c".into(),
                ..Default::default()
            })),
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: 1,
                multiple: false,
            })),
            AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
                queue: "q".into(),
                no_ack: false,
            })),
            AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {})),
            AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {})),
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            })),
        ];
        for m in tail {
            enc.method(1, m, &mut out);
        }
        enc.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            })),
            &mut out,
        );
        std::fs::write(format!("{session_dir}/conversation"), &out).unwrap();
    }
}
