//! `thermo serve` with the eco accounting on the tiny model and the simulated SoC: the
//! zombie-compute guard stops a looping answer and says why, budgets end answers, the
//! footprint comes from the governor's meter with every eco figure, emissions.csv gets a row
//! per answer (or none when switched off), and an agent resubmitting the same request or
//! earning the same error is refused with an OpenAI-style 429.

mod serve_common;

use serde_json::{Value, json};
use serve_common::{MODEL, Opts, Server, request};

fn post_json(port: u16, path: &str, body: &Value) -> (u16, String, Value) {
    let body = body.to_string();
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = request(port, raw.as_bytes()).expect("the server answers");
    let v = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, text, v)
}

/// The status line and headers of a `/v1/completions` answer, lower-cased.
fn raw_head(port: u16, body: &Value) -> String {
    use std::io::{Read, Write};
    let body = body.to_string();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let head = answer.split("\r\n\r\n").next().unwrap_or_default();
    head.to_ascii_lowercase()
}

/// A completion the tiny model answers in a loop: a repeat "penalty" below 1 rewards the
/// recent tokens, so greedy decoding cycles.
fn looping(prompt: &str, max_tokens: u64) -> Value {
    json!({"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
           "repeat_penalty": 0.3})
}

#[test]
fn the_guard_stops_a_looping_answer_says_why_and_counts_the_avoided_energy() {
    let server = Server::start(Opts::default());
    let (status, text, v) = post_json(server.port, "/v1/completions", &looping("abc def", 400));
    assert_eq!(status, 200, "{text}");
    let guard = &v["footprint"]["guard"];
    let kind = guard["kind"].as_str().unwrap_or_default();
    assert!(
        ["cycle", "stuck_token", "entropy_collapse", "no_new_content"].contains(&kind),
        "{v}"
    );
    assert!(
        guard["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{v}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let generated = v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
    assert!(generated < 400, "the loop ran to the limit: {v}");
    assert!(
        guard["avoided_j"].as_f64().is_some_and(|j| j > 0.0),
        "no avoided energy: {v}"
    );
    let stops = server
        .metric(&format!("thermo_guard_stops_total{{reason=\"{kind}\"}}"))
        .unwrap_or(0.0);
    assert_eq!(stops, 1.0);
    assert!(
        server
            .metric("thermo_guard_avoided_joules_total")
            .is_some_and(|j| j > 0.0)
    );
}

#[test]
fn a_token_budget_ends_the_answer_for_length_with_the_budget_named() {
    let server = Server::start(Opts {
        sets: vec!["eco.guard=false", "eco.max_tokens=5"],
        ..Opts::default()
    });
    let (status, text, v) = post_json(server.port, "/v1/completions", &looping("x", 100));
    assert_eq!(status, 200, "{text}");
    assert_eq!(v["usage"]["completion_tokens"], 5, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["footprint"]["guard"]["kind"], "token_budget", "{v}");
    assert_eq!(
        server.metric("thermo_guard_stops_total{reason=\"token_budget\"}"),
        Some(1.0)
    );
}

#[test]
fn the_footprint_comes_from_the_meter_with_every_eco_figure_and_a_csv_row() {
    let server = Server::start(Opts {
        sets: vec!["eco.region=\"de\""],
        ..Opts::default()
    });
    let mut joules = 0.0;
    for prompt in ["one", "two"] {
        let body = json!({"model": MODEL, "prompt": prompt, "max_tokens": 8, "temperature": 0});
        let (status, text, v) = post_json(server.port, "/v1/completions", &body);
        assert_eq!(status, 200, "{text}");
        let fp = &v["footprint"];
        assert!(
            fp["energy_source"]
                .as_str()
                .is_some_and(|s| s.starts_with("power sensor")),
            "{fp}"
        );
        for key in [
            "energy_j",
            "co2e_g",
            "water_ml",
            "nox_mg",
            "so2_mg",
            "pm25_mg",
            "wear_hours",
        ] {
            assert!(fp[key].as_f64().is_some_and(|x| x >= 0.0), "{key}: {fp}");
        }
        let energy = fp["energy_j"].as_f64().unwrap_or(0.0);
        assert!(energy > 0.0, "{fp}");
        assert_eq!(fp["region"], "de");
        // Germany's grid (Ember 2024) is cleaner than the world average of 473 g/kWh.
        let g_per_kwh = fp["co2e_g"].as_f64().unwrap_or(0.0) / (energy / 3.6e6);
        assert!(
            (100.0..473.0).contains(&g_per_kwh),
            "{g_per_kwh} g/kWh: {fp}"
        );
        joules += energy;
    }
    let csv = std::fs::read_to_string(server.home().join("emissions.csv")).expect("emissions.csv");
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 3, "a header and one row per answer: {csv}");
    assert!(rows[1].contains("thermo-serve"), "{csv}");
    let total = server.metric("thermo_energy_joules_total").unwrap_or(0.0);
    assert!((total - joules).abs() < 1e-3, "{total} vs {joules}");
    // Today's totals in the ledger (a fresh THERMO_HOME: only these two answers).
    assert_eq!(
        server.metric("thermo_eco_today{figure=\"requests\"}"),
        Some(2.0)
    );
    let today = server
        .metric("thermo_eco_today{figure=\"joules\"}")
        .unwrap_or(0.0);
    assert!((today - joules).abs() < 1e-6, "{today} vs {joules}");
    assert!(server.home().join("eco-ledger.json").exists());
}

#[test]
fn no_emissions_csv_is_written_when_it_is_switched_off() {
    let server = Server::start(Opts {
        sets: vec!["eco.write_emissions_csv=false"],
        ..Opts::default()
    });
    let body = json!({"model": MODEL, "prompt": "hi", "max_tokens": 4, "temperature": 0});
    let (status, text, _) = post_json(server.port, "/v1/completions", &body);
    assert_eq!(status, 200, "{text}");
    assert!(!server.home().join("emissions.csv").exists());
}

#[test]
fn an_agent_resubmitting_the_same_request_is_refused_with_a_429_that_says_why() {
    let server = Server::start(Opts {
        sets: vec!["eco.agent_loop_max_repeats=2", "eco.agent_loop_window_s=60"],
        ..Opts::default()
    });
    let body = json!({"model": MODEL, "prompt": "retry me", "max_tokens": 2, "temperature": 0,
                      "user": "agent-1"});
    for _ in 0..2 {
        let (status, text, _) = post_json(server.port, "/v1/completions", &body);
        assert_eq!(status, 200, "{text}");
    }
    let (status, text, v) = post_json(server.port, "/v1/completions", &body);
    assert_eq!(status, 429, "{text}");
    assert_eq!(v["error"]["code"], "agent_loop_detected", "{v}");
    assert_eq!(v["error"]["type"], "requests");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("same request was submitted 3 times"), "{msg}");
    let head = raw_head(server.port, &body);
    assert!(head.starts_with("http/1.1 429"), "{head}");
    assert!(head.contains("retry-after: 60"), "{head}");
    // Another user, or another request, is served.
    let mut other = body.clone();
    other["user"] = json!("agent-2");
    assert_eq!(post_json(server.port, "/v1/completions", &other).0, 200);
    let mut changed = body.clone();
    changed["prompt"] = json!("something else");
    assert_eq!(post_json(server.port, "/v1/completions", &changed).0, 200);
    assert_eq!(
        server.metric("thermo_agent_loop_refusals_total{reason=\"repeated_request\"}"),
        Some(2.0)
    );
}

#[test]
fn a_request_that_keeps_failing_the_same_way_is_refused() {
    let server = Server::start(Opts {
        sets: vec![
            "eco.agent_loop_max_errors=2",
            "eco.agent_loop_max_repeats=0",
        ],
        ..Opts::default()
    });
    let bad = json!({"model": "no-such-model", "prompt": "x"});
    for _ in 0..2 {
        let (status, text, _) = post_json(server.port, "/v1/completions", &bad);
        assert_eq!(status, 404, "{text}");
    }
    let (status, text, v) = post_json(server.port, "/v1/completions", &bad);
    assert_eq!(status, 429, "{text}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("same error occurred 2 times"), "{msg}");
    assert!(msg.contains("404"), "{msg}");
    assert_eq!(
        server.metric("thermo_agent_loop_refusals_total{reason=\"repeated_error\"}"),
        Some(1.0)
    );
}

#[test]
fn without_a_broker_telemetry_goes_to_json_lines_with_the_answers_footprint() {
    let server = Server::start(Opts {
        sets: vec![
            "telemetry.device_id=\"jsonl-dev\"",
            "telemetry.interval_s=0.2",
        ],
        ..Opts::default()
    });
    let body = json!({"model": MODEL, "prompt": "hi there", "max_tokens": 6, "temperature": 0});
    let (status, text, v) = post_json(server.port, "/v1/completions", &body);
    assert_eq!(status, 200, "{text}");
    let joules = v["footprint"]["energy_j"].as_f64().expect("energy");
    let file = server.home().join("telemetry").join("jsonl-dev.jsonl");
    let t = std::time::Instant::now();
    let request = loop {
        let lines = std::fs::read_to_string(&file).unwrap_or_default();
        let found = lines
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| r.to_string().contains("generated_tokens"));
        if let Some(r) = found {
            break r;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "no request record in {}: {lines}",
            file.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let text = request.to_string();
    assert!(text.contains("\"device\":\"jsonl-dev\""), "{text}");
    assert!(
        text.contains(&format!("\"joules\":{joules}")),
        "{text} vs {joules}"
    );
}
