//! The ONNX writer's view of ggml blocks (Q4_0, Q4_1, Q8_0): re-layout of 4-bit codes into
//! onnxruntime's `MatMulNBits` / `GatherBlockQuantized` nibble order, and the exact
//! decompositions that let Q4_1 and Q8_0 ride on a zero-point-8 4-bit matmul. Block layouts
//! and decoders come from [`crate::engine::quant`], the one home of the ggml formats.
//!
//! Every block covers [`QK`] consecutive values of one row (`in_features` axis).

use anyhow::{Context, Result, ensure};
use half::f16;

use crate::engine::llama::{Weight, WeightData};
pub(super) use crate::engine::quant::QK;
use crate::engine::quant::{self, GgmlType};

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

/// Number of values and blocks of `w`, checking that its byte length fits its shape.
fn block_count(w: &Weight, kind: GgmlType) -> Result<(usize, usize)> {
    let values: usize = w.shape.iter().product();
    let cols = *w.shape.last().context("a weight without dimensions")?;
    ensure!(
        cols.is_multiple_of(QK),
        "last dimension {cols} is not a multiple of the block size {QK}"
    );
    let blocks = values / QK;
    let len = w.data.blocks().map_or(0, |(_, b)| b.len());
    ensure!(
        len == blocks * kind.block_bytes(),
        "shape {:?} needs {} bytes of blocks, found {len}",
        w.shape,
        blocks * kind.block_bytes()
    );
    Ok((values, blocks))
}

/// Packs 32 codes (each < 16) of one block in onnxruntime order.
fn pack_ort(codes: &[u8; QK], out: &mut Vec<u8>) {
    out.extend(codes.chunks_exact(2).map(|p| p[0] | (p[1] << 4)));
}

/// Rewrites a block-quantized weight as zero-point-8 4-bit parts plus per-block offsets,
/// exactly: Q4_0 maps over as is; Q4_1 `d·q + m` becomes `d·(q − 8) + (m + 8d)`; Q8_0
/// `d·q` (q in −128..=127) becomes `16d·(hi − 8) + d·(lo − 8) + 8d` with `q + 128 = 16·hi + lo`.
/// Returns `None` for f32 weights and for block formats without such a decomposition.
pub fn decompose(w: &Weight) -> Result<Option<Decomposed>> {
    match &w.data {
        WeightData::Q4_0(b) => {
            let (values, blocks) = block_count(w, GgmlType::Q4_0)?;
            let mut part = Nibbles {
                packed: Vec::with_capacity(values / 2),
                scales: Vec::with_capacity(blocks),
            };
            for blk in b.chunks_exact(quant::Q4_0_BLOCK_BYTES) {
                let (d, codes) = quant::split_q4_0(blk);
                part.scales.push(d);
                pack_ort(&codes, &mut part.packed);
            }
            Ok(Some(Decomposed {
                parts: vec![part],
                offsets: None,
            }))
        }
        WeightData::Q4_1(b) => {
            let (values, blocks) = block_count(w, GgmlType::Q4_1)?;
            let mut part = Nibbles {
                packed: Vec::with_capacity(values / 2),
                scales: Vec::with_capacity(blocks),
            };
            let mut offsets = Vec::with_capacity(blocks);
            for blk in b.chunks_exact(quant::Q4_1_BLOCK_BYTES) {
                let (d, m, codes) = quant::split_q4_1(blk);
                part.scales.push(d);
                offsets.push(m + 8.0 * d);
                pack_ort(&codes, &mut part.packed);
            }
            Ok(Some(Decomposed {
                parts: vec![part],
                offsets: Some(offsets),
            }))
        }
        WeightData::Q8_0(b) => {
            let (values, blocks) = block_count(w, GgmlType::Q8_0)?;
            let mut hi = Nibbles {
                packed: Vec::with_capacity(values / 2),
                scales: Vec::with_capacity(blocks),
            };
            let mut lo = hi.clone();
            let mut offsets = Vec::with_capacity(blocks);
            for blk in b.chunks_exact(quant::Q8_0_BLOCK_BYTES) {
                let (d, q) = quant::split_q8_0(blk);
                // tract stores 4-bit scales as f16: 16·d must stay finite there to be exact.
                ensure!(
                    f16::from_f32(16.0 * d).to_f32() == 16.0 * d,
                    "Q8_0 scale {d} is too large to split into two 4-bit halves exactly"
                );
                let mut hi_codes = [0u8; QK];
                let mut lo_codes = [0u8; QK];
                for (i, &q) in q.iter().enumerate() {
                    let u = (i16::from(q) + 128) as u8;
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
        _ => Ok(None),
    }
}

/// Signed 8-bit codes and one scale per block of a Q8_0 weight (`w = scale · code`).
pub fn q8_0_codes(w: &Weight) -> Result<(Vec<i8>, Vec<f32>)> {
    let WeightData::Q8_0(b) = &w.data else {
        anyhow::bail!("not a Q8_0 weight")
    };
    let (values, blocks) = block_count(w, GgmlType::Q8_0)?;
    let mut codes = Vec::with_capacity(values);
    let mut scales = Vec::with_capacity(blocks);
    for blk in b.chunks_exact(quant::Q8_0_BLOCK_BYTES) {
        let (d, q) = quant::split_q8_0(blk);
        scales.push(d);
        codes.extend(q);
    }
    Ok((codes, scales))
}
