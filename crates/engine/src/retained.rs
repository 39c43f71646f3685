//! Retained messages: the last message retained under a key (an MQTT topic
//! today) per vhost, written through the store so they survive restarts.
//! The engine does not interpret keys; adapters filter them (e.g. by MQTT
//! topic filter) when they scan.

use crate::store::{Store, StoreOp};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use switchyard_model::Message;

/// All retained messages of a broker.
pub struct Retained {
    by_key: Mutex<BTreeMap<(String, String), Arc<Message>>>,
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
        self.by_key.lock().insert((vhost, key), Arc::new(message));
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
                map.insert(k, m);
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

    /// Retained messages of `vhost` whose key satisfies `wanted`.
    pub fn scan(
        &self,
        vhost: &str,
        mut wanted: impl FnMut(&str) -> bool,
    ) -> Vec<(String, Arc<Message>)> {
        let map = self.by_key.lock();
        map.range((vhost.to_owned(), String::new())..)
            .take_while(|((v, _), _)| v == vhost)
            .filter(|((_, k), _)| wanted(k))
            .map(|((_, k), m)| (k.clone(), m.clone()))
            .collect()
    }
}
