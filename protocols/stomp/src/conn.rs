//! The STOMP connection task: owns one byte stream (a TCP socket, or a
//! WebSocket the server bridges to bytes) and drives a [`Session`].
//!
//! One `select!` loop: reads (armed while output is under its high-water
//! mark and no target queue is full), writes of everything the session
//! produced, engine deliveries, the oldest durability ticket (for RECEIPTs),
//! the CONNECT deadline, and heart-beats both ways: an EOL is written when
//! nothing else was for the negotiated interval, and a client silent for
//! twice its interval is disconnected.

use crate::codec::{Decoder, Limits};
use crate::session::{Phase, Session, SessionConfig, Shared};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchyard_engine::{Durable, wait_durable};
use switchyard_listener::accept_loop;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const OUTPUT_HIGH_WATER: usize = 1 << 20;

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
    };
    let stop = shutdown.clone();
    accept_loop(listener, "stomp", limits, stop, tracker, |stream, peer| {
        let (shared, config, shutdown) = (shared.clone(), config.clone(), shutdown.clone());
        async move {
            let (rd, wr) = stream.into_split();
            run(rd, wr, peer, shared, &config, shutdown).await;
        }
    })
    .await;
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Drive one connection over `rd` / `wr` to completion.
pub async fn run<R, W>(
    mut rd: R,
    mut wr: W,
    peer: SocketAddr,
    shared: Arc<Shared>,
    config: &StompConfig,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let session_config = SessionConfig {
        max_subscriptions: config.max_subscriptions,
        min_heartbeat_ms: config.min_heartbeat_ms,
        max_unacked: config.max_unacked,
        consumer_timeout: config.consumer_timeout,
    };
    let mut session = Session::new(shared, session_config, peer);
    let outbox = session.outbox().clone();
    let mut decoder = Decoder::new(config.limits);
    let mut rbuf = BytesMut::new();
    let mut ticket: Option<Durable> = None;
    let started = Instant::now();
    let mut last_read = started;
    let mut last_write = started;
    let mut eof = false;
    let far = Duration::from_secs(3600);

    loop {
        while matches!(session.phase(), Phase::Connect | Phase::Connected) {
            match decoder.decode(&mut rbuf) {
                Ok(Some(frame)) => {
                    session.handle_frame(frame);
                    decoder.set_version(session.version());
                }
                Ok(None) => break,
                Err(e) => {
                    session.handle_decode_error(&e);
                    break;
                }
            }
        }
        if session.output().len() < OUTPUT_HIGH_WATER && outbox.has_events() {
            session.handle_outbox();
        }
        if ticket.is_none() {
            ticket = session.take_ticket();
        }
        let out_len = session.output().len();
        if session.phase() == Phase::Closed && out_len == 0 {
            break;
        }
        // A client may half-close after its last frame (DISCONNECT with a
        // receipt, say): what it is owed is still written, nothing more is
        // read.
        if eof && out_len == 0 && ticket.is_none() {
            break;
        }
        let throttled = session.throttled();
        let can_read = !eof
            && matches!(session.phase(), Phase::Connect | Phase::Connected)
            && out_len < OUTPUT_HIGH_WATER
            && !throttled;
        if !can_read {
            last_read = Instant::now();
        }
        let (send_every, expect_within) = session.heartbeat();
        let read_deadline = match session.phase() {
            Phase::Connect => started + config.connect_timeout,
            _ if expect_within > 0 => last_read + ms(expect_within.saturating_mul(2)),
            _ => Instant::now() + far,
        };
        let write_deadline = if send_every > 0 && session.phase() == Phase::Connected {
            last_write + ms(send_every)
        } else {
            Instant::now() + far
        };
        let ack_deadline = session.consumer_deadline().map(Instant::from_std);
        if rbuf.capacity() == rbuf.len() {
            rbuf.reserve(rbuf.len().clamp(256, 64 * 1024));
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                session.handle_shutdown();
                let _ = tokio::time::timeout(ms(500), wr.write_all_buf(session.output())).await;
                break;
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
            _ = sleep(ms(1)), if throttled => {}
            _ = sleep_until(write_deadline), if out_len == 0 => {
                session.output().extend_from_slice(b"\n");
            }
            () = sleep_until(ack_deadline.unwrap_or(read_deadline)), if ack_deadline.is_some() => {
                session.handle_consumer_timeout(Instant::now().into_std());
            }
            _ = sleep_until(read_deadline) => {
                if session.phase() == Phase::Connect {
                    tracing::info!(%peer, "STOMP client sent no CONNECT in time; closing");
                    break;
                }
                session.handle_heartbeat_timeout();
            }
        }
    }
    session.release();
    let _ = wr.shutdown().await;
}
