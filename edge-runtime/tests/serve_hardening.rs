//! `thermo serve` against hostile clients on loopback: symlinks out of the adapters folder,
//! cross-site requests (foreign Origin, text/plain bodies, DNS-rebinding Host), adapter swaps
//! without a token, silent connections that would exhaust descriptors, over-long prompts and
//! OpenAI fields the service does not implement. Every case is bounded in time.

mod serve_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serve_common::{MODEL, Opts, Server, get, request};

const TOKEN: &str = "hardening-token-1";

/// Sends `method path` with `headers` (each ending in CRLF) and `body`; status and JSON.
fn send(port: u16, method: &str, path: &str, headers: &str, body: &str) -> (u16, Value) {
    let raw = format!(
        "{method} {path} HTTP/1.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = request(port, raw.as_bytes()).expect("the server answers");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

const LOCAL_JSON: &str = "Host: 127.0.0.1\r\nContent-Type: application/json\r\n";

fn chat(content: &str) -> String {
    json!({"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 2})
        .to_string()
}

fn fake_adapter(dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join("adapter_config.json"), b"{}").expect("config");
    std::fs::write(dir.join("adapter_model.safetensors"), b"").expect("weights");
}

#[test]
fn a_folder_of_symlinked_adapter_files_is_refused_and_the_base_keeps_serving() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("adapters");
    let outside = tmp.path().join("outside");
    fake_adapter(&outside);
    std::fs::create_dir_all(root.join("filelink")).expect("mkdir");
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::os::unix::fs::symlink(outside.join(f), root.join("filelink").join(f))
            .expect("symlink");
    }
    std::os::unix::fs::symlink(&outside, root.join("dirlink")).expect("dir symlink");
    let dir_set = format!("model.adapters_dir={:?}", root.display().to_string());
    let server = Server::start(Opts {
        sets: vec![&dir_set],
        env: vec![("THERMO_SERVICE_API_TOKEN", TOKEN.to_string())],
        ..Opts::default()
    });
    let auth = format!("{LOCAL_JSON}Authorization: Bearer {TOKEN}\r\n");
    for path in [
        "filelink",
        "dirlink",
        "../outside",
        "filelink/../../outside",
    ] {
        let (status, v) = send(
            server.port,
            "POST",
            "/v1/adapter",
            &auth,
            &json!({ "path": path }).to_string(),
        );
        assert_eq!(status, 403, "{path}: {v}");
        assert_eq!(v["error"]["param"], "path", "{path}: {v}");
    }
    let (status, v) = send(server.port, "GET", "/v1/adapter", &auth, "");
    assert_eq!(status, 200, "{v}");
    assert!(v["adapter"].is_null(), "still the base model: {v}");
    assert_eq!(v["swaps"], 0, "{v}");
}

#[test]
fn cross_site_and_rebinding_requests_are_refused_on_the_default_loopback_service() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("adapters");
    fake_adapter(&root.join("any"));
    let dir_set = format!("model.adapters_dir={:?}", root.display().to_string());
    let server = Server::start(Opts {
        sets: vec![
            &dir_set,
            "eco.agent_loop_max_errors=0",
            "eco.agent_loop_max_repeats=0",
        ],
        ..Opts::default()
    });
    let port = server.port;
    let host_port = format!("Host: 127.0.0.1:{port}\r\n");
    let swap = json!({"path": "any"}).to_string();
    let chat_body = chat("hi");
    // (method, path, headers, body, expected status)
    let hostile: Vec<(&str, &str, String, &str, u16)> = vec![
        (
            "POST",
            "/v1/adapter",
            format!("{host_port}Content-Type: text/plain\r\nOrigin: http://evil.example\r\n"),
            &swap,
            403,
        ),
        (
            "POST",
            "/v1/adapter",
            format!("{host_port}Content-Type: text/plain\r\n"),
            &swap,
            415,
        ),
        (
            "POST",
            "/v1/chat/completions",
            format!("{host_port}Content-Type: text/plain\r\n"),
            &chat_body,
            415,
        ),
        (
            "POST",
            "/v1/chat/completions",
            format!("{host_port}Content-Type: application/x-www-form-urlencoded\r\n"),
            &chat_body,
            415,
        ),
        (
            "POST",
            "/v1/chat/completions",
            format!("{host_port}Content-Type: multipart/form-data; boundary=x\r\n"),
            &chat_body,
            415,
        ),
        (
            "POST",
            "/v1/chat/completions",
            format!("{host_port}Content-Type: application/json\r\nOrigin: http://evil.example\r\n"),
            &chat_body,
            403,
        ),
        (
            "POST",
            "/v1/chat/completions",
            format!("{host_port}Content-Type: application/json\r\nOrigin: null\r\n"),
            &chat_body,
            403,
        ),
        (
            "POST",
            "/v1/chat/completions",
            format!("Host: attacker.example:{port}\r\nContent-Type: application/json\r\n"),
            &chat_body,
            403,
        ),
        (
            "GET",
            "/v1/models",
            format!("Host: attacker.example:{port}\r\n"),
            "",
            403,
        ),
        (
            "GET",
            "/metrics",
            "Host: attacker.example\r\n".to_string(),
            "",
            403,
        ),
        (
            "POST",
            "/v1/adapter",
            format!("{host_port}Content-Type: application/json\r\n"),
            &swap,
            403,
        ),
        ("DELETE", "/v1/adapter", host_port.clone(), "", 403),
    ];
    let mut wrong = vec![];
    for (method, path, headers, body, want) in &hostile {
        let (status, v) = send(port, method, path, headers, body);
        if status != *want || !v["error"]["message"].is_string() {
            wrong.push(format!("{method} {path} [{headers:?}] -> {status} {v}"));
        }
    }
    assert!(wrong.is_empty(), "wrong answers: {wrong:#?}");
    let (status, v) = send(port, "GET", "/v1/adapter", &host_port, "");
    assert_eq!((status, &v["swaps"]), (200, &json!(0)), "{v}");
    // The local flows keep working: same-origin JSON, with or without the port.
    let (status, v) = send(
        port,
        "POST",
        "/v1/chat/completions",
        &format!(
            "{host_port}Content-Type: application/json\r\nOrigin: http://127.0.0.1:{port}\r\n"
        ),
        &chat_body,
    );
    assert_eq!(status, 200, "{v}");
    let (status, v) = send(port, "POST", "/v1/chat/completions", LOCAL_JSON, &chat_body);
    assert_eq!(status, 200, "{v}");
    assert!(get(port, "/healthz").is_some_and(|(s, _)| s == 200));
}

#[test]
fn listed_origins_and_hosts_and_the_explicit_admin_key_are_accepted() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("adapters");
    std::fs::create_dir_all(&root).expect("mkdir");
    let dir_set = format!("model.adapters_dir={:?}", root.display().to_string());
    let server = Server::start(Opts {
        sets: vec![
            &dir_set,
            "service.allowed_origins=[\"http://localhost:3000\"]",
            "service.allowed_hosts=[\"thermo.lan\"]",
            "service.admin_without_token=true",
        ],
        ..Opts::default()
    });
    let port = server.port;
    let (status, v) = send(
        port,
        "POST",
        "/v1/chat/completions",
        &format!(
            "Host: thermo.lan:{port}\r\nContent-Type: application/json\r\nOrigin: http://localhost:3000\r\n"
        ),
        &chat("hi"),
    );
    assert_eq!(status, 200, "{v}");
    // Opened by the key: the swap is answered by the adapter's own check (no such folder).
    let (status, v) = send(
        port,
        "POST",
        "/v1/adapter",
        LOCAL_JSON,
        &json!({"path": "missing"}).to_string(),
    );
    assert_eq!(status, 404, "{v}");
}

/// Whether the server closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let t = Instant::now();
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 256];
    while t.elapsed() < within {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn silent_connections_are_capped_and_closed_after_the_header_timeout() {
    const CAP: usize = 12;
    let server = Server::start(Opts {
        sets: vec![
            "service.max_connections=12",
            "service.header_timeout_s=1",
            "service.idle_timeout_s=1",
        ],
        ..Opts::default()
    });
    let port = server.port;
    // Below the cap: /healthz answers beside silent connections.
    let mut silent: Vec<TcpStream> = (0..CAP - 2)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    assert!(get(port, "/healthz").is_some_and(|(s, _)| s == 200));
    // Beyond the cap: the excess is closed at once.
    let mut excess: Vec<TcpStream> = (0..3 * CAP)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    let closed_now = excess
        .iter_mut()
        .map(|s| closed_within(s, Duration::from_millis(400)))
        .filter(|closed| *closed)
        .count();
    assert!(
        closed_now >= 2 * CAP,
        "{closed_now} of {} connections beyond the cap closed",
        excess.len()
    );
    // Every silent connection is closed once the header timeout (1 s) has passed.
    for (i, s) in silent.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(15)),
            "silent connection {i} still open"
        );
    }
    drop(excess);
    // A keep-alive connection idle after its answer is closed too.
    let mut kept = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("request");
    assert!(
        closed_within(&mut kept, Duration::from_secs(15)),
        "idle keep-alive connection still open"
    );
    let t = Instant::now();
    while get(port, "/healthz").is_none_or(|(s, _)| s != 200) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "/healthz unreachable"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
}

#[test]
fn a_prompt_over_max_prompt_tokens_and_unimplemented_fields_are_refused_by_name() {
    let server = Server::start(Opts {
        sets: vec![
            "service.max_prompt_tokens=120",
            "eco.agent_loop_max_errors=0",
        ],
        ..Opts::default()
    });
    let port = server.port;
    // Over the limit but within the tiny model's context of 256 tokens.
    let long = "word ".repeat(30);
    let (status, v) = send(
        port,
        "POST",
        "/v1/chat/completions",
        LOCAL_JSON,
        &chat(&long),
    );
    assert_eq!(status, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("at most 120") && msg.contains("max_prompt_tokens"),
        "{msg}"
    );
    assert_eq!(v["error"]["param"], "messages", "{v}");
    let completion = json!({"model": MODEL, "prompt": long, "max_tokens": 2}).to_string();
    let (status, v) = send(port, "POST", "/v1/completions", LOCAL_JSON, &completion);
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "prompt", "{v}");
    let (status, _) = send(
        port,
        "POST",
        "/v1/chat/completions",
        LOCAL_JSON,
        &chat("hi"),
    );
    assert_eq!(status, 200);
    for (field, value) in [
        (
            "tools",
            json!([{"type": "function", "function": {"name": "f"}}]),
        ),
        ("response_format", json!({"type": "json_object"})),
        ("tool_choice", json!("required")),
        ("logprobs", json!(true)),
        ("n", json!(3)),
    ] {
        let mut body: Value = serde_json::from_str(&chat("hi")).expect("json");
        body[field] = value;
        let (status, v) = send(
            port,
            "POST",
            "/v1/chat/completions",
            LOCAL_JSON,
            &body.to_string(),
        );
        assert_eq!(status, 400, "{field}: {v}");
        assert_eq!(v["error"]["param"], field, "{v}");
    }
    let mut body: Value = serde_json::from_str(&chat("hi")).expect("json");
    body["response_format"] = json!({"type": "text"});
    let (status, v) = send(
        port,
        "POST",
        "/v1/chat/completions",
        LOCAL_JSON,
        &body.to_string(),
    );
    assert_eq!(status, 200, "{v}");
}
