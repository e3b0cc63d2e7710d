//! Training-graph tests on the seeded tiny model: gradients reach every adapter, the loss
//! falls, a checkpoint resumes bit-exactly, a merged adapter equals its side branch.

use candle_core::{Device, Tensor, Var};

use super::lora::{LoraConfig, Target};
use super::model::{BaseModel, ForwardOptions};
use super::optim::{AdamWParams, Schedule};
use super::tiny::byte_examples as examples;
use super::trainer::{TrainOptions, Trainer};
use crate::engine::import::tiny_weights;

fn tiny() -> BaseModel {
    BaseModel::from_weights(tiny_weights(7)).expect("tiny model")
}

fn options(layers: usize, top: Option<usize>, steps: usize, dropout: f32) -> TrainOptions {
    TrainOptions {
        lora: LoraConfig::new(4, 8.0, dropout, vec![Target::Q, Target::V], layers, top)
            .expect("lora"),
        steps,
        lr: 1e-2,
        warmup: 2,
        schedule: Schedule::Cosine,
        accum: 2,
        seq_len: 48,
        adamw: AdamWParams {
            weight_decay: 0.01,
            ..AdamWParams::default()
        },
        max_grad_norm: 1.0,
        seed: 3,
    }
}

const LINES: [&str; 6] = [
    "the pump code is 4471",
    "the valve code is 9120",
    "the door code is 3308",
    "the gate code is 5561",
    "the lamp code is 7702",
    "the fan code is 1849",
];

#[test]
fn frozen_products_pass_the_same_input_gradient_as_a_plain_matmul() {
    let model = tiny();
    let ex = examples(&["abcdefgh"]);
    let mut row = super::model::PackedRow::default();
    super::data::push_example(&mut row, &ex[0], 0);
    // With an adapter on layer 0 everything is tracked through FrozenMatmul; B = 0 makes
    // the adapted model equal the base, whose loss the untracked path computes.
    let cfg = LoraConfig::new(2, 4.0, 0.0, vec![Target::Q], 2, None).expect("cfg");
    let adapter = super::lora::LoraAdapter::new(cfg, &model.config, 1).expect("adapter");
    let (tracked, _) = model
        .loss(&row, Some(&adapter), ForwardOptions::EVAL)
        .expect("tracked");
    let (plain, _) = model.loss(&row, None, ForwardOptions::EVAL).expect("plain");
    let a = tracked.to_scalar::<f32>().expect("a");
    let b = plain.to_scalar::<f32>().expect("b");
    assert!((a - b).abs() < 1e-5, "{a} vs {b}");

    // The custom op's input gradient equals candle's matmul gradient.
    let w = Tensor::from_vec(
        (0..12).map(|i| i as f32 * 0.1).collect(),
        (3, 4),
        &Device::Cpu,
    )
    .expect("w");
    let x = Var::new(
        &[[1.0f32, -2.0, 0.5, 3.0], [0.0, 1.0, 1.0, -1.0]],
        &Device::Cpu,
    )
    .expect("x");
    let via_custom = super::model::frozen_linear_for_tests(x.as_tensor(), &w)
        .and_then(|y| Ok(y.sqr()?.sum_all()?))
        .expect("custom");
    let g1 = via_custom.backward().expect("bwd");
    let via_matmul = x
        .as_tensor()
        .matmul(&w.t().expect("t"))
        .and_then(|y| y.sqr()?.sum_all())
        .expect("matmul");
    let g2 = via_matmul.backward().expect("bwd");
    let d = (g1.get(x.as_tensor()).expect("g1") - g2.get(x.as_tensor()).expect("g2"))
        .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
        .expect("diff");
    assert!(d < 1e-5, "{d}");
    assert!(
        g1.get(&w).is_none(),
        "the frozen weight must get no gradient"
    );
}

#[test]
fn every_adapter_gets_a_nonzero_gradient_after_one_step() {
    let model = tiny();
    let mut t =
        Trainer::new(&model, options(2, None, 5, 0.0), examples(&LINES), vec![]).expect("trainer");
    t.step().expect("step");
    let grads = t.probe_gradients().expect("grads");
    assert_eq!(grads.len(), 2 * 2 * 2);
    for (name, norm) in grads {
        assert!(norm > 0.0 && norm.is_finite(), "{name}: {norm}");
    }
}

#[test]
fn top_layer_adapters_also_get_gradients() {
    let model = tiny();
    let mut t = Trainer::new(
        &model,
        options(2, Some(1), 5, 0.0),
        examples(&LINES),
        vec![],
    )
    .expect("trainer");
    t.step().expect("step");
    let grads = t.probe_gradients().expect("grads");
    assert_eq!(grads.len(), 4);
    assert!(
        grads
            .iter()
            .all(|(n, g)| n.contains("layers.1.") && *g > 0.0),
        "{grads:?}"
    );
}

#[test]
fn training_lowers_the_loss_on_the_training_text() {
    let model = tiny();
    let data = examples(&LINES);
    let mut t = Trainer::new(
        &model,
        options(2, None, 40, 0.1),
        data.clone(),
        data[..2].to_vec(),
    )
    .expect("trainer");
    let before = t.eval_loss().expect("eval").expect("some");
    for _ in 0..40 {
        t.step().expect("step");
    }
    let after = t.eval_loss().expect("eval").expect("some");
    assert!(after < 0.8 * before, "held-out loss {before} -> {after}");
}

#[test]
fn a_restored_checkpoint_continues_exactly() {
    let model = tiny();
    let data = examples(&LINES);
    let mut straight =
        Trainer::new(&model, options(2, None, 8, 0.1), data.clone(), vec![]).expect("trainer");
    for _ in 0..8 {
        straight.step().expect("step");
    }
    let mut first =
        Trainer::new(&model, options(2, None, 8, 0.1), data.clone(), vec![]).expect("trainer");
    for _ in 0..3 {
        first.step().expect("step");
    }
    let bytes = first.checkpoint_bytes().expect("checkpoint");
    drop(first);
    let mut resumed =
        Trainer::new(&model, options(2, None, 8, 0.1), data, vec![]).expect("trainer");
    resumed.restore(&bytes).expect("restore");
    assert_eq!(resumed.progress.step, 3);
    for _ in 3..8 {
        resumed.step().expect("step");
    }
    assert_eq!(
        straight.adapter_tensors().expect("a"),
        resumed.adapter_tensors().expect("b")
    );
}

#[test]
fn a_checkpoints_progress_is_read_from_its_header_alone() {
    let model = tiny();
    let mut t =
        Trainer::new(&model, options(2, None, 8, 0.0), examples(&LINES), vec![]).expect("t");
    for _ in 0..3 {
        t.step().expect("step");
    }
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join(super::trainer::CHECKPOINT);
    std::fs::write(&path, t.checkpoint_bytes().expect("checkpoint")).expect("write");
    let p = super::trainer::checkpoint_progress(&path).expect("progress");
    assert_eq!(p.step, 3);
    std::fs::write(&path, u64::MAX.to_le_bytes()).expect("write");
    let err = super::trainer::checkpoint_progress(&path).expect_err("a huge header");
    assert!(format!("{err:#}").contains("more than"), "{err:#}");
}

#[test]
fn a_checkpoint_refuses_other_options() {
    let model = tiny();
    let data = examples(&LINES);
    let t = Trainer::new(&model, options(2, None, 8, 0.0), data.clone(), vec![]).expect("t");
    let bytes = t.checkpoint_bytes().expect("checkpoint");
    let mut other = Trainer::new(&model, options(2, None, 9, 0.0), data, vec![]).expect("t");
    let err = other.restore(&bytes).expect_err("must refuse");
    assert!(format!("{err:#}").contains("other options"), "{err:#}");
}

/// A seeded generator of positions for bit flips.
fn positions(seed: u64, n: usize, range: std::ops::Range<usize>) -> Vec<usize> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            range.start + (x as usize) % (range.end - range.start)
        })
        .collect()
}

#[test]
fn a_checkpoint_with_flipped_bits_is_refused_on_resume() {
    let model = tiny();
    let data = examples(&LINES);
    let mut t = Trainer::new(&model, options(2, None, 8, 0.0), data.clone(), vec![]).expect("t");
    for _ in 0..2 {
        t.step().expect("step");
    }
    let good = t.checkpoint_bytes().expect("checkpoint");
    let header = 8 + u64::from_le_bytes(good[..8].try_into().expect("8 bytes")) as usize;
    let fresh = || Trainer::new(&model, options(2, None, 8, 0.0), data.clone(), vec![]);
    fresh()
        .expect("t")
        .restore(&good)
        .expect("the good checkpoint restores");
    // 200 flips in one go, as in the report, then single flips, all in the tensor data.
    let mut cases: Vec<Vec<usize>> = vec![positions(1, 200, header..good.len())];
    cases.extend((2..42).map(|seed| positions(seed, 1, header..good.len())));
    for flips in &cases {
        let mut bytes = good.clone();
        for (k, &at) in flips.iter().enumerate() {
            bytes[at] ^= 1 << (k % 8);
        }
        if bytes == good {
            continue;
        }
        let err = fresh()
            .expect("t")
            .restore(&bytes)
            .expect_err("must refuse");
        let text = format!("{err:#}");
        assert!(
            text.contains("corrupt") || text.contains("non-finite"),
            "{text}"
        );
    }
    // Flips in the header and its training state never panic, and never restore silently
    // into different content.
    for seed in 100..140 {
        let mut bytes = good.clone();
        let at = positions(seed, 1, 8..header)[0];
        bytes[at] ^= 1 << (seed % 8);
        let mut r = fresh().expect("t");
        if r.restore(&bytes).is_ok() {
            assert_eq!(r.adapter_tensors().ok(), t.adapter_tensors().ok());
            assert_eq!(r.progress.step, 2);
        }
    }
}

#[test]
fn merged_weights_give_the_logits_of_the_adapter() {
    let model = tiny();
    let mut t =
        Trainer::new(&model, options(2, None, 4, 0.0), examples(&LINES), vec![]).expect("trainer");
    for _ in 0..4 {
        t.step().expect("step");
    }
    let ids: Vec<u32> = "the pump".bytes().map(u32::from).collect();
    let with_adapter = model.last_logits(&ids, Some(&t.adapter)).expect("adapter");
    let base = model.last_logits(&ids, None).expect("base");
    let mut weights = tiny_weights(7);
    t.adapter.merge_into(&mut weights).expect("merge");
    let merged = BaseModel::from_weights(weights)
        .and_then(|m| m.last_logits(&ids, None))
        .expect("merged");
    let diff = with_adapter
        .iter()
        .zip(&merged)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let moved = with_adapter
        .iter()
        .zip(&base)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "merged vs adapter: {diff}");
    assert!(moved > 1e-3, "the adapter changed nothing: {moved}");
}

#[test]
fn a_shared_prefix_row_scores_like_separate_examples() {
    let model = tiny();
    let mut ex = examples(&["sys: pump P-17 code 4471", "sys: valve V-3 code 9120"]);
    for e in &mut ex {
        e.scored_from = 6;
    }
    let shared = super::data::common_prefix(&[&ex]);
    assert_eq!(shared, 5, "the common prefix is \"sys: \"");
    let cfg = LoraConfig::new(2, 4.0, 0.0, vec![Target::Q, Target::V], 2, None).expect("cfg");
    let adapter = super::lora::LoraAdapter::new(cfg, &model.config, 1).expect("adapter");
    // A non-zero B so that the adapters change the attention of every position.
    for (name, var) in adapter.named_vars() {
        if name.contains("lora_B") {
            let t = Tensor::randn(0f32, 0.5, var.as_tensor().shape(), &Device::Cpu).expect("b");
            var.set(&t).expect("set");
        }
    }
    let packed = super::data::pack_all(&ex, 64, shared);
    assert_eq!(packed.len(), 1);
    let row = &packed[0];
    assert_eq!(row.ids.len(), ex[0].ids.len() + ex[1].ids.len() - shared);
    let (joint, n) = model
        .loss(row, Some(&adapter), ForwardOptions::EVAL)
        .expect("joint");
    let (mut sum, mut count) = (0.0f32, 0usize);
    for e in &ex {
        let alone = super::data::pack_all(std::slice::from_ref(e), 64, 0);
        let (l, k) = model
            .loss(&alone[0], Some(&adapter), ForwardOptions::EVAL)
            .expect("alone");
        sum += l.to_scalar::<f32>().expect("l") * k as f32;
        count += k;
    }
    assert_eq!(n, count);
    let joint = joint.to_scalar::<f32>().expect("joint");
    let separate = sum / count as f32;
    assert!((joint - separate).abs() < 1e-5, "{joint} vs {separate}");
}

#[test]
fn custom_norm_and_softmax_pass_the_gradients_of_their_composite_forms() {
    let x0 = Tensor::randn(0f32, 1.0, (5, 12), &Device::Cpu).expect("x");
    let w = Tensor::randn(1f32, 0.3, 12, &Device::Cpu).expect("w");
    let probe = Tensor::randn(0f32, 1.0, (5, 12), &Device::Cpu).expect("probe");
    let grads = |custom: bool| -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let x = Var::from_tensor(&x0).expect("var");
        let (n, s) = if custom {
            super::model::tracked_norm_and_softmax_for_tests(x.as_tensor(), &w, 1e-5)
                .expect("custom")
        } else {
            (
                super::model::rms_norm_composite(x.as_tensor(), &w, 1e-5).expect("norm"),
                candle_nn::ops::softmax(x.as_tensor(), candle_core::D::Minus1).expect("sm"),
            )
        };
        let flat = |t: &Tensor| t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("v");
        // Weighted sums so that every output element gets its own upstream gradient.
        let gn = (&n * &probe)
            .and_then(|t| t.sum_all())
            .and_then(|l| l.backward())
            .expect("norm backward");
        let gs = (&s * &probe)
            .and_then(|t| t.sum_all())
            .and_then(|l| l.backward())
            .expect("softmax backward");
        let gx = |g: &candle_core::backprop::GradStore| flat(g.get(x.as_tensor()).expect("grad"));
        (flat(&n), gx(&gn), flat(&s), gx(&gs))
    };
    let (a, b) = (grads(true), grads(false));
    for (name, u, v) in [
        ("norm", &a.0, &b.0),
        ("norm grad", &a.1, &b.1),
        ("softmax", &a.2, &b.2),
        ("softmax grad", &a.3, &b.3),
    ] {
        let d = u
            .iter()
            .zip(v)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max);
        assert!(d < 1e-5, "{name} differs by {d}");
    }
}

#[test]
fn cached_frozen_states_train_like_computing_every_layer() {
    let model = tiny();
    let data = examples(&LINES);
    let mut cached =
        Trainer::new(&model, options(2, Some(1), 12, 0.1), data.clone(), vec![]).expect("t");
    let mut full = Trainer::new(&model, options(2, Some(1), 12, 0.1), data, vec![])
        .expect("t")
        .without_frozen_cache();
    // Twelve steps of two rows each run over the six examples several times, so most rows
    // start from cached states.
    for _ in 0..12 {
        let a = cached.step().expect("cached step").loss;
        let b = full.step().expect("full step").loss;
        assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "{a} vs {b}");
    }
    let (a, b) = (
        cached.adapter_tensors().expect("a"),
        full.adapter_tensors().expect("b"),
    );
    for (name, (_, va)) in &a {
        let (_, vb) = &b[name];
        let diff = va
            .iter()
            .zip(vb)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-4, "{name}: {diff}");
    }
}

#[test]
fn a_restored_top_layer_checkpoint_continues_exactly_without_its_cached_states() {
    let model = tiny();
    let data = examples(&LINES);
    let opts = options(2, Some(1), 8, 0.1);
    let mut straight = Trainer::new(&model, opts.clone(), data.clone(), vec![]).expect("t");
    for _ in 0..8 {
        straight.step().expect("step");
    }
    let mut first = Trainer::new(&model, opts.clone(), data.clone(), vec![]).expect("t");
    for _ in 0..3 {
        first.step().expect("step");
    }
    let bytes = first.checkpoint_bytes().expect("checkpoint");
    drop(first);
    let mut resumed = Trainer::new(&model, opts, data, vec![]).expect("t");
    resumed.restore(&bytes).expect("restore");
    for _ in 3..8 {
        resumed.step().expect("step");
    }
    assert_eq!(
        straight.adapter_tensors().expect("a"),
        resumed.adapter_tensors().expect("b")
    );
}

#[test]
fn recall_and_loss_from_cached_states_agree_with_the_whole_forward_pass() {
    use super::data::{common_prefix, pack_all};
    let model = tiny();
    let train = examples(&LINES);
    let held = examples(&LINES[..3]);
    let opts = options(2, Some(1), 30, 0.0);
    let rows = pack_all(&held, opts.seq_len, common_prefix(&[&train, &held]));
    let mut t = Trainer::new(&model, opts, train, held)
        .expect("trainer")
        .with_recall_stop();
    for round in 0..2 {
        let (loss, recall) = t.eval_loss_and_recall().expect("eval");
        let whole = super::trainer::eval_loss(&model, Some(&t.adapter), &rows)
            .expect("loss")
            .expect("held-out data");
        let loss = loss.expect("held-out data");
        assert!(
            (whole - loss).abs() < 1e-4,
            "round {round}: {whole} vs {loss}"
        );
        let recall = recall.expect("recall");
        assert!((0.0..=1.0).contains(&recall), "{recall}");
        if round == 0 {
            assert_eq!(recall, 0.0);
        }
        for _ in 0..30 {
            t.step().expect("step");
        }
    }
}

#[test]
fn recall_saturates_when_perfect_twice_or_flat_for_three_evaluations() {
    use super::trainer::recall_saturated;
    let table: &[(&[f64], bool)] = &[
        (&[], false),
        (&[1.0], false),
        (&[0.5, 1.0], false),
        (&[0.5, 1.0, 1.0], true),
        (&[0.2, 0.5, 0.5, 0.5], false),
        (&[0.2, 0.5, 0.5, 0.5, 0.5], true),
        (&[0.2, 0.5, 0.4, 0.5, 0.6], false),
        (&[0.0, 0.0, 0.0, 0.0, 0.0], false),
    ];
    for (history, want) in table {
        assert_eq!(recall_saturated(history), *want, "{history:?}");
    }
}
