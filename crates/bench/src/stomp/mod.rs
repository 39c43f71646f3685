//! STOMP 1.2 scenarios over the client in [`client`]: a queue
//! (`/queue/<name>`, consumers share the messages) or a topic
//! (`/topic/<key>`, every consumer gets a copy), acknowledged automatically
//! or one by one (`ack:client-individual`) under a `prefetch-count`.
//!
//! SEND has no acknowledgement here, so a message counts as published once
//! written; each producer ends with DISCONNECT and waits for its RECEIPT, after
//! which the broker has taken every SEND. Consumers hold their SUBSCRIBE's
//! RECEIPT before any producer starts.

mod client;
mod frame;

use crate::report::Report;
use crate::track::{Counters, DRAIN_LIMIT, Seen, Totals, pace, run_id, stamp};
use anyhow::{Context, Result, bail};
use client::{Connection, Endpoint, describe};
use frame::Frame;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Queue (shared) or topic (copied to every consumer).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Destination {
    Queue,
    Topic,
}

/// How consumers acknowledge.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckMode {
    Auto,
    ClientIndividual,
}

/// Options of the `stomp` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct StompArgs {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker STOMP port.
    #[arg(long, default_value_t = 61613)]
    port: u16,
    /// Label for the report (e.g. switchyard, rabbitmq).
    #[arg(long, default_value = "broker")]
    broker: String,
    /// Virtual host (the CONNECT `host` header).
    #[arg(long, default_value = "/")]
    vhost: String,
    #[arg(long, default_value = "guest")]
    login: String,
    #[arg(long, default_value = "guest")]
    passcode: String,
    /// Queue or topic.
    #[arg(long, value_enum, default_value_t = Destination::Queue)]
    destination: Destination,
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
    /// Messages per second per producer (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Consumer acknowledgement mode.
    #[arg(long, value_enum, default_value_t = AckMode::ClientIndividual)]
    ack: AckMode,
    /// Unacknowledged messages per consumer (`prefetch-count`; 0 = not sent).
    #[arg(long, default_value_t = 1000)]
    prefetch: u32,
    /// The `persistent` header on every SEND (`true` / `false`); not sent
    /// when absent, leaving the broker's default (brokers differ).
    #[arg(long)]
    persistent: Option<bool>,
}

/// A producer writes this many bytes of frames before flushing them (when
/// not rate-limited, where every frame is flushed at once).
const BATCH_BYTES: usize = 16 * 1024;

pub(crate) async fn run(args: StompArgs) -> Result<Report> {
    if args.producers == 0 || args.consumers == 0 {
        bail!("need at least one producer and one consumer");
    }
    let id = run_id();
    let destination = match args.destination {
        Destination::Queue => format!("/queue/bench-{id}"),
        Destination::Topic => format!("/topic/bench.{id}"),
    };
    // Producers send to the queue the consumers' SUBSCRIBE declared, by
    // its `/amq/queue/` name: RabbitMQ takes SEND headers to `/queue/` as
    // declare arguments (`persistent:false` would ask for another queue).
    let send_to = match args.destination {
        Destination::Queue => format!("/amq/queue/bench-{id}"),
        Destination::Topic => destination.clone(),
    };
    let to = Endpoint {
        host: args.host.clone(),
        port: args.port,
        vhost: args.vhost.clone(),
        login: args.login.clone(),
        passcode: args.passcode.clone(),
    };
    let counters = Arc::new(Counters::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut consumers = Vec::new();
    for i in 0..args.consumers {
        let conn = subscribe(&to, &destination, &args, i).await?;
        consumers.push(tokio::spawn(consume(
            conn,
            args.clone(),
            counters.clone(),
            stop_rx.clone(),
        )));
    }
    let mut connected = Vec::new();
    for _ in 0..args.producers {
        connected.push(Connection::connect(&to).await?);
    }

    let started = Instant::now();
    let progress = tokio::spawn({
        let counters = counters.clone();
        async move { counters.progress(started).await }
    });
    let mut producers = Vec::new();
    for (p, conn) in connected.into_iter().enumerate() {
        producers.push(tokio::spawn(produce(
            conn,
            args.clone(),
            p as u32,
            send_to.clone(),
            counters.clone(),
        )));
    }
    let mut sent = Vec::new();
    for t in producers {
        sent.push(t.await.context("producer task")??);
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let copies = match args.destination {
        Destination::Queue => 1,
        Destination::Topic => args.consumers as u64,
    };
    let published: u64 = sent.iter().map(|&n| u64::from(n)).sum();
    counters.drain(published * copies).await;
    let total_secs = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    progress.abort();

    let mut views = Vec::new();
    for t in consumers {
        views.push(t.await.context("consumer task")??);
    }
    if args.destination == Destination::Queue {
        let merged = views.into_iter().reduce(|mut a, b| {
            a.merge(b);
            a
        });
        views = merged.into_iter().collect();
    }
    let mut totals = Totals::new();
    for seen in &views {
        let lost = (sent.iter().enumerate())
            .map(|(p, &n)| u64::from(n) - seen.distinct(p, n))
            .sum();
        totals.add(seen, lost);
    }
    let kind = match args.destination {
        Destination::Queue => "queue",
        Destination::Topic => "topic",
    };
    let ack = match args.ack {
        AckMode::Auto => "autoack",
        AckMode::ClientIndividual => "ack",
    };
    let rate = if args.rate > 0 {
        format!("-rate{}", args.rate)
    } else {
        String::new()
    };
    Ok(Report {
        scenario: format!(
            "stomp-{kind}-{ack}-{}to{}{rate}",
            args.producers, args.consumers
        ),
        broker: args.broker,
        size: args.size.max(crate::track::HEADER),
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

/// Connects and subscribes; returns once the SUBSCRIBE's RECEIPT arrived.
async fn subscribe(
    to: &Endpoint,
    destination: &str,
    args: &StompArgs,
    i: usize,
) -> Result<Connection> {
    let mut conn = Connection::connect(to).await?;
    let ack = match args.ack {
        AckMode::Auto => "auto",
        AckMode::ClientIndividual => "client-individual",
    };
    let mut sub = Frame::new("SUBSCRIBE")
        .header("id", "0")
        .header("destination", destination)
        .header("ack", ack);
    if args.prefetch > 0 {
        sub = sub.header("prefetch-count", args.prefetch.to_string());
    }
    conn.request(sub, &format!("sub-{i}"), Duration::from_secs(10), |f| {
        eprintln!("consumer {i}: unexpected {}", describe(&f));
    })
    .await
    .with_context(|| format!("subscribing to {destination}"))?;
    Ok(conn)
}

/// Records every MESSAGE until `stop`, acknowledging each if asked to, with
/// all the ACKs for one read written together.
async fn consume(
    mut conn: Connection,
    args: StompArgs,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> Result<Seen> {
    let mut seen = Seen::new(args.producers);
    loop {
        while let Some(f) = conn.poll_frame()? {
            match f.command.as_str() {
                "MESSAGE" => {
                    seen.record(&f.body);
                    counters.consumed.fetch_add(1, Ordering::Relaxed);
                    if args.ack == AckMode::ClientIndividual {
                        let id = f.get("ack").or_else(|| f.get("message-id"));
                        conn.send(&Frame::new("ACK").header("id", id.unwrap_or_default()));
                    }
                }
                "ERROR" => bail!("consumer: broker sent {}", describe(&f)),
                _ => eprintln!("consumer: unexpected {}", describe(&f)),
            }
        }
        conn.flush().await?;
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            n = conn.read_more() => if n? == 0 {
                eprintln!("consumer: broker closed the connection");
                return Ok(seen);
            },
        }
    }
    // Messages still arriving before the RECEIPT are late, not lost.
    let mut late = 0;
    let bye = conn.disconnect(Duration::from_secs(5), |f| {
        if f.command == "MESSAGE" {
            late += 1;
        }
    });
    if let Err(e) = bye.await {
        eprintln!("consumer: {e:#}");
    }
    if late > 0 {
        eprintln!("consumer: {late} messages arrived after the drain");
    }
    Ok(seen)
}

/// Sends for the run's duration, then DISCONNECTs and waits for the RECEIPT.
async fn produce(
    mut conn: Connection,
    args: StompArgs,
    id: u32,
    destination: String,
    counters: Arc<Counters>,
) -> Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let begun = Instant::now();
    let mut seq: u32 = 0;
    let mut unflushed = 0;
    let mut payload = Vec::with_capacity(args.size.max(16));
    while Instant::now() < deadline && (args.max_messages == 0 || seq < args.max_messages) {
        pace(args.rate, begun, seq).await;
        stamp(&mut payload, args.size, id, seq);
        let mut frame = Frame::new("SEND").header("destination", destination.as_str());
        if let Some(p) = args.persistent {
            frame = frame.header("persistent", if p { "true" } else { "false" });
        }
        conn.send(&frame.body(payload.clone()));
        seq += 1;
        unflushed += 1;
        if args.rate > 0 || conn.queued() >= BATCH_BYTES {
            if let Err(e) = conn.flush().await {
                let e = conn.explain(e).await;
                return Err(e.context(format!("producer {id}: writing SEND frames")));
            }
            counters.published.fetch_add(unflushed, Ordering::Relaxed);
            unflushed = 0;
        }
    }
    conn.flush().await?;
    counters.published.fetch_add(unflushed, Ordering::Relaxed);
    // A broker with a backlog of SENDs answers only once it worked through them.
    conn.disconnect(DRAIN_LIMIT, |f| {
        eprintln!("producer {id}: unexpected {}", describe(&f));
    })
    .await
    .with_context(|| format!("producer {id}"))?;
    Ok(seq)
}
