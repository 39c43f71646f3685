//! The operator's side of the broker: the management HTTP API (the paths,
//! methods, JSON field names and status codes of RabbitMQ's, for the
//! subset in `docs/management.md`), the web UI it serves (assets embedded
//! in the binary), and the Prometheus metrics endpoint.
//!
//! Everything is read from the engine's registries and counters (atomics
//! the message path bumps anyway) and changed through the same engine
//! calls the protocols use; rates come from [`stats`], which samples the
//! counters every few seconds.

mod api;
mod auth;
mod error;
mod json;
mod metrics;
mod stats;
mod ui;

pub use error::ApiError;

use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;
use switchyard_access::Access;
use switchyard_engine::Broker;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the API serves from.
#[derive(Debug)]
pub struct Admin {
    /// The broker.
    pub broker: Arc<Broker>,
    /// Its users and permissions.
    pub access: Arc<Access>,
    /// Message and byte rates.
    rates: Arc<stats::Rates>,
    /// When the broker started.
    started: SystemTime,
    /// Every listener, as `(protocol, address)`, for the overview.
    listeners: Vec<(String, SocketAddr)>,
    /// Vhosts' descriptions and tags.
    vhost_meta: api::VhostMeta,
    /// The store's directory (disk space is reported for it).
    data_dir: std::path::PathBuf,
}

impl Admin {
    /// The API's state over `broker` and `access`; `listeners` are shown
    /// in the overview (`("amqp", addr)`, ...).
    #[must_use]
    /// Call once, after [`Broker::open`]: it takes the vhost descriptions
    /// recovered from the store.
    pub fn new(
        broker: Arc<Broker>,
        access: Arc<Access>,
        listeners: Vec<(String, SocketAddr)>,
        data_dir: std::path::PathBuf,
    ) -> Arc<Self> {
        let vhost_meta = api::VhostMeta::recover(&broker);
        Arc::new(Self {
            broker,
            access,
            rates: Arc::default(),
            started: SystemTime::now(),
            listeners,
            vhost_meta,
            data_dir,
        })
    }
}

/// The management API and web UI.
pub fn management_router(admin: Arc<Admin>) -> Router {
    api::router()
        .layer(axum::middleware::from_fn_with_state(admin.clone(), durable))
        .merge(ui::router())
        .with_state(admin)
}

/// A request that may change something is answered once what it wrote is
/// on disk: a user, permission, policy or durable queue the API said it
/// made survives a crash right after.
async fn durable(
    axum::extract::State(admin): axum::extract::State<Arc<Admin>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let changes = request.method() != axum::http::Method::GET;
    let response = next.run(request).await;
    if changes {
        let _ = admin.broker.barrier().await;
    }
    response
}

/// Serves the management API and web UI on `listener` until `shutdown`;
/// samples rates meanwhile.
pub async fn serve_management(
    listener: TcpListener,
    admin: Arc<Admin>,
    shutdown: CancellationToken,
) {
    let sampler = tokio::spawn(stats::run(
        admin.broker.clone(),
        admin.rates.clone(),
        shutdown.clone(),
    ));
    let app = management_router(admin).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "management listener failed");
    }
    sampler.abort();
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve_prometheus(
    listener: TcpListener,
    admin: Arc<Admin>,
    shutdown: CancellationToken,
) {
    let app = metrics::router().with_state(admin);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "prometheus listener failed");
    }
}
