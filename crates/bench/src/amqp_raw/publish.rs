//! The producer: one publish encoded once ([`Template`]), copied into the
//! write buffer as many times as the write size, the pacer and the confirm
//! window allow, with only the send time and sequence number patched per
//! copy. Confirms are read between writes, never waited for one by one.

use super::RawArgs;
use super::conn::{CHANNEL, Connection, Step};
use super::flow::{Confirms, Pacer};
use super::frame::{FRAME_OVERHEAD, Frame, encode, encode_method};
use super::method::Method;
use crate::track::{Counters, DRAIN_LIMIT, HEADER, now_ns, stamp};
use anyhow::{Context, Result};
use bytes::BytesMut;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Property flags and list of a transient publish: no properties.
const TRANSIENT: &[u8] = &[0x00, 0x00];
/// Property flags (bit 12: delivery-mode) and delivery-mode 2.
const PERSISTENT: &[u8] = &[0x10, 0x00, 2];

/// A basic.publish to the default exchange with its content header and body
/// frames, as bytes. The body is a [`stamp`]ed payload; its first frame is at
/// least [`HEADER`] bytes (frame-max is at least 4096), so the stamp sits
/// whole in it at `stamp_at`.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    bytes: Vec<u8>,
    /// Offset of the body's first byte (the send time) in `bytes`.
    stamp_at: usize,
}

impl Template {
    pub(crate) fn new(
        routing_key: &str,
        size: usize,
        producer: u32,
        persistent: bool,
        frame_max: u32,
    ) -> Self {
        let mut body = Vec::new();
        stamp(&mut body, size, producer, 0);
        let mut out = BytesMut::new();
        let publish = Method::BasicPublish {
            exchange: b"",
            routing_key: routing_key.as_bytes(),
        };
        encode_method(CHANNEL, &publish, &mut out);
        let header = Frame::Header {
            channel: CHANNEL,
            class_id: 60,
            body_size: body.len() as u64,
            properties: if persistent { PERSISTENT } else { TRANSIENT },
        };
        encode(&header, &mut out);
        let stamp_at = out.len() + FRAME_OVERHEAD - 1;
        let per_frame = (frame_max as usize)
            .saturating_sub(FRAME_OVERHEAD)
            .max(HEADER);
        for payload in body.chunks(per_frame) {
            let frame = Frame::Body {
                channel: CHANNEL,
                payload,
            };
            encode(&frame, &mut out);
        }
        Self {
            bytes: out.to_vec(),
            stamp_at,
        }
    }

    /// Bytes per publish.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends one publish stamped with send time `sent_ns` and `seq`.
    pub(crate) fn append(&self, out: &mut BytesMut, sent_ns: u64, seq: u32) {
        let at = out.len() + self.stamp_at;
        out.extend_from_slice(&self.bytes);
        out[at..at + 8].copy_from_slice(&sent_ns.to_be_bytes());
        out[at + 12..at + 16].copy_from_slice(&seq.to_be_bytes());
    }
}

/// Connects a producer (in confirm mode if asked) before the clock starts.
pub(crate) async fn connect(to: &super::Endpoint, args: &RawArgs) -> Result<Connection> {
    let mut conn = Connection::open(to, (args.send_buffer > 0).then_some(args.send_buffer)).await?;
    if args.confirm > 0 {
        conn.request(CHANNEL, &Method::ConfirmSelect, "confirm.select-ok", |m| {
            matches!(m, Method::ConfirmSelectOk)
        })
        .await?;
    }
    Ok(conn)
}

/// Publishes for the run's duration; returns how many. Ends once every
/// confirm arrived (or [`DRAIN_LIMIT`] passed) and connection.close-ok came
/// back, so the broker has taken every publish.
pub(crate) async fn produce(
    mut conn: Connection,
    args: RawArgs,
    id: u32,
    queue: String,
    counters: Arc<Counters>,
) -> Result<u32> {
    let template = Template::new(&queue, args.size, id, args.persistent, conn.frame_max());
    let msg_len = template.len();
    let batch = args.write_bytes.max(msg_len);
    let limit = match args.max_messages {
        0 => u32::MAX,
        n => n,
    };
    let begun = Instant::now();
    let deadline = begun + Duration::from_secs(args.duration);
    let mut pacer = Pacer::new(args.rate, begun);
    let mut confirms = Confirms::new();
    let confirming = args.confirm > 0;
    let mut seq: u32 = 0;
    // Without confirms a publish counts once written: whole publishes in the
    // bytes written so far (the write buffer holds nothing else).
    let (mut written, mut counted) = (0u64, 0u64);
    let mut give_up: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let mut wake = None;
        if now < deadline && seq < limit {
            let out = conn.queued();
            let room = batch.saturating_sub(out.len()) / msg_len;
            let window = match confirming {
                true => args.confirm.saturating_sub(confirms.outstanding()),
                false => usize::MAX,
            };
            let tokens = pacer.available(now);
            let n = (room as u64)
                .min(tokens)
                .min(window as u64)
                .min(u64::from(limit - seq));
            out.reserve(n as usize * msg_len);
            for _ in 0..n {
                template.append(out, now_ns(), seq);
                seq += 1;
            }
            pacer.take(n);
            if confirming {
                confirms.published(n);
            }
            if tokens == n {
                wake = Some(pacer.next_tick(now).min(deadline));
            } else if window == 0 {
                wake = Some(deadline);
            }
        } else if conn.queued().is_empty() {
            if confirms.outstanding() == 0 {
                break;
            }
            let until = *give_up.get_or_insert(now + DRAIN_LIMIT);
            if now >= until {
                eprintln!(
                    "producer {id}: {} confirms still outstanding after {DRAIN_LIMIT:?}",
                    confirms.outstanding()
                );
                break;
            }
            wake = Some(until);
        }
        let step = conn.step(wake).await;
        let step = step.with_context(|| format!("producer {id}"))?;
        if let Step::Wrote(_) = step {
            // An always-writable socket never makes this task wait, and
            // tokio's budget lets it run ~128 writes (8 MiB) before it must:
            // without a yield per write, consumers sharing its thread would
            // be starved for 100 ms at a time.
            tokio::task::yield_now().await;
        }
        match step {
            Step::Wrote(n) if !confirming => {
                written += n as u64;
                let whole = written / msg_len as u64;
                counters
                    .published
                    .fetch_add(whole - counted, Ordering::Relaxed);
                counted = whole;
            }
            Step::Read => {
                let mut settled = 0;
                conn.frames(|f, _| {
                    settled += on_confirm(&f, &mut confirms);
                    Ok(None::<()>)
                })?;
                counters.published.fetch_add(settled, Ordering::Relaxed);
            }
            Step::Wrote(_) | Step::Woke => {}
        }
    }
    // A broker with a backlog of publishes answers close only once it
    // worked through them.
    conn.close(DRAIN_LIMIT, |f| {
        counters
            .published
            .fetch_add(on_confirm(&f, &mut confirms), Ordering::Relaxed);
        Ok(())
    })
    .await
    .with_context(|| format!("producer {id}: closing"))?;
    if confirms.nacked > 0 || confirms.unknown > 0 {
        eprintln!(
            "producer {id}: {} publishes nacked, {} confirms for no outstanding publish",
            confirms.nacked, confirms.unknown
        );
    }
    Ok(seq)
}

/// Settles a basic.ack or basic.nack from the broker; returns how many
/// publishes it settled (0 for any other frame).
fn on_confirm(f: &Frame<'_>, confirms: &mut Confirms) -> u64 {
    let Frame::Method { method, .. } = f else {
        return 0;
    };
    match *method {
        Method::BasicAck {
            delivery_tag,
            multiple,
        } => confirms.confirm(delivery_tag, multiple, true),
        Method::BasicNack {
            delivery_tag,
            multiple,
            ..
        } => confirms.confirm(delivery_tag, multiple, false),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp_raw::frame::decode;
    use crate::track::Seen;

    #[test]
    fn template_patches_only_the_stamp() {
        for (size, frame_max) in [(16, 4096), (100, 4096), (10_000, 4096), (5000, 131_072)] {
            let t = Template::new("bench-q", size, 3, true, frame_max);
            let mut out = BytesMut::new();
            t.append(&mut out, 111, 0);
            t.append(&mut out, 222, 7);
            assert_eq!(out.len(), 2 * t.len());
            let (first, second) = out.split_at(t.len());
            let differ: Vec<usize> = (0..t.len()).filter(|&i| first[i] != second[i]).collect();
            assert!(
                differ
                    .iter()
                    .all(|&i| i >= t.stamp_at && i < t.stamp_at + HEADER)
            );

            // Decodes as publish, header, body frames of the full size, and
            // the body carries the stamp.
            let (mut at, mut body) = (0, Vec::new());
            let mut seen = Seen::new(4);
            while at < second.len() {
                let (f, n) = decode(&second[at..], frame_max as usize).unwrap().unwrap();
                match f {
                    Frame::Method { method, .. } => assert_eq!(
                        method,
                        Method::BasicPublish {
                            exchange: b"",
                            routing_key: b"bench-q"
                        }
                    ),
                    Frame::Header {
                        body_size,
                        properties,
                        ..
                    } => {
                        assert_eq!(body_size, size as u64);
                        assert_eq!(properties, PERSISTENT);
                    }
                    Frame::Body { payload, .. } => body.extend_from_slice(payload),
                    Frame::Heartbeat => panic!("heartbeat"),
                }
                at += n;
            }
            assert_eq!(body.len(), size);
            assert_eq!(&body[..8], &222u64.to_be_bytes());
            seen.record(&body);
            assert_eq!((seen.distinct(3, 8), seen.malformed), (1, 0));
        }
    }

    #[test]
    fn confirms_settle_from_frames() {
        let mut c = Confirms::new();
        c.published(5);
        let ack = |delivery_tag, multiple| Frame::Method {
            channel: CHANNEL,
            method: Method::BasicAck {
                delivery_tag,
                multiple,
            },
        };
        let nack = Frame::Method {
            channel: CHANNEL,
            method: Method::BasicNack {
                delivery_tag: 5,
                multiple: false,
                requeue: false,
            },
        };
        assert_eq!(on_confirm(&ack(3, true), &mut c), 3);
        assert_eq!(on_confirm(&nack, &mut c), 1);
        assert_eq!(on_confirm(&Frame::Heartbeat, &mut c), 0);
        assert_eq!(on_confirm(&ack(4, false), &mut c), 1);
        assert_eq!((c.outstanding(), c.acked, c.nacked), (0, 4, 1));
    }
}
