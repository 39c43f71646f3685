//! An AMQP connection as the one connection driver runs it
//! ([`switchyard_listener::driver`]): the frame decoder and the [`Session`]
//! behind it, and the connection's timers (handshake deadline, heartbeats
//! both ways, the close handshake, consumer timeouts). Sans-IO: the driver
//! owns the socket and the clock.

use crate::codec::{Decoder, Encoder};
use crate::session::{Phase, Session, SessionConfig};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_engine::connections::ConnectionEntry;
use switchyard_engine::{Broker, Durable, Outbox};
use switchyard_listener::driver::{self, Connection, Status, Wait};
use switchyard_listener::{Limits, accept_loop};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long we wait for close-ok after sending connection.close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// AMQP listener settings.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// Largest frame accepted and offered in `connection.tune`.
    pub frame_max: u32,
    /// Highest channel number offered.
    pub channel_max: u16,
    /// Heartbeat interval offered, in seconds (0 disables).
    pub heartbeat: u16,
    /// A client must finish the handshake (through `connection.open`) within this.
    pub handshake_timeout: Duration,
    /// Concurrent connections accepted; further clients wait in the backlog.
    pub max_connections: usize,
    /// Largest message body accepted.
    pub max_message_size: u64,
    /// Simultaneous connections accepted from one source address; further
    /// ones are closed at once (slows connection floods from one host).
    pub max_connections_per_ip: usize,
    /// Consumers one channel may hold (`basic.consume` beyond: 530).
    pub max_consumers_per_channel: usize,
    /// Unacknowledged deliveries to one channel's consumers, whatever its
    /// prefetch; at the cap its consumers wait for acks (backpressure, not
    /// an error).
    pub max_unacked_per_channel: u32,
    /// A delivery unacknowledged this long closes its channel with 406, its
    /// messages requeued (RabbitMQ's `consumer_timeout`); `None` never.
    pub consumer_timeout: Option<Duration>,
    /// Accepted sockets' receive buffer (see [`Limits::recv_buffer`]).
    pub recv_buffer: Option<usize>,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            handshake_timeout: Duration::from_secs(10),
            max_connections: 65_536,
            max_message_size: 128 << 20,
            max_connections_per_ip: 4_096,
            max_consumers_per_channel: 65_536,
            max_unacked_per_channel: 65_536,
            consumer_timeout: Some(Duration::from_secs(30 * 60)),
            recv_buffer: None,
        }
    }
}

impl AmqpConfig {
    fn session(&self) -> SessionConfig {
        SessionConfig {
            frame_max: self.frame_max,
            channel_max: self.channel_max,
            heartbeat: self.heartbeat,
            max_message_size: self.max_message_size,
            max_consumers_per_channel: self.max_consumers_per_channel,
            max_unacked_per_channel: self.max_unacked_per_channel,
            consumer_timeout: self.consumer_timeout,
        }
    }
}

/// Accept AMQP clients on `listener` until `shutdown` is cancelled. Each
/// connection runs on `tracker`; on shutdown they close with 320.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    config: AmqpConfig,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limits = Limits {
        max_connections: config.max_connections,
        max_per_address: config.max_connections_per_ip,
        recv_buffer: config.recv_buffer,
    };
    let stop = shutdown.clone();
    accept_loop(listener, "amqp", limits, stop, tracker, |stream, peer| {
        let (broker, config, shutdown) = (broker.clone(), config.clone(), shutdown.clone());
        async move { run(stream, peer, broker, &config, shutdown).await }
    })
    .await;
}

/// Drive one connection to completion.
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    config: &AmqpConfig,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let relief = broker.relief().clone();
    let mut conn = AmqpConnection::new(broker, config, peer, Instant::now());
    if let Ok(local) = stream.local_addr() {
        conn.set_local(local);
    }
    let (rd, wr) = stream.into_split();
    driver::run(&mut conn, rd, wr, &shutdown, &relief).await;
}

/// One AMQP connection: decoder, session and timers.
pub struct AmqpConnection {
    session: Session,
    decoder: Decoder,
    handshake_timeout: Duration,
    started: Instant,
    last_read: Instant,
    last_write: Instant,
    closing_since: Option<Instant>,
    /// Reading is paused by backpressure: silence is ours, not a missed
    /// heartbeat.
    paused: bool,
    /// The peer is gone or stuck: end without writing more.
    aborted: bool,
}

impl AmqpConnection {
    /// A connection from `peer` that has sent nothing yet.
    pub fn new(broker: Arc<Broker>, config: &AmqpConfig, peer: SocketAddr, now: Instant) -> Self {
        Self {
            session: Session::new(broker, config.session(), peer, now),
            decoder: Decoder::new(config.frame_max),
            handshake_timeout: config.handshake_timeout,
            started: now,
            last_read: now,
            last_write: now,
            closing_since: None,
            paused: false,
            aborted: false,
        }
    }

    /// The address the client connected to (names the connection).
    pub fn set_local(&mut self, local: SocketAddr) {
        self.session.set_local(local);
    }

    fn handshaking(&self) -> bool {
        matches!(
            self.session.phase(),
            Phase::Header | Phase::StartOk | Phase::TuneOk | Phase::Open
        )
    }

    fn heartbeat_interval(&self) -> Option<Duration> {
        (self.session.phase() == Phase::Running && self.session.heartbeat() > 0)
            .then(|| Duration::from_secs(u64::from(self.session.heartbeat())))
    }

    fn note_phase(&mut self, now: Instant) {
        if self.session.phase() == Phase::Closing && self.closing_since.is_none() {
            self.closing_since = Some(now);
        }
    }
}

impl Connection for AmqpConnection {
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
        self.note_phase(now);
    }

    fn handle_input(&mut self, rbuf: &mut BytesMut, now: Instant) {
        self.session.set_clock(now);
        let session = &mut self.session;
        if session.phase() == Phase::Header {
            if rbuf.len() < 8 {
                return;
            }
            let mut header = [0u8; 8];
            header.copy_from_slice(&rbuf[..8]);
            let _ = rbuf.split_to(8);
            session.handle_protocol_header(&header);
        }
        while !matches!(session.phase(), Phase::Closed | Phase::Header) {
            self.decoder.set_frame_max(session.frame_max());
            match self.decoder.decode(rbuf) {
                Ok(Some(frame)) => session.handle_frame(frame),
                Ok(None) => break,
                Err(e) => {
                    rbuf.clear();
                    session.handle_decode_error(e);
                    break;
                }
            }
        }
        if session.phase() == Phase::Closed {
            rbuf.clear();
        }
        session.sync_registry();
        self.note_phase(now);
    }

    fn output(&mut self) -> &mut BytesMut {
        self.session.output()
    }

    fn handle_written(&mut self, now: Instant) {
        self.last_write = now;
    }

    fn wants_input(&self) -> bool {
        self.session.phase() != Phase::Closed
    }

    fn outbox(&self) -> &Arc<Outbox> {
        self.session.outbox()
    }

    fn handle_outbox(&mut self, now: Instant) {
        self.session.set_clock(now);
        self.session.handle_outbox();
        self.note_phase(now);
    }

    fn take_ticket(&mut self) -> Option<Durable> {
        self.session.take_ticket()
    }

    fn handle_durable(&mut self, ok: bool, now: Instant) {
        self.session.set_clock(now);
        self.session.handle_durable(ok);
        self.note_phase(now);
    }

    fn throttled(&mut self, now: Instant) -> bool {
        self.session.throttled(now)
    }

    fn handle_paused(&mut self, paused: bool, now: Instant) {
        self.paused = paused;
        self.last_read = now;
        self.session.handle_pressure(paused);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut at = |t: Instant| d = Some(d.map_or(t, |d| d.min(t)));
        if self.handshaking() {
            at(self.started + self.handshake_timeout);
        }
        if let Some(hb) = self.heartbeat_interval() {
            at(self.last_write + hb / 2);
            if !self.paused {
                at(self.last_read + hb * 2);
            }
        }
        if let Some(since) = self.closing_since {
            at(since + CLOSE_TIMEOUT);
        }
        if let Some(t) = self.session.consumer_deadline() {
            at(t);
        }
        d
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.session.set_clock(now);
        if self.handshaking() && now >= self.started + self.handshake_timeout {
            tracing::info!("handshake timed out");
            self.aborted = true;
            return;
        }
        if self.closing_since.is_some_and(|s| now >= s + CLOSE_TIMEOUT) {
            self.aborted = true;
            return;
        }
        self.session.handle_consumer_timeout(now);
        if let Some(hb) = self.heartbeat_interval() {
            if !self.paused && now >= self.last_read + hb * 2 {
                tracing::info!(
                    timeout_secs = hb.as_secs() * 2,
                    "missed heartbeats from client"
                );
                self.aborted = true;
                return;
            }
            if now >= self.last_write + hb / 2 {
                Encoder::heartbeat(self.session.output());
                // Owed once, not again on every turn until it is written.
                self.last_write = now;
            }
        }
        self.note_phase(now);
    }

    fn handle_shutdown(&mut self, now: Instant) {
        self.session.handle_shutdown();
        self.note_phase(now);
    }

    fn handle_eof(&mut self, _now: Instant) {
        // The peer went away: nothing more to say.
        self.aborted = true;
    }

    fn status(&self) -> Status {
        Status::of(self.aborted, self.session.phase() == Phase::Closed)
    }

    fn release(&mut self) {
        self.session.release();
    }
}
