//! Dead-lettering, as RabbitMQ defines it: a message that leaves a queue
//! other than by an ack — rejected without requeue, expired, or pushed out
//! by a length limit — is republished to the queue's
//! `x-dead-letter-exchange` with its `x-death` history.
//!
//! The dead-lettered copy carries `x-death`, an array with one table per
//! (queue, reason) it died in, most recent first, whose `count` grows each
//! time it dies there again; `x-first-death-*` (set once) and
//! `x-last-death-*` headers; and loses its `expiration` (kept in the
//! entry as `original-expiration`) so it does not expire again for the
//! same reason. It is routed with `x-dead-letter-routing-key`, or its own
//! routing key. A dead-letter exchange that does not exist drops it.
//!
//! Cycles are broken as RabbitMQ breaks them: a target queue the message
//! already died in, with no rejection since, does not get it again.
//!
//! For a persistent message the removal from the source queue's store and
//! the write to the last target that stores it are one store transaction
//! ([`StoreOp::Batch`]): after a crash it is in one queue, never both or
//! neither.

use crate::queue::Queue;
use crate::store::StoreOp;
use crate::vhost::Vhost;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use switchyard_model::{FieldTable, FieldValue, Message};

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Rejected or nacked without requeue.
    Rejected,
    /// Its TTL passed.
    Expired,
    /// A length limit pushed it out (or refused it).
    Maxlen,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Expired => "expired",
            Self::Maxlen => "maxlen",
        }
    }
}

/// A message leaving a queue that has a dead-letter exchange.
#[derive(Debug)]
pub(crate) struct Letter {
    pub(crate) message: Arc<Message>,
    pub(crate) reason: Reason,
    /// Its position in the source queue's store, if it was written there.
    pub(crate) stored_seq: Option<u64>,
}

fn text(s: &str) -> FieldValue {
    FieldValue::string(s)
}

/// The `x-death` entries of `headers`.
fn deaths(headers: &FieldTable) -> &[FieldValue] {
    match headers.get("x-death") {
        Some(FieldValue::Array(a)) => a,
        _ => &[],
    }
}

fn field<'a>(death: &'a FieldValue, name: &str) -> Option<&'a FieldValue> {
    match death {
        FieldValue::Table(t) => t.get(name),
        _ => None,
    }
}

/// Record one more death of `m` in `queue` for `reason`.
fn record(m: &mut Message, queue: &str, reason: Reason) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let headers = m.properties.headers.get_or_insert_with(FieldTable::new);
    let mut list: Vec<FieldValue> = deaths(headers).to_vec();
    let same = |d: &FieldValue| {
        field(d, "queue").and_then(FieldValue::as_str) == Some(queue)
            && field(d, "reason").and_then(FieldValue::as_str) == Some(reason.as_str())
    };
    let mut entry = match list.iter().position(same) {
        Some(i) => match list.remove(i) {
            FieldValue::Table(t) => t,
            _ => FieldTable::new(),
        },
        None => {
            let mut t = FieldTable::new();
            t.insert("queue".into(), text(queue));
            t.insert("reason".into(), text(reason.as_str()));
            t.insert("exchange".into(), text(&m.exchange));
            t.insert(
                "routing-keys".into(),
                FieldValue::Array(vec![text(&m.routing_key)]),
            );
            if let Some(e) = &m.properties.expiration {
                t.insert("original-expiration".into(), text(e));
            }
            t
        }
    };
    let count = entry.get("count").and_then(FieldValue::as_i64).unwrap_or(0);
    entry.insert("count".into(), FieldValue::I64(count + 1));
    entry.insert("time".into(), FieldValue::Timestamp(now));
    list.insert(0, FieldValue::Table(entry));
    headers.insert("x-death".into(), FieldValue::Array(list));
    for (name, value) in [
        ("reason", reason.as_str()),
        ("queue", queue),
        ("exchange", m.exchange.as_str()),
    ] {
        headers
            .entry(format!("x-first-death-{name}"))
            .or_insert_with(|| text(value));
        headers.insert(format!("x-last-death-{name}"), text(value));
    }
    m.properties.expiration = None;
}

/// Whether giving `m` to `target` would close a cycle: it died there
/// before, and was not rejected by anyone since.
fn is_cycle(m: &Message, target: &str) -> bool {
    let Some(headers) = &m.properties.headers else {
        return false;
    };
    for d in deaths(headers) {
        if field(d, "reason").and_then(FieldValue::as_str) == Some("rejected") {
            return false;
        }
        if field(d, "queue").and_then(FieldValue::as_str) == Some(target) {
            return true;
        }
    }
    false
}

impl Vhost {
    /// Republish `letters` from `from` to its dead-letter exchange.
    pub(crate) fn dead_letter(&self, from: &Queue, letters: Vec<Letter>) {
        let (dlx, dlrk) = from.dead_letter_target();
        let Some(dlx) = dlx.as_deref() else {
            // No exchange (any more): they are simply gone.
            for l in letters {
                if let Some(seq) = l.stored_seq {
                    from.forget(seq);
                }
            }
            return;
        };
        for l in letters {
            let slot = match l.reason {
                Reason::Rejected => 0,
                Reason::Expired => 1,
                Reason::Maxlen => 2,
            };
            self.counters().dead_lettered[slot].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut m = Message::clone(&l.message);
            record(&mut m, from.name(), l.reason);
            if let Some(key) = &dlrk {
                m.routing_key.clone_from(key);
            }
            m.exchange = dlx.to_owned();
            let mut targets = self.route_existing(&m);
            targets.retain(|q| !is_cycle(&m, q.name()));
            let m = Arc::new(m);
            let mut removal = l.stored_seq.map(|seq| StoreOp::DeleteMessage {
                queue_id: from.id,
                seq,
            });
            let last_storing = targets
                .iter()
                .rposition(|q| q.persistent() && m.is_persistent());
            for (i, q) in targets.iter().enumerate() {
                let with = if Some(i) == last_storing {
                    removal.take()
                } else {
                    None
                };
                q.enqueue_letter(m.clone(), with);
            }
            if let Some(op) = removal {
                from.submit(op);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(expiration: Option<&str>) -> Message {
        let mut m = Message {
            exchange: "work".into(),
            routing_key: "job".into(),
            properties: switchyard_model::Properties::default(),
            body: bytes::Bytes::new(),
        };
        m.properties.expiration = expiration.map(str::to_owned);
        m
    }

    fn x_death(m: &Message) -> Vec<FieldTable> {
        deaths(m.properties.headers.as_ref().unwrap())
            .iter()
            .map(|d| match d {
                FieldValue::Table(t) => t.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn x_death_counts_per_queue_and_reason_most_recent_first() {
        let mut m = msg(Some("5000"));
        record(&mut m, "q1", Reason::Rejected);
        let d = x_death(&m);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].get("count"), Some(&FieldValue::I64(1)));
        assert_eq!(
            d[0].get("reason").and_then(FieldValue::as_str),
            Some("rejected")
        );
        assert_eq!(
            d[0].get("exchange").and_then(FieldValue::as_str),
            Some("work")
        );
        assert_eq!(
            d[0].get("routing-keys"),
            Some(&FieldValue::Array(vec![text("job")]))
        );
        assert_eq!(
            d[0].get("original-expiration").and_then(FieldValue::as_str),
            Some("5000")
        );
        assert_eq!(m.properties.expiration, None);
        record(&mut m, "wait", Reason::Expired);
        record(&mut m, "q1", Reason::Rejected);
        let d = x_death(&m);
        let summary: Vec<(Option<&str>, Option<i64>)> = d
            .iter()
            .map(|t| {
                (
                    t.get("queue").and_then(FieldValue::as_str),
                    t.get("count").and_then(FieldValue::as_i64),
                )
            })
            .collect();
        assert_eq!(summary, [(Some("q1"), Some(2)), (Some("wait"), Some(1))]);
        let h = m.properties.headers.as_ref().unwrap();
        let get = |k: &str| h.get(k).and_then(FieldValue::as_str);
        assert_eq!(get("x-first-death-queue"), Some("q1"));
        assert_eq!(get("x-first-death-reason"), Some("rejected"));
        assert_eq!(get("x-last-death-queue"), Some("q1"));
        assert_eq!(get("x-last-death-exchange"), Some("work"));
    }

    #[test]
    fn cycles_without_a_rejection_are_broken() {
        let mut m = msg(None);
        record(&mut m, "q", Reason::Expired);
        assert!(is_cycle(&m, "q"));
        assert!(!is_cycle(&m, "other"));
        // A retry loop: rejected in work, expired in wait, back to work.
        let mut r = msg(None);
        record(&mut r, "work", Reason::Rejected);
        record(&mut r, "wait", Reason::Expired);
        assert!(!is_cycle(&r, "work"));
        assert!(is_cycle(&r, "wait"));
        assert!(!is_cycle(&msg(None), "q"));
    }
}
