//! Bounded fuzzing of the HTTP request types, without a model or a server: random and mutated
//! JSON bodies for `/v1/chat/completions`, `/v1/completions` and `/v1/adapter`, and random
//! request headers for the host/origin/content-type policy, must each give a parse result or
//! a clean 4xx, never a panic; the process's peak RSS stays under 512 MB. A few hundred cases
//! per target by default; `THERMO_FUZZ_CASES=N` runs N.

use std::net::SocketAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use edge_runtime::serve::adapter::parse_swap;
use edge_runtime::serve::api::{ApiError, Limits, parse_chat, parse_completion};
use edge_runtime::serve::guard::Policy;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

const LIMITS: Limits = Limits {
    max_tokens_limit: 512,
    default_max_tokens: 64,
    max_prompt_tokens: 2048,
};

/// Peak resident set size of this process, kB (`VmHWM`).
fn peak_rss_kb() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn cases() -> u32 {
    std::env::var("THERMO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

const KEYS: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "prompt",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "stream",
    "stream_options",
    "include_usage",
    "n",
    "seed",
    "user",
    "tools",
    "tool_choice",
    "response_format",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "best_of",
    "echo",
    "suffix",
    "type",
    "text",
    "path",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|v| json!(v)),
        any::<f64>().prop_map(|v| json!(v)),
        prop_oneof![
            Just("tiny".to_string()),
            Just("user".to_string()),
            Just("text".to_string()),
            "\\PC{0,16}"
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec(
                (
                    prop_oneof![
                        proptest::sample::select(KEYS).prop_map(str::to_string),
                        "[a-z_]{1,10}"
                    ],
                    inner
                ),
                0..7
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Valid bodies that mutations start from.
fn seeds() -> Vec<Vec<u8>> {
    [
        json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}),
        json!({"model": "tiny", "messages": [{"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}]}],
            "stream": true, "stream_options": {"include_usage": true}, "stop": ["x"]}),
        json!({"model": "tiny", "prompt": "Once upon a time", "max_tokens": 7, "temperature": 0}),
        json!({"model": "tiny", "prompt": ["one"], "response_format": {"type": "text"}}),
        json!({"path": "team/support-v2"}),
        json!({"path": null}),
    ]
    .iter()
    .map(|v| v.to_string().into_bytes())
    .collect()
}

/// One byte-level mutation: (position, kind, byte).
fn mutate(mut body: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(pos, kind, byte) in edits {
        let at = if body.is_empty() { 0 } else { pos % body.len() };
        match kind % 4 {
            0 if !body.is_empty() => body[at] = byte,
            1 => body.insert(at, byte),
            2 if !body.is_empty() => {
                body.remove(at);
            }
            _ => body.truncate(at),
        }
    }
    body
}

/// A clean outcome: parsed, or a 4xx with an OpenAI error body.
fn clean(r: &Result<impl Sized, ApiError>) -> Result<(), TestCaseError> {
    if let Err(e) = r {
        prop_assert!((400..500).contains(&e.status), "status {}", e.status);
        prop_assert!(e.body()["error"]["message"].is_string());
    }
    Ok(())
}

fn check_body(bytes: &[u8]) -> Result<(), TestCaseError> {
    let chat = parse_chat(bytes, "tiny", &LIMITS);
    clean(&chat)?;
    if let Ok(r) = &chat {
        prop_assert!((1..=LIMITS.max_tokens_limit).contains(&r.options.max_tokens));
        prop_assert!(r.options.sampling.validate().is_ok());
    }
    let completion = parse_completion(bytes, "tiny", &LIMITS);
    clean(&completion)?;
    if let Ok(r) = &completion {
        prop_assert!((1..=LIMITS.max_tokens_limit).contains(&r.options.max_tokens));
    }
    clean(&parse_swap(bytes))
}

fn header_pair() -> impl Strategy<Value = (String, Vec<u8>)> {
    (
        prop_oneof![
            Just("host".to_string()),
            Just("origin".to_string()),
            Just("content-type".to_string()),
            Just("authorization".to_string()),
            "[a-z-]{1,12}",
        ],
        prop_oneof![
            Just(b"127.0.0.1:8080".to_vec()),
            Just(b"application/json".to_vec()),
            Just(b"http://evil.example".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..40),
        ],
    )
}

#[test]
fn random_and_mutated_requests_give_a_result_or_a_clean_4xx_within_bounded_memory() {
    let n = cases();
    let config = Config {
        cases: n,
        failure_persistence: None,
        ..Config::default()
    };
    let mut tried = 0u64;
    let mut runner = TestRunner::new(config.clone());
    runner
        .run(&json_value(), |v| {
            let mut v = v;
            if let Value::Object(map) = &mut v
                && map.len() % 2 == 0
            {
                map.insert("model".into(), json!("tiny"));
            }
            check_body(&serde_json::to_vec(&v).unwrap_or_default())
        })
        .expect("random JSON bodies");
    tried += u64::from(n);
    let seeds = seeds();
    let mut runner = TestRunner::new(config.clone());
    runner
        .run(
            &(
                0..seeds.len(),
                proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8),
            ),
            |(i, edits)| check_body(&mutate(seeds[i].clone(), &edits)),
        )
        .expect("mutated bodies");
    tried += u64::from(n);
    let mut runner = TestRunner::new(config.clone());
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..512), |bytes| {
            check_body(&bytes)
        })
        .expect("random bytes");
    tried += u64::from(n);
    let listen: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    let policy = Policy::new(listen, &["thermo.lan".into()], &[], false, false);
    let mut runner = TestRunner::new(config);
    runner
        .run(
            &(
                proptest::sample::select(vec![Method::GET, Method::POST, Method::DELETE]),
                prop_oneof![
                    Just("/v1/adapter".to_string()),
                    Just("/v1/chat/completions".to_string()),
                    "/[ -~]{0,20}"
                ],
                proptest::collection::vec(header_pair(), 0..6),
            ),
            |(method, path, pairs)| {
                let mut headers = HeaderMap::new();
                for (k, v) in pairs {
                    if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::from_bytes(&v)) {
                        headers.append(k, v);
                    }
                }
                let verdict = policy.check(&method, &path, &headers);
                clean(&verdict)?;
                if verdict.is_ok() && method == Method::POST {
                    prop_assert!(
                        headers
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| v
                                .to_ascii_lowercase()
                                .starts_with("application/json"))
                    );
                }
                Ok(())
            },
        )
        .expect("random headers");
    tried += u64::from(n);
    let peak = peak_rss_kb().expect("VmHWM in /proc/self/status");
    eprintln!("{tried} cases, peak RSS {peak} kB");
    assert!(peak < 512 * 1024, "peak RSS {peak} kB");
}
