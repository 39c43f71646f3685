//! Coupled flow (`[server] flow_backlog = N`): a queue with consumers and
//! more than N ready messages is "behind", and the connections publishing to
//! it that consume nothing stop being read (AMQP clients that announced the
//! capability are told with `connection.blocked` / `connection.unblocked`)
//! until it is back to N/2. A connection that consumes is never paused for
//! it, consumers that deliver nothing for 250 ms let their publishers go,
//! and a queue without consumers is never behind.
//!
//! Everything runs against the real binary over loopback. The consumers ack
//! at a fixed pace ([`PACE`]) well below what a publisher manages, and a
//! separate connection samples the queue depth (passive `queue.declare`)
//! every [`SAMPLE`]: with the mark the depth stays near it, without the mark
//! ([`flow_backlog = 0`](config)) the same scenario runs thousands ahead,
//! which shows the bound discriminates. Nothing asserts on speed; every
//! loop is bounded in count and every wait in time.
//!
//! lapin announces `connection.blocked` and reports it through
//! [`Connection::events_listener`], which is how [`Blocks`] watches the
//! AMQP publishers of most tests; [`rawpub`] is a hand-driven AMQP
//! publisher for what lapin cannot show (a client without the capability,
//! exactly what is on the wire) and for the slow-consumer scenario, whose
//! control needs a publisher faster than the paced consumer however loaded
//! the machine is (lapin, one await per publish, was not always).

#[macro_use]
mod common;
#[path = "common/mqtt.rs"]
mod mqtt;
#[path = "common/stomp.rs"]
mod stomp;

use std::net::SocketAddr;
use std::time::Duration;

use common::{DEADLINE, QUIET, Sub, bind, channel, confirm_channel, connect, declare};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, Connection, Event, PublisherConfirm};
use switchyard_tests::Broker;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Messages each slow-consumer scenario publishes.
const N: usize = 10_000;

/// The flow mark of the slow-consumer scenarios.
const MARK: usize = 200;

/// Highest depth a queue held by [`MARK`] may reach: the mark, plus what the
/// broker had already read from the publisher's socket when it noticed (a
/// read is at most 64 KiB, some 700 of these messages), with room to spare.
/// Without the mark the scenarios reach several thousands more.
const HELD_BOUND: u32 = (MARK as u32) + 2_500;

/// Deliveries the paced consumers ack per second.
const PACE: u32 = 3_000;

/// Prefetch of the paced consumers.
const PREFETCH: u16 = 20;

/// Messages the AMQP publisher writes at once.
const CHUNK: usize = 250;

/// Interval between two depth samples.
const SAMPLE: Duration = Duration::from_millis(10);

/// Bound on a whole scenario's draining (the paced consumer needs
/// `N / PACE`, some 3.3 s, of it).
const DRAIN: Duration = Duration::from_secs(60);

/// The message body of index `i`: fixed width, so every protocol's frames
/// are about the same size, and it parses back to `i`.
fn body(i: usize) -> String {
    format!("{i:040}")
}

/// A config file setting the flow mark.
fn config(backlog: usize) -> String {
    format!("[server]\nflow_backlog = {backlog}\n")
}

/// Prefetch `prefetch` on a fresh channel of `conn` and a consumer of
/// `queue` on it.
async fn consumer(conn: &Connection, queue: &str, prefetch: u16) -> Sub {
    let ch = channel(conn).await;
    t!(ch.basic_qos(prefetch, BasicQosOptions::default())).expect("basic.qos");
    Sub::start(&ch, queue, BasicConsumeOptions::default())
        .await
        .unwrap_or_else(|e| panic!("consume {queue:?}: {e}"))
}

/// Receives deliveries `0..n` from `sub` (asserting their bodies come in
/// order: nothing lost, duplicated or reordered) and acks each, at most
/// `pace` a second counted from the first one.
async fn consume_paced(mut sub: Sub, n: usize, pace: u32) -> Sub {
    let per = Duration::from_secs(1) / pace;
    let mut start = None;
    for i in 0..n {
        let d = sub.next().await;
        let start = *start.get_or_insert_with(Instant::now);
        assert_eq!(
            String::from_utf8_lossy(&d.data),
            body(i),
            "delivery {i} out of order"
        );
        t!(d.ack(BasicAckOptions::default())).expect("ack");
        let done = u32::try_from(i + 1).expect("fewer than 2^32 deliveries");
        tokio::time::sleep_until(start + per * done).await;
    }
    sub
}

/// [`consume_paced`] in a task.
fn spawn_paced(sub: Sub, n: usize, pace: u32) -> JoinHandle<Sub> {
    tokio::spawn(consume_paced(sub, n, pace))
}

/// Awaits a paced consumer, bounded by [`DRAIN`].
async fn join_consumer(task: JoinHandle<Sub>) -> Sub {
    tokio::time::timeout(DRAIN, task)
        .await
        .unwrap_or_else(|_| panic!("consumer not done within {DRAIN:?}"))
        .expect("consumer task panicked")
}

/// The ready-message count of `queue`, sampled every [`SAMPLE`] from its
/// own connection (which publishes nothing, so it is never paused).
struct Depth {
    stop: oneshot::Sender<()>,
    task: JoinHandle<(u32, usize)>,
}

impl Depth {
    async fn sample(broker: &Broker, queue: &str) -> Self {
        let conn = connect(broker).await;
        let ch = channel(&conn).await;
        let queue = queue.to_owned();
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let (mut max, mut samples) = (0, 0);
            // At most DRAIN's worth of samples.
            let limit = DRAIN.as_millis() / SAMPLE.as_millis();
            while samples < limit {
                let q = t!(ch.queue_declare(queue.as_str().into(), passive, FieldTable::default()))
                    .unwrap_or_else(|e| panic!("passive declare {queue:?}: {e}"));
                max = max.max(q.message_count());
                samples += 1;
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(SAMPLE) => {}
                }
            }
            drop(conn);
            (max, usize::try_from(samples).expect("few samples"))
        });
        Self { stop, task }
    }

    /// The largest depth seen, and how many samples were taken.
    async fn finish(self) -> (u32, usize) {
        let _ = self.stop.send(());
        t!(self.task).expect("depth sampler panicked")
    }
}

/// The `connection.blocked` (`true`) and `connection.unblocked` (`false`)
/// notifications one lapin connection receives, in order.
struct Blocks {
    rx: mpsc::UnboundedReceiver<bool>,
    task: JoinHandle<()>,
    seen: Vec<bool>,
}

impl Blocks {
    /// Starts watching; call before the connection publishes.
    fn watch(conn: &Connection) -> Self {
        let mut events = conn.events_listener();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(e) = events.next().await {
                let blocked = match e {
                    Event::ConnectionBlocked(_) => true,
                    Event::ConnectionUnblocked => false,
                    _ => continue,
                };
                if tx.send(blocked).is_err() {
                    return;
                }
            }
        });
        Self {
            rx,
            task,
            seen: Vec::new(),
        }
    }

    fn take(&mut self) {
        while let Ok(b) = self.rx.try_recv() {
            self.seen.push(b);
        }
    }

    /// Everything received so far, once no notification has arrived for
    /// [`QUIET`] (bounded by [`DEADLINE`]).
    async fn settled(&mut self) -> &[bool] {
        let end = Instant::now() + DEADLINE;
        while let Ok(Some(b)) = tokio::time::timeout(QUIET, self.rx.recv()).await {
            self.seen.push(b);
            assert!(Instant::now() < end, "blocked/unblocked never settle");
        }
        self.take();
        &self.seen
    }
}

impl Drop for Blocks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Asserts `seen` is blocked, unblocked, blocked, ... ending unblocked.
#[track_caller]
fn assert_paired(seen: &[bool]) {
    assert!(
        seen.iter()
            .enumerate()
            .all(|(i, b)| *b == i.is_multiple_of(2))
            && seen.len().is_multiple_of(2),
        "connection.blocked and unblocked must alternate and end unblocked: {seen:?}"
    );
}

/// Awaits every confirm and asserts each is an ack.
async fn assert_acked(confirms: Vec<PublisherConfirm>) {
    for (i, c) in confirms.into_iter().enumerate() {
        let c = t!(c).unwrap_or_else(|e| panic!("confirm of message {i}: {e}"));
        assert!(
            matches!(c, Confirmation::Ack(None)),
            "message {i} not acked: {c:?}"
        );
    }
}

/// Publishes messages `from..to` to `queue` on `ch`, returning their
/// confirms (unawaited).
async fn publish_range(
    ch: &lapin::Channel,
    queue: &str,
    from: usize,
    to: usize,
) -> Vec<PublisherConfirm> {
    let mut confirms = Vec::with_capacity(to - from);
    for i in from..to {
        confirms.push(
            t!(ch.basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body(i).as_bytes(),
                BasicProperties::default()
            ))
            .unwrap_or_else(|e| panic!("publish {i}: {e}")),
        );
    }
    confirms
}

/// The ready-message count of `queue` now.
async fn depth(conn: &Connection, queue: &str) -> u32 {
    let ch = channel(conn).await;
    let q = declare(
        &ch,
        queue,
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
    )
    .await;
    q.message_count()
}

// ---------------------------------------------------------------------------
// A fast publisher and a slow consumer, through each protocol

/// The protocol the slow-consumer scenario publishes with.
#[derive(Debug, Clone, Copy)]
enum Via {
    /// The hand-driven publisher ([`rawpub`]) in confirm mode, announcing
    /// `connection.blocked`.
    Amqp,
    /// STOMP 1.2 SENDs to `/queue/<queue>` (no receipts but the last's).
    Stomp,
    /// MQTT 3.1.1 QoS 0 PUBLISHes to a topic bound to the queue through
    /// `amq.topic`.
    Mqtt,
}

/// What one slow-consumer run saw.
struct Run {
    /// Largest sampled depth of the queue.
    max_depth: u32,
    samples: usize,
    /// The AMQP publisher's blocked/unblocked notifications (empty for the
    /// other protocols, which have none).
    blocks: Vec<bool>,
}

/// One AMQP consumer acking at [`PACE`] with prefetch [`PREFETCH`], one
/// publisher sending [`N`] messages through `via` as fast as it can, one
/// connection sampling the depth; returns once all `N` are consumed, in
/// order.
async fn slow_consumer_run(backlog: usize, via: Via) -> Run {
    let broker = Broker::start_with_config(&config(backlog));
    let queue = format!("flow-{via:?}").to_lowercase();
    let admin = connect(&broker).await;
    let ch = channel(&admin).await;
    declare(&ch, &queue, QueueDeclareOptions::default()).await;
    let topic = format!("flow/{queue}");
    if matches!(via, Via::Mqtt) {
        bind(&ch, &queue, "amq.topic", &topic.replace('/', ".")).await;
    }

    let consuming = connect(&broker).await;
    let sub = consumer(&consuming, &queue, PREFETCH).await;
    let drained = spawn_paced(sub, N, PACE);
    let sampler = Depth::sample(&broker, &queue).await;

    let mut blocks = Vec::new();
    match via {
        Via::Amqp => {
            let (addr, q) = (broker.amqp_addr(), queue.clone());
            let publisher = tokio::task::spawn_blocking(move || amqp_publish(addr, &q));
            join_consumer(drained).await;
            let publisher = t!(publisher).expect("AMQP publisher panicked");
            blocks = tokio::task::spawn_blocking(move || amqp_settle(publisher))
                .await
                .expect("AMQP publisher panicked");
        }
        Via::Stomp => {
            let (addr, queue) = (broker.stomp_addr(), queue.clone());
            let publisher = tokio::task::spawn_blocking(move || stomp_publish(addr, &queue));
            join_consumer(drained).await;
            t!(publisher).expect("STOMP publisher panicked");
        }
        Via::Mqtt => {
            let addr = broker.mqtt_addr();
            let publisher = tokio::task::spawn_blocking(move || mqtt_publish(addr, &topic));
            join_consumer(drained).await;
            t!(publisher).expect("MQTT publisher panicked");
        }
    }
    let (max_depth, samples) = sampler.finish().await;
    assert!(samples > 10, "only {samples} depth samples");
    assert_eq!(depth(&admin, &queue).await, 0, "not drained");
    Run {
        max_depth,
        samples,
        blocks,
    }
}

/// Publishes `N` messages to `queue` with the hand-driven publisher (which
/// announces `connection.blocked`), [`CHUNK`] per write so that the
/// publisher's own speed cannot decide the result, and waits for their
/// confirms: the broker has taken them all.
fn amqp_publish(addr: SocketAddr, queue: &str) -> rawpub::Publisher {
    let mut p = rawpub::Publisher::connect(addr, true);
    for from in (0..N).step_by(CHUNK) {
        p.publish(queue, from..(from + CHUNK).min(N));
    }
    p.wait_acked(N as u64);
    p
}

/// The blocked/unblocked notifications `p` received, once the queue has
/// drained: if it was blocked last, the unblocked that must follow too.
fn amqp_settle(mut p: rawpub::Publisher) -> Vec<bool> {
    let notes = p.notes();
    if notes.last() == Some(&true) {
        p.wait_unblocked();
    }
    p.notes()
}

/// SENDs `N` messages to `/queue/<queue>`, the last with a receipt, which
/// arrives once the broker has read them all.
fn stomp_publish(addr: SocketAddr, queue: &str) {
    let mut c = stomp::Client::connect(addr, stomp::Version::V12);
    let dest = format!("/queue/{queue}");
    let headers = [("destination", dest.as_str()), ("persistent", "false")];
    for i in 0..N - 1 {
        c.send("SEND", &headers, body(i).as_bytes());
    }
    // The broker reads the last SEND only as the paced consumer drains the
    // queue, which takes N / PACE and more on a loaded machine.
    c.receipt_within("SEND", &headers, body(N - 1).as_bytes(), DRAIN);
    c.disconnect();
}

/// PUBLISHes `N` QoS 0 messages to `topic`, then a PINGREQ, whose PINGRESP
/// arrives once the broker has read them all.
fn mqtt_publish(addr: SocketAddr, topic: &str) {
    let (mut c, _) = mqtt::Client::connect(addr, "flow-publisher", true);
    for i in 0..N {
        c.send(&mqtt::publish(topic, 0, 0, body(i).as_bytes()));
    }
    // Read only as the paced consumer drains the queue (see above).
    c.ping_within(DRAIN);
    c.disconnect();
}

#[track_caller]
fn assert_held(run: &Run, via: Via) {
    eprintln!(
        "{via:?} with flow_backlog = {MARK}: max depth {} over {} samples, blocked {} times",
        run.max_depth,
        run.samples,
        run.blocks.iter().filter(|b| **b).count()
    );
    assert!(
        run.max_depth < HELD_BOUND,
        "{via:?} publisher ran {} messages ahead of its consumer (bound {HELD_BOUND})",
        run.max_depth
    );
}

#[track_caller]
fn assert_ran_ahead(run: &Run, via: Via) {
    eprintln!(
        "{via:?} with flow_backlog = 0: max depth {} over {} samples",
        run.max_depth, run.samples
    );
    assert!(
        run.max_depth >= HELD_BOUND,
        "without the mark the {via:?} publisher should run past {HELD_BOUND} ready \
         messages (got {}): the consumer is too fast for this test to discriminate",
        run.max_depth
    );
    assert!(
        run.blocks.is_empty(),
        "blocked without a mark: {:?}",
        run.blocks
    );
}

/// An AMQP publisher is held to its slow consumer's pace,
/// and is told so with connection.blocked / unblocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_publisher_is_held_to_a_slow_consumers_pace() {
    let run = slow_consumer_run(MARK, Via::Amqp).await;
    assert_held(&run, Via::Amqp);
    assert!(
        !run.blocks.is_empty(),
        "the publisher was never sent connection.blocked"
    );
    assert_paired(&run.blocks);
}

/// The control for the test above: without the mark the same publisher
/// runs thousands of messages ahead, unblocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_mark_an_amqp_publisher_runs_ahead() {
    let run = slow_consumer_run(0, Via::Amqp).await;
    assert_ran_ahead(&run, Via::Amqp);
}

/// A STOMP publisher is held the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_publisher_is_held_to_a_slow_consumers_pace() {
    let run = slow_consumer_run(MARK, Via::Stomp).await;
    assert_held(&run, Via::Stomp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_mark_a_stomp_publisher_runs_ahead() {
    let run = slow_consumer_run(0, Via::Stomp).await;
    assert_ran_ahead(&run, Via::Stomp);
}

/// An MQTT QoS 0 publisher, through `amq.topic`, is held the same
/// way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_publisher_is_held_to_a_slow_consumers_pace() {
    let run = slow_consumer_run(MARK, Via::Mqtt).await;
    assert_held(&run, Via::Mqtt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_mark_an_mqtt_publisher_runs_ahead() {
    let run = slow_consumer_run(0, Via::Mqtt).await;
    assert_ran_ahead(&run, Via::Mqtt);
}

// ---------------------------------------------------------------------------
// Consumers that stop, consumers that publish, queues without consumers

/// A consumer at its prefetch limit that never acks (a hung
/// application) holds its publisher back once, for about 250 ms, and not
/// again until the queue delivers again; then once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_does_not_stop_publishers() {
    let broker = Broker::start_with_config(&config(100));
    let queue = "flow-stalled";
    let admin = connect(&broker).await;
    declare(
        &channel(&admin).await,
        queue,
        QueueDeclareOptions::default(),
    )
    .await;
    let hung = connect(&broker).await;
    let mut sub = consumer(&hung, queue, 10).await;

    let conn = connect(&broker).await;
    let mut blocks = Blocks::watch(&conn);
    let ch = confirm_channel(&conn).await;
    let confirms = publish_range(&ch, queue, 0, 2_000).await;
    tokio::time::timeout(Duration::from_secs(20), assert_acked(confirms))
        .await
        .expect("2000 confirms within 20 s");
    assert_eq!(depth(&admin, queue).await, 1_990, "all but the prefetch");
    let seen = blocks.settled().await;
    assert_eq!(
        seen,
        [true, false],
        "held once while the consumer stalled, then let go for good"
    );

    // The hung consumer acks what it holds: the queue delivers again (ten
    // more), is still behind, and so holds the publisher again — until the
    // consumer stalls once more.
    let mut held = Vec::new();
    for i in 0..10 {
        let d = sub.next().await;
        assert_eq!(String::from_utf8_lossy(&d.data), body(i));
        held.push(d);
    }
    for d in held {
        t!(d.ack(BasicAckOptions::default())).expect("ack");
    }
    for i in 10..20 {
        let d = sub.next().await;
        assert_eq!(String::from_utf8_lossy(&d.data), body(i));
    }
    let confirms = publish_range(&ch, queue, 2_000, 2_500).await;
    tokio::time::timeout(Duration::from_secs(20), assert_acked(confirms))
        .await
        .expect("500 more confirms within 20 s");
    assert_eq!(depth(&admin, queue).await, 2_480);
    let seen = blocks.settled().await;
    assert_eq!(
        seen,
        [true, false, true, false],
        "held again once the queue delivered, let go once it stalled again"
    );
    sub.assert_quiet().await;
}

/// A connection that consumes from the queue and publishes to it
/// is never paused by the mark, even while the queue is far past it (its
/// own acks are what drains the queue: pausing it would stall both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_consumes_is_not_paused() {
    const M: usize = 3_000;
    let broker = Broker::start_with_config(&config(100));
    let queue = "flow-self";
    let admin = connect(&broker).await;
    declare(
        &channel(&admin).await,
        queue,
        QueueDeclareOptions::default(),
    )
    .await;
    let sampler = Depth::sample(&broker, queue).await;

    let conn = connect(&broker).await;
    let mut blocks = Blocks::watch(&conn);
    let sub = consumer(&conn, queue, 10).await;
    let drained = spawn_paced(sub, M, PACE / 2);
    let ch = confirm_channel(&conn).await;
    let confirms = publish_range(&ch, queue, 0, M).await;
    tokio::time::timeout(DRAIN, assert_acked(confirms))
        .await
        .expect("all confirmed");
    join_consumer(drained).await;
    let (max, samples) = sampler.finish().await;
    eprintln!("consuming publisher: max depth {max} over {samples} samples");
    assert!(
        max > 100,
        "the queue never got past the mark (max depth {max}): the test proves nothing"
    );
    assert_eq!(
        blocks.settled().await,
        [] as [bool; 0],
        "a connection that consumes was blocked"
    );
    assert_eq!(depth(&admin, queue).await, 0);
}

/// A queue without consumers is never behind, however long: its publisher
/// is not blocked. Once a (slow) consumer attaches, the same backlog holds
/// the publisher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_without_consumers_is_never_behind() {
    let broker = Broker::start_with_config(&config(100));
    let queue = "flow-idle";
    let admin = connect(&broker).await;
    declare(
        &channel(&admin).await,
        queue,
        QueueDeclareOptions::default(),
    )
    .await;

    let conn = connect(&broker).await;
    let mut blocks = Blocks::watch(&conn);
    let ch = confirm_channel(&conn).await;
    assert_acked(publish_range(&ch, queue, 0, 2_000).await).await;
    assert_eq!(depth(&admin, queue).await, 2_000);
    assert_eq!(
        blocks.settled().await,
        [] as [bool; 0],
        "blocked by a queue nobody consumes"
    );

    // 2,000 ready at 1,000 a second: behind for well over a second.
    let consuming = connect(&broker).await;
    let sub = consumer(&consuming, queue, PREFETCH).await;
    let drained = spawn_paced(sub, 2_200, 1_000);
    assert_acked(publish_range(&ch, queue, 2_000, 2_200).await).await;
    join_consumer(drained).await;
    let seen = blocks.settled().await;
    assert!(
        !seen.is_empty(),
        "not blocked once the queue had a consumer"
    );
    assert_paired(seen);
    assert_eq!(depth(&admin, queue).await, 0);
}

/// A publisher sending each message to a queue whose consumer hung and to
/// one whose consumer is slow: the hung queue lets the publisher go after
/// 250 ms, but the slow queue, whose consumer still delivers, holds it to
/// its pace as if it were the only one. Each message is routed to the hung
/// queue by its routing key and to the slow one by a `CC` header, so the
/// hung queue is always the first behind queue a publish reaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_queue_does_not_exempt_a_publisher_from_a_slow_one() {
    let (hung_q, slow_q) = ("flow-two-hung", "flow-two-slow");
    let broker = Broker::start_with_config(&config(MARK));
    let admin = connect(&broker).await;
    let ch = channel(&admin).await;
    for q in [hung_q, slow_q] {
        declare(&ch, q, QueueDeclareOptions::default()).await;
    }
    let hung = connect(&broker).await;
    let _hung = consumer(&hung, hung_q, 10).await;
    let slow = connect(&broker).await;
    let sub = consumer(&slow, slow_q, PREFETCH).await;
    let drained = spawn_paced(sub, N, PACE);
    let sampler = Depth::sample(&broker, slow_q).await;

    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let mut headers = FieldTable::default();
    headers.insert(
        "CC".into(),
        AMQPValue::FieldArray(vec![AMQPValue::LongString(slow_q.into())].into()),
    );
    let props = BasicProperties::default().with_headers(headers);
    for i in 0..N {
        t!(ch.basic_publish(
            "".into(),
            hung_q.into(),
            BasicPublishOptions::default(),
            body(i).as_bytes(),
            props.clone()
        ))
        .unwrap_or_else(|e| panic!("publish {i}: {e}"));
    }
    join_consumer(drained).await;
    let (max, samples) = sampler.finish().await;
    eprintln!("hung + slow: slow queue max depth {max} over {samples} samples");
    assert!(
        max < HELD_BOUND,
        "the publisher ran {max} messages ahead of the slow queue's consumer \
         (bound {HELD_BOUND}) once the hung queue had let it go"
    );
    let left = u32::try_from(N - 10).expect("small");
    assert_eq!(depth(&admin, hung_q).await, left, "all but the prefetch");
}

// ---------------------------------------------------------------------------
// connection.blocked on the wire

/// On the wire: a publisher that announced `connection.blocked` and
/// then, as the specification asks, sends nothing while blocked, is sent
/// `connection.unblocked` when the broker lets it go (here: 250 ms after its
/// queue's only consumer stopped delivering), so it can go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_publisher_that_stops_sending_is_unblocked() {
    let notes = raw_stalled_run(true).await;
    assert_eq!(notes, [true, false], "blocked once, then unblocked");
}

/// A publisher that did not announce the capability is paused the same way
/// but never sent connection.blocked or unblocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_without_the_capability_is_not_told() {
    let notes = raw_stalled_run(false).await;
    assert_eq!(notes, [] as [bool; 0], "notified without the capability");
}

/// flow_backlog 100, a consumer that takes 10 and never acks, and a
/// hand-driven publisher in confirm mode. It publishes 110 messages (100
/// ready: not yet behind) and waits for their confirms, then one more: the
/// queue is behind and the broker pauses the publisher with nothing unread,
/// as a client that stops sending when blocked leaves it. Then, once
/// unblocked (with the capability) or after a while (without), 89 more, all
/// confirmed. Returns the connection.blocked (`true`) / unblocked (`false`)
/// notifications received.
async fn raw_stalled_run(capability: bool) -> Vec<bool> {
    let broker = Broker::start_with_config(&config(100));
    let queue = "flow-raw";
    let admin = connect(&broker).await;
    declare(
        &channel(&admin).await,
        queue,
        QueueDeclareOptions::default(),
    )
    .await;
    let hung = connect(&broker).await;
    let _sub = consumer(&hung, queue, 10).await;
    let addr = broker.amqp_addr();
    let notes = tokio::task::spawn_blocking(move || {
        let mut p = rawpub::Publisher::connect(addr, capability);
        p.publish(queue, 0..110);
        p.wait_acked(110);
        p.publish(queue, 110..111);
        p.wait_acked(111);
        if capability {
            p.wait_unblocked();
        } else {
            // Past the 250 ms the broker waits for a stalled consumer.
            std::thread::sleep(Duration::from_millis(600));
        }
        p.publish(queue, 111..200);
        p.wait_acked(200);
        p.notes()
    });
    let notes = tokio::time::timeout(Duration::from_secs(30), notes)
        .await
        .expect("raw publisher done within 30 s")
        .expect("raw publisher panicked");
    assert_eq!(depth(&admin, queue).await, 190, "all but the prefetch");
    notes
}

/// A hand-driven AMQP publisher (amq-protocol frames over a blocking
/// socket) in confirm mode, which may announce `connection.blocked`. A
/// reader thread reports blocked/unblocked and confirms.
mod rawpub {
    use std::io::{self, Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpStream};
    use std::sync::mpsc;
    use std::thread;
    use std::time::{Duration, Instant};

    use amq_protocol::frame::{
        AMQPContentHeader, AMQPFrame, ProtocolVersion, WriteContext, gen_frame, parse_frame,
    };
    use amq_protocol::protocol::{AMQPClass, BasicProperties, basic, channel, confirm, connection};
    use amq_protocol::types::{AMQPValue, FieldTable, LongString};

    /// Bound on each read during the handshake.
    const READ: Duration = Duration::from_secs(10);

    /// How long a blocked publisher waits for connection.unblocked: the
    /// broker lets it go 250 ms after its consumers stopped delivering.
    pub(crate) const UNBLOCK_WITHIN: Duration = Duration::from_secs(5);

    /// Bound on the reader thread, and on waiting for confirms.
    const LIFETIME: Duration = super::DRAIN;

    enum Note {
        Blocked(bool),
        /// basic.ack up to this tag (the broker confirms in order).
        Acked(u64),
    }

    fn bytes(frame: &AMQPFrame) -> Vec<u8> {
        gen_frame(frame)(WriteContext::from(Vec::new()))
            .expect("serialize frame")
            .into_inner()
            .0
    }

    fn read_frame(s: &mut TcpStream) -> io::Result<AMQPFrame> {
        let mut head = [0u8; 7];
        s.read_exact(&mut head)?;
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        let mut buf = head.to_vec();
        buf.resize(7 + size + 1, 0);
        s.read_exact(&mut buf[7..])?;
        match parse_frame(buf.as_slice()) {
            Ok((&[], f)) => Ok(f),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unparsable frame {buf:02x?}: {other:?}"),
            )),
        }
    }

    fn expect(s: &mut TcpStream, what: &str) -> AMQPClass {
        match read_frame(s) {
            Ok(AMQPFrame::Method(_, m)) => m,
            other => panic!("expected {what}, got {other:?}"),
        }
    }

    fn send(s: &mut TcpStream, ch: u16, m: AMQPClass) {
        s.write_all(&bytes(&AMQPFrame::Method(ch, m)))
            .expect("send method");
    }

    pub(crate) struct Publisher {
        sock: TcpStream,
        rx: mpsc::Receiver<Note>,
        reader: Option<thread::JoinHandle<()>>,
        blocked: bool,
        notes: Vec<bool>,
        acked: u64,
    }

    impl Publisher {
        /// Connected as guest to "/" (announcing `connection.blocked` if
        /// `capability`), heartbeats off, channel 1 open in confirm mode.
        pub(crate) fn connect(addr: SocketAddr, capability: bool) -> Self {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
            s.set_nodelay(true).expect("nodelay");
            s.set_read_timeout(Some(READ)).expect("read timeout");
            s.set_write_timeout(Some(Duration::from_secs(20)))
                .expect("write timeout");
            s.write_all(&bytes(&AMQPFrame::ProtocolHeader(
                ProtocolVersion::amqp_0_9_1(),
            )))
            .expect("send protocol header");
            expect(&mut s, "connection.start");
            let mut caps = FieldTable::default();
            caps.insert("publisher_confirms".into(), AMQPValue::Boolean(true));
            if capability {
                caps.insert("connection.blocked".into(), AMQPValue::Boolean(true));
            }
            let mut props = FieldTable::default();
            props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
            send(
                &mut s,
                0,
                AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                    client_properties: props,
                    mechanism: "PLAIN".into(),
                    response: LongString::from("\0guest\0guest"),
                    locale: "en_US".into(),
                })),
            );
            let tune = match expect(&mut s, "connection.tune") {
                AMQPClass::Connection(connection::AMQPMethod::Tune(t)) => t,
                other => panic!("expected connection.tune, got {other:?}"),
            };
            send(
                &mut s,
                0,
                AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                    channel_max: tune.channel_max,
                    frame_max: tune.frame_max,
                    heartbeat: 0,
                })),
            );
            send(
                &mut s,
                0,
                AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                    virtual_host: "/".into(),
                })),
            );
            expect(&mut s, "connection.open-ok");
            send(
                &mut s,
                1,
                AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
            );
            expect(&mut s, "channel.open-ok");
            send(
                &mut s,
                1,
                AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                    nowait: false,
                })),
            );
            expect(&mut s, "confirm.select-ok");

            let mut r = s.try_clone().expect("clone socket");
            r.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("read timeout");
            let (tx, rx) = mpsc::channel();
            let end = Instant::now() + LIFETIME;
            let reader = thread::spawn(move || {
                while Instant::now() < end {
                    let note = match read_frame(&mut r) {
                        Ok(AMQPFrame::Method(0, AMQPClass::Connection(m))) => match m {
                            connection::AMQPMethod::Blocked(_) => Note::Blocked(true),
                            connection::AMQPMethod::Unblocked(_) => Note::Blocked(false),
                            other => panic!("unexpected {other:?}"),
                        },
                        Ok(AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(a)))) => {
                            Note::Acked(a.delivery_tag)
                        }
                        Ok(other) => panic!("unexpected frame {other:?}"),
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) =>
                        {
                            continue;
                        }
                        Err(_) => return,
                    };
                    if tx.send(note).is_err() {
                        return;
                    }
                }
            });
            Self {
                sock: s,
                rx,
                reader: Some(reader),
                blocked: false,
                notes: Vec::new(),
                acked: 0,
            }
        }

        fn take(&mut self, note: Note) {
            match note {
                Note::Blocked(b) => {
                    self.blocked = b;
                    self.notes.push(b);
                }
                Note::Acked(tag) => self.acked = self.acked.max(tag),
            }
        }

        fn poll(&mut self) {
            while let Ok(n) = self.rx.try_recv() {
                self.take(n);
            }
        }

        /// Publishes the bodies of `range` to `queue` in a single write.
        pub(crate) fn publish(&mut self, queue: &str, range: std::ops::Range<usize>) {
            let mut out = Vec::new();
            for i in range {
                let body = super::body(i);
                out.extend(bytes(&AMQPFrame::Method(
                    1,
                    AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                        exchange: "".into(),
                        routing_key: queue.into(),
                        mandatory: false,
                        immediate: false,
                    })),
                )));
                out.extend(bytes(&AMQPFrame::Header(
                    1,
                    AMQPContentHeader {
                        class_id: 60,
                        body_size: body.len() as u64,
                        properties: BasicProperties::default(),
                    },
                )));
                out.extend(bytes(&AMQPFrame::Body(1, body.into_bytes())));
            }
            self.sock.write_all(&out).expect("write publishes");
        }

        /// Waits (bounded) until publishes `1..=n` are confirmed.
        pub(crate) fn wait_acked(&mut self, n: u64) {
            let end = Instant::now() + LIFETIME;
            while self.acked < n {
                let left = end.saturating_duration_since(Instant::now());
                match self.rx.recv_timeout(left) {
                    Ok(note) => self.take(note),
                    Err(_) => panic!(
                        "{} of {n} confirmed within {LIFETIME:?} (notifications {:?})",
                        self.acked, self.notes
                    ),
                }
            }
        }

        /// Waits until blocked and then unblocked; panics if
        /// connection.unblocked does not come within [`UNBLOCK_WITHIN`].
        pub(crate) fn wait_unblocked(&mut self) {
            let end = Instant::now() + UNBLOCK_WITHIN;
            while self.notes.is_empty() || self.blocked {
                let left = end.saturating_duration_since(Instant::now());
                match self.rx.recv_timeout(left) {
                    Ok(note) => self.take(note),
                    Err(_) => panic!(
                        "no connection.unblocked within {UNBLOCK_WITHIN:?} of the last confirm, \
                         though the consumer stalled (notifications {:?})",
                        self.notes
                    ),
                }
            }
        }

        /// connection.blocked (`true`) / unblocked (`false`) so far.
        pub(crate) fn notes(&mut self) -> Vec<bool> {
            self.poll();
            self.notes.clone()
        }
    }

    impl Drop for Publisher {
        fn drop(&mut self) {
            let _ = self.sock.shutdown(Shutdown::Both);
            if let Some(h) = self.reader.take() {
                let _ = h.join();
            }
        }
    }
}
