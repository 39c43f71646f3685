//! Idle MQTT connections: what does each one cost the broker in memory?
//!
//! Reads the broker's resident set (`VmRSS` in `/proc/<pid>/status`) before
//! the first connection, opens N connections with a raw MQTT 3.1.1 CONNECT
//! (clean session, long keep-alive, so none of them sends anything after its
//! CONNACK), waits until every CONNACK arrived plus a settling pause, reads
//! the RSS again and reports the difference per connection.
//!
//! Bounded: connections are opened in batches with at most `--concurrency`
//! handshakes in flight, each handshake has a 30 s timeout and the whole
//! opening phase `--timeout`. To get past one source address's ephemeral
//! ports, connection i is bound to 127.0.0.(2 + i % 250) when the broker is
//! on loopback. The open-file limit is checked first (`ulimit -n`).

use crate::report::ConnsReport;
use anyhow::{Context, Result, bail};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Options of the `conns` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ConnsArgs {
    /// Broker IPv4 address.
    #[arg(long, default_value = "127.0.0.1")]
    host: Ipv4Addr,
    /// Broker MQTT port.
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Label for the report (e.g. switchyard, rabbitmq, mosquitto).
    #[arg(long, default_value = "broker")]
    broker: String,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Connections per batch; a batch completes before the next starts.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Seconds allowed for opening them all.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Keep-alive in the CONNECT, in seconds.
    #[arg(long, default_value_t = 600)]
    keep_alive: u16,
    /// Seconds to wait after the last CONNACK before reading the RSS.
    #[arg(long, default_value_t = 3)]
    settle: u64,
    /// The broker's process id, for its RSS (without it, only counts).
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Connect from 127.0.0.1 only instead of spreading over 127.0.0.2–251.
    #[arg(long)]
    one_source: bool,
    /// User name (RabbitMQ refuses anonymous MQTT clients unless configured to).
    #[arg(long)]
    username: Option<String>,
    /// Password, sent only with a user name.
    #[arg(long, default_value = "")]
    password: String,
    /// After CONNACK, subscribe each connection to a topic of its own at
    /// QoS 1 (an idle device waiting for commands) and wait for the SUBACK.
    #[arg(long)]
    subscribe: bool,
}

/// Handshake timeout per connection.
const HANDSHAKE: Duration = Duration::from_secs(30);

pub(crate) async fn run(args: ConnsArgs) -> Result<ConnsReport> {
    if args.connections == 0 || args.concurrency == 0 || args.batch == 0 {
        bail!("--connections, --concurrency and --batch must be positive");
    }
    let soft = open_file_limit("self")?;
    if soft.is_some_and(|soft| soft < args.connections as u64 + 64) {
        bail!(
            "open-file limit {} is too low for {} connections: raise it with `ulimit -n`",
            soft.unwrap_or_default(),
            args.connections
        );
    }
    if let Some(pid) = args.broker_pid
        && let Ok(Some(limit)) = open_file_limit(&pid.to_string())
        && limit < args.connections as u64
    {
        eprintln!("warning: broker pid {pid} may open only {limit} files");
    }
    let rss_before = args.broker_pid.map(rss).transpose()?;
    let broker = SocketAddr::from((args.host, args.port));
    let spread = !args.one_source && args.host.is_loopback();
    let tag = crate::track::run_id();
    let user = args
        .username
        .as_deref()
        .map(|u| (u, args.password.as_str()));
    let permits = Arc::new(Semaphore::new(args.concurrency));

    let mut held: Vec<TcpStream> = Vec::with_capacity(args.connections);
    let mut failed = 0;
    let mut first_error: Option<String> = None;
    let started = Instant::now();
    let opening = async {
        for start in (0..args.connections).step_by(args.batch) {
            let mut batch = JoinSet::new();
            for i in start..(start + args.batch).min(args.connections) {
                let permit = permits.clone().acquire_owned().await?;
                let source = spread.then(|| Ipv4Addr::new(127, 0, 0, 2 + (i % 250) as u8));
                let id = format!("sb{tag}c{i}");
                let mut packet = connect_packet(&id, args.keep_alive, user);
                let subscribe = args.subscribe;
                if subscribe {
                    packet.extend(subscribe_packet(&format!("devices/{id}/cmd")));
                }
                batch.spawn(async move {
                    let _permit = permit;
                    let opened = open(broker, source, &packet, subscribe);
                    match tokio::time::timeout(HANDSHAKE, opened).await {
                        Ok(r) => r,
                        Err(_) => Err(anyhow::anyhow!("no CONNACK within {HANDSHAKE:?}")),
                    }
                });
            }
            while let Some(joined) = batch.join_next().await {
                match joined.context("connection task")? {
                    Ok(stream) => held.push(stream),
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            eprintln!(
                "[{:>5.1}s] {} open, {failed} failed",
                started.elapsed().as_secs_f64(),
                held.len()
            );
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(args.timeout), opening).await {
        Ok(r) => r?,
        Err(_) => eprintln!("gave up opening after {} s", args.timeout),
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(e) = &first_error {
        eprintln!("{failed} connections failed; first: {e}");
    }
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let rss_after = args.broker_pid.map(rss).transpose()?;
    let opened = held.len();
    for stream in held {
        // DISCONNECT, best effort: the broker learns it was on purpose.
        let _ = stream.try_write(&[0xE0, 0x00]);
    }
    let bytes_per_connection = match (rss_before, rss_after) {
        (Some(b), Some(a)) if opened > 0 => Some((a as f64 - b as f64) / opened as f64),
        _ => None,
    };
    Ok(ConnsReport {
        scenario: if args.subscribe {
            format!("mqtt-conns-subscribed-{}", args.connections)
        } else {
            format!("mqtt-conns-{}", args.connections)
        },
        broker: args.broker,
        connections: args.connections,
        opened,
        failed: args.connections - opened,
        seconds,
        connects_per_sec: opened as f64 / seconds,
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        bytes_per_connection,
    })
}

/// Connects (from `source` if given), sends `packet` and waits for a
/// successful CONNACK (and, with `subscribed`, a SUBACK granting QoS 1).
async fn open(
    broker: SocketAddr,
    source: Option<Ipv4Addr>,
    packet: &[u8],
    subscribed: bool,
) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::from((ip, 0)))
            .with_context(|| format!("binding {ip}"))?;
    }
    let mut stream = socket.connect(broker).await?;
    stream.write_all(packet).await?;
    let mut ack = [0u8; 4];
    stream
        .read_exact(&mut ack)
        .await
        .context("reading CONNACK")?;
    match ack {
        [0x20, 0x02, _, 0] => {}
        [0x20, 0x02, _, code] => bail!("CONNACK refused the connection (return code {code})"),
        other => bail!("expected CONNACK, got {other:02x?}"),
    }
    if subscribed {
        let mut suback = [0u8; 5];
        stream
            .read_exact(&mut suback)
            .await
            .context("reading SUBACK")?;
        if suback != [0x90, 0x03, 0, 1, 1] {
            bail!("expected SUBACK granting QoS 1, got {suback:02x?}");
        }
    }
    Ok(stream)
}

/// SUBSCRIBE (packet id 1) to `topic` at QoS 1.
fn subscribe_packet(topic: &str) -> Vec<u8> {
    let len = u16::try_from(topic.len()).unwrap_or(u16::MAX);
    let mut body = vec![0, 1];
    body.extend_from_slice(&len.to_be_bytes());
    body.extend_from_slice(&topic.as_bytes()[..usize::from(len)]);
    body.push(1);
    let mut packet = vec![0x82, u8::try_from(body.len()).unwrap_or(u8::MAX)];
    packet.extend_from_slice(&body);
    packet
}

/// An MQTT 3.1.1 CONNECT with a clean session and no will.
fn connect_packet(client_id: &str, keep_alive: u16, user: Option<(&str, &str)>) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
    }
    let mut flags = 0x02;
    if user.is_some() {
        flags |= 0xC0;
    }
    let mut body = Vec::with_capacity(64);
    string(&mut body, "MQTT");
    body.push(4);
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    string(&mut body, client_id);
    if let Some((name, password)) = user {
        string(&mut body, name);
        string(&mut body, password);
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        packet.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

/// Resident set size of process `pid`, in bytes.
fn rss(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .with_context(|| format!("no VmRSS in {path}"))?;
    Ok(kib * 1024)
}

/// Soft open-file limit of `/proc/<who>` (None = unlimited).
fn open_file_limit(who: &str) -> Result<Option<u64>> {
    let path = format!("/proc/{who}/limits");
    let limits = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .with_context(|| format!("no open-file limit in {path}"))?;
    Ok(soft.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_packet_bytes() {
        assert_eq!(
            subscribe_packet("a/b"),
            [0x82, 8, 0, 1, 0, 3, b'a', b'/', b'b', 1]
        );
    }

    #[test]
    fn connect_packet_bytes() {
        assert_eq!(
            connect_packet("c1", 600, None),
            [
                0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0x02, 0x58, 0, 2, b'c', b'1'
            ]
        );
        let with_user = connect_packet("c", 60, Some(("guest", "guest")));
        assert_eq!(with_user[1] as usize, with_user.len() - 2);
        assert_eq!(with_user[9], 0xC2);
        assert!(with_user.ends_with(b"\0\x05guest\0\x05guest"));
        let long = connect_packet(&"x".repeat(200), 1, None);
        assert_eq!(&long[1..3], &[(212 % 128) as u8 | 0x80, 1]);
    }

    #[test]
    fn reads_own_limits_and_rss() {
        assert!(rss(std::process::id()).unwrap() > 0);
        let _ = open_file_limit("self").unwrap();
    }
}
