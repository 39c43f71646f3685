//! Table definitions, the on-disk format version, and the crate's internal
//! error type. `DESIGN.md` describes the same layout in prose; keep the two in
//! step, and bump [`FORMAT_VERSION`] whenever a key or value encoding changes.

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use std::path::PathBuf;
use switchyard_engine::store::StoreError;
use thiserror::Error;

/// The on-disk format this build reads and writes. Stored under
/// [`FORMAT_VERSION_KEY`] in [`META`]; a file with a larger number is refused.
pub(crate) const FORMAT_VERSION: u64 = 1;

/// Key of the format version row in [`META`].
pub(crate) const FORMAT_VERSION_KEY: &str = "format_version";

/// Name of the database file inside the data directory.
pub(crate) const FILE_NAME: &str = "switchyard.redb";

/// Store-level settings: `"format_version"` → `u64`.
pub(crate) const META: TableDefinition<'static, &str, u64> = TableDefinition::new("meta");

/// Known vhosts: name → `()`.
pub(crate) const VHOSTS: TableDefinition<'static, &str, ()> = TableDefinition::new("vhosts");

/// Durable exchanges: `(vhost, name)` → postcard `ExchangeRecord`.
pub(crate) const EXCHANGES: TableDefinition<'static, (&str, &str), &[u8]> =
    TableDefinition::new("exchanges");

/// Durable queues: `(vhost, name)` → postcard `QueueRecord`.
pub(crate) const QUEUES: TableDefinition<'static, (&str, &str), &[u8]> =
    TableDefinition::new("queues");

/// Durable bindings: postcard `BindingRecord` (the whole record is the key,
/// so a binding is unique exactly when its encoding is) → `()`.
pub(crate) const BINDINGS: TableDefinition<'static, &[u8], ()> = TableDefinition::new("bindings");

/// Persistent messages: `(queue_id, seq)` → postcard `Message`. Fixed-width
/// tuple keys sort element-wise, so one queue's messages are contiguous and
/// ascending by position.
pub(crate) const MESSAGES: TableDefinition<'static, (u64, u64), &[u8]> =
    TableDefinition::new("messages");

/// Retained messages: `(vhost, key)` → postcard `Message` (the last message
/// retained under the key, e.g. an MQTT topic). Added without a format bump:
/// `init` creates it in older files, which simply have none.
pub(crate) const RETAINED: TableDefinition<'static, (&str, &str), &[u8]> =
    TableDefinition::new("retained");

/// Adapters' own durable state: `(namespace, key)` → bytes the engine does
/// not interpret (e.g. MQTT sessions' protocol state). Added without a
/// format bump, as `RETAINED`.
pub(crate) const STATE: TableDefinition<'static, (&str, &str), &[u8]> =
    TableDefinition::new("adapter_state");

/// Everything that can go wrong inside the store. Mapped to the engine's
/// string-typed [`StoreError`] at the trait boundary.
#[derive(Debug, Error)]
pub(crate) enum Error {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// redb could not open or create the database file (including: another
    /// process already has it open).
    #[error("cannot open {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: redb::DatabaseError,
    },
    /// The file was written by a newer Switchyard with a format this build
    /// does not understand.
    #[error(
        "{path} has store format version {found}, but this build only understands \
         version {supported}; upgrade Switchyard or point it at another data directory"
    )]
    NewerFormat {
        /// The database file.
        path: PathBuf,
        /// Version found in the file.
        found: u64,
        /// Version this build writes.
        supported: u64,
    },
    /// The file carries a format version that never existed (0).
    #[error("{path} has unknown store format version {found}")]
    UnknownFormat {
        /// The database file.
        path: PathBuf,
        /// Version found in the file.
        found: u64,
    },
    /// The writer thread could not be started.
    #[error("cannot start the store writer thread: {0}")]
    Spawn(std::io::Error),
    /// A transaction could not be started.
    #[error("transaction: {0}")]
    Transaction(#[from] redb::TransactionError),
    /// A table could not be opened.
    #[error("table: {0}")]
    Table(#[from] redb::TableError),
    /// Reading or writing pages failed.
    #[error("storage: {0}")]
    Storage(#[from] redb::StorageError),
    /// Committing a write transaction failed.
    #[error("commit: {0}")]
    Commit(#[from] redb::CommitError),
    /// A record could not be encoded (affects only the one operation).
    #[error("encode: {0}")]
    Encode(#[from] postcard::Error),
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        Self(e.to_string())
    }
}

/// Create every table if missing and check (or, for a fresh file, write) the
/// format version. Runs once at open, in its own write transaction, so later
/// read transactions can open every table without "table does not exist".
pub(crate) fn init(db: &Database, path: &std::path::Path) -> Result<(), Error> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let found = meta.get(FORMAT_VERSION_KEY)?.map(|v| v.value());
        match found {
            None => {
                meta.insert(FORMAT_VERSION_KEY, FORMAT_VERSION)?;
            }
            Some(FORMAT_VERSION) => {}
            Some(0) => {
                return Err(Error::UnknownFormat {
                    path: path.to_owned(),
                    found: 0,
                });
            }
            Some(found) => {
                return Err(Error::NewerFormat {
                    path: path.to_owned(),
                    found,
                    supported: FORMAT_VERSION,
                });
            }
        }
    }
    create_tables(&txn)?;
    txn.commit()?;
    Ok(())
}

fn create_tables(txn: &WriteTransaction) -> Result<(), Error> {
    txn.open_table(VHOSTS)?;
    txn.open_table(EXCHANGES)?;
    txn.open_table(QUEUES)?;
    txn.open_table(BINDINGS)?;
    txn.open_table(MESSAGES)?;
    txn.open_table(RETAINED)?;
    txn.open_table(STATE)?;
    Ok(())
}
