//! The single writer thread and its group commit.
//!
//! Callers enqueue [`Item`]s on an unbounded channel (never blocks). The
//! writer waits for one item, drains whatever else is already queued (up to
//! [`MAX_BATCH_OPS`] operations or roughly [`MAX_BATCH_BYTES`] of message
//! data), applies the whole batch in one redb write transaction with the
//! default immediate durability, commits, and only then completes the batch's
//! durable tickets and flush markers. One fsync therefore covers every
//! publisher that arrived while the previous commit was on disk.

use crate::tables::{BINDINGS, EXCHANGES, Error, MESSAGES, QUEUES, RETAINED, STATE, VHOSTS};
use redb::{Database, Table, WriteTransaction};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use switchyard_engine::store::StoreOp;
use tokio::sync::oneshot;
use tracing::{error, trace, warn};

/// Most operations committed in one transaction.
pub(crate) const MAX_BATCH_OPS: usize = 8192;

/// Stop draining once a batch holds about this much message data, so one
/// transaction's dirty pages stay bounded.
pub(crate) const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;

/// One entry in the writer's queue.
pub(crate) enum Item {
    /// A state change, with the ticket to complete once it is on disk.
    Op {
        /// The change.
        op: StoreOp,
        /// Completed after the commit holding `op`; dropped on failure.
        durable: Option<oneshot::Sender<()>>,
    },
    /// Completed once everything queued before it has been committed.
    Flush(SyncSender<()>),
    /// Commit what is queued, then exit the thread.
    Shutdown,
}

/// Counters shared between the handle and the writer thread.
#[derive(Default)]
pub(crate) struct Shared {
    /// Operations submitted but not yet committed (or failed).
    pub(crate) backlog: AtomicUsize,
    /// Write transactions committed successfully.
    pub(crate) commits: AtomicU64,
    /// Called after each batch leaves the backlog (see
    /// `Store::set_commit_hook`).
    pub(crate) commit_hook: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Commit latency and batch size histograms.
    pub(crate) metrics: switchyard_engine::store::StoreMetrics,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("backlog", &self.backlog)
            .field("commits", &self.commits)
            .finish_non_exhaustive()
    }
}

/// What the writer collected for one transaction.
#[derive(Default)]
struct Batch {
    ops: Vec<(StoreOp, Option<oneshot::Sender<()>>)>,
    flushes: Vec<SyncSender<()>>,
    bytes: usize,
}

/// Message bytes an operation writes (for the batch size bound).
fn op_bytes(op: &StoreOp) -> usize {
    match op {
        StoreOp::PutMessage { message, .. } => message.size_hint(),
        StoreOp::Batch(ops) => ops.iter().map(op_bytes).sum(),
        _ => 0,
    }
}

impl Batch {
    /// Add `item`; returns true if it asks the writer to stop.
    fn push(&mut self, item: Item) -> bool {
        match item {
            Item::Op { op, durable } => {
                self.bytes += op_bytes(&op);
                self.ops.push((op, durable));
                false
            }
            Item::Flush(done) => {
                self.flushes.push(done);
                false
            }
            Item::Shutdown => true,
        }
    }

    fn full(&self) -> bool {
        self.ops.len() >= MAX_BATCH_OPS || self.bytes >= MAX_BATCH_BYTES
    }
}

/// The writer thread's body. Returns when told to shut down or when every
/// sender is gone.
pub(crate) fn run(db: &Database, rx: &Receiver<Item>, shared: &Shared) {
    let mut batch = Batch::default();
    let mut buf = Vec::new();
    loop {
        let Ok(first) = rx.recv() else {
            return;
        };
        let mut stop = batch.push(first);
        while !stop && !batch.full() {
            match rx.try_recv() {
                Ok(item) => stop = batch.push(item),
                Err(_) => break,
            }
        }
        commit(db, &mut batch, shared, &mut buf);
        if stop {
            return;
        }
    }
}

/// Write `batch` in one transaction, settle its tickets and empty it.
fn commit(db: &Database, batch: &mut Batch, shared: &Shared, buf: &mut Vec<u8>) {
    let n = batch.ops.len();
    if n > 0 {
        let started = std::time::Instant::now();
        match write(db, &mut batch.ops, buf) {
            Ok(()) => {
                shared.metrics.observe(started.elapsed(), n);
                shared.commits.fetch_add(1, Ordering::Relaxed);
                shared.backlog.fetch_sub(n, Ordering::Relaxed);
                trace!(ops = n, bytes = batch.bytes, "store batch committed");
                for (_, durable) in batch.ops.drain(..) {
                    if let Some(tx) = durable {
                        // The receiver may have given up waiting; that is fine.
                        let _ = tx.send(());
                    }
                }
            }
            Err(e) => {
                shared.backlog.fetch_sub(n, Ordering::Relaxed);
                error!(
                    error = %e,
                    ops = n,
                    "store commit failed; the batch is lost and its durable tickets are dropped"
                );
                // Dropping the senders resolves every ticket with an error,
                // which publishers turn into nacks.
                batch.ops.clear();
            }
        }
        if let Some(hook) = shared.commit_hook.get() {
            hook();
        }
    }
    batch.bytes = 0;
    for done in batch.flushes.drain(..) {
        // Capacity 1 and a single send: never blocks. The flusher may be gone.
        let _ = done.try_send(());
    }
}

/// Apply every op in one write transaction and commit it. An op that cannot be
/// encoded is skipped (its ticket dropped); any storage failure aborts the
/// whole transaction.
fn write(
    db: &Database,
    ops: &mut [(StoreOp, Option<oneshot::Sender<()>>)],
    buf: &mut Vec<u8>,
) -> Result<(), Error> {
    let txn = db.begin_write()?;
    {
        let mut tables = Tables::open(&txn)?;
        for (op, durable) in ops.iter_mut() {
            match tables.apply(op, buf) {
                Ok(()) => {}
                Err(Error::Encode(e)) => {
                    warn!(error = %e, ?op, "store op could not be encoded; skipped");
                    *durable = None;
                }
                Err(e) => return Err(e),
            }
        }
    }
    txn.commit()?;
    Ok(())
}

/// Every data table, open for writing in one transaction.
struct Tables<'txn> {
    vhosts: Table<'txn, &'static str, ()>,
    exchanges: Table<'txn, (&'static str, &'static str), &'static [u8]>,
    queues: Table<'txn, (&'static str, &'static str), &'static [u8]>,
    bindings: Table<'txn, &'static [u8], ()>,
    messages: Table<'txn, (u64, u64), &'static [u8]>,
    retained: Table<'txn, (&'static str, &'static str), &'static [u8]>,
    state: Table<'txn, (&'static str, &'static str), &'static [u8]>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, Error> {
        Ok(Self {
            vhosts: txn.open_table(VHOSTS)?,
            exchanges: txn.open_table(EXCHANGES)?,
            queues: txn.open_table(QUEUES)?,
            bindings: txn.open_table(BINDINGS)?,
            messages: txn.open_table(MESSAGES)?,
            retained: txn.open_table(RETAINED)?,
            state: txn.open_table(STATE)?,
        })
    }

    fn apply(&mut self, op: &StoreOp, buf: &mut Vec<u8>) -> Result<(), Error> {
        match op {
            StoreOp::Barrier => {}
            StoreOp::Batch(ops) => {
                for op in ops {
                    self.apply(op, buf)?;
                }
            }
            StoreOp::PutVhost(name) => {
                self.vhosts.insert(name.as_str(), ())?;
            }
            StoreOp::DeleteVhost(name) => {
                self.vhosts.remove(name.as_str())?;
            }
            StoreOp::PutExchange(record) => {
                let bytes = encode(record, buf)?;
                self.exchanges
                    .insert((record.vhost.as_str(), record.name.as_str()), bytes)?;
            }
            StoreOp::DeleteExchange { vhost, name } => {
                self.exchanges.remove((vhost.as_str(), name.as_str()))?;
            }
            StoreOp::PutQueue(record) => {
                let bytes = encode(record, buf)?;
                self.queues
                    .insert((record.vhost.as_str(), record.name.as_str()), bytes)?;
            }
            StoreOp::DeleteQueue { id, vhost, name } => {
                self.queues.remove((vhost.as_str(), name.as_str()))?;
                self.messages
                    .retain_in((*id, 0)..=(*id, u64::MAX), |_, _| false)?;
            }
            StoreOp::PutBinding(record) => {
                let bytes = encode(record, buf)?;
                self.bindings.insert(bytes, ())?;
            }
            StoreOp::DeleteBinding(record) => {
                let bytes = encode(record, buf)?;
                self.bindings.remove(bytes)?;
            }
            StoreOp::PutMessage {
                queue_id,
                seq,
                message,
            } => {
                let bytes = encode(&**message, buf)?;
                self.messages.insert((*queue_id, *seq), bytes)?;
            }
            StoreOp::DeleteMessage { queue_id, seq } => {
                // Removing a missing key is a no-op, not an error.
                self.messages.remove((*queue_id, *seq))?;
            }
            StoreOp::PutRetained {
                vhost,
                key,
                message,
            } => {
                let bytes = encode(&**message, buf)?;
                self.retained
                    .insert((vhost.as_str(), key.as_str()), bytes)?;
            }
            StoreOp::DeleteRetained { vhost, key } => {
                self.retained.remove((vhost.as_str(), key.as_str()))?;
            }
            StoreOp::PutState {
                namespace,
                key,
                value,
            } => {
                self.state
                    .insert((namespace.as_str(), key.as_str()), value.as_slice())?;
            }
            StoreOp::DeleteState { namespace, key } => {
                self.state.remove((namespace.as_str(), key.as_str()))?;
            }
        }
        Ok(())
    }
}

/// Postcard-encode `value` into the reused buffer (no allocation once the
/// buffer has grown to the largest record).
fn encode<'b, T: Serialize + ?Sized>(value: &T, buf: &'b mut Vec<u8>) -> Result<&'b [u8], Error> {
    buf.clear();
    postcard::to_io(value, &mut *buf)?;
    Ok(buf.as_slice())
}

/// Spawn the writer thread over `db`.
pub(crate) fn spawn(
    db: Arc<Database>,
    rx: Receiver<Item>,
    shared: Arc<Shared>,
) -> Result<std::thread::JoinHandle<()>, Error> {
    std::thread::Builder::new()
        .name("switchyard-store".to_owned())
        .spawn(move || run(&db, &rx, &shared))
        .map_err(Error::Spawn)
}
