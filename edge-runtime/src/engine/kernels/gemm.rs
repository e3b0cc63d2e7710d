//! The f32 products of an encoder layer's linear maps, `y = act(x · Wᵀ + b)`, with the
//! weight `W` (`[n, k]`) packed once into panels of [`PANEL`] output columns (`[k, PANEL]`
//! each, row-major, zero past `n`), which the register tile reads straight through. A Q8_0
//! weight is kept as bytes in panel order ([`Q8Panels`]) and decodes into the same panels,
//! a share of panels per thread, so both precisions run the one product. The bias and the exact GELU are applied
//! to each output tile as it leaves the registers; [`add_layer_norm`] adds a residual and
//! normalises finished rows.
//!
//! AVX2 with FMA when the CPU has them (a 6 × 16 register tile over an L2-sized block of
//! panels), else a portable loop over the same panels that the tests hold the SIMD path to.

pub use super::PANEL;
use super::{BlockKind, Isa, KernelError, QuantMatrix};
use crate::engine::quant::{self, QK};

/// The activation applied after the bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// None.
    Identity,
    /// `0.5 · x · (1 + erf(x / √2))`, erf within 3·10⁻⁷ (Abramowitz and Stegun 7.1.28).
    Gelu,
}

/// f32 storage whose values start on a 64-byte boundary, so that every 16-value panel row
/// is one cache line.
#[derive(Clone, Debug, Default)]
pub struct AlignedBuf {
    raw: Vec<f32>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// Makes room for `len` values; values already held are kept only by chance (callers
    /// overwrite every value they read).
    pub fn set_len(&mut self, len: usize) {
        if self.raw.len() < len + 15 {
            self.raw.resize(len + 15, 0.0);
        }
        let misalign = self.raw.as_ptr() as usize % 64;
        self.start = (64 - misalign) % 64 / std::mem::size_of::<f32>();
        self.len = len;
    }

    /// The values.
    pub fn as_slice(&self) -> &[f32] {
        &self.raw[self.start..self.start + self.len]
    }

    /// The values, writable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// Values of packed panels that hold an `[n, k]` weight.
pub fn panels_len(n: usize, k: usize) -> usize {
    n.div_ceil(PANEL) * k * PANEL
}

/// An `[n, k]` weight packed in panels, borrowed and shape-checked.
#[derive(Clone, Copy, Debug)]
pub struct Panels<'a> {
    data: &'a [f32],
    n: usize,
    k: usize,
}

impl<'a> Panels<'a> {
    /// Wraps `data`, which must hold [`panels_len`]`(n, k)` values.
    pub fn new(data: &'a [f32], n: usize, k: usize) -> Result<Self, KernelError> {
        if n == 0 || k == 0 || data.len() != panels_len(n, k) {
            return Err(KernelError::Shape(format!(
                "{} packed values for a {n}×{k} weight",
                data.len()
            )));
        }
        Ok(Self { data, n, k })
    }

    /// Output columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Inner dimension.
    pub fn k(&self) -> usize {
        self.k
    }
}

/// Packs the row-major `[n, k]` weight `w` into panels in `out`.
pub fn pack_panels(w: &[f32], n: usize, k: usize, out: &mut AlignedBuf) -> Result<(), KernelError> {
    if n == 0 || k == 0 || n.checked_mul(k) != Some(w.len()) {
        return Err(KernelError::Shape(format!(
            "{} weights are not {n}×{k}",
            w.len()
        )));
    }
    out.set_len(panels_len(n, k));
    let dst = out.as_mut_slice();
    dst.fill(0.0);
    for (r, row) in w.chunks_exact(k).enumerate() {
        let (p, j) = (r / PANEL, r % PANEL);
        let panel = &mut dst[p * k * PANEL..(p + 1) * k * PANEL];
        for (kk, &v) in row.iter().enumerate() {
            panel[kk * PANEL + j] = v;
        }
    }
    Ok(())
}

/// A Q8_0 weight (`[n, k]`, 32 values per scale along `k`) laid out as its panels are: per
/// panel, `k` rows of [`PANEL`] signed bytes (zero past `n`), and per 32 of those rows the
/// [`PANEL`] column scales, so that a panel decodes in whole vectors
/// ([`Q8Panels::decode`]).
#[derive(Clone, Debug)]
pub struct Q8Panels {
    n: usize,
    k: usize,
    qs: Vec<i8>,
    scales: Vec<f32>,
}

impl Q8Panels {
    /// Rearranges the Q8_0 blocks of `w`.
    pub fn from_q8_0(w: &QuantMatrix<'_>) -> Result<Self, KernelError> {
        let (n, k) = (w.rows(), w.cols());
        if w.kind() != BlockKind::Q8_0 {
            return Err(KernelError::Shape(format!(
                "{:?} weights are not Q8_0",
                w.kind()
            )));
        }
        let np = n.div_ceil(PANEL);
        let mut qs = vec![0i8; np * k * PANEL];
        let mut scales = vec![0f32; np * (k / QK) * PANEL];
        let bb = w.kind().block_bytes();
        for r in 0..n {
            let (p, j) = (r / PANEL, r % PANEL);
            for (b, blk) in w.row(r).chunks_exact(bb).enumerate() {
                scales[(p * (k / QK) + b) * PANEL + j] = quant::f16_at(blk, 0);
                let src = &blk[quant::Q8_0_QS_OFFSET..quant::Q8_0_QS_OFFSET + QK];
                for (t, &q) in src.iter().enumerate() {
                    qs[(p * k + b * QK + t) * PANEL + j] = q as i8;
                }
            }
        }
        Ok(Self { n, k, qs, scales })
    }

    /// Output columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Inner dimension.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Decodes panels `first_panel..` into `out`, as many as it holds (whole panels of
    /// `k · PANEL` values), the f32 panels [`pack_panels`] makes of the decoded weight; with
    /// AVX2 when the CPU has it.
    pub fn decode(&self, first_panel: usize, out: &mut [f32]) -> Result<(), KernelError> {
        self.decode_on(Isa::detect(), first_panel, out)
    }

    /// [`Self::decode`] on `isa` (the portable path unless `isa` is an x86 one this CPU has).
    pub fn decode_on(
        &self,
        isa: Isa,
        first_panel: usize,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let panel_len = self.k * PANEL;
        let panels = out.len() / panel_len;
        if !out.len().is_multiple_of(panel_len) || first_panel + panels > self.n.div_ceil(PANEL) {
            return Err(KernelError::Shape(format!(
                "{}×{} weight: {} values from panel {first_panel}",
                self.n,
                self.k,
                out.len()
            )));
        }
        let blocks = self.k / QK;
        let qs = &self.qs[first_panel * panel_len..(first_panel + panels) * panel_len];
        let scales =
            &self.scales[first_panel * blocks * PANEL..(first_panel + panels) * blocks * PANEL];
        #[cfg(target_arch = "x86_64")]
        if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni) && super::x86_gemm::decode_q8(qs, scales, out)
        {
            return Ok(());
        }
        let _ = isa;
        for ((o, q), d) in out
            .chunks_exact_mut(QK * PANEL)
            .zip(qs.chunks_exact(QK * PANEL))
            .zip(scales.chunks_exact(PANEL))
        {
            for (o, q) in o.chunks_exact_mut(PANEL).zip(q.chunks_exact(PANEL)) {
                for ((o, &q), &d) in o.iter_mut().zip(q).zip(d) {
                    *o = d * f32::from(q);
                }
            }
        }
        Ok(())
    }
}

/// `out = act(x · Wᵀ + bias)`: `x` is `[m, k]` row-major, `out` `[m, n]`, `W` packed in
/// `b`. On AVX2 with FMA when the CPU has them.
pub fn gemm_bias(
    x: &[f32],
    b: Panels<'_>,
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
) -> Result<(), KernelError> {
    gemm_bias_on(Isa::detect(), x, b, bias, act, out)
}

/// [`gemm_bias`] on `isa` (the portable path unless `isa` is an x86 one this CPU has).
pub fn gemm_bias_on(
    isa: Isa,
    x: &[f32],
    b: Panels<'_>,
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let (n, k) = (b.n, b.k);
    let m = x.len() / k;
    if !x.len().is_multiple_of(k) || bias.len() != n || m.checked_mul(n) != Some(out.len()) {
        return Err(KernelError::Shape(format!(
            "{} activations, {} biases and {} outputs for a {n}×{k} weight",
            x.len(),
            bias.len(),
            out.len()
        )));
    }
    if m == 0 {
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni)
        && super::x86_gemm::gemm(x, b.data, n, k, bias, act == Activation::Gelu, out)
    {
        return Ok(());
    }
    let _ = isa;
    for (xr, yr) in x.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
        for (p, panel) in b.data.chunks_exact(k * PANEL).enumerate() {
            let mut acc = [0f32; PANEL];
            for (&a, brow) in xr.iter().zip(panel.chunks_exact(PANEL)) {
                for (c, &w) in acc.iter_mut().zip(brow) {
                    *c += a * w;
                }
            }
            let col0 = p * PANEL;
            let live = PANEL.min(n - col0);
            for ((o, &c), &bv) in yr[col0..col0 + live]
                .iter_mut()
                .zip(&acc)
                .zip(&bias[col0..])
            {
                let v = c + bv;
                *o = match act {
                    Activation::Identity => v,
                    Activation::Gelu => gelu(v),
                };
            }
        }
    }
    Ok(())
}

/// `erf(x)` as tract's and the SIMD path's (Abramowitz and Stegun 7.1.28, within 3·10⁻⁷).
pub fn erf(x: f32) -> f32 {
    const A: [f32; 6] = [
        0.070_523_08,
        0.042_282_01,
        0.009_270_527,
        0.000_152_014_3,
        0.000_276_567_2,
        0.000_043_063_8,
    ];
    let a = x.abs();
    let p = A.iter().rev().fold(0.0, |acc, &c| (acc + c) * a) + 1.0;
    let p2 = p * p;
    let p4 = p2 * p2;
    let p8 = p4 * p4;
    (1.0 - 1.0 / (p8 * p8)).copysign(x)
}

/// `0.5 · x · (1 + erf(x / √2))`.
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Each row of `y` (rows of `gamma.len()` values) becomes `norm(y + residual) · gamma +
/// beta`, `norm` taking away the row's mean and dividing by `√(variance + eps)`, as ONNX's
/// `LayerNormalization` over the last axis.
pub fn add_layer_norm(
    y: &mut [f32],
    residual: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> Result<(), KernelError> {
    let n = gamma.len();
    if n == 0 || beta.len() != n || residual.len() != y.len() || !y.len().is_multiple_of(n) {
        return Err(KernelError::Shape(format!(
            "{} values, {} residuals, {} scales, {} offsets",
            y.len(),
            residual.len(),
            n,
            beta.len()
        )));
    }
    for (row, res) in y.chunks_exact_mut(n).zip(residual.chunks_exact(n)) {
        let mut lanes = [0f32; 8];
        for (o, &r) in row.iter_mut().zip(res) {
            *o += r;
        }
        lane_sum(row, &mut lanes, |v| v);
        let mean = lanes.iter().sum::<f32>() / n as f32;
        lanes = [0.0; 8];
        lane_sum(row, &mut lanes, |v| (v - mean) * (v - mean));
        let inv = 1.0 / (lanes.iter().sum::<f32>() / n as f32 + eps).sqrt();
        for ((o, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
            *o = (*o - mean) * inv * g + b;
        }
    }
    Ok(())
}

/// Adds `f(v)` of every value of `row` into eight lanes (which vectorises).
fn lane_sum(row: &[f32], lanes: &mut [f32; 8], f: impl Fn(f32) -> f32) {
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += f(v);
        }
    }
    for (l, &v) in lanes.iter_mut().zip(tail) {
        *l += f(v);
    }
}
