//! Eco accounting on the main job's path: the governor's board meter against the simulated
//! SoC's ground truth while the tiny model generates, and the `thermo run`, `thermo
//! perplexity` and `thermo bench eco` commands end to end on the tiny model.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use edge_runtime::engine::WeightFormat;
use edge_runtime::engine::generate::{GenerateOptions, generate};
use edge_runtime::engine::import::write_tiny_model;
use edge_runtime::engine::model::{KvState, LoadedModel};
use edge_runtime::session::governed::{Governed, GovernorOptions};

fn thermo(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_thermo"))
        .args(args)
        .env("THERMO_HOME", home)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running thermo")
}

/// The tiny model generates under the governor on the live simulated SoC; the energy the
/// board meter integrated from the twin's supply sensor matches the twin's own ground truth
/// within 2 %.
#[test]
fn the_run_path_meter_matches_the_simulated_socs_ground_truth_within_two_percent()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tiny");
    write_tiny_model(&path, 7, WeightFormat::F32)?;
    let model = LoadedModel::load(&path)?;
    let governed = Governed::start(
        &GovernorOptions {
            sim: Some("rpi5".into()),
            ..GovernorOptions::default()
        },
        2,
    )?;
    let mut state = KvState::new(model.clone())?;
    let opts = GenerateOptions {
        max_tokens: 400,
        ..GenerateOptions::default()
    };
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let prompt: Vec<u32> = (0..20u32).map(|i| (i * 13 + 5) % 256).collect();
        generate(
            &mut state,
            &prompt,
            &opts,
            &mut governed.gate(),
            &mut |_| {},
        )?;
        state.reset()?;
    }
    // Two more control periods with the CPU idle: the meter sees the load fall too.
    std::thread::sleep(Duration::from_millis(600));
    let (measured, truth) = governed.meter().sensor_and_truth_j();
    let _ = governed.finish();
    let truth = truth.expect("the simulated SoC reports its energy");
    assert!(truth > 1.0, "the twin used only {truth} J");
    let err = (measured - truth).abs() / truth;
    eprintln!(
        "meter {measured:.3} J, twin {truth:.3} J, error {:.3} %",
        err * 100.0
    );
    assert!(
        err < 0.02,
        "meter {measured:.3} J vs twin {truth:.3} J: {:.2} %",
        err * 100.0
    );
    Ok(())
}

#[test]
fn run_prints_the_footprint_and_appends_a_codecarbon_row() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let model = dir.path().join("tiny");
    write_tiny_model(&model, 7, WeightFormat::F32)?;
    let csv = dir.path().join("emissions.csv");
    let model_s = model.to_string_lossy().to_string();
    let csv_s = csv.to_string_lossy().to_string();
    let args = [
        "run",
        "--model",
        &model_s,
        "--sim",
        "rpi5",
        "--max-tokens",
        "24",
        "--region",
        "de",
        "--emissions-csv",
        &csv_s,
        "hello",
    ];
    let out = thermo(&args, dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("[footprint: "))
        .unwrap_or_else(|| panic!("no footprint line in {stderr}"));
    assert!(
        line.contains("power sensor") && line.contains("g CO2e"),
        "{line}"
    );
    let text = std::fs::read_to_string(&csv)?;
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("timestamp,project_name,run_id,duration,emissions,"));
    let row = lines.next().unwrap_or_default();
    assert!(row.contains(",Germany,DEU,"), "{row}");
    Ok(())
}

#[test]
fn a_bad_eco_config_is_refused_with_every_problem_named() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let model = dir.path().join("tiny");
    write_tiny_model(&model, 7, WeightFormat::F32)?;
    let cfg = dir.path().join("eco.toml");
    std::fs::write(&cfg, "[eco]\nregion = \"mars\"\nwater_l_per_kwh = -1.0\n")?;
    let (model_s, cfg_s) = (
        model.to_string_lossy().to_string(),
        cfg.to_string_lossy().to_string(),
    );
    let out = thermo(
        &[
            "run",
            "--model",
            &model_s,
            "--no-governor",
            "--config",
            &cfg_s,
            "hi",
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("eco.region: unknown region \"mars\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("eco.water_l_per_kwh: must be at least 0"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
    Ok(())
}

#[test]
fn perplexity_prints_a_llama_cpp_style_figure() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let model = dir.path().join("tiny");
    write_tiny_model(&model, 7, WeightFormat::F32)?;
    let text = dir.path().join("text.txt");
    std::fs::write(
        &text,
        "The quick brown fox jumps over the lazy dog. ".repeat(4),
    )?;
    let (model_s, text_s) = (
        model.to_string_lossy().to_string(),
        text.to_string_lossy().to_string(),
    );
    let out = thermo(
        &["perplexity", "--model", &model_s, "--ctx", "64", &text_s],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ppl: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PPL = "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no PPL line in {stdout}"));
    assert!(ppl > 1.0 && ppl.is_finite());
    // 180 bytes of text is too short for --ctx 128: a clear error, no panic.
    let out = thermo(
        &["perplexity", "--model", &model_s, "--ctx", "128", &text_s],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("2 x ctx"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn bench_eco_on_the_tiny_model_writes_its_reports() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out_dir = dir.path().join("eco");
    let out_s = out_dir.to_string_lossy().to_string();
    let out = thermo(
        &["bench", "eco", "--tiny-only", "--out", &out_s],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("eco.json"))?)?;
    let entries = json.as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(entries, 3);
    assert!(std::fs::read_to_string(out_dir.join("eco.svg"))?.contains("<circle"));
    let md = std::fs::read_to_string(out_dir.join("eco.md"))?;
    for row in [
        "| tiny (random) f32 |",
        "| tiny (random) q4 |",
        "| tiny (random) ggml |",
    ] {
        assert!(md.contains(row), "no {row} row in\n{md}");
    }
    for sub in ["perplexity", "bench eco"] {
        let mut args: Vec<&str> = sub.split(' ').collect();
        args.push("--help");
        let out = thermo(&args, dir.path());
        assert!(out.status.success(), "{sub} --help failed");
    }
    Ok(())
}

/// Forced repetition on the tiny model: a repeat "penalty" below 1 rewards the recent
/// tokens, so greedy decoding falls into a cycle. Unguarded, the answer runs to the token
/// limit in a loop; guarded, it stops within 64 tokens of where the loop began, with a
/// reason, the same text up to there, and the energy the stop avoided.
#[test]
fn the_guard_stops_the_tiny_models_forced_repetition_within_64_tokens() -> anyhow::Result<()> {
    use edge_runtime::eco::guard::{Budget, GuardConfig, ZombieGuard};
    use edge_runtime::engine::generate::{Gate, StopReason};
    use edge_runtime::engine::sampling::SamplingParams;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tiny");
    write_tiny_model(&path, 7, WeightFormat::F32)?;
    let model = LoadedModel::load(&path)?;
    let mut state = KvState::new(model)?;
    let prompt: Vec<u32> = (0..16u32).map(|i| (i * 29 + 3) % 256).collect();
    let opts = GenerateOptions {
        max_tokens: 200,
        sampling: SamplingParams {
            repeat_penalty: 0.3,
            ..SamplingParams::default()
        },
        stop: vec![],
    };
    let free = generate(
        &mut state,
        &prompt,
        &opts,
        &mut |_| Gate::Continue,
        &mut |_| {},
    )?;
    assert_eq!(free.stop, StopReason::MaxTokens);
    // The loop begins where the ids start repeating with a period of at most 32 to the end.
    let ids = &free.ids;
    let n = ids.len();
    let start = (1..=32)
        .filter_map(|p| {
            let mut s = n - p;
            while s > 0 && ids[s - 1] == ids[s - 1 + p] {
                s -= 1;
            }
            (n - s >= 2 * p).then_some(s + p)
        })
        .min()
        .expect("the forced repetition makes the tiny model loop");
    state.reset()?;
    let cfg = GuardConfig {
        budget: Budget {
            max_tokens: Some(200),
            ..Budget::default()
        },
        ..GuardConfig::default()
    };
    let mut guard = ZombieGuard::new(cfg, 0.0);
    let guarded = {
        let mut gate = |ev: edge_runtime::engine::generate::TokenEvent<'_>| {
            // 1 J per token so far: the avoided energy is the tokens left.
            let energy = ev.generated.len() as f64;
            guard.check(&ev, 0.0, energy)
        };
        generate(&mut state, &prompt, &opts, &mut gate, &mut |_| {})?
    };
    let stop = guard.stopped().cloned().expect("the guard stopped it");
    assert!(matches!(guarded.stop, StopReason::Stopped(ref why) if why.contains("zombie guard")));
    assert_eq!(&guarded.ids[..], &free.ids[..guarded.ids.len()]);
    assert!(
        guarded.ids.len() <= start + 64,
        "stopped at {} for a loop from {start}",
        guarded.ids.len()
    );
    let avoided = stop.avoided_j.expect("avoided energy");
    assert!((avoided - (200 - guarded.ids.len()) as f64).abs() < 1e-9);
    Ok(())
}
