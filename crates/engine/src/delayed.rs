//! Delayed messages, as the popular RabbitMQ plugin
//! (`rabbitmq_delayed_message_exchange`) offers them: an exchange declared
//! with type `x-delayed-message` routes like its `x-delayed-type`, but a
//! message carrying an `x-delay` header (milliseconds, > 0) is held and
//! routed only when the delay has passed.
//!
//! Held messages are kept in time order and released by the broker's
//! timers. A persistent message published to a durable delayed exchange
//! is also written to the store (as a state record of namespace
//! [`NAMESPACE`], keyed by its due time) before its publisher is confirmed,
//! so it survives a restart or `kill -9` and is released on time after
//! one. Release routes it (into queues that then store it) and then removes
//! the record: a crash between the two delivers it twice, never loses it.
//!
//! Engine-side naming: an exchange is delayed when its arguments hold
//! `x-delayed-type` (adapters refuse that argument on any other exchange).

use crate::store::{Store, StoreOp};
use crate::timers::{Timed, Timers};
use crate::vhost::Vhost;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use switchyard_model::{FieldTable, FieldValue, Message};
use tokio::sync::oneshot;

/// The store namespace of held messages.
pub(crate) const NAMESPACE: &str = "switchyard-delayed";

/// The argument that makes an exchange delayed, naming how it routes.
pub const DELAYED_TYPE: &str = "x-delayed-type";

/// Whether an exchange with these arguments delays messages.
pub(crate) fn is_delayed(arguments: &FieldTable) -> bool {
    arguments.contains_key(DELAYED_TYPE)
}

/// A message's `x-delay`, if it asks for one (> 0 ms).
pub(crate) fn delay_of(message: &Message) -> Option<u64> {
    let v = message.properties.headers.as_ref()?.get("x-delay")?;
    let ms = match v {
        FieldValue::LongString(_) | FieldValue::ShortString(_) => {
            v.as_str()?.trim().parse().ok()?
        }
        _ => v.as_i64()?,
    };
    u64::try_from(ms).ok().filter(|&ms| ms > 0)
}

/// What a stored record holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    vhost: String,
    due_unix_ms: u64,
    message: Message,
}

struct Held {
    vhost: Weak<Vhost>,
    message: Message,
    /// Its store key, if it was written.
    key: Option<String>,
}

/// The broker's held messages.
pub(crate) struct Delayed {
    held: Mutex<BTreeMap<(Instant, u64), Held>>,
    next: AtomicU64,
    store: Arc<dyn Store>,
    timers: Timers,
    me: Weak<Self>,
}

impl std::fmt::Debug for Delayed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Delayed")
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Delayed {
    pub(crate) fn new(store: Arc<dyn Store>, timers: Timers) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            held: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            store,
            timers,
            me: me.clone(),
        })
    }

    /// Hold `message` for `delay_ms`. With `durable`, it is written to the
    /// store first and `durable` resolves once it is on disk.
    pub(crate) fn hold(
        &self,
        vhost: &Arc<Vhost>,
        message: Message,
        delay_ms: u64,
        durable: Option<oneshot::Sender<()>>,
        persist: bool,
    ) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let due_unix_ms = unix_ms().saturating_add(delay_ms);
        let key = persist.then(|| format!("{due_unix_ms:020}-{id:020}"));
        match &key {
            Some(key) => {
                let record = Record {
                    vhost: vhost.name.clone(),
                    due_unix_ms,
                    message: message.clone(),
                };
                match postcard::to_stdvec(&record) {
                    Ok(value) => self.store.submit(
                        StoreOp::PutState {
                            namespace: NAMESPACE.to_owned(),
                            key: key.clone(),
                            value,
                        },
                        durable,
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode a delayed message; it is held in memory only");
                    }
                }
            }
            None => {
                if let Some(tx) = durable {
                    let _ = tx.send(());
                }
            }
        }
        let at = Instant::now() + Duration::from_millis(delay_ms);
        self.insert(at, id, Arc::downgrade(vhost), message, key);
    }

    fn insert(
        &self,
        at: Instant,
        id: u64,
        vhost: Weak<Vhost>,
        message: Message,
        key: Option<String>,
    ) {
        let mut held = self.held.lock();
        let earliest = held.keys().next().is_none_or(|&(first, _)| at < first);
        held.insert(
            (at, id),
            Held {
                vhost,
                message,
                key,
            },
        );
        drop(held);
        if earliest {
            let me: Weak<dyn Timed> = self.me.clone();
            self.timers.schedule(at, me);
        }
    }

    /// Put back a record read from the store at start-up; `vhost` finds
    /// the vhost it was published in.
    pub(crate) fn recover(&self, key: String, value: &[u8], vhost: impl Fn(&str) -> Arc<Vhost>) {
        let Ok(r) = postcard::from_bytes::<Record>(value) else {
            tracing::warn!(%key, "unreadable delayed message record; dropped");
            self.store.submit(
                StoreOp::DeleteState {
                    namespace: NAMESPACE.to_owned(),
                    key,
                },
                None,
            );
            return;
        };
        let left = r.due_unix_ms.saturating_sub(unix_ms());
        let at = Instant::now() + Duration::from_millis(left);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let v = vhost(&r.vhost);
        self.insert(at, id, Arc::downgrade(&v), r.message, Some(key));
    }

    /// Messages held right now.
    pub(crate) fn len(&self) -> usize {
        self.held.lock().len()
    }
}

impl Timed for Delayed {
    fn fire(self: Arc<Self>) {
        let now = Instant::now();
        let mut due = Vec::new();
        let next = {
            let mut held = self.held.lock();
            while let Some(entry) = held.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            held.keys().next().map(|&(at, _)| at)
        };
        if let Some(at) = next {
            let me: Weak<dyn Timed> = self.me.clone();
            self.timers.schedule(at, me);
        }
        for h in due {
            if let Some(vhost) = h.vhost.upgrade()
                && let Err(e) = vhost.publish_now(h.message)
            {
                // The exchange went away meanwhile: nowhere to go.
                tracing::debug!(error = %e, "delayed message dropped on release");
            }
            if let Some(key) = h.key {
                self.store.submit(
                    StoreOp::DeleteState {
                        namespace: NAMESPACE.to_owned(),
                        key,
                    },
                    None,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_model::Properties;

    fn with_delay(v: FieldValue) -> Message {
        let mut headers = FieldTable::new();
        headers.insert("x-delay".into(), v);
        Message {
            exchange: "d".into(),
            routing_key: "k".into(),
            properties: Properties {
                headers: Some(headers),
                ..Properties::default()
            },
            body: bytes::Bytes::new(),
        }
    }

    #[test]
    fn x_delay_in_any_integer_width_or_text() {
        assert_eq!(delay_of(&with_delay(FieldValue::I32(500))), Some(500));
        assert_eq!(delay_of(&with_delay(FieldValue::I64(1))), Some(1));
        assert_eq!(delay_of(&with_delay(FieldValue::string("250"))), Some(250));
        assert_eq!(delay_of(&with_delay(FieldValue::I32(0))), None);
        assert_eq!(delay_of(&with_delay(FieldValue::I32(-5))), None);
        assert_eq!(delay_of(&with_delay(FieldValue::string("soon"))), None);
    }
}
