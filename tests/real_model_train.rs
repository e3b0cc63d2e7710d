//! LoRA fine-tuning of SmolLM2-135M-Instruct on the committed synthetic facts
//! (`tests/data/facts`): trained on one phrasing, asked another. Recall must rise from ~0 to
//! at least 80 %, held-out perplexity must drop by at least 20 %, training must take under
//! five minutes, and tract serving the adapter must agree with the candle graph on the
//! held-out perplexity within 1 %.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use e2e_tests::real_model_dir;
use edge_runtime::engine::WeightFormat;
use edge_runtime::engine::generate::{Gate, GenerateOptions, generate};
use edge_runtime::engine::model::{KvState, LoadedModel};
use edge_runtime::engine::sampling::SamplingParams;
use edge_runtime::train::data::{Example, TextSide, load_examples};
use edge_runtime::train::lora::{LoraConfig, Target};
use edge_runtime::train::model::BaseModel;
use edge_runtime::train::optim::{AdamWParams, Schedule};
use edge_runtime::train::serve::load_adapted;
use edge_runtime::train::source;
use edge_runtime::train::trainer::{RunControl, TrainOptions, Trainer, run};

const STEPS: usize = 200;

fn facts(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/facts")
        .join(name)
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Share of test questions whose greedy answer (through tract) contains the fact.
fn recall(model: std::sync::Arc<LoadedModel>, side: &TextSide) -> f64 {
    let text = std::fs::read_to_string(facts("test.jsonl")).expect("test set");
    let mut hits = 0;
    let mut n = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let prompt = side
            .chat_prompt(v["prompt"].as_str().expect("prompt"))
            .expect("prompt ids");
        let mut state = KvState::new(model.clone()).expect("state");
        let mut answer = String::new();
        let opts = GenerateOptions {
            max_tokens: 24,
            sampling: SamplingParams {
                temperature: 0.0,
                ..SamplingParams::default()
            },
            stop: vec![],
        };
        generate(
            &mut state,
            &prompt,
            &opts,
            &mut |_| Gate::Continue,
            &mut |t| answer.push_str(t),
        )
        .expect("generate");
        n += 1;
        if answer.contains(v["answer"].as_str().expect("answer")) {
            hits += 1;
        }
    }
    f64::from(hits) / f64::from(n)
}

/// Mean NLL per scored token of `examples` through tract.
fn tract_nll(model: std::sync::Arc<LoadedModel>, examples: &[Example]) -> f64 {
    let vocab = model.vocab_size();
    let (mut sum, mut count) = (0.0f64, 0usize);
    for e in examples {
        let mut state = KvState::new(model.clone()).expect("state");
        let logits = state.forward_all(&e.ids).expect("forward");
        for i in e.scored_from..e.ids.len() {
            let row = &logits[(i - 1) * vocab..i * vocab];
            let max = row.iter().copied().fold(f32::MIN, f32::max);
            let lse = f64::from(max)
                + row
                    .iter()
                    .map(|x| f64::from(x - max).exp())
                    .sum::<f64>()
                    .ln();
            sum += lse - f64::from(row[e.ids[i] as usize]);
            count += 1;
        }
    }
    sum / count as f64
}

#[test]
fn learns_the_synthetic_facts_and_serves_them_through_tract() {
    let dir = real_model_dir(WeightFormat::Q4);
    let origin = source::locate(&dir, None).expect("weights");
    let base = BaseModel::from_weights(source::load(&origin).expect("load")).expect("base");
    let side = TextSide::load(&dir, base.config.max_position_embeddings).expect("tokenizer");
    let (train, p1) = load_examples(&facts("train.jsonl"), &side, 128);
    let (held, p2) = load_examples(&facts("test.jsonl"), &side, 128);
    assert!(p1.is_empty() && p2.is_empty(), "{p1:?} {p2:?}");
    assert_eq!((train.len(), held.len()), (80, 40));
    let options = TrainOptions {
        lora: LoraConfig::new(
            8,
            16.0,
            0.0,
            vec![Target::Q, Target::V],
            base.config.num_hidden_layers,
            None,
        )
        .expect("lora"),
        steps: STEPS,
        lr: 3e-3,
        warmup: 10,
        schedule: Schedule::Cosine,
        accum: 1,
        seq_len: 128,
        adamw: AdamWParams::default(),
        max_grad_norm: 1.0,
        seed: 42,
    };
    let mut trainer = Trainer::new(&base, options, train, held.clone()).expect("trainer");
    let before = trainer.eval_loss().expect("eval").expect("some");
    let out = tempfile::tempdir().expect("tmp");
    let stop = AtomicBool::new(false);
    let mut step_s = vec![];
    let mut on_step = |r: &edge_runtime::train::trainer::StepReport,
                       p: &edge_runtime::train::trainer::Progress| {
        step_s.push(r.seconds);
        if r.step.is_multiple_of(20) {
            eprintln!(
                "step {} loss {:.3} held-out {:?} {:.2} s/step",
                r.step, r.loss, p.eval_loss, r.seconds
            );
        }
        0.0
    };
    let t0 = Instant::now();
    run(
        &mut trainer,
        out.path(),
        &mut RunControl {
            permits: None,
            stop: &stop,
            checkpoint_every: 50,
            eval_every: 0,
            on_step: &mut on_step,
            base_model: None,
        },
    )
    .expect("training");
    let train_s = t0.elapsed().as_secs_f64();
    let rss = peak_rss_mb();
    let after = trainer.progress.eval_loss.expect("eval after");
    let mean_step = step_s.iter().sum::<f64>() / step_s.len() as f64;
    let ppl_drop = 1.0 - (after - before).exp();
    eprintln!(
        "trained {STEPS} steps in {train_s:.1} s ({mean_step:.3} s/step), peak RSS {rss:.0} MB, \
         held-out ppl {:.2} -> {:.2} ({:.0} % drop)",
        before.exp(),
        after.exp(),
        100.0 * ppl_drop
    );
    drop(trainer);
    drop(base);

    let base_tract = LoadedModel::load(&dir).expect("base model");
    let recall_before = recall(base_tract, &side);
    let (adapted, mode) = load_adapted(&dir, out.path(), None).expect("adapted");
    let tract_after = tract_nll(adapted.clone(), &held);
    let recall_after = recall(adapted, &side);
    eprintln!(
        "recall {:.0} % -> {:.0} % ({mode:?}); held-out NLL candle {after:.4} vs tract {tract_after:.4}",
        100.0 * recall_before,
        100.0 * recall_after
    );
    assert!(
        recall_before <= 0.05,
        "the base model already knows {recall_before}"
    );
    assert!(recall_after >= 0.8, "recall after training {recall_after}");
    assert!(ppl_drop >= 0.2, "held-out perplexity dropped by {ppl_drop}");
    assert!(train_s < 300.0, "training took {train_s} s");
    let ppl_ratio = (tract_after - after).exp();
    assert!(
        (ppl_ratio - 1.0).abs() < 0.01,
        "tract/candle perplexity ratio {ppl_ratio}"
    );
}
