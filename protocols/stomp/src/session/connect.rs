//! CONNECT / STOMP: version negotiation, login, virtual host and
//! heart-beats; answered by CONNECTED or by ERROR and close.

use super::{Phase, Session, StompError};
use crate::codec::{Command, Frame, Version};
use switchyard_engine::DEFAULT_VHOST;

/// Longest heart-beat interval agreed to (a day), in milliseconds.
const MAX_HEARTBEAT_MS: u64 = 86_400_000;

/// Versions offered in an ERROR when none the client accepts is supported.
const SUPPORTED: &str = "1.0,1.1,1.2";

/// Parse `heart-beat: cx,cy`; anything malformed means no heart-beats.
fn parse_heartbeat(v: Option<&str>) -> Option<(u64, u64)> {
    let (a, b) = v?.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

impl Session {
    pub(super) fn connect(&mut self, frame: &Frame) {
        let receipt = frame.get("receipt");
        let version = match frame.get("accept-version") {
            None => Some(Version::V1_0),
            Some(list) => list.split(',').filter_map(Version::parse).max(),
        };
        let Some(version) = version else {
            // Answer in 1.0 framing, listing what we do speak.
            let detail = format!(
                "none of the versions {:?} is supported; supported: {SUPPORTED}",
                frame.get("accept-version").unwrap_or_default()
            );
            let mut e = Frame::new(Command::Error)
                .header("version", SUPPORTED)
                .header("message", "unsupported version")
                .header("content-type", "text/plain")
                .header("content-length", detail.len().to_string());
            e.body = detail.into();
            self.send(&e);
            self.phase = Phase::Closed;
            return;
        };
        self.version = version;

        // No login is the default user, as RabbitMQ's `default_user`.
        let user = frame.get("login").unwrap_or("guest");
        let pass = frame.get("passcode").unwrap_or("guest");
        if user != "guest" || pass != "guest" {
            let e = StompError::new("access_refused", "login or passcode not accepted");
            return self.error(&e, receipt);
        }
        if !self.peer.ip().is_loopback() {
            let e = StompError::new(
                "access_refused",
                "user 'guest' may only connect via localhost",
            );
            return self.error(&e, receipt);
        }
        // `host` selects a vhost when one has that name; otherwise it is the
        // server's host name (as stomp.py and stompjs fill it in) and the
        // default vhost is used.
        let broker = &self.shared.broker;
        let vhost = frame
            .get("host")
            .and_then(|h| broker.vhost(h))
            .or_else(|| broker.vhost(DEFAULT_VHOST));
        let Some(vhost) = vhost else {
            let e = StompError::new("not_found", "no virtual host");
            return self.error(&e, receipt);
        };
        self.vhost = Some(vhost);
        self.user = user.to_owned();

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

        let mut connected = Frame::new(Command::Connected)
            .header("version", version.as_str())
            .header("server", concat!("Switchyard/", env!("CARGO_PKG_VERSION")))
            .header("session", format!("session-{}", self.conn_id));
        if version >= Version::V1_1 {
            connected = connected.header("heart-beat", format!("{send_every},{expect_within}"));
        }
        self.send(&connected);
        self.phase = Phase::Connected;
    }
}

#[cfg(test)]
mod tests {
    use super::parse_heartbeat;

    #[test]
    fn heartbeat_header() {
        assert_eq!(parse_heartbeat(Some("10,20")), Some((10, 20)));
        assert_eq!(parse_heartbeat(Some(" 0 , 5")), Some((0, 5)));
        assert_eq!(parse_heartbeat(Some("x,1")), None);
        assert_eq!(parse_heartbeat(None), None);
    }
}
