//! Topic routing throughput: 10,000 bindings on one topic exchange.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use switchyard_engine::exchange::topic::TopicTrie;

fn bench(c: &mut Criterion) {
    let mut trie = TopicTrie::default();
    for i in 0..10_000u32 {
        let pattern = match i % 4 {
            0 => format!("plant.{}.temp", i),
            1 => format!("plant.*.sensor{}", i),
            2 => format!("site{}.#", i),
            _ => format!("*.{}.#", i),
        };
        trie.insert(&pattern, i);
    }
    let keys: Vec<String> = (0..1000).map(|i| format!("plant.{}.temp", i * 7)).collect();
    let mut g = c.benchmark_group("topic");
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("match_10k_bindings", |b| {
        b.iter(|| {
            let mut hits = 0usize;
            for k in &keys {
                trie.for_each_match(black_box(k), |_| hits += 1);
            }
            black_box(hits)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
