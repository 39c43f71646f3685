//! STOMP destinations, as RabbitMQ's STOMP plugin names them, and where each
//! one publishes to and consumes from.
//!
//! | destination          | SEND publishes to              | SUBSCRIBE consumes                         |
//! |----------------------|--------------------------------|--------------------------------------------|
//! | `/queue/q`, `q`      | `""` with key `q` (declares q) | durable queue `q`, declared, shared        |
//! | `/topic/k`           | `amq.topic` with key `k`       | a queue per subscription bound with `k`    |
//! | `/exchange/e[/k]`    | `e` with key `k` (or `""`)     | a queue per subscription bound to `e`, `k` |
//! | `/amq/queue/q`       | `""` with key `q`              | existing queue `q` (never declared)        |
//! | `/temp-queue/t`      | this connection's temp queue   | (replies arrive without a SUBSCRIBE)       |
//! | `/reply-queue/q`     | `""` with key `q`              | —                                          |
//!
//! The syntax is RabbitMQ's: the destination is split on `/`, so a `/`
//! inside a name must be written `%2F` (and is unescaped). A name part that
//! holds another `/` is an invalid destination of its kind; a string with a
//! `/` and no known prefix is an unknown destination; a string without any
//! `/` is a queue name.

use std::fmt;

/// A parsed destination; names are unescaped (`%2F` → `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `/queue/<name>`, or a bare `<name>`.
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

/// Why a destination string is not usable; each variant is one of
/// RabbitMQ's ERROR answers (see `session::errors`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// A known prefix whose name part is malformed: `rest` is what follows
    /// the prefix (`/a/b` for `/queue/a/b`), `kind` the prefix's kind as
    /// RabbitMQ names it (`queue`, `topic`, `exchange`, `amqqueue`,
    /// `temp_queue`).
    #[error("'{rest}' is not a valid {kind} destination")]
    Invalid {
        /// The destination kind.
        kind: &'static str,
        /// The part after the prefix.
        rest: String,
    },
    /// A `/` but no known prefix.
    #[error("'{0}' is not a valid destination")]
    Unknown(String),
}

/// The prefixes RabbitMQ lists in its "Unknown destination" answer, in its
/// order.
pub const PREFIXES: &str = "/temp-queue, /exchange, /topic, /queue, /amq/queue, /reply-queue/";

/// `%2F` → `/`; nothing else is unescaped (as RabbitMQ).
fn unescape(s: &str) -> String {
    s.replace("%2F", "/")
}

/// A name as RabbitMQ writes it in a MESSAGE's destination: `/` → `%2F`,
/// `%` → `%25`, and bytes outside ASCII or below space as `%XX`.
fn escape(s: &str, out: &mut String) {
    use fmt::Write;
    for b in s.bytes() {
        match b {
            b'/' => out.push_str("%2F"),
            b'%' => out.push_str("%25"),
            0..32 | 128.. => {
                let _ = write!(out, "%{b:02X}");
            }
            _ => out.push(char::from(b)),
        }
    }
}

/// The inverse of [`unescape`], for printing a parsed destination back.
fn escape_slash(s: &str, out: &mut String) {
    out.push_str(&s.replace('/', "%2F"));
}

/// `/a/b` for parts `["a", "b"]`: how RabbitMQ quotes a malformed rest.
fn rejoin(parts: &[&str]) -> String {
    parts.iter().fold(String::new(), |mut s, p| {
        s.push('/');
        s.push_str(p);
        s
    })
}

/// One non-empty name and nothing after it.
fn single(kind: &'static str, rest: &[&str]) -> Result<String, DestinationError> {
    match rest {
        [name] if !name.is_empty() => Ok(unescape(name)),
        _ => Err(DestinationError::Invalid {
            kind,
            rest: rejoin(rest),
        }),
    }
}

impl Destination {
    /// Parse a `destination` header.
    pub fn parse(s: &str) -> Result<Self, DestinationError> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [name] if !name.is_empty() => Ok(Self::Queue(unescape(name))),
            [""] => Err(DestinationError::Invalid {
                kind: "queue",
                rest: String::new(),
            }),
            ["", "queue", rest @ ..] => single("queue", rest).map(Self::Queue),
            ["", "topic", rest @ ..] => single("topic", rest).map(Self::Topic),
            ["", "temp-queue", rest @ ..] => single("temp_queue", rest).map(Self::TempQueue),
            ["", "amq", "queue", rest @ ..] => single("amqqueue", rest).map(Self::AmqQueue),
            ["", "exchange", rest @ ..] => match rest {
                [e] | [e, _] if !e.is_empty() => Ok(Self::Exchange {
                    exchange: unescape(e),
                    key: rest.get(1).map(|k| unescape(k)).unwrap_or_default(),
                }),
                _ => Err(DestinationError::Invalid {
                    kind: "exchange",
                    rest: rejoin(rest),
                }),
            },
            // The rest is the queue name as is: a reply queue's name is
            // whatever the server generated.
            ["", "reply-queue", first, ..] if !first.is_empty() => {
                Ok(Self::ReplyQueue(s["/reply-queue/".len()..].to_owned()))
            }
            ["", "reply-queue", _, ..] => Err(DestinationError::Invalid {
                kind: "reply_queue",
                rest: "/".to_owned(),
            }),
            _ => Err(DestinationError::Unknown(s.to_owned())),
        }
    }

    /// The destination a message routed through `exchange` with
    /// `routing_key` is reported under in MESSAGE frames.
    pub fn of_message(exchange: &str, routing_key: &str) -> String {
        let mut out = String::with_capacity(16 + exchange.len() + routing_key.len());
        match exchange {
            "" => {
                out.push_str("/queue/");
                escape(routing_key, &mut out);
            }
            "amq.topic" => {
                out.push_str("/topic/");
                escape(routing_key, &mut out);
            }
            e => {
                out.push_str("/exchange/");
                escape(e, &mut out);
                if !routing_key.is_empty() {
                    out.push('/');
                    escape(routing_key, &mut out);
                }
            }
        }
        out
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let (prefix, name) = match self {
            Self::Queue(q) => ("/queue/", q),
            Self::Topic(k) => ("/topic/", k),
            Self::Exchange { exchange, key } => {
                out.push_str("/exchange/");
                escape_slash(exchange, &mut out);
                if !key.is_empty() {
                    out.push('/');
                    escape_slash(key, &mut out);
                }
                return f.write_str(&out);
            }
            Self::AmqQueue(q) => ("/amq/queue/", q),
            Self::TempQueue(t) => ("/temp-queue/", t),
            Self::ReplyQueue(q) => return write!(f, "/reply-queue/{q}"),
        };
        out.push_str(prefix);
        escape_slash(name, &mut out);
        f.write_str(&out)
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
            "/amq/queue/x",
            "/temp-queue/r",
            "/reply-queue/stomp-temp-1",
            "/queue/a%2Fb",
        ] {
            let d = Destination::parse(s).unwrap();
            assert_eq!(d.to_string(), s);
        }
        assert_eq!(
            Destination::parse("/exchange/e/a%2Fb").unwrap(),
            Destination::Exchange {
                exchange: "e".into(),
                key: "a/b".into()
            }
        );
        assert_eq!(
            Destination::parse("/topic/a%2Fb").unwrap(),
            Destination::Topic("a/b".into())
        );
        assert_eq!(
            Destination::parse("/exchange/e/").unwrap(),
            Destination::Exchange {
                exchange: "e".into(),
                key: String::new()
            }
        );
        assert_eq!(
            Destination::parse("/reply-queue/a/b").unwrap(),
            Destination::ReplyQueue("a/b".into())
        );
    }

    #[test]
    fn a_bare_name_is_a_queue() {
        assert_eq!(
            Destination::parse("a").unwrap(),
            Destination::Queue("a".into())
        );
        assert_eq!(
            Destination::parse("a%2Fb").unwrap(),
            Destination::Queue("a/b".into())
        );
    }

    #[test]
    fn invalid_forms_say_their_kind_and_rest() {
        let invalid = |s: &str| match Destination::parse(s) {
            Err(DestinationError::Invalid { kind, rest }) => (kind, rest),
            other => panic!("{s:?}: {other:?}"),
        };
        assert_eq!(invalid("/queue/a/b"), ("queue", "/a/b".into()));
        assert_eq!(invalid("/queue/"), ("queue", "/".into()));
        assert_eq!(invalid("/queue"), ("queue", String::new()));
        assert_eq!(invalid("/topic/a/b"), ("topic", "/a/b".into()));
        assert_eq!(invalid("/topic/"), ("topic", "/".into()));
        assert_eq!(
            invalid("/exchange/x/key/extra"),
            ("exchange", "/x/key/extra".into())
        );
        assert_eq!(invalid("/exchange/"), ("exchange", "/".into()));
        assert_eq!(invalid("/exchange//k"), ("exchange", "//k".into()));
        assert_eq!(invalid("/amq/queue/a/b"), ("amqqueue", "/a/b".into()));
        assert_eq!(invalid("/temp-queue/a/b"), ("temp_queue", "/a/b".into()));
        assert_eq!(invalid(""), ("queue", String::new()));
        assert_eq!(invalid("/reply-queue/"), ("reply_queue", "/".into()));
    }

    #[test]
    fn unknown_prefixes() {
        for s in ["queue/a", "/other/x", "/amq/other/x", "/reply-queue", "a/b"] {
            assert_eq!(
                Destination::parse(s),
                Err(DestinationError::Unknown(s.into())),
                "{s:?}"
            );
        }
    }

    #[test]
    fn message_destination() {
        assert_eq!(Destination::of_message("", "q"), "/queue/q");
        assert_eq!(Destination::of_message("amq.topic", "a.b"), "/topic/a.b");
        assert_eq!(Destination::of_message("x", "k"), "/exchange/x/k");
        assert_eq!(Destination::of_message("x", ""), "/exchange/x");
        assert_eq!(Destination::of_message("amq.topic", "a/b"), "/topic/a%2Fb");
        assert_eq!(Destination::of_message("", "50%"), "/queue/50%25");
        // What a MESSAGE names, a SEND can use.
        for (e, k) in [("", "a/b"), ("amq.topic", "x/y.z"), ("ex/1", "k/2")] {
            let d = Destination::parse(&Destination::of_message(e, k)).unwrap();
            let (pe, pk) = match d {
                Destination::Queue(q) => (String::new(), q),
                Destination::Topic(t) => ("amq.topic".into(), t),
                Destination::Exchange { exchange, key } => (exchange, key),
                other => panic!("{other:?}"),
            };
            assert_eq!((pe.as_str(), pk.as_str()), (e, k));
        }
    }
}
