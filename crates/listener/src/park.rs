//! The parking lot: idle connections held outside the async runtime.
//!
//! A connection task that waits on its socket costs a tokio task, a reactor
//! registration and the whole state of its future, a few kilobytes each.
//! A fleet of devices that connect and then say nothing for minutes does not
//! need any of that. A protocol hands such a connection here ([`park`]) with
//! the compact state it needs to carry on, and it then costs its socket, a
//! slot in this lot and that state.
//!
//! One thread waits on every parked socket (epoll, through mio). A parked
//! connection goes back to the protocol's `resume` callback, which typically
//! spawns a task for it again, when its socket becomes readable (data, EOF
//! or an error), when its deadline passes (a keep-alive), when someone asks
//! ([`wake`]: a session takeover) or when the lot shuts down.
//!
//! This module owns the parked sockets, their slots and deadlines; what the
//! state means is the protocol's business.
//!
//! [`park`]: ParkingLot::park
//! [`wake`]: ParkingLot::wake

use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Registry, Token, Waker};

/// The waker's token; slot indices are below it.
const WAKER: Token = Token(usize::MAX);
/// Longest the lot thread sleeps without a deadline, so it notices the lot
/// was dropped.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Slot indices fit in this many bits: a deadline and its slot share one
/// `u64` (milliseconds since the lot started above them), the smallest
/// timer entry there is, since every parked connection has one.
const INDEX_BITS: u32 = 24;
/// No deadline.
const NEVER: u64 = u64::MAX;

/// Why a parked connection was handed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Its socket became readable: data, end of stream or an error.
    Readable,
    /// Its deadline passed.
    Deadline,
    /// [`ParkingLot::wake`] asked for it.
    Asked,
    /// The lot is shutting down.
    Shutdown,
}

/// Names one parked connection; stale once it was handed back (the slot's
/// generation moved on), so waking a stale key does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParkKey(u64);

impl ParkKey {
    fn new(index: u32, generation: u32) -> Self {
        Self(u64::from(generation) << 32 | u64::from(index))
    }

    fn index(self) -> u32 {
        self.0 as u32
    }

    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The key as a number (to keep in an atomic).
    pub fn to_bits(self) -> u64 {
        self.0
    }

    /// A key from [`to_bits`](Self::to_bits).
    pub fn from_bits(bits: u64) -> Self {
        Self(bits)
    }
}

/// Idle connections with their protocol state `T`.
pub struct ParkingLot<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for ParkingLot<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T> std::fmt::Debug for ParkingLot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkingLot")
            .field("parked", &self.len())
            .finish()
    }
}

struct Inner<T> {
    /// Deadlines are counted from here.
    epoch: Instant,
    registry: Registry,
    waker: Waker,
    slots: Mutex<Slots<T>>,
}

struct Slots<T> {
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
    /// `ms << INDEX_BITS | index`, see [`INDEX_BITS`].
    deadlines: BTreeSet<u64>,
    asked: Vec<ParkKey>,
    parked: usize,
    closed: bool,
}

struct Entry<T> {
    generation: u32,
    parked: Option<Parked<T>>,
}

struct Parked<T> {
    stream: mio::net::TcpStream,
    /// Its entry in `deadlines`, or [`NEVER`].
    deadline: u64,
    state: T,
}

impl<T> Slots<T> {
    /// Empties slot `index`, if it holds a connection.
    fn take(&mut self, index: u32) -> Option<Parked<T>> {
        let entry = self.entries.get_mut(index as usize)?;
        let parked = entry.parked.take()?;
        entry.generation = entry.generation.wrapping_add(1);
        if parked.deadline != NEVER {
            self.deadlines.remove(&parked.deadline);
        }
        self.free.push(index);
        self.parked -= 1;
        Some(parked)
    }

    fn take_key(&mut self, key: ParkKey) -> Option<Parked<T>> {
        let entry = self.entries.get(key.index() as usize)?;
        if entry.generation != key.generation() {
            return None;
        }
        self.take(key.index())
    }
}

impl<T: Send + 'static> ParkingLot<T> {
    /// Starts the lot's thread, named `name`. `resume` receives every
    /// connection handed back, on that thread: it must not block (spawn a
    /// task and return).
    pub fn start<F>(name: &str, resume: F) -> io::Result<Self>
    where
        F: Fn(std::net::TcpStream, T, Wake) + Send + 'static,
    {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let inner = Arc::new(Inner {
            epoch: Instant::now(),
            registry,
            waker,
            slots: Mutex::new(Slots {
                entries: Vec::new(),
                free: Vec::new(),
                deadlines: BTreeSet::new(),
                asked: Vec::new(),
                parked: 0,
                closed: false,
            }),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(poll, weak, resume))?;
        Ok(Self { inner })
    }

    /// Parks `stream` with `state` until it is readable, `deadline` passes,
    /// it is asked for or the lot shuts down. Gives both back if the lot is
    /// shut down or the socket cannot be registered.
    #[allow(clippy::result_large_err)] // the caller's own values, handed back
    pub fn park(
        &self,
        stream: std::net::TcpStream,
        deadline: Option<Instant>,
        state: T,
    ) -> Result<ParkKey, (std::net::TcpStream, T)> {
        let mut stream = mio::net::TcpStream::from_std(stream);
        let mut slots = self.inner.slots.lock();
        if slots.closed {
            return Err((stream.into(), state));
        }
        let index = match slots.free.pop() {
            Some(i) => i,
            None => {
                let i = slots.entries.len() as u32;
                if i >= 1 << INDEX_BITS {
                    return Err((stream.into(), state));
                }
                slots.entries.push(Entry {
                    generation: 0,
                    parked: None,
                });
                i
            }
        };
        // Registered under the lock: an event for this slot waits for the
        // slot to be filled. A socket already readable is reported at once.
        if let Err(e) =
            self.inner
                .registry
                .register(&mut stream, Token(index as usize), Interest::READABLE)
        {
            tracing::warn!(error = %e, "cannot park a connection");
            slots.free.push(index);
            return Err((stream.into(), state));
        }
        let earliest = slots.deadlines.first().copied();
        let deadline = deadline.map_or(NEVER, |d| {
            // Rounded up: a connection is never handed back early.
            let ms = d
                .saturating_duration_since(self.inner.epoch)
                .as_micros()
                .div_ceil(1000);
            u64::try_from(ms)
                .unwrap_or(u64::MAX >> INDEX_BITS)
                .min(u64::MAX >> INDEX_BITS)
                << INDEX_BITS
                | u64::from(index)
        });
        if deadline != NEVER {
            slots.deadlines.insert(deadline);
        }
        let entry = &mut slots.entries[index as usize];
        entry.parked = Some(Parked {
            stream,
            deadline,
            state,
        });
        let key = ParkKey::new(index, entry.generation);
        slots.parked += 1;
        drop(slots);
        // The thread sleeps until the earliest deadline it knew of.
        if deadline != NEVER && earliest.is_none_or(|e| deadline < e) {
            let _ = self.inner.waker.wake();
        }
        Ok(key)
    }
}

impl<T> ParkingLot<T> {
    /// Hands the connection `key` back (with [`Wake::Asked`]) if it is still
    /// parked; does nothing for a stale key.
    pub fn wake(&self, key: ParkKey) {
        let mut slots = self.inner.slots.lock();
        let current = slots
            .entries
            .get(key.index() as usize)
            .is_some_and(|e| e.generation == key.generation() && e.parked.is_some());
        if current {
            slots.asked.push(key);
            drop(slots);
            let _ = self.inner.waker.wake();
        }
    }

    /// Hands every parked connection back (with [`Wake::Shutdown`]) and
    /// parks no more; the thread then ends.
    pub fn shutdown(&self) {
        self.inner.slots.lock().closed = true;
        let _ = self.inner.waker.wake();
    }

    /// Connections parked now.
    pub fn len(&self) -> usize {
        self.inner.slots.lock().parked
    }

    /// Whether no connection is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Inner<T> {
    /// When the deadline entry `d` falls.
    fn at(&self, d: u64) -> Instant {
        self.epoch + Duration::from_millis(d >> INDEX_BITS)
    }
}

/// The lot's thread: waits for readiness, deadlines and requests, and hands
/// connections back. Ends on shutdown or when the lot is dropped.
fn run<T, F>(mut poll: Poll, lot: Weak<Inner<T>>, resume: F)
where
    F: Fn(std::net::TcpStream, T, Wake),
{
    let mut events = Events::with_capacity(1024);
    let mut woken: Vec<(Parked<T>, Wake)> = Vec::new();
    loop {
        let timeout = {
            let Some(inner) = lot.upgrade() else { return };
            let slots = inner.slots.lock();
            if slots.closed || !slots.asked.is_empty() {
                Duration::ZERO
            } else {
                slots.deadlines.first().map_or(MAX_SLEEP, |&d| {
                    inner
                        .at(d)
                        .saturating_duration_since(Instant::now())
                        .min(MAX_SLEEP)
                })
            }
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout))
            && e.kind() != io::ErrorKind::Interrupted
        {
            tracing::error!(error = %e, "parking lot poll failed");
            std::thread::sleep(Duration::from_millis(10));
        }
        let Some(inner) = lot.upgrade() else { return };
        let closing = {
            let mut slots = inner.slots.lock();
            for event in &events {
                if event.token() == WAKER {
                    continue;
                }
                if let Ok(index) = u32::try_from(event.token().0)
                    && let Some(p) = slots.take(index)
                {
                    woken.push((p, Wake::Readable));
                }
            }
            for key in std::mem::take(&mut slots.asked) {
                if let Some(p) = slots.take_key(key) {
                    woken.push((p, Wake::Asked));
                }
            }
            let now = Instant::now();
            while let Some(&d) = slots.deadlines.first() {
                if inner.at(d) > now {
                    break;
                }
                let index = (d & ((1 << INDEX_BITS) - 1)) as u32;
                match slots.take(index) {
                    Some(p) => woken.push((p, Wake::Deadline)),
                    None => {
                        slots.deadlines.pop_first();
                    }
                }
            }
            if slots.closed {
                for index in 0..slots.entries.len() as u32 {
                    if let Some(p) = slots.take(index) {
                        woken.push((p, Wake::Shutdown));
                    }
                }
            }
            slots.closed
        };
        for (mut p, why) in woken.drain(..) {
            let _ = inner.registry.deregister(&mut p.stream);
            resume(p.stream.into(), p.state, why);
        }
        if closing {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;

    type Handed = mpsc::Receiver<(TcpStream, u32, Wake)>;

    fn lot() -> (ParkingLot<u32>, Handed) {
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let lot = ParkingLot::start("test-lot", move |s, n, why| {
            let _ = tx.lock().unwrap().send((s, n, why));
        })
        .expect("start");
        (lot, rx)
    }

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = TcpStream::connect(l.local_addr().unwrap()).expect("connect");
        let (s, _) = l.accept().expect("accept");
        s.set_nonblocking(true).unwrap();
        (s, c)
    }

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn readable_socket_is_handed_back_with_its_state() {
        let (lot, rx) = lot();
        let (server, mut client) = pair();
        lot.park(server, None, 7).expect("park");
        assert_eq!(lot.len(), 1);
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        client.write_all(b"x").unwrap();
        let (_, n, why) = rx.recv_timeout(WAIT).expect("handed back");
        assert_eq!((n, why), (7, Wake::Readable));
        assert!(lot.is_empty());
    }

    #[test]
    fn already_readable_socket_is_handed_back_at_once() {
        let (lot, rx) = lot();
        let (server, mut client) = pair();
        client.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        lot.park(server, None, 1).expect("park");
        let (_, _, why) = rx.recv_timeout(WAIT).expect("handed back");
        assert_eq!(why, Wake::Readable);
    }

    #[test]
    fn deadlines_wake_in_order_and_wake_by_key_is_exact() {
        let (lot, rx) = lot();
        let (a, _ca) = pair();
        let (b, _cb) = pair();
        let (c, _cc) = pair();
        let now = Instant::now();
        lot.park(a, Some(now + Duration::from_millis(300)), 1)
            .expect("park");
        lot.park(b, Some(now + Duration::from_millis(100)), 2)
            .expect("park");
        let key = lot.park(c, None, 3).expect("park");
        let first = rx.recv_timeout(WAIT).expect("first");
        let second = rx.recv_timeout(WAIT).expect("second");
        assert_eq!((first.1, first.2), (2, Wake::Deadline));
        assert_eq!((second.1, second.2), (1, Wake::Deadline));
        assert!(now.elapsed() >= Duration::from_millis(300));
        lot.wake(key);
        let (_, n, why) = rx.recv_timeout(WAIT).expect("asked");
        assert_eq!((n, why), (3, Wake::Asked));
        // The key is stale now: the slot is reused and not woken by it.
        let (d, _cd) = pair();
        let again = lot.park(d, None, 4).expect("park");
        assert_eq!(again.index(), key.index());
        lot.wake(key);
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        assert_eq!(lot.len(), 1);
    }

    #[test]
    fn shutdown_hands_everything_back_and_refuses_more() {
        let (lot, rx) = lot();
        let mut clients = Vec::new();
        for n in 0..5 {
            let (s, c) = pair();
            clients.push(c);
            lot.park(s, None, n).expect("park");
        }
        lot.shutdown();
        let mut got: Vec<u32> = (0..5)
            .map(|_| {
                let (_, n, why) = rx.recv_timeout(WAIT).expect("handed back");
                assert_eq!(why, Wake::Shutdown);
                n
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        let (s, _c) = pair();
        let (_, n) = lot.park(s, None, 9).expect_err("closed");
        assert_eq!(n, 9);
    }
}
