//! LoRA fine-tuning end to end on the seeded tiny model: the adapter trained by the candle
//! graph and served by tract (merged into f32 weights, or as a side branch) gives the same
//! logits and greedy tokens as the training graph.

use e2e_tests::{TINY_SEED, tiny_model};
use edge_runtime::engine::WeightFormat;
use edge_runtime::engine::generate::{Gate, GenerateOptions, generate};
use edge_runtime::engine::import::tiny_weights;
use edge_runtime::engine::model::{KvState, LoadedModel};
use edge_runtime::engine::onnx_export::write_onnx_with;
use edge_runtime::engine::sampling::SamplingParams;
use edge_runtime::train::lora::LoraAdapter;
use edge_runtime::train::model::{BaseModel, argmax};
use edge_runtime::train::serve::{ServeMode, load_adapted, side_branches};
use edge_runtime::train::tiny::train_adapter;

/// A tiny-model adapter trained for a few steps, saved as PEFT files in a temp dir.
fn trained_adapter(model: &BaseModel) -> (tempfile::TempDir, LoraAdapter) {
    let dir = tempfile::tempdir().expect("tmp");
    train_adapter(model, 12, 2e-2, dir.path()).expect("tiny adapter");
    let adapter = LoraAdapter::load_peft(dir.path(), &model.config).expect("load");
    (dir, adapter)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn tract_greedy(model: std::sync::Arc<LoadedModel>, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut state = KvState::new(model).expect("state");
    let opts = GenerateOptions {
        max_tokens: n,
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        stop: vec![],
    };
    generate(
        &mut state,
        prompt,
        &opts,
        &mut |_| Gate::Continue,
        &mut |_| {},
    )
    .expect("generate");
    state.tokens()[prompt.len()..].to_vec()
}

fn candle_greedy(model: &BaseModel, adapter: &LoraAdapter, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut ids = prompt.to_vec();
    let mut out = vec![];
    for _ in 0..n {
        let next = argmax(&model.last_logits(&ids, Some(adapter)).expect("logits"));
        out.push(next);
        if next == 258 {
            break;
        }
        ids.push(next);
    }
    out
}

fn parity(served: std::sync::Arc<LoadedModel>, model: &BaseModel, adapter: &LoraAdapter) {
    let prompt: Vec<u32> = "pump P-17 has".bytes().map(u32::from).collect();
    let candle = model.last_logits(&prompt, Some(adapter)).expect("candle");
    let tract = KvState::new(served.clone())
        .expect("state")
        .forward(&prompt)
        .expect("tract");
    let diff = max_abs_diff(&candle, &tract);
    eprintln!("parity: max |logit diff| {diff:.2e}");
    assert!(diff < 1e-3, "max |logit diff| {diff}");
    let a = tract_greedy(served, &prompt, 12);
    let b = candle_greedy(model, adapter, &prompt, 12);
    let n = a.len().min(b.len());
    assert!(n >= 1);
    assert_eq!(a[..n], b[..n]);
}

#[test]
fn tract_with_a_merged_adapter_matches_the_candle_graph() {
    let model = BaseModel::from_weights(tiny_weights(TINY_SEED)).expect("base");
    let (dir, adapter) = trained_adapter(&model);
    let (served, mode) =
        load_adapted(tiny_model(WeightFormat::F32), dir.path(), None).expect("served");
    assert_eq!(mode, ServeMode::Merged);
    parity(served, &model, &adapter);
}

#[test]
fn tract_with_an_adapter_side_branch_matches_the_candle_graph() {
    let model = BaseModel::from_weights(tiny_weights(TINY_SEED)).expect("base");
    let (_dir, adapter) = trained_adapter(&model);
    // The side branch over the f32 base: the same function as the merged weights.
    let folder = tempfile::tempdir().expect("tmp");
    for name in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(
            tiny_model(WeightFormat::F32).join(name),
            folder.path().join(name),
        )
        .expect("copy");
    }
    let side = side_branches(&adapter).expect("side");
    assert_eq!(side.len(), 4);
    write_onnx_with(
        &tiny_weights(TINY_SEED),
        WeightFormat::F32,
        &side,
        &folder.path().join("model.onnx"),
    )
    .expect("onnx");
    let served = LoadedModel::load(folder.path()).expect("load");
    parity(served, &model, &adapter);
}

#[test]
fn a_four_bit_or_ggml_folder_serves_the_adapter_as_a_side_branch() {
    for format in [WeightFormat::Q4, WeightFormat::Ggml] {
        side_branch_moves_logits_like_candle(format);
    }
}

fn side_branch_moves_logits_like_candle(format: WeightFormat) {
    let model = BaseModel::from_weights(tiny_weights(TINY_SEED)).expect("base");
    let (dir, _adapter) = trained_adapter(&model);
    let (served, mode) = load_adapted(tiny_model(format), dir.path(), None).expect("served");
    assert_eq!(mode, ServeMode::SideBranch, "{format:?}");
    let base = LoadedModel::load(tiny_model(format)).expect("base folder");
    let prompt: Vec<u32> = "pump P-17 has".bytes().map(u32::from).collect();
    let with = KvState::new(served)
        .expect("s")
        .forward(&prompt)
        .expect("run");
    let without = KvState::new(base)
        .expect("s")
        .forward(&prompt)
        .expect("run");
    // The update moves this folder's logits the way it moves the f32 model's.
    let f32_base = model.last_logits(&prompt, None).expect("base");
    let (_d, adapter) = trained_adapter(&model);
    let f32_with = model.last_logits(&prompt, Some(&adapter)).expect("with");
    let delta: Vec<f32> = with.iter().zip(&without).map(|(a, b)| a - b).collect();
    let delta_f32: Vec<f32> = f32_with.iter().zip(&f32_base).map(|(a, b)| a - b).collect();
    let dot: f32 = delta.iter().zip(&delta_f32).map(|(a, b)| a * b).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let cos = dot / (n(&delta) * n(&delta_f32));
    assert!(
        n(&delta) > 1e-3,
        "{format:?}: the side branch changed nothing"
    );
    assert!(cos > 0.9, "{format:?}: cosine of the updates {cos}");
}
