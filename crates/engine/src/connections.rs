//! The connection registry and the broker's counters: every client
//! connection, whatever its protocol, registers here once logged in (and
//! leaves when its [`Registration`] drops), with its traffic counters, a
//! summary of its channels, and a way to close it from outside. The
//! management API and the metrics read it; nothing on the message path
//! takes more than an atomic add.
//!
//! The engine knows no protocol: the protocol is a label the adapter
//! gives (`"AMQP 0-9-1"`, `"MQTT 5.0"`, ...), and message counters are
//! kept per adapter label ([`MessageCounters`], through
//! [`Connections::counters`]).

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Bytes and reads/writes of one connection, counted by its driver.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Bytes read.
    pub recv_oct: AtomicU64,
    /// Reads that returned data.
    pub recv_cnt: AtomicU64,
    /// Bytes written.
    pub send_oct: AtomicU64,
    /// Writes.
    pub send_cnt: AtomicU64,
}

impl Traffic {
    /// `n` bytes were read.
    pub fn received(&self, n: usize) {
        self.recv_oct.fetch_add(n as u64, Ordering::Relaxed);
        self.recv_cnt.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` bytes were written.
    pub fn sent(&self, n: usize) {
        self.send_oct.fetch_add(n as u64, Ordering::Relaxed);
        self.send_cnt.fetch_add(1, Ordering::Relaxed);
    }
}

/// A request, from outside, that a connection close; the connection's
/// driver waits on it.
#[derive(Default)]
pub struct Kill {
    reason: Mutex<Option<String>>,
    killed: AtomicBool,
    notify: Notify,
    /// Called on kill, for a connection that may have no task waiting
    /// (a parked one).
    hook: Mutex<Option<KillHook>>,
}

/// See [`Kill::set_hook`].
pub type KillHook = Box<dyn Fn() + Send + Sync>;

impl std::fmt::Debug for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kill")
            .field("killed", &self.killed)
            .finish_non_exhaustive()
    }
}

impl Kill {
    /// Asks the connection to close, telling its client `reason`.
    pub fn kill(&self, reason: &str) {
        *self.reason.lock() = Some(reason.to_owned());
        self.killed.store(true, Ordering::Release);
        self.notify.notify_waiters();
        self.notify.notify_one();
        let hook = self.hook.lock().take();
        if let Some(hook) = hook {
            hook();
        }
    }

    /// Sets (or clears) what [`Kill::kill`] calls besides waking its
    /// waiter.
    pub fn set_hook(&self, hook: Option<KillHook>) {
        *self.hook.lock() = hook;
    }

    /// Completes once [`Kill::kill`] was called.
    pub async fn killed(&self) {
        while !self.killed.load(Ordering::Acquire) {
            let notified = self.notify.notified();
            if self.killed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// The reason given, once killed.
    pub fn reason(&self) -> Option<String> {
        self.reason.lock().clone()
    }
}

/// One channel of a connection, as the management API lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelSummary {
    /// Channel number.
    pub number: u16,
    /// Per-consumer prefetch (`basic.qos` global = false).
    pub prefetch_count: u32,
    /// Per-channel prefetch (`basic.qos` global = true).
    pub global_prefetch_count: u32,
    /// In confirm mode.
    pub confirm: bool,
    /// In a transaction.
    pub transactional: bool,
    /// Consumers on it.
    pub consumer_count: u32,
}

/// A registered connection.
#[derive(Debug)]
pub struct ConnectionEntry {
    /// Engine connection id (owner of exclusive queues and outboxes).
    pub id: u64,
    /// `"peer -> local"`, as RabbitMQ names connections.
    pub name: String,
    /// Protocol label (`"AMQP 0-9-1"`, `"MQTT 3.1.1"`, `"Web STOMP"`, ...).
    pub protocol: String,
    /// Logged-in user.
    pub user: String,
    /// Its vhost.
    pub vhost: String,
    /// The client's address.
    pub peer: SocketAddr,
    /// Our address.
    pub local: Option<SocketAddr>,
    /// Milliseconds since the Unix epoch at login.
    pub connected_at: u64,
    /// The MQTT client id, or AMQP's `connection_name`, if any.
    pub client_id: Option<String>,
    /// Heartbeat or keep-alive in seconds (0: none).
    pub timeout: u64,
    /// What the client said about itself (AMQP's client properties).
    pub client_properties: switchyard_model::FieldTable,
    /// Bytes in and out.
    pub traffic: Arc<Traffic>,
    /// Closes it from outside.
    pub kill: Arc<Kill>,
    /// Its open channels (AMQP; one pseudo-channel for MQTT and STOMP).
    pub channels: Mutex<Vec<ChannelSummary>>,
}

/// What an adapter tells the registry about a connection that logged in.
#[derive(Debug, Clone)]
pub struct NewConnection {
    /// Engine connection id.
    pub id: u64,
    /// Protocol label.
    pub protocol: String,
    /// Logged-in user.
    pub user: String,
    /// Its vhost.
    pub vhost: String,
    /// The client's address.
    pub peer: SocketAddr,
    /// Our address, if known.
    pub local: Option<SocketAddr>,
    /// Client id or connection name.
    pub client_id: Option<String>,
    /// Heartbeat or keep-alive, seconds.
    pub timeout: u64,
    /// What the client said about itself.
    pub client_properties: switchyard_model::FieldTable,
}

/// Message counters of one adapter label (`"amqp"`, `"mqtt"`, `"stomp"`).
#[derive(Debug, Default)]
pub struct MessageCounters {
    /// Messages received from publishers.
    pub published: AtomicU64,
    /// Deliveries written to consumers (and basic.get answers).
    pub delivered: AtomicU64,
    /// Deliveries acknowledged by consumers.
    pub acked: AtomicU64,
    /// Publishes confirmed to their publishers (AMQP confirm acks, MQTT
    /// PUBACK and PUBREC; STOMP RECEIPTs are not counted).
    pub confirmed: AtomicU64,
    /// Unroutable publishes returned to the publisher (mandatory).
    pub returned: AtomicU64,
    /// Unroutable publishes dropped.
    pub dropped: AtomicU64,
}

impl MessageCounters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters of what the engine does on its own: dead-lettering, by
/// reason (`rejected`, `expired`, `maxlen`, in [`EngineCounters::REASONS`]
/// order).
#[derive(Debug, Default)]
pub struct EngineCounters {
    /// Messages handed to a dead-letter exchange, per reason.
    pub dead_lettered: [AtomicU64; 3],
}

impl EngineCounters {
    /// The reasons of [`EngineCounters::dead_lettered`], in order.
    pub const REASONS: [&'static str; 3] = ["rejected", "expired", "maxlen"];
}

/// Every registered connection, and the adapters' message counters.
#[derive(Debug, Default)]
pub struct Connections {
    map: RwLock<HashMap<u64, Arc<ConnectionEntry>>>,
    counters: RwLock<Vec<(&'static str, Arc<MessageCounters>)>>,
    /// The engine's own counters.
    pub engine: Arc<EngineCounters>,
}

impl Connections {
    /// Registers a connection; it is listed until the returned
    /// [`Registration`] drops.
    pub fn register(
        self: &Arc<Self>,
        c: NewConnection,
        traffic: Arc<Traffic>,
        kill: Arc<Kill>,
    ) -> Registration {
        let name = match c.local {
            Some(local) => format!("{} -> {}", c.peer, local),
            None => c.peer.to_string(),
        };
        let connected_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let entry = Arc::new(ConnectionEntry {
            id: c.id,
            name,
            protocol: c.protocol,
            user: c.user,
            vhost: c.vhost,
            peer: c.peer,
            local: c.local,
            connected_at,
            client_id: c.client_id,
            timeout: c.timeout,
            client_properties: c.client_properties,
            traffic,
            kill,
            channels: Mutex::new(Vec::new()),
        });
        self.map.write().insert(c.id, entry.clone());
        Registration {
            registry: self.clone(),
            entry,
        }
    }

    /// Every connection, in no particular order.
    #[must_use]
    pub fn list(&self) -> Vec<Arc<ConnectionEntry>> {
        self.map.read().values().cloned().collect()
    }

    /// A connection by engine id.
    #[must_use]
    pub fn get(&self, id: u64) -> Option<Arc<ConnectionEntry>> {
        self.map.read().get(&id).cloned()
    }

    /// A connection by name.
    #[must_use]
    pub fn by_name(&self, name: &str) -> Option<Arc<ConnectionEntry>> {
        self.map.read().values().find(|c| c.name == name).cloned()
    }

    /// How many connections are registered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// Whether none is.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message counters of adapter `label`, made on first use.
    pub fn counters(&self, label: &'static str) -> Arc<MessageCounters> {
        if let Some((_, c)) = self.counters.read().iter().find(|(l, _)| *l == label) {
            return c.clone();
        }
        let mut all = self.counters.write();
        if let Some((_, c)) = all.iter().find(|(l, _)| *l == label) {
            return c.clone();
        }
        let c = Arc::new(MessageCounters::default());
        all.push((label, c.clone()));
        c
    }

    /// Every adapter's counters, by label.
    #[must_use]
    pub fn all_counters(&self) -> Vec<(&'static str, Arc<MessageCounters>)> {
        self.counters.read().clone()
    }
}

/// A connection's place in the registry; leaving it drops the entry.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Connections>,
    entry: Arc<ConnectionEntry>,
}

impl Registration {
    /// The entry, to update its channels.
    #[must_use]
    pub fn entry(&self) -> &Arc<ConnectionEntry> {
        &self.entry
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.map.write().remove(&self.entry.id);
    }
}

/// One connection's side of the registry, kept by its session: its
/// counters from the start, its entry once it logged in.
#[derive(Debug)]
pub struct Listing {
    /// Bytes in and out (the driver counts them).
    pub traffic: Arc<Traffic>,
    /// Closes it from outside.
    pub kill: Arc<Kill>,
    /// The listener's address, once the driver said.
    pub local: Option<SocketAddr>,
    /// The adapter's message counters.
    pub counters: Arc<MessageCounters>,
    /// What the client said about itself, listed with it.
    pub client_properties: switchyard_model::FieldTable,
    /// Set once logged in.
    pub registration: Option<Registration>,
    registry: Arc<Connections>,
    id: u64,
}

impl Listing {
    /// The listing of connection `id` of adapter `label` (`"amqp"`, ...).
    #[must_use]
    pub fn new(registry: &Arc<Connections>, id: u64, label: &'static str) -> Self {
        Self {
            traffic: Arc::default(),
            kill: Arc::default(),
            local: None,
            counters: registry.counters(label),
            client_properties: switchyard_model::FieldTable::new(),
            registration: None,
            registry: registry.clone(),
            id,
        }
    }

    /// Lists the connection (again: a second call replaces the entry).
    pub fn register(
        &mut self,
        protocol: String,
        user: String,
        vhost: String,
        peer: SocketAddr,
        client_id: Option<String>,
        timeout: u64,
    ) {
        self.registration = None;
        let c = NewConnection {
            id: self.id,
            protocol,
            user,
            vhost,
            peer,
            local: self.local,
            client_id,
            timeout,
            client_properties: std::mem::take(&mut self.client_properties),
        };
        self.registration = Some(self.registry.register(
            c,
            self.traffic.clone(),
            self.kill.clone(),
        ));
    }

    /// Takes the connection off the list.
    pub fn unregister(&mut self) {
        self.registration = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(id: u64) -> NewConnection {
        NewConnection {
            id,
            protocol: "AMQP 0-9-1".into(),
            user: "guest".into(),
            vhost: "/".into(),
            peer: "127.0.0.1:5000".parse().expect("addr"),
            local: Some("127.0.0.1:5672".parse().expect("addr")),
            client_id: None,
            timeout: 60,
            client_properties: switchyard_model::FieldTable::new(),
        }
    }

    #[test]
    fn registered_until_the_registration_drops() {
        let c = Arc::new(Connections::default());
        let r = c.register(new(7), Arc::default(), Arc::default());
        assert_eq!(r.entry().name, "127.0.0.1:5000 -> 127.0.0.1:5672");
        assert!(c.by_name("127.0.0.1:5000 -> 127.0.0.1:5672").is_some());
        assert_eq!(c.len(), 1);
        drop(r);
        assert!(c.get(7).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn counters_are_one_per_label() {
        let c = Connections::default();
        MessageCounters::bump(&c.counters("amqp").published);
        MessageCounters::bump(&c.counters("amqp").published);
        MessageCounters::bump(&c.counters("mqtt").acked);
        let all = c.all_counters();
        assert_eq!(all.len(), 2);
        assert_eq!(c.counters("amqp").published.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_kill_wakes_a_waiter_once_with_its_reason() {
        let k = Arc::new(Kill::default());
        let waiter = tokio::spawn({
            let k = k.clone();
            async move { k.killed().await }
        });
        tokio::task::yield_now().await;
        k.kill("Closed via management plugin");
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("no panic");
        assert_eq!(k.reason().as_deref(), Some("Closed via management plugin"));
        // Already killed: completes at once.
        k.killed().await;
    }
}
