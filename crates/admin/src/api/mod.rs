//! The `/api` routes, one module per kind of object.

mod connections;
mod definitions;
mod overview;
mod queues;
mod route;
mod topology;
mod users;

pub(crate) use connections::channel_count;
pub(crate) use users::VhostMeta;

use crate::Admin;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use std::sync::Arc;

/// Every `/api` route.
pub(crate) fn router() -> Router<Arc<Admin>> {
    Router::new()
        .route("/api/overview", get(overview::overview))
        .route("/api/whoami", get(overview::whoami))
        .route("/api/nodes", get(overview::nodes))
        .route("/api/healthchecks/node", get(overview::healthcheck))
        .route("/api/health/checks/alarms", get(overview::healthcheck))
        .route(
            "/api/health/checks/virtual-hosts",
            get(overview::healthcheck),
        )
        .route("/api/aliveness-test/{vhost}", get(overview::aliveness))
        .route("/api/vhosts", get(users::vhosts))
        .route(
            "/api/vhosts/{vhost}",
            get(users::vhost)
                .put(users::put_vhost)
                .delete(users::delete_vhost),
        )
        .route(
            "/api/vhosts/{vhost}/permissions",
            get(users::vhost_permissions),
        )
        .route("/api/users", get(users::users))
        .route(
            "/api/users/{user}",
            get(users::user)
                .put(users::put_user)
                .delete(users::delete_user),
        )
        .route(
            "/api/users/{user}/permissions",
            get(users::user_permissions),
        )
        .route("/api/permissions", get(users::permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(users::permission)
                .put(users::put_permission)
                .delete(users::delete_permission),
        )
        .route("/api/topic-permissions", get(users::topic_permissions))
        .route(
            "/api/topic-permissions/{vhost}/{user}",
            get(users::topic_permission)
                .put(users::put_topic_permission)
                .delete(users::delete_topic_permission),
        )
        .route("/api/exchanges", get(topology::exchanges))
        .route("/api/exchanges/{vhost}", get(topology::exchanges_in))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(topology::exchange)
                .put(topology::put_exchange)
                .delete(topology::delete_exchange),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(topology::exchange_bindings_source),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(topology::exchange_bindings_destination),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/publish",
            post(topology::publish),
        )
        .route("/api/queues", get(topology::queues))
        .route("/api/queues/{vhost}", get(topology::queues_in))
        .route(
            "/api/queues/{vhost}/{name}",
            get(topology::queue)
                .put(topology::put_queue)
                .delete(topology::delete_queue),
        )
        .route(
            "/api/queues/{vhost}/{name}/bindings",
            get(topology::queue_bindings),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            axum::routing::delete(topology::purge),
        )
        .route(
            "/api/queues/{vhost}/{name}/get",
            post(topology::get_messages),
        )
        .route("/api/bindings", get(topology::bindings))
        .route("/api/bindings/{vhost}", get(topology::bindings_in))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            get(topology::bindings_between).post(topology::bind),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            get(topology::binding).delete(topology::unbind),
        )
        .route("/api/connections", get(connections::connections))
        .route(
            "/api/connections/{name}",
            get(connections::connection).delete(connections::close),
        )
        .route(
            "/api/connections/{name}/channels",
            get(connections::connection_channels),
        )
        .route(
            "/api/vhosts/{vhost}/connections",
            get(connections::vhost_connections),
        )
        .route("/api/channels", get(connections::channels))
        .route("/api/consumers", get(connections::consumers))
        .route("/api/consumers/{vhost}", get(connections::consumers_in))
        .route(
            "/api/definitions",
            get(definitions::export).post(definitions::import),
        )
        .route(
            "/api/definitions/{vhost}",
            get(definitions::export_vhost).post(definitions::import_vhost),
        )
        .route("/api/policies", get(users::policies))
        .route("/api/policies/{vhost}", get(users::policies_in))
        .route(
            "/api/policies/{vhost}/{name}",
            get(users::policy)
                .put(users::put_policy)
                .delete(users::delete_policy),
        )
        .route("/api/switchyard/route", post(route::trace))
        .route(
            "/api/{*rest}",
            put(not_found)
                .get(not_found)
                .post(not_found)
                .delete(not_found),
        )
}

/// 201 Created (new) or 204 No Content (updated), with no body.
pub(crate) fn created(new: bool) -> Response {
    if new {
        StatusCode::CREATED.into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

/// 204 No Content.
pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

async fn not_found() -> crate::ApiError {
    crate::ApiError::not_found()
}
