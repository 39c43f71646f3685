//! A small blocking MQTT 3.1.1 client for the black-box tests, written from
//! the specification (OASIS MQTT 3.1.1) rather than from the broker's codec.
//!
//! * Packet builders ([`connect`], [`subscribe`], [`publish`], [`puback`])
//!   write exactly the bytes a client would.
//! * [`Client`] drives one TCP connection. Reads go through a buffer, so a
//!   packet may arrive in any number of pieces, and every read is bounded by
//!   a deadline ([`STEP`] unless told otherwise).
//!
//! Include with `#[path = "common/mqtt.rs"] mod mqtt;`.

#![allow(dead_code)] // each test file uses a different subset

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Bound on any single wait.
pub(crate) const STEP: Duration = Duration::from_secs(10);

/// Fixed-header first bytes of the packets the tests look at.
pub(crate) const CONNACK: u8 = 0x20;
pub(crate) const PUBACK: u8 = 0x40;
pub(crate) const SUBACK: u8 = 0x90;
pub(crate) const PINGRESP: u8 = 0xD0;

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u16::try_from(s.len()).expect("short string").to_be_bytes());
    out.extend_from_slice(s);
}

/// Fixed header byte, remaining length (variable-length encoded), body.
pub(crate) fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    let mut len = body.len();
    loop {
        let mut b = u8::try_from(len % 128).expect("7 bits");
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// CONNECT at protocol level 4 with `clean` session and `keep_alive`
/// seconds (0 disables keep-alive).
pub(crate) fn connect(id: &str, clean: bool, keep_alive: u16) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, b"MQTT");
    body.push(4);
    body.push(if clean { 0x02 } else { 0x00 });
    body.extend_from_slice(&keep_alive.to_be_bytes());
    string(&mut body, id.as_bytes());
    packet(0x10, &body)
}

/// SUBSCRIBE to one filter.
pub(crate) fn subscribe(pkid: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    string(&mut body, filter.as_bytes());
    body.push(qos);
    packet(0x82, &body)
}

/// PUBLISH (not retained, not DUP); `pkid` is left out at QoS 0.
pub(crate) fn publish(topic: &str, qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
    string(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

pub(crate) fn puback(pkid: u16) -> Vec<u8> {
    packet(PUBACK, &pkid.to_be_bytes())
}

pub(crate) const DISCONNECT: [u8; 2] = [0xE0, 0x00];
pub(crate) const PINGREQ: [u8; 2] = [0xC0, 0x00];

/// A packet read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Packet {
    pub(crate) first: u8,
    pub(crate) body: Vec<u8>,
}

/// The parts of a PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Publish {
    pub(crate) topic: String,
    pub(crate) qos: u8,
    pub(crate) dup: bool,
    /// 0 at QoS 0.
    pub(crate) pkid: u16,
    pub(crate) payload: Vec<u8>,
}

impl Packet {
    /// The packet type (upper four bits).
    pub(crate) fn kind(&self) -> u8 {
        self.first >> 4
    }

    /// The packet identifier of an ack.
    pub(crate) fn pkid(&self) -> u16 {
        u16::from_be_bytes([self.body[0], self.body[1]])
    }

    /// The PUBLISH this is, or `None` for any other packet.
    pub(crate) fn publish(&self) -> Option<Publish> {
        self.publish_parts(|rest| rest)
    }

    /// A PUBLISH's topic, QoS, DUP and packet id; `payload` is given what
    /// follows the packet id (MQTT 5 properties, then the payload).
    fn publish_parts(&self, payload: impl FnOnce(&[u8]) -> &[u8]) -> Option<Publish> {
        if self.kind() != 3 {
            return None;
        }
        let qos = (self.first >> 1) & 3;
        let tlen = usize::from(u16::from_be_bytes([self.body[0], self.body[1]]));
        let topic = String::from_utf8_lossy(&self.body[2..2 + tlen]).into_owned();
        let mut rest = &self.body[2 + tlen..];
        let mut pkid = 0;
        if qos > 0 {
            pkid = u16::from_be_bytes([rest[0], rest[1]]);
            rest = &rest[2..];
        }
        Some(Publish {
            topic,
            qos,
            dup: self.first & 0x08 != 0,
            pkid,
            payload: payload(rest).to_vec(),
        })
    }
}

/// Why a read returned no packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Nothing complete arrived before the deadline.
    Timeout,
    /// The broker closed the connection (EOF or reset).
    Closed,
}

/// One MQTT connection.
#[derive(Debug)]
pub(crate) struct Client {
    sock: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` already parsed.
    pos: usize,
}

impl Client {
    /// Wraps a connected stream; nothing is sent.
    pub(crate) fn over(sock: TcpStream) -> Self {
        sock.set_nodelay(true).expect("nodelay");
        sock.set_write_timeout(Some(STEP)).expect("write timeout");
        Self {
            sock,
            buf: Vec::with_capacity(64 * 1024),
            pos: 0,
        }
    }

    /// CONNECT (keep-alive 60 s) on a new connection to `addr`; asserts
    /// CONNACK 0 and returns the client and the session-present flag.
    pub(crate) fn connect(addr: SocketAddr, id: &str, clean: bool) -> (Self, bool) {
        let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to MQTT at {addr}: {e}"));
        Self::connect_over(sock, id, clean)
    }

    /// CONNECT on an already connected stream; as [`Client::connect`].
    pub(crate) fn connect_over(sock: TcpStream, id: &str, clean: bool) -> (Self, bool) {
        let mut c = Self::over(sock);
        c.send(&connect(id, clean, 60));
        let ack = c.expect_packet();
        assert_eq!(
            ack.first, CONNACK,
            "expected CONNACK for {id:?}, got {ack:?}"
        );
        assert_eq!(ack.body.len(), 2, "CONNACK {ack:?}");
        assert_eq!(ack.body[1], 0, "CONNACK return code for {id:?}");
        (c, ack.body[0] & 1 == 1)
    }

    /// The socket, e.g. to clone a writer half for another thread.
    pub(crate) fn stream(&self) -> &TcpStream {
        &self.sock
    }

    /// Writes all of `bytes`; panics if the socket fails or stays full for
    /// [`STEP`].
    pub(crate) fn send(&mut self, bytes: &[u8]) {
        self.sock
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("MQTT write: {e}"));
    }

    /// The next complete packet already buffered, if any.
    fn parse(&mut self) -> Option<Packet> {
        let avail = &self.buf[self.pos..];
        if avail.len() < 2 {
            return None;
        }
        let mut len = 0usize;
        let mut i = 1;
        loop {
            let b = *avail.get(i)?;
            len |= usize::from(b & 0x7f) << (7 * (i - 1));
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            assert!(i <= 4, "malformed remaining length from broker");
        }
        if avail.len() < i + len {
            return None;
        }
        let p = Packet {
            first: avail[0],
            body: avail[i..i + len].to_vec(),
        };
        self.pos += i + len;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        Some(p)
    }

    /// The next packet within `within`.
    pub(crate) fn read_packet(&mut self, within: Duration) -> Result<Packet, End> {
        let deadline = Instant::now() + within;
        let mut chunk = [0u8; 64 * 1024];
        loop {
            if let Some(p) = self.parse() {
                return Ok(p);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(End::Timeout);
            }
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            self.sock
                .set_read_timeout(Some(left))
                .map_err(|_| End::Closed)?;
            match self.sock.read(&mut chunk) {
                Ok(0) => return Err(End::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Err(End::Closed),
            }
        }
    }

    /// The next packet within [`STEP`]; panics if none arrives.
    #[track_caller]
    pub(crate) fn expect_packet(&mut self) -> Packet {
        self.read_packet(STEP)
            .unwrap_or_else(|e| panic!("no MQTT packet within {STEP:?}: {e:?}"))
    }

    /// SUBSCRIBE and wait for a SUBACK granting `qos` (PUBLISHes arriving
    /// first are a failure: call this before anything is published).
    #[track_caller]
    pub(crate) fn subscribe(&mut self, filter: &str, qos: u8) {
        self.send(&subscribe(1, filter, qos));
        let ack = self.expect_packet();
        assert_eq!(ack.first, SUBACK, "expected SUBACK, got {ack:?}");
        assert_eq!(ack.body, [0x00, 0x01, qos], "SUBACK for {filter:?}");
    }

    /// PINGREQ → PINGRESP, skipping nothing.
    #[track_caller]
    pub(crate) fn ping(&mut self) {
        self.ping_within(STEP);
    }

    /// [`Client::ping`], waiting up to `within` for the PINGRESP.
    #[track_caller]
    pub(crate) fn ping_within(&mut self, within: Duration) {
        self.send(&PINGREQ);
        let p = self
            .read_packet(within)
            .unwrap_or_else(|e| panic!("no PINGRESP within {within:?}: {e:?}"));
        assert_eq!(p.first, PINGRESP, "expected PINGRESP, got {p:?}");
    }

    /// The next PUBLISH, acknowledged with PUBACK if it is QoS 1; any other
    /// packet is a failure.
    #[track_caller]
    pub(crate) fn next_publish(&mut self) -> Publish {
        let p = self.expect_packet();
        let publish = p
            .publish()
            .unwrap_or_else(|| panic!("expected PUBLISH, got {p:?}"));
        if publish.qos == 1 {
            self.send(&puback(publish.pkid));
        }
        publish
    }

    /// PUBLISH at QoS 1 and wait for its PUBACK (PUBLISHes arriving
    /// meanwhile are a failure).
    #[track_caller]
    pub(crate) fn publish_qos1(&mut self, topic: &str, pkid: u16, payload: &[u8]) {
        self.send(&publish(topic, 1, pkid, payload));
        let p = self.expect_packet();
        assert_eq!(
            (p.first, p.pkid()),
            (PUBACK, pkid),
            "expected PUBACK {pkid}, got {p:?}"
        );
    }

    /// DISCONNECT, then wait (bounded) for the broker to close.
    pub(crate) fn disconnect(mut self) {
        self.send(&DISCONNECT);
        match self.read_packet(STEP) {
            Err(End::Closed) => {}
            other => panic!("expected close after DISCONNECT, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// MQTT 5 (OASIS MQTT Version 5.0): what the conformance tests send and read
// ---------------------------------------------------------------------------

pub(crate) const PUBREC: u8 = 0x50;
pub(crate) const PUBREL: u8 = 0x62;
pub(crate) const PUBCOMP: u8 = 0x70;
pub(crate) const DISCONNECT_FIRST: u8 = 0xE0;

/// Property identifiers (MQTT 5 §2.2.2.2) the tests set or look for.
pub(crate) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
pub(crate) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
pub(crate) const RECEIVE_MAXIMUM: u8 = 0x21;

/// A Variable Byte Integer (§1.5.5).
fn var_int(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = u8::try_from(n % 128).expect("7 bits");
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

/// A property block: its length, then `raw` (properties, already encoded).
fn property_block(out: &mut Vec<u8>, raw: &[u8]) {
    var_int(out, raw.len());
    out.extend_from_slice(raw);
}

/// Session Expiry Interval property.
pub(crate) fn session_expiry(seconds: u32) -> Vec<u8> {
    let mut p = vec![SESSION_EXPIRY_INTERVAL];
    p.extend_from_slice(&seconds.to_be_bytes());
    p
}

/// CONNECT at protocol level 5 with `clean` start, `keep_alive` seconds
/// and the given properties (encoded, without their length).
pub(crate) fn connect5(id: &str, clean: bool, keep_alive: u16, props: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, b"MQTT");
    body.push(5);
    body.push(if clean { 0x02 } else { 0x00 });
    body.extend_from_slice(&keep_alive.to_be_bytes());
    property_block(&mut body, props);
    string(&mut body, id.as_bytes());
    packet(0x10, &body)
}

/// MQTT 5 PUBLISH (not retained, not DUP, no properties); `pkid` is left
/// out at QoS 0.
pub(crate) fn publish5(topic: &str, qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 5);
    string(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.push(0);
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// MQTT 5 SUBSCRIBE to one filter with this subscription options byte, no
/// properties.
pub(crate) fn subscribe5(pkid: u16, filter: &str, options: u8) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    body.push(0);
    string(&mut body, filter.as_bytes());
    body.push(options);
    packet(0x82, &body)
}

/// PUBREL (success, the 2-byte form both levels accept).
pub(crate) fn pubrel(pkid: u16) -> Vec<u8> {
    packet(PUBREL, &pkid.to_be_bytes())
}

/// The properties of a property block at the start of `data`, as (id,
/// value bytes), and the bytes after the block. Panics on an unknown
/// identifier or a truncated block.
pub(crate) fn read_properties(data: &[u8]) -> (Vec<(u8, Vec<u8>)>, &[u8]) {
    let mut len = 0usize;
    let mut i = 0;
    loop {
        let b = data[i];
        len |= usize::from(b & 0x7f) << (7 * i);
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    let (mut block, rest) = data[i..].split_at(len);
    let mut out = Vec::new();
    while let Some((&id, after)) = block.split_first() {
        let u16_at = |b: &[u8], at: usize| usize::from(u16::from_be_bytes([b[at], b[at + 1]]));
        let size = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            0x0B => after.iter().position(|b| b & 0x80 == 0).expect("var int") + 1,
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => 2 + u16_at(after, 0),
            0x26 => {
                let k = 2 + u16_at(after, 0);
                k + 2 + u16_at(after, k)
            }
            other => panic!("unknown property identifier {other:#04x} in {data:02x?}"),
        };
        out.push((id, after[..size].to_vec()));
        block = &after[size..];
    }
    (out, rest)
}

impl Packet {
    /// The packet as it was on the wire.
    pub(crate) fn wire(&self) -> Vec<u8> {
        packet(self.first, &self.body)
    }

    /// The MQTT 5 PUBLISH this is (its properties skipped), or `None` for
    /// any other packet.
    pub(crate) fn publish5(&self) -> Option<Publish> {
        self.publish_parts(|rest| read_properties(rest).1)
    }
}

impl Client {
    /// Sends an MQTT 5 `connect` on a new connection to `addr`; asserts a
    /// CONNACK with reason 0 and returns the client and the CONNACK.
    #[track_caller]
    pub(crate) fn connect5(addr: SocketAddr, connect: &[u8]) -> (Self, Packet) {
        let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to MQTT at {addr}: {e}"));
        let mut c = Self::over(sock);
        c.send(connect);
        let ack = c.expect_packet();
        assert_eq!(ack.first, CONNACK, "expected CONNACK, got {ack:02x?}");
        assert_eq!(ack.body.get(1), Some(&0), "CONNACK reason: {ack:02x?}");
        (c, ack)
    }

    /// Everything the broker sends until it closes the connection; panics
    /// if it does not close within `within`.
    #[track_caller]
    pub(crate) fn until_close(&mut self, within: Duration) -> Vec<Packet> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        loop {
            match self.read_packet(deadline.saturating_duration_since(Instant::now())) {
                Ok(p) => got.push(p),
                Err(End::Closed) => return got,
                Err(End::Timeout) => panic!("still open after {within:?}; got {got:02x?}"),
            }
        }
    }
}
