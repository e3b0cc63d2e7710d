//! `thermo gateway` in front of boards running `thermo serve --fleet` on simulated SoCs, all
//! through one real Mosquitto on loopback:
//!
//! - on the tiny model: 503 with no board online, 429 with `Retry-After` when the only board
//!   has no headroom, whole and streamed answers once a board with headroom joins (raw HTTP
//!   and the official `openai` Python client: chat and completions), a
//!   malformed request refused without harm, garbage on the broker's topics ignored (a
//!   board's presence on another board's topic among it), the gateway serving again after a broker
//!   restart, and the per-board figures on `/metrics`;
//! - on the default model: a board killed (`kill -9`) mid-answer has its request re-queued
//!   once and answered by the other board, and the client gets every part of the answer
//!   exactly once (the same text as the same request answered start to end); a client that
//!   leaves mid-answer has its answer cancelled on the board.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use e2e_tests::mosquitto::{Mosquitto, free_port, publish_once};
use e2e_tests::{thermo, tiny_model};
use edge_runtime::engine::WeightFormat;
use serde_json::{Value, json};

/// A child process killed when dropped, with its log file.
struct Proc {
    child: Child,
    log: std::path::PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, home: &Path, name: &str) -> Result<Self> {
        let log = home.join(format!("{name}.log"));
        let child = cmd
            .env("THERMO_HOME", home)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc { child, log })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `thermo serve --fleet` as board `name` on `model`, holding `setpoint_c`.
fn board(
    broker: &Mosquitto,
    model: &Path,
    name: &str,
    setpoint_c: f64,
    home: &Path,
) -> Result<Proc> {
    let mut cmd = Command::new(thermo()?);
    cmd.args(["serve", "--fleet", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()?))
        .arg("--model")
        .arg(model)
        .args(["--threads", "1", "--sim", "rpi5-active"])
        .args(["--mqtt", &broker.url(), "--device-id", name])
        .args(["--setpoint", &setpoint_c.to_string()]);
    Proc::spawn(cmd, home, name)
}

/// `thermo gateway` for `model` on `port`.
fn gateway(broker: &Mosquitto, model: &str, port: u16, home: &Path) -> Result<Proc> {
    let mut cmd = Command::new(thermo()?);
    cmd.args(["gateway", "--broker", &broker.url(), "--model", model])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--id",
            "gw-test",
            "--max-wait-s",
            "2",
            "--accept-timeout-s",
            "5",
        ]);
    let p = Proc::spawn(cmd, home, "gateway")?;
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            t.elapsed() < Duration::from_secs(60),
            "gateway never listened: {}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(p)
}

/// Status, headers and body of an HTTP response.
type Reply = (u16, Vec<(String, String)>, String);

/// An HTTP/1.1 exchange: status, headers (lower-case names) and body, read to the end.
fn http(port: u16, method: &str, path: &str, body: &str) -> Result<Reply> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(300)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, rest) = raw.split_once("\r\n\r\n").context("no header end")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .context("no status")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, headers, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The text of an SSE chat stream's chunks, and whether it ended with `[DONE]`.
fn sse_text(body: &str) -> Result<(String, bool)> {
    let mut text = String::new();
    let mut done = false;
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data)?;
        ensure!(v.get("error").is_none(), "error in the stream: {v}");
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    Ok((text, done))
}

fn metric(port: u16, line_start: &str) -> Result<f64> {
    let (_, _, body) = http(port, "GET", "/metrics", "")?;
    body.lines()
        .find_map(|l| {
            l.strip_prefix(line_start)
                .and_then(|v| v.trim().parse().ok())
        })
        .with_context(|| format!("no {line_start} in {body}"))
}

/// Waits until the gateway sees `taking` boards taking work.
fn wait_taking(port: u16, taking: u64, why: &dyn Fn() -> String) -> Result<()> {
    let t = Instant::now();
    loop {
        if let Ok((200, _, body)) = http(port, "GET", "/healthz", "") {
            let v: Value = serde_json::from_str(&body)?;
            if v["boards"]["taking_work"].as_u64() == Some(taking) {
                return Ok(());
            }
        }
        ensure!(
            t.elapsed() < Duration::from_secs(120),
            "never {taking} boards taking work: {}",
            why()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn chat_body(model: &str, content: &str, max_tokens: u32, stream: bool) -> String {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    })
    .to_string()
}

#[test]
fn the_gateway_refuses_without_headroom_answers_through_boards_and_survives_a_broker_restart()
-> Result<()> {
    let mut broker = Mosquitto::start()?;
    let home = tempfile::tempdir()?;
    let port = free_port()?;
    let gw = gateway(&broker, "tiny", port, home.path())?;
    let model = tiny_model(WeightFormat::F32);

    // No board at all: 503, with Retry-After.
    let (status, headers, body) = http(
        port,
        "POST",
        "/v1/chat/completions",
        &chat_body("tiny", "Hi", 4, false),
    )?;
    ensure!(
        status == 503 && header(&headers, "retry-after").is_some(),
        "{status} {body}"
    );

    // One board whose chip is above its setpoint at idle (20 °C, in a 25 °C room): online,
    // never taking work, so 429.
    let hot = board(&broker, model, "board-hot", 20.0, home.path())?;
    let t = Instant::now();
    loop {
        let (_, _, h) = http(port, "GET", "/healthz", "")?;
        let v: Value = serde_json::from_str(&h)?;
        if v["boards"]["online"] == 1 {
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(120),
            "hot board never online: {}",
            hot.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, headers, body) = http(
        port,
        "POST",
        "/v1/chat/completions",
        &chat_body("tiny", "Hi", 4, false),
    )?;
    ensure!(status == 429, "{status} {body}");
    ensure!(header(&headers, "retry-after") == Some("2"), "{headers:?}");
    ensure!(body.contains("headroom"), "{body}");

    // A board with headroom answers, whole and streamed.
    let cool = board(&broker, model, "board-cool", 70.0, home.path())?;
    let why = || format!("{}\n{}", gw.log(), cool.log());
    wait_taking(port, 1, &why)?;
    let (status, headers, body) = http(
        port,
        "POST",
        "/v1/chat/completions",
        &chat_body("tiny", "Hello", 6, false),
    )?;
    ensure!(status == 200, "{status} {body}\n{}", why());
    ensure!(
        header(&headers, "x-thermo-board") == Some("board-cool"),
        "{headers:?}"
    );
    let v: Value = serde_json::from_str(&body)?;
    let whole = v["choices"][0]["message"]["content"]
        .as_str()
        .context("no content")?
        .to_string();
    ensure!(
        v["usage"]["completion_tokens"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{v}"
    );
    ensure!(
        v["footprint"]["tokens"].as_u64().is_some(),
        "no footprint: {v}"
    );
    let (status, _, body) = http(
        port,
        "POST",
        "/v1/chat/completions",
        &chat_body("tiny", "Hello", 6, true),
    )?;
    ensure!(status == 200, "{status} {body}");
    let (streamed, done) = sse_text(&body)?;
    ensure!(
        done && streamed == whole,
        "streamed {streamed:?} vs whole {whole:?}"
    );

    // The official `openai` Python client, whole and streamed, chat and completions.
    let out = Command::new(openai_python()?)
        .args(["-c", OPENAI_SCRIPT])
        .env("BASE_URL", format!("http://127.0.0.1:{port}/v1"))
        .output()?;
    ensure!(
        out.status.success(),
        "openai client: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        why()
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v["models"] == json!(["tiny"]), "{v}");
    ensure!(
        v["chat_text"] == v["stream_text"] && v["chat_text"] == json!(whole),
        "{v}"
    );
    ensure!(
        v["stream_usage"]["completion_tokens"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{v}"
    );
    ensure!(v["chat_footprint"]["energy_j"].is_number(), "{v}");
    ensure!(v["completion_text"] == v["completion_stream_text"], "{v}");
    ensure!(
        v["completion_text"].as_str().is_some_and(|t| !t.is_empty()),
        "{v}"
    );

    // Malformed requests are the client's error; the gateway carries on.
    for bad in [
        "{not json",
        r#"{"model":"tiny","messages":[]}"#,
        r#"{"model":"other","messages":[{"role":"user","content":"x"}]}"#,
    ] {
        let (status, _, body) = http(port, "POST", "/v1/chat/completions", bad)?;
        ensure!((400..500).contains(&status), "{bad}: {status} {body}");
    }

    // Garbage on the topics the gateway reads is logged and dropped.
    for (topic, payload) in [
        ("thermo/fleet/boards/board-x", b"{not json".to_vec()),
        ("thermo/fleet/boards/board-y", vec![b'x'; 5 * 1024]),
        (
            "thermo/fleet/boards/board-z",
            br#"{"board":"board-cool","model":"tiny","online":false}"#.to_vec(),
        ),
        (
            "thermo/gateway/gw-test/answers",
            b"{\"seq\":\"x\"}".to_vec(),
        ),
    ] {
        publish_once(broker.port(), topic, &payload)?;
    }
    let (status, _, body) = http(
        port,
        "POST",
        "/v1/chat/completions",
        &chat_body("tiny", "Hello", 6, false),
    )?;
    ensure!(
        status == 200,
        "after garbage on the broker: {status} {body}\n{}",
        why()
    );

    // The broker goes away and comes back: the gateway and the board reconnect.
    broker.stop()?;
    std::thread::sleep(Duration::from_secs(2));
    broker.restart()?;
    wait_taking(port, 1, &why)?;
    let (status, _, body) = http(
        port,
        "POST",
        "/v1/chat/completions",
        &chat_body("tiny", "Hello", 6, false),
    )?;
    ensure!(
        status == 200,
        "after the restart: {status} {body}\n{}",
        why()
    );

    ensure!(
        metric(
            port,
            "thermo_gateway_board_answers_total{board=\"board-cool\"}"
        )? == 8.0
    );
    ensure!(
        metric(
            port,
            "thermo_gateway_board_taking_work{board=\"board-hot\"}"
        )? == 0.0
    );
    ensure!(metric(port, "thermo_gateway_requests_total{outcome=\"rejected\"}")? >= 2.0);
    ensure!(metric(port, "thermo_gateway_requests_total{outcome=\"invalid\"}")? >= 3.0);
    drop(hot);
    Ok(())
}

/// The `openai` package's venv that `.ci/run` fills (`~/.cache/thermo/venv-openai`).
fn openai_python() -> Result<std::path::PathBuf> {
    let home = std::env::var_os("HOME").context("no HOME")?;
    let python = Path::new(&home).join(".cache/thermo/venv-openai/bin/python");
    ensure!(
        python.exists(),
        "{} is missing: .ci/run creates it (python3 -m venv, then pip install openai)",
        python.display()
    );
    Ok(python)
}

const OPENAI_SCRIPT: &str = r#"
import json, os
from openai import OpenAI

client = OpenAI(base_url=os.environ["BASE_URL"], api_key="not-needed-on-loopback")
out = {"models": [m.id for m in client.models.list().data]}
msgs = [{"role": "user", "content": "Hello"}]
chat = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0)
out["chat_text"] = chat.choices[0].message.content
out["chat_footprint"] = (chat.model_extra or {}).get("footprint")
stream = client.chat.completions.create(
    model="tiny", messages=msgs, max_tokens=6, temperature=0, stream=True,
    stream_options={"include_usage": True},
)
parts, usage = [], None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage.model_dump()
out["stream_text"] = "".join(parts)
out["stream_usage"] = usage
comp = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=5, temperature=0)
out["completion_text"] = comp.choices[0].text
streamed = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=5, temperature=0, stream=True)
out["completion_stream_text"] = "".join(c.choices[0].text for c in streamed if c.choices)
print(json.dumps(out))
"#;

/// Reads an SSE response from `s` until `n` text chunks arrived; the text so far, the board.
fn read_until_chunks(r: &mut BufReader<TcpStream>, n: usize, text: &mut String) -> Result<String> {
    let mut board = String::new();
    let mut chunks = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("the stream ended after {chunks} chunks: {text:?}");
        }
        let l = line.trim_end();
        if let Some(b) = l.strip_prefix("x-thermo-board:") {
            board = b.trim().to_string();
        }
        if let Some(data) = l.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(data)?;
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                text.push_str(t);
                chunks += 1;
                if chunks >= n {
                    return Ok(board);
                }
            }
        }
    }
}

#[cfg(feature = "real-model")]
#[test]
fn a_board_killed_mid_answer_has_its_request_requeued_once_and_the_client_gets_it_once()
-> Result<()> {
    let broker = Mosquitto::start()?;
    let home = tempfile::tempdir()?;
    let dir = e2e_tests::real_model_dir(WeightFormat::Ggml);
    let model = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("model folder")?
        .to_string();
    let port = free_port()?;
    let gw = gateway(&broker, &model, port, home.path())?;
    let mut boards = vec![
        (
            "board-1",
            board(&broker, &dir, "board-1", 70.0, home.path())?,
        ),
        (
            "board-2",
            board(&broker, &dir, "board-2", 70.0, home.path())?,
        ),
    ];
    let why = || gw.log();
    wait_taking(port, 2, &why)?;

    let prompt = "Write a long story about a lighthouse keeper and a storm.";
    let body = chat_body(&model, prompt, 60, true);
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(300)))?;
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut r = BufReader::new(s);
    let mut streamed = String::new();
    let first = read_until_chunks(&mut r, 4, &mut streamed)?;
    let i = boards
        .iter()
        .position(|(n, _)| *n == first)
        .with_context(|| format!("board {first:?}"))?;
    let (_, victim) = boards.remove(i);
    let pid = victim.child.id().to_string();
    ensure!(
        Command::new("kill")
            .args(["-KILL", &pid])
            .status()?
            .success()
    );
    let mut rest = String::new();
    r.read_to_string(&mut rest)?;
    let (tail, done) = sse_text(&dechunk_lines(&rest))?;
    ensure!(
        !tail.is_empty(),
        "nothing came after the kill: {}",
        gw.log()
    );
    streamed.push_str(&tail);
    ensure!(
        done,
        "the stream did not end with [DONE]: {rest}\n{}",
        gw.log()
    );
    ensure!(
        metric(port, "thermo_gateway_requeued_total ")? == 1.0,
        "{}",
        gw.log()
    );
    ensure!(
        metric(
            port,
            &format!("thermo_gateway_board_lost_total{{board=\"{first}\"}}")
        )? == 1.0
    );

    // The same request start to end on the surviving board: the text the client got is it,
    // with nothing repeated and nothing missing.
    let (status, _, whole) = http(
        port,
        "POST",
        "/v1/chat/completions",
        &chat_body(&model, prompt, 60, false),
    )?;
    ensure!(status == 200, "{status} {whole}");
    let v: Value = serde_json::from_str(&whole)?;
    let reference = v["choices"][0]["message"]["content"]
        .as_str()
        .context("no content")?;
    ensure!(
        streamed == reference,
        "streamed {streamed:?}\nreference {reference:?}"
    );
    ensure!(v["board"] != first, "{v}");

    // A client that leaves mid-answer: the gateway cancels the answer on its board, which
    // stops generating instead of finishing for nobody.
    let body = chat_body(&model, prompt, 400, true);
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(300)))?;
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut r = BufReader::new(s);
    read_until_chunks(&mut r, 2, &mut String::new())?;
    drop(r);
    let (_, survivor) = boards.first().context("no board left")?;
    let t = Instant::now();
    while !survivor.log().contains("cancelled an answer") {
        ensure!(
            t.elapsed() < Duration::from_secs(60),
            "the board was never told to stop: {}\n{}",
            survivor.log(),
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(boards);
    Ok(())
}

/// The SSE lines of a chunked body read without its headers (chunk sizes dropped).
fn dechunk_lines(raw: &str) -> String {
    raw.lines()
        .filter(|l| l.starts_with("data: "))
        .collect::<Vec<_>>()
        .join("\n")
}
