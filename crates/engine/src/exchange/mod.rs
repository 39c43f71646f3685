//! Exchanges: their kinds, their bindings and how a message is routed by one
//! exchange. Following bindings across exchanges (e2e, alternate exchanges)
//! is the vhost's job, because it needs the whole topology.

pub mod bindings;
pub mod headers;
pub mod topic;

use crate::store::DestinationKind;
use bindings::Bindings;
use headers::MatchMode;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use switchyard_model::{FieldTable, Message};
use topic::TopicTrie;

/// Routing algorithm of an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExchangeKind {
    /// Exact routing-key match.
    Direct,
    /// Every binding.
    Fanout,
    /// Dotted-word patterns with `*` and `#`.
    Topic,
    /// Header tables with `x-match`.
    Headers,
}

impl ExchangeKind {
    /// Parse the AMQP type name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "direct" => Some(Self::Direct),
            "fanout" => Some(Self::Fanout),
            "topic" => Some(Self::Topic),
            "headers" => Some(Self::Headers),
            _ => None,
        }
    }

    /// The AMQP type name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
        }
    }
}

/// Where a binding delivers: a queue or another exchange.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Queue or exchange.
    pub kind: DestinationKind,
    /// Its name in the same vhost.
    pub name: Arc<str>,
}

impl Destination {
    /// A queue destination.
    pub fn queue(name: &str) -> Self {
        Self {
            kind: DestinationKind::Queue,
            name: name.into(),
        }
    }

    /// An exchange destination.
    pub fn exchange(name: &str) -> Self {
        Self {
            kind: DestinationKind::Exchange,
            name: name.into(),
        }
    }
}

/// One binding from an exchange.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    /// Target.
    pub destination: Destination,
    /// Binding key.
    pub routing_key: String,
    /// Arguments (matched by headers exchanges).
    pub arguments: FieldTable,
}

/// An exchange and its outgoing bindings, indexed for its kind.
#[derive(Debug)]
pub struct Exchange {
    /// Name within its vhost.
    pub name: String,
    /// Routing algorithm.
    pub kind: ExchangeKind,
    /// Survives restarts.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Not publishable by clients.
    pub internal: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
    bindings: Bindings,
    direct: HashMap<String, Vec<Destination>>,
    topic: TopicTrie<Destination>,
    /// Messages in and routed out, for the management API.
    pub stats: ExchangeStats,
    /// The alternate exchange a policy names (the declare argument wins).
    pub(crate) policy_alternate: Option<String>,
}

/// An exchange's message counters.
#[derive(Debug, Default)]
pub struct ExchangeStats {
    /// Messages published to it.
    pub publish_in: std::sync::atomic::AtomicU64,
    /// Of those, routed to at least one queue.
    pub publish_out: std::sync::atomic::AtomicU64,
}

impl Exchange {
    /// A new exchange with no bindings.
    pub fn new(
        name: &str,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            bindings: Bindings::default(),
            direct: HashMap::new(),
            topic: TopicTrie::default(),
            stats: ExchangeStats::default(),
            policy_alternate: None,
        }
    }

    /// The alternate exchange: the `alternate-exchange` argument, else the
    /// one a policy names.
    pub fn alternate_exchange(&self) -> Option<&str> {
        self.arguments
            .get("alternate-exchange")
            .and_then(|v| v.as_str())
            .or(self.policy_alternate.as_deref())
    }

    /// All outgoing bindings.
    pub fn bindings(&self) -> &Bindings {
        &self.bindings
    }

    /// Add a binding; false if an identical one exists.
    pub fn bind(&mut self, binding: Binding) -> bool {
        if self.bindings.contains(&binding) {
            return false;
        }
        match self.kind {
            ExchangeKind::Direct => self
                .direct
                .entry(binding.routing_key.clone())
                .or_default()
                .push(binding.destination.clone()),
            ExchangeKind::Topic => {
                self.topic
                    .insert(&binding.routing_key, binding.destination.clone());
            }
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
        self.bindings.insert(binding);
        true
    }

    /// Remove a binding; false if there was none.
    pub fn unbind(&mut self, binding: &Binding) -> bool {
        let Some(b) = self.bindings.remove(binding) else {
            return false;
        };
        self.unindex(&b);
        true
    }

    /// Remove every binding to `dest`, returning them.
    pub fn unbind_destination(&mut self, dest: &Destination) -> Vec<Binding> {
        let gone = self.bindings.remove_destination(dest);
        for b in &gone {
            self.unindex(b);
        }
        gone
    }

    fn unindex(&mut self, b: &Binding) {
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(v) = self.direct.get_mut(&b.routing_key) {
                    if let Some(i) = v.iter().position(|d| d == &b.destination) {
                        v.swap_remove(i);
                    }
                    if v.is_empty() {
                        self.direct.remove(&b.routing_key);
                    }
                }
            }
            ExchangeKind::Topic => {
                // The trie holds a destination once per pattern; keep it if
                // another binding (differing only in arguments) still needs it.
                let still = self
                    .bindings
                    .to(&b.destination)
                    .iter()
                    .any(|o| o.routing_key == b.routing_key);
                if !still {
                    self.topic.remove(&b.routing_key, &b.destination);
                }
            }
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
    }

    /// Call `f` for every destination this exchange routes `msg` to.
    /// Duplicates are possible; the caller deduplicates.
    pub fn route(&self, msg: &Message, mut f: impl FnMut(&Destination)) {
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(v) = self.direct.get(&msg.routing_key) {
                    v.iter().for_each(f);
                }
            }
            ExchangeKind::Fanout => self.bindings.iter().for_each(|b| f(&b.destination)),
            ExchangeKind::Topic => self.topic.for_each_match(&msg.routing_key, f),
            ExchangeKind::Headers => {
                let headers = msg.properties.headers.as_ref();
                for b in self.bindings.iter() {
                    let mode = MatchMode::from_args(&b.arguments).unwrap_or(MatchMode::All);
                    if headers::matches(mode, &b.arguments, headers) {
                        f(&b.destination);
                    }
                }
            }
        }
    }
}
