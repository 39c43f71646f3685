//! Codec tests: bytes → frames, frames → bytes, every split point of a
//! stream, and garbage in (errors, never panics).

use super::*;
use crate::amqp_raw::method::{Close, Tune};

const MAX: usize = 131_072;

fn method(channel: u16, method: Method<'static>) -> Frame<'static> {
    Frame::Method { channel, method }
}

/// One of every method this client knows, both directions.
fn every_method() -> Vec<Method<'static>> {
    let tune = Tune {
        channel_max: 2047,
        frame_max: 131_072,
        heartbeat: 60,
    };
    let close = Close {
        reply_code: 404,
        reply_text: b"NOT_FOUND - no queue 'q'",
        class_id: 50,
        method_id: 10,
    };
    vec![
        Method::ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties: b"\x07productS\x00\x00\x00\x0aSwitchyard",
            mechanisms: b"PLAIN AMQPLAIN",
            locales: b"en_US",
        },
        Method::ConnectionStartOk {
            client_properties: b"",
            mechanism: b"PLAIN",
            response: b"\0guest\0guest",
            locale: b"en_US",
        },
        Method::ConnectionTune(tune),
        Method::ConnectionTuneOk(tune),
        Method::ConnectionOpen { vhost: b"/" },
        Method::ConnectionOpenOk,
        Method::ConnectionClose(close),
        Method::ConnectionCloseOk,
        Method::ChannelOpen,
        Method::ChannelOpenOk,
        Method::ChannelClose(close),
        Method::ChannelCloseOk,
        Method::QueueDeclare {
            queue: b"bench-raw-1",
            durable: true,
        },
        Method::QueueDeclareOk {
            queue: b"bench-raw-1",
            message_count: 7,
            consumer_count: 1,
        },
        Method::QueueDelete { queue: b"q" },
        Method::QueueDeleteOk { message_count: 3 },
        Method::BasicQos {
            prefetch_count: 1000,
        },
        Method::BasicQosOk,
        Method::BasicConsume {
            queue: b"q",
            consumer_tag: b"raw-0",
            no_ack: true,
        },
        Method::BasicConsumeOk {
            consumer_tag: b"raw-0",
        },
        Method::BasicPublish {
            exchange: b"",
            routing_key: b"q",
        },
        Method::BasicReturn {
            reply_code: 312,
            reply_text: b"NO_ROUTE",
            exchange: b"x",
            routing_key: b"k",
        },
        Method::BasicDeliver {
            consumer_tag: b"raw-0",
            delivery_tag: u64::MAX,
            redelivered: true,
            exchange: b"",
            routing_key: b"q",
        },
        Method::BasicAck {
            delivery_tag: 42,
            multiple: true,
        },
        Method::BasicNack {
            delivery_tag: 43,
            multiple: false,
            requeue: true,
        },
        Method::ConfirmSelect,
        Method::ConfirmSelectOk,
        Method::Other {
            class_id: 90,
            method_id: 11,
        },
    ]
}

/// What a consumer with confirms on another channel might receive.
fn server_stream() -> BytesMut {
    let mut out = BytesMut::new();
    for m in every_method() {
        encode(&method(1, m), &mut out);
    }
    for tag in 1..=3u64 {
        let deliver = Method::BasicDeliver {
            consumer_tag: b"raw-0",
            delivery_tag: tag,
            redelivered: false,
            exchange: b"",
            routing_key: b"bench",
        };
        encode(&method(1, deliver), &mut out);
        let header = Frame::Header {
            channel: 1,
            class_id: 60,
            body_size: 20,
            properties: &[0x10, 0x00, 2],
        };
        encode(&header, &mut out);
        encode(
            &Frame::Body {
                channel: 1,
                payload: &[tag as u8; 12],
            },
            &mut out,
        );
        encode(
            &Frame::Body {
                channel: 1,
                payload: &[0xAB; 8],
            },
            &mut out,
        );
        encode(&Frame::Heartbeat, &mut out);
    }
    out
}

/// Decodes a whole stream; each frame re-encoded, concatenated.
fn reencode(stream: &[u8]) -> (usize, BytesMut) {
    let (mut at, mut frames, mut again) = (0, 0, BytesMut::new());
    while let Some((f, n)) = decode(&stream[at..], MAX).unwrap() {
        encode(&f, &mut again);
        at += n;
        frames += 1;
    }
    assert_eq!(at, stream.len(), "stream ends on a frame boundary");
    (frames, again)
}

#[test]
fn every_method_round_trips() {
    for m in every_method() {
        let f = method(7, m);
        let mut out = BytesMut::new();
        encode(&f, &mut out);
        let (back, n) = decode(&out, MAX).unwrap().unwrap();
        assert_eq!(n, out.len());
        assert_eq!(back, f);
    }
    for f in [
        Frame::Header {
            channel: 1,
            class_id: 60,
            body_size: 1 << 40,
            properties: &[0x10, 0x00, 2],
        },
        Frame::Body {
            channel: 65535,
            payload: b"",
        },
        Frame::Body {
            channel: 1,
            payload: &[0xCE; 300],
        },
        Frame::Heartbeat,
    ] {
        let mut out = BytesMut::new();
        encode(&f, &mut out);
        assert_eq!(decode(&out, MAX).unwrap(), Some((f, out.len())));
    }
}

#[test]
fn known_bytes() {
    let mut out = BytesMut::new();
    encode(&Frame::Heartbeat, &mut out);
    assert_eq!(&out[..], b"\x08\x00\x00\x00\x00\x00\x00\xce");
    out.clear();
    let ack = Method::BasicAck {
        delivery_tag: 0x0102,
        multiple: true,
    };
    encode_method(1, &ack, &mut out);
    assert_eq!(
        &out[..],
        b"\x01\x00\x01\x00\x00\x00\x0d\x00\x3c\x00\x50\0\0\0\0\0\0\x01\x02\x01\xce"
    );
    // queue.declare: durable is the second bit; an empty argument table.
    out.clear();
    let declare = Method::QueueDeclare {
        queue: b"q",
        durable: true,
    };
    encode_method(1, &declare, &mut out);
    assert_eq!(
        &out[7..out.len() - 1],
        b"\x00\x32\x00\x0a\x00\x00\x01q\x02\0\0\0\0"
    );
}

/// Bytes Switchyard sent a consumer (`--max-messages 3 --ack-every 2`):
/// start, tune, open-ok, channel.open-ok, qos-ok, consume-ok, three
/// deliveries of 16 bytes, close-ok.
const CAPTURED_CONSUMER: &[u8] = include_bytes!("testdata/switchyard-consumer.bin");
/// Bytes Switchyard sent a producer in confirm mode: the handshake,
/// select-ok, an ack per publish, close-ok.
const CAPTURED_PRODUCER: &[u8] = include_bytes!("testdata/switchyard-producer-confirm.bin");

/// Decodes `stream` arriving in two reads split at every point; the frames
/// re-encoded must give back the stream.
fn check_splits(stream: &[u8]) {
    let (frames, again) = reencode(stream);
    assert_eq!(&again[..], stream, "decode then encode is the identity");
    for split in 0..=stream.len() {
        let mut buf = BytesMut::new();
        let (mut got, mut out) = (0, BytesMut::new());
        for part in [&stream[..split], &stream[split..]] {
            buf.extend_from_slice(part);
            let mut at = 0;
            while let Some((f, n)) = decode(&buf[at..], MAX).unwrap() {
                encode(&f, &mut out);
                at += n;
                got += 1;
            }
            let _ = buf.split_to(at);
        }
        assert!(buf.is_empty(), "split at {split}");
        assert_eq!((got, &out[..]), (frames, stream), "split at {split}");
    }
}

#[test]
fn decodes_at_every_split_point() {
    check_splits(&server_stream());
    check_splits(CAPTURED_CONSUMER);
    check_splits(CAPTURED_PRODUCER);
}

/// Method ids, delivery tags and body sizes of a stream, in order.
fn summary(stream: &[u8]) -> Vec<String> {
    let mut at = 0;
    let mut seen = Vec::new();
    while let Some((f, n)) = decode(&stream[at..], MAX).unwrap() {
        seen.push(match f {
            Frame::Method {
                method: Method::BasicDeliver { delivery_tag, .. },
                ..
            } => format!("deliver {delivery_tag}"),
            Frame::Method {
                method:
                    Method::BasicAck {
                        delivery_tag,
                        multiple,
                    },
                ..
            } => format!("ack {delivery_tag} {multiple}"),
            Frame::Method {
                method: Method::ConnectionTune(t),
                ..
            } => format!("tune {} {} {}", t.channel_max, t.frame_max, t.heartbeat),
            Frame::Method { method, .. } => format!("{:?}", method.ids()),
            Frame::Header { body_size, .. } => format!("header {body_size}"),
            Frame::Body { payload, .. } => format!("body {}", payload.len()),
            Frame::Heartbeat => "heartbeat".to_owned(),
        });
        at += n;
    }
    seen
}

#[test]
fn understands_what_switchyard_sent() {
    let handshake = ["(10, 10)", "tune 2047 131072 60", "(10, 41)", "(20, 11)"];
    let delivery = |tag: u64| {
        [
            format!("deliver {tag}"),
            "header 16".into(),
            "body 16".into(),
        ]
    };
    let mut consumer: Vec<String> = handshake.iter().map(|s| s.to_string()).collect();
    consumer.extend(["(60, 11)".to_owned(), "(60, 21)".to_owned()]);
    consumer.extend((1..=3).flat_map(delivery));
    consumer.push("(10, 51)".to_owned());
    assert_eq!(summary(CAPTURED_CONSUMER), consumer);

    let mut producer: Vec<String> = handshake.iter().map(|s| s.to_string()).collect();
    producer.push("(85, 11)".to_owned());
    producer.extend((1..=3).map(|tag| format!("ack {tag} false")));
    producer.push("(10, 51)".to_owned());
    assert_eq!(summary(CAPTURED_PRODUCER), producer);
}

#[test]
fn sizes_are_checked_before_waiting_for_the_payload() {
    // Only the 7-byte header has arrived, declaring a 1 MiB frame.
    let head = b"\x03\x00\x01\x00\x10\x00\x00";
    assert_eq!(
        decode(head, MAX),
        Err(FrameError::TooLarge {
            size: 0x10_0000 + 8,
            max: MAX
        })
    );
    assert_eq!(
        decode(b"\x03\x00\x01\xff\xff\xff\xff", usize::MAX),
        Ok(None),
        "no overflow on a 4 GiB declared size"
    );
    assert_eq!(decode(&head[..6], MAX), Ok(None));
}

#[test]
fn malformed_frames_are_errors() {
    let check = |bytes: &[u8], expected: FrameError| {
        assert_eq!(decode(bytes, MAX), Err(expected), "{bytes:?}");
    };
    check(b"\x09", FrameError::UnknownType(9));
    check(
        b"AMQP\x00\x00\x09\x01",
        FrameError::ProtocolHeader([0, 0, 9, 1]),
    );
    check(
        b"\x08\x00\x00\x00\x00\x00\x00\x00",
        FrameError::BadFrameEnd(0),
    );
    // A deliver cut after its consumer tag.
    check(
        b"\x01\x00\x01\x00\x00\x00\x07\x00\x3c\x00\x3c\x02ab\xce",
        FrameError::Truncated("method"),
    );
    check(
        b"\x01\x00\x01\x00\x00\x00\x01\x00\xce",
        FrameError::Truncated("method"),
    );
    check(
        b"\x02\x00\x01\x00\x00\x00\x0c\x00\x3c\x00\x00\0\0\0\0\0\0\0\x01\xce",
        FrameError::Truncated("content header"),
    );
    assert_eq!(decode(b"AMQP", MAX), Ok(None));
}

/// xorshift64*: deterministic bytes without a dependency.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// Decodes until an error or the end; the result is not the point.
fn chew(bytes: &[u8], max: usize) {
    let mut at = 0;
    while let Ok(Some((_, n))) = decode(&bytes[at..], max) {
        assert!(n >= FRAME_OVERHEAD && at + n <= bytes.len());
        at += n;
    }
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for seed in 0..2000 {
        let mut bytes = noise(seed, 64);
        chew(&bytes, MAX);
        // Plausible frame starts, so the payload parsers see garbage too.
        bytes[0] = [1, 2, 3, 8][seed as usize % 4];
        bytes[3..7].copy_from_slice(&56u32.to_be_bytes());
        bytes[63] = 0xCE;
        chew(&bytes, MAX);
    }
    // Every single-byte corruption of a valid stream, with tight and loose
    // limits.
    let stream = [&server_stream()[..], CAPTURED_CONSUMER, CAPTURED_PRODUCER].concat();
    for i in 0..stream.len() {
        for value in [0x00, 0x01, 0x7F, 0xCE, 0xFF] {
            let mut bad = stream.to_vec();
            bad[i] = value;
            chew(&bad, MAX);
            chew(&bad, 64);
            chew(&bad[..i], MAX);
        }
    }
}
