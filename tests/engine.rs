//! The engine on the seeded tiny model: KV-cache consistency, generation, bad input.

use e2e_tests::tiny_model;
use edge_runtime::engine::WeightFormat;
use edge_runtime::engine::generate::{Gate, GenerateOptions, StopReason, generate};
use edge_runtime::engine::model::{KvState, LoadedModel};
use edge_runtime::engine::sampling::SamplingParams;

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn token_by_token_decode_matches_one_full_pass() {
    let model = LoadedModel::load(tiny_model(WeightFormat::F32)).expect("tiny model loads");
    let vocab = model.vocab_size();
    let tokens: Vec<u32> = (0..24u32).map(|i| (i * 37 + 11) % 256).collect();
    let mut full = KvState::new(model.clone()).expect("state");
    let all = full.forward_all(&tokens).expect("full pass");
    let mut step = KvState::new(model).expect("state");
    for (i, &t) in tokens.iter().enumerate() {
        let row = step.forward(&[t]).expect("decode step");
        let diff = max_abs_diff(&row, &all[i * vocab..(i + 1) * vocab]);
        assert!(diff < 1e-4, "position {i}: max |diff| {diff}");
    }
}

#[test]
fn split_prefill_matches_one_full_pass() {
    let model = LoadedModel::load(tiny_model(WeightFormat::F32)).expect("tiny model loads");
    let tokens: Vec<u32> = (0..20u32).map(|i| (i * 13 + 5) % 256).collect();
    let mut full = KvState::new(model.clone()).expect("state");
    let one = full.forward(&tokens).expect("full");
    let mut split = KvState::new(model).expect("state");
    split.forward(&tokens[..7]).expect("first chunk");
    let two = split.forward(&tokens[7..]).expect("second chunk");
    assert!(max_abs_diff(&one, &two) < 1e-4);
}

#[test]
fn quantized_tiny_model_agrees_with_f32_on_the_greedy_path() {
    let f32m = LoadedModel::load(tiny_model(WeightFormat::F32)).expect("f32 loads");
    let q4m = LoadedModel::load(tiny_model(WeightFormat::Q4)).expect("q4 loads");
    let tokens: Vec<u32> = (0..16u32).map(|i| (i * 29 + 3) % 256).collect();
    let a = KvState::new(f32m)
        .expect("state")
        .forward(&tokens)
        .expect("f32 run");
    let b = KvState::new(q4m)
        .expect("state")
        .forward(&tokens)
        .expect("q4 run");
    // The tiny model's f32 weights are requantized to 4 bits for Q4, so logits move a little;
    // they must stay strongly correlated.
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let (ma, mb) = (mean(&a), mean(&b));
    let cov: f32 = a.iter().zip(&b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f32 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f32 = b.iter().map(|y| (y - mb).powi(2)).sum();
    let corr = cov / (va.sqrt() * vb.sqrt());
    assert!(corr > 0.95, "correlation of f32 and q4 logits is {corr}");
}

#[test]
fn truncating_the_cache_restores_an_earlier_state() {
    let model = LoadedModel::load(tiny_model(WeightFormat::F32)).expect("loads");
    let mut s = KvState::new(model).expect("state");
    s.forward(&[10, 20, 30]).expect("run");
    let after_a = s.forward(&[40]).expect("run");
    s.forward(&[50, 60]).expect("run");
    s.truncate(3).expect("truncate");
    assert_eq!(s.tokens(), &[10, 20, 30]);
    let again = s.forward(&[40]).expect("run");
    assert!(max_abs_diff(&after_a, &again) < 1e-5);
}

#[test]
fn generation_is_reproducible_for_a_seed_and_streams_all_text() {
    let model = LoadedModel::load(tiny_model(WeightFormat::F32)).expect("loads");
    let prompt = model
        .tokenizer
        .encode("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n")
        .expect("encode");
    let opts = GenerateOptions {
        max_tokens: 20,
        sampling: SamplingParams {
            temperature: 0.8,
            seed: 5,
            ..Default::default()
        },
        stop: vec![],
    };
    let run = || {
        let mut state = KvState::new(model.clone()).expect("state");
        let mut text = String::new();
        let stats = generate(
            &mut state,
            &prompt,
            &opts,
            &mut |_| Gate::Continue,
            &mut |t| text.push_str(t),
        )
        .expect("generate");
        (stats, text)
    };
    let (a, text_a) = run();
    let (b, text_b) = run();
    assert_eq!(a.ids, b.ids);
    assert_eq!(text_a, text_b);
    assert!(a.generated_tokens > 0);
    let decoded = model.tokenizer.decode(&a.ids, true).expect("decode");
    assert_eq!(text_a, decoded);
}

#[test]
fn the_gate_can_stop_generation_before_any_token() {
    let model = LoadedModel::load(tiny_model(WeightFormat::F32)).expect("loads");
    let mut state = KvState::new(model).expect("state");
    let stats = generate(
        &mut state,
        &[1, 2, 3],
        &GenerateOptions::default(),
        &mut |_| Gate::Stop("too hot".into()),
        &mut |_| {},
    )
    .expect("generate");
    assert_eq!(stats.stop, StopReason::Stopped("too hot".into()));
    assert_eq!(stats.generated_tokens, 0);
}

#[test]
fn the_conversation_prefix_is_reused_from_the_cache() {
    let model = LoadedModel::load(tiny_model(WeightFormat::F32)).expect("loads");
    let mut state = KvState::new(model).expect("state");
    let opts = GenerateOptions {
        max_tokens: 4,
        ..Default::default()
    };
    let first: Vec<u32> = (0..10).collect();
    generate(
        &mut state,
        &first,
        &opts,
        &mut |_| Gate::Continue,
        &mut |_| {},
    )
    .expect("first");
    let mut second = state.tokens().to_vec();
    second.extend([100, 101, 102]);
    let stats = generate(
        &mut state,
        &second,
        &opts,
        &mut |_| Gate::Continue,
        &mut |_| {},
    )
    .expect("second");
    assert!(stats.cached_tokens >= 10, "cached {}", stats.cached_tokens);
    assert_eq!(stats.cached_tokens + stats.prompt_tokens, second.len());
}

#[test]
fn an_empty_prompt_is_an_error() {
    let model = LoadedModel::load(tiny_model(WeightFormat::F32)).expect("loads");
    let mut state = KvState::new(model).expect("state");
    let err = generate(
        &mut state,
        &[],
        &GenerateOptions::default(),
        &mut |_| Gate::Continue,
        &mut |_| {},
    )
    .expect_err("empty prompt");
    assert!(format!("{err:#}").contains("empty"), "{err:#}");
}

#[test]
fn an_over_long_prompt_is_an_error_not_a_panic() {
    let model = LoadedModel::load(tiny_model(WeightFormat::F32)).expect("loads");
    let limit = model.context_length();
    let mut state = KvState::new(model).expect("state");
    let prompt: Vec<u32> = (0..limit as u32 + 5).map(|i| i % 256).collect();
    let err = generate(
        &mut state,
        &prompt,
        &GenerateOptions::default(),
        &mut |_| Gate::Continue,
        &mut |_| {},
    )
    .expect_err("over-long prompt");
    assert!(format!("{err:#}").contains("context"), "{err:#}");
    assert!(state.tokens().is_empty(), "nothing was run");
}

#[test]
fn an_out_of_vocabulary_id_is_an_error() {
    let model = LoadedModel::load(tiny_model(WeightFormat::F32)).expect("loads");
    let vocab = model.vocab_size() as u32;
    let mut state = KvState::new(model).expect("state");
    assert!(state.forward(&[1, vocab]).is_err());
    assert!(state.tokens().is_empty());
}

#[test]
fn a_missing_model_folder_is_a_clear_error() {
    let err = LoadedModel::load(std::path::Path::new("/nonexistent/model")).expect_err("missing");
    assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
}

fn copy_model(to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(tiny_model(WeightFormat::F32)).expect("read") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

#[test]
fn a_truncated_onnx_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_model(dir.path());
    let onnx = dir.path().join("model.onnx");
    let bytes = std::fs::read(&onnx).expect("read");
    std::fs::write(&onnx, &bytes[..bytes.len() / 3]).expect("truncate");
    let err = LoadedModel::load(dir.path()).expect_err("truncated");
    assert!(format!("{err:#}").contains("model.onnx"), "{err:#}");
}

#[test]
fn a_corrupt_onnx_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_model(dir.path());
    std::fs::write(
        dir.path().join("model.onnx"),
        b"this is not a protobuf at all",
    )
    .expect("write");
    assert!(LoadedModel::load(dir.path()).is_err());
}

#[test]
fn a_tokenizer_larger_than_the_vocabulary_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_model(dir.path());
    let cfg_path = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).expect("read")).expect("json");
    cfg["vocab_size"] = serde_json::json!(100);
    std::fs::write(&cfg_path, cfg.to_string()).expect("write");
    let err = LoadedModel::load(dir.path()).expect_err("mismatch");
    assert!(format!("{err:#}").contains("tokenizer"), "{err:#}");
}
