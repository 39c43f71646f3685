//! Frame encode/decode throughput for a publish (method + header + 16 B body).

use amq_protocol::protocol::{AMQPClass, BasicProperties, basic};
use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use switchyard_amqp::codec::{Decoder, Encoder};

fn publish_bytes(n: usize) -> BytesMut {
    let mut enc = Encoder::default();
    let mut out = BytesMut::new();
    for _ in 0..n {
        let p = basic::Publish {
            exchange: "".into(),
            routing_key: "bench".into(),
            mandatory: false,
            immediate: false,
        };
        enc.method(1, AMQPClass::Basic(basic::AMQPMethod::Publish(p)), &mut out);
        enc.content(
            1,
            BasicProperties::default().with_delivery_mode(2),
            &[7u8; 16],
            131_072,
            &mut out,
        );
    }
    out
}

fn bench(c: &mut Criterion) {
    let n = 1000;
    let bytes = publish_bytes(n).freeze();
    let mut g = c.benchmark_group("amqp_codec");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("decode_publish_16b", |b| {
        let dec = Decoder::new(131_072);
        b.iter(|| {
            let mut buf = BytesMut::from(&bytes[..]);
            let mut frames = 0;
            while let Ok(Some(f)) = dec.decode(&mut buf) {
                black_box(f);
                frames += 1;
            }
            assert_eq!(frames, 3 * n);
        })
    });
    g.bench_function("encode_deliver_16b", |b| {
        let mut enc = Encoder::default();
        let mut out = BytesMut::with_capacity(128 * n);
        b.iter(|| {
            out.clear();
            for tag in 0..n as u64 {
                let d = basic::Deliver {
                    consumer_tag: "ctag".into(),
                    delivery_tag: tag,
                    redelivered: false,
                    exchange: "".into(),
                    routing_key: "bench".into(),
                };
                enc.method(1, AMQPClass::Basic(basic::AMQPMethod::Deliver(d)), &mut out);
                enc.content(
                    1,
                    BasicProperties::default(),
                    black_box(&[7u8; 16]),
                    131_072,
                    &mut out,
                );
            }
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
