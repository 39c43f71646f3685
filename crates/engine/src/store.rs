//! The narrow persistence contract the engine calls.
//!
//! The engine defines what it needs; `switchyard-store` implements it on redb
//! and [`MemoryStore`] implements it for tests and transient brokers. The
//! engine never blocks on the store: [`Store::submit`] only enqueues, in call
//! order, and a [`Durable`] ticket resolves once the batch holding that
//! operation (and so every operation submitted before it) is on disk.

use crate::exchange::ExchangeKind;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use switchyard_model::{FieldTable, Message};
use thiserror::Error;
use tokio::sync::oneshot;

/// A durable exchange as persisted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExchangeRecord {
    /// Owning vhost.
    pub vhost: String,
    /// Exchange name.
    pub name: String,
    /// Routing algorithm.
    pub kind: ExchangeKind,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Clients cannot publish to it directly.
    pub internal: bool,
    /// Declare arguments (e.g. `alternate-exchange`).
    pub arguments: FieldTable,
}

/// A durable queue as persisted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueRecord {
    /// Store-wide id; message keys use it so renames never happen.
    pub id: u64,
    /// Owning vhost.
    pub vhost: String,
    /// Queue name.
    pub name: String,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
}

/// What a binding points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DestinationKind {
    /// A queue.
    Queue,
    /// Another exchange (exchange-to-exchange binding).
    Exchange,
}

/// A binding as persisted (only when both ends are durable).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BindingRecord {
    /// Owning vhost.
    pub vhost: String,
    /// Source exchange.
    pub source: String,
    /// Destination kind.
    pub destination_kind: DestinationKind,
    /// Destination name.
    pub destination: String,
    /// Binding key.
    pub routing_key: String,
    /// Binding arguments (headers exchanges match on them).
    pub arguments: FieldTable,
}

/// One change to durable state, applied in submission order.
#[derive(Clone, Debug)]
pub enum StoreOp {
    /// Changes nothing; its ticket resolves once everything submitted before
    /// it is durable.
    Barrier,
    /// Several operations committed in one transaction: all or none
    /// survive a crash (a dead-lettered message's move between queues).
    Batch(Vec<Self>),
    /// Create a vhost.
    PutVhost(String),
    /// Forget a vhost (its queues, exchanges and bindings are deleted by
    /// their own operations first).
    DeleteVhost(String),
    /// Create or replace a durable exchange.
    PutExchange(ExchangeRecord),
    /// Remove a durable exchange.
    DeleteExchange {
        /// Owning vhost.
        vhost: String,
        /// Exchange name.
        name: String,
    },
    /// Create a durable queue.
    PutQueue(QueueRecord),
    /// Remove a durable queue and every message in it.
    DeleteQueue {
        /// Queue id.
        id: u64,
        /// Owning vhost.
        vhost: String,
        /// Queue name.
        name: String,
    },
    /// Add a durable binding.
    PutBinding(BindingRecord),
    /// Remove a durable binding.
    DeleteBinding(BindingRecord),
    /// Store a persistent message at position `seq` of queue `queue_id`.
    PutMessage {
        /// Queue id.
        queue_id: u64,
        /// Position in the queue (strictly increasing per queue).
        seq: u64,
        /// The message (shared with memory; never copied to enqueue).
        message: Arc<Message>,
    },
    /// Remove a settled message.
    DeleteMessage {
        /// Queue id.
        queue_id: u64,
        /// Its position.
        seq: u64,
    },
    /// Set the retained message of `key` (e.g. an MQTT topic) in `vhost`.
    PutRetained {
        /// Owning vhost.
        vhost: String,
        /// Retention key.
        key: String,
        /// The message.
        message: Arc<Message>,
    },
    /// Set an adapter's own durable state under (`namespace`, `key`): bytes
    /// the engine does not interpret (e.g. an MQTT session's packet ids).
    PutState {
        /// Whose state (e.g. `mqtt-session`).
        namespace: String,
        /// The record's key within the namespace.
        key: String,
        /// The adapter's encoding.
        value: Vec<u8>,
    },
    /// Remove an adapter's state record.
    DeleteState {
        /// Whose state.
        namespace: String,
        /// The record's key.
        key: String,
    },
    /// Clear the retained message of `key` in `vhost`.
    DeleteRetained {
        /// Owning vhost.
        vhost: String,
        /// Retention key.
        key: String,
    },
}

/// Resolves once an operation is durable. Dropped senders (store failure)
/// resolve with an error, which publishers must treat as a nack.
pub type Durable = oneshot::Receiver<()>;

/// Everything durable, as read back at start-up.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Known vhosts.
    pub vhosts: Vec<String>,
    /// Durable exchanges.
    pub exchanges: Vec<ExchangeRecord>,
    /// Durable queues.
    pub queues: Vec<QueueRecord>,
    /// Durable bindings.
    pub bindings: Vec<BindingRecord>,
    /// Persistent messages: queue id, position, message; ascending by
    /// (queue id, position).
    pub messages: Vec<(u64, u64, Message)>,
    /// Retained messages: vhost, key, message.
    pub retained: Vec<(String, String, Message)>,
    /// Adapters' state records: namespace, key, value.
    pub state: Vec<(String, String, Vec<u8>)>,
}

/// Store failure.
#[derive(Debug, Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// Durable state behind the engine.
pub trait Store: Send + Sync + 'static {
    /// Read everything durable (called once, before serving).
    fn load(&self) -> Result<Snapshot, StoreError>;

    /// Enqueue `op` after every earlier op. If `durable` is given it is
    /// completed once the op has been committed to disk.
    fn submit(&self, op: StoreOp, durable: Option<oneshot::Sender<()>>);

    /// Operations accepted but not yet committed (for publisher backpressure).
    fn backlog(&self) -> usize;

    /// Call `hook` after every committed batch (the backlog shrank), from
    /// the store's own thread. Stores without a backlog need not call it.
    fn set_commit_hook(&self, hook: Box<dyn Fn() + Send + Sync>) {
        let _ = hook;
    }

    /// Block until everything submitted so far is committed.
    fn flush(&self);

    /// Commit latencies and batch sizes, for a store that measures them.
    fn metrics(&self) -> Option<&StoreMetrics> {
        None
    }
}

/// Upper bounds of the commit latency histogram, in seconds.
pub const COMMIT_SECONDS_BUCKETS: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// Upper bounds of the batch size histogram, in operations.
pub const BATCH_SIZE_BUCKETS: [u64; 10] = [1, 2, 5, 10, 50, 100, 500, 1_000, 5_000, 10_000];

/// A store's commit histograms: counts per bucket (not cumulative; the
/// last slot counts what is above every bound), sums and the number of
/// commits. Atomics, bumped once per batch by the store's writer.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// Commits (each one durable: the file is synced).
    pub commits: AtomicU64,
    /// Commit latency counts per [`COMMIT_SECONDS_BUCKETS`] bucket.
    pub commit_buckets: [AtomicU64; 13],
    /// Sum of commit latencies, in microseconds.
    pub commit_micros: AtomicU64,
    /// Batch size counts per [`BATCH_SIZE_BUCKETS`] bucket.
    pub batch_buckets: [AtomicU64; 11],
    /// Sum of batch sizes, in operations.
    pub batch_ops: AtomicU64,
}

impl StoreMetrics {
    /// One commit of `ops` operations that took `took`.
    pub fn observe(&self, took: std::time::Duration, ops: usize) {
        let secs = took.as_secs_f64();
        let i = COMMIT_SECONDS_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(COMMIT_SECONDS_BUCKETS.len());
        self.commit_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.commit_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let n = ops as u64;
        let j = BATCH_SIZE_BUCKETS
            .iter()
            .position(|b| n <= *b)
            .unwrap_or(BATCH_SIZE_BUCKETS.len());
        self.batch_buckets[j].fetch_add(1, Ordering::Relaxed);
        self.batch_ops.fetch_add(n, Ordering::Relaxed);
        self.commits.fetch_add(1, Ordering::Relaxed);
    }
}

/// A store that keeps nothing: every op is "durable" immediately. Used by
/// engine and session tests so they run without a disk.
#[derive(Debug, Default)]
pub struct MemoryStore;

impl Store for MemoryStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }

    fn submit(&self, _op: StoreOp, durable: Option<oneshot::Sender<()>>) {
        if let Some(tx) = durable {
            let _ = tx.send(());
        }
    }

    fn backlog(&self) -> usize {
        0
    }

    fn flush(&self) {}
}
