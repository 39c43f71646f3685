//! `switchyard-bench`: a load generator that measures any AMQP 0-9-1 broker
//! (Switchyard, RabbitMQ) by host and port, the way RabbitMQ PerfTest does:
//! producers and consumers in one process, timestamps in the payload for
//! latency, sequence numbers for loss and duplicate detection.
//!
//! It uses independent client libraries (lapin), never Switchyard's code, so
//! the same numbers can be taken from any broker.

mod amqp;
mod report;
mod track;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "switchyard-bench", version, about = "Broker load generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// AMQP 0-9-1 scenarios (transient, persistent with confirms, N→N, fanout).
    Amqp(amqp::AmqpArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard-bench: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Amqp(args) => amqp::run(args).await,
        }
    });
    match result {
        Ok(report) => {
            report.print();
            if report.lost > 0 {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("switchyard-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
