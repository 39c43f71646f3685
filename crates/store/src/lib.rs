//! Switchyard's durable state, kept in a single [redb] file.
//!
//! This crate owns the on-disk format (tables, encodings, the format version;
//! see `DESIGN.md`), the one writer thread that applies changes in submission
//! order with group commit, and reading everything back at start-up. It
//! implements the engine's [`Store`] trait and nothing more.
//!
//! It does **not** know any protocol, and it does **not** decide what is durable:
//! the engine decides which exchanges, queues, bindings and messages to submit,
//! in what order, and what a resolved or failed durable ticket means for a
//! publisher. The store only makes the submitted operations durable, in order,
//! and reports when they are.
//!
//! Main type: [`RedbStore`].

mod load;
mod tables;
mod writer;

#[cfg(test)]
mod tests;

use redb::Database;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use switchyard_engine::store::{Snapshot, Store, StoreError, StoreOp};
use tables::Error;
use tokio::sync::oneshot;
use tracing::{error, info};
use writer::{Item, Shared};

/// The redb-backed [`Store`].
///
/// [`Store::submit`] only enqueues; a dedicated thread named
/// `switchyard-store` commits whatever has queued up in one transaction
/// (group commit) and then resolves the durable tickets of that batch.
/// Dropping the store commits everything already submitted and joins the
/// thread.
#[derive(Debug)]
pub struct RedbStore {
    /// Feeds the writer thread. Unbounded so `submit` never blocks; callers
    /// apply backpressure through [`Store::backlog`].
    tx: mpsc::Sender<Item>,
    /// `None` only during `drop`.
    writer: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    db: Arc<Database>,
    path: PathBuf,
}

impl RedbStore {
    /// Open (creating if needed) the store in `dir`: the directory itself and
    /// `dir/switchyard.redb` inside it. Fails if the file is in use by another
    /// process or was written in a newer store format.
    ///
    /// # Errors
    ///
    /// The directory cannot be created, the file cannot be opened or locked
    /// (e.g. another broker uses it), its format version is newer than this
    /// build's, or the writer thread cannot be started.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Ok(Self::open_inner(dir)?)
    }

    fn open_inner(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(tables::FILE_NAME);
        let db = Database::create(&path).map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        tables::init(&db, &path)?;
        let db = Arc::new(db);
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel();
        let writer = writer::spawn(Arc::clone(&db), rx, Arc::clone(&shared))?;
        info!(path = %path.display(), "store opened");
        Ok(Self {
            tx,
            writer: Some(writer),
            shared,
            db,
            path,
        })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write transactions committed so far by this handle (one per batch):
    /// compare with the number of operations to see group commit at work.
    #[must_use]
    pub fn commit_count(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }
}

impl Store for RedbStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(load::load(&self.db)?)
    }

    fn submit(&self, op: StoreOp, durable: Option<oneshot::Sender<()>>) {
        // Count before sending so the writer's decrement can never come first.
        self.shared.backlog.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Item::Op { op, durable }).is_err() {
            // The writer thread is gone (it only exits on drop, so this means
            // it panicked). The returned item, and with it the durable sender,
            // is dropped: the caller sees a nack.
            self.shared.backlog.fetch_sub(1, Ordering::Relaxed);
            error!("store writer thread is not running; operation dropped");
        }
    }

    fn backlog(&self) -> usize {
        self.shared.backlog.load(Ordering::Relaxed)
    }

    fn set_commit_hook(&self, hook: Box<dyn Fn() + Send + Sync>) {
        if self.shared.commit_hook.set(hook).is_err() {
            tracing::warn!("store commit hook set twice; the first one stays");
        }
    }

    fn metrics(&self) -> Option<&switchyard_engine::store::StoreMetrics> {
        Some(&self.shared.metrics)
    }

    fn flush(&self) {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        if self.tx.send(Item::Flush(done_tx)).is_ok() {
            // Err means the writer dropped the marker without answering,
            // i.e. it is gone; there is nothing left to wait for.
            let _ = done_rx.recv();
        }
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        // The writer commits everything queued before the marker, then exits.
        // A send error means it has already exited.
        let _ = self.tx.send(Item::Shutdown);
        if writer.join().is_err() {
            error!(path = %self.path.display(), "store writer thread panicked");
        }
    }
}
