//! A hand-driven AMQP 0-9-1 client over [`RawClient`], for tests that must
//! send what no client library would (and see exactly what comes back).
//! Frames are built and parsed with `amq_protocol`. Everything here blocks
//! on the socket (bounded by [`READ`]); run it through [`blocking`].

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use amq_protocol::frame::{AMQPFrame, ProtocolVersion, WriteContext, gen_frame, parse_frame};
use amq_protocol::protocol::{AMQPClass, channel, connection};
use amq_protocol::types::{FieldTable, LongString};
use switchyard_tests::RawClient;

/// Bound on each raw read.
pub(crate) const READ: Duration = Duration::from_secs(10);

pub(crate) struct Raw {
    pub(crate) sock: RawClient,
    pub(crate) frame_max: u32,
}

impl Raw {
    pub(crate) fn connect(addr: SocketAddr) -> Self {
        Self {
            sock: RawClient::connect(addr).expect("raw connect"),
            frame_max: 0,
        }
    }

    pub(crate) fn send_frame(&mut self, frame: &AMQPFrame) {
        let ctx = gen_frame(frame)(WriteContext::from(Vec::new())).expect("serialize frame");
        self.sock.send(&ctx.into_inner().0).expect("send frame");
    }

    pub(crate) fn send_method(&mut self, channel: u16, method: AMQPClass) {
        self.send_frame(&AMQPFrame::Method(channel, method));
    }

    /// Reads one frame; `Err(UnexpectedEof)` if the broker closed the
    /// connection, `Err(InvalidData)` if it sent a protocol header.
    pub(crate) fn read(&mut self) -> io::Result<AMQPFrame> {
        let head = self.sock.read_exact(7, READ)?;
        if head.starts_with(b"AMQP") {
            let mut h = head;
            h.extend(self.sock.read_exact(1, READ)?);
            let msg = format!("protocol header {h:02x?} instead of a frame");
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        }
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        let mut buf = head;
        buf.extend(self.sock.read_exact(size + 1, READ)?);
        match parse_frame(buf.as_slice()) {
            Ok((&[], frame)) => Ok(frame),
            other => {
                let msg = format!("unparsable frame from broker {buf:02x?}: {other:?}");
                Err(io::Error::new(io::ErrorKind::InvalidData, msg))
            }
        }
    }

    pub(crate) fn expect_method(&mut self, what: &str) -> AMQPClass {
        loop {
            match self.read() {
                Ok(AMQPFrame::Heartbeat) => continue,
                Ok(AMQPFrame::Method(_, m)) => return m,
                other => panic!("expected {what}, got {other:?}"),
            }
        }
    }

    /// [`Raw::handshake`] on the blocking pool.
    pub(crate) async fn handshake_async(addr: SocketAddr) -> Self {
        blocking(move || Self::handshake(addr)).await
    }

    /// Protocol header, start/start-ok (PLAIN guest), tune/tune-ok,
    /// open "/"/open-ok.
    pub(crate) fn handshake(addr: SocketAddr) -> Self {
        let mut raw = Self::connect(addr);
        raw.send_frame(&AMQPFrame::ProtocolHeader(ProtocolVersion::amqp_0_9_1()));
        match raw.expect_method("connection.start") {
            AMQPClass::Connection(connection::AMQPMethod::Start(start)) => {
                assert_eq!((start.version_major, start.version_minor), (0, 9));
                let mechs = String::from_utf8_lossy(start.mechanisms.as_bytes()).into_owned();
                assert!(
                    mechs.split(' ').any(|m| m == "PLAIN"),
                    "mechanisms {mechs:?}"
                );
            }
            other => panic!("expected connection.start, got {other:?}"),
        }
        raw.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: LongString::from("\0guest\0guest"),
                locale: "en_US".into(),
            })),
        );
        let tune = match raw.expect_method("connection.tune") {
            AMQPClass::Connection(connection::AMQPMethod::Tune(t)) => t,
            other => panic!("expected connection.tune, got {other:?}"),
        };
        raw.frame_max = tune.frame_max;
        raw.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat: 0,
            })),
        );
        raw.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })),
        );
        match raw.expect_method("connection.open-ok") {
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)) => {}
            other => panic!("expected connection.open-ok, got {other:?}"),
        }
        raw
    }

    pub(crate) fn open_channel(&mut self, id: u16) {
        self.send_method(
            id,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        );
        match self.expect_method("channel.open-ok") {
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)) => {}
            other => panic!("expected channel.open-ok, got {other:?}"),
        }
    }

    /// Reads until the broker sends connection.close (answered with
    /// close-ok; returns its reply code) or closes the socket (`None`).
    /// Any other frame is a failure.
    pub(crate) fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.read() {
                Ok(AMQPFrame::Heartbeat) => continue,
                Ok(AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(close)),
                )) => {
                    // Best effort: the broker may already be gone.
                    let ok = AMQPFrame::Method(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                            connection::CloseOk {},
                        )),
                    );
                    let ctx = gen_frame(&ok)(WriteContext::from(Vec::new())).expect("serialize");
                    let _ = self.sock.send(&ctx.into_inner().0);
                    let rest = self.sock.read_to_close(READ).expect("read after close");
                    assert!(rest.closed, "socket still open {READ:?} after close-ok");
                    return Some(close.reply_code);
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return None,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return None,
                other => panic!("expected connection.close or EOF, got {other:?}"),
            }
        }
    }
}

/// Runs blocking raw-socket work off the async workers, bounded.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    t!(tokio::task::spawn_blocking(f)).expect("raw client task panicked")
}
