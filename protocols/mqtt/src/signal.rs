//! One connection's signal to whoever takes its client id over: "stop" (the
//! new connection asks the old one to end) and "finished" (the old one has
//! released its session, the new one may resume it). Also where the
//! connection is parked, so a takeover can wake it.
//!
//! One small allocation per connection (two cancellation tokens cost about
//! three times as much, and every idle device has one).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use tokio::sync::Notify;

const STOP: u8 = 1;
const FINISHED: u8 = 2;
const NOT_PARKED: u64 = u64::MAX;

/// Stop / finished flags with async waits, and the parking key.
#[derive(Debug)]
pub struct Signal {
    flags: AtomicU8,
    parked: AtomicU64,
    notify: Notify,
}

impl Default for Signal {
    fn default() -> Self {
        Self {
            flags: AtomicU8::new(0),
            parked: AtomicU64::new(NOT_PARKED),
            notify: Notify::new(),
        }
    }
}

impl Signal {
    /// Asks the connection to end.
    pub fn stop(&self) {
        self.raise(STOP);
    }

    /// Says the session is released.
    pub fn finish(&self) {
        self.raise(FINISHED);
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.flags.load(Ordering::SeqCst) & STOP != 0
    }

    /// Whether [`finish`](Self::finish) was called.
    pub fn is_finished(&self) -> bool {
        self.flags.load(Ordering::SeqCst) & FINISHED != 0
    }

    /// Completes once [`stop`](Self::stop) was called.
    pub async fn stopped(&self) {
        self.wait(STOP).await;
    }

    /// Completes once [`finish`](Self::finish) was called.
    pub async fn finished(&self) {
        self.wait(FINISHED).await;
    }

    /// Records where the connection is parked (`None`: it is running).
    pub fn set_parked(&self, key: Option<u64>) {
        self.parked
            .store(key.unwrap_or(NOT_PARKED), Ordering::SeqCst);
    }

    /// Where the connection is parked, if it is.
    pub fn parked(&self) -> Option<u64> {
        let k = self.parked.load(Ordering::SeqCst);
        (k != NOT_PARKED).then_some(k)
    }

    fn raise(&self, bit: u8) {
        self.flags.fetch_or(bit, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    async fn wait(&self, bit: u8) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check: a raise in between still wakes.
            notified.as_mut().enable();
            if self.flags.load(Ordering::SeqCst) & bit != 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn waits_see_raises_before_and_after() {
        let s = Arc::new(Signal::default());
        assert!(!s.is_stopped() && !s.is_finished());
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.finished().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.stop();
        assert!(s.is_stopped() && !s.is_finished());
        tokio::time::timeout(Duration::from_millis(10), s.stopped())
            .await
            .expect("already stopped");
        assert!(!waiter.is_finished());
        s.finish();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("finished wakes the waiter")
            .unwrap();
    }

    #[test]
    fn parked_key_round_trips() {
        let s = Signal::default();
        assert_eq!(s.parked(), None);
        s.set_parked(Some(42));
        assert_eq!(s.parked(), Some(42));
        s.set_parked(None);
        assert_eq!(s.parked(), None);
    }
}
