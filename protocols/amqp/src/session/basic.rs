//! The basic, tx and confirm classes: publishing (content assembly,
//! mandatory returns, confirms, transactions), consuming, qos and
//! acknowledgements.

use super::{Resource, Session};
use crate::channel::{Incoming, PendingConfirm, TxBuffer};
use crate::convert::{delivery_out, properties_in, properties_out, table_in};
use crate::error::{AmqpError, ReplyCode};
use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::{AMQPClass, basic, confirm, tx};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use switchyard_engine::connections::MessageCounters;
use switchyard_engine::{Consumer, ConsumerSpec, PermissionKind, QueueSpec, Settle, Unsettled};
use switchyard_model::{FieldTable, Message};

/// The pseudo-queue of direct reply-to.
pub(super) const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";
/// The channel queues behind it: `amq.rabbitmq.reply-to.<conn>.<channel>.<suffix>`.
const DIRECT_REPLY_TO_PREFIX: &str = "amq.rabbitmq.reply-to.";

/// Publishes (and separately, acknowledgements) one transaction may buffer;
/// a bound so a client cannot grow broker memory without limit.
const TX_MAX_PUBLISHES: usize = 65_536;

impl Session {
    pub(super) fn basic_class(&mut self, id: u16, m: basic::AMQPMethod) -> Result<(), AmqpError> {
        use basic::AMQPMethod as M;
        match m {
            M::Publish(p) => self.start_publish(id, p),
            M::Consume(c) => self.consume(id, c),
            M::Cancel(c) => self.cancel(id, c),
            M::Qos(q) => {
                let ch = self.channel_mut(id)?;
                if q.global {
                    ch.set_global_prefetch(q.prefetch_count);
                } else {
                    ch.consumer_prefetch = u32::from(q.prefetch_count);
                }
                for q in ch.consumed_queues() {
                    q.dispatch();
                }
                self.send(id, AMQPClass::Basic(M::QosOk(basic::QosOk {})));
                Ok(())
            }
            M::Get(g) => self.get(id, g),
            M::Ack(a) => self.settle(id, a.delivery_tag, a.multiple, Settle::Ack),
            M::Nack(n) => {
                let how = if n.requeue {
                    Settle::Requeue
                } else {
                    Settle::Reject
                };
                self.settle(id, n.delivery_tag, n.multiple, how)
            }
            M::Reject(r) => {
                let how = if r.requeue {
                    Settle::Requeue
                } else {
                    Settle::Reject
                };
                self.settle(id, r.delivery_tag, false, how)
            }
            M::Recover(r) => {
                self.recover(id, r.requeue)?;
                self.send(id, AMQPClass::Basic(M::RecoverOk(basic::RecoverOk {})));
                Ok(())
            }
            M::RecoverAsync(r) => self.recover(id, r.requeue),
            M::QosOk(_)
            | M::ConsumeOk(_)
            | M::CancelOk(_)
            | M::Return(_)
            | M::Deliver(_)
            | M::GetOk(_)
            | M::GetEmpty(_)
            | M::RecoverOk(_) => Err(AmqpError::connection(
                ReplyCode::COMMAND_INVALID,
                "server method sent by client",
            )),
        }
    }

    fn start_publish(&mut self, id: u16, p: basic::Publish) -> Result<(), AmqpError> {
        if p.immediate {
            return Err(AmqpError::connection(
                ReplyCode::NOT_IMPLEMENTED,
                "immediate=true",
            ));
        }
        let ch = self.channel_mut(id)?;
        ch.incoming = Some(Incoming {
            publish: p,
            header: None,
            body: BytesMut::new(),
            single: None,
        });
        Ok(())
    }

    pub(super) fn content_header(
        &mut self,
        id: u16,
        h: AMQPContentHeader,
    ) -> Result<(), AmqpError> {
        let max = self.config.max_message_size;
        let ch = self.channel_mut(id)?;
        let Some(inc) = ch.incoming.as_mut().filter(|i| i.header.is_none()) else {
            return Err(AmqpError::connection(
                ReplyCode::UNEXPECTED_FRAME,
                format!("unexpected content header on channel {id}"),
            ));
        };
        if h.class_id != 60 {
            return Err(AmqpError::connection(
                ReplyCode::UNEXPECTED_FRAME,
                format!("content header for class {} on channel {id}", h.class_id),
            ));
        }
        if h.body_size > max {
            ch.incoming = None;
            return Err(AmqpError::channel(
                ReplyCode::PRECONDITION_FAILED,
                format!(
                    "message size {} is larger than configured max size {max}",
                    h.body_size
                ),
            )
            .at(60, 40));
        }
        inc.header = Some((properties_in(&h.properties), h.body_size));
        if h.body_size == 0 {
            return self.finish_publish(id);
        }
        Ok(())
    }

    pub(super) fn content_body(&mut self, id: u16, b: Bytes) -> Result<(), AmqpError> {
        let ch = self.channel_mut(id)?;
        let Some(inc) = ch.incoming.as_mut() else {
            return Err(AmqpError::connection(
                ReplyCode::UNEXPECTED_FRAME,
                format!("unexpected content body on channel {id}"),
            ));
        };
        let Some((_, size)) = inc.header else {
            return Err(AmqpError::connection(
                ReplyCode::UNEXPECTED_FRAME,
                "content body before content header",
            ));
        };
        let have = inc.body.len() + inc.single.as_ref().map_or(0, Bytes::len);
        let total = (have + b.len()) as u64;
        if total > size {
            return Err(AmqpError::connection(
                ReplyCode::FRAME_ERROR,
                format!("content body exceeds declared size {size}"),
            ));
        }
        if have == 0 && b.len() as u64 == size {
            inc.single = Some(b);
        } else {
            if let Some(first) = inc.single.take() {
                inc.body.extend_from_slice(&first);
            }
            inc.body.extend_from_slice(&b);
        }
        if total == size {
            return self.finish_publish(id);
        }
        Ok(())
    }

    fn finish_publish(&mut self, id: u16) -> Result<(), AmqpError> {
        let Some(inc) = self.channel_mut(id)?.incoming.take() else {
            return Ok(());
        };
        let (mut properties, _) = inc.header.unwrap_or_default();
        // `user-id` must name the connection's user (as RabbitMQ checks it),
        // so a consumer can trust who sent a message.
        if let Some(claimed) = properties.user_id.as_deref()
            && claimed != self.user
        {
            return Err(AmqpError::channel(
                ReplyCode::PRECONDITION_FAILED,
                format!(
                    "user_id property set to '{claimed}' but authenticated user was '{}'",
                    self.user
                ),
            )
            .at(60, 40));
        }
        if properties.reply_to.as_deref() == Some(DIRECT_REPLY_TO) {
            // The channel's reply queue, while its consumer (and so the
            // queue) still exists.
            let vhost = self.vhost()?.clone();
            let conn = self.conn_id;
            let live = self
                .channel_mut(id)?
                .reply_queue
                .clone()
                .filter(|name| vhost.queue(name, conn).is_ok());
            let Some(name) = live else {
                return Err(AmqpError::channel(
                    ReplyCode::PRECONDITION_FAILED,
                    "fast reply consumer does not exist",
                ));
            };
            properties.reply_to = Some(name);
        }
        let ch = self.channel_mut(id)?;
        let body = inc.single.unwrap_or_else(|| inc.body.freeze());
        let message = Message {
            exchange: inc.publish.exchange.as_str().to_owned(),
            routing_key: inc.publish.routing_key.as_str().to_owned(),
            properties,
            body,
        };
        if let Some(tx) = ch.tx.as_mut() {
            if tx.publishes.len() >= TX_MAX_PUBLISHES {
                return Err(AmqpError::channel(
                    ReplyCode::PRECONDITION_FAILED,
                    format!("transaction holds more than {TX_MAX_PUBLISHES} publishes"),
                ));
            }
            tx.publishes.push((message, inc.publish.mandatory));
            return Ok(());
        }
        self.publish(id, message, inc.publish.mandatory)
    }

    fn publish(&mut self, id: u16, message: Message, mandatory: bool) -> Result<(), AmqpError> {
        let vhost = self.vhost()?.clone();
        // Checked once per exchange in a row: a publisher sending to one
        // exchange pays a string compare per message, not a lookup.
        if self.may_write.as_deref() != Some(message.exchange.as_str()) {
            self.permit(PermissionKind::Write, Resource::Exchange, &message.exchange)?;
            self.may_write = Some(message.exchange.clone());
        }
        let confirm = self.channel_mut(id)?.confirm;
        let returned = mandatory.then(|| {
            (
                message.exchange.clone(),
                message.routing_key.clone(),
                message.properties.clone(),
                message.body.clone(),
            )
        });
        let published = vhost
            .publish(message, confirm)
            .map_err(|e| AmqpError::from(e).at(60, 40))?;
        self.throttle.note(&published);
        let counters = &self.registry.counters;
        MessageCounters::bump(&counters.published);
        if published.queues == 0 {
            MessageCounters::bump(if returned.is_some() {
                &counters.returned
            } else {
                &counters.dropped
            });
        }
        if published.queues == 0
            && let Some((exchange, routing_key, props, body)) = returned
        {
            let ret = basic::Return {
                reply_code: ReplyCode::NO_ROUTE.0,
                reply_text: "NO_ROUTE".into(),
                exchange: exchange.into(),
                routing_key: routing_key.into(),
            };
            self.send(id, AMQPClass::Basic(basic::AMQPMethod::Return(ret)));
            let frame_max = self.frame_max;
            self.enc
                .content(id, properties_out(&props), &body, frame_max, &mut self.out);
        }
        if confirm {
            let ch = self.channel_mut(id)?;
            ch.next_publish_seq += 1;
            let (tag, epoch) = (ch.next_publish_seq, ch.epoch);
            self.confirms.push_back(PendingConfirm {
                channel: id,
                epoch,
                tag,
                ticket: published.durable,
                // A queue refused it (`x-overflow: reject-publish`).
                nack: published.rejected,
                held: false,
            });
            self.flush_confirms();
        }
        Ok(())
    }

    /// Direct reply-to (as RabbitMQ): consuming the pseudo-queue
    /// `amq.rabbitmq.reply-to` (no-ack only) gives the channel a private
    /// queue `amq.rabbitmq.reply-to.<id>`; a publish on the channel with
    /// `reply_to = amq.rabbitmq.reply-to` carries that name instead, so a
    /// responder on any protocol answers through the default exchange.
    fn reply_to_queue(&mut self, id: u16, no_ack: bool) -> Result<String, AmqpError> {
        if !no_ack {
            return Err(AmqpError::channel(
                ReplyCode::PRECONDITION_FAILED,
                "reply consumer cannot acknowledge",
            ));
        }
        let vhost = self.vhost()?.clone();
        // Reuse the channel's queue while it exists (it goes with its
        // consumer: auto-delete).
        if let Some(name) = self.channel_mut(id)?.reply_queue.clone()
            && vhost.queue(&name, self.conn_id).is_ok()
        {
            return Ok(name);
        }
        let name = format!(
            "{DIRECT_REPLY_TO_PREFIX}{}.{id}.{}",
            self.conn_id,
            rand_suffix()
        );
        let spec = QueueSpec {
            name: name.clone(),
            durable: false,
            exclusive_owner: Some(self.conn_id),
            auto_delete: true,
            arguments: FieldTable::new(),
        };
        vhost.declare_reserved_queue(spec, self.conn_id)?;
        self.channel_mut(id)?.reply_queue = Some(name.clone());
        Ok(name)
    }

    fn consume(&mut self, id: u16, c: basic::Consume) -> Result<(), AmqpError> {
        let vhost = self.vhost()?.clone();
        let name = if c.queue.as_str() == DIRECT_REPLY_TO {
            self.reply_to_queue(id, c.no_ack)?
        } else {
            let name = self.queue_name(id, c.queue.as_str())?;
            self.permit(PermissionKind::Read, Resource::Queue, &name)?;
            name
        };
        let queue = vhost.queue(&name, self.conn_id)?;
        let outbox = self.outbox.clone();
        let max_consumers = self.config.max_consumers_per_channel;
        let ch = self.channel_mut(id)?;
        let tag = if c.consumer_tag.as_str().is_empty() {
            format!("amq.ctag-{}", rand_suffix())
        } else {
            c.consumer_tag.as_str().to_owned()
        };
        if ch.consumers.len() >= max_consumers {
            return Err(AmqpError::connection(
                ReplyCode::NOT_ALLOWED,
                format!("reached maximum ({max_consumers}) of consumers per channel"),
            ));
        }
        if ch.consumers.contains_key(&tag) {
            return Err(AmqpError::connection(
                ReplyCode::NOT_ALLOWED,
                format!("attempt to reuse consumer tag '{tag}'"),
            ));
        }
        let spec = ConsumerSpec {
            tag: tag.clone(),
            channel: id,
            no_ack: c.no_ack,
            exclusive: c.exclusive,
            prefetch: ch.consumer_prefetch,
            arguments: table_in(&c.arguments),
        };
        let consumer = Arc::new(Consumer::new(spec, ch.credit.clone(), outbox));
        ch.consumers
            .insert(tag.clone(), (consumer.clone(), queue.clone()));
        // Deliveries land in the outbox and are only turned into frames
        // after this method returns, so consume-ok still precedes them.
        if let Err(e) = queue.add_consumer(consumer) {
            self.channel_mut(id)?.consumers.remove(&tag);
            return Err(e.into());
        }
        if !c.nowait {
            let ok = basic::ConsumeOk {
                consumer_tag: tag.as_str().into(),
            };
            self.send(id, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok)));
        }
        Ok(())
    }

    fn cancel(&mut self, id: u16, c: basic::Cancel) -> Result<(), AmqpError> {
        let tag = c.consumer_tag.as_str().to_owned();
        let removed = self.channel_mut(id)?.consumers.remove(&tag);
        if let Some((consumer, queue)) = removed
            && queue.remove_consumer(&consumer)
        {
            self.vhost()?.clone().auto_delete_queue(&queue);
        }
        if !c.nowait {
            let ok = basic::CancelOk {
                consumer_tag: tag.into(),
            };
            self.send(id, AMQPClass::Basic(basic::AMQPMethod::CancelOk(ok)));
        }
        Ok(())
    }

    fn get(&mut self, id: u16, g: basic::Get) -> Result<(), AmqpError> {
        let vhost = self.vhost()?.clone();
        let name = self.queue_name(id, g.queue.as_str())?;
        self.permit(PermissionKind::Read, Resource::Queue, &name)?;
        let queue = vhost.queue(&name, self.conn_id)?;
        let Some(got) = queue.get(g.no_ack) else {
            self.send(
                id,
                AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
            );
            return Ok(());
        };
        let now = self.clock;
        let ch = self.channel_mut(id)?;
        let tag = ch.next_delivery_tag();
        if !g.no_ack {
            let held = Unsettled {
                queue,
                seq: got.seq,
                consumer: None,
            };
            ch.unacked.insert(tag, (held, now));
        }
        let (routing_key, properties) = delivery_out(&got.message);
        let ok = basic::GetOk {
            delivery_tag: tag,
            redelivered: got.redelivered,
            exchange: got.message.exchange.as_str().into(),
            routing_key,
            message_count: got.remaining,
        };
        self.send(id, AMQPClass::Basic(basic::AMQPMethod::GetOk(ok)));
        MessageCounters::bump(&self.registry.counters.delivered);
        let frame_max = self.frame_max;
        self.enc
            .content(id, properties, &got.message.body, frame_max, &mut self.out);
        Ok(())
    }

    fn settle(&mut self, id: u16, tag: u64, multiple: bool, how: Settle) -> Result<(), AmqpError> {
        let ch = self.channel_mut(id)?;
        let Some(tags) = ch.select(tag, multiple) else {
            return Err(AmqpError::channel(
                ReplyCode::PRECONDITION_FAILED,
                format!("unknown delivery tag {tag}"),
            ));
        };
        if let Some(tx) = ch.tx.as_mut() {
            if tx.settles.len() >= TX_MAX_PUBLISHES {
                return Err(AmqpError::channel(
                    ReplyCode::PRECONDITION_FAILED,
                    format!("transaction holds more than {TX_MAX_PUBLISHES} acknowledgements"),
                ));
            }
            tx.settles.push((tags, how));
            return Ok(());
        }
        if matches!(how, Settle::Ack) {
            self.registry
                .counters
                .acked
                .fetch_add(tags.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let ch = self.channel_mut(id)?;
        ch.settle(&tags, how);
        Ok(())
    }

    fn recover(&mut self, id: u16, requeue: bool) -> Result<(), AmqpError> {
        if !requeue {
            return Err(AmqpError::connection(
                ReplyCode::NOT_IMPLEMENTED,
                "requeue=false",
            ));
        }
        let ch = self.channel_mut(id)?;
        let tags: Vec<u64> = ch.unacked.keys().copied().collect();
        ch.settle(&tags, Settle::Requeue);
        Ok(())
    }

    pub(super) fn tx_class(&mut self, id: u16, m: tx::AMQPMethod) -> Result<(), AmqpError> {
        use tx::AMQPMethod as M;
        let ch = self.channel_mut(id)?;
        match m {
            M::Select(_) => {
                if ch.confirm {
                    return Err(AmqpError::channel(
                        ReplyCode::PRECONDITION_FAILED,
                        "cannot switch from confirm to tx mode",
                    ));
                }
                ch.tx.get_or_insert_with(TxBuffer::default);
                self.send(id, AMQPClass::Tx(M::SelectOk(tx::SelectOk {})));
            }
            M::Commit(_) => {
                let Some(buf) = ch.tx.replace(TxBuffer::default()) else {
                    return Err(AmqpError::channel(
                        ReplyCode::PRECONDITION_FAILED,
                        "channel is not transactional",
                    ));
                };
                for (tags, how) in buf.settles {
                    ch.settle(&tags, how);
                }
                for (message, mandatory) in buf.publishes {
                    self.publish(id, message, mandatory)?;
                }
                self.send(id, AMQPClass::Tx(M::CommitOk(tx::CommitOk {})));
            }
            M::Rollback(_) => {
                if ch.tx.replace(TxBuffer::default()).is_none() {
                    return Err(AmqpError::channel(
                        ReplyCode::PRECONDITION_FAILED,
                        "channel is not transactional",
                    ));
                }
                self.send(id, AMQPClass::Tx(M::RollbackOk(tx::RollbackOk {})));
            }
            M::SelectOk(_) | M::CommitOk(_) | M::RollbackOk(_) => {
                return Err(AmqpError::connection(
                    ReplyCode::COMMAND_INVALID,
                    "server method sent by client",
                ));
            }
        }
        Ok(())
    }

    pub(super) fn confirm_class(
        &mut self,
        id: u16,
        m: confirm::AMQPMethod,
    ) -> Result<(), AmqpError> {
        let ch = self.channel_mut(id)?;
        match m {
            confirm::AMQPMethod::Select(s) => {
                if ch.tx.is_some() {
                    return Err(AmqpError::channel(
                        ReplyCode::PRECONDITION_FAILED,
                        "cannot switch from tx to confirm mode",
                    ));
                }
                ch.confirm = true;
                if !s.nowait {
                    let ok = confirm::SelectOk {};
                    self.send(id, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(ok)));
                }
                Ok(())
            }
            confirm::AMQPMethod::SelectOk(_) => Err(AmqpError::connection(
                ReplyCode::COMMAND_INVALID,
                "server method sent by client",
            )),
        }
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
