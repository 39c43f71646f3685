//! A minimal STOMP 1.2 client connection over a tokio `TcpStream`: CONNECT
//! with login and virtual host, frames queued into a write buffer and flushed
//! in batches, frames decoded from a read buffer. No heart-beats (it asks for
//! `0,0`), no transactions; enough to load a broker.

use super::frame::{Frame, decode, encode};
use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The `host` header: the virtual host.
    pub(crate) vhost: String,
    pub(crate) login: String,
    pub(crate) passcode: String,
}

/// One STOMP connection.
pub(crate) struct Connection {
    stream: TcpStream,
    /// Bytes read but not yet decoded into frames.
    read: BytesMut,
    /// Frames queued by [`Self::send`] until [`Self::flush`].
    write: BytesMut,
}

impl Connection {
    /// Connects and waits (at most 10 s) for CONNECTED.
    pub(crate) async fn connect(to: &Endpoint) -> Result<Self> {
        let stream = TcpStream::connect((to.host.as_str(), to.port))
            .await
            .with_context(|| format!("connecting to {}:{}", to.host, to.port))?;
        stream.set_nodelay(true)?;
        let mut conn = Self {
            stream,
            read: BytesMut::with_capacity(64 * 1024),
            write: BytesMut::with_capacity(64 * 1024),
        };
        conn.send(
            &Frame::new("CONNECT")
                .header("accept-version", "1.2")
                .header("host", to.vhost.as_str())
                .header("login", to.login.as_str())
                .header("passcode", to.passcode.as_str())
                .header("heart-beat", "0,0"),
        );
        conn.flush().await?;
        let reply = tokio::time::timeout(Duration::from_secs(10), conn.next())
            .await
            .context("no CONNECTED within 10 s")??;
        match reply {
            Some(f) if f.command == "CONNECTED" => Ok(conn),
            Some(f) => bail!("expected CONNECTED, got {}", describe(&f)),
            None => bail!("connection closed before CONNECTED"),
        }
    }

    /// Queues `frame` for the next [`Self::flush`].
    pub(crate) fn send(&mut self, frame: &Frame) {
        encode(frame, &mut self.write);
    }

    /// Bytes queued and not yet written.
    pub(crate) fn queued(&self) -> usize {
        self.write.len()
    }

    /// Writes everything queued.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        self.stream.write_all_buf(&mut self.write).await?;
        Ok(())
    }

    /// The next frame already read, if a whole one is buffered.
    pub(crate) fn poll_frame(&mut self) -> Result<Option<Frame>> {
        Ok(decode(&mut self.read)?)
    }

    /// Reads more bytes; 0 means the broker closed. Cancel-safe: a cancelled
    /// read has read nothing.
    pub(crate) async fn read_more(&mut self) -> Result<usize> {
        Ok(self.stream.read_buf(&mut self.read).await?)
    }

    /// The next frame, reading as needed; None when the broker closed.
    pub(crate) async fn next(&mut self) -> Result<Option<Frame>> {
        loop {
            if let Some(f) = self.poll_frame()? {
                return Ok(Some(f));
            }
            if self.read_more().await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Sends `frame` with a `receipt` header and waits (at most `limit`) for
    /// its RECEIPT, handing every other frame that arrives first to `other`.
    pub(crate) async fn request(
        &mut self,
        frame: Frame,
        receipt: &str,
        limit: Duration,
        mut other: impl FnMut(Frame),
    ) -> Result<()> {
        self.send(&frame.header("receipt", receipt));
        self.flush().await?;
        let wait = async {
            loop {
                match self.next().await? {
                    Some(f) if f.command == "RECEIPT" && f.get("receipt-id") == Some(receipt) => {
                        return Ok(());
                    }
                    Some(f) if f.command == "ERROR" => bail!("broker: {}", describe(&f)),
                    Some(f) => other(f),
                    None => bail!("connection closed before RECEIPT {receipt}"),
                }
            }
        };
        tokio::time::timeout(limit, wait)
            .await
            .with_context(|| format!("no RECEIPT {receipt} within {limit:?}"))?
    }

    /// Turns a failed write into the broker's reason when it sent an ERROR
    /// frame before closing (read for at most 1 s).
    pub(crate) async fn explain(&mut self, e: anyhow::Error) -> anyhow::Error {
        let why = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(Some(f)) = self.next().await {
                if f.command == "ERROR" {
                    return Some(describe(&f));
                }
            }
            None
        });
        match why.await {
            Ok(Some(why)) => e.context(format!("broker sent {why}")),
            _ => e,
        }
    }

    /// DISCONNECT with a receipt, waiting for it at most `limit`: once it
    /// arrives the broker has processed every frame sent before.
    pub(crate) async fn disconnect(
        mut self,
        limit: Duration,
        other: impl FnMut(Frame),
    ) -> Result<()> {
        (self.request(Frame::new("DISCONNECT"), "bye", limit, other)).await
    }
}

/// A frame for an error message: command, `message` header and a short body.
pub(crate) fn describe(f: &Frame) -> String {
    let body = String::from_utf8_lossy(&f.body[..f.body.len().min(200)]);
    format!(
        "{} {} {}",
        f.command,
        f.get("message").unwrap_or_default(),
        body.trim()
    )
}
