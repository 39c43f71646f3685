//! The accept loop every listener shares (AMQP, MQTT, STOMP and the
//! WebSocket listeners): it owns the listening socket, enforces the total
//! and per-source-address connection limits, backs off when `accept` fails
//! (typically EMFILE) instead of spinning, and stops on shutdown. What a
//! connection does is the caller's handler; this crate knows no protocol.
//!
//! [`driver`] is the one connection loop every protocol runs on.
//! [`park`] holds idle connections outside the runtime, for protocols whose
//! clients sit idle for long stretches (MQTT devices).

pub mod driver;
pub mod park;

use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where a connection came in: the listener's address (which, with the
/// peer's, names the connection as RabbitMQ names it) and whether it is
/// carried over WebSocket (listed as `Web STOMP` / `Web MQTT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// The address the client connected to, if known.
    pub local: Option<SocketAddr>,
    /// Over WebSocket.
    pub web: bool,
}

impl Endpoint {
    /// A plain TCP connection accepted on `stream`.
    #[must_use]
    pub fn tcp(stream: &TcpStream) -> Self {
        Self {
            local: stream.local_addr().ok(),
            web: false,
        }
    }
}

/// Connection limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Simultaneous connections; further clients wait in the backlog.
    pub max_connections: usize,
    /// Simultaneous connections from one source address; further ones are
    /// closed at once.
    pub max_per_address: usize,
    /// Each accepted socket's kernel receive buffer in bytes (`SO_RCVBUF`);
    /// `None` leaves Linux's autotuning, which grows it to megabytes. A
    /// bounded buffer bounds what waits unread while the broker pauses a
    /// publisher (see `server.tcp_recv_buffer`).
    pub recv_buffer: Option<usize>,
}

/// A connection's place under its listener's limits: the connection counts
/// against them until this is dropped.
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    _slot: Slot,
}

impl Admission {
    /// An admission under limits of its own, for a connection no listener
    /// accepted (tests, tools).
    pub fn detached() -> Self {
        let permit = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("a fresh semaphore has a permit");
        let slot = PerAddress::default()
            .acquire(IpAddr::from([0, 0, 0, 0]), 1)
            .expect("a fresh table has room");
        Self {
            _permit: permit,
            _slot: slot,
        }
    }
}

/// Accept connections on `listener` until `shutdown` is cancelled, running
/// `handle` for each on `tracker`. `protocol` names the listener in logs.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    protocol: &'static str,
    limits: Limits,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    mut handle: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let admitted = move |stream, peer, admission: Admission| {
        // Boxed: an async block that awaits a future it captured keeps two
        // copies of it (rustc lays out the captured value and the awaited
        // one separately), which doubled every connection's task.
        let conn = Box::pin(handle(stream, peer));
        async move {
            let _admission = admission;
            conn.await;
        }
    };
    accept_loop_admitted(listener, protocol, limits, shutdown, tracker, admitted).await;
}

/// [`accept_loop`] for handlers that may outlive their task (a parked
/// connection): `handle` receives the connection's [`Admission`] and keeps
/// it as long as the connection lives.
pub async fn accept_loop_admitted<F, Fut>(
    listener: TcpListener,
    protocol: &'static str,
    limits: Limits,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    mut handle: F,
) where
    F: FnMut(TcpStream, SocketAddr, Admission) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_address = PerAddress::default();
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => { backoff = Duration::from_millis(5); x }
                Err(e) => {
                    tracing::warn!(protocol, error = %e, "accept failed");
                    sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let Some(slot) = per_address.acquire(peer.ip(), limits.max_per_address) else {
            tracing::warn!(protocol, %peer, limit = limits.max_per_address, "too many connections from one address; closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        if let Some(bytes) = limits.recv_buffer
            && let Err(e) = socket2::SockRef::from(&stream).set_recv_buffer_size(bytes)
        {
            tracing::debug!(protocol, error = %e, "cannot set the receive buffer");
        }
        let admission = Admission {
            _permit: permit,
            _slot: slot,
        };
        tracker.spawn(handle(stream, peer, admission));
    }
}

/// Connections per source address.
#[derive(Clone, Default)]
struct PerAddress(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// Held by a connection; frees its address slot when dropped.
struct Slot(PerAddress, IpAddr);

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Slot").field(&self.1).finish()
    }
}

impl PerAddress {
    fn acquire(&self, ip: IpAddr, limit: usize) -> Option<Slot> {
        let mut map = self.0.lock();
        let n = map.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Slot(self.clone(), ip))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = (self.0).0.lock();
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The receive buffer asked for is what an accepted socket gets (Linux
    /// doubles the value for its own bookkeeping).
    #[tokio::test]
    async fn accepted_sockets_get_the_receive_buffer_asked_for() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            max_connections: 4,
            max_per_address: 4,
            recv_buffer: Some(32_768),
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let accepting = tokio::spawn(accept_loop(
            listener,
            "test",
            limits,
            stop,
            TaskTracker::new(),
            move |stream, _| {
                let tx = tx.clone();
                async move {
                    let size = socket2::SockRef::from(&stream).recv_buffer_size().unwrap();
                    let _ = tx.send(size);
                }
            },
        ));
        let _client = TcpStream::connect(addr).await.unwrap();
        let size = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("accepted in time")
            .expect("a size");
        assert!((32_768..=65_536).contains(&size), "receive buffer {size}");
        shutdown.cancel();
        accepting.await.unwrap();
    }

    #[test]
    fn per_address_slots_are_counted_and_freed() {
        let p = PerAddress::default();
        let ip: IpAddr = [127, 0, 0, 1].into();
        let a = p.acquire(ip, 2).expect("first");
        let _b = p.acquire(ip, 2).expect("second");
        assert!(p.acquire(ip, 2).is_none(), "limit reached");
        assert!(
            p.acquire([127, 0, 0, 2].into(), 2).is_some(),
            "other address"
        );
        drop(a);
        assert!(p.acquire(ip, 2).is_some(), "slot freed");
    }
}
