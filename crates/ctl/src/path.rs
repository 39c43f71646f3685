//! Management API paths: percent-encoding of the vhost and object names that
//! go into them.
//!
//! RabbitMQ's API takes every name as one path segment, so everything but
//! RFC 3986's unreserved characters is encoded, `/` included (the default
//! vhost `/` is `%2F`), and an empty name (the default exchange) stays empty.

use std::fmt::Write as _;

/// Percent-encodes `name` as a single path segment: every byte outside
/// `A-Z a-z 0-9 - . _ ~` becomes `%XX` (UTF-8 bytes, upper-case hex).
pub(crate) fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// `/api/` followed by the given segments, each percent-encoded, joined by
/// `/`: `api(&["queues", "/", "q1"])` is `/api/queues/%2F/q1`.
pub(crate) fn api(segments: &[&str]) -> String {
    let mut out = String::from("/api");
    for s in segments {
        out.push('/');
        out.push_str(&segment(s));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(segment(input), expected, "segment({input:?})");
    }

    #[test]
    fn unreserved_characters_stay() {
        check("orders-1.v2_x~y", "orders-1.v2_x~y");
        check("ABCxyz0189", "ABCxyz0189");
    }

    #[test]
    fn reserved_and_special_characters_are_encoded() {
        check("/", "%2F");
        check("a/b", "a%2Fb");
        check("my vhost", "my%20vhost");
        check("%", "%25");
        check("a?b#c&d=e+f", "a%3Fb%23c%26d%3De%2Bf");
        check("amq.gen-*", "amq.gen-%2A");
        check("", "");
    }

    #[test]
    fn non_ascii_is_encoded_as_utf8_bytes() {
        check("é", "%C3%A9");
        check("日", "%E6%97%A5");
    }

    #[test]
    fn api_paths_encode_each_segment() {
        assert_eq!(api(&["queues", "/", "q1"]), "/api/queues/%2F/q1");
        assert_eq!(
            api(&["exchanges", "/", "", "publish"]),
            "/api/exchanges/%2F//publish"
        );
        assert_eq!(api(&["overview"]), "/api/overview");
        assert_eq!(api(&["users", "a b/c"]), "/api/users/a%20b%2Fc");
    }
}
