//! One STOMP client's state machine, without sockets.
//!
//! Inputs: [`Session::handle_frame`], [`Session::handle_decode_error`],
//! [`Session::handle_outbox`] (deliveries from the engine),
//! [`Session::handle_durable`] (a persistent SEND reached disk) and the
//! heart-beat / shutdown events. Output: bytes in [`Session::output`].
//!
//! Every SUBSCRIBE is one engine consumer whose tag is the subscription id.
//! Acknowledgement ids (`ack` / `message-id`) are a per-connection counter;
//! `client` mode acks everything up to an id on that subscription,
//! `client-individual` just the one. RECEIPTs leave in the order of the
//! frames that asked for them, each only once what it covers is durable.

mod connect;
mod errors;
mod send;
mod subscribe;

use crate::codec::{Command, DecodeError, Frame, Version, encode};
use bytes::{Bytes, BytesMut};
pub(crate) use errors::StompError;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use switchyard_engine::connections::{ConnectionEntry, Listing, NewConnection};
use switchyard_engine::{
    Broker, ChannelCredit, Consumer, Durable, Outbox, OutboxDrain, OwedReplies, Queue, Throttle,
    Unsettled, Vhost,
};

/// State shared by all STOMP connections of a broker.
#[derive(Debug)]
pub struct Shared {
    broker: Arc<Broker>,
}

impl Shared {
    /// Shared STOMP state over `broker`.
    pub fn new(broker: Arc<Broker>) -> Arc<Self> {
        Arc::new(Self { broker })
    }

    /// The broker behind every STOMP connection.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }
}

/// Per-connection settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Shortest heart-beat interval the server agrees to, in milliseconds.
    pub min_heartbeat_ms: u64,
    /// Most unacknowledged MESSAGEs per subscription: the prefetch of a
    /// subscription without `prefetch-count` (or with 0), and the most any
    /// `prefetch-count` gets.
    pub max_unacked: u32,
    /// A MESSAGE left unacknowledged this long ends the connection with an
    /// ERROR, its messages requeued (RabbitMQ's `consumer_timeout`).
    pub consumer_timeout: Option<std::time::Duration>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_subscriptions: 1024,
            min_heartbeat_ms: 100,
            max_unacked: 65_536,
            consumer_timeout: Some(std::time::Duration::from_secs(30 * 60)),
        }
    }
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for CONNECT / STOMP.
    Connect,
    /// Connected.
    Connected,
    /// DISCONNECT received or an error found: the RECEIPTs owed (then the
    /// ERROR, if any) are flushed; nothing more is read.
    Draining,
    /// Done: flush output and close the socket.
    Closed,
}

/// SUBSCRIBE `ack` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckMode {
    Auto,
    Client,
    ClientIndividual,
}

/// One SUBSCRIBE.
#[derive(Debug)]
struct Subscription {
    queue: Arc<Queue>,
    consumer: Arc<Consumer>,
    ack: AckMode,
    /// The destination as the client named it.
    destination: String,
    /// Reported as the MESSAGE destination instead of the routed one
    /// (temp queues, where the routed name is private).
    fixed_destination: bool,
    /// Delete the queue when the subscription ends (topic subscriptions).
    delete_queue: bool,
}

type Outcome = Result<Option<Durable>, StompError>;

/// One STOMP client connection.
pub struct Session {
    /// Its place in the connection registry, and its counters.
    registry: Listing,
    /// Over WebSocket (listed as `Web STOMP`).
    web: bool,
    /// The time as the connection driver last said (delivery timestamps
    /// for consumer timeouts); the session never reads the clock itself.
    clock: std::time::Instant,
    shared: Arc<Shared>,
    config: SessionConfig,
    peer: SocketAddr,
    conn_id: u64,
    phase: Phase,
    version: Version,
    vhost: Option<Arc<Vhost>>,
    user: String,
    /// Negotiated (server sends every, server expects within), in ms.
    heartbeat: (u64, u64),
    outbox: Arc<Outbox>,
    credit: Arc<ChannelCredit>,
    subs: HashMap<String, Subscription>,
    /// Deliveries waiting for ACK / NACK, by ack id.
    unacked: BTreeMap<u64, (Unsettled, std::time::Instant)>,
    /// The outbox as drained (buffers reused between drains).
    drain: OutboxDrain,
    next_ack_id: u64,
    /// Open transactions: their SEND / ACK / NACK frames, in order.
    txs: HashMap<String, Vec<Frame>>,
    /// `/temp-queue/<name>` → queue name.
    temp_queues: HashMap<String, String>,
    /// RECEIPTs owed (`None`: an ordering point with no RECEIPT), released
    /// once what they cover is durable.
    receipts: OwedReplies<Option<String>>,
    /// An ERROR waiting for the RECEIPTs owed before it.
    pending_error: Option<Frame>,
    out: BytesMut,
    throttle: Throttle,
    released: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("conn_id", &self.conn_id)
            .finish()
    }
}

impl Session {
    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The time is `now` (the driver says so before each handler).
    pub fn set_clock(&mut self, now: std::time::Instant) {
        self.clock = now;
    }

    /// A session for a client at `peer`, connected at `now`.
    pub fn new(
        shared: Arc<Shared>,
        config: SessionConfig,
        peer: SocketAddr,
        now: std::time::Instant,
    ) -> Self {
        let conn_id = shared.broker.next_connection_id();
        let registry = Listing::new(shared.broker.connections(), conn_id, peer, "stomp");
        let outbox = Arc::new(Outbox::default());
        outbox.set_owner(conn_id);
        Self {
            registry,
            web: false,
            clock: now,
            shared,
            config,
            peer,
            conn_id,
            phase: Phase::Connect,
            version: Version::V1_0,
            vhost: None,
            user: String::new(),
            heartbeat: (0, 0),
            outbox,
            credit: Arc::default(),
            subs: HashMap::new(),
            unacked: BTreeMap::new(),
            drain: OutboxDrain::default(),
            next_ack_id: 0,
            txs: HashMap::new(),
            temp_queues: HashMap::new(),
            receipts: OwedReplies::default(),
            pending_error: None,
            out: BytesMut::new(),
            throttle: Throttle::default(),
            released: false,
        }
    }

    /// Where the client connected (the listener's address), and whether
    /// over WebSocket: names the connection and its protocol as RabbitMQ
    /// lists them.
    pub fn set_endpoint(&mut self, local: SocketAddr, web: bool) {
        self.registry.local = Some(local);
        self.web = web;
    }

    /// Its registry entry: the driver counts its traffic there, and waits
    /// on its kill switch (closed from outside, by the management API).
    pub fn entry(&self) -> &Arc<ConnectionEntry> {
        &self.registry.entry
    }

    /// Closed from outside: an ERROR saying why, then the connection ends.
    pub fn handle_kill(&mut self) {
        let reason = self
            .registry
            .kill()
            .reason()
            .unwrap_or_else(|| "Closed via management plugin".into());
        tracing::info!(peer = %self.peer, %reason, "STOMP connection closed from outside");
        self.receipts.clear();
        if self.phase == Phase::Connected {
            self.error(&StompError::new("Connection closed", reason), None);
        }
        self.phase = Phase::Closed;
        self.release();
    }

    /// Lists the connection once logged in.
    pub(super) fn register(&mut self) {
        let protocol = match (self.web, self.version) {
            (true, _) => "Web STOMP",
            (false, Version::V1_0) => "STOMP 1.0",
            (false, Version::V1_1) => "STOMP 1.1",
            (false, Version::V1_2) => "STOMP 1.2",
        };
        let vhost = self
            .vhost
            .as_ref()
            .map_or_else(String::new, |v| v.name.clone());
        self.registry.register(NewConnection {
            protocol,
            user: self.user.clone(),
            vhost,
            client_id: None,
            timeout: self.heartbeat.1 / 1000,
        });
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The negotiated protocol version (selects header escaping).
    pub fn version(&self) -> Version {
        self.version
    }

    /// Negotiated heart-beats in ms: (server sends at least every, client
    /// must send within); 0 = none.
    pub fn heartbeat(&self) -> (u64, u64) {
        self.heartbeat
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
        let consuming = || !self.subs.is_empty();
        self.throttle
            .paused(self.shared.broker.store().as_ref(), consuming, now)
    }

    fn send(&mut self, frame: &Frame) {
        encode(frame, self.version, &mut self.out);
    }

    /// Handle one decoded frame.
    pub fn handle_frame(&mut self, frame: Frame) {
        let receipt = frame.get("receipt").map(str::to_owned);
        let command = frame.command;
        // A SEND held for COMMIT gets its RECEIPT when COMMIT routes it.
        let held = command == Command::Send && frame.get("transaction").is_some();
        let result = match (self.phase, command) {
            (Phase::Closed | Phase::Draining, _) => return,
            (Phase::Connect, Command::Connect | Command::Stomp) => return self.connect(&frame),
            (Phase::Connect, _) => Err(errors::not_connected()),
            (Phase::Connected, Command::Send) => self.send_frame(frame),
            (Phase::Connected, Command::Subscribe) => self.subscribe(&frame),
            (Phase::Connected, Command::Unsubscribe) => self.unsubscribe(&frame),
            (Phase::Connected, Command::Ack | Command::Nack) => self.ack_frame(frame),
            (Phase::Connected, Command::Begin) => self.begin(&frame),
            (Phase::Connected, Command::Commit) => self.commit(&frame),
            (Phase::Connected, Command::Abort) => self.abort(&frame),
            (Phase::Connected, Command::Disconnect) => {
                self.release();
                self.phase = Phase::Draining;
                Ok(None)
            }
            (Phase::Connected, Command::Connect | Command::Stomp) => Err(StompError::new(
                "already connected",
                "CONNECT on a connected session",
            )),
            (Phase::Connected, c) => Err(errors::bad_command(c.as_str())),
        };
        match result {
            Ok(ticket) => {
                if receipt.is_some() && !held {
                    self.owe(receipt, ticket);
                } else if ticket.is_some() || self.phase == Phase::Draining {
                    // No RECEIPT asked, but later RECEIPTs still wait for it
                    // (and DISCONNECT for everything before it).
                    self.owe(None, ticket);
                }
            }
            Err(e) => self.error(&e, receipt.as_deref()),
        }
    }

    /// Send an ERROR frame and close (STOMP 1.2 "ERROR"). RECEIPTs owed
    /// for frames before the bad one (a persistent SEND still on its way
    /// to disk, say) go out first: the client learns what was accepted.
    pub(crate) fn error(&mut self, e: &StompError, receipt: Option<&str>) {
        if self.phase == Phase::Closed || self.pending_error.is_some() {
            return;
        }
        tracing::info!(peer = %self.peer, message = %e.message, detail = %e.detail, "STOMP error; closing");
        let mut f = Frame::new(Command::Error)
            .header("message", e.message.clone())
            .header("version", errors::SUPPORTED)
            .header("content-type", "text/plain")
            .header("content-length", e.detail.len().to_string());
        if let Some(r) = receipt {
            f = f.header("receipt-id", r);
        }
        f.body = Bytes::copy_from_slice(e.detail.as_bytes());
        self.release();
        self.pending_error = Some(f);
        self.phase = Phase::Draining;
        self.flush_receipts();
    }

    /// When the oldest unacknowledged MESSAGE reaches the consumer timeout
    /// (ack ids grow, so the first is the oldest); `None` when none waits.
    pub fn consumer_deadline(&self) -> Option<std::time::Instant> {
        let timeout = self.config.consumer_timeout?;
        let (_, at) = self.unacked.values().next()?;
        Some(*at + timeout)
    }

    /// A MESSAGE stayed unacknowledged for the consumer timeout: ERROR and
    /// close, the unacknowledged messages requeued (as RabbitMQ closes the
    /// channel under a STOMP connection).
    pub fn handle_consumer_timeout(&mut self, now: std::time::Instant) {
        if self.phase != Phase::Connected || self.consumer_deadline().is_none_or(|d| d > now) {
            return;
        }
        let ms = self.config.consumer_timeout.map_or(0, |t| t.as_millis());
        self.error(&errors::ack_timeout(ms), None);
    }

    /// The store failed: nothing owed can be confirmed any more.
    fn store_failed(&mut self) {
        self.receipts.clear();
        let e = StompError::new("store failed", "the message could not be stored");
        self.error(&e, None);
    }

    /// The peer sent bytes the codec rejects.
    pub fn handle_decode_error(&mut self, e: &DecodeError) {
        let e = match e {
            DecodeError::UnknownCommand(c) => errors::bad_command(c),
            e => StompError::new("malformed frame", e.to_string()),
        };
        self.error(&e, None);
    }

    /// Nothing arrived within the negotiated heart-beat (with tolerance).
    pub fn handle_heartbeat_timeout(&mut self) {
        tracing::info!(peer = %self.peer, "STOMP heart-beat missed; closing");
        self.phase = Phase::Closed;
        self.release();
    }

    /// The broker is shutting down.
    pub fn handle_shutdown(&mut self) {
        self.receipts.clear();
        if self.phase == Phase::Connected {
            let e = StompError::new("shutdown", "the broker is shutting down");
            self.error(&e, None);
        }
        self.phase = Phase::Closed;
        self.release();
    }

    /// Queue a RECEIPT (or, with `None`, just an ordering point).
    fn owe(&mut self, receipt: Option<String>, ticket: Option<Durable>) {
        self.receipts.push(receipt, ticket);
        self.flush_receipts();
    }

    /// Hand the oldest unresolved durability ticket to the connection task.
    pub fn take_ticket(&mut self) -> Option<Durable> {
        self.receipts.take_ticket()
    }

    /// The ticket from [`Session::take_ticket`] resolved (`ok` = durable).
    pub fn handle_durable(&mut self, ok: bool) {
        if self.receipts.resolved(ok).is_err() {
            return self.store_failed();
        }
        self.flush_receipts();
    }

    fn flush_receipts(&mut self) {
        let mut ready = Vec::new();
        let result = self.receipts.ready(|r| ready.extend(r));
        for r in ready {
            self.send(&Frame::new(Command::Receipt).header("receipt-id", r));
        }
        if result.is_err() {
            return self.store_failed();
        }
        if self.phase == Phase::Draining && self.receipts.is_empty() {
            if let Some(f) = self.pending_error.take() {
                self.send(&f);
            }
            self.phase = Phase::Closed;
        }
    }

    /// Give back everything held in the engine: unacked deliveries are
    /// requeued, consumers cancelled, per-subscription queues deleted.
    /// Idempotent.
    pub fn release(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        self.registry.unregister();
        self.txs.clear();
        let ids: Vec<String> = self.subs.keys().cloned().collect();
        for id in ids {
            self.end_subscription(&id, false);
        }
        self.requeue_outbox();
        if let Some(vhost) = &self.vhost {
            vhost.drop_connection(self.conn_id);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests;
