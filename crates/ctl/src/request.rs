//! What each command sends: HTTP method, path and JSON body, decided without
//! any I/O so it can be tested without a server.
//!
//! [`plan`] turns a parsed [`Command`] into a [`Plan`]: usually one
//! [`Request`] plus how to show its reply; `unbind`, `export` and `import`
//! need a step around the request (a lookup, a file), which the plan names
//! and [`crate::exec`] carries out.

use crate::cli::{BindArgs, Command, Declare, Delete, DestinationType, Kind, Props};
use crate::path::api;
use serde_json::{Map, Value, json};
use std::path::PathBuf;

/// HTTP methods the management API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Put,
    Post,
    Delete,
}

impl Method {
    /// The method's name on the wire.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Put => "PUT",
            Self::Post => "POST",
            Self::Delete => "DELETE",
        }
    }
}

/// One management API request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Request {
    pub(crate) method: Method,
    /// Path from the API root, segments already percent-encoded (`/api/...`).
    pub(crate) path: String,
    /// JSON body, if the request has one.
    pub(crate) body: Option<Value>,
    /// `X-Reason` header: the reason a closed connection is given.
    pub(crate) reason: Option<String>,
}

impl Request {
    fn new(method: Method, path: String) -> Self {
        Self {
            method,
            path,
            body: None,
            reason: None,
        }
    }

    fn get(path: String) -> Self {
        Self::new(Method::Get, path)
    }

    fn delete(path: String) -> Self {
        Self::new(Method::Delete, path)
    }

    fn put(path: String, body: Value) -> Self {
        Self {
            body: Some(body),
            ..Self::new(Method::Put, path)
        }
    }

    fn post(path: String, body: Value) -> Self {
        Self {
            body: Some(body),
            ..Self::new(Method::Post, path)
        }
    }
}

/// How a successful reply is shown (in table format; JSON format prints the
/// reply body as it is, if there is one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Show {
    /// A listing of this kind, as a table.
    Listing(Kind),
    /// `get`'s messages, as a table.
    Messages,
    /// `publish`'s `{"routed": bool}`, as a sentence.
    Routed,
    /// A fixed confirmation such as `queue declared`.
    Done(&'static str),
}

/// Everything a command does, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Plan {
    /// Send one request; show the reply.
    Send(Request, Show),
    /// `unbind`: GET `list` (the bindings from `source` to `destination`),
    /// then DELETE the one whose routing key and arguments are these, by its
    /// `properties_key` ([`find_binding`], [`unbind`]).
    Unbind {
        list: Request,
        source: String,
        destination: String,
        routing_key: String,
        arguments: Map<String, Value>,
    },
    /// `export`: send the request, write the reply to `file` (`-`: stdout).
    Export(Request, PathBuf),
    /// `import`: read `file` (`-`: stdin), POST it with [`import`].
    Import(PathBuf),
}

/// The plan for `command`, with `vhost` as the vhost of the objects it names.
pub(crate) fn plan(command: &Command, vhost: &str) -> Plan {
    use Plan::Send;
    match command {
        Command::List { kind } => Send(Request::get(list_path(*kind, vhost)), Show::Listing(*kind)),
        Command::Declare(Declare::Queue { name, props }) => Send(
            Request::put(api(&["queues", vhost, name]), props_body(props, Map::new())),
            Show::Done("queue declared"),
        ),
        Command::Declare(Declare::Exchange { name, kind, props }) => {
            let mut extra = Map::new();
            extra.insert("type".into(), json!(kind));
            extra.insert("internal".into(), json!(false));
            Send(
                Request::put(api(&["exchanges", vhost, name]), props_body(props, extra)),
                Show::Done("exchange declared"),
            )
        }
        Command::Delete(Delete::Queue { name }) => Send(
            Request::delete(api(&["queues", vhost, name])),
            Show::Done("queue deleted"),
        ),
        Command::Delete(Delete::Exchange { name }) => Send(
            Request::delete(api(&["exchanges", vhost, name])),
            Show::Done("exchange deleted"),
        ),
        Command::Bind(b) => Send(
            Request::post(
                bindings_path(b, vhost),
                json!({"routing_key": b.routing_key, "arguments": arguments(&b.args)}),
            ),
            Show::Done("binding created"),
        ),
        Command::Unbind(b) => Plan::Unbind {
            list: Request::get(bindings_path(b, vhost)),
            source: b.source.clone(),
            destination: b.destination.clone(),
            routing_key: b.routing_key.clone(),
            arguments: arguments(&b.args),
        },
        Command::Purge { queue } => Send(
            Request::delete(api(&["queues", vhost, queue, "contents"])),
            Show::Done("queue purged"),
        ),
        Command::AddUser {
            name,
            new_password,
            tags,
        } => Send(
            Request::put(
                api(&["users", name]),
                json!({"password": new_password, "tags": tags}),
            ),
            Show::Done("user created"),
        ),
        Command::DeleteUser { name } => Send(
            Request::delete(api(&["users", name])),
            Show::Done("user deleted"),
        ),
        Command::SetPermissions {
            username,
            configure,
            write,
            read,
        } => Send(
            Request::put(
                api(&["permissions", vhost, username]),
                json!({"configure": configure, "write": write, "read": read}),
            ),
            Show::Done("permissions set"),
        ),
        Command::SetPolicy {
            name,
            pattern,
            definition,
            apply_to,
            priority,
        } => Send(
            Request::put(
                api(&["policies", vhost, name]),
                json!({
                    "pattern": pattern,
                    "definition": definition,
                    "apply-to": apply_to.as_str(),
                    "priority": priority,
                }),
            ),
            Show::Done("policy set"),
        ),
        Command::ClearPolicy { name } => Send(
            Request::delete(api(&["policies", vhost, name])),
            Show::Done("policy cleared"),
        ),
        Command::Export { file } => Plan::Export(Request::get(api(&["definitions"])), file.clone()),
        Command::Import { file } => Plan::Import(file.clone()),
        Command::CloseConnection { name, reason } => Send(
            Request {
                reason: reason.clone(),
                ..Request::delete(api(&["connections", name]))
            },
            Show::Done("connection closed"),
        ),
        Command::Publish {
            exchange,
            routing_key,
            payload,
        } => {
            // The API names the default exchange `amq.default`.
            let exchange = if exchange.is_empty() {
                "amq.default"
            } else {
                exchange
            };
            Send(
                Request::post(
                    api(&["exchanges", vhost, exchange, "publish"]),
                    json!({
                        "properties": {},
                        "routing_key": routing_key,
                        "payload": payload,
                        "payload_encoding": "string",
                    }),
                ),
                Show::Routed,
            )
        }
        Command::Get {
            queue,
            count,
            requeue,
        } => Send(
            Request::post(
                api(&["queues", vhost, queue, "get"]),
                json!({
                    "count": count,
                    "ackmode": if *requeue { "ack_requeue_true" } else { "ack_requeue_false" },
                    "encoding": "auto",
                    "truncate": 50_000,
                }),
            ),
            Show::Messages,
        ),
    }
}

/// `import`'s request, once the file has been read and parsed.
pub(crate) fn import(definitions: Value) -> Request {
    Request::post(api(&["definitions"]), definitions)
}

/// `unbind`'s second step: the `properties_key` of the binding in `listing`
/// (the reply to the plan's `list`) with exactly this routing key and these
/// arguments (absent arguments count as none), or `None`.
pub(crate) fn find_binding<'a>(
    listing: &'a Value,
    routing_key: &str,
    arguments: &Map<String, Value>,
) -> Option<&'a str> {
    let empty = Map::new();
    listing.as_array()?.iter().find_map(|b| {
        let args = b
            .get("arguments")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let same =
            b.get("routing_key").and_then(Value::as_str) == Some(routing_key) && args == arguments;
        if same {
            b.get("properties_key").and_then(Value::as_str)
        } else {
            None
        }
    })
}

/// `unbind`'s DELETE, below the listing's path.
pub(crate) fn unbind(list: &Request, properties_key: &str) -> Request {
    Request::delete(format!(
        "{}/{}",
        list.path,
        crate::path::segment(properties_key)
    ))
}

/// Where `list KIND` reads: vhost-scoped kinds in `vhost`, as rabbitmqctl's
/// `-p`; connections, channels, users and vhosts are global.
fn list_path(kind: Kind, vhost: &str) -> String {
    match kind {
        Kind::Queues => api(&["queues", vhost]),
        Kind::Exchanges => api(&["exchanges", vhost]),
        Kind::Bindings => api(&["bindings", vhost]),
        Kind::Consumers => api(&["consumers", vhost]),
        Kind::Policies => api(&["policies", vhost]),
        Kind::Permissions => api(&["vhosts", vhost, "permissions"]),
        Kind::Connections => api(&["connections"]),
        Kind::Channels => api(&["channels"]),
        Kind::Users => api(&["users"]),
        Kind::Vhosts => api(&["vhosts"]),
    }
}

/// `/api/bindings/{vhost}/e/{source}/{q|e}/{destination}`.
fn bindings_path(b: &BindArgs, vhost: &str) -> String {
    let kind = match b.destination_type {
        DestinationType::Queue => "q",
        DestinationType::Exchange => "e",
    };
    api(&["bindings", vhost, "e", &b.source, kind, &b.destination])
}

/// `durable`, `auto_delete` and `arguments`, plus `extra` fields.
fn props_body(props: &Props, mut extra: Map<String, Value>) -> Value {
    extra.insert("durable".into(), json!(props.durable));
    extra.insert("auto_delete".into(), json!(props.auto_delete));
    extra.insert("arguments".into(), Value::Object(arguments(&props.args)));
    Value::Object(extra)
}

/// `--arg` pairs as a JSON object (a repeated key: the last one wins).
fn arguments(args: &[(String, Value)]) -> Map<String, Value> {
    args.iter().cloned().collect()
}

#[cfg(test)]
mod tests;
