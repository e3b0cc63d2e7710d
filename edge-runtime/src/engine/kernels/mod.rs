//! Integer dot products of ggml weight blocks (Q4_0, Q4_1, Q8_0) against activations
//! quantized per 32-value block to int8, the way llama.cpp multiplies quantized weights: a
//! portable scalar reference, AVX2 and AVX-512 VNNI paths on x86-64, and a small NEON path on
//! aarch64. Block layouts come from [`crate::engine::quant`]; nothing here reads files or
//! knows about tract.
//!
//! Shapes: a weight matrix is `[rows, cols]` of blocks along `cols`; activations are
//! `[m, cols]`; [`matmul_t`] writes the product transposed, `[rows, m]`, so that a range of
//! weight rows owns a contiguous slice of the output (how the caller splits work over
//! threads). One activation row is decode; several are prefill, taken [`TILE`] at a time so
//! each weight block is unpacked once per tile.

// SIMD intrinsics and raw block loads need `unsafe`; this module is the only place allowed.
#![allow(
    unsafe_code,
    reason = "SIMD kernels: every block states its SAFETY contract"
)]

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

use thiserror::Error;

use crate::engine::quant::{self, GgmlType, QK};

/// Activation rows handled together per weight block by the tiled kernels.
pub const TILE: usize = 4;

/// Shape or format errors of a quantized product.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KernelError {
    /// The ggml type has no integer-dot kernel here.
    #[error("no integer-dot kernel for ggml type {0:?}")]
    Unsupported(GgmlType),
    /// The inner dimension is not a whole number of 32-value blocks.
    #[error("inner dimension {0} is not a positive multiple of {QK}")]
    NotWholeBlocks(usize),
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
    /// `d·q`, 8-bit signed.
    Q8_0,
}

impl BlockKind {
    /// The kernel format for a ggml type, if there is one.
    pub fn from_ggml(kind: GgmlType) -> Result<Self, KernelError> {
        match kind {
            GgmlType::Q4_0 => Ok(Self::Q4_0),
            GgmlType::Q4_1 => Ok(Self::Q4_1),
            GgmlType::Q8_0 => Ok(Self::Q8_0),
            other => Err(KernelError::Unsupported(other)),
        }
    }

    /// The ggml type.
    pub fn ggml(self) -> GgmlType {
        match self {
            Self::Q4_0 => GgmlType::Q4_0,
            Self::Q4_1 => GgmlType::Q4_1,
            Self::Q8_0 => GgmlType::Q8_0,
        }
    }

    /// Bytes per 32-value block.
    pub fn block_bytes(self) -> usize {
        self.ggml().block_bytes()
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
        if cols == 0 || !cols.is_multiple_of(QK) {
            return Err(KernelError::NotWholeBlocks(cols));
        }
        let expected = (cols / QK)
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
        self.cols / QK * self.kind.block_bytes()
    }

    fn row(&self, r: usize) -> &'a [u8] {
        let n = self.row_bytes();
        &self.bytes[r * n..(r + 1) * n]
    }
}

/// Activation rows quantized per 32-value block to int8 in `−127..=127`, with per block the
/// scale `d` and `s = d · Σ q` (what Q4_1's offset multiplies).
#[derive(Clone, Debug, Default)]
pub struct Q8Rows {
    rows: usize,
    cols: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
}

impl Q8Rows {
    /// Quantizes `x`, `rows × cols` f32 row-major, reusing this value's buffers.
    pub fn quantize(&mut self, x: &[f32], rows: usize, cols: usize) -> Result<(), KernelError> {
        if cols == 0 || !cols.is_multiple_of(QK) {
            return Err(KernelError::NotWholeBlocks(cols));
        }
        if rows.checked_mul(cols) != Some(x.len()) {
            return Err(KernelError::Shape(format!(
                "{} activations are not {rows}×{cols}",
                x.len()
            )));
        }
        let blocks = x.len() / QK;
        self.rows = rows;
        self.cols = cols;
        self.qs.clear();
        self.qs.reserve(x.len());
        self.d.clear();
        self.d.reserve(blocks);
        self.s.clear();
        self.s.reserve(blocks);
        for blk in x.chunks_exact(QK) {
            let amax = blk.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for &v in blk {
                // `as` saturates and maps NaN to 0; the clamp keeps −128 out (sign trick).
                let q = ((v * id).round() as i32).clamp(-127, 127);
                sum += q;
                self.qs.push(q as i8);
            }
            self.d.push(d);
            self.s.push(d * sum as f32);
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
        self.cols / QK
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
    if x.cols != w.cols || m == 0 || !out_t.len().is_multiple_of(m) {
        return Err(KernelError::Shape(format!(
            "{}×{} weights, {}×{} activations, {} outputs",
            w.rows,
            w.cols,
            m,
            x.cols,
            out_t.len()
        )));
    }
    let n = out_t.len() / m;
    if row0.checked_add(n).is_none_or(|end| end > w.rows) {
        return Err(KernelError::Shape(format!(
            "rows {row0}..+{n} outside {} weight rows",
            w.rows
        )));
    }
    for (r, out_row) in out_t.chunks_exact_mut(m).enumerate() {
        let w_row = w.row(row0 + r);
        let mut i0 = 0;
        while i0 < m {
            let mt = (m - i0).min(TILE);
            dot_tile(isa, w.kind, w_row, x, i0, &mut out_row[i0..i0 + mt]);
            i0 += mt;
        }
    }
    Ok(())
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
                *o = block_loop(kind, w_row, x, i0 + j, neon::isum);
            }
        }
        _ => {
            for (j, o) in out.iter_mut().enumerate() {
                *o = block_loop(kind, w_row, x, i0 + j, isum_scalar);
            }
        }
    }
}

/// Integer sum of one block: `Σ w[i] · a[i]`.
fn isum_scalar(w: &[i8; QK], a: &[i8]) -> i32 {
    w.iter()
        .zip(a)
        .map(|(&w, &a)| i32::from(w) * i32::from(a))
        .sum()
}

/// The weight block's scale, offset (Q4_1 only, else 0) and values as signed bytes
/// (`q − 8` for Q4_0, the raw nibble for Q4_1, the stored byte for Q8_0).
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
        BlockKind::Q8_0 => {
            let (d, q) = quant::split_q8_0(blk);
            (d, 0.0, q)
        }
    }
}

/// The generic block loop every non-x86 path runs: per block, the integer sum times both
/// scales, plus Q4_1's offset times the activation block sum.
fn block_loop(
    kind: BlockKind,
    w_row: &[u8],
    x: &Q8Rows,
    i: usize,
    isum: fn(&[i8; QK], &[i8]) -> i32,
) -> f32 {
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

/// The integer sum of every block of weight row `r` with activation row `i`, on `isa`
/// (scalar when the CPU lacks it): what tests compare exactly across paths.
pub fn block_isums(
    isa: Isa,
    w: &QuantMatrix<'_>,
    r: usize,
    x: &Q8Rows,
    i: usize,
) -> Result<Vec<i32>, KernelError> {
    if r >= w.rows || i >= x.rows || w.cols != x.cols {
        return Err(KernelError::Shape(format!(
            "row {r} of {}, activation {i} of {}",
            w.rows, x.rows
        )));
    }
    let nb = x.blocks_per_row();
    let w_row = w.row(r);
    let a_row = &x.qs[i * x.cols..(i + 1) * x.cols];
    Ok(match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni if isa.is_available() => {
            x86::block_isums(isa, w.kind, w_row, a_row, nb)
        }
        _ => (0..nb)
            .map(|b| {
                let blk = &w_row[b * w.kind.block_bytes()..(b + 1) * w.kind.block_bytes()];
                let (_, _, wq) = unpack_block(w.kind, blk);
                #[cfg(target_arch = "aarch64")]
                if isa == Isa::Neon && isa.is_available() {
                    return neon::isum(&wq, &a_row[b * QK..(b + 1) * QK]);
                }
                isum_scalar(&wq, &a_row[b * QK..(b + 1) * QK])
            })
            .collect(),
    })
}
