//! The real `replica-host run` process, started on a config written into a
//! temporary directory with the real sample plugins beside it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::{self, Response};

/// A running daemon; killed on drop if still running.
pub struct Daemon {
    child: Child,
    /// The HTTP API's address.
    pub addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// The outcome of a daemon that exited.
#[derive(Debug)]
pub struct Exited {
    /// Exit code.
    pub code: Option<i32>,
    /// Every stderr line.
    pub stderr: Vec<String>,
    /// How long it took to exit after the signal, when one was sent.
    pub took: Duration,
}

/// A config file body for `log_url` with the given `[[plugin]]` sections.
pub fn config(log_url: &str, plugins: &str) -> String {
    format!(
        "cluster_id = \"test-secondary\"\n\n[log]\nurl = \"{log_url}\"\n\n[consumer]\npoll_interval_ms = 50\nbatch_limit = 100\nmax_backoff_ms = 400\n\n[http]\nlisten = \"127.0.0.1:0\"\ndrain_ms = 0\n\n{plugins}"
    )
}

/// `[[plugin]]` sections for the three sample plugins, copied into `dir`.
pub fn sample_plugins(dir: &Path) -> String {
    let mut text = String::new();
    for (grain_type, krate) in [
        ("Counter", "counter-plugin"),
        ("BankAccount", "bank-account-plugin"),
        ("UserProfile", "user-profile-plugin"),
    ] {
        let file = copy_plugin(dir, krate);
        text.push_str(&format!(
            "[[plugin]]\ngrain_type = \"{grain_type}\"\npath = \"{file}\"\n\n"
        ));
    }
    text
}

/// `[[plugin]]` sections for `(grain type, plugin crate)` pairs, the
/// components copied into `dir`: fewer plugins start faster.
pub fn plugins(dir: &Path, which: &[(&str, &str)]) -> String {
    which
        .iter()
        .map(|(grain_type, krate)| {
            let file = copy_plugin(dir, krate);
            format!("[[plugin]]\ngrain_type = \"{grain_type}\"\npath = \"{file}\"\n\n")
        })
        .collect()
}

/// Copies a test plugin's component into `dir`; returns its file name.
pub fn copy_plugin(dir: &Path, krate: &str) -> String {
    let name = format!("{krate}.wasm");
    std::fs::copy(crate::plugin(krate), dir.join(&name)).expect("copy plugin");
    name
}

/// A replica's JSON without `staleness_ms`, which grows between two reads:
/// what two reads of an unchanged replica agree on. Panics when the field
/// is missing or not a count of milliseconds.
pub fn without_staleness(mut replica: serde_json::Value) -> serde_json::Value {
    assert!(replica["staleness_ms"].is_u64(), "{replica}");
    replica
        .as_object_mut()
        .expect("a replica is a JSON object")
        .remove("staleness_ms");
    replica
}

/// The API path of a replica, the key percent-encoded.
pub fn replica_path(grain_type: &str, grain_key: &str) -> String {
    format!(
        "/v1/replicas/{}/{}",
        percent_encode(grain_type),
        percent_encode(grain_key)
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The value of a Prometheus sample `name{labels}`, if present.
pub fn metric(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Runs `replica-host run --config` to completion (for startup failures).
pub fn run_to_exit(config_path: &Path) -> (i32, String) {
    let out = Command::new(crate::host_bin())
        .args(["run", "--config"])
        .arg(config_path)
        .env("RUST_LOG", "info")
        .output()
        .expect("run replica-host");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Daemon {
    /// Writes `config_text` to `dir/host.toml` and starts the daemon on it;
    /// returns once it serves HTTP.
    pub fn start(dir: &Path, config_text: &str) -> Daemon {
        Self::start_with(dir, config_text, &[], &[])
    }

    /// Like [`Daemon::start`], with `args` before `run` (e.g.
    /// `["--log-format", "json"]`).
    pub fn start_with_args(dir: &Path, config_text: &str, args: &[&str]) -> Daemon {
        Self::start_with(dir, config_text, args, &[])
    }

    /// Like [`Daemon::start`], with extra environment variables.
    pub fn start_with_env(dir: &Path, config_text: &str, envs: &[(&str, &str)]) -> Daemon {
        Self::start_with(dir, config_text, &[], envs)
    }

    /// Like [`Daemon::start`], with `args` before `run` and extra
    /// environment variables.
    pub fn start_with(
        dir: &Path,
        config_text: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Daemon {
        Self::spawn(Self::run_command(dir, config_text, args, envs))
    }

    /// Like [`Daemon::start`], with the process's limit on open files
    /// (`RLIMIT_NOFILE`, soft and hard) lowered to `nofile`.
    pub fn start_with_nofile(dir: &Path, config_text: &str, nofile: u64) -> Daemon {
        use std::os::unix::process::CommandExt;
        let mut command = Self::run_command(dir, config_text, &[], &[]);
        // SAFETY: setrlimit is async-signal-safe; nothing else runs
        // between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Self::spawn(command)
    }

    /// `replica-host [ARGS] run --config dir/host.toml`, the config written
    /// there first, with `envs`.
    fn run_command(dir: &Path, config_text: &str, args: &[&str], envs: &[(&str, &str)]) -> Command {
        let config_path: PathBuf = dir.join("host.toml");
        std::fs::write(&config_path, config_text).expect("write config");
        let mut command = Command::new(crate::host_bin());
        command
            .args(args)
            .args(["run", "--config"])
            .arg(&config_path)
            .envs(envs.iter().copied());
        command
    }

    /// Starts `command`, a `replica-host run` (perhaps behind a wrapper
    /// such as `ip netns exec`), with its stderr captured; returns once it
    /// serves HTTP.
    /// `RUST_LOG` is `info,replica_host=debug` unless `command` sets it.
    pub fn spawn(mut command: Command) -> Daemon {
        if !command.get_envs().any(|(k, _)| k == "RUST_LOG") {
            command.env("RUST_LOG", "info,replica_host=debug");
        }
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("start replica-host");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let lines = Arc::clone(&stderr);
        let pipe = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                // `http=ADDR` in the human format, `"http":"ADDR"` in JSON.
                if line.contains("replica-host running")
                    && let Some(addr) = line
                        .split("http=")
                        .nth(1)
                        .or_else(|| line.split("\"http\":\"").nth(1))
                        .and_then(|s| s.split(|c: char| c.is_whitespace() || c == '"').next())
                {
                    let _ = addr_tx.send(addr.parse::<SocketAddr>().expect("http= address"));
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(180)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "daemon did not start:\n{}",
                    stderr.lock().unwrap().join("\n")
                );
            }
        };
        Daemon {
            child,
            addr,
            stderr,
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Response {
        http::get(self.addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET path` with extra request headers.
    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        http::get_with(self.addr, path, headers).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `POST path` (no body) with extra request headers.
    pub fn post_with(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        http::request(self.addr, "POST", path, headers)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to exit; its exit code, or
    /// `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<Option<i32>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status.code());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal (`"HUP"`, `"TERM"`, …) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name} failed");
    }

    /// Polls `GET path` until `check` accepts the response (or panics after `timeout`).
    pub fn wait_for(
        &self,
        path: &str,
        timeout: Duration,
        check: impl Fn(&Response) -> bool,
    ) -> Response {
        let deadline = Instant::now() + timeout;
        loop {
            let response = self.get(path);
            if check(&response) {
                return response;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting on GET {path}; last: {} {}\nlog:\n{}",
                    response.status,
                    response.body,
                    self.stderr().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The sequences the daemon applied per grain, in the order it applied
    /// them (from its debug lines), for one grain type or all.
    pub fn applied_sequences(&self, grain_type: Option<&str>) -> BTreeMap<String, Vec<u64>> {
        let mut applied: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for line in self.stderr() {
            let of_type = grain_type.is_none_or(|t| line.contains(&format!("grain_type={t}")));
            if !line.contains("applied snapshot") || !of_type {
                continue;
            }
            let field = |name: &str| {
                line.split(&format!(" {name}="))
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .map(|s| s.trim_matches('"').to_string())
            };
            if let (Some(key), Some(sequence)) = (field("grain_key"), field("sequence")) {
                applied
                    .entry(key)
                    .or_default()
                    .push(sequence.parse().unwrap());
            }
        }
        applied
    }

    /// Every stderr line so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// How many stderr lines so far contain every one of `needles`.
    pub fn count_log(&self, needles: &[&str]) -> usize {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .count()
    }

    /// Waits for a stderr line containing every one of `needles`; returns it.
    pub fn wait_for_log(&self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .find(|line| needles.iter().all(|n| line.contains(n)))
            {
                return line.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for a log line with {needles:?}; log:\n{}",
                    self.stderr().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The entry of `grain_type` in `GET /v1/plugins`; `Null` when there
    /// is none.
    pub fn plugin_entry(&self, grain_type: &str) -> serde_json::Value {
        let plugins = self.get("/v1/plugins").json();
        plugins["plugins"]
            .as_array()
            .expect("a plugins array")
            .iter()
            .find(|p| p["grain_type"] == grain_type)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    /// `GET /v1/replicas/{grain_type}/{grain_key}`, the key percent-encoded.
    pub fn replica(&self, grain_type: &str, grain_key: &str) -> Response {
        self.get(&replica_path(grain_type, grain_key))
    }

    /// Polls a grain's replica until `check` accepts its JSON body (200 only).
    pub fn wait_for_replica(
        &self,
        grain_type: &str,
        grain_key: &str,
        timeout: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_for(&replica_path(grain_type, grain_key), timeout, |r| {
            r.status == 200 && check(&r.json())
        })
        .json()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> Exited {
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -TERM failed");
        let deadline = started + Duration::from_secs(30);
        let code = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("daemon did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = started.elapsed();
        // Let the reader thread drain the pipe.
        std::thread::sleep(Duration::from_millis(100));
        Exited {
            code,
            stderr: self.stderr(),
            took,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
