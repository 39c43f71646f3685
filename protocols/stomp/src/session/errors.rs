//! Every ERROR frame this adapter sends, worded as RabbitMQ's STOMP plugin
//! words it: clients and their test suites match the `message` header, and
//! often the body, exactly. One constructor per answer; the session never
//! writes an ERROR's text anywhere else.
//!
//! | answer                        | `message`                              | body                                                         |
//! |-------------------------------|----------------------------------------|--------------------------------------------------------------|
//! | `duplicate_subscription`      | `Duplicated subscription identifier`   | `A subscription identified by 'T_<id>' already exists.`      |
//! | `too_many_subscriptions`      | `resource_limit`                       | `at most <n> subscriptions per connection` + LF              |
//! | `invalid_value`               | `Invalid header`                       | `'<h>:<v>' is not valid: expected …` + LF                    |
//! | `server_cancelled`            | `Server cancelled subscription`        | `The server has canceled a subscription.` …                  |
//! | `invalid_destination`         | `Invalid destination`                  | `'<rest>' is not a valid <kind> destination` + LF            |
//! | `unknown_destination`         | `Unknown destination`                  | `'<d>' is not a valid destination.` LF `Valid destination types are: …` |
//! | `missing_destination`         | `Missing destination`                  | `'<CMD>' must include a 'destination' header` + LF           |
//! | `not_a_source`                | `Invalid destination`                  | `'<d>' is not a valid destination for '<CMD>'` + LF          |
//! | `version_mismatch`            | `Version mismatch`                     | `Supported versions are 1.0,1.1,1.2` + LF                    |
//! | `bad_command`                 | `Bad command`                          | `Could not interpret command "<X>"` + LF                     |
//! | `access_refused`              | `Bad CONNECT`                          | `Access refused for user '<login>'`                          |
//! | `vhost_denied`                | `Bad CONNECT`                          | `Virtual host '<host>' access denied`                        |
//! | `loopback_only`               | `Bad CONNECT`                          | `non-loopback access denied`                                 |
//! | `header_not_allowed`          | `Invalid header`                       | `'<h>' is not allowed on '<CMD>'.` + LF                      |
//! | `durable_needs_id`            | `Missing Header`                       | `Header 'id' is required for durable subscriptions`          |
//! | `missing_header`              | `Missing header`                       | `'<CMD>' must include the '<h>' header` + LF                 |
//! | `invalid_header`              | `Invalid header`                       | `'<CMD>' must include a valid '<h>' header` + LF             |
//! | `message_not_found`           | `Message not found`                    | `unknown delivery tag <id>` + LF                             |
//! | `not_connected`               | `Illegal command`                      | `You must log in using CONNECT first`                        |
//! | `missing_transaction`         | `Missing transaction`                  | `'<CMD>' must include a 'transaction' header` + LF           |
//! | `bad_transaction`             | `Bad transaction`                      | `Invalid transaction identifier: "<tx>"` + LF                |
//! | `transaction_open`            | `Bad transaction`                      | `Transaction "<tx>" is already open` + LF                    |
//! | `ack_timeout`                 | `precondition_failed`                  | `delivery acknowledgement timed out. Timeout value used: …`  |
//! | `user_id_mismatch`            | `precondition_failed`                  | `user_id property set to '<x>' but authenticated user was '<u>'` |
//! | `message_rejected`            | `Message rejected`                     | `A queue the message routes to is full …` + LF               |
//! | `no_subscription`             | `No subscription found`                | `UNSUBSCRIBE must refer to an existing subscription.` …      |
//! | engine errors                 | `not_found`, `access_refused`, …       | the engine's message, e.g. `NOT_FOUND - no queue 'q' …`      |
//!
//! Every ERROR also carries `version:1.0,1.1,1.2` and `content-type:text/plain`.

use crate::codec::Command;
use crate::destination::{DestinationError, PREFIXES};
use switchyard_engine::EngineError;

/// Versions this adapter speaks, as listed in ERROR and version-mismatch
/// answers.
pub(crate) const SUPPORTED: &str = "1.0,1.1,1.2";

/// A protocol error: the ERROR frame's `message` header and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StompError {
    pub(crate) message: String,
    pub(crate) detail: String,
}

impl StompError {
    pub(crate) fn new(message: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            detail: detail.into(),
        }
    }
}

impl From<EngineError> for StompError {
    fn from(e: EngineError) -> Self {
        use EngineError as E;
        let message = match &e {
            E::QueueNotFound(..) | E::ExchangeNotFound(..) | E::VhostNotFound(_) => "not_found",
            E::AccessRefused(_) | E::QueueLocked(_) | E::NotPermitted(_) => "access_refused",
            E::Inequivalent { .. } | E::PreconditionFailed(_) => "precondition_failed",
            E::ResourceLimit(_) => "resource_limit",
            _ => "invalid_argument",
        };
        Self::new(message, e.to_string())
    }
}

impl From<DestinationError> for StompError {
    fn from(e: DestinationError) -> Self {
        match e {
            DestinationError::Invalid { kind, rest } => invalid_destination(kind, &rest),
            DestinationError::Unknown(d) => unknown_destination(&d),
        }
    }
}

/// A command as Erlang prints an upper-case atom: `'SEND'`.
fn quoted(c: Command) -> String {
    format!("'{}'", c.as_str())
}

/// `tag` is RabbitMQ's consumer tag: `T_<id>` (or `Q_<destination>` for a
/// STOMP 1.0 subscription without an id).
pub(crate) fn duplicate_subscription(tag: &str) -> StompError {
    StompError::new(
        "Duplicated subscription identifier",
        format!("A subscription identified by '{tag}' already exists."),
    )
}

pub(crate) fn too_many_subscriptions(max: usize) -> StompError {
    StompError::new(
        "resource_limit",
        format!("at most {max} subscriptions per connection\n"),
    )
}

/// A header whose value is not one this adapter understands.
pub(crate) fn invalid_value(header: &str, value: &str, expected: &str) -> StompError {
    StompError::new(
        "Invalid header",
        format!("'{header}:{value}' is not valid: expected {expected}\n"),
    )
}

/// The queue behind a subscription went away (deleted by another client).
pub(crate) fn server_cancelled(id: &str) -> StompError {
    StompError::new(
        "Server cancelled subscription",
        format!(
            "The server has canceled a subscription.\nNo more messages will be delivered for '{id}'.\n"
        ),
    )
}

pub(crate) fn invalid_destination(kind: &str, rest: &str) -> StompError {
    StompError::new(
        "Invalid destination",
        format!("'{rest}' is not a valid {kind} destination\n"),
    )
}

pub(crate) fn unknown_destination(d: &str) -> StompError {
    StompError::new(
        "Unknown destination",
        format!("'{d}' is not a valid destination.\nValid destination types are: {PREFIXES}.\n"),
    )
}

pub(crate) fn missing_destination(c: Command) -> StompError {
    StompError::new(
        "Missing destination",
        format!("{} must include a 'destination' header\n", quoted(c)),
    )
}

/// A destination that exists for SEND / `reply-to` only.
pub(crate) fn not_a_source(d: &str, c: Command) -> StompError {
    StompError::new(
        "Invalid destination",
        format!("'{d}' is not a valid destination for {}\n", quoted(c)),
    )
}

pub(crate) fn version_mismatch() -> StompError {
    StompError::new(
        "Version mismatch",
        format!("Supported versions are {SUPPORTED}\n"),
    )
}

pub(crate) fn bad_command(c: &str) -> StompError {
    StompError::new(
        "Bad command",
        format!("Could not interpret command \"{c}\"\n"),
    )
}

pub(crate) fn access_refused(login: &str) -> StompError {
    StompError::new("Bad CONNECT", format!("Access refused for user '{login}'"))
}

pub(crate) fn vhost_denied(host: &str) -> StompError {
    StompError::new(
        "Bad CONNECT",
        format!("Virtual host '{host}' access denied"),
    )
}

pub(crate) fn loopback_only() -> StompError {
    StompError::new("Bad CONNECT", "non-loopback access denied")
}

pub(crate) fn header_not_allowed(header: &str, c: Command) -> StompError {
    StompError::new(
        "Invalid header",
        format!("'{header}' is not allowed on {}.\n", quoted(c)),
    )
}

pub(crate) fn durable_needs_id() -> StompError {
    StompError::new(
        "Missing Header",
        "Header 'id' is required for durable subscriptions",
    )
}

pub(crate) fn missing_header(c: Command, header: &str) -> StompError {
    StompError::new(
        "Missing header",
        format!("{} must include the '{header}' header\n", quoted(c)),
    )
}

pub(crate) fn invalid_header(c: Command, header: &str) -> StompError {
    StompError::new(
        "Invalid header",
        format!("{} must include a valid '{header}' header\n", quoted(c)),
    )
}

pub(crate) fn message_not_found(id: &str) -> StompError {
    StompError::new("Message not found", format!("unknown delivery tag {id}\n"))
}

pub(crate) fn not_connected() -> StompError {
    StompError::new("Illegal command", "You must log in using CONNECT first")
}

pub(crate) fn missing_transaction(c: Command) -> StompError {
    StompError::new(
        "Missing transaction",
        format!("{} must include a 'transaction' header\n", quoted(c)),
    )
}

pub(crate) fn bad_transaction(tx: &str) -> StompError {
    StompError::new(
        "Bad transaction",
        format!("Invalid transaction identifier: \"{tx}\"\n"),
    )
}

/// BEGIN of a transaction already open (RabbitMQ silently restarts it;
/// refusing keeps the frames already held from vanishing).
pub(crate) fn transaction_open(tx: &str) -> StompError {
    StompError::new(
        "Bad transaction",
        format!("Transaction \"{tx}\" is already open\n"),
    )
}

/// A MESSAGE stayed unacknowledged past the consumer timeout.
pub(crate) fn ack_timeout(ms: u128) -> StompError {
    StompError::new(
        "precondition_failed",
        format!(
            "delivery acknowledgement timed out. Timeout value used: {ms} ms. \
             This timeout value can be configured, see consumers doc guide to learn more"
        ),
    )
}

/// A SEND whose `user-id` is not the user who logged in.
pub(crate) fn user_id_mismatch(claimed: &str, user: &str) -> StompError {
    StompError::new(
        "precondition_failed",
        format!("user_id property set to '{claimed}' but authenticated user was '{user}'"),
    )
}

/// A SEND with a receipt that a full queue refused.
pub(crate) fn message_rejected() -> StompError {
    StompError::new(
        "Message rejected",
        "A queue the message routes to is full and refuses publishes (x-overflow: reject-publish).\n",
    )
}

pub(crate) fn no_subscription(id: &str) -> StompError {
    StompError::new(
        "No subscription found",
        format!(
            "UNSUBSCRIBE must refer to an existing subscription.\nSubscription to '{id}' not found.\n"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row per answer of the module table: (built, message, body).
    #[test]
    fn wording_table() {
        let rows = [
            (
                too_many_subscriptions(2),
                "resource_limit",
                "at most 2 subscriptions per connection\n",
            ),
            (
                invalid_value("ack", "x", "auto"),
                "Invalid header",
                "'ack:x' is not valid: expected auto\n",
            ),
            (
                server_cancelled("s1"),
                "Server cancelled subscription",
                "The server has canceled a subscription.\nNo more messages will be delivered for 's1'.\n",
            ),
            (
                duplicate_subscription("T_s1"),
                "Duplicated subscription identifier",
                "A subscription identified by 'T_s1' already exists.",
            ),
            (
                invalid_destination("queue", "/a/b"),
                "Invalid destination",
                "'/a/b' is not a valid queue destination\n",
            ),
            (
                unknown_destination("/x/y"),
                "Unknown destination",
                "'/x/y' is not a valid destination.\nValid destination types are: \
                 /temp-queue, /exchange, /topic, /queue, /amq/queue, /reply-queue/.\n",
            ),
            (
                missing_destination(Command::Send),
                "Missing destination",
                "'SEND' must include a 'destination' header\n",
            ),
            (
                not_a_source("/temp-queue/t", Command::Subscribe),
                "Invalid destination",
                "'/temp-queue/t' is not a valid destination for 'SUBSCRIBE'\n",
            ),
            (
                version_mismatch(),
                "Version mismatch",
                "Supported versions are 1.0,1.1,1.2\n",
            ),
            (
                bad_command("FOO"),
                "Bad command",
                "Could not interpret command \"FOO\"\n",
            ),
            (
                access_refused("bob"),
                "Bad CONNECT",
                "Access refused for user 'bob'",
            ),
            (
                vhost_denied("nope"),
                "Bad CONNECT",
                "Virtual host 'nope' access denied",
            ),
            (loopback_only(), "Bad CONNECT", "non-loopback access denied"),
            (
                header_not_allowed("message-id", Command::Send),
                "Invalid header",
                "'message-id' is not allowed on 'SEND'.\n",
            ),
            (
                durable_needs_id(),
                "Missing Header",
                "Header 'id' is required for durable subscriptions",
            ),
            (
                missing_header(Command::Ack, "id"),
                "Missing header",
                "'ACK' must include the 'id' header\n",
            ),
            (
                invalid_header(Command::Nack, "id"),
                "Invalid header",
                "'NACK' must include a valid 'id' header\n",
            ),
            (
                message_not_found("7-1"),
                "Message not found",
                "unknown delivery tag 7-1\n",
            ),
            (
                not_connected(),
                "Illegal command",
                "You must log in using CONNECT first",
            ),
            (
                missing_transaction(Command::Begin),
                "Missing transaction",
                "'BEGIN' must include a 'transaction' header\n",
            ),
            (
                bad_transaction("tx1"),
                "Bad transaction",
                "Invalid transaction identifier: \"tx1\"\n",
            ),
            (
                transaction_open("tx1"),
                "Bad transaction",
                "Transaction \"tx1\" is already open\n",
            ),
            (
                ack_timeout(400),
                "precondition_failed",
                "delivery acknowledgement timed out. Timeout value used: 400 ms. \
                 This timeout value can be configured, see consumers doc guide to learn more",
            ),
            (
                user_id_mismatch("admin", "guest"),
                "precondition_failed",
                "user_id property set to 'admin' but authenticated user was 'guest'",
            ),
            (
                message_rejected(),
                "Message rejected",
                "A queue the message routes to is full and refuses publishes (x-overflow: reject-publish).\n",
            ),
            (
                no_subscription("s9"),
                "No subscription found",
                "UNSUBSCRIBE must refer to an existing subscription.\nSubscription to 's9' not found.\n",
            ),
        ];
        for (built, message, body) in rows {
            assert_eq!(built, StompError::new(message, body));
        }
    }

    #[test]
    fn destination_errors_map_to_their_rows() {
        let e: StompError = DestinationError::Invalid {
            kind: "topic",
            rest: "/a/b".into(),
        }
        .into();
        assert_eq!(e, invalid_destination("topic", "/a/b"));
        let e: StompError = DestinationError::Unknown("/q/x".into()).into();
        assert_eq!(e, unknown_destination("/q/x"));
    }
}
