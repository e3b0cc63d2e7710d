//! The Llama-family model description shared by the GGUF importer, the ONNX writer and the
//! tiny test-model generator: hyper-parameters plus named weight tensors in Hugging Face
//! naming and layout (`[out_features, in_features]` for projections, rows already un-permuted
//! from llama.cpp's RoPE order).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::quant::{self, GgmlType, QuantError};

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

/// Storage of one weight tensor. Quantized forms keep the GGUF blocks verbatim (rows are
/// whole blocks) so that an export can stay exact or multiply them as stored.
#[derive(Clone, Debug, PartialEq)]
pub enum WeightData {
    /// Plain little-endian f32 values, row-major.
    F32(Vec<f32>),
    /// ggml Q4_0 blocks (per 32 values: f16 scale `d`, 16 bytes of nibbles; w = d·(q − 8)).
    Q4_0(Vec<u8>),
    /// ggml Q4_1 blocks (per 32 values: f16 `d`, f16 `m`, 16 bytes of nibbles; w = d·q + m).
    Q4_1(Vec<u8>),
    /// ggml Q5_0 blocks (per 32 values: f16 `d`, 4 bytes of fifth bits, 16 bytes of nibbles;
    /// w = d·(q − 16)).
    Q5_0(Vec<u8>),
    /// ggml Q5_1 blocks (per 32 values: f16 `d`, f16 `m`, fifth bits, nibbles; w = d·q + m).
    Q5_1(Vec<u8>),
    /// ggml Q8_0 blocks (per 32 values: f16 scale `d`, 32 signed bytes; w = d·q).
    Q8_0(Vec<u8>),
    /// ggml Q4_K super-blocks (256 values in 8 sub-blocks with 6-bit scales and mins).
    Q4K(Vec<u8>),
    /// ggml Q5_K super-blocks (as Q4_K with a fifth bit per value).
    Q5K(Vec<u8>),
    /// ggml Q6_K super-blocks (256 values in 16 sub-blocks with 8-bit scales).
    Q6K(Vec<u8>),
}

impl WeightData {
    /// The ggml storage type and the stored block bytes; `None` for f32.
    pub fn blocks(&self) -> Option<(GgmlType, &[u8])> {
        match self {
            Self::F32(_) => None,
            Self::Q4_0(b) => Some((GgmlType::Q4_0, b)),
            Self::Q4_1(b) => Some((GgmlType::Q4_1, b)),
            Self::Q5_0(b) => Some((GgmlType::Q5_0, b)),
            Self::Q5_1(b) => Some((GgmlType::Q5_1, b)),
            Self::Q8_0(b) => Some((GgmlType::Q8_0, b)),
            Self::Q4K(b) => Some((GgmlType::Q4K, b)),
            Self::Q5K(b) => Some((GgmlType::Q5K, b)),
            Self::Q6K(b) => Some((GgmlType::Q6K, b)),
        }
    }

    /// Block bytes of `kind` kept verbatim; `None` for a type this description cannot hold.
    pub fn from_blocks(kind: GgmlType, bytes: Vec<u8>) -> Option<Self> {
        Some(match kind {
            GgmlType::Q4_0 => Self::Q4_0(bytes),
            GgmlType::Q4_1 => Self::Q4_1(bytes),
            GgmlType::Q5_0 => Self::Q5_0(bytes),
            GgmlType::Q5_1 => Self::Q5_1(bytes),
            GgmlType::Q8_0 => Self::Q8_0(bytes),
            GgmlType::Q4K => Self::Q4K(bytes),
            GgmlType::Q5K => Self::Q5K(bytes),
            GgmlType::Q6K => Self::Q6K(bytes),
            _ => return None,
        })
    }

    /// `values` quantized into `kind` blocks with ggml's reference rounding.
    pub fn quantize(values: &[f32], kind: GgmlType) -> Result<Self, QuantError> {
        let bytes = quant::quantize(kind, values)?;
        Self::from_blocks(kind, bytes).ok_or(QuantError::NoEncoder { kind })
    }
}

/// One named tensor: shape in Hugging Face order (row-major, outermost first).
#[derive(Clone, Debug, PartialEq)]
pub struct Weight {
    /// Dimensions, outermost first, e.g. `[out_features, in_features]`.
    pub shape: Vec<usize>,
    /// The values.
    pub data: WeightData,
}

impl Weight {
    /// All values as f32, exactly as ggml dequantizes them.
    pub fn dequantize(&self) -> Result<Vec<f32>, QuantError> {
        let values: usize = self.shape.iter().product();
        if let WeightData::F32(v) = &self.data {
            if v.len() != values {
                return Err(QuantError::LengthMismatch {
                    kind: GgmlType::F32,
                    expected_bytes: values.saturating_mul(4),
                    actual_bytes: v.len().saturating_mul(4),
                });
            }
            return Ok(v.clone());
        }
        // Every other storage is ggml blocks.
        let (kind, bytes) = self.data.blocks().ok_or(QuantError::NoDecoder {
            kind: GgmlType::F32,
        })?;
        quant::dequantize(kind, bytes, values)
    }
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
