//! A STOMP connection as the one connection driver runs it
//! ([`switchyard_listener::driver`]), over a TCP socket or a WebSocket the
//! server bridges to bytes: the frame decoder and the [`Session`] behind it,
//! and the connection's timers (the CONNECT deadline, heart-beats both ways:
//! an EOL is written when nothing else was for the negotiated interval, and
//! a client silent for twice its interval is disconnected, and consumer
//! timeouts). Sans-IO: the driver owns the socket and the clock.

use crate::codec::{Decoder, Limits};
use crate::session::{Phase, Session, SessionConfig, Shared};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_engine::connections::ConnectionEntry;
use switchyard_engine::{Durable, Outbox};
use switchyard_listener::driver::{self, Connection, Status, Wait};
use switchyard_listener::{Endpoint, accept_loop};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// STOMP listener settings.
#[derive(Debug, Clone)]
pub struct StompConfig {
    /// Frame size limits.
    pub limits: Limits,
    /// A client must send CONNECT within this.
    pub connect_timeout: Duration,
    /// Concurrent connections accepted.
    pub max_connections: usize,
    /// Concurrent connections accepted from one source address.
    pub max_connections_per_ip: usize,
    /// Subscriptions per connection.
    pub max_subscriptions: usize,
    /// Shortest heart-beat interval agreed to, in milliseconds.
    pub min_heartbeat_ms: u64,
    /// Unacknowledged MESSAGEs per client-ack subscription.
    pub max_unacked: u32,
    /// A MESSAGE unacknowledged this long ends the connection (ERROR).
    pub consumer_timeout: Option<Duration>,
    /// Accepted sockets' receive buffer (see
    /// [`switchyard_listener::Limits::recv_buffer`]).
    pub recv_buffer: Option<usize>,
}

impl Default for StompConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            connect_timeout: Duration::from_secs(10),
            max_connections: 65_536,
            max_connections_per_ip: 4096,
            max_subscriptions: 1024,
            min_heartbeat_ms: 100,
            max_unacked: 65_536,
            consumer_timeout: Some(Duration::from_secs(30 * 60)),
            recv_buffer: None,
        }
    }
}

/// Accept STOMP clients on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    config: StompConfig,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limits = switchyard_listener::Limits {
        max_connections: config.max_connections,
        max_per_address: config.max_connections_per_ip,
        recv_buffer: config.recv_buffer,
    };
    let stop = shutdown.clone();
    accept_loop(listener, "stomp", limits, stop, tracker, |stream, peer| {
        let (shared, config, shutdown) = (shared.clone(), config.clone(), shutdown.clone());
        async move {
            let endpoint = Endpoint::tcp(&stream);
            let (rd, wr) = stream.into_split();
            run(rd, wr, peer, endpoint, shared, &config, shutdown).await;
        }
    })
    .await;
}

/// Drive one connection over `rd` / `wr` to completion.
pub async fn run<R, W>(
    rd: R,
    wr: W,
    peer: SocketAddr,
    endpoint: Endpoint,
    shared: Arc<Shared>,
    config: &StompConfig,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let relief = shared.broker().relief().clone();
    let mut conn = StompConnection::new(shared, config, peer, Instant::now());
    conn.set_endpoint(endpoint);
    driver::run(&mut conn, rd, wr, &shutdown, &relief).await;
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One STOMP connection: decoder, session and timers.
pub struct StompConnection {
    session: Session,
    decoder: Decoder,
    connect_timeout: Duration,
    started: Instant,
    last_read: Instant,
    last_write: Instant,
    /// Reading is paused by backpressure: silence is ours.
    paused: bool,
    /// No CONNECT in time: end without a word.
    aborted: bool,
}

impl StompConnection {
    /// Where the client connected (see [`Endpoint`]).
    pub fn set_endpoint(&mut self, endpoint: Endpoint) {
        if let Some(local) = endpoint.local {
            self.session.set_endpoint(local, endpoint.web);
        }
    }

    /// A connection from `peer` that has sent nothing yet.
    pub fn new(shared: Arc<Shared>, config: &StompConfig, peer: SocketAddr, now: Instant) -> Self {
        let session_config = SessionConfig {
            max_subscriptions: config.max_subscriptions,
            min_heartbeat_ms: config.min_heartbeat_ms,
            max_unacked: config.max_unacked,
            consumer_timeout: config.consumer_timeout,
        };
        Self {
            session: Session::new(shared, session_config, peer, now),
            decoder: Decoder::new(config.limits),
            connect_timeout: config.connect_timeout,
            started: now,
            last_read: now,
            last_write: now,
            paused: false,
            aborted: false,
        }
    }

    /// When the client must have been heard from.
    fn read_deadline(&self) -> Option<Instant> {
        let (_, expect_within) = self.session.heartbeat();
        match self.session.phase() {
            Phase::Connect => Some(self.started + self.connect_timeout),
            _ if self.paused => None,
            _ if expect_within > 0 => Some(self.last_read + ms(expect_within.saturating_mul(2))),
            _ => None,
        }
    }

    /// When an EOL heart-beat is due (only while nothing else is written).
    fn write_deadline(&self) -> Option<Instant> {
        let (send_every, _) = self.session.heartbeat();
        (send_every > 0 && self.session.phase() == Phase::Connected)
            .then(|| self.last_write + ms(send_every))
    }
}

impl Connection for StompConnection {
    fn handle_read(&mut self, now: Instant) {
        self.last_read = now;
    }

    fn traffic(&self) -> Option<Arc<ConnectionEntry>> {
        Some(self.session.entry().clone())
    }

    fn interrupted(&self) -> Option<Wait> {
        let entry = self.session.entry().clone();
        Some(Box::pin(async move { entry.kill.killed().await }))
    }

    fn handle_interrupt(&mut self, now: Instant) {
        self.session.set_clock(now);
        self.session.handle_kill();
    }

    fn handle_input(&mut self, rbuf: &mut BytesMut, now: Instant) {
        self.session.set_clock(now);
        while matches!(self.session.phase(), Phase::Connect | Phase::Connected) {
            match self.decoder.decode(rbuf) {
                Ok(Some(frame)) => {
                    self.session.handle_frame(frame);
                    self.decoder.set_version(self.session.version());
                }
                Ok(None) => break,
                Err(e) => {
                    self.session.handle_decode_error(&e);
                    break;
                }
            }
        }
    }

    fn output(&mut self) -> &mut BytesMut {
        self.session.output()
    }

    fn handle_written(&mut self, now: Instant) {
        self.last_write = now;
    }

    fn wants_input(&self) -> bool {
        matches!(self.session.phase(), Phase::Connect | Phase::Connected)
    }

    fn outbox(&self) -> &Arc<Outbox> {
        self.session.outbox()
    }

    fn handle_outbox(&mut self, now: Instant) {
        self.session.set_clock(now);
        self.session.handle_outbox();
    }

    fn take_ticket(&mut self) -> Option<Durable> {
        self.session.take_ticket()
    }

    fn handle_durable(&mut self, ok: bool, now: Instant) {
        self.session.set_clock(now);
        self.session.handle_durable(ok);
    }

    fn throttled(&mut self, now: Instant) -> bool {
        self.session.throttled(now)
    }

    fn handle_paused(&mut self, paused: bool, now: Instant) {
        self.paused = paused;
        self.last_read = now;
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.read_deadline(),
            self.write_deadline(),
            self.session.consumer_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.session.set_clock(now);
        if self.session.phase() == Phase::Connect {
            if now >= self.started + self.connect_timeout {
                tracing::info!(peer = %self.session.peer(), "STOMP client sent no CONNECT in time; closing");
                self.aborted = true;
            }
            return;
        }
        if self.session.consumer_deadline().is_some_and(|d| now >= d) {
            self.session.handle_consumer_timeout(now);
        }
        if self.read_deadline().is_some_and(|d| now >= d) {
            self.session.handle_heartbeat_timeout();
        }
        if self.write_deadline().is_some_and(|d| now >= d) {
            if self.session.output().is_empty() {
                self.session.output().extend_from_slice(b"\n");
            }
            // Due once, not again on every turn until it is written.
            self.last_write = now;
        }
    }

    fn handle_shutdown(&mut self, now: Instant) {
        self.session.set_clock(now);
        self.session.handle_shutdown();
    }

    fn status(&self) -> Status {
        Status::of(self.aborted, self.session.phase() == Phase::Closed)
    }

    fn release(&mut self) {
        self.session.release();
    }
}
