//! Retained messages: the last message retained under a key (an MQTT topic
//! today) per vhost, written through the store so they survive restarts.
//! The engine does not interpret keys; adapters filter them (e.g. by MQTT
//! topic filter) when they scan. A message with an `expiration` is dropped
//! once it expires (its time counts again from a restart).

use crate::queue::expires_at;
use crate::store::{Store, StoreOp};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use switchyard_model::Message;

/// A retained message and when it expires.
type Kept = (Arc<Message>, Option<Instant>);

/// A retained message found by [`Retained::scan`].
#[derive(Debug, Clone)]
pub struct RetainedMessage {
    /// Its key (the topic it was published to, as the adapter wrote it).
    pub key: String,
    /// The message.
    pub message: Arc<Message>,
    /// When it expires, if it has a time to live.
    pub expires_at: Option<Instant>,
}

/// All retained messages of a broker.
pub struct Retained {
    by_key: Mutex<BTreeMap<(String, String), Kept>>,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Retained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retained").finish_non_exhaustive()
    }
}

impl Retained {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Self {
            by_key: Mutex::new(BTreeMap::new()),
            store,
        }
    }

    pub(crate) fn recover(&self, vhost: String, key: String, message: Message) {
        let expiry = expires_at(&message, None);
        self.by_key
            .lock()
            .insert((vhost, key), (Arc::new(message), expiry));
    }

    /// Retain `message` under `key`, or clear the key with `None`.
    pub fn put(&self, vhost: &str, key: &str, message: Option<Message>) {
        let k = (vhost.to_owned(), key.to_owned());
        let mut map = self.by_key.lock();
        // Store ops are submitted under the lock so they reach the store in
        // the same order as the map changes.
        match message {
            Some(m) => {
                let m = Arc::new(m);
                self.store.submit(
                    StoreOp::PutRetained {
                        vhost: k.0.clone(),
                        key: k.1.clone(),
                        message: m.clone(),
                    },
                    None,
                );
                let expiry = expires_at(&m, None);
                map.insert(k, (m, expiry));
            }
            None => {
                if map.remove(&k).is_some() {
                    self.store.submit(
                        StoreOp::DeleteRetained {
                            vhost: k.0,
                            key: k.1,
                        },
                        None,
                    );
                }
            }
        }
    }

    /// Live retained messages of `vhost` whose key satisfies `wanted`.
    /// Expired ones met on the way are dropped.
    pub fn scan(&self, vhost: &str, mut wanted: impl FnMut(&str) -> bool) -> Vec<RetainedMessage> {
        let mut map = self.by_key.lock();
        let now = Instant::now();
        let mut found = Vec::new();
        let mut expired = Vec::new();
        for ((v, k), (m, exp)) in map.range((vhost.to_owned(), String::new())..) {
            if v != vhost {
                break;
            }
            if !wanted(k) {
                continue;
            }
            if exp.is_some_and(|t| t <= now) {
                expired.push((v.clone(), k.clone()));
                continue;
            }
            found.push(RetainedMessage {
                key: k.clone(),
                message: m.clone(),
                expires_at: *exp,
            });
        }
        for k in expired {
            map.remove(&k);
            self.store.submit(
                StoreOp::DeleteRetained {
                    vhost: k.0,
                    key: k.1,
                },
                None,
            );
        }
        found
    }
}
