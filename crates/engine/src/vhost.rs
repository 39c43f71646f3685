//! A vhost: its topology (exchanges, queues, bindings), the one function that
//! changes it ([`Vhost::apply`]), and publishing through it.

use crate::arguments;
use crate::arguments::QueueArguments;
use crate::command::{Command, Outcome};
use crate::error::{EngineError, Result};
use crate::exchange::{Binding, Destination, Exchange, ExchangeKind};
use crate::queue::{Home, Queue, QueueSpec};
use crate::store::{
    BindingRecord, DestinationKind, Durable, ExchangeRecord, QueueRecord, Store, StoreOp,
};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use switchyard_model::Message;
use tokio::sync::oneshot;

/// The connection id of the operator (management API, ctl): it may delete,
/// purge and inspect exclusive queues of any connection, as RabbitMQ's
/// management plugin may.
pub const OPERATOR: u64 = u64::MAX;

/// Exchanges every vhost has.
pub const BUILTIN_EXCHANGES: [(&str, ExchangeKind); 6] = [
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

#[derive(Debug, Default)]
pub(crate) struct Topology {
    pub(crate) exchanges: HashMap<String, Exchange>,
    pub(crate) queues: HashMap<String, Arc<Queue>>,
    /// Exclusive queues by owning connection, so closing a connection does
    /// not scan every queue.
    pub(crate) exclusive: HashMap<u64, Vec<String>>,
}

/// Result of routing and enqueueing one message.
#[derive(Debug)]
pub struct Published {
    /// Queues the message landed in.
    pub queues: usize,
    /// Resolves when every persistent copy is on disk; `None` if nothing
    /// needed writing.
    pub durable: Option<Durable>,
    /// Target queues over their high-water mark ([`Queue::is_full`]) or
    /// behind their consumers ([`Queue::is_behind`]): the publisher should
    /// pause until they clear (see [`crate::Throttle`]). Empty, and not
    /// allocated, when none is.
    pub throttle: Vec<Arc<Queue>>,
    /// A target queue refused it (`x-overflow: reject-publish`): the
    /// publisher is told it was not accepted (confirm nack).
    pub rejected: bool,
}

/// One virtual host.
pub struct Vhost {
    /// Its name.
    pub name: String,
    store: Arc<dyn Store>,
    queue_ids: Arc<AtomicU64>,
    max_queues: Arc<AtomicUsize>,
    pub(crate) topology: RwLock<Topology>,
    /// Handed to each queue: this vhost and the broker's timers.
    home: Home,
}

impl std::fmt::Debug for Vhost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vhost").field("name", &self.name).finish()
    }
}

fn reserved(name: &str) -> bool {
    name.starts_with("amq.")
}

impl Vhost {
    pub(crate) fn new(
        name: &str,
        store: Arc<dyn Store>,
        queue_ids: Arc<AtomicU64>,
        max_queues: Arc<AtomicUsize>,
        home: Home,
    ) -> Self {
        let mut topo = Topology::default();
        for (n, kind) in BUILTIN_EXCHANGES {
            topo.exchanges.insert(
                n.to_owned(),
                Exchange::new(n, kind, true, false, false, Default::default()),
            );
        }
        Self {
            name: name.to_owned(),
            store,
            queue_ids,
            max_queues,
            topology: RwLock::new(topo),
            home,
        }
    }

    /// Look up a queue, enforcing exclusive ownership for `conn`.
    pub fn queue(&self, name: &str, conn: u64) -> Result<Arc<Queue>> {
        let topo = self.topology.read();
        let q = topo
            .queues
            .get(name)
            .ok_or_else(|| EngineError::QueueNotFound(name.to_owned(), self.name.clone()))?;
        check_owner(q, conn)?;
        Ok(q.clone())
    }

    /// Names of all queues (for tests and management).
    pub fn queue_names(&self) -> Vec<String> {
        self.topology.read().queues.keys().cloned().collect()
    }

    /// Every binding whose destination is `dest`, with its source exchange
    /// (adapters rebuild per-binding state, e.g. MQTT subscription QoS).
    pub fn bindings_to(&self, dest: &Destination) -> Vec<(String, Binding)> {
        let topo = self.topology.read();
        let mut out = Vec::new();
        for x in topo.exchanges.values() {
            for b in x.bindings().to(dest) {
                out.push((x.name.clone(), b.clone()));
            }
        }
        out
    }

    /// Whether an exchange exists.
    pub fn has_exchange(&self, name: &str) -> bool {
        self.topology.read().exchanges.contains_key(name)
    }

    /// Apply a topology change on behalf of connection `conn`.
    /// Declares a queue an adapter names itself (never a client), exclusive
    /// to connection `conn`: its name may use the reserved `amq.` prefix.
    pub fn declare_reserved_queue(&self, spec: QueueSpec, conn: u64) -> Result<Outcome> {
        if spec.exclusive_owner != Some(conn) {
            return Err(EngineError::AccessRefused(format!(
                "queue name '{}' contains reserved prefix 'amq.*'",
                spec.name
            )));
        }
        let mut topo = self.topology.write();
        let out = self.declare_queue(&mut topo, spec, conn, true);
        drop(topo);
        self.apply_policy(&out);
        out
    }

    /// Gives every exchange the alternate exchange its policy names (or
    /// none), after policies changed.
    pub(crate) fn apply_exchange_policies(&self) {
        let mut topo = self.topology.write();
        for x in topo.exchanges.values_mut() {
            x.policy_alternate = self.home.policies.alternate_for(&self.name, &x.name);
        }
    }

    /// The broker's own counters.
    pub(crate) fn counters(&self) -> &crate::connections::EngineCounters {
        &self.home.counters
    }

    /// Gives a declared queue the policy that matches it (outside the
    /// topology lock: applying may dead-letter).
    fn apply_policy(&self, declared: &Result<Outcome>) {
        if let Ok(Outcome::Queue { name, .. }) = declared
            && let Some(q) = self.find_queue(name)
        {
            crate::policy::apply(&self.home.policies, &q);
        }
    }

    pub fn apply(&self, cmd: Command, conn: u64) -> Result<Outcome> {
        let mut topo = self.topology.write();
        match cmd {
            Command::DeclareExchange {
                name,
                kind,
                durable,
                auto_delete,
                internal,
                arguments,
            } => {
                if name.is_empty() {
                    return Err(EngineError::NotPermitted("the default exchange".into()));
                }
                if let Some(x) = topo.exchanges.get(&name) {
                    let diff = if x.kind != kind {
                        Some("type")
                    } else if x.durable != durable {
                        Some("durable")
                    } else if x.auto_delete != auto_delete {
                        Some("auto_delete")
                    } else if x.internal != internal {
                        Some("internal")
                    } else {
                        arguments::difference(&x.arguments, &arguments)
                    };
                    return match diff {
                        Some(arg) => Err(EngineError::Inequivalent {
                            what: "exchange",
                            name,
                            arg: arg.into(),
                        }),
                        None => Ok(Outcome::Done),
                    };
                }
                if reserved(&name) {
                    return Err(EngineError::AccessRefused(format!(
                        "exchange name '{name}' contains reserved prefix 'amq.*'"
                    )));
                }
                if durable {
                    self.store.submit(
                        StoreOp::PutExchange(ExchangeRecord {
                            vhost: self.name.clone(),
                            name: name.clone(),
                            kind,
                            auto_delete,
                            internal,
                            arguments: arguments.clone(),
                        }),
                        None,
                    );
                }
                let mut x = Exchange::new(&name, kind, durable, auto_delete, internal, arguments);
                x.policy_alternate = self.home.policies.alternate_for(&self.name, &name);
                topo.exchanges.insert(name, x);
                Ok(Outcome::Done)
            }
            Command::DeleteExchange { name, if_unused } => {
                if name.is_empty() || reserved(&name) {
                    return Err(EngineError::AccessRefused(format!(
                        "cannot delete built-in exchange '{name}'"
                    )));
                }
                let x = topo.exchanges.get(&name).ok_or_else(|| {
                    EngineError::ExchangeNotFound(name.clone(), self.name.clone())
                })?;
                if if_unused && !x.bindings().is_empty() {
                    return Err(EngineError::PreconditionFailed(format!(
                        "exchange '{name}' in vhost '{}' in use",
                        self.name
                    )));
                }
                self.remove_exchange(&mut topo, &name);
                Ok(Outcome::Done)
            }
            Command::DeclareQueue(spec) => {
                let out = self.declare_queue(&mut topo, spec, conn, false);
                drop(topo);
                self.apply_policy(&out);
                out
            }
            Command::DeleteQueue {
                name,
                if_unused,
                if_empty,
            } => {
                let q = topo
                    .queues
                    .get(&name)
                    .ok_or_else(|| EngineError::QueueNotFound(name.clone(), self.name.clone()))?;
                check_owner(q, conn)?;
                let n = q.delete(if_unused, if_empty)?;
                self.remove_queue(&mut topo, &name);
                Ok(Outcome::Messages(n))
            }
            Command::Bind { source, binding: b } => {
                let durable = self.check_binding_ends(&topo, &source, &b.destination, conn)?;
                let x = topo.exchanges.get_mut(&source).ok_or_else(|| {
                    EngineError::ExchangeNotFound(source.clone(), self.name.clone())
                })?;
                if x.kind == ExchangeKind::Headers
                    && crate::exchange::headers::MatchMode::from_args(&b.arguments).is_none()
                {
                    return Err(EngineError::PreconditionFailed(
                        "invalid x-match field value; expected one of all, any, all-with-x, any-with-x"
                            .into(),
                    ));
                }
                if x.bind(b.clone()) && durable {
                    let record = self.binding_record(&source, &b);
                    self.store.submit(StoreOp::PutBinding(record), None);
                }
                Ok(Outcome::Done)
            }
            Command::Unbind { source, binding: b } => {
                let durable = self.check_binding_ends(&topo, &source, &b.destination, conn)?;
                if topo
                    .exchanges
                    .get_mut(&source)
                    .is_some_and(|x| x.unbind(&b))
                {
                    if durable {
                        let record = self.binding_record(&source, &b);
                        self.store.submit(StoreOp::DeleteBinding(record), None);
                    }
                    self.auto_delete_exchange(&mut topo, &source);
                }
                Ok(Outcome::Done)
            }
            Command::PurgeQueue { name } => {
                let q = topo
                    .queues
                    .get(&name)
                    .ok_or_else(|| EngineError::QueueNotFound(name.clone(), self.name.clone()))?;
                check_owner(q, conn)?;
                Ok(Outcome::Messages(q.purge()))
            }
        }
    }

    fn declare_queue(
        &self,
        topo: &mut Topology,
        mut spec: QueueSpec,
        conn: u64,
        reserved_ok: bool,
    ) -> Result<Outcome> {
        if let Some(q) = topo.queues.get(&spec.name) {
            check_owner(q, conn)?;
            let diff = if q.spec.durable != spec.durable {
                Some("durable")
            } else if q.spec.auto_delete != spec.auto_delete {
                Some("auto_delete")
            } else if q.spec.exclusive_owner.is_some() != spec.exclusive_owner.is_some() {
                Some("exclusive")
            } else {
                arguments::difference(&q.spec.arguments, &spec.arguments)
            };
            if let Some(arg) = diff {
                return Err(EngineError::Inequivalent {
                    what: "queue",
                    name: spec.name,
                    arg: arg.into(),
                });
            }
            q.touch();
            let (messages, consumers) = q.counts();
            return Ok(Outcome::Queue {
                name: spec.name,
                messages,
                consumers,
            });
        }
        let limit = self.max_queues.load(Ordering::Relaxed);
        if topo.queues.len() >= limit {
            return Err(EngineError::ResourceLimit(format!(
                "cannot declare queue '{}': queue limit in vhost '{}' ({limit}) is reached",
                spec.name, self.name
            )));
        }
        let args = QueueArguments::parse(&spec.arguments).map_err(|e| match e {
            EngineError::PreconditionFailed(m) => EngineError::PreconditionFailed(format!(
                "{m} (queue '{}' in vhost '{}')",
                spec.name, self.name
            )),
            other => other,
        })?;
        if spec.name.is_empty() {
            spec.name = generated_name();
        } else if reserved(&spec.name) && !reserved_ok {
            return Err(EngineError::AccessRefused(format!(
                "queue name '{}' contains reserved prefix 'amq.*'",
                spec.name
            )));
        }
        let id = self.queue_ids.fetch_add(1, Ordering::Relaxed);
        if spec.durable && spec.exclusive_owner.is_none() {
            self.store.submit(
                StoreOp::PutQueue(QueueRecord {
                    id,
                    vhost: self.name.clone(),
                    name: spec.name.clone(),
                    auto_delete: spec.auto_delete,
                    arguments: spec.arguments.clone(),
                }),
                None,
            );
        }
        let name = spec.name.clone();
        let q = Queue::new(
            &self.name,
            spec,
            args,
            id,
            self.store.clone(),
            self.home.clone(),
        );
        if let Some(owner) = q.spec.exclusive_owner {
            topo.exclusive.entry(owner).or_default().push(name.clone());
        }
        topo.queues.insert(name.clone(), q);
        Ok(Outcome::Queue {
            name,
            messages: 0,
            consumers: 0,
        })
    }

    /// Both ends must exist; returns whether the binding is durable.
    fn check_binding_ends(
        &self,
        topo: &Topology,
        source: &str,
        dest: &Destination,
        conn: u64,
    ) -> Result<bool> {
        if source.is_empty() || (dest.kind == DestinationKind::Exchange && dest.name.is_empty()) {
            return Err(EngineError::NotPermitted("the default exchange".into()));
        }
        let x = topo
            .exchanges
            .get(source)
            .ok_or_else(|| EngineError::ExchangeNotFound(source.to_owned(), self.name.clone()))?;
        let dest_durable = match dest.kind {
            DestinationKind::Queue => {
                let q = topo.queues.get(&*dest.name).ok_or_else(|| {
                    EngineError::QueueNotFound(dest.name.to_string(), self.name.clone())
                })?;
                check_owner(q, conn)?;
                q.persistent()
            }
            DestinationKind::Exchange => {
                topo.exchanges
                    .get(&*dest.name)
                    .ok_or_else(|| {
                        EngineError::ExchangeNotFound(dest.name.to_string(), self.name.clone())
                    })?
                    .durable
            }
        };
        Ok(x.durable && dest_durable)
    }

    fn binding_record(&self, source: &str, b: &Binding) -> BindingRecord {
        BindingRecord {
            vhost: self.name.clone(),
            source: source.to_owned(),
            destination_kind: b.destination.kind,
            destination: b.destination.name.to_string(),
            routing_key: b.routing_key.clone(),
            arguments: b.arguments.clone(),
        }
    }

    /// Remove every binding pointing at `dest`, persisting removals and
    /// cascading auto-delete exchanges.
    fn unbind_everywhere(&self, topo: &mut Topology, dest: &Destination, dest_durable: bool) {
        let mut emptied = Vec::new();
        let mut gone_records = Vec::new();
        for x in topo.exchanges.values_mut() {
            let gone = x.unbind_destination(dest);
            if gone.is_empty() {
                continue;
            }
            if x.durable && dest_durable {
                gone_records.extend(gone.iter().map(|b| self.binding_record(&x.name, b)));
            }
            if x.auto_delete && x.bindings().is_empty() {
                emptied.push(x.name.clone());
            }
        }
        for r in gone_records {
            self.store.submit(StoreOp::DeleteBinding(r), None);
        }
        for name in emptied {
            self.remove_exchange(topo, &name);
        }
    }

    fn auto_delete_exchange(&self, topo: &mut Topology, name: &str) {
        if topo
            .exchanges
            .get(name)
            .is_some_and(|x| x.auto_delete && x.bindings().is_empty())
        {
            self.remove_exchange(topo, name);
        }
    }

    fn remove_exchange(&self, topo: &mut Topology, name: &str) {
        let Some(x) = topo.exchanges.remove(name) else {
            return;
        };
        if x.durable {
            for b in x.bindings().iter() {
                let dest_durable = match b.destination.kind {
                    DestinationKind::Queue => topo
                        .queues
                        .get(&*b.destination.name)
                        .is_some_and(|q| q.persistent()),
                    DestinationKind::Exchange => topo
                        .exchanges
                        .get(&*b.destination.name)
                        .is_some_and(|e| e.durable),
                };
                if dest_durable {
                    self.store
                        .submit(StoreOp::DeleteBinding(self.binding_record(name, b)), None);
                }
            }
            self.store.submit(
                StoreOp::DeleteExchange {
                    vhost: self.name.clone(),
                    name: name.to_owned(),
                },
                None,
            );
        }
        self.unbind_everywhere(topo, &Destination::exchange(name), x.durable);
    }

    fn remove_queue(&self, topo: &mut Topology, name: &str) {
        let Some(q) = topo.queues.remove(name) else {
            return;
        };
        if let Some(owner) = q.spec.exclusive_owner
            && let Some(names) = topo.exclusive.get_mut(&owner)
        {
            names.retain(|n| n != name);
            if names.is_empty() {
                topo.exclusive.remove(&owner);
            }
        }
        self.unbind_everywhere(topo, &Destination::queue(name), q.persistent());
        if q.persistent() {
            self.store.submit(
                StoreOp::DeleteQueue {
                    id: q.id,
                    vhost: self.name.clone(),
                    name: name.to_owned(),
                },
                None,
            );
        }
    }

    /// Delete a queue whose last consumer went away (auto-delete), unless it
    /// has gained a consumer again meanwhile.
    pub fn auto_delete_queue(&self, queue: &Arc<Queue>) {
        let mut topo = self.topology.write();
        let same = topo
            .queues
            .get(queue.name())
            .is_some_and(|q| Arc::ptr_eq(q, queue));
        if same && queue.delete(true, false).is_ok() {
            self.remove_queue(&mut topo, queue.name());
        }
    }

    /// Delete every exclusive queue owned by connection `conn`.
    pub fn drop_connection(&self, conn: u64) {
        let mut topo = self.topology.write();
        let owned = topo.exclusive.remove(&conn).unwrap_or_default();
        for name in owned {
            if let Some(q) = topo.queues.get(&name) {
                let _ = q.delete(false, false);
            }
            self.remove_queue(&mut topo, &name);
        }
    }

    /// Route `message` through `exchange` into its queues.
    pub fn publish(&self, message: Message, want_durable: bool) -> Result<Published> {
        self.publish_from(message, want_durable, true)
    }

    /// Route a delayed message whose time has come.
    pub(crate) fn publish_now(&self, message: Message) -> Result<Published> {
        self.publish_from(message, false, false)
    }

    fn publish_from(
        &self,
        mut message: Message,
        want_durable: bool,
        may_delay: bool,
    ) -> Result<Published> {
        // Where it goes now, or for how long a delayed exchange holds it.
        let routed: std::result::Result<Vec<Arc<Queue>>, (u64, bool)> = {
            let topo = self.topology.read();
            let x = topo.exchanges.get(&message.exchange).ok_or_else(|| {
                EngineError::ExchangeNotFound(message.exchange.clone(), self.name.clone())
            })?;
            if x.internal {
                return Err(EngineError::AccessRefused(format!(
                    "cannot publish to internal exchange '{}' in vhost '{}'",
                    x.name, self.name
                )));
            }
            let delay = if may_delay && crate::delayed::is_delayed(&x.arguments) {
                crate::delayed::delay_of(&message)
            } else {
                None
            };
            x.stats.publish_in.fetch_add(1, Ordering::Relaxed);
            match delay {
                Some(ms) => Err((ms, x.durable)),
                None => {
                    let queues = crate::route::route(&topo, x, &message);
                    if !queues.is_empty() {
                        x.stats.publish_out.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(queues)
                }
            }
        };
        let queues = match routed {
            Ok(queues) => queues,
            Err((ms, durable_x)) => return Ok(self.hold(message, ms, durable_x, want_durable)),
        };
        crate::route::strip_bcc(&mut message);
        let message = Arc::new(message);
        let persistent = message.is_persistent();
        let last_persisting = if persistent && want_durable {
            queues.iter().rposition(|q| q.persistent())
        } else {
            None
        };
        let (mut tx, rx) = match last_persisting {
            Some(_) => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let mut rejected = false;
        for (i, q) in queues.iter().enumerate() {
            let ticket = if Some(i) == last_persisting {
                tx.take()
            } else {
                None
            };
            let done = q.enqueue(message.clone(), ticket);
            rejected |= done.rejected;
            if let Some(unused) = done.unused {
                // Not stored there (the queue vanished under us, or refused
                // it); earlier copies may still be in flight, so resolve
                // only after everything before now.
                self.store.submit(StoreOp::Barrier, Some(unused));
            }
        }
        let throttle = queues
            .iter()
            .filter(|q| q.is_full() || q.is_behind())
            .cloned()
            .collect();
        Ok(Published {
            queues: queues.len(),
            durable: rx,
            throttle,
            rejected,
        })
    }

    /// Hold a message of a delayed exchange until its `x-delay` passes.
    fn hold(&self, message: Message, ms: u64, durable_x: bool, want_durable: bool) -> Published {
        let persist = durable_x && message.is_persistent();
        let (tx, rx) = if persist && want_durable {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        match self.home.vhost.upgrade() {
            Some(me) => self.home.delayed.hold(&me, message, ms, tx, persist),
            None => drop(tx),
        }
        // Counted as routed: where it goes is decided at release, and a
        // mandatory publish must not come back for that.
        Published {
            queues: 1,
            durable: rx,
            throttle: Vec::new(),
            rejected: false,
        }
    }

    /// The queues `m` routes to from its exchange; none if the exchange
    /// does not exist (a dead letter to a missing exchange is dropped).
    pub(crate) fn route_existing(&self, m: &Message) -> Vec<Arc<Queue>> {
        let topo = self.topology.read();
        match topo.exchanges.get(&m.exchange) {
            Some(x) => crate::route::route(&topo, x, m),
            None => Vec::new(),
        }
    }

    /// Delete a queue unused for its `x-expires` (checked again here, under
    /// the topology lock, in case it was used meanwhile).
    pub(crate) fn expire_queue(&self, queue: &Arc<Queue>) {
        let mut topo = self.topology.write();
        let same = topo
            .queues
            .get(queue.name())
            .is_some_and(|q| Arc::ptr_eq(q, queue));
        if same && queue.unused_for_expiry() && queue.delete(true, false).is_ok() {
            tracing::debug!(queue = %queue.name(), vhost = %self.name, "queue expired (x-expires)");
            self.remove_queue(&mut topo, queue.name());
        }
    }

    pub(crate) fn recover_exchange(&self, r: ExchangeRecord) {
        let x = Exchange::new(
            &r.name,
            r.kind,
            true,
            r.auto_delete,
            r.internal,
            r.arguments,
        );
        self.topology.write().exchanges.insert(r.name, x);
    }

    pub(crate) fn recover_queue(&self, r: QueueRecord) -> Arc<Queue> {
        let spec = QueueSpec {
            name: r.name.clone(),
            durable: true,
            exclusive_owner: None,
            auto_delete: r.auto_delete,
            arguments: r.arguments,
        };
        // Checked when it was declared; a stored table this version reads
        // differently keeps the queue, without the arguments it refuses.
        let args = QueueArguments::parse(&spec.arguments).unwrap_or_else(|e| {
            tracing::warn!(queue = %r.name, vhost = %self.name, error = %e, "recovered queue arguments not understood");
            QueueArguments::default()
        });
        let q = Queue::new(
            &self.name,
            spec,
            args,
            r.id,
            self.store.clone(),
            self.home.clone(),
        );
        self.topology.write().queues.insert(r.name, q.clone());
        q
    }

    pub(crate) fn recover_binding(&self, r: BindingRecord) {
        let mut topo = self.topology.write();
        let dest = Destination {
            kind: r.destination_kind,
            name: r.destination.as_str().into(),
        };
        let ok = match dest.kind {
            DestinationKind::Queue => topo.queues.contains_key(&r.destination),
            DestinationKind::Exchange => topo.exchanges.contains_key(&r.destination),
        };
        if let (true, Some(x)) = (ok, topo.exchanges.get_mut(&r.source)) {
            x.bind(Binding {
                destination: dest,
                routing_key: r.routing_key,
                arguments: r.arguments,
            });
        } else {
            tracing::warn!(vhost = %self.name, source = %r.source, dest = %r.destination, "dropping binding with a missing end");
        }
    }
}

fn check_owner(q: &Queue, conn: u64) -> Result<()> {
    match q.spec.exclusive_owner {
        Some(owner) if owner != conn && conn != OPERATOR => {
            Err(EngineError::QueueLocked(q.name().to_owned()))
        }
        _ => Ok(()),
    }
}

fn generated_name() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    let tail: String = (0..22)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("amq.gen-{tail}")
}
