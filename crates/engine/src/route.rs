//! Following a message through the topology: exchange-to-exchange bindings,
//! alternate exchanges, the default exchange, sender-selected distribution
//! (the `CC` and `BCC` headers name more routing keys, as in RabbitMQ), and
//! de-duplication so a queue reachable by several paths receives one copy.

use crate::exchange::Exchange;
use crate::queue::Queue;
use crate::store::DestinationKind;
use crate::vhost::Topology;
use std::sync::Arc;
use switchyard_model::{FieldValue, Message};

/// Queues `message` published to `x` lands in, each once, in a stable order.
pub(crate) fn route(topo: &Topology, x: &Exchange, message: &Message) -> Vec<Arc<Queue>> {
    let mut out: Vec<Arc<Queue>> = Vec::new();
    let mut visited: Vec<&str> = Vec::new();
    route_exchange(topo, x, message, &mut out, &mut visited);
    let extra = sender_selected(message);
    if !extra.is_empty() {
        let mut alias = message.clone();
        for key in extra {
            alias.routing_key = key;
            visited.clear();
            route_exchange(topo, x, &alias, &mut out, &mut visited);
        }
    }
    out
}

/// The routing keys of the `CC` and `BCC` headers (arrays of strings).
fn sender_selected(message: &Message) -> Vec<String> {
    let Some(headers) = &message.properties.headers else {
        return Vec::new();
    };
    ["CC", "BCC"]
        .iter()
        .filter_map(|h| match headers.get(*h) {
            Some(FieldValue::Array(keys)) => Some(keys),
            _ => None,
        })
        .flatten()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect()
}

/// `BCC` is for routing only: removed before the message is stored or
/// delivered (RabbitMQ does the same).
pub(crate) fn strip_bcc(message: &mut Message) {
    if let Some(h) = message.properties.headers.as_mut() {
        h.remove("BCC");
    }
}

fn route_exchange<'t>(
    topo: &'t Topology,
    x: &'t Exchange,
    message: &Message,
    out: &mut Vec<Arc<Queue>>,
    visited: &mut Vec<&'t str>,
) {
    if visited.contains(&x.name.as_str()) {
        return;
    }
    visited.push(&x.name);
    let before = out.len();
    if x.name.is_empty() {
        // The default exchange: every queue is bound by its own name.
        if let Some(q) = topo.queues.get(&message.routing_key) {
            push_unique(out, q);
        }
    } else {
        let mut next: Vec<&'t Exchange> = Vec::new();
        x.route(message, |d| match d.kind {
            DestinationKind::Queue => {
                if let Some(q) = topo.queues.get(&*d.name) {
                    push_unique(out, q);
                }
            }
            DestinationKind::Exchange => {
                if let Some(e) = topo.exchanges.get(&*d.name) {
                    next.push(e);
                }
            }
        });
        for e in next {
            route_exchange(topo, e, message, out, visited);
        }
    }
    if out.len() == before
        && let Some(ae) = x.alternate_exchange().and_then(|n| topo.exchanges.get(n))
    {
        route_exchange(topo, ae, message, out, visited);
    }
}

fn push_unique(out: &mut Vec<Arc<Queue>>, q: &Arc<Queue>) {
    if !out.iter().any(|o| Arc::ptr_eq(o, q)) {
        out.push(q.clone());
    }
}
