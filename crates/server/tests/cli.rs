//! The `switchyard` executable end to end: configuration precedence through
//! `check-config`, and `serve` binding port 0, announcing it in the ready
//! file and the log, and exiting cleanly on SIGTERM. Protocol behaviour is
//! tested in the protocol crates and the workspace `tests` crate.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// The binary with a clean environment: no inherited `SWITCHYARD_*` or log
/// settings, run in `dir`.
fn switchyard(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_remove("RUST_LOG")
        .env("SWITCHYARD_LOG", "info");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SWITCHYARD_") && key != "SWITCHYARD_LOG" {
            cmd.env_remove(key);
        }
    }
    // Tests run in parallel: no test may take the fixed MQTT port.
    cmd.env("SWITCHYARD_MQTT", "none");
    cmd.env("SWITCHYARD_STOMP", "none");
    cmd.env("SWITCHYARD_WEB_STOMP", "none");
    cmd.env("SWITCHYARD_WEB_MQTT", "none");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("switchyard runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn check_config_precedence_is_flag_env_file_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let heartbeat = |out: Output| {
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        let line = text.lines().find(|l| l.starts_with("heartbeat = "));
        line.expect("heartbeat printed").to_owned()
    };

    assert_eq!(
        heartbeat(run(switchyard(dir.path()).arg("check-config"))),
        "heartbeat = 60"
    );

    std::fs::create_dir(dir.path().join("config")).expect("mkdir");
    let file = dir.path().join("config/switchyard.toml");
    std::fs::write(&file, "[amqp]\nheartbeat = 11\n").expect("write");
    assert_eq!(
        heartbeat(run(switchyard(dir.path()).arg("check-config"))),
        "heartbeat = 11"
    );

    let mut env = switchyard(dir.path());
    env.env("SWITCHYARD_AMQP_HEARTBEAT", "22")
        .arg("check-config");
    assert_eq!(heartbeat(run(&mut env)), "heartbeat = 22");

    let mut flag = switchyard(dir.path());
    flag.env("SWITCHYARD_AMQP_HEARTBEAT", "22");
    flag.args(["check-config", "--amqp-heartbeat", "33"]);
    assert_eq!(heartbeat(run(&mut flag)), "heartbeat = 33");
}

#[test]
fn invalid_config_exits_1_naming_the_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = switchyard(dir.path());
    cmd.env("SWITCHYARD_AMQP", "localhost").arg("check-config");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--amqp (or SWITCHYARD_AMQP)"),
        "{}",
        stderr(&out)
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[amqp]\nlistne = \"none\"\n").expect("write");
    let out = run(switchyard(dir.path()).arg("--config").arg(&bad));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("listne"), "{}", stderr(&out));
}

/// A running `serve` whose stderr is collected; killed if the test fails.
struct Server {
    child: Child,
    ready: PathBuf,
}

impl Server {
    fn start(dir: &Path, amqp: &str) -> Self {
        let ready = dir.join("ready");
        let mut cmd = switchyard(dir);
        cmd.args([
            "--data-dir",
            "data",
            "--amqp",
            amqp,
            "--ready-file",
            "ready",
        ]);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let child = cmd.spawn().expect("switchyard starts");
        Self { child, ready }
    }

    /// The ready file's `amqp=` address, once it exists.
    fn amqp_addr(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.ready) {
                let line = text.lines().find_map(|l| l.strip_prefix("amqp="));
                return line.expect("amqp line in ready file").to_owned();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("switchyard exited early with {status}");
            }
            assert!(Instant::now() < deadline, "no ready file after 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Wait for exit (at most 20 s); exit code and stderr.
    fn wait(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "switchyard did not exit within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut err).expect("stderr");
        }
        (status.code(), err)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(unix)]
#[test]
fn serve_announces_port_zero_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), "127.0.0.1:0");
    let addr = server.amqp_addr();
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );
    let conn = std::net::TcpStream::connect(&addr).expect("listener accepts");

    server.signal("TERM");
    let ready = server.ready.clone();
    let (code, err) = server.wait();
    drop(conn);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!("listening protocol=amqp addr={addr}")),
        "{err}"
    );
    assert!(err.contains("shutting down signal=SIGTERM"), "{err}");
    assert!(!ready.exists(), "ready file removed on exit");
    assert!(dir.path().join("data").is_dir(), "store created");
}

#[cfg(unix)]
#[test]
fn bind_failure_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &addr);
    let (code, err) = server.wait();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot listen for amqp on {addr}")),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn a_locked_data_dir_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = Server::start(dir.path(), "127.0.0.1:0");
    first.amqp_addr();
    let second = run(switchyard(dir.path()).args(["--data-dir", "data", "--amqp", "none"]));
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("cannot open the store"),
        "{}",
        stderr(&second)
    );
    first.signal("INT");
    assert_eq!(first.wait().0, Some(0));
}
