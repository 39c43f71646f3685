//! The records this crate keeps, shaped (and serialised) as RabbitMQ's
//! definitions shape them, so the management API and definitions
//! export/import use them as they are.

use serde::{Deserialize, Serialize};

/// A user: name, password hash and tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Login name.
    pub name: String,
    /// The hash (see [`crate::password`]); empty: no password login.
    pub password_hash: String,
    /// How [`User::password_hash`] was made.
    pub hashing_algorithm: String,
    /// Tags (`administrator`, `monitoring`, `policymaker`, `management`,
    /// `impersonator`, or anything else, which RabbitMQ also allows).
    pub tags: Vec<String>,
}

/// What a user may do in a vhost: three regular expressions over resource
/// names, as RabbitMQ keeps them. Today only its existence is checked (a
/// user needs one to use the vhost); the expressions are stored for the
/// resource checks still to come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// The user.
    pub user: String,
    /// The vhost.
    pub vhost: String,
    /// Declare and delete.
    pub configure: String,
    /// Publish and bind to.
    pub write: String,
    /// Consume, get, purge and bind from.
    pub read: String,
}

/// What a user may publish and consume on one topic exchange, as regular
/// expressions over routing keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPermission {
    /// The user.
    pub user: String,
    /// The vhost.
    pub vhost: String,
    /// The topic exchange.
    pub exchange: String,
    /// Routing keys the user may publish with.
    pub write: String,
    /// Routing keys the user may bind (subscribe) with.
    pub read: String,
}

/// Tags as RabbitMQ's API accepts them: a list, or one comma-separated
/// string.
#[must_use]
pub fn parse_tags(value: &serde_json::Value) -> Option<Vec<String>> {
    let split = |s: &str| {
        s.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    match value {
        serde_json::Value::String(s) => Some(split(s)),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(|tags| tags.iter().flat_map(|t| split(t)).collect()),
        serde_json::Value::Null => Some(Vec::new()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tags_come_as_a_list_or_a_string() {
        assert_eq!(
            parse_tags(&json!("administrator, monitoring")),
            Some(vec!["administrator".into(), "monitoring".into()])
        );
        assert_eq!(
            parse_tags(&json!(["management"])),
            Some(vec!["management".into()])
        );
        assert_eq!(parse_tags(&json!("")), Some(vec![]));
        assert_eq!(parse_tags(&json!(3)), None);
    }
}
