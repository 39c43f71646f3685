//! The one connection driver every protocol runs on (AMQP, MQTT, STOMP, over
//! TCP or a WebSocket bridge): it owns the byte stream and the clock, and
//! drives a sans-IO [`Connection`].
//!
//! One `select!` loop per connection, over:
//! - the shutdown token (once);
//! - writes of everything the connection produced, in as few syscalls as
//!   possible (the whole output buffer per write);
//! - the oldest durability ticket the connection is waiting on (publisher
//!   confirms, PUBACKs, RECEIPTs): resolved tickets wake the driver;
//! - a wait the connection asked for ([`Connection::take_wait`], an MQTT
//!   takeover waiting for the old connection to let go);
//! - an interruption ([`Connection::interrupted`], an MQTT takeover of this
//!   connection): what the peer already sent is read first, without waiting;
//! - socket reads, armed only while the connection wants input, its output
//!   is under [`OUTPUT_HIGH_WATER`], and backpressure does not pause it;
//! - the engine's deliveries (the connection's [`Outbox`]), armed while the
//!   output is under its high-water mark;
//! - backpressure relief ([`Relief`]), armed only while paused (plus a
//!   re-check every [`PAUSE_RECHECK`], so a pause on consumers that stopped
//!   delivering ends);
//! - the connection's next deadline ([`Connection::poll_timeout`]), and the
//!   moment an idle connection may be parked ([`Connection::park_at`]).
//!
//! Nothing polls: every arm is a wake-up. The connection reads the clock only
//! through the `now` the driver passes to its handlers.
//!
//! # The timer contract
//!
//! After every handler the driver asks [`Connection::poll_timeout`] for the
//! earliest instant the connection wants to be called back at, and calls
//! [`Connection::handle_timeout`] once that instant has passed (possibly
//! late, possibly early by nothing). The connection decides what expired by
//! comparing its own deadlines with `now`. Reads and writes are reported
//! with [`Connection::handle_read`] and [`Connection::handle_written`];
//! a pause of reading with [`Connection::handle_paused`], so silence the
//! broker chose is never taken for a dead peer.

use bytes::BytesMut;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_engine::connections::ConnectionEntry;
use switchyard_engine::{Durable, Outbox, Relief, wait_durable};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Stop reading from a peer, and taking deliveries, while this many output
/// bytes are unwritten.
pub const OUTPUT_HIGH_WATER: usize = 1 << 20;
/// How long the last bytes (a close, an ERROR frame) may take to leave.
pub const FINAL_FLUSH: Duration = Duration::from_secs(1);
/// The first read's room; doubled after each read that fills it.
const MIN_READ: usize = 512;
/// The largest read.
const MAX_READ: usize = 64 * 1024;
/// While paused, how often the connection asks again whether it still is.
const PAUSE_RECHECK: Duration = Duration::from_millis(100);
/// What an interruption reads of what the peer already sent.
const INTERRUPT_READ_BUDGET: usize = 64 * 1024;

/// A future the driver awaits for the connection.
pub type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Running.
    Open,
    /// Over: [`finish`] releases it, writes what is left (bounded by
    /// [`FINAL_FLUSH`]) and closes.
    Closed,
    /// Over at once, nothing more written (the peer is gone or stuck).
    Abort,
}

impl Status {
    /// `Abort` if `aborted`, else `Closed` if `closed`, else `Open`.
    pub fn of(aborted: bool, closed: bool) -> Self {
        if aborted {
            Self::Abort
        } else if closed {
            Self::Closed
        } else {
            Self::Open
        }
    }
}

/// How [`drive`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The connection is over; [`finish`] it.
    Closed,
    /// Idle and past [`Connection::park_at`]: the caller may park it.
    Park,
}

/// A sans-IO protocol connection: decodes input, produces output, keeps its
/// own timers. See the module docs for the contract.
pub trait Connection {
    /// Bytes read from the peer: consume every complete frame (what is left
    /// is kept for the next read).
    fn handle_input(&mut self, input: &mut BytesMut, now: Instant);

    /// Bytes arrived from the peer at `now` (before
    /// [`Connection::handle_input`] sees them).
    fn handle_read(&mut self, now: Instant) {
        let _ = now;
    }

    /// Bytes waiting to be written; the driver removes what it wrote.
    fn output(&mut self) -> &mut BytesMut;

    /// Some output was written at `now`.
    fn handle_written(&mut self, now: Instant) {
        let _ = now;
    }

    /// The registry entry whose traffic the driver counts, if any.
    fn traffic(&self) -> Option<Arc<ConnectionEntry>> {
        None
    }

    /// Whether the connection takes input now (it may still be closing).
    fn wants_input(&self) -> bool;

    /// The mailbox the engine delivers into.
    fn outbox(&self) -> &Arc<Outbox>;

    /// Take what is in the outbox.
    fn handle_outbox(&mut self, now: Instant);

    /// The next durability ticket to await, if any.
    fn take_ticket(&mut self) -> Option<Durable>;

    /// The ticket from [`Connection::take_ticket`] resolved (`ok`: durable).
    fn handle_durable(&mut self, ok: bool, now: Instant);

    /// A wait to run before the connection can go on, if it needs one.
    fn take_wait(&mut self) -> Option<Wait> {
        None
    }

    /// The wait from [`Connection::take_wait`] completed.
    fn handle_wait(&mut self, now: Instant) {
        let _ = now;
    }

    /// Completes when something outside asks the connection to end (once).
    fn interrupted(&self) -> Option<Wait> {
        None
    }

    /// The interruption happened; what the peer had sent is handled.
    fn handle_interrupt(&mut self, now: Instant) {
        let _ = now;
    }

    /// Whether backpressure pauses reading at `now` (a queue it publishes
    /// to is full or behind, or the store is behind).
    fn throttled(&mut self, now: Instant) -> bool;

    /// The driver stopped (`true`) or resumed reading because of
    /// backpressure.
    fn handle_paused(&mut self, paused: bool, now: Instant) {
        let _ = (paused, now);
    }

    /// The earliest instant the connection wants [`Connection::handle_timeout`].
    fn poll_timeout(&self) -> Option<Instant>;

    /// A deadline from [`Connection::poll_timeout`] passed.
    fn handle_timeout(&mut self, now: Instant);

    /// The broker is shutting down.
    fn handle_shutdown(&mut self, now: Instant);

    /// The peer closed its side (or the read failed).
    fn handle_eof(&mut self, now: Instant) {
        let _ = now;
    }

    /// Where the connection stands.
    fn status(&self) -> Status;

    /// When an idle connection (reading, nothing to write, nothing owed or
    /// buffered) may be handed back to be parked; `None`: never.
    fn park_at(&self, now: Instant) -> Option<Instant> {
        let _ = now;
        None
    }

    /// The connection is over (before its last output is flushed): let go
    /// of what it holds in the engine.
    fn release(&mut self);
}

/// Drive `conn` over `rd` / `wr` until it is over or may be parked. The
/// caller then [`finish`]es it (or parks it).
pub async fn drive<C, R, W>(
    conn: &mut C,
    rd: &mut R,
    wr: &mut W,
    shutdown: &CancellationToken,
    relief: &Relief,
) -> Exit
where
    C: Connection + ?Sized,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let outbox = conn.outbox().clone();
    let traffic = conn.traffic();
    // Buffers start empty and grow with traffic: an idle device costs as
    // little memory as possible.
    let mut rbuf = BytesMut::new();
    let mut ticket: Option<Durable> = None;
    let mut wait: Option<Wait> = None;
    let mut interrupt = conn.interrupted();
    let mut shutting_down = false;
    let mut paused = false;
    let mut eof = false;
    let mut read_size = MIN_READ;
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let timer = tokio::time::sleep_until(far);
    tokio::pin!(timer);
    // Kept across turns: registering a waiter takes a lock, so these are
    // made once (and again only after they fire), not on every turn.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let delivered = outbox.ready();
    tokio::pin!(delivered);

    loop {
        let now = Instant::now();
        if !rbuf.is_empty() && conn.wants_input() {
            conn.handle_input(&mut rbuf, now);
        }
        if conn.output().len() < OUTPUT_HIGH_WATER && outbox.has_events() {
            conn.handle_outbox(now);
        }
        if ticket.is_none() {
            ticket = conn.take_ticket();
        }
        if wait.is_none() {
            wait = conn.take_wait();
        }
        match conn.status() {
            Status::Abort => {
                conn.output().clear();
                return Exit::Closed;
            }
            // Released before its last bytes leave (see [`finish`]).
            Status::Closed => return Exit::Closed,
            Status::Open => {}
        }
        let throttled = conn.throttled(now);
        if throttled != paused {
            paused = throttled;
            // May write (AMQP connection.blocked / unblocked): before the
            // output is measured below, so it leaves this turn.
            conn.handle_paused(paused, now);
        }
        let out_len = conn.output().len();
        // A peer may half-close after its last frame (DISCONNECT with a
        // receipt, say): what it is owed is still written, nothing more is
        // read.
        if eof && out_len == 0 && ticket.is_none() {
            return Exit::Closed;
        }
        // Registered before the check below, so a relief in between wakes.
        let relieved = relief.notified();
        tokio::pin!(relieved);
        if paused {
            relieved.as_mut().enable();
            if !conn.throttled(now) {
                continue;
            }
        }
        let wants_input = conn.wants_input();
        let can_read = !eof && wants_input && out_len < OUTPUT_HIGH_WATER && !paused;
        let mut deadline = conn.poll_timeout();
        let idle = can_read && out_len == 0 && ticket.is_none() && wait.is_none();
        if idle
            && rbuf.is_empty()
            && let Some(at) = conn.park_at(now)
        {
            if at <= now {
                return Exit::Park;
            }
            deadline = Some(deadline.map_or(at, |d| d.min(at)));
        }
        if paused {
            // Relief wakes a paused connection; this only bounds how long a
            // pause on consumers that stopped delivering can last (see
            // `switchyard_engine::FLOW_STALL`).
            let recheck = now + PAUSE_RECHECK;
            deadline = Some(deadline.map_or(recheck, |d| d.min(recheck)));
        }
        let deadline = deadline.map_or(far, tokio::time::Instant::from_std);
        // Only an earlier deadline re-arms the timer: most deadlines move
        // later with every read or write (heartbeats, keep-alive), and a
        // timer that fires early costs one idle turn, not a re-arm per turn.
        if deadline < timer.deadline() {
            timer.as_mut().reset(deadline);
        }
        if can_read && rbuf.capacity() - rbuf.len() < read_size {
            rbuf.reserve(read_size);
        }
        let read_room = rbuf.capacity() - rbuf.len();

        tokio::select! {
            biased;
            _ = &mut cancelled, if !shutting_down => {
                shutting_down = true;
                conn.handle_shutdown(Instant::now());
            }
            r = wr.write_buf(conn.output()), if out_len > 0 => match r {
                Ok(0) | Err(_) => return Exit::Closed,
                Ok(n) => {
                    if let Some(t) = &traffic {
                        t.traffic.sent(n);
                    }
                    conn.handle_written(Instant::now());
                }
            },
            ok = wait_durable(&mut ticket) => {
                ticket = None;
                conn.handle_durable(ok, Instant::now());
            }
            _ = async { wait.as_mut().expect("armed only when set").await }, if wait.is_some() => {
                wait = None;
                conn.handle_wait(Instant::now());
            }
            _ = async { interrupt.as_mut().expect("armed only when set").await }, if interrupt.is_some() => {
                interrupt = None;
                read_ready(rd, &mut rbuf).await;
                let now = Instant::now();
                if !rbuf.is_empty() && conn.wants_input() {
                    conn.handle_input(&mut rbuf, now);
                }
                conn.handle_interrupt(now);
            }
            r = rd.read_buf(&mut rbuf), if can_read => match r {
                Ok(0) | Err(_) => {
                    eof = true;
                    conn.handle_eof(Instant::now());
                }
                Ok(n) => {
                    // A read that filled the room asks for a larger one
                    // next time: buffers grow with traffic, so an idle
                    // device keeps a small one and a publisher gets 64 KiB
                    // per syscall.
                    if n >= read_room {
                        read_size = (read_size * 2).min(MAX_READ);
                    }
                    if let Some(t) = &traffic {
                        t.traffic.received(n);
                    }
                    conn.handle_read(Instant::now());
                }
            },
            _ = &mut delivered, if out_len < OUTPUT_HIGH_WATER => {
                delivered.set(outbox.ready());
            }
            _ = &mut relieved, if paused => {}
            _ = &mut timer => {
                let now = Instant::now();
                timer.as_mut().reset(far);
                if conn.park_at(now).is_some_and(|at| at <= now) {
                    // The next turn parks it if it is still idle.
                    continue;
                }
                conn.handle_timeout(now);
            }
        }
    }
}

/// Read what the peer already sent, without waiting for more (bounded, so
/// a peer that keeps sending cannot hold the connection).
async fn read_ready<R: AsyncRead + Unpin>(rd: &mut R, rbuf: &mut BytesMut) {
    let mut budget = INTERRUPT_READ_BUDGET;
    while budget > 0 {
        if rbuf.capacity() - rbuf.len() < 512 {
            rbuf.reserve(4096);
        }
        // A zero timeout polls the read once: what is already buffered.
        match tokio::time::timeout(Duration::ZERO, rd.read_buf(rbuf)).await {
            Ok(Ok(n)) if n > 0 => budget = budget.saturating_sub(n),
            _ => break,
        }
    }
}

/// Write what is left, bounded by [`FINAL_FLUSH`], so a peer that does not
/// read cannot hold the task.
async fn flush<W: AsyncWrite + Unpin>(wr: &mut W, output: &mut BytesMut) {
    if !output.is_empty() {
        let _ = tokio::time::timeout(FINAL_FLUSH, wr.write_all_buf(output)).await;
    }
}

/// After [`drive`] returned [`Exit::Closed`]: release the connection, write
/// its last bytes (bounded) and close the stream.
pub async fn finish<C, W>(conn: &mut C, wr: &mut W)
where
    C: Connection + ?Sized,
    W: AsyncWrite + Unpin,
{
    conn.release();
    flush(wr, conn.output()).await;
    let _ = wr.shutdown().await;
}

/// [`drive`] then [`finish`]: a connection that never parks.
pub async fn run<C, R, W>(
    conn: &mut C,
    mut rd: R,
    mut wr: W,
    shutdown: &CancellationToken,
    relief: &Relief,
) where
    C: Connection + ?Sized,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    drive(conn, &mut rd, &mut wr, shutdown, relief).await;
    finish(conn, &mut wr).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    /// Echoes every complete line back; closes on "bye"; asks for one timer.
    struct Echo {
        out: BytesMut,
        outbox: Arc<Outbox>,
        timer: Option<Instant>,
        timeouts: usize,
        closed: bool,
        aborted: bool,
        throttled: Arc<AtomicBool>,
        paused: Vec<bool>,
        park: bool,
        released: bool,
    }

    impl Echo {
        fn new() -> Self {
            Self {
                out: BytesMut::new(),
                outbox: Arc::new(Outbox::default()),
                timer: None,
                timeouts: 0,
                closed: false,
                aborted: false,
                throttled: Arc::new(AtomicBool::new(false)),
                paused: Vec::new(),
                park: false,
                released: false,
            }
        }
    }

    impl Connection for Echo {
        fn handle_input(&mut self, input: &mut BytesMut, _now: Instant) {
            while let Some(end) = input.iter().position(|&b| b == b'\n') {
                let line = input.split_to(end + 1);
                if &line[..] == b"bye\n" {
                    self.out.extend_from_slice(b"ciao\n");
                    self.closed = true;
                    return;
                }
                self.out.extend_from_slice(&line);
            }
        }
        fn output(&mut self) -> &mut BytesMut {
            &mut self.out
        }
        fn wants_input(&self) -> bool {
            !self.closed
        }
        fn outbox(&self) -> &Arc<Outbox> {
            &self.outbox
        }
        fn handle_outbox(&mut self, _now: Instant) {}
        fn take_ticket(&mut self) -> Option<Durable> {
            None
        }
        fn handle_durable(&mut self, _ok: bool, _now: Instant) {}
        fn throttled(&mut self, _now: Instant) -> bool {
            self.throttled.load(Ordering::SeqCst)
        }
        fn handle_paused(&mut self, paused: bool, _now: Instant) {
            self.paused.push(paused);
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.timer
        }
        fn handle_timeout(&mut self, now: Instant) {
            if self.timer.is_some_and(|t| now >= t) {
                self.timer = None;
                self.timeouts += 1;
                self.out.extend_from_slice(b"tick\n");
            }
        }
        fn handle_shutdown(&mut self, _now: Instant) {
            self.out.extend_from_slice(b"shutdown\n");
            self.closed = true;
        }
        fn status(&self) -> Status {
            Status::of(self.aborted, self.closed)
        }
        fn park_at(&self, now: Instant) -> Option<Instant> {
            self.park.then_some(now)
        }
        fn release(&mut self) {
            self.released = true;
        }
    }

    const BOUND: Duration = Duration::from_secs(5);

    async fn read_until(rd: &mut (impl AsyncReadExt + Unpin), want: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.windows(want.len()).any(|w| w == want) {
            let n = tokio::time::timeout(BOUND, rd.read(&mut buf))
                .await
                .expect("bytes in time")
                .expect("read");
            assert!(n > 0, "stream ended before {want:?}; got {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[tokio::test]
    async fn input_in_output_out_then_a_clean_close_with_the_last_bytes() {
        let (client, server) = duplex(1024);
        let (mut crd, mut cwr) = tokio::io::split(client);
        let (srd, swr) = tokio::io::split(server);
        let shutdown = CancellationToken::new();
        let relief = Relief::default();
        let task = tokio::spawn(async move {
            let mut conn = Echo::new();
            run(&mut conn, srd, swr, &shutdown, &relief).await;
            conn.released
        });
        cwr.write_all(b"hello\nwor").await.unwrap();
        assert_eq!(read_until(&mut crd, b"hello\n").await, b"hello\n");
        cwr.write_all(b"ld\nbye\n").await.unwrap();
        let rest = read_until(&mut crd, b"ciao\n").await;
        assert_eq!(rest, b"world\nciao\n");
        let released = tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
        assert!(released, "finish releases the connection");
        let mut tail = Vec::new();
        crd.read_to_end(&mut tail).await.unwrap();
        assert!(tail.is_empty(), "closed after its last bytes");
    }

    #[tokio::test]
    async fn the_connections_deadline_calls_it_back_once() {
        let (client, server) = duplex(1024);
        let (mut crd, _cwr) = tokio::io::split(client);
        let (mut srd, mut swr) = tokio::io::split(server);
        let mut conn = Echo::new();
        conn.timer = Some(Instant::now() + Duration::from_millis(30));
        let shutdown = CancellationToken::new();
        let relief = Relief::default();
        let started = Instant::now();
        {
            let driving = drive(&mut conn, &mut srd, &mut swr, &shutdown, &relief);
            tokio::pin!(driving);
            tokio::select! {
                _ = &mut driving => panic!("the connection ended before its deadline"),
                got = read_until(&mut crd, b"tick\n") => assert_eq!(got, b"tick\n"),
            }
            assert!(
                started.elapsed() >= Duration::from_millis(30),
                "not before its deadline"
            );
            shutdown.cancel();
            let exit = tokio::time::timeout(BOUND, driving).await.unwrap();
            assert_eq!(exit, Exit::Closed);
        }
        assert_eq!(conn.timeouts, 1);
    }

    #[tokio::test]
    async fn a_paused_connection_reads_nothing_until_it_is_no_longer_throttled() {
        let (client, server) = duplex(1024);
        let (mut crd, mut cwr) = tokio::io::split(client);
        let (srd, swr) = tokio::io::split(server);
        let relief = Arc::new(Relief::default());
        let mut conn = Echo::new();
        let throttled = conn.throttled.clone();
        throttled.store(true, Ordering::SeqCst);
        let shutdown = CancellationToken::new();
        let (stop, r) = (shutdown.clone(), relief.clone());
        let task = tokio::spawn(async move {
            run(&mut conn, srd, swr, &stop, &r).await;
            conn.paused
        });
        cwr.write_all(b"held\n").await.unwrap();
        let mut buf = [0u8; 16];
        let early = tokio::time::timeout(Duration::from_millis(50), crd.read(&mut buf)).await;
        assert!(early.is_err(), "nothing is read while paused");
        throttled.store(false, Ordering::SeqCst);
        relief.relieve();
        assert_eq!(read_until(&mut crd, b"held\n").await, b"held\n");
        shutdown.cancel();
        let paused = tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
        assert_eq!(paused, [true, false], "told when paused and when resumed");
    }

    #[tokio::test]
    async fn an_aborted_connection_writes_nothing_more() {
        let (client, server) = duplex(1024);
        let (mut crd, _cwr) = tokio::io::split(client);
        let (srd, swr) = tokio::io::split(server);
        let mut conn = Echo::new();
        conn.out.extend_from_slice(b"never sent\n");
        conn.aborted = true;
        let shutdown = CancellationToken::new();
        let relief = Relief::default();
        tokio::time::timeout(BOUND, run(&mut conn, srd, swr, &shutdown, &relief))
            .await
            .unwrap();
        let mut got = Vec::new();
        crd.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty(), "{got:?}");
    }

    #[tokio::test]
    async fn an_idle_connection_is_handed_back_to_be_parked() {
        let (_client, server) = duplex(1024);
        let (mut srd, mut swr) = tokio::io::split(server);
        let mut conn = Echo::new();
        conn.park = true;
        let shutdown = CancellationToken::new();
        let relief = Relief::default();
        let exit = tokio::time::timeout(
            BOUND,
            drive(&mut conn, &mut srd, &mut swr, &shutdown, &relief),
        )
        .await
        .unwrap();
        assert_eq!(exit, Exit::Park);
        assert!(!conn.released, "a parked connection lives on");
    }
}
