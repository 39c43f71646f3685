//! Queues: ordered messages, their unacked set, and fair dispatch to
//! consumers with credit.
//!
//! A queue owns its messages; consumers only hold positions (`seq`). Ready
//! messages are kept sorted by position so a requeued message goes back to
//! where it was, preserving publish order. Persistent messages of durable
//! queues are written through the store when enqueued and deleted when
//! settled; all store calls happen under the queue lock so the store sees a
//! message's put before its delete.

use crate::consumer::{Consumer, Delivery, OutboxEvent};
use crate::error::{EngineError, Result};
use crate::inthash::IntMap;
use crate::settle::Settle;
use crate::store::{Store, StoreOp};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use switchyard_model::{FieldTable, FieldValue, Message};
use tokio::sync::oneshot;

/// The declared shape of a queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    /// Name within the vhost.
    pub name: String,
    /// Survives restarts (and its persistent messages with it).
    pub durable: bool,
    /// Owned by one connection, deleted with it.
    pub exclusive_owner: Option<u64>,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
}

#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    message: Arc<Message>,
    redelivered: bool,
    persisted: bool,
    /// When it expires (per-message `expiration`, or the queue's
    /// `x-message-ttl`, whichever is sooner).
    expires_at: Option<Instant>,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// When a message stored now expires: after its own `expiration` (AMQP's
/// milliseconds as text) or `ttl_ms`, whichever is sooner; `None` if it
/// has neither.
pub(crate) fn expires_at(message: &Message, ttl_ms: Option<u64>) -> Option<Instant> {
    let own = message
        .properties
        .expiration
        .as_deref()
        .and_then(|e| e.trim().parse::<u64>().ok());
    let ttl = match (own, ttl_ms) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Instant::now().checked_add(Duration::from_millis(ttl))
}

/// Ready messages in position order, with their byte total.
#[derive(Debug, Default)]
struct Ready {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl Ready {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn push_back(&mut self, e: Entry) {
        self.bytes += e.message.size_hint();
        self.entries.push_back(e);
    }

    fn pop_front(&mut self) -> Option<Entry> {
        let e = self.entries.pop_front()?;
        self.bytes -= e.message.size_hint();
        Some(e)
    }

    /// Insert at the position its `seq` belongs to.
    fn insert_sorted(&mut self, e: Entry) {
        self.bytes += e.message.size_hint();
        let pos = self.entries.partition_point(|r| r.seq < e.seq);
        self.entries.insert(pos, e);
    }

    fn take_all(&mut self) -> VecDeque<Entry> {
        self.bytes = 0;
        std::mem::take(&mut self.entries)
    }
}

#[derive(Debug, Default)]
struct State {
    ready: Ready,
    unacked: IntMap<u64, Entry>,
    next_seq: u64,
    consumers: Vec<Arc<Consumer>>,
    /// Round-robin cursor into `consumers`.
    cursor: usize,
    had_consumer: bool,
    deleted: bool,
}

/// A message taken by `basic.get`.
#[derive(Debug)]
pub struct Got {
    /// Its position (settle with it unless taken with no-ack).
    pub seq: u64,
    /// The message.
    pub message: Arc<Message>,
    /// Delivered before.
    pub redelivered: bool,
    /// Ready messages left behind it.
    pub remaining: u32,
}

/// A queue in a vhost.
pub struct Queue {
    /// Owning vhost.
    pub vhost: String,
    /// Declared shape.
    pub spec: QueueSpec,
    /// Store id (keys its messages on disk).
    pub id: u64,
    store: Arc<dyn Store>,
    state: Mutex<State>,
    /// Ready bytes are above the high-water mark: publishers should pause.
    full: AtomicBool,
}

/// Ready bytes above which a queue asks publishers to pause.
pub const QUEUE_HIGH_WATER_BYTES: usize = 256 << 20;
/// Ready bytes below which a full queue lets publishers resume.
pub const QUEUE_LOW_WATER_BYTES: usize = 192 << 20;

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("vhost", &self.vhost)
            .field("name", &self.spec.name)
            .finish()
    }
}

impl Queue {
    pub(crate) fn new(vhost: &str, spec: QueueSpec, id: u64, store: Arc<dyn Store>) -> Self {
        Self {
            vhost: vhost.to_owned(),
            spec,
            id,
            store,
            state: Mutex::new(State::default()),
            full: AtomicBool::new(false),
        }
    }

    /// Whether publishers should pause until the queue drains (its ready
    /// messages hold more than [`QUEUE_HIGH_WATER_BYTES`]).
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    fn update_pressure(&self, st: &State) {
        let full = self.full.load(Ordering::Relaxed);
        if !full && st.ready.bytes > QUEUE_HIGH_WATER_BYTES {
            self.full.store(true, Ordering::Relaxed);
        } else if full && st.ready.bytes < QUEUE_LOW_WATER_BYTES {
            self.full.store(false, Ordering::Relaxed);
        }
    }

    /// Whether the queue and its persistent messages are written to the
    /// store: durable and not exclusive (exclusive queues die with their
    /// connection, so they never survive a restart, as in RabbitMQ).
    pub fn persistent(&self) -> bool {
        self.spec.durable && self.spec.exclusive_owner.is_none()
    }

    /// Queue name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// When a message enqueued now expires (see [`expires_at`]).
    fn expiry(&self, message: &Message) -> Option<Instant> {
        let queue_ttl = self
            .spec
            .arguments
            .get("x-message-ttl")
            .and_then(FieldValue::as_i64)
            .and_then(|t| u64::try_from(t).ok());
        expires_at(message, queue_ttl)
    }

    /// Put back a message recovered from the store (start-up only). Its
    /// time to live counts again from now: enqueue times are not stored.
    pub(crate) fn recover(&self, seq: u64, message: Message) {
        let mut st = self.state.lock();
        st.next_seq = st.next_seq.max(seq + 1);
        let expires_at = self.expiry(&message);
        // It may have been delivered before the restart: the spec's "may have
        // been previously delivered" flag says so, as RabbitMQ does.
        st.ready.push_back(Entry {
            seq,
            message: Arc::new(message),
            redelivered: true,
            persisted: true,
            expires_at,
        });
    }

    /// Append a message. If it is persistent and the queue durable, it is
    /// written through the store and `durable` resolves when it is on disk;
    /// otherwise `durable` is returned to the caller unused.
    pub(crate) fn enqueue(
        self: &Arc<Self>,
        message: Arc<Message>,
        durable: Option<oneshot::Sender<()>>,
    ) -> Option<oneshot::Sender<()>> {
        let mut st = self.state.lock();
        if st.deleted {
            return durable;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let persist = self.persistent() && message.is_persistent();
        let rest = if persist {
            self.store.submit(
                StoreOp::PutMessage {
                    queue_id: self.id,
                    seq,
                    message: message.clone(),
                },
                durable,
            );
            None
        } else {
            durable
        };
        let expires_at = self.expiry(&message);
        st.ready.push_back(Entry {
            seq,
            message,
            redelivered: false,
            persisted: persist,
            expires_at,
        });
        self.dispatch_locked(&mut st);
        rest
    }

    /// Drop expired messages at the head of the queue (as RabbitMQ does:
    /// an expired message behind live ones goes when it reaches the head).
    fn drop_expired_head(&self, st: &mut State) {
        // The clock is read only when the head has a time to live.
        let mut now = None;
        while let Some(e) = st.ready.entries.front() {
            if e.expires_at.is_none() || !e.expired(*now.get_or_insert_with(Instant::now)) {
                return;
            }
            if let Some(e) = st.ready.pop_front() {
                self.settle_entry(&e);
            }
        }
    }

    /// Hand ready messages to consumers with credit, round-robin.
    pub fn dispatch(self: &Arc<Self>) {
        let mut st = self.state.lock();
        self.dispatch_locked(&mut st);
    }

    fn dispatch_locked(self: &Arc<Self>, st: &mut State) {
        self.dispatch_inner(st);
        self.update_pressure(st);
    }

    fn dispatch_inner(self: &Arc<Self>, st: &mut State) {
        self.drop_expired_head(st);
        while !st.ready.is_empty() && !st.consumers.is_empty() {
            let n = st.consumers.len();
            let start = st.cursor % n;
            let Some(idx) = (0..n)
                .map(|i| (start + i) % n)
                .find(|&i| st.consumers[i].try_take_credit())
            else {
                return;
            };
            st.cursor = idx + 1;
            let consumer = st.consumers[idx].clone();
            let Some(entry) = st.ready.pop_front() else {
                return;
            };
            let delivery = Delivery {
                consumer: consumer.clone(),
                queue: self.clone(),
                seq: entry.seq,
                message: entry.message.clone(),
                redelivered: entry.redelivered,
                expires_at: entry.expires_at,
            };
            if consumer.spec.no_ack {
                self.settle_entry(&entry);
            } else {
                st.unacked.insert(entry.seq, entry);
            }
            consumer.outbox.push(OutboxEvent::Deliver(delivery));
            self.drop_expired_head(st);
        }
    }

    fn settle_entry(&self, entry: &Entry) {
        if entry.persisted {
            self.store.submit(
                StoreOp::DeleteMessage {
                    queue_id: self.id,
                    seq: entry.seq,
                },
                None,
            );
        }
    }

    /// Attach a consumer. Fails if either side wants exclusivity.
    pub fn add_consumer(self: &Arc<Self>, consumer: Arc<Consumer>) -> Result<()> {
        let mut st = self.state.lock();
        if st.deleted {
            return Err(EngineError::QueueNotFound(
                self.spec.name.clone(),
                self.vhost.clone(),
            ));
        }
        if consumer.spec.exclusive && !st.consumers.is_empty() {
            return Err(EngineError::AccessRefused(format!(
                "queue '{}' in vhost '{}' has consumers; cannot consume exclusively",
                self.spec.name, self.vhost
            )));
        }
        if st.consumers.iter().any(|c| c.spec.exclusive) {
            return Err(EngineError::AccessRefused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.spec.name, self.vhost
            )));
        }
        st.consumers.push(consumer);
        st.had_consumer = true;
        self.dispatch_locked(&mut st);
        Ok(())
    }

    /// Detach a consumer. Returns true if the queue should now auto-delete.
    pub fn remove_consumer(&self, consumer: &Arc<Consumer>) -> bool {
        let mut st = self.state.lock();
        st.consumers.retain(|c| !Arc::ptr_eq(c, consumer));
        self.spec.auto_delete && st.had_consumer && st.consumers.is_empty() && !st.deleted
    }

    /// Settle delivered messages (positions in ascending order): the one
    /// path by which a delivered message leaves the queue or returns to it.
    /// The caller dispatches after (see [`crate::Settlement`]).
    pub(crate) fn settle(&self, seqs: &[u64], how: Settle) {
        let mut st = self.state.lock();
        match how {
            Settle::Ack | Settle::Reject => {
                for seq in seqs {
                    if let Some(e) = st.unacked.remove(seq) {
                        self.settle_entry(&e);
                    }
                }
            }
            Settle::Requeue => {
                for seq in seqs {
                    if let Some(mut e) = st.unacked.remove(seq) {
                        e.redelivered = true;
                        st.ready.insert_sorted(e);
                    }
                }
                self.update_pressure(&st);
            }
        }
    }

    /// Take one message (`basic.get`). With `no_ack` it is settled at once.
    pub fn get(&self, no_ack: bool) -> Option<Got> {
        let mut st = self.state.lock();
        self.drop_expired_head(&mut st);
        let entry = st.ready.pop_front()?;
        self.update_pressure(&st);
        let got = Got {
            seq: entry.seq,
            message: entry.message.clone(),
            redelivered: entry.redelivered,
            remaining: u32::try_from(st.ready.len()).unwrap_or(u32::MAX),
        };
        if no_ack {
            self.settle_entry(&entry);
        } else {
            st.unacked.insert(entry.seq, entry);
        }
        Some(got)
    }

    /// Drop every ready message; returns how many.
    pub fn purge(&self) -> u32 {
        let mut st = self.state.lock();
        let gone = st.ready.take_all();
        self.update_pressure(&st);
        for e in &gone {
            self.settle_entry(e);
        }
        u32::try_from(gone.len()).unwrap_or(u32::MAX)
    }

    /// Ready messages and consumers right now.
    pub fn counts(&self) -> (u32, u32) {
        let st = self.state.lock();
        (
            u32::try_from(st.ready.len()).unwrap_or(u32::MAX),
            u32::try_from(st.consumers.len()).unwrap_or(u32::MAX),
        )
    }

    /// Unacked messages right now.
    pub fn unacked_count(&self) -> usize {
        self.state.lock().unacked.len()
    }

    /// Check delete preconditions and mark the queue deleted: consumers are
    /// told they were cancelled and further operations become no-ops.
    /// Returns the number of ready messages dropped.
    pub(crate) fn delete(&self, if_unused: bool, if_empty: bool) -> Result<u32> {
        let mut st = self.state.lock();
        if if_unused && !st.consumers.is_empty() {
            return Err(EngineError::PreconditionFailed(format!(
                "queue '{}' in vhost '{}' in use",
                self.spec.name, self.vhost
            )));
        }
        if if_empty && !st.ready.is_empty() {
            return Err(EngineError::PreconditionFailed(format!(
                "queue '{}' in vhost '{}' not empty",
                self.spec.name, self.vhost
            )));
        }
        st.deleted = true;
        let count = u32::try_from(st.ready.len()).unwrap_or(u32::MAX);
        st.ready.take_all();
        self.full.store(false, Ordering::Relaxed);
        st.unacked.clear();
        for c in std::mem::take(&mut st.consumers) {
            c.outbox.push(OutboxEvent::Cancelled(c.clone()));
        }
        Ok(count)
    }

    /// Whether the queue has been deleted.
    pub fn is_deleted(&self) -> bool {
        self.state.lock().deleted
    }
}
