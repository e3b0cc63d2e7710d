//! x86-64 kernels: one block body, instantiated for AVX2 (`maddubs` + `madd` into i32) and
//! for AVX-512 VNNI on 256-bit vectors (`vpdpbusd`). Both take the product of an unsigned
//! byte vector with a signed one, so signed weights go through the sign trick
//! (`|w| · (a · sign w)`), which is exact because activations stay in `−127..=127`.
//!
//! Every `#[target_feature]` function here is reached only through [`dot_tile`] and
//! [`block_isums`], which the caller enters after `Isa::is_available` said yes; both check
//! again before the first `unsafe` call.

use std::arch::x86_64::*;

use super::{BlockKind, Isa, Q8Rows, TILE};
use crate::engine::quant::{self, QK};

/// Whether the CPU has AVX2, FMA and F16C.
pub(super) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Whether the CPU has AVX2, FMA, F16C, AVX-512 VNNI and AVX-512 VL.
pub(super) fn has_avx512_vnni() -> bool {
    has_avx2() && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")
}

/// Loads one weight block as 32 unsigned bytes plus, for signed formats, the signs to move
/// onto the activations: `(|w| or the nibble, Some(w) when signed)`.
///
/// # Safety
/// `blk` must hold a whole block of `kind`; the CPU must have AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load_block(kind: BlockKind, blk: &[u8]) -> (__m256i, Option<__m256i>) {
    match kind {
        BlockKind::Q4_0 => {
            // SAFETY: a whole block holds 16 nibble bytes after its scale.
            let q = unsafe { load_nibbles(blk, quant::Q4_0_QS_OFFSET) };
            let w = _mm256_sub_epi8(q, _mm256_set1_epi8(8));
            (_mm256_abs_epi8(w), Some(w))
        }
        // SAFETY: a whole block holds 16 nibble bytes after its scale and offset.
        BlockKind::Q4_1 => (unsafe { load_nibbles(blk, quant::Q4_1_QS_OFFSET) }, None),
        BlockKind::Q8_0 => {
            debug_assert!(blk.len() >= quant::Q8_0_QS_OFFSET + QK);
            // SAFETY: a whole Q8_0 block holds 32 value bytes after its scale.
            let w = unsafe {
                _mm256_loadu_si256(blk.as_ptr().add(quant::Q8_0_QS_OFFSET).cast::<__m256i>())
            };
            (_mm256_abs_epi8(w), Some(w))
        }
    }
}

/// The 32 nibbles stored at `blk[at..at + 16]` as bytes in value order: values 0..16 are
/// the low nibbles, 16..32 the high ones.
///
/// # Safety
/// `blk` must hold 16 bytes at `at`; the CPU must have AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load_nibbles(blk: &[u8], at: usize) -> __m256i {
    debug_assert!(blk.len() >= at + QK / 2);
    // SAFETY: the caller guarantees 16 readable bytes at `at`.
    let raw = unsafe { _mm_loadu_si128(blk.as_ptr().add(at).cast::<__m128i>()) };
    let m4 = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(raw, m4);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), m4);
    _mm256_set_m128i(hi, lo)
}

/// Loads 32 activation bytes, with the weight's signs applied when it has them.
///
/// # Safety
/// `a` must hold at least 32 bytes; the CPU must have AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load_act(a: &[i8], signs: Option<__m256i>) -> __m256i {
    debug_assert!(a.len() >= QK);
    // SAFETY: the caller guarantees 32 readable bytes.
    let y = unsafe { _mm256_loadu_si256(a.as_ptr().cast::<__m256i>()) };
    match signs {
        Some(w) => _mm256_sign_epi8(y, w),
        None => y,
    }
}

/// Eight i32 partial sums of `u · y` (unsigned × signed bytes), AVX2.
#[target_feature(enable = "avx2")]
#[inline]
fn mul_sum_avx2(u: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), _mm256_set1_epi16(1))
}

/// Eight i32 partial sums of `u · y` (unsigned × signed bytes), VNNI.
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
#[inline]
fn mul_sum_vnni(u: __m256i, y: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, y)
}

/// The little-endian f16 at `blk[at..at + 2]` as f32, converted in hardware.
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn f16_at(blk: &[u8], at: usize) -> f32 {
    let bits = u16::from_le_bytes([blk[at], blk[at + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

#[target_feature(enable = "avx2")]
#[inline]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2")]
#[inline]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// One tile body per instruction set: `$mul` is the unsigned × signed byte product.
macro_rules! tile_kernel {
    ($name:ident, $isums:ident, $features:literal, $mul:ident) => {
        /// Dots one weight row with activation rows `i0..i0 + out.len()` (≤ TILE).
        ///
        /// # Safety
        /// `w_row` must be a whole row of `kind` blocks matching `x.cols`; the CPU must have
        /// the enabled features.
        #[target_feature(enable = $features)]
        unsafe fn $name(kind: BlockKind, w_row: &[u8], x: &Q8Rows, i0: usize, out: &mut [f32]) {
            let nb = x.blocks_per_row();
            let mt = out.len().min(TILE);
            let mut acc = [_mm256_setzero_ps(); TILE];
            let mut offset = [0f32; TILE];
            for (b, blk) in w_row.chunks_exact(kind.block_bytes()).enumerate() {
                let dw = f16_at(blk, 0);
                // SAFETY: `blk` is a whole block (chunks_exact of the checked row).
                let (u, signs) = unsafe { load_block(kind, blk) };
                for j in 0..mt {
                    let at = (i0 + j) * nb + b;
                    // SAFETY: `at` indexes a block of a row < x.rows, 32 bytes in `qs`.
                    let y = unsafe { load_act(&x.qs[at * QK..], signs) };
                    let dots = _mm256_cvtepi32_ps($mul(u, y));
                    let scale = _mm256_set1_ps(dw * x.d[at]);
                    acc[j] = _mm256_fmadd_ps(scale, dots, acc[j]);
                    if kind == BlockKind::Q4_1 {
                        offset[j] += f16_at(blk, 2) * x.s[at];
                    }
                }
            }
            for j in 0..mt {
                out[j] = hsum_ps(acc[j]) + offset[j];
            }
        }

        /// Per-block integer sums of one weight row with one activation row.
        ///
        /// # Safety
        /// As for the tile kernel; `a_row` holds `nb` blocks.
        #[target_feature(enable = $features)]
        unsafe fn $isums(kind: BlockKind, w_row: &[u8], a_row: &[i8], nb: usize) -> Vec<i32> {
            let mut sums = Vec::with_capacity(nb);
            for (b, blk) in w_row.chunks_exact(kind.block_bytes()).take(nb).enumerate() {
                // SAFETY: a whole block and a whole activation block, as the caller checked.
                let (u, signs) = unsafe { load_block(kind, blk) };
                let y = unsafe { load_act(&a_row[b * QK..], signs) };
                sums.push(hsum_epi32($mul(u, y)));
            }
            sums
        }
    };
}

tile_kernel!(tile_avx2, isums_avx2, "avx2,fma,f16c", mul_sum_avx2);
tile_kernel!(
    tile_vnni,
    isums_vnni,
    "avx2,fma,f16c,avx512vnni,avx512vl",
    mul_sum_vnni
);

/// Runs the tile kernel of `isa`; the scalar loop when the CPU lacks it.
pub(super) fn dot_tile(
    isa: Isa,
    kind: BlockKind,
    w_row: &[u8],
    x: &Q8Rows,
    i0: usize,
    out: &mut [f32],
) {
    match isa {
        // SAFETY: features detected on this line; the row is whole (QuantMatrix checked it).
        Isa::Avx512Vnni if has_avx512_vnni() => unsafe { tile_vnni(kind, w_row, x, i0, out) },
        // SAFETY: as above.
        Isa::Avx2 if has_avx2() => unsafe { tile_avx2(kind, w_row, x, i0, out) },
        _ => {
            for (j, o) in out.iter_mut().enumerate() {
                *o = super::block_loop(kind, w_row, x, i0 + j, super::isum_scalar);
            }
        }
    }
}

/// Per-block integer sums on `isa` (exposed for the exactness tests).
pub(super) fn block_isums(
    isa: Isa,
    kind: BlockKind,
    w_row: &[u8],
    a_row: &[i8],
    nb: usize,
) -> Vec<i32> {
    match isa {
        // SAFETY: features detected on this line; whole rows checked by the caller.
        Isa::Avx512Vnni if has_avx512_vnni() => unsafe { isums_vnni(kind, w_row, a_row, nb) },
        // SAFETY: as above.
        Isa::Avx2 if has_avx2() => unsafe { isums_avx2(kind, w_row, a_row, nb) },
        _ => Vec::new(),
    }
}
