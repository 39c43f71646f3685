//! One AMQP connection with one channel over a tokio `TcpStream`: the
//! handshake by hand, a read buffer parsed many frames at a time, a write
//! buffer flushed in large writes. No heartbeats (tune-ok asks for 0), one
//! channel ([`CHANNEL`]).
//!
//! [`Connection::step`] is the only place that awaits the socket; hot loops
//! call it between filling [`Connection::queued`] and parsing frames with
//! [`Connection::frames`], so reads and writes never wait on each other.

use super::endpoint::Endpoint;
use super::frame::{Frame, MIN_FRAME_MAX, PROTOCOL_HEADER, decode, encode_method};
use super::method::{Close, Method, Tune, client_properties};
use anyhow::{Context, Result, anyhow, bail};
use bytes::{Buf, BufMut, BytesMut};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The channel every method but the connection class's goes on.
pub(crate) const CHANNEL: u16 = 1;
/// Spare room ensured in the read buffer before each read.
const READ_CHUNK: usize = 128 * 1024;
/// Frames accepted before tune (the spec allows 4096; brokers' start frames
/// are well below).
const PRE_TUNE_FRAME_MAX: usize = 64 * 1024;
/// The frame-max we ask for when the broker offers more or no limit (0).
const OUR_FRAME_MAX: u32 = 1024 * 1024;
/// How long each handshake or setup step may take.
pub(crate) const STEP_LIMIT: Duration = Duration::from_secs(10);

/// What one [`Connection::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Wrote this many queued bytes.
    Wrote(usize),
    /// Read some bytes into the read buffer.
    Read,
    /// The wake-up time passed.
    Woke,
}

/// An open connection with channel [`CHANNEL`] open.
pub(crate) struct Connection {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    /// Bytes read and not yet decoded.
    read: BytesMut,
    /// Frames queued and not yet written.
    write: BytesMut,
    /// Largest frame accepted from the broker, overhead included.
    max_frame: usize,
    /// Negotiated frame-max: bounds the frames we send.
    frame_max: u32,
}

/// A TCP connection to `to`, with its send buffer set if asked.
async fn connect(to: &Endpoint, send_buffer: Option<u32>) -> std::io::Result<TcpStream> {
    let Some(bytes) = send_buffer else {
        return TcpStream::connect((to.host.as_str(), to.port)).await;
    };
    let mut last = None;
    for addr in tokio::net::lookup_host((to.host.as_str(), to.port)).await? {
        let socket = match addr {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_send_buffer_size(bytes)?;
        match socket.connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
}

impl Connection {
    /// Connects, authenticates with PLAIN, opens the vhost and channel
    /// [`CHANNEL`]. `send_buffer`: the socket's kernel send buffer (bytes;
    /// `None` leaves the OS default, which autotunes up to megabytes).
    pub(crate) async fn open(to: &Endpoint, send_buffer: Option<u32>) -> Result<Self> {
        let stream = connect(to, send_buffer)
            .await
            .with_context(|| format!("connecting to {}:{}", to.host, to.port))?;
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        let mut conn = Self {
            rd,
            wr,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: BytesMut::with_capacity(64 * 1024),
            max_frame: PRE_TUNE_FRAME_MAX,
            frame_max: MIN_FRAME_MAX,
        };
        conn.write.put_slice(PROTOCOL_HEADER);
        let plain = conn
            .call("connection.start", |f| match f {
                Frame::Method {
                    method: Method::ConnectionStart { mechanisms, .. },
                    ..
                } => Some(mechanisms.split(|&b| b == b' ').any(|m| m == b"PLAIN")),
                _ => None,
            })
            .await?;
        if !plain {
            bail!("broker does not offer the PLAIN mechanism");
        }
        let mut response = Vec::with_capacity(2 + to.user.len() + to.password.len());
        response.push(0);
        response.extend_from_slice(to.user.as_bytes());
        response.push(0);
        response.extend_from_slice(to.password.as_bytes());
        let props = client_properties();
        let start_ok = Method::ConnectionStartOk {
            client_properties: &props,
            mechanism: b"PLAIN",
            response: &response,
            locale: b"en_US",
        };
        conn.send(0, &start_ok);
        let tune = conn
            .call("connection.tune", |f| match f {
                Frame::Method {
                    method: Method::ConnectionTune(t),
                    ..
                } => Some(*t),
                _ => None,
            })
            .await?;
        let frame_max = match tune.frame_max {
            0 => OUR_FRAME_MAX,
            f => f.min(OUR_FRAME_MAX),
        };
        if frame_max < MIN_FRAME_MAX {
            bail!("broker offers frame-max {frame_max}, below the spec's {MIN_FRAME_MAX}");
        }
        (conn.frame_max, conn.max_frame) = (frame_max, frame_max as usize);
        let tune_ok = Tune {
            channel_max: tune.channel_max,
            frame_max,
            heartbeat: 0,
        };
        conn.send(0, &Method::ConnectionTuneOk(tune_ok));
        let open = Method::ConnectionOpen {
            vhost: to.vhost.as_bytes(),
        };
        conn.request(0, &open, "connection.open-ok", |m| {
            matches!(m, Method::ConnectionOpenOk)
        })
        .await
        .with_context(|| format!("opening vhost {:?}", to.vhost))?;
        conn.request(CHANNEL, &Method::ChannelOpen, "channel.open-ok", |m| {
            matches!(m, Method::ChannelOpenOk)
        })
        .await?;
        Ok(conn)
    }

    /// Negotiated frame-max, overhead included.
    pub(crate) fn frame_max(&self) -> u32 {
        self.frame_max
    }

    /// Queues a method frame.
    pub(crate) fn send(&mut self, channel: u16, method: &Method<'_>) {
        encode_method(channel, method, &mut self.write);
    }

    /// The write buffer, for callers appending pre-encoded frames.
    pub(crate) fn queued(&mut self) -> &mut BytesMut {
        &mut self.write
    }

    /// Hands every whole frame in the read buffer, with the write buffer, to
    /// `on_frame` until it returns a value. Heartbeats are skipped; a
    /// connection.close or channel.close from the broker is an error.
    pub(crate) fn frames<T>(
        &mut self,
        mut on_frame: impl FnMut(Frame<'_>, &mut BytesMut) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        let mut at = 0;
        let result = loop {
            let frame = match decode(&self.read[at..], self.max_frame) {
                Ok(Some((frame, n))) => {
                    at += n;
                    frame
                }
                Ok(None) => break Ok(None),
                Err(e) => break Err(anyhow!(e).context("decoding a frame from the broker")),
            };
            match frame {
                Frame::Heartbeat => {}
                Frame::Method {
                    method: Method::ConnectionClose(c),
                    ..
                } => break Err(anyhow!("broker closed the connection: {}", c.describe())),
                Frame::Method {
                    method: Method::ChannelClose(c),
                    ..
                } => break Err(anyhow!("broker closed the channel: {}", c.describe())),
                frame => match on_frame(frame, &mut self.write) {
                    Ok(None) => {}
                    other => break other,
                },
            }
        };
        self.read.advance(at);
        result
    }

    /// Waits for one I/O event: queued bytes written (armed only while some
    /// are queued), bytes read, or `wake` passed. Cancel-safe: unwritten
    /// bytes stay queued, and a cancelled read has read nothing.
    pub(crate) async fn step(&mut self, wake: Option<Instant>) -> Result<Step> {
        self.read.reserve(READ_CHUNK);
        let sleep = async {
            match wake {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            n = self.wr.write_buf(&mut self.write), if !self.write.is_empty() => {
                match n.context("writing to the broker")? {
                    0 => bail!("broker closed the connection"),
                    n => Ok(Step::Wrote(n)),
                }
            }
            n = self.rd.read_buf(&mut self.read) => {
                match n.context("reading from the broker")? {
                    0 => bail!("broker closed the connection"),
                    _ => Ok(Step::Read),
                }
            }
            () = sleep => Ok(Step::Woke),
        }
    }

    /// Steps until `on_frame` returns a value.
    pub(crate) async fn drive<T>(
        &mut self,
        mut on_frame: impl FnMut(Frame<'_>, &mut BytesMut) -> Result<Option<T>>,
    ) -> Result<T> {
        loop {
            if let Some(t) = self.frames(&mut on_frame)? {
                return Ok(t);
            }
            self.step(None).await?;
        }
    }

    /// Writes what is queued and waits, at most [`STEP_LIMIT`], for the frame
    /// `pick` accepts; frames before it are dropped.
    async fn call<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Frame<'_>) -> Option<T>,
    ) -> Result<T> {
        tokio::time::timeout(STEP_LIMIT, self.drive(|f, _| Ok(pick(&f))))
            .await
            .map_err(|_| anyhow!("no {what} within {STEP_LIMIT:?}"))?
    }

    /// Sends `method` and waits for the reply `is_reply` accepts.
    pub(crate) async fn request(
        &mut self,
        channel: u16,
        method: &Method<'_>,
        what: &str,
        mut is_reply: impl FnMut(&Method<'_>) -> bool,
    ) -> Result<()> {
        self.send(channel, method);
        self.call(what, |f| match f {
            Frame::Method { method, .. } if is_reply(method) => Some(()),
            _ => None,
        })
        .await
    }

    /// connection.close, then waits at most `limit` for close-ok, handing the
    /// frames that arrive first to `other` (confirms, late deliveries). Once
    /// close-ok arrives the broker has handled every frame sent before.
    pub(crate) async fn close(
        mut self,
        limit: Duration,
        mut other: impl FnMut(Frame<'_>) -> Result<()>,
    ) -> Result<()> {
        let close = Close {
            reply_code: 200,
            reply_text: b"bench done",
            class_id: 0,
            method_id: 0,
        };
        self.send(0, &Method::ConnectionClose(close));
        let wait = self.drive(|f, _| match f {
            Frame::Method {
                method: Method::ConnectionCloseOk,
                ..
            } => Ok(Some(())),
            f => other(f).map(|()| None),
        });
        tokio::time::timeout(limit, wait)
            .await
            .map_err(|_| anyhow!("no connection.close-ok within {limit:?}"))?
    }
}
