//! The connection task: owns one TCP socket and drives a [`Session`].
//!
//! One `select!` loop per connection over: socket reads (armed only while
//! the output buffer is under its high-water mark and the store keeps up),
//! socket writes of everything the session produced (many frames per
//! syscall), engine deliveries (armed only while output is under the mark),
//! the oldest durability ticket for publisher confirms, timers (handshake
//! deadline, heartbeats both ways, close handshake) and the shutdown token.
//! All futures polled here are cancel-safe; unwritten bytes stay in the
//! session's buffer.

use crate::codec::Decoder;
use crate::session::{Phase, Session, SessionConfig};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchyard_engine::{Broker, Durable, wait_durable};
use switchyard_listener::{Limits, accept_loop};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Stop reading from a client while this many output bytes are unwritten.
const OUTPUT_HIGH_WATER: usize = 1 << 20;
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
    let (mut rd, mut wr) = stream.into_split();
    let mut session = Session::new(broker, config.session(), peer);
    let outbox = session.outbox().clone();
    let mut decoder = Decoder::new(config.frame_max);
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let mut ticket: Option<Durable> = None;
    let started = Instant::now();
    let mut last_read = started;
    let mut last_write = started;
    let mut closing_since: Option<Instant> = None;
    let mut shutting_down = false;
    let mut eof = false;

    loop {
        process_input(&mut session, &mut decoder, &mut rbuf);
        if session.output().len() < OUTPUT_HIGH_WATER && outbox.has_events() {
            session.handle_outbox();
        }
        if ticket.is_none() {
            ticket = session.take_ticket();
        }
        let phase = session.phase();
        if phase == Phase::Closing && closing_since.is_none() {
            closing_since = Some(Instant::now());
        }
        if (phase == Phase::Closed || eof) && session.output().is_empty() {
            break;
        }
        if eof && phase != Phase::Closed {
            // Peer went away with output pending: nothing more to say.
            break;
        }

        let out_len = session.output().len();
        let store_busy = session.throttled();
        session.handle_pressure(store_busy);
        let can_read = phase != Phase::Closed && out_len < OUTPUT_HIGH_WATER && !store_busy;
        if !can_read {
            // We chose not to read: silence is ours, not a missed heartbeat.
            last_read = Instant::now();
        }
        let deadline = next_deadline(
            &session,
            started,
            last_read,
            last_write,
            closing_since,
            config,
        );
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(64 * 1024);
        }

        tokio::select! {
            biased;
            _ = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                session.handle_shutdown();
            }
            r = wr.write_buf(session.output()), if out_len > 0 => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => last_write = Instant::now(),
            },
            ok = wait_durable(&mut ticket) => {
                ticket = None;
                session.handle_durable(ok);
            }
            r = rd.read_buf(&mut rbuf), if can_read => match r {
                Ok(0) | Err(_) => eof = true,
                Ok(_) => last_read = Instant::now(),
            },
            _ = outbox.ready(), if out_len < OUTPUT_HIGH_WATER => {}
            _ = sleep(Duration::from_millis(1)), if store_busy => {}
            _ = sleep_until(deadline) => {
                if on_timer(&mut session, started, last_read, last_write, closing_since, config) {
                    break;
                }
            }
        }
    }
    let _ = wr.shutdown().await;
    session.release();
}

fn process_input(session: &mut Session, decoder: &mut Decoder, rbuf: &mut BytesMut) {
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
        decoder.set_frame_max(session.frame_max());
        match decoder.decode(rbuf) {
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
}

fn heartbeat_interval(session: &Session) -> Option<Duration> {
    (session.phase() == Phase::Running && session.heartbeat() > 0)
        .then(|| Duration::from_secs(u64::from(session.heartbeat())))
}

fn next_deadline(
    session: &Session,
    started: Instant,
    last_read: Instant,
    last_write: Instant,
    closing_since: Option<Instant>,
    config: &AmqpConfig,
) -> Instant {
    let far = Instant::now() + Duration::from_secs(3600);
    let mut d = far;
    if matches!(
        session.phase(),
        Phase::Header | Phase::StartOk | Phase::TuneOk | Phase::Open
    ) {
        d = d.min(started + config.handshake_timeout);
    }
    if let Some(hb) = heartbeat_interval(session) {
        d = d.min(last_write + hb / 2).min(last_read + hb * 2);
    }
    if let Some(since) = closing_since {
        d = d.min(since + CLOSE_TIMEOUT);
    }
    if let Some(at) = session.consumer_deadline() {
        d = d.min(Instant::from_std(at));
    }
    d
}

/// Returns true if the connection must end now.
fn on_timer(
    session: &mut Session,
    started: Instant,
    last_read: Instant,
    last_write: Instant,
    closing_since: Option<Instant>,
    config: &AmqpConfig,
) -> bool {
    let now = Instant::now();
    if matches!(
        session.phase(),
        Phase::Header | Phase::StartOk | Phase::TuneOk | Phase::Open
    ) && now >= started + config.handshake_timeout
    {
        tracing::info!("handshake timed out");
        return true;
    }
    if closing_since.is_some_and(|s| now >= s + CLOSE_TIMEOUT) {
        return true;
    }
    session.handle_consumer_timeout(now.into_std());
    if let Some(hb) = heartbeat_interval(session) {
        if now >= last_read + hb * 2 {
            tracing::info!(
                timeout_secs = hb.as_secs() * 2,
                "missed heartbeats from client"
            );
            return true;
        }
        if now >= last_write + hb / 2 {
            crate::codec::Encoder::heartbeat(session.output());
        }
    }
    false
}
