//! An exchange's bindings, grouped by destination, so that adding, finding
//! or removing one — or all of a queue's when it is deleted — costs what that
//! destination has, not what the exchange has. A topic exchange may carry
//! one binding per subscribing client; with a plain list, every client that
//! subscribed or went away scanned every other client's bindings.

use super::{Binding, Destination};
use std::collections::HashMap;

/// Bindings by destination.
#[derive(Debug, Default)]
pub struct Bindings {
    by_destination: HashMap<Destination, Vec<Binding>>,
    len: usize,
}

impl Bindings {
    /// Whether an identical binding is held.
    pub fn contains(&self, b: &Binding) -> bool {
        self.to(&b.destination).contains(b)
    }

    /// Adds `b` (the caller checked it is not held yet).
    pub(crate) fn insert(&mut self, b: Binding) {
        let group = self
            .by_destination
            .entry(b.destination.clone())
            .or_default();
        // Most destinations have one binding per exchange.
        if group.len() < 4 {
            group.reserve_exact(1);
        }
        group.push(b);
        self.len += 1;
    }

    /// Removes a binding identical to `b`, returning it.
    pub(crate) fn remove(&mut self, b: &Binding) -> Option<Binding> {
        let group = self.by_destination.get_mut(&b.destination)?;
        let pos = group.iter().position(|o| o == b)?;
        let gone = group.remove(pos);
        if group.is_empty() {
            self.by_destination.remove(&b.destination);
        }
        self.len -= 1;
        Some(gone)
    }

    /// Removes every binding to `dest`, returning them.
    pub(crate) fn remove_destination(&mut self, dest: &Destination) -> Vec<Binding> {
        let gone = self.by_destination.remove(dest).unwrap_or_default();
        self.len -= gone.len();
        gone
    }

    /// The bindings to `dest`.
    pub fn to(&self, dest: &Destination) -> &[Binding] {
        self.by_destination.get(dest).map_or(&[], Vec::as_slice)
    }

    /// Every binding, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Binding> {
        self.by_destination.values().flatten()
    }

    /// How many bindings.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DestinationKind;

    fn b(queue: &str, key: &str) -> Binding {
        Binding {
            destination: Destination {
                kind: DestinationKind::Queue,
                name: queue.into(),
            },
            routing_key: key.into(),
            arguments: Default::default(),
        }
    }

    #[test]
    fn grouped_by_destination() {
        let mut s = Bindings::default();
        for (q, k) in [("a", "x"), ("a", "y"), ("b", "x")] {
            assert!(!s.contains(&b(q, k)));
            s.insert(b(q, k));
        }
        assert!(s.contains(&b("a", "y")) && !s.contains(&b("b", "y")));
        assert_eq!((s.len(), s.iter().count()), (3, 3));
        assert_eq!(s.to(&b("a", "").destination).len(), 2);
        assert_eq!(s.remove(&b("a", "x")), Some(b("a", "x")));
        assert_eq!(s.remove(&b("a", "x")), None);
        assert_eq!(s.len(), 2);
        let gone = s.remove_destination(&b("a", "").destination);
        assert_eq!(gone, vec![b("a", "y")]);
        assert_eq!(s.len(), 1);
        assert!(s.remove_destination(&b("zz", "").destination).is_empty());
        s.remove(&b("b", "x"));
        assert!(s.is_empty() && s.by_destination.is_empty());
    }
}
