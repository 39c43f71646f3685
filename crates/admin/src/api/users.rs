//! Vhosts, users, permissions, topic permissions and policies.

use super::overview::NODE;
use super::{created, no_content};
use crate::Admin;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::{JsonBody, ListQuery, object_to_table, rate, require_keys, table_to_json, text};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde_json::{Value, json};
use std::sync::Arc;
use switchyard_access::{ChangeError, PasswordSpec, Permission, TopicPermission, User, parse_tags};
use switchyard_engine::policy::{ApplyTo, Policy};

// ---------------------------------------------------------------------------
// Vhosts

/// State namespace of vhost descriptions: key = vhost, value = JSON
/// `{"description", "tags"}`.
const NS_VHOST_META: &str = "admin.vhost_meta";

/// Vhosts' descriptions and tags (the engine keeps only names).
#[derive(Debug, Default)]
pub(crate) struct VhostMeta {
    all: parking_lot::Mutex<std::collections::BTreeMap<String, (String, Vec<String>)>>,
}

impl VhostMeta {
    /// The descriptions recovered from the store (taken once).
    pub(crate) fn recover(broker: &switchyard_engine::Broker) -> Self {
        let meta = Self::default();
        for (key, value) in broker.take_state(NS_VHOST_META) {
            if let Ok(v) = serde_json::from_slice::<Value>(&value) {
                let description = text(&v, "description").unwrap_or_default().to_owned();
                let tags = v.get("tags").and_then(parse_tags).unwrap_or_default();
                meta.all.lock().insert(key, (description, tags));
            }
        }
        meta
    }

    pub(crate) fn get(&self, vhost: &str) -> (String, Vec<String>) {
        self.all.lock().get(vhost).cloned().unwrap_or_else(|| {
            let default = if vhost == switchyard_engine::DEFAULT_VHOST {
                "Default virtual host"
            } else {
                ""
            };
            (default.to_owned(), Vec::new())
        })
    }

    pub(crate) fn set(
        &self,
        broker: &switchyard_engine::Broker,
        vhost: &str,
        description: String,
        tags: Vec<String>,
    ) {
        let json = json!({"description": description, "tags": tags});
        broker.put_state(NS_VHOST_META, vhost, Some(json.to_string().into_bytes()));
        self.all
            .lock()
            .insert(vhost.to_owned(), (description, tags));
    }

    fn forget(&self, broker: &switchyard_engine::Broker, vhost: &str) {
        if self.all.lock().remove(vhost).is_some() {
            broker.put_state(NS_VHOST_META, vhost, None);
        }
    }
}

fn vhost_json(admin: &Admin, name: &str) -> Value {
    let (description, tags) = admin.vhost_meta.get(name);
    let (mut ready, mut unacked) = (0u64, 0u64);
    if let Some(v) = admin.broker.vhost(name) {
        for q in v.queues() {
            let (r, u, _) = q.tallies();
            ready += r;
            unacked += u;
        }
    }
    json!({
        "name": name,
        "description": description,
        "tags": tags,
        "metadata": {"description": description, "tags": tags},
        "default_queue_type": "classic",
        "tracing": false,
        "cluster_state": {NODE: "running"},
        "messages": ready + unacked,
        "messages_details": rate(0.0),
        "messages_ready": ready,
        "messages_ready_details": rate(0.0),
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": rate(0.0),
    })
}

pub(crate) async fn vhosts(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let items = admin
        .broker
        .vhosts()
        .iter()
        .filter(|v| caller.may_see(&v.name))
        .map(|v| vhost_json(&admin, &v.name))
        .collect();
    Ok(Json(q.respond(items)?))
}

pub(crate) async fn vhost(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    if !caller.may_see(&name) {
        return Err(ApiError::not_authorised("Not administrator user"));
    }
    admin.broker.vhost(&name).ok_or_else(ApiError::not_found)?;
    Ok(Json(vhost_json(&admin, &name)))
}

pub(crate) async fn put_vhost(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if name.is_empty() {
        return Err(ApiError::bad_request("a vhost needs a name"));
    }
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|_| ApiError::bad_request("not_json"))?
    };
    let new = admin.broker.vhost(&name).is_none();
    admin.broker.add_vhost(&name);
    if body.get("description").is_some() || body.get("tags").is_some() || new {
        let (old_description, old_tags) = admin.vhost_meta.get(&name);
        let description = text(&body, "description").map_or(old_description, str::to_owned);
        let tags = match body.get("tags") {
            Some(t) => parse_tags(t)
                .ok_or_else(|| ApiError::bad_request("tags must be a string or a list"))?,
            None => old_tags,
        };
        admin
            .vhost_meta
            .set(&admin.broker, &name, description, tags);
    }
    if new {
        // As RabbitMQ: the creating user gets every permission there.
        let _ = admin.access.set_permission(Permission {
            user: caller.id.user,
            vhost: name,
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        });
    }
    Ok(created(new))
}

pub(crate) async fn delete_vhost(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if name == switchyard_engine::DEFAULT_VHOST {
        // The broker recreates it at every start; a deletion that comes
        // back after a restart would surprise more than a refusal.
        return Err(ApiError::bad_request(
            "the default vhost '/' cannot be deleted",
        ));
    }
    close_connections(&admin, |c| c.vhost() == name, "vhost deleted");
    if !admin.broker.delete_vhost(&name) {
        return Err(ApiError::not_found());
    }
    for p in admin.broker.policies().list() {
        if p.vhost == name {
            admin.broker.clear_policy(&name, &p.name);
        }
    }
    admin.access.forget_vhost(&name);
    admin.vhost_meta.forget(&admin.broker, &name);
    Ok(no_content())
}

pub(crate) async fn vhost_permissions(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    admin.broker.vhost(&name).ok_or_else(ApiError::not_found)?;
    Ok(permissions_where(&admin, |p| p.vhost == name))
}

/// Every permission `which` keeps.
fn permissions_where(admin: &Admin, which: impl Fn(&Permission) -> bool) -> Json<Value> {
    Json(Value::Array(
        admin
            .access
            .permissions()
            .iter()
            .filter(|p| which(p))
            .map(permission_json)
            .collect(),
    ))
}

// ---------------------------------------------------------------------------
// Users

/// Closes every connection `which` selects, telling its client `why`.
fn close_connections(
    admin: &Admin,
    which: impl Fn(&switchyard_engine::connections::ConnectionEntry) -> bool,
    why: &str,
) {
    for c in admin.broker.connections().list() {
        if which(&c) {
            c.kill.kill(why);
        }
    }
}

pub(crate) fn user_json(u: &User) -> Value {
    json!({
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": u.hashing_algorithm,
        "tags": u.tags,
        "limits": {},
    })
}

pub(crate) async fn users(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let items = admin.access.users().iter().map(user_json).collect();
    Ok(Json(q.respond(items)?))
}

pub(crate) async fn user(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    admin
        .access
        .user(&name)
        .map(|u| Json(user_json(&u)))
        .ok_or_else(ApiError::not_found)
}

/// How a user body gives its password.
pub(crate) fn password_of(body: &Value) -> ApiResult<PasswordSpec> {
    if let Some(p) = text(body, "password") {
        return Ok(PasswordSpec::Clear(p.to_owned()));
    }
    if let Some(h) = text(body, "password_hash") {
        if h.is_empty() {
            return Ok(PasswordSpec::None);
        }
        let algorithm = text(body, "hashing_algorithm")
            .unwrap_or(switchyard_access::password::RABBIT_SHA256)
            .to_owned();
        return Ok(PasswordSpec::Hash {
            hash: h.to_owned(),
            algorithm,
        });
    }
    Ok(PasswordSpec::Keep)
}

fn change_error(e: ChangeError) -> ApiError {
    match e {
        ChangeError::NoUser(_) => ApiError::bad_request("vhost_or_user_not_found"),
        other => ApiError::bad_request(other.to_string()),
    }
}

pub(crate) async fn put_user(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let password = password_of(&body)?;
    let tags_given = body.get("tags");
    if matches!(password, PasswordSpec::Keep) && tags_given.is_none() {
        return Err(ApiError::bad_request(
            "[{key_missing,password_hash},{key_missing,password}]",
        ));
    }
    let tags = match tags_given {
        Some(t) => {
            parse_tags(t).ok_or_else(|| ApiError::bad_request("tags must be a string or a list"))?
        }
        None => admin.access.user(&name).map(|u| u.tags).unwrap_or_default(),
    };
    let new = admin
        .access
        .put_user(&name, password, tags)
        .map_err(change_error)?;
    Ok(created(new))
}

pub(crate) async fn delete_user(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if !admin.access.delete_user(&name) {
        return Err(ApiError::not_found());
    }
    // As RabbitMQ: the deleted user's connections are closed.
    close_connections(&admin, |c| c.user() == name, "user deleted");
    Ok(no_content())
}

pub(crate) async fn user_permissions(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    admin.access.user(&name).ok_or_else(ApiError::not_found)?;
    Ok(permissions_where(&admin, |p| p.user == name))
}

// ---------------------------------------------------------------------------
// Permissions

pub(crate) fn permission_json(p: &Permission) -> Value {
    json!({"user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read})
}

/// A permission of `user` in `vhost` from a body's string fields (an API
/// request, or a definitions file's entry).
pub(crate) fn permission_from(body: &Value, vhost: String, user: String) -> Permission {
    let field = |k: &str| text(body, k).unwrap_or_default().to_owned();
    Permission {
        user,
        vhost,
        configure: field("configure"),
        write: field("write"),
        read: field("read"),
    }
}

/// A topic permission of `user` in `vhost` from a body's string fields.
pub(crate) fn topic_permission_from(body: &Value, vhost: String, user: String) -> TopicPermission {
    let field = |k: &str| text(body, k).unwrap_or_default().to_owned();
    TopicPermission {
        user,
        vhost,
        exchange: field("exchange"),
        write: field("write"),
        read: field("read"),
    }
}

pub(crate) fn topic_json(p: &TopicPermission) -> Value {
    json!({"user": p.user, "vhost": p.vhost, "exchange": p.exchange, "write": p.write, "read": p.read})
}

pub(crate) async fn permissions(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(Value::Array(
        admin
            .access
            .permissions()
            .iter()
            .map(permission_json)
            .collect(),
    )))
}

pub(crate) async fn permission(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    admin
        .access
        .permission(&vhost, &user)
        .map(|p| Json(permission_json(&p)))
        .ok_or_else(ApiError::not_found)
}

pub(crate) async fn put_permission(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    caller.require_admin()?;
    require_keys(&body, &["configure", "write", "read"], Value::is_string)?;
    if admin.broker.vhost(&vhost).is_none() || admin.access.user(&user).is_none() {
        return Err(ApiError::bad_request("vhost_or_user_not_found"));
    }
    let new = admin
        .access
        .set_permission(permission_from(&body, vhost, user))
        .map_err(change_error)?;
    Ok(created(new))
}

pub(crate) async fn delete_permission(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if !admin.access.clear_permission(&vhost, &user) {
        return Err(ApiError::not_found());
    }
    close_connections(
        &admin,
        |c| c.user() == user && c.vhost() == vhost,
        "access to the vhost revoked",
    );
    Ok(no_content())
}

pub(crate) async fn topic_permissions(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(Value::Array(
        admin
            .access
            .topic_permissions()
            .iter()
            .map(topic_json)
            .collect(),
    )))
}

pub(crate) async fn topic_permission(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let items: Vec<Value> = admin
        .access
        .topic_permissions()
        .iter()
        .filter(|p| p.vhost == vhost && p.user == user)
        .map(topic_json)
        .collect();
    if items.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(Json(Value::Array(items)))
}

pub(crate) async fn put_topic_permission(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    caller.require_admin()?;
    require_keys(&body, &["exchange", "write", "read"], Value::is_string)?;
    if admin.broker.vhost(&vhost).is_none() || admin.access.user(&user).is_none() {
        return Err(ApiError::bad_request("vhost_or_user_not_found"));
    }
    let new = admin
        .access
        .set_topic_permission(topic_permission_from(&body, vhost, user))
        .map_err(change_error)?;
    Ok(created(new))
}

pub(crate) async fn delete_topic_permission(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let exchange = params.get("exchange").map(String::as_str);
    if admin
        .access
        .clear_topic_permissions(&vhost, &user, exchange)
        > 0
    {
        Ok(no_content())
    } else {
        Err(ApiError::not_found())
    }
}

// ---------------------------------------------------------------------------
// Policies

pub(crate) fn policy_json(p: &Policy) -> Value {
    json!({
        "vhost": p.vhost,
        "name": p.name,
        "pattern": p.pattern,
        "apply-to": p.apply_to.as_str(),
        "definition": table_to_json(&p.definition),
        "priority": p.priority,
    })
}

/// A policy from its API body (also a definitions file's entry).
pub(crate) fn policy_from(vhost: &str, name: &str, body: &Value) -> ApiResult<Policy> {
    require_keys(body, &["pattern", "definition"], |_| true)?;
    let pattern = text(body, "pattern")
        .ok_or_else(|| ApiError::bad_request("pattern must be a string"))?
        .to_owned();
    let definition = match body.get("definition") {
        Some(Value::Object(o)) => object_to_table(o),
        _ => return Err(ApiError::bad_request("definition must be an object")),
    };
    let apply_to = match text(body, "apply-to") {
        None => ApplyTo::All,
        Some(s) => ApplyTo::parse(s)
            .ok_or_else(|| ApiError::bad_request(format!("'{s}' is not a valid apply-to value")))?,
    };
    let priority = match body.get("priority") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("priority must be an integer"))?,
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| ApiError::bad_request("priority must be an integer"))?,
        Some(_) => return Err(ApiError::bad_request("priority must be an integer")),
    };
    Ok(Policy {
        vhost: vhost.to_owned(),
        name: name.to_owned(),
        pattern,
        apply_to,
        priority,
        definition,
    })
}

pub(crate) async fn policies(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    let items = admin
        .broker
        .policies()
        .list()
        .iter()
        .filter(|p| caller.may_see(&p.vhost))
        .map(policy_json)
        .collect();
    Ok(Json(Value::Array(items)))
}

pub(crate) async fn policies_in(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_read(&vhost)?;
    admin.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    let items = admin
        .broker
        .policies()
        .list()
        .iter()
        .filter(|p| p.vhost == vhost)
        .map(policy_json)
        .collect();
    Ok(Json(Value::Array(items)))
}

pub(crate) async fn policy(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_read(&vhost)?;
    admin
        .broker
        .policies()
        .get(&vhost, &name)
        .map(|p| Json(policy_json(&p)))
        .ok_or_else(ApiError::not_found)
}

pub(crate) async fn put_policy(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    if admin.broker.vhost(&vhost).is_none() {
        return Err(ApiError::not_found_because("vhost_not_found"));
    }
    caller.require_policymaker(&vhost)?;
    let policy = policy_from(&vhost, &name, &body)?;
    let new = admin.broker.set_policy(policy)?;
    Ok(created(new))
}

pub(crate) async fn delete_policy(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_policymaker(&vhost)?;
    if admin.broker.clear_policy(&vhost, &name) {
        Ok(no_content())
    } else {
        Err(ApiError::not_found())
    }
}
