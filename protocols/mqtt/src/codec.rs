//! MQTT 3.1.1 and 5.0 packet codec: bytes to [`Packet`]s and back. No I/O.
//!
//! The session works on MQTT 5 packets ([`Packet`], mqttbytes' `v5` types,
//! a superset of 3.1.1's); the codec translates for 3.1.1 clients in both
//! directions, so one state machine serves both levels. The level is set by
//! the CONNECT a [`Decoder`] sees.
//!
//! `mqttbytes` does the field parsing; this module checks first what it
//! trusts: the declared remaining length against the configured maximum
//! (before anything is buffered), the packet type and reserved flags, and
//! the protocol name and level of CONNECT. It parses MQTT 5 UNSUBSCRIBE
//! itself (mqttbytes' parser prints to stderr), accepts an MQTT 5
//! DISCONNECT with no reason code (mqttbytes refuses it), and reports AUTH,
//! which mqttbytes cannot parse and Switchyard does not offer. Decoding is
//! resumable: `Ok(None)` means "need more bytes".

use bytes::{Buf, Bytes, BytesMut};
pub use mqttbytes::Protocol;
pub use mqttbytes::v5::Packet;
use mqttbytes::{Error as WireError, v4, v5};
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
    /// CONNECT names a protocol level other than 4 (3.1.1) or 5.
    #[error("unsupported protocol level {0}")]
    UnsupportedLevel(u8),
    /// CONNECT names a protocol other than "MQTT".
    #[error("unsupported protocol name")]
    BadProtocolName,
    /// An MQTT 5 AUTH packet: no authentication method is offered.
    #[error("AUTH packet, but no authentication method was agreed")]
    Auth,
    /// A well-formed packet a client must not send (MQTT 5 reason 0x82).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The packet is malformed.
    #[error("malformed packet: {0:?}")]
    Malformed(WireError),
}

/// Resumable packet decoder with a size limit.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_packet_size: usize,
    protocol: Protocol,
    /// Reading what a client sent (the broker's side), as opposed to
    /// reading a server's output (tests, fuzz oracles).
    from_client: bool,
    /// The last CONNECT was MQTT 3.1 (`MQIsdp`, level 3), read as 3.1.1.
    mqtt31: bool,
    /// A new connection: its first packet must be CONNECT (MQTT-3.1.0-1),
    /// which is checked on its first byte, so garbage is refused at once
    /// instead of after the length it seems to declare has arrived.
    awaiting_connect: bool,
}

impl Decoder {
    /// A decoder accepting packets whose remaining length is at most `max`.
    /// It reads 3.1.1 until a CONNECT says otherwise.
    pub fn new(max_packet_size: usize) -> Self {
        Self {
            max_packet_size,
            protocol: Protocol::V4,
            from_client: true,
            mqtt31: false,
            awaiting_connect: true,
        }
    }

    /// A decoder of a client's packets that already read its CONNECT (for
    /// a connection that was parked).
    pub fn resume(max_packet_size: usize, protocol: Protocol) -> Self {
        Self {
            max_packet_size,
            protocol,
            from_client: true,
            mqtt31: false,
            awaiting_connect: false,
        }
    }

    /// A decoder already reading `protocol` (for reading what a session
    /// wrote).
    pub fn with_protocol(max_packet_size: usize, protocol: Protocol) -> Self {
        Self {
            max_packet_size,
            protocol,
            from_client: false,
            mqtt31: false,
            awaiting_connect: false,
        }
    }

    /// The level the last CONNECT chose.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Whether the last CONNECT was MQTT 3.1 (decoded as 3.1.1, which is a
    /// superset on the wire; the session answers it as 3.1).
    pub fn is_mqtt31(&self) -> bool {
        self.mqtt31
    }

    /// What the fixed header's first byte alone rules out: reserved packet
    /// types, reserved flag bits, and anything but CONNECT first.
    fn check_first_byte(&self, first: u8) -> Result<(), DecodeError> {
        let kind = first >> 4;
        if self.awaiting_connect && kind != 1 {
            return Err(DecodeError::Protocol("the first packet must be CONNECT"));
        }
        if kind == 15 && self.protocol == Protocol::V5 {
            return Err(DecodeError::Auth);
        }
        if kind == 0 || kind == 15 {
            return Err(DecodeError::Malformed(WireError::InvalidPacketType(kind)));
        }
        // Reserved flag bits must be exactly as specified (MQTT-2.2.2-2):
        // 0010 for PUBREL, SUBSCRIBE and UNSUBSCRIBE, 0000 for the others
        // except PUBLISH, whose flags mqttbytes checks.
        let flags = first & 0x0f;
        let expected = match kind {
            3 => flags,
            6 | 8 | 10 => 0b0010,
            _ => 0,
        };
        if flags != expected {
            return Err(DecodeError::Malformed(WireError::MalformedPacket));
        }
        Ok(())
    }

    /// Decode one packet from the front of `buf`, consuming it.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        self.check_first_byte(first)?;
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
        let kind = first >> 4;
        let remaining = remaining_len(buf);
        if kind == 1 {
            let body = &buf[header.frame_length() - remaining..header.frame_length()];
            let level = check_connect(body)?;
            self.awaiting_connect = false;
            self.mqtt31 = level == Level::Mqtt31;
            self.protocol = match level {
                Level::Mqtt5 => Protocol::V5,
                Level::Mqtt311 => Protocol::V4,
                Level::Mqtt31 => {
                    // The same packet as 3.1.1 but for the protocol name and
                    // level: rewritten so mqttbytes reads it.
                    self.protocol = Protocol::V4;
                    let mut rewritten = rewrite_mqtt31_connect(body);
                    let _ = buf.split_to(header.frame_length());
                    return v4::read(&mut rewritten, self.max_packet_size)
                        .map(|p| Some(from_v4(p)))
                        .map_err(DecodeError::Malformed);
                }
            };
            // Falls through to the reader of that level (mqttbytes' v5
            // reader would look for will properties in a 3.1.1 CONNECT).
        }
        match (self.protocol, kind) {
            (Protocol::V4, _) => v4::read(buf, self.max_packet_size)
                .map(|p| Some(from_v4(p)))
                .map_err(DecodeError::Malformed),
            (Protocol::V5, 10) => {
                let packet = buf.split_to(header.frame_length()).freeze();
                let body = packet.slice(header.frame_length() - remaining..);
                read_unsubscribe_v5(body).map(|u| Some(Packet::Unsubscribe(u)))
            }
            // A DISCONNECT of no bytes (normal) or just a reason code:
            // valid MQTT 5 (3.14.2.1), refused by mqttbytes.
            (Protocol::V5, 14) if remaining <= 1 => {
                let packet = buf.split_to(header.frame_length());
                let mut d = v5::Disconnect::new();
                if remaining == 1 {
                    d.reason_code = disconnect_reason(packet[packet.len() - 1])?;
                }
                Ok(Some(Packet::Disconnect(d)))
            }
            (Protocol::V5, _) => {
                let packet = v5::read(buf, self.max_packet_size).map_err(DecodeError::Malformed)?;
                // A client's PUBLISH must not carry subscription identifiers
                // (MQTT-3.3.4-6); mqttbytes also misreads four or more.
                if let Packet::Publish(p) = &packet
                    && self.from_client
                    && p.properties
                        .as_ref()
                        .is_some_and(|pr| !pr.subscription_identifiers.is_empty())
                {
                    return Err(DecodeError::Protocol(
                        "subscription identifier in a client PUBLISH",
                    ));
                }
                Ok(Some(packet))
            }
        }
    }
}

/// An MQTT 5 DISCONNECT reason code.
fn disconnect_reason(code: u8) -> Result<v5::DisconnectReasonCode, DecodeError> {
    use v5::DisconnectReasonCode as R;
    Ok(match code {
        0x00 => R::NormalDisconnection,
        0x04 => R::DisconnectWithWillMessage,
        0x80 => R::UnspecifiedError,
        0x81 => R::MalformedPacket,
        0x82 => R::ProtocolError,
        0x83 => R::ImplementationSpecificError,
        0x87 => R::NotAuthorized,
        0x89 => R::ServerBusy,
        0x8B => R::ServerShuttingDown,
        0x8D => R::KeepAliveTimeout,
        0x8E => R::SessionTakenOver,
        0x8F => R::TopicFilterInvalid,
        0x90 => R::TopicNameInvalid,
        0x93 => R::ReceiveMaximumExceeded,
        0x94 => R::TopicAliasInvalid,
        0x95 => R::PacketTooLarge,
        0x96 => R::MessageRateTooHigh,
        0x97 => R::QuotaExceeded,
        0x98 => R::AdministrativeAction,
        0x99 => R::PayloadFormatInvalid,
        0x9A => R::RetainNotSupported,
        0x9B => R::QoSNotSupported,
        0x9C => R::UseAnotherServer,
        0x9D => R::ServerMoved,
        0x9E => R::SharedSubscriptionNotSupported,
        0x9F => R::ConnectionRateExceeded,
        0xA0 => R::MaximumConnectTime,
        0xA1 => R::SubscriptionIdentifiersNotSupported,
        0xA2 => R::WildcardSubscriptionsNotSupported,
        _ => return Err(DecodeError::Malformed(WireError::MalformedPacket)),
    })
}

/// MQTT 5 UNSUBSCRIBE body: packet id, properties, at least one filter.
fn read_unsubscribe_v5(mut body: Bytes) -> Result<v5::Unsubscribe, DecodeError> {
    let malformed = || DecodeError::Malformed(WireError::MalformedPacket);
    if body.remaining() < 2 {
        return Err(malformed());
    }
    let pkid = body.get_u16();
    let props_len = read_var_int(&mut body)?;
    if body.remaining() < props_len {
        return Err(malformed());
    }
    let mut props = body.split_to(props_len);
    let mut user_properties = Vec::new();
    while props.has_remaining() {
        // Only user properties (0x26) are allowed on UNSUBSCRIBE.
        if props.get_u8() != 0x26 {
            return Err(malformed());
        }
        let k = read_string(&mut props)?;
        let v = read_string(&mut props)?;
        user_properties.push((k, v));
    }
    let mut filters = Vec::new();
    while body.has_remaining() {
        filters.push(read_string(&mut body)?);
    }
    if filters.is_empty() || pkid == 0 {
        return Err(malformed());
    }
    let properties =
        (!user_properties.is_empty()).then_some(v5::UnsubscribeProperties { user_properties });
    Ok(v5::Unsubscribe {
        pkid,
        filters,
        properties,
    })
}

/// An MQTT variable byte integer (at most four bytes).
fn read_var_int(b: &mut Bytes) -> Result<usize, DecodeError> {
    let mut value = 0usize;
    for i in 0..4 {
        if !b.has_remaining() {
            break;
        }
        let byte = b.get_u8();
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::Malformed(WireError::MalformedPacket))
}

fn read_string(b: &mut Bytes) -> Result<String, DecodeError> {
    let malformed = || DecodeError::Malformed(WireError::MalformedPacket);
    if b.remaining() < 2 {
        return Err(malformed());
    }
    let n = usize::from(b.get_u16());
    if b.remaining() < n {
        return Err(malformed());
    }
    String::from_utf8(b.split_to(n).to_vec()).map_err(|_| malformed())
}

/// A 3.1.1 packet as the MQTT 5 packet it corresponds to.
fn from_v4(p: v4::Packet) -> Packet {
    match p {
        v4::Packet::Connect(c) => Packet::Connect(v5::Connect {
            protocol: Protocol::V4,
            keep_alive: c.keep_alive,
            client_id: c.client_id,
            clean_session: c.clean_session,
            last_will: c.last_will.map(|w| v5::LastWill {
                topic: w.topic,
                message: w.message,
                qos: w.qos,
                retain: w.retain,
                properties: None,
            }),
            login: c.login.map(|l| v5::Login {
                username: l.username,
                password: l.password,
            }),
            properties: None,
        }),
        v4::Packet::ConnAck(a) => {
            use v4::ConnectReturnCode as V4;
            use v5::ConnectReturnCode as V5;
            let code = match a.code {
                V4::Success => V5::Success,
                V4::RefusedProtocolVersion => V5::UnsupportedProtocolVersion,
                V4::BadClientId => V5::ClientIdentifierNotValid,
                V4::ServiceUnavailable => V5::ServerUnavailable,
                V4::BadUserNamePassword => V5::BadUserNamePassword,
                V4::NotAuthorized => V5::NotAuthorized,
            };
            Packet::ConnAck(v5::ConnAck::new(code, a.session_present))
        }
        v4::Packet::Publish(p) => Packet::Publish(v5::Publish {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            topic: p.topic,
            pkid: p.pkid,
            properties: None,
            payload: p.payload,
        }),
        v4::Packet::PubAck(a) => Packet::PubAck(v5::PubAck::new(a.pkid)),
        v4::Packet::PubRec(a) => Packet::PubRec(v5::PubRec::new(a.pkid)),
        v4::Packet::PubRel(a) => Packet::PubRel(v5::PubRel::new(a.pkid)),
        v4::Packet::PubComp(a) => Packet::PubComp(v5::PubComp::new(a.pkid)),
        v4::Packet::Subscribe(s) => Packet::Subscribe(v5::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| v5::SubscribeFilter::new(f.path, f.qos))
                .collect(),
            properties: None,
        }),
        v4::Packet::SubAck(a) => {
            let codes = a
                .return_codes
                .into_iter()
                .map(|c| match c {
                    v4::SubscribeReasonCode::Success(mqttbytes::QoS::AtMostOnce) => {
                        v5::SubscribeReasonCode::QoS0
                    }
                    v4::SubscribeReasonCode::Success(mqttbytes::QoS::AtLeastOnce) => {
                        v5::SubscribeReasonCode::QoS1
                    }
                    v4::SubscribeReasonCode::Success(mqttbytes::QoS::ExactlyOnce) => {
                        v5::SubscribeReasonCode::QoS2
                    }
                    v4::SubscribeReasonCode::Failure => v5::SubscribeReasonCode::Unspecified,
                })
                .collect();
            Packet::SubAck(v5::SubAck::new(a.pkid, codes))
        }
        v4::Packet::Unsubscribe(u) => Packet::Unsubscribe(v5::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
            properties: None,
        }),
        v4::Packet::UnsubAck(a) => Packet::UnsubAck(v5::UnsubAck::new(a.pkid)),
        v4::Packet::PingReq => Packet::PingReq,
        v4::Packet::PingResp => Packet::PingResp,
        v4::Packet::Disconnect => Packet::Disconnect(v5::Disconnect::new()),
    }
}

/// The 3.1.1 CONNACK return code closest to an MQTT 5 reason code.
fn connack_code_v4(code: v5::ConnectReturnCode) -> v4::ConnectReturnCode {
    use v4::ConnectReturnCode as V4;
    use v5::ConnectReturnCode as V5;
    match code {
        V5::Success => V4::Success,
        V5::UnsupportedProtocolVersion => V4::RefusedProtocolVersion,
        V5::ClientIdentifierNotValid => V4::BadClientId,
        V5::ServerUnavailable => V4::ServiceUnavailable,
        V5::BadUserNamePassword => V4::BadUserNamePassword,
        V5::NotAuthorized | V5::Banned | V5::BadAuthenticationMethod => V4::NotAuthorized,
        _ => V4::ServiceUnavailable,
    }
}

/// An MQTT 5 packet as 3.1.1 writes it.
/// A PUBLISH as 3.1.1 has it (no properties).
fn publish_v4(p: v5::Publish) -> v4::Publish {
    let mut v = v4::Publish::from_bytes(p.topic, p.qos, p.payload);
    v.dup = p.dup;
    v.retain = p.retain;
    v.pkid = p.pkid;
    v
}

fn to_v4(p: &Packet) -> v4::Packet {
    match p {
        Packet::Connect(c) => {
            let mut v = v4::Connect::new(c.client_id.clone());
            v.keep_alive = c.keep_alive;
            v.clean_session = c.clean_session;
            v.last_will = c.last_will.as_ref().map(|w| v4::LastWill {
                topic: w.topic.clone(),
                message: w.message.clone(),
                qos: w.qos,
                retain: w.retain,
            });
            v.login = c.login.as_ref().map(|l| v4::Login {
                username: l.username.clone(),
                password: l.password.clone(),
            });
            v4::Packet::Connect(v)
        }
        Packet::ConnAck(a) => {
            v4::Packet::ConnAck(v4::ConnAck::new(connack_code_v4(a.code), a.session_present))
        }
        Packet::Publish(p) => v4::Packet::Publish(publish_v4(p.clone())),
        Packet::PubAck(a) => v4::Packet::PubAck(v4::PubAck::new(a.pkid)),
        Packet::PubRec(a) => v4::Packet::PubRec(v4::PubRec::new(a.pkid)),
        Packet::PubRel(a) => v4::Packet::PubRel(v4::PubRel::new(a.pkid)),
        Packet::PubComp(a) => v4::Packet::PubComp(v4::PubComp::new(a.pkid)),
        Packet::Subscribe(s) => {
            let mut v = v4::Subscribe::empty_subscribe();
            v.pkid = s.pkid;
            for f in &s.filters {
                v.add(f.path.clone(), f.qos);
            }
            v4::Packet::Subscribe(v)
        }
        Packet::SubAck(a) => {
            let codes = a
                .return_codes
                .iter()
                .map(|c| match c {
                    v5::SubscribeReasonCode::QoS0 => {
                        v4::SubscribeReasonCode::Success(mqttbytes::QoS::AtMostOnce)
                    }
                    v5::SubscribeReasonCode::QoS1 => {
                        v4::SubscribeReasonCode::Success(mqttbytes::QoS::AtLeastOnce)
                    }
                    v5::SubscribeReasonCode::QoS2 => {
                        v4::SubscribeReasonCode::Success(mqttbytes::QoS::ExactlyOnce)
                    }
                    _ => v4::SubscribeReasonCode::Failure,
                })
                .collect();
            v4::Packet::SubAck(v4::SubAck::new(a.pkid, codes))
        }
        Packet::Unsubscribe(u) => {
            let mut v = v4::Unsubscribe::new(u.filters.first().cloned().unwrap_or_default());
            v.pkid = u.pkid;
            v.topics = u.filters.clone();
            v4::Packet::Unsubscribe(v)
        }
        Packet::UnsubAck(a) => v4::Packet::UnsubAck(v4::UnsubAck::new(a.pkid)),
        Packet::PingReq => v4::Packet::PingReq,
        Packet::PingResp => v4::Packet::PingResp,
        // A client's DISCONNECT; the session never sends one to 3.1.1.
        Packet::Disconnect(_) => v4::Packet::Disconnect,
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
/// The protocol a CONNECT names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Mqtt31,
    Mqtt311,
    Mqtt5,
}

/// A 3.1.1 CONNECT with the body of a 3.1 one (`MQIsdp`, level 3; checked
/// by [`check_connect`]).
fn rewrite_mqtt31_connect(body: &[u8]) -> BytesMut {
    // Name length (2) + "MQIsdp" (6) + level (1).
    let rest = &body[9..];
    let len = rest.len() + 7;
    let mut out = BytesMut::with_capacity(len + 5);
    out.extend_from_slice(&[0x10]);
    let mut n = len;
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.extend_from_slice(&[b]);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4]);
    out.extend_from_slice(rest);
    out
}

fn check_connect(body: &[u8]) -> Result<Level, DecodeError> {
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
        (b"MQTT", 4) => Ok(Level::Mqtt311),
        (b"MQTT", 5) => Ok(Level::Mqtt5),
        (b"MQIsdp", 3) => Ok(Level::Mqtt31),
        (b"MQTT", l) | (b"MQIsdp", l) => Err(DecodeError::UnsupportedLevel(l)),
        _ => Err(DecodeError::BadProtocolName),
    }
}

/// [`encode`] for a packet the caller gives up: a PUBLISH to a 3.1.1
/// client moves its topic into the 3.1.1 packet instead of copying it (one
/// allocation less per delivery).
pub fn encode_owned(packet: Packet, protocol: Protocol, out: &mut BytesMut) {
    match (protocol, packet) {
        (Protocol::V4, Packet::Publish(p)) => {
            if let Err(e) = publish_v4(p).write(out) {
                tracing::error!(error = ?e, "cannot encode MQTT packet");
            }
        }
        (protocol, packet) => encode(&packet, protocol, out),
    }
}

/// Append `packet` to `out` as `protocol` writes it. Packets we build are
/// always encodable; a failure (an over-long field) is logged and the
/// packet dropped.
pub fn encode(packet: &Packet, protocol: Protocol, out: &mut BytesMut) {
    let r = match protocol {
        Protocol::V5 => match packet {
            Packet::Connect(p) => p.write(out),
            // mqttbytes leaves out the property length of a CONNACK without
            // properties, which MQTT 5 requires (3.2.2.3.1): write it.
            Packet::ConnAck(p) if p.properties.is_none() => {
                out.extend_from_slice(&[0x20, 0x03, u8::from(p.session_present), p.code as u8, 0]);
                Ok(5)
            }
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
            Packet::PingReq => v5::PingReq.write(out),
            Packet::PingResp => v5::PingResp.write(out),
            // mqttbytes ends a DISCONNECT without properties after the
            // reason code (valid, 3.14.2.2.1), which some clients (rumqttc
            // 0.25) cannot parse: write the empty property length too.
            Packet::Disconnect(p)
                if p.properties.is_none()
                    && p.reason_code != v5::DisconnectReasonCode::NormalDisconnection =>
            {
                out.extend_from_slice(&[0xE0, 0x02, p.reason_code as u8, 0x00]);
                Ok(4)
            }
            Packet::Disconnect(p) => p.write(out),
        },
        Protocol::V4 => match to_v4(packet) {
            v4::Packet::Connect(p) => p.write(out),
            v4::Packet::ConnAck(p) => p.write(out),
            v4::Packet::Publish(p) => p.write(out),
            v4::Packet::PubAck(p) => p.write(out),
            v4::Packet::PubRec(p) => p.write(out),
            v4::Packet::PubRel(p) => p.write(out),
            v4::Packet::PubComp(p) => p.write(out),
            v4::Packet::Subscribe(p) => p.write(out),
            v4::Packet::SubAck(p) => p.write(out),
            v4::Packet::Unsubscribe(p) => p.write(out),
            v4::Packet::UnsubAck(p) => p.write(out),
            v4::Packet::PingReq => v4::PingReq.write(out),
            v4::Packet::PingResp => v4::PingResp.write(out),
            v4::Packet::Disconnect => v4::Disconnect.write(out),
        },
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
        encode(p, Protocol::V4, &mut out);
        out
    }

    #[test]
    fn every_split_point_resumes() {
        let mut publish = v5::Publish::new("a/b", QoS::AtLeastOnce, b"hello".to_vec());
        publish.pkid = 7;
        let mut connect = v5::Connect::new("client");
        connect.protocol = Protocol::V4;
        let mut all = bytes_of(&Packet::Connect(connect));
        all.extend_from_slice(&bytes_of(&Packet::Publish(publish.clone())));
        all.extend_from_slice(&bytes_of(&Packet::PingReq));
        let whole = all.freeze();
        for split in 0..whole.len() {
            let mut dec = Decoder::new(1024);
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
        let mut dec = Decoder::resume(16, Protocol::V4);
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
        // CONNECT with protocol level 6.
        let mut v6 = BytesMut::from(&[0x10u8, 10, 0, 4, b'M', b'Q', b'T', b'T', 6, 2, 0, 60][..]);
        assert_eq!(
            Decoder::new(1024).decode(&mut v6),
            Err(DecodeError::UnsupportedLevel(6))
        );
        // MQTT 3.1: read as 3.1.1, and said so.
        let mut v31 = BytesMut::from(
            &[
                0x10u8, 15, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60, 0, 1, b'c',
            ][..],
        );
        let mut dec31 = Decoder::new(1024);
        match dec31.decode(&mut v31) {
            Ok(Some(Packet::Connect(c))) => {
                assert_eq!(
                    (c.client_id.as_str(), c.keep_alive, c.clean_session),
                    ("c", 60, true)
                );
            }
            other => panic!("3.1 CONNECT: {other:?}"),
        }
        assert!(dec31.is_mqtt31() && v31.is_empty());
        let mut v3_named_mqtt =
            BytesMut::from(&[0x10u8, 10, 0, 4, b'M', b'Q', b'T', b'T', 3, 2, 0, 60][..]);
        assert_eq!(
            Decoder::new(1024).decode(&mut v3_named_mqtt),
            Err(DecodeError::UnsupportedLevel(3))
        );
        let mut bad = BytesMut::from(&[0x10u8, 10, 0, 4, b'A', b'M', b'Q', b'P', 4, 2, 0, 60][..]);
        assert_eq!(
            Decoder::new(1024).decode(&mut bad),
            Err(DecodeError::BadProtocolName)
        );
        // MQTT 5: CONNECT sets the level; AUTH is reported, an empty
        // DISCONNECT accepted, UNSUBSCRIBE parsed by us.
        let mut dec = Decoder::new(1024);
        let mut v5 = BytesMut::from(
            &[
                0x10u8, 13, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0, 0,
            ][..],
        );
        assert!(
            matches!(dec.decode(&mut v5), Ok(Some(Packet::Connect(c))) if c.protocol == Protocol::V5)
        );
        assert_eq!(dec.protocol(), Protocol::V5);
        let mut empty_disconnect = BytesMut::from(&[0xE0u8, 0][..]);
        assert!(matches!(
            dec.decode(&mut empty_disconnect),
            Ok(Some(Packet::Disconnect(d))) if d.reason_code == v5::DisconnectReasonCode::NormalDisconnection
        ));
        let mut unsub = BytesMut::from(&[0xA2u8, 6, 0, 7, 0, 0, 1, b'a'][..]);
        assert!(matches!(
            dec.decode(&mut unsub),
            Ok(Some(Packet::Unsubscribe(u))) if u.pkid == 7 && u.filters == ["a"]
        ));
        let mut unsub_no_filter = BytesMut::from(&[0xA2u8, 3, 0, 7, 0][..]);
        assert!(dec.decode(&mut unsub_no_filter).is_err());
        let mut auth = BytesMut::from(&[0xF0u8, 0x00][..]);
        assert_eq!(dec.decode(&mut auth), Err(DecodeError::Auth));

        // Truncated remaining length waits for more.
        let mut partial = BytesMut::from(&[0x30u8, 0x80][..]);
        let mut dec = Decoder::resume(1 << 20, Protocol::V4);
        assert_eq!(dec.decode(&mut partial), Ok(None));
    }

    #[test]
    fn a_new_connection_must_start_with_connect() {
        // PINGRESP declaring 100 bytes, only 3 here: refused on the first
        // byte, not after 100 bytes have arrived.
        for first in [0xDCu8, 0x30, 0x82, 0xC0, 0x20] {
            let mut buf = BytesMut::from(&[first, 100, 1, 2][..]);
            assert_eq!(
                Decoder::new(1024).decode(&mut buf),
                Err(DecodeError::Protocol("the first packet must be CONNECT")),
                "{first:#x}"
            );
        }
        // A CONNECT's first byte alone waits for the rest.
        let mut one = BytesMut::from(&[0x10u8][..]);
        assert_eq!(Decoder::new(1024).decode(&mut one), Ok(None));
        // Reserved flags are refused before the body arrives too.
        let mut flags = BytesMut::from(&[0x11u8, 100][..]);
        assert!(matches!(
            Decoder::new(1024).decode(&mut flags),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn connect_with_will_decodes_at_both_levels() {
        for protocol in [Protocol::V4, Protocol::V5] {
            let mut c = v5::Connect::new("will-dev");
            c.protocol = protocol;
            c.last_will = Some(v5::LastWill::new("w/t", "gone", QoS::AtLeastOnce, true));
            let mut bytes = BytesMut::new();
            encode(&Packet::Connect(c.clone()), protocol, &mut bytes);
            let got = Decoder::new(1024).decode(&mut bytes);
            assert_eq!(got, Ok(Some(Packet::Connect(c))), "{protocol:?}");
        }
    }

    #[test]
    fn client_publish_with_subscription_identifier_is_a_protocol_error() {
        let mut p = v5::Publish::new("t", QoS::AtMostOnce, b"x".to_vec());
        p.properties = Some(v5::PublishProperties {
            payload_format_indicator: None,
            message_expiry_interval: None,
            topic_alias: None,
            response_topic: None,
            correlation_data: None,
            user_properties: vec![],
            subscription_identifiers: vec![11],
            content_type: None,
        });
        let mut bytes = BytesMut::new();
        encode(&Packet::Publish(p.clone()), Protocol::V5, &mut bytes);
        let mut server = Decoder::new(1024);
        server.protocol = Protocol::V5;
        assert!(matches!(
            server.decode(&mut bytes.clone()),
            Err(DecodeError::Protocol(_))
        ));
        // A client reading the broker's PUBLISH accepts it.
        let mut client = Decoder::with_protocol(1024, Protocol::V5);
        assert_eq!(client.decode(&mut bytes), Ok(Some(Packet::Publish(p))));
    }

    #[test]
    fn v5_acks_without_properties_decode() {
        let packets = [
            Packet::ConnAck(v5::ConnAck::new(
                v5::ConnectReturnCode::ProtocolError,
                false,
            )),
            Packet::SubAck(v5::SubAck::new(3, vec![v5::SubscribeReasonCode::QoS1])),
            Packet::UnsubAck({
                let mut a = v5::UnsubAck::new(4);
                a.reasons = vec![v5::UnsubAckReason::Success];
                a
            }),
            Packet::PubAck(v5::PubAck::new(5)),
            Packet::PubRec(v5::PubRec::new(6)),
            Packet::PubComp(v5::PubComp::new(7)),
        ];
        for p in packets {
            let mut out = BytesMut::new();
            encode(&p, Protocol::V5, &mut out);
            let mut dec = Decoder::with_protocol(1024, Protocol::V5);
            let got = dec.decode(&mut out);
            assert!(matches!(got, Ok(Some(_))), "{p:?} → {got:?}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn server_disconnect_carries_property_length() {
        let d = v5::Disconnect {
            reason_code: v5::DisconnectReasonCode::SessionTakenOver,
            properties: None,
        };
        let mut out = BytesMut::new();
        encode(&Packet::Disconnect(d.clone()), Protocol::V5, &mut out);
        assert_eq!(&out[..], [0xE0, 0x02, 0x8E, 0x00]);
        let mut dec = Decoder::with_protocol(1024, Protocol::V5);
        assert_eq!(dec.decode(&mut out), Ok(Some(Packet::Disconnect(d))));
        let mut out = BytesMut::new();
        encode(
            &Packet::Disconnect(v5::Disconnect::new()),
            Protocol::V5,
            &mut out,
        );
        assert_eq!(&out[..], [0xE0, 0x00]);
    }
}
