//! A queue's ready messages: in position order within each priority, the
//! highest priority first, with the counts its limits are checked against.
//!
//! A queue without `x-max-priority` has one level, so it is a plain FIFO
//! of positions; a priority queue has one per priority `0..=max`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use switchyard_model::Message;

/// One message held by a queue.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) seq: u64,
    pub(super) message: Arc<Message>,
    pub(super) redelivered: bool,
    /// Written to the store (deleted from it when it leaves).
    pub(super) persisted: bool,
    /// When it expires (per-message `expiration`, or the queue's
    /// `x-message-ttl`, whichever is sooner).
    pub(super) expires_at: Option<Instant>,
    /// Its level (0 unless the queue has priorities).
    pub(super) priority: u8,
}

impl Entry {
    pub(super) fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// Ready messages by priority level, each level in position order.
#[derive(Debug)]
pub(super) struct Ready {
    levels: Vec<VecDeque<Entry>>,
    len: usize,
    /// Memory held (for publisher backpressure).
    pub(super) bytes: usize,
    /// Body bytes (for `x-max-length-bytes`).
    pub(super) body_bytes: u64,
}

impl Default for Ready {
    fn default() -> Self {
        Self::with_levels(1)
    }
}

impl Ready {
    /// `levels` priority levels (at least one).
    pub(super) fn with_levels(levels: usize) -> Self {
        Self {
            levels: (0..levels.max(1)).map(|_| VecDeque::new()).collect(),
            len: 0,
            bytes: 0,
            body_bytes: 0,
        }
    }

    /// The level a message of `priority` is kept at: above the maximum
    /// counts as the maximum.
    pub(super) fn level(&self, priority: Option<u8>) -> u8 {
        let top = u8::try_from(self.levels.len() - 1).unwrap_or(u8::MAX);
        priority.unwrap_or(0).min(top)
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn count_in(&mut self, e: &Entry) {
        self.len += 1;
        self.bytes += e.message.size_hint();
        self.body_bytes += e.message.body.len() as u64;
    }

    fn count_out(&mut self, e: &Entry) {
        self.len -= 1;
        self.bytes -= e.message.size_hint();
        self.body_bytes -= e.message.body.len() as u64;
    }

    pub(super) fn push_back(&mut self, e: Entry) {
        self.count_in(&e);
        self.levels[usize::from(e.priority)].push_back(e);
    }

    /// The highest non-empty level.
    fn top(&self) -> Option<usize> {
        self.levels.iter().rposition(|l| !l.is_empty())
    }

    /// The next message to deliver.
    pub(super) fn front(&self) -> Option<&Entry> {
        self.levels[self.top()?].front()
    }

    pub(super) fn pop_front(&mut self) -> Option<Entry> {
        let top = self.top()?;
        let e = self.levels[top].pop_front()?;
        self.count_out(&e);
        Some(e)
    }

    /// Insert at the position its `seq` belongs to in its level.
    pub(super) fn insert_sorted(&mut self, e: Entry) {
        self.count_in(&e);
        let level = &mut self.levels[usize::from(e.priority)];
        let pos = level.partition_point(|r| r.seq < e.seq);
        level.insert(pos, e);
    }

    /// Remove everything.
    pub(super) fn take_all(&mut self) -> Vec<Entry> {
        self.len = 0;
        self.bytes = 0;
        self.body_bytes = 0;
        self.levels.iter_mut().flat_map(std::mem::take).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(seq: u64, priority: u8) -> Entry {
        Entry {
            seq,
            message: Arc::new(Message {
                exchange: String::new(),
                routing_key: String::new(),
                properties: switchyard_model::Properties::default(),
                body: Bytes::from(vec![0u8; 10]),
            }),
            redelivered: false,
            persisted: false,
            expires_at: None,
            priority,
        }
    }

    #[test]
    fn highest_priority_first_fifo_within() {
        let mut r = Ready::with_levels(11);
        for (seq, p) in [(1, 1), (2, 5), (3, 9), (4, 0), (5, 5)] {
            r.push_back(entry(seq, p));
        }
        assert_eq!(r.level(Some(200)), 10);
        assert_eq!(r.level(None), 0);
        assert_eq!((r.len(), r.body_bytes), (5, 50));
        let order: Vec<u64> = std::iter::from_fn(|| r.pop_front().map(|e| e.seq)).collect();
        assert_eq!(order, [3, 2, 5, 1, 4]);
        assert!(r.is_empty() && r.bytes == 0 && r.body_bytes == 0);
    }

    #[test]
    fn requeue_keeps_its_position() {
        let mut r = Ready::with_levels(3);
        r.push_back(entry(2, 2));
        r.push_back(entry(3, 0));
        r.insert_sorted(entry(1, 2));
        assert_eq!(r.front().map(|e| e.seq), Some(1));
        assert_eq!(r.pop_front().map(|e| e.seq), Some(1));
        assert_eq!(r.take_all().len(), 2);
        assert_eq!(r.len(), 0);
    }
}
