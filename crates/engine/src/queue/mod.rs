//! Queues: ordered messages, their unacked set, fair dispatch to consumers
//! with credit, and RabbitMQ's queue arguments ([`QueueArguments`]).
//!
//! A queue owns its messages; consumers only hold positions (`seq`). Ready
//! messages are kept in position order (per priority level, see
//! [`ready`]) so a requeued message goes back to where it was. Persistent
//! messages of durable queues are written through the store when enqueued
//! and deleted when settled; all store calls happen under the queue lock so
//! the store sees a message's put before its delete.
//!
//! Every way a message leaves other than an ack — rejected, expired,
//! pushed out by a length limit — goes through [`Queue::discard`], which
//! either forgets it or, with a dead-letter exchange, hands it to the
//! vhost once the queue lock is released (see `dead_letter`). Timed work
//! (an expiring head, `x-expires`) is scheduled on the broker's timers and
//! comes back through [`Queue::on_timer`].

mod ready;

use crate::arguments::{Overflow, QueueArguments};
use crate::consumer::{Consumer, Delivery, OutboxEvent};
use crate::dead_letter::{Letter, Reason};
use crate::error::{EngineError, Result};
use crate::inthash::IntMap;
use crate::settle::Settle;
use crate::store::{Store, StoreOp};
use crate::timers::{Timed, Timers};
use crate::vhost::Vhost;
use parking_lot::Mutex;
use ready::{Entry, Ready};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use switchyard_model::{FieldTable, Message};
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

#[derive(Debug)]
struct State {
    /// The arguments in force: the declared ones over the policy's
    /// ([`Queue::set_policy`]).
    effective: QueueArguments,
    ready: Ready,
    unacked: IntMap<u64, Entry>,
    next_seq: u64,
    /// In attach order; the first is the single active consumer.
    consumers: Vec<Arc<Consumer>>,
    /// Round-robin cursor into `consumers`.
    cursor: usize,
    /// Some consumer asked for an `x-priority`.
    prioritised: bool,
    had_consumer: bool,
    deleted: bool,
    /// Messages leaving for the dead-letter exchange, sent once the lock
    /// is released.
    letters: Vec<Letter>,
    /// The deadline scheduled on the timers, if any.
    armed: Option<Instant>,
    /// Last use (consumer attached or detached, get, redeclare), for
    /// `x-expires`.
    last_used: Instant,
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

/// A queue's state at one moment ([`Queue::snapshot`]).
#[derive(Debug, Clone)]
pub struct QueueSnapshot {
    /// Ready messages.
    pub ready: u64,
    /// Their body bytes.
    pub ready_bytes: u64,
    /// Delivered, not yet settled.
    pub unacked: u64,
    /// Their body bytes.
    pub unacked_bytes: u64,
    /// Its consumers.
    pub consumers: Vec<Arc<Consumer>>,
    /// When it was last used.
    pub idle_since: Instant,
}

/// What became of a message offered to a queue.
#[derive(Debug)]
pub(crate) struct Enqueued {
    /// The durability ticket, handed back when this queue did not store
    /// the message.
    pub(crate) unused: Option<oneshot::Sender<()>>,
    /// Refused by `x-overflow: reject-publish(-dlx)`.
    pub(crate) rejected: bool,
}

/// A queue in a vhost.
pub struct Queue {
    /// Owning vhost.
    pub vhost: String,
    /// Declared shape.
    pub spec: QueueSpec,
    /// Its arguments, parsed at declare.
    pub args: QueueArguments,
    /// Store id (keys its messages on disk).
    pub id: u64,
    store: Arc<dyn Store>,
    state: Mutex<State>,
    /// Ready bytes are above the high-water mark: publishers should pause.
    full: AtomicBool,
    /// Its consumers fell past the flow mark: publishers that do not
    /// consume should pause.
    behind: AtomicBool,
    /// Deliveries made so far (paused publishers watch it for progress).
    dispatched: AtomicU64,
    /// Counters for the management API and metrics.
    pub stats: QueueStats,
    /// Where dead letters are routed and an expired queue deletes itself.
    home: Weak<Vhost>,
    timers: Timers,
    relief: Arc<crate::Relief>,
    flow_backlog: Arc<AtomicUsize>,
    /// This queue, for the timers.
    me: Weak<Self>,
}

/// A queue's message counters since it was declared (or recovered). Each
/// is changed under the queue's lock, so a bump is a plain store, not a
/// read-modify-write.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Messages enqueued.
    pub published: AtomicU64,
    /// Messages taken by `basic.get` (and its kin), either ack mode.
    pub got: AtomicU64,
    /// Of those, taken without an ack.
    pub got_no_ack: AtomicU64,
    /// Gets that found the queue empty.
    pub get_empty: AtomicU64,
    /// Deliveries to consumers that settle on write.
    pub delivered_no_ack: AtomicU64,
    /// Deliveries and gets of a message delivered before.
    pub redelivered: AtomicU64,
    /// Deliveries acknowledged.
    pub acked: AtomicU64,
}

impl QueueStats {
    /// Adds one to `counter`; only under the queue's lock.
    fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
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

/// Where a new queue lives: its vhost (for dead letters and `x-expires`)
/// and the broker's timers.
#[derive(Debug, Clone)]
pub(crate) struct Home {
    pub(crate) vhost: Weak<Vhost>,
    pub(crate) timers: Timers,
    /// Held messages of delayed exchanges (used by the vhost only).
    pub(crate) delayed: Arc<crate::delayed::Delayed>,
    /// Wakes publishers paused on a full queue once it drains.
    pub(crate) relief: Arc<crate::Relief>,
    /// Ready messages above which a queue with consumers pauses its
    /// publishers (0: never); see [`crate::Broker::set_flow_backlog`].
    pub(crate) flow_backlog: Arc<AtomicUsize>,
    /// The broker's policies (applied to queues as they are declared).
    pub(crate) policies: Arc<crate::policy::Policies>,
    /// The broker's own counters (dead-lettering).
    pub(crate) counters: Arc<crate::connections::EngineCounters>,
}

impl Queue {
    pub(crate) fn new(
        vhost: &str,
        spec: QueueSpec,
        args: QueueArguments,
        id: u64,
        store: Arc<dyn Store>,
        home: Home,
    ) -> Arc<Self> {
        let levels = args.max_priority.map_or(1, |p| usize::from(p) + 1);
        let effective = args.clone();
        let q = Arc::new_cyclic(|me| Self {
            vhost: vhost.to_owned(),
            spec,
            args,
            id,
            store,
            state: Mutex::new(State {
                effective,
                ready: Ready::with_levels(levels),
                unacked: IntMap::default(),
                next_seq: 0,
                consumers: Vec::new(),
                cursor: 0,
                prioritised: false,
                had_consumer: false,
                deleted: false,
                letters: Vec::new(),
                armed: None,
                last_used: Instant::now(),
            }),
            full: AtomicBool::new(false),
            behind: AtomicBool::new(false),
            dispatched: AtomicU64::new(0),
            stats: QueueStats::default(),
            home: home.vhost,
            timers: home.timers,
            relief: home.relief,
            flow_backlog: home.flow_backlog,
            me: me.clone(),
        });
        if let Some(ms) = q.args.expires {
            let mut st = q.state.lock();
            q.arm(&mut st, Instant::now() + Duration::from_millis(ms));
        }
        q
    }

    /// Whether publishers should pause until the queue drains (its ready
    /// messages hold more than [`QUEUE_HIGH_WATER_BYTES`]).
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// Whether its consumers fell behind: more ready messages than the flow
    /// mark (see [`crate::Broker::set_flow_backlog`]) while it has
    /// consumers. Publishers that consume nothing pause until it is back to
    /// half; a connection that also consumes is never paused for this (its
    /// acks are what lets the queue drain).
    pub fn is_behind(&self) -> bool {
        self.behind.load(Ordering::Relaxed)
    }

    /// Deliveries made to consumers so far.
    pub fn dispatched(&self) -> u64 {
        self.dispatched.load(Ordering::Relaxed)
    }

    /// Update both pressure flags after the ready messages or the consumers
    /// changed; wake paused publishers when one clears.
    fn update_pressure(&self, st: &State) {
        let full = self.full.load(Ordering::Relaxed);
        if !full && st.ready.bytes > QUEUE_HIGH_WATER_BYTES {
            self.full.store(true, Ordering::Relaxed);
        } else if full && st.ready.bytes < QUEUE_LOW_WATER_BYTES {
            self.full.store(false, Ordering::Relaxed);
            self.relief.relieve();
        }
        // Coupled flow: a saturated broker delivers what it accepts instead
        // of queueing seconds of it. Without consumers only the memory
        // marks apply (a queue may fill while nobody consumes).
        let mark = self.flow_backlog.load(Ordering::Relaxed);
        let coupled = mark > 0 && !st.consumers.is_empty();
        let behind = self.behind.load(Ordering::Relaxed);
        if !behind && coupled && st.ready.len() > mark {
            self.behind.store(true, Ordering::Relaxed);
        } else if behind && !(coupled && st.ready.len() > mark / 2) {
            self.behind.store(false, Ordering::Relaxed);
            self.relief.relieve();
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

    /// Submit a store operation for this queue.
    pub(crate) fn submit(&self, op: StoreOp) {
        self.store.submit(op, None);
    }

    /// Forget a stored message that left without being dead-lettered.
    pub(crate) fn forget(&self, seq: u64) {
        self.submit(StoreOp::DeleteMessage {
            queue_id: self.id,
            seq,
        });
    }

    /// A new entry for `message` at the next position.
    fn entry(&self, st: &mut State, message: Arc<Message>, persisted: bool) -> Entry {
        let seq = st.next_seq;
        st.next_seq += 1;
        let expires_at = expires_at(&message, st.effective.message_ttl);
        let priority = if self.args.max_priority.is_some() {
            st.ready.level(message.properties.priority)
        } else {
            0
        };
        Entry {
            seq,
            message,
            redelivered: false,
            persisted,
            expires_at,
            priority,
        }
    }

    /// Put back a message recovered from the store (start-up only). Its
    /// time to live counts again from now: enqueue times are not stored.
    pub(crate) fn recover(&self, seq: u64, message: Message) {
        let mut st = self.state.lock();
        let next = st.next_seq.max(seq + 1);
        st.next_seq = seq;
        let mut e = self.entry(&mut st, Arc::new(message), true);
        st.next_seq = next;
        // It may have been delivered before the restart: the spec's "may have
        // been previously delivered" flag says so, as RabbitMQ does.
        e.redelivered = true;
        st.ready.push_back(e);
        self.arm_head(&mut st);
    }

    /// Whether `len` ready messages holding `body_bytes` exceed a length
    /// limit.
    fn exceeds(st: &State, len: usize, body_bytes: u64) -> bool {
        st.effective.max_length.is_some_and(|max| len as u64 > max)
            || st
                .effective
                .max_length_bytes
                .is_some_and(|max| body_bytes > max)
    }

    /// Append a message. If it is persistent and the queue durable, it is
    /// written through the store and `durable` resolves when it is on disk;
    /// otherwise `durable` is handed back unused. `x-overflow:
    /// reject-publish` may refuse it.
    pub(crate) fn enqueue(
        self: &Arc<Self>,
        message: Arc<Message>,
        durable: Option<oneshot::Sender<()>>,
    ) -> Enqueued {
        self.offer(message, durable, None)
    }

    /// Append a dead-lettered message; `with` (the removal from its source
    /// queue) is committed in the same store transaction as its write here.
    pub(crate) fn enqueue_letter(self: &Arc<Self>, message: Arc<Message>, with: Option<StoreOp>) {
        self.offer(message, None, with);
    }

    /// [`Queue::enqueue`], with `with` written in the same store
    /// transaction as the message (or on its own, if the message is not
    /// stored here).
    fn offer(
        self: &Arc<Self>,
        message: Arc<Message>,
        durable: Option<oneshot::Sender<()>>,
        with: Option<StoreOp>,
    ) -> Enqueued {
        let mut st = self.state.lock();
        let rejected = !st.deleted
            && st.effective.overflow != Overflow::DropHead
            && Self::exceeds(
                &st,
                st.ready.len() + 1,
                st.ready.body_bytes + message.body.len() as u64,
            );
        if st.deleted || rejected {
            if let Some(op) = with {
                self.submit(op);
            }
            if rejected
                && st.effective.overflow == Overflow::RejectPublishDlx
                && st.effective.dead_letter_exchange.is_some()
            {
                st.letters.push(Letter {
                    message,
                    reason: Reason::Maxlen,
                    stored_seq: None,
                });
            }
            return self.unlock_and_send(
                st,
                Enqueued {
                    unused: durable,
                    rejected,
                },
            );
        }
        QueueStats::bump(&self.stats.published);
        let persist = self.persistent() && message.is_persistent();
        let e = self.entry(&mut st, message, persist);
        let unused = if persist {
            let put = StoreOp::PutMessage {
                queue_id: self.id,
                seq: e.seq,
                message: e.message.clone(),
            };
            let op = match with {
                Some(with) => StoreOp::Batch(vec![put, with]),
                None => put,
            };
            self.store.submit(op, durable);
            None
        } else {
            if let Some(op) = with {
                self.submit(op);
            }
            durable
        };
        self.push_ready(&mut st, e);
        self.unlock_and_send(
            st,
            Enqueued {
                unused,
                rejected: false,
            },
        )
    }

    /// A new ready entry: delivered if a consumer can take it, then the
    /// length limit and the head's expiry are enforced.
    fn push_ready(self: &Arc<Self>, st: &mut State, e: Entry) {
        // A message arriving at an empty queue goes to a waiting consumer
        // before its TTL is looked at (`x-message-ttl: 0` delivers what it
        // can at once and drops the rest).
        let fresh_head = st.ready.is_empty();
        st.ready.push_back(e);
        self.dispatch_from(st, !fresh_head);
        self.drop_expired_head(st);
        while Self::exceeds(st, st.ready.len(), st.ready.body_bytes) {
            let Some(head) = st.ready.pop_front() else {
                break;
            };
            self.discard(st, head, Reason::Maxlen);
        }
        self.update_pressure(st);
        self.arm_head(st);
    }

    /// Release the lock, then route what died meanwhile.
    fn unlock_and_send<T>(&self, mut st: parking_lot::MutexGuard<'_, State>, out: T) -> T {
        let letters = std::mem::take(&mut st.letters);
        drop(st);
        self.send_letters(letters);
        out
    }

    fn send_letters(&self, letters: Vec<Letter>) {
        if letters.is_empty() {
            return;
        }
        match self.home.upgrade() {
            Some(vhost) => vhost.dead_letter(self, letters),
            None => {
                for l in letters {
                    if let Some(seq) = l.stored_seq {
                        self.forget(seq);
                    }
                }
            }
        }
    }

    /// A message leaves without an ack: dead-lettered if the queue has a
    /// dead-letter exchange, else forgotten.
    fn discard(&self, st: &mut State, e: Entry, reason: Reason) {
        if st.effective.dead_letter_exchange.is_some() {
            st.letters.push(Letter {
                message: e.message,
                reason,
                stored_seq: e.persisted.then_some(e.seq),
            });
        } else {
            self.settle_entry(&e);
        }
    }

    /// Drop (or dead-letter) expired messages at the head (as RabbitMQ
    /// does: an expired message behind live ones goes when it reaches the
    /// head, which the timers make happen within its TTL).
    fn drop_expired_head(&self, st: &mut State) {
        // The clock is read only when the head has a time to live.
        let mut now = None;
        while let Some(e) = st.ready.front() {
            if e.expires_at.is_none() || !e.expired(*now.get_or_insert_with(Instant::now)) {
                return;
            }
            if let Some(e) = st.ready.pop_front() {
                self.discard(st, e, Reason::Expired);
            }
        }
    }

    /// Schedule a timer for `at` unless an earlier one is set.
    fn arm(&self, st: &mut State, at: Instant) {
        if st.armed.is_some_and(|t| t <= at) {
            return;
        }
        st.armed = Some(at);
        let me: Weak<dyn Timed> = self.me.clone();
        self.timers.schedule(at, me);
    }

    /// Make sure the head's expiry will be acted on without a consumer.
    fn arm_head(&self, st: &mut State) {
        if let Some(at) = st.ready.front().and_then(|e| e.expires_at) {
            self.arm(st, at);
        }
    }

    /// The timers' call: expire the head, and delete the queue if it has
    /// been unused for `x-expires`.
    fn on_timer(self: &Arc<Self>) {
        let mut st = self.state.lock();
        if st.deleted {
            return;
        }
        st.armed = None;
        self.drop_expired_head(&mut st);
        self.update_pressure(&st);
        self.arm_head(&mut st);
        let mut expire = false;
        if let Some(ms) = st.effective.expires {
            let at = st.last_used + Duration::from_millis(ms);
            if st.consumers.is_empty() && Instant::now() >= at {
                expire = true;
            } else if st.consumers.is_empty() {
                self.arm(&mut st, at);
            }
        }
        self.unlock_and_send(st, ());
        if expire && let Some(vhost) = self.home.upgrade() {
            vhost.expire_queue(self);
        }
    }

    /// Note a use of the queue (`x-expires` counts from the last one).
    fn used(&self, st: &mut State) {
        if let Some(ms) = st.effective.expires {
            st.last_used = Instant::now();
            if st.consumers.is_empty() {
                self.arm(st, st.last_used + Duration::from_millis(ms));
            }
        }
    }

    /// Whether `arguments` are what this queue was declared with, as a
    /// redeclare is checked (integers of any width equal): else the
    /// inequivalence a redeclare would get.
    pub fn check_arguments(&self, arguments: &FieldTable) -> Result<()> {
        match crate::arguments::difference(&self.spec.arguments, arguments) {
            Some(arg) => Err(EngineError::Inequivalent {
                what: "queue",
                name: self.spec.name.clone(),
                arg: arg.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// A redeclare (or a passive declare: RabbitMQ's `stat`) counts as a
    /// use for `x-expires`.
    pub fn touch(&self) {
        let mut st = self.state.lock();
        self.used(&mut st);
    }

    /// Hand ready messages to consumers with credit.
    pub fn dispatch(self: &Arc<Self>) {
        let mut st = self.state.lock();
        self.dispatch_from(&mut st, true);
        self.update_pressure(&st);
        self.arm_head(&mut st);
        self.unlock_and_send(st, ());
    }

    /// The consumer the next message goes to: round-robin among those with
    /// credit, the highest `x-priority` first; only the first consumer with
    /// `x-single-active-consumer`.
    fn pick(&self, st: &mut State) -> Option<usize> {
        let n = if self.args.single_active_consumer {
            st.consumers.len().min(1)
        } else {
            st.consumers.len()
        };
        if n == 0 {
            return None;
        }
        if !st.prioritised {
            let start = st.cursor % n;
            return (0..n)
                .map(|i| (start + i) % n)
                .find(|&i| st.consumers[i].try_take_credit());
        }
        // Consumers are kept by priority, highest first: try each group of
        // equal priority in turn, round-robin within it.
        let mut lo = 0;
        while lo < n {
            let p = st.consumers[lo].priority();
            let hi = (lo..n)
                .find(|&i| st.consumers[i].priority() != p)
                .unwrap_or(n);
            let len = hi - lo;
            let start = st.cursor.saturating_sub(lo) % len;
            if let Some(i) = (0..len)
                .map(|i| lo + (start + i) % len)
                .find(|&i| st.consumers[i].try_take_credit())
            {
                return Some(i);
            }
            lo = hi;
        }
        None
    }

    /// Deliver while a consumer has credit; `expire_first`: drop an
    /// expired head before looking for a consumer.
    fn dispatch_from(self: &Arc<Self>, st: &mut State, expire_first: bool) {
        if expire_first {
            self.drop_expired_head(st);
        }
        while !st.ready.is_empty() && !st.consumers.is_empty() {
            let Some(idx) = self.pick(st) else {
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
            if delivery.redelivered {
                QueueStats::bump(&self.stats.redelivered);
            }
            if consumer.spec.no_ack {
                QueueStats::bump(&self.stats.delivered_no_ack);
            }
            consumer.outbox.push(OutboxEvent::Deliver(delivery));
            QueueStats::bump(&self.dispatched);
            self.drop_expired_head(st);
        }
    }

    fn settle_entry(&self, entry: &Entry) {
        if entry.persisted {
            self.forget(entry.seq);
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
        let p = consumer.priority();
        st.prioritised |= p != 0;
        // Kept highest priority first, attach order within a priority (so
        // the first is the single active consumer when there is one).
        let at = st.consumers.partition_point(|c| c.priority() >= p);
        st.consumers.insert(at, consumer);
        st.had_consumer = true;
        st.last_used = Instant::now();
        self.dispatch_from(&mut st, true);
        self.update_pressure(&st);
        self.arm_head(&mut st);
        self.unlock_and_send(st, ());
        Ok(())
    }

    /// Detach a consumer. Returns true if the queue should now auto-delete.
    pub fn remove_consumer(self: &Arc<Self>, consumer: &Arc<Consumer>) -> bool {
        let mut st = self.state.lock();
        st.consumers.retain(|c| !Arc::ptr_eq(c, consumer));
        self.used(&mut st);
        let auto_delete =
            self.spec.auto_delete && st.had_consumer && st.consumers.is_empty() && !st.deleted;
        // The next single active consumer (or the others) may take over.
        if !st.consumers.is_empty() {
            self.dispatch_from(&mut st, true);
        }
        // Without consumers the flow mark no longer holds publishers back.
        self.update_pressure(&st);
        self.unlock_and_send(st, auto_delete)
    }

    /// Settle delivered messages (positions in ascending order): the one
    /// path by which a delivered message leaves the queue or returns to it.
    /// The caller dispatches after (see [`crate::Settlement`]).
    pub(crate) fn settle(&self, seqs: &[u64], how: Settle) {
        let mut st = self.state.lock();
        match how {
            Settle::Ack | Settle::AutoAck => {
                let counter = if how == Settle::Ack {
                    &self.stats.acked
                } else {
                    &self.stats.delivered_no_ack
                };
                for seq in seqs {
                    if let Some(e) = st.unacked.remove(seq) {
                        self.settle_entry(&e);
                        QueueStats::bump(counter);
                    }
                }
            }
            Settle::Reject => {
                for seq in seqs {
                    if let Some(e) = st.unacked.remove(seq) {
                        self.discard(&mut st, e, Reason::Rejected);
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
        self.unlock_and_send(st, ());
    }

    /// Take one message (`basic.get`). With `no_ack` it is settled at once.
    pub fn get(&self, no_ack: bool) -> Option<Got> {
        let mut st = self.state.lock();
        self.used(&mut st);
        self.drop_expired_head(&mut st);
        let Some(entry) = st.ready.pop_front() else {
            QueueStats::bump(&self.stats.get_empty);
            return self.unlock_and_send(st, None);
        };
        self.update_pressure(&st);
        self.arm_head(&mut st);
        if no_ack {
            QueueStats::bump(&self.stats.got_no_ack);
        }
        QueueStats::bump(&self.stats.got);
        if entry.redelivered {
            QueueStats::bump(&self.stats.redelivered);
        }
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
        self.unlock_and_send(st, Some(got))
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

    /// Ready messages, unacked messages and consumers right now, in one
    /// lock.
    pub fn tallies(&self) -> (u64, u64, u64) {
        let st = self.state.lock();
        (
            st.ready.len() as u64,
            st.unacked.len() as u64,
            st.consumers.len() as u64,
        )
    }

    /// Unacked messages right now.
    pub fn unacked_count(&self) -> usize {
        self.state.lock().unacked.len()
    }

    /// Everything the management API shows of the queue, in one lock.
    pub fn snapshot(&self) -> QueueSnapshot {
        let st = self.state.lock();
        QueueSnapshot {
            ready: st.ready.len() as u64,
            ready_bytes: st.ready.body_bytes,
            unacked: st.unacked.len() as u64,
            unacked_bytes: st
                .unacked
                .values()
                .map(|e| e.message.body.len() as u64)
                .sum(),
            consumers: st.consumers.clone(),
            idle_since: st.last_used,
        }
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
        let was_full = self.full.swap(false, Ordering::Relaxed);
        if self.behind.swap(false, Ordering::Relaxed) || was_full {
            self.relief.relieve();
        }
        st.unacked.clear();
        for c in std::mem::take(&mut st.consumers) {
            c.outbox.push(OutboxEvent::Cancelled(c.clone()));
        }
        Ok(count)
    }

    /// Applies a policy's definition (`None`: no policy applies any
    /// more). Keys the queue was declared with win; the length limits,
    /// TTL, expiry and dead-lettering in force change at once (a queue now
    /// over a lower limit is trimmed as a publish would trim it).
    /// `max-priority` and single-active-consumer stay as declared.
    ///
    /// # Errors
    ///
    /// [`EngineError::InvalidArgument`] if the merged arguments are not
    /// valid; the queue keeps what it had.
    pub fn set_policy(self: &Arc<Self>, definition: Option<&FieldTable>) -> Result<()> {
        let mut merged = FieldTable::new();
        if let Some(def) = definition {
            for (key, value) in def {
                if let Some(arg) = crate::arguments::policy_key(key) {
                    merged.insert(arg.to_owned(), value.clone());
                }
            }
        }
        for (key, value) in &self.spec.arguments {
            merged.insert(key.clone(), value.clone());
        }
        let mut parsed = QueueArguments::parse(&merged)?;
        parsed.max_priority = self.args.max_priority;
        parsed.single_active_consumer = self.args.single_active_consumer;
        let mut st = self.state.lock();
        if st.deleted || st.effective == parsed {
            return Ok(());
        }
        st.effective = parsed;
        self.drop_expired_head(&mut st);
        while Self::exceeds(&st, st.ready.len(), st.ready.body_bytes) {
            let Some(head) = st.ready.pop_front() else {
                break;
            };
            self.discard(&mut st, head, Reason::Maxlen);
        }
        self.update_pressure(&st);
        self.arm_head(&mut st);
        if let Some(ms) = st.effective.expires
            && st.consumers.is_empty()
        {
            let at = st.last_used + Duration::from_millis(ms);
            self.arm(&mut st, at);
        }
        self.unlock_and_send(st, ());
        Ok(())
    }

    /// The dead-letter exchange and routing key in force.
    pub(crate) fn dead_letter_target(&self) -> (Option<String>, Option<String>) {
        let st = self.state.lock();
        (
            st.effective.dead_letter_exchange.clone(),
            st.effective.dead_letter_routing_key.clone(),
        )
    }

    /// Whether the queue has been deleted.
    pub fn is_deleted(&self) -> bool {
        self.state.lock().deleted
    }

    /// Whether it has had no consumer since `x-expires` ago (the vhost
    /// checks again under its topology lock before deleting).
    pub(crate) fn unused_for_expiry(&self) -> bool {
        let st = self.state.lock();
        st.effective.expires.is_some_and(|ms| {
            st.consumers.is_empty() && Instant::now() >= st.last_used + Duration::from_millis(ms)
        })
    }
}

impl Timed for Queue {
    fn fire(self: Arc<Self>) {
        self.on_timer();
    }
}
