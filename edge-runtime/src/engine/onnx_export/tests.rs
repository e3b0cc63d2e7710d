//! Checks the written graphs in tract against a naive f32 Llama forward pass.

use std::collections::HashMap;

use anyhow::Result;
use half::f16;
use prost::Message;
use tract_onnx::prelude::{
    Datum, Framework as _, InferenceModelExt as _, TValue, Tensor, TypedModel, TypedSimplePlan,
    tvec,
};
use tract_onnx::tract_core::transform::get_transform;

use crate::engine::ggml_op;

use super::blocks::decompose;
use super::*;
use crate::engine::quant::{GgmlType, Q4_0_BLOCK_BYTES, Q4_1_BLOCK_BYTES, Q8_0_BLOCK_BYTES};

// ---------------------------------------------------------------------------------------
// Reference forward pass: plain loops over dequantized weights, one sequence at a time.

struct Reference {
    cfg: LlamaConfig,
    t: HashMap<String, Vec<f32>>,
}

impl Reference {
    fn new(w: &LlamaWeights) -> Result<Self> {
        let mut t = HashMap::new();
        for (name, weight) in &w.tensors {
            t.insert(name.clone(), weight.dequantize()?);
        }
        Ok(Reference {
            cfg: w.config.clone(),
            t,
        })
    }

    fn w(&self, name: &str) -> &[f32] {
        &self.t[name]
    }

    fn matvec(w: &[f32], x: &[f32]) -> Vec<f32> {
        w.chunks_exact(x.len())
            .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
            .collect()
    }

    fn rms_norm(&self, x: &[f32], w: &[f32]) -> Vec<f32> {
        let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
        let r = 1.0 / (ms + self.cfg.rms_norm_eps).sqrt();
        x.iter().zip(w).map(|(v, g)| v * r * g).collect()
    }

    fn rope(&self, head: &mut [f32], pos: i64) {
        let half = head.len() / 2;
        for (i, f) in rope_inv_freq(&self.cfg).iter().enumerate() {
            let angle = pos as f32 * f;
            let (s, c) = angle.sin_cos();
            let (x1, x2) = (head[i], head[i + half]);
            head[i] = x1 * c - x2 * s;
            head[i + half] = x2 * c + x1 * s;
        }
    }

    /// Logits of every position of one sequence; `visible[t]` false hides slot t (padding).
    fn forward(&self, ids: &[i64], positions: &[i64], visible: &[bool]) -> Vec<Vec<f32>> {
        let cfg = &self.cfg;
        let (h, hd) = (cfg.hidden_size, cfg.head_dim());
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let group = nh / nkv;
        let embed = self.w("model.embed_tokens.weight");
        let mut xs: Vec<Vec<f32>> = ids
            .iter()
            .map(|&id| embed[id as usize * h..][..h].to_vec())
            .collect();
        for l in 0..cfg.num_hidden_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}.weight");
            let mut qs = vec![];
            let mut ks = vec![];
            let mut vs = vec![];
            for (x, &pos) in xs.iter().zip(positions) {
                let n = self.rms_norm(x, self.w(&p("input_layernorm")));
                let mut q = Self::matvec(self.w(&p("self_attn.q_proj")), &n);
                let mut k = Self::matvec(self.w(&p("self_attn.k_proj")), &n);
                q.chunks_exact_mut(hd).for_each(|head| self.rope(head, pos));
                k.chunks_exact_mut(hd).for_each(|head| self.rope(head, pos));
                qs.push(q);
                ks.push(k);
                vs.push(Self::matvec(self.w(&p("self_attn.v_proj")), &n));
            }
            for t in 0..xs.len() {
                let mut ctx = vec![0f32; nh * hd];
                for head in 0..nh {
                    let kv = head / group;
                    let q = &qs[t][head * hd..][..hd];
                    let slots: Vec<usize> = (0..=t).filter(|&j| visible[j]).collect();
                    let scores: Vec<f32> = slots
                        .iter()
                        .map(|&j| {
                            let k = &ks[j][kv * hd..][..hd];
                            q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() / (hd as f32).sqrt()
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f32 = exps.iter().sum();
                    for (e, &j) in exps.iter().zip(&slots) {
                        let v = &vs[j][kv * hd..][..hd];
                        for d in 0..hd {
                            ctx[head * hd + d] += e / total * v[d];
                        }
                    }
                }
                let o = Self::matvec(self.w(&p("self_attn.o_proj")), &ctx);
                xs[t].iter_mut().zip(&o).for_each(|(x, o)| *x += o);
                let n = self.rms_norm(&xs[t], self.w(&p("post_attention_layernorm")));
                let gate = Self::matvec(self.w(&p("mlp.gate_proj")), &n);
                let up = Self::matvec(self.w(&p("mlp.up_proj")), &n);
                let act: Vec<f32> = gate
                    .iter()
                    .zip(&up)
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect();
                let down = Self::matvec(self.w(&p("mlp.down_proj")), &act);
                xs[t].iter_mut().zip(&down).for_each(|(x, d)| *x += d);
            }
        }
        let head = if cfg.tie_word_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        xs.iter()
            .map(|x| Self::matvec(self.w(head), &self.rms_norm(x, self.w("model.norm.weight"))))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Running the exported graph in tract.

type Runnable = std::sync::Arc<TypedSimplePlan>;

/// Parses an exported graph with the engine's ONNX reader (which knows `GgmlMatMul`).
fn parse(bytes: &[u8]) -> Result<TypedModel> {
    ggml_op::onnx()
        .model_for_read(&mut &bytes[..])?
        .into_typed()?
        .into_decluttered()
}

fn runnable(model: TypedModel) -> Result<Runnable> {
    TypedSimplePlan::new(model.into_optimized()?)
}

fn tensor<T: Datum + Copy>(shape: &[usize], data: &[T]) -> Result<Tensor> {
    Tensor::from_shape(shape, data)
}

fn floats(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
}

struct Loaded {
    runnable: Runnable,
    cfg: LlamaConfig,
}

struct Step {
    /// `[batch, seq, vocab]`, flattened.
    logits: Vec<f32>,
    /// `present.{i}.key|value`, in layer order, key first.
    presents: Vec<Tensor>,
}

fn load_bytes(bytes: &[u8], cfg: &LlamaConfig) -> Result<Loaded> {
    Ok(Loaded {
        runnable: runnable(parse(bytes)?)?,
        cfg: cfg.clone(),
    })
}

fn load(weights: &LlamaWeights, format: WeightFormat) -> Result<Loaded> {
    load_bytes(
        &to_model_proto(weights, format)?.encode_to_vec(),
        &weights.config,
    )
}

impl Loaded {
    fn empty_cache(&self, batch: usize) -> Result<Vec<Tensor>> {
        let shape = [batch, self.cfg.num_key_value_heads, 0, self.cfg.head_dim()];
        (0..2 * self.cfg.num_hidden_layers)
            .map(|_| tensor::<f32>(&shape, &[]))
            .collect()
    }

    /// One forward pass over `ids` (`batch` rows of equal length).
    fn step(
        &self,
        ids: &[Vec<i64>],
        positions: &[Vec<i64>],
        mask: &[Vec<i64>],
        past: Vec<Tensor>,
    ) -> Result<Step> {
        let (b, s, t) = (ids.len(), ids[0].len(), mask[0].len());
        let mut inputs = tvec![
            TValue::from(tensor(&[b, s], &ids.concat())?),
            tensor(&[b, t], &mask.concat())?.into(),
            tensor(&[b, s], &positions.concat())?.into(),
        ];
        inputs.extend(past.into_iter().map(TValue::from));
        let out = self.runnable.run(inputs)?;
        let presents = out[1..].iter().map(|v| Tensor::clone(v)).collect();
        let logits = floats(&out[0])?;
        assert_eq!(out[0].shape(), &[b, s, self.cfg.vocab_size]);
        Ok(Step { logits, presents })
    }
}

/// Largest absolute difference, and the largest magnitude of `expected`.
fn max_diff(actual: &[f32], expected: &[f32]) -> (f32, f32) {
    assert_eq!(actual.len(), expected.len());
    let diff = actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs())
        .fold(0.0, f32::max);
    let scale = expected.iter().map(|e| e.abs()).fold(0.0, f32::max);
    (diff, scale)
}

const PROMPT: [i64; 7] = [1, 17, 200, 3, 99, 271, 42];

// ---------------------------------------------------------------------------------------
// Tests.

#[test]
fn f32_export_written_to_disk_matches_reference_forward_pass() -> Result<()> {
    let weights = random_tiny_llama(7);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tiny.onnx");
    write_onnx(&weights, WeightFormat::F32, &path)?;
    let loaded = Loaded {
        runnable: runnable(
            ggml_op::onnx()
                .model_for_path(&path)?
                .into_typed()?
                .into_decluttered()?,
        )?,
        cfg: weights.config.clone(),
    };

    let positions: Vec<i64> = (0..PROMPT.len() as i64).collect();
    let step = loaded.step(
        &[PROMPT.to_vec()],
        std::slice::from_ref(&positions),
        &[vec![1; PROMPT.len()]],
        loaded.empty_cache(1)?,
    )?;
    let expected = Reference::new(&weights)?
        .forward(&PROMPT, &positions, &[true; PROMPT.len()])
        .concat();
    let (diff, scale) = max_diff(&step.logits, &expected);
    assert!(scale > 1.0, "reference logits are degenerate (max {scale})");
    assert!(diff < 1e-4, "logits differ by {diff}");
    for (i, present) in step.presents.iter().enumerate() {
        assert_eq!(present.shape(), &[1, 2, PROMPT.len(), 16], "present #{i}");
    }
    Ok(())
}

#[test]
fn decoding_token_by_token_with_the_cache_fed_back_matches_the_full_pass() -> Result<()> {
    let weights = random_tiny_llama(11);
    let loaded = load(&weights, WeightFormat::F32)?;
    let n = PROMPT.len();
    let positions: Vec<i64> = (0..n as i64).collect();
    let full = loaded.step(
        &[PROMPT.to_vec()],
        &[positions],
        &[vec![1; n]],
        loaded.empty_cache(1)?,
    )?;

    // Prefill three tokens, then one token per step.
    let vocab = weights.config.vocab_size;
    let mut cache = loaded.empty_cache(1)?;
    let mut start = 0;
    for end in [3, 4, 5, 6, 7] {
        let ids = PROMPT[start..end].to_vec();
        let pos: Vec<i64> = (start as i64..end as i64).collect();
        let step = loaded.step(&[ids], &[pos], &[vec![1; end]], cache)?;
        let (diff, _) = max_diff(&step.logits, &full.logits[start * vocab..end * vocab]);
        assert!(
            diff < 1e-4,
            "tokens {start}..{end} differ from the full pass by {diff}"
        );
        assert_eq!(step.presents[0].shape(), &[1, 2, end, 16]);
        cache = step.presents;
        start = end;
    }
    // The final cache equals the full pass's.
    for (a, b) in cache.iter().zip(&full.presents) {
        let (diff, _) = max_diff(&floats(a)?, &floats(b)?);
        assert!(diff < 1e-5, "caches differ by {diff}");
    }
    Ok(())
}

/// `GgmlMatMul` quantizes activations per 32-value block to int8 (as llama.cpp does), so the
/// Ggml graph tracks the f32 reference to within that rounding, not exactly; a wrong block
/// layout or scale puts the logits off by their whole scale.
const INT8_ACTIVATION_TOLERANCE: f32 = 5e-2;

/// Exports `quantized` as Q4 (exact blocks, logits within 1e-3 of their scale) and as Ggml
/// (int8 activations) and checks each against the reference over the same blocks.
fn check_q4_against_dequantized_reference(quantized: &LlamaWeights) -> Result<()> {
    check_against_dequantized_reference(quantized, WeightFormat::Q4, 1e-3)?;
    check_against_dequantized_reference(quantized, WeightFormat::Ggml, INT8_ACTIVATION_TOLERANCE)
}

/// Exports `quantized` as `format` and checks it against the reference over the same blocks,
/// for a batch of two different prompts, then one decode step.
fn check_against_dequantized_reference(
    quantized: &LlamaWeights,
    format: WeightFormat,
    tolerance: f32,
) -> Result<()> {
    let loaded = load(quantized, format)?;
    let reference = Reference::new(quantized)?;
    let other: Vec<i64> = PROMPT.iter().rev().copied().collect();
    let n = PROMPT.len();
    let positions: Vec<i64> = (0..n as i64).collect();
    let prompts = [PROMPT.to_vec(), other.clone()];
    let step = loaded.step(
        &prompts,
        &[positions.clone(), positions.clone()],
        &[vec![1; n], vec![1; n]],
        loaded.empty_cache(2)?,
    )?;
    let expected = [
        reference.forward(&PROMPT, &positions, &[true; 7]).concat(),
        reference.forward(&other, &positions, &[true; 7]).concat(),
    ]
    .concat();
    let (diff, scale) = max_diff(&step.logits, &expected);
    assert!(
        diff <= tolerance * scale,
        "{format:?} batched prefill: logits differ by {diff} at scale {scale}"
    );

    // Decode one more token per row on the returned cache.
    let next = [vec![5], vec![6]];
    let pos = [vec![n as i64], vec![n as i64]];
    let decode = loaded.step(
        &next,
        &pos,
        &[vec![1; n + 1], vec![1; n + 1]],
        step.presents,
    )?;
    let mut expected = vec![];
    for (prompt, token) in prompts.iter().zip([5, 6]) {
        let mut ids = prompt.clone();
        ids.push(token);
        let positions: Vec<i64> = (0..=n as i64).collect();
        let all = reference.forward(&ids, &positions, &[true; 8]);
        expected.extend_from_slice(&all[n]);
    }
    let (diff, scale) = max_diff(&decode.logits, &expected);
    assert!(
        diff <= tolerance * scale,
        "{format:?} batched decode: logits differ by {diff} at scale {scale}"
    );
    Ok(())
}

#[test]
fn q4_export_of_q4_1_projections_and_q8_0_tied_embedding_matches_dequantized_reference()
-> Result<()> {
    let weights = quantize_llama(&random_tiny_llama(3), GgmlType::Q4_1, GgmlType::Q8_0)?;
    check_q4_against_dequantized_reference(&weights)
}

#[test]
fn q4_export_of_q4_0_projections_and_q4_1_tied_embedding_matches_dequantized_reference()
-> Result<()> {
    let weights = quantize_llama(&random_tiny_llama(4), GgmlType::Q4_0, GgmlType::Q4_1)?;
    check_q4_against_dequantized_reference(&weights)
}

#[test]
fn q4_export_of_q4_0_embedding_with_untied_q4_1_head_matches_dequantized_reference() -> Result<()> {
    let mut config = tiny_llama_config();
    config.tie_word_embeddings = false;
    let weights = quantize_llama(&random_llama(&config, 5), GgmlType::Q4_1, GgmlType::Q4_0)?;
    check_q4_against_dequantized_reference(&weights)
}

#[test]
fn q4_and_ggml_exports_keep_f32_tensors_exact() -> Result<()> {
    for format in [WeightFormat::Q4, WeightFormat::Ggml] {
        q4_export_keeps_f32_tensors_exact(format)?;
    }
    Ok(())
}

fn q4_export_keeps_f32_tensors_exact(format: WeightFormat) -> Result<()> {
    let weights = random_tiny_llama(6);
    let loaded = load(&weights, format)?;
    let positions: Vec<i64> = (0..7).collect();
    let step = loaded.step(
        &[PROMPT.to_vec()],
        std::slice::from_ref(&positions),
        &[vec![1; 7]],
        loaded.empty_cache(1)?,
    )?;
    let expected = Reference::new(&weights)?
        .forward(&PROMPT, &positions, &[true; 7])
        .concat();
    let (diff, _) = max_diff(&step.logits, &expected);
    assert!(diff < 1e-4, "logits differ by {diff}");
    Ok(())
}

#[test]
fn padded_slots_are_hidden_by_the_attention_mask() -> Result<()> {
    // Row 0 is left-padded by two slots; its logits must equal the unpadded prompt's.
    let weights = random_tiny_llama(8);
    let loaded = load(&weights, WeightFormat::F32)?;
    let prompt = &PROMPT[..5];
    let padded = [vec![0, 0], prompt.to_vec()].concat();
    let step = loaded.step(
        &[padded],
        &[vec![0, 0, 0, 1, 2, 3, 4]],
        &[vec![0, 0, 1, 1, 1, 1, 1]],
        loaded.empty_cache(1)?,
    )?;
    let expected = Reference::new(&weights)?
        .forward(prompt, &[0, 1, 2, 3, 4], &[true; 5])
        .concat();
    let vocab = weights.config.vocab_size;
    let (diff, _) = max_diff(&step.logits[2 * vocab..], &expected);
    assert!(diff < 1e-4, "padded prompt differs by {diff}");
    Ok(())
}

#[test]
fn truncated_onnx_file_fails_to_load_with_an_error() -> Result<()> {
    let weights = random_tiny_llama(9);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tiny.onnx");
    write_onnx(&weights, WeightFormat::Q4, &path)?;
    let bytes = std::fs::read(&path)?;
    for keep in [bytes.len() / 2, bytes.len() - 3, 10] {
        std::fs::write(&path, &bytes[..keep])?;
        let loaded = std::fs::read(&path)
            .map_err(anyhow::Error::from)
            .and_then(|b| parse(&b));
        assert!(
            loaded.is_err(),
            "a file cut to {keep} of {} bytes loaded",
            bytes.len()
        );
    }
    Ok(())
}

#[test]
fn rejects_weights_whose_shape_disagrees_with_the_config() {
    let mut weights = random_tiny_llama(1);
    weights.config.intermediate_size = 96;
    let err = to_model_proto(&weights, WeightFormat::F32)
        .err()
        .map(|e| format!("{e:#}"));
    assert!(
        err.as_deref().is_some_and(|e| e.contains("gate_proj")),
        "{err:?}"
    );

    let mut weights = random_tiny_llama(1);
    weights.tensors.remove("model.layers.1.mlp.up_proj.weight");
    let err = to_model_proto(&weights, WeightFormat::Q4)
        .err()
        .map(|e| format!("{e:#}"));
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("missing tensor model.layers.1.mlp.up_proj")),
        "{err:?}"
    );
}

#[test]
fn rejects_block_data_of_the_wrong_length() {
    let mut weights = quantize_llama(&random_tiny_llama(2), GgmlType::Q4_1, GgmlType::Q8_0)
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(w) = weights
        .tensors
        .get_mut("model.layers.0.self_attn.q_proj.weight")
        && let WeightData::Q4_1(b) = &mut w.data
    {
        b.truncate(b.len() - 1);
    }
    assert!(to_model_proto(&weights, WeightFormat::Q4).is_err());
    assert!(to_model_proto(&weights, WeightFormat::F32).is_err());
}

#[test]
fn graph_declares_the_optimum_decoder_interface() -> Result<()> {
    let model = to_model_proto(&random_tiny_llama(1), WeightFormat::Q4)?;
    let graph = model
        .graph
        .as_ref()
        .map(|g| (g.input.clone(), g.output.clone()));
    let (inputs, outputs) = graph.unwrap_or_default();
    let names =
        |v: &[tract_onnx::pb::ValueInfoProto]| v.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&inputs),
        [
            "input_ids",
            "attention_mask",
            "position_ids",
            "past_key_values.0.key",
            "past_key_values.0.value",
            "past_key_values.1.key",
            "past_key_values.1.value"
        ]
    );
    assert_eq!(
        names(&outputs),
        [
            "logits",
            "present.0.key",
            "present.0.value",
            "present.1.key",
            "present.1.value"
        ]
    );
    let dims = |v: &tract_onnx::pb::ValueInfoProto| -> Vec<String> {
        use tract_onnx::pb::tensor_shape_proto::dimension::Value;
        let shape = v
            .r#type
            .as_ref()
            .and_then(|t| t.value.as_ref())
            .and_then(|tract_onnx::pb::type_proto::Value::TensorType(t)| t.shape.clone());
        shape
            .map(|s| s.dim)
            .unwrap_or_default()
            .iter()
            .map(|d| match &d.value {
                Some(Value::DimValue(v)) => v.to_string(),
                Some(Value::DimParam(p)) => p.clone(),
                None => "?".into(),
            })
            .collect()
    };
    assert_eq!(dims(&inputs[0]), ["batch", "sequence_length"]);
    assert_eq!(
        dims(&inputs[1]),
        ["batch", "past_sequence_length + sequence_length"]
    );
    assert_eq!(
        dims(&inputs[3]),
        ["batch", "2", "past_sequence_length", "16"]
    );
    assert_eq!(dims(&outputs[0]), ["batch", "sequence_length", "272"]);
    assert_eq!(
        dims(&outputs[1]),
        ["batch", "2", "past_sequence_length + sequence_length", "16"]
    );
    let ms = model
        .opset_import
        .iter()
        .any(|o| o.domain == "com.microsoft" && o.version == 1);
    assert!(ms, "com.microsoft opset not imported");
    let nbits = model
        .graph
        .iter()
        .flat_map(|g| &g.node)
        .filter(|n| n.op_type == ggml_op::OP_TYPE || n.op_type == "MatMulNBits")
        .count();
    assert_eq!(nbits, 0, "f32 weights must stay f32 in the Q4 format");
    Ok(())
}

#[test]
fn dequantizes_ggml_blocks_per_their_formulas() -> Result<()> {
    // One block each with d = 0.5 (and m = −1 for Q4_1); byte j holds codes j and j+16.
    let d = f16::from_f32(0.5).to_le_bytes();
    let m = f16::from_f32(-1.0).to_le_bytes();
    let nibbles: Vec<u8> = (0..16u8).map(|j| j | ((15 - j) << 4)).collect();
    let q4_0 = Weight {
        shape: vec![1, 32],
        data: WeightData::Q4_0([&d[..], &nibbles].concat()),
    };
    let q4_1 = Weight {
        shape: vec![1, 32],
        data: WeightData::Q4_1([&d[..], &m[..], &nibbles].concat()),
    };
    let q8: Vec<u8> = (0..32i32).map(|i| (i * 8 - 128) as i8 as u8).collect();
    let q8_0 = Weight {
        shape: vec![1, 32],
        data: WeightData::Q8_0([&d[..], &q8].concat()),
    };
    let cases: [(&Weight, [(usize, f32); 4]); 3] = [
        (&q4_0, [(0, -4.0), (15, 3.5), (16, 3.5), (31, -4.0)]),
        (&q4_1, [(0, -1.0), (15, 6.5), (16, 6.5), (31, -1.0)]),
        (&q8_0, [(0, -64.0), (16, 0.0), (17, 4.0), (31, 60.0)]),
    ];
    for (w, expected) in cases {
        let values = w.dequantize()?;
        for (i, v) in expected {
            assert_eq!(
                values[i],
                v,
                "{:?} element {i}",
                std::mem::discriminant(&w.data)
            );
        }
    }
    assert_eq!(Q4_0_BLOCK_BYTES + 2, Q4_1_BLOCK_BYTES);
    assert_eq!(Q8_0_BLOCK_BYTES, 34);
    Ok(())
}

#[test]
fn decomposition_reorders_nibbles_and_reproduces_every_value() -> Result<()> {
    let weights = random_tiny_llama(12);
    let values = weights.tensors["model.layers.0.mlp.down_proj.weight"].dequantize()?;
    for kind in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
        let w = Weight {
            shape: vec![64, 128],
            data: WeightData::quantize(&values, kind)?,
        };
        let exact = w.dequantize()?;
        let Some(dec) = decompose(&w)? else {
            panic!("{kind:?} did not decompose")
        };
        for (i, v) in exact.iter().enumerate() {
            let block = i / 32;
            let within = i % 32;
            let mut rebuilt = dec.offsets.as_ref().map_or(0.0, |o| o[block]);
            for part in &dec.parts {
                // onnxruntime order: element 2j low nibble, 2j+1 high nibble.
                let byte = part.packed[block * 16 + within / 2];
                let code = if within % 2 == 0 {
                    byte & 0x0F
                } else {
                    byte >> 4
                };
                rebuilt += part.scales[block] * (code as f32 - 8.0);
            }
            assert!(
                (rebuilt - v).abs() <= 1e-6 * v.abs().max(1.0),
                "{kind:?} value {i}: {rebuilt} vs {v}"
            );
        }
        // Quantization itself stays close to the source values.
        let (diff, scale) = max_diff(&exact, &values);
        assert!(
            diff < 0.2 * scale,
            "{kind:?} quantization error {diff} at scale {scale}"
        );
    }
    Ok(())
}

#[test]
fn random_tiny_llama_is_deterministic_per_seed() {
    let a = random_tiny_llama(5);
    let b = random_tiny_llama(5);
    let c = random_tiny_llama(6);
    let name = "model.layers.1.self_attn.k_proj.weight";
    assert_eq!(a.tensors[name], b.tensors[name]);
    assert_ne!(a.tensors[name], c.tensors[name]);
    assert_eq!(a.tensors.len(), 1 + 2 * 9 + 1);
}

#[test]
fn runs_statefully_after_transformers_detect_all() -> Result<()> {
    // tract's `detect_kv_cache` (part of `transformers_detect_all`) moves past/present K/V
    // into the runnable's state: only input_ids, attention_mask and position_ids remain.
    let weights = quantize_llama(&random_tiny_llama(13), GgmlType::Q4_1, GgmlType::Q8_0)?;
    for format in [WeightFormat::F32, WeightFormat::Q4] {
        let bytes = to_model_proto(&weights, format)?.encode_to_vec();
        let full = load_bytes(&bytes, &weights.config)?;
        let positions: Vec<i64> = (0..7).collect();
        let full = full.step(
            &[PROMPT.to_vec()],
            &[positions],
            &[vec![1; 7]],
            full.empty_cache(1)?,
        )?;

        let mut model = parse(&bytes)?;
        get_transform("transformers_detect_all")?
            .context("no transformers_detect_all")?
            .transform(&mut model)?;
        assert_eq!(
            model.inputs.len(),
            3,
            "{format:?}: the KV cache did not move into the state"
        );
        let mut state = runnable(model)?.spawn()?;
        let vocab = weights.config.vocab_size;
        let mut start = 0;
        for end in [3, 4, 5, 6, 7] {
            let s = end - start;
            let ids = tensor(&[1, s], &PROMPT[start..end])?;
            let mask = tensor(&[1, end], &vec![1i64; end])?;
            let pos = tensor(&[1, s], &(start as i64..end as i64).collect::<Vec<_>>())?;
            let out = state.run(tvec![ids.into(), mask.into(), pos.into()])?;
            let (diff, _) = max_diff(&floats(&out[0])?, &full.logits[start * vocab..end * vocab]);
            assert!(
                diff < 1e-4,
                "{format:?}: stateful tokens {start}..{end} differ by {diff}"
            );
            start = end;
        }
    }
    Ok(())
}

#[test]
fn mixed_block_formats_within_a_fused_projection_group_stay_exact() -> Result<()> {
    // q/k/v and gate/up normally share one product; mixed formats take one product each.
    let mut weights = quantize_llama(&random_tiny_llama(14), GgmlType::Q4_1, GgmlType::Q4_0)?;
    let source = random_tiny_llama(14);
    for (name, kind) in [
        ("model.layers.0.self_attn.k_proj.weight", GgmlType::Q4_0),
        ("model.layers.0.self_attn.v_proj.weight", GgmlType::Q8_0),
        ("model.layers.1.mlp.up_proj.weight", GgmlType::Q8_0),
    ] {
        let values = source.tensors[name].dequantize()?;
        let w = weights.tensors.get_mut(name).context("tensor")?;
        w.data = WeightData::quantize(&values, kind)?;
    }
    let f32_gate = source.tensors["model.layers.0.mlp.gate_proj.weight"].dequantize()?;
    if let Some(w) = weights
        .tensors
        .get_mut("model.layers.0.mlp.gate_proj.weight")
    {
        w.data = WeightData::F32(f32_gate);
    }
    for (format, node) in [
        (WeightFormat::Q4, "matmul_nbits_0"),
        (WeightFormat::Ggml, "ggml_matmul"),
    ] {
        let model = to_model_proto(&weights, format)?;
        let nodes: Vec<&str> = model
            .graph
            .iter()
            .flat_map(|g| &g.node)
            .map(|n| n.name.as_str())
            .collect();
        let fused = format!("model.layers.1.self_attn.qkv_proj.{node}");
        assert!(
            nodes.contains(&fused.as_str()),
            "{format:?}: layer 1 q/k/v not fused"
        );
        let apart = format!("model.layers.0.self_attn.qkv_proj.v_proj.{node}");
        assert!(
            nodes.contains(&apart.as_str()),
            "{format:?}: layer 0 v_proj not separate"
        );
    }
    check_q4_against_dequantized_reference(&weights)
}

#[test]
fn tied_f32_head_is_packed_once_at_load_not_on_every_run() -> Result<()> {
    // tract merges initializers holding the same bytes, and a constant read by two nodes
    // (the embedding Gather and the head) past its folding budget (4 MiB) is re-packed on
    // every run: the table here is 5 MB.
    let mut cfg = tiny_llama_config();
    cfg.vocab_size = 20_000;
    cfg.num_hidden_layers = 1;
    assert!(cfg.tie_word_embeddings);
    let bytes = to_model_proto(&random_llama(&cfg, 15), WeightFormat::F32)?.encode_to_vec();
    let graph = ModelProto::decode(&bytes[..])?.graph.context("no graph")?;
    let head = graph
        .initializer
        .iter()
        .find(|i| i.name == "lm_head.weight_t")
        .context("no lm_head initializer")?;
    assert_eq!(head.dims, [cfg.hidden_size as i64, cfg.vocab_size as i64]);

    let optimized = ggml_op::onnx()
        .model_for_read(&mut &bytes[..])?
        .into_optimized()?;
    let packed_per_run: Vec<&str> = optimized
        .nodes
        .iter()
        .filter(|n| n.op().name() == "OptMatMulPack")
        .filter(|n| {
            n.inputs
                .iter()
                .any(|i| optimized.node(i.node).op().name() == "Const")
        })
        .map(|n| n.name.as_str())
        .collect();
    assert!(
        packed_per_run.is_empty(),
        "a weight is packed on every run by {packed_per_run:?}"
    );
    Ok(())
}

/// A tiny Llama 256 wide (one K-quant super-block per row) with projections in every
/// K-quant and Q5 format and a Q6_K tied embedding.
fn k_quant_llama() -> Result<LlamaWeights> {
    let mut config = tiny_llama_config();
    (config.hidden_size, config.intermediate_size) = (256, 512);
    let mut weights = quantize_llama(&random_llama(&config, 21), GgmlType::Q4K, GgmlType::Q6K)?;
    for (name, kind) in [
        ("model.layers.0.self_attn.k_proj.weight", GgmlType::Q5K),
        ("model.layers.0.mlp.down_proj.weight", GgmlType::Q6K),
        ("model.layers.1.self_attn.v_proj.weight", GgmlType::Q5_0),
        ("model.layers.1.mlp.up_proj.weight", GgmlType::Q5_1),
    ] {
        let w = weights.tensors.get_mut(name).context(name)?;
        w.data = WeightData::quantize(&w.dequantize()?, kind)?;
    }
    Ok(weights)
}

#[test]
fn ggml_export_keeps_k_quant_and_q5_blocks_as_stored_and_matches_the_reference() -> Result<()> {
    let weights = k_quant_llama()?;
    let model = to_model_proto(&weights, WeightFormat::Ggml)?;
    let mut types: Vec<i64> = model
        .graph
        .iter()
        .flat_map(|g| &g.node)
        .filter(|n| n.op_type == ggml_op::OP_TYPE)
        .flat_map(|n| n.attribute.iter().filter(|a| a.name == "ggml_type"))
        .map(|a| a.i)
        .collect();
    types.sort_unstable();
    types.dedup();
    // Q5_0, Q5_1, Q4_K, Q5_K, Q6_K (the tied head is one Q6_K product).
    assert_eq!(types, [6, 7, 12, 13, 14]);
    check_against_dequantized_reference(&weights, WeightFormat::Ggml, INT8_ACTIVATION_TOLERANCE)?;
    // Q4 keeps only the formats it decomposes; the rest is exact f32.
    check_against_dequantized_reference(&weights, WeightFormat::Q4, 1e-3)
}

#[test]
fn large_tensors_go_to_the_weights_file_page_aligned_and_the_graph_keeps_the_rest() -> Result<()> {
    let weights = random_tiny_llama(7);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model.onnx");
    write_onnx(&weights, WeightFormat::F32, &path)?;
    let data_len = std::fs::metadata(weights_file(&path))?.len();
    let graph = ModelProto::decode(&std::fs::read(&path)?[..])?
        .graph
        .context("no graph")?;
    let mut moved = 0;
    for t in &graph.initializer {
        let entry = |key: &str| {
            t.external_data
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.value.clone())
        };
        match entry("offset") {
            None => assert!(t.raw_data.len() < EXTERNAL_MIN_BYTES, "{} stayed", t.name),
            Some(offset) => {
                assert!(t.raw_data.is_empty(), "{} is written twice", t.name);
                assert_eq!(entry("location").as_deref(), Some("model.onnx.data"));
                let offset: u64 = offset.parse()?;
                let length: u64 = entry("length").context("no length")?.parse()?;
                assert_eq!(offset % EXTERNAL_ALIGN, 0, "{} is not page-aligned", t.name);
                assert!(offset + length <= data_len, "{} runs past the file", t.name);
                moved += 1;
            }
        }
    }
    assert!(moved > 0, "the tiny model's f32 embedding is over 64 KiB");
    // Writing a graph without large tensors to the same place leaves no stale weights file.
    write_onnx(
        &quantize_llama(&weights, GgmlType::Q4_0, GgmlType::Q4_0)?,
        WeightFormat::Ggml,
        &path,
    )?;
    assert!(!weights_file(&path).exists());
    Ok(())
}

#[test]
fn a_ggml_export_gathers_its_embedding_from_the_table_the_tied_head_multiplies() -> Result<()> {
    for embed in [GgmlType::Q8_0, GgmlType::Q4_1, GgmlType::Q6K] {
        let mut config = tiny_llama_config();
        if embed == GgmlType::Q6K {
            // K-quants come in blocks of 256 values.
            config.hidden_size = 256;
            config.intermediate_size = 512;
        }
        let projections = if embed == GgmlType::Q6K {
            GgmlType::Q4K
        } else {
            GgmlType::Q4_0
        };
        let weights = quantize_llama(&random_llama(&config, 9), projections, embed)?;
        let graph = to_model_proto(&weights, WeightFormat::Ggml)?
            .graph
            .context("no graph")?;
        let table = "model.embed_tokens.weight.ggml_blocks";
        assert_eq!(
            graph.initializer.iter().filter(|t| t.name == table).count(),
            1
        );
        let readers: Vec<&str> = graph
            .node
            .iter()
            .filter(|n| n.input.iter().any(|i| i == table))
            .map(|n| n.op_type.as_str())
            .collect();
        assert_eq!(
            readers,
            [ggml_op::GATHER_OP_TYPE, ggml_op::OP_TYPE],
            "{embed:?}"
        );
    }
    Ok(())
}
