//! `switchyard ctl`: a command-line client of the management HTTP API, which
//! is RabbitMQ's (3.10), so it also operates a RabbitMQ node with the
//! management plugin.
//!
//! Commands follow rabbitmqadmin and rabbitmqctl: `list KIND`,
//! `declare queue|exchange`, `delete queue|exchange`, `bind`, `unbind`,
//! `purge`, `add-user`, `delete-user`, `set-permissions`, `set-policy`,
//! `clear-policy`, `export`, `import`, `close-connection`, `publish`, `get`.
//! Output is an aligned table (or a one-line confirmation) by default, the
//! server's JSON with `--format json`.
//!
//! Exit codes, for scripts:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the server refused the request (HTTP 4xx/5xx; its `error` and `reason` are printed on stderr), or the command failed locally (a file, no such binding) |
//! | 2 | usage error (bad arguments) |
//! | 3 | cannot reach the server (connection refused, unknown host, timeout, not HTTP) |
//! | 4 | authentication failed: HTTP 401 (also what RabbitMQ answers when a valid user may not do something, such as declaring an `amq.*` exchange) |
//!
//! It does not: speak TLS, retry, or talk AMQP (`publish` and `get` go
//! through the API's own endpoints).
//!
//! Modules: `cli` (arguments), `request` (command → method, path, body; no
//! I/O), `path` (percent-encoding), `client` (HTTP), `exec` (runs a plan and
//! prints), `listing` (columns per kind), `table` (text tables), `error`.
//! Entry point: [`run`], called by the `switchyard` binary for `switchyard ctl`.

mod cli;
mod client;
mod error;
mod exec;
mod listing;
mod path;
mod request;
mod table;

pub use error::CtlError;

use clap::Args;
use std::process::ExitCode;

/// Text shown at the end of `switchyard ctl --help`.
const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  the server refused the request (HTTP 4xx/5xx; its error and reason are
     printed on stderr), or the command failed locally (a file, no such binding)
  2  usage error
  3  cannot reach the server (connection refused, unknown host, timeout)
  4  authentication failed: HTTP 401 (wrong user or password; RabbitMQ also
     answers 401 when the user may not do this, e.g. declare amq.* names)";

/// Options of `switchyard ctl`: global options and the command.
#[derive(Debug, Clone, Args)]
#[command(after_help = AFTER_HELP, subcommand_required = true, arg_required_else_help = true)]
pub struct CtlArgs {
    #[command(flatten)]
    global: cli::GlobalArgs,
    #[command(subcommand)]
    command: cli::Command,
}

/// Runs one ctl command: prints its result on stdout, or an error on stderr,
/// and returns the exit code (see the crate docs).
pub fn run(args: CtlArgs) -> ExitCode {
    let client = client::Client::new(&args.global);
    let plan = request::plan(&args.command, &args.global.vhost);
    match exec::execute(&client, plan, args.global.format) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard ctl: error: {e}");
            e.exit_code()
        }
    }
}
