//! Training on the seeded tiny model (`engine::import::tiny_weights`), whose tokenizer maps
//! byte b to id b: examples made from plain lines, and a small adapter trained on two
//! invented facts. Tests and examples use these to exercise training, PEFT files and
//! serving without a real model.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::data::Example;
use super::lora::{LoraConfig, Target};
use super::model::BaseModel;
use super::optim::{AdamWParams, Schedule};
use super::trainer::{TrainOptions, Trainer};

/// The facts the tiny adapter of [`train_adapter`] learns.
pub const FACTS: [&str; 2] = ["pump P-17 has code 4471", "valve V-3 has code 9120"];

/// One example per line for the tiny model's byte tokenizer, every token after the first
/// scored.
pub fn byte_examples(lines: &[&str]) -> Vec<Example> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| Example {
            file: PathBuf::from("mem"),
            line: i + 1,
            ids: l.bytes().map(u32::from).collect(),
            scored_from: 1,
            key: (*l).to_string(),
        })
        .collect()
}

/// Trains a rank-4 adapter on q and v of every layer of `model` for `steps` steps at a
/// constant `lr` on [`FACTS`], and writes its PEFT files into `out`.
pub fn train_adapter(model: &BaseModel, steps: usize, lr: f64, out: &Path) -> Result<()> {
    let options = TrainOptions {
        lora: LoraConfig::new(
            4,
            8.0,
            0.0,
            vec![Target::Q, Target::V],
            model.config.num_hidden_layers,
            None,
        )?,
        steps,
        lr,
        warmup: 1,
        schedule: Schedule::Constant,
        accum: 1,
        seq_len: 64,
        adamw: AdamWParams::default(),
        max_grad_norm: 1.0,
        seed: 11,
    };
    let mut t = Trainer::new(model, options, byte_examples(&FACTS), vec![])?;
    for _ in 0..steps {
        t.step()?;
    }
    std::fs::create_dir_all(out)?;
    t.adapter.save_peft(out, None)?;
    Ok(())
}
