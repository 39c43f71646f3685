//! `switchyard-bench`: a load generator that measures any AMQP 0-9-1, MQTT
//! 3.1.1 or STOMP 1.2 broker (Switchyard, RabbitMQ, Mosquitto) by host and
//! port, the way RabbitMQ PerfTest does: producers and consumers in one
//! process, timestamps in the payload for latency, sequence numbers for loss
//! and duplicate detection. `conns` measures what an idle MQTT connection
//! costs the broker in memory.
//!
//! It uses independent clients (lapin, rumqttc, a small STOMP client of its
//! own in `stomp::client` and a raw AMQP one in `amqp_raw`), never
//! Switchyard's code, so the same numbers can be taken from any broker.

mod amqp;
mod amqp_raw;
mod conns;
mod mqtt;
mod report;
mod stomp;
mod track;

use clap::{Parser, Subcommand};
use report::Outcome;
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
    /// The AMQP scenario on a pipelined client of our own (pre-encoded
    /// publishes, large writes, multiple-ack): drives one broker core harder.
    AmqpRaw(amqp_raw::RawArgs),
    /// MQTT 3.1.1 scenarios (fan-in N→1, fan-out 1→N; QoS 0, 1, 2).
    Mqtt(mqtt::MqttArgs),
    /// STOMP 1.2 scenarios (/queue shared by consumers, /topic copied to each).
    Stomp(stomp::StompArgs),
    /// Open N idle MQTT connections and report the broker's RSS per connection.
    Conns(conns::ConnsArgs),
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
            Command::Amqp(args) => amqp::run(args).await.map(Outcome::Flow),
            Command::AmqpRaw(args) => amqp_raw::run(args).await.map(Outcome::Flow),
            Command::Mqtt(args) => mqtt::run(args).await.map(Outcome::Flow),
            Command::Stomp(args) => stomp::run(args).await.map(Outcome::Flow),
            Command::Conns(args) => conns::run(args).await.map(Outcome::Conns),
        }
    });
    match result {
        Ok(outcome) => {
            outcome.print();
            if outcome.incomplete() {
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
