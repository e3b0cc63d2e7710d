//! ggml tensor storage formats as pure functions, the one home of the block layouts: the type
//! ids found in GGUF files, their block geometry (values per block, bytes per block), exact
//! decoders to `f32` for the formats this runtime understands (F32, F16, BF16, Q4_0, Q4_1,
//! Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, as ggml's `dequantize_row_*` computes them), the
//! reference quantizers of Q4_0/Q4_1/Q8_0, and helpers that split one block into its scales,
//! offsets and integer values for the exporter and the integer-dot kernels. No I/O and no
//! knowledge of file layout or model structure lives here.

use half::{bf16, f16};
use thiserror::Error;

/// Values per block of the 32-value formats (Q4_0, Q4_1, Q5_x, Q8_0).
pub const QK: usize = 32;
/// Values per super-block of the K-quant formats.
pub const QK_K: usize = 256;

/// Bytes of one Q4_0 block: f16 `d` + 16 bytes of nibbles.
pub const Q4_0_BLOCK_BYTES: usize = 2 + QK / 2;
/// Bytes of one Q4_1 block: f16 `d` + f16 `m` + 16 bytes of nibbles.
pub const Q4_1_BLOCK_BYTES: usize = 2 + 2 + QK / 2;
/// Bytes of one Q5_0 block: f16 `d`, 4 bytes of fifth bits, 16 bytes of nibbles.
pub const Q5_0_BLOCK_BYTES: usize = 2 + 4 + QK / 2;
/// Bytes of one Q5_1 block: f16 `d`, f16 `m`, 4 bytes of fifth bits, 16 bytes of nibbles.
pub const Q5_1_BLOCK_BYTES: usize = 2 + 2 + 4 + QK / 2;
/// Bytes of one Q8_0 block: f16 `d` + 32 signed bytes.
pub const Q8_0_BLOCK_BYTES: usize = 2 + QK;
/// Bytes of one Q4_K super-block: f16 `d`, f16 `dmin`, 12 bytes of packed 6-bit scales/mins,
/// 128 bytes of nibbles.
pub const Q4_K_BLOCK_BYTES: usize = 2 + 2 + 12 + QK_K / 2;
/// Bytes of one Q5_K super-block: f16 `d`, f16 `dmin`, 12 bytes of packed 6-bit
/// scales/mins, 32 bytes of fifth bits, 128 bytes of nibbles.
pub const Q5_K_BLOCK_BYTES: usize = 2 + 2 + 12 + QK_K / 8 + QK_K / 2;
/// Bytes of one Q6_K super-block: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs,
/// 16 signed 8-bit sub-block scales, f16 `d`.
pub const Q6_K_BLOCK_BYTES: usize = QK_K / 2 + QK_K / 4 + QK_K / 16 + 2;

/// Byte offset of the packed nibbles in a Q4_0 block (after f16 `d`). Byte `j` of the
/// nibbles holds value `j` in its low nibble and value `j + 16` in its high nibble.
pub const Q4_0_QS_OFFSET: usize = 2;
/// Byte offset of the packed nibbles in a Q4_1 block (after f16 `d` and f16 `m`); same
/// nibble order as Q4_0.
pub const Q4_1_QS_OFFSET: usize = 4;
/// Byte offset of the 32 signed values in a Q8_0 block (after f16 `d`).
pub const Q8_0_QS_OFFSET: usize = 2;

/// Failure to interpret bytes in a ggml storage format.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuantError {
    /// The storage type has a known layout but this runtime has no decoder for it.
    #[error("no decoder for ggml type {kind:?}")]
    NoDecoder {
        /// The storage type.
        kind: GgmlType,
    },
    /// The storage type has a known layout but this runtime has no reference quantizer for it.
    #[error("no quantizer for ggml type {kind:?}")]
    NoEncoder {
        /// The storage type.
        kind: GgmlType,
    },
    /// The value count is not a whole number of blocks.
    #[error("{n_values} values of {kind:?} are not a whole number of {block}-value blocks")]
    NotWholeBlocks {
        /// The storage type.
        kind: GgmlType,
        /// Values requested.
        n_values: usize,
        /// Values per block of `kind`.
        block: usize,
    },
    /// The byte buffer does not have the size the value count requires.
    #[error("{kind:?}: expected {expected_bytes} bytes, got {actual_bytes}")]
    LengthMismatch {
        /// The storage type.
        kind: GgmlType,
        /// Bytes the value count requires.
        expected_bytes: usize,
        /// Bytes supplied.
        actual_bytes: usize,
    },
    /// The byte size of the requested value count does not fit in `usize`.
    #[error("{n_values} values of {kind:?} overflow the address space")]
    Overflow {
        /// The storage type.
        kind: GgmlType,
        /// Values requested.
        n_values: usize,
    },
}

/// A ggml storage type with a known block layout, with its GGUF type id as discriminant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// IEEE f32.
    F32 = 0,
    /// IEEE f16.
    F16 = 1,
    /// 4-bit, symmetric, 32-value blocks.
    Q4_0 = 2,
    /// 4-bit with offset, 32-value blocks.
    Q4_1 = 3,
    /// 5-bit, symmetric, 32-value blocks.
    Q5_0 = 6,
    /// 5-bit with offset, 32-value blocks.
    Q5_1 = 7,
    /// 8-bit, symmetric, 32-value blocks.
    Q8_0 = 8,
    /// 2-bit K-quant, 256-value super-blocks.
    Q2K = 10,
    /// 3-bit K-quant, 256-value super-blocks.
    Q3K = 11,
    /// 4-bit K-quant, 256-value super-blocks.
    Q4K = 12,
    /// 5-bit K-quant, 256-value super-blocks.
    Q5K = 13,
    /// 6-bit K-quant, 256-value super-blocks.
    Q6K = 14,
    /// Signed 8-bit integers.
    I8 = 24,
    /// Signed 16-bit integers.
    I16 = 25,
    /// Signed 32-bit integers.
    I32 = 26,
    /// Signed 64-bit integers.
    I64 = 27,
    /// IEEE f64.
    F64 = 28,
    /// bfloat16.
    BF16 = 30,
}

impl GgmlType {
    /// The type for a GGUF tensor type id, or `None` for ids without a known layout here.
    pub fn from_id(type_id: u32) -> Option<Self> {
        Some(match type_id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            24 => Self::I8,
            25 => Self::I16,
            26 => Self::I32,
            27 => Self::I64,
            28 => Self::F64,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// The GGUF tensor type id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Values per block.
    pub fn block_values(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 | Self::F64 => 1,
            Self::I8 | Self::I16 | Self::I32 | Self::I64 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 => QK,
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 => 1,
            Self::I64 | Self::F64 => 8,
            Self::Q4_0 => Q4_0_BLOCK_BYTES,
            Self::Q4_1 => Q4_1_BLOCK_BYTES,
            Self::Q5_0 => Q5_0_BLOCK_BYTES,
            Self::Q5_1 => Q5_1_BLOCK_BYTES,
            Self::Q8_0 => Q8_0_BLOCK_BYTES,
            // 16 bytes of 4-bit scales/mins, 64 bytes of 2-bit values, f16 d, f16 dmin.
            Self::Q2K => QK_K / 16 + QK_K / 4 + 2 + 2,
            // 32 bytes of high bits, 64 bytes of 2-bit values, 12 bytes of scales, f16 d.
            Self::Q3K => QK_K / 8 + QK_K / 4 + 12 + 2,
            Self::Q4K => Q4_K_BLOCK_BYTES,
            Self::Q5K => Q5_K_BLOCK_BYTES,
            Self::Q6K => Q6_K_BLOCK_BYTES,
        }
    }

    /// Whether [`dequantize`] can decode this type.
    pub fn has_decoder(self) -> bool {
        matches!(
            self,
            Self::F32
                | Self::F16
                | Self::BF16
                | Self::Q4_0
                | Self::Q4_1
                | Self::Q5_0
                | Self::Q5_1
                | Self::Q8_0
                | Self::Q4K
                | Self::Q5K
                | Self::Q6K
        )
    }

    /// Bytes that `n_values` values occupy; `n_values` must be a whole number of blocks.
    pub fn byte_size(self, n_values: usize) -> Result<usize, QuantError> {
        let block = self.block_values();
        if !n_values.is_multiple_of(block) {
            return Err(QuantError::NotWholeBlocks {
                kind: self,
                n_values,
                block,
            });
        }
        (n_values / block)
            .checked_mul(self.block_bytes())
            .ok_or(QuantError::Overflow {
                kind: self,
                n_values,
            })
    }
}

/// Decodes `n_values` values stored as `kind` in `bytes` (which must have exactly the size
/// [`GgmlType::byte_size`] gives) to `f32`.
pub fn dequantize(kind: GgmlType, bytes: &[u8], n_values: usize) -> Result<Vec<f32>, QuantError> {
    if !kind.has_decoder() {
        return Err(QuantError::NoDecoder { kind });
    }
    let expected_bytes = kind.byte_size(n_values)?;
    if bytes.len() != expected_bytes {
        return Err(QuantError::LengthMismatch {
            kind,
            expected_bytes,
            actual_bytes: bytes.len(),
        });
    }
    let mut out = Vec::with_capacity(n_values);
    let blocks = bytes.chunks_exact(kind.block_bytes());
    match kind {
        GgmlType::F32 => out.extend(blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        GgmlType::F16 => out.extend(blocks.map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())),
        GgmlType::BF16 => out.extend(blocks.map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        GgmlType::Q4_0 => {
            for b in blocks {
                let (d, q) = split_q4_0(b);
                out.extend(q.iter().map(|&v| d * (f32::from(v) - 8.0)));
            }
        }
        GgmlType::Q4_1 => {
            for b in blocks {
                let (d, m, q) = split_q4_1(b);
                out.extend(q.iter().map(|&v| d * f32::from(v) + m));
            }
        }
        GgmlType::Q5_0 => {
            for b in blocks {
                let (d, q) = split_q5_0(b);
                out.extend(q.iter().map(|&v| d * (f32::from(v) - 16.0)));
            }
        }
        GgmlType::Q5_1 => {
            for b in blocks {
                let (d, m, q) = split_q5_1(b);
                out.extend(q.iter().map(|&v| d * f32::from(v) + m));
            }
        }
        GgmlType::Q8_0 => {
            for b in blocks {
                let (d, q) = split_q8_0(b);
                out.extend(q.iter().map(|&v| d * f32::from(v)));
            }
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            for b in blocks {
                let k = split_q45_k(kind, b);
                for (sub, q) in k.q.chunks_exact(QK).enumerate() {
                    let scale = k.d * f32::from(k.scales[sub]);
                    let min = k.dmin * f32::from(k.mins[sub]);
                    out.extend(q.iter().map(|&v| scale * f32::from(v) - min));
                }
            }
        }
        GgmlType::Q6K => {
            for b in blocks {
                decode_q6_k(b, &mut out);
            }
        }
        _ => return Err(QuantError::NoDecoder { kind }),
    }
    Ok(out)
}

/// Quantizes `values` (a whole number of blocks) into `kind` blocks. Q4_0, Q4_1, Q5_0, Q5_1
/// and Q8_0 follow ggml's reference rounding (`quantize_row_*_ref`); Q4_K, Q5_K and Q6_K use
/// a plain choice of scales (each sub-block's range, no search as ggml's quantizer makes), so
/// their layout is exact and their fidelity somewhat below ggml's.
pub fn quantize(kind: GgmlType, values: &[f32]) -> Result<Vec<u8>, QuantError> {
    kind.byte_size(values.len())?;
    let mut out = Vec::with_capacity(kind.byte_size(values.len())?);
    for blk in values.chunks_exact(kind.block_values()) {
        match kind {
            GgmlType::Q4_0 => {
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
            GgmlType::Q4_1 => {
                let min = blk.iter().copied().fold(f32::INFINITY, f32::min);
                let max = blk.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(f16::from_f32(min).to_le_bytes());
                let code = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, 15) as u8;
                out.extend((0..QK / 2).map(|j| code(blk[j]) | (code(blk[j + QK / 2]) << 4)));
            }
            GgmlType::Q5_0 => encode_q5_0(blk, &mut out),
            GgmlType::Q5_1 => encode_q5_1(blk, &mut out),
            GgmlType::Q4K | GgmlType::Q5K => encode_q45_k(kind, blk, &mut out),
            GgmlType::Q6K => encode_q6_k(blk, &mut out),
            GgmlType::Q8_0 => {
                let amax = blk.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(
                    blk.iter()
                        .map(|v| ((v * id).round() as i32).clamp(-128, 127) as i8 as u8),
                );
            }
            _ => return Err(QuantError::NoEncoder { kind }),
        }
    }
    Ok(out)
}

/// Appends the fifth bits (bit `i` of a little-endian `u32` for value `i`) and the nibbles
/// (byte `j`: value `j` low, value `j + 16` high) of 32 five-bit codes.
fn push_q5(codes: &[u8; QK], out: &mut Vec<u8>) {
    let qh = codes
        .iter()
        .enumerate()
        .fold(0u32, |h, (i, &c)| h | (u32::from(c >> 4) << i));
    out.extend(qh.to_le_bytes());
    out.extend((0..QK / 2).map(|j| (codes[j] & 0x0F) | ((codes[j + QK / 2] & 0x0F) << 4)));
}

/// ggml's `quantize_row_q5_0_ref` for one block.
fn encode_q5_0(blk: &[f32], out: &mut Vec<u8>) {
    let max = blk
        .iter()
        .copied()
        .fold(0f32, |a, v| if v.abs() > a.abs() { v } else { a });
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend(f16::from_f32(d).to_le_bytes());
    let codes: [u8; QK] = std::array::from_fn(|i| ((blk[i] * id + 16.5) as i32).clamp(0, 31) as u8);
    push_q5(&codes, out);
}

/// ggml's `quantize_row_q5_1_ref` for one block.
fn encode_q5_1(blk: &[f32], out: &mut Vec<u8>) {
    let min = blk.iter().copied().fold(f32::INFINITY, f32::min);
    let max = blk.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend(f16::from_f32(d).to_le_bytes());
    out.extend(f16::from_f32(min).to_le_bytes());
    let codes: [u8; QK] =
        std::array::from_fn(|i| (((blk[i] - min) * id + 0.5) as i32).clamp(0, 31) as u8);
    push_q5(&codes, out);
}

/// `v / step` rounded and clamped to `lo..=hi`; 0 when `step` is 0.
fn code(v: f32, step: f32, lo: i32, hi: i32) -> i32 {
    if step == 0.0 {
        0
    } else {
        ((v / step).round() as i32).clamp(lo, hi)
    }
}

/// One Q4_K or Q5_K super-block: per 32-value sub-block, `min = min(0, values)` and the
/// range over the top code give a 6-bit scale and min against f16 `d` and `dmin`.
fn encode_q45_k(kind: GgmlType, blk: &[f32], out: &mut Vec<u8>) {
    let top = if kind == GgmlType::Q5K { 31.0 } else { 15.0 };
    let subs: Vec<(f32, f32)> = blk
        .chunks_exact(QK)
        .map(|sub| {
            let min = sub.iter().copied().fold(0f32, f32::min);
            let max = sub.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            ((max - min) / top, -min)
        })
        .collect();
    let d = f16::from_f32(subs.iter().fold(0f32, |a, s| a.max(s.0)) / 63.0);
    let dmin = f16::from_f32(subs.iter().fold(0f32, |a, s| a.max(s.1)) / 63.0);
    let (d, dmin) = (d.to_f32(), dmin.to_f32());
    let sc: Vec<u8> = subs.iter().map(|s| code(s.0, d, 0, 63) as u8).collect();
    let mn: Vec<u8> = subs.iter().map(|s| code(s.1, dmin, 0, 63) as u8).collect();
    out.extend(f16::from_f32(d).to_le_bytes());
    out.extend(f16::from_f32(dmin).to_le_bytes());
    for j in 0..4 {
        out.push((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    }
    for j in 0..4 {
        out.push((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
    }
    for j in 0..4 {
        out.push((sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4));
    }
    let q: Vec<u8> = blk
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let j = i / QK;
            let step = d * f32::from(sc[j]);
            code(v + dmin * f32::from(mn[j]), step, 0, top as i32) as u8
        })
        .collect();
    if kind == GgmlType::Q5K {
        out.extend((0..QK).map(|l| (0..8).fold(0u8, |h, j| h | ((q[j * QK + l] >> 4) << j))));
    }
    for chunk in 0..QK_K / 64 {
        let base = chunk * 64;
        out.extend((0..QK).map(|l| (q[base + l] & 0x0F) | ((q[base + QK + l] & 0x0F) << 4)));
    }
}

/// One Q6_K super-block: per 16-value sub-block a signed 8-bit scale against f16 `d`, values
/// in `−32..32` stored offset by 32.
fn encode_q6_k(blk: &[f32], out: &mut Vec<u8>) {
    let scales: Vec<f32> = blk
        .chunks_exact(16)
        .map(|sub| sub.iter().fold(0f32, |a, v| a.max(v.abs())) / 32.0)
        .collect();
    let d = f16::from_f32(scales.iter().fold(0f32, |a, &s| a.max(s)) / 127.0).to_f32();
    let sc: Vec<i8> = scales
        .iter()
        .map(|&s| code(s, d, -128, 127) as i8)
        .collect();
    let q: Vec<u8> = blk
        .iter()
        .enumerate()
        .map(|(i, &v)| (code(v, d * f32::from(sc[i / 16]), -32, 31) + 32) as u8)
        .collect();
    let mut ql = [0u8; QK_K / 2];
    let mut qh = [0u8; QK_K / 4];
    for half in 0..2 {
        let (v, l0, h0) = (&q[128 * half..], 64 * half, 32 * half);
        for l in 0..32 {
            ql[l0 + l] = (v[l] & 0x0F) | ((v[l + 64] & 0x0F) << 4);
            ql[l0 + l + 32] = (v[l + 32] & 0x0F) | ((v[l + 96] & 0x0F) << 4);
            qh[h0 + l] = (v[l] >> 4)
                | ((v[l + 32] >> 4) << 2)
                | ((v[l + 64] >> 4) << 4)
                | ((v[l + 96] >> 4) << 6);
        }
    }
    out.extend(ql);
    out.extend(qh);
    out.extend(sc.iter().map(|s| s.to_le_bytes()[0]));
    out.extend(f16::from_f32(d).to_le_bytes());
}

fn check_block(kind: GgmlType, bytes: &[u8]) -> Result<(), QuantError> {
    if bytes.len() == kind.block_bytes() {
        Ok(())
    } else {
        Err(QuantError::LengthMismatch {
            kind,
            expected_bytes: kind.block_bytes(),
            actual_bytes: bytes.len(),
        })
    }
}

/// Splits one Q4_0 block into its scale `d` and its 32 unsigned 4-bit values in value order
/// (each in `0..16`); value `i` is `d · (q[i] − 8)`.
pub fn q4_0_block(bytes: &[u8]) -> Result<(f32, [u8; QK]), QuantError> {
    check_block(GgmlType::Q4_0, bytes)?;
    Ok(split_q4_0(bytes))
}

/// Splits one Q4_1 block into its scale `d`, offset `m` and its 32 unsigned 4-bit values in
/// value order (each in `0..16`); value `i` is `d · q[i] + m`.
pub fn q4_1_block(bytes: &[u8]) -> Result<(f32, f32, [u8; QK]), QuantError> {
    check_block(GgmlType::Q4_1, bytes)?;
    Ok(split_q4_1(bytes))
}

/// Splits one Q8_0 block into its scale `d` and its 32 signed values; value `i` is `d · q[i]`.
pub fn q8_0_block(bytes: &[u8]) -> Result<(f32, [i8; QK]), QuantError> {
    check_block(GgmlType::Q8_0, bytes)?;
    Ok(split_q8_0(bytes))
}

/// Reads the little-endian f16 at `bytes[at..at + 2]` (caller guarantees the range).
pub(crate) fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Unpacks 16 bytes of nibbles: byte `j` holds value `j` in its low nibble and value `j + 16`
/// in its high nibble.
fn unpack_nibbles(packed: &[u8]) -> [u8; QK] {
    let mut q = [0u8; QK];
    for (j, &byte) in packed.iter().take(QK / 2).enumerate() {
        q[j] = byte & 0x0F;
        q[j + QK / 2] = byte >> 4;
    }
    q
}

/// Caller guarantees `b.len() == Q4_0_BLOCK_BYTES`.
pub(crate) fn split_q4_0(b: &[u8]) -> (f32, [u8; QK]) {
    (f16_at(b, 0), unpack_nibbles(&b[Q4_0_QS_OFFSET..]))
}

/// Caller guarantees `b.len() == Q4_1_BLOCK_BYTES`.
pub(crate) fn split_q4_1(b: &[u8]) -> (f32, f32, [u8; QK]) {
    (
        f16_at(b, 0),
        f16_at(b, 2),
        unpack_nibbles(&b[Q4_1_QS_OFFSET..]),
    )
}

/// The 32 five-bit values of a Q5_0/Q5_1 block whose fifth bits (`u32` little-endian, bit `i`
/// for value `i`) start at `at`, followed by 16 bytes of nibbles in Q4 order.
fn unpack_q5(b: &[u8], at: usize) -> [u8; QK] {
    let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut q = unpack_nibbles(&b[at + 4..]);
    for (i, v) in q.iter_mut().enumerate() {
        *v |= (((qh >> i) & 1) as u8) << 4;
    }
    q
}

/// Caller guarantees `b.len() == Q5_0_BLOCK_BYTES`; value `i` is `d · (q[i] − 16)`.
pub(crate) fn split_q5_0(b: &[u8]) -> (f32, [u8; QK]) {
    (f16_at(b, 0), unpack_q5(b, 2))
}

/// Caller guarantees `b.len() == Q5_1_BLOCK_BYTES`; value `i` is `d · q[i] + m`.
pub(crate) fn split_q5_1(b: &[u8]) -> (f32, f32, [u8; QK]) {
    (f16_at(b, 0), f16_at(b, 2), unpack_q5(b, 4))
}

/// Caller guarantees `b.len() == Q8_0_BLOCK_BYTES`.
pub(crate) fn split_q8_0(b: &[u8]) -> (f32, [i8; QK]) {
    let mut q = [0i8; QK];
    for (dst, &src) in q.iter_mut().zip(&b[Q8_0_QS_OFFSET..]) {
        *dst = i8::from_le_bytes([src]);
    }
    (f16_at(b, 0), q)
}

/// The 6-bit scale and 6-bit min of sub-block `j` (0..8) from Q4_K's 12 packed bytes:
/// sub-blocks 0..4 use the low 6 bits of bytes `j` (scale) and `j + 4` (min); sub-blocks 4..8
/// take their low 4 bits from byte `j + 4` (scale low nibble, min high nibble) and their high
/// 2 bits from the top bits of bytes `j − 4` (scale) and `j` (min).
pub(crate) fn q4_k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// One Q4_K or Q5_K super-block split apart: value `i` of sub-block `j` (32 values each) is
/// `d·scales[j]·q[32j + i] − dmin·mins[j]`.
#[derive(Clone, Debug)]
pub(crate) struct KSplit {
    /// Super-block scale.
    pub(crate) d: f32,
    /// Super-block scale of the mins.
    pub(crate) dmin: f32,
    /// 6-bit sub-block scales.
    pub(crate) scales: [u8; 8],
    /// 6-bit sub-block mins.
    pub(crate) mins: [u8; 8],
    /// Unsigned values in value order (0..16 for Q4_K, 0..32 for Q5_K).
    pub(crate) q: [u8; QK_K],
}

/// Caller guarantees `kind` is Q4_K or Q5_K and `b` one whole super-block of it. Layout: d,
/// dmin, scales[12], (Q5_K: qh[32]), qs[128]; each 64-value chunk `c` uses 32 bytes of `qs`:
/// low nibbles are sub-block 2c, high nibbles sub-block 2c + 1; Q5_K's fifth bit of value `l`
/// of sub-block `j` is bit `j` of `qh[l]`.
pub(crate) fn split_q45_k(kind: GgmlType, b: &[u8]) -> KSplit {
    let mut k = KSplit {
        d: f16_at(b, 0),
        dmin: f16_at(b, 2),
        scales: [0; 8],
        mins: [0; 8],
        q: [0; QK_K],
    };
    for j in 0..8 {
        (k.scales[j], k.mins[j]) = q4_k_scale_min(j, &b[4..16]);
    }
    let (qh, qs) = if kind == GgmlType::Q5K {
        (Some(&b[16..48]), &b[48..])
    } else {
        (None, &b[16..])
    };
    for chunk in 0..QK_K / 64 {
        let bytes = &qs[chunk * 32..chunk * 32 + 32];
        for (half, shift) in [(0usize, 0u32), (1, 4)] {
            let sub = 2 * chunk + half;
            for (l, &byte) in bytes.iter().enumerate() {
                let high = qh.map_or(0, |h| ((h[l] >> sub) & 1) << 4);
                k.q[sub * QK + l] = ((byte >> shift) & 0x0F) | high;
            }
        }
    }
    k
}

/// Caller guarantees `b.len() == Q6_K_BLOCK_BYTES`. Returns `d`, the 16 signed sub-block
/// scales and the 256 values `q − 32` (in `−32..32`): value `i` is `d·scales[i / 16]·w[i]`.
/// Layout: ql[128], qh[64], scales[16] (i8), d. Each 128-value half `h` uses ql[64h..64h+64],
/// qh[32h..32h+32]; for `l` in 0..32 the four values at `l`, `l+32`, `l+64`, `l+96` take
/// their low nibbles from ql[l] low, ql[l+32] low, ql[l] high, ql[l+32] high and their top 2
/// bits from bits 0-1, 2-3, 4-5, 6-7 of qh[l].
pub(crate) fn split_q6_k(b: &[u8]) -> (f32, [i8; 16], [i8; QK_K]) {
    let mut scales = [0i8; 16];
    for (dst, &src) in scales.iter_mut().zip(&b[192..208]) {
        *dst = i8::from_le_bytes([src]);
    }
    let mut w = [0i8; QK_K];
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let out = &mut w[128 * half..128 * half + 128];
        for l in 0..32 {
            let hi = qh[l];
            let q = [
                (ql[l] & 0x0F) | ((hi & 3) << 4),
                (ql[l + 32] & 0x0F) | (((hi >> 2) & 3) << 4),
                (ql[l] >> 4) | (((hi >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((hi >> 6) & 3) << 4),
            ];
            for (quarter, &qv) in q.iter().enumerate() {
                // qv < 64, so it fits an i8 before the offset.
                out[l + 32 * quarter] = qv as i8 - 32;
            }
        }
    }
    (f16_at(b, 208), scales, w)
}

/// Caller guarantees `b.len() == Q6_K_BLOCK_BYTES`; value = d·scale·(q − 32).
fn decode_q6_k(b: &[u8], out: &mut Vec<f32>) {
    let (d, scales, w) = split_q6_k(b);
    for (i, &v) in w.iter().enumerate() {
        out.push(d * f32::from(scales[i / 16]) * f32::from(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // f16 bit patterns, re-declared from IEEE 754 binary16.
    const F16_ONE: [u8; 2] = [0x00, 0x3C];
    const F16_HALF: [u8; 2] = [0x00, 0x38];
    const F16_TWO: [u8; 2] = [0x00, 0x40];
    const F16_MINUS_THREE: [u8; 2] = [0x00, 0xC2];
    const F16_QUARTER: [u8; 2] = [0x00, 0x34];

    #[test]
    fn block_geometry_matches_the_ggml_layouts() {
        // (type id, values per block, bytes per block) from ggml's block structs.
        let table: &[(u32, usize, usize)] = &[
            (0, 1, 4),
            (1, 1, 2),
            (2, 32, 2 + 16),
            (3, 32, 2 + 2 + 16),
            (6, 32, 2 + 4 + 16),
            (7, 32, 2 + 2 + 4 + 16),
            (8, 32, 2 + 32),
            (10, 256, 16 + 64 + 2 + 2),
            (11, 256, 32 + 64 + 12 + 2),
            (12, 256, 2 + 2 + 12 + 128),
            (13, 256, 2 + 2 + 12 + 32 + 128),
            (14, 256, 128 + 64 + 16 + 2),
            (24, 1, 1),
            (25, 1, 2),
            (26, 1, 4),
            (27, 1, 8),
            (28, 1, 8),
            (30, 1, 2),
        ];
        for &(id, values, bytes) in table {
            let kind = GgmlType::from_id(id).expect("known id");
            assert_eq!(kind.id(), id);
            assert_eq!(kind.block_values(), values, "{kind:?}");
            assert_eq!(kind.block_bytes(), bytes, "{kind:?}");
        }
    }

    #[test]
    fn unknown_and_removed_type_ids_have_no_layout() {
        for id in [4, 5, 9, 15, 16, 23, 29, 31, 1000] {
            assert_eq!(GgmlType::from_id(id), None, "id {id}");
        }
    }

    #[test]
    fn byte_size_counts_whole_blocks_only() {
        let table: &[(GgmlType, usize, Result<usize, ()>)] = &[
            (GgmlType::F32, 3, Ok(12)),
            (GgmlType::F16, 3, Ok(6)),
            (GgmlType::Q4_1, 64, Ok(40)),
            (GgmlType::Q8_0, 96, Ok(102)),
            (GgmlType::Q6K, 512, Ok(420)),
            (GgmlType::Q4_0, 33, Err(())),
            (GgmlType::Q4K, 32, Err(())),
        ];
        for &(kind, n, expected) in table {
            assert_eq!(
                kind.byte_size(n).map_err(|_| ()),
                expected,
                "{kind:?} x {n}"
            );
        }
        assert!(matches!(
            GgmlType::Q8_0.byte_size(usize::MAX / 32 * 32),
            Err(QuantError::Overflow { .. })
        ));
    }

    #[test]
    fn quantizers_round_trip_within_a_step_of_each_format() {
        // Smooth values with a negative and a positive range, 2 super-blocks.
        let values: Vec<f32> = (0..512)
            .map(|i| ((i * 37 % 101) as f32 - 40.0) / 50.0)
            .collect();
        // (format, one step of its codes as a fraction of a block's range): no value may be
        // off by more than one step of the whole range.
        let table = [
            (GgmlType::Q4_0, 1.0 / 8.0),
            (GgmlType::Q4_1, 1.0 / 15.0),
            (GgmlType::Q5_0, 1.0 / 16.0),
            (GgmlType::Q5_1, 1.0 / 31.0),
            (GgmlType::Q8_0, 1.0 / 127.0),
            (GgmlType::Q4K, 1.0 / 15.0),
            (GgmlType::Q5K, 1.0 / 31.0),
            (GgmlType::Q6K, 1.0 / 32.0),
        ];
        let range =
            values.iter().fold(0f32, |a, &v| a.max(v)) - values.iter().fold(0f32, |a, &v| a.min(v));
        for (kind, step) in table {
            let bytes = quantize(kind, &values).expect("quantizes");
            assert_eq!(bytes.len(), kind.byte_size(values.len()).expect("size"));
            let back = dequantize(kind, &bytes, values.len()).expect("decodes");
            let worst = values
                .iter()
                .zip(&back)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst <= range * step, "{kind:?}: worst error {worst}");
        }
    }

    #[test]
    fn decodes_plain_float_formats() {
        let f32_bytes: Vec<u8> = [1.5f32, -2.0, 0.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            dequantize(GgmlType::F32, &f32_bytes, 3),
            Ok(vec![1.5, -2.0, 0.0])
        );
        let f16_bytes = [F16_ONE, F16_MINUS_THREE, F16_QUARTER].concat();
        assert_eq!(
            dequantize(GgmlType::F16, &f16_bytes, 3),
            Ok(vec![1.0, -3.0, 0.25])
        );
        // bf16 is the top half of an f32: 1.0 = 0x3F80, -2.5 = 0xC020.
        let bf16_bytes = [0x80, 0x3F, 0x20, 0xC0];
        assert_eq!(
            dequantize(GgmlType::BF16, &bf16_bytes, 2),
            Ok(vec![1.0, -2.5])
        );
    }

    #[test]
    fn decodes_a_q4_0_block() {
        // d = 0.5; byte j = (hi << 4) | lo with lo = j, hi = 15 - j.
        let mut block = F16_HALF.to_vec();
        block.extend((0u8..16).map(|j| ((15 - j) << 4) | j));
        let values = dequantize(GgmlType::Q4_0, &block, 32).expect("decodes");
        assert_eq!(values[0], -4.0); // 0.5 * (0 - 8)
        assert_eq!(values[15], 3.5); // 0.5 * (15 - 8)
        assert_eq!(values[16], 3.5); // high nibble of byte 0 is 15
        assert_eq!(values[31], -4.0); // high nibble of byte 15 is 0
        let (d, q) = q4_0_block(&block).expect("splits");
        assert_eq!(d, 0.5);
        assert_eq!(q[3], 3);
        assert_eq!(q[19], 12);
    }

    #[test]
    fn decodes_a_q4_1_block() {
        // d = 2, m = -3; byte j = (hi << 4) | lo with lo = 1, hi = 7.
        let mut block = [F16_TWO, F16_MINUS_THREE].concat();
        block.extend([0x71u8; 16]);
        let values = dequantize(GgmlType::Q4_1, &block, 32).expect("decodes");
        assert!(values[..16].iter().all(|&v| v == -1.0)); // 2 * 1 - 3
        assert!(values[16..].iter().all(|&v| v == 11.0)); // 2 * 7 - 3
        let (d, m, q) = q4_1_block(&block).expect("splits");
        assert_eq!((d, m, q[0], q[31]), (2.0, -3.0, 1, 7));
    }

    #[test]
    fn decodes_a_q8_0_block() {
        // d = 0.25; q[i] = i - 16 as two's complement bytes.
        let mut block = F16_QUARTER.to_vec();
        block.extend((0i16..32).map(|i| ((i - 16) as i8) as u8));
        let values = dequantize(GgmlType::Q8_0, &block, 32).expect("decodes");
        assert_eq!(values[0], -4.0);
        assert_eq!(values[16], 0.0);
        assert_eq!(values[31], 3.75);
        let (d, q) = q8_0_block(&block).expect("splits");
        assert_eq!((d, q[0], q[31]), (0.25, -16, 15));
    }

    #[test]
    fn decodes_q5_0_and_q5_1_blocks_with_their_fifth_bits() {
        // Q5_0: d = 0.5; fifth bits set for values 0 and 17; byte j = (15 - j) << 4 | j.
        let mut block = F16_HALF.to_vec();
        block.extend(((1u32 << 0) | (1 << 17)).to_le_bytes());
        block.extend((0u8..16).map(|j| ((15 - j) << 4) | j));
        let v = dequantize(GgmlType::Q5_0, &block, 32).expect("decodes");
        assert_eq!(v[0], 0.0); // q = 0 | 16
        assert_eq!(v[1], 0.5 * (1.0 - 16.0));
        assert_eq!(v[16], 0.5 * (15.0 - 16.0));
        assert_eq!(v[17], 0.5 * (14.0 + 16.0 - 16.0));
        // Q5_1: d = 2, m = -3, every fifth bit set, every byte 0x71.
        let mut block = [F16_TWO, F16_MINUS_THREE].concat();
        block.extend(u32::MAX.to_le_bytes());
        block.extend([0x71u8; 16]);
        let v = dequantize(GgmlType::Q5_1, &block, 32).expect("decodes");
        assert!(v[..16].iter().all(|&x| x == 2.0 * 17.0 - 3.0));
        assert!(v[16..].iter().all(|&x| x == 2.0 * 23.0 - 3.0));
    }

    #[test]
    fn decodes_a_q5_k_super_block() {
        let mut block = vec![0u8; 176];
        block[0..2].copy_from_slice(&F16_HALF); // d
        block[2..4].copy_from_slice(&F16_ONE); // dmin
        block[4] = 2; // sub-block 0 scale
        block[5] = 3; // sub-block 1 scale
        block[8] = 1; // sub-block 0 min
        block[9] = 2; // sub-block 1 min
        // qh at 16..48: value 0 of sub-blocks 0 and 1 (bits 0, 1 of qh[0]) get a fifth bit.
        block[16] = 0b11;
        // qs at 48: byte 0 holds value 0 of sub-block 0 (low) and of sub-block 1 (high).
        block[48] = 0x73;
        let v = dequantize(GgmlType::Q5K, &block, 256).expect("decodes");
        assert_eq!(v[0], 0.5 * 2.0 * (3.0 + 16.0) - 1.0);
        assert_eq!(v[32], 0.5 * 3.0 * (7.0 + 16.0) - 2.0);
        assert_eq!(v[1], -1.0); // q = 0 leaves -dmin * min
        assert_eq!(v[64], 0.0); // sub-block 2: scale and min 0
    }

    #[test]
    fn decodes_a_q4_k_super_block() {
        let mut block = vec![0u8; 144];
        block[0..2].copy_from_slice(&F16_HALF); // d
        block[2..4].copy_from_slice(&F16_ONE); // dmin
        // Packed scales (bytes 4..16): sub-block 0: scale = 0b000010 = 2 from byte 0's low
        // six bits, min = 1 from byte 4. Byte 0's top bits (0b01) are the high bits of
        // sub-block 4's scale; byte 4's top bits (0b10) the high bits of its min.
        block[4] = 0b0100_0010;
        block[5] = 3; // sub-block 1 scale
        block[8] = 0b1000_0001; // sub-block 0 min = 1
        block[9] = 2; // sub-block 1 min
        // Byte 8 of the scales: sub-block 4 scale low nibble 5, min low nibble 3.
        block[4 + 8] = 0x35;
        // qs start at 16. Chunk 0 (values 0..64): byte 0 = 0x73.
        block[16] = 0x73;
        // Chunk 2 (values 128..192) starts at qs byte 64: low nibble 4.
        block[16 + 64] = 0x04;
        let v = dequantize(GgmlType::Q4K, &block, 256).expect("decodes");
        assert_eq!(v[0], 0.5 * 2.0 * 3.0 - 1.0); // sub-block 0, q = 3
        assert_eq!(v[32], 0.5 * 3.0 * 7.0 - 2.0); // sub-block 1, q = 7
        assert_eq!(v[1], -1.0); // q = 0 leaves -dmin * min
        // Sub-block 4: scale = 5 | (0b01 << 4) = 21, min = 3 | (0b10 << 4) = 35.
        assert_eq!(v[128], 0.5 * 21.0 * 4.0 - 35.0);
        assert_eq!(v[129], -35.0);
    }

    #[test]
    fn decodes_a_q6_k_super_block() {
        let mut block = vec![0u8; 210];
        // scales at 192..208: first half uses 192..200.
        block[192] = 2; // values 0..16
        block[194] = 0xFF; // -1: values 32..48
        block[196] = 3; // values 64..80
        block[198] = 1; // values 96..112
        block[200] = 4; // second half, values 128..144
        block[208..210].copy_from_slice(&F16_HALF); // d
        // ql[0] = 0x21 gives low nibbles 1 (value 0) and 2 (value 64).
        block[0] = 0x21;
        // ql[32] = 0x05 gives low nibble 5 for value 32, 0 for value 96.
        block[32] = 0x05;
        // qh[0] bits: value 0 <- 0b10, value 32 <- 0b01, value 64 <- 0b00, value 96 <- 0b11.
        block[128] = 0b11_00_01_10;
        // Second half: ql[64] low nibble 15, qh[32] bits 0-1 = 0b11 for value 128.
        block[64] = 0x0F;
        block[128 + 32] = 0b11;
        let v = dequantize(GgmlType::Q6K, &block, 256).expect("decodes");
        assert_eq!(v[0], 0.5 * 2.0 * (f32::from(1u8 | (2 << 4)) - 32.0)); // q = 33
        assert_eq!(v[32], -0.5 * (f32::from(5u8 | (1 << 4)) - 32.0)); // d·scale = 0.5·(−1), q = 21
        assert_eq!(v[64], 0.5 * 3.0 * (2.0 - 32.0)); // q = 2
        assert_eq!(v[96], 0.5 * 1.0 * (f32::from(3u8 << 4) - 32.0)); // q = 48
        assert_eq!(v[128], 0.5 * 4.0 * (63.0 - 32.0)); // q = 63
        assert_eq!(v[1], 0.5 * 2.0 * -32.0); // q = 0
    }

    #[test]
    fn rejects_wrong_lengths_and_types_without_decoder() {
        assert_eq!(
            dequantize(GgmlType::Q4_1, &[0u8; 19], 32),
            Err(QuantError::LengthMismatch {
                kind: GgmlType::Q4_1,
                expected_bytes: 20,
                actual_bytes: 19
            })
        );
        assert!(matches!(
            dequantize(GgmlType::Q8_0, &[0u8; 34], 31),
            Err(QuantError::NotWholeBlocks { .. })
        ));
        assert_eq!(
            dequantize(GgmlType::Q2K, &[0u8; 84], 256),
            Err(QuantError::NoDecoder {
                kind: GgmlType::Q2K
            })
        );
        assert_eq!(
            quantize(GgmlType::Q2K, &[0.0; 256]),
            Err(QuantError::NoEncoder {
                kind: GgmlType::Q2K
            })
        );
        assert!(q4_1_block(&[0u8; 18]).is_err());
        assert!(q4_0_block(&[0u8; 20]).is_err());
        assert!(q8_0_block(&[0u8; 33]).is_err());
    }
}
