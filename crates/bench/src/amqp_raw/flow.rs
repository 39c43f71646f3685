//! Producer flow control without I/O: [`Pacer`] spaces publishes by the
//! clock, [`Confirms`] tracks the publisher-confirm window. Both take `now`
//! or broker events as arguments, so their arithmetic is tested directly.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Shortest pause of a paced producer: at most one wake-up per tick, each
/// sending every message that fell due since the last.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// A token bucket filled by the clock: `rate` tokens a second, at most
/// `burst` held. A producer asks [`Self::available`], sends that many, calls
/// [`Self::take`], and sleeps until [`Self::next_tick`] when none are left —
/// never a sleep per message.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    /// Tokens a second; 0 = unlimited.
    rate: u64,
    origin: Instant,
    /// Tokens spent or forgiven since `origin`.
    spent: u64,
    /// Tokens held at most: 100 ms worth, so a stall (broker pushback, a
    /// descheduled thread) is not followed by a flood that would distort the
    /// latency the rate is there to measure.
    burst: u64,
}

impl Pacer {
    pub(crate) fn new(rate: u64, now: Instant) -> Self {
        Self {
            rate,
            origin: now,
            spent: 0,
            burst: (rate / 10).max(1),
        }
    }

    /// Messages that may be sent at `now` (`u64::MAX` when unlimited).
    pub(crate) fn available(&mut self, now: Instant) -> u64 {
        if self.rate == 0 {
            return u64::MAX;
        }
        let due = tokens(self.rate, now.saturating_duration_since(self.origin));
        let owed = due.saturating_sub(self.spent);
        if owed > self.burst {
            self.spent = due - self.burst;
        }
        owed.min(self.burst)
    }

    /// Records `n` messages sent.
    pub(crate) fn take(&mut self, n: u64) {
        if self.rate > 0 {
            self.spent = self.spent.saturating_add(n);
        }
    }

    /// When the next token is due, but no sooner than [`TICK`] after `now`.
    pub(crate) fn next_tick(&self, now: Instant) -> Instant {
        let next = self.origin + time_of(self.rate, self.spent.saturating_add(1));
        next.max(now + TICK)
    }
}

/// Tokens due `elapsed` after the origin at `rate` a second.
fn tokens(rate: u64, elapsed: Duration) -> u64 {
    let n = elapsed.as_nanos().saturating_mul(u128::from(rate)) / 1_000_000_000;
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// When token `n` falls due, after the origin (rounded up to the nanosecond).
fn time_of(rate: u64, n: u64) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    let nanos = (u128::from(n) * 1_000_000_000).div_ceil(u128::from(rate));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Publishes awaiting a confirm on one channel in confirm mode, where the
/// broker numbers publishes 1, 2, … and acks or nacks them singly or
/// `multiple` (every tag up to the given one).
#[derive(Debug, Clone)]
pub(crate) struct Confirms {
    /// Tag of `pending[0]`: the oldest publish not yet confirmed.
    base: u64,
    /// From `base` on, whether each publish is confirmed yet; confirmed ones
    /// leave from the front only, so an out-of-order single ack waits here.
    pending: VecDeque<bool>,
    /// Entries of `pending` still false.
    outstanding: usize,
    pub(crate) acked: u64,
    pub(crate) nacked: u64,
    /// Confirms naming no outstanding publish (a broker bug).
    pub(crate) unknown: u64,
}

impl Confirms {
    pub(crate) fn new() -> Self {
        Self {
            base: 1,
            pending: VecDeque::new(),
            outstanding: 0,
            acked: 0,
            nacked: 0,
            unknown: 0,
        }
    }

    /// Publishes awaiting a confirm.
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Records `n` more publishes.
    pub(crate) fn published(&mut self, n: u64) {
        for _ in 0..n {
            self.pending.push_back(false);
        }
        self.outstanding += n as usize;
    }

    /// Handles a basic.ack (`ack`) or basic.nack; returns how many publishes
    /// it settled. `multiple` with tag 0 settles everything outstanding.
    pub(crate) fn confirm(&mut self, tag: u64, multiple: bool, ack: bool) -> u64 {
        let last = self.base + self.pending.len() as u64;
        let range = match (multiple, tag) {
            (true, 0) => self.base..last,
            (true, t) => self.base..(t.saturating_add(1)).min(last),
            (false, t) if (self.base..last).contains(&t) => t..t + 1,
            (false, _) => 0..0,
        };
        let mut n = 0;
        for t in range {
            let slot = &mut self.pending[(t - self.base) as usize];
            if !*slot {
                *slot = true;
                n += 1;
            }
        }
        if n == 0 {
            self.unknown += 1;
        }
        while self.pending.front() == Some(&true) {
            self.pending.pop_front();
            self.base += 1;
        }
        self.outstanding -= n as usize;
        if ack {
            self.acked += n;
        } else {
            self.nacked += n;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_follows_the_clock_not_the_calls() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut p = Pacer::new(10_000, t0);
        assert_eq!(p.available(t0), 0);
        // 10 per ms: asking twice in the same instant does not double it.
        assert_eq!(p.available(ms(1)), 10);
        assert_eq!(p.available(ms(1)), 10);
        p.take(4);
        assert_eq!(p.available(ms(1)), 6);
        p.take(6);
        assert_eq!(p.available(ms(1)), 0);
        // Token 11 is due at 1.1 ms, but the pacer waits a whole tick.
        assert_eq!(p.next_tick(ms(1)), ms(2));
        assert_eq!(p.available(ms(3)), 20);
        p.take(20);
        // Over a second, exactly `rate` tokens.
        let mut sent = 30;
        for t in 4..=1000 {
            let n = p.available(ms(t));
            p.take(n);
            sent += n;
        }
        assert_eq!(sent, 10_000);
    }

    #[test]
    fn slow_rates_wake_when_the_next_token_is_due() {
        let t0 = Instant::now();
        let mut p = Pacer::new(3, t0);
        assert_eq!(p.available(t0), 0);
        assert_eq!(p.next_tick(t0), t0 + Duration::from_nanos(333_333_334));
        assert_eq!(p.available(t0 + Duration::from_millis(334)), 1);
        p.take(1);
        assert_eq!(p.next_tick(t0), t0 + Duration::from_nanos(666_666_667));
    }

    #[test]
    fn a_stall_is_forgiven_beyond_one_burst() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1000, t0);
        // 5 s behind: only 100 ms worth is sent at once, then the steady rate.
        let late = t0 + Duration::from_secs(5);
        assert_eq!(p.available(late), 100);
        p.take(100);
        assert_eq!(p.available(late), 0);
        assert_eq!(p.available(late + Duration::from_millis(7)), 7);
        assert_eq!(p.next_tick(late), late + Duration::from_millis(1));
    }

    #[test]
    fn unlimited_rate_never_waits() {
        let t0 = Instant::now();
        let mut p = Pacer::new(0, t0);
        assert_eq!(p.available(t0), u64::MAX);
        p.take(u64::MAX);
        assert_eq!(p.available(t0), u64::MAX);
        assert_eq!(tokens(u64::MAX, Duration::from_secs(u64::MAX)), u64::MAX);
    }

    #[test]
    fn confirms_single_multiple_and_out_of_order() {
        let mut c = Confirms::new();
        c.published(10);
        assert_eq!(c.outstanding(), 10);
        assert_eq!(c.confirm(3, false, true), 1);
        assert_eq!(c.confirm(3, false, true), 0, "repeat");
        assert_eq!(c.confirm(5, true, true), 4, "1, 2, 4, 5");
        assert_eq!(c.confirm(6, false, false), 1);
        assert_eq!(c.outstanding(), 4);
        assert_eq!(c.confirm(42, false, true), 0);
        assert_eq!(c.confirm(42, true, true), 4, "7..=10, clamped");
        assert_eq!((c.acked, c.nacked, c.unknown), (9, 1, 2));
        assert_eq!(c.outstanding(), 0);
        c.published(3);
        assert_eq!(c.confirm(10, false, true), 0, "already settled");
        assert_eq!(c.confirm(0, true, false), 3, "tag 0: all outstanding");
        assert_eq!((c.base, c.pending.len()), (14, 0));
    }
}
