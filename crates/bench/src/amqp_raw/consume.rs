//! The consumer: reads large buffers, parses every whole frame in each,
//! assembles deliveries from deliver / header / body frames without copying
//! bodies ([`Assembler`] keeps only the stamp), and acks with `multiple`
//! every `--ack-every` deliveries, the acks of one read written together.

use super::RawArgs;
use super::conn::{CHANNEL, Connection};
use super::frame::{Frame, encode_method};
use super::method::Method;
use crate::track::{Counters, HEADER, Seen};
use anyhow::{Context, Result, bail};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

/// A whole delivery: its tag and the first [`HEADER`] bytes of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub(crate) tag: u64,
    stamp: [u8; HEADER],
    /// Bytes of `stamp` filled: [`HEADER`], or fewer for a shorter body.
    len: usize,
}

impl Delivered {
    /// The payload's stamp, for [`Seen::record`].
    pub(crate) fn stamp(&self) -> &[u8] {
        &self.stamp[..self.len]
    }
}

/// Where a delivery's content stands.
#[derive(Debug, Clone, Default)]
enum State {
    #[default]
    Idle,
    /// basic.deliver arrived; its content header is next.
    Header { tag: u64 },
    /// `left` body bytes still to come.
    Body { got: Delivered, left: u64 },
}

/// Assembles deliveries on one channel (spec 4.2.6: a method with content is
/// followed by its header and body frames, none interleaved).
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    state: State,
}

impl Assembler {
    /// Takes one frame; returns a delivery once its last frame arrived.
    /// Frames other than deliver, header and body are left to the caller
    /// (`Ok(None)`), but only between deliveries.
    pub(crate) fn handle(&mut self, frame: &Frame<'_>) -> Result<Option<Delivered>> {
        let state = std::mem::take(&mut self.state);
        match (state, frame) {
            (
                State::Idle,
                Frame::Method {
                    method: Method::BasicDeliver { delivery_tag, .. },
                    ..
                },
            ) => self.state = State::Header { tag: *delivery_tag },
            (State::Idle, Frame::Method { .. }) => {}
            (State::Header { tag }, Frame::Header { body_size, .. }) => {
                let got = Delivered {
                    tag,
                    stamp: [0; HEADER],
                    len: 0,
                };
                if *body_size == 0 {
                    return Ok(Some(got));
                }
                self.state = State::Body {
                    got,
                    left: *body_size,
                };
            }
            (State::Body { mut got, left }, Frame::Body { payload, .. }) => {
                let n = payload.len() as u64;
                if n > left {
                    bail!("body frame of {n} bytes where {left} were left");
                }
                let take = (HEADER - got.len).min(payload.len());
                got.stamp[got.len..got.len + take].copy_from_slice(&payload[..take]);
                got.len += take;
                if n == left {
                    return Ok(Some(got));
                }
                self.state = State::Body {
                    got,
                    left: left - n,
                };
            }
            (state, frame) => bail!("unexpected frame {frame:?} in delivery state {state:?}"),
        }
        Ok(None)
    }
}

/// Connects, sets the prefetch and starts consuming `queue`; returns once
/// consume-ok arrived, so publishing may start.
pub(crate) async fn subscribe(
    to: &super::Endpoint,
    queue: &str,
    args: &RawArgs,
    i: usize,
) -> Result<Connection> {
    let mut conn = Connection::open(to, None).await?;
    let qos = Method::BasicQos {
        prefetch_count: args.prefetch,
    };
    conn.request(CHANNEL, &qos, "basic.qos-ok", |m| {
        matches!(m, Method::BasicQosOk)
    })
    .await?;
    let tag = format!("raw-{i}");
    let consume = Method::BasicConsume {
        queue: queue.as_bytes(),
        consumer_tag: tag.as_bytes(),
        no_ack: args.auto_ack,
    };
    conn.request(CHANNEL, &consume, "basic.consume-ok", |m| {
        matches!(m, Method::BasicConsumeOk { .. })
    })
    .await
    .with_context(|| format!("consuming from {queue}"))?;
    Ok(conn)
}

/// Records every delivery until `stop`, then closes the connection.
pub(crate) async fn consume(
    mut conn: Connection,
    args: RawArgs,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> Result<Seen> {
    let mut seen = Seen::new(args.producers);
    let mut assembler = Assembler::default();
    let ack_every = args.ack_every.max(1);
    let multiple = ack_every > 1;
    let mut unacked = 0u64;
    loop {
        let mut got = 0;
        conn.frames(|f, out| {
            if let Frame::Method {
                method:
                    Method::Other {
                        class_id: 60,
                        method_id: 30,
                    },
                ..
            } = f
            {
                bail!("the broker cancelled the consumer");
            }
            let Some(d) = assembler.handle(&f)? else {
                return Ok(None::<()>);
            };
            seen.record(d.stamp());
            got += 1;
            if !args.auto_ack {
                unacked += 1;
                if unacked >= ack_every {
                    let ack = Method::BasicAck {
                        delivery_tag: d.tag,
                        multiple,
                    };
                    encode_method(CHANNEL, &ack, out);
                    unacked = 0;
                }
            }
            Ok(None)
        })
        .context("consumer")?;
        counters.consumed.fetch_add(got, Ordering::Relaxed);
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            step = conn.step(None) => { step.context("consumer")?; }
        }
        // Fairness with the producers on this thread (see `produce`).
        tokio::task::yield_now().await;
    }
    // Deliveries still arriving before close-ok are late, not lost.
    let mut late = 0;
    let bye = conn.close(Duration::from_secs(5), |f| {
        if let Frame::Method {
            method: Method::BasicDeliver { .. },
            ..
        } = f
        {
            late += 1;
        }
        Ok(())
    });
    if let Err(e) = bye.await {
        eprintln!("consumer: {e:#}");
    }
    if late > 0 {
        eprintln!("consumer: {late} messages arrived after the drain");
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(tag: u64) -> Frame<'static> {
        Frame::Method {
            channel: CHANNEL,
            method: Method::BasicDeliver {
                consumer_tag: b"c",
                delivery_tag: tag,
                redelivered: false,
                exchange: b"",
                routing_key: b"q",
            },
        }
    }

    fn header(body_size: u64) -> Frame<'static> {
        Frame::Header {
            channel: CHANNEL,
            class_id: 60,
            body_size,
            properties: &[0, 0],
        }
    }

    fn body(payload: &[u8]) -> Frame<'_> {
        Frame::Body {
            channel: CHANNEL,
            payload,
        }
    }

    #[test]
    fn assembles_split_short_and_empty_bodies() {
        let payload: Vec<u8> = (0..40).collect();
        let mut a = Assembler::default();
        assert_eq!(a.handle(&deliver(1)).unwrap(), None);
        assert_eq!(a.handle(&header(40)).unwrap(), None);
        // The stamp itself split across body frames.
        assert_eq!(a.handle(&body(&payload[..3])).unwrap(), None);
        assert_eq!(a.handle(&body(&payload[3..20])).unwrap(), None);
        let d = a.handle(&body(&payload[20..])).unwrap().unwrap();
        assert_eq!((d.tag, d.stamp()), (1, &payload[..16]));

        a.handle(&deliver(2)).unwrap();
        a.handle(&header(5)).unwrap();
        let d = a.handle(&body(&payload[..5])).unwrap().unwrap();
        assert_eq!((d.tag, d.stamp()), (2, &payload[..5]));

        a.handle(&deliver(3)).unwrap();
        let d = a.handle(&header(0)).unwrap().unwrap();
        assert_eq!((d.tag, d.stamp().len()), (3, 0));
        // Between deliveries, other methods are the caller's.
        let other = Frame::Method {
            channel: CHANNEL,
            method: Method::BasicQosOk,
        };
        assert_eq!(a.handle(&other).unwrap(), None);
    }

    #[test]
    fn rejects_content_out_of_order() {
        let cases: [&[Frame<'_>]; 5] = [
            &[header(1)],
            &[body(b"x")],
            &[deliver(1), deliver(2)],
            &[deliver(1), body(b"x")],
            &[deliver(1), header(2), body(b"xyz")],
        ];
        for frames in cases {
            let mut a = Assembler::default();
            let results: Vec<_> = frames.iter().map(|f| a.handle(f)).collect();
            assert!(results.last().unwrap().is_err(), "{frames:?}");
        }
    }
}
