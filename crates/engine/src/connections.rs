//! The connection registry and the broker's counters: every client
//! connection, whatever its protocol, is listed here once logged in (and
//! leaves when its session lets go), with its traffic counters, a summary
//! of its channels, and a way to close it from outside. The management API
//! and the metrics read it; nothing on the message path takes more than an
//! atomic add.
//!
//! One allocation per connection: the [`ConnectionEntry`] (traffic, kill
//! switch, login details) is made with the session and shared with the
//! driver and the registry, so an idle device costs as little as possible.
//!
//! The engine knows no protocol: the protocol is a label the adapter
//! gives (`"AMQP 0-9-1"`, `"MQTT 5.0"`, ...), and message counters are
//! kept per adapter label ([`MessageCounters`], through
//! [`Connections::counters`]).

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};
use switchyard_model::FieldTable;
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

/// See [`Kill::set_hook`].
pub type KillHook = Box<dyn Fn() + Send + Sync>;

/// A request, from outside, that a connection close; the connection's
/// driver waits on it (or its hook wakes a parked connection).
#[derive(Default)]
pub struct Kill {
    killed: AtomicBool,
    notify: Notify,
    /// The reason given, and what to call on kill.
    state: Mutex<(Option<String>, Option<KillHook>)>,
}

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
        let hook = {
            let mut state = self.state.lock();
            state.0 = Some(reason.to_owned());
            state.1.take()
        };
        self.killed.store(true, Ordering::Release);
        self.notify.notify_waiters();
        self.notify.notify_one();
        if let Some(hook) = hook {
            hook();
        }
    }

    /// Sets (or clears) what [`Kill::kill`] calls besides waking its
    /// waiter, for a connection that may have no task waiting (a parked
    /// one).
    pub fn set_hook(&self, hook: Option<KillHook>) {
        self.state.lock().1 = hook;
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
        self.state.lock().0.clone()
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

/// What a connection said at login, set once.
#[derive(Debug)]
pub struct Login {
    /// Protocol label (`"AMQP 0-9-1"`, `"MQTT 3.1.1"`, `"Web STOMP"`, ...).
    pub protocol: &'static str,
    /// Logged-in user.
    pub user: String,
    /// Its vhost.
    pub vhost: String,
    /// The MQTT client id, or AMQP's `connection_name`, if any.
    pub client_id: Option<String>,
    /// Heartbeat or keep-alive in seconds (0: none).
    pub timeout: u64,
    /// Our address.
    pub local: Option<SocketAddr>,
    /// Milliseconds since the Unix epoch at login.
    pub connected_at: u64,
    /// What the client said about itself (AMQP's client properties).
    pub client_properties: FieldTable,
}

/// One connection, listed once logged in.
#[derive(Debug)]
pub struct ConnectionEntry {
    /// Engine connection id (owner of exclusive queues and outboxes).
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// Bytes in and out.
    pub traffic: Traffic,
    /// Closes it from outside.
    pub kill: Kill,
    /// Its open channels (AMQP's; MQTT and STOMP keep none).
    pub channels: Mutex<Vec<ChannelSummary>>,
    login: OnceLock<Login>,
}

/// Login details of a connection listed before it logged in (never
/// happens for a listed one; keeps the accessors total).
static NO_LOGIN: Login = Login {
    protocol: "",
    user: String::new(),
    vhost: String::new(),
    client_id: None,
    timeout: 0,
    local: None,
    connected_at: 0,
    client_properties: FieldTable::new(),
};

impl ConnectionEntry {
    /// What it said at login.
    pub fn login(&self) -> &Login {
        self.login.get().unwrap_or(&NO_LOGIN)
    }

    /// `"peer -> local"`, as RabbitMQ names connections.
    pub fn name(&self) -> String {
        match self.login().local {
            Some(local) => format!("{} -> {}", self.peer, local),
            None => self.peer.to_string(),
        }
    }

    /// Its protocol label.
    pub fn protocol(&self) -> &'static str {
        self.login().protocol
    }

    /// Its user.
    pub fn user(&self) -> &str {
        &self.login().user
    }

    /// Its vhost.
    pub fn vhost(&self) -> &str {
        &self.login().vhost
    }
}

/// What an adapter tells the registry about a connection that logged in.
#[derive(Debug, Clone)]
pub struct NewConnection {
    /// Protocol label.
    pub protocol: &'static str,
    /// Logged-in user.
    pub user: String,
    /// Its vhost.
    pub vhost: String,
    /// Client id or connection name.
    pub client_id: Option<String>,
    /// Heartbeat or keep-alive, seconds.
    pub timeout: u64,
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
        self.map.read().values().find(|c| c.name() == name).cloned()
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

/// One connection's side of the registry, kept by its session: its entry
/// (counted by the driver from the start), listed once it logged in.
#[derive(Debug)]
pub struct Listing {
    /// The entry, shared with the driver and, once listed, the registry.
    pub entry: Arc<ConnectionEntry>,
    /// The adapter's message counters.
    pub counters: Arc<MessageCounters>,
    /// The listener's address, once the driver said.
    pub local: Option<SocketAddr>,
    /// What the client said about itself, listed with it.
    pub client_properties: FieldTable,
    registry: Arc<Connections>,
    listed: bool,
}

impl Listing {
    /// The listing of connection `id` from `peer`, of adapter `label`
    /// (`"amqp"`, ...).
    #[must_use]
    pub fn new(
        registry: &Arc<Connections>,
        id: u64,
        peer: SocketAddr,
        label: &'static str,
    ) -> Self {
        Self {
            entry: Arc::new(ConnectionEntry {
                id,
                peer,
                traffic: Traffic::default(),
                kill: Kill::default(),
                channels: Mutex::new(Vec::new()),
                login: OnceLock::new(),
            }),
            counters: registry.counters(label),
            local: None,
            client_properties: FieldTable::new(),
            registry: registry.clone(),
            listed: false,
        }
    }

    /// Closes it from outside.
    #[must_use]
    pub fn kill(&self) -> &Kill {
        &self.entry.kill
    }

    /// Lists the connection with what it said at login (once: a second
    /// call keeps the first login's details).
    pub fn register(&mut self, c: NewConnection) {
        let connected_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let _ = self.entry.login.set(Login {
            protocol: c.protocol,
            user: c.user,
            vhost: c.vhost,
            client_id: c.client_id,
            timeout: c.timeout,
            local: self.local,
            connected_at,
            client_properties: std::mem::take(&mut self.client_properties),
        });
        self.registry
            .map
            .write()
            .insert(self.entry.id, self.entry.clone());
        self.listed = true;
    }

    /// Whether it is listed (logged in and not yet gone).
    #[must_use]
    pub fn is_listed(&self) -> bool {
        self.listed
    }

    /// Takes the connection off the list.
    pub fn unregister(&mut self) {
        if std::mem::take(&mut self.listed) {
            self.registry.map.write().remove(&self.entry.id);
        }
    }
}

impl Drop for Listing {
    fn drop(&mut self) {
        self.unregister();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new() -> NewConnection {
        NewConnection {
            protocol: "AMQP 0-9-1",
            user: "guest".into(),
            vhost: "/".into(),
            client_id: None,
            timeout: 60,
        }
    }

    #[test]
    fn listed_from_login_until_the_listing_lets_go() {
        let c = Arc::new(Connections::default());
        let mut l = Listing::new(&c, 7, "127.0.0.1:5000".parse().expect("addr"), "amqp");
        l.local = Some("127.0.0.1:5672".parse().expect("addr"));
        assert!(c.get(7).is_none(), "not listed before login");
        l.register(new());
        assert_eq!(l.entry.name(), "127.0.0.1:5000 -> 127.0.0.1:5672");
        assert_eq!(l.entry.protocol(), "AMQP 0-9-1");
        assert!(c.by_name("127.0.0.1:5000 -> 127.0.0.1:5672").is_some());
        assert_eq!(c.len(), 1);
        l.unregister();
        assert!(c.get(7).is_none());
        l.register(new());
        drop(l);
        assert!(c.is_empty(), "dropping the listing unlists it");
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
    async fn a_kill_wakes_a_waiter_once_with_its_reason_and_calls_the_hook() {
        let k = Arc::new(Kill::default());
        let hooked = Arc::new(AtomicBool::new(false));
        let flag = hooked.clone();
        k.set_hook(Some(Box::new(move || flag.store(true, Ordering::SeqCst))));
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
        assert!(hooked.load(Ordering::SeqCst));
        // Already killed: completes at once.
        k.killed().await;
    }
}
