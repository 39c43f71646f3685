//! The AMQP 0-9-1 methods a load generator sends or receives, encoded and
//! decoded by hand (class and method ids from the spec's XML). Anything else
//! decodes to [`Method::Other`] for the caller to judge.
//!
//! Field tables are carried as raw entry bytes (we send none but the client
//! properties and read none); short strings as bytes, since nothing here
//! needs them as text but error messages.

use super::frame::{Cursor, FrameError, put_long, put_short};
use bytes::{BufMut, BytesMut};

/// Class ids.
const CONNECTION: u16 = 10;
const CHANNEL: u16 = 20;
const QUEUE: u16 = 50;
const BASIC: u16 = 60;
const CONFIRM: u16 = 85;

/// A method frame's payload. Reserved fields and `no-wait` (always false
/// here) are not represented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Method<'a> {
    ConnectionStart {
        version_major: u8,
        version_minor: u8,
        server_properties: &'a [u8],
        mechanisms: &'a [u8],
        locales: &'a [u8],
    },
    ConnectionStartOk {
        client_properties: &'a [u8],
        mechanism: &'a [u8],
        response: &'a [u8],
        locale: &'a [u8],
    },
    ConnectionTune(Tune),
    ConnectionTuneOk(Tune),
    ConnectionOpen {
        vhost: &'a [u8],
    },
    ConnectionOpenOk,
    ConnectionClose(Close<'a>),
    ConnectionCloseOk,
    ChannelOpen,
    ChannelOpenOk,
    ChannelClose(Close<'a>),
    ChannelCloseOk,
    QueueDeclare {
        queue: &'a [u8],
        durable: bool,
    },
    QueueDeclareOk {
        queue: &'a [u8],
        message_count: u32,
        consumer_count: u32,
    },
    QueueDelete {
        queue: &'a [u8],
    },
    QueueDeleteOk {
        message_count: u32,
    },
    BasicQos {
        prefetch_count: u16,
    },
    BasicQosOk,
    BasicConsume {
        queue: &'a [u8],
        consumer_tag: &'a [u8],
        no_ack: bool,
    },
    BasicConsumeOk {
        consumer_tag: &'a [u8],
    },
    BasicPublish {
        exchange: &'a [u8],
        routing_key: &'a [u8],
    },
    BasicReturn {
        reply_code: u16,
        reply_text: &'a [u8],
        exchange: &'a [u8],
        routing_key: &'a [u8],
    },
    BasicDeliver {
        consumer_tag: &'a [u8],
        delivery_tag: u64,
        redelivered: bool,
        exchange: &'a [u8],
        routing_key: &'a [u8],
    },
    /// Consumer acks, and publisher confirms from the broker.
    BasicAck {
        delivery_tag: u64,
        multiple: bool,
    },
    BasicNack {
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
    },
    ConfirmSelect,
    ConfirmSelectOk,
    /// A method this client has no use for.
    Other {
        class_id: u16,
        method_id: u16,
    },
}

/// `connection.tune` and `tune-ok` arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tune {
    pub(crate) channel_max: u16,
    pub(crate) frame_max: u32,
    pub(crate) heartbeat: u16,
}

/// `connection.close` and `channel.close` arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Close<'a> {
    pub(crate) reply_code: u16,
    pub(crate) reply_text: &'a [u8],
    pub(crate) class_id: u16,
    pub(crate) method_id: u16,
}

impl Close<'_> {
    /// "404 NOT_FOUND - no queue 'x' (by 50/10)" for an error message.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} {} (by {}/{})",
            self.reply_code,
            String::from_utf8_lossy(self.reply_text),
            self.class_id,
            self.method_id
        )
    }
}

impl<'a> Method<'a> {
    /// Decodes a method frame's payload.
    pub(crate) fn decode(payload: &'a [u8]) -> Result<Self, FrameError> {
        let mut c = Cursor::new(payload, "method");
        let ids = (c.u16()?, c.u16()?);
        let m = match ids {
            (CONNECTION, 10) => Self::ConnectionStart {
                version_major: c.u8()?,
                version_minor: c.u8()?,
                server_properties: c.long()?,
                mechanisms: c.long()?,
                locales: c.long()?,
            },
            (CONNECTION, 11) => Self::ConnectionStartOk {
                client_properties: c.long()?,
                mechanism: c.short()?,
                response: c.long()?,
                locale: c.short()?,
            },
            (CONNECTION, 30) => Self::ConnectionTune(tune(&mut c)?),
            (CONNECTION, 31) => Self::ConnectionTuneOk(tune(&mut c)?),
            (CONNECTION, 40) => {
                let vhost = c.short()?;
                let (_capabilities, _insist) = (c.short()?, c.u8()?);
                Self::ConnectionOpen { vhost }
            }
            (CONNECTION, 41) => Self::ConnectionOpenOk,
            (CONNECTION, 50) => Self::ConnectionClose(close(&mut c)?),
            (CONNECTION, 51) => Self::ConnectionCloseOk,
            (CHANNEL, 10) => Self::ChannelOpen,
            (CHANNEL, 11) => Self::ChannelOpenOk,
            (CHANNEL, 40) => Self::ChannelClose(close(&mut c)?),
            (CHANNEL, 41) => Self::ChannelCloseOk,
            (QUEUE, 10) => {
                let _ticket = c.u16()?;
                let queue = c.short()?;
                let bits = c.u8()?;
                let _arguments = c.long()?;
                Self::QueueDeclare {
                    queue,
                    durable: bits & 0b10 != 0,
                }
            }
            (QUEUE, 11) => Self::QueueDeclareOk {
                queue: c.short()?,
                message_count: c.u32()?,
                consumer_count: c.u32()?,
            },
            (QUEUE, 40) => {
                let _ticket = c.u16()?;
                Self::QueueDelete { queue: c.short()? }
            }
            (QUEUE, 41) => Self::QueueDeleteOk {
                message_count: c.u32()?,
            },
            (BASIC, 10) => {
                let _prefetch_size = c.u32()?;
                let prefetch_count = c.u16()?;
                let _global = c.u8()?;
                Self::BasicQos { prefetch_count }
            }
            (BASIC, 11) => Self::BasicQosOk,
            (BASIC, 20) => {
                let _ticket = c.u16()?;
                let (queue, consumer_tag) = (c.short()?, c.short()?);
                let bits = c.u8()?;
                let _arguments = c.long()?;
                Self::BasicConsume {
                    queue,
                    consumer_tag,
                    no_ack: bits & 0b10 != 0,
                }
            }
            (BASIC, 21) => Self::BasicConsumeOk {
                consumer_tag: c.short()?,
            },
            (BASIC, 40) => {
                let _ticket = c.u16()?;
                let (exchange, routing_key) = (c.short()?, c.short()?);
                let _mandatory_immediate = c.u8()?;
                Self::BasicPublish {
                    exchange,
                    routing_key,
                }
            }
            (BASIC, 50) => Self::BasicReturn {
                reply_code: c.u16()?,
                reply_text: c.short()?,
                exchange: c.short()?,
                routing_key: c.short()?,
            },
            (BASIC, 60) => Self::BasicDeliver {
                consumer_tag: c.short()?,
                delivery_tag: c.u64()?,
                redelivered: c.u8()? & 1 != 0,
                exchange: c.short()?,
                routing_key: c.short()?,
            },
            (BASIC, 80) => Self::BasicAck {
                delivery_tag: c.u64()?,
                multiple: c.u8()? & 1 != 0,
            },
            (BASIC, 120) => {
                let delivery_tag = c.u64()?;
                let bits = c.u8()?;
                Self::BasicNack {
                    delivery_tag,
                    multiple: bits & 1 != 0,
                    requeue: bits & 0b10 != 0,
                }
            }
            (CONFIRM, 10) => {
                let _no_wait = c.u8()?;
                Self::ConfirmSelect
            }
            (CONFIRM, 11) => Self::ConfirmSelectOk,
            (class_id, method_id) => Self::Other {
                class_id,
                method_id,
            },
        };
        Ok(m)
    }

    /// Appends class id, method id and arguments (a method frame's payload).
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        let (class_id, method_id) = self.ids();
        out.put_u16(class_id);
        out.put_u16(method_id);
        match self {
            Self::ConnectionStart {
                version_major,
                version_minor,
                server_properties,
                mechanisms,
                locales,
            } => {
                out.put_u8(*version_major);
                out.put_u8(*version_minor);
                put_long(out, server_properties);
                put_long(out, mechanisms);
                put_long(out, locales);
            }
            Self::ConnectionStartOk {
                client_properties,
                mechanism,
                response,
                locale,
            } => {
                put_long(out, client_properties);
                put_short(out, mechanism);
                put_long(out, response);
                put_short(out, locale);
            }
            Self::ConnectionTune(t) | Self::ConnectionTuneOk(t) => {
                out.put_u16(t.channel_max);
                out.put_u32(t.frame_max);
                out.put_u16(t.heartbeat);
            }
            Self::ConnectionOpen { vhost } => {
                put_short(out, vhost);
                put_short(out, b"");
                out.put_u8(0);
            }
            Self::ConnectionClose(c) | Self::ChannelClose(c) => {
                out.put_u16(c.reply_code);
                put_short(out, c.reply_text);
                out.put_u16(c.class_id);
                out.put_u16(c.method_id);
            }
            Self::ChannelOpen => put_short(out, b""),
            Self::ChannelOpenOk => put_long(out, b""),
            Self::QueueDeclare { queue, durable } => {
                out.put_u16(0);
                put_short(out, queue);
                out.put_u8(u8::from(*durable) << 1);
                put_long(out, b"");
            }
            Self::QueueDeclareOk {
                queue,
                message_count,
                consumer_count,
            } => {
                put_short(out, queue);
                out.put_u32(*message_count);
                out.put_u32(*consumer_count);
            }
            Self::QueueDelete { queue } => {
                out.put_u16(0);
                put_short(out, queue);
                out.put_u8(0);
            }
            Self::QueueDeleteOk { message_count } => out.put_u32(*message_count),
            Self::BasicQos { prefetch_count } => {
                out.put_u32(0);
                out.put_u16(*prefetch_count);
                out.put_u8(0);
            }
            Self::BasicConsume {
                queue,
                consumer_tag,
                no_ack,
            } => {
                out.put_u16(0);
                put_short(out, queue);
                put_short(out, consumer_tag);
                out.put_u8(u8::from(*no_ack) << 1);
                put_long(out, b"");
            }
            Self::BasicConsumeOk { consumer_tag } => put_short(out, consumer_tag),
            Self::BasicPublish {
                exchange,
                routing_key,
            } => {
                out.put_u16(0);
                put_short(out, exchange);
                put_short(out, routing_key);
                out.put_u8(0);
            }
            Self::BasicReturn {
                reply_code,
                reply_text,
                exchange,
                routing_key,
            } => {
                out.put_u16(*reply_code);
                put_short(out, reply_text);
                put_short(out, exchange);
                put_short(out, routing_key);
            }
            Self::BasicDeliver {
                consumer_tag,
                delivery_tag,
                redelivered,
                exchange,
                routing_key,
            } => {
                put_short(out, consumer_tag);
                out.put_u64(*delivery_tag);
                out.put_u8(u8::from(*redelivered));
                put_short(out, exchange);
                put_short(out, routing_key);
            }
            Self::BasicAck {
                delivery_tag,
                multiple,
            } => {
                out.put_u64(*delivery_tag);
                out.put_u8(u8::from(*multiple));
            }
            Self::BasicNack {
                delivery_tag,
                multiple,
                requeue,
            } => {
                out.put_u64(*delivery_tag);
                out.put_u8(u8::from(*multiple) | u8::from(*requeue) << 1);
            }
            Self::ConfirmSelect => out.put_u8(0),
            Self::ConnectionOpenOk => put_short(out, b""),
            Self::ConnectionCloseOk
            | Self::ChannelCloseOk
            | Self::BasicQosOk
            | Self::ConfirmSelectOk
            | Self::Other { .. } => {}
        }
    }

    /// Class and method id.
    pub(crate) fn ids(&self) -> (u16, u16) {
        match self {
            Self::ConnectionStart { .. } => (CONNECTION, 10),
            Self::ConnectionStartOk { .. } => (CONNECTION, 11),
            Self::ConnectionTune(_) => (CONNECTION, 30),
            Self::ConnectionTuneOk(_) => (CONNECTION, 31),
            Self::ConnectionOpen { .. } => (CONNECTION, 40),
            Self::ConnectionOpenOk => (CONNECTION, 41),
            Self::ConnectionClose(_) => (CONNECTION, 50),
            Self::ConnectionCloseOk => (CONNECTION, 51),
            Self::ChannelOpen => (CHANNEL, 10),
            Self::ChannelOpenOk => (CHANNEL, 11),
            Self::ChannelClose(_) => (CHANNEL, 40),
            Self::ChannelCloseOk => (CHANNEL, 41),
            Self::QueueDeclare { .. } => (QUEUE, 10),
            Self::QueueDeclareOk { .. } => (QUEUE, 11),
            Self::QueueDelete { .. } => (QUEUE, 40),
            Self::QueueDeleteOk { .. } => (QUEUE, 41),
            Self::BasicQos { .. } => (BASIC, 10),
            Self::BasicQosOk => (BASIC, 11),
            Self::BasicConsume { .. } => (BASIC, 20),
            Self::BasicConsumeOk { .. } => (BASIC, 21),
            Self::BasicPublish { .. } => (BASIC, 40),
            Self::BasicReturn { .. } => (BASIC, 50),
            Self::BasicDeliver { .. } => (BASIC, 60),
            Self::BasicAck { .. } => (BASIC, 80),
            Self::BasicNack { .. } => (BASIC, 120),
            Self::ConfirmSelect => (CONFIRM, 10),
            Self::ConfirmSelectOk => (CONFIRM, 11),
            Self::Other {
                class_id,
                method_id,
            } => (*class_id, *method_id),
        }
    }
}

fn tune(c: &mut Cursor<'_>) -> Result<Tune, FrameError> {
    Ok(Tune {
        channel_max: c.u16()?,
        frame_max: c.u32()?,
        heartbeat: c.u16()?,
    })
}

fn close<'a>(c: &mut Cursor<'a>) -> Result<Close<'a>, FrameError> {
    Ok(Close {
        reply_code: c.u16()?,
        reply_text: c.short()?,
        class_id: c.u16()?,
        method_id: c.u16()?,
    })
}

/// Client properties for `connection.start-ok`: a field table naming us.
pub(crate) fn client_properties() -> BytesMut {
    let mut t = BytesMut::new();
    for (key, value) in [
        ("product", "switchyard-bench amqp-raw"),
        ("platform", "Rust"),
    ] {
        put_short(&mut t, key.as_bytes());
        t.put_u8(b'S');
        put_long(&mut t, value.as_bytes());
    }
    t
}
