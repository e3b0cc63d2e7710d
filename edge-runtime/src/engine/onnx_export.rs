//! Writes a [`LlamaWeights`] model as an ONNX decoder graph in Hugging Face Optimum's
//! layout (`input_ids`, `attention_mask`, `position_ids`, `past_key_values.{i}.key|value`
//! in; `logits`, `present.{i}.key|value` out) that tract loads, optimises and runs.
//!
//! The graph spells Llama out in plain ONNX operators chosen so that tract's decluttering
//! recognises them: `SimplifiedLayerNormalization` (RMSNorm), RoPE as
//! `x·cos + rotate_half(x)·sin`, a scaled, masked f32 softmax, past K/V concatenated
//! directly from the graph inputs, and SwiGLU. Grouped-query attention never copies K/V
//! per query head: queries are grouped as `[batch, kv_heads, group, seq, head_dim]` and
//! broadcast against `[batch, kv_heads, 1, total, head_dim]` keys and values. Projections
//! that read the same activation (q/k/v, gate/up) are one product over their stacked rows,
//! split afterwards, and every product owns its weight initializer (f32 products read
//! `W^T`, so a tied `lm_head` never duplicates the embedding table's bytes, which tract
//! would merge into one constant) so that tract pre-packs all of them.
//! Under tract's `transformers_detect_all` the graph becomes RmsNorm, ApplyRope,
//! ScaledMaskedSoftmax and DynKeyValueCache ops, and stays exact in that stateful form.
//!
//! [`WeightFormat::Q4`] keeps every ggml block exact: Q4_0 projections become
//! `com.microsoft.MatMulNBits` (4-bit, block 32, zero point 8); Q4_1 becomes the same plus
//! a block-sum correction (`d·(q−8) + (m+8d)`); Q8_0 becomes two 4-bit halves plus a
//! block-sum correction (`16d·(hi−8) + d·(lo−8) + 8d`), and embedding tables are gathered
//! without widening them: Q4_0/Q4_1 through `GatherBlockQuantized` (plus a gathered offset
//! for Q4_1), Q8_0 as an int8 table with per-block scales applied after the gather.
//! [`WeightFormat::Ggml`] instead writes each block-quantized projection as one
//! [`GgmlMatMul`](crate::engine::ggml_op) node of domain `org.thermo.ggml` whose weight
//! initializer holds the GGUF block bytes unchanged (the engine multiplies them with
//! int8-quantized activations), and gathers the embedding with `GgmlGather` from the same
//! initializer a tied head multiplies, so the table is stored once. f32 tensors stay f32 in
//! both formats, so neither loses anything against the source blocks.
//!
//! Tensors of 64 KiB or more go to a weights file beside the graph ([`weights_file`], ONNX
//! external data), so that loading reads each one once into its own buffer.
//!
//! Symbolic dimensions are `batch`, `sequence_length` and `past_sequence_length`.
//! Nothing here runs a model; the engine loads the file like any Optimum export.

pub mod bert;
mod blocks;
mod proto;
#[cfg(test)]
mod tests;
pub mod tiny;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use prost::Message;
use tract_onnx::pb::tensor_proto::{DataLocation, DataType};
use tract_onnx::pb::{ModelProto, OperatorSetIdProto, StringStringEntryProto};

#[cfg(any(test, feature = "test-util"))]
pub use tiny::quantize_llama;
pub use tiny::{random_llama, random_tiny_llama, tiny_llama_config};

use self::blocks::{Decomposed, QK, decompose, q8_0_codes};
use self::proto::{Dim, GraphBuilder, MS_DOMAIN, attr_float, attr_int, attr_ints, value_info};
use crate::engine::ggml_op;
use crate::engine::kernels::{BlockKind, QuantMatrix};
use crate::engine::llama::{LlamaConfig, LlamaWeights, Weight, WeightData};

/// How the weights are stored in the written graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// Every tensor dequantized to f32: the reference graph, four bytes per weight.
    F32,
    /// ggml blocks kept exact in 4-bit `MatMulNBits` / `GatherBlockQuantized` form (Q8_0 as
    /// two 4-bit halves, f32 tensors as f32): the compact graph, same values as the source.
    Q4,
    /// ggml blocks kept as stored and multiplied by the engine's integer-dot kernels: each
    /// projection (the tied Q8_0 head included) is one `GgmlMatMul` node over the GGUF block
    /// bytes, with activations quantized per block to int8 as llama.cpp does, so the values
    /// are close to the source's, not equal; embeddings and f32 tensors as in `Q4`.
    Ggml,
}

/// Default-domain operator set the graph is written against.
const OPSET: i64 = 17;
/// Largest ONNX file protobuf can describe.
const PROTOBUF_LIMIT_BYTES: usize = i32::MAX as usize;

const BATCH: &str = "batch";
const SEQ: &str = "sequence_length";
const PAST: &str = "past_sequence_length";
const TOTAL: &str = "past_sequence_length + sequence_length";

/// A low-rank side branch `y += scale · (x·Aᵀ)·Bᵀ` on one projection (LoRA):
/// `a` is `[rank, in]`, `b` is `[out, rank]`, both row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct LowRank {
    /// Rank.
    pub rank: usize,
    /// `[rank, in]` values.
    pub a: Vec<f32>,
    /// `[out, rank]` values.
    pub b: Vec<f32>,
    /// Scale applied to the branch's output.
    pub scale: f32,
}

/// Builds the ONNX model for `weights` in memory.
pub fn to_model_proto(weights: &LlamaWeights, format: WeightFormat) -> Result<ModelProto> {
    to_model_proto_with(weights, format, &BTreeMap::new())
}

/// Builds the ONNX model for `weights` with low-rank side branches on the projections
/// named (by their weight tensor) in `side`; the base weights stay as `format` stores them.
pub fn to_model_proto_with(
    weights: &LlamaWeights,
    format: WeightFormat,
    side: &BTreeMap<String, LowRank>,
) -> Result<ModelProto> {
    validate(weights)?;
    let mut writer = Writer {
        side,
        g: GraphBuilder::default(),
        weights,
        cfg: &weights.config,
        format,
        block_sums: HashMap::new(),
        f32_inits: HashSet::new(),
        ggml_tables: HashMap::new(),
    };
    let (inputs, outputs) = writer.build()?;
    let graph = tract_onnx::pb::GraphProto {
        node: writer.g.nodes,
        name: "llama".into(),
        initializer: writer.g.initializers,
        input: inputs,
        output: outputs,
        ..Default::default()
    };
    let config_json = serde_json::to_string(&weights.config).context("serialising the config")?;
    Ok(ModelProto {
        ir_version: 8,
        opset_import: vec![
            OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            },
            OperatorSetIdProto {
                domain: MS_DOMAIN.into(),
                version: 1,
            },
            OperatorSetIdProto {
                domain: ggml_op::DOMAIN.into(),
                version: 1,
            },
        ],
        producer_name: "thermo-adaptive-pipeline".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        metadata_props: vec![
            StringStringEntryProto {
                key: "llama_config".into(),
                value: config_json,
            },
            StringStringEntryProto {
                key: "weight_format".into(),
                value: format!("{format:?}"),
            },
        ],
        ..Default::default()
    })
}

/// Writes the ONNX model for `weights` to `path`, its large tensors to [`weights_file`]`(path)`.
pub fn write_onnx(weights: &LlamaWeights, format: WeightFormat, path: &Path) -> Result<()> {
    write_onnx_with(weights, format, &BTreeMap::new(), path)
}

/// Writes the ONNX model for `weights` with low-rank side branches (see
/// [`to_model_proto_with`]) to `path`, its large tensors to [`weights_file`]`(path)`.
pub fn write_onnx_with(
    weights: &LlamaWeights,
    format: WeightFormat,
    side: &BTreeMap<String, LowRank>,
    path: &Path,
) -> Result<()> {
    let mut model = to_model_proto_with(weights, format, side)?;
    let data = weights_file(path);
    move_tensors_out(&mut model, &data).with_context(|| format!("writing {}", data.display()))?;
    let len = model.encoded_len();
    ensure!(
        len <= PROTOBUF_LIMIT_BYTES,
        "the {format:?} graph would take {len} bytes, beyond protobuf's 2 GiB limit"
    );
    let bytes = model.encode_to_vec();
    drop(model);
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Initializers of at least this many bytes are written to the weights file.
const EXTERNAL_MIN_BYTES: usize = 1 << 16;
/// Where each tensor starts in the weights file: a page boundary.
const EXTERNAL_ALIGN: u64 = 4096;

/// The file beside the graph `path` that holds its large tensors (ONNX external data):
/// `model.onnx` → `model.onnx.data`. Loading reads each tensor from it once, into the
/// engine's own buffer, so a load never holds the weights twice.
pub fn weights_file(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".data");
    path.with_file_name(name)
}

/// Moves every initializer of [`EXTERNAL_MIN_BYTES`] or more into `data` (ONNX external
/// data, page-aligned), leaving the graph its names, shapes and where to read them; no
/// file when there is none.
fn move_tensors_out(model: &mut ModelProto, data: &Path) -> Result<()> {
    use std::io::Write;
    let Some(graph) = model.graph.as_mut() else {
        return Ok(());
    };
    let mut large = graph
        .initializer
        .iter_mut()
        .filter(|t| t.raw_data.len() >= EXTERNAL_MIN_BYTES)
        .peekable();
    if large.peek().is_none() {
        return match std::fs::remove_file(data) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        };
    }
    let location = data
        .file_name()
        .and_then(|n| n.to_str())
        .context("the weights file name is not UTF-8")?
        .to_string();
    let mut out = std::io::BufWriter::new(std::fs::File::create(data)?);
    let mut offset = 0u64;
    let entry = |key: &str, value: String| StringStringEntryProto {
        key: key.into(),
        value,
    };
    for t in large {
        let start = offset.next_multiple_of(EXTERNAL_ALIGN);
        out.write_all(&vec![0; (start - offset) as usize])?;
        let raw = std::mem::take(&mut t.raw_data);
        out.write_all(&raw)?;
        offset = start + raw.len() as u64;
        t.external_data = vec![
            entry("location", location.clone()),
            entry("offset", start.to_string()),
            entry("length", raw.len().to_string()),
        ];
        t.data_location = Some(DataLocation::External as i32);
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

/// Names of the tensors a Llama model must provide, with their `[out, in]` shapes.
fn expected_tensors(cfg: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let q = cfg.num_attention_heads * cfg.head_dim();
    let kv = cfg.num_key_value_heads * cfg.head_dim();
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.extend([
            (format!("{p}.input_layernorm.weight"), vec![h]),
            (format!("{p}.self_attn.q_proj.weight"), vec![q, h]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.o_proj.weight"), vec![h, q]),
            (format!("{p}.post_attention_layernorm.weight"), vec![h]),
            (format!("{p}.mlp.gate_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.up_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.down_proj.weight"), vec![h, i]),
        ]);
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![v, h]));
    }
    out
}

/// Checks the config and that every tensor is present with the shape the config implies.
fn validate(weights: &LlamaWeights) -> Result<()> {
    let cfg = &weights.config;
    ensure!(cfg.num_hidden_layers > 0, "the model has no layers");
    ensure!(
        cfg.num_attention_heads > 0 && cfg.hidden_size.is_multiple_of(cfg.num_attention_heads),
        "hidden_size {} is not a multiple of num_attention_heads {}",
        cfg.hidden_size,
        cfg.num_attention_heads
    );
    ensure!(
        cfg.num_key_value_heads > 0
            && cfg
                .num_attention_heads
                .is_multiple_of(cfg.num_key_value_heads),
        "num_attention_heads {} is not a multiple of num_key_value_heads {}",
        cfg.num_attention_heads,
        cfg.num_key_value_heads
    );
    ensure!(
        cfg.head_dim().is_multiple_of(2),
        "head_dim {} is odd: RoPE needs pairs",
        cfg.head_dim()
    );
    ensure!(
        cfg.rope_theta > 0.0,
        "rope_theta {} is not positive",
        cfg.rope_theta
    );
    for (name, shape) in expected_tensors(cfg) {
        let w = weights
            .tensors
            .get(&name)
            .with_context(|| format!("missing tensor {name}"))?;
        ensure!(
            w.shape == shape,
            "{name} has shape {:?}, the config implies {shape:?}",
            w.shape
        );
        if let WeightData::F32(v) = &w.data {
            ensure!(
                v.len() == shape.iter().product::<usize>(),
                "{name}: {} values for shape {shape:?}",
                v.len()
            );
        }
    }
    Ok(())
}

/// HF's RoPE inverse frequencies, `1 / theta^(2i / head_dim)`, computed in f32.
pub(crate) fn rope_inv_freq(cfg: &LlamaConfig) -> Vec<f32> {
    let hd = cfg.head_dim();
    (0..hd / 2)
        .map(|i| 1.0 / cfg.rope_theta.powf((2 * i) as f32 / hd as f32))
        .collect()
}

/// The block format `format` keeps `data` in, `None` when it is written as f32: `Ggml` keeps
/// every format the integer-dot kernels multiply, `Q4` the three that decompose into 4-bit
/// parts (Q4_0, Q4_1, Q8_0), `F32` none.
fn kept_kind(format: WeightFormat, data: &WeightData) -> Option<BlockKind> {
    let kind = BlockKind::from_ggml(data.blocks()?.0).ok()?;
    match format {
        WeightFormat::F32 => None,
        WeightFormat::Q4 => {
            matches!(kind, BlockKind::Q4_0 | BlockKind::Q4_1 | BlockKind::Q8_0).then_some(kind)
        }
        WeightFormat::Ggml => Some(kind),
    }
}

/// Stacks the decompositions of matrices sharing `in_features` row-wise, when all are
/// block-quantized the same way (same number of parts, offsets or none).
fn stack(decomposed: Vec<Option<Decomposed>>) -> Option<Decomposed> {
    let mut all = decomposed
        .into_iter()
        .collect::<Option<Vec<_>>>()?
        .into_iter();
    let mut acc = all.next()?;
    for d in all {
        if d.parts.len() != acc.parts.len() || d.offsets.is_some() != acc.offsets.is_some() {
            return None;
        }
        for (a, p) in acc.parts.iter_mut().zip(d.parts) {
            a.packed.extend(p.packed);
            a.scales.extend(p.scales);
        }
        if let (Some(a), Some(o)) = (acc.offsets.as_mut(), d.offsets) {
            a.extend(o);
        }
    }
    Some(acc)
}

/// How one quantized product over stacked weights is written.
enum Product {
    /// One `GgmlMatMul` over blocks of this format.
    Ggml(BlockKind),
    /// `MatMulNBits` parts plus block-sum corrections.
    Nbits(Decomposed),
}

struct Writer<'a> {
    /// Low-rank side branches by projection weight name.
    side: &'a BTreeMap<String, LowRank>,
    g: GraphBuilder,
    weights: &'a LlamaWeights,
    cfg: &'a LlamaConfig,
    format: WeightFormat,
    /// `[.., K/32]` block sums of an activation, by activation name.
    block_sums: HashMap<String, String>,
    /// f32 weight initializers already written, by tensor name (tied weights share one).
    f32_inits: HashSet<String>,
    /// ggml block initializers of single weights, by tensor name: a tied head multiplies
    /// the table the embedding gathers from.
    ggml_tables: HashMap<String, String>,
}

/// Per-forward tensors every layer reads.
struct Shared {
    /// RoPE tables for keys, `[batch, 1, seq, head_dim]`.
    cos4: String,
    sin4: String,
    /// RoPE tables for grouped queries, `[batch, 1, 1, seq, head_dim]`.
    cos5: String,
    sin5: String,
    /// Additive attention bias, `[batch, 1, 1, seq, total]`: 0 where a query may attend,
    /// f32::MIN where the key lies in its future or is padding.
    bias: String,
}

impl<'a> Writer<'a> {
    fn tensor(&self, name: &str) -> Result<&'a Weight> {
        self.weights
            .tensors
            .get(name)
            .with_context(|| format!("missing tensor {name}"))
    }

    fn build(
        &mut self,
    ) -> Result<(
        Vec<tract_onnx::pb::ValueInfoProto>,
        Vec<tract_onnx::pb::ValueInfoProto>,
    )> {
        let cfg = self.cfg;
        let (nkv, hd) = (cfg.num_key_value_heads, cfg.head_dim());
        let batch = Dim::Named(BATCH);
        let mut inputs = vec![
            value_info(
                "input_ids",
                DataType::Int64,
                &[batch.clone(), Dim::Named(SEQ)],
            ),
            value_info(
                "attention_mask",
                DataType::Int64,
                &[batch.clone(), Dim::Named(TOTAL)],
            ),
            value_info(
                "position_ids",
                DataType::Int64,
                &[batch.clone(), Dim::Named(SEQ)],
            ),
        ];
        let mut outputs = vec![value_info(
            "logits",
            DataType::Float,
            &[batch.clone(), Dim::Named(SEQ), Dim::Fixed(cfg.vocab_size)],
        )];
        for l in 0..cfg.num_hidden_layers {
            for kind in ["key", "value"] {
                let past = [
                    batch.clone(),
                    Dim::Fixed(nkv),
                    Dim::Named(PAST),
                    Dim::Fixed(hd),
                ];
                let present = [
                    batch.clone(),
                    Dim::Fixed(nkv),
                    Dim::Named(TOTAL),
                    Dim::Fixed(hd),
                ];
                inputs.push(value_info(
                    &format!("past_key_values.{l}.{kind}"),
                    DataType::Float,
                    &past,
                ));
                outputs.push(value_info(
                    &format!("present.{l}.{kind}"),
                    DataType::Float,
                    &present,
                ));
            }
        }

        let shared = self.shared("input_ids", "attention_mask", "position_ids")?;
        let mut h = self.embed("input_ids")?;
        for l in 0..cfg.num_hidden_layers {
            h = self.layer(l, &h, &shared)?;
        }
        let normed = self.rms_norm("model.norm", &h, "model.norm.weight")?;
        let head = if cfg.tie_word_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        let logits = self.linear("lm_head", &normed, &[head])?.remove(0);
        let out = self.g.op("logits", "Identity", &[&logits], vec![]);
        ensure!(out == "logits", "graph output name clash: {out}");
        Ok((inputs, outputs))
    }

    /// RoPE tables and the attention bias, computed once per forward pass.
    fn shared(
        &mut self,
        input_ids: &str,
        attention_mask: &str,
        position_ids: &str,
    ) -> Result<Shared> {
        let g = &mut self.g;
        // RoPE: angle[b, s, i] = position[b, s] · inv_freq[i], duplicated over both halves.
        let inv_freq = rope_inv_freq(self.cfg);
        let inv_freq = g.init_f32("rope.inv_freq", &[inv_freq.len()], &inv_freq);
        let pos = g.op(
            "rope.positions",
            "Cast",
            &[position_ids],
            vec![attr_int("to", DataType::Float as i64)],
        );
        let ax2 = g.ints(&[2]);
        let pos = g.op("rope.positions_col", "Unsqueeze", &[&pos, &ax2], vec![]);
        let half = g.op("rope.angles_half", "Mul", &[&pos, &inv_freq], vec![]);
        let angles = g.op(
            "rope.angles",
            "Concat",
            &[&half, &half],
            vec![attr_int("axis", -1)],
        );
        let cos = g.op("rope.cos", "Cos", &[&angles], vec![]);
        let sin = g.op("rope.sin", "Sin", &[&angles], vec![]);
        let ax1 = g.ints(&[1]);
        let ax12 = g.ints(&[1, 2]);
        let cos4 = g.op("rope.cos4", "Unsqueeze", &[&cos, &ax1], vec![]);
        let sin4 = g.op("rope.sin4", "Unsqueeze", &[&sin, &ax1], vec![]);
        let cos5 = g.op("rope.cos5", "Unsqueeze", &[&cos, &ax12], vec![]);
        let sin5 = g.op("rope.sin5", "Unsqueeze", &[&sin, &ax12], vec![]);

        // Causal mask over cache slots: query s sits at slot past + s and may read slots
        // 0..=past + s. Lengths come from the shapes of input_ids and the first past key.
        let ids_shape = g.op("mask.ids_shape", "Shape", &[input_ids], vec![]);
        let past_shape = g.op(
            "mask.past_shape",
            "Shape",
            &["past_key_values.0.key"],
            vec![],
        );
        let zero = g.int_scalar(0);
        let one = g.int_scalar(1);
        let two = g.int_scalar(2);
        let seq = g.op(
            "mask.seq",
            "Gather",
            &[&ids_shape, &one],
            vec![attr_int("axis", 0)],
        );
        let past = g.op(
            "mask.past",
            "Gather",
            &[&past_shape, &two],
            vec![attr_int("axis", 0)],
        );
        let total = g.op("mask.total", "Add", &[&past, &seq], vec![]);
        let q_slots = g.op("mask.query_slots", "Range", &[&past, &total, &one], vec![]);
        let k_slots = g.op("mask.key_slots", "Range", &[&zero, &total, &one], vec![]);
        let q_col = g.op("mask.query_col", "Unsqueeze", &[&q_slots, &ax1], vec![]);
        let ax0 = g.ints(&[0]);
        let k_row = g.op("mask.key_row", "Unsqueeze", &[&k_slots, &ax0], vec![]);
        let future = g.op("mask.future", "Greater", &[&k_row, &q_col], vec![]);
        // Padding: attention_mask[b, t] == 0 hides cache slot t from every query of row b.
        let zero_row = g.ints(&[0]);
        let padding = g.op(
            "mask.padding",
            "Equal",
            &[attention_mask, &zero_row],
            vec![],
        );
        let padding = g.op("mask.padding4", "Unsqueeze", &[&padding, &ax12], vec![]);
        let hidden = g.op("mask.hidden", "Or", &[&future, &padding], vec![]);
        let lowest = g.float_scalar(f32::MIN);
        let zero_f = g.float_scalar(0.0);
        let bias = g.op("mask.bias4", "Where", &[&hidden, &lowest, &zero_f], vec![]);
        let bias = g.op("mask.bias", "Unsqueeze", &[&bias, &ax1], vec![]);
        Ok(Shared {
            cos4,
            sin4,
            cos5,
            sin5,
            bias,
        })
    }

    fn rms_norm(&mut self, prefix: &str, x: &str, weight: &str) -> Result<String> {
        let w = self.f32_weight(weight)?;
        Ok(self.g.op(
            &format!("{prefix}.rms_norm"),
            "SimplifiedLayerNormalization",
            &[x, &w],
            vec![
                attr_int("axis", -1),
                attr_float("epsilon", self.cfg.rms_norm_eps),
                attr_int("stash_type", 1),
            ],
        ))
    }

    /// `x·cos + rotate_half(x)·sin` over the last axis, rotate_half(x) = [−x₂, x₁].
    fn rope(&mut self, prefix: &str, x: &str, cos: &str, sin: &str) -> String {
        let hd = self.cfg.head_dim() as i64;
        let g = &mut self.g;
        let axis = g.ints(&[-1]);
        let (lo, mid, hi) = (g.ints(&[0]), g.ints(&[hd / 2]), g.ints(&[hd]));
        let x1 = g.op(
            &format!("{prefix}.x1"),
            "Slice",
            &[x, &lo, &mid, &axis],
            vec![],
        );
        let x2 = g.op(
            &format!("{prefix}.x2"),
            "Slice",
            &[x, &mid, &hi, &axis],
            vec![],
        );
        let neg = g.op(&format!("{prefix}.neg_x2"), "Neg", &[&x2], vec![]);
        let rotated = g.op(
            &format!("{prefix}.rotate_half"),
            "Concat",
            &[&neg, &x1],
            vec![attr_int("axis", -1)],
        );
        let a = g.op(&format!("{prefix}.x_cos"), "Mul", &[x, cos], vec![]);
        let b = g.op(
            &format!("{prefix}.rot_sin"),
            "Mul",
            &[&rotated, sin],
            vec![],
        );
        g.op(&format!("{prefix}.rope"), "Add", &[&a, &b], vec![])
    }

    fn layer(&mut self, l: usize, h: &str, s: &Shared) -> Result<String> {
        let cfg = self.cfg;
        let (nh, nkv, hd) = (
            cfg.num_attention_heads as i64,
            cfg.num_key_value_heads as i64,
            cfg.head_dim() as i64,
        );
        let group = nh / nkv;
        let p = format!("model.layers.{l}");
        let x = self.rms_norm(
            &format!("{p}.input_layernorm"),
            h,
            &format!("{p}.input_layernorm.weight"),
        )?;
        let names = ["q_proj", "k_proj", "v_proj"].map(|n| format!("{p}.self_attn.{n}.weight"));
        let qkv = self.linear(
            &format!("{p}.self_attn.qkv_proj"),
            &x,
            &names.each_ref().map(String::as_str),
        )?;
        let [q, k, v] = <[String; 3]>::try_from(qkv)
            .map_err(|o| anyhow::anyhow!("{} q/k/v outputs", o.len()))?;

        let a = format!("{p}.self_attn");
        let g = &mut self.g;
        // Queries [b, s, nh·hd] -> [b, nkv, group, s, hd]: query head kv·group + r reads KV head kv.
        let q_shape = g.ints(&[0, 0, nkv, group, hd]);
        let q = g.op(&format!("{a}.q_heads"), "Reshape", &[&q, &q_shape], vec![]);
        let q = g.op(
            &format!("{a}.q_bhgsd"),
            "Transpose",
            &[&q],
            vec![attr_ints("perm", &[0, 2, 3, 1, 4])],
        );
        let kv_shape = g.ints(&[0, 0, nkv, hd]);
        let k = g.op(&format!("{a}.k_heads"), "Reshape", &[&k, &kv_shape], vec![]);
        let k = g.op(
            &format!("{a}.k_bhsd"),
            "Transpose",
            &[&k],
            vec![attr_ints("perm", &[0, 2, 1, 3])],
        );
        let v = g.op(&format!("{a}.v_heads"), "Reshape", &[&v, &kv_shape], vec![]);
        let v = g.op(
            &format!("{a}.v_bhsd"),
            "Transpose",
            &[&v],
            vec![attr_ints("perm", &[0, 2, 1, 3])],
        );
        let q = self.rope(&format!("{a}.q"), &q, &s.cos5, &s.sin5);
        let k = self.rope(&format!("{a}.k"), &k, &s.cos4, &s.sin4);

        let g = &mut self.g;
        let past_k = format!("past_key_values.{l}.key");
        let past_v = format!("past_key_values.{l}.value");
        let present_k = g.op(
            &format!("present.{l}.key"),
            "Concat",
            &[&past_k, &k],
            vec![attr_int("axis", 2)],
        );
        let present_v = g.op(
            &format!("present.{l}.value"),
            "Concat",
            &[&past_v, &v],
            vec![attr_int("axis", 2)],
        );
        ensure!(
            present_k == format!("present.{l}.key") && present_v == format!("present.{l}.value")
        );

        let ax2 = g.ints(&[2]);
        let kt = g.op(
            &format!("{a}.k_t"),
            "Transpose",
            &[&present_k],
            vec![attr_ints("perm", &[0, 1, 3, 2])],
        );
        let kt = g.op(&format!("{a}.k_t5"), "Unsqueeze", &[&kt, &ax2], vec![]);
        let v5 = g.op(&format!("{a}.v5"), "Unsqueeze", &[&present_v, &ax2], vec![]);
        let scores = g.op(&format!("{a}.scores"), "MatMul", &[&q, &kt], vec![]);
        let scale = g.float_scalar(1.0 / (hd as f32).sqrt());
        let scores = g.op(&format!("{a}.scaled"), "Mul", &[&scores, &scale], vec![]);
        let scores = g.op(&format!("{a}.masked"), "Add", &[&scores, &s.bias], vec![]);
        let probs = g.op(
            &format!("{a}.probs"),
            "Softmax",
            &[&scores],
            vec![attr_int("axis", -1)],
        );
        let ctx = g.op(&format!("{a}.context"), "MatMul", &[&probs, &v5], vec![]);
        let ctx = g.op(
            &format!("{a}.context_bsghd"),
            "Transpose",
            &[&ctx],
            vec![attr_ints("perm", &[0, 3, 1, 2, 4])],
        );
        let flat = g.ints(&[0, 0, nh * hd]);
        let ctx = g.op(
            &format!("{a}.context_flat"),
            "Reshape",
            &[&ctx, &flat],
            vec![],
        );
        let o_name = format!("{a}.o_proj.weight");
        let o = self
            .linear(&format!("{a}.o_proj"), &ctx, &[&o_name])?
            .remove(0);
        let h = self
            .g
            .op(&format!("{p}.attn_residual"), "Add", &[h, &o], vec![]);

        let m = format!("{p}.mlp");
        let x = self.rms_norm(
            &format!("{p}.post_attention_layernorm"),
            &h,
            &format!("{p}.post_attention_layernorm.weight"),
        )?;
        let names = ["gate_proj", "up_proj"].map(|n| format!("{m}.{n}.weight"));
        let gate_up = self.linear(
            &format!("{m}.gate_up_proj"),
            &x,
            &names.each_ref().map(String::as_str),
        )?;
        let [gate, up] = <[String; 2]>::try_from(gate_up)
            .map_err(|o| anyhow::anyhow!("{} gate/up outputs", o.len()))?;
        let g = &mut self.g;
        let sig = g.op(&format!("{m}.gate_sigmoid"), "Sigmoid", &[&gate], vec![]);
        let silu = g.op(&format!("{m}.gate_silu"), "Mul", &[&gate, &sig], vec![]);
        let act = g.op(&format!("{m}.act"), "Mul", &[&silu, &up], vec![]);
        let down_name = format!("{m}.down_proj.weight");
        let down = self
            .linear(&format!("{m}.down_proj"), &act, &[&down_name])?
            .remove(0);
        Ok(self
            .g
            .op(&format!("{p}.mlp_residual"), "Add", &[&h, &down], vec![]))
    }

    /// The f32 initializer holding tensor `name` (dequantized if needed), written once.
    fn f32_weight(&mut self, name: &str) -> Result<String> {
        if self.f32_inits.contains(name) {
            return Ok(name.to_string());
        }
        let w = self.tensor(name)?;
        let values = w
            .dequantize()
            .with_context(|| format!("dequantizing {name}"))?;
        let shape = w.shape.clone();
        let init = self.g.init_f32(name, &shape, &values);
        ensure!(init == name, "initializer name clash: {name}");
        self.f32_inits.insert(name.to_string());
        Ok(init)
    }

    /// `x @ W^T` for each `[out, in]` tensor of `names` (all with the same `in`): one
    /// product over their rows stacked, split back per tensor. Every product gets its own
    /// weight initializer, never one another node also reads nor one holding the same bytes
    /// as another, so that tract can pre-pack it (a shared tied embedding would be re-packed
    /// on every run).
    fn linear(&mut self, prefix: &str, x: &str, names: &[&str]) -> Result<Vec<String>> {
        let mut outs = self.linear_base(prefix, x, names)?;
        for (out, name) in outs.iter_mut().zip(names) {
            let Some(lr) = self.side.get(*name) else {
                continue;
            };
            let w = self.tensor(name)?;
            let (rows, k) = (w.shape[0], w.shape[1]);
            ensure!(
                lr.rank > 0 && lr.a.len() == lr.rank * k && lr.b.len() == rows * lr.rank,
                "side branch of {name}: rank {} does not fit a [{rows}, {k}] weight",
                lr.rank
            );
            let r = lr.rank;
            // Aᵀ `[in, r]` and scale·Bᵀ `[r, out]`, so both products read their weight as is.
            let mut at = vec![0f32; k * r];
            for (i, row) in lr.a.chunks_exact(k).enumerate() {
                for (c, v) in row.iter().enumerate() {
                    at[c * r + i] = *v;
                }
            }
            let mut bt = vec![0f32; r * rows];
            for (o, row) in lr.b.chunks_exact(r).enumerate() {
                for (i, v) in row.iter().enumerate() {
                    bt[i * rows + o] = *v * lr.scale;
                }
            }
            let at = self.g.init_f32(&format!("{name}.lora_a_t"), &[k, r], &at);
            let bt = self
                .g
                .init_f32(&format!("{name}.lora_b_t"), &[r, rows], &bt);
            let down = self
                .g
                .op(&format!("{name}.lora_down"), "MatMul", &[x, &at], vec![]);
            let up = self
                .g
                .op(&format!("{name}.lora_up"), "MatMul", &[&down, &bt], vec![]);
            *out = self.g.op(
                &format!("{name}.lora_add"),
                "Add",
                &[out.as_str(), &up],
                vec![],
            );
        }
        Ok(outs)
    }

    /// The products of [`Self::linear`] without side branches.
    fn linear_base(&mut self, prefix: &str, x: &str, names: &[&str]) -> Result<Vec<String>> {
        let ws = names
            .iter()
            .map(|n| self.tensor(n))
            .collect::<Result<Vec<_>>>()?;
        let k = ws[0].shape[1];
        ensure!(
            ws.iter().all(|w| w.shape[1] == k),
            "{names:?} do not share in_features"
        );
        let rows: Vec<usize> = ws.iter().map(|w| w.shape[0]).collect();
        let n: usize = rows.iter().sum();
        let kinds: Vec<Option<BlockKind>> =
            ws.iter().map(|w| kept_kind(self.format, &w.data)).collect();
        let quantized = kinds.iter().any(Option::is_some);
        let y = if !quantized {
            // Written as W^T, `[in, out]`: the product reads it without a Transpose, and a
            // tied head never holds the same bytes as the embedding table (tract merges
            // identical constants, and a constant read twice is not pre-packed).
            let mut values = vec![0f32; n * k];
            let mut row0 = 0;
            for (w, name) in ws.iter().zip(names) {
                let rows = w
                    .dequantize()
                    .with_context(|| format!("dequantizing {name}"))?;
                for (r, row) in rows.chunks_exact(k).enumerate() {
                    for (c, v) in row.iter().enumerate() {
                        values[c * n + row0 + r] = *v;
                    }
                }
                row0 += w.shape[0];
            }
            let wt = self
                .g
                .init_f32(&format!("{prefix}.weight_t"), &[k, n], &values);
            self.g
                .op(&format!("{prefix}.matmul"), "MatMul", &[x, &wt], vec![])
        } else {
            let shared = match self.format {
                WeightFormat::Ggml => kinds[0]
                    .filter(|k| kinds.iter().all(|o| *o == Some(*k)))
                    .map(Product::Ggml),
                _ => stack(
                    ws.iter()
                        .zip(names)
                        .map(|(w, name)| {
                            decompose(w).with_context(|| format!("reading the blocks of {name}"))
                        })
                        .collect::<Result<Vec<_>>>()?,
                )
                .map(Product::Nbits),
            };
            let Some(product) = shared else {
                // Formats that cannot share one product: one product each.
                let mut outs = Vec::new();
                for name in names {
                    let short = name.rsplit('.').nth(1).unwrap_or(name);
                    outs.extend(self.linear_base(&format!("{prefix}.{short}"), x, &[name])?);
                }
                return Ok(outs);
            };
            match product {
                Product::Ggml(kind) => self.ggml_linear(prefix, x, names, kind, n, k)?,
                Product::Nbits(dec) => self.block_linear(prefix, x, names[0], dec, n, k)?,
            }
        };
        if names.len() == 1 {
            return Ok(vec![y]);
        }
        let split = self
            .g
            .ints(&rows.iter().map(|&r| r as i64).collect::<Vec<_>>());
        Ok(self.g.op_multi(
            &format!("{prefix}.split"),
            "Split",
            &[&y, &split],
            vec![attr_int("axis", -1)],
            names.len(),
        ))
    }

    /// `x @ W^T` for the `[n, k]` rows of weights `names` stacked, all stored as `kind` blocks: one
    /// `GgmlMatMul` node over the block bytes as they are.
    fn ggml_linear(
        &mut self,
        prefix: &str,
        x: &str,
        names: &[&str],
        kind: BlockKind,
        n: usize,
        k: usize,
    ) -> Result<String> {
        let blocks = match names {
            [name] => self.ggml_table(name, kind)?,
            _ => {
                let mut bytes = Vec::new();
                for name in names {
                    if let Some((_, b)) = self.tensor(name)?.data.blocks() {
                        bytes.extend_from_slice(b);
                    }
                }
                QuantMatrix::new(kind, n, k, &bytes)
                    .with_context(|| format!("the blocks of {prefix}"))?;
                let row_bytes = k / kind.block_values() * kind.block_bytes();
                self.g
                    .init_u8(&format!("{prefix}.ggml_blocks"), &[n, row_bytes], bytes)
            }
        };
        Ok(self.g.op_in(
            &format!("{prefix}.ggml_matmul"),
            ggml_op::DOMAIN,
            ggml_op::OP_TYPE,
            &[x, &blocks],
            vec![
                attr_int("K", k as i64),
                attr_int("N", n as i64),
                attr_int("ggml_type", i64::from(kind.ggml().id())),
            ],
        ))
    }

    /// `x @ W^T` for the `[n, k]` weight decomposed into zero-point-8 4-bit parts plus
    /// per-block offsets: one `MatMulNBits` per part, plus `blocksum(x) @ offsets`.
    fn block_linear(
        &mut self,
        prefix: &str,
        x: &str,
        name: &str,
        dec: Decomposed,
        n: usize,
        k: usize,
    ) -> Result<String> {
        let blocks = k / QK;
        let mut terms = Vec::new();
        for (i, part) in dec.parts.into_iter().enumerate() {
            let packed =
                self.g
                    .init_u8(&format!("{name}.q4_{i}"), &[n, blocks, QK / 2], part.packed);
            let scales =
                self.g
                    .init_f32(&format!("{name}.scales_{i}"), &[n * blocks], &part.scales);
            terms.push(self.g.op_in(
                &format!("{prefix}.matmul_nbits_{i}"),
                MS_DOMAIN,
                "MatMulNBits",
                &[x, &packed, &scales],
                vec![
                    attr_int("K", k as i64),
                    attr_int("N", n as i64),
                    attr_int("bits", 4),
                    attr_int("block_size", QK as i64),
                ],
            ));
        }
        if let Some(offsets) = dec.offsets {
            // Σ_blocks blocksum(x)[b] · offset[n, b], with the offsets stored [K/32, N].
            let mut by_block = vec![0f32; offsets.len()];
            for (row, chunk) in offsets.chunks_exact(blocks).enumerate() {
                for (b, o) in chunk.iter().enumerate() {
                    by_block[b * n + row] = *o;
                }
            }
            let sums = self.block_sums(x, k)?;
            let offsets =
                self.g
                    .init_f32(&format!("{name}.block_offsets"), &[blocks, n], &by_block);
            terms.push(self.g.op(
                &format!("{prefix}.offset_matmul"),
                "MatMul",
                &[&sums, &offsets],
                vec![],
            ));
        }
        let mut acc = terms[0].clone();
        for (i, t) in terms.iter().enumerate().skip(1) {
            acc = self
                .g
                .op(&format!("{prefix}.sum_{i}"), "Add", &[&acc, t], vec![]);
        }
        Ok(acc)
    }

    /// Sums of `x` over each 32-wide block of its last axis (`[.., K] -> [.., K/32]`).
    fn block_sums(&mut self, x: &str, k: usize) -> Result<String> {
        if let Some(s) = self.block_sums.get(x) {
            return Ok(s.clone());
        }
        ensure!(
            k.is_multiple_of(QK),
            "in_features {k} is not a multiple of {QK}"
        );
        let g = &mut self.g;
        let shape = g.ints(&[0, 0, (k / QK) as i64, QK as i64]);
        let blocked = g.op(&format!("{x}.blocked"), "Reshape", &[x, &shape], vec![]);
        let axis = g.ints(&[-1]);
        let sums = g.op(
            &format!("{x}.block_sums"),
            "ReduceSum",
            &[&blocked, &axis],
            vec![attr_int("keepdims", 0)],
        );
        self.block_sums.insert(x.to_string(), sums.clone());
        Ok(sums)
    }

    /// The initializer holding weight `name`'s ggml blocks as they are (`[rows, row bytes]`
    /// u8), written once however many nodes read it.
    fn ggml_table(&mut self, name: &str, kind: BlockKind) -> Result<String> {
        if let Some(init) = self.ggml_tables.get(name) {
            return Ok(init.clone());
        }
        let w = self.tensor(name)?;
        let (n, k) = (w.shape[0], w.shape[1]);
        let Some((_, bytes)) = w.data.blocks() else {
            bail!("{name} is not block-quantized")
        };
        let row_bytes = kind
            .ggml()
            .byte_size(k)
            .with_context(|| format!("the rows of {name}"))?;
        ensure!(
            bytes.len() == n * row_bytes,
            "{name}: {} block bytes are not {n} rows of {row_bytes}",
            bytes.len()
        );
        let init = self.g.init_u8(
            &format!("{name}.ggml_blocks"),
            &[n, row_bytes],
            bytes.to_vec(),
        );
        self.ggml_tables.insert(name.to_string(), init.clone());
        Ok(init)
    }

    /// Embedding rows of `ids`: `[batch, seq] -> [batch, seq, hidden]`.
    fn embed(&mut self, ids: &str) -> Result<String> {
        let name = "model.embed_tokens.weight";
        let w = self.tensor(name)?;
        let (v, h) = (w.shape[0], w.shape[1]);
        if let (WeightFormat::Ggml, Some(kind)) = (self.format, kept_kind(self.format, &w.data)) {
            // Rows decoded as they are gathered, from the table a tied head multiplies.
            let table = self.ggml_table(name, kind)?;
            return Ok(self.g.op_in(
                "embed.gather",
                ggml_op::DOMAIN,
                ggml_op::GATHER_OP_TYPE,
                &[&table, ids],
                vec![
                    attr_int("K", h as i64),
                    attr_int("N", v as i64),
                    attr_int("ggml_type", i64::from(kind.ggml().id())),
                ],
            ));
        }
        let blocks = h / QK;
        let gather0 = vec![attr_int("axis", 0)];
        let to_blocks = [0, 0, blocks as i64, QK as i64];
        match (self.format, &w.data) {
            (WeightFormat::Q4 | WeightFormat::Ggml, WeightData::Q8_0(_)) => {
                let (codes, scales) = q8_0_codes(w)?;
                let g = &mut self.g;
                let table = g.init_i8(&format!("{name}.q8"), &[v, h], &codes);
                let scales = g.init_f32(&format!("{name}.q8_scales"), &[v, blocks], &scales);
                let rows = g.op("embed.gather_q8", "Gather", &[&table, ids], gather0.clone());
                let rows = g.op(
                    "embed.rows_f32",
                    "Cast",
                    &[&rows],
                    vec![attr_int("to", DataType::Float as i64)],
                );
                let shape = g.ints(&to_blocks);
                let rows = g.op("embed.rows_blocked", "Reshape", &[&rows, &shape], vec![]);
                let row_scales = g.op("embed.gather_scales", "Gather", &[&scales, ids], gather0);
                let ax = g.ints(&[-1]);
                let row_scales = g.op("embed.scales_col", "Unsqueeze", &[&row_scales, &ax], vec![]);
                let rows = g.op("embed.dequant", "Mul", &[&rows, &row_scales], vec![]);
                let flat = g.ints(&[0, 0, h as i64]);
                Ok(g.op("embed.rows", "Reshape", &[&rows, &flat], vec![]))
            }
            (WeightFormat::Q4 | WeightFormat::Ggml, WeightData::Q4_0(_) | WeightData::Q4_1(_)) => {
                let Some(mut dec) = decompose(w)? else {
                    bail!("{name} is not block-quantized")
                };
                let part = dec.parts.remove(0);
                let g = &mut self.g;
                let table = g.init_u8(&format!("{name}.q4"), &[v, h / 2], part.packed);
                let scales = g.init_f32(&format!("{name}.q4_scales"), &[v, blocks], &part.scales);
                let rows = g.op_in(
                    "embed.gather_q4",
                    MS_DOMAIN,
                    "GatherBlockQuantized",
                    &[&table, ids, &scales],
                    vec![
                        attr_int("bits", 4),
                        attr_int("block_size", QK as i64),
                        attr_int("gather_axis", 0),
                        attr_int("quantize_axis", 1),
                    ],
                );
                let Some(offsets) = dec.offsets else {
                    return Ok(rows);
                };
                let offsets = g.init_f32(&format!("{name}.block_offsets"), &[v, blocks], &offsets);
                let shape = g.ints(&to_blocks);
                let rows = g.op("embed.rows_blocked", "Reshape", &[&rows, &shape], vec![]);
                let row_offsets = g.op("embed.gather_offsets", "Gather", &[&offsets, ids], gather0);
                let ax = g.ints(&[-1]);
                let row_offsets = g.op(
                    "embed.offsets_col",
                    "Unsqueeze",
                    &[&row_offsets, &ax],
                    vec![],
                );
                let rows = g.op("embed.recentred", "Add", &[&rows, &row_offsets], vec![]);
                let flat = g.ints(&[0, 0, h as i64]);
                Ok(g.op("embed.rows", "Reshape", &[&rows, &flat], vec![]))
            }
            // f32 tables, and block formats without a gather of their own (Q5_x, K-quants),
            // are gathered from an f32 table.
            _ => {
                let table = self.f32_weight(name)?;
                Ok(self.g.op("embed.gather", "Gather", &[&table, ids], gather0))
            }
        }
    }
}
