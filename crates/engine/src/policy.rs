//! Policies, as RabbitMQ has them: a name, a pattern over queue (or
//! exchange) names, what it applies to, a priority and a definition
//! (`message-ttl`, `max-length`, `dead-letter-exchange`, ...;
//! `alternate-exchange` for exchanges). The highest-priority policy whose
//! pattern matches a queue (or exchange) applies to it; arguments it was
//! declared with win over the policy's keys ([`crate::Queue::set_policy`]). A policy applies to the queues that
//! exist when it is set and to every queue declared afterwards, and
//! persists as a state record.

use crate::arguments::policy_key;
use crate::broker::Broker;
use crate::error::{EngineError, Result};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use switchyard_model::FieldTable;

/// State namespace of policies: key = `vhost` NUL `name`.
pub const NS_POLICIES: &str = "policies";

/// What a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyTo {
    /// Queues only.
    Queues,
    /// Exchanges only.
    Exchanges,
    /// Both.
    All,
}

impl ApplyTo {
    /// RabbitMQ's name (`queues`, `exchanges`, `all`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queues => "queues",
            Self::Exchanges => "exchanges",
            Self::All => "all",
        }
    }

    /// Parses RabbitMQ's name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "queues" => Some(Self::Queues),
            "exchanges" => Some(Self::Exchanges),
            "all" => Some(Self::All),
            _ => None,
        }
    }
}

/// One policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Its vhost.
    pub vhost: String,
    /// Its name.
    pub name: String,
    /// Regular expression over resource names.
    pub pattern: String,
    /// What it applies to.
    pub apply_to: ApplyTo,
    /// Higher wins when several match.
    pub priority: i64,
    /// The keys it sets.
    pub definition: FieldTable,
}

/// Keys a definition may hold besides the queue keys: the exchange keys
/// the engine applies.
const EXCHANGE_KEYS: &[&str] = &["alternate-exchange"];

#[derive(Debug)]
struct Compiled {
    policy: Policy,
    regex: regex::Regex,
}

/// Every policy of a broker.
#[derive(Debug, Default)]
pub struct Policies {
    all: RwLock<Vec<Compiled>>,
}

impl Policies {
    /// Every policy, by vhost then name.
    pub fn list(&self) -> Vec<Policy> {
        let mut out: Vec<Policy> = self.all.read().iter().map(|c| c.policy.clone()).collect();
        out.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
        out
    }

    /// A policy by vhost and name.
    pub fn get(&self, vhost: &str, name: &str) -> Option<Policy> {
        self.all
            .read()
            .iter()
            .find(|c| c.policy.vhost == vhost && c.policy.name == name)
            .map(|c| c.policy.clone())
    }

    /// The alternate exchange the policy applying to exchange `name` in
    /// `vhost` names, if any.
    pub fn alternate_for(&self, vhost: &str, name: &str) -> Option<String> {
        self.matching(vhost, name, ApplyTo::Exchanges)
            .and_then(|p| p.definition.get("alternate-exchange").cloned())
            .and_then(|v| v.as_str().map(str::to_owned))
    }

    /// The policy that applies to queue `name` in `vhost`, if any.
    pub fn for_queue(&self, vhost: &str, name: &str) -> Option<Policy> {
        self.matching(vhost, name, ApplyTo::Queues)
    }

    fn matching(&self, vhost: &str, name: &str, kind: ApplyTo) -> Option<Policy> {
        self.all
            .read()
            .iter()
            .filter(|c| c.policy.vhost == vhost)
            .filter(|c| c.policy.apply_to == kind || c.policy.apply_to == ApplyTo::All)
            .filter(|c| c.regex.is_match(name))
            // Equal priorities: the name sorting first wins, so the choice
            // does not depend on the order policies were set in.
            .max_by(|a, b| {
                a.policy
                    .priority
                    .cmp(&b.policy.priority)
                    .then_with(|| b.policy.name.cmp(&a.policy.name))
            })
            .map(|c| c.policy.clone())
    }

    fn insert(&self, policy: Policy) -> Result<bool> {
        let regex = regex::Regex::new(&policy.pattern).map_err(|_| {
            EngineError::InvalidArgument(format!("invalid pattern '{}'", policy.pattern))
        })?;
        let mut all = self.all.write();
        let existing = all
            .iter()
            .position(|c| c.policy.vhost == policy.vhost && c.policy.name == policy.name);
        let compiled = Compiled { policy, regex };
        Ok(match existing {
            Some(i) => {
                all[i] = compiled;
                false
            }
            None => {
                all.push(compiled);
                true
            }
        })
    }

    fn remove(&self, vhost: &str, name: &str) -> bool {
        let mut all = self.all.write();
        let before = all.len();
        all.retain(|c| !(c.policy.vhost == vhost && c.policy.name == name));
        all.len() != before
    }
}

/// Checks a definition's keys as RabbitMQ validates them.
fn check_definition(def: &FieldTable) -> Result<()> {
    if def.is_empty() {
        return Err(EngineError::InvalidArgument(
            "the definition is empty".into(),
        ));
    }
    let unknown: Vec<&str> = def
        .keys()
        .map(String::as_str)
        .filter(|k| policy_key(k).is_none() && !EXCHANGE_KEYS.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(EngineError::InvalidArgument(format!(
            "Validation failed\n\n{unknown:?} are not recognised policy settings"
        )));
    }
    // The values are checked as a queue's arguments are checked.
    let as_arguments: FieldTable = def
        .iter()
        .filter_map(|(k, v)| policy_key(k).map(|a| (a.to_owned(), v.clone())))
        .collect();
    crate::arguments::QueueArguments::parse(&as_arguments)
        .map_err(|e| EngineError::InvalidArgument(format!("Validation failed\n\n{e}")))?;
    Ok(())
}

impl Broker {
    /// Loads the policies recovered at start-up and applies them.
    pub(crate) fn recover_policies(&self) {
        for (_, value) in self.take_state(NS_POLICIES) {
            match postcard::from_bytes::<Policy>(&value) {
                Ok(p) => {
                    if let Err(e) = self.policies().insert(p) {
                        tracing::warn!(error = %e, "skipping an unusable policy record");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable policy record"),
            }
        }
        for v in self.vhosts() {
            for q in v.queues() {
                self.apply_policy_to(&q);
            }
            v.apply_exchange_policies();
        }
    }

    /// Sets (creates or replaces) a policy and applies it to the queues it
    /// matches now; returns whether it is new.
    ///
    /// # Errors
    ///
    /// [`EngineError::InvalidArgument`] for an invalid pattern or
    /// definition, [`EngineError::VhostNotFound`] for an unknown vhost.
    pub fn set_policy(&self, policy: Policy) -> Result<bool> {
        let vhost = self
            .vhost(&policy.vhost)
            .ok_or_else(|| EngineError::VhostNotFound(policy.vhost.clone()))?;
        check_definition(&policy.definition)?;
        let key = format!("{}\0{}", policy.vhost, policy.name);
        let bytes = postcard::to_allocvec(&policy)
            .map_err(|e| EngineError::InvalidArgument(format!("policy not storable: {e}")))?;
        let new = self.policies().insert(policy)?;
        self.put_state(NS_POLICIES, &key, Some(bytes));
        for q in vhost.queues() {
            self.apply_policy_to(&q);
        }
        vhost.apply_exchange_policies();
        Ok(new)
    }

    /// Removes a policy; the queues it applied to lose its keys (or get the
    /// next matching policy's). Returns whether it existed.
    pub fn clear_policy(&self, vhost: &str, name: &str) -> bool {
        if !self.policies().remove(vhost, name) {
            return false;
        }
        self.put_state(NS_POLICIES, &format!("{vhost}\0{name}"), None);
        if let Some(v) = self.vhost(vhost) {
            for q in v.queues() {
                self.apply_policy_to(&q);
            }
            v.apply_exchange_policies();
        }
        true
    }

    /// Gives `queue` the policy that matches it now (or none).
    pub(crate) fn apply_policy_to(&self, queue: &Arc<crate::Queue>) {
        apply(self.policies(), queue);
    }
}

/// Gives `queue` the policy of `policies` that matches it now (or none).
pub(crate) fn apply(policies: &Policies, queue: &Arc<crate::Queue>) {
    let policy = policies.for_queue(&queue.vhost, &queue.spec.name);
    if let Err(e) = queue.set_policy(policy.as_ref().map(|p| &p.definition)) {
        tracing::warn!(
            queue = %queue.spec.name,
            vhost = %queue.vhost,
            policy = ?policy.map(|p| p.name),
            error = %e,
            "policy not applied"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_model::FieldValue;

    fn policy(name: &str, pattern: &str, priority: i64, max_len: i64) -> Policy {
        let mut definition = FieldTable::new();
        definition.insert("max-length".into(), FieldValue::I64(max_len));
        Policy {
            vhost: "/".into(),
            name: name.into(),
            pattern: pattern.into(),
            apply_to: ApplyTo::Queues,
            priority,
            definition,
        }
    }

    #[test]
    fn the_highest_priority_match_applies() {
        let p = Policies::default();
        assert!(p.insert(policy("low", "^a", 0, 10)).expect("valid"));
        assert!(p.insert(policy("high", "^ab", 5, 20)).expect("valid"));
        assert_eq!(p.for_queue("/", "abc").map(|x| x.name), Some("high".into()));
        assert_eq!(p.for_queue("/", "ax").map(|x| x.name), Some("low".into()));
        assert!(p.for_queue("/", "b").is_none());
        assert!(p.insert(policy("also-high", "^ab", 5, 30)).expect("valid"));
        assert_eq!(
            p.for_queue("/", "abc").map(|x| x.name),
            Some("also-high".into()),
            "equal priorities: the first name wins"
        );
        assert!(p.remove("/", "also-high"));
        assert!(p.for_queue("other", "abc").is_none());
        assert!(!p.insert(policy("low", "^z", 0, 1)).expect("replaced"));
        assert!(p.for_queue("/", "ax").is_none());
        assert!(p.remove("/", "high"));
        assert!(!p.remove("/", "high"));
    }

    #[test]
    fn definitions_are_checked() {
        let mut def = FieldTable::new();
        def.insert("max-length".into(), FieldValue::I64(1));
        assert!(check_definition(&def).is_ok());
        def.insert("ha-mode".into(), FieldValue::string("all"));
        let e = check_definition(&def).expect_err("unknown key");
        assert!(e.to_string().contains("ha-mode"), "{e}");
        let mut wrong = FieldTable::new();
        wrong.insert("max-length".into(), FieldValue::string("ten"));
        assert!(
            check_definition(&wrong).is_err(),
            "a value of the wrong type"
        );
        assert!(check_definition(&FieldTable::new()).is_err());
        let p = Policies::default();
        assert!(p.insert(policy("bad", "(", 0, 1)).is_err());
    }
}
