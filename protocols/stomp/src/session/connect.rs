//! CONNECT / STOMP: version negotiation, login, virtual host and
//! heart-beats; answered by CONNECTED or by ERROR and close.

use super::{Phase, Session, errors};
use crate::codec::{Command, Frame, Version};
use std::net::{IpAddr, SocketAddr};
use switchyard_engine::{DEFAULT_VHOST, Refused};

/// Longest heart-beat interval agreed to (a day), in milliseconds.
const MAX_HEARTBEAT_MS: u64 = 86_400_000;

/// Parse `heart-beat: cx,cy`; anything malformed means no heart-beats.
fn parse_heartbeat(v: Option<&str>) -> Option<(u64, u64)> {
    let (a, b) = v?.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// Whether a `host` header is a server's name rather than a vhost's: an IP
/// address (with or without a port), `localhost`, or a dotted DNS name.
fn is_server_name(h: &str) -> bool {
    let bare = h
        .strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .map_or(h, |(ip, _)| ip);
    if bare.parse::<IpAddr>().is_ok() || h.parse::<SocketAddr>().is_ok() {
        return true;
    }
    let name = h.rsplit_once(':').map_or(
        h,
        |(n, port)| {
            if port.parse::<u16>().is_ok() { n } else { h }
        },
    );
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
    };
    name.eq_ignore_ascii_case("localhost")
        || (name.contains('.') && name.trim_end_matches('.').split('.').all(label))
}

impl Session {
    pub(super) fn connect(&mut self, frame: &Frame) {
        let receipt = frame.get("receipt");
        let version = match frame.get("accept-version") {
            None => Some(Version::V1_0),
            Some(list) => list.split(',').filter_map(Version::parse).max(),
        };
        let Some(version) = version else {
            return self.error(&errors::version_mismatch(), receipt);
        };
        self.version = version;

        // No login is the default user, as RabbitMQ's `default_user`.
        let user = frame.get("login").unwrap_or("guest");
        let pass = frame.get("passcode").unwrap_or("guest");
        let broker = self.shared.broker.clone();
        let user = match broker.authenticate(user, pass, self.peer.ip()) {
            Ok(id) => id.user,
            Err(Refused::BadCredentials) => {
                tracing::warn!(peer = %self.peer, %user, "STOMP login refused: invalid credentials");
                return self.error(&errors::access_refused(user), receipt);
            }
            Err(Refused::LoopbackOnly) => return self.error(&errors::loopback_only(), receipt),
        };
        // `host` names a vhost; a host name or address that names none is
        // the server's name (stomp.py and others fill it in) and means the
        // default vhost. Any other name is a vhost that does not exist.
        let vhost = match frame.get("host") {
            None | Some("") => broker.vhost(DEFAULT_VHOST),
            Some(h) => match broker.vhost(h) {
                Some(v) => Some(v),
                None if is_server_name(h) => broker.vhost(DEFAULT_VHOST),
                None => None,
            },
        };
        let Some(vhost) = vhost.filter(|v| broker.may_use_vhost(&user, &v.name)) else {
            let host = frame.get("host").unwrap_or(DEFAULT_VHOST);
            return self.error(&errors::vhost_denied(host), receipt);
        };
        self.vhost = Some(vhost);
        self.user = user;

        let (cx, cy) = if version == Version::V1_0 {
            (0, 0)
        } else {
            parse_heartbeat(frame.get("heart-beat")).unwrap_or((0, 0))
        };
        // Intervals beyond a day are taken as a day: no overflow, and a
        // peer cannot park a connection past any deadline.
        let min = self.config.min_heartbeat_ms;
        // Not `clamp`: it panics when a configured minimum exceeds the day.
        let clamp = |v: u64| v.max(min).min(MAX_HEARTBEAT_MS);
        let send_every = if cy > 0 { clamp(cy) } else { 0 };
        let expect_within = if cx > 0 { clamp(cx) } else { 0 };
        self.heartbeat = (send_every, expect_within);
        self.register();

        // Always with `heart-beat`, `0,0` for 1.0, as RabbitMQ answers.
        let connected = Frame::new(Command::Connected)
            .header("version", version.as_str())
            .header("server", concat!("Switchyard/", env!("CARGO_PKG_VERSION")))
            .header("session", format!("session-{}", self.conn_id))
            .header("heart-beat", format!("{send_every},{expect_within}"));
        self.send(&connected);
        self.phase = Phase::Connected;
    }
}

#[cfg(test)]
mod tests {
    use super::{is_server_name, parse_heartbeat};

    #[test]
    fn server_names_are_not_vhosts() {
        for h in [
            "127.0.0.1",
            "127.0.0.1:61613",
            "::1",
            "[::1]:61613",
            "localhost",
            "LOCALHOST:61613",
            "broker.example.com",
            "mq.internal.",
        ] {
            assert!(is_server_name(h), "{h}");
        }
        for h in ["/", "no-such-vhost", "dev", "a b.c", "/.x", "x..y", ""] {
            assert!(!is_server_name(h), "{h}");
        }
    }

    #[test]
    fn heartbeat_header() {
        assert_eq!(parse_heartbeat(Some("10,20")), Some((10, 20)));
        assert_eq!(parse_heartbeat(Some(" 0 , 5")), Some((0, 5)));
        assert_eq!(parse_heartbeat(Some("x,1")), None);
        assert_eq!(parse_heartbeat(None), None);
    }
}
