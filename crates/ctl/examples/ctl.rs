//! `switchyard ctl` without the broker binary, for working on the client
//! alone: `cargo run -p switchyard-ctl --example ctl -- list queues`.

use clap::Parser;
use std::process::ExitCode;
use switchyard_ctl::CtlArgs;

/// Operate a running broker through its management HTTP API.
#[derive(Parser)]
#[command(name = "switchyard ctl")]
struct Cli {
    #[command(flatten)]
    ctl: CtlArgs,
}

fn main() -> ExitCode {
    switchyard_ctl::run(Cli::parse().ctl)
}
