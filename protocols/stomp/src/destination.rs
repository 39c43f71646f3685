//! STOMP destinations, as RabbitMQ's STOMP plugin names them, and where each
//! one publishes to and consumes from.
//!
//! | destination          | SEND publishes to              | SUBSCRIBE consumes                         |
//! |----------------------|--------------------------------|--------------------------------------------|
//! | `/queue/q`           | `""` with key `q` (declares q) | durable queue `q`, declared, shared        |
//! | `/topic/k`           | `amq.topic` with key `k`       | a queue per subscription bound with `k`    |
//! | `/exchange/e/k`      | `e` with key `k`               | a queue per subscription bound to `e`, `k` |
//! | `/amq/queue/q`       | `""` with key `q`              | existing queue `q` (never declared)        |
//! | `/temp-queue/t`      | this connection's temp queue   | (replies arrive without a SUBSCRIBE)       |
//! | `/reply-queue/q`     | `""` with key `q`              | —                                          |

use std::fmt;

/// A parsed destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `/queue/<name>`.
    Queue(String),
    /// `/topic/<routing key>`.
    Topic(String),
    /// `/exchange/<exchange>[/<routing key>]`.
    Exchange {
        /// Exchange name.
        exchange: String,
        /// Routing key (binding key on SUBSCRIBE); may be empty.
        key: String,
    },
    /// `/amq/queue/<name>`: an existing queue.
    AmqQueue(String),
    /// `/temp-queue/<name>`: a queue private to the connection.
    TempQueue(String),
    /// `/reply-queue/<queue>`: answer to another client's temp queue.
    ReplyQueue(String),
}

/// Why a destination string is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid destination {0:?}: expected /queue/, /topic/, /exchange/, /amq/queue/, /temp-queue/ or /reply-queue/"
)]
pub struct DestinationError(pub String);

fn name(rest: &str, original: &str) -> Result<String, DestinationError> {
    if rest.is_empty() || rest.contains('/') {
        return Err(DestinationError(original.to_owned()));
    }
    Ok(rest.to_owned())
}

impl Destination {
    /// Parse a `destination` header.
    pub fn parse(s: &str) -> Result<Self, DestinationError> {
        let err = || DestinationError(s.to_owned());
        if let Some(rest) = s.strip_prefix("/queue/") {
            Ok(Self::Queue(name(rest, s)?))
        } else if let Some(rest) = s.strip_prefix("/topic/") {
            if rest.is_empty() {
                return Err(err());
            }
            Ok(Self::Topic(rest.to_owned()))
        } else if let Some(rest) = s.strip_prefix("/exchange/") {
            let (exchange, key) = rest.split_once('/').unwrap_or((rest, ""));
            if exchange.is_empty() {
                return Err(err());
            }
            Ok(Self::Exchange {
                exchange: exchange.to_owned(),
                key: key.to_owned(),
            })
        } else if let Some(rest) = s.strip_prefix("/amq/queue/") {
            Ok(Self::AmqQueue(name(rest, s)?))
        } else if let Some(rest) = s.strip_prefix("/temp-queue/") {
            Ok(Self::TempQueue(name(rest, s)?))
        } else if let Some(rest) = s.strip_prefix("/reply-queue/") {
            Ok(Self::ReplyQueue(name(rest, s)?))
        } else {
            Err(err())
        }
    }

    /// The destination a message routed through `exchange` with
    /// `routing_key` is reported under in MESSAGE frames.
    pub fn of_message(exchange: &str, routing_key: &str) -> String {
        match exchange {
            "" => format!("/queue/{routing_key}"),
            "amq.topic" => format!("/topic/{routing_key}"),
            e => format!("/exchange/{e}/{routing_key}"),
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Queue(q) => write!(f, "/queue/{q}"),
            Self::Topic(k) => write!(f, "/topic/{k}"),
            Self::Exchange { exchange, key } if key.is_empty() => write!(f, "/exchange/{exchange}"),
            Self::Exchange { exchange, key } => write!(f, "/exchange/{exchange}/{key}"),
            Self::AmqQueue(q) => write!(f, "/amq/queue/{q}"),
            Self::TempQueue(t) => write!(f, "/temp-queue/{t}"),
            Self::ReplyQueue(q) => write!(f, "/reply-queue/{q}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_prints_it_back() {
        for s in [
            "/queue/a",
            "/topic/a.b.#",
            "/exchange/amq.direct/k",
            "/exchange/logs",
            "/exchange/e/a/b",
            "/amq/queue/x",
            "/temp-queue/r",
            "/reply-queue/stomp-temp-1",
        ] {
            let d = Destination::parse(s).unwrap();
            assert_eq!(d.to_string(), s);
        }
        assert_eq!(
            Destination::parse("/exchange/e/a/b").unwrap(),
            Destination::Exchange {
                exchange: "e".into(),
                key: "a/b".into()
            }
        );
    }

    #[test]
    fn rejects_bad_forms() {
        for s in [
            "",
            "queue/a",
            "/queue/",
            "/queue/a/b",
            "/topic/",
            "/exchange/",
            "/other/x",
        ] {
            assert!(Destination::parse(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn message_destination() {
        assert_eq!(Destination::of_message("", "q"), "/queue/q");
        assert_eq!(Destination::of_message("amq.topic", "a.b"), "/topic/a.b");
        assert_eq!(Destination::of_message("x", "k"), "/exchange/x/k");
    }
}
