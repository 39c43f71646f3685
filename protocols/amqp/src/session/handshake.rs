//! Connection class: protocol header, start/tune/open, authentication and
//! connection close.

use super::{Phase, Session};
use crate::channel::Channel;
use crate::codec::{Encoder, MIN_FRAME_MAX, PROTOCOL_HEADER};
use crate::error::{AmqpError, ReplyCode};
use amq_protocol::protocol::{AMQPClass, connection};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use switchyard_engine::Refused;
use switchyard_engine::connections::NewConnection;

const PRODUCT: &str = "Switchyard";

impl Session {
    /// Handle the 8-byte protocol header. A header we do not speak gets ours
    /// back and the connection ends (spec 4.2.2).
    pub fn handle_protocol_header(&mut self, header: &[u8; 8]) {
        if self.phase != Phase::Header {
            return;
        }
        if header != PROTOCOL_HEADER {
            Encoder::protocol_header(&mut self.out);
            self.phase = Phase::Closed;
            return;
        }
        let mut caps = FieldTable::default();
        for cap in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "authentication_failure_close",
            "per_consumer_qos",
            "consumer_priorities",
        ] {
            caps.insert(cap.into(), AMQPValue::Boolean(true));
        }
        let mut props = FieldTable::default();
        let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
        props.insert("product".into(), text(PRODUCT));
        props.insert("version".into(), text(env!("CARGO_PKG_VERSION")));
        props.insert("platform".into(), text("Rust"));
        props.insert("copyright".into(), text("The Switchyard authors"));
        props.insert(
            "information".into(),
            text("https://example.invalid/switchyard"),
        );
        props.insert("cluster_name".into(), text("switchyard"));
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        let start = connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: props,
            mechanisms: "PLAIN AMQPLAIN".into(),
            locales: "en_US".into(),
        };
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(start)),
        );
        self.phase = Phase::StartOk;
    }

    pub(super) fn connection_method(&mut self, m: AMQPClass) -> Result<(), AmqpError> {
        let AMQPClass::Connection(m) = m else {
            return Err(AmqpError::connection(
                ReplyCode::COMMAND_INVALID,
                "only connection methods are valid on channel 0",
            ));
        };
        use connection::AMQPMethod as M;
        match (self.phase, m) {
            (Phase::StartOk, M::StartOk(ok)) => self.start_ok(ok),
            (Phase::TuneOk, M::TuneOk(ok)) => self.tune_ok(ok),
            (Phase::Open, M::Open(open)) => self.open(open),
            (_, M::Close(_)) => {
                self.send(0, AMQPClass::Connection(M::CloseOk(connection::CloseOk {})));
                self.phase = Phase::Closed;
                self.release();
                Ok(())
            }
            (Phase::Running, M::Blocked(_) | M::Unblocked(_)) => Ok(()),
            (Phase::Running, M::UpdateSecret(_)) => {
                self.send(
                    0,
                    AMQPClass::Connection(M::UpdateSecretOk(connection::UpdateSecretOk {})),
                );
                Ok(())
            }
            (_, m) => {
                let method = AMQPClass::Connection(m).get_amqp_method_id();
                Err(AmqpError::connection(
                    ReplyCode::COMMAND_INVALID,
                    format!("unexpected connection method 10/{method}"),
                )
                .at(10, method))
            }
        }
    }

    /// After we sent `connection.close`: only close / close-ok matter.
    pub(super) fn closing_method(&mut self, m: AMQPClass) -> Result<(), AmqpError> {
        use connection::AMQPMethod as M;
        match m {
            AMQPClass::Connection(M::CloseOk(_)) => self.phase = Phase::Closed,
            AMQPClass::Connection(M::Close(_)) => {
                self.send(0, AMQPClass::Connection(M::CloseOk(connection::CloseOk {})));
                self.phase = Phase::Closed;
            }
            _ => {}
        }
        Ok(())
    }

    fn start_ok(&mut self, ok: connection::StartOk) -> Result<(), AmqpError> {
        if let Some(AMQPValue::FieldTable(caps)) = ok.client_properties.inner().get("capabilities")
        {
            let has = |k: &str| matches!(caps.inner().get(k), Some(AMQPValue::Boolean(true)));
            self.cancel_notify = has("consumer_cancel_notify");
            self.blocked_notify = has("connection.blocked");
        }
        self.registry.client_properties = crate::convert::table_in(&ok.client_properties);
        self.client_name = match ok.client_properties.inner().get("connection_name") {
            Some(AMQPValue::LongString(s)) => {
                Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
            }
            Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
            _ => None,
        };
        let credentials = match ok.mechanism.as_str() {
            "PLAIN" => plain(ok.response.as_bytes()),
            "AMQPLAIN" => amqplain(ok.response.as_bytes()),
            other => {
                return self.refuse(format!("unsupported authentication mechanism '{other}'"));
            }
        };
        let Some((user, pass)) = credentials else {
            return self.refuse(format!("malformed {} response", ok.mechanism));
        };
        match self.broker.authenticate(&user, &pass, self.peer.ip()) {
            Ok(id) => self.user = id.user,
            Err(Refused::BadCredentials) => {
                tracing::warn!(peer = %self.peer, %user, "AMQP login refused: invalid credentials");
                return self.refuse(format!(
                    "Login was refused using authentication mechanism {}. For details see the broker logfile.",
                    ok.mechanism
                ));
            }
            Err(Refused::LoopbackOnly) => {
                return self.refuse(format!("user '{user}' can only connect via localhost"));
            }
        }
        let tune = connection::Tune {
            channel_max: self.config.channel_max,
            frame_max: self.config.frame_max,
            heartbeat: self.config.heartbeat,
        };
        self.send(0, AMQPClass::Connection(connection::AMQPMethod::Tune(tune)));
        self.phase = Phase::TuneOk;
        Ok(())
    }

    /// Authentication failure: `authentication_failure_close` semantics —
    /// a 403 connection.close the client can read, then hang up.
    fn refuse(&mut self, text: String) -> Result<(), AmqpError> {
        tracing::info!(peer = %self.peer, %text, "authentication refused");
        let e = AmqpError::connection(ReplyCode::ACCESS_REFUSED, text);
        let close = connection::Close {
            reply_code: e.code.0,
            reply_text: e.reply_text().into(),
            class_id: 10,
            method_id: 11,
        };
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(close)),
        );
        self.phase = Phase::Closed;
        Ok(())
    }

    fn tune_ok(&mut self, ok: connection::TuneOk) -> Result<(), AmqpError> {
        let frame_max = if ok.frame_max == 0 {
            self.config.frame_max
        } else {
            ok.frame_max
        };
        if frame_max > self.config.frame_max || frame_max < MIN_FRAME_MAX {
            return Err(AmqpError::connection(
                ReplyCode::NOT_ALLOWED,
                format!(
                    "negotiated frame_max = {frame_max} is outside {MIN_FRAME_MAX}..={}",
                    self.config.frame_max
                ),
            ));
        }
        let channel_max = if ok.channel_max == 0 {
            self.config.channel_max
        } else {
            ok.channel_max
        };
        if channel_max > self.config.channel_max {
            return Err(AmqpError::connection(
                ReplyCode::NOT_ALLOWED,
                format!(
                    "negotiated channel_max = {channel_max} is higher than the maximum allowed value ({})",
                    self.config.channel_max
                ),
            ));
        }
        self.frame_max = frame_max;
        self.channel_max = channel_max;
        self.heartbeat = ok.heartbeat;
        self.phase = Phase::Open;
        Ok(())
    }

    fn open(&mut self, open: connection::Open) -> Result<(), AmqpError> {
        let name = open.virtual_host.as_str();
        let Some(vhost) = self.broker.vhost(name) else {
            return Err(AmqpError::connection(
                ReplyCode::NOT_ALLOWED,
                format!("vhost {name} not found"),
            )
            .at(10, 40));
        };
        if !self.broker.may_use_vhost(&self.user, name) {
            return Err(AmqpError::connection(
                ReplyCode::NOT_ALLOWED,
                format!("access to vhost '{name}' refused for user '{}'", self.user),
            )
            .at(10, 40));
        }
        self.vhost = Some(vhost);
        self.registry.register(NewConnection {
            protocol: "AMQP 0-9-1",
            user: self.user.clone(),
            vhost: name.to_owned(),
            client_id: self.client_name.take(),
            timeout: u64::from(self.heartbeat),
        });
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
        );
        self.phase = Phase::Running;
        tracing::debug!(conn = self.conn_id, peer = %self.peer, user = %self.user, vhost = name, "connection open");
        Ok(())
    }

    pub(super) fn open_channel(&mut self, id: u16) -> Result<(), AmqpError> {
        if id > self.channel_max {
            return Err(AmqpError::connection(
                ReplyCode::NOT_ALLOWED,
                format!("channel {id} exceeds channel_max {}", self.channel_max),
            )
            .at(20, 10));
        }
        if self.channels.contains_key(&id) {
            return Err(AmqpError::connection(
                ReplyCode::CHANNEL_ERROR,
                format!("second 'channel.open' seen on channel {id}"),
            )
            .at(20, 10));
        }
        self.next_epoch += 1;
        let channel = Channel::new(self.next_epoch, self.config.max_unacked_per_channel);
        self.channels.insert(id, channel);
        Ok(())
    }
}

/// PLAIN: `[authzid] NUL authcid NUL passwd`.
fn plain(resp: &[u8]) -> Option<(String, String)> {
    let mut parts = resp.split(|b| *b == 0);
    let _authz = parts.next()?;
    let user = std::str::from_utf8(parts.next()?).ok()?;
    let pass = std::str::from_utf8(parts.next()?).ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((user.to_owned(), pass.to_owned()))
}

/// AMQPLAIN: a field table without its length prefix, keys LOGIN/PASSWORD.
fn amqplain(resp: &[u8]) -> Option<(String, String)> {
    let len = u32::try_from(resp.len()).ok()?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(resp);
    let (_, table) = amq_protocol::types::parsing::parse_field_table(&framed[..]).ok()?;
    let get = |k: &str| match table.inner().get(k)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    };
    Some((get("LOGIN")?, get("PASSWORD")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_amqplain() {
        assert_eq!(
            plain(b"\0guest\0guest"),
            Some(("guest".into(), "guest".into()))
        );
        assert_eq!(plain(b"guest"), None);
        let mut t = FieldTable::default();
        t.insert("LOGIN".into(), AMQPValue::LongString("guest".into()));
        t.insert("PASSWORD".into(), AMQPValue::LongString("pw".into()));
        let ctx = amq_protocol::types::generation::gen_field_table(&t)(
            amq_protocol::frame::WriteContext::from(Vec::new()),
        );
        let buf = ctx.map(|c| c.write).unwrap_or_default();
        assert_eq!(amqplain(&buf[4..]), Some(("guest".into(), "pw".into())));
    }
}
