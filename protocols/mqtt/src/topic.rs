//! MQTT topic names and filters and their AMQP routing-key forms.
//!
//! `/` separates levels in MQTT and `.` separates words in AMQP, so they
//! swap: `a/b.c` is routing key `a.b/c` (RabbitMQ's MQTT plugin does the
//! same). Filters map `+` to `*`; `#` stays `#`.

/// Why a topic or filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty topic or filter.
    #[error("empty topic")]
    Empty,
    /// Wildcards are not allowed in a topic name.
    #[error("wildcard in topic name")]
    WildcardInName,
    /// `#` not last, or a wildcard sharing a level with other characters.
    #[error("misplaced wildcard in filter")]
    BadWildcard,
    /// NUL characters are forbidden.
    #[error("NUL in topic")]
    Nul,
}

fn swap(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            c => c,
        })
        .collect()
}

/// Validate a PUBLISH topic name.
pub fn check_name(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.contains('\0') {
        return Err(TopicError::Nul);
    }
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Validate a SUBSCRIBE filter.
pub fn check_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    if filter.contains('\0') {
        return Err(TopicError::Nul);
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let wild = level.contains(['+', '#']);
        if wild && level.len() != 1 {
            return Err(TopicError::BadWildcard);
        }
        if *level == "#" && i != levels.len() - 1 {
            return Err(TopicError::BadWildcard);
        }
    }
    Ok(())
}

/// Split a shared subscription filter `$share/<group>/<filter>` into its
/// group and filter. `None` if it is not one; `Some(Err(..))` if it is one
/// but malformed (empty group, wildcard in the group, bad filter).
pub fn shared(filter: &str) -> Option<Result<(&str, &str), TopicError>> {
    let rest = filter.strip_prefix("$share/")?;
    let Some((group, f)) = rest.split_once('/') else {
        return Some(Err(TopicError::Empty));
    };
    if group.is_empty() || group.contains(['+', '#']) {
        return Some(Err(TopicError::BadWildcard));
    }
    Some(check_filter(f).map(|()| (group, f)))
}

/// Topic name to routing key.
pub fn to_routing_key(topic: &str) -> String {
    swap(topic)
}

/// Routing key to topic name.
pub fn from_routing_key(key: &str) -> String {
    swap(key)
}

/// Filter to topic-exchange binding key.
pub fn filter_to_binding_key(filter: &str) -> String {
    swap(filter)
        .split('.')
        .map(|w| if w == "+" { "*" } else { w })
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether `topic` matches `filter` (MQTT rules, used for retained
/// messages). Topics starting with `$` are not matched by a leading
/// wildcard.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_filters() {
        assert_eq!(shared("a/b"), None);
        assert_eq!(shared("$share/g/a/+"), Some(Ok(("g", "a/+"))));
        assert!(matches!(shared("$share/g"), Some(Err(_))));
        assert!(matches!(shared("$share//a"), Some(Err(_))));
        assert!(matches!(shared("$share/g+/a"), Some(Err(_))));
        assert!(matches!(shared("$share/g/a#"), Some(Err(_))));
    }

    #[test]
    fn translation() {
        assert_eq!(to_routing_key("plant/7/temp"), "plant.7.temp");
        assert_eq!(to_routing_key("a/b.c"), "a.b/c");
        assert_eq!(from_routing_key("a.b/c"), "a/b.c");
        assert_eq!(filter_to_binding_key("plant/+/temp"), "plant.*.temp");
        assert_eq!(filter_to_binding_key("plant/#"), "plant.#");
        assert_eq!(filter_to_binding_key("+"), "*");
    }

    #[test]
    fn validation() {
        assert!(check_name("a/b").is_ok());
        assert_eq!(check_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(check_name(""), Err(TopicError::Empty));
        assert!(check_filter("a/+/#").is_ok());
        assert_eq!(check_filter("a/#/b"), Err(TopicError::BadWildcard));
        assert_eq!(check_filter("a/b+"), Err(TopicError::BadWildcard));
    }

    #[test]
    fn matching() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a/b"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(!matches("#", "$SYS/x"));
        assert!(matches("+/+", "/x"));
    }
}
