//! LoRA adapters in `thermo serve` on the tiny model and the simulated SoC: an adapter
//! trained here is served from start (`--adapter`) or swapped in over `POST /v1/adapter`,
//! and the served greedy answers are the adapted model's; a bad adapter is refused with a
//! 4xx while the old model keeps serving; answers admitted before a swap finish on the model
//! they started with; the swap endpoint needs the bearer token.

mod serve_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use edge_runtime::engine::generate::{Gate, GenerateOptions, generate};
use edge_runtime::engine::import::tiny_weights;
use edge_runtime::engine::model::{KvState, LoadedModel};
use edge_runtime::engine::sampling::SamplingParams;
use edge_runtime::session::model::prompt_ids;
use edge_runtime::train::model::BaseModel;
use edge_runtime::train::serve::load_adapted;
use edge_runtime::train::tiny::train_adapter;
use serde_json::{Value, json};
use serve_common::{MODEL, Opts, Server, request, sse_data, tiny_model};

/// Seed of the tiny model `serve_common` writes.
const TINY_SEED: u64 = 7;
const TOKEN: &str = "swap-secret";
const PROMPT: &str = "pump P-17 has";
const MAX_TOKENS: usize = 24;

/// An adapters folder holding `pump`, an adapter trained on the tiny model, written once.
fn adapters_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let model = BaseModel::from_weights(tiny_weights(TINY_SEED)).expect("base");
        let dir = tempfile::tempdir().expect("tmp");
        train_adapter(&model, 20, 3e-2, &dir.path().join("pump")).expect("tiny adapter");
        dir
    })
    .path()
}

fn pump() -> PathBuf {
    adapters_dir().join("pump")
}

/// The greedy completion of `PROMPT` by `model`, as the engine produces it.
fn greedy(model: std::sync::Arc<LoadedModel>) -> String {
    let ids = prompt_ids(&model, &None, &[], Some(PROMPT)).expect("prompt");
    let mut state = KvState::new(model).expect("state");
    let opts = GenerateOptions {
        max_tokens: MAX_TOKENS,
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        stop: vec![],
    };
    let mut text = String::new();
    generate(&mut state, &ids, &opts, &mut |_| Gate::Continue, &mut |t| {
        text.push_str(t)
    })
    .expect("generate");
    text
}

/// The base model's and the adapted model's greedy answers, computed once.
fn expected() -> &'static (String, String) {
    static E: OnceLock<(String, String)> = OnceLock::new();
    E.get_or_init(|| {
        let base = greedy(LoadedModel::load(tiny_model()).expect("base"));
        let (adapted, _) = load_adapted(tiny_model(), &pump(), None).expect("adapted");
        (base, greedy(adapted))
    })
}

fn call(port: u16, method: &str, path: &str, body: Option<&Value>, token: bool) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = if token {
        format!("Authorization: Bearer {TOKEN}\r\n")
    } else {
        String::new()
    };
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n{auth}\r\n{body}",
        body.len()
    );
    let (status, text) = request(port, raw.as_bytes()).expect("the server answers");
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    (status, v)
}

fn completion_body(stream: bool) -> Value {
    json!({"model": MODEL, "prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": stream})
}

/// The served greedy answer to `PROMPT` and the `adapter` the response names.
fn answer(port: u16) -> (String, Option<String>) {
    let (status, v) = call(
        port,
        "POST",
        "/v1/completions",
        Some(&completion_body(false)),
        true,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], MODEL, "the model id stays the base's: {v}");
    let text = v["choices"][0]["text"].as_str().expect("text").to_string();
    (text, v["adapter"].as_str().map(str::to_string))
}

fn swap(port: u16, path: Value) -> (u16, Value) {
    call(
        port,
        "POST",
        "/v1/adapter",
        Some(&json!({ "path": path })),
        true,
    )
}

/// The value of the sample line `name` on `/metrics` (asked with the token).
fn metric(port: u16, name: &str) -> Option<f64> {
    let raw = format!(
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Connection: close\r\n\r\n"
    );
    let (_, body) = request(port, raw.as_bytes())?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn start(extra: &[String]) -> Server {
    let dir_set = format!(
        "model.adapters_dir={:?}",
        adapters_dir().display().to_string()
    );
    Server::start(Opts {
        // Whole greedy answers, the same prompt again and again: neither the guard nor the
        // agent-loop detector may step in.
        sets: vec![
            "eco.guard=false",
            "eco.agent_loop_max_repeats=0",
            "eco.agent_loop_max_errors=0",
            "service.workers=1",
            &dir_set,
        ],
        env: vec![("THERMO_SERVICE_API_TOKEN", TOKEN.to_string())],
        args: extra.to_vec(),
        ..Opts::default()
    })
}

#[test]
fn a_swapped_in_adapter_answers_like_the_adapted_model_and_unlike_the_base() {
    let (base, adapted) = expected();
    assert_ne!(base, adapted, "the adapter must change this answer");
    let server = start(&[]);
    let port = server.port;
    assert_eq!(answer(port), (base.clone(), None));

    let (status, v) = swap(port, json!("pump"));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["adapter"]["name"], "pump", "{v}");
    assert_eq!(v["adapter"]["mode"], "merged", "{v}");
    assert_eq!(answer(port), (adapted.clone(), Some("pump".into())));

    let (status, v) = call(port, "GET", "/v1/models", None, true);
    assert_eq!(status, 200);
    assert_eq!(v["data"][0]["id"], MODEL, "{v}");
    assert_eq!(v["data"][0]["adapter"], "pump", "{v}");
    let (_, v) = call(port, "GET", "/v1/adapter", None, true);
    assert_eq!(v["adapter"]["name"], "pump", "{v}");
    assert_eq!(
        metric(port, "thermo_adapter_info{adapter=\"pump\"}"),
        Some(1.0)
    );
    assert_eq!(metric(port, "thermo_adapter_swaps_total"), Some(1.0));

    // Back to the base model, by DELETE and by a null path.
    let (status, v) = call(port, "DELETE", "/v1/adapter", None, true);
    assert_eq!(status, 200, "{v}");
    assert!(v["adapter"].is_null(), "{v}");
    assert_eq!(answer(port), (base.clone(), None));
    let (status, _) = swap(port, json!(pump().display().to_string()));
    assert_eq!(status, 200, "an absolute path under the adapters folder");
    let (status, v) = swap(port, Value::Null);
    assert_eq!(status, 200, "{v}");
    assert_eq!(answer(port), (base.clone(), None));
    assert_eq!(metric(port, "thermo_adapter_info{adapter=\"\"}"), Some(1.0));
    assert_eq!(metric(port, "thermo_adapter_swaps_total"), Some(4.0));
    assert!(server.stderr().contains("now serving adapter pump"));
}

/// A copy of `pump` under the adapters folder named `name`, with `edit` applied to it.
fn broken_copy(name: &str, edit: impl FnOnce(&Path)) -> String {
    let dir = adapters_dir().join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(pump().join(f), dir.join(f)).expect("copy");
    }
    edit(&dir);
    name.to_string()
}

#[test]
fn a_bad_adapter_gets_a_4xx_and_the_old_model_keeps_serving() {
    let (_, adapted) = expected();
    // Started with the adapter applied.
    let server = start(&["--adapter".into(), pump().display().to_string()]);
    let port = server.port;
    assert_eq!(answer(port), (adapted.clone(), Some("pump".into())));
    let garbage = broken_copy("garbage", |d| {
        std::fs::write(
            d.join("adapter_model.safetensors"),
            b"not a safetensors file",
        )
        .expect("write");
    });
    let wrong_rank = broken_copy("wrong-rank", |d| {
        let p = d.join("adapter_config.json");
        let mut cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
        cfg["r"] = json!(8);
        std::fs::write(&p, cfg.to_string()).expect("write");
    });
    let outside = tempfile::tempdir().expect("tmp");
    for (path, status, says) in [
        (json!("missing"), 404, "no adapter folder"),
        (json!(garbage), 422, "cannot be applied"),
        (json!(wrong_rank), 422, "cannot be applied"),
        (json!("../elsewhere"), 403, "outside the adapters folder"),
        (
            json!(outside.path().display().to_string()),
            403,
            "outside the adapters folder",
        ),
        (json!(""), 400, "path"),
    ] {
        let (got, v) = swap(port, path.clone());
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(got, status, "{path}: {v}");
        assert!(message.contains(says), "{path}: {message}");
        assert_eq!(answer(port), (adapted.clone(), Some("pump".into())));
    }
    let (_, v) = call(port, "GET", "/v1/adapter", None, true);
    assert_eq!(v["adapter"]["name"], "pump", "{v}");
    assert_eq!(metric(port, "thermo_adapter_swaps_total"), Some(0.0));
    assert_eq!(
        metric(port, "thermo_adapter_swap_failures_total"),
        Some(5.0)
    );
}

/// Sends a streamed completion; returns once its response head arrived (the request is
/// admitted), with a handle yielding the answer's text and when its stream ended.
fn stream_admitted(port: u16) -> std::thread::JoinHandle<(String, Instant)> {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let body = completion_body(true).to_string();
        write!(
            s,
            "POST /v1/completions HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("request");
        let mut seen = vec![];
        let mut buf = [0u8; 512];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "no response head");
            seen.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&seen).into_owned();
        assert!(
            head.starts_with("HTTP/1.") && head.contains(" 200 "),
            "{head}"
        );
        let _ = tx.send(());
        s.read_to_end(&mut seen).expect("read");
        let ended = Instant::now();
        let text = String::from_utf8_lossy(&seen).into_owned();
        let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
        // An HTTP/1.0 answer is not chunked: the body is the event stream itself.
        let answer: String = sse_data(body)
            .iter()
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| {
                let v: Value = serde_json::from_str(d).ok()?;
                v["choices"][0]["text"].as_str().map(str::to_string)
            })
            .collect();
        assert!(text.contains("data: [DONE]"), "the stream was cut: {text}");
        (answer, ended)
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the request is admitted");
    handle
}

#[test]
fn answers_admitted_before_a_swap_finish_on_the_model_they_started_with() {
    let (base, adapted) = expected();
    let server = start(&[]);
    let port = server.port;
    // One worker, several answers queued behind it: those still running or waiting when
    // the swap lands must end on the base model. The tiny model is fast, so a round where
    // every answer had ended before the swap did proves nothing and is repeated.
    let mut overlapped = 0;
    for round in 0..10 {
        let (old, new, target) = if round % 2 == 0 {
            (base, adapted, json!("pump"))
        } else {
            (adapted, base, Value::Null)
        };
        let streams: Vec<_> = (0..6).map(|_| stream_admitted(port)).collect();
        let (status, v) = swap(port, target);
        assert_eq!(status, 200, "{v}");
        let swapped = Instant::now();
        for s in streams {
            let (text, ended) = s.join().expect("stream thread");
            assert_eq!(
                &text, old,
                "round {round}: an admitted answer changed model"
            );
            if ended > swapped {
                overlapped += 1;
            }
        }
        assert_eq!(&answer(port).0, new, "round {round}: the next answer");
        if overlapped >= 2 {
            eprintln!(
                "{overlapped} answers ended after the swap, in {} round(s)",
                round + 1
            );
            break;
        }
    }
    assert!(
        overlapped >= 2,
        "no answer was still running when a swap landed"
    );
}

#[test]
fn an_adapter_swap_without_the_token_is_refused() {
    let server = start(&[]);
    let port = server.port;
    let body = json!({"path": "pump"});
    for (method, body) in [("POST", Some(&body)), ("DELETE", None), ("GET", None)] {
        let (status, v) = call(port, method, "/v1/adapter", body, false);
        assert_eq!(status, 401, "{method}: {v}");
    }
    let (_, v) = call(port, "GET", "/v1/adapter", None, true);
    assert!(v["adapter"].is_null(), "{v}");
    assert_eq!(answer(port).1, None);
    assert_eq!(metric(port, "thermo_adapter_swaps_total"), Some(0.0));
}

#[test]
fn the_adapter_flag_and_keys_land_in_the_model_section() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = tmp.path().join("thermo.toml");
    std::fs::write(&config, "[model]\nadapters_dir = \"/srv/adapters\"\n").expect("config");
    let thermo = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_thermo"))
            .arg("config")
            .arg("--config")
            .arg(&config)
            .args(extra)
            .env("THERMO_HOME", tmp.path())
            .output()
            .expect("thermo config");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = thermo(&["--adapter", "/srv/adapters/pump"]);
    assert!(ok, "{text}");
    assert!(text.contains("adapter = \"/srv/adapters/pump\""), "{text}");
    assert!(text.contains("adapters_dir = \"/srv/adapters\""), "{text}");
    let (ok, text) = thermo(&["--set", "model.adapter=\"\""]);
    assert!(!ok, "{text}");
    assert!(text.contains("model.adapter: must not be empty"), "{text}");
}

#[test]
fn a_service_started_with_a_missing_or_broken_adapter_exits_saying_why() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = tmp.path().join("thermo.toml");
    std::fs::write(&config, "").expect("config");
    let broken = tmp.path().join("broken");
    std::fs::create_dir(&broken).expect("mkdir");
    std::fs::write(broken.join("adapter_config.json"), "{}").expect("write");
    for (adapter, says) in [
        (tmp.path().join("missing"), "no adapter folder"),
        (broken, "applying the adapter"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_thermo"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--sim", "rpi5", "--threads", "1"])
            .arg("--model")
            .arg(tiny_model())
            .arg("--adapter")
            .arg(&adapter)
            .env("THERMO_HOME", tmp.path())
            .output()
            .expect("thermo serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {adapter:?}");
        assert!(stderr.contains(says), "{adapter:?}: {stderr}");
    }
}
