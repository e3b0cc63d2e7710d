//! The token loop never waits on the network: decode speed of the tiny model with telemetry
//! pointed at a blackholed broker (a TCP listener that accepts and never reads or answers)
//! stays within 5 % of the speed with telemetry going to a file (no broker), while a
//! telemetry thread publishes a record per interval and one per finished request, as the
//! main job does. The two configurations alternate in one run; the decode speed of each is
//! one over its median time per token, pooled over every token of its rounds (a median of
//! many tokens, so that bursts of load from other processes on the machine do not decide).

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use e2e_tests::tiny_model;
use edge_runtime::engine::WeightFormat;
use edge_runtime::engine::generate::{Gate, GenerateOptions, generate};
use edge_runtime::engine::model::{KvState, LoadedModel};
use edge_runtime::engine::sampling::SamplingParams;
use edge_runtime::engine::set_compute_threads;
use edge_runtime::telemetry::{
    Body, BrokerConfig, Event, RequestDone, SinkConfig, Telemetry, TelemetryOptions,
};

/// Measurements before the test gives up.
const ATTEMPTS: usize = 3;
const ROUNDS: usize = 10;
const TOKENS: usize = 64;

/// One request's decode token intervals in s with `t` receiving a record every 50 ms from a
/// telemetry thread and one record at the end of the request.
fn decode_intervals(model: &Arc<LoadedModel>, t: &Telemetry) -> Result<Vec<f64>> {
    let stop = Arc::new(AtomicBool::new(false));
    let (t2, s2) = (t.clone(), stop.clone());
    let ticker = std::thread::spawn(move || {
        let mut n = 0;
        while !s2.load(Ordering::Relaxed) {
            t2.send(Body::Event(Event {
                name: "tick".into(),
                detail: String::new(),
                count: Some(n),
            }));
            n += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let mut state = KvState::new(model.clone())?;
    let ids = model
        .tokenizer
        .encode("Why does a chip slow down when it gets hot?")?;
    let opts = GenerateOptions {
        max_tokens: TOKENS,
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        stop: vec![],
    };
    let start = Instant::now();
    let mut stamps = Vec::with_capacity(TOKENS + 1);
    let stats = generate(
        &mut state,
        &ids,
        &opts,
        &mut |_| {
            stamps.push(Instant::now());
            Gate::Continue
        },
        &mut |_| {},
    )?;
    t.send(Body::Request(RequestDone {
        prompt_tokens: stats.prompt_tokens as u64,
        generated_tokens: stats.generated_tokens as u64,
        prefill_tps: stats.prefill_tps() as f32,
        decode_tps: stats.decode_tps() as f32,
        stop: stats.stop.to_string(),
        wall_ms: start.elapsed().as_millis() as u64,
        energy_j: None,
        eco: None,
        today: None,
        layers: None,
    }));
    stop.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    // The first interval spans the prefill.
    Ok(stamps
        .windows(2)
        .skip(1)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn decode_speed_with_a_blackholed_broker_stays_within_5_percent_of_no_broker() -> Result<()> {
    set_compute_threads(1);
    let model = LoadedModel::load(tiny_model(WeightFormat::F32))?;
    // Accepts connections (the kernel completes the handshake) and never reads.
    let hole = TcpListener::bind("127.0.0.1:0")?;
    let port = hole.local_addr()?.port();
    let dir = tempfile::tempdir()?;
    let file_opts = TelemetryOptions::new("bh-file", SinkConfig::File(dir.path().join("t.jsonl")));
    let (tf, df) = Telemetry::new(file_opts, None)?;
    let thf = std::thread::spawn(move || df.run());
    let cfg = BrokerConfig::new(format!("mqtt://127.0.0.1:{port}").parse()?, "bh");
    let mqtt_opts = TelemetryOptions::new(
        "bh-mqtt",
        SinkConfig::Mqtt {
            broker: cfg,
            queue_dir: dir.path().join("q"),
        },
    )
    .with_linger(Duration::ZERO);
    let (tm, dm) = Telemetry::new(mqtt_opts, None)?;
    let thm = std::thread::spawn(move || dm.run());
    // Warm up both paths.
    decode_intervals(&model, &tf)?;
    decode_intervals(&model, &tm)?;
    // A shared machine's noise can cost a few percent in one measurement; a loop that waited
    // on the network would lose far more in every one. Up to three measurements, the first
    // that holds ends it.
    let mut ratios = Vec::new();
    for _ in 0..ATTEMPTS {
        let (mut file, mut hole_tps) = (vec![], vec![]);
        for _ in 0..ROUNDS {
            file.extend(decode_intervals(&model, &tf)?);
            hole_tps.extend(decode_intervals(&model, &tm)?);
        }
        ensure!(
            file.len() > ROUNDS * 8 && hole_tps.len() > ROUNDS * 8,
            "too few tokens"
        );
        let (nf, nh) = (file.len(), hole_tps.len());
        let (f, h) = (1.0 / median(file), 1.0 / median(hole_tps));
        let ratio = h / f;
        eprintln!(
            "decode tok/s (1 / median token time): no broker {f:.1} ({nf} tokens), blackholed broker {h:.1} ({nh} tokens); ratio {ratio:.3}"
        );
        ratios.push(ratio);
        if ratio >= 0.95 {
            break;
        }
    }
    let sm = tm.stats();
    ensure!(!sm.connected && sm.delivered == 0, "{sm:?}");
    ensure!(
        sm.queued > 0,
        "nothing was queued for the blackholed broker: {sm:?}"
    );
    ensure!(
        ratios.iter().any(|r| *r >= 0.95),
        "decode slowed to {ratios:.3?} of the broker-less speed"
    );
    tf.stop();
    tm.stop();
    thf.join().map_err(|_| anyhow::anyhow!("panicked"))??;
    thm.join().map_err(|_| anyhow::anyhow!("panicked"))??;
    drop(hole);
    Ok(())
}
