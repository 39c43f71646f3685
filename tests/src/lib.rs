//! Support code for black-box tests of the `switchyard` binary.
//!
//! The integration tests in `tests/tests/` never link the broker: they start
//! the real binary as a child process, talk to it over TCP like any client
//! would, and stop it with signals. This library holds the plumbing:
//!
//! * [`Broker`] starts `switchyard serve` on an ephemeral loopback port with a
//!   temporary (or caller-chosen) data directory, waits — bounded — for the
//!   ready file the broker writes once it listens, and exposes the address and
//!   an AMQP URI for clients. [`Broker::stop`] sends SIGTERM and waits for a
//!   graceful exit, [`Broker::kill`] sends SIGKILL, and [`Broker::restart`]
//!   starts a new process on the same data directory, which is how the
//!   durability tests observe what survived. Dropping a `Broker` kills its own
//!   child process and nothing else. The broker's stdout and stderr go to a
//!   log file in a temporary directory; if the test is panicking when the
//!   `Broker` is dropped, the tail of that log is printed so that it shows up
//!   next to the failed assertion. [`Broker::rss_bytes`] and
//!   [`Broker::open_fds`] read the child's `/proc` entries, for tests that
//!   bound the broker's memory or watch it accept and close sockets.
//! * [`RawClient`] is a blocking TCP client for the bad-input tests: it writes
//!   arbitrary bytes and reads with timeouts, so that malformed traffic can be
//!   sent without any client library second-guessing it.
//!
//! Everything here is bounded in time: no helper waits forever for a process
//! or a socket. Helpers panic with a descriptive message instead of returning
//! errors, because their only callers are tests.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long [`Broker::start`] waits for the ready file.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long [`Broker::stop`] waits for the process to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Most of the log printed when a test fails while a [`Broker`] is alive.
const LOG_TAIL_BYTES: usize = 64 * 1024;

/// Environment variable that overrides where the broker binary is looked up.
pub const BIN_ENV: &str = "SWITCHYARD_BIN";

/// A `switchyard serve` child process and the directories it uses.
///
/// See the [crate docs](crate) for the life cycle.
#[derive(Debug)]
pub struct Broker {
    bin: PathBuf,
    data_dir: PathBuf,
    /// Keeps a data directory created by [`Broker::start`] alive.
    _owned_data: Option<TempDir>,
    /// Holds the ready file and the log; removed on drop.
    run_dir: TempDir,
    child: Option<Child>,
    amqp_addr: Option<SocketAddr>,
    starts: u32,
    /// Config file passed with `--config`, if any.
    config: Option<PathBuf>,
    /// `SWITCHYARD_LOG` for the broker process, if set.
    log_filter: Option<String>,
}

impl Broker {
    /// Starts a broker on a fresh temporary data directory, which lives as
    /// long as the returned value (across [`Broker::restart`]s).
    ///
    /// # Panics
    ///
    /// If the binary cannot be found or started, exits early, or is not ready
    /// within [`START_TIMEOUT`].
    #[must_use]
    pub fn start() -> Self {
        let data = tempfile::Builder::new()
            .prefix("switchyard-data-")
            .tempdir()
            .expect("create temporary data directory");
        let data_dir = data.path().to_path_buf();
        Self::launch(locate_binary(), data_dir, Some(data))
    }

    /// Starts a broker on `data_dir`, which the caller owns and which is left
    /// in place afterwards.
    ///
    /// # Panics
    ///
    /// As [`Broker::start`].
    #[must_use]
    pub fn start_in(data_dir: impl Into<PathBuf>) -> Self {
        Self::launch(locate_binary(), data_dir.into(), None)
    }

    /// Starts a broker on a fresh temporary data directory with `toml` as
    /// its config file (flags still set the data dir and listener).
    ///
    /// # Panics
    ///
    /// As [`Broker::start`].
    #[must_use]
    pub fn start_with_config(toml: &str) -> Self {
        let data = tempfile::Builder::new()
            .prefix("switchyard-data-")
            .tempdir()
            .expect("create temporary data directory");
        let data_dir = data.path().to_path_buf();
        Self::launch_with(locate_binary(), data_dir, Some(data), Some(toml), None)
    }

    /// [`Broker::start_with_config`], logging with the `SWITCHYARD_LOG`
    /// filter `filter` (say `info,switchyard_mqtt::conn=debug`), for tests
    /// that read what the broker did from [`Broker::log`].
    ///
    /// # Panics
    ///
    /// As [`Broker::start`].
    #[must_use]
    pub fn start_with_config_logging(toml: &str, filter: &str) -> Self {
        let data = tempfile::Builder::new()
            .prefix("switchyard-data-")
            .tempdir()
            .expect("create temporary data directory");
        let data_dir = data.path().to_path_buf();
        Self::launch_with(
            locate_binary(),
            data_dir,
            Some(data),
            Some(toml),
            Some(filter),
        )
    }

    fn launch(bin: PathBuf, data_dir: PathBuf, owned: Option<TempDir>) -> Self {
        Self::launch_with(bin, data_dir, owned, None, None)
    }

    fn launch_with(
        bin: PathBuf,
        data_dir: PathBuf,
        owned: Option<TempDir>,
        toml: Option<&str>,
        log_filter: Option<&str>,
    ) -> Self {
        let run_dir = tempfile::Builder::new()
            .prefix("switchyard-run-")
            .tempdir()
            .expect("create temporary run directory");
        let mut broker = Self {
            bin,
            data_dir,
            _owned_data: owned,
            run_dir,
            child: None,
            amqp_addr: None,
            starts: 0,
            config: None,
            log_filter: log_filter.map(str::to_owned),
        };
        if let Some(toml) = toml {
            let path = broker.run_dir.path().join("switchyard.toml");
            fs::write(&path, toml).expect("write broker config file");
            broker.config = Some(path);
        }
        broker.spawn();
        broker
    }

    /// Starts the broker again on the same data directory, after
    /// [`Broker::stop`] or [`Broker::kill`]. The new process listens on a new
    /// port; read [`Broker::amqp_addr`] again afterwards.
    ///
    /// # Panics
    ///
    /// If the previous process is still running, or as [`Broker::start`].
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart() while the broker is still running; stop() or kill() it first"
        );
        self.spawn();
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let ready = self.ready_file();
        match fs::remove_file(&ready) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => panic!("remove stale ready file {}: {e}", ready.display()),
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .expect("open broker log file");
        writeln!(
            log,
            "===== switchyard start #{} (data dir {}) =====",
            self.starts,
            self.data_dir.display()
        )
        .expect("write broker log file");
        let stdout = log.try_clone().expect("clone broker log file handle");

        let mut command = Command::new(&self.bin);
        command.arg("serve");
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        if let Some(filter) = &self.log_filter {
            command.env("SWITCHYARD_LOG", filter);
        }
        let child = command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--amqp")
            .arg("127.0.0.1:0")
            .arg("--mqtt")
            .arg("127.0.0.1:0")
            .arg("--stomp")
            .arg("127.0.0.1:0")
            .arg("--web-stomp")
            .arg("127.0.0.1:0")
            .arg("--web-mqtt")
            .arg("127.0.0.1:0")
            .arg("--management")
            .arg("127.0.0.1:0")
            .arg("--prometheus")
            .arg("127.0.0.1:0")
            .arg("--ready-file")
            .arg(&ready)
            // Hermetic: no config file from the test's working directory
            // and no settings from the environment.
            .current_dir(self.run_dir.path())
            .env_remove("SWITCHYARD_CONFIG")
            .env_remove("SWITCHYARD_AMQP_HEARTBEAT")
            .env_remove("SWITCHYARD_AMQP_FRAME_MAX")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.amqp_addr = None;

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(addr) = read_ready_file(&ready) {
                self.amqp_addr = Some(addr);
                return;
            }
            let child = self.child.as_mut().expect("child just spawned");
            if let Some(status) = child.try_wait().expect("poll broker process") {
                self.child = None;
                panic!(
                    "broker exited with {status} before becoming ready; log:\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "broker not ready within {START_TIMEOUT:?} (no amqp= line in {}); log:\n{}",
                    ready.display(),
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address the MQTT listener is bound to.
    ///
    /// # Panics
    ///
    /// If the broker is not running or announced no MQTT listener.
    #[must_use]
    pub fn mqtt_addr(&self) -> SocketAddr {
        read_ready_line(&self.ready_file(), "mqtt=").expect("mqtt= line in the ready file")
    }

    /// The address the STOMP listener is bound to.
    ///
    /// # Panics
    ///
    /// If the broker is not running or announced no STOMP listener.
    #[must_use]
    pub fn stomp_addr(&self) -> SocketAddr {
        read_ready_line(&self.ready_file(), "stomp=").expect("stomp= line in the ready file")
    }

    /// The address the Web-STOMP listener is bound to.
    ///
    /// # Panics
    ///
    /// If the broker is not running or announced no Web-STOMP listener.
    #[must_use]
    pub fn web_stomp_addr(&self) -> SocketAddr {
        read_ready_line(&self.ready_file(), "web_stomp=")
            .expect("web_stomp= line in the ready file")
    }

    /// The address the Web-MQTT listener is bound to.
    ///
    /// # Panics
    ///
    /// If the broker is not running or announced no Web-MQTT listener.
    #[must_use]
    pub fn web_mqtt_addr(&self) -> SocketAddr {
        read_ready_line(&self.ready_file(), "web_mqtt=").expect("web_mqtt= line in the ready file")
    }

    /// The address the management HTTP API (and web UI) is bound to.
    ///
    /// # Panics
    ///
    /// If the broker is not running or announced no management listener.
    #[must_use]
    pub fn management_addr(&self) -> SocketAddr {
        read_ready_line(&self.ready_file(), "management=")
            .expect("management= line in the ready file")
    }

    /// The address the Prometheus metrics endpoint is bound to.
    ///
    /// # Panics
    ///
    /// If the broker is not running or announced no Prometheus listener.
    #[must_use]
    pub fn prometheus_addr(&self) -> SocketAddr {
        read_ready_line(&self.ready_file(), "prometheus=")
            .expect("prometheus= line in the ready file")
    }

    /// The address the AMQP listener is bound to.
    ///
    /// # Panics
    ///
    /// If the broker is not running.
    #[must_use]
    pub fn amqp_addr(&self) -> SocketAddr {
        self.amqp_addr.expect("broker is not running")
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`: the default user on the
    /// default vhost.
    #[must_use]
    pub fn amqp_uri(&self) -> String {
        let addr = self.amqp_addr();
        format!("amqp://guest:guest@{}:{}/%2f", addr.ip(), addr.port())
    }

    /// The data directory the broker was started on.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The OS process id of the running broker, if any.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The running broker's resident set size in bytes (`VmRSS` in
    /// `/proc/<pid>/status`); `None` if the broker is not running or the
    /// platform has no procfs.
    #[must_use]
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse::<u64>()
            .ok()?;
        Some(kib * 1024)
    }

    /// How many file descriptors the running broker holds open (entries of
    /// `/proc/<pid>/fd`): each accepted connection is one. `None` if the
    /// broker is not running or the platform has no procfs.
    #[must_use]
    pub fn open_fds(&self) -> Option<usize> {
        let dir = fs::read_dir(format!("/proc/{}/fd", self.pid()?)).ok()?;
        Some(dir.count())
    }

    /// Whether the child process is still alive (it has not been reaped).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(child) => child.try_wait().expect("poll broker process").is_none(),
        }
    }

    /// Sends SIGTERM and waits (bounded by [`STOP_TIMEOUT`]) for the process
    /// to exit, returning its exit status.
    ///
    /// # Panics
    ///
    /// If the broker is not running, or does not exit in time (it is then
    /// killed).
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("stop(): broker is not running");
        self.amqp_addr = None;
        let pid = child.id();
        // `kill` rather than libc: the test crates forbid unsafe code.
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Err(e) = sent {
            let _ = child.kill();
            let _ = child.wait();
            panic!("run `kill -TERM {pid}`: {e}");
        }
        match wait_bounded(&mut child, STOP_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "broker did not exit within {STOP_TIMEOUT:?} of SIGTERM; log:\n{}",
                    self.log_tail()
                );
            }
        }
    }

    /// Sends SIGKILL (no chance to flush anything) and reaps the process.
    /// Does nothing if the broker is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.amqp_addr = None;
    }

    /// Path of the file collecting the broker's stdout and stderr (all runs).
    #[must_use]
    pub fn log_file(&self) -> PathBuf {
        self.run_dir.path().join("broker.log")
    }

    /// Everything the broker has logged so far (all runs).
    #[must_use]
    pub fn log(&self) -> String {
        fs::read(self.log_file())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last [`LOG_TAIL_BYTES`] of [`Broker::log`].
    fn log_tail(&self) -> String {
        let log = self.log();
        if log.len() <= LOG_TAIL_BYTES {
            return log;
        }
        let mut start = log.len() - LOG_TAIL_BYTES;
        while !log.is_char_boundary(start) {
            start += 1;
        }
        format!("[... log truncated ...]\n{}", &log[start..])
    }

    fn ready_file(&self) -> PathBuf {
        self.run_dir.path().join("ready")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "---- switchyard log ({}) ----\n{}\n---- end of switchyard log ----",
                self.log_file().display(),
                self.log_tail()
            );
        }
    }
}

/// Finds the broker binary: `$SWITCHYARD_BIN` if set, else
/// `$CARGO_BIN_EXE_switchyard-under-test` if set at run time, else
/// `switchyard-under-test` next to
/// the `deps/` directory holding the running test executable (cargo's layout).
///
/// # Panics
///
/// If no candidate exists.
#[must_use]
pub fn locate_binary() -> PathBuf {
    for var in [BIN_ENV, "CARGO_BIN_EXE_switchyard-under-test"] {
        if let Some(path) = std::env::var_os(var) {
            return PathBuf::from(path);
        }
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("test executable has a directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("deps/ has a parent");
    }
    let mut name = OsString::from("switchyard-under-test");
    name.push(std::env::consts::EXE_SUFFIX);
    let candidate = dir.join(name);
    assert!(
        candidate.is_file(),
        "broker binary not found at {} (set {BIN_ENV})",
        candidate.display()
    );
    candidate
}

/// Reads `amqp=HOST:PORT` from a ready file; `None` while it does not exist
/// or has no such line.
fn read_ready_file(path: &Path) -> Option<SocketAddr> {
    read_ready_line(path, "amqp=")
}

fn read_ready_line(path: &Path, prefix: &str) -> Option<SocketAddr> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix(prefix))
        .find_map(|addr| addr.trim().parse().ok())
}

fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("poll broker process") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A blocking TCP client that sends whatever bytes it is told to.
///
/// Every read is bounded by a timeout.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
}

/// How a bounded read ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Bytes received before the read ended.
    pub data: Vec<u8>,
    /// True if the peer closed (EOF or reset); false if the time ran out.
    pub closed: bool,
}

impl RawClient {
    /// Connects to `addr` (bounded by 5 s).
    ///
    /// # Errors
    ///
    /// If the connection cannot be established.
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(Self { stream })
    }

    /// Writes all of `bytes`.
    ///
    /// # Errors
    ///
    /// If the socket fails (e.g. the broker already closed it).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads exactly `n` bytes, failing with `TimedOut` if they do not all
    /// arrive within `timeout` and `UnexpectedEof` if the peer closes first.
    ///
    /// # Errors
    ///
    /// As described, or on other socket errors.
    pub fn read_exact(&mut self, n: usize, timeout: Duration) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0; n];
        let mut filled = 0;
        while filled < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("got {filled} of {n} bytes within {timeout:?}"),
                ));
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("peer closed after {filled} of {n} bytes"),
                    ));
                }
                Ok(k) => filled += k,
                Err(e) if is_timeout(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(buf)
    }

    /// Reads until the peer closes the connection or `timeout` passes,
    /// whichever is first.
    ///
    /// # Errors
    ///
    /// On socket errors other than timeouts and resets.
    pub fn read_to_close(&mut self, timeout: Duration) -> io::Result<ReadOutcome> {
        let deadline = Instant::now() + timeout;
        let mut data = Vec::new();
        let mut buf = [0; 8192];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(ReadOutcome {
                    data,
                    closed: false,
                });
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(ReadOutcome { data, closed: true }),
                Ok(k) => data.extend_from_slice(&buf[..k]),
                Err(e) if is_timeout(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_reset(&e) => return Ok(ReadOutcome { data, closed: true }),
                Err(e) => return Err(e),
            }
        }
    }

    /// Half-closes the writing side (the broker sees EOF).
    ///
    /// # Errors
    ///
    /// On socket errors.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    /// The underlying stream, for anything the helpers do not cover.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}
