//! Message rates: the engine keeps plain counters (atomics, always on);
//! this samples them every [`INTERVAL`] and keeps the rate between the
//! last two samples, for the API's `*_details.rate` fields (RabbitMQ's
//! management plugin samples every 5 s by default too).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use switchyard_engine::{Broker, Queue};

/// Memory a message costs beyond its body (entry, index, `Arc`s): an
/// estimate.
const PER_MESSAGE_OVERHEAD: u64 = 160;

/// The memory a queue's messages take, as the API's `memory` and the
/// metrics report it: bodies plus [`PER_MESSAGE_OVERHEAD`] each.
pub(crate) fn memory(snap: &switchyard_engine::QueueSnapshot) -> u64 {
    snap.ready_bytes + snap.unacked_bytes + (snap.ready + snap.unacked) * PER_MESSAGE_OVERHEAD
}

/// Time between two samples.
pub(crate) const INTERVAL: Duration = Duration::from_secs(5);

/// How many counters a queue has.
pub(crate) const QUEUE_COUNTERS: usize = 9;

/// A queue's counters, in [`QueueCounters::NAMES`] order.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct QueueCounters(pub(crate) [u64; QUEUE_COUNTERS]);

impl QueueCounters {
    /// The `message_stats` field of each counter, as RabbitMQ names them:
    /// `deliver_get` is the sum of deliveries and gets of both ack modes.
    pub(crate) const NAMES: [&'static str; QUEUE_COUNTERS] = [
        "publish",
        "deliver",
        "deliver_no_ack",
        "get",
        "get_no_ack",
        "deliver_get",
        "get_empty",
        "redeliver",
        "ack",
    ];

    /// Reads a queue's counters.
    pub(crate) fn of(q: &Queue) -> Self {
        let s = &q.stats;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let (got, got_no_ack) = (load(&s.got), load(&s.got_no_ack));
        let no_ack = load(&s.delivered_no_ack);
        let dispatched = q.dispatched();
        Self([
            load(&s.published),
            dispatched.saturating_sub(no_ack),
            no_ack,
            got.saturating_sub(got_no_ack),
            got_no_ack,
            dispatched + got,
            load(&s.get_empty),
            load(&s.redelivered),
            load(&s.acked),
        ])
    }

    /// Adds another queue's counters.
    pub(crate) fn add(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}

/// How many broker-wide counters there are.
pub(crate) const TOTALS: usize = 5;

/// The broker-wide counters the protocols keep, in [`Totals::NAMES`]
/// order (deliveries and gets are summed from the queues).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Totals(pub(crate) [u64; TOTALS]);

impl Totals {
    /// The overview's `message_stats` field of each counter.
    pub(crate) const NAMES: [&'static str; TOTALS] = [
        "publish",
        "ack",
        "confirm",
        "return_unroutable",
        "drop_unroutable",
    ];

    /// Sums every adapter's counters.
    pub(crate) fn of(broker: &Broker) -> Self {
        let mut t = [0u64; TOTALS];
        for (_, c) in broker.connections().all_counters() {
            for (slot, v) in t.iter_mut().zip([
                &c.published,
                &c.acked,
                &c.confirmed,
                &c.returned,
                &c.dropped,
            ]) {
                *slot += v.load(Ordering::Relaxed);
            }
        }
        Self(t)
    }
}

#[derive(Debug, Default)]
struct Sample {
    at: Option<Instant>,
    totals: Totals,
    queues: HashMap<u64, QueueCounters>,
    /// Connection id → (bytes in, bytes out).
    traffic: HashMap<u64, (u64, u64)>,
    /// (vhost, exchange) → (published in, routed out).
    exchanges: HashMap<(String, String), (u64, u64)>,
}

/// Rates per second between the last two samples.
#[derive(Debug, Default)]
struct Current {
    totals: [f64; TOTALS],
    queues: HashMap<u64, [f64; QUEUE_COUNTERS]>,
    /// The sum of every queue's rates.
    queue_sum: [f64; QUEUE_COUNTERS],
    traffic: HashMap<u64, (f64, f64)>,
    exchanges: HashMap<(String, String), (f64, f64)>,
}

/// The sampler's state.
#[derive(Debug, Default)]
pub(crate) struct Rates {
    last: Mutex<Sample>,
    current: Mutex<Current>,
}

fn per_second(now: u64, before: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    now.saturating_sub(before) as f64 / secs
}

impl Rates {
    /// Takes a sample now and updates the rates.
    pub(crate) fn sample(&self, broker: &Broker) {
        let now = Instant::now();
        let totals = Totals::of(broker);
        let mut queues = HashMap::new();
        let mut exchanges = HashMap::new();
        for v in broker.vhosts() {
            for q in v.queues() {
                queues.insert(q.id, QueueCounters::of(&q));
            }
            for x in v.exchanges_info() {
                if x.publish_in > 0 {
                    exchanges.insert((v.name.clone(), x.name), (x.publish_in, x.publish_out));
                }
            }
        }
        let traffic: HashMap<u64, (u64, u64)> = broker
            .connections()
            .list()
            .iter()
            .map(|c| {
                (
                    c.id,
                    (
                        c.traffic.recv_oct.load(Ordering::Relaxed),
                        c.traffic.send_oct.load(Ordering::Relaxed),
                    ),
                )
            })
            .collect();
        let mut last = self.last.lock();
        if let Some(at) = last.at {
            let secs = now.duration_since(at).as_secs_f64();
            let mut cur = Current::default();
            for (i, r) in cur.totals.iter_mut().enumerate() {
                *r = per_second(totals.0[i], last.totals.0[i], secs);
            }
            for (id, c) in &queues {
                let before = last.queues.get(id).copied().unwrap_or_default();
                let mut r = [0.0; QUEUE_COUNTERS];
                for (i, slot) in r.iter_mut().enumerate() {
                    *slot = per_second(c.0[i], before.0[i], secs);
                }
                for (sum, x) in cur.queue_sum.iter_mut().zip(r) {
                    *sum += x;
                }
                cur.queues.insert(*id, r);
            }
            for (id, (rx, tx)) in &traffic {
                let (brx, btx) = last.traffic.get(id).copied().unwrap_or((*rx, *tx));
                cur.traffic.insert(
                    *id,
                    (per_second(*rx, brx, secs), per_second(*tx, btx, secs)),
                );
            }
            for (key, (i, o)) in &exchanges {
                let (bi, bo) = last.exchanges.get(key).copied().unwrap_or_default();
                cur.exchanges.insert(
                    key.clone(),
                    (per_second(*i, bi, secs), per_second(*o, bo, secs)),
                );
            }
            *self.current.lock() = cur;
        }
        *last = Sample {
            at: Some(now),
            totals,
            queues,
            traffic,
            exchanges,
        };
    }

    /// Broker-wide rates, in [`Totals::NAMES`] order.
    pub(crate) fn totals(&self) -> [f64; TOTALS] {
        self.current.lock().totals
    }

    /// A queue's rates, in [`QueueCounters::NAMES`] order.
    pub(crate) fn queue(&self, id: u64) -> [f64; QUEUE_COUNTERS] {
        self.current
            .lock()
            .queues
            .get(&id)
            .copied()
            .unwrap_or_default()
    }

    /// Every queue's rates summed, in [`QueueCounters::NAMES`] order.
    pub(crate) fn queue_sum(&self) -> [f64; QUEUE_COUNTERS] {
        self.current.lock().queue_sum
    }

    /// An exchange's messages in and out per second.
    pub(crate) fn exchange(&self, vhost: &str, name: &str) -> (f64, f64) {
        self.current
            .lock()
            .exchanges
            .get(&(vhost.to_owned(), name.to_owned()))
            .copied()
            .unwrap_or_default()
    }

    /// A connection's bytes in and out per second.
    pub(crate) fn traffic(&self, id: u64) -> (f64, f64) {
        self.current
            .lock()
            .traffic
            .get(&id)
            .copied()
            .unwrap_or_default()
    }
}

/// Samples every [`INTERVAL`] until `shutdown`.
pub(crate) async fn run(
    broker: Arc<Broker>,
    rates: Arc<Rates>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => rates.sample(&broker),
        }
    }
}
