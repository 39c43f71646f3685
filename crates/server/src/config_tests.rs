//! Unit tests of config resolution: the shipped file, precedence, validation.

use super::*;

const SHIPPED: &str = include_str!("../../../config/switchyard.toml");

fn file(text: &str) -> LoadedFile {
    LoadedFile {
        config: parse_file(text).expect("test config parses"),
        path: Some(PathBuf::from("test.toml")),
    }
}

fn defaults() -> Config {
    Config::resolve(&LoadedFile::default(), &Overrides::default()).expect("defaults are valid")
}

fn resolve_err(file_text: &str, overrides: &Overrides) -> String {
    match Config::resolve(&file(file_text), overrides) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn built_in_defaults() {
    let c = defaults();
    assert_eq!(c.server.data_dir, PathBuf::from("./data"));
    assert_eq!(c.server.shutdown_timeout, Duration::from_secs(5));
    assert_eq!(
        c.amqp.listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 5672)))
    );
    assert_eq!(c.amqp.frame_max, 131_072);
    assert_eq!(c.amqp.channel_max.get(), 2047);
    assert_eq!(c.amqp.heartbeat, 60);
    assert_eq!(c.amqp.handshake_timeout, Duration::from_secs(10));
    assert_eq!(c.amqp.max_connections.get(), 65_536);
    assert_eq!(c.amqp.max_message_size.get(), 134_217_728);
    assert_eq!(c.amqp.max_unacked_per_channel.get(), 65_536);
}

#[test]
fn shipped_file_equals_built_in_defaults() {
    let shipped = file(SHIPPED);
    assert_eq!(
        Config::resolve(&shipped, &Overrides::default()),
        Ok(defaults())
    );
}

#[test]
fn shipped_file_sets_every_key() {
    // Destructured exhaustively so a new option fails to compile here until
    // it is added to the shipped file too.
    let FileConfig {
        server:
            ServerFile {
                data_dir,
                shutdown_timeout_ms,
                max_queues_per_vhost,
                consumer_timeout_ms,
                flow_backlog,
                tcp_recv_buffer,
            },
        amqp:
            AmqpFile {
                listen,
                frame_max,
                channel_max,
                heartbeat,
                handshake_timeout_ms,
                max_connections,
                max_message_size,
                max_connections_per_ip,
                max_consumers_per_channel,
                max_unacked_per_channel,
            },
        mqtt:
            MqttFile {
                listen: mqtt_listen,
                max_packet_size,
                max_inflight,
                connect_timeout_ms,
                max_connections: mqtt_max_connections,
                max_connections_per_ip: mqtt_per_ip,
                park_after_ms,
                max_keep_alive,
            },
        stomp:
            StompFile {
                listen: stomp_listen,
                max_body_size,
                max_headers,
                max_header_length,
                connect_timeout_ms: stomp_connect_timeout_ms,
                max_connections: stomp_max_connections,
                max_connections_per_ip: stomp_per_ip,
                max_subscriptions,
                max_unacked_per_subscription,
                min_heartbeat_ms,
            },
        web_stomp: WebFile {
            listen: web_stomp_listen,
        },
        web_mqtt: WebFile {
            listen: web_mqtt_listen,
        },
        management: HttpFile {
            listen: management_listen,
        },
        prometheus: HttpFile {
            listen: prometheus_listen,
        },
        auth:
            AuthFile {
                default_user,
                default_pass,
                loopback_users,
            },
    } = file(SHIPPED).config;
    assert!(management_listen.is_some() && prometheus_listen.is_some());
    assert!(default_user.is_some() && default_pass.is_some() && loopback_users.is_some());
    assert!(stomp_listen.is_some() && max_body_size.is_some() && max_headers.is_some());
    assert!(max_header_length.is_some() && stomp_connect_timeout_ms.is_some());
    assert!(stomp_max_connections.is_some() && max_subscriptions.is_some());
    assert!(max_unacked_per_subscription.is_some());
    assert!(min_heartbeat_ms.is_some() && web_stomp_listen.is_some() && web_mqtt_listen.is_some());
    assert!(mqtt_per_ip.is_some() && stomp_per_ip.is_some() && park_after_ms.is_some());
    assert!(max_keep_alive.is_some());
    assert!(mqtt_listen.is_some() && max_packet_size.is_some() && max_inflight.is_some());
    assert!(connect_timeout_ms.is_some() && mqtt_max_connections.is_some());
    assert!(max_queues_per_vhost.is_some() && consumer_timeout_ms.is_some());
    assert!(flow_backlog.is_some() && tcp_recv_buffer.is_some());
    assert!(max_connections_per_ip.is_some() && max_consumers_per_channel.is_some());
    assert!(max_unacked_per_channel.is_some());
    assert!(data_dir.is_some() && shutdown_timeout_ms.is_some());
    assert!(listen.is_some() && frame_max.is_some() && channel_max.is_some());
    assert!(heartbeat.is_some() && handshake_timeout_ms.is_some());
    assert!(max_connections.is_some() && max_message_size.is_some());
}

#[test]
fn amqp_defaults_match_the_protocol_crate() {
    let ours = defaults().amqp;
    let theirs = switchyard_amqp::AmqpConfig::default();
    assert_eq!(ours.frame_max, theirs.frame_max);
    assert_eq!(ours.channel_max.get(), theirs.channel_max);
    assert_eq!(ours.heartbeat, theirs.heartbeat);
    assert_eq!(ours.handshake_timeout, theirs.handshake_timeout);
    assert_eq!(ours.max_connections.get(), theirs.max_connections);
    assert_eq!(ours.max_message_size.get(), theirs.max_message_size);
    assert_eq!(
        ours.max_connections_per_ip.get(),
        theirs.max_connections_per_ip
    );
    assert_eq!(
        ours.max_consumers_per_channel.get(),
        theirs.max_consumers_per_channel
    );
    assert_eq!(
        ours.max_unacked_per_channel.get(),
        theirs.max_unacked_per_channel
    );
}

#[test]
fn mqtt_defaults_match_the_protocol_crate_and_zero_never_parks() {
    let ours = defaults().mqtt.protocol();
    let theirs = switchyard_mqtt::MqttConfig::default();
    assert_eq!(ours.park_after, theirs.park_after);
    assert_eq!(ours.max_keep_alive, theirs.max_keep_alive);
    assert_eq!(ours.max_inflight, theirs.max_inflight);
    assert_eq!(ours.connect_timeout, theirs.connect_timeout);
    let f = file("[mqtt]\npark_after_ms = 0\n");
    let c = Config::resolve(&f, &Overrides::default()).expect("valid");
    assert_eq!(c.mqtt.park_after, None);
}

#[test]
fn file_overrides_defaults_and_flags_override_file() {
    let f = file(
        "[server]\ndata_dir = \"/var/lib/sy\"\n\
         [amqp]\nlisten = \"0.0.0.0:5673\"\nheartbeat = 30\nframe_max = 8192\n",
    );
    let c = Config::resolve(&f, &Overrides::default()).expect("valid");
    assert_eq!(c.server.data_dir, PathBuf::from("/var/lib/sy"));
    assert_eq!(c.amqp.listen, Some(SocketAddr::from(([0, 0, 0, 0], 5673))));
    assert_eq!(c.amqp.heartbeat, 30);
    assert_eq!(c.amqp.frame_max, 8192);
    // Unset keys keep their defaults.
    assert_eq!(c.amqp.channel_max, defaults().amqp.channel_max);

    let o = Overrides {
        data_dir: Some(PathBuf::from("here")),
        amqp: Some("[::1]:0".to_owned()),
        amqp_heartbeat: Some(0),
        amqp_frame_max: Some(4096),
        mqtt: Some("none".to_owned()),
        stomp: Some("none".to_owned()),
        web_stomp: Some("127.0.0.1:0".to_owned()),
        web_mqtt: None,
        management: Some("none".to_owned()),
        prometheus: None,
        default_user: Some("admin".to_owned()),
        default_pass: None,
    };
    let c = Config::resolve(&f, &o).expect("valid");
    assert_eq!(c.mqtt.listen, None);
    assert_eq!(c.stomp.listen, None);
    assert_eq!(
        c.web_stomp.listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 0)))
    );
    assert_eq!(c.web_mqtt.listen, defaults().web_mqtt.listen);
    assert_eq!(c.management.listen, None);
    assert_eq!(c.prometheus.listen, defaults().prometheus.listen);
    assert_eq!(c.auth.default_user, "admin");
    assert_eq!(c.auth.default_pass, "guest");
    assert_eq!(c.server.data_dir, PathBuf::from("here"));
    assert_eq!(c.amqp.listen, Some("[::1]:0".parse().expect("literal")));
    assert_eq!(c.amqp.heartbeat, 0);
    assert_eq!(c.amqp.frame_max, 4096);
}

#[test]
fn none_disables_a_listener() {
    let c = Config::resolve(&file("[amqp]\nlisten = \"none\"\n"), &Overrides::default());
    assert_eq!(c.expect("valid").amqp.listen, None);
    let o = Overrides {
        amqp: Some("NONE".to_owned()),
        ..Overrides::default()
    };
    assert_eq!(
        Config::resolve(&file(""), &o).expect("valid").amqp.listen,
        None
    );
    // A flag can re-enable what the file disabled.
    let o = Overrides {
        amqp: Some("127.0.0.1:1".to_owned()),
        ..Overrides::default()
    };
    let c = Config::resolve(&file("[amqp]\nlisten = \"none\"\n"), &o).expect("valid");
    assert!(c.amqp.listen.is_some());
}

#[test]
fn bad_address_names_the_option() {
    let from_file = resolve_err("[amqp]\nlisten = \"localhost\"\n", &Overrides::default());
    assert!(
        from_file.contains("amqp.listen in test.toml"),
        "{from_file}"
    );
    assert!(from_file.contains("\"localhost\""), "{from_file}");

    let o = Overrides {
        amqp: Some("5672".to_owned()),
        ..Overrides::default()
    };
    let from_flag = resolve_err("", &o);
    assert!(
        from_flag.contains("--amqp (or SWITCHYARD_AMQP)"),
        "{from_flag}"
    );
}

#[test]
fn limits_are_checked() {
    let none = Overrides::default();
    for (text, key) in [
        ("[amqp]\nframe_max = 4095\n", "amqp.frame_max"),
        ("[amqp]\nchannel_max = 0\n", "amqp.channel_max"),
        ("[amqp]\nmax_connections = 0\n", "amqp.max_connections"),
        ("[amqp]\nmax_message_size = 0\n", "amqp.max_message_size"),
        (
            "[amqp]\nmax_unacked_per_channel = 0\n",
            "amqp.max_unacked_per_channel",
        ),
        (
            "[amqp]\nhandshake_timeout_ms = 0\n",
            "amqp.handshake_timeout_ms",
        ),
        (
            "[server]\nshutdown_timeout_ms = 0\n",
            "server.shutdown_timeout_ms",
        ),
        ("[server]\ndata_dir = \"\"\n", "server.data_dir"),
    ] {
        let err = resolve_err(text, &none);
        assert!(err.contains(key), "{text}: {err}");
    }
    let o = Overrides {
        amqp_frame_max: Some(100),
        ..Overrides::default()
    };
    let err = resolve_err("", &o);
    assert!(
        err.contains("--amqp-frame-max") && err.contains("4096"),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_rejected() {
    assert!(parse_file("[amqp]\nlisten = \"none\"\nport = 1\n").is_err());
    assert!(parse_file("[mqtt]\nlisten = \"none\"\nqos = 3\n").is_err());
    assert!(parse_file("[stomp]\nlisten = \"none\"\nversion = 2\n").is_err());
    assert!(parse_file("[management]\nlisten = \"none\"\nport = 1\n").is_err());
    assert!(parse_file("[auth]\npassword = \"x\"\n").is_err());
    assert!(parse_file("data_dir = \"x\"\n").is_err());
}

#[test]
fn printed_config_resolves_to_itself() {
    let o = Overrides {
        amqp: Some("none".to_owned()),
        amqp_heartbeat: Some(5),
        ..Overrides::default()
    };
    let c = Config::resolve(&file(SHIPPED), &o).expect("valid");
    let printed = c.to_toml().expect("prints");
    assert_eq!(
        Config::resolve(&file(&printed), &Overrides::default()),
        Ok(c)
    );
}

#[test]
fn missing_explicit_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = load_file(Some(&dir.path().join("nope.toml"))).expect_err("missing file");
    assert!(format!("{err:#}").contains("nope.toml"), "{err:#}");
}

#[test]
fn stomp_defaults_match_the_protocol_crate() {
    let ours = defaults().stomp.protocol();
    let theirs = switchyard_stomp::StompConfig::default();
    assert_eq!(ours.limits.max_body, theirs.limits.max_body);
    assert_eq!(ours.limits.max_headers, theirs.limits.max_headers);
    assert_eq!(
        ours.limits.max_header_length,
        theirs.limits.max_header_length
    );
    assert_eq!(ours.connect_timeout, theirs.connect_timeout);
    assert_eq!(ours.max_connections, theirs.max_connections);
    assert_eq!(ours.max_subscriptions, theirs.max_subscriptions);
    assert_eq!(ours.max_connections_per_ip, theirs.max_connections_per_ip);
    assert_eq!(ours.max_unacked, theirs.max_unacked);
    assert_eq!(
        theirs.max_unacked,
        switchyard_stomp::session::SessionConfig::default().max_unacked
    );
    let mqtt = defaults().mqtt.protocol();
    let mqtt_default = switchyard_mqtt::MqttConfig::default();
    assert_eq!(
        mqtt.max_connections_per_ip,
        mqtt_default.max_connections_per_ip
    );
    assert_eq!(mqtt.max_connections, mqtt_default.max_connections);
    assert_eq!(mqtt.max_inflight, mqtt_default.max_inflight);
    assert_eq!(ours.min_heartbeat_ms, theirs.min_heartbeat_ms);
}

#[test]
fn stomp_limits_are_validated() {
    let bad = file("[stomp]\nmax_header_length = 10\n");
    let err = Config::resolve(&bad, &Overrides::default()).expect_err("too small");
    assert!(err.to_string().contains("stomp.max_header_length"), "{err}");
    assert!(parse_file("[web_stomp]\nlisten = \"none\"\npath = \"/x\"\n").is_err());
}
