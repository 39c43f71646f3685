//! Who may log in: users (salted Argon2id password hashes and tags), and
//! per-vhost permissions and topic permissions stored as RabbitMQ stores
//! them. Every protocol adapter and the management API authenticate
//! through one [`Access`].
//!
//! The records persist as the engine's state records (namespaces
//! [`NS_USERS`], [`NS_PERMISSIONS`], [`NS_TOPIC_PERMISSIONS`]), so they are
//! written in order with everything else and survive a crash like a
//! durable queue. On a fresh store a first user is made: `guest`/`guest`
//! (refused from anything but loopback, as in RabbitMQ) or the
//! configured default user.
//!
//! A password check runs the slow KDF once per user and password; the
//! result is remembered as a keyed digest (the key is random per process
//! and never leaves memory), so a device reconnecting a thousand times
//! costs one hash. The KDF runs in [`tokio::task::block_in_place`] when
//! called on a multi-threaded runtime, so the worker's other tasks move to
//! another thread instead of waiting behind it.

pub mod password;
mod records;

pub use records::{Permission, TopicPermission, User, parse_tags};
pub use switchyard_engine::{Identity, PermissionKind, Refused};

use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use switchyard_engine::{Authenticator, Broker};
use thiserror::Error;

/// State namespace of users: key = name, value = JSON [`User`].
pub const NS_USERS: &str = "access.users";
/// State namespace of permissions: key = JSON `[vhost, user]`.
pub const NS_PERMISSIONS: &str = "access.permissions";
/// State namespace of topic permissions: key = JSON `[vhost, user,
/// exchange]`.
pub const NS_TOPIC_PERMISSIONS: &str = "access.topic_permissions";
/// State namespace holding `initialized` once the first user was made.
const NS_META: &str = "access.meta";

/// Most remembered successful logins; past it the memory starts over.
const CACHE_LIMIT: usize = 65_536;

/// The first user of a fresh store, and who may log in from where.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Name of the first user (an administrator with every permission on
    /// `/`).
    pub user: String,
    /// Its password.
    pub password: String,
    /// Users refused from anything but a loopback address.
    pub loopback_users: Vec<String>,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            user: "guest".into(),
            password: "guest".into(),
            loopback_users: vec!["guest".into()],
        }
    }
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChangeError {
    /// The user does not exist.
    #[error("no user '{0}'")]
    NoUser(String),
    /// A permission pattern is not a valid regular expression.
    #[error("invalid regular expression '{0}'")]
    BadPattern(String),
    /// A password hash made with an algorithm this build cannot check.
    #[error("unsupported hashing algorithm '{0}'")]
    BadAlgorithm(String),
}

/// How a user's password is given.
#[derive(Debug, Clone)]
pub enum PasswordSpec {
    /// A clear-text password, hashed here.
    Clear(String),
    /// A hash made elsewhere (definitions import), with its algorithm.
    Hash {
        /// The hash.
        hash: String,
        /// Its `hashing_algorithm`.
        algorithm: String,
    },
    /// No password: the user cannot log in with one.
    None,
    /// Keep the existing user's password (a tags-only update).
    Keep,
}

#[derive(Debug, Default)]
struct State {
    users: BTreeMap<String, User>,
    /// By `(vhost, user)`.
    permissions: BTreeMap<(String, String), Permission>,
    /// The same, compiled (configure, write, read), by vhost then user, so
    /// a check looks up by `&str` without building a key.
    compiled: HashMap<String, HashMap<String, [Pattern; 3]>>,
    /// By `(vhost, user, exchange)`.
    topic: BTreeMap<(String, String, String), TopicPermission>,
}

/// Users and permissions of one broker.
pub struct Access {
    broker: Arc<Broker>,
    state: RwLock<State>,
    loopback_users: Vec<String>,
    /// user → keyed digest of the last password that verified against
    /// its current hash.
    verified: Mutex<HashMap<String, [u8; 32]>>,
    secret: [u8; 32],
    /// A hash to spend the KDF's time on for unknown users, so their
    /// refusal takes as long as a wrong password's.
    decoy: OnceLock<String>,
    /// Password hashes checked with the KDF so far (not from memory).
    hashes: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").finish_non_exhaustive()
    }
}

impl Access {
    /// Loads users and permissions from the broker's recovered state
    /// records (call once, after [`Broker::open`]); on a fresh store makes
    /// the first user from `defaults`.
    #[must_use]
    pub fn open(broker: Arc<Broker>, defaults: &Defaults) -> Arc<Self> {
        let mut state = State::default();
        for (_, value) in broker.take_state(NS_USERS) {
            match serde_json::from_slice::<User>(&value) {
                Ok(u) => {
                    state.users.insert(u.name.clone(), u);
                }
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable user record"),
            }
        }
        for (_, value) in broker.take_state(NS_PERMISSIONS) {
            match serde_json::from_slice::<Permission>(&value) {
                Ok(p) => {
                    let key = (p.vhost.clone(), p.user.clone());
                    state.compile(&p);
                    state.permissions.insert(key, p);
                }
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable permission record"),
            }
        }
        for (_, value) in broker.take_state(NS_TOPIC_PERMISSIONS) {
            match serde_json::from_slice::<TopicPermission>(&value) {
                Ok(p) => {
                    let key = (p.vhost.clone(), p.user.clone(), p.exchange.clone());
                    state.topic.insert(key, p);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an unreadable topic permission record");
                }
            }
        }
        let initialized = !broker.take_state(NS_META).is_empty();
        let mut secret = [0u8; 32];
        rand::fill(&mut secret);
        let access = Arc::new(Self {
            broker,
            state: RwLock::new(state),
            loopback_users: defaults.loopback_users.clone(),
            verified: Mutex::new(HashMap::new()),
            secret,
            decoy: OnceLock::new(),
            hashes: std::sync::atomic::AtomicU64::new(0),
        });
        if !initialized {
            access.first_user(defaults);
        }
        let dynamic: Arc<dyn Authenticator> = access.clone();
        access.broker.set_authenticator(&dynamic);
        access
    }

    /// The first user of a fresh store: an administrator with every
    /// permission on `/`.
    fn first_user(&self, defaults: &Defaults) {
        tracing::info!(user = %defaults.user, "fresh store: creating the first user");
        self.put_user(
            &defaults.user,
            PasswordSpec::Clear(defaults.password.clone()),
            vec!["administrator".into()],
        )
        .expect("a clear-text password is always accepted");
        self.set_permission(Permission {
            user: defaults.user.clone(),
            vhost: switchyard_engine::DEFAULT_VHOST.into(),
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        })
        .expect("the first user exists and .* is a valid pattern");
        self.broker
            .put_state(NS_META, "initialized", Some(b"1".to_vec()));
    }

    // -- logging in ---------------------------------------------------------

    /// Checks `password` for `user` connecting from `peer`.
    ///
    /// # Errors
    ///
    /// [`Refused::BadCredentials`] for an unknown user or a wrong
    /// password, [`Refused::LoopbackOnly`] for a loopback-only user from
    /// elsewhere.
    pub fn authenticate(
        &self,
        user: &str,
        password: &str,
        peer: IpAddr,
    ) -> Result<Identity, Refused> {
        let Some(record) = self.user(user) else {
            // As slow as a wrong password, so the timing does not say
            // which names exist.
            let decoy = self.decoy.get_or_init(|| password::hash("decoy"));
            off_runtime(|| password::verify(password::ARGON2ID, decoy, password));
            return Err(Refused::BadCredentials);
        };
        if !self.check_password(&record, password) {
            return Err(Refused::BadCredentials);
        }
        if !peer.is_loopback() && self.loopback_users.iter().any(|u| u == user) {
            return Err(Refused::LoopbackOnly);
        }
        Ok(Identity {
            user: record.name,
            tags: record.tags,
        })
    }

    fn digest(&self, record: &User, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update((record.name.len() as u64).to_be_bytes());
        h.update(record.name.as_bytes());
        h.update((record.password_hash.len() as u64).to_be_bytes());
        h.update(record.password_hash.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Whether `digest` is the remembered one of `user`.
    fn remembered(&self, user: &str, digest: &[u8; 32]) -> bool {
        self.verified
            .lock()
            .get(user)
            .is_some_and(|known| password::constant_time_eq(known, digest))
    }

    fn check_password(&self, record: &User, password: &str) -> bool {
        let digest = self.digest(record, password);
        if self.remembered(&record.name, &digest) {
            return true;
        }
        // Asked again once this login's turn comes: a burst of logins with
        // the same credentials (devices reconnecting) costs one hash, not
        // one each.
        let modern = record.hashing_algorithm == password::ARGON2ID;
        let ok = off_runtime(|| {
            if self.remembered(&record.name, &digest) {
                return true;
            }
            self.hashes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let ok = password::verify(&record.hashing_algorithm, &record.password_hash, password);
            if ok && modern {
                // Before the turn is given back, so the next one finds it.
                self.remember(&record.name, digest);
            }
            ok
        });
        if !ok {
            return false;
        }
        if !modern {
            // Imported from RabbitMQ: re-hash with Argon2id now that the
            // clear text is at hand.
            let hash = off_runtime(|| password::hash(password));
            let mut upgraded = record.clone();
            upgraded.password_hash = hash;
            upgraded.hashing_algorithm = password::ARGON2ID.into();
            let digest = self.digest(&upgraded, password);
            self.store_user(&upgraded);
            self.state
                .write()
                .users
                .insert(upgraded.name.clone(), upgraded);
            self.remember(&record.name, digest);
        }
        true
    }

    fn remember(&self, user: &str, digest: [u8; 32]) {
        let mut verified = self.verified.lock();
        if verified.len() >= CACHE_LIMIT {
            verified.clear();
        }
        verified.insert(user.to_owned(), digest);
    }

    /// Password hashes checked with the (slow) KDF so far, as opposed to
    /// logins answered from memory.
    #[must_use]
    pub fn kdf_checks(&self) -> u64 {
        self.hashes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether `user`'s permission in `vhost` covers `kind` on the queue
    /// or exchange named `resource` (RabbitMQ's regular-expression match;
    /// the default exchange is named `amq.default`).
    #[must_use]
    pub fn permits(&self, user: &str, vhost: &str, kind: PermissionKind, resource: &str) -> bool {
        let state = self.state.read();
        let Some(patterns) = state.compiled.get(vhost).and_then(|users| users.get(user)) else {
            return false;
        };
        let i = match kind {
            PermissionKind::Configure => 0,
            PermissionKind::Write => 1,
            PermissionKind::Read => 2,
        };
        patterns[i].matches(resource)
    }

    /// Whether `user` may use `vhost` at all (has permissions there).
    #[must_use]
    pub fn may_use_vhost(&self, user: &str, vhost: &str) -> bool {
        self.state
            .read()
            .compiled
            .get(vhost)
            .is_some_and(|users| users.contains_key(user))
    }

    // -- users --------------------------------------------------------------

    /// A user by name.
    #[must_use]
    pub fn user(&self, name: &str) -> Option<User> {
        self.state.read().users.get(name).cloned()
    }

    /// Every user, by name.
    #[must_use]
    pub fn users(&self) -> Vec<User> {
        self.state.read().users.values().cloned().collect()
    }

    /// Creates or replaces a user; returns whether it is new.
    ///
    /// # Errors
    ///
    /// [`ChangeError::BadAlgorithm`] for a hash this build cannot check.
    pub fn put_user(
        &self,
        name: &str,
        password: PasswordSpec,
        tags: Vec<String>,
    ) -> Result<bool, ChangeError> {
        let existing = self.user(name);
        let (password_hash, hashing_algorithm) = match password {
            PasswordSpec::Clear(p) => (
                off_runtime(|| password::hash(&p)),
                password::ARGON2ID.into(),
            ),
            PasswordSpec::Hash { hash, algorithm } => {
                if !password::known_algorithm(&algorithm) {
                    return Err(ChangeError::BadAlgorithm(algorithm));
                }
                (hash, algorithm)
            }
            PasswordSpec::None => (String::new(), password::ARGON2ID.into()),
            PasswordSpec::Keep => match &existing {
                Some(u) => (u.password_hash.clone(), u.hashing_algorithm.clone()),
                None => (String::new(), password::ARGON2ID.into()),
            },
        };
        let user = User {
            name: name.to_owned(),
            password_hash,
            hashing_algorithm,
            tags,
        };
        self.store_user(&user);
        self.verified.lock().remove(name);
        self.state.write().users.insert(name.to_owned(), user);
        Ok(existing.is_none())
    }

    fn store_user(&self, user: &User) {
        let json = encode(user);
        self.broker.put_state(NS_USERS, &user.name, Some(json));
    }

    /// Deletes a user and its permissions; returns whether it existed.
    pub fn delete_user(&self, name: &str) -> bool {
        let mut state = self.state.write();
        if state.users.remove(name).is_none() {
            return false;
        }
        self.broker.put_state(NS_USERS, name, None);
        let perms: Vec<_> = state
            .permissions
            .keys()
            .filter(|(_, u)| u == name)
            .cloned()
            .collect();
        for key in perms {
            state.forget_compiled(&key);
            state.permissions.remove(&key);
            self.broker
                .put_state(NS_PERMISSIONS, &permission_key(&key.0, &key.1), None);
        }
        let topic: Vec<_> = state
            .topic
            .keys()
            .filter(|(_, u, _)| u == name)
            .cloned()
            .collect();
        for key in topic {
            state.topic.remove(&key);
            self.broker.put_state(
                NS_TOPIC_PERMISSIONS,
                &topic_key(&key.0, &key.1, &key.2),
                None,
            );
        }
        drop(state);
        self.verified.lock().remove(name);
        true
    }

    // -- permissions --------------------------------------------------------

    /// Every permission, by vhost then user.
    #[must_use]
    pub fn permissions(&self) -> Vec<Permission> {
        self.state.read().permissions.values().cloned().collect()
    }

    /// The permission of `user` in `vhost`.
    #[must_use]
    pub fn permission(&self, vhost: &str, user: &str) -> Option<Permission> {
        self.state
            .read()
            .permissions
            .get(&(vhost.to_owned(), user.to_owned()))
            .cloned()
    }

    /// Sets a user's permission in a vhost; returns whether it is new.
    ///
    /// # Errors
    ///
    /// [`ChangeError::NoUser`], or [`ChangeError::BadPattern`] for a
    /// pattern that is not a regular expression.
    pub fn set_permission(&self, p: Permission) -> Result<bool, ChangeError> {
        for re in [&p.configure, &p.write, &p.read] {
            check_pattern(re)?;
        }
        let mut state = self.state.write();
        if !state.users.contains_key(&p.user) {
            return Err(ChangeError::NoUser(p.user));
        }
        let json = encode(&p);
        self.broker.put_state(
            NS_PERMISSIONS,
            &permission_key(&p.vhost, &p.user),
            Some(json),
        );
        let key = (p.vhost.clone(), p.user.clone());
        state.compile(&p);
        Ok(state.permissions.insert(key, p).is_none())
    }

    /// Removes a user's permission in a vhost; returns whether it existed.
    pub fn clear_permission(&self, vhost: &str, user: &str) -> bool {
        let key = (vhost.to_owned(), user.to_owned());
        let removed = {
            let mut state = self.state.write();
            state.forget_compiled(&key);
            state.permissions.remove(&key).is_some()
        };
        if removed {
            self.broker
                .put_state(NS_PERMISSIONS, &permission_key(vhost, user), None);
        }
        removed
    }

    /// Every topic permission.
    #[must_use]
    pub fn topic_permissions(&self) -> Vec<TopicPermission> {
        self.state.read().topic.values().cloned().collect()
    }

    /// Sets a topic permission; returns whether it is new.
    ///
    /// # Errors
    ///
    /// As [`Access::set_permission`].
    pub fn set_topic_permission(&self, p: TopicPermission) -> Result<bool, ChangeError> {
        for re in [&p.write, &p.read] {
            check_pattern(re)?;
        }
        let mut state = self.state.write();
        if !state.users.contains_key(&p.user) {
            return Err(ChangeError::NoUser(p.user));
        }
        let json = encode(&p);
        self.broker.put_state(
            NS_TOPIC_PERMISSIONS,
            &topic_key(&p.vhost, &p.user, &p.exchange),
            Some(json),
        );
        let key = (p.vhost.clone(), p.user.clone(), p.exchange.clone());
        Ok(state.topic.insert(key, p).is_none())
    }

    /// Removes the topic permissions of `user` in `vhost` (on one
    /// `exchange`, or all of them); returns how many went.
    pub fn clear_topic_permissions(
        &self,
        vhost: &str,
        user: &str,
        exchange: Option<&str>,
    ) -> usize {
        let mut state = self.state.write();
        let keys: Vec<_> = state
            .topic
            .keys()
            .filter(|(v, u, e)| v == vhost && u == user && exchange.is_none_or(|x| x == e))
            .cloned()
            .collect();
        for key in &keys {
            state.topic.remove(key);
            self.broker.put_state(
                NS_TOPIC_PERMISSIONS,
                &topic_key(&key.0, &key.1, &key.2),
                None,
            );
        }
        keys.len()
    }

    /// Forgets every permission and topic permission in a deleted vhost.
    pub fn forget_vhost(&self, vhost: &str) {
        let (users, topic_users): (Vec<String>, Vec<String>) = {
            let state = self.state.read();
            (
                state
                    .permissions
                    .keys()
                    .filter(|(v, _)| v == vhost)
                    .map(|(_, u)| u.clone())
                    .collect(),
                state
                    .topic
                    .keys()
                    .filter(|(v, _, _)| v == vhost)
                    .map(|(_, u, _)| u.clone())
                    .collect(),
            )
        };
        for user in users {
            self.clear_permission(vhost, &user);
        }
        for user in topic_users {
            self.clear_topic_permissions(vhost, &user, None);
        }
    }
}

impl Authenticator for Access {
    fn authenticate(&self, user: &str, password: &str, peer: IpAddr) -> Result<Identity, Refused> {
        Self::authenticate(self, user, password, peer)
    }

    fn may_use_vhost(&self, user: &str, vhost: &str) -> bool {
        Self::may_use_vhost(self, user, vhost)
    }

    fn permits(&self, user: &str, vhost: &str, kind: PermissionKind, resource: &str) -> bool {
        Self::permits(self, user, vhost, kind, resource)
    }
}

/// A permission's regular expression, compiled. RabbitMQ's empty
/// pattern matches nothing (an empty regex would match everything).
#[derive(Debug, Clone)]
enum Pattern {
    Nothing,
    Regex(regex::Regex),
}

impl Pattern {
    fn of(re: &str) -> Self {
        if re.is_empty() {
            return Self::Nothing;
        }
        // Checked when the permission was set (or stored by a build that
        // checked it); a pattern that no longer compiles allows nothing.
        regex::Regex::new(re).map_or(Self::Nothing, Self::Regex)
    }

    fn matches(&self, resource: &str) -> bool {
        match self {
            Self::Nothing => false,
            Self::Regex(r) => r.is_match(resource),
        }
    }
}

impl State {
    /// Compiles `p`'s patterns (replacing any the user had in the vhost).
    fn compile(&mut self, p: &Permission) {
        let patterns = [
            Pattern::of(&p.configure),
            Pattern::of(&p.write),
            Pattern::of(&p.read),
        ];
        self.compiled
            .entry(p.vhost.clone())
            .or_default()
            .insert(p.user.clone(), patterns);
    }

    /// Drops the compiled patterns of `(vhost, user)`.
    fn forget_compiled(&mut self, (vhost, user): &(String, String)) {
        if let Some(users) = self.compiled.get_mut(vhost) {
            users.remove(user);
            if users.is_empty() {
                self.compiled.remove(vhost);
            }
        }
    }
}

/// A record as stored: JSON (strings and lists only, so it cannot fail).
fn encode(record: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(record).expect("records of strings serialise")
}

fn permission_key(vhost: &str, user: &str) -> String {
    serde_json::to_string(&(vhost, user)).expect("strings serialise")
}

fn topic_key(vhost: &str, user: &str, exchange: &str) -> String {
    serde_json::to_string(&(vhost, user, exchange)).expect("strings serialise")
}

fn check_pattern(re: &str) -> Result<(), ChangeError> {
    regex::Regex::new(re)
        .map(drop)
        .map_err(|_| ChangeError::BadPattern(re.to_owned()))
}

/// Runs the slow `f` so that it does not hold up the runtime's other
/// tasks: in [`tokio::task::block_in_place`] on a multi-threaded runtime,
/// directly elsewhere. At most [`KDF_PARALLEL`] run at once (each Argon2
/// hash takes 7 MiB): a burst of first logins waits its turn instead of
/// exhausting memory.
fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let gated = || {
        let _turn = KdfTurn::take();
        f()
    };
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(gated)
        }
        _ => gated(),
    }
}

/// Most password hashes computed at once.
const KDF_PARALLEL: usize = 2;

static KDF_RUNNING: Mutex<usize> = Mutex::new(0);
static KDF_FREED: parking_lot::Condvar = parking_lot::Condvar::new();

/// One of the [`KDF_PARALLEL`] turns; given back on drop.
struct KdfTurn;

impl KdfTurn {
    fn take() -> Self {
        let mut running = KDF_RUNNING.lock();
        while *running >= KDF_PARALLEL {
            KDF_FREED.wait(&mut running);
        }
        *running += 1;
        Self
    }
}

impl Drop for KdfTurn {
    fn drop(&mut self) {
        *KDF_RUNNING.lock() -= 1;
        KDF_FREED.notify_one();
    }
}

#[cfg(test)]
mod tests;
