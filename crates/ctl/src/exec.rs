//! Carries out a [`Plan`]: sends its requests through the [`Client`], reads
//! and writes files, and prints results on stdout.
//!
//! Errors are returned, not printed; [`crate::run`] prints them on stderr.

use crate::cli::Format;
use crate::client::Client;
use crate::error::CtlError;
use crate::listing;
use crate::request::{self, Plan, Show};
use serde_json::Value;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

/// Runs `plan`, printing in `format`.
pub(crate) fn execute(client: &Client, plan: Plan, format: Format) -> Result<(), CtlError> {
    match plan {
        Plan::Send(req, show) => {
            let reply = client.send(&req)?;
            show_reply(&show, &reply, format)
        }
        Plan::Unbind {
            list,
            source,
            destination,
            routing_key,
            arguments,
        } => {
            let listing = client.send(&list)?;
            let Some(key) = request::find_binding(&listing, &routing_key, &arguments) else {
                return Err(CtlError::NoSuchBinding {
                    exchange: source,
                    destination,
                    routing_key,
                });
            };
            let reply = client.send(&request::unbind(&list, key))?;
            show_reply(&Show::Done("binding deleted"), &reply, format)
        }
        Plan::Export(req, file) => {
            let reply = client.send(&req)?;
            let mut text = pretty(&reply);
            text.push('\n');
            if is_stdio(&file) {
                print(&text)
            } else {
                fs::write(&file, text).map_err(|source| CtlError::File {
                    path: file.clone(),
                    source,
                })?;
                if format == Format::Table {
                    print(&format!("definitions exported to {}\n", file.display()))?;
                }
                Ok(())
            }
        }
        Plan::Import(file) => {
            let text = read_input(&file)?;
            let definitions: Value =
                serde_json::from_str(&text).map_err(|source| CtlError::BadFile {
                    path: shown(&file, STDIN),
                    source,
                })?;
            let reply = client.send(&request::import(definitions))?;
            show_reply(&Show::Done("definitions imported"), &reply, format)
        }
    }
}

/// Prints a successful reply: JSON format shows the body (nothing if empty),
/// table format the table or sentence `show` names.
fn show_reply(show: &Show, reply: &Value, format: Format) -> Result<(), CtlError> {
    let text = match (format, show) {
        (Format::Json, _) if reply.is_null() => return Ok(()),
        (Format::Json, _) => format!("{}\n", pretty(reply)),
        (Format::Table, Show::Listing(kind)) => listing::listing(*kind, reply).render(),
        (Format::Table, Show::Messages) => listing::messages(reply).render(),
        (Format::Table, Show::Routed) => {
            if reply.get("routed").and_then(Value::as_bool) == Some(false) {
                "message published but not routed\n".to_owned()
            } else {
                "message published\n".to_owned()
            }
        }
        (Format::Table, Show::Done(what)) => format!("{what}\n"),
    };
    print(&text)
}

fn pretty(value: &Value) -> String {
    // Serializing a Value cannot fail (its map keys are strings).
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn is_stdio(file: &Path) -> bool {
    file.as_os_str() == "-"
}

/// How stdin and stdout are named in error messages.
const STDIN: &str = "<stdin>";
const STDOUT: &str = "<stdout>";

/// `file` as error messages show it: `-` is `stdio`'s name.
fn shown(file: &Path, stdio: &str) -> PathBuf {
    if is_stdio(file) {
        PathBuf::from(stdio)
    } else {
        file.to_owned()
    }
}

/// Writes `text` to stdout.
fn print(text: &str) -> Result<(), CtlError> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| CtlError::File {
            path: PathBuf::from(STDOUT),
            source,
        })
}

/// The whole of `file`, or of stdin for `-`.
fn read_input(file: &Path) -> Result<String, CtlError> {
    let result = if is_stdio(file) {
        let mut text = String::new();
        io::stdin().read_to_string(&mut text).map(|_| text)
    } else {
        fs::read_to_string(file)
    };
    result.map_err(|source| CtlError::File {
        path: shown(file, STDIN),
        source,
    })
}
