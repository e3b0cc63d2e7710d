//! ggml block formats (Q4_0, Q4_1, Q8_0) as the ONNX writer needs them: exact
//! dequantization, re-layout of 4-bit codes into onnxruntime's `MatMulNBits` /
//! `GatherBlockQuantized` nibble order, the exact decompositions that let Q4_1 and Q8_0 ride
//! on a zero-point-8 4-bit matmul, and the reference quantizers used to build test models.
//!
//! Every block covers [`QK`] consecutive values of one row (`in_features` axis).

use anyhow::{Context, Result, ensure};
use half::f16;

use crate::engine::llama::{Weight, WeightData};

/// Values per ggml block.
pub const QK: usize = 32;
/// Bytes per Q4_0 block: f16 `d` + 16 bytes of nibbles.
pub const Q4_0_BYTES: usize = 2 + QK / 2;
/// Bytes per Q4_1 block: f16 `d`, f16 `m` + 16 bytes of nibbles.
pub const Q4_1_BYTES: usize = 4 + QK / 2;
/// Bytes per Q8_0 block: f16 `d` + 32 signed bytes.
pub const Q8_0_BYTES: usize = 2 + QK;

/// 4-bit codes in onnxruntime order plus one scale per block, for a `[rows, cols]` matrix.
///
/// `packed` is `[rows, cols / 32, 16]`: byte `j` of a block holds element `2j` in its low
/// nibble and `2j + 1` in its high nibble. A value dequantizes to `scale · (code − 8)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Nibbles {
    /// Packed codes, `rows · cols / 2` bytes.
    pub packed: Vec<u8>,
    /// One scale per block, row-major `[rows, cols / 32]`.
    pub scales: Vec<f32>,
}

/// A block-quantized matrix decomposed into zero-point-8 4-bit parts plus a per-block
/// offset: `w = Σ_parts scale_p · (code_p − 8) + offset` for every value of a block.
#[derive(Clone, Debug, PartialEq)]
pub struct Decomposed {
    /// The 4-bit parts (one for Q4_0/Q4_1, two for Q8_0).
    pub parts: Vec<Nibbles>,
    /// Per-block additive offset, row-major `[rows, cols / 32]`; `None` when all zero.
    pub offsets: Option<Vec<f32>>,
}

fn f16_le(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Number of values and blocks of `w`, checking that its byte length fits its shape.
fn block_count(w: &Weight, block_bytes: usize) -> Result<(usize, usize)> {
    let values: usize = w.shape.iter().product();
    let cols = *w.shape.last().context("a weight without dimensions")?;
    ensure!(
        cols.is_multiple_of(QK),
        "last dimension {cols} is not a multiple of the block size {QK}"
    );
    let blocks = values / QK;
    let len = match &w.data {
        WeightData::F32(v) => v.len() * 4,
        WeightData::Q4_0(b) | WeightData::Q4_1(b) | WeightData::Q8_0(b) => b.len(),
    };
    ensure!(
        len == blocks * block_bytes,
        "shape {:?} needs {} bytes of blocks, found {len}",
        w.shape,
        blocks * block_bytes
    );
    Ok((values, blocks))
}

/// All values of `w` as f32, exactly as ggml dequantizes them.
pub fn dequantize(w: &Weight) -> Result<Vec<f32>> {
    let values: usize = w.shape.iter().product();
    match &w.data {
        WeightData::F32(v) => {
            ensure!(
                v.len() == values,
                "shape {:?} needs {values} values, found {}",
                w.shape,
                v.len()
            );
            Ok(v.clone())
        }
        WeightData::Q4_0(b) => {
            block_count(w, Q4_0_BYTES)?;
            let mut out = Vec::with_capacity(values);
            for blk in b.chunks_exact(Q4_0_BYTES) {
                let d = f16_le(blk, 0);
                let qs = &blk[2..];
                out.extend(qs.iter().map(|q| d * ((q & 0x0F) as f32 - 8.0)));
                out.extend(qs.iter().map(|q| d * ((q >> 4) as f32 - 8.0)));
            }
            Ok(out)
        }
        WeightData::Q4_1(b) => {
            block_count(w, Q4_1_BYTES)?;
            let mut out = Vec::with_capacity(values);
            for blk in b.chunks_exact(Q4_1_BYTES) {
                let (d, m) = (f16_le(blk, 0), f16_le(blk, 2));
                let qs = &blk[4..];
                out.extend(qs.iter().map(|q| d * (q & 0x0F) as f32 + m));
                out.extend(qs.iter().map(|q| d * (q >> 4) as f32 + m));
            }
            Ok(out)
        }
        WeightData::Q8_0(b) => {
            block_count(w, Q8_0_BYTES)?;
            let mut out = Vec::with_capacity(values);
            for blk in b.chunks_exact(Q8_0_BYTES) {
                let d = f16_le(blk, 0);
                out.extend(blk[2..].iter().map(|&q| d * q as i8 as f32));
            }
            Ok(out)
        }
    }
}

/// Packs 32 codes (each < 16) of one block in onnxruntime order.
fn pack_ort(codes: &[u8; QK], out: &mut Vec<u8>) {
    out.extend(codes.chunks_exact(2).map(|p| p[0] | (p[1] << 4)));
}

/// Codes of a ggml 4-bit block: low nibbles are elements 0..16, high nibbles 16..32.
fn ggml_codes(qs: &[u8]) -> [u8; QK] {
    let mut codes = [0u8; QK];
    for (j, q) in qs.iter().enumerate() {
        codes[j] = q & 0x0F;
        codes[j + QK / 2] = q >> 4;
    }
    codes
}

/// Rewrites a block-quantized weight as zero-point-8 4-bit parts plus per-block offsets,
/// exactly: Q4_0 maps over as is; Q4_1 `d·q + m` becomes `d·(q − 8) + (m + 8d)`; Q8_0
/// `d·q` (q in −128..=127) becomes `16d·(hi − 8) + d·(lo − 8) + 8d` with `q + 128 = 16·hi + lo`.
/// Returns `None` for f32 weights.
pub fn decompose(w: &Weight) -> Result<Option<Decomposed>> {
    match &w.data {
        WeightData::F32(_) => Ok(None),
        WeightData::Q4_0(b) => {
            let (values, blocks) = block_count(w, Q4_0_BYTES)?;
            let mut part = Nibbles {
                packed: Vec::with_capacity(values / 2),
                scales: Vec::with_capacity(blocks),
            };
            for blk in b.chunks_exact(Q4_0_BYTES) {
                part.scales.push(f16_le(blk, 0));
                pack_ort(&ggml_codes(&blk[2..]), &mut part.packed);
            }
            Ok(Some(Decomposed {
                parts: vec![part],
                offsets: None,
            }))
        }
        WeightData::Q4_1(b) => {
            let (values, blocks) = block_count(w, Q4_1_BYTES)?;
            let mut part = Nibbles {
                packed: Vec::with_capacity(values / 2),
                scales: Vec::with_capacity(blocks),
            };
            let mut offsets = Vec::with_capacity(blocks);
            for blk in b.chunks_exact(Q4_1_BYTES) {
                let (d, m) = (f16_le(blk, 0), f16_le(blk, 2));
                part.scales.push(d);
                offsets.push(m + 8.0 * d);
                pack_ort(&ggml_codes(&blk[4..]), &mut part.packed);
            }
            Ok(Some(Decomposed {
                parts: vec![part],
                offsets: Some(offsets),
            }))
        }
        WeightData::Q8_0(b) => {
            let (values, blocks) = block_count(w, Q8_0_BYTES)?;
            let mut hi = Nibbles {
                packed: Vec::with_capacity(values / 2),
                scales: Vec::with_capacity(blocks),
            };
            let mut lo = hi.clone();
            let mut offsets = Vec::with_capacity(blocks);
            for blk in b.chunks_exact(Q8_0_BYTES) {
                let d = f16_le(blk, 0);
                // tract stores 4-bit scales as f16: 16·d must stay finite there to be exact.
                ensure!(
                    f16::from_f32(16.0 * d).to_f32() == 16.0 * d,
                    "Q8_0 scale {d} is too large to split into two 4-bit halves exactly"
                );
                let mut hi_codes = [0u8; QK];
                let mut lo_codes = [0u8; QK];
                for (i, &q) in blk[2..].iter().enumerate() {
                    let u = (q as i8 as i16 + 128) as u8;
                    hi_codes[i] = u >> 4;
                    lo_codes[i] = u & 0x0F;
                }
                hi.scales.push(16.0 * d);
                lo.scales.push(d);
                offsets.push(8.0 * d);
                pack_ort(&hi_codes, &mut hi.packed);
                pack_ort(&lo_codes, &mut lo.packed);
            }
            Ok(Some(Decomposed {
                parts: vec![hi, lo],
                offsets: Some(offsets),
            }))
        }
    }
}

/// Signed 8-bit codes and one scale per block of a Q8_0 weight (`w = scale · code`).
pub fn q8_0_codes(w: &Weight) -> Result<(Vec<i8>, Vec<f32>)> {
    let WeightData::Q8_0(b) = &w.data else {
        anyhow::bail!("not a Q8_0 weight")
    };
    let (values, blocks) = block_count(w, Q8_0_BYTES)?;
    let mut codes = Vec::with_capacity(values);
    let mut scales = Vec::with_capacity(blocks);
    for blk in b.chunks_exact(Q8_0_BYTES) {
        scales.push(f16_le(blk, 0));
        codes.extend(blk[2..].iter().map(|&q| q as i8));
    }
    Ok((codes, scales))
}

/// ggml block format to quantize into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlBlock {
    /// 4-bit symmetric, `d·(q − 8)`.
    Q4_0,
    /// 4-bit with minimum, `d·q + m`.
    Q4_1,
    /// 8-bit symmetric, `d·q`.
    Q8_0,
}

/// Quantizes `values` (a multiple of 32 long) with ggml's reference rounding.
pub fn quantize(values: &[f32], kind: GgmlBlock) -> Result<WeightData> {
    ensure!(
        values.len().is_multiple_of(QK),
        "{} values are not a whole number of blocks",
        values.len()
    );
    let mut out = Vec::new();
    for blk in values.chunks_exact(QK) {
        match kind {
            GgmlBlock::Q4_0 => {
                let max = blk
                    .iter()
                    .copied()
                    .fold(0f32, |a, v| if v.abs() > a.abs() { v } else { a });
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                let code = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
                out.extend((0..QK / 2).map(|j| code(blk[j]) | (code(blk[j + QK / 2]) << 4)));
            }
            GgmlBlock::Q4_1 => {
                let min = blk.iter().copied().fold(f32::INFINITY, f32::min);
                let max = blk.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(f16::from_f32(min).to_le_bytes());
                let code = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, 15) as u8;
                out.extend((0..QK / 2).map(|j| code(blk[j]) | (code(blk[j + QK / 2]) << 4)));
            }
            GgmlBlock::Q8_0 => {
                let amax = blk.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(
                    blk.iter()
                        .map(|v| ((v * id).round() as i32).clamp(-128, 127) as i8 as u8),
                );
            }
        }
    }
    Ok(match kind {
        GgmlBlock::Q4_0 => WeightData::Q4_0(out),
        GgmlBlock::Q4_1 => WeightData::Q4_1(out),
        GgmlBlock::Q8_0 => WeightData::Q8_0(out),
    })
}
