//! The command line of `switchyard ctl`: global options and one subcommand
//! per operation, named after rabbitmqadmin's and rabbitmqctl's.
//!
//! Only declares and parses; what a command sends is decided in
//! [`crate::request`]. Values that cannot be valid (a non-object policy
//! definition, `--arg` without `=`, a non-`http://` URL) are rejected here, so
//! they are usage errors (exit code 2) like any other clap error; so are
//! empty names, which would turn a path into a listing's (`/api/users/`).

use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// Options that apply to every command; they may come before or after it.
#[derive(Debug, Clone, Args)]
pub(crate) struct GlobalArgs {
    /// Base URL of the management API (plain HTTP).
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_CTL_URL",
        default_value = "http://127.0.0.1:15672",
        value_parser = parse_url
    )]
    pub(crate) url: String,

    /// User name for HTTP basic authentication.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_CTL_USER",
        default_value = "guest"
    )]
    pub(crate) user: String,

    /// Password for HTTP basic authentication.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_CTL_PASSWORD",
        default_value = "guest",
        hide_env_values = true
    )]
    pub(crate) password: String,

    /// Virtual host of the objects a command names or lists.
    #[arg(long, global = true, env = "SWITCHYARD_CTL_VHOST", default_value = "/")]
    pub(crate) vhost: String,

    /// Output: aligned tables and short messages, or the server's JSON.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,

    /// Give up on a request after this many seconds (exit code 3).
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_CTL_TIMEOUT",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "SECS"
    )]
    pub(crate) timeout: u64,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns with a header line.
    Table,
    /// The server's JSON, pretty-printed.
    Json,
}

/// One operation on the broker.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum Command {
    /// List objects of one kind (in --vhost for vhost-scoped kinds).
    List {
        #[arg(value_enum)]
        kind: Kind,
    },
    /// Declare a queue or an exchange.
    #[command(subcommand)]
    Declare(Declare),
    /// Delete a queue or an exchange.
    #[command(subcommand)]
    Delete(Delete),
    /// Bind a queue or exchange to a source exchange.
    Bind(BindArgs),
    /// Remove a binding (the one with exactly this routing key and arguments).
    Unbind(BindArgs),
    /// Remove every ready message from a queue.
    Purge {
        /// Queue name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        queue: String,
    },
    /// Create a user, or replace its password and tags.
    AddUser {
        /// User name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        name: String,
        /// Password. (Field names must not repeat a global option's: clap
        /// would merge the two.)
        #[arg(value_name = "PASSWORD")]
        new_password: String,
        /// Comma-separated tags, e.g. administrator,management.
        #[arg(long, default_value = "")]
        tags: String,
    },
    /// Delete a user.
    DeleteUser {
        /// User name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        name: String,
    },
    /// Grant a user permissions in --vhost (regular expressions on names).
    SetPermissions {
        /// User name.
        #[arg(value_parser = NonEmptyStringValueParser::new(), value_name = "USER")]
        username: String,
        /// Names the user may declare and delete.
        #[arg(long, default_value = ".*")]
        configure: String,
        /// Names the user may publish to.
        #[arg(long, default_value = ".*")]
        write: String,
        /// Names the user may consume from.
        #[arg(long, default_value = ".*")]
        read: String,
    },
    /// Create or replace a policy in --vhost.
    SetPolicy {
        /// Policy name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        name: String,
        /// Regular expression on queue/exchange names.
        pattern: String,
        /// The definition, a JSON object, e.g. '{"max-length":100}'.
        #[arg(value_parser = parse_json_object)]
        definition: Map<String, Value>,
        /// Which objects the policy applies to.
        #[arg(long, value_enum, default_value_t = ApplyTo::All)]
        apply_to: ApplyTo,
        /// The policy with the highest priority wins.
        #[arg(long, default_value_t = 0)]
        priority: i64,
    },
    /// Delete a policy in --vhost.
    ClearPolicy {
        /// Policy name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        name: String,
    },
    /// Write the broker's definitions (users, vhosts, queues, ...) as JSON.
    Export {
        /// Output file, `-` for stdout.
        file: PathBuf,
    },
    /// Load definitions from a JSON file written by `export`.
    Import {
        /// Input file, `-` for stdin.
        file: PathBuf,
    },
    /// Close a client connection (names as `list connections` shows them).
    CloseConnection {
        /// Connection name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        name: String,
        /// Reason given to the client.
        #[arg(long, value_parser = parse_reason)]
        reason: Option<String>,
    },
    /// Publish one message (a UTF-8 string payload) through an exchange.
    Publish {
        /// Exchange; the default exchange when omitted.
        #[arg(long, default_value = "")]
        exchange: String,
        /// Routing key.
        #[arg(long)]
        routing_key: String,
        /// Message body.
        payload: String,
    },
    /// Fetch messages from a queue (acknowledged, so removed, unless --requeue).
    Get {
        /// Queue name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        queue: String,
        /// How many messages at most.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
        /// Put the messages back in the queue.
        #[arg(long)]
        requeue: bool,
    },
}

/// The kinds `list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Kind {
    Queues,
    Exchanges,
    Bindings,
    Connections,
    Channels,
    Consumers,
    Users,
    Vhosts,
    Permissions,
    Policies,
}

/// `declare queue|exchange`.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum Declare {
    /// Declare a queue (a no-op if it exists with the same properties).
    Queue {
        /// Queue name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        name: String,
        #[command(flatten)]
        props: Props,
    },
    /// Declare an exchange.
    Exchange {
        /// Exchange name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        name: String,
        /// Exchange type: direct, fanout, topic, headers, ...
        #[arg(long = "type", value_name = "TYPE")]
        kind: String,
        #[command(flatten)]
        props: Props,
    },
}

/// Properties shared by queues and exchanges.
#[derive(Debug, Clone, Args)]
pub(crate) struct Props {
    /// Survive a broker restart.
    #[arg(long)]
    pub(crate) durable: bool,
    /// Delete when the last consumer (queue) or binding (exchange) goes.
    #[arg(long)]
    pub(crate) auto_delete: bool,
    /// An argument such as x-max-length=10; VALUE is read as JSON if it
    /// parses (numbers, true, "quoted"), else as a string. Repeatable.
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) args: Vec<(String, Value)>,
}

/// `delete queue|exchange`.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum Delete {
    /// Delete a queue and its messages.
    Queue {
        /// Queue name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        name: String,
    },
    /// Delete an exchange and its bindings.
    Exchange {
        /// Exchange name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        name: String,
    },
}

/// `bind` / `unbind`.
#[derive(Debug, Clone, Args)]
pub(crate) struct BindArgs {
    /// Source exchange.
    #[arg(long, value_parser = NonEmptyStringValueParser::new())]
    pub(crate) source: String,
    /// Destination queue or exchange.
    #[arg(long, value_parser = NonEmptyStringValueParser::new())]
    pub(crate) destination: String,
    /// What the destination is.
    #[arg(long, value_enum, default_value_t = DestinationType::Queue)]
    pub(crate) destination_type: DestinationType,
    /// Routing key (binding key).
    #[arg(long, default_value = "")]
    pub(crate) routing_key: String,
    /// A binding argument (headers exchanges), as for `declare`. Repeatable.
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) args: Vec<(String, Value)>,
}

/// A binding's destination kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DestinationType {
    Queue,
    Exchange,
}

/// A policy's `apply-to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ApplyTo {
    Queues,
    Exchanges,
    All,
}

impl ApplyTo {
    /// The API's spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Queues => "queues",
            Self::Exchanges => "exchanges",
            Self::All => "all",
        }
    }
}

/// `--url`: only plain `http://` URLs (no TLS client is built in yet); a
/// trailing `/` is dropped so paths can be appended.
fn parse_url(s: &str) -> Result<String, String> {
    let rest = s.strip_prefix("http://").ok_or_else(|| {
        if s.starts_with("https://") {
            "https is not supported yet; use an http:// URL".to_owned()
        } else {
            "expected an http:// URL, e.g. http://127.0.0.1:15672".to_owned()
        }
    })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("the URL has no host".to_owned());
    }
    let base = s.trim_end_matches('/');
    base.parse::<ureq::http::Uri>()
        .map_err(|e| format!("invalid URL: {e}"))?;
    Ok(base.to_owned())
}

/// `--reason`: sent as a header, so one line of visible text.
fn parse_reason(s: &str) -> Result<String, String> {
    if s.chars().any(char::is_control) {
        return Err("the reason must be a single line without control characters".to_owned());
    }
    Ok(s.to_owned())
}

/// `KEY=VALUE`: VALUE as JSON when it parses, else as a plain string.
fn parse_key_value(s: &str) -> Result<(String, Value), String> {
    let (key, value) = s.split_once('=').ok_or("expected KEY=VALUE")?;
    if key.is_empty() {
        return Err("empty KEY in KEY=VALUE".to_owned());
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((key.to_owned(), value))
}

/// A JSON object (a policy definition).
fn parse_json_object(s: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str(s) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("expected a JSON object, e.g. '{\"max-length\":100}'".to_owned()),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls() {
        assert_eq!(parse_url("http://h:1/").as_deref(), Ok("http://h:1"));
        assert_eq!(
            parse_url("http://h:1/prefix").as_deref(),
            Ok("http://h:1/prefix")
        );
        assert!(parse_url("https://h").unwrap_err().contains("https"));
        assert!(parse_url("h:15672").is_err());
        assert!(parse_url("http://").is_err());
        assert!(parse_url("http://bad host:1").is_err());
        assert!(parse_reason("a\nb").is_err());
        assert_eq!(
            parse_reason("maintenance window").as_deref(),
            Ok("maintenance window")
        );
    }

    #[test]
    fn key_values() {
        assert_eq!(
            parse_key_value("x-max-length=10"),
            Ok(("x-max-length".into(), json!(10)))
        );
        assert_eq!(
            parse_key_value("x-queue-type=quorum"),
            Ok(("x-queue-type".into(), json!("quorum")))
        );
        assert_eq!(parse_key_value("k=\"10\""), Ok(("k".into(), json!("10"))));
        assert_eq!(parse_key_value("k=true"), Ok(("k".into(), json!(true))));
        assert_eq!(parse_key_value("k=a=b"), Ok(("k".into(), json!("a=b"))));
        assert_eq!(parse_key_value("k="), Ok(("k".into(), json!(""))));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=v").is_err());
    }

    #[test]
    fn json_objects() {
        assert_eq!(
            parse_json_object(r#"{"max-length":1}"#).map(Value::Object),
            Ok(json!({"max-length":1}))
        );
        assert!(parse_json_object("[1]").is_err());
        assert!(parse_json_object("{").is_err());
    }
}
