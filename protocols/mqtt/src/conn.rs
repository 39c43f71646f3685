//! The MQTT connection task: owns one byte stream (a TCP socket, or a
//! WebSocket the server bridges to bytes) and drives a [`Session`].
//!
//! One `select!` loop: socket reads (armed while output is under its
//! high-water mark and no target queue is full), writes of everything the
//! session produced, engine deliveries, the oldest durability ticket (for
//! PUBACK/PUBREC), the CONNECT deadline and keep-alive (1.5 × the client's
//! interval), session takeover and shutdown.
//!
//! A TCP client whose session is idle ([`Session::parkable`]: nothing
//! subscribed, in flight or owed) and that has sent nothing for
//! [`MqttConfig::park_after`] is parked: its task ends and the socket waits
//! in the listener's [`ParkingLot`] with a [`ParkedSession`], a few hundred
//! bytes instead of a few kilobytes. Data, its keep-alive deadline, a
//! takeover or shutdown resume it on a new task, exactly where it was.

use crate::codec::{Decoder, Packet};
use crate::session::{ParkedSession, Phase, Session, SessionConfig, Shared};
use crate::signal::Signal;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use switchyard_engine::{Durable, Outbox, OutboxWaker, wait_durable};
use switchyard_listener::park::{ParkKey, ParkingLot, Wake};
use switchyard_listener::{Admission, Limits, accept_loop_admitted};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

const OUTPUT_HIGH_WATER: usize = 1 << 20;
/// How long a new connection waits for the one it takes over to let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);
/// How long the last bytes (a server DISCONNECT) may take to leave.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// Default [`MqttConfig::park_after`]: long enough that a client sending
/// every second or faster never parks, short enough that a fleet of quiet
/// devices costs little.
pub const DEFAULT_PARK_AFTER: Duration = Duration::from_secs(2);

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
    /// An idle client silent this long is parked (`None`: never).
    pub park_after: Option<Duration>,
    /// Longest keep-alive accepted, in seconds (0: no limit); see
    /// [`SessionConfig::max_keep_alive`].
    pub max_keep_alive: u16,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            max_packet_size: 16 << 20,
            max_inflight: 64,
            connect_timeout: Duration::from_secs(10),
            max_connections: 65_536,
            max_connections_per_ip: 4096,
            park_after: Some(DEFAULT_PARK_AFTER),
            max_keep_alive: 0,
        }
    }
}

/// What every TCP connection task of one listener shares.
struct Listener {
    shared: Arc<Shared>,
    config: MqttConfig,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    runtime: Handle,
    /// Unset if the lot could not start (no parking then).
    lot: OnceLock<ParkingLot<Box<ParkedConn>>>,
}

/// A parked connection's state: the session, when it last heard from the
/// client, and what keeps it counted (listener limits, shutdown tracking).
struct ParkedConn {
    session: Parked,
    last_read: std::time::Instant,
    admission: Admission,
    _tracked: TaskTrackerToken,
}

/// A parked session.
enum Parked {
    /// Nothing subscribed or in flight: the few fields that matter.
    Compact(ParkedSession),
    /// Subscribed (it has a queue whose deliveries wake it through its
    /// outbox) or with deliveries in flight: the whole session.
    Whole(Box<Session>),
}

impl Parked {
    fn signal(&self) -> &Arc<Signal> {
        match self {
            Self::Compact(p) => p.signal(),
            Self::Whole(s) => s.signal(),
        }
    }

    fn client_id(&self) -> &str {
        match self {
            Self::Compact(p) => p.client_id(),
            Self::Whole(s) => s.client_id(),
        }
    }

    fn into_session(self, ctx: &Listener) -> Session {
        self.signal().set_parked(None);
        match self {
            Self::Compact(p) => Session::unpark(ctx.shared.clone(), session_config(&ctx.config), p),
            Self::Whole(s) => {
                s.outbox().set_waker(None);
                *s
            }
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
    let ctx = Arc::new(Listener {
        shared: shared.clone(),
        config,
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
        runtime: Handle::current(),
        lot: OnceLock::new(),
    });
    if ctx.config.park_after.is_some() {
        let resumer = ctx.clone();
        let started = ParkingLot::start("mqtt-park", move |stream, parked, why| {
            let ctx = resumer.clone();
            resumer
                .tracker
                .spawn_on(resume(ctx, stream, parked, why), &resumer.runtime);
        });
        match started {
            Ok(lot) => {
                let waker = lot.clone();
                shared.set_unpark(Box::new(move |k| waker.wake(ParkKey::from_bits(k))));
                let _ = ctx.lot.set(lot);
            }
            Err(e) => {
                tracing::warn!(error = %e, "MQTT parking lot did not start; idle clients keep their tasks")
            }
        }
    }
    let stop = shutdown.clone();
    let accepting = ctx.clone();
    accept_loop_admitted(
        listener,
        "mqtt",
        limits,
        stop,
        tracker,
        move |stream, peer, admission| {
            run_tcp(accepting.clone(), stream, Start::New(peer), admission)
        },
    )
    .await;
    // Parked clients are handed back and see the shutdown.
    if let Some(lot) = ctx.lot.get() {
        lot.shutdown();
    }
}

/// A parked connection handed back by the lot: carry on on this task.
async fn resume(
    ctx: Arc<Listener>,
    stream: std::net::TcpStream,
    parked: Box<ParkedConn>,
    why: Wake,
) {
    tracing::debug!(
        ?why,
        client_id = parked.session.client_id(),
        "MQTT connection resumed"
    );
    match TcpStream::from_std(stream) {
        Ok(stream) => {
            let ParkedConn {
                session,
                last_read,
                admission,
                _tracked,
            } = *parked;
            let start = Start::Parked(session, Instant::from_std(last_read));
            run_tcp(ctx, stream, start, admission).await;
        }
        // Dropping the session releases it (the will is published).
        Err(e) => tracing::warn!(error = %e, "cannot resume a parked MQTT connection"),
    }
}

/// Where a TCP connection's task starts.
enum Start {
    /// A new client at this address.
    New(SocketAddr),
    /// A parked one, last heard from at that instant.
    Parked(Parked, Instant),
}

/// Drive a TCP connection until it ends or parks.
async fn run_tcp(ctx: Arc<Listener>, stream: TcpStream, start: Start, admission: Admission) {
    // Built here, not passed in: a value moved into an async fn's future is
    // laid out twice in the caller's state.
    let mut conn = match start {
        Start::New(peer) => Conn::new(ctx.shared.clone(), &ctx.config, peer),
        Start::Parked(parked, last_read) => {
            Conn::from_session(parked.into_session(&ctx), &ctx.config, last_read)
        }
    };
    let (mut rd, mut wr) = stream.into_split();
    let park_after = ctx.lot.get().and(ctx.config.park_after);
    let exit = conn
        .drive(
            &mut rd,
            &mut wr,
            &ctx.shared,
            &ctx.config,
            &ctx.shutdown,
            park_after,
        )
        .await;
    let Some(lot) = ctx.lot.get().filter(|_| exit == Exit::Park) else {
        conn.finish(wr, &ctx.shared).await;
        return;
    };
    // Failing, nothing is left to talk to; dropping the session releases it.
    let Ok(Ok(std_stream)) = rd.reunite(wr).map(TcpStream::into_std) else {
        return;
    };
    let signal = conn.session.signal().clone();
    let outbox = conn.session.outbox().clone();
    let last_read = conn.last_read;
    let deadline = keepalive_deadline(conn.session.keep_alive(), last_read);
    let session = if conn.session.parkable() {
        Parked::Compact(conn.session.park())
    } else {
        let Conn { mut session, .. } = conn;
        session.shrink();
        Parked::Whole(Box::new(session))
    };
    let whole = matches!(session, Parked::Whole(_));
    // For the log line only (tests follow parking through it).
    let client_id =
        tracing::enabled!(tracing::Level::DEBUG).then(|| session.client_id().to_owned());
    let parked = Box::new(ParkedConn {
        session,
        last_read: last_read.into_std(),
        admission,
        _tracked: ctx.tracker.token(),
    });
    match lot.park(std_stream, deadline.map(Instant::into_std), parked) {
        Ok(key) => {
            tracing::debug!(
                whole,
                client_id = client_id.as_deref().unwrap_or_default(),
                "MQTT connection parked"
            );
            signal.set_parked(Some(key.to_bits()));
            if whole {
                // A delivery for the session wakes it.
                let waker = lot.clone();
                outbox.set_waker(Some(OutboxWaker::new(move || waker.wake(key))));
            }
            // A takeover or a delivery that came before the key was set, or
            // the waker, missed it.
            if signal.is_stopped() || outbox.has_events() {
                lot.wake(key);
            }
        }
        Err((std_stream, parked)) => {
            // The lot is shutting down: carry on here, without parking.
            Box::pin(run_unparked(ctx, std_stream, *parked, last_read)).await;
        }
    }
}

/// The rest of a connection the lot refused to park (it is shutting down).
async fn run_unparked(
    ctx: Arc<Listener>,
    stream: std::net::TcpStream,
    parked: ParkedConn,
    last_read: Instant,
) {
    let ParkedConn {
        session,
        admission: _admission,
        ..
    } = parked;
    let mut conn = Conn::from_session(session.into_session(&ctx), &ctx.config, last_read);
    let Ok(stream) = TcpStream::from_std(stream) else {
        return;
    };
    let (mut rd, mut wr) = stream.into_split();
    conn.drive(
        &mut rd,
        &mut wr,
        &ctx.shared,
        &ctx.config,
        &ctx.shutdown,
        None,
    )
    .await;
    conn.finish(wr, &ctx.shared).await;
}

fn session_config(config: &MqttConfig) -> SessionConfig {
    SessionConfig {
        max_inflight: config.max_inflight,
        max_packet_size: config.max_packet_size,
        max_keep_alive: config.max_keep_alive,
    }
}

/// When a client silent since `last_read` has missed its keep-alive (1.5 ×
/// the interval, MQTT-3.1.2-24); `None` for keep-alive 0.
fn keepalive_deadline(keep_alive: u16, last_read: Instant) -> Option<Instant> {
    (keep_alive > 0).then(|| last_read + Duration::from_millis(u64::from(keep_alive) * 1500))
}

/// Drive one connection over any byte stream (a WebSocket bridge): it never
/// parks.
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
    let mut conn = Conn::new(shared.clone(), config, peer);
    conn.drive(&mut rd, &mut wr, &shared, config, &shutdown, None)
        .await;
    conn.finish(wr, &shared).await;
}

/// How [`Conn::drive`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Exit {
    /// The connection is over: finish it.
    Closed,
    /// Idle: park it.
    Park,
}

/// One connection's loop state.
struct Conn {
    session: Session,
    outbox: Arc<Outbox>,
    signal: Arc<Signal>,
    decoder: Decoder,
    rbuf: BytesMut,
    ticket: Option<Durable>,
    started: Instant,
    last_read: Instant,
    eof: bool,
    stop_requested: bool,
    /// Since when nothing was read (or the connection resumed): the park
    /// timer's start. Keep-alive counts from `last_read` instead, which a
    /// resumed connection keeps.
    idle_since: Instant,
    /// Just connected, nothing said since CONNECT but (un)subscriptions:
    /// park as soon as idle
    /// (a connection storm of quiet devices never holds thousands of
    /// tasks at once).
    fresh: bool,
}

impl Conn {
    fn new(shared: Arc<Shared>, config: &MqttConfig, peer: SocketAddr) -> Self {
        let session = Session::new(shared, session_config(config), peer);
        let mut conn = Self::from_session(session, config, Instant::now());
        conn.decoder = Decoder::new(config.max_packet_size);
        conn.fresh = true;
        conn
    }

    /// A loop over a session that already read its CONNECT (resumed).
    fn from_session(session: Session, config: &MqttConfig, last_read: Instant) -> Self {
        Self {
            outbox: session.outbox().clone(),
            signal: session.signal().clone(),
            decoder: Decoder::resume(config.max_packet_size, session.protocol()),
            session,
            // Buffers start empty and grow with traffic: an idle device
            // costs the broker as little memory as possible.
            rbuf: BytesMut::new(),
            ticket: None,
            started: Instant::now(),
            last_read,
            eof: false,
            stop_requested: false,
            idle_since: Instant::now(),
            fresh: false,
        }
    }

    /// Run the loop until the connection ends, or (with `park_after`) until
    /// the session is idle and the client was silent that long.
    async fn drive<R, W>(
        &mut self,
        rd: &mut R,
        wr: &mut W,
        shared: &Shared,
        config: &MqttConfig,
        shutdown: &CancellationToken,
        park_after: Option<Duration>,
    ) -> Exit
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let Self {
            session,
            outbox,
            signal,
            decoder,
            rbuf,
            ticket,
            started,
            last_read,
            eof,
            stop_requested,
            idle_since,
            fresh,
        } = self;
        loop {
            while session.phase() != Phase::Closed {
                match decoder.decode(rbuf) {
                    Ok(Some(Packet::Connect(c))) if session.phase() == Phase::Connect => {
                        // Let a connection holding this client id release its
                        // session first, so this one resumes what it left.
                        if let Some(old) = shared.take_over(&c) {
                            let _ = tokio::time::timeout(TAKEOVER_WAIT, old.finished()).await;
                        }
                        session.set_mqtt31(decoder.is_mqtt31());
                        session.handle_packet(Packet::Connect(c));
                    }
                    Ok(Some(p)) => {
                        // Subscribing is still setting up: a device that
                        // subscribes and then waits for commands parks at
                        // once too.
                        if !matches!(p, Packet::Subscribe(_) | Packet::Unsubscribe(_)) {
                            *fresh = false;
                        }
                        session.handle_packet(p);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        session.handle_decode_error(e);
                        break;
                    }
                }
            }
            if *stop_requested {
                session.handle_stop();
                return Exit::Closed;
            }
            if session.output().len() < OUTPUT_HIGH_WATER && outbox.has_events() {
                session.handle_outbox();
            }
            if ticket.is_none() {
                *ticket = session.take_ticket();
            }
            let out_len = session.output().len();
            if session.phase() == Phase::Closed && out_len == 0 {
                return Exit::Closed;
            }
            // A client may half-close after its last packet: the PUBACKs and
            // PUBRECs it is owed are still written (once durable), nothing
            // more is read.
            if *eof && out_len == 0 && ticket.is_none() {
                return Exit::Closed;
            }
            let throttled = session.throttled();
            let can_read = !*eof
                && session.phase() != Phase::Closed
                && out_len < OUTPUT_HIGH_WATER
                && !throttled;
            if !can_read {
                *last_read = Instant::now();
                *idle_since = *last_read;
            }
            let connect_deadline =
                (session.phase() == Phase::Connect).then(|| *started + config.connect_timeout);
            let keepalive = keepalive_deadline(session.keep_alive(), *last_read);
            let park_at = park_after
                .filter(|_| {
                    can_read
                        && !*stop_requested
                        && ticket.is_none()
                        && rbuf.is_empty()
                        && out_len == 0
                        && session.idle()
                })
                .map(|after| match fresh {
                    true => Instant::now(),
                    false => *idle_since + after,
                });
            let deadline = [connect_deadline, keepalive, park_at]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            if rbuf.capacity() == rbuf.len() {
                rbuf.reserve(rbuf.len().clamp(256, 64 * 1024));
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    session.handle_shutdown();
                    return Exit::Closed;
                }
                _ = signal.stopped(), if !*stop_requested => {
                    tracing::info!(peer = %session.peer(), "MQTT session taken over by a new connection");
                    // Take in what the client already sent (say, a PUBCOMP
                    // just before it reconnected) before giving the session
                    // up. Bounded, so a client that keeps sending cannot hold
                    // us here.
                    let mut budget = 64 * 1024usize;
                    while budget > 0 {
                        // A zero timeout polls the read once: what is already
                        // buffered, without waiting for more.
                        match tokio::time::timeout(Duration::ZERO, rd.read_buf(rbuf)).await {
                            Ok(Ok(n)) if n > 0 => budget = budget.saturating_sub(n),
                            _ => break,
                        }
                    }
                    *stop_requested = true;
                }
                r = wr.write_buf(session.output()), if out_len > 0 => match r {
                    Ok(0) | Err(_) => return Exit::Closed,
                    Ok(_) => {}
                },
                ok = wait_durable(ticket) => {
                    *ticket = None;
                    session.handle_durable(ok);
                }
                r = rd.read_buf(rbuf), if can_read => match r {
                    Ok(0) | Err(_) => *eof = true,
                    Ok(_) => {
                        *last_read = Instant::now();
                        *idle_since = *last_read;
                    }
                },
                _ = outbox.ready(), if out_len < OUTPUT_HIGH_WATER => {}
                _ = sleep(Duration::from_millis(1)), if throttled => {}
                _ = sleep_until(deadline) => {
                    let now = Instant::now();
                    if connect_deadline.is_some_and(|d| now >= d) {
                        return Exit::Closed;
                    }
                    if keepalive.is_some_and(|d| now >= d) {
                        session.handle_keepalive_timeout();
                    } else if park_at.is_some_and(|d| now >= d) {
                        // Only a session without a task of its own is
                        // parked: drop what the loop holds.
                        *rbuf = BytesMut::new();
                        return Exit::Park;
                    }
                }
            }
        }
    }

    /// After the loop: release the session and say goodbye.
    async fn finish<W: AsyncWrite + Unpin>(&mut self, mut wr: W, shared: &Arc<Shared>) {
        let session = &mut self.session;
        // Abnormal ends (EOF without DISCONNECT, errors) publish the will.
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_engine::Broker;
    use switchyard_engine::store::MemoryStore;

    /// What an idle connection's task holds is mostly the `drive` future:
    /// keep an eye on it (`cargo test -p switchyard-mqtt sizes -- --nocapture`).
    #[tokio::test]
    async fn sizes() {
        let shared = Shared::new(Broker::open(Arc::new(MemoryStore)).unwrap());
        let config = MqttConfig::default();
        let mut conn = Conn::new(shared.clone(), &config, "127.0.0.1:1".parse().unwrap());
        let (mut rd, mut wr) = (tokio::io::empty(), tokio::io::sink());
        let shutdown = CancellationToken::new();
        let fut = conn.drive(&mut rd, &mut wr, &shared, &config, &shutdown, None);
        let drive = size_of_val(&fut);
        drop(fut);
        let ctx = Arc::new(Listener {
            shared: shared.clone(),
            config: config.clone(),
            shutdown: shutdown.clone(),
            tracker: TaskTracker::new(),
            runtime: Handle::current(),
            lot: OnceLock::new(),
        });
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let peer = c.local_addr().unwrap();
        let task = run_tcp(ctx, c, Start::New(peer), Admission::detached());
        let task_size = size_of_val(&task);
        drop(task);
        println!(
            "connection task {task_size} B, drive future {drive} B, Conn {} B, Session {} B, ParkedSession {} B, ParkedConn {} B",
            size_of::<Conn>(),
            size_of::<Session>(),
            size_of::<ParkedSession>(),
            size_of::<ParkedConn>(),
        );
        assert!(size_of::<ParkedConn>() < 512);
        assert!(task_size < 8192);
    }
}
