//! Load on `thermo serve`: 32 concurrent streaming clients for 60 s on the tiny model. Every
//! answer must be either complete and identical to the greedy reference for its prompt (no
//! token lost or duplicated) or a 429; the server's resident memory must stay flat. Prints
//! throughput, latency percentiles and the RSS samples.

mod serve_common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serve_common::{MODEL, Opts, Server};

const CLIENTS: usize = 32;
const LOAD: Duration = Duration::from_secs(60);
const MAX_TOKENS: u64 = 32;
const PROMPTS: [&str; 4] = [
    "Tell me about the sea.",
    "What is a thermal zone?",
    "Count to ten.",
    "Write a haiku about heat.",
];

fn request(prompt: &str, stream: bool) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

#[derive(Default)]
struct Tally {
    completed: u64,
    rejected: u64,
    errors: Vec<String>,
    tokens: u64,
    latencies_ms: Vec<f64>,
    first_token_ms: Vec<f64>,
}

enum Answer {
    Done {
        text: String,
        tokens: u64,
        first_token: Duration,
    },
    Rejected(u64),
}

async fn stream_once(client: &reqwest::Client, base: &str, prompt: &str) -> Result<Answer, String> {
    let t = Instant::now();
    let mut resp = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&request(prompt, true))
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    if resp.status().as_u16() == 429 {
        let retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or("429 without Retry-After")?;
        return Ok(Answer::Rejected(retry));
    }
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("status {status}: {body}"));
    }
    let mut buf = String::new();
    let mut text = String::new();
    let mut tokens = None;
    let mut first_token = None;
    let mut done = false;
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("read: {e}"))? {
        buf.push_str(std::str::from_utf8(&chunk).map_err(|e| format!("utf-8: {e}"))?);
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for line in event.lines() {
                let Some(data) = line.strip_prefix("data: ") else {
                    continue;
                };
                if data == "[DONE]" {
                    done = true;
                    continue;
                }
                if done {
                    return Err("data after [DONE]".into());
                }
                let v: Value =
                    serde_json::from_str(data).map_err(|e| format!("chunk {e}: {data}"))?;
                if let Some(delta) = v["choices"][0]["delta"]["content"].as_str() {
                    first_token.get_or_insert_with(|| t.elapsed());
                    text.push_str(delta);
                }
                if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                    tokens = Some(n);
                }
            }
        }
    }
    if !done {
        return Err(format!("stream ended without [DONE] after {text:?}"));
    }
    Ok(Answer::Done {
        text,
        tokens: tokens.ok_or("no usage chunk")?,
        first_token: first_token.unwrap_or_else(|| t.elapsed()),
    })
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

fn median(v: &[u64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_streaming_clients_for_a_minute_lose_no_token_and_hold_memory_flat() {
    let server = Server::start(Opts {
        // 32 clients on one address resubmit the same four prompts on purpose.
        sets: vec![
            "service.workers=2",
            "service.queue_bound=16",
            "eco.agent_loop_max_repeats=0",
        ],
        ..Opts::default()
    });
    let base = server.base.clone();
    // The service closes a keep-alive connection idle for `service.idle_timeout_s` (5 s); a
    // pooled connection kept longer can be closed just as a request is written on it (the
    // keep-alive race any client of a short-idle server meets), so the pool retires its
    // connections first.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("client");

    // The greedy reference answer of every prompt, whole (not streamed).
    let mut references = vec![];
    for p in PROMPTS {
        let v: Value = client
            .post(format!("{base}/v1/chat/completions"))
            .json(&request(p, false))
            .send()
            .await
            .expect("reference request")
            .json()
            .await
            .expect("reference json");
        let text = v["choices"][0]["message"]["content"]
            .as_str()
            .expect("reference text")
            .to_string();
        let tokens = v["usage"]["completion_tokens"].as_u64().expect("usage");
        references.push((text, tokens));
    }
    let references = Arc::new(references);

    let rss = Arc::new(Mutex::new(Vec::<u64>::new()));
    let stop_sampling = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let rss = rss.clone();
        let stop = stop_sampling.clone();
        let pid = server.pid();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let kb = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("VmRSS:"))
                            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    });
                if let Some(kb) = kb {
                    rss.lock().unwrap_or_else(|e| e.into_inner()).push(kb);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let deadline = start + LOAD;
    let mut tasks = vec![];
    for c in 0..CLIENTS {
        let client = client.clone();
        let base = base.clone();
        let references = references.clone();
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = c;
            while Instant::now() < deadline {
                let i = n % PROMPTS.len();
                n += 1;
                let t = Instant::now();
                let answer = stream_once(&client, &base, PROMPTS[i]).await;
                let backoff = {
                let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
                match answer {
                    Ok(Answer::Done {
                        text,
                        tokens,
                        first_token,
                    }) => {
                        let (want_text, want_tokens) = &references[i];
                        if &text != want_text || tokens != *want_tokens {
                            tally.errors.push(format!(
                                "prompt {i}: streamed {tokens} tokens {text:?}, reference {want_tokens} tokens {want_text:?}"
                            ));
                        }
                        tally.completed += 1;
                        tally.tokens += tokens;
                        tally.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
                        tally.first_token_ms.push(first_token.as_secs_f64() * 1e3);
                        None
                    }
                    Ok(Answer::Rejected(retry_s)) => {
                        tally.rejected += 1;
                        // Honour Retry-After, but never past the end of the run.
                        Some(
                            Duration::from_secs(retry_s)
                                .min(deadline.saturating_duration_since(Instant::now())),
                        )
                    }
                    Err(e) => {
                        tally.errors.push(e);
                        None
                    }
                }
                };
                if let Some(wait) = backoff {
                    tokio::time::sleep(wait).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let elapsed = start.elapsed();
    stop_sampling.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.join();

    let mut tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    let rss = rss.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let throughput = tally.tokens as f64 / elapsed.as_secs_f64();
    let p50 = percentile(&mut tally.latencies_ms, 50.0);
    let p99 = percentile(&mut tally.latencies_ms, 99.0);
    let ttft_p99 = percentile(&mut tally.first_token_ms, 99.0);
    eprintln!(
        "load: {CLIENTS} streaming clients for {:.1} s: {} answers ({} tokens, {:.1} tok/s, {:.2} answers/s), {} x 429; latency p50 {p50:.0} ms p99 {p99:.0} ms; first token p99 {ttft_p99:.0} ms",
        elapsed.as_secs_f64(),
        tally.completed,
        tally.tokens,
        throughput,
        tally.completed as f64 / elapsed.as_secs_f64(),
        tally.rejected,
    );
    eprintln!("load: server RSS samples (kB, 1/s): {rss:?}");

    assert!(
        tally.errors.is_empty(),
        "{} errors, first: {:?}",
        tally.errors.len(),
        tally.errors.iter().take(3).collect::<Vec<_>>()
    );
    assert!(
        tally.completed >= 20,
        "only {} answers in a minute",
        tally.completed
    );
    // Memory flat: after a 10 s warm-up, the last 10 s's median RSS stays within 10 % (plus
    // 8 MB of allocator slack) of the 10 s after warm-up.
    assert!(rss.len() >= 40, "{} RSS samples", rss.len());
    let early = median(&rss[10..20]);
    let late = median(&rss[rss.len() - 10..]);
    assert!(
        late <= early * 1.10 + 8192.0,
        "RSS grew from {early} kB to {late} kB"
    );
    // The server is still healthy and idle afterwards.
    assert_eq!(server.metric("llamacpp:requests_processing"), Some(0.0));
    assert_eq!(
        server.metric("thermo_requests_total{outcome=\"failed\"}"),
        Some(0.0)
    );
}
