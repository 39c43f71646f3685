//! A minimal blocking HTTP/1.1 client for the management API: one request
//! per connection (`Connection: close`), basic authentication, JSON bodies.
//! Every read and write is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Bound on connecting, and on each read and write.
const STEP: Duration = Duration::from_secs(15);

/// A response: status and body (parsed as JSON when it is JSON).
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: String,
}

impl Response {
    /// The body as JSON (panics if it is not).
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Percent-encodes a path segment (`/` is `%2F`).
pub(crate) fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends `method path` with `body` as `user:pass` and returns the answer.
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: (&str, &str),
    body: Option<&serde_json::Value>,
) -> Response {
    use base64::Engine as _;
    let mut s = TcpStream::connect_timeout(&addr, STEP)
        .unwrap_or_else(|e| panic!("connect to the management API at {addr}: {e}"));
    s.set_read_timeout(Some(STEP)).expect("read timeout");
    s.set_write_timeout(Some(STEP)).expect("write timeout");
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", auth.0, auth.1));
    let payload = body.map(ToString::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {credentials}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    s.write_all(request.as_bytes()).expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Response {
        status,
        body: body.to_owned(),
    }
}
