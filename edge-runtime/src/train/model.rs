//! The training graph: a Llama decoder in candle (CPU, f32) over frozen base weights, with
//! LoRA side branches on the adapted projections. Only the adapters are variables.
//!
//! Contracts that keep gradients correct and cheap:
//! - Frozen projections go through [`FrozenMatmul`], whose backward returns the input
//!   gradient only (candle's matmul backward would also compute the unused weight gradient).
//! - At and above the lowest adapted layer every op has a backward: RMSNorm and softmax are
//!   custom ops (candle's fused kernels forward, a hand-written backward that keeps no
//!   intermediates), RoPE is spelled out; below it the stream carries no gradient at all.
//! - One forward pass runs one packed row of examples: positions restart at every example
//!   and attention is causal within an example only, so each example sees exactly what it
//!   sees at inference.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};
use candle_core::{CpuStorage, CustomOp1, D, DType, Device, Layout, Shape, Tensor};

use super::lora::{LoraAdapter, Target};
use crate::engine::llama::{LlamaConfig, LlamaWeights, Weight, WeightData};

/// `x · Wᵀ` for a frozen `W` (`[out, in]`): the backward pass returns `∂L/∂x` only
/// (candle's own matmul backward would also compute the weight gradient nobody reads).
struct FrozenMatmul(Tensor);

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("frozen-matmul needs a contiguous input");
        };
        let values = storage
            .as_slice::<f32>()?
            .get(start..end)
            .ok_or_else(|| candle_core::Error::Msg("frozen-matmul: bad layout".into()))?;
        let x = Tensor::from_slice(values, layout.shape(), &Device::Cpu)?;
        let y = x.matmul(&self.0.t()?)?;
        let shape = y.shape().clone();
        Ok((CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?), shape))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.matmul(&self.0)?))
    }
}

/// `x · Wᵀ` with `x` of shape `[rows, in]`; `tracked` selects the gradient-carrying form.
fn linear(x: &Tensor, w: &Tensor, tracked: bool) -> Result<Tensor> {
    if tracked {
        Ok(x.contiguous()?.apply_op1(FrozenMatmul(w.clone()))?)
    } else {
        Ok(x.matmul(&w.t()?)?)
    }
}

/// Frozen weights of one decoder block, as candle tensors (`[out, in]` projections).
struct Block {
    input_norm: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    post_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// The frozen base model, f32 on the CPU.
pub struct BaseModel {
    /// Hyper-parameters.
    pub config: LlamaConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    /// `lm_head` (the embedding table when tied), `[vocab, hidden]`.
    head: Tensor,
    inv_freq: Vec<f32>,
}

fn take(tensors: &mut BTreeMap<String, Weight>, name: &str, shape: &[usize]) -> Result<Tensor> {
    let w = tensors
        .remove(name)
        .with_context(|| format!("the model has no tensor {name}"))?;
    ensure!(
        w.shape == shape,
        "{name} has shape {:?}, the config implies {shape:?}",
        w.shape
    );
    let values = match w.data {
        WeightData::F32(v) => v,
        _ => w
            .dequantize()
            .with_context(|| format!("dequantizing {name}"))?,
    };
    ensure!(
        values.len() == shape.iter().product::<usize>(),
        "{name}: {} values for shape {shape:?}",
        values.len()
    );
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

impl BaseModel {
    /// Takes the weights (dequantizing block formats to f32), consuming them so that each
    /// tensor exists once in memory.
    pub fn from_weights(weights: LlamaWeights) -> Result<Self> {
        let LlamaWeights {
            config,
            mut tensors,
        } = weights;
        let c = &config;
        ensure!(c.num_hidden_layers > 0, "the model has no layers");
        ensure!(
            c.num_attention_heads > 0
                && c.num_key_value_heads > 0
                && c.hidden_size.is_multiple_of(c.num_attention_heads)
                && c.num_attention_heads.is_multiple_of(c.num_key_value_heads)
                && c.head_dim().is_multiple_of(2),
            "unsupported attention shape: hidden {}, heads {}, kv heads {}",
            c.hidden_size,
            c.num_attention_heads,
            c.num_key_value_heads
        );
        let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let q = c.num_attention_heads * c.head_dim();
        let kv = c.num_key_value_heads * c.head_dim();
        let embed = take(&mut tensors, "model.embed_tokens.weight", &[v, h])?;
        let mut blocks = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let mut t = |n: &str, s: &[usize]| take(&mut tensors, &format!("{p}.{n}"), s);
            blocks.push(Block {
                input_norm: t("input_layernorm.weight", &[h])?,
                q: t("self_attn.q_proj.weight", &[q, h])?,
                k: t("self_attn.k_proj.weight", &[kv, h])?,
                v: t("self_attn.v_proj.weight", &[kv, h])?,
                o: t("self_attn.o_proj.weight", &[h, q])?,
                post_norm: t("post_attention_layernorm.weight", &[h])?,
                gate: t("mlp.gate_proj.weight", &[i, h])?,
                up: t("mlp.up_proj.weight", &[i, h])?,
                down: t("mlp.down_proj.weight", &[h, i])?,
            });
        }
        let norm = take(&mut tensors, "model.norm.weight", &[h])?;
        let head = if c.tie_word_embeddings {
            embed.clone()
        } else {
            take(&mut tensors, "lm_head.weight", &[v, h])?
        };
        let hd = c.head_dim();
        let inv_freq = (0..hd / 2)
            .map(|i| 1.0 / c.rope_theta.powf((2 * i) as f32 / hd as f32))
            .collect();
        Ok(BaseModel {
            config,
            embed,
            blocks,
            norm,
            head,
            inv_freq,
        })
    }

    /// Shape `[out, in]` of a target projection.
    pub fn target_shape(&self, target: Target) -> (usize, usize) {
        let c = &self.config;
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let q = c.num_attention_heads * c.head_dim();
        let kv = c.num_key_value_heads * c.head_dim();
        match target {
            Target::Q => (q, h),
            Target::K | Target::V => (kv, h),
            Target::O => (h, q),
            Target::Gate | Target::Up => (i, h),
            Target::Down => (h, i),
        }
    }
}

/// One packed row: tokens, where each example starts, and which positions are scored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PackedRow {
    /// Input token ids.
    pub ids: Vec<u32>,
    /// Position of each token within its example (restarts at 0 per example).
    pub positions: Vec<u32>,
    /// Example index of each token within the row (attention never crosses examples).
    pub segment: Vec<u32>,
    /// `(position in row, target token)`: the logits at that position are scored against
    /// the target (the next token of the same example).
    pub targets: Vec<(usize, u32)>,
    /// The first `shared` tokens are a prefix common to every example of the row: every
    /// segment may read them (they are computed once instead of once per example).
    pub shared: usize,
}

/// Options of one forward pass.
#[derive(Clone, Copy, Debug)]
pub struct ForwardOptions {
    /// Dropout probability on the adapters' input (0 at evaluation).
    pub dropout: f32,
    /// Seed of the dropout masks of this pass.
    pub dropout_seed: u64,
}

impl ForwardOptions {
    /// No dropout: evaluation, parity, generation.
    pub const EVAL: ForwardOptions = ForwardOptions {
        dropout: 0.0,
        dropout_seed: 0,
    };
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f32, tracked: bool) -> Result<Tensor> {
    if tracked {
        Ok(x.contiguous()?.apply_op1(RmsNorm {
            weight: w.clone(),
            eps,
        })?)
    } else {
        Ok(candle_nn::ops::rms_norm(&x.contiguous()?, w, eps)?)
    }
}

/// The composite RMSNorm (every step an op with candle's own backward), the reference the
/// tests hold [`RmsNorm`] to.
#[cfg(test)]
pub(crate) fn rms_norm_composite(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let r = (ms + f64::from(eps))?.sqrt()?;
    Ok(x.broadcast_div(&r)?.broadcast_mul(w)?)
}

/// The gradient-carrying RMSNorm and softmax, for tests of their backward passes.
#[cfg(test)]
pub(crate) fn tracked_norm_and_softmax_for_tests(
    x: &Tensor,
    w: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    Ok((rms_norm(x, w, eps, true)?, softmax(x, true)?))
}

/// The input of a custom op as a contiguous f32 tensor of its own.
fn op_input(storage: &CpuStorage, layout: &Layout, op: &str) -> candle_core::Result<Tensor> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} needs a contiguous input");
    };
    let values = storage
        .as_slice::<f32>()?
        .get(start..end)
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: bad layout")))?;
    Tensor::from_slice(values, layout.shape(), &Device::Cpu)
}

/// A custom op's output tensor as storage.
fn op_output(y: &Tensor) -> candle_core::Result<(CpuStorage, Shape)> {
    Ok((
        CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?),
        y.shape().clone(),
    ))
}

/// RMSNorm over the last dimension with a frozen weight: candle's fused kernel forward, and
/// a backward that recomputes the inverse root mean square from the input, so the graph
/// keeps no intermediate tensors (the composite form keeps four per norm).
struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = op_input(storage, layout, "rms-norm")?;
        op_output(&candle_nn::ops::rms_norm(&x, &self.weight, self.eps)?)
    }

    /// `∂x = r·u − r³·x·mean(u·x)` with `u = g·w` and `r = 1/√(mean(x²) + ε)`.
    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let x = arg.detach();
        let r = (x.sqr()?.mean_keepdim(D::Minus1)? + f64::from(self.eps))?
            .sqrt()?
            .recip()?;
        let u = grad_res.detach().broadcast_mul(&self.weight)?;
        let m = (&u * &x)?.mean_keepdim(D::Minus1)?;
        let r3m = (r.powf(3.0)? * m)?;
        Ok(Some((u.broadcast_mul(&r)? - x.broadcast_mul(&r3m)?)?))
    }
}

/// Softmax over the last dimension: candle's fused kernel forward, and the backward
/// `y·(g − Σ g·y)` from the stored output alone (the composite form keeps four tensors of
/// attention-score size per layer).
struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = op_input(storage, layout, "softmax-last-dim")?;
        op_output(&candle_nn::ops::softmax_last_dim(&x)?)
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let y = res.detach();
        let g = grad_res.detach();
        let dot = (&g * &y)?.sum_keepdim(D::Minus1)?;
        Ok(Some((y * g.broadcast_sub(&dot)?)?))
    }
}

/// `x·cos + rotate_half(x)·sin` for `x` of shape `[heads, seq, head_dim]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
    let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

fn softmax(x: &Tensor, tracked: bool) -> Result<Tensor> {
    if tracked {
        Ok(x.contiguous()?.apply_op1(SoftmaxLastDim)?)
    } else {
        Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?)
    }
}

/// Additive attention bias for a packed row: 0 where query `i` may read key `j` (`j ≤ i`,
/// and the same example or the shared prefix `j < shared`), a large negative number
/// elsewhere.
fn attention_bias(segment: &[u32], shared: usize) -> Result<Tensor> {
    let t = segment.len();
    let mut bias = vec![-1e9f32; t * t];
    for i in 0..t {
        for j in 0..=i {
            if j < shared || segment[i] == segment[j] {
                bias[i * t + j] = 0.0;
            }
        }
    }
    Ok(Tensor::from_vec(bias, (t, t), &Device::Cpu)?)
}

/// Per-row tensors every block reads: RoPE tables and the attention bias.
struct RowContext {
    cos: Tensor,
    sin: Tensor,
    bias: Tensor,
}

/// Seeded dropout mask scaled by `1/(1-p)`, shape `[rows, cols]`.
fn dropout_mask(rows: usize, cols: usize, p: f32, seed: u64) -> Result<Tensor> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let keep = 1.0 / (1.0 - p);
    let values: Vec<f32> = (0..rows * cols)
        .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
        .collect();
    Ok(Tensor::from_vec(values, (rows, cols), &Device::Cpu)?)
}

impl BaseModel {
    fn rope_tables(&self, positions: &[u32]) -> Result<(Tensor, Tensor)> {
        let hd = self.config.head_dim();
        let mut cos = Vec::with_capacity(positions.len() * hd);
        let mut sin = Vec::with_capacity(positions.len() * hd);
        for &p in positions {
            let angles: Vec<f32> = self.inv_freq.iter().map(|f| p as f32 * f).collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos()));
                sin.extend(angles.iter().map(|a| a.sin()));
            }
        }
        let t = positions.len();
        Ok((
            Tensor::from_vec(cos, (1, t, hd), &Device::Cpu)?,
            Tensor::from_vec(sin, (1, t, hd), &Device::Cpu)?,
        ))
    }

    /// Final hidden states `[seq, hidden]` of a packed row, with `adapter` applied.
    pub fn hidden(
        &self,
        row: &PackedRow,
        adapter: Option<&LoraAdapter>,
        opts: ForwardOptions,
    ) -> Result<Tensor> {
        self.hidden_from(row, adapter, opts, None)
    }

    /// Hidden states `[seq, hidden]` entering layer `layer` of a packed row without any
    /// adapter: what every adapter at or above `layer` starts from (carries no gradient).
    pub fn frozen_hidden(&self, row: &PackedRow, layer: usize) -> Result<Tensor> {
        ensure!(
            layer <= self.blocks.len(),
            "layer {layer} is past the model's {} layers",
            self.blocks.len()
        );
        let mut h = self.embed_row(row)?;
        let ctx = self.row_context(row)?;
        for l in 0..layer {
            h = self.block(l, &h, &ctx, None, ForwardOptions::EVAL, false)?;
        }
        Ok(h.detach())
    }

    /// Final hidden states like [`BaseModel::hidden`], optionally starting at layer `l` from
    /// `start = (l, h)`, the states [`BaseModel::frozen_hidden`] gives for that row and
    /// layer; `l` must not be above `adapter`'s lowest layer.
    pub fn hidden_from(
        &self,
        row: &PackedRow,
        adapter: Option<&LoraAdapter>,
        opts: ForwardOptions,
        start: Option<(usize, Tensor)>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let lowest = adapter
            .and_then(LoraAdapter::lowest_layer)
            .unwrap_or(usize::MAX);
        let (first, mut h) = match start {
            Some((l, h)) => {
                ensure!(
                    l <= lowest.min(self.blocks.len()),
                    "frozen states of layer {l} are above the lowest adapted layer"
                );
                ensure!(
                    h.dims() == [row.ids.len(), c.hidden_size],
                    "frozen states of shape {:?} for a row of {} tokens",
                    h.dims(),
                    row.ids.len()
                );
                (l, h)
            }
            None => (0, self.embed_row(row)?),
        };
        let ctx = self.row_context(row)?;
        for l in first..self.blocks.len() {
            h = self.block(l, &h, &ctx, adapter, opts, l >= lowest)?;
        }
        rms_norm(&h, &self.norm, c.rms_norm_eps, lowest != usize::MAX)
    }

    /// Embeddings `[seq, hidden]` of a row's tokens, after checking the row.
    fn embed_row(&self, row: &PackedRow) -> Result<Tensor> {
        let c = &self.config;
        let t = row.ids.len();
        ensure!(t > 0, "empty row");
        ensure!(
            row.positions.len() == t && row.segment.len() == t && row.shared <= t,
            "row fields differ in length"
        );
        if let Some(&bad) = row.ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            bail!(
                "token id {bad} is outside the vocabulary of {} rows",
                c.vocab_size
            );
        }
        let ids = Tensor::from_slice(&row.ids, t, &Device::Cpu)?;
        Ok(self.embed.index_select(&ids, 0)?)
    }

    /// RoPE tables and attention bias of a row.
    fn row_context(&self, row: &PackedRow) -> Result<RowContext> {
        let t = row.ids.len();
        ensure!(
            row.positions.len() == t && row.segment.len() == t && row.shared <= t,
            "row fields differ in length"
        );
        let (cos, sin) = self.rope_tables(&row.positions)?;
        let bias = attention_bias(&row.segment, row.shared)?;
        Ok(RowContext { cos, sin, bias })
    }

    /// Decoder block `l` on `h`; `tracked` selects the gradient-carrying ops.
    fn block(
        &self,
        l: usize,
        h: &Tensor,
        ctx: &RowContext,
        adapter: Option<&LoraAdapter>,
        opts: ForwardOptions,
        tracked: bool,
    ) -> Result<Tensor> {
        let c = &self.config;
        let b = self
            .blocks
            .get(l)
            .with_context(|| format!("no layer {l}"))?;
        let t = h.dim(0)?;
        let (cos, sin, bias) = (&ctx.cos, &ctx.sin, &ctx.bias);
        let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
        let group = nh / nkv;
        let scale = 1.0 / (hd as f64).sqrt();
        let x = rms_norm(h, &b.input_norm, c.rms_norm_eps, tracked)?;
        let proj = |target: Target, w: &Tensor, x: &Tensor| -> Result<Tensor> {
            let y = linear(x, w, tracked)?;
            match adapter.and_then(|a| a.pair(l, target)) {
                Some(pair) => {
                    let xin = if opts.dropout > 0.0 {
                        let seed = opts
                            .dropout_seed
                            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                            .wrapping_add((l * 8 + target as usize) as u64);
                        let (r, cols) = x.dims2()?;
                        x.mul(&dropout_mask(r, cols, opts.dropout, seed)?)?
                    } else {
                        x.clone()
                    };
                    let delta = xin
                        .matmul(&pair.a.as_tensor().t()?)?
                        .matmul(&pair.b.as_tensor().t()?)?;
                    Ok((y + (delta * pair.scale)?)?)
                }
                None => Ok(y),
            }
        };
        let q = proj(Target::Q, &b.q, &x)?;
        let k = proj(Target::K, &b.k, &x)?;
        let v = proj(Target::V, &b.v, &x)?;
        let q = q.reshape((t, nh, hd))?.transpose(0, 1)?;
        let k = k.reshape((t, nkv, hd))?.transpose(0, 1)?;
        let v = v.reshape((t, nkv, hd))?.transpose(0, 1)?.contiguous()?;
        let q = rope(&q, cos, sin)?;
        let k = rope(&k, cos, sin)?;
        // Query head kv·group + r reads KV head kv.
        let q = q.reshape((nkv, group * t, hd))?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
        let scores = scores.reshape((nkv, group, t, t))?.broadcast_add(bias)?;
        let probs = softmax(&scores, tracked)?.reshape((nkv, group * t, t))?;
        let att = probs.matmul(&v)?.reshape((nh, t, hd))?;
        let att = att.transpose(0, 1)?.reshape((t, nh * hd))?;
        let o = proj(Target::O, &b.o, &att)?;
        let h = (h + o)?;
        let x = rms_norm(&h, &b.post_norm, c.rms_norm_eps, tracked)?;
        let gate = proj(Target::Gate, &b.gate, &x)?;
        let up = proj(Target::Up, &b.up, &x)?;
        let act = (candle_nn::ops::silu(&gate)? * up)?;
        let down = proj(Target::Down, &b.down, &act)?;
        Ok((h + down)?)
    }

    /// Logits `[rows.len(), vocab]` at the given row positions.
    pub fn logits_at(&self, hidden: &Tensor, rows: &[usize], tracked: bool) -> Result<Tensor> {
        let idx: Vec<u32> = rows
            .iter()
            .map(|&r| u32::try_from(r).context("row index overflows u32"))
            .collect::<Result<_>>()?;
        let n = idx.len();
        let sel = hidden.index_select(&Tensor::from_vec(idx, n, &Device::Cpu)?, 0)?;
        linear(&sel, &self.head, tracked)
    }

    /// Mean negative log-likelihood of the row's targets (a scalar tensor) and the number
    /// of targets. The result carries gradients for `adapter` when it has any.
    pub fn loss(
        &self,
        row: &PackedRow,
        adapter: Option<&LoraAdapter>,
        opts: ForwardOptions,
    ) -> Result<(Tensor, usize)> {
        self.loss_from(row, adapter, opts, None)
    }

    /// [`BaseModel::loss`] starting from frozen states (see [`BaseModel::hidden_from`]).
    pub fn loss_from(
        &self,
        row: &PackedRow,
        adapter: Option<&LoraAdapter>,
        opts: ForwardOptions,
        start: Option<(usize, Tensor)>,
    ) -> Result<(Tensor, usize)> {
        ensure!(!row.targets.is_empty(), "a row with nothing to score");
        let tracked = adapter.and_then(LoraAdapter::lowest_layer).is_some();
        let hidden = self.hidden_from(row, adapter, opts, start)?;
        let rows: Vec<usize> = row.targets.iter().map(|&(p, _)| p).collect();
        let logits = self.logits_at(&hidden, &rows, tracked)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let n = row.targets.len();
        let tgt: Vec<u32> = row.targets.iter().map(|&(_, t)| t).collect();
        let tgt = Tensor::from_vec(tgt, (n, 1), &Device::Cpu)?;
        let picked = logp.gather(&tgt, 1)?;
        Ok(((picked.sum_all()? * (-1.0 / n as f64))?, n))
    }

    /// Logits of the last position of `ids` (one example, positions from 0): greedy
    /// decoding and parity checks.
    pub fn last_logits(&self, ids: &[u32], adapter: Option<&LoraAdapter>) -> Result<Vec<f32>> {
        let t = ids.len();
        let row = PackedRow {
            ids: ids.to_vec(),
            positions: (0..t as u32).collect(),
            segment: vec![0; t],
            targets: vec![],
            shared: 0,
        };
        let hidden = self.hidden(&row, adapter, ForwardOptions::EVAL)?;
        let logits = self.logits_at(&hidden, &[t - 1], false)?;
        Ok(logits
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?)
    }

    /// Greedy continuation of `prompt`: up to `max_new` tokens, stopping after any of `eos`.
    pub fn greedy(
        &self,
        prompt: &[u32],
        adapter: Option<&LoraAdapter>,
        max_new: usize,
        eos: &[u32],
    ) -> Result<Vec<u32>> {
        let mut ids = prompt.to_vec();
        let mut out = vec![];
        for _ in 0..max_new {
            let logits = self.last_logits(&ids, adapter)?;
            let next = argmax(&logits);
            out.push(next);
            if eos.contains(&next) {
                break;
            }
            ids.push(next);
        }
        Ok(out)
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// The gradient-carrying frozen product, for tests of its backward pass.
#[cfg(test)]
pub(crate) fn frozen_linear_for_tests(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    linear(x, w, true)
}
