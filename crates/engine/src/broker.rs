//! The broker: the set of vhosts over one store, and start-up recovery.

use crate::auth::{Authenticator, GuestOnly, Identity, Refused};
use crate::connections::Connections;
use crate::delayed::Delayed;
use crate::queue::Home;
use crate::retained::Retained;
use crate::store::{Store, StoreError};
use crate::timers::Timers;
use crate::vhost::Vhost;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The default vhost every broker has.
pub const DEFAULT_VHOST: &str = "/";

/// All vhosts and the store behind them.
pub struct Broker {
    store: Arc<dyn Store>,
    vhosts: RwLock<HashMap<String, Arc<Vhost>>>,
    queue_ids: Arc<AtomicU64>,
    connection_ids: AtomicU64,
    /// Most queues per vhost, shared with every vhost.
    max_queues: Arc<AtomicUsize>,
    retained: Retained,
    /// Adapters' state records recovered at start-up, until taken.
    recovered_state: parking_lot::Mutex<Vec<(String, String, Vec<u8>)>>,
    /// Expiring heads and `x-expires`, for every queue.
    timers: Timers,
    /// Messages of delayed exchanges waiting for their time.
    delayed: Arc<Delayed>,
    /// Wakes publishers paused by backpressure.
    relief: Arc<crate::Relief>,
    /// See [`Broker::set_flow_backlog`].
    flow_backlog: Arc<AtomicUsize>,
    /// Answers logins; [`GuestOnly`] until one is set. Weak: the
    /// authenticator usually holds the broker.
    authenticator: RwLock<Option<std::sync::Weak<dyn Authenticator>>>,
    /// Logged-in connections and the adapters' message counters.
    connections: Arc<Connections>,
    /// Policies of every vhost.
    policies: Arc<crate::policy::Policies>,
}

/// Default [`Broker::set_flow_backlog`].
pub const DEFAULT_FLOW_BACKLOG: usize = 2_000;

impl Drop for Broker {
    fn drop(&mut self) {
        self.timers.stop();
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").finish_non_exhaustive()
    }
}

impl Broker {
    /// Open a broker over `store`, recovering everything durable in it.
    pub fn open(store: Arc<dyn Store>) -> Result<Arc<Self>, StoreError> {
        let snapshot = store.load()?;
        let next_id = snapshot.queues.iter().map(|q| q.id + 1).max().unwrap_or(1);
        let timers = Timers::default();
        let relief = Arc::new(crate::Relief::default());
        let on_commit = relief.clone();
        store.set_commit_hook(Box::new(move || on_commit.relieve()));
        let broker = Self {
            store: store.clone(),
            vhosts: RwLock::new(HashMap::new()),
            queue_ids: Arc::new(AtomicU64::new(next_id)),
            recovered_state: parking_lot::Mutex::new(snapshot.state),
            connection_ids: AtomicU64::new(1),
            max_queues: Arc::new(AtomicUsize::new(usize::MAX)),
            retained: Retained::new(store.clone()),
            timers: timers.clone(),
            delayed: Delayed::new(store.clone(), timers),
            relief,
            flow_backlog: Arc::new(AtomicUsize::new(DEFAULT_FLOW_BACKLOG)),
            authenticator: RwLock::new(None),
            connections: Arc::default(),
            policies: Arc::default(),
        };
        broker.add_vhost(DEFAULT_VHOST);
        for v in snapshot.vhosts {
            broker.add_vhost(&v);
        }
        for x in snapshot.exchanges {
            broker.add_vhost(&x.vhost).recover_exchange(x);
        }
        let mut by_id = HashMap::new();
        for q in snapshot.queues {
            let vhost = broker.add_vhost(&q.vhost);
            let queue = vhost.recover_queue(q);
            by_id.insert(queue.id, queue);
        }
        for b in snapshot.bindings {
            broker.add_vhost(&b.vhost).recover_binding(b);
        }
        let mut recovered = 0usize;
        let mut orphans = std::collections::BTreeSet::new();
        for (queue_id, seq, message) in snapshot.messages {
            match by_id.get(&queue_id) {
                Some(q) => {
                    q.recover(seq, message);
                    recovered += 1;
                }
                None => {
                    orphans.insert(queue_id);
                }
            }
        }
        for id in orphans {
            // Messages whose queue row is gone (e.g. a failed batch): drop them.
            tracing::warn!(queue_id = id, "removing messages of an unknown queue");
            store.submit(
                crate::store::StoreOp::DeleteQueue {
                    id,
                    vhost: String::new(),
                    name: String::new(),
                },
                None,
            );
        }
        let retained = snapshot.retained.len();
        for (vhost, key, message) in snapshot.retained {
            broker.retained.recover(vhost, key, message);
        }
        for (key, value) in broker.take_state(crate::delayed::NAMESPACE) {
            broker
                .delayed
                .recover(key, &value, |name| broker.add_vhost(name));
        }
        broker.recover_policies();
        tracing::info!(
            queues = by_id.len(),
            messages = recovered,
            delayed = broker.delayed.len(),
            retained,
            "recovered durable state"
        );
        Ok(Arc::new(broker))
    }

    /// Take the state records of `namespace` recovered at start-up (once:
    /// a second call gets none), as `(key, value)`.
    pub fn take_state(&self, namespace: &str) -> Vec<(String, Vec<u8>)> {
        let mut all = self.recovered_state.lock();
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut *all)
            .into_iter()
            .partition(|(ns, _, _)| ns == namespace);
        *all = rest;
        mine.into_iter().map(|(_, k, v)| (k, v)).collect()
    }

    /// Write an adapter's state record (`value: None` deletes it). Written
    /// in order with everything else the store is given.
    pub fn put_state(&self, namespace: &str, key: &str, value: Option<Vec<u8>>) {
        let (namespace, key) = (namespace.to_owned(), key.to_owned());
        let op = match value {
            Some(value) => crate::store::StoreOp::PutState {
                namespace,
                key,
                value,
            },
            None => crate::store::StoreOp::DeleteState { namespace, key },
        };
        self.store.submit(op, None);
    }

    /// Create a vhost if it does not exist; returns it either way.
    pub fn add_vhost(&self, name: &str) -> Arc<Vhost> {
        if let Some(v) = self.vhosts.read().get(name) {
            return v.clone();
        }
        let mut vhosts = self.vhosts.write();
        vhosts
            .entry(name.to_owned())
            .or_insert_with(|| {
                if name != DEFAULT_VHOST {
                    self.store
                        .submit(crate::store::StoreOp::PutVhost(name.to_owned()), None);
                }
                Arc::new_cyclic(|me| {
                    Vhost::new(
                        name,
                        self.store.clone(),
                        self.queue_ids.clone(),
                        self.max_queues.clone(),
                        Home {
                            vhost: me.clone(),
                            timers: self.timers.clone(),
                            delayed: self.delayed.clone(),
                            relief: self.relief.clone(),
                            flow_backlog: self.flow_backlog.clone(),
                            policies: self.policies.clone(),
                            counters: self.connections.engine.clone(),
                        },
                    )
                })
            })
            .clone()
    }

    /// Let `authenticator` answer every login from now on (the broker
    /// keeps a weak reference: once it is dropped, every login fails).
    pub fn set_authenticator(&self, authenticator: &Arc<dyn Authenticator>) {
        *self.authenticator.write() = Some(Arc::downgrade(authenticator));
    }

    fn authenticator(&self) -> Option<Arc<dyn Authenticator>> {
        match &*self.authenticator.read() {
            None => Some(Arc::new(GuestOnly)),
            Some(weak) => weak.upgrade(),
        }
    }

    /// Checks a login (see [`Authenticator::authenticate`]).
    ///
    /// # Errors
    ///
    /// Why the login is refused.
    pub fn authenticate(
        &self,
        user: &str,
        password: &str,
        peer: std::net::IpAddr,
    ) -> Result<Identity, Refused> {
        match self.authenticator() {
            Some(auth) => auth.authenticate(user, password, peer),
            None => Err(Refused::BadCredentials),
        }
    }

    /// Whether `user` may do `permission` on `resource` in `vhost` (see
    /// [`Authenticator::permits`]).
    #[must_use]
    pub fn permits(
        &self,
        user: &str,
        vhost: &str,
        permission: crate::PermissionKind,
        resource: &str,
    ) -> bool {
        self.authenticator()
            .is_some_and(|a| a.permits(user, vhost, permission, resource))
    }

    /// Whether `user` may use `vhost` (see [`Authenticator::may_use_vhost`]).
    #[must_use]
    pub fn may_use_vhost(&self, user: &str, vhost: &str) -> bool {
        self.authenticator()
            .is_some_and(|a| a.may_use_vhost(user, vhost))
    }

    /// Ready messages above which a queue with consumers pauses its
    /// publishers until it is back to half (0: never, only the memory
    /// marks pause them). Applies to every queue, existing ones included.
    pub fn set_flow_backlog(&self, messages: usize) {
        self.flow_backlog.store(messages, Ordering::Relaxed);
    }

    /// Limit the number of queues in each vhost; declares beyond it fail
    /// with [`crate::EngineError::ResourceLimit`]. Recovered queues count.
    pub fn set_max_queues_per_vhost(&self, n: usize) {
        self.max_queues.store(n, Ordering::Relaxed);
    }

    /// Retained messages (MQTT's, today).
    pub fn retained(&self) -> &Retained {
        &self.retained
    }

    /// Deletes a vhost and everything in it (its queues with their
    /// messages, its exchanges and bindings); returns whether it existed.
    /// The default vhost can be deleted too, as in RabbitMQ.
    pub fn delete_vhost(&self, name: &str) -> bool {
        let Some(vhost) = self.vhosts.write().remove(name) else {
            return false;
        };
        for q in vhost.queues() {
            let _ = vhost.apply(
                crate::Command::DeleteQueue {
                    name: q.spec.name.clone(),
                    if_unused: false,
                    if_empty: false,
                },
                crate::OPERATOR,
            );
        }
        for x in vhost.exchanges_info() {
            if crate::BUILTIN_EXCHANGES.iter().any(|(b, _)| *b == x.name) {
                continue;
            }
            let _ = vhost.apply(
                crate::Command::DeleteExchange {
                    name: x.name,
                    if_unused: false,
                },
                crate::OPERATOR,
            );
        }
        self.store
            .submit(crate::store::StoreOp::DeleteVhost(name.to_owned()), None);
        true
    }

    /// Every policy.
    pub fn policies(&self) -> &Arc<crate::policy::Policies> {
        &self.policies
    }

    /// Logged-in connections of every protocol, and message counters.
    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }

    /// Every vhost, by name.
    pub fn vhosts(&self) -> Vec<Arc<Vhost>> {
        let mut all: Vec<_> = self.vhosts.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// A vhost by name.
    pub fn vhost(&self, name: &str) -> Option<Arc<Vhost>> {
        self.vhosts.read().get(name).cloned()
    }

    /// A fresh id for a client connection (owner of exclusive queues).
    pub fn next_connection_id(&self) -> u64 {
        self.connection_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// What wakes publishers paused by backpressure.
    pub fn relief(&self) -> &Arc<crate::Relief> {
        &self.relief
    }

    /// The store, for backpressure checks.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A ticket that resolves once everything submitted to the store so far
    /// is durable.
    pub fn barrier(&self) -> crate::Durable {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.store.submit(crate::store::StoreOp::Barrier, Some(tx));
        rx
    }

    /// Block until everything submitted to the store is durable.
    pub fn flush(&self) {
        self.store.flush();
    }
}
