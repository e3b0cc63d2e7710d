//! Shared by the `thermo serve` tests: the seeded tiny model written once per test process,
//! a server process on a free loopback port (stopped with SIGTERM when dropped), and a
//! minimal blocking HTTP/1.1 client for probes.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use edge_runtime::engine::WeightFormat;
use edge_runtime::engine::import::write_tiny_model;

/// The model id of the tiny model (its folder's name).
pub const MODEL: &str = "tiny";

/// The seeded tiny model's folder, written once per process.
pub fn tiny_model() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(MODEL);
        write_tiny_model(&path, 7, WeightFormat::F32).expect("tiny model");
        (dir, path)
    })
    .1
}

/// A free loopback port (bound and released; another process could take it meanwhile).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running `thermo serve`.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The port.
    pub port: u16,
    dir: tempfile::TempDir,
}

/// How to start a server.
#[derive(Default)]
pub struct Opts<'a> {
    /// `--set KEY=VALUE` overrides.
    pub sets: Vec<&'a str>,
    /// Extra environment.
    pub env: Vec<(&'a str, String)>,
    /// Listen on this port instead of a free one.
    pub port: Option<u16>,
    /// More flags for `thermo serve`.
    pub args: Vec<String>,
}

impl Server {
    /// Starts `thermo serve` on the tiny model and the simulated SoC, waiting until it
    /// answers `/healthz`.
    pub fn start(opts: Opts<'_>) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("thermo.toml");
        std::fs::write(&config, "").expect("empty config");
        let port = opts.port.unwrap_or_else(free_port);
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_thermo"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--model")
            .arg(tiny_model())
            .arg("--sim")
            .arg("rpi5")
            .arg("--threads")
            .arg("1");
        for s in &opts.sets {
            cmd.arg("--set").arg(s);
        }
        cmd.args(&opts.args);
        cmd.env("THERMO_HOME", dir.path())
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawning thermo serve");
        let mut server = Server {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            port,
            dir,
        };
        let t = Instant::now();
        loop {
            if let Some(Ok(Some(status))) = server.child.as_mut().map(|c| c.try_wait()) {
                panic!("thermo serve exited with {status}: {}", server.stderr());
            }
            if get(port, "/healthz").is_some() {
                return server;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "thermo serve did not come up: {}",
                server.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The server's THERMO_HOME (its cache: emissions.csv, telemetry).
    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
    }

    /// Waits for the process to exit, at most `timeout`; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let t = Instant::now();
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if t.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The value of a metric sample line `name` (exact name and labels) on `/metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = get(self.port, "/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Resident set size of the server process, kB.
    pub fn rss_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.sigterm();
            if self.wait_exit(Duration::from_secs(15)).is_none()
                && let Some(mut c) = self.child.take()
            {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A blocking `GET path` on 127.0.0.1:`port`: status and body, `None` when it cannot connect.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .into_bytes(),
    )
}

/// Sends raw request bytes and reads the whole answer (the request must say
/// `Connection: close`): status and body (de-chunked when chunked).
pub fn request(port: u16, raw: &[u8]) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    s.write_all(raw).ok()?;
    let mut buf = vec![];
    s.read_to_end(&mut buf).ok()?;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let body = &buf[split + 4..];
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&body[..eol]).trim().to_string();
        let Ok(n) = usize::from_str_radix(&size, 16) else {
            break;
        };
        let rest = &body[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        body = rest.get(n + 2..).unwrap_or_default();
    }
    out
}

/// The `data:` payloads of a server-sent-event body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("data:")
                        .map(|d| d.strip_prefix(' ').unwrap_or(d))
                })
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// The openai package version the tests pin.
const OPENAI_VERSION: &str = "3.57.0";

fn openai_venv() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    home.join(".cache/thermo/venv-openai")
}

/// The venv's python with the pinned `openai` importable, installing it when needed.
pub fn python_with_openai() -> PathBuf {
    let venv = openai_venv();
    let python = venv.join("bin/python");
    let has = |python: &PathBuf| {
        Command::new(python)
            .args([
                "-c",
                &format!("import openai, sys; sys.exit(openai.__version__ != {OPENAI_VERSION:?})"),
            ])
            .status()
            .is_ok_and(|s| s.success())
    };
    if has(&python) {
        return python;
    }
    if !python.exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "python3 -m venv {} failed (install python3-venv)",
            venv.display()
        );
    }
    let ok = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", &format!("openai=={OPENAI_VERSION}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok && has(&python),
        "pip install openai=={OPENAI_VERSION} failed"
    );
    python
}
