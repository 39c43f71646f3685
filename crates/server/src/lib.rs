//! The switchyard broker binary: command line, configuration, logging, and the
//! process lifecycle around the engine, the store and the protocol listeners.
//!
//! It owns no protocol and no storage logic: it wires
//! `switchyard-store`, `switchyard-engine` and the protocol crates together,
//! and decides start-up order, what is logged where, and how the process
//! stops. Modules: `cli` (flags), `config` (file + overrides → validated
//! `Config`), `run` (start, signals, shutdown).
//!
//! Entry point: [`main_entry`].

mod cli;
mod config;
mod config_admin;
mod config_mqtt;
mod config_stomp;
mod run;
mod websocket;

use clap::Parser as _;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// Environment variables holding the log filter, first match wins.
const LOG_ENV: [&str; 2] = ["SWITCHYARD_LOG", "RUST_LOG"];
/// The log filter when neither variable is set.
const DEFAULT_LOG: &str = "info";

/// Parse the command line, set up logging, run the chosen subcommand.
///
/// Exit codes: 0 after a clean run or a signal-driven shutdown, 1 for a
/// configuration, store or listener error, 2 for a usage error.
pub fn main_entry() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.into_command() {
        // The management API's client: its own output, exit codes and no
        // broker logging.
        cli::Command::Ctl(args) => return switchyard_ctl::run(args),
        cli::Command::Serve(args) => {
            init_logging();
            serve(&args)
        }
        cli::Command::CheckConfig(args) => {
            init_logging();
            check_config(&args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not through tracing: a fatal error is shown whatever the filter.
            eprintln!("switchyard: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `serve`: resolve the configuration, then run the broker until a signal.
fn serve(args: &cli::ServeArgs) -> anyhow::Result<()> {
    let (config, path) = load_config(&args.config)?;
    match &path {
        Some(path) => tracing::info!(path = %path.display(), "config file"),
        None => tracing::info!("no config file; built-in defaults"),
    }
    run::serve(&config, args.ready_file.as_deref())
}

/// `check-config`: validate, then print the effective configuration.
fn check_config(args: &cli::ConfigArgs) -> anyhow::Result<()> {
    let (config, path) = load_config(args)?;
    let source = match &path {
        Some(path) => path.display().to_string(),
        None => "none (built-in defaults)".to_owned(),
    };
    println!("# switchyard effective configuration; config file: {source}");
    print!("{}", config.to_toml()?);
    Ok(())
}

/// Read the config file and resolve it with the command-line overrides; also
/// returns the file's path, if one was read.
fn load_config(args: &cli::ConfigArgs) -> anyhow::Result<(config::Config, Option<PathBuf>)> {
    let file = config::load_file(args.config.as_deref())?;
    let config = config::Config::resolve(&file, &args.overrides())?;
    Ok((config, file.path))
}

/// Log to stderr, filtered by `SWITCHYARD_LOG`, else `RUST_LOG`, else `info`.
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn log_filter() -> EnvFilter {
    for var in LOG_ENV {
        let Ok(value) = std::env::var(var) else {
            continue;
        };
        if value.trim().is_empty() {
            continue;
        }
        match EnvFilter::try_new(&value) {
            Ok(filter) => return filter,
            Err(e) => eprintln!("switchyard: warning: ignoring {var}={value:?}: {e}"),
        }
    }
    EnvFilter::new(DEFAULT_LOG)
}
