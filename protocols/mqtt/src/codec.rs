//! MQTT 3.1.1 packet codec: bytes to [`Packet`]s and back. No I/O.
//!
//! `mqttbytes` does the field parsing; this module checks first what it
//! trusts: the declared remaining length against the configured maximum
//! (before anything is buffered), the packet type, and the protocol level of
//! CONNECT (`mqttbytes` would read an MQTT 5 CONNECT as 3.1.1). Decoding is
//! resumable: `Ok(None)` means "need more bytes".

use bytes::BytesMut;
pub use mqttbytes::v4::Packet;
use mqttbytes::{Error as WireError, v4};
use thiserror::Error;

/// Why bytes could not be decoded. Every variant ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Remaining length above the configured maximum packet size.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Declared remaining length.
        size: usize,
        /// Configured limit.
        max: usize,
    },
    /// CONNECT names a protocol level other than 4 (MQTT 3.1.1).
    #[error("unsupported protocol level {0}")]
    UnsupportedLevel(u8),
    /// CONNECT names a protocol other than "MQTT".
    #[error("unsupported protocol name")]
    BadProtocolName,
    /// The packet is malformed.
    #[error("malformed packet: {0:?}")]
    Malformed(WireError),
}

/// Resumable packet decoder with a size limit.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_packet_size: usize,
}

impl Decoder {
    /// A decoder accepting packets whose remaining length is at most `max`.
    pub fn new(max_packet_size: usize) -> Self {
        Self { max_packet_size }
    }

    /// Decode one packet from the front of `buf`, consuming it.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let header = match mqttbytes::check(buf.iter(), self.max_packet_size) {
            Ok(h) => h,
            Err(WireError::InsufficientBytes(n)) => {
                // The remaining length is already checked against the limit
                // whenever `n` comes from it.
                buf.reserve(n.min(self.max_packet_size + 5));
                return Ok(None);
            }
            Err(WireError::PayloadSizeLimitExceeded(size)) => {
                return Err(DecodeError::TooLarge {
                    size,
                    max: self.max_packet_size,
                });
            }
            Err(e) => return Err(DecodeError::Malformed(e)),
        };
        let kind = buf[0] >> 4;
        if kind == 0 || kind == 15 {
            return Err(DecodeError::Malformed(WireError::InvalidPacketType(kind)));
        }
        // Reserved flag bits must be exactly as specified (MQTT-2.2.2-2):
        // 0010 for PUBREL, SUBSCRIBE and UNSUBSCRIBE, 0000 for the others
        // except PUBLISH, whose flags mqttbytes checks.
        let flags = buf[0] & 0x0f;
        let expected = match kind {
            3 => flags,
            6 | 8 | 10 => 0b0010,
            _ => 0,
        };
        if flags != expected {
            return Err(DecodeError::Malformed(WireError::MalformedPacket));
        }
        if kind == 1 {
            check_connect(&buf[header.frame_length() - remaining_len(buf)..header.frame_length()])?;
        }
        v4::read(buf, self.max_packet_size)
            .map(Some)
            .map_err(DecodeError::Malformed)
    }
}

/// The remaining length of the packet at the front of `buf` (already
/// validated by `mqttbytes::check`).
fn remaining_len(buf: &[u8]) -> usize {
    let mut len = 0usize;
    for (i, b) in buf.iter().skip(1).take(4).enumerate() {
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    len
}

/// CONNECT's variable header starts with the protocol name and level.
fn check_connect(body: &[u8]) -> Result<(), DecodeError> {
    let malformed = DecodeError::Malformed(WireError::MalformedPacket);
    if body.len() < 2 {
        return Err(malformed);
    }
    let name_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let Some(name) = body.get(2..2 + name_len) else {
        return Err(malformed);
    };
    let Some(&level) = body.get(2 + name_len) else {
        return Err(malformed);
    };
    match (name, level) {
        (b"MQTT", 4) => Ok(()),
        (b"MQTT", l) | (b"MQIsdp", l) => Err(DecodeError::UnsupportedLevel(l)),
        _ => Err(DecodeError::BadProtocolName),
    }
}

/// Append `packet` to `out`. Packets we build are always encodable; a
/// failure (an over-long field) is logged and the packet dropped.
pub fn encode(packet: &Packet, out: &mut BytesMut) {
    let r = match packet {
        Packet::Connect(p) => p.write(out),
        Packet::ConnAck(p) => p.write(out),
        Packet::Publish(p) => p.write(out),
        Packet::PubAck(p) => p.write(out),
        Packet::PubRec(p) => p.write(out),
        Packet::PubRel(p) => p.write(out),
        Packet::PubComp(p) => p.write(out),
        Packet::Subscribe(p) => p.write(out),
        Packet::SubAck(p) => p.write(out),
        Packet::Unsubscribe(p) => p.write(out),
        Packet::UnsubAck(p) => p.write(out),
        Packet::PingReq => v4::PingReq.write(out),
        Packet::PingResp => v4::PingResp.write(out),
        Packet::Disconnect => v4::Disconnect.write(out),
    };
    if let Err(e) = r {
        tracing::error!(error = ?e, "cannot encode MQTT packet");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqttbytes::QoS;

    fn bytes_of(p: &Packet) -> BytesMut {
        let mut out = BytesMut::new();
        encode(p, &mut out);
        out
    }

    #[test]
    fn every_split_point_resumes() {
        let mut publish = v4::Publish::new("a/b", QoS::AtLeastOnce, b"hello".to_vec());
        publish.pkid = 7;
        let mut all = bytes_of(&Packet::Connect(v4::Connect::new("client")));
        all.extend_from_slice(&bytes_of(&Packet::Publish(publish.clone())));
        all.extend_from_slice(&bytes_of(&Packet::PingReq));
        let whole = all.freeze();
        for split in 0..whole.len() {
            let dec = Decoder::new(1024);
            let mut buf = BytesMut::from(&whole[..split]);
            let mut got = Vec::new();
            while let Some(p) = dec.decode(&mut buf).unwrap() {
                got.push(p);
            }
            buf.extend_from_slice(&whole[split..]);
            while let Some(p) = dec.decode(&mut buf).unwrap() {
                got.push(p);
            }
            assert_eq!(got.len(), 3, "split at {split}");
            assert_eq!(got[1], Packet::Publish(publish.clone()));
        }
    }

    #[test]
    fn limits_and_versions() {
        let dec = Decoder::new(16);
        // PUBLISH claiming 1 MiB.
        let mut big = BytesMut::from(&[0x30u8, 0x80, 0x80, 0x40][..]);
        assert!(matches!(
            dec.decode(&mut big),
            Err(DecodeError::TooLarge { .. })
        ));
        let mut auth = BytesMut::from(&[0xF0u8, 0x00][..]);
        assert!(matches!(
            dec.decode(&mut auth),
            Err(DecodeError::Malformed(_))
        ));
        // CONNECT with protocol level 5.
        let mut v5 = BytesMut::from(&[0x10u8, 10, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60][..]);
        assert_eq!(
            Decoder::new(1024).decode(&mut v5),
            Err(DecodeError::UnsupportedLevel(5))
        );
        let mut v31 = BytesMut::from(
            &[
                0x10u8, 12, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60,
            ][..],
        );
        assert_eq!(
            Decoder::new(1024).decode(&mut v31),
            Err(DecodeError::UnsupportedLevel(3))
        );
        let mut bad = BytesMut::from(&[0x10u8, 10, 0, 4, b'A', b'M', b'Q', b'P', 4, 2, 0, 60][..]);
        assert_eq!(
            Decoder::new(1024).decode(&mut bad),
            Err(DecodeError::BadProtocolName)
        );
        // Truncated remaining length waits for more.
        let mut partial = BytesMut::from(&[0x30u8, 0x80][..]);
        assert_eq!(Decoder::new(1 << 20).decode(&mut partial), Ok(None));
    }
}
