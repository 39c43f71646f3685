//! Running the broker: open the store and broker, bind every enabled
//! listener, announce them (log line and ready file), wait for SIGINT or
//! SIGTERM, then shut down in order.
//!
//! Shutdown order (STYLE.md §6): cancel the shutdown token, so listeners stop
//! accepting and protocol crates close their connections politely (AMQP 320
//! CONNECTION_FORCED); wait for every tracked task up to
//! `server.shutdown_timeout` (a second signal stops the wait); flush the
//! broker; stop the runtime, dropping tasks that outlived the deadline; close
//! the store last, which commits what is left and joins its writer thread.

use crate::config::{AmqpListenerConfig, Config, ServerConfig};
use crate::websocket::{self, Backend};
use anyhow::{Context as _, anyhow};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use switchyard_access::Access;
use switchyard_engine::Broker;
use switchyard_engine::store::Store;
use switchyard_store::RedbStore;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// How long the runtime may take to drop tasks that outlived the shutdown
/// deadline.
const RUNTIME_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// Run the broker until a signal; `Err` for anything that should exit 1.
pub(crate) fn serve(config: &Config, ready_file: Option<&Path>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("switchyard-worker")
        .build()
        .context("cannot start the async runtime")?;

    let data_dir = &config.server.data_dir;
    let store = RedbStore::open(data_dir)
        .map_err(|e| anyhow!("cannot open the store in {}: {e}", data_dir.display()))?;
    let store = Arc::new(store);
    let broker = {
        // Inside the runtime in case recovery needs to reach it.
        let _entered = runtime.enter();
        Broker::open(Arc::clone(&store) as Arc<dyn Store>)
            .map_err(|e| anyhow!("cannot recover state from {}: {e}", data_dir.display()))?
    };
    broker.set_max_queues_per_vhost(config.server.max_queues_per_vhost.get());
    broker.set_flow_backlog(config.server.flow_backlog);
    let access = Access::open(Arc::clone(&broker), &config.auth.defaults());

    let outcome = runtime.block_on(run(config, &broker, &access, ready_file));
    drop(access);

    broker.flush();
    drop(broker);
    runtime.shutdown_timeout(RUNTIME_STOP_TIMEOUT);
    close_store(store);
    if outcome.is_ok() {
        info!("stopped");
    }
    outcome
}

/// Bind, announce, wait for a signal, drain.
async fn run(
    config: &Config,
    broker: &Arc<Broker>,
    access: &Arc<Access>,
    ready_file: Option<&Path>,
) -> anyhow::Result<()> {
    // Installed before binding so a signal sent once the ready file exists is
    // never missed.
    let mut signals = Signals::new().context("cannot install signal handlers")?;
    if let Some(path) = ready_file {
        remove_ready_file(path);
    }

    // Bind everything before serving anything: a bind failure leaves nothing
    // to stop.
    let amqp = match config.amqp.listen {
        Some(addr) => Some(bind("amqp", addr).await?),
        None => None,
    };
    let mqtt = match config.mqtt.listen {
        Some(addr) => Some(bind("mqtt", addr).await?),
        None => None,
    };
    let stomp = match config.stomp.listen {
        Some(addr) => Some(bind("stomp", addr).await?),
        None => None,
    };
    let web_stomp = match config.web_stomp.listen {
        Some(addr) => Some(bind("web_stomp", addr).await?),
        None => None,
    };
    let web_mqtt = match config.web_mqtt.listen {
        Some(addr) => Some(bind("web_mqtt", addr).await?),
        None => None,
    };
    let management = match config.management.listen {
        Some(addr) => Some(bind("management", addr).await?),
        None => None,
    };
    let prometheus = match config.prometheus.listen {
        Some(addr) => Some(bind("prometheus", addr).await?),
        None => None,
    };
    let mut bound = Vec::new();
    for (name, l) in [
        ("amqp", &amqp),
        ("mqtt", &mqtt),
        ("stomp", &stomp),
        ("web_stomp", &web_stomp),
        ("web_mqtt", &web_mqtt),
        ("management", &management),
        ("prometheus", &prometheus),
    ] {
        if let Some((_, addr)) = l {
            bound.push((name, *addr));
        }
    }
    if bound.is_empty() {
        warn!("every listener is disabled; nothing to serve");
    }
    for (protocol, addr) in &bound {
        info!(protocol = %protocol, addr = %addr, "listening");
    }

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut listeners: JoinSet<&'static str> = JoinSet::new();
    if let Some((listener, _)) = amqp {
        let accept = switchyard_amqp::serve(
            listener,
            Arc::clone(broker),
            amqp_config(&config.amqp, &config.server),
            shutdown.clone(),
            tracker.clone(),
        );
        let accept = tracker.track_future(accept);
        listeners.spawn(async move {
            accept.await;
            "amqp"
        });
    }
    // TCP and WebSocket clients of one protocol share its state (MQTT
    // session takeover works across both).
    let mqtt_shared = switchyard_mqtt::Shared::new(Arc::clone(broker));
    mqtt_shared.resume_deferred();
    let stomp_shared = switchyard_stomp::Shared::new(Arc::clone(broker));
    if let Some((listener, _)) = mqtt {
        let accept = switchyard_mqtt::serve(
            listener,
            mqtt_shared.clone(),
            mqtt_config(config),
            shutdown.clone(),
            tracker.clone(),
        );
        let accept = tracker.track_future(accept);
        listeners.spawn(async move {
            accept.await;
            "mqtt"
        });
    }
    if let Some((listener, _)) = stomp {
        let accept = switchyard_stomp::serve(
            listener,
            stomp_shared.clone(),
            stomp_config(config),
            shutdown.clone(),
            tracker.clone(),
        );
        let accept = tracker.track_future(accept);
        listeners.spawn(async move {
            accept.await;
            "stomp"
        });
    }
    let web = [
        (
            web_stomp,
            Backend::Stomp(stomp_shared, stomp_config(config)),
        ),
        (web_mqtt, Backend::Mqtt(mqtt_shared, mqtt_config(config))),
    ];
    for (bound, backend) in web {
        let Some((listener, _)) = bound else { continue };
        let name = match backend {
            Backend::Stomp(..) => "web_stomp",
            Backend::Mqtt(..) => "web_mqtt",
        };
        let accept = websocket::serve(listener, backend, shutdown.clone(), tracker.clone());
        let accept = tracker.track_future(accept);
        listeners.spawn(async move {
            accept.await;
            name
        });
    }

    // The overview lists listeners with RabbitMQ's protocol names.
    let listed = bound
        .iter()
        .map(|(name, addr)| {
            let protocol = match *name {
                "management" => "http",
                "web_stomp" => "http/web-stomp",
                "web_mqtt" => "http/web-mqtt",
                other => other,
            };
            (protocol.to_owned(), *addr)
        })
        .collect();
    let admin = switchyard_admin::Admin::new(
        Arc::clone(broker),
        Arc::clone(access),
        listed,
        config.server.data_dir.clone(),
    );
    for (bound, name) in [(management, "management"), (prometheus, "prometheus")] {
        let Some((listener, _)) = bound else { continue };
        let serve = if name == "management" {
            tokio::spawn(switchyard_admin::serve_management(
                listener,
                Arc::clone(&admin),
                shutdown.clone(),
            ))
        } else {
            tokio::spawn(switchyard_admin::serve_prometheus(
                listener,
                Arc::clone(&admin),
                shutdown.clone(),
            ))
        };
        let serve = tracker.track_future(serve);
        listeners.spawn(async move {
            let _ = serve.await;
            name
        });
    }

    let mut outcome = match ready_file {
        Some(path) => write_ready_file(path, &bound)
            .with_context(|| format!("cannot write ready file {}", path.display())),
        None => Ok(()),
    };
    if outcome.is_ok() {
        outcome = tokio::select! {
            signal = signals.recv() => {
                info!(signal = %signal, "shutting down");
                Ok(())
            }
            Some(ended) = listeners.join_next() => Err(match ended {
                Ok(protocol) => anyhow!("the {protocol} listener stopped unexpectedly"),
                Err(e) => anyhow!("a listener failed: {e}"),
            }),
        };
    }
    if let Err(e) = &outcome {
        error!("shutting down: {e:#}");
    }

    shutdown.cancel();
    tracker.close();
    let deadline = config.server.shutdown_timeout;
    tokio::select! {
        drained = tokio::time::timeout(deadline, tracker.wait()) => {
            if drained.is_err() {
                warn!(tasks = tracker.len(), ?deadline, "connections still open at the deadline");
            }
        }
        signal = signals.recv() => {
            warn!(signal = %signal, tasks = tracker.len(), "second signal; not waiting for connections");
        }
    }
    listeners.abort_all();
    if let Some(path) = ready_file {
        remove_ready_file(path);
    }
    outcome
}

/// The protocol crate's settings from the validated listener section.
fn amqp_config(c: &AmqpListenerConfig, server: &ServerConfig) -> switchyard_amqp::AmqpConfig {
    switchyard_amqp::AmqpConfig {
        frame_max: c.frame_max,
        channel_max: c.channel_max.get(),
        heartbeat: c.heartbeat,
        handshake_timeout: c.handshake_timeout,
        max_connections: c.max_connections.get(),
        max_message_size: c.max_message_size.get(),
        max_connections_per_ip: c.max_connections_per_ip.get(),
        max_consumers_per_channel: c.max_consumers_per_channel.get(),
        max_unacked_per_channel: c.max_unacked_per_channel.get(),
        consumer_timeout: server.consumer_timeout,
        recv_buffer: server.tcp_recv_buffer,
    }
}

async fn bind(protocol: &str, addr: SocketAddr) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {protocol} on {addr}"))?;
    let local = listener
        .local_addr()
        .with_context(|| format!("cannot read the {protocol} listener's address"))?;
    Ok((listener, local))
}

/// Write `PROTOCOL=ADDR` lines to a temporary file beside `path`, then
/// rename it over `path`, so a reader sees either no file or all of it.
fn write_ready_file(path: &Path, bound: &[(&str, SocketAddr)]) -> std::io::Result<()> {
    let mut text = String::new();
    for (protocol, addr) in bound {
        // Writing to a String cannot fail.
        let _ = writeln!(text, "{protocol}={addr}");
    }
    let Some(name) = path.file_name() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path does not name a file",
        ));
    };
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Remove a ready file left by an earlier run or announcing this one.
fn remove_ready_file(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(path = %path.display(), "cannot remove ready file: {e}"),
    }
}

/// Drop the last reference to the store, which commits what is queued and
/// joins its writer thread.
fn close_store(store: Arc<RedbStore>) {
    match Arc::try_unwrap(store) {
        Ok(store) => drop(store),
        Err(store) => {
            // Only a task the runtime failed to drop can still hold it.
            store.flush();
            warn!("store still referenced at exit; flushed but not closed");
        }
    }
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere than Unix).
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    #[cfg(not(unix))]
    fn new() -> std::io::Result<Self> {
        Ok(Self {})
    }

    /// The next signal's name.
    #[cfg(unix)]
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }

    #[cfg(not(unix))]
    async fn recv(&mut self) -> &'static str {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            Err(_) => std::future::pending().await,
        }
    }
}

/// The STOMP listeners' settings: the `[stomp]` section and the server's
/// consumer timeout.
fn stomp_config(config: &Config) -> switchyard_stomp::StompConfig {
    let mut c = config.stomp.protocol();
    c.consumer_timeout = config.server.consumer_timeout;
    c.recv_buffer = config.server.tcp_recv_buffer;
    c
}

fn mqtt_config(config: &Config) -> switchyard_mqtt::MqttConfig {
    let mut c = config.mqtt.protocol();
    c.recv_buffer = config.server.tcp_recv_buffer;
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_file_lists_every_listener() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ready");
        std::fs::write(&path, "stale").expect("write");
        let addr = SocketAddr::from(([127, 0, 0, 1], 5672));
        write_ready_file(&path, &[("amqp", addr)]).expect("written");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "amqp=127.0.0.1:5672\n"
        );
        // Only the ready file is left: the temporary file was renamed.
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
        remove_ready_file(&path);
        assert!(!path.exists());
        remove_ready_file(&path);
    }

    #[test]
    fn ready_file_needs_a_file_name() {
        assert!(write_ready_file(Path::new("/"), &[]).is_err());
    }
}
