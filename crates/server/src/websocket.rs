//! The WebSocket listeners: Web-STOMP and Web-MQTT, as RabbitMQ's plugins
//! serve them (path `/ws`).
//!
//! Each accepted socket does the HTTP upgrade (right path, one of the
//! protocol's subprotocols when the client offers any), then its message
//! stream is bridged to an in-memory byte pipe that the protocol's own
//! connection task reads and writes exactly as it would a TCP socket. The
//! bridge concatenates message payloads, so protocol frames may span or
//! share WebSocket messages. The pipe is bounded, and the two directions
//! are pumped independently, so backpressure reaches the socket both ways
//! and neither direction can stall the other.

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchyard_listener::Endpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{WebSocketStream, accept_hdr_async_with_config};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Path both listeners serve.
const PATH: &str = "/ws";
/// Bytes buffered between the WebSocket and the protocol task, each way.
const PIPE: usize = 256 * 1024;
/// After the protocol side ends, how long the client gets to close.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What runs behind a WebSocket listener.
#[derive(Clone)]
pub(crate) enum Backend {
    /// Web-STOMP.
    Stomp(Arc<switchyard_stomp::Shared>, switchyard_stomp::StompConfig),
    /// Web-MQTT.
    Mqtt(Arc<switchyard_mqtt::Shared>, switchyard_mqtt::MqttConfig),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Self::Stomp(..) => "web-stomp",
            Self::Mqtt(..) => "web-mqtt",
        }
    }

    fn subprotocols(&self) -> &'static [&'static str] {
        match self {
            Self::Stomp(..) => &["v12.stomp", "v11.stomp", "v10.stomp", "stomp"],
            Self::Mqtt(..) => &["mqtt", "mqttv3.1"],
        }
    }

    fn max_connections(&self) -> usize {
        match self {
            Self::Stomp(_, c) => c.max_connections,
            Self::Mqtt(_, c) => c.max_connections,
        }
    }

    fn max_connections_per_ip(&self) -> usize {
        match self {
            Self::Stomp(_, c) => c.max_connections_per_ip,
            Self::Mqtt(_, c) => c.max_connections_per_ip,
        }
    }

    fn recv_buffer(&self) -> Option<usize> {
        match self {
            Self::Stomp(_, c) => c.recv_buffer,
            Self::Mqtt(_, c) => c.recv_buffer,
        }
    }

    fn connect_timeout(&self) -> Duration {
        match self {
            Self::Stomp(_, c) => c.connect_timeout,
            Self::Mqtt(_, c) => c.connect_timeout,
        }
    }

    /// Largest WebSocket message accepted: a whole frame of the protocol.
    fn max_message(&self) -> usize {
        let body = match self {
            Self::Stomp(_, c) => {
                c.limits.max_body + c.limits.max_headers * c.limits.max_header_length
            }
            Self::Mqtt(_, c) => c.max_packet_size,
        };
        body.saturating_add(64 * 1024)
    }

    /// Whether this protocol's output may go out as text messages.
    fn text(&self) -> bool {
        matches!(self, Self::Stomp(..))
    }

    async fn run(
        self,
        rd: ReadHalf<DuplexStream>,
        wr: WriteHalf<DuplexStream>,
        peer: SocketAddr,
        endpoint: Endpoint,
        shutdown: CancellationToken,
    ) {
        match self {
            Self::Stomp(shared, config) => {
                switchyard_stomp::conn::run(rd, wr, peer, endpoint, shared, &config, shutdown)
                    .await;
            }
            Self::Mqtt(shared, config) => {
                switchyard_mqtt::conn::run(rd, wr, peer, endpoint, shared, &config, shutdown).await;
            }
        }
    }
}

/// Accept WebSocket clients on `listener` until `shutdown` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    backend: Backend,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limits = switchyard_listener::Limits {
        max_connections: backend.max_connections(),
        max_per_address: backend.max_connections_per_ip(),
        recv_buffer: backend.recv_buffer(),
    };
    let stop = shutdown.clone();
    let name = backend.name();
    switchyard_listener::accept_loop(listener, name, limits, stop, tracker, |stream, peer| {
        let (backend, shutdown) = (backend.clone(), shutdown.clone());
        async move { connection(stream, peer, backend, shutdown).await }
    })
    .await;
}

/// Pick the first subprotocol the client offers that we speak. `Ok(None)`:
/// the client offered none.
fn choose_subprotocol<'a>(
    offered: Option<&HeaderValue>,
    ours: &[&'a str],
) -> Result<Option<&'a str>, ()> {
    let Some(offered) = offered else {
        return Ok(None);
    };
    let offered = offered.to_str().map_err(|_| ())?;
    offered
        .split(',')
        .map(str::trim)
        .find_map(|p| ours.iter().find(|o| o.eq_ignore_ascii_case(p)).copied())
        .map(Some)
        .ok_or(())
}

fn reject(status: StatusCode, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_owned()));
    *r.status_mut() = status;
    r
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    backend: Backend,
    shutdown: CancellationToken,
) {
    let ours = backend.subprotocols();
    let endpoint = Endpoint {
        local: stream.local_addr().ok(),
        web: true,
    };
    // The error type is tungstenite's (an HTTP response); it cannot be boxed.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, mut resp: Response| {
        if req.uri().path() != PATH {
            return Err(reject(StatusCode::NOT_FOUND, "not found: use /ws"));
        }
        let offered = req.headers().get("sec-websocket-protocol");
        match choose_subprotocol(offered, ours) {
            Ok(Some(p)) => {
                resp.headers_mut()
                    .insert("sec-websocket-protocol", HeaderValue::from_static(p));
                Ok(resp)
            }
            Ok(None) => Ok(resp),
            Err(()) => Err(reject(
                StatusCode::BAD_REQUEST,
                "no supported WebSocket subprotocol offered",
            )),
        }
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(backend.max_message()))
        .max_frame_size(Some(backend.max_message()));
    let handshake = accept_hdr_async_with_config(stream, callback, Some(config));
    let ws = match tokio::time::timeout(backend.connect_timeout(), handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::info!(%peer, protocol = backend.name(), error = %e, "WebSocket handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, protocol = backend.name(), "WebSocket handshake timed out");
            return;
        }
    };
    let (ours_end, protocol_end) = tokio::io::duplex(PIPE);
    let (prd, pwr) = tokio::io::split(protocol_end);
    let text = backend.text();
    let protocol = backend.run(prd, pwr, peer, endpoint, shutdown);
    let bridge = bridge(ws, ours_end, text);
    tokio::join!(protocol, bridge);
}

/// Pump messages into the pipe and pipe bytes out as messages until both
/// sides are done.
async fn bridge(ws: WebSocketStream<TcpStream>, pipe: DuplexStream, text: bool) {
    let (mut sink, mut stream) = ws.split();
    let (mut from_protocol, mut to_protocol) = tokio::io::split(pipe);
    let inbound = async move {
        while let Some(msg) = stream.next().await {
            let data = match msg {
                Ok(Message::Binary(b)) => b,
                Ok(Message::Text(t)) => Bytes::from(t),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            if to_protocol.write_all(&data).await.is_err() {
                break;
            }
        }
        // The protocol task sees end-of-stream, as on a closed socket.
        let _ = to_protocol.shutdown().await;
    };
    let outbound = async move {
        let mut buf = Vec::with_capacity(16 * 1024);
        loop {
            buf.clear();
            match from_protocol.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let msg = match std::str::from_utf8(&buf) {
                Ok(s) if text => Message::text(s),
                _ => Message::binary(buf.clone()),
            };
            if sink.send(msg).await.is_err() {
                return;
            }
        }
        // A normal closure (1000), as RabbitMQ's plugins send.
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
        let _ = sink.close().await;
    };
    tokio::pin!(inbound, outbound);
    tokio::select! {
        () = &mut inbound => outbound.await,
        () = &mut outbound => {
            let _ = tokio::time::timeout(CLOSE_GRACE, inbound).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subprotocol_choice() {
        let ours = ["v12.stomp", "v11.stomp"];
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(choose_subprotocol(None, &ours), Ok(None));
        assert_eq!(
            choose_subprotocol(Some(&h("v10.stomp, v11.stomp, v12.stomp")), &ours),
            Ok(Some("v11.stomp"))
        );
        assert_eq!(choose_subprotocol(Some(&h("mqtt")), &ours), Err(()));
    }
}
