//! The AMQP 0-9-1 connection state machine, without sockets.
//!
//! Inputs: [`Session::handle_protocol_header`], [`Session::handle_frame`],
//! [`Session::handle_decode_error`], [`Session::handle_outbox`] (deliveries
//! from the engine), [`Session::handle_durable`] (a publish became durable)
//! and [`Session::handle_shutdown`]. Output: bytes accumulated in
//! [`Session::output`], which the connection task writes out. Errors are
//! turned into `channel.close` / `connection.close` here, through
//! [`AmqpError`]'s single mapping from engine errors.

mod basic;
mod deliver;
mod fuzzing;
mod handshake;
mod topology;

pub use fuzzing::drive_for_fuzzing;

use crate::channel::{Channel, ConfirmQueue};
use crate::codec::{DecodeError, Encoder, Frame};
use crate::error::{AmqpError, ReplyCode, Scope};
use amq_protocol::protocol::{AMQPClass, channel, connection};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use switchyard_engine::connections::{ChannelSummary, ConnectionEntry, Listing};
use switchyard_engine::inthash::IntMap;
use switchyard_engine::{Broker, Outbox, OutboxDrain, PermissionKind, Settle, Throttle, Vhost};

/// Limits and defaults offered to clients.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Largest frame we accept and offer (bytes).
    pub frame_max: u32,
    /// Highest channel number offered.
    pub channel_max: u16,
    /// Heartbeat interval offered (seconds, 0 = off).
    pub heartbeat: u16,
    /// Largest message body accepted (bytes).
    pub max_message_size: u64,
    /// Consumers one channel may hold.
    pub max_consumers_per_channel: usize,
    /// Unacknowledged consumer deliveries one channel may hold, whatever
    /// its prefetch: the channel's credit never allows more (0: no cap).
    pub max_unacked_per_channel: u32,
    /// A delivery unacknowledged this long closes its channel (406).
    pub consumer_timeout: Option<std::time::Duration>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            max_message_size: 128 << 20,
            max_consumers_per_channel: 65_536,
            max_unacked_per_channel: 65_536,
            consumer_timeout: Some(std::time::Duration::from_secs(30 * 60)),
        }
    }
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the 8-byte protocol header.
    Header,
    /// Sent `connection.start`, waiting for start-ok.
    StartOk,
    /// Sent `connection.tune`, waiting for tune-ok.
    TuneOk,
    /// Waiting for `connection.open`.
    Open,
    /// Open for business.
    Running,
    /// Sent `connection.close`, waiting for close-ok.
    Closing,
    /// Done: flush output and close the socket.
    Closed,
}

/// The kind of resource a permission is checked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource {
    Queue,
    Exchange,
}

/// One client connection's protocol state.
pub struct Session {
    broker: Arc<Broker>,
    /// The time as the connection driver last said (delivery timestamps
    /// for consumer timeouts); the session never reads the clock itself.
    clock: std::time::Instant,
    config: SessionConfig,
    peer: SocketAddr,
    conn_id: u64,
    phase: Phase,
    vhost: Option<Arc<Vhost>>,
    frame_max: u32,
    channel_max: u16,
    heartbeat: u16,
    channels: IntMap<u16, Channel>,
    outbox: Arc<Outbox>,
    out: BytesMut,
    enc: Encoder,
    /// A delivery's encoded properties (reused between deliveries).
    props: Vec<u8>,
    confirms: ConfirmQueue,
    /// The outbox as drained (buffers reused between drains).
    drain: OutboxDrain,
    /// Client declared `consumer_cancel_notify`.
    cancel_notify: bool,
    /// Client declared `connection.blocked`.
    blocked_notify: bool,
    /// We told the client it is blocked.
    blocked_sent: bool,
    user: String,
    released: bool,
    next_epoch: u64,
    /// A queue this connection published into is full: stop reading until
    /// it drains (TCP backpressure on the publisher).
    throttle: Throttle,
    /// Where it is listed once open, and what it tells the registry.
    pub(crate) registry: Listing,
    /// The client's `connection_name` property, until listed.
    pub(crate) client_name: Option<String>,
    /// Fingerprint of the channels last written to the registry.
    channels_print: u64,
    /// The exchange last published to, whose write permission was checked.
    pub(crate) may_write: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("phase", &self.phase)
            .finish()
    }
}

impl Session {
    /// A session for a client at `peer`, connected at `now`.
    pub fn new(
        broker: Arc<Broker>,
        config: SessionConfig,
        peer: SocketAddr,
        now: std::time::Instant,
    ) -> Self {
        let conn_id = broker.next_connection_id();
        let broker_counters = broker.connections().clone();
        let outbox = Arc::new(Outbox::default());
        outbox.set_owner(conn_id);
        Self {
            broker,
            clock: now,
            // Until tune-ok, only the spec minimum is accepted (as RabbitMQ).
            frame_max: crate::codec::MIN_FRAME_MAX,
            channel_max: config.channel_max,
            heartbeat: config.heartbeat,
            config,
            peer,
            conn_id,
            phase: Phase::Header,
            vhost: None,
            channels: IntMap::default(),
            outbox,
            out: BytesMut::with_capacity(16 * 1024),
            enc: Encoder::default(),
            props: Vec::new(),
            confirms: ConfirmQueue::new(),
            drain: OutboxDrain::default(),
            cancel_notify: false,
            blocked_notify: false,
            blocked_sent: false,
            user: String::new(),
            released: false,
            next_epoch: 0,
            throttle: Throttle::default(),
            registry: Listing::new(&broker_counters, conn_id, peer, "amqp"),
            client_name: None,
            channels_print: 0,
            may_write: None,
        }
    }

    /// The listener's address (names the connection as RabbitMQ does).
    pub fn set_local(&mut self, local: SocketAddr) {
        self.registry.local = Some(local);
    }

    /// Its registry entry: the driver counts its traffic there, and waits
    /// on its kill switch (closed from outside, by the management API).
    pub fn entry(&self) -> &Arc<ConnectionEntry> {
        &self.registry.entry
    }

    /// Closed from outside: `connection.close` 320 CONNECTION_FORCED with
    /// the reason given, as RabbitMQ's management plugin closes it.
    pub fn handle_kill(&mut self) {
        let reason = self
            .registry
            .kill()
            .reason()
            .unwrap_or_else(|| "Closed via management plugin".into());
        tracing::info!(conn = self.conn_id, peer = %self.peer, %reason, "connection closed from outside");
        match self.phase {
            Phase::Closing | Phase::Closed => {}
            Phase::Running | Phase::Open => {
                self.fail(
                    0,
                    AmqpError::connection(ReplyCode::CONNECTION_FORCED, reason),
                );
            }
            _ => {
                self.phase = Phase::Closed;
                self.release();
            }
        }
    }

    /// 403 ACCESS_REFUSED (a channel error, worded as RabbitMQ words it)
    /// unless the user's permission covers `kind` on `resource` (`""`, the
    /// default exchange, is `amq.default` to permissions).
    pub(super) fn permit(
        &self,
        kind: PermissionKind,
        what: Resource,
        resource: &str,
    ) -> Result<(), AmqpError> {
        let Some(vhost) = &self.vhost else {
            return Ok(());
        };
        let name = if resource.is_empty() && what == Resource::Exchange {
            "amq.default"
        } else {
            resource
        };
        if self.broker.permits(&self.user, &vhost.name, kind, name) {
            return Ok(());
        }
        let noun = match what {
            Resource::Queue => "queue",
            Resource::Exchange => "exchange",
        };
        Err(AmqpError::channel(
            ReplyCode::ACCESS_REFUSED,
            format!(
                "access to {noun} '{name}' in vhost '{}' refused for user '{}'",
                vhost.name, self.user
            ),
        ))
    }

    /// Brings the registry's channel summary up to date: a fingerprint of
    /// the channels is compared first, so an unchanged connection costs
    /// no allocation and no lock.
    pub fn sync_registry(&mut self) {
        if !self.registry.is_listed() {
            return;
        }
        let print = self
            .channels
            .iter()
            .fold(self.channels.len() as u64, |acc, (n, ch)| {
                let fields = [
                    u64::from(*n),
                    u64::from(ch.consumer_prefetch),
                    u64::from(ch.credit.prefetch()),
                    u64::from(ch.confirm),
                    u64::from(ch.tx.is_some()),
                    ch.consumers.len() as u64,
                ];
                fields
                    .iter()
                    .fold(acc, |h, f| (h ^ f).wrapping_mul(0x0100_0000_01b3))
            });
        if print == self.channels_print {
            return;
        }
        self.channels_print = print;
        let mut summary: Vec<ChannelSummary> = self
            .channels
            .iter()
            .map(|(n, ch)| ChannelSummary {
                number: *n,
                prefetch_count: ch.consumer_prefetch,
                global_prefetch_count: ch.credit.prefetch(),
                confirm: ch.confirm,
                transactional: ch.tx.is_some(),
                consumer_count: u32::try_from(ch.consumers.len()).unwrap_or(u32::MAX),
            })
            .collect();
        summary.sort_by_key(|c| c.number);
        *self.registry.entry.channels.lock() = summary;
    }

    /// The time is `now` (the driver says so before each handler).
    pub fn set_clock(&mut self, now: std::time::Instant) {
        self.clock = now;
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Negotiated frame-max.
    pub fn frame_max(&self) -> u32 {
        self.frame_max
    }

    /// Negotiated heartbeat in seconds (0 = off).
    pub fn heartbeat(&self) -> u16 {
        self.heartbeat
    }

    /// Whether a queue this connection publishes to is full (clears itself
    /// once the queue drains below its low-water mark), or the store is
    /// behind: stop reading the socket until it clears.
    pub fn throttled(&mut self, now: std::time::Instant) -> bool {
        let consuming = || self.channels.values().any(|ch| !ch.consumers.is_empty());
        self.throttle
            .paused(self.broker.store().as_ref(), consuming, now)
    }

    /// The broker stopped (or resumed) reading this connection because a
    /// queue it publishes to is full or the store is behind. Clients that
    /// support it are told with `connection.blocked` / `unblocked`.
    pub fn handle_pressure(&mut self, pressured: bool) {
        if !self.blocked_notify || self.phase != Phase::Running || pressured == self.blocked_sent {
            return;
        }
        self.blocked_sent = pressured;
        let m = if pressured {
            connection::AMQPMethod::Blocked(connection::Blocked {
                reason: "resource limit: queue or store backlog".into(),
            })
        } else {
            connection::AMQPMethod::Unblocked(connection::Unblocked {})
        };
        self.send(0, AMQPClass::Connection(m));
    }

    /// The outbox the engine delivers into.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Bytes waiting to be written.
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// Handle one decoded frame.
    pub fn handle_frame(&mut self, frame: Frame) {
        let channel = match &frame {
            Frame::Method(c, _) | Frame::Header(c, _) | Frame::Body(c, _) | Frame::Heartbeat(c) => {
                *c
            }
        };
        if let Err(e) = self.dispatch(frame) {
            self.fail(channel, e);
        }
    }

    fn dispatch(&mut self, frame: Frame) -> Result<(), AmqpError> {
        match (self.phase, frame) {
            (Phase::Closed, _) => Ok(()),
            (_, Frame::Heartbeat(0)) => Ok(()),
            (_, Frame::Heartbeat(_)) => Err(AmqpError::connection(
                ReplyCode::COMMAND_INVALID,
                "heartbeat frame on a non-zero channel",
            )),
            (Phase::Closing, Frame::Method(0, m)) => self.closing_method(m),
            (Phase::Closing, _) => Ok(()),
            (_, Frame::Method(0, m)) => self.connection_method(m),
            (Phase::Running, f) => self.channel_frame(f),
            (_, _) => Err(AmqpError::connection(
                ReplyCode::COMMAND_INVALID,
                "channel frame before the connection is open",
            )),
        }
    }

    /// The peer sent bytes the codec rejects: close the connection.
    pub fn handle_decode_error(&mut self, e: DecodeError) {
        let code = match e {
            DecodeError::UnknownMethod { .. } => ReplyCode::NOT_IMPLEMENTED,
            DecodeError::MalformedMethod { .. } | DecodeError::ShortMethod => {
                ReplyCode::SYNTAX_ERROR
            }
            _ => ReplyCode::FRAME_ERROR,
        };
        let mut err = AmqpError::connection(code, e.to_string());
        if let DecodeError::UnknownMethod { class, method }
        | DecodeError::MalformedMethod { class, method } = e
        {
            err = err.at(class, method);
        }
        if matches!(self.phase, Phase::Header | Phase::StartOk | Phase::TuneOk) {
            // Before tuning the client may not parse a close; just hang up.
            self.phase = Phase::Closed;
            self.release();
            return;
        }
        self.fail(0, err);
    }

    /// The broker is shutting down: close politely with 320.
    pub fn handle_shutdown(&mut self) {
        match self.phase {
            Phase::Closing | Phase::Closed => {}
            Phase::Running | Phase::Open => {
                self.fail(
                    0,
                    AmqpError::connection(
                        ReplyCode::CONNECTION_FORCED,
                        "broker forced connection closure with reason 'shutdown'",
                    ),
                );
            }
            _ => {
                self.phase = Phase::Closed;
                self.release();
            }
        }
    }

    /// When the oldest unacknowledged delivery of some channel reaches the
    /// consumer timeout; `None` when nothing is unacknowledged (or there
    /// is no timeout).
    pub fn consumer_deadline(&self) -> Option<std::time::Instant> {
        let timeout = self.config.consumer_timeout?;
        self.channels
            .values()
            .filter(|ch| !ch.closing)
            .filter_map(|ch| ch.unacked.values().next().map(|(_, at)| *at + timeout))
            .min()
    }

    /// Close (406, messages requeued) every channel holding a delivery
    /// unacknowledged for the consumer timeout, as RabbitMQ does.
    pub fn handle_consumer_timeout(&mut self, now: std::time::Instant) {
        let Some(timeout) = self.config.consumer_timeout else {
            return;
        };
        let late: Vec<u16> = self
            .channels
            .iter()
            .filter(|(_, ch)| !ch.closing)
            .filter(|(_, ch)| {
                ch.unacked
                    .values()
                    .next()
                    .is_some_and(|(_, at)| *at + timeout <= now)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            let e = AmqpError::channel(
                ReplyCode::PRECONDITION_FAILED,
                format!(
                    "delivery acknowledgement on channel {id} timed out. Timeout value used: {} ms. \
                     This timeout value can be configured, see consumers doc guide to learn more",
                    timeout.as_millis()
                ),
            );
            self.fail(id, e);
        }
    }

    /// Report an error to the client at the right scope.
    fn fail(&mut self, channel: u16, e: AmqpError) {
        if e.scope == Scope::Channel && channel != 0 && self.channels.contains_key(&channel) {
            tracing::debug!(conn = self.conn_id, channel, code = e.code.0, text = %e.text, "channel error");
            let close = channel::Close {
                reply_code: e.code.0,
                reply_text: e.reply_text().into(),
                class_id: e.class_id,
                method_id: e.method_id,
            };
            self.send(
                channel,
                AMQPClass::Channel(channel::AMQPMethod::Close(close)),
            );
            if let Some(mut ch) = self.channels.remove(&channel) {
                self.release_channel(&mut ch);
                ch.closing = true;
                ch.incoming = None;
                self.channels.insert(channel, ch);
            }
            return;
        }
        tracing::info!(conn = self.conn_id, peer = %self.peer, code = e.code.0, text = %e.text, "closing connection");
        let close = connection::Close {
            reply_code: e.code.0,
            reply_text: e.reply_text().into(),
            class_id: e.class_id,
            method_id: e.method_id,
        };
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(close)),
        );
        self.phase = Phase::Closing;
        self.release();
    }

    fn send(&mut self, channel: u16, m: AMQPClass) {
        self.enc.method(channel, m, &mut self.out);
    }

    fn vhost(&self) -> Result<&Arc<Vhost>, AmqpError> {
        self.vhost
            .as_ref()
            .ok_or_else(|| AmqpError::connection(ReplyCode::COMMAND_INVALID, "no vhost open"))
    }

    fn channel_mut(&mut self, id: u16) -> Result<&mut Channel, AmqpError> {
        self.channels.get_mut(&id).ok_or_else(|| {
            AmqpError::connection(
                ReplyCode::CHANNEL_ERROR,
                format!("expected 'channel.open' on channel {id}"),
            )
        })
    }

    /// Give back everything the channel holds in the engine: consumers are
    /// removed (auto-delete honoured) and unacked messages requeued.
    fn release_channel(&mut self, ch: &mut Channel) {
        for (_, (consumer, queue)) in ch.consumers.drain() {
            if queue.remove_consumer(&consumer)
                && let Some(v) = &self.vhost
            {
                v.auto_delete_queue(&queue);
            }
        }
        let tags: Vec<u64> = ch.unacked.keys().copied().collect();
        ch.settle(&tags, Settle::Requeue);
        ch.tx = None;
        ch.incoming = None;
    }

    /// Release every channel and exclusive queue. Idempotent.
    pub fn release(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        self.registry.unregister();
        let mut channels = std::mem::take(&mut self.channels);
        for ch in channels.values_mut() {
            self.release_channel(ch);
        }
        // Deliveries already in the outbox go back to their queues (no-ack
        // ones were settled when handed over: requeueing them is a no-op).
        self.drain.requeue_all(&self.outbox);
        if let Some(v) = &self.vhost {
            v.drop_connection(self.conn_id);
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
