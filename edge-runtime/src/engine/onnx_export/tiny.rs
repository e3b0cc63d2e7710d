//! Deterministic random Llama models: a seeded generator over any config and the tiny config
//! of the tiny model (`import::write_tiny_model`), and, for tests (feature `test-util`),
//! re-quantization of a model into ggml blocks.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::engine::llama::{LlamaConfig, LlamaWeights, Weight, WeightData};
#[cfg(any(test, feature = "test-util"))]
use crate::engine::quant::GgmlType;

/// The tiny test configuration: 2 layers, hidden 64, 4 query heads over 2 KV heads,
/// intermediate 128, vocabulary 272, tied embeddings.
pub fn tiny_llama_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 272,
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        max_position_embeddings: 256,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        tie_word_embeddings: true,
        bos_token_id: 1,
        eos_token_id: 2,
    }
}

/// Standard normal samples (Box–Muller over the seeded generator).
fn normals(rng: &mut StdRng, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
            let u2: f32 = rng.random();
            std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}

/// A random f32 Llama of `config`, the same for the same `seed`.
///
/// Scales keep the forward pass lively rather than degenerate: projections draw from
/// N(0, 1/in_features) so attention scores and MLP activations are O(1), the embedding
/// from N(0, 0.25²) so tied logits spread over a few units, and norm weights from
/// N(1, 0.1²).
pub fn random_llama(config: &LlamaConfig, seed: u64) -> LlamaWeights {
    let mut rng = StdRng::seed_from_u64(seed);
    let (h, i, v) = (
        config.hidden_size,
        config.intermediate_size,
        config.vocab_size,
    );
    let kv = config.num_key_value_heads * config.head_dim();
    let q = config.num_attention_heads * config.head_dim();
    let mut tensors = BTreeMap::new();
    let mut add = |name: String, shape: Vec<usize>, values: Vec<f32>| {
        tensors.insert(
            name,
            Weight {
                shape,
                data: WeightData::F32(values),
            },
        );
    };
    let matrix = |rng: &mut StdRng, out: usize, inp: usize| {
        normals(rng, out * inp, 1.0 / (inp as f32).sqrt())
    };
    let norm =
        |rng: &mut StdRng, n: usize| normals(rng, n, 0.1).into_iter().map(|x| 1.0 + x).collect();

    add(
        "model.embed_tokens.weight".into(),
        vec![v, h],
        normals(&mut rng, v * h, 0.25),
    );
    for l in 0..config.num_hidden_layers {
        let p = format!("model.layers.{l}");
        add(
            format!("{p}.input_layernorm.weight"),
            vec![h],
            norm(&mut rng, h),
        );
        add(
            format!("{p}.self_attn.q_proj.weight"),
            vec![q, h],
            matrix(&mut rng, q, h),
        );
        add(
            format!("{p}.self_attn.k_proj.weight"),
            vec![kv, h],
            matrix(&mut rng, kv, h),
        );
        add(
            format!("{p}.self_attn.v_proj.weight"),
            vec![kv, h],
            matrix(&mut rng, kv, h),
        );
        add(
            format!("{p}.self_attn.o_proj.weight"),
            vec![h, q],
            matrix(&mut rng, h, q),
        );
        add(
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            norm(&mut rng, h),
        );
        add(
            format!("{p}.mlp.gate_proj.weight"),
            vec![i, h],
            matrix(&mut rng, i, h),
        );
        add(
            format!("{p}.mlp.up_proj.weight"),
            vec![i, h],
            matrix(&mut rng, i, h),
        );
        add(
            format!("{p}.mlp.down_proj.weight"),
            vec![h, i],
            matrix(&mut rng, h, i),
        );
    }
    add("model.norm.weight".into(), vec![h], norm(&mut rng, h));
    if !config.tie_word_embeddings {
        add("lm_head.weight".into(), vec![v, h], matrix(&mut rng, v, h));
    }
    LlamaWeights {
        config: config.clone(),
        tensors,
    }
}

/// The tiny test model ([`tiny_llama_config`]) with weights drawn from `seed`.
pub fn random_tiny_llama(seed: u64) -> LlamaWeights {
    random_llama(&tiny_llama_config(), seed)
}

/// A copy of `weights` whose projections (and an untied `lm_head`) are stored as
/// `projections` blocks and whose embedding table is stored as `embedding` blocks; norms
/// stay f32. Tensors must be f32 with a last dimension that is a multiple of 32.
#[cfg(any(test, feature = "test-util"))]
pub fn quantize_llama(
    weights: &LlamaWeights,
    projections: GgmlType,
    embedding: GgmlType,
) -> anyhow::Result<LlamaWeights> {
    use anyhow::Context;
    let mut out = weights.clone();
    for (name, w) in out.tensors.iter_mut() {
        if w.shape.len() != 2 {
            continue;
        }
        let WeightData::F32(values) = &w.data else {
            continue;
        };
        let kind = if name == "model.embed_tokens.weight" {
            embedding
        } else {
            projections
        };
        w.data =
            WeightData::quantize(values, kind).with_context(|| format!("quantizing {name}"))?;
    }
    Ok(out)
}
