//! MQTT 3.1.1 scenarios over rumqttc: N publishers and M subscribers on one
//! topic `bench/<run-id>`, so 4 publishers and 1 subscriber is fan-in 4→1 and
//! 1 publisher with 4 subscribers is fan-out 1→4 (every subscriber gets a
//! copy). QoS 0, 1 or 2 for publishing and subscribing alike.
//!
//! A message counts as published once the protocol promised it: for QoS 0 when
//! it was written to the socket, for QoS 1 on PUBACK, for QoS 2 on PUBCOMP.
//! Losses are counted against exactly those messages; one that arrived
//! without its acknowledgement is consumed but neither lost nor promised.
//!
//! Every subscriber has its SUBACK before any publisher starts. rumqttc's
//! automatic reconnect is never used: a broken connection ends that client,
//! and what it missed shows up as loss.

use crate::report::Report;
use crate::track::{Bits, Counters, Seen, Totals, pace, run_id, stamp};
use anyhow::{Context, Result, bail};
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing,
    Packet, QoS, SubscribeReasonCode,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Options of the `mqtt` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct MqttArgs {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker MQTT port.
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Label for the report (e.g. switchyard, rabbitmq, mosquitto).
    #[arg(long, default_value = "broker")]
    broker: String,
    /// Publisher connections.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Subscriber connections; each receives every message.
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// QoS of publishes and subscriptions: 0, 1 or 2.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Message size in bytes (at least 16).
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Seconds to publish for.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Upper bound on messages per publisher (0 = unbounded within duration).
    #[arg(long, default_value_t = 0)]
    max_messages: u32,
    /// Messages per second per publisher (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// QoS 1/2 publishes awaiting their acknowledgement, per publisher.
    #[arg(long, default_value_t = 100)]
    inflight: u16,
    /// Keep-alive in seconds (0 = none).
    #[arg(long, default_value_t = 60)]
    keep_alive: u64,
    /// User name (RabbitMQ refuses anonymous MQTT clients unless configured to).
    #[arg(long)]
    username: Option<String>,
    /// Password, sent only with a user name.
    #[arg(long, default_value = "")]
    password: String,
}

impl MqttArgs {
    fn qos(&self) -> QoS {
        match self.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        }
    }
}

/// What one publisher sent and which of those the broker acknowledged.
struct Sent {
    attempted: u32,
    promised: Bits,
}

pub(crate) async fn run(args: MqttArgs) -> Result<Report> {
    if args.publishers == 0 || args.subscribers == 0 {
        bail!("need at least one publisher and one subscriber");
    }
    let id = run_id();
    let topic = format!("bench/{id}");
    let counters = Arc::new(Counters::new());
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut subscribers = Vec::new();
    for i in 0..args.subscribers {
        let (client, eventloop) = subscribe(&args, format!("sb{id}s{i}"), &topic).await?;
        subscribers.push(tokio::spawn(receive(
            client,
            eventloop,
            args.publishers,
            counters.clone(),
            stop_rx.clone(),
        )));
    }
    let mut connected = Vec::new();
    for p in 0..args.publishers {
        connected.push(connect(&args, format!("sb{id}p{p}")).await?);
    }

    let started = Instant::now();
    let progress = tokio::spawn({
        let counters = counters.clone();
        async move { counters.progress(started).await }
    });
    let mut publishers = Vec::new();
    for (p, (client, eventloop)) in connected.into_iter().enumerate() {
        publishers.push(tokio::spawn(publish(
            args.clone(),
            p as u32,
            client,
            eventloop,
            topic.clone(),
            counters.clone(),
        )));
    }
    let mut sent = Vec::new();
    for t in publishers {
        sent.push(t.await.context("publisher task")??);
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let promised: u64 = sent.iter().map(|s| s.promised.len()).sum();
    let attempted: u64 = sent.iter().map(|s| u64::from(s.attempted)).sum();
    if promised < attempted {
        let what = if args.qos == 0 {
            "written"
        } else {
            "acknowledged"
        };
        eprintln!(
            "{} of {attempted} publishes never {what}",
            attempted - promised
        );
    }
    counters.drain(promised * args.subscribers as u64).await;
    let total_secs = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    progress.abort();

    let mut totals = Totals::new();
    for t in subscribers {
        let seen = t.await.context("subscriber task")?;
        let lost = (sent.iter().enumerate())
            .map(|(p, s)| seen.missing(p, &s.promised))
            .sum();
        totals.add(&seen, lost);
    }
    let rate = if args.rate > 0 {
        format!("-rate{}", args.rate)
    } else {
        String::new()
    };
    Ok(Report {
        scenario: format!(
            "mqtt-qos{}-{}to{}{rate}",
            args.qos, args.publishers, args.subscribers
        ),
        broker: args.broker,
        size: args.size.max(crate::track::HEADER),
        producers: args.publishers,
        consumers: args.subscribers,
        seconds: publish_secs,
        published: promised,
        consumed: totals.consumed,
        published_per_sec: promised as f64 / publish_secs,
        consumed_per_sec: totals.consumed as f64 / total_secs,
        latency_p50_us: totals.latency_us(0.5),
        latency_p99_us: totals.latency_us(0.99),
        latency_p999_us: totals.latency_us(0.999),
        lost: totals.lost,
        duplicated: totals.duplicated,
    })
}

/// Connects with a clean session and waits for a successful CONNACK.
async fn connect(args: &MqttArgs, client_id: String) -> Result<(AsyncClient, EventLoop)> {
    let mut opts = MqttOptions::new(client_id.clone(), &args.host, args.port);
    opts.set_keep_alive(Duration::from_secs(args.keep_alive))
        .set_clean_session(true)
        .set_inflight(args.inflight.max(1));
    let max_packet = (args.size + 1024).max(10 * 1024);
    opts.set_max_packet_size(max_packet, max_packet);
    if let Some(user) = &args.username {
        opts.set_credentials(user, &args.password);
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    let mut net = NetworkOptions::new();
    // Small messages one at a time, as latency-minded clients send them.
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(10);
    eventloop.set_network_options(net);
    match eventloop.poll().await {
        Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
            Ok((client, eventloop))
        }
        Ok(other) => bail!("{client_id}: expected CONNACK, got {other:?}"),
        Err(e) => Err(e)
            .with_context(|| format!("{client_id}: connecting to {}:{}", args.host, args.port)),
    }
}

/// Connects and subscribes; returns once the SUBACK granted the subscription.
async fn subscribe(
    args: &MqttArgs,
    client_id: String,
    topic: &str,
) -> Result<(AsyncClient, EventLoop)> {
    let (client, mut eventloop) = connect(args, client_id.clone()).await?;
    client.subscribe(topic, args.qos()).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline.into(), eventloop.poll())
            .await
            .with_context(|| format!("{client_id}: no SUBACK within 10 s"))??;
        if let Event::Incoming(Packet::SubAck(ack)) = event {
            if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                bail!("{client_id}: subscription to {topic} refused");
            }
            return Ok((client, eventloop));
        }
    }
}

/// Records every message until `stop`, then disconnects.
async fn receive(
    client: AsyncClient,
    mut eventloop: EventLoop,
    publishers: usize,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    let mut seen = Seen::new(publishers);
    loop {
        // `poll` is only ever cancelled here, once, when the run is over.
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    seen.record(&p.payload);
                    counters.consumed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("subscriber: {e}");
                    return seen;
                }
            },
        }
    }
    disconnect(&client, &mut eventloop).await;
    seen
}

/// Publishes for the run's duration, then waits (at most 10 s) for the
/// acknowledgements still owed and disconnects.
async fn publish(
    args: MqttArgs,
    id: u32,
    client: AsyncClient,
    eventloop: EventLoop,
    topic: String,
    counters: Arc<Counters>,
) -> Result<Sent> {
    let acked = Arc::new(AtomicU64::new(0));
    let mut driver = tokio::spawn(drive(
        eventloop,
        args.qos(),
        id,
        counters.clone(),
        acked.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let begun = Instant::now();
    let mut seq: u32 = 0;
    while Instant::now() < deadline && (args.max_messages == 0 || seq < args.max_messages) {
        pace(args.rate, begun, seq).await;
        let mut payload = Vec::with_capacity(args.size.max(16));
        stamp(&mut payload, args.size, id, seq);
        if client
            .publish(topic.as_str(), args.qos(), false, payload)
            .await
            .is_err()
        {
            // The event loop ended (connection lost); `drive` said why.
            break;
        }
        seq += 1;
    }
    let owed_until = Instant::now() + Duration::from_secs(10);
    while acked.load(Ordering::Relaxed) < u64::from(seq)
        && !driver.is_finished()
        && Instant::now() < owed_until
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = client.try_disconnect();
    let promised = match tokio::time::timeout(Duration::from_secs(5), &mut driver).await {
        Ok(r) => r.context("publisher event loop")?,
        Err(_) => {
            driver.abort();
            bail!("publisher {id}: event loop did not end after DISCONNECT");
        }
    };
    Ok(Sent {
        attempted: seq,
        promised,
    })
}

/// Runs a publisher's event loop until DISCONNECT is written or the
/// connection fails, and returns the sequence numbers the broker promised.
///
/// rumqttc takes requests in order and reports each publish as it writes it
/// (a publish held back by a packet-id collision is reported when it finally
/// goes out, and nothing overtakes it), so the n-th `Outgoing::Publish` is
/// sequence number n.
async fn drive(
    mut eventloop: EventLoop,
    qos: QoS,
    id: u32,
    counters: Arc<Counters>,
    acked: Arc<AtomicU64>,
) -> Bits {
    let mut promised = Bits::default();
    let mut promise = |seq: u32| {
        promised.insert(seq);
        acked.fetch_add(1, Ordering::Relaxed);
        counters.published.fetch_add(1, Ordering::Relaxed);
    };
    let mut written: u32 = 0;
    let mut downgraded = false;
    let mut by_pkid = vec![None; usize::from(u16::MAX) + 1];
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if qos == QoS::AtMostOnce {
                    promise(written);
                } else {
                    by_pkid[usize::from(pkid)] = Some(written);
                }
                written += 1;
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) if qos == QoS::AtLeastOnce => {
                if let Some(seq) = by_pkid[usize::from(ack.pkid)].take() {
                    promise(seq);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) if qos == QoS::ExactlyOnce => {
                // RabbitMQ 3.x downgrades QoS 2 to 1 and answers PUBACK: that
                // is not the exactly-once promise asked for, so not counted.
                if by_pkid[usize::from(ack.pkid)].take().is_some() && !downgraded {
                    downgraded = true;
                    eprintln!("publisher {id}: QoS 2 PUBLISH answered with PUBACK; not counted");
                }
            }
            Ok(Event::Incoming(Packet::PubComp(comp))) if qos == QoS::ExactlyOnce => {
                if let Some(seq) = by_pkid[usize::from(comp.pkid)].take() {
                    promise(seq);
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("publisher {id}: {e}");
                break;
            }
        }
    }
    promised
}

/// Sends DISCONNECT and lets the event loop write it (at most 1 s).
async fn disconnect(client: &AsyncClient, eventloop: &mut EventLoop) {
    if client.try_disconnect().is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(event) = eventloop.poll().await {
            if event == Event::Outgoing(Outgoing::Disconnect) {
                break;
            }
        }
    })
    .await;
}
