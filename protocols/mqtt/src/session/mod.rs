//! One MQTT 3.1.1 or 5.0 client's state machine, without sockets. It works
//! on MQTT 5 packets; the codec translates for 3.1.1 clients, and the few
//! things 3.1.1 cannot say (reason codes, properties, a server DISCONNECT)
//! are only sent to MQTT 5 clients.
//!
//! Inputs: [`Session::handle_packet`], [`Session::handle_decode_error`],
//! [`Session::handle_outbox`] (deliveries from the engine),
//! [`Session::handle_durable`] (a QoS 1/2 publish reached disk) and
//! [`Session::handle_keepalive_timeout`]. Output: bytes in
//! [`Session::output`]. The session is a queue (`mqtt-session-<client id>`,
//! durable for persistent sessions) bound to `amq.topic` once per
//! subscription, as in LavinMQ and RabbitMQ's MQTT plugin.

mod connect;
mod inbound;
mod outbound;
mod props;

use crate::codec::{DecodeError, Packet, Protocol, encode_owned};
use bytes::BytesMut;
use mqttbytes::QoS;
use mqttbytes::v5::{self, DisconnectReasonCode};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchyard_engine::connections::{ConnectionEntry, Listing, MessageCounters, NewConnection};
use switchyard_engine::exchange::topic::TopicTrie;
use switchyard_engine::inthash::IntMap;
use switchyard_engine::{
    Broker, ChannelCredit, Consumer, Outbox, OwedReplies, Queue, Settle, Settlement, Throttle,
    Unsettled, Vhost,
};
use tokio_util::sync::CancellationToken;

use crate::signal::Signal;
use crate::topic;

/// A connected client, as the takeover registry knows it.
#[derive(Debug)]
struct Client {
    conn_id: u64,
    /// Stop (takeover) and finished (session released), and where the
    /// connection is parked.
    signal: Arc<Signal>,
}

/// The takeover registry's key for (vhost, client id): one allocation per
/// connected client (every idle device has one).
fn client_key((vhost, client_id): &(String, String)) -> Box<str> {
    let mut k = String::with_capacity(vhost.len() + 1 + client_id.len());
    k.push_str(vhost);
    k.push('\0');
    k.push_str(client_id);
    k.into_boxed_str()
}

/// How a parked connection is woken, given its parking key.
struct Unpark(Box<dyn Fn(u64) + Send + Sync>);

impl std::fmt::Debug for Unpark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unpark")
    }
}

/// Protocol state of a persistent session (clean session = 0) that must
/// outlive one connection (MQTT 3.1.1 §4.1). Kept in memory while the
/// broker runs and written through the store (namespace [`STATE_NS`]), so
/// it survives a restart with the session's queue and bindings.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Saved {
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    inbound_qos2: HashSet<u16>,
    /// Outbound QoS 2 packet ids whose PUBREL was sent but not completed.
    pending_pubrel: Vec<u16>,
    /// Packet ids of unacknowledged deliveries, by queue position, so a
    /// redelivery reuses its packet id.
    pkids: HashMap<u64, u16>,
    next_pkid: u16,
    /// A delayed will (MQTT 5) and when it is due, in milliseconds since
    /// the Unix epoch: a restart does not lose it.
    will: Option<(u64, DeferredWill)>,
    /// When the session expires (MQTT 5 session expiry interval), in
    /// milliseconds since the Unix epoch.
    expires: Option<u64>,
}

/// Milliseconds since the Unix epoch, now (wall clock: deadlines stored
/// across restarts).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// From a stored wall-clock deadline to the time left (0 if it passed).
fn left_until(due_ms: u64) -> Duration {
    Duration::from_millis(due_ms.saturating_sub(unix_ms()))
}

/// Subscriptions a session matches deliveries against by scanning; above
/// this many it builds a trie.
const MATCHER_FROM: usize = 16;

/// Store namespace of persistent sessions' protocol state.
const STATE_NS: &str = "mqtt-session";

/// The store key of a session: vhost and client id (MQTT strings cannot
/// hold U+0000, so it separates them unambiguously).
fn state_key(key: &(String, String)) -> String {
    format!("{}\0{}", key.0, key.1)
}

/// State shared by all MQTT connections of a broker.
#[derive(Debug)]
pub struct Shared {
    broker: Arc<Broker>,
    /// Connected clients by [`client_key`], for session takeover.
    clients: Mutex<HashMap<Box<str>, Client>>,
    /// Persistent sessions' protocol state while no connection holds it.
    saved: Mutex<HashMap<(String, String), Saved>>,
    /// Delayed wills and session expiries waiting, by (vhost, client id);
    /// cancelled when the client connects again.
    pending: Mutex<HashMap<(String, String), CancellationToken>>,
    /// Wakes a parked connection (set by the TCP listener, which parks).
    unpark: std::sync::OnceLock<Unpark>,
}

/// A will message ready to publish.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DeferredWill {
    topic: String,
    retain: bool,
    message: switchyard_model::Message,
}

/// What a session leaves to happen after its connection ended (MQTT 5):
/// a delayed will, and the end of a session with an expiry interval. The
/// connection task waits for them ([`Shared::run_deferred`]).
#[derive(Debug)]
pub struct Deferred {
    key: (String, String),
    will: Option<(Duration, DeferredWill)>,
    expiry: Option<Duration>,
    /// Registered in [`Shared`] before the session let go of its client
    /// id, so a reconnect that follows can always cancel it.
    token: CancellationToken,
}

impl Shared {
    /// The broker behind every MQTT connection.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Shared MQTT state over `broker`.
    pub fn new(broker: Arc<Broker>) -> Arc<Self> {
        let mut saved = HashMap::new();
        for (k, v) in broker.take_state(STATE_NS) {
            let Some((vhost, client)) = k.split_once('\0') else {
                continue;
            };
            match postcard::from_bytes::<Saved>(&v) {
                Ok(s) => {
                    saved.insert((vhost.to_owned(), client.to_owned()), s);
                }
                Err(e) => {
                    tracing::warn!(key = %k, error = %e, "stored MQTT session state is corrupt; skipped")
                }
            }
        }
        Arc::new(Self {
            broker,
            clients: Mutex::new(HashMap::new()),
            saved: Mutex::new(saved),
            pending: Mutex::new(HashMap::new()),
            unpark: std::sync::OnceLock::new(),
        })
    }

    /// Keep a persistent session's protocol state, in memory and on disk.
    fn save(&self, key: (String, String), saved: Saved) {
        match postcard::to_allocvec(&saved) {
            Ok(bytes) => self
                .broker
                .put_state(STATE_NS, &state_key(&key), Some(bytes)),
            Err(e) => tracing::warn!(error = %e, "cannot encode MQTT session state"),
        }
        self.saved.lock().insert(key, saved);
    }

    /// Take a session's saved protocol state (the stored copy goes too: the
    /// connection taking it owns it now).
    fn take_saved(&self, key: &(String, String)) -> Option<Saved> {
        let saved = self.saved.lock().remove(key);
        if saved.is_some() {
            self.broker.put_state(STATE_NS, &state_key(key), None);
        }
        saved
    }

    /// Publish a will (and retain it if asked).
    fn publish_will(&self, vhost: &str, will: DeferredWill) {
        let Some(v) = self.broker.vhost(vhost) else {
            return;
        };
        if will.retain {
            let kept = (!will.message.body.is_empty()).then(|| will.message.clone());
            self.broker.retained().put(vhost, &will.topic, kept);
        }
        let _ = v.publish(will.message, false);
    }

    /// End a persistent session whose expiry interval passed: its queue
    /// (with subscriptions and messages) and protocol state go.
    fn expire_session(&self, key: &(String, String)) {
        if self.clients.lock().contains_key(&*client_key(key)) {
            return;
        }
        self.take_saved(key);
        if let Some(v) = self.broker.vhost(&key.0) {
            let del = switchyard_engine::Command::DeleteQueue {
                name: format!("mqtt-session-{}", key.1),
                if_unused: false,
                if_empty: false,
            };
            let _ = v.apply(del, 0);
        }
    }

    /// Re-arm the delayed wills and session expiries stored by sessions
    /// that ended before the broker last stopped, with the time they have
    /// left (none, if it passed while the broker was down). Call once, on
    /// the runtime, after [`Shared::new`].
    pub fn resume_deferred(self: &Arc<Self>) {
        let due: Vec<Deferred> = {
            let saved = self.saved.lock();
            saved
                .iter()
                .filter(|(_, s)| s.will.is_some() || s.expires.is_some())
                .map(|(key, s)| Deferred {
                    key: key.clone(),
                    will: s.will.clone().map(|(due, w)| (left_until(due), w)),
                    expiry: s.expires.map(left_until),
                    token: CancellationToken::new(),
                })
                .collect()
        };
        for mut d in due {
            // Due while the broker was down (a will is never due after its
            // session ends): done now, before any client can connect.
            if d.expiry.is_some_and(|e| e.is_zero()) {
                if let Some((_, will)) = d.will {
                    self.publish_will(&d.key.0, will);
                }
                tracing::info!(vhost = %d.key.0, client_id = %d.key.1, "MQTT session expired while the broker was down");
                self.expire_session(&d.key);
                continue;
            }
            d.token = self.register_pending(&d.key);
            tracing::info!(vhost = %d.key.0, client_id = %d.key.1, "MQTT session's delayed will / expiry re-armed");
            tokio::spawn(self.clone().run_deferred(d));
        }
    }

    /// A stored session's delayed will was published: forget it, so a
    /// restart does not publish it again.
    fn will_published(&self, key: &(String, String)) {
        let saved = self.saved.lock().remove(key);
        if let Some(mut s) = saved {
            s.will = None;
            self.save(key.clone(), s);
        }
    }

    /// Register a deferred action for `key` (replacing an older one).
    fn register_pending(&self, key: &(String, String)) -> CancellationToken {
        let token = CancellationToken::new();
        if let Some(old) = self.pending.lock().insert(key.clone(), token.clone()) {
            old.cancel();
        }
        token
    }

    /// Cancel what a previous connection of `key` left pending (its client
    /// is back).
    fn cancel_pending(&self, key: &(String, String)) {
        if let Some(t) = self.pending.lock().remove(key) {
            t.cancel();
        }
    }

    /// Carry out `d` when its time comes, unless the client reconnects
    /// first. Run it on its own task.
    pub async fn run_deferred(self: Arc<Self>, d: Deferred) {
        let token = d.token.clone();
        let started = tokio::time::Instant::now();
        if let Some((after, will)) = d.will {
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep_until(started + after) => {}
            }
            self.publish_will(&d.key.0, will);
            self.will_published(&d.key);
        }
        if let Some(after) = d.expiry {
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep_until(started + after) => {}
            }
            self.expire_session(&d.key);
        }
        let mut pending = self.pending.lock();
        // Done: forget it, unless a newer entry replaced it meanwhile.
        if pending.get(&d.key).is_some_and(|t| !t.is_cancelled()) {
            pending.remove(&d.key);
        }
    }

    /// Sets how parked connections are woken (once; later calls are
    /// ignored).
    pub fn set_unpark(&self, unpark: Box<dyn Fn(u64) + Send + Sync>) {
        let _ = self.unpark.set(Unpark(unpark));
    }

    /// Ask the connection behind `signal` to end, waking it if parked.
    fn stop_client(&self, signal: &Signal) {
        signal.stop();
        if let (Some(key), Some(unpark)) = (signal.parked(), self.unpark.get()) {
            (unpark.0)(key);
        }
    }

    /// Before a CONNECT for `client_id` (in the vhost its username selects)
    /// is handled: ask a connection holding that id to end, and return its
    /// signal, finished once it has released its session, which the caller
    /// awaits so the new connection sees the released state.
    pub fn take_over(&self, connect: &v5::Connect) -> Option<Arc<Signal>> {
        let vhost = connect
            .login
            .as_ref()
            .and_then(|l| l.username.split_once(':'))
            .map_or_else(
                || switchyard_engine::DEFAULT_VHOST.to_owned(),
                |(v, _)| v.to_owned(),
            );
        let clients = self.clients.lock();
        let old = clients.get(&*client_key(&(vhost, connect.client_id.clone())))?;
        self.stop_client(&old.signal);
        Some(old.signal.clone())
    }
}

/// Per-connection limits.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Unacknowledged QoS 1/2 deliveries in flight to the client.
    pub max_inflight: u16,
    /// Largest packet accepted (told to MQTT 5 clients in CONNACK).
    pub max_packet_size: usize,
    /// Longest keep-alive accepted, in seconds (0: any, including none).
    /// MQTT 5 clients asking for more, or for none, are given this one
    /// (Server Keep Alive); 3.1.1 clients are refused.
    pub max_keep_alive: u16,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_inflight: 64,
            max_packet_size: 16 << 20,
            max_keep_alive: 0,
        }
    }
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for CONNECT.
    Connect,
    /// Connected.
    Connected,
    /// Done: flush output and close the socket.
    Closed,
}

/// Where an outbound QoS 1/2 message is in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Puback,
    Pubrec,
    Pubcomp,
}

/// One subscription's options (MQTT 5 subscription options; 3.1.1 clients
/// only set the QoS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SubOptions {
    qos: QoS,
    /// Not sent messages this client published itself.
    no_local: bool,
    /// Retain flag of deliveries as published (else 0).
    retain_as_published: bool,
    /// Subscription identifier echoed in matching PUBLISHes.
    id: Option<usize>,
}

/// An outbound QoS 1/2 PUBLISH not yet acknowledged.
#[derive(Debug)]
struct InFlight {
    /// The delivery to settle (from the session queue or a shared one);
    /// `None` for retained messages sent directly.
    target: Option<Unsettled>,
    stage: Stage,
}

/// A shared subscription (`$share/<group>/<filter>`): a consumer of the
/// group's queue, which all members consume in turn.
#[derive(Debug)]
struct SharedSub {
    queue: Arc<Queue>,
    consumer: Arc<Consumer>,
    options: SubOptions,
}

/// One MQTT client connection.
pub struct Session {
    shared: Arc<Shared>,
    config: SessionConfig,
    peer: SocketAddr,
    conn_id: u64,
    phase: Phase,
    client_id: String,
    username: String,
    keep_alive: u16,
    /// The client's protocol level (from CONNECT).
    protocol: Protocol,
    /// Boxed, like the other rarely set fields below: a session parked
    /// whole should be small.
    will: Option<Box<v5::LastWill>>,
    vhost: Option<Arc<Vhost>>,
    queue: Option<Arc<Queue>>,
    consumer: Option<Arc<Consumer>>,
    outbox: Arc<Outbox>,
    credit: Arc<ChannelCredit>,
    /// Filter → its options (granted QoS and MQTT 5 options).
    subs: HashMap<String, SubOptions>,
    /// Shared subscriptions by their full `$share/…` filter.
    shared_subs: HashMap<String, SharedSub>,
    /// Inbound topic aliases (MQTT 5).
    aliases: HashMap<u16, String>,
    /// Outbound topic aliases: topic → alias, up to the client's Topic
    /// Alias Maximum (MQTT 5; empty for a connection that resumed).
    out_aliases: HashMap<String, u16>,
    /// The client's Topic Alias Maximum (0: no outbound aliases).
    out_alias_max: u16,
    /// The client accepts reason strings on any packet (MQTT 5 Request
    /// Problem Information; CONNACK and DISCONNECT always carry them).
    problem_info: bool,
    /// The CONNECT was MQTT 3.1 (read as 3.1.1; answered as 3.1).
    mqtt31: bool,
    /// Largest packet the client accepts (MQTT 5 CONNECT property).
    client_max_packet: usize,
    /// Binding keys of `subs`, to find the QoS of a delivery, once there
    /// are more than [`MATCHER_FROM`] (fewer are scanned: a trie costs more
    /// memory than an idle device's one or two subscriptions are worth).
    matcher: Option<Box<TopicTrie<String>>>,
    next_pkid: u16,
    inflight: IntMap<u16, InFlight>,
    /// Inbound QoS 2 packet ids awaiting PUBREL (routed once each).
    inbound_qos2: HashSet<u16>,
    /// The ids of `inbound_qos2` a previous connection of the session
    /// received, sorted: their PUBLISH used that connection's Receive
    /// Maximum, not this one's, until the client sends it again. Almost
    /// always empty (and then unallocated).
    carried_qos2: Vec<u16>,
    /// PUBACKs / PUBRECs owed, released once their publish is durable.
    acks: OwedReplies<Packet>,
    /// The PUBACKs in `acks`: QoS 1 publishes still unacknowledged, within
    /// the Receive Maximum the client was given.
    owed_pubacks: u16,
    out: BytesMut,
    signal: Arc<Signal>,
    /// Clean session = 0: protocol state is saved on release.
    persistent: bool,
    /// The client's receive maximum (MQTT 5; 65535 otherwise).
    receive_max: u16,
    /// MQTT 5 session expiry interval in seconds (`u32::MAX`: never).
    session_expiry: u32,
    /// A will waiting for its delay (MQTT 5).
    deferred_will: Option<Box<(Duration, DeferredWill)>>,
    /// What outlives the connection, once released.
    deferred: Option<Box<Deferred>>,
    /// Packet ids to reuse for redeliveries, restored from a saved session.
    saved_pkids: HashMap<u64, u16>,
    throttle: Throttle,
    released: bool,
    /// Moved into a [`ParkedSession`]: dropping this shell releases nothing.
    parked: bool,
    /// Its place in the connection registry, and its counters (moved
    /// into the [`ParkedSession`] when parked).
    registry: Option<Box<Listing>>,
    /// Over WebSocket (listed as `Web MQTT`).
    web: bool,
}

/// What an idle session keeps while its connection is parked outside the
/// runtime (see `switchyard_listener::park`): only what is not at its
/// initial value in an idle session, compactly. [`Session::parkable`] says
/// when everything else is.
#[derive(Debug)]
pub struct ParkedSession {
    peer: SocketAddr,
    conn_id: u64,
    client_id: Box<str>,
    username: Box<str>,
    will: Option<Box<v5::LastWill>>,
    vhost: Option<Arc<Vhost>>,
    signal: Arc<Signal>,
    aliases: Box<[(u16, String)]>,
    client_max_packet: usize,
    out_alias_max: u16,
    problem_info: bool,
    keep_alive: u16,
    next_pkid: u16,
    receive_max: u16,
    protocol: Protocol,
    registry: Box<Listing>,
    web: bool,
}

impl ParkedSession {
    /// The connection's signal (takeover, parking key).
    pub fn signal(&self) -> &Arc<Signal> {
        &self.signal
    }

    /// The client identifier.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl Session {
    /// A session for a client at `peer`.
    pub fn new(shared: Arc<Shared>, config: SessionConfig, peer: SocketAddr) -> Self {
        let conn_id = shared.broker.next_connection_id();
        let registry = Box::new(Listing::new(
            shared.broker.connections(),
            conn_id,
            peer,
            "mqtt",
        ));
        Self::blank(shared, config, peer, conn_id, Arc::default(), registry)
    }

    fn blank(
        shared: Arc<Shared>,
        config: SessionConfig,
        peer: SocketAddr,
        conn_id: u64,
        signal: Arc<Signal>,
        registry: Box<Listing>,
    ) -> Self {
        let outbox = Arc::new(Outbox::default());
        outbox.set_owner(conn_id);
        Self {
            registry: Some(registry),
            web: false,
            shared,
            config,
            peer,
            conn_id,
            phase: Phase::Connect,
            client_id: String::new(),
            username: String::new(),
            keep_alive: 0,
            protocol: Protocol::V4,
            will: None,
            vhost: None,
            queue: None,
            consumer: None,
            outbox,
            credit: Arc::default(),
            subs: HashMap::new(),
            shared_subs: HashMap::new(),
            aliases: HashMap::new(),
            out_aliases: HashMap::new(),
            out_alias_max: 0,
            problem_info: true,
            mqtt31: false,
            client_max_packet: usize::MAX,
            matcher: None,
            next_pkid: 0,
            inflight: IntMap::default(),
            inbound_qos2: HashSet::new(),
            carried_qos2: Vec::new(),
            acks: OwedReplies::default(),
            owed_pubacks: 0,
            out: BytesMut::new(),
            signal,
            persistent: false,
            receive_max: u16::MAX,
            session_expiry: 0,
            deferred_will: None,
            deferred: None,
            saved_pkids: HashMap::new(),
            throttle: Throttle::default(),
            released: false,
            parked: false,
        }
    }

    /// Whether the session waits on nothing but its client and its outbox:
    /// connected, no reply owed or unwritten, no delivery waiting. Such a
    /// session can wait without a task while its client is silent (parked
    /// whole, its outbox waking it; or [`park`](Self::park)ed compactly if
    /// also [`parkable`](Self::parkable)).
    pub fn idle(&self) -> bool {
        self.phase == Phase::Connected
            && !self.released
            && self.acks.is_empty()
            && self.out.is_empty()
            && self.deferred_will.is_none()
            && self.deferred.is_none()
            && !self.outbox.has_events()
    }

    /// Whether the session is [`idle`](Self::idle) and holds nothing but its
    /// connection: nothing subscribed (no queue) or in flight. Such a
    /// session can be [`park`](Self::park)ed as a [`ParkedSession`].
    pub fn parkable(&self) -> bool {
        self.idle()
            && self.queue.is_none()
            && self.consumer.is_none()
            && self.subs.is_empty()
            && self.shared_subs.is_empty()
            && self.inflight.is_empty()
            && self.inbound_qos2.is_empty()
            && self.carried_qos2.is_empty()
            && self.saved_pkids.is_empty()
    }

    /// Records subscription `filter` in the matcher (call after adding it to
    /// `subs`).
    fn match_filter(&mut self, filter: &str) {
        match &mut self.matcher {
            Some(m) => {
                m.insert(&topic::filter_to_binding_key(filter), filter.to_owned());
            }
            None if self.subs.len() > MATCHER_FROM => {
                let mut m = TopicTrie::default();
                for f in self.subs.keys() {
                    m.insert(&topic::filter_to_binding_key(f), f.clone());
                }
                self.matcher = Some(Box::new(m));
            }
            None => {}
        }
    }

    /// Forgets subscription `filter` in the matcher.
    fn unmatch_filter(&mut self, filter: &str) {
        if let Some(m) = &mut self.matcher {
            m.remove(&topic::filter_to_binding_key(filter), &filter.to_owned());
        }
    }

    /// Gives back the buffers an [`idle`](Self::idle) session no longer
    /// needs (a burst can leave the output buffer megabytes large), before
    /// it is parked whole.
    pub fn shrink(&mut self) {
        debug_assert!(self.out.is_empty() && self.acks.is_empty());
        self.out = BytesMut::new();
        self.acks = OwedReplies::default();
        self.inflight.shrink_to_fit();
    }

    /// Moves a [`parkable`](Self::parkable) session's state out; what is
    /// left releases nothing when dropped.
    pub fn park(&mut self) -> ParkedSession {
        // A persistent session has its queue from CONNECT on: never
        // parkable, so its expiry need not be kept.
        debug_assert!(self.parkable() && !self.persistent);
        self.parked = true;
        let aliases = std::mem::take(&mut self.aliases);
        ParkedSession {
            peer: self.peer,
            conn_id: self.conn_id,
            client_id: std::mem::take(&mut self.client_id).into_boxed_str(),
            username: std::mem::take(&mut self.username).into_boxed_str(),
            will: self.will.take(),
            vhost: self.vhost.take(),
            signal: self.signal.clone(),
            aliases: aliases.into_iter().collect(),
            out_alias_max: self.out_alias_max,
            problem_info: self.problem_info,
            client_max_packet: self.client_max_packet,
            keep_alive: self.keep_alive,
            next_pkid: self.next_pkid,
            receive_max: self.receive_max,
            protocol: self.protocol,
            registry: self.registry.take().expect("listed until parked"),
            web: self.web,
        }
    }

    /// The session again, as it was when parked.
    pub fn unpark(shared: Arc<Shared>, config: SessionConfig, p: ParkedSession) -> Self {
        let mut s = Self::blank(shared, config, p.peer, p.conn_id, p.signal, p.registry);
        s.web = p.web;
        s.phase = Phase::Connected;
        s.client_id = p.client_id.into();
        s.username = p.username.into();
        s.will = p.will;
        s.vhost = p.vhost;
        s.aliases = p.aliases.into_vec().into_iter().collect();
        // The client still knows the aliases sent before: any alias is
        // sent with its topic again first, which replaces its mapping.
        s.out_alias_max = p.out_alias_max;
        s.problem_info = p.problem_info;
        s.client_max_packet = p.client_max_packet;
        s.keep_alive = p.keep_alive;
        s.next_pkid = p.next_pkid;
        s.receive_max = p.receive_max;
        // The session's credit is new: bound it as CONNECT did.
        s.credit.set_prefetch(s.window());
        s.protocol = p.protocol;
        s
    }

    /// Where the client connected (the listener's address), and whether
    /// over WebSocket: names the connection and its protocol as RabbitMQ
    /// lists them.
    pub fn set_endpoint(&mut self, local: SocketAddr, web: bool) {
        self.listing_mut().local = Some(local);
        self.web = web;
    }

    /// Its registry entry: the driver counts its traffic there.
    pub fn entry(&self) -> &Arc<ConnectionEntry> {
        &self.listing().entry
    }

    fn listing(&self) -> &Listing {
        self.registry.as_deref().expect("listed until parked")
    }

    fn listing_mut(&mut self) -> &mut Listing {
        self.registry.as_deref_mut().expect("listed until parked")
    }

    /// The adapter's message counters.
    pub(super) fn counters(&self) -> &MessageCounters {
        &self.listing().counters
    }

    /// Lists the connection once CONNACK accepted it; a kill from outside
    /// stops it as a takeover would (waking it if parked).
    pub(super) fn register(&mut self) {
        let protocol = if self.web {
            "Web MQTT"
        } else {
            match self.protocol {
                Protocol::V5 => "MQTT 5.0",
                Protocol::V4 if self.mqtt31 => "MQTT 3.1",
                Protocol::V4 => "MQTT 3.1.1",
            }
        };
        let vhost = self
            .vhost
            .as_ref()
            .map_or_else(String::new, |v| v.name.clone());
        let login = NewConnection {
            protocol,
            user: self.username.clone(),
            vhost,
            client_id: Some(self.client_id.clone()),
            timeout: u64::from(self.keep_alive),
        };
        self.listing_mut().register(login);
        let (shared, signal) = (Arc::downgrade(&self.shared), self.signal.clone());
        self.listing().kill().set_hook(Some(Box::new(move || {
            if let Some(shared) = shared.upgrade() {
                shared.stop_client(&signal);
            }
        })));
    }

    /// Says the CONNECT about to be handled is MQTT 3.1 (the decoder
    /// knows: [`crate::codec::Decoder::is_mqtt31`]).
    pub fn set_mqtt31(&mut self, yes: bool) {
        self.mqtt31 = yes;
    }

    /// The client identifier (empty before CONNECT).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Keep-alive the client asked for, in seconds (0 = none).
    pub fn keep_alive(&self) -> u16 {
        self.keep_alive
    }

    /// Stopped when another connection takes over this client id.
    pub fn signal(&self) -> &Arc<Signal> {
        &self.signal
    }

    /// The broker is shutting down or another connection took the client
    /// id: the connection ends without DISCONNECT, so the will is
    /// published (MQTT-3.1.2-8).
    pub fn handle_stop(&mut self) {
        if let Some(reason) = self.listing().kill().reason() {
            // Closed from outside (management): MQTT 5 clients are told
            // with DISCONNECT 0x98.
            return self.close(DisconnectReasonCode::AdministrativeAction, reason);
        }
        self.close(
            DisconnectReasonCode::SessionTakenOver,
            "connection taken over".into(),
        );
    }

    /// The outbox the engine delivers into.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Bytes waiting to be written.
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// Whether a queue this client publishes to is full, or the store is
    /// behind: stop reading the socket until it clears.
    pub fn throttled(&mut self, now: std::time::Instant) -> bool {
        let consuming = || !self.subs.is_empty() || !self.shared_subs.is_empty();
        self.throttle
            .paused(self.shared.broker.store().as_ref(), consuming, now)
    }

    fn send(&mut self, p: Packet) {
        encode_owned(p, self.protocol, &mut self.out);
    }

    /// The client's protocol level.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// What must happen after the connection ended, prepared by
    /// [`Session::release`]: a delayed will, a session expiry. `None` for
    /// 3.1.1 and for MQTT 5 sessions that end with the connection or never
    /// expire. The connection task runs it ([`Shared::run_deferred`]).
    pub fn take_deferred(&mut self) -> Option<Deferred> {
        self.deferred.take().map(|d| *d)
    }

    /// Build and register what outlives the connection (in `release`,
    /// before the session lets go of its client id).
    fn prepare_deferred(&mut self, vhost: &str) {
        let will = self.deferred_will.take().map(|w| *w);
        let expiry = (self.persistent && self.session_expiry != u32::MAX)
            .then(|| Duration::from_secs(u64::from(self.session_expiry)));
        if will.is_none() && expiry.is_none() {
            return;
        }
        let key = (vhost.to_owned(), self.client_id.clone());
        let token = self.shared.register_pending(&key);
        self.deferred = Some(Box::new(Deferred {
            key,
            will,
            expiry,
            token,
        }));
    }

    /// Handle one decoded packet.
    pub fn handle_packet(&mut self, p: Packet) {
        match (self.phase, p) {
            (Phase::Closed, _) => {}
            (Phase::Connect, Packet::Connect(c)) => self.connect(c),
            (Phase::Connect, other) => self.close(
                DisconnectReasonCode::ProtocolError,
                format!("first packet {other:?} is not CONNECT"),
            ),
            (Phase::Connected, Packet::Publish(p)) => self.publish(p),
            (Phase::Connected, Packet::PubAck(a)) => self.settle(a.pkid, Stage::Puback),
            (Phase::Connected, Packet::PubRec(r)) => self.pubrec(r.pkid),
            (Phase::Connected, Packet::PubRel(r)) => self.pubrel(r.pkid),
            (Phase::Connected, Packet::PubComp(c)) => self.settle(c.pkid, Stage::Pubcomp),
            (Phase::Connected, Packet::Subscribe(s)) => self.subscribe(s),
            (Phase::Connected, Packet::Unsubscribe(u)) => self.unsubscribe(u),
            (Phase::Connected, Packet::PingReq) => self.send(Packet::PingResp),
            (Phase::Connected, Packet::Disconnect(d)) => {
                // A clean DISCONNECT discards the will (3.1.2.5), unless an
                // MQTT 5 client asks for it (reason 0x04).
                if d.reason_code != DisconnectReasonCode::DisconnectWithWillMessage {
                    self.will = None;
                }
                // MQTT 5 may end the session with the connection.
                match d.properties.and_then(|p| p.session_expiry_interval) {
                    Some(0) => self.persistent = false,
                    Some(e) => self.session_expiry = e,
                    None => {}
                }
                self.phase = Phase::Closed;
                self.release();
            }
            (Phase::Connected, other) => self.close(
                DisconnectReasonCode::ProtocolError,
                format!("unexpected packet {other:?}"),
            ),
        }
    }

    /// The peer sent bytes the codec rejects. An unsupported protocol level
    /// gets CONNACK 0x01 (in 3.1.1 form: the level is not one we speak); an
    /// MQTT 5 client gets a DISCONNECT saying why.
    pub fn handle_decode_error(&mut self, e: DecodeError) {
        if self.phase == Phase::Connect && matches!(e, DecodeError::UnsupportedLevel(_)) {
            let ack = v5::ConnAck::new(v5::ConnectReturnCode::UnsupportedProtocolVersion, false);
            self.send(Packet::ConnAck(ack));
        }
        let reason = match e {
            DecodeError::TooLarge { .. } => DisconnectReasonCode::PacketTooLarge,
            DecodeError::Auth | DecodeError::Protocol(_) => DisconnectReasonCode::ProtocolError,
            _ => DisconnectReasonCode::MalformedPacket,
        };
        self.close(reason, e.to_string());
    }

    /// No packet within 1.5 × keep-alive: the client is gone (will sent).
    pub fn handle_keepalive_timeout(&mut self) {
        self.close(
            DisconnectReasonCode::KeepAliveTimeout,
            "keep-alive timeout".into(),
        );
    }

    /// The broker is shutting down: MQTT 5 clients are told so; 3.1.1 ones
    /// just see the socket close.
    pub fn handle_shutdown(&mut self) {
        self.will = None;
        self.disconnect(
            DisconnectReasonCode::ServerShuttingDown,
            "server shutting down",
        );
        self.phase = Phase::Closed;
        self.release();
    }

    /// Tell an MQTT 5 client why the server ends the connection.
    fn disconnect(&mut self, reason: DisconnectReasonCode, why: &str) {
        if self.phase == Phase::Connected && self.protocol == Protocol::V5 {
            let properties = self
                .reason_string(why, true)
                .map(|r| v5::DisconnectProperties {
                    session_expiry_interval: None,
                    reason_string: Some(r),
                    user_properties: Vec::new(),
                    server_reference: None,
                });
            let d = v5::Disconnect {
                reason_code: reason,
                properties,
            };
            self.send(Packet::Disconnect(d));
        }
    }

    /// `why` as an MQTT 5 Reason String, if this packet may carry one:
    /// `always` for CONNACK and DISCONNECT, else only if the client did not
    /// turn problem information off (MQTT-3.1.2-29). Cut to stay well within
    /// the client's maximum packet size.
    fn reason_string(&self, why: &str, always: bool) -> Option<String> {
        if self.protocol != Protocol::V5 || !(always || self.problem_info) || why.is_empty() {
            return None;
        }
        let room = self.client_max_packet.saturating_sub(32).min(256);
        let mut end = why.len().min(room);
        while !why.is_char_boundary(end) {
            end -= 1;
        }
        (end > 0).then(|| why[..end].to_owned())
    }

    /// The Reason String of a PUBACK / PUBREC with reason code `code`: an
    /// error's (0x80 and above) says why, unless the client turned problem
    /// information off (MQTT-3.1.2-29). Anything else — 0x10 "no matching
    /// subscribers" included — has no properties at all, so the ack is
    /// packet id and reason code only, as Mosquitto sends it: some clients
    /// take a longer ack for malformed.
    fn ack_reason_string(&self, code: u8, why: &str) -> Option<String> {
        if code < 0x80 {
            return None;
        }
        self.reason_string(why, false)
    }

    /// End the connection abnormally: the will is published.
    fn close(&mut self, reason: DisconnectReasonCode, why: String) {
        if self.phase != Phase::Closed {
            tracing::info!(peer = %self.peer, client_id = %self.client_id, %why, "closing MQTT connection");
        }
        self.disconnect(reason, &why);
        self.phase = Phase::Closed;
        self.release();
    }

    /// Give back everything held in the engine. Idempotent.
    pub fn release(&mut self) {
        if self.parked {
            return;
        }
        let listing = self.listing_mut();
        listing.kill().set_hook(None);
        listing.unregister();
        if self.released || self.vhost.is_none() {
            self.released = true;
            self.signal.finish();
            return;
        }
        self.released = true;
        self.phase = Phase::Closed;
        let vhost = self.vhost.clone().expect("checked above");
        if let Some(will) = self.will.take() {
            self.publish_will(&vhost, *will);
        }
        let now = unix_ms();
        let after_ms =
            |d: Duration| now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut saved = Saved {
            inbound_qos2: std::mem::take(&mut self.inbound_qos2),
            next_pkid: self.next_pkid,
            will: self
                .deferred_will
                .as_ref()
                .map(|b| (after_ms(b.0), b.1.clone())),
            expires: (self.session_expiry != u32::MAX)
                .then(|| after_ms(Duration::from_secs(u64::from(self.session_expiry)))),
            ..Saved::default()
        };
        if let (Some(q), Some(c)) = (self.queue.as_ref(), self.consumer.take()) {
            q.remove_consumer(&c);
        }
        let mut emptied = Vec::new();
        for (_, s) in self.shared_subs.drain() {
            if s.queue.remove_consumer(&s.consumer) {
                emptied.push(s.queue);
            }
        }
        // Deliveries the client received (PUBREC came back) are settled,
        // the others go back to where they came from.
        let mut received = Settlement::default();
        let mut requeue = Settlement::default();
        for (pkid, f) in self.inflight.drain() {
            if f.stage == Stage::Pubcomp {
                // PUBREC came back: the client owns the message; only
                // the PUBREL/PUBCOMP exchange remains (resumed later).
                saved.pending_pubrel.push(pkid);
            }
            let Some(t) = f.target else { continue };
            if f.stage == Stage::Pubcomp {
                received.add(t);
            } else {
                // Packet ids are kept for the session queue only: a shared
                // queue's positions mean nothing to the next connection.
                if self
                    .queue
                    .as_ref()
                    .is_some_and(|q| Arc::ptr_eq(q, &t.queue))
                {
                    saved.pkids.insert(t.seq, pkid);
                }
                requeue.add(t);
            }
        }
        received.apply(Settle::Ack);
        requeue.apply(Settle::Requeue);
        self.requeue_outbox();
        // A shared subscription's queue goes with its last member.
        for q in emptied {
            vhost.auto_delete_queue(&q);
        }
        if self.persistent {
            self.shared
                .save((vhost.name.clone(), self.client_id.clone()), saved);
        } else if let Some(q) = self.queue.as_ref().filter(|q| {
            q.name()
                .strip_prefix("mqtt-session-")
                .is_some_and(|id| id == self.client_id)
        }) {
            // A session with expiry 0 that has the durable queue — resumed
            // by a CONNECT with expiry 0, or ended by a DISCONNECT with
            // expiry 0 (3.14.2.2.2) — ends with the connection: its queue
            // and any stored state go.
            let del = switchyard_engine::Command::DeleteQueue {
                name: q.name().to_owned(),
                if_unused: false,
                if_empty: false,
            };
            let _ = vhost.apply(del, self.conn_id);
            self.shared
                .take_saved(&(vhost.name.clone(), self.client_id.clone()));
        }
        vhost.drop_connection(self.conn_id);
        self.prepare_deferred(&vhost.name);
        // Only now, with the session state saved, does the client id stop
        // naming this connection: a reconnect that comes meanwhile finds it
        // here, waits for `finish`, and so resumes what was saved (it found
        // nothing to wait for and nothing saved before).
        {
            let mut clients = self.shared.clients.lock();
            let key = client_key(&(vhost.name.clone(), self.client_id.clone()));
            if clients.get(&key).is_some_and(|c| c.conn_id == self.conn_id) {
                clients.remove(&key);
            }
        }
        self.signal.finish();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.release();
    }
}

/// MQTT QoS as a number.
fn qos_num(q: QoS) -> u8 {
    q as u8
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_v5;
