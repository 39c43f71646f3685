//! The result of a run: a human table on stderr and one JSON line on stdout,
//! which `bench/compare.sh` collects.

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

/// Idle-connection scenario: what the broker's memory grew by per connection.
#[derive(Debug, Serialize)]
pub(crate) struct ConnsReport {
    pub(crate) scenario: String,
    pub(crate) broker: String,
    /// Connections asked for.
    pub(crate) connections: usize,
    /// Connections that got a successful CONNACK and were held open.
    pub(crate) opened: usize,
    pub(crate) failed: usize,
    /// Time to open them all.
    pub(crate) seconds: f64,
    pub(crate) connects_per_sec: f64,
    /// Broker RSS before the first connection and with all of them open
    /// (absent without `--broker-pid`).
    pub(crate) rss_before_bytes: Option<u64>,
    pub(crate) rss_after_bytes: Option<u64>,
    pub(crate) bytes_per_connection: Option<f64>,
}

impl ConnsReport {
    pub(crate) fn print(&self) {
        eprintln!();
        eprintln!("{:<28} {}", "scenario", self.scenario);
        eprintln!("{:<28} {}", "broker", self.broker);
        eprintln!(
            "{:<28} {} of {} ({} failed) in {:.1} s, {:.0}/s",
            "opened",
            self.opened,
            self.connections,
            self.failed,
            self.seconds,
            self.connects_per_sec
        );
        let mib = |b: Option<u64>| {
            b.map_or("?".to_owned(), |b| {
                format!("{:.1} MiB", b as f64 / 1048576.0)
            })
        };
        eprintln!(
            "{:<28} {} before, {} after",
            "broker RSS",
            mib(self.rss_before_bytes),
            mib(self.rss_after_bytes)
        );
        if let Some(b) = self.bytes_per_connection {
            eprintln!("{:<28} {b:.0} B", "per connection");
        }
        match serde_json::to_string(self) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("cannot encode report: {e}"),
        }
    }
}

/// What any subcommand produces.
pub(crate) enum Outcome {
    Flow(Report),
    Conns(ConnsReport),
}

impl Outcome {
    pub(crate) fn print(&self) {
        match self {
            Self::Flow(r) => r.print(),
            Self::Conns(r) => r.print(),
        }
    }

    /// True when the run fell short: messages lost or connections not opened.
    pub(crate) fn incomplete(&self) -> bool {
        match self {
            Self::Flow(r) => r.lost > 0,
            Self::Conns(r) => r.opened < r.connections,
        }
    }
}
