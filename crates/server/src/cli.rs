//! The command line: `switchyard [serve] [OPTIONS]` and
//! `switchyard check-config [OPTIONS]` and `switchyard ctl ...`.
//!
//! This module only declares flags (each with its `SWITCHYARD_*` variable, so
//! clap applies "flag over environment") and hands raw values to
//! [`crate::config`], which merges them over the file and validates them.

use crate::config::Overrides;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Switchyard message broker.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, args_conflicts_with_subcommands = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Options of `serve`, which runs when no subcommand is given.
    #[command(flatten)]
    serve: ServeArgs,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the broker (the default).
    Serve(ServeArgs),
    /// Validate the configuration and print the effective settings as TOML.
    CheckConfig(ConfigArgs),
    /// Operate a running broker through its management HTTP API.
    Ctl(switchyard_ctl::CtlArgs),
}

/// Options of `serve`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,

    /// Once every listener is bound, write FILE (atomically) with one
    /// `PROTOCOL=ADDR` line per listener, e.g. `amqp=127.0.0.1:5672`.
    #[arg(long, env = "SWITCHYARD_READY_FILE", value_name = "FILE")]
    pub(crate) ready_file: Option<PathBuf>,
}

/// Options that shape the configuration, shared by every subcommand.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ConfigArgs {
    /// Config file [default: config/switchyard.toml if present, else
    /// built-in defaults].
    #[arg(long, env = "SWITCHYARD_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Directory of the durable store [file: server.data_dir; default: ./data].
    #[arg(long, env = "SWITCHYARD_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// AMQP listener address, or `none` to disable it [file: amqp.listen;
    /// default: 127.0.0.1:5672].
    #[arg(long, env = "SWITCHYARD_AMQP", value_name = "ADDR")]
    pub(crate) amqp: Option<String>,

    /// AMQP heartbeat proposed to clients, in seconds; 0 for none
    /// [file: amqp.heartbeat; default: 60].
    #[arg(long, env = "SWITCHYARD_AMQP_HEARTBEAT", value_name = "SECS")]
    pub(crate) amqp_heartbeat: Option<u16>,

    /// Largest AMQP frame offered to clients, at least 4096
    /// [file: amqp.frame_max; default: 131072].
    #[arg(long, env = "SWITCHYARD_AMQP_FRAME_MAX", value_name = "BYTES")]
    pub(crate) amqp_frame_max: Option<u32>,

    /// MQTT 3.1.1 listener address, or `none` to disable it
    /// [file: mqtt.listen; default: 127.0.0.1:1883].
    #[arg(long, env = "SWITCHYARD_MQTT", value_name = "ADDR")]
    pub(crate) mqtt: Option<String>,

    /// STOMP listener address, or `none` to disable it
    /// [file: stomp.listen; default: 127.0.0.1:61613].
    #[arg(long, env = "SWITCHYARD_STOMP", value_name = "ADDR")]
    pub(crate) stomp: Option<String>,

    /// Web-STOMP (STOMP over WebSocket, path /ws) listener address, or `none`
    /// [file: web_stomp.listen; default: 127.0.0.1:15674].
    #[arg(long, env = "SWITCHYARD_WEB_STOMP", value_name = "ADDR")]
    pub(crate) web_stomp: Option<String>,

    /// Web-MQTT (MQTT over WebSocket, path /ws) listener address, or `none`
    /// [file: web_mqtt.listen; default: 127.0.0.1:15675].
    #[arg(long, env = "SWITCHYARD_WEB_MQTT", value_name = "ADDR")]
    pub(crate) web_mqtt: Option<String>,

    /// Management HTTP API and web UI address, or `none`
    /// [file: management.listen; default: 127.0.0.1:15672].
    #[arg(long, env = "SWITCHYARD_MANAGEMENT", value_name = "ADDR")]
    pub(crate) management: Option<String>,

    /// Prometheus metrics (/metrics) address, or `none`
    /// [file: prometheus.listen; default: 127.0.0.1:15692].
    #[arg(long, env = "SWITCHYARD_PROMETHEUS", value_name = "ADDR")]
    pub(crate) prometheus: Option<String>,

    /// Name of the administrator made on a fresh store, instead of guest
    /// [file: auth.default_user; default: guest].
    #[arg(long, env = "SWITCHYARD_DEFAULT_USER", value_name = "NAME")]
    pub(crate) default_user: Option<String>,

    /// Its password [file: auth.default_pass; default: guest].
    #[arg(
        long,
        env = "SWITCHYARD_DEFAULT_PASS",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub(crate) default_pass: Option<String>,
}

impl Cli {
    /// The subcommand to run, `serve` when none was named.
    pub(crate) fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }
}

impl ConfigArgs {
    /// The values that override the config file.
    pub(crate) fn overrides(&self) -> Overrides {
        Overrides {
            data_dir: self.data_dir.clone(),
            amqp: self.amqp.clone(),
            amqp_heartbeat: self.amqp_heartbeat,
            amqp_frame_max: self.amqp_frame_max,
            mqtt: self.mqtt.clone(),
            stomp: self.stomp.clone(),
            web_stomp: self.web_stomp.clone(),
            web_mqtt: self.web_mqtt.clone(),
            management: self.management.clone(),
            prometheus: self.prometheus.clone(),
            default_user: self.default_user.clone(),
            default_pass: self.default_pass.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, LoadedFile};
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        let argv = std::iter::once("switchyard").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(Cli::into_command)
    }

    fn serve_args(args: &[&str]) -> ServeArgs {
        match parse(args) {
            Ok(Command::Serve(a)) => a,
            other => panic!("{args:?} did not parse as serve: {other:?}"),
        }
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_is_the_default_subcommand() {
        let bare = serve_args(&["--amqp", "none", "--ready-file", "r"]);
        let named = serve_args(&["serve", "--amqp", "none", "--ready-file", "r"]);
        assert_eq!(bare.config.amqp.as_deref(), Some("none"));
        assert_eq!(named.config.amqp, bare.config.amqp);
        assert_eq!(named.ready_file, Some(PathBuf::from("r")));
    }

    #[test]
    fn check_config_takes_config_options() {
        match parse(&[
            "check-config",
            "--config",
            "x.toml",
            "--amqp-heartbeat",
            "7",
        ]) {
            Ok(Command::CheckConfig(a)) => {
                assert_eq!(a.config, Some(PathBuf::from("x.toml")));
                assert_eq!(a.amqp_heartbeat, Some(7));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["check-config", "--ready-file", "r"]).is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let args = serve_args(&[
            "--data-dir",
            "d",
            "--amqp",
            "127.0.0.1:0",
            "--amqp-frame-max",
            "8192",
        ]);
        let file = LoadedFile {
            config: crate::config::parse_file("[amqp]\nlisten = \"none\"\nframe_max = 65536\n")
                .expect("parses"),
            path: None,
        };
        let c = Config::resolve(&file, &args.config.overrides()).expect("valid");
        assert_eq!(c.server.data_dir, PathBuf::from("d"));
        assert_eq!(c.amqp.listen.map(|a| a.port()), Some(0));
        assert_eq!(c.amqp.frame_max, 8192);
    }

    #[test]
    fn bad_numbers_are_usage_errors_naming_the_flag() {
        let err = parse(&["--amqp-heartbeat", "soon"]).expect_err("not a number");
        assert!(err.to_string().contains("--amqp-heartbeat"), "{err}");
    }
}
