//! The MQTT connection task: owns one byte stream (a TCP socket, or a
//! WebSocket the server bridges to bytes) and drives a [`Session`].
//!
//! One `select!` loop: socket reads (armed while output is under its
//! high-water mark and no target queue is full), writes of everything the
//! session produced, engine deliveries, the oldest durability ticket (for
//! PUBACK/PUBREC), the CONNECT deadline and keep-alive (1.5 × the client's
//! interval), session takeover and shutdown.

use crate::codec::{Decoder, Packet};
use crate::session::{Phase, Session, SessionConfig, Shared};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchyard_engine::{Durable, wait_durable};
use switchyard_listener::{Limits, accept_loop};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const OUTPUT_HIGH_WATER: usize = 1 << 20;
/// How long a new connection waits for the one it takes over to let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);
/// How long the last bytes (a server DISCONNECT) may take to leave.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// MQTT listener settings.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// Largest packet (remaining length) accepted.
    pub max_packet_size: usize,
    /// QoS 1/2 deliveries in flight per client.
    pub max_inflight: u16,
    /// A client must send CONNECT within this.
    pub connect_timeout: Duration,
    /// Concurrent connections accepted.
    pub max_connections: usize,
    /// Concurrent connections accepted from one source address.
    pub max_connections_per_ip: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            max_packet_size: 16 << 20,
            max_inflight: 64,
            connect_timeout: Duration::from_secs(10),
            max_connections: 65_536,
            max_connections_per_ip: 4096,
        }
    }
}

/// Accept MQTT clients on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    config: MqttConfig,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limits = Limits {
        max_connections: config.max_connections,
        max_per_address: config.max_connections_per_ip,
    };
    let stop = shutdown.clone();
    accept_loop(listener, "mqtt", limits, stop, tracker, |stream, peer| {
        let (shared, config, shutdown) = (shared.clone(), config.clone(), shutdown.clone());
        async move {
            let (rd, wr) = stream.into_split();
            run(rd, wr, peer, shared, &config, shutdown).await;
        }
    })
    .await;
}

/// Drive one connection to completion.
pub async fn run<R, W>(
    mut rd: R,
    mut wr: W,
    peer: SocketAddr,
    shared: Arc<Shared>,
    config: &MqttConfig,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let session_config = SessionConfig {
        max_inflight: config.max_inflight,
        max_packet_size: config.max_packet_size,
    };
    let mut session = Session::new(shared.clone(), session_config, peer);
    let outbox = session.outbox().clone();
    let takeover = session.takeover();
    let mut decoder = Decoder::new(config.max_packet_size);
    // Buffers start empty and grow with traffic: an idle device costs the
    // broker as little memory as possible.
    let mut rbuf = BytesMut::new();
    let mut ticket: Option<Durable> = None;
    let started = Instant::now();
    let mut last_read = started;
    let mut eof = false;

    let mut stop_requested = false;
    loop {
        while session.phase() != Phase::Closed {
            match decoder.decode(&mut rbuf) {
                Ok(Some(Packet::Connect(c))) if session.phase() == Phase::Connect => {
                    // Let a connection holding this client id release its
                    // session first, so this one resumes what it left.
                    if let Some(finished) = shared.take_over(&c) {
                        let _ = tokio::time::timeout(TAKEOVER_WAIT, finished.cancelled()).await;
                    }
                    session.handle_packet(Packet::Connect(c));
                }
                Ok(Some(p)) => session.handle_packet(p),
                Ok(None) => break,
                Err(e) => {
                    session.handle_decode_error(e);
                    break;
                }
            }
        }
        if stop_requested {
            session.handle_stop();
            break;
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
        // A client may half-close after its last packet: the PUBACKs and
        // PUBRECs it is owed are still written (once durable), nothing more
        // is read.
        if eof && out_len == 0 && ticket.is_none() {
            break;
        }
        let throttled = session.throttled();
        let can_read =
            !eof && session.phase() != Phase::Closed && out_len < OUTPUT_HIGH_WATER && !throttled;
        if !can_read {
            last_read = Instant::now();
        }
        let deadline = match (session.phase(), session.keep_alive()) {
            (Phase::Connect, _) => started + config.connect_timeout,
            (_, 0) => Instant::now() + Duration::from_secs(3600),
            (_, k) => last_read + Duration::from_millis(u64::from(k) * 1500),
        };
        if rbuf.capacity() == rbuf.len() {
            rbuf.reserve(rbuf.len().clamp(256, 64 * 1024));
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                session.handle_shutdown();
                break;
            }
            _ = takeover.cancelled(), if !stop_requested => {
                tracing::info!(%peer, "MQTT session taken over by a new connection");
                // Take in what the client already sent (say, a PUBCOMP just
                // before it reconnected) before giving the session up.
                // Bounded, so a client that keeps sending cannot hold us here.
                let mut budget = 64 * 1024usize;
                while budget > 0 {
                    // A zero timeout polls the read once: what is already
                    // buffered, without waiting for more.
                    match tokio::time::timeout(Duration::ZERO, rd.read_buf(&mut rbuf)).await {
                        Ok(Ok(n)) if n > 0 => budget = budget.saturating_sub(n),
                        _ => break,
                    }
                }
                stop_requested = true;
            }
            r = wr.write_buf(session.output()), if out_len > 0 => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
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
            _ = sleep(Duration::from_millis(1)), if throttled => {}
            _ = sleep_until(deadline) => {
                if session.phase() == Phase::Connect {
                    break;
                }
                session.handle_keepalive_timeout();
            }
        }
    }
    // Abnormal ends (EOF without DISCONNECT, errors) publish the will here.
    session.release();
    // A delayed will or a session expiry outlives the connection.
    if let Some(d) = session.take_deferred() {
        tokio::spawn(shared.clone().run_deferred(d));
    }
    // Takeover and shutdown leave the loop right after the session wrote
    // its DISCONNECT (0x8E, 0x8B): send it, bounded, so a peer that does
    // not read cannot hold the task.
    if !session.output().is_empty() {
        let _ = tokio::time::timeout(FINAL_FLUSH, wr.write_all_buf(session.output())).await;
    }
    let _ = wr.shutdown().await;
}
