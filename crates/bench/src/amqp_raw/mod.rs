//! `amqp-raw`: the AMQP scenario of [`crate::amqp`] (N producers → one
//! queue → N consumers, transient or persistent, with or without a
//! publisher-confirm window) on a client of our own built for load rather
//! than for applications, so that on one core it is the broker, not the
//! generator, that runs out first.
//!
//! What makes it cheap: a publish is encoded once ([`publish::Template`]) and
//! copied into a write buffer flushed up to `--write-bytes` (64 KiB) at a
//! time, only its stamp patched; the consumer parses every frame of a large
//! read in place ([`frame::decode`] borrows, never copies a body) and acks
//! with `multiple`; confirms are settled in batches as they are read; a fixed
//! `--rate` is paced by the clock in 1 ms ticks ([`flow::Pacer`]). No
//! heartbeats, one channel per connection, no TLS, PLAIN only.
//!
//! Latency, loss and duplicates are measured as in every scenario
//! ([`crate::track`]): send time, producer and sequence in the payload.

mod conn;
mod consume;
mod endpoint;
mod flow;
mod frame;
mod method;
mod publish;

use crate::report::Report;
use crate::track::{Counters, HEADER, Seen, Totals, run_id};
use anyhow::{Context, Result, bail};
use conn::{CHANNEL, Connection};
use endpoint::Endpoint;
use method::Method;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// Options of the `amqp-raw` subcommand (those of `amqp` that apply).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct RawArgs {
    /// Broker: `[amqp://][user:password@]host[:port][/vhost]`, the vhost
    /// percent-encoded (`%2f` is `/`).
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    uri: String,
    /// Broker `host:port`, overriding the URI's (its vhost and credentials
    /// still apply).
    #[arg(long)]
    addr: Option<String>,
    /// Label for the report (e.g. switchyard, rabbitmq).
    #[arg(long, default_value = "broker")]
    broker: String,
    /// Producer connections.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Consumer connections.
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Message size in bytes (at least 16).
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Seconds to publish for.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Upper bound on messages per producer (0 = unbounded within duration).
    #[arg(long, default_value_t = 0)]
    max_messages: u32,
    /// Persistent messages (delivery-mode 2) into a durable queue.
    #[arg(long)]
    persistent: bool,
    /// Publisher confirm window: publishes awaiting a confirm per producer
    /// (0 = no confirms).
    #[arg(long, default_value_t = 0)]
    confirm: usize,
    /// Messages per second per producer (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Consumer prefetch (basic.qos).
    #[arg(long, default_value_t = 1000)]
    prefetch: u16,
    /// Consume with auto-ack instead of manual acks.
    #[arg(long)]
    auto_ack: bool,
    /// Ack with `multiple` every N deliveries (manual ack only).
    #[arg(long, default_value_t = 1)]
    ack_every: u64,
    /// Bytes of publishes a producer queues per write.
    #[arg(long, default_value_t = 64 * 1024)]
    write_bytes: usize,
    /// Each producer socket's kernel send buffer in bytes (0: the OS
    /// default, which on Linux autotunes up to `tcp_wmem`'s maximum, 4 MiB:
    /// flat out, that much of a producer's messages wait in its own kernel
    /// before the broker sees them, and counts in their latency).
    #[arg(long, default_value_t = 0)]
    send_buffer: u32,
}

pub(crate) async fn run(args: RawArgs) -> Result<Report> {
    if args.producers == 0 || args.consumers == 0 {
        bail!("need at least one producer and one consumer");
    }
    let mut to = Endpoint::parse(&args.uri).context("--uri")?;
    if let Some(addr) = &args.addr {
        let at = Endpoint::parse(addr).context("--addr")?;
        (to.host, to.port) = (at.host, at.port);
    }
    let queue = format!("bench-raw-{}", run_id());
    let mut setup = Connection::open(&to, None).await?;
    let declare = Method::QueueDeclare {
        queue: queue.as_bytes(),
        durable: args.persistent,
    };
    setup
        .request(CHANNEL, &declare, "queue.declare-ok", |m| {
            matches!(m, Method::QueueDeclareOk { .. })
        })
        .await
        .with_context(|| format!("declaring queue {queue}"))?;
    let outcome = measure(&args, &to, &queue).await;
    let delete = Method::QueueDelete {
        queue: queue.as_bytes(),
    };
    let deleted = setup.request(CHANNEL, &delete, "queue.delete-ok", |m| {
        matches!(m, Method::QueueDeleteOk { .. })
    });
    if let Err(e) = deleted.await {
        eprintln!("deleting queue {queue}: {e:#}");
    }
    let _ = setup.close(conn::STEP_LIMIT, |_| Ok(())).await;
    outcome
}

/// Consumers subscribe, then producers connect, then the clock starts.
async fn measure(args: &RawArgs, to: &Endpoint, queue: &str) -> Result<Report> {
    let counters = Arc::new(Counters::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut consumers = Vec::new();
    for i in 0..args.consumers {
        let conn = consume::subscribe(to, queue, args, i).await?;
        consumers.push(tokio::spawn(consume::consume(
            conn,
            args.clone(),
            counters.clone(),
            stop_rx.clone(),
        )));
    }
    let mut connected = Vec::new();
    for _ in 0..args.producers {
        connected.push(publish::connect(to, args).await?);
    }

    let started = Instant::now();
    let progress = tokio::spawn({
        let counters = counters.clone();
        async move { counters.progress(started).await }
    });
    let mut producers = Vec::new();
    for (p, conn) in connected.into_iter().enumerate() {
        producers.push(tokio::spawn(publish::produce(
            conn,
            args.clone(),
            p as u32,
            queue.to_owned(),
            counters.clone(),
        )));
    }
    let mut sent = Vec::new();
    for t in producers {
        sent.push(t.await.context("producer task")??);
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let published: u64 = sent.iter().map(|&n| u64::from(n)).sum();
    counters.drain(published).await;
    let total_secs = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    progress.abort();

    let mut merged: Option<Seen> = None;
    for t in consumers {
        let seen = t.await.context("consumer task")??;
        match &mut merged {
            Some(m) => m.merge(seen),
            None => merged = Some(seen),
        }
    }
    let mut totals = Totals::new();
    if let Some(seen) = &merged {
        let lost = (sent.iter().enumerate())
            .map(|(p, &n)| u64::from(n) - seen.distinct(p, n))
            .sum();
        totals.add(seen, lost);
    }
    Ok(Report {
        scenario: scenario(args),
        broker: args.broker.clone(),
        size: args.size.max(HEADER),
        producers: args.producers,
        consumers: args.consumers,
        seconds: publish_secs,
        published,
        consumed: totals.consumed,
        published_per_sec: published as f64 / publish_secs,
        consumed_per_sec: totals.consumed as f64 / total_secs,
        latency_p50_us: totals.latency_us(0.5),
        latency_p99_us: totals.latency_us(0.99),
        latency_p999_us: totals.latency_us(0.999),
        lost: totals.lost,
        duplicated: totals.duplicated,
    })
}

/// `amqp-raw-` and the name the lapin scenario gives the same shape.
fn scenario(args: &RawArgs) -> String {
    let kind = match (args.persistent, args.confirm > 0) {
        (true, true) => "persistent-confirm",
        (true, false) => "persistent",
        (false, true) => "transient-confirm",
        (false, false) => "transient",
    };
    let rate = match args.rate {
        0 => String::new(),
        r => format!("-rate{r}"),
    };
    format!(
        "amqp-raw-{kind}-{}to{}{rate}",
        args.producers, args.consumers
    )
}
