//! Payload stamping and per-consumer bookkeeping: latency histogram and a
//! bitset per producer to count losses and duplicates exactly.

use hdrhistogram::Histogram;
use std::sync::OnceLock;
use std::time::Instant;

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

/// A payload of `size` bytes (at least [`HEADER`]).
pub(crate) fn stamp(buf: &mut Vec<u8>, size: usize, producer: u32, seq: u32) {
    buf.clear();
    buf.extend_from_slice(&now_ns().to_be_bytes());
    buf.extend_from_slice(&producer.to_be_bytes());
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.resize(size.max(HEADER), 0xAB);
}

/// What one consumer saw.
pub(crate) struct Seen {
    pub(crate) latency: Histogram<u64>,
    /// Per producer: bit `seq` set once seen.
    bits: Vec<Vec<u64>>,
    pub(crate) received: u64,
    pub(crate) duplicates: u64,
    pub(crate) malformed: u64,
}

impl Seen {
    pub(crate) fn new(producers: usize) -> Self {
        Self {
            // 1 µs .. 100 s, 3 significant digits.
            latency: Histogram::new_with_bounds(1_000, 100_000_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).expect("valid sigfig")),
            bits: vec![Vec::new(); producers],
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
        let seq = u32::from_be_bytes(p) as usize;
        let _ = self
            .latency
            .record(now_ns().saturating_sub(sent).max(1_000));
        let Some(bits) = self.bits.get_mut(producer) else {
            self.malformed += 1;
            return;
        };
        let (word, bit) = (seq / 64, seq % 64);
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        if bits[word] & (1 << bit) != 0 {
            self.duplicates += 1;
        }
        bits[word] |= 1 << bit;
    }

    /// Merge another consumer's view of the same queue (shared queues).
    pub(crate) fn merge(&mut self, other: Self) {
        let _ = self.latency.add(&other.latency);
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.malformed += other.malformed;
        for (mine, theirs) in self.bits.iter_mut().zip(other.bits) {
            if mine.len() < theirs.len() {
                mine.resize(theirs.len(), 0);
            }
            for (a, b) in mine.iter_mut().zip(theirs) {
                self.duplicates += u64::from((*a & b).count_ones());
                *a |= b;
            }
        }
    }

    /// Distinct messages seen from `producer` with seq < `sent`.
    pub(crate) fn distinct(&self, producer: usize, sent: u32) -> u64 {
        let Some(bits) = self.bits.get(producer) else {
            return 0;
        };
        let sent = sent as usize;
        let full = sent / 64;
        let mut n: u64 = bits
            .iter()
            .take(full)
            .map(|w| u64::from(w.count_ones()))
            .sum();
        if let Some(w) = bits.get(full) {
            let mask = (1u64 << (sent % 64)) - 1;
            n += u64::from((w & mask).count_ones());
        }
        n
    }
}
