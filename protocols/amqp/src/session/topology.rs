//! Channel frames: dispatch by class, the channel class itself, and the
//! exchange and queue classes (topology changes through engine commands).

use super::Resource;
use super::Session;
use super::basic::DIRECT_REPLY_TO;
use crate::codec::Frame;
use crate::convert::table_in;
use crate::error::{AmqpError, ReplyCode};
use amq_protocol::protocol::{AMQPClass, access, channel, exchange, queue};
use amq_protocol::types::FieldTable as AmqpTable;
use switchyard_engine::exchange::Binding;
use switchyard_engine::{
    Command, DELAYED_TYPE, Destination, ExchangeKind, Outcome, PermissionKind, QueueSpec,
};

impl Session {
    pub(super) fn channel_frame(&mut self, frame: Frame) -> Result<(), AmqpError> {
        let id = match &frame {
            Frame::Method(c, _) | Frame::Header(c, _) | Frame::Body(c, _) | Frame::Heartbeat(c) => {
                *c
            }
        };
        if let Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Open(_))) = frame {
            self.open_channel(id)?;
            self.send(
                id,
                AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
            );
            return Ok(());
        }
        let ch = self.channel_mut(id)?;
        if ch.closing {
            // Until close-ok arrives everything else is discarded (spec).
            if let Frame::Method(_, AMQPClass::Channel(m)) = frame {
                match m {
                    channel::AMQPMethod::CloseOk(_) => {
                        self.channels.remove(&id);
                    }
                    channel::AMQPMethod::Close(_) => {
                        self.send(
                            id,
                            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                        );
                        self.channels.remove(&id);
                    }
                    _ => {}
                }
            }
            return Ok(());
        }
        let in_content = ch.incoming.is_some();
        match frame {
            Frame::Method(_, m) if in_content => Err(AmqpError::connection(
                ReplyCode::UNEXPECTED_FRAME,
                format!(
                    "expected content frame, got method {}/{}",
                    m.get_amqp_class_id(),
                    m.get_amqp_method_id()
                ),
            )),
            Frame::Method(_, m) => self.channel_method(id, m),
            Frame::Header(_, h) => self.content_header(id, h),
            Frame::Body(_, b) => self.content_body(id, b),
            Frame::Heartbeat(_) => Ok(()),
        }
    }

    fn channel_method(&mut self, id: u16, m: AMQPClass) -> Result<(), AmqpError> {
        let (class, method) = (m.get_amqp_class_id(), m.get_amqp_method_id());
        let r = match m {
            AMQPClass::Channel(m) => self.channel_class(id, m),
            AMQPClass::Exchange(m) => self.exchange_class(id, m),
            AMQPClass::Queue(m) => self.queue_class(id, m),
            AMQPClass::Basic(m) => self.basic_class(id, m),
            AMQPClass::Tx(m) => self.tx_class(id, m),
            AMQPClass::Confirm(m) => self.confirm_class(id, m),
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                let ok = access::RequestOk {};
                self.send(id, AMQPClass::Access(access::AMQPMethod::RequestOk(ok)));
                Ok(())
            }
            AMQPClass::Access(_) | AMQPClass::Connection(_) => Err(AmqpError::connection(
                ReplyCode::COMMAND_INVALID,
                "method not valid on a channel",
            )),
        };
        r.map_err(|e| {
            if e.class_id == 0 {
                e.at(class, method)
            } else {
                e
            }
        })
    }

    fn channel_class(&mut self, id: u16, m: channel::AMQPMethod) -> Result<(), AmqpError> {
        use channel::AMQPMethod as M;
        match m {
            M::Close(_) => {
                if let Some(mut ch) = self.channels.remove(&id) {
                    self.release_channel(&mut ch);
                }
                self.send(id, AMQPClass::Channel(M::CloseOk(channel::CloseOk {})));
                Ok(())
            }
            M::CloseOk(_) => Ok(()),
            M::Flow(f) if f.active => {
                self.send(
                    id,
                    AMQPClass::Channel(M::FlowOk(channel::FlowOk { active: true })),
                );
                Ok(())
            }
            M::Flow(_) => Err(AmqpError::connection(
                ReplyCode::NOT_IMPLEMENTED,
                "active=false",
            )),
            M::FlowOk(_) => Ok(()),
            M::Open(_) | M::OpenOk(_) => Err(AmqpError::connection(
                ReplyCode::CHANNEL_ERROR,
                format!("second 'channel.open' seen on channel {id}"),
            )),
        }
    }

    fn exchange_class(&mut self, id: u16, m: exchange::AMQPMethod) -> Result<(), AmqpError> {
        use exchange::AMQPMethod as M;
        let vhost = self.vhost()?.clone();
        match m {
            M::Declare(d) => {
                let name = d.exchange.as_str();
                if d.passive {
                    if !vhost.has_exchange(name) {
                        return Err(AmqpError::channel(
                            ReplyCode::NOT_FOUND,
                            format!("no exchange '{name}' in vhost '{}'", vhost.name),
                        ));
                    }
                } else {
                    self.permit(PermissionKind::Configure, Resource::Exchange, name)?;
                    let arguments = table_in(&d.arguments);
                    let kind = exchange_kind(d.kind.as_str(), &arguments)?;
                    vhost.apply(
                        Command::DeclareExchange {
                            name: name.to_owned(),
                            kind,
                            durable: d.durable,
                            auto_delete: d.auto_delete,
                            internal: d.internal,
                            arguments,
                        },
                        self.conn_id,
                    )?;
                }
                if !d.nowait {
                    self.send(
                        id,
                        AMQPClass::Exchange(M::DeclareOk(exchange::DeclareOk {})),
                    );
                }
            }
            M::Delete(d) => {
                let name = d.exchange.as_str().to_owned();
                self.permit(PermissionKind::Configure, Resource::Exchange, &name)?;
                match vhost.apply(
                    Command::DeleteExchange {
                        name,
                        if_unused: d.if_unused,
                    },
                    self.conn_id,
                ) {
                    // Deleting a missing exchange is fine (RabbitMQ 3.x).
                    Ok(_) | Err(switchyard_engine::EngineError::ExchangeNotFound(..)) => {}
                    Err(e) => return Err(e.into()),
                }
                if !d.nowait {
                    self.send(id, AMQPClass::Exchange(M::DeleteOk(exchange::DeleteOk {})));
                }
            }
            M::Bind(b) => {
                let dest = Destination::exchange(b.destination.as_str());
                self.bind(
                    true,
                    b.source.as_str(),
                    dest,
                    b.routing_key.as_str(),
                    &b.arguments,
                )?;
                if !b.nowait {
                    self.send(id, AMQPClass::Exchange(M::BindOk(exchange::BindOk {})));
                }
            }
            M::Unbind(b) => {
                let dest = Destination::exchange(b.destination.as_str());
                self.bind(
                    false,
                    b.source.as_str(),
                    dest,
                    b.routing_key.as_str(),
                    &b.arguments,
                )?;
                if !b.nowait {
                    self.send(id, AMQPClass::Exchange(M::UnbindOk(exchange::UnbindOk {})));
                }
            }
            M::DeclareOk(_) | M::DeleteOk(_) | M::BindOk(_) | M::UnbindOk(_) => {
                return Err(AmqpError::connection(
                    ReplyCode::COMMAND_INVALID,
                    "server method sent by client",
                ));
            }
        }
        Ok(())
    }

    /// Add (`bind`) or remove a binding from exchange `source`.
    fn bind(
        &mut self,
        bind: bool,
        source: &str,
        destination: Destination,
        routing_key: &str,
        arguments: &AmqpTable,
    ) -> Result<(), AmqpError> {
        let (dest_kind, dest_name) = match destination.kind {
            switchyard_engine::store::DestinationKind::Queue => {
                (Resource::Queue, &*destination.name)
            }
            switchyard_engine::store::DestinationKind::Exchange => {
                (Resource::Exchange, &*destination.name)
            }
        };
        self.permit(PermissionKind::Write, dest_kind, dest_name)?;
        self.permit(PermissionKind::Read, Resource::Exchange, source)?;
        let source = source.to_owned();
        let binding = Binding {
            destination,
            routing_key: routing_key.to_owned(),
            arguments: table_in(arguments),
        };
        let cmd = if bind {
            Command::Bind { source, binding }
        } else {
            Command::Unbind { source, binding }
        };
        self.vhost()?.clone().apply(cmd, self.conn_id)?;
        Ok(())
    }

    /// Empty queue names mean "the last queue declared on this channel".
    pub(super) fn queue_name(&mut self, id: u16, name: &str) -> Result<String, AmqpError> {
        if !name.is_empty() {
            return Ok(name.to_owned());
        }
        self.channel_mut(id)?
            .last_queue
            .clone()
            .ok_or_else(|| AmqpError::channel(ReplyCode::NOT_FOUND, "no previously declared queue"))
    }

    fn queue_class(&mut self, id: u16, m: queue::AMQPMethod) -> Result<(), AmqpError> {
        use queue::AMQPMethod as M;
        let vhost = self.vhost()?.clone();
        let conn = self.conn_id;
        match m {
            M::Declare(d) => {
                let (name, messages, consumers) = if d.passive {
                    let name = self.queue_name(id, d.queue.as_str())?;
                    let q = vhost.queue(&name, conn)?;
                    // Renews an `x-expires` lease, as RabbitMQ's stat does.
                    q.touch();
                    let (m, c) = q.counts();
                    (name, m, c)
                } else {
                    if d.queue.as_str().starts_with(DIRECT_REPLY_TO) {
                        return Err(AmqpError::channel(
                            ReplyCode::ACCESS_REFUSED,
                            format!(
                                "queue name '{}' is reserved for direct reply-to",
                                d.queue.as_str()
                            ),
                        ));
                    }
                    let named = !d.queue.as_str().is_empty();
                    if named {
                        self.permit(PermissionKind::Configure, Resource::Queue, d.queue.as_str())?;
                    }
                    let spec = QueueSpec {
                        name: d.queue.as_str().to_owned(),
                        durable: d.durable,
                        exclusive_owner: d.exclusive.then_some(conn),
                        auto_delete: d.auto_delete,
                        arguments: table_in(&d.arguments),
                    };
                    let declared = match vhost.apply(Command::DeclareQueue(spec), conn)? {
                        Outcome::Queue {
                            name,
                            messages,
                            consumers,
                        } => (name, messages, consumers),
                        _ => unreachable!("DeclareQueue always yields Outcome::Queue"),
                    };
                    // A server-named queue is checked by the name it got
                    // (as RabbitMQ does); refused, it goes again at once.
                    if !named
                        && let Err(e) =
                            self.permit(PermissionKind::Configure, Resource::Queue, &declared.0)
                    {
                        let _ = vhost.apply(
                            Command::DeleteQueue {
                                name: declared.0,
                                if_unused: false,
                                if_empty: false,
                            },
                            conn,
                        );
                        return Err(e);
                    }
                    declared
                };
                self.channel_mut(id)?.last_queue = Some(name.clone());
                if !d.nowait {
                    let ok = queue::DeclareOk {
                        queue: name.into(),
                        message_count: messages,
                        consumer_count: consumers,
                    };
                    self.send(id, AMQPClass::Queue(M::DeclareOk(ok)));
                }
            }
            M::Bind(b) => {
                let name = self.queue_name(id, b.queue.as_str())?;
                let dest = Destination::queue(&name);
                self.bind(
                    true,
                    b.exchange.as_str(),
                    dest,
                    b.routing_key.as_str(),
                    &b.arguments,
                )?;
                if !b.nowait {
                    self.send(id, AMQPClass::Queue(M::BindOk(queue::BindOk {})));
                }
            }
            M::Unbind(b) => {
                let name = self.queue_name(id, b.queue.as_str())?;
                let dest = Destination::queue(&name);
                self.bind(
                    false,
                    b.exchange.as_str(),
                    dest,
                    b.routing_key.as_str(),
                    &b.arguments,
                )?;
                self.send(id, AMQPClass::Queue(M::UnbindOk(queue::UnbindOk {})));
            }
            M::Purge(p) => {
                let name = self.queue_name(id, p.queue.as_str())?;
                self.permit(PermissionKind::Read, Resource::Queue, &name)?;
                let n = match vhost.apply(Command::PurgeQueue { name }, conn)? {
                    Outcome::Messages(n) => n,
                    _ => 0,
                };
                if !p.nowait {
                    self.send(
                        id,
                        AMQPClass::Queue(M::PurgeOk(queue::PurgeOk { message_count: n })),
                    );
                }
            }
            M::Delete(d) => {
                let name = self.queue_name(id, d.queue.as_str())?;
                self.permit(PermissionKind::Configure, Resource::Queue, &name)?;
                let cmd = Command::DeleteQueue {
                    name,
                    if_unused: d.if_unused,
                    if_empty: d.if_empty,
                };
                let n = match vhost.apply(cmd, conn) {
                    Ok(Outcome::Messages(n)) => n,
                    Ok(_) => 0,
                    // Deleting a missing queue succeeds with 0 (RabbitMQ 3.x).
                    Err(switchyard_engine::EngineError::QueueNotFound(..)) => 0,
                    Err(e) => return Err(e.into()),
                };
                if !d.nowait {
                    self.send(
                        id,
                        AMQPClass::Queue(M::DeleteOk(queue::DeleteOk { message_count: n })),
                    );
                }
            }
            M::DeclareOk(_) | M::BindOk(_) | M::PurgeOk(_) | M::DeleteOk(_) | M::UnbindOk(_) => {
                return Err(AmqpError::connection(
                    ReplyCode::COMMAND_INVALID,
                    "server method sent by client",
                ));
            }
        }
        Ok(())
    }
}

/// The routing kind of an `exchange.declare` type: the four built-in
/// types, or `x-delayed-message` (the delayed-message plugin's type), which
/// routes like its `x-delayed-type` argument and holds messages with an
/// `x-delay` header (see the engine's `delayed` module).
fn exchange_kind(
    kind: &str,
    arguments: &switchyard_model::FieldTable,
) -> Result<ExchangeKind, AmqpError> {
    let delayed_type = arguments.get(DELAYED_TYPE);
    if kind == "x-delayed-message" {
        return delayed_type
            .and_then(switchyard_model::FieldValue::as_str)
            .and_then(ExchangeKind::parse)
            .ok_or_else(|| {
                AmqpError::channel(
                    ReplyCode::PRECONDITION_FAILED,
                    "Invalid argument, 'x-delayed-type' must be an existing exchange type",
                )
            });
    }
    let parsed = ExchangeKind::parse(kind).ok_or_else(|| {
        AmqpError::connection(
            ReplyCode::COMMAND_INVALID,
            format!("invalid exchange type '{kind}'"),
        )
    })?;
    if delayed_type.is_some() {
        return Err(AmqpError::channel(
            ReplyCode::PRECONDITION_FAILED,
            format!(
                "'x-delayed-type' applies to exchanges of type 'x-delayed-message', not '{kind}'"
            ),
        ));
    }
    Ok(parsed)
}
