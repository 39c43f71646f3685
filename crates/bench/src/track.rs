//! Payload stamping and per-consumer bookkeeping: latency histogram and a
//! bitset per producer to count losses and duplicates exactly. Shared by every
//! protocol's scenarios, so their reports mean the same thing.

use hdrhistogram::Histogram;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes of header every payload starts with: send time, producer, sequence.
pub(crate) const HEADER: usize = 16;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process-wide epoch.
pub(crate) fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A short id for this run, unique across runs on one machine: process id and
/// the low bits of the wall clock, in hex. Short enough that MQTT 3.1.1's
/// 23-byte client-id limit leaves room for a role and an index.
pub(crate) fn run_id() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{:x}{:06x}", std::process::id(), millis & 0xff_ffff)
}

/// A payload of `size` bytes (at least [`HEADER`]).
pub(crate) fn stamp(buf: &mut Vec<u8>, size: usize, producer: u32, seq: u32) {
    buf.clear();
    buf.extend_from_slice(&now_ns().to_be_bytes());
    buf.extend_from_slice(&producer.to_be_bytes());
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.resize(size.max(HEADER), 0xAB);
}

/// A growable set of sequence numbers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Bits(Vec<u64>);

impl Bits {
    /// Adds `seq`; true if it was already there.
    pub(crate) fn insert(&mut self, seq: u32) -> bool {
        let seq = seq as usize;
        let (word, bit) = (seq / 64, seq % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        let had = self.0[word] & (1 << bit) != 0;
        self.0[word] |= 1 << bit;
        had
    }

    /// How many members are below `end`.
    pub(crate) fn count_below(&self, end: u32) -> u64 {
        let end = end as usize;
        let full = end / 64;
        let mut n: u64 = self
            .0
            .iter()
            .take(full)
            .map(|w| u64::from(w.count_ones()))
            .sum();
        if let Some(w) = self.0.get(full) {
            let mask = (1u64 << (end % 64)) - 1;
            n += u64::from((w & mask).count_ones());
        }
        n
    }

    /// How many members there are.
    pub(crate) fn len(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// How many members of `self` are missing from `other`.
    pub(crate) fn missing_from(&self, other: &Self) -> u64 {
        self.0
            .iter()
            .enumerate()
            .map(|(i, w)| u64::from((w & !other.0.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }

    /// Adds all of `other`; returns how many were already there.
    fn union(&mut self, other: Self) -> u64 {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        let mut both = 0;
        for (a, b) in self.0.iter_mut().zip(other.0) {
            both += u64::from((*a & b).count_ones());
            *a |= b;
        }
        both
    }
}

/// What one consumer saw.
pub(crate) struct Seen {
    pub(crate) latency: Histogram<u64>,
    /// Per producer: the sequence numbers seen.
    bits: Vec<Bits>,
    pub(crate) received: u64,
    pub(crate) duplicates: u64,
    pub(crate) malformed: u64,
}

impl Seen {
    pub(crate) fn new(producers: usize) -> Self {
        Self {
            latency: histogram(),
            bits: vec![Bits::default(); producers],
            received: 0,
            duplicates: 0,
            malformed: 0,
        }
    }

    pub(crate) fn record(&mut self, payload: &[u8]) {
        self.received += 1;
        if payload.len() < HEADER {
            self.malformed += 1;
            return;
        }
        let mut w = [0u8; 8];
        w.copy_from_slice(&payload[..8]);
        let sent = u64::from_be_bytes(w);
        let mut p = [0u8; 4];
        p.copy_from_slice(&payload[8..12]);
        let producer = u32::from_be_bytes(p) as usize;
        p.copy_from_slice(&payload[12..16]);
        let seq = u32::from_be_bytes(p);
        let _ = self
            .latency
            .record(now_ns().saturating_sub(sent).max(1_000));
        let Some(bits) = self.bits.get_mut(producer) else {
            self.malformed += 1;
            return;
        };
        if bits.insert(seq) {
            self.duplicates += 1;
        }
    }

    /// Merge another consumer's view of the same queue (shared queues).
    pub(crate) fn merge(&mut self, other: Self) {
        let _ = self.latency.add(&other.latency);
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.malformed += other.malformed;
        for (mine, theirs) in self.bits.iter_mut().zip(other.bits) {
            self.duplicates += mine.union(theirs);
        }
    }

    /// Distinct messages seen from `producer` with seq < `sent`.
    pub(crate) fn distinct(&self, producer: usize, sent: u32) -> u64 {
        self.bits.get(producer).map_or(0, |b| b.count_below(sent))
    }

    /// Messages `producer` was promised delivery of (acknowledged by the
    /// broker) that this consumer never saw.
    pub(crate) fn missing(&self, producer: usize, promised: &Bits) -> u64 {
        match self.bits.get(producer) {
            Some(seen) => promised.missing_from(seen),
            None => promised.len(),
        }
    }
}

/// 1 µs .. 100 s, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 100_000_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("3 significant digits is in range"))
}

/// Sums over every consumer (or every shared queue) of a run.
pub(crate) struct Totals {
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) consumed: u64,
    latency: Histogram<u64>,
}

impl Totals {
    pub(crate) fn new() -> Self {
        Self {
            lost: 0,
            duplicated: 0,
            consumed: 0,
            latency: histogram(),
        }
    }

    /// Adds one consumer's view, given how many it should have seen but did not.
    pub(crate) fn add(&mut self, seen: &Seen, lost: u64) {
        self.lost += lost;
        self.duplicated += seen.duplicates;
        self.consumed += seen.received;
        let _ = self.latency.add(&seen.latency);
    }

    /// Latency at quantile `q`, in µs (0 when nothing arrived).
    pub(crate) fn latency_us(&self, q: f64) -> f64 {
        if self.latency.is_empty() {
            return 0.0;
        }
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Longest wait for consumers to catch up once producers stopped.
pub(crate) const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// How long consumers may receive nothing before the rest counts as lost.
/// Long enough for a broker working through a large backlog (RabbitMQ 3.10's
/// MQTT pauses deliveries for seconds at a time then).
const STALL_LIMIT: Duration = Duration::from_secs(10);

/// Counters shared by a run's producers, consumers and progress line.
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) consumed: AtomicU64,
    pub(crate) stop: AtomicBool,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Self {
            published: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    /// Waits until `expected` messages were consumed, nothing moved for
    /// [`STALL_LIMIT`], or [`DRAIN_LIMIT`] passed (a broker that buffered far
    /// more than it delivers must not hold the run forever; what is still
    /// undelivered then counts as lost).
    pub(crate) async fn drain(&self, expected: u64) {
        let begun = Instant::now();
        let mut last = (self.consumed.load(Ordering::Relaxed), Instant::now());
        while self.consumed.load(Ordering::Relaxed) < expected {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.consumed.load(Ordering::Relaxed);
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > STALL_LIMIT {
                eprintln!("drain timed out with {now} of {expected} consumed");
                break;
            }
            if begun.elapsed() > DRAIN_LIMIT {
                eprintln!("drain gave up after {DRAIN_LIMIT:?} with {now} of {expected} consumed");
                break;
            }
        }
    }

    /// Prints a progress line every second, forever (abort the task).
    pub(crate) async fn progress(&self, started: Instant) {
        let mut last = (0u64, 0u64);
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let p = self.published.load(Ordering::Relaxed);
            let c = self.consumed.load(Ordering::Relaxed);
            eprintln!(
                "[{:>5.1}s] published {:>9} ({:>8}/s)  consumed {:>9} ({:>8}/s)",
                started.elapsed().as_secs_f64(),
                p,
                p - last.0,
                c,
                c - last.1
            );
            last = (p, c);
        }
    }
}

/// Waits for the next message slot of a producer limited to `rate` per
/// second (0 = unlimited) that has sent `sent` since `begun`.
pub(crate) async fn pace(rate: u64, begun: Instant, sent: u32) {
    if rate == 0 {
        return;
    }
    loop {
        let due = (begun.elapsed().as_secs_f64() * rate as f64) as u64;
        if u64::from(sent) < due {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(producer: u32, seq: u32) -> Vec<u8> {
        let mut v = Vec::new();
        stamp(&mut v, 16, producer, seq);
        v
    }

    #[test]
    fn counts_duplicates_and_losses() {
        let mut seen = Seen::new(2);
        for seq in [0, 1, 2, 2, 5] {
            seen.record(&payload(0, seq));
        }
        seen.record(&payload(1, 0));
        seen.record(&payload(7, 0));
        seen.record(b"short");
        assert_eq!(seen.received, 8);
        assert_eq!(seen.duplicates, 1);
        assert_eq!(seen.malformed, 2);
        assert_eq!(seen.distinct(0, 6), 4);
        assert_eq!(seen.distinct(0, 3), 3);
        assert_eq!(seen.distinct(1, 1), 1);

        let mut promised = Bits::default();
        for seq in [0, 1, 3, 5, 130] {
            promised.insert(seq);
        }
        assert_eq!(seen.missing(0, &promised), 2);
        assert_eq!(seen.missing(1, &promised), 4);
        assert_eq!(seen.missing(9, &promised), 5);
    }

    #[test]
    fn merge_counts_overlap_as_duplicates() {
        let mut a = Seen::new(1);
        let mut b = Seen::new(1);
        for seq in 0..100 {
            a.record(&payload(0, seq));
        }
        for seq in 90..200 {
            b.record(&payload(0, seq));
        }
        a.merge(b);
        assert_eq!(a.duplicates, 10);
        assert_eq!(a.distinct(0, 200), 200);

        let mut totals = Totals::new();
        totals.add(&a, 3);
        assert_eq!(
            (totals.lost, totals.duplicated, totals.consumed),
            (3, 10, 210)
        );
        assert!(totals.latency_us(0.5) >= 1.0);
    }

    #[test]
    fn bits_edges() {
        let mut b = Bits::default();
        assert_eq!(b.count_below(0), 0);
        assert!(!b.insert(63));
        assert!(b.insert(63));
        b.insert(64);
        assert_eq!(b.count_below(63), 0);
        assert_eq!(b.count_below(64), 1);
        assert_eq!(b.count_below(65), 2);
        assert_eq!(b.len(), 2);
        assert!(run_id().len() <= 14);
    }
}
