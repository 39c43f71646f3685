//! Reading a vhost's topology for operators: its exchanges, queues and
//! bindings as plain values, and tracing where a message would go and
//! through which bindings ([`Vhost::trace`], the management UI's route
//! tester). Nothing here changes state or touches a message.

use crate::exchange::headers::{self, MatchMode};
use crate::exchange::{Binding, Destination, ExchangeKind};
use crate::queue::Queue;
use crate::store::DestinationKind;
use crate::vhost::{Topology, Vhost};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use switchyard_model::{FieldTable, Message};

/// An exchange as operators see it.
#[derive(Debug, Clone)]
pub struct ExchangeInfo {
    /// Name (`""` is the default exchange).
    pub name: String,
    /// Type.
    pub kind: ExchangeKind,
    /// Survives restarts.
    pub durable: bool,
    /// Deleted with its last binding.
    pub auto_delete: bool,
    /// Not publishable by clients.
    pub internal: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
    /// Messages published to it, and of those routed somewhere.
    pub publish_in: u64,
    /// See `publish_in`.
    pub publish_out: u64,
}

/// A binding as operators see it.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingInfo {
    /// Source exchange (`""`: the default exchange's implicit binding).
    pub source: String,
    /// Destination queue or exchange.
    pub destination: String,
    /// Queue or exchange.
    pub destination_kind: DestinationKind,
    /// Binding key.
    pub routing_key: String,
    /// Binding arguments.
    pub arguments: FieldTable,
}

/// One way a traced message reaches a queue.
#[derive(Debug, Clone)]
pub struct Route {
    /// The queue.
    pub queue: Arc<Queue>,
    /// The bindings followed, from the published-to exchange to the queue
    /// (through alternate exchanges when those were taken).
    pub path: Vec<BindingInfo>,
}

/// Where a message would go ([`Vhost::trace`]).
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Each queue reached, once, with the first path found to it.
    pub routes: Vec<Route>,
    /// Alternate exchanges the message would be handed to.
    pub alternates: Vec<String>,
}

impl Vhost {
    /// Every exchange, by name.
    pub fn exchanges_info(&self) -> Vec<ExchangeInfo> {
        let topo = self.topology.read();
        let mut all: Vec<ExchangeInfo> = topo
            .exchanges
            .values()
            .map(|x| ExchangeInfo {
                name: x.name.clone(),
                kind: x.kind,
                durable: x.durable,
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: x.arguments.clone(),
                publish_in: x.stats.publish_in.load(Ordering::Relaxed),
                publish_out: x.stats.publish_out.load(Ordering::Relaxed),
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// One exchange.
    pub fn exchange_info(&self, name: &str) -> Option<ExchangeInfo> {
        let topo = self.topology.read();
        topo.exchanges.get(name).map(|x| ExchangeInfo {
            name: x.name.clone(),
            kind: x.kind,
            durable: x.durable,
            auto_delete: x.auto_delete,
            internal: x.internal,
            arguments: x.arguments.clone(),
            publish_in: x.stats.publish_in.load(Ordering::Relaxed),
            publish_out: x.stats.publish_out.load(Ordering::Relaxed),
        })
    }

    /// Every queue, by name.
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        let topo = self.topology.read();
        let mut all: Vec<Arc<Queue>> = topo.queues.values().cloned().collect();
        all.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        all
    }

    /// How many exchanges it has (the default exchange included).
    pub fn exchange_count(&self) -> usize {
        self.topology.read().exchanges.len()
    }

    /// A queue by name, whoever owns it.
    pub fn find_queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.topology.read().queues.get(name).cloned()
    }

    /// Every binding, the default exchange's implicit ones first (one per
    /// queue, as RabbitMQ lists them), then by source.
    pub fn bindings_info(&self) -> Vec<BindingInfo> {
        let topo = self.topology.read();
        let mut queues: Vec<&String> = topo.queues.keys().collect();
        queues.sort();
        let mut out: Vec<BindingInfo> = queues
            .into_iter()
            .map(|q| BindingInfo {
                source: String::new(),
                destination: q.clone(),
                destination_kind: DestinationKind::Queue,
                routing_key: q.clone(),
                arguments: FieldTable::default(),
            })
            .collect();
        let mut explicit: Vec<BindingInfo> = topo
            .exchanges
            .values()
            .flat_map(|x| x.bindings().iter().map(|b| info(&x.name, b)))
            .collect();
        explicit.sort_by(|a, b| {
            (&a.source, &a.destination, &a.routing_key).cmp(&(
                &b.source,
                &b.destination,
                &b.routing_key,
            ))
        });
        out.extend(explicit);
        out
    }

    /// Where `message` published to `exchange` would go, and through which
    /// bindings: exchange-to-exchange bindings and alternate exchanges
    /// are followed as publishing follows them. `None` if the exchange
    /// does not exist.
    pub fn trace(&self, exchange: &str, message: &Message) -> Option<Trace> {
        let topo = self.topology.read();
        topo.exchanges.get(exchange)?;
        let mut trace = Trace::default();
        let mut visited = Vec::new();
        trace_exchange(
            &topo,
            exchange,
            message,
            &mut Vec::new(),
            &mut visited,
            &mut trace,
        );
        Some(trace)
    }
}

fn info(source: &str, b: &Binding) -> BindingInfo {
    BindingInfo {
        source: source.to_owned(),
        destination: b.destination.name.to_string(),
        destination_kind: b.destination.kind,
        routing_key: b.routing_key.clone(),
        arguments: b.arguments.clone(),
    }
}

/// Follows one exchange; returns whether any queue was reached through it.
fn trace_exchange(
    topo: &Topology,
    name: &str,
    message: &Message,
    path: &mut Vec<BindingInfo>,
    visited: &mut Vec<String>,
    trace: &mut Trace,
) -> bool {
    if visited.iter().any(|v| v == name) {
        return false;
    }
    visited.push(name.to_owned());
    let Some(x) = topo.exchanges.get(name) else {
        return false;
    };
    let mut reached = false;
    if x.name.is_empty() {
        if let Some(q) = topo.queues.get(&message.routing_key) {
            path.push(BindingInfo {
                source: String::new(),
                destination: q.spec.name.clone(),
                destination_kind: DestinationKind::Queue,
                routing_key: message.routing_key.clone(),
                arguments: FieldTable::default(),
            });
            add(trace, q, path);
            path.pop();
            reached = true;
        }
    } else {
        let matching: Vec<&Binding> = x
            .bindings()
            .iter()
            .filter(|b| binding_matches(x.kind, b, message))
            .collect();
        for b in matching {
            path.push(info(&x.name, b));
            match b.destination.kind {
                DestinationKind::Queue => {
                    if let Some(q) = topo.queues.get(&*b.destination.name) {
                        add(trace, q, path);
                        reached = true;
                    }
                }
                DestinationKind::Exchange => {
                    reached |=
                        trace_exchange(topo, &b.destination.name, message, path, visited, trace);
                }
            }
            path.pop();
        }
    }
    if !reached && let Some(ae) = x.alternate_exchange() {
        trace.alternates.push(ae.to_owned());
        reached = trace_exchange(topo, ae, message, path, visited, trace);
    }
    reached
}

fn add(trace: &mut Trace, q: &Arc<Queue>, path: &[BindingInfo]) {
    if !trace.routes.iter().any(|r| Arc::ptr_eq(&r.queue, q)) {
        trace.routes.push(Route {
            queue: q.clone(),
            path: path.to_vec(),
        });
    }
}

/// Whether one binding of an exchange of `kind` takes `message`, by the
/// same rules [`crate::exchange::Exchange::route`] applies.
fn binding_matches(kind: ExchangeKind, b: &Binding, message: &Message) -> bool {
    match kind {
        ExchangeKind::Direct => b.routing_key == message.routing_key,
        ExchangeKind::Fanout => true,
        ExchangeKind::Topic => topic_matches(&b.routing_key, &message.routing_key),
        ExchangeKind::Headers => {
            let mode = MatchMode::from_args(&b.arguments).unwrap_or(MatchMode::All);
            headers::matches(mode, &b.arguments, message.properties.headers.as_ref())
        }
    }
}

/// AMQP topic matching of one pattern: `*` is one word, `#` zero or more.
#[must_use]
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| go(rest, &k[i..])),
            Some((&w, rest)) => k
                .split_first()
                .is_some_and(|(&kw, krest)| (w == "*" || w == kw) && go(rest, krest)),
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

/// The destination of a binding, for adapters that name one.
#[must_use]
pub fn destination(kind: DestinationKind, name: &str) -> Destination {
    match kind {
        DestinationKind::Queue => Destination::queue(name),
        DestinationKind::Exchange => Destination::exchange(name),
    }
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    #[test]
    fn topic_patterns_match_as_amqp_defines() {
        assert!(topic_matches("a.*.c", "a.b.c"));
        assert!(!topic_matches("a.*.c", "a.b.b.c"));
        assert!(topic_matches("a.#", "a"));
        assert!(topic_matches("a.#", "a.b.c"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("#.c", "a.b.c"));
        assert!(!topic_matches("a.b", "a.b.c"));
        assert!(topic_matches("plant.*.temp", "plant.7.temp"));
    }
}
