//! BERT sentence encoders (the architecture of all-MiniLM-L6-v2) written as an ONNX graph
//! that tract runs: word, position and token-type embeddings, post-norm encoder layers
//! (self-attention with a padding mask, exact erf GELU), then the sentence-transformers head:
//! the mean of the token states under the attention mask, scaled to unit length.
//!
//! Inputs `input_ids`, `attention_mask` and `position_ids` (`[batch, sequence_length]` i64);
//! output `embeddings` (`[batch, hidden]` f32). Every sequence uses token type 0.
//!
//! The encoder layers' linear maps (query, key, value, attention output, both feed-forward
//! maps) hold f32 weights in [`EmbedPrecision::F32`] and Q8_0 blocks of the same weights in
//! [`EmbedPrecision::Q8`]. Embeddings, norms and attention stay f32 in both.
//!
//! The layers are written either in standard ONNX ops ([`Attention::Onnx`]: `MatMul`s, bias
//! `Add`s, reshapes, transposes, an additive mask, `Softmax`, `Erf` for the GELU,
//! `LayerNormalization`; what any runtime reads; Q8_0 maps there are the engine's
//! [`GgmlMatMul`](crate::engine::ggml_op)) or in the engine's ops ([`Attention::Fused`]): one
//! [`BertAttention`](crate::engine::bert_attention) node per layer, fed by one
//! [`BertDense`](crate::engine::bert_dense) map over the stacked query, key and value
//! weights, and three more `BertDense` maps that carry the residuals, layer norms and GELU.
//! Graphs with engine ops are read by the engine's parser only.

use std::collections::HashMap;

use anyhow::{Context, Result, ensure};
use serde::Deserialize;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{GraphProto, ModelProto, OperatorSetIdProto};

use super::proto::{Dim, GraphBuilder, attr_float, attr_int, attr_ints, value_info};
use crate::engine::quant::{GgmlType, quantize};
use crate::engine::{bert_attention, bert_dense, ggml_op};

/// How self-attention is written in the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attention {
    /// Standard ONNX ops, with the mask as an additive bias.
    Onnx,
    /// The engine's `BertDense` linear maps and one `BertAttention` node per layer (a mask
    /// of ones then zeros).
    Fused,
}

/// How the encoder layers' linear maps hold and multiply their weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EmbedPrecision {
    /// f32 weights, tract's f32 products.
    #[default]
    F32,
    /// Q8_0 weight blocks (32 values per scale), held as bytes and decoded to f32 for each
    /// product, which runs on the f32 GEMM: about a quarter of the f32 weights' memory at
    /// their speed, where the block-scaled integer dots lose to an f32 GEMM on every product
    /// with more than a few rows (the activations stay f32).
    Q8,
}

/// The `config.json` fields of a BERT encoder, checked by [`BertConfig::validate`].
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct BertConfig {
    /// Word-piece vocabulary size.
    pub vocab_size: usize,
    /// Width of the token states.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Longest sequence the position table covers.
    pub max_position_embeddings: usize,
    /// Epsilon of every layer norm.
    pub layer_norm_eps: f32,
    /// Activation of the feed-forward layer (only `gelu` is supported).
    #[serde(default = "gelu")]
    pub hidden_act: String,
}

fn gelu() -> String {
    "gelu".into()
}

impl BertConfig {
    /// Refuses sizes a graph cannot be built from, or beyond what a sentence encoder needs.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("vocab_size", self.vocab_size, 1 << 20),
            ("hidden_size", self.hidden_size, 8192),
            ("num_hidden_layers", self.num_hidden_layers, 128),
            ("num_attention_heads", self.num_attention_heads, 256),
            ("intermediate_size", self.intermediate_size, 65536),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                1 << 16,
            ),
        ];
        for (name, value, max) in sizes {
            ensure!(
                (1..=max).contains(&value),
                "config.json: {name} = {value} is outside 1..={max}"
            );
        }
        ensure!(
            self.hidden_size.is_multiple_of(self.num_attention_heads),
            "config.json: {} heads do not divide hidden_size {}",
            self.num_attention_heads,
            self.hidden_size
        );
        ensure!(
            self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0,
            "config.json: layer_norm_eps must be above 0"
        );
        ensure!(
            self.hidden_act == "gelu",
            "config.json: hidden_act {:?} is not supported (only \"gelu\")",
            self.hidden_act
        );
        Ok(())
    }
}

/// A BERT encoder's f32 tensors by their Hugging Face names, with their shapes.
pub struct BertWeights {
    /// The architecture.
    pub config: BertConfig,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl BertWeights {
    /// Reads the f32 tensors of a `model.safetensors` (names with or without a `bert.`
    /// prefix), checking that every tensor the graph needs is there with its shape.
    pub fn from_safetensors(config: BertConfig, bytes: &[u8]) -> Result<Self> {
        config.validate()?;
        let file = safetensors::SafeTensors::deserialize(bytes).context("reading safetensors")?;
        let mut tensors = HashMap::new();
        for (name, view) in file.tensors() {
            if view.dtype() != safetensors::Dtype::F32 {
                continue;
            }
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let name = name.strip_prefix("bert.").unwrap_or(&name).to_string();
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        let weights = Self { config, tensors };
        for (name, shape) in expected_tensors(&weights.config) {
            let (got, _) = weights
                .tensors
                .get(&name)
                .with_context(|| format!("model.safetensors has no f32 tensor {name}"))?;
            ensure!(
                *got == shape,
                "{name} is {got:?}, config.json implies {shape:?}"
            );
        }
        Ok(weights)
    }

    /// Every tensor of `config` filled with small pseudo-random values from `seed` (norm
    /// scales near 1), for tests that need an encoder without a model file.
    #[cfg(test)]
    pub(crate) fn seeded(config: BertConfig, seed: u64) -> Self {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let tensors = expected_tensors(&config)
            .into_iter()
            .map(|(name, shape)| {
                let len: usize = shape.iter().product();
                let offset = if name.ends_with("LayerNorm.weight") {
                    1.0
                } else {
                    0.0
                };
                let values = (0..len).map(|_| offset + 0.2 * next()).collect();
                (name, (shape, values))
            })
            .collect();
        Self { config, tensors }
    }

    fn get(&self, name: &str) -> Result<&(Vec<usize>, Vec<f32>)> {
        self.tensors
            .get(name)
            .with_context(|| format!("no tensor {name}"))
    }
}

/// Every tensor the graph reads, with its shape.
fn expected_tensors(c: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let mut out = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![c.vocab_size, h],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![c.max_position_embeddings, h],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for l in 0..c.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        for (name, shape) in [
            ("attention.self.query", vec![h, h]),
            ("attention.self.key", vec![h, h]),
            ("attention.self.value", vec![h, h]),
            ("attention.output.dense", vec![h, h]),
            ("intermediate.dense", vec![i, h]),
            ("output.dense", vec![h, i]),
        ] {
            out.push((format!("{p}.{name}.bias"), vec![shape[0]]));
            out.push((format!("{p}.{name}.weight"), shape));
        }
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            out.push((format!("{p}.{norm}.weight"), vec![h]));
            out.push((format!("{p}.{norm}.bias"), vec![h]));
        }
    }
    out
}

/// The token-type-0 row of the token-type table, when there is one (added to every token).
fn token_type_row(w: &BertWeights) -> Option<Vec<f32>> {
    let (shape, values) = w.tensors.get("embeddings.token_type_embeddings.weight")?;
    (shape.len() == 2 && shape[1] == w.config.hidden_size && shape[0] > 0)
        .then(|| values[..shape[1]].to_vec())
}

/// Builds the encoder graph for `w`, its linear maps in `precision`, its attention written as
/// `attention` says.
pub fn bert_model_proto(
    w: &BertWeights,
    precision: EmbedPrecision,
    attention: Attention,
) -> Result<ModelProto> {
    let c = &w.config;
    let mut g = GraphBuilder::default();
    let ids_dims = [Dim::Named("batch"), Dim::Named("sequence_length")];
    let inputs = ["input_ids", "attention_mask", "position_ids"]
        .map(|n| value_info(n, DataType::Int64, &ids_dims))
        .to_vec();
    let mut b = Builder {
        g: &mut g,
        w,
        precision,
        attention,
    };
    let gather0 = vec![attr_int("axis", 0)];
    let words = b.init("embeddings.word_embeddings.weight")?;
    let positions = b.init("embeddings.position_embeddings.weight")?;
    let x = b.g.op(
        "emb.words",
        "Gather",
        &[&words, "input_ids"],
        gather0.clone(),
    );
    let p = b.g.op(
        "emb.positions",
        "Gather",
        &[&positions, "position_ids"],
        gather0,
    );
    let mut x = b.g.op("emb.sum", "Add", &[&x, &p], vec![]);
    if let Some(row) = token_type_row(w) {
        let t = b.g.init_f32("emb.token_type0", &[c.hidden_size], &row);
        x = b.g.op("emb.typed", "Add", &[&x, &t], vec![]);
    }
    let mut x = b.layer_norm("emb.norm", &x, "embeddings.LayerNorm")?;
    // `[b, s]` mask to an additive `[b, 1, 1, s]` bias: 0 where attended, −10000 elsewhere.
    let g = &mut *b.g;
    let mask = g.op(
        "mask.f32",
        "Cast",
        &["attention_mask"],
        vec![attr_int("to", DataType::Float as i64)],
    );
    let bias = if attention == Attention::Onnx {
        let axes12 = g.ints(&[1, 2]);
        let mask4 = g.op("mask.b11s", "Unsqueeze", &[&mask, &axes12], vec![]);
        let one = g.float_scalar(1.0);
        let inv = g.op("mask.inverse", "Sub", &[&one, &mask4], vec![]);
        let big = g.float_scalar(-10000.0);
        g.op("mask.bias", "Mul", &[&inv, &big], vec![])
    } else {
        "attention_mask".to_string()
    };
    for l in 0..c.num_hidden_layers {
        x = b.layer(l, &x, &bias)?;
    }
    // Mean over the attended tokens, then unit length.
    let g = &mut *b.g;
    let axis2 = g.ints(&[2]);
    let mask3 = g.op("pool.mask", "Unsqueeze", &[&mask, &axis2], vec![]);
    let masked = g.op("pool.masked", "Mul", &[&x, &mask3], vec![]);
    let axis1 = g.ints(&[1]);
    let keep0 = vec![attr_int("keepdims", 0)];
    let sum = g.op("pool.sum", "ReduceSum", &[&masked, &axis1], keep0.clone());
    let count = g.op("pool.count", "ReduceSum", &[&mask3, &axis1], keep0);
    let floor = g.float_scalar(1e-9);
    let count = g.op("pool.count_floor", "Max", &[&count, &floor], vec![]);
    let mean = g.op("pool.mean", "Div", &[&sum, &count], vec![]);
    let last = g.ints(&[-1]);
    let sq = g.op("norm.sq", "Mul", &[&mean, &mean], vec![]);
    let ss = g.op(
        "norm.sum",
        "ReduceSum",
        &[&sq, &last],
        vec![attr_int("keepdims", 1)],
    );
    let len = g.op("norm.len", "Sqrt", &[&ss], vec![]);
    let tiny = g.float_scalar(1e-12);
    let len = g.op("norm.len_floor", "Max", &[&len, &tiny], vec![]);
    let out = g.op("embeddings", "Div", &[&mean, &len], vec![]);
    ensure!(out == "embeddings", "graph output name clash: {out}");
    let outputs = vec![value_info(
        "embeddings",
        DataType::Float,
        &[Dim::Named("batch"), Dim::Fixed(c.hidden_size)],
    )];
    Ok(ModelProto {
        ir_version: 8,
        opset_import: opsets(precision, attention),
        producer_name: "thermo-adaptive-pipeline".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(GraphProto {
            node: std::mem::take(&mut b.g.nodes),
            name: "bert".into(),
            initializer: std::mem::take(&mut b.g.initializers),
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The default opset, and the engine's op domains the graph uses.
fn opsets(precision: EmbedPrecision, attention: Attention) -> Vec<OperatorSetIdProto> {
    let mut sets = vec![OperatorSetIdProto {
        domain: String::new(),
        version: 17,
    }];
    if precision == EmbedPrecision::Q8 && attention == Attention::Onnx {
        sets.push(OperatorSetIdProto {
            domain: ggml_op::DOMAIN.into(),
            version: 1,
        });
    }
    if attention == Attention::Fused {
        sets.push(OperatorSetIdProto {
            domain: bert_attention::DOMAIN.into(),
            version: 1,
        });
    }
    sets
}

/// What a fused linear map does after its bias.
enum After<'a> {
    /// Nothing.
    Nothing,
    /// The exact GELU.
    Gelu,
    /// Adds the residual (a graph value) and applies the layer norm of the named prefix.
    Norm(&'a str, &'a str),
}

struct Builder<'a> {
    g: &'a mut GraphBuilder,
    w: &'a BertWeights,
    precision: EmbedPrecision,
    attention: Attention,
}

impl Builder<'_> {
    /// The tensor `name` as an initializer of its own shape.
    fn init(&mut self, name: &str) -> Result<String> {
        let (shape, values) = self.w.get(name)?;
        Ok(self.g.init_f32(name, shape, values))
    }

    /// `x · Wᵀ + b` for the `[out, in]` weight and bias of `prefix`: an f32 `MatMul` over `W`
    /// written transposed, or a `GgmlMatMul` over `W`'s rows in Q8_0 blocks.
    fn dense(&mut self, prefix: &str, x: &str) -> Result<String> {
        let (shape, values) = self.w.get(&format!("{prefix}.weight"))?;
        let (_, bias) = self.w.get(&format!("{prefix}.bias"))?;
        self.dense_of(prefix, x, (shape[0], shape[1]), values, bias)
    }

    /// `x · Wᵀ + b` for the `[rows, cols]` weight `values` and the bias, named by `prefix`.
    fn dense_of(
        &mut self,
        prefix: &str,
        x: &str,
        (rows, cols): (usize, usize),
        values: &[f32],
        bias: &[f32],
    ) -> Result<String> {
        let y = match self.precision {
            EmbedPrecision::F32 => {
                let mut t = vec![0f32; rows * cols];
                for (r, row) in values.chunks_exact(cols).enumerate() {
                    for (c, v) in row.iter().enumerate() {
                        t[c * rows + r] = *v;
                    }
                }
                let wt = self
                    .g
                    .init_f32(&format!("{prefix}.weight_t"), &[cols, rows], &t);
                self.g
                    .op(&format!("{prefix}.matmul"), "MatMul", &[x, &wt], vec![])
            }
            EmbedPrecision::Q8 => {
                ensure!(
                    cols.is_multiple_of(GgmlType::Q8_0.block_values()),
                    "{prefix}: {cols} inputs are not whole Q8_0 blocks"
                );
                let blocks = quantize(GgmlType::Q8_0, values)
                    .with_context(|| format!("quantizing {prefix}"))?;
                let row_bytes = blocks.len() / rows;
                let blocks = self
                    .g
                    .init_u8(&format!("{prefix}.q8_0"), &[rows, row_bytes], blocks);
                self.g.op_in(
                    &format!("{prefix}.matmul"),
                    ggml_op::DOMAIN,
                    ggml_op::OP_TYPE,
                    &[x, &blocks],
                    vec![
                        attr_int("K", cols as i64),
                        attr_int("N", rows as i64),
                        attr_int("ggml_type", i64::from(GgmlType::Q8_0.id())),
                        attr_int("f32_rows", 1),
                    ],
                )
            }
        };
        let bias = self
            .g
            .init_f32(&format!("{prefix}.bias"), &[bias.len()], bias);
        Ok(self
            .g
            .op(&format!("{prefix}.out"), "Add", &[&y, &bias], vec![]))
    }

    fn layer_norm(&mut self, name: &str, x: &str, prefix: &str) -> Result<String> {
        let scale = self.init(&format!("{prefix}.weight"))?;
        let bias = self.init(&format!("{prefix}.bias"))?;
        Ok(self.g.op(
            name,
            "LayerNormalization",
            &[x, &scale, &bias],
            vec![
                attr_int("axis", -1),
                attr_float("epsilon", self.w.config.layer_norm_eps),
            ],
        ))
    }

    /// `[b, s, h]` to `[b, heads, s, head_dim]`.
    fn heads(&mut self, name: &str, x: &str) -> String {
        let c = &self.w.config;
        let hd = c.hidden_size / c.num_attention_heads;
        let shape = self
            .g
            .ints(&[0, 0, c.num_attention_heads as i64, hd as i64]);
        let x = self
            .g
            .op(&format!("{name}.split"), "Reshape", &[x, &shape], vec![]);
        self.g.op(
            &format!("{name}.heads"),
            "Transpose",
            &[&x],
            vec![attr_ints("perm", &[0, 2, 1, 3])],
        )
    }

    /// Encoder layer `l` over `x`; `mask` is the additive bias ([`Attention::Onnx`]) or the
    /// `[b, s]` mask itself ([`Attention::Fused`]).
    fn layer(&mut self, l: usize, x: &str, mask: &str) -> Result<String> {
        if self.attention == Attention::Fused {
            return self.fused_layer(l, x, mask);
        }
        let p = format!("encoder.layer.{l}");
        let q = self.dense(&format!("{p}.attention.self.query"), x)?;
        let k = self.dense(&format!("{p}.attention.self.key"), x)?;
        let v = self.dense(&format!("{p}.attention.self.value"), x)?;
        let ctx = self.onnx_attention(&p, (&q, &k, &v), mask);
        let attn = self.dense(&format!("{p}.attention.output.dense"), &ctx)?;
        let res = self
            .g
            .op(&format!("{p}.attn_res"), "Add", &[&attn, x], vec![]);
        let x = self.layer_norm(
            &format!("{p}.attn_norm"),
            &res,
            &format!("{p}.attention.output.LayerNorm"),
        )?;
        let h = self.dense(&format!("{p}.intermediate.dense"), &x)?;
        let h = self.gelu(&format!("{p}.gelu"), &h);
        let out = self.dense(&format!("{p}.output.dense"), &h)?;
        let res = self
            .g
            .op(&format!("{p}.ffn_res"), "Add", &[&out, &x], vec![]);
        self.layer_norm(
            &format!("{p}.ffn_norm"),
            &res,
            &format!("{p}.output.LayerNorm"),
        )
    }

    /// Encoder layer `l` over `x` in the engine's ops: one `BertDense` over the stacked
    /// query, key and value weights, `BertAttention`, then three `BertDense` carrying the
    /// residuals, layer norms and GELU.
    fn fused_layer(&mut self, l: usize, x: &str, mask: &str) -> Result<String> {
        let c = self.w.config.clone();
        let p = format!("encoder.layer.{l}");
        let (mut weights, mut biases) = (Vec::new(), Vec::new());
        for name in ["query", "key", "value"] {
            let (_, values) = self.w.get(&format!("{p}.attention.self.{name}.weight"))?;
            let (_, bias) = self.w.get(&format!("{p}.attention.self.{name}.bias"))?;
            weights.extend_from_slice(values);
            biases.extend_from_slice(bias);
        }
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let qkv = self.fused_dense(
            &format!("{p}.attention.self.qkv"),
            x,
            (3 * h, h),
            (&weights, &biases),
            After::Nothing,
        )?;
        let ctx = self.g.op_in(
            &format!("{p}.attention"),
            bert_attention::DOMAIN,
            bert_attention::OP_TYPE,
            &[&qkv, mask],
            vec![attr_int("heads", c.num_attention_heads as i64)],
        );
        let x = self.fused_map(
            &format!("{p}.attention.output.dense"),
            &ctx,
            (h, h),
            After::Norm(x, &format!("{p}.attention.output.LayerNorm")),
        )?;
        let hidden = self.fused_map(&format!("{p}.intermediate.dense"), &x, (i, h), After::Gelu)?;
        self.fused_map(
            &format!("{p}.output.dense"),
            &hidden,
            (h, i),
            After::Norm(&x, &format!("{p}.output.LayerNorm")),
        )
    }

    /// [`Builder::fused_dense`] over the `[rows, cols]` weight and bias of `prefix`.
    fn fused_map(
        &mut self,
        prefix: &str,
        x: &str,
        (rows, cols): (usize, usize),
        after: After<'_>,
    ) -> Result<String> {
        let w = self.w;
        let (shape, values) = w.get(&format!("{prefix}.weight"))?;
        let (_, bias) = w.get(&format!("{prefix}.bias"))?;
        ensure!(
            shape[..] == [rows, cols],
            "{prefix}.weight is {shape:?}, not [{rows}, {cols}]"
        );
        self.fused_dense(prefix, x, (rows, cols), (values, bias), after)
    }

    /// One `BertDense` node: `x · Wᵀ + b` for the `[rows, cols]` weight `values` (f32, or
    /// Q8_0 blocks in [`EmbedPrecision::Q8`]), then what `after` says.
    fn fused_dense(
        &mut self,
        prefix: &str,
        x: &str,
        (rows, cols): (usize, usize),
        (values, bias): (&[f32], &[f32]),
        after: After<'_>,
    ) -> Result<String> {
        let weight = match self.precision {
            EmbedPrecision::F32 => {
                self.g
                    .init_f32(&format!("{prefix}.weight"), &[rows, cols], values)
            }
            EmbedPrecision::Q8 => {
                ensure!(
                    cols.is_multiple_of(GgmlType::Q8_0.block_values()),
                    "{prefix}: {cols} inputs are not whole Q8_0 blocks"
                );
                let blocks = quantize(GgmlType::Q8_0, values)
                    .with_context(|| format!("quantizing {prefix}"))?;
                let row_bytes = blocks.len() / rows;
                self.g
                    .init_u8(&format!("{prefix}.q8_0"), &[rows, row_bytes], blocks)
            }
        };
        let bias = self
            .g
            .init_f32(&format!("{prefix}.bias"), &[bias.len()], bias);
        let mut inputs = vec![x.to_string(), weight, bias];
        let mut attrs = vec![attr_int("K", cols as i64), attr_int("N", rows as i64)];
        match after {
            After::Nothing => {}
            After::Gelu => attrs.push(attr_int("gelu", 1)),
            After::Norm(residual, norm) => {
                inputs.push(residual.to_string());
                inputs.push(self.init(&format!("{norm}.weight"))?);
                inputs.push(self.init(&format!("{norm}.bias"))?);
                attrs.push(attr_float("epsilon", self.w.config.layer_norm_eps));
            }
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.g.op_in(
            &format!("{prefix}.dense"),
            bert_attention::DOMAIN,
            bert_dense::OP_TYPE,
            &inputs,
            attrs,
        ))
    }

    /// Self-attention of layer prefix `p` in standard ONNX ops, `bias` the additive mask.
    fn onnx_attention(&mut self, p: &str, (q, k, v): (&str, &str, &str), bias: &str) -> String {
        let c = self.w.config.clone();
        let (q, k, v) = (
            self.heads(&format!("{p}.q"), q),
            self.heads(&format!("{p}.k"), k),
            self.heads(&format!("{p}.v"), v),
        );
        let g = &mut *self.g;
        let kt = g.op(
            &format!("{p}.kt"),
            "Transpose",
            &[&k],
            vec![attr_ints("perm", &[0, 1, 3, 2])],
        );
        let scores = g.op(&format!("{p}.scores"), "MatMul", &[&q, &kt], vec![]);
        let hd = (c.hidden_size / c.num_attention_heads) as f32;
        let scale = g.float_scalar(1.0 / hd.sqrt());
        let scores = g.op(&format!("{p}.scaled"), "Mul", &[&scores, &scale], vec![]);
        let scores = g.op(&format!("{p}.masked"), "Add", &[&scores, bias], vec![]);
        let probs = g.op(
            &format!("{p}.probs"),
            "Softmax",
            &[&scores],
            vec![attr_int("axis", -1)],
        );
        let ctx = g.op(&format!("{p}.ctx"), "MatMul", &[&probs, &v], vec![]);
        let ctx = g.op(
            &format!("{p}.ctx_t"),
            "Transpose",
            &[&ctx],
            vec![attr_ints("perm", &[0, 2, 1, 3])],
        );
        let merged = g.ints(&[0, 0, c.hidden_size as i64]);
        g.op(
            &format!("{p}.ctx_merged"),
            "Reshape",
            &[&ctx, &merged],
            vec![],
        )
    }

    /// `0.5 · x · (1 + erf(x / √2))`.
    fn gelu(&mut self, name: &str, x: &str) -> String {
        let g = &mut *self.g;
        let r = g.float_scalar(std::f32::consts::FRAC_1_SQRT_2);
        let s = g.op(&format!("{name}.scaled"), "Mul", &[x, &r], vec![]);
        let e = g.op(&format!("{name}.erf"), "Erf", &[&s], vec![]);
        let one = g.float_scalar(1.0);
        let e = g.op(&format!("{name}.plus1"), "Add", &[&e, &one], vec![]);
        let half = g.float_scalar(0.5);
        let hx = g.op(&format!("{name}.half"), "Mul", &[x, &half], vec![]);
        g.op(name, "Mul", &[&hx, &e], vec![])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BertConfig {
        BertConfig {
            vocab_size: 10,
            hidden_size: 8,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 16,
            max_position_embeddings: 6,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
        }
    }

    #[test]
    fn a_config_a_graph_cannot_be_built_from_is_refused() {
        assert!(config().validate().is_ok());
        let mut c = config();
        c.num_attention_heads = 3;
        assert!(c.validate().is_err(), "heads must divide hidden_size");
        let mut c = config();
        c.hidden_size = 0;
        assert!(c.validate().is_err());
        let mut c = config();
        c.hidden_act = "relu".into();
        assert!(c.validate().is_err());
        let mut c = config();
        c.layer_norm_eps = f32::NAN;
        assert!(c.validate().is_err());
    }

    #[test]
    fn weights_that_are_not_safetensors_or_lack_a_tensor_are_an_error_naming_it() {
        assert!(BertWeights::from_safetensors(config(), b"not safetensors").is_err());
        let words = vec![0f32; 10 * 8];
        let bytes: Vec<u8> = words.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![10, 8], &bytes)
                .expect("view");
        let file = safetensors::serialize([("embeddings.word_embeddings.weight", view)], None)
            .expect("serialises");
        let err = BertWeights::from_safetensors(config(), &file)
            .err()
            .expect("incomplete")
            .to_string();
        assert!(
            err.contains("embeddings.position_embeddings.weight"),
            "{err}"
        );
    }
}
