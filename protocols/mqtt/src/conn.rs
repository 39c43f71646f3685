//! MQTT connections as the one connection driver runs them
//! ([`switchyard_listener::driver`]), over a TCP socket or a WebSocket the
//! server bridges to bytes: the packet decoder and the [`Session`] behind
//! it, and the connection's timers (the CONNECT deadline, keep-alive at
//! 1.5 × the client's interval, the wait for a connection this one takes
//! over). Sans-IO: the driver owns the socket and the clock.
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
use std::time::{Duration, Instant};
use switchyard_engine::connections::ConnectionEntry;
use switchyard_engine::{Durable, Outbox, OutboxWaker};
use switchyard_listener::driver::{self, Connection, Exit, Status, Wait};
use switchyard_listener::park::{ParkKey, ParkingLot, Wake};
use switchyard_listener::{Admission, Endpoint, Limits, accept_loop_admitted};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// How long a new connection waits for the one it takes over to let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

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
    /// Accepted sockets' receive buffer (see [`Limits::recv_buffer`]).
    pub recv_buffer: Option<usize>,
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
            recv_buffer: None,
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
    last_read: Instant,
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
        recv_buffer: config.recv_buffer,
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
            let start = Start::Parked(session, last_read);
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
    let park_after = ctx.lot.get().and(ctx.config.park_after);
    // Built here, not passed in: a value moved into an async fn's future is
    // laid out twice in the caller's state.
    let mut conn = match start {
        Start::New(peer) => {
            let mut conn =
                MqttConnection::new(ctx.shared.clone(), &ctx.config, peer, Instant::now());
            conn.set_endpoint(Endpoint::tcp(&stream));
            conn
        }
        Start::Parked(parked, last_read) => MqttConnection::resumed(
            parked.into_session(&ctx),
            &ctx.shared,
            &ctx.config,
            last_read,
        ),
    };
    conn.park_after = park_after;
    let relief = ctx.shared.broker().relief().clone();
    let (mut rd, mut wr) = stream.into_split();
    let exit = driver::drive(&mut conn, &mut rd, &mut wr, &ctx.shutdown, &relief).await;
    let Some(lot) = ctx.lot.get().filter(|_| exit == Exit::Park) else {
        driver::finish(&mut conn, &mut wr).await;
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
        let MqttConnection { mut session, .. } = conn;
        session.shrink();
        Parked::Whole(Box::new(session))
    };
    let whole = matches!(session, Parked::Whole(_));
    // For the log line only (tests follow parking through it).
    let client_id =
        tracing::enabled!(tracing::Level::DEBUG).then(|| session.client_id().to_owned());
    let parked = Box::new(ParkedConn {
        session,
        last_read,
        admission,
        _tracked: ctx.tracker.token(),
    });
    match lot.park(std_stream, deadline, parked) {
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
    let mut conn = MqttConnection::resumed(
        session.into_session(&ctx),
        &ctx.shared,
        &ctx.config,
        last_read,
    );
    let Ok(stream) = TcpStream::from_std(stream) else {
        return;
    };
    let relief = ctx.shared.broker().relief().clone();
    let (rd, wr) = stream.into_split();
    driver::run(&mut conn, rd, wr, &ctx.shutdown, &relief).await;
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
    rd: R,
    wr: W,
    peer: SocketAddr,
    endpoint: Endpoint,
    shared: Arc<Shared>,
    config: &MqttConfig,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let relief = shared.broker().relief().clone();
    let mut conn = MqttConnection::new(shared, config, peer, Instant::now());
    conn.set_endpoint(endpoint);
    driver::run(&mut conn, rd, wr, &shutdown, &relief).await;
}

/// One MQTT connection: decoder, session and timers.
pub struct MqttConnection {
    session: Session,
    shared: Arc<Shared>,
    decoder: Decoder,
    connect_timeout: Duration,
    started: Instant,
    last_read: Instant,
    /// Since when nothing was read (or the connection resumed): the park
    /// timer's start. Keep-alive counts from `last_read` instead, which a
    /// resumed connection keeps.
    idle_since: Instant,
    /// Just connected, nothing said since CONNECT but (un)subscriptions:
    /// park as soon as idle (a connection storm of quiet devices never
    /// holds thousands of tasks at once).
    fresh: bool,
    /// An idle client silent this long is parked (`None`: never).
    park_after: Option<Duration>,
    /// Reading is paused by backpressure: silence is ours.
    paused: bool,
    /// A CONNECT waiting, until the instant given, for the connection that
    /// held its client id to let go (so this one resumes what it left).
    pending: Option<(Packet, Instant)>,
    /// The wait for that, until the driver takes it.
    wait: Option<Wait>,
    /// Taken over, shut down, or silent past its deadline: over.
    closed: bool,
    aborted: bool,
}

impl MqttConnection {
    /// Where the client connected (see [`Endpoint`]).
    pub fn set_endpoint(&mut self, endpoint: Endpoint) {
        if let Some(local) = endpoint.local {
            self.session.set_endpoint(local, endpoint.web);
        }
    }

    /// A connection from `peer` that has sent nothing yet.
    pub fn new(shared: Arc<Shared>, config: &MqttConfig, peer: SocketAddr, now: Instant) -> Self {
        let session = Session::new(shared.clone(), session_config(config), peer);
        let mut conn = Self::resumed(session, &shared, config, now);
        conn.decoder = Decoder::new(config.max_packet_size);
        conn.fresh = true;
        conn
    }

    /// A connection over a session that already read its CONNECT
    /// (resumed), last heard from at `last_read`.
    fn resumed(
        session: Session,
        shared: &Arc<Shared>,
        config: &MqttConfig,
        last_read: Instant,
    ) -> Self {
        let now = Instant::now();
        Self {
            decoder: Decoder::resume(config.max_packet_size, session.protocol()),
            session,
            shared: shared.clone(),
            connect_timeout: config.connect_timeout,
            started: now,
            last_read,
            idle_since: now,
            fresh: false,
            park_after: None,
            paused: false,
            pending: None,
            wait: None,
            closed: false,
            aborted: false,
        }
    }

    fn connect(&mut self, packet: Packet) {
        self.session.set_mqtt31(self.decoder.is_mqtt31());
        self.session.handle_packet(packet);
    }

    fn connect_deadline(&self) -> Option<Instant> {
        (self.session.phase() == Phase::Connect).then(|| self.started + self.connect_timeout)
    }

    fn keepalive(&self) -> Option<Instant> {
        if self.paused {
            return None;
        }
        keepalive_deadline(self.session.keep_alive(), self.last_read)
    }
}

impl Connection for MqttConnection {
    fn handle_read(&mut self, now: Instant) {
        self.last_read = now;
        self.idle_since = now;
    }

    fn handle_input(&mut self, rbuf: &mut BytesMut, now: Instant) {
        while self.session.phase() != Phase::Closed && self.pending.is_none() {
            match self.decoder.decode(rbuf) {
                Ok(Some(packet @ Packet::Connect(_))) if self.session.phase() == Phase::Connect => {
                    let Packet::Connect(c) = &packet else {
                        unreachable!("matched above")
                    };
                    // Let a connection holding this client id release its
                    // session first, so this one resumes what it left.
                    match self.shared.take_over(c) {
                        Some(old) => {
                            self.pending = Some((packet, now + TAKEOVER_WAIT));
                            self.wait = Some(Box::pin(async move { old.finished().await }));
                        }
                        None => self.connect(packet),
                    }
                }
                Ok(Some(p)) => {
                    // Subscribing is still setting up: a device that
                    // subscribes and then waits for commands parks at once
                    // too.
                    if !matches!(p, Packet::Subscribe(_) | Packet::Unsubscribe(_)) {
                        self.fresh = false;
                    }
                    self.session.handle_packet(p);
                }
                Ok(None) => break,
                Err(e) => {
                    self.session.handle_decode_error(e);
                    break;
                }
            }
        }
    }

    fn output(&mut self) -> &mut BytesMut {
        self.session.output()
    }

    fn wants_input(&self) -> bool {
        self.session.phase() != Phase::Closed && self.pending.is_none() && !self.closed
    }

    fn outbox(&self) -> &Arc<Outbox> {
        self.session.outbox()
    }

    fn handle_outbox(&mut self, _now: Instant) {
        self.session.handle_outbox();
    }

    fn take_ticket(&mut self) -> Option<Durable> {
        self.session.take_ticket()
    }

    fn handle_durable(&mut self, ok: bool, _now: Instant) {
        self.session.handle_durable(ok);
    }

    fn take_wait(&mut self) -> Option<Wait> {
        self.wait.take()
    }

    fn handle_wait(&mut self, _now: Instant) {
        if let Some((packet, _)) = self.pending.take() {
            self.connect(packet);
        }
    }

    fn interrupted(&self) -> Option<Wait> {
        let signal: Arc<Signal> = self.session.signal().clone();
        Some(Box::pin(async move { signal.stopped().await }))
    }

    fn handle_interrupt(&mut self, _now: Instant) {
        self.session.handle_stop();
        self.closed = true;
    }

    fn throttled(&mut self, now: Instant) -> bool {
        self.session.throttled(now)
    }

    fn traffic(&self) -> Option<Arc<ConnectionEntry>> {
        Some(self.session.entry().clone())
    }

    fn handle_paused(&mut self, paused: bool, now: Instant) {
        self.paused = paused;
        self.handle_read(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.connect_deadline(),
            self.keepalive(),
            self.pending.as_ref().map(|(_, until)| *until),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self
            .pending
            .as_ref()
            .is_some_and(|(_, until)| now >= *until)
        {
            // The old connection did not let go in time: go on regardless.
            self.wait = None;
            self.handle_wait(now);
        }
        if self.connect_deadline().is_some_and(|d| now >= d) {
            self.aborted = true;
            return;
        }
        if self.keepalive().is_some_and(|d| now >= d) {
            self.session.handle_keepalive_timeout();
        }
    }

    fn handle_shutdown(&mut self, _now: Instant) {
        self.session.handle_shutdown();
        self.closed = true;
    }

    fn status(&self) -> Status {
        Status::of(
            self.aborted,
            self.closed || self.session.phase() == Phase::Closed,
        )
    }

    fn park_at(&self, now: Instant) -> Option<Instant> {
        let after = self.park_after?;
        if self.closed || self.pending.is_some() || !self.session.idle() {
            return None;
        }
        Some(if self.fresh {
            now
        } else {
            self.idle_since + after
        })
    }

    fn release(&mut self) {
        // Abnormal ends (EOF without DISCONNECT, errors) publish the will.
        self.session.release();
        // A delayed will or a session expiry outlives the connection.
        if let Some(d) = self.session.take_deferred() {
            tokio::spawn(self.shared.clone().run_deferred(d));
        }
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
        let peer = "127.0.0.1:1".parse().unwrap();
        let mut conn = MqttConnection::new(shared.clone(), &config, peer, Instant::now());
        let (mut rd, mut wr) = (tokio::io::empty(), tokio::io::sink());
        let shutdown = CancellationToken::new();
        let relief = shared.broker().relief().clone();
        let fut = driver::drive(&mut conn, &mut rd, &mut wr, &shutdown, &relief);
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
            "connection task {task_size} B, drive future {drive} B, MqttConnection {} B, Session {} B, ParkedSession {} B, ParkedConn {} B",
            size_of::<MqttConnection>(),
            size_of::<Session>(),
            size_of::<ParkedSession>(),
            size_of::<ParkedConn>(),
        );
        assert!(size_of::<ParkedConn>() < 512);
        assert!(task_size < 8192);
    }
}
