//! AMQP scenarios over lapin: 1→1, N→N on one queue, fanout 1→N (one queue
//! per consumer), transient or persistent with a publisher-confirm window.

use crate::report::Report;
use crate::track::{Counters, Seen, Totals, stamp};
use anyhow::{Context, Result, bail};
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Options of the `amqp` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct AmqpArgs {
    /// Broker URI.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    uri: String,
    /// Label for the report (e.g. switchyard, rabbitmq).
    #[arg(long, default_value = "broker")]
    broker: String,
    /// Producer connections.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Consumer connections.
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Fanout: one queue per consumer bound to a fanout exchange.
    #[arg(long)]
    fanout: bool,
    /// Message size in bytes (at least 16).
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Seconds to publish for.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Upper bound on messages per producer (0 = unbounded within duration).
    #[arg(long, default_value_t = 0)]
    max_messages: u32,
    /// Persistent messages (delivery-mode 2) into durable queues.
    #[arg(long)]
    persistent: bool,
    /// Publisher confirm window (0 = no confirms).
    #[arg(long, default_value_t = 0)]
    confirm: usize,
    /// Messages per second per producer (0 = as fast as possible). Latency is
    /// only meaningful below saturation, as in PerfTest's --rate.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Publishes in flight per producer before waiting for lapin to write them.
    #[arg(long, default_value_t = 512)]
    pipeline: usize,
    /// Consumer prefetch (basic.qos).
    #[arg(long, default_value_t = 1000)]
    prefetch: u16,
    /// Consume with auto-ack instead of manual acks.
    #[arg(long)]
    auto_ack: bool,
    /// Ack with `multiple` every N deliveries (manual ack only).
    #[arg(long, default_value_t = 1)]
    ack_every: u64,
}

pub(crate) async fn run(args: AmqpArgs) -> Result<Report> {
    if args.producers == 0 || args.consumers == 0 {
        bail!("need at least one producer and one consumer");
    }
    let tag = format!("bench-{}-{}", std::process::id(), crate::track::now_ns());
    let setup = Connection::connect(&args.uri, ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to {}", args.uri))?;
    let ch = setup.create_channel().await?;
    let queues: Vec<String> = if args.fanout {
        (0..args.consumers).map(|i| format!("{tag}-{i}")).collect()
    } else {
        vec![tag.clone()]
    };
    let qopts = QueueDeclareOptions {
        durable: args.persistent,
        ..Default::default()
    };
    for q in &queues {
        ch.queue_declare(q.as_str().into(), qopts, FieldTable::default())
            .await?;
    }
    let (exchange, routing_key) = if args.fanout {
        let x = format!("{tag}-x");
        let xopts = ExchangeDeclareOptions {
            durable: args.persistent,
            ..Default::default()
        };
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Fanout,
            xopts,
            FieldTable::default(),
        )
        .await?;
        for q in &queues {
            ch.queue_bind(
                q.as_str().into(),
                x.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        (x, String::new())
    } else {
        (String::new(), tag.clone())
    };

    let shared = Arc::new(Counters::new());
    let mut consumer_tasks = Vec::new();
    for i in 0..args.consumers {
        let queue = queues[if args.fanout { i } else { 0 }].clone();
        consumer_tasks.push(tokio::spawn(consume(args.clone(), queue, shared.clone())));
    }
    // Let consumers register before publishing starts.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let progress = tokio::spawn({
        let shared = shared.clone();
        async move { shared.progress(started).await }
    });
    let mut producer_tasks = Vec::new();
    for p in 0..args.producers {
        producer_tasks.push(tokio::spawn(produce(
            args.clone(),
            p as u32,
            exchange.clone(),
            routing_key.clone(),
            shared.clone(),
        )));
    }
    let mut sent = Vec::new();
    for t in producer_tasks {
        sent.push(t.await.context("producer task")??);
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let copies = if args.fanout {
        args.consumers as u64
    } else {
        1
    };
    let expected: u64 = sent.iter().map(|&n| u64::from(n)).sum::<u64>() * copies;
    shared.drain(expected).await;
    let total_secs = started.elapsed().as_secs_f64();
    shared.stop.store(true, Ordering::Relaxed);
    progress.abort();

    let mut per_queue: Vec<Option<Seen>> = (0..queues.len()).map(|_| None).collect();
    for (i, t) in consumer_tasks.into_iter().enumerate() {
        let seen = t.await.context("consumer task")??;
        let slot = &mut per_queue[if args.fanout { i } else { 0 }];
        match slot {
            Some(s) => s.merge(seen),
            None => *slot = Some(seen),
        }
    }
    let mut totals = Totals::new();
    for seen in per_queue.iter().flatten() {
        let lost = (sent.iter().enumerate())
            .map(|(p, &n)| u64::from(n) - seen.distinct(p, n))
            .sum();
        totals.add(seen, lost);
    }
    for q in &queues {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    if args.fanout {
        let _ = ch
            .exchange_delete(exchange.as_str().into(), Default::default())
            .await;
    }
    let _ = setup.close(200, "bench done".into()).await;
    let rate = if args.rate > 0 {
        format!("-rate{}", args.rate)
    } else {
        String::new()
    };
    let kind = match (args.persistent, args.confirm > 0, args.fanout) {
        (_, _, true) => "fanout",
        (true, true, _) => "persistent-confirm",
        (true, false, _) => "persistent",
        (false, true, _) => "transient-confirm",
        (false, false, _) => "transient",
    };
    Ok(Report {
        scenario: format!("amqp-{kind}-{}to{}{rate}", args.producers, args.consumers),
        broker: args.broker,
        size: args.size.max(crate::track::HEADER),
        producers: args.producers,
        consumers: args.consumers,
        seconds: publish_secs,
        published: expected / copies,
        consumed: totals.consumed,
        published_per_sec: (expected / copies) as f64 / publish_secs,
        consumed_per_sec: totals.consumed as f64 / total_secs,
        latency_p50_us: totals.latency_us(0.5),
        latency_p99_us: totals.latency_us(0.99),
        latency_p999_us: totals.latency_us(0.999),
        lost: totals.lost,
        duplicated: totals.duplicated,
    })
}

async fn produce(
    args: AmqpArgs,
    id: u32,
    exchange: String,
    routing_key: String,
    shared: Arc<Counters>,
) -> Result<u32> {
    let conn = Connection::connect(&args.uri, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    if args.confirm > 0 {
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
    }
    let props = if args.persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    };
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    // lapin resolves a publish only after its io loop wrote the frames; keep
    // many in flight (each polled once, so frames are queued in order) rather
    // than paying a cross-thread round trip per message.
    let mut sending = VecDeque::new();
    let mut window = VecDeque::new();
    let mut seq: u32 = 0;
    let begun = Instant::now();
    while Instant::now() < deadline && (args.max_messages == 0 || seq < args.max_messages) {
        if args.rate > 0 {
            let due = (begun.elapsed().as_secs_f64() * args.rate as f64) as u64;
            if u64::from(seq) >= due {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        }
        let mut payload = Vec::with_capacity(args.size.max(16));
        stamp(&mut payload, args.size, id, seq);
        let (ch, props) = (ch.clone(), props.clone());
        let (exchange, routing_key) = (exchange.as_str().into(), routing_key.as_str().into());
        let mut fut = Box::pin(async move {
            ch.basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions::default(),
                &payload,
                props,
            )
            .await
        });
        seq += 1;
        match futures_lite::future::poll_once(&mut fut).await {
            Some(r) => window.push_back(r?),
            None => sending.push_back(fut),
        }
        while sending.len() >= args.pipeline
            && let Some(f) = sending.pop_front()
        {
            window.push_back(f.await?);
        }
        drain_confirms(&mut window, &args, &shared, false).await?;
    }
    for f in sending {
        window.push_back(f.await?);
    }
    drain_confirms(&mut window, &args, &shared, true).await?;
    let _ = conn.close(200, "done".into()).await;
    Ok(seq)
}

async fn drain_confirms(
    window: &mut VecDeque<lapin::PublisherConfirm>,
    args: &AmqpArgs,
    shared: &Counters,
    all: bool,
) -> Result<()> {
    let keep = if all { 0 } else { args.confirm.max(1) - 1 };
    while window.len() > keep {
        let Some(c) = window.pop_front() else { break };
        if args.confirm > 0 {
            c.await?;
        }
        shared.published.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

async fn consume(args: AmqpArgs, queue: String, shared: Arc<Counters>) -> Result<Seen> {
    let conn = Connection::connect(&args.uri, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(args.prefetch, BasicQosOptions::default())
        .await?;
    let opts = BasicConsumeOptions {
        no_ack: args.auto_ack,
        ..Default::default()
    };
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            opts,
            FieldTable::default(),
        )
        .await?;
    let mut seen = Seen::new(args.producers);
    let mut unacked = 0u64;
    let mut pending_acks = VecDeque::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let next = tokio::time::timeout(Duration::from_millis(100), consumer.next()).await;
        let Ok(next) = next else {
            continue;
        };
        let Some(delivery) = next else { break };
        let delivery = delivery?;
        seen.record(&delivery.data);
        shared.consumed.fetch_add(1, Ordering::Relaxed);
        if !args.auto_ack {
            unacked += 1;
            if unacked >= args.ack_every {
                // Fire the ack without waiting for lapin's io loop to write
                // it (as the Java client's basicAck does); errors still
                // surface when the pending acks are awaited.
                let acker = delivery.acker.clone();
                let multiple = args.ack_every > 1;
                let mut fut =
                    Box::pin(async move { acker.ack(BasicAckOptions { multiple }).await });
                if futures_lite::future::poll_once(&mut fut)
                    .await
                    .transpose()?
                    .is_none()
                {
                    pending_acks.push_back(fut);
                }
                while pending_acks.len() > 4096
                    && let Some(f) = pending_acks.pop_front()
                {
                    f.await?;
                }
                unacked = 0;
            }
        }
    }
    for f in pending_acks {
        f.await?;
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(seen)
}
