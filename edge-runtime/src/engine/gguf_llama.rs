//! The Llama mapping of a GGUF file, apart from the container reader ([`super::gguf`]):
//! hyper-parameters from the `llama.*` keys, ggml tensor names to Hugging Face names, `[out,
//! in]` shapes, and q/k rows restored from llama.cpp's RoPE order, onto the shared
//! [`LlamaWeights`] description. Block-quantized tensors the kernels can multiply keep their
//! stored bytes; the rest is decoded to exact f32. Nothing here imports tract.

use std::collections::BTreeMap;
use std::path::Path;

use thiserror::Error;

use super::gguf::{GgufError, GgufFile, Metadata, TensorInfo};
use super::kernels::BlockKind;
use super::llama::{LlamaConfig, LlamaWeights, Weight, WeightData};
use super::quant::GgmlType;

#[cfg(test)]
mod tests;

/// Tensors every Llama layer has (two norms, four attention and three MLP projections).
const TENSORS_PER_LAYER: usize = 9;

/// Largest value accepted for each Llama hyper-parameter, with the GGUF key it comes from:
/// far above any model this runtime can run, and low enough that what is sized from them
/// before the tensors are checked stays small.
const HYPER_PARAMETER_LIMITS: [(&str, usize); 7] = [
    ("llama.vocab_size", 1 << 22),
    ("llama.embedding_length", 1 << 16),
    ("llama.feed_forward_length", 1 << 18),
    ("llama.block_count", 1 << 10),
    ("llama.attention.head_count", 1 << 10),
    ("llama.attention.head_count_kv", 1 << 10),
    ("llama.context_length", 1 << 22),
];

/// Failure to map a GGUF file onto a Llama model.
#[derive(Debug, Error)]
pub enum LlamaGgufError {
    /// The file itself could not be read or a key had the wrong type.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// `general.architecture` is not one this importer handles.
    #[error("unsupported model architecture {found:?}: only \"llama\" can be imported")]
    UnsupportedArchitecture {
        /// The architecture named in the file.
        found: String,
    },
    /// A tensor the model requires is absent.
    #[error("tensor {name:?} is missing")]
    MissingTensor {
        /// Tensor name (GGUF naming).
        name: String,
    },
    /// A tensor the Llama architecture does not have.
    #[error("tensor {name:?} is not part of a plain Llama model")]
    UnexpectedTensor {
        /// Tensor name (GGUF naming).
        name: String,
    },
    /// A tensor whose shape disagrees with the hyper-parameters.
    #[error("tensor {name:?} has shape {found:?}, hyper-parameters require {expected:?}")]
    ShapeMismatch {
        /// Tensor name (GGUF naming).
        name: String,
        /// Shape the config implies (Hugging Face order).
        expected: Vec<usize>,
        /// Shape in the file (Hugging Face order).
        found: Vec<usize>,
    },
    /// Hyper-parameters that are inconsistent or outside what the runtime implements.
    #[error("invalid or unsupported hyper-parameters: {0}")]
    InvalidConfig(String),
}

/// The Llama mapping of an open GGUF file (inherent to the reader's type so that callers
/// write `file.load_llama()`; the reader itself knows nothing of Llama).
impl GgufFile {
    /// Builds the Llama hyper-parameters from the `llama.*` and `tokenizer.ggml.*` keys.
    /// Fails with [`LlamaGgufError::UnsupportedArchitecture`] unless `general.architecture` is
    /// `llama`. `tie_word_embeddings` is true when the file has no `output.weight`.
    pub fn llama_config(&self) -> Result<LlamaConfig, LlamaGgufError> {
        let md = self.metadata();
        let arch = md.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(LlamaGgufError::UnsupportedArchitecture {
                found: arch.to_owned(),
            });
        }
        let vocab_size = if md.get("llama.vocab_size").is_some() {
            md.get_usize("llama.vocab_size")?
        } else {
            md.get_str_array("tokenizer.ggml.tokens")
                .map_err(|e| match e {
                    GgufError::MissingKey { .. } => GgufError::MissingKey {
                        key: "llama.vocab_size (or tokenizer.ggml.tokens)".to_owned(),
                    },
                    other => other,
                })?
                .len()
        };
        let num_attention_heads = md.get_usize("llama.attention.head_count")?;
        let num_key_value_heads = if md.get("llama.attention.head_count_kv").is_some() {
            md.get_usize("llama.attention.head_count_kv")?
        } else {
            num_attention_heads
        };
        let rope_theta = if md.get("llama.rope.freq_base").is_some() {
            md.get_f32("llama.rope.freq_base")?
        } else {
            10_000.0
        };
        let config = LlamaConfig {
            vocab_size,
            hidden_size: md.get_usize("llama.embedding_length")?,
            intermediate_size: md.get_usize("llama.feed_forward_length")?,
            num_hidden_layers: md.get_usize("llama.block_count")?,
            num_attention_heads,
            num_key_value_heads,
            max_position_embeddings: md.get_usize("llama.context_length")?,
            rms_norm_eps: md.get_f32("llama.attention.layer_norm_rms_epsilon")?,
            rope_theta,
            tie_word_embeddings: self.tensor("output.weight").is_none(),
            bos_token_id: md.get_u32("tokenizer.ggml.bos_token_id")?,
            eos_token_id: md.get_u32("tokenizer.ggml.eos_token_id")?,
        };
        validate_config(&config, md)?;
        let needed = config.num_hidden_layers.saturating_mul(TENSORS_PER_LAYER);
        if needed > self.tensors().len() {
            return Err(LlamaGgufError::InvalidConfig(format!(
                "llama.block_count {} needs {needed} layer tensors; the file has {} tensors",
                config.num_hidden_layers,
                self.tensors().len()
            )));
        }
        Ok(config)
    }

    /// Reads every tensor into the shared Llama description (see [`load_llama`]).
    pub fn load_llama(&self) -> Result<LlamaWeights, LlamaGgufError> {
        let config = self.llama_config()?;
        let expected = expected_shapes(&config);
        let mut plan = Vec::with_capacity(self.tensors().len());
        for info in self.tensors() {
            let (hf_name, rope) = hf_tensor_name(&info.name)
                .filter(|(hf, _)| expected.contains_key(hf))
                .ok_or_else(|| LlamaGgufError::UnexpectedTensor {
                    name: info.name.clone(),
                })?;
            let found = info.hf_shape()?;
            if let Some(want) = expected.get(&hf_name)
                && *want != found
            {
                return Err(LlamaGgufError::ShapeMismatch {
                    name: info.name.clone(),
                    expected: want.clone(),
                    found,
                });
            }
            plan.push((info, hf_name, rope, found));
        }
        for hf_name in expected.keys() {
            let optional = hf_name == "lm_head.weight";
            if !optional && !plan.iter().any(|(_, name, _, _)| name == hf_name) {
                return Err(LlamaGgufError::MissingTensor {
                    name: ggml_tensor_name(hf_name),
                });
            }
        }
        let mut tensors = BTreeMap::new();
        for (info, hf_name, rope, shape) in plan {
            let mut data = self.weight_data(info)?;
            let n_rows = shape.first().copied().unwrap_or(1);
            match rope {
                RopeRows::None => {}
                RopeRows::Query => {
                    data = unpermute_weight(data, n_rows, config.num_attention_heads, &info.name)?
                }
                RopeRows::Key => {
                    data = unpermute_weight(data, n_rows, config.num_key_value_heads, &info.name)?
                }
            }
            tensors.insert(hf_name, Weight { shape, data });
        }
        Ok(LlamaWeights { config, tensors })
    }

    /// One tensor's storage: blocks of every format the integer-dot kernels multiply (Q4_0,
    /// Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) verbatim; F32, F16 and BF16 decoded to f32;
    /// anything else is unsupported.
    fn weight_data(&self, info: &TensorInfo) -> Result<WeightData, LlamaGgufError> {
        let unsupported = || {
            LlamaGgufError::from(GgufError::UnsupportedTensorType {
                name: info.name.clone(),
                type_id: info.type_id,
            })
        };
        let kind = info.ggml_type().ok_or_else(unsupported)?;
        Ok(match kind {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                WeightData::F32(self.read_tensor_f32(info)?)
            }
            _ if BlockKind::from_ggml(kind).is_ok() => {
                WeightData::from_blocks(kind, self.read_tensor_bytes(info)?)
                    .ok_or_else(unsupported)?
            }
            _ => return Err(unsupported()),
        })
    }
}

/// Opens a GGUF file and imports it as a Llama model: checks `general.architecture ==
/// "llama"`, builds [`LlamaConfig`], renames tensors to Hugging Face names, reverses dims to
/// `[out, in]`, and restores q_proj/k_proj rows from llama.cpp's RoPE order. Q4_0, Q4_1, Q5_0,
/// Q5_1, Q8_0, Q4_K, Q5_K and Q6_K tensors keep their blocks; F16 and BF16 become exact f32.
pub fn load_llama(path: impl AsRef<Path>) -> Result<LlamaWeights, LlamaGgufError> {
    GgufFile::open(path)?.load_llama()
}

/// Which RoPE row permutation a tensor carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeRows {
    /// Rows are in Hugging Face order already.
    None,
    /// q_proj rows, permuted per query head.
    Query,
    /// k_proj rows, permuted per key/value head.
    Key,
}

/// The Hugging Face name for a ggml Llama tensor name, with the RoPE permutation its rows
/// carry; `None` for names outside the Llama mapping.
pub fn hf_tensor_name(ggml_name: &str) -> Option<(String, RopeRows)> {
    let global = match ggml_name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = global {
        return Some((name.to_owned(), RopeRows::None));
    }
    let rest = ggml_name.strip_prefix("blk.")?;
    let (index, tail) = rest.split_once('.')?;
    let canonical = !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
        && (index == "0" || !index.starts_with('0'));
    if !canonical {
        return None;
    }
    let layer: usize = index.parse().ok()?;
    let (hf, rope) = match tail {
        "attn_norm.weight" => ("input_layernorm.weight", RopeRows::None),
        "attn_q.weight" => ("self_attn.q_proj.weight", RopeRows::Query),
        "attn_k.weight" => ("self_attn.k_proj.weight", RopeRows::Key),
        "attn_v.weight" => ("self_attn.v_proj.weight", RopeRows::None),
        "attn_output.weight" => ("self_attn.o_proj.weight", RopeRows::None),
        "ffn_norm.weight" => ("post_attention_layernorm.weight", RopeRows::None),
        "ffn_gate.weight" => ("mlp.gate_proj.weight", RopeRows::None),
        "ffn_up.weight" => ("mlp.up_proj.weight", RopeRows::None),
        "ffn_down.weight" => ("mlp.down_proj.weight", RopeRows::None),
        _ => return None,
    };
    Some((format!("model.layers.{layer}.{hf}"), rope))
}

/// The ggml name for a Hugging Face Llama tensor name (inverse of [`hf_tensor_name`]), used
/// in messages; names outside the mapping are returned unchanged.
fn ggml_tensor_name(hf_name: &str) -> String {
    const PAIRS: [(&str, &str); 9] = [
        ("input_layernorm.weight", "attn_norm.weight"),
        ("self_attn.q_proj.weight", "attn_q.weight"),
        ("self_attn.k_proj.weight", "attn_k.weight"),
        ("self_attn.v_proj.weight", "attn_v.weight"),
        ("self_attn.o_proj.weight", "attn_output.weight"),
        ("post_attention_layernorm.weight", "ffn_norm.weight"),
        ("mlp.gate_proj.weight", "ffn_gate.weight"),
        ("mlp.up_proj.weight", "ffn_up.weight"),
        ("mlp.down_proj.weight", "ffn_down.weight"),
    ];
    match hf_name {
        "model.embed_tokens.weight" => return "token_embd.weight".to_owned(),
        "model.norm.weight" => return "output_norm.weight".to_owned(),
        "lm_head.weight" => return "output.weight".to_owned(),
        _ => {}
    }
    if let Some((layer, tail)) = hf_name
        .strip_prefix("model.layers.")
        .and_then(|r| r.split_once('.'))
        && let Some((_, ggml)) = PAIRS.iter().find(|(hf, _)| *hf == tail)
    {
        return format!("blk.{layer}.{ggml}");
    }
    hf_name.to_owned()
}

/// Every tensor a Llama model with `config` has, with its Hugging Face shape. `lm_head.weight`
/// is listed even when tied (the loader treats it as optional).
fn expected_shapes(config: &LlamaConfig) -> BTreeMap<String, Vec<usize>> {
    let hidden = config.hidden_size;
    let q_rows = config.num_attention_heads * config.head_dim();
    let kv_rows = config.num_key_value_heads * config.head_dim();
    let inter = config.intermediate_size;
    let mut shapes = BTreeMap::new();
    shapes.insert(
        "model.embed_tokens.weight".to_owned(),
        vec![config.vocab_size, hidden],
    );
    shapes.insert("model.norm.weight".to_owned(), vec![hidden]);
    shapes.insert("lm_head.weight".to_owned(), vec![config.vocab_size, hidden]);
    for i in 0..config.num_hidden_layers {
        let layer = |tail: &str| format!("model.layers.{i}.{tail}");
        shapes.insert(layer("input_layernorm.weight"), vec![hidden]);
        shapes.insert(layer("post_attention_layernorm.weight"), vec![hidden]);
        shapes.insert(layer("self_attn.q_proj.weight"), vec![q_rows, hidden]);
        shapes.insert(layer("self_attn.k_proj.weight"), vec![kv_rows, hidden]);
        shapes.insert(layer("self_attn.v_proj.weight"), vec![kv_rows, hidden]);
        shapes.insert(layer("self_attn.o_proj.weight"), vec![hidden, q_rows]);
        shapes.insert(layer("mlp.gate_proj.weight"), vec![inter, hidden]);
        shapes.insert(layer("mlp.up_proj.weight"), vec![inter, hidden]);
        shapes.insert(layer("mlp.down_proj.weight"), vec![hidden, inter]);
    }
    shapes
}

/// Rejects hyper-parameters the runtime's Llama graph cannot represent.
fn validate_config(c: &LlamaConfig, md: &Metadata) -> Result<(), LlamaGgufError> {
    let bad = |msg: String| Err(LlamaGgufError::InvalidConfig(msg));
    for (name, v) in [
        ("vocab_size", c.vocab_size),
        ("hidden_size", c.hidden_size),
        ("intermediate_size", c.intermediate_size),
        ("num_hidden_layers", c.num_hidden_layers),
        ("num_attention_heads", c.num_attention_heads),
        ("num_key_value_heads", c.num_key_value_heads),
    ] {
        if v == 0 {
            return bad(format!("{name} is 0"));
        }
    }
    let values = [
        c.vocab_size,
        c.hidden_size,
        c.intermediate_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.max_position_embeddings,
    ];
    for ((key, limit), value) in HYPER_PARAMETER_LIMITS.iter().zip(values) {
        if value > *limit {
            return bad(format!("{key} is {value}; at most {limit} is accepted"));
        }
    }
    if !c.hidden_size.is_multiple_of(c.num_attention_heads) {
        return bad(format!(
            "hidden_size {} is not a multiple of {} heads",
            c.hidden_size, c.num_attention_heads
        ));
    }
    if !c.num_attention_heads.is_multiple_of(c.num_key_value_heads) {
        return bad(format!(
            "{} query heads are not a multiple of {} key/value heads",
            c.num_attention_heads, c.num_key_value_heads
        ));
    }
    if !c.head_dim().is_multiple_of(2) {
        return bad(format!(
            "head_dim {} is odd; RoPE needs pairs",
            c.head_dim()
        ));
    }
    if md.get("llama.rope.dimension_count").is_some() {
        let rot = md.get_usize("llama.rope.dimension_count")?;
        if rot != c.head_dim() {
            return bad(format!(
                "partial rotary embedding ({rot} of {} dims)",
                c.head_dim()
            ));
        }
    }
    if md.get("llama.rope.scaling.type").is_some() {
        let kind = md.get_str("llama.rope.scaling.type")?;
        if kind != "none" {
            return bad(format!("RoPE scaling {kind:?}"));
        }
    }
    if md.get("llama.expert_count").is_some() && md.get_u64("llama.expert_count")? > 0 {
        return bad("mixture-of-experts layers".to_owned());
    }
    if !(c.rms_norm_eps.is_finite() && c.rms_norm_eps > 0.0) {
        return bad(format!("rms_norm_eps {}", c.rms_norm_eps));
    }
    if !(c.rope_theta.is_finite() && c.rope_theta > 0.0) {
        return bad(format!("rope_theta {}", c.rope_theta));
    }
    Ok(())
}

/// Applies [`unpermute_rope_rows`] to whichever storage a tensor has; quantized rows are
/// whole blocks, so they move bytewise.
fn unpermute_weight(
    data: WeightData,
    n_rows: usize,
    n_head: usize,
    name: &str,
) -> Result<WeightData, LlamaGgufError> {
    let fail = || {
        LlamaGgufError::from(GgufError::BadTensorShape {
            name: name.to_owned(),
            reason: format!("{n_rows} rows cannot be split into {n_head} RoPE heads of even size"),
        })
    };
    if let WeightData::F32(v) = &data {
        return Ok(WeightData::F32(
            unpermute_rope_rows(v, n_rows, n_head).ok_or_else(fail)?,
        ));
    }
    // Every other storage is whole blocks per row: rows move as bytes.
    let (kind, bytes) = data.blocks().ok_or_else(fail)?;
    let rows = unpermute_rope_rows(bytes, n_rows, n_head).ok_or_else(fail)?;
    WeightData::from_blocks(kind, rows).ok_or_else(fail)
}

/// Inverts llama.cpp's RoPE row permutation. Its converter reshaped the Hugging Face rows of
/// each head to `[2, head_dim / 2]` and swapped the two axes, so GGUF row
/// `h·head_dim + 2i + s` holds Hugging Face row `h·head_dim + s·head_dim/2 + i`.
/// `data` holds `n_rows` equal rows of any element type. `None` unless `n_rows` splits into
/// `n_head` heads of even size and `data` into `n_rows` rows.
pub fn unpermute_rope_rows<T: Copy>(data: &[T], n_rows: usize, n_head: usize) -> Option<Vec<T>> {
    if n_rows == 0
        || n_head == 0
        || !n_rows.is_multiple_of(n_head)
        || !data.len().is_multiple_of(n_rows)
    {
        return None;
    }
    let head_dim = n_rows / n_head;
    if !head_dim.is_multiple_of(2) {
        return None;
    }
    let half = head_dim / 2;
    let row_len = data.len() / n_rows;
    let rows: Vec<&[T]> = if row_len == 0 {
        vec![&[]; n_rows]
    } else {
        data.chunks_exact(row_len).collect()
    };
    let mut out = Vec::with_capacity(data.len());
    for hf_row in 0..n_rows {
        let (head, within) = (hf_row / head_dim, hf_row % head_dim);
        let (s, i) = (within / half, within % half);
        out.extend_from_slice(rows.get(head * head_dim + 2 * i + s)?);
    }
    Some(out)
}
