//! Integer dot products of ggml weight blocks against int8 activations, the way llama.cpp
//! multiplies quantized weights: the 32-value formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) against
//! activations quantized per 32 values (llama.cpp's Q8_0/Q8_1), the K-quants (Q4_K, Q5_K,
//! Q6_K) against activations quantized per 256 values with sums per 16 (llama.cpp's Q8_K). A
//! portable scalar reference, AVX2 and AVX-512 VNNI paths on x86-64, and a small NEON path on
//! aarch64 that plugs into the same generic block loops the scalar path runs. Block layouts
//! come from [`crate::engine::quant`]; nothing here reads files or knows about tract.
//!
//! Shapes: a weight matrix is `[rows, cols]` of blocks along `cols`; activations are
//! `[m, cols]`; [`matmul`] writes the product `[m, rows]`, as a graph's `x · Wᵀ` lays it out
//! (how the caller splits activation rows over threads), and [`matmul_t`] writes a range of
//! weight rows transposed, `[rows, m]`, so that the range owns a contiguous slice of the
//! output (how the caller splits weight rows over threads). One activation row is decode;
//! several are prefill, taken [`TILE`] at a time so each weight block is unpacked once per
//! tile.

// SIMD intrinsics and raw block loads need `unsafe`; this module is the only place allowed.
#![allow(
    unsafe_code,
    reason = "SIMD kernels: every block states its SAFETY contract"
)]

pub mod attention;
pub mod gemm;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_gemm;

use thiserror::Error;

use crate::engine::quant::{self, GgmlType, QK, QK_K};

/// Activation rows handled together per weight block by the tiled kernels.
pub const TILE: usize = 4;

/// Output columns per packed panel of the f32 products ([`gemm`]).
pub const PANEL: usize = 16;

/// Weight rows the decode kernels take per pass: a split of a product's rows over threads
/// should start at multiples of it.
pub const GEMV_ROWS: usize = 4;

/// Shape or format errors of a quantized product.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KernelError {
    /// The ggml type has no integer-dot kernel here.
    #[error("no integer-dot kernel for ggml type {0:?}")]
    Unsupported(GgmlType),
    /// The inner dimension is not a whole number of blocks.
    #[error("inner dimension {cols} is not a positive multiple of {block}")]
    NotWholeBlocks {
        /// Inner dimension.
        cols: usize,
        /// Values per block of the format.
        block: usize,
    },
    /// The weight bytes do not match `rows × cols` of the format.
    #[error("{rows}×{cols} {kind:?} needs {expected} bytes, got {actual}")]
    WeightLength {
        /// Weight format.
        kind: GgmlType,
        /// Output rows.
        rows: usize,
        /// Inner dimension.
        cols: usize,
        /// Bytes the shape requires.
        expected: usize,
        /// Bytes supplied.
        actual: usize,
    },
    /// Activations or output do not match the weight's shape.
    #[error("shape mismatch: {0}")]
    Shape(String),
}

/// A weight format with an integer-dot kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockKind {
    /// `d·(q − 8)`, 4-bit.
    Q4_0,
    /// `d·q + m`, 4-bit.
    Q4_1,
    /// `d·(q − 16)`, 5-bit.
    Q5_0,
    /// `d·q + m`, 5-bit.
    Q5_1,
    /// `d·q`, 8-bit signed.
    Q8_0,
    /// 4-bit K-quant: `d·scale·q − dmin·min` per 32-value sub-block of 256.
    Q4K,
    /// 5-bit K-quant, as Q4_K with a fifth bit.
    Q5K,
    /// 6-bit K-quant: `d·scale·(q − 32)` per 16-value sub-block of 256.
    Q6K,
}

impl BlockKind {
    /// The kernel format for a ggml type, if there is one.
    pub fn from_ggml(kind: GgmlType) -> Result<Self, KernelError> {
        match kind {
            GgmlType::Q4_0 => Ok(Self::Q4_0),
            GgmlType::Q4_1 => Ok(Self::Q4_1),
            GgmlType::Q5_0 => Ok(Self::Q5_0),
            GgmlType::Q5_1 => Ok(Self::Q5_1),
            GgmlType::Q8_0 => Ok(Self::Q8_0),
            GgmlType::Q4K => Ok(Self::Q4K),
            GgmlType::Q5K => Ok(Self::Q5K),
            GgmlType::Q6K => Ok(Self::Q6K),
            other => Err(KernelError::Unsupported(other)),
        }
    }

    /// The ggml type.
    pub fn ggml(self) -> GgmlType {
        match self {
            Self::Q4_0 => GgmlType::Q4_0,
            Self::Q4_1 => GgmlType::Q4_1,
            Self::Q5_0 => GgmlType::Q5_0,
            Self::Q5_1 => GgmlType::Q5_1,
            Self::Q8_0 => GgmlType::Q8_0,
            Self::Q4K => GgmlType::Q4K,
            Self::Q5K => GgmlType::Q5K,
            Self::Q6K => GgmlType::Q6K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.ggml().block_bytes()
    }

    /// Values per block: 32, or 256 for the K-quants. Activations are quantized in blocks of
    /// the same size.
    pub fn block_values(self) -> usize {
        self.ggml().block_values()
    }

    /// Whether this is a K-quant (256-value super-blocks, Q8_K activations).
    pub fn is_k_quant(self) -> bool {
        matches!(self, Self::Q4K | Self::Q5K | Self::Q6K)
    }
}

/// A block-quantized weight matrix borrowed in its stored ggml bytes, shape-checked.
#[derive(Clone, Copy, Debug)]
pub struct QuantMatrix<'a> {
    kind: BlockKind,
    rows: usize,
    cols: usize,
    bytes: &'a [u8],
}

impl<'a> QuantMatrix<'a> {
    /// Wraps `bytes` as a `[rows, cols]` matrix of `kind` blocks, row-major.
    pub fn new(
        kind: BlockKind,
        rows: usize,
        cols: usize,
        bytes: &'a [u8],
    ) -> Result<Self, KernelError> {
        let block = kind.block_values();
        if cols == 0 || !cols.is_multiple_of(block) {
            return Err(KernelError::NotWholeBlocks { cols, block });
        }
        let expected = (cols / block)
            .checked_mul(kind.block_bytes())
            .and_then(|row| row.checked_mul(rows));
        if expected != Some(bytes.len()) {
            return Err(KernelError::WeightLength {
                kind: kind.ggml(),
                rows,
                cols,
                expected: expected.unwrap_or(usize::MAX),
                actual: bytes.len(),
            });
        }
        Ok(Self {
            kind,
            rows,
            cols,
            bytes,
        })
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Inner dimension.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Weight format.
    pub fn kind(&self) -> BlockKind {
        self.kind
    }

    fn row_bytes(&self) -> usize {
        self.cols / self.kind.block_values() * self.kind.block_bytes()
    }

    fn row(&self, r: usize) -> &'a [u8] {
        let n = self.row_bytes();
        &self.bytes[r * n..(r + 1) * n]
    }
}

/// `v` rounded to the nearest integer, ties to even, for `|v| < 2²²` (beyond, a value of the
/// same sign at least as large, which the quantizers clamp anyway): adding and taking away
/// 1.5 · 2²³ leaves no fraction bits, and no libm call sits in the quantization loop.
#[inline]
fn round_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// Activation rows quantized to int8 in `−127..=127`, in blocks of 32 values (llama.cpp's
/// Q8_0/Q8_1: per block the scale `d` and `s = d · Σ q`, what Q4_1/Q5_1's offset multiplies)
/// or of 256 values (llama.cpp's Q8_K: per block the scale `d` and the integer sum of every 16
/// values, what the K-quants' mins and Q6_K's offset multiply).
#[derive(Clone, Debug, Default)]
pub struct Q8Rows {
    rows: usize,
    cols: usize,
    block: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
    bsums: Vec<i32>,
}

impl Q8Rows {
    /// Quantizes `x` in the activation blocks weights of `kind` multiply with.
    pub fn quantize_for(
        &mut self,
        kind: BlockKind,
        x: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<(), KernelError> {
        if kind.is_k_quant() {
            self.quantize_k(x, rows, cols)
        } else {
            self.quantize(x, rows, cols)
        }
    }

    /// Quantizes `x`, `rows × cols` f32 row-major, per 32 values (`d = amax / 127`, as
    /// ggml's `quantize_row_q8_0`, ties to even as its SIMD paths round), reusing this value's
    /// buffers; with AVX2 when the CPU has it, to the same bytes.
    pub fn quantize(&mut self, x: &[f32], rows: usize, cols: usize) -> Result<(), KernelError> {
        self.quantize_on(Isa::detect(), x, rows, cols)
    }

    /// [`Self::quantize`] on `isa` (the scalar path unless `isa` is an x86 one this CPU has).
    pub fn quantize_on(
        &mut self,
        isa: Isa,
        x: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<(), KernelError> {
        self.reset(x, rows, cols, QK)?;
        self.qs.resize(x.len(), 0);
        for (blk, q) in x.chunks_exact(QK).zip(self.qs.chunks_exact_mut(QK)) {
            #[cfg(target_arch = "x86_64")]
            if let Some((d, sum)) = x86::quantize_block(isa, blk, q) {
                self.d.push(d);
                self.s.push(d * sum as f32);
                continue;
            }
            let amax = blk.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for (o, &v) in q.iter_mut().zip(blk) {
                // `as` saturates and maps NaN to 0; the clamp keeps −128 out (sign trick).
                let v = (round_even(v * id) as i32).clamp(-127, 127);
                sum += v;
                *o = v as i8;
            }
            self.d.push(d);
            self.s.push(d * sum as f32);
        }
        let _ = isa;
        Ok(())
    }

    /// Quantizes `x`, `rows × cols` f32 row-major, per 256 values as ggml's
    /// `quantize_row_q8_K_ref` does (scale `−127 / max` of the value with the largest
    /// magnitude, round half to even), with the integer sum of every 16 values.
    pub fn quantize_k(&mut self, x: &[f32], rows: usize, cols: usize) -> Result<(), KernelError> {
        self.reset(x, rows, cols, QK_K)?;
        for blk in x.chunks_exact(QK_K) {
            let (mut amax, mut max) = (0f32, 0f32);
            for &v in blk {
                if v.abs() > amax {
                    (amax, max) = (v.abs(), v);
                }
            }
            let iscale = if amax != 0.0 { -127.0 / max } else { 0.0 };
            let start = self.qs.len();
            for &v in blk {
                // `as` saturates and maps NaN to 0; −128 stays out as in `quantize`.
                let q = (round_even(iscale * v) as i32).clamp(-127, 127);
                self.qs.push(q as i8);
            }
            for sixteen in self.qs[start..].chunks_exact(16) {
                self.bsums.push(sixteen.iter().map(|&q| i32::from(q)).sum());
            }
            self.d.push(if iscale != 0.0 { 1.0 / iscale } else { 0.0 });
        }
        Ok(())
    }

    /// Checks the shape and empties the buffers for blocks of `block` values.
    fn reset(
        &mut self,
        x: &[f32],
        rows: usize,
        cols: usize,
        block: usize,
    ) -> Result<(), KernelError> {
        if cols == 0 || !cols.is_multiple_of(block) {
            return Err(KernelError::NotWholeBlocks { cols, block });
        }
        if rows.checked_mul(cols) != Some(x.len()) {
            return Err(KernelError::Shape(format!(
                "{} activations are not {rows}×{cols}",
                x.len()
            )));
        }
        let blocks = x.len() / block;
        (self.rows, self.cols, self.block) = (rows, cols, block);
        self.qs.clear();
        self.qs.reserve(x.len());
        self.d.clear();
        self.d.reserve(blocks);
        self.s.clear();
        self.bsums.clear();
        if block == QK {
            self.s.reserve(blocks);
        } else {
            self.bsums.reserve(x.len() / 16);
        }
        Ok(())
    }

    /// Activation rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    fn blocks_per_row(&self) -> usize {
        self.cols / self.block
    }
}

/// An instruction set a kernel is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust; the reference every other path is tested against.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C (`maddubs` products).
    Avx2,
    /// x86-64 AVX-512 VNNI on 256-bit vectors (`vpdpbusd` products).
    Avx512Vnni,
    /// aarch64 NEON widening multiplies.
    Neon,
}

impl Isa {
    /// The fastest instruction set this CPU has.
    pub fn detect() -> Self {
        [Self::Avx512Vnni, Self::Avx2, Self::Neon]
            .into_iter()
            .find(|isa| isa.is_available())
            .unwrap_or(Self::Scalar)
    }

    /// Whether this CPU can run the kernels for `self` (checked at run time).
    pub fn is_available(self) -> bool {
        match self {
            Self::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => x86::has_avx2(),
            #[cfg(target_arch = "x86_64")]
            Self::Avx512Vnni => x86::has_avx512_vnni(),
            #[cfg(target_arch = "aarch64")]
            Self::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns, reason = "the arms above depend on the target")]
            _ => false,
        }
    }
}

/// `Σ a[i]·b[i]` over the shorter of the two f32 slices (attention's query-key products):
/// AVX2 with FMA when the CPU has them, else eight independent lanes that vectorise.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = x86::dot_f32(a, b) {
        return s;
    }
    let mut lanes = [0f32; 8];
    let n = a.len().min(b.len());
    let (ac, bc) = (a[..n].chunks_exact(8), b[..n].chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for ((l, a), b) in lanes.iter_mut().zip(x).zip(y) {
            *l += a * b;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `y[i] += alpha · x[i]` over the shorter of the two (attention's weighted sum of values):
/// AVX2 with FMA when the CPU has them.
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if x86::axpy_f32(alpha, x, y) {
        return;
    }
    for (o, v) in y.iter_mut().zip(x) {
        *o += alpha * v;
    }
}

/// `out[i·n + r] = Σ_c x[i·k + c] · w[r·k + c]`: the f32 product `x · wᵀ` of `[m, k]`
/// activations with an `[n, k]` weight, written `[m, n]` row-major, on matrixmultiply's GEMM
/// (which reads `wᵀ` in place through strides).
pub fn matmul_f32_t(x: &[f32], w: &[f32], k: usize, out: &mut [f32]) -> Result<(), KernelError> {
    if k == 0 || !x.len().is_multiple_of(k) || !w.len().is_multiple_of(k) {
        return Err(KernelError::Shape(format!(
            "{} activations and {} weights are not rows of {k}",
            x.len(),
            w.len()
        )));
    }
    let (m, n) = (x.len() / k, w.len() / k);
    if out.len() != m * n {
        return Err(KernelError::Shape(format!(
            "{} outputs for {m} activation rows by {n} weight rows",
            out.len()
        )));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let (ki, ni) = (k as isize, n as isize);
    // SAFETY: A is `x`, `m × k` at row stride `k`; B is `wᵀ`, `k × n` read from the `n × k`
    // `w` (row stride 1, column stride `k`); C is `out`, `m × n` at row stride `n`. The
    // lengths were checked above, `out` is the only buffer written and no input aliases it.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            x.as_ptr(),
            ki,
            1,
            w.as_ptr(),
            1,
            ki,
            0.0,
            out.as_mut_ptr(),
            ni,
            1,
        );
    }
    Ok(())
}

/// Decodes the Q8_0 rows of `w` to f32 into `out` (`rows × cols` values, row-major), reusing
/// its buffer.
pub fn decode_q8_0(w: &QuantMatrix<'_>, out: &mut Vec<f32>) -> Result<(), KernelError> {
    if w.kind != BlockKind::Q8_0 {
        return Err(KernelError::Shape(format!(
            "{:?} weights are not Q8_0",
            w.kind
        )));
    }
    out.clear();
    out.resize(w.rows * w.cols, 0.0);
    let bb = w.kind.block_bytes();
    for (blk, o) in w.bytes.chunks_exact(bb).zip(out.chunks_exact_mut(QK)) {
        let d = quant::f16_at(blk, 0);
        for (o, &q) in o.iter_mut().zip(&blk[quant::Q8_0_QS_OFFSET..]) {
            *o = d * f32::from(q as i8);
        }
    }
    Ok(())
}

/// `out_t[r·m + i] = Σ_k w[row0 + r, k] · x[i, k]` for `r` in `0..out_t.len() / m`: the
/// product of weight rows `row0..` with every activation row, written transposed. Runs on
/// `isa` when this CPU has it, else on the scalar path.
pub fn matmul_t(
    isa: Isa,
    w: &QuantMatrix<'_>,
    row0: usize,
    x: &Q8Rows,
    out_t: &mut [f32],
) -> Result<(), KernelError> {
    let m = x.rows;
    check_shapes(w, x, out_t.len())?;
    let n = out_t.len() / m;
    if row0.checked_add(n).is_none_or(|end| end > w.rows) {
        return Err(KernelError::Shape(format!(
            "rows {row0}..+{n} outside {} weight rows",
            w.rows
        )));
    }
    product(isa, w, row0..row0 + n, x, out_t, Layout { row: m, act: 1 });
    Ok(())
}

/// `out[i·rows + r] = Σ_k w[r, k] · x[i, k]`: every weight row with every activation row,
/// `[m, rows]` row-major, the layout a graph's `x · Wᵀ` has, so nothing is transposed after.
pub fn matmul(
    isa: Isa,
    w: &QuantMatrix<'_>,
    x: &Q8Rows,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_shapes(w, x, out.len())?;
    if out.len() != x.rows * w.rows {
        return Err(KernelError::Shape(format!(
            "{} outputs for {} activation rows by {} weight rows",
            out.len(),
            x.rows,
            w.rows
        )));
    }
    product(
        isa,
        w,
        0..w.rows,
        x,
        out,
        Layout {
            row: 1,
            act: w.rows,
        },
    );
    Ok(())
}

/// Where the product of weight row `r` (counted from the first row computed) with activation
/// row `i` goes: `out[r · row + i · act]`.
#[derive(Clone, Copy, Debug)]
struct Layout {
    row: usize,
    act: usize,
}

/// Refuses weights and activations that do not meet, or an output that is not whole rows.
fn check_shapes(w: &QuantMatrix<'_>, x: &Q8Rows, outputs: usize) -> Result<(), KernelError> {
    let blocks_fit = x.block == w.kind.block_values();
    if x.cols != w.cols || !blocks_fit || x.rows == 0 || !outputs.is_multiple_of(x.rows) {
        return Err(KernelError::Shape(format!(
            "{}×{} {:?} weights, {}×{} activations in blocks of {}, {} outputs",
            w.rows, w.cols, w.kind, x.rows, x.cols, x.block, outputs
        )));
    }
    Ok(())
}

/// Weight rows `rows` times every activation row into `out` laid out as `layout` says; the
/// caller checked the shapes, and that `out` holds every place the layout names.
fn product(
    isa: Isa,
    w: &QuantMatrix<'_>,
    rows: std::ops::Range<usize>,
    x: &Q8Rows,
    out: &mut [f32],
    layout: Layout,
) {
    #[cfg(target_arch = "x86_64")]
    if x86::gemm(isa, w, rows.clone(), x, out, layout) {
        return;
    }
    let m = x.rows;
    for (r, row) in rows.enumerate() {
        let w_row = w.row(row);
        let mut i0 = 0;
        while i0 < m {
            let mt = (m - i0).min(TILE);
            let mut tile = [0f32; TILE];
            dot_tile(isa, w.kind, w_row, x, i0, &mut tile[..mt]);
            for (j, v) in tile[..mt].iter().enumerate() {
                out[r * layout.row + (i0 + j) * layout.act] = *v;
            }
            i0 += mt;
        }
    }
}

/// Dots one weight row with activation rows `i0..i0 + out.len()` (at most [`TILE`]).
fn dot_tile(isa: Isa, kind: BlockKind, w_row: &[u8], x: &Q8Rows, i0: usize, out: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni if isa.is_available() => {
            x86::dot_tile(isa, kind, w_row, x, i0, out)
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon if isa.is_available() => {
            for (j, o) in out.iter_mut().enumerate() {
                *o = generic_loop(kind, w_row, x, i0 + j, neon::isum);
            }
        }
        _ => {
            for (j, o) in out.iter_mut().enumerate() {
                *o = generic_loop(kind, w_row, x, i0 + j, isum_scalar);
            }
        }
    }
}

/// The generic loop of `kind`'s block size with `isum` as the integer product.
fn generic_loop(kind: BlockKind, w_row: &[u8], x: &Q8Rows, i: usize, isum: Isum) -> f32 {
    if kind.is_k_quant() {
        k_block_loop(kind, w_row, x, i, isum)
    } else {
        block_loop(kind, w_row, x, i, isum)
    }
}

/// An integer product `Σ w[i] · a[i]` over the values of `w` (a multiple of 16); `a` holds at
/// least as many.
type Isum = fn(&[i8], &[i8]) -> i32;

/// The portable [`Isum`].
fn isum_scalar(w: &[i8], a: &[i8]) -> i32 {
    w.iter()
        .zip(a)
        .map(|(&w, &a)| i32::from(w) * i32::from(a))
        .sum()
}

/// A 32-value weight block's scale, offset (Q4_1 and Q5_1, else 0) and values as signed bytes
/// (`q − 8` for Q4_0, `q − 16` for Q5_0, the raw value for Q4_1 and Q5_1, the stored byte for
/// Q8_0). Caller guarantees a whole block of a 32-value format.
fn unpack_block(kind: BlockKind, blk: &[u8]) -> (f32, f32, [i8; QK]) {
    let mut w = [0i8; QK];
    match kind {
        BlockKind::Q4_0 => {
            let (d, q) = quant::split_q4_0(blk);
            for (o, v) in w.iter_mut().zip(q) {
                *o = v as i8 - 8;
            }
            (d, 0.0, w)
        }
        BlockKind::Q4_1 => {
            let (d, m, q) = quant::split_q4_1(blk);
            for (o, v) in w.iter_mut().zip(q) {
                *o = v as i8;
            }
            (d, m, w)
        }
        BlockKind::Q5_0 => {
            let (d, q) = quant::split_q5_0(blk);
            for (o, v) in w.iter_mut().zip(q) {
                *o = v as i8 - 16;
            }
            (d, 0.0, w)
        }
        BlockKind::Q5_1 => {
            let (d, m, q) = quant::split_q5_1(blk);
            for (o, v) in w.iter_mut().zip(q) {
                *o = v as i8;
            }
            (d, m, w)
        }
        BlockKind::Q8_0 => {
            let (d, q) = quant::split_q8_0(blk);
            (d, 0.0, q)
        }
        BlockKind::Q4K | BlockKind::Q5K | BlockKind::Q6K => (0.0, 0.0, w),
    }
}

/// The generic loop over 32-value blocks every non-x86 path runs: per block, the integer sum
/// times both scales, plus Q4_1/Q5_1's offset times the activation block sum.
fn block_loop(kind: BlockKind, w_row: &[u8], x: &Q8Rows, i: usize, isum: Isum) -> f32 {
    let nb = x.blocks_per_row();
    let mut acc = 0f32;
    for (b, blk) in w_row.chunks_exact(kind.block_bytes()).enumerate() {
        let (dw, mw, w) = unpack_block(kind, blk);
        let at = i * nb + b;
        let a = &x.qs[at * QK..(at + 1) * QK];
        acc += dw * x.d[at] * isum(&w, a) as f32 + mw * x.s[at];
    }
    acc
}

/// A K-quant super-block as the generic loop multiplies it: signed values, one integer scale
/// per sub-block of `sub` values, and (Q4_K/Q5_K) one integer min per 32 values.
struct KBlock {
    d: f32,
    dmin: f32,
    w: [i8; QK_K],
    sub: usize,
    scales: [i32; 16],
    mins: [i32; 8],
}

/// Caller guarantees a whole super-block of a K-quant `kind`.
fn unpack_k(kind: BlockKind, blk: &[u8]) -> KBlock {
    let mut k = KBlock {
        d: 0.0,
        dmin: 0.0,
        w: [0; QK_K],
        sub: QK,
        scales: [0; 16],
        mins: [0; 8],
    };
    if kind == BlockKind::Q6K {
        let (d, scales, w) = quant::split_q6_k(blk);
        (k.d, k.w, k.sub) = (d, w, 16);
        for (o, s) in k.scales.iter_mut().zip(scales) {
            *o = i32::from(s);
        }
    } else {
        let s = quant::split_q45_k(kind.ggml(), blk);
        (k.d, k.dmin) = (s.d, s.dmin);
        for (o, v) in k.w.iter_mut().zip(s.q) {
            *o = v as i8; // < 32
        }
        for j in 0..8 {
            (k.scales[j], k.mins[j]) = (i32::from(s.scales[j]), i32::from(s.mins[j]));
        }
    }
    k
}

/// The two integer sums of one super-block: `Σ_j scale_j · Σ_{sub-block j} w·a`, and
/// `Σ_j min_j · Σ_{32 values of j} a` (0 for Q6_K), from the activation's sums per 16.
fn k_isums(k: &KBlock, a: &[i8], bsums: &[i32], isum: Isum) -> (i32, i32) {
    let sumi = (0..QK_K / k.sub)
        .map(|j| k.scales[j] * isum(&k.w[j * k.sub..(j + 1) * k.sub], &a[j * k.sub..]))
        .sum();
    let summ = if k.sub == QK {
        (0..8)
            .map(|j| k.mins[j] * (bsums[2 * j] + bsums[2 * j + 1]))
            .sum()
    } else {
        0
    };
    (sumi, summ)
}

/// One super-block's contribution from its integer sums, the same expression on every path.
fn k_combine(d: f32, dmin: f32, dy: f32, sumi: i32, summ: i32) -> f32 {
    (d * dy) * sumi as f32 - (dmin * dy) * summ as f32
}

/// The generic loop over K-quant super-blocks every non-x86 path runs.
fn k_block_loop(kind: BlockKind, w_row: &[u8], x: &Q8Rows, i: usize, isum: Isum) -> f32 {
    let nb = x.blocks_per_row();
    let mut acc = 0f32;
    for (b, blk) in w_row.chunks_exact(kind.block_bytes()).enumerate() {
        let k = unpack_k(kind, blk);
        let at = i * nb + b;
        let a = &x.qs[at * QK_K..(at + 1) * QK_K];
        let (sumi, summ) = k_isums(&k, a, &x.bsums[at * 16..(at + 1) * 16], isum);
        acc += k_combine(k.d, k.dmin, x.d[at], sumi, summ);
    }
    acc
}

/// The integer sums of every block of weight row `r` with activation row `i`, on `isa`
/// (scalar when the CPU lacks it): what tests compare exactly across paths. One sum per
/// 32-value block; two per K-quant super-block (the scaled sum, then the mins' sum).
pub fn block_isums(
    isa: Isa,
    w: &QuantMatrix<'_>,
    r: usize,
    x: &Q8Rows,
    i: usize,
) -> Result<Vec<i32>, KernelError> {
    if r >= w.rows || i >= x.rows || w.cols != x.cols || x.block != w.kind.block_values() {
        return Err(KernelError::Shape(format!(
            "row {r} of {}, activation {i} of {}",
            w.rows, x.rows
        )));
    }
    let nb = x.blocks_per_row();
    let w_row = w.row(r);
    let a_row = &x.qs[i * x.cols..(i + 1) * x.cols];
    let bsums = &x.bsums[(i * x.cols / 16).min(x.bsums.len())..];
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni) && isa.is_available() {
        return Ok(x86::block_isums(isa, w.kind, w_row, a_row, bsums, nb));
    }
    let isum: Isum = match isa {
        #[cfg(target_arch = "aarch64")]
        Isa::Neon if isa.is_available() => neon::isum,
        _ => isum_scalar,
    };
    Ok(generic_isums(w.kind, w_row, a_row, bsums, nb, isum))
}

/// [`block_isums`] through the generic loops' block unpacking and `isum`.
fn generic_isums(
    kind: BlockKind,
    w_row: &[u8],
    a_row: &[i8],
    bsums: &[i32],
    nb: usize,
    isum: Isum,
) -> Vec<i32> {
    let (bb, bv) = (kind.block_bytes(), kind.block_values());
    let blocks = w_row.chunks_exact(bb).take(nb).enumerate();
    if kind.is_k_quant() {
        blocks
            .flat_map(|(b, blk)| {
                let k = unpack_k(kind, blk);
                let (sumi, summ) = k_isums(&k, &a_row[b * bv..], &bsums[b * 16..], isum);
                [sumi, summ]
            })
            .collect()
    } else {
        blocks
            .map(|(b, blk)| {
                let (_, _, wq) = unpack_block(kind, blk);
                isum(&wq, &a_row[b * QK..(b + 1) * QK])
            })
            .collect()
    }
}
