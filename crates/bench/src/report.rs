//! The result of a run: a human table and one JSON line.

use serde::Serialize;

/// One scenario's figures.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) scenario: String,
    pub(crate) broker: String,
    pub(crate) size: usize,
    pub(crate) producers: usize,
    pub(crate) consumers: usize,
    pub(crate) seconds: f64,
    pub(crate) published: u64,
    pub(crate) consumed: u64,
    pub(crate) published_per_sec: f64,
    pub(crate) consumed_per_sec: f64,
    pub(crate) latency_p50_us: f64,
    pub(crate) latency_p99_us: f64,
    pub(crate) latency_p999_us: f64,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
}

impl Report {
    pub(crate) fn print(&self) {
        eprintln!();
        eprintln!("{:<28} {}", "scenario", self.scenario);
        eprintln!("{:<28} {}", "broker", self.broker);
        eprintln!(
            "{:<28} {} B, {} producers, {} consumers",
            "shape", self.size, self.producers, self.consumers
        );
        eprintln!(
            "{:<28} {:.0} msg/s ({} in {:.1} s)",
            "published", self.published_per_sec, self.published, self.seconds
        );
        eprintln!(
            "{:<28} {:.0} msg/s ({})",
            "consumed", self.consumed_per_sec, self.consumed
        );
        eprintln!(
            "{:<28} p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs",
            "latency", self.latency_p50_us, self.latency_p99_us, self.latency_p999_us
        );
        eprintln!(
            "{:<28} lost {}, duplicated {}",
            "integrity", self.lost, self.duplicated
        );
        match serde_json::to_string(self) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("cannot encode report: {e}"),
        }
    }
}
