//! The Llama-family model description shared by the GGUF importer, the ONNX writer and the
//! tiny test-model generator: hyper-parameters plus named weight tensors in Hugging Face
//! naming and layout (`[out_features, in_features]` for projections, rows already un-permuted
//! from llama.cpp's RoPE order).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Hyper-parameters of a decoder-only Llama model, named as in Hugging Face `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Number of rows of the embedding table.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's gate/up projections.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when smaller than `num_attention_heads`).
    pub num_key_value_heads: usize,
    /// Context length the model was trained for, in tokens.
    pub max_position_embeddings: usize,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f32,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// Whether `lm_head` reuses the embedding table.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token id.
    pub bos_token_id: u32,
    /// End-of-sequence token id (generation stops on it).
    pub eos_token_id: u32,
}

impl LlamaConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Storage of one weight tensor. Quantized forms keep the GGUF blocks verbatim so that an
/// export can stay exact.
#[derive(Clone, Debug, PartialEq)]
pub enum WeightData {
    /// Plain little-endian f32 values, row-major.
    F32(Vec<f32>),
    /// ggml Q4_0 blocks (per 32 values: f16 scale `d`, 16 bytes of nibbles; w = d·(q − 8)).
    Q4_0(Vec<u8>),
    /// ggml Q4_1 blocks (per 32 values: f16 `d`, f16 `m`, 16 bytes of nibbles; w = d·q + m).
    Q4_1(Vec<u8>),
    /// ggml Q8_0 blocks (per 32 values: f16 scale `d`, 32 signed bytes; w = d·q).
    Q8_0(Vec<u8>),
}

/// One named tensor: shape in Hugging Face order (row-major, outermost first).
#[derive(Clone, Debug, PartialEq)]
pub struct Weight {
    /// Dimensions, outermost first, e.g. `[out_features, in_features]`.
    pub shape: Vec<usize>,
    /// The values.
    pub data: WeightData,
}

/// A whole model: config plus weights under Hugging Face names:
/// `model.embed_tokens.weight`, `model.layers.{i}.input_layernorm.weight`,
/// `model.layers.{i}.self_attn.{q,k,v,o}_proj.weight`,
/// `model.layers.{i}.post_attention_layernorm.weight`,
/// `model.layers.{i}.mlp.{gate,up,down}_proj.weight`, `model.norm.weight`, and
/// `lm_head.weight` unless `tie_word_embeddings`.
#[derive(Clone, Debug)]
pub struct LlamaWeights {
    /// Hyper-parameters.
    pub config: LlamaConfig,
    /// Tensors by Hugging Face name.
    pub tensors: BTreeMap<String, Weight>,
}
