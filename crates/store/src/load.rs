//! Reading everything back at start-up.
//!
//! One read transaction, so the snapshot is a single committed state. A row
//! that does not decode (or whose key disagrees with its record) is logged
//! and skipped: one corrupt queue must not keep the broker from starting.
//! Storage failures (I/O, a damaged B-tree) are returned as errors instead.

use crate::tables::{BINDINGS, EXCHANGES, Error, MESSAGES, QUEUES, RETAINED, STATE, VHOSTS};
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use serde::de::DeserializeOwned;
use switchyard_engine::store::{BindingRecord, ExchangeRecord, QueueRecord, Snapshot};
use switchyard_model::Message;
use tracing::{info, warn};

/// Read the whole durable state.
#[allow(
    clippy::needless_update,
    reason = "`..Snapshot::default()` keeps this building if the engine adds fields"
)]
pub(crate) fn load(db: &Database) -> Result<Snapshot, Error> {
    let txn = db.begin_read()?;
    let snapshot = Snapshot {
        vhosts: vhosts(&txn)?,
        exchanges: named(&txn, EXCHANGES, "exchange", |r: &ExchangeRecord| {
            (r.vhost.as_str(), r.name.as_str())
        })?,
        queues: named(&txn, QUEUES, "queue", |r: &QueueRecord| {
            (r.vhost.as_str(), r.name.as_str())
        })?,
        bindings: bindings(&txn)?,
        messages: messages(&txn)?,
        retained: retained(&txn)?,
        state: state(&txn)?,
        // Fields the engine may add later start empty rather than breaking
        // this crate's build.
        ..Snapshot::default()
    };
    info!(
        vhosts = snapshot.vhosts.len(),
        exchanges = snapshot.exchanges.len(),
        queues = snapshot.queues.len(),
        bindings = snapshot.bindings.len(),
        messages = snapshot.messages.len(),
        "store loaded"
    );
    Ok(snapshot)
}

fn vhosts(txn: &ReadTransaction) -> Result<Vec<String>, Error> {
    let table = txn.open_table(VHOSTS)?;
    let mut out = Vec::new();
    for row in table.iter()? {
        let (key, _) = row?;
        out.push(key.value().to_owned());
    }
    Ok(out)
}

/// Rows keyed by `(vhost, name)` holding a postcard record that repeats both.
fn named<T: DeserializeOwned>(
    txn: &ReadTransaction,
    def: TableDefinition<'static, (&'static str, &'static str), &'static [u8]>,
    what: &str,
    names: impl Fn(&T) -> (&str, &str),
) -> Result<Vec<T>, Error> {
    let table = txn.open_table(def)?;
    let mut out = Vec::new();
    for row in table.iter()? {
        let (key, value) = row?;
        let (vhost, name) = key.value();
        match postcard::from_bytes::<T>(value.value()) {
            Ok(record) if names(&record) == (vhost, name) => out.push(record),
            Ok(record) => {
                let (rv, rn) = names(&record);
                warn!(
                    vhost,
                    name,
                    record_vhost = rv,
                    record_name = rn,
                    "stored {what} disagrees with its key; skipped"
                );
            }
            Err(e) => warn!(vhost, name, error = %e, "stored {what} is corrupt; skipped"),
        }
    }
    Ok(out)
}

fn bindings(txn: &ReadTransaction) -> Result<Vec<BindingRecord>, Error> {
    let table = txn.open_table(BINDINGS)?;
    let mut out = Vec::new();
    for row in table.iter()? {
        let (key, _) = row?;
        match postcard::from_bytes::<BindingRecord>(key.value()) {
            Ok(record) => out.push(record),
            Err(e) => warn!(error = %e, "stored binding is corrupt; skipped"),
        }
    }
    Ok(out)
}

/// Messages in key order, which is ascending `(queue_id, seq)`.
fn messages(txn: &ReadTransaction) -> Result<Vec<(u64, u64, Message)>, Error> {
    let table = txn.open_table(MESSAGES)?;
    let mut out = Vec::with_capacity(usize::try_from(table.len()?).unwrap_or(0));
    for row in table.iter()? {
        let (key, value) = row?;
        let (queue_id, seq) = key.value();
        match postcard::from_bytes::<Message>(value.value()) {
            Ok(message) => out.push((queue_id, seq, message)),
            Err(e) => warn!(queue_id, seq, error = %e, "stored message is corrupt; skipped"),
        }
    }
    Ok(out)
}

/// Adapters' state records in key order.
fn state(txn: &ReadTransaction) -> Result<Vec<(String, String, Vec<u8>)>, Error> {
    let table = txn.open_table(STATE)?;
    let mut out = Vec::new();
    for row in table.iter()? {
        let (key, value) = row?;
        let (namespace, name) = key.value();
        out.push((
            namespace.to_owned(),
            name.to_owned(),
            value.value().to_vec(),
        ));
    }
    Ok(out)
}

/// Retained messages in key order.
fn retained(txn: &ReadTransaction) -> Result<Vec<(String, String, Message)>, Error> {
    let table = txn.open_table(RETAINED)?;
    let mut out = Vec::new();
    for row in table.iter()? {
        let (key, value) = row?;
        let (vhost, name) = key.value();
        match postcard::from_bytes::<Message>(value.value()) {
            Ok(message) => out.push((vhost.to_owned(), name.to_owned(), message)),
            Err(e) => {
                warn!(vhost, key = name, error = %e, "stored retained message is corrupt; skipped")
            }
        }
    }
    Ok(out)
}
