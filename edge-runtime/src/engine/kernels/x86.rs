//! x86-64 kernels: one 32-value block body, instantiated for AVX2 (`maddubs` + `madd` into
//! i32) and for AVX-512 VNNI on 256-bit vectors (`vpdpbusd`). Both take the product of an
//! unsigned byte vector with a signed one, so signed weights go through the sign trick
//! (`|w| · (a · sign w)`), which is exact because activations stay in `−127..=127`. The
//! K-quant super-blocks hold unsigned values, so they multiply directly (`maddubs`, then
//! `madd` by the sub-block scales); Q6_K's offset of 32 comes off through the activation's
//! sums per 16 values. The K-quant bodies are AVX2 only and also serve the VNNI path.
//!
//! The 32-value formats run through [`gemm`], a micro-kernel over a few weight rows by a few
//! activation rows with the format fixed at compile time; the K-quants through [`dot_tile`].
//! Every `#[target_feature]` function here is reached only through those two and
//! [`block_isums`], which check the CPU's features before the first `unsafe` call.

use std::arch::x86_64::*;

use super::{BlockKind, GEMV_ROWS, Isa, Layout, Q8Rows, QuantMatrix, TILE};
use crate::engine::quant::{self, QK, QK_K};

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
        BlockKind::Q5_0 => {
            // SAFETY: a whole Q5_0 block holds 4 bytes of fifth bits and 16 nibble bytes
            // after its scale.
            let q = unsafe { load_q5(blk, 2) };
            let w = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
            (_mm256_abs_epi8(w), Some(w))
        }
        // SAFETY: a whole Q5_1 block holds fifth bits and nibbles after its scale and offset.
        BlockKind::Q5_1 => (unsafe { load_q5(blk, 4) }, None),
        BlockKind::Q8_0 => {
            debug_assert!(blk.len() >= quant::Q8_0_QS_OFFSET + QK);
            // SAFETY: a whole Q8_0 block holds 32 value bytes after its scale.
            let w = unsafe {
                _mm256_loadu_si256(blk.as_ptr().add(quant::Q8_0_QS_OFFSET).cast::<__m256i>())
            };
            (_mm256_abs_epi8(w), Some(w))
        }
        // K-quants never reach the 32-value block body (see `dot_tile`).
        BlockKind::Q4K | BlockKind::Q5K | BlockKind::Q6K => (_mm256_setzero_si256(), None),
    }
}

/// The 32 five-bit values of a Q5 block whose fifth bits (`u32` little-endian, bit `i` for
/// value `i`) start at `blk[at]`, followed by 16 nibble bytes in Q4 order.
///
/// # Safety
/// `blk` must hold 20 bytes at `at`; the CPU must have AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load_q5(blk: &[u8], at: usize) -> __m256i {
    debug_assert!(blk.len() >= at + 4 + QK / 2);
    let bits = u32::from_le_bytes([blk[at], blk[at + 1], blk[at + 2], blk[at + 3]]);
    // SAFETY: the caller guarantees 16 nibble bytes after the 4 bytes of bits.
    let nibbles = unsafe { load_nibbles(blk, at + 4) };
    // Byte i of `spread` is byte i / 8 of the bits; OR-ing every bit but bit i % 8 and
    // comparing with all-ones leaves 0xFF exactly where bit i is set.
    let shuffle = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let spread = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), shuffle);
    let others = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    let set = _mm256_cmpeq_epi8(others, _mm256_set1_epi64x(-1));
    _mm256_or_si256(nibbles, _mm256_and_si256(set, _mm256_set1_epi8(0x10)))
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

/// One 32-value activation block quantized as the scalar path does (the same `d`, the same
/// ties-to-even rounding, so the same bytes) into `q`: `Some((d, Σ q))`, or `None` (nothing
/// written) when `isa` is not an x86 path this CPU has or the block holds a NaN or an
/// infinity, which the scalar path handles.
pub(super) fn quantize_block(isa: Isa, blk: &[f32], q: &mut [i8]) -> Option<(f32, i32)> {
    let usable = match isa {
        Isa::Avx2 | Isa::Avx512Vnni => has_avx2(),
        _ => false,
    };
    if !usable || blk.len() != QK || q.len() != QK {
        return None;
    }
    // SAFETY: AVX2 detected, 32 values in and 32 bytes out checked above.
    unsafe { quantize_block_avx2(blk, q) }
}

/// # Safety
/// `blk` must hold 32 values and `q` 32 bytes; the CPU must have AVX2.
#[target_feature(enable = "avx2")]
unsafe fn quantize_block_avx2(blk: &[f32], q: &mut [i8]) -> Option<(f32, i32)> {
    // SAFETY: 32 readable values, as the caller guarantees.
    let v: [__m256; 4] =
        std::array::from_fn(|i| unsafe { _mm256_loadu_ps(blk.as_ptr().add(8 * i)) });
    let mut bad = 0;
    for x in v {
        // Unordered with itself: NaN; the difference of an infinity with itself is NaN too.
        bad |= _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(_mm256_sub_ps(x, x), x));
    }
    if bad != 0 {
        return None;
    }
    let sign = _mm256_set1_ps(-0.0);
    let a = v.map(|x| _mm256_andnot_ps(sign, x));
    let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
    let d = amax / 127.0;
    let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
    let lim = _mm256_set1_epi32(127);
    let i = v.map(|x| {
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, id),
        );
        _mm256_max_epi32(
            _mm256_min_epi32(_mm256_cvtps_epi32(r), lim),
            _mm256_sub_epi32(_mm256_setzero_si256(), lim),
        )
    });
    let sum = hsum_epi32(_mm256_add_epi32(
        _mm256_add_epi32(i[0], i[1]),
        _mm256_add_epi32(i[2], i[3]),
    ));
    // Packing works per 128-bit lane: the permutation puts the eight groups of four back in
    // order.
    let packed = _mm256_packs_epi16(
        _mm256_packs_epi32(i[0], i[1]),
        _mm256_packs_epi32(i[2], i[3]),
    );
    let ordered = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    // SAFETY: 32 writable bytes, as the caller guarantees.
    unsafe { _mm256_storeu_si256(q.as_mut_ptr().cast::<__m256i>(), ordered) };
    Some((d, sum))
}

/// `Σ a[i]·b[i]` over the shorter of the two with AVX2 and FMA, or `None` without them.
pub(super) fn dot_f32(a: &[f32], b: &[f32]) -> Option<f32> {
    if !has_avx2() {
        return None;
    }
    // SAFETY: AVX2 and FMA detected; the kernel reads within both slices' common length.
    Some(unsafe { dot_f32_avx2(a, b) })
}

/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    // SAFETY (each load below): `i + 8` or `i + 16` is at most `n`, within both slices.
    while i + 16 <= n {
        acc0 = _mm256_fmadd_ps(
            unsafe { _mm256_loadu_ps(pa.add(i)) },
            unsafe { _mm256_loadu_ps(pb.add(i)) },
            acc0,
        );
        acc1 = _mm256_fmadd_ps(
            unsafe { _mm256_loadu_ps(pa.add(i + 8)) },
            unsafe { _mm256_loadu_ps(pb.add(i + 8)) },
            acc1,
        );
        i += 16;
    }
    if i + 8 <= n {
        acc0 = _mm256_fmadd_ps(
            unsafe { _mm256_loadu_ps(pa.add(i)) },
            unsafe { _mm256_loadu_ps(pb.add(i)) },
            acc0,
        );
        i += 8;
    }
    let tail: f32 = a[i..n].iter().zip(&b[i..n]).map(|(x, y)| x * y).sum();
    hsum_ps(_mm256_add_ps(acc0, acc1)) + tail
}

/// `y[i] += alpha · x[i]` over the shorter of the two with AVX2 and FMA; `false` (nothing
/// written) without them.
pub(super) fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) -> bool {
    if !has_avx2() {
        return false;
    }
    // SAFETY: AVX2 and FMA detected; the kernel stays within both slices' common length.
    unsafe { axpy_f32_avx2(alpha, x, y) };
    true
}

/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_f32_avx2(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let a = _mm256_set1_ps(alpha);
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`, within both slices; `y` is borrowed mutably, `x` apart.
        unsafe {
            let v = _mm256_fmadd_ps(a, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
            _mm256_storeu_ps(py.add(i), v);
        }
        i += 8;
    }
    for (o, v) in y[i..n].iter_mut().zip(&x[i..n]) {
        *o += alpha * v;
    }
}

/// `row[i] = e^(row[i] − max row)` in place with AVX2 and FMA, returning the sum of the
/// new values, or `None` (nothing written) without them or when the row holds a NaN or an
/// infinity, which the scalar path handles.
pub(super) fn softmax_exp_sum(row: &mut [f32]) -> Option<f32> {
    if !has_avx2() || row.is_empty() {
        return None;
    }
    // SAFETY: AVX2 and FMA detected; the kernel stays within `row`.
    unsafe { softmax_exp_sum_avx2(row) }
}

/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_exp_sum_avx2(row: &mut [f32]) -> Option<f32> {
    let n = row.len();
    let p = row.as_mut_ptr();
    let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut bad = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`, within `row`.
        let x = unsafe { _mm256_loadu_ps(p.add(i)) };
        vmax = _mm256_max_ps(vmax, x);
        // NaN for a NaN or an infinity (see `quantize_block_avx2`).
        bad = _mm256_or_ps(bad, _mm256_cmp_ps::<_CMP_UNORD_Q>(_mm256_sub_ps(x, x), x));
        i += 8;
    }
    if _mm256_movemask_ps(bad) != 0 || row[i..].iter().any(|v| !v.is_finite()) {
        return None;
    }
    let m = _mm_max_ps(
        _mm256_castps256_ps128(vmax),
        _mm256_extractf128_ps::<1>(vmax),
    );
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let max = row[i..]
        .iter()
        .fold(_mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m))), |a, &v| {
            a.max(v)
        });
    let vm = _mm256_set1_ps(max);
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`, within `row`, which is borrowed mutably.
        unsafe {
            let e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), vm));
            acc = _mm256_add_ps(acc, e);
            _mm256_storeu_ps(p.add(i), e);
        }
        i += 8;
    }
    let mut sum = hsum_ps(acc);
    for v in &mut row[i..] {
        *v = (*v - max).exp();
        sum += *v;
    }
    Some(sum)
}

/// `e^x` per lane for finite `x ≤ 0` (Cephes' `expf`: `2^n · e^r` with `|r| ≤ ln 2 / 2` on a
/// degree-5 polynomial, within 2 ulp); below −87 it gives about `e^−87`, which a softmax sum
/// over a row holding `e^0 = 1` never notices.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn exp_ps(x: __m256) -> __m256 {
    let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut y = _mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
    }
    let y = _mm256_fmadd_ps(
        y,
        _mm256_mul_ps(r, r),
        _mm256_add_ps(r, _mm256_set1_ps(1.0)),
    );
    let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(y, _mm256_castsi256_ps(pow2))
}

/// One tile body per instruction set: `$mul` is the unsigned × signed byte product.
macro_rules! block_kernels {
    ($isums:ident, $gemm:ident, $features:literal, $mul:ident) => {
        /// Per-block integer sums of one weight row with one activation row.
        ///
        /// # Safety
        /// `w_row` must be a whole row of `kind` blocks, `a_row` hold `nb` blocks; the CPU
        /// must have the enabled features.
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

        /// Dots `R` weight rows (each `x.cols` values of the 32-value format `kind_of(KIND)`)
        /// with the `M` activation rows `acts` of `x`, writing weight row `r` times activation
        /// `j` to `out[r · rs + j · acs]`. Each weight block is unpacked once for the `M`
        /// activations and each activation block loaded once for the `R` rows, with one
        /// register accumulator per pair; the rows one pass ahead are prefetched, since each
        /// row is a short stream the hardware prefetcher meets afresh.
        ///
        /// # Safety
        /// Every row must hold `x.blocks_per_row()` whole blocks; `acts` must be rows of `x`,
        /// quantized in 32-value blocks; `out` must hold `(R − 1) · rs + (M − 1) · acs + 1`
        /// values; the CPU must have the enabled features.
        #[target_feature(enable = $features)]
        unsafe fn $gemm<const KIND: u8, const R: usize, const M: usize>(
            rows: [&[u8]; R],
            acts: [usize; M],
            x: &Q8Rows,
            out: &mut [f32],
            rs: usize,
            acs: usize,
        ) {
            let kind = kind_of(KIND);
            let bb = kind.block_bytes();
            let nb = x.blocks_per_row();
            let offset = matches!(kind, BlockKind::Q4_1 | BlockKind::Q5_1);
            let mut acc = [[_mm256_setzero_ps(); M]; R];
            let mut off = [[0f32; M]; R];
            for b in 0..nb {
                let mut y = [_mm256_setzero_si256(); M];
                let mut xs = [_mm_setzero_ps(); M];
                for j in 0..M {
                    let at = acts[j] * nb + b;
                    // SAFETY: block `at` of the activations: 32 bytes of `qs`.
                    y[j] =
                        unsafe { _mm256_loadu_si256(x.qs.as_ptr().add(at * QK).cast::<__m256i>()) };
                    xs[j] = _mm_setr_ps(x.d[at], x.s[at], 0.0, 0.0);
                }
                for r in 0..R {
                    let ahead = rows[r].len() * R + b * bb;
                    _mm_prefetch::<_MM_HINT_T0>(rows[r].as_ptr().wrapping_add(ahead).cast::<i8>());
                    // SAFETY: block `b` of a row of `nb` whole blocks.
                    let blk = unsafe { rows[r].get_unchecked(b * bb..(b + 1) * bb) };
                    // SAFETY: `blk` is a whole block of `kind`.
                    let (u, signs) = unsafe { load_block(kind, blk) };
                    // The scale and (Q4_1, Q5_1) the offset, both f16, converted together.
                    let dm = if offset {
                        let bits = u32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]);
                        _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
                    } else {
                        let bits = u16::from_le_bytes([blk[0], blk[1]]);
                        _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits)))
                    };
                    for j in 0..M {
                        let yr = match signs {
                            Some(w) => _mm256_sign_epi8(y[j], w),
                            None => y[j],
                        };
                        let dots = _mm256_cvtepi32_ps($mul(u, yr));
                        let scaled = _mm_mul_ps(dm, xs[j]);
                        acc[r][j] = _mm256_fmadd_ps(_mm256_broadcastss_ps(scaled), dots, acc[r][j]);
                        if offset {
                            off[r][j] += _mm_cvtss_f32(_mm_movehdup_ps(scaled));
                        }
                    }
                }
            }
            for r in 0..R {
                for j in 0..M {
                    out[r * rs + j * acs] = hsum_ps(acc[r][j]) + off[r][j];
                }
            }
        }
    };
}

block_kernels!(isums_avx2, gemm_avx2, "avx2,fma,f16c", mul_sum_avx2);
block_kernels!(
    isums_vnni,
    gemm_vnni,
    "avx2,fma,f16c,avx512vnni,avx512vl",
    mul_sum_vnni
);

/// The 32-value formats as the decode kernels' const parameter.
const fn kind_of(code: u8) -> BlockKind {
    match code {
        0 => BlockKind::Q4_0,
        1 => BlockKind::Q4_1,
        2 => BlockKind::Q5_0,
        3 => BlockKind::Q5_1,
        _ => BlockKind::Q8_0,
    }
}

/// Weight rows `rows` of a 32-value format times every activation row of `x`, the product of
/// the `r`-th of them with activation `i` written to `out[r · layout.row + i · layout.act]`:
/// decode four weight rows per pass, prefill two rows by four activations. `false` (nothing
/// written) when the CPU lacks `isa` or the format is a K-quant.
pub(super) fn gemm(
    isa: Isa,
    w: &QuantMatrix<'_>,
    rows: std::ops::Range<usize>,
    x: &Q8Rows,
    out: &mut [f32],
    layout: Layout,
) -> bool {
    let code = match w.kind() {
        BlockKind::Q4_0 => 0,
        BlockKind::Q4_1 => 1,
        BlockKind::Q5_0 => 2,
        BlockKind::Q5_1 => 3,
        BlockKind::Q8_0 => 4,
        BlockKind::Q4K | BlockKind::Q5K | BlockKind::Q6K => return false,
    };
    let vnni = match isa {
        Isa::Avx512Vnni if has_avx512_vnni() => true,
        Isa::Avx2 if has_avx2() => false,
        _ => return false,
    };
    let m = x.rows();
    let (row0, n) = (rows.start, rows.len());
    let (rs, acs) = (layout.row, layout.act);
    // One pass: `R` rows from `r` by the `M` activations from `i`.
    macro_rules! pass {
        ($code:literal, $r:literal, $m:literal, $row:expr, $i:expr) => {{
            let rows: [&[u8]; $r] = std::array::from_fn(|k| w.row(row0 + $row + k));
            let acts: [usize; $m] = std::array::from_fn(|j| $i + j);
            let out = &mut out[$row * rs + $i * acs..];
            // SAFETY: features detected above; `QuantMatrix` checked that every row holds
            // whole blocks and the caller that `x` has as many per row, in 32-value blocks;
            // rows `$row..+$r` and activations `$i..+$m` are in range, so `out` holds their
            // places under the layout.
            unsafe {
                if vnni {
                    gemm_vnni::<$code, $r, $m>(rows, acts, x, out, rs, acs)
                } else {
                    gemm_avx2::<$code, $r, $m>(rows, acts, x, out, rs, acs)
                }
            }
        }};
    }
    // Rows `R` from `r` by every activation: four at a time, then one by one.
    macro_rules! rows {
        ($code:literal, $r:literal, $row:expr) => {{
            let mut i = 0;
            while i + TILE <= m {
                pass!($code, $r, 4, $row, i);
                i += TILE;
            }
            while i < m {
                pass!($code, $r, 1, $row, i);
                i += 1;
            }
        }};
    }
    macro_rules! run {
        ($code:literal) => {{
            let mut r = 0;
            if m == 1 {
                while r + GEMV_ROWS <= n {
                    pass!($code, 4, 1, r, 0);
                    r += GEMV_ROWS;
                }
            } else {
                while r + 2 <= n {
                    rows!($code, 2, r);
                    r += 2;
                }
            }
            while r < n {
                rows!($code, 1, r);
                r += 1;
            }
        }};
    }
    match code {
        0 => run!(0),
        1 => run!(1),
        2 => run!(2),
        3 => run!(3),
        _ => run!(4),
    }
    true
}

/// The two integer sums of one Q4_K or Q5_K super-block with 256 activation bytes (see
/// `k_isums`): sub-block products by `maddubs`, scaled by `madd`.
///
/// # Safety
/// `blk` must be a whole super-block of `kind`, `a` hold 256 bytes and `bsums` 16 sums; the
/// CPU must have AVX2.
#[target_feature(enable = "avx2")]
unsafe fn q45k_isums(kind: BlockKind, blk: &[u8], a: &[i8], bsums: &[i32]) -> (i32, i32) {
    debug_assert!(blk.len() == kind.block_bytes() && a.len() >= QK_K && bsums.len() >= 16);
    let mut scales = [0i16; 8];
    let mut summ = 0i32;
    for j in 0..8 {
        let (sc, m) = quant::q4_k_scale_min(j, &blk[4..16]);
        scales[j] = i16::from(sc);
        summ += i32::from(m) * (bsums[2 * j] + bsums[2 * j + 1]);
    }
    let (qh, qs) = if kind == BlockKind::Q5K {
        (Some(&blk[16..48]), &blk[48..])
    } else {
        (None, &blk[16..])
    };
    // SAFETY: a Q5_K super-block holds 32 bytes of fifth bits at 16.
    let high = qh.map(|h| unsafe { _mm256_loadu_si256(h.as_ptr().cast::<__m256i>()) });
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_si256();
    for chunk in 0..QK_K / 64 {
        // SAFETY: 128 nibble bytes, 32 per chunk; 256 activation bytes, 64 per chunk.
        let (raw, y_lo, y_hi) = unsafe {
            (
                _mm256_loadu_si256(qs.as_ptr().add(32 * chunk).cast::<__m256i>()),
                _mm256_loadu_si256(a.as_ptr().add(64 * chunk).cast::<__m256i>()),
                _mm256_loadu_si256(a.as_ptr().add(64 * chunk + 32).cast::<__m256i>()),
            )
        };
        let mut lo = _mm256_and_si256(raw, m4);
        let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), m4);
        if let Some(h) = high {
            lo = _mm256_or_si256(lo, fifth_bits(h, 2 * chunk));
            hi = _mm256_or_si256(hi, fifth_bits(h, 2 * chunk + 1));
        }
        let p_lo = _mm256_maddubs_epi16(lo, y_lo);
        let p_hi = _mm256_maddubs_epi16(hi, y_hi);
        acc = _mm256_add_epi32(
            acc,
            _mm256_madd_epi16(p_lo, _mm256_set1_epi16(scales[2 * chunk])),
        );
        acc = _mm256_add_epi32(
            acc,
            _mm256_madd_epi16(p_hi, _mm256_set1_epi16(scales[2 * chunk + 1])),
        );
    }
    (hsum_epi32(acc), summ)
}

/// Bit `sub` of every byte of `h`, moved to bit 4 (Q5_K's fifth bit of sub-block `sub`).
#[target_feature(enable = "avx2")]
#[inline]
fn fifth_bits(h: __m256i, sub: usize) -> __m256i {
    let shifted = _mm256_srl_epi16(h, _mm_cvtsi32_si128(sub as i32));
    _mm256_slli_epi16::<4>(_mm256_and_si256(shifted, _mm256_set1_epi8(1)))
}

/// The low two bits of every byte of `bits`, moved to bits 4-5 (Q6_K's top bits).
#[target_feature(enable = "avx2")]
#[inline]
fn top_bits(bits: __m256i) -> __m256i {
    _mm256_slli_epi16::<4>(_mm256_and_si256(bits, _mm256_set1_epi8(3)))
}

/// The integer sum of one Q6_K super-block with 256 activation bytes (see `k_isums`):
/// `Σ scale·q·a` by `maddubs`/`madd`, less `32 · Σ scale·bsum`.
///
/// # Safety
/// As for [`q45k_isums`].
#[target_feature(enable = "avx2")]
unsafe fn q6k_isums(blk: &[u8], a: &[i8], bsums: &[i32]) -> (i32, i32) {
    debug_assert!(blk.len() == quant::Q6_K_BLOCK_BYTES && a.len() >= QK_K && bsums.len() >= 16);
    let scales: [i16; 16] = std::array::from_fn(|j| i16::from(blk[192 + j] as i8));
    let offset: i32 = (0..16).map(|j| i32::from(scales[j]) * bsums[j]).sum();
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_si256();
    for half in 0..2 {
        // SAFETY: ql holds 128 bytes (64 per half), qh 64 (32 per half) after 128.
        let (qa, qb, h) = unsafe {
            let ql = blk.as_ptr().add(64 * half);
            (
                _mm256_loadu_si256(ql.cast::<__m256i>()),
                _mm256_loadu_si256(ql.add(32).cast::<__m256i>()),
                _mm256_loadu_si256(blk.as_ptr().add(128 + 32 * half).cast::<__m256i>()),
            )
        };
        let quarters = [
            _mm256_or_si256(_mm256_and_si256(qa, m4), top_bits(h)),
            _mm256_or_si256(
                _mm256_and_si256(qb, m4),
                top_bits(_mm256_srli_epi16::<2>(h)),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(qa), m4),
                top_bits(_mm256_srli_epi16::<4>(h)),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(qb), m4),
                top_bits(_mm256_srli_epi16::<6>(h)),
            ),
        ];
        for (quarter, q) in quarters.into_iter().enumerate() {
            let at = 128 * half + 32 * quarter;
            // SAFETY: `at + 32 <= 256` activation bytes.
            let y = unsafe { _mm256_loadu_si256(a.as_ptr().add(at).cast::<__m256i>()) };
            let j = at / 16;
            let sc = _mm256_set_m128i(_mm_set1_epi16(scales[j + 1]), _mm_set1_epi16(scales[j]));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), sc));
        }
    }
    (hsum_epi32(acc) - 32 * offset, 0)
}

/// The K-quant super-block sums of `kind`.
///
/// # Safety
/// As for [`q45k_isums`].
#[target_feature(enable = "avx2")]
unsafe fn k_isums(kind: BlockKind, blk: &[u8], a: &[i8], bsums: &[i32]) -> (i32, i32) {
    if kind == BlockKind::Q6K {
        // SAFETY: forwarded contract.
        unsafe { q6k_isums(blk, a, bsums) }
    } else {
        // SAFETY: forwarded contract.
        unsafe { q45k_isums(kind, blk, a, bsums) }
    }
}

/// Dots one K-quant weight row with activation rows `i0..i0 + out.len()`.
///
/// # Safety
/// `w_row` must be a whole row of `kind` super-blocks matching `x.cols` and `x` quantized in
/// 256-value blocks; the CPU must have AVX2.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_k_avx2(kind: BlockKind, w_row: &[u8], x: &Q8Rows, i0: usize, out: &mut [f32]) {
    let nb = x.blocks_per_row();
    for (j, o) in out.iter_mut().enumerate() {
        let mut acc = 0f32;
        for (b, blk) in w_row.chunks_exact(kind.block_bytes()).enumerate() {
            let at = (i0 + j) * nb + b;
            let a = &x.qs[at * QK_K..(at + 1) * QK_K];
            let bsums = &x.bsums[at * 16..(at + 1) * 16];
            // SAFETY: whole super-block, 256 activation bytes and 16 sums (sliced above).
            let (sumi, summ) = unsafe { k_isums(kind, blk, a, bsums) };
            let dmin = if kind == BlockKind::Q6K {
                0.0
            } else {
                f16_at(blk, 2)
            };
            let d = if kind == BlockKind::Q6K {
                f16_at(blk, 208)
            } else {
                f16_at(blk, 0)
            };
            acc += super::k_combine(d, dmin, x.d[at], sumi, summ);
        }
        *o = acc;
    }
}

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
        // SAFETY: features detected on this line; the row is whole and the activations are
        // in 256-value blocks (`matmul_t` checked both).
        Isa::Avx2 | Isa::Avx512Vnni if kind.is_k_quant() && has_avx2() => unsafe {
            tile_k_avx2(kind, w_row, x, i0, out)
        },
        _ => {
            for (j, o) in out.iter_mut().enumerate() {
                *o = super::generic_loop(kind, w_row, x, i0 + j, super::isum_scalar);
            }
        }
    }
}

/// Per-block integer sums on `isa` (exposed for the exactness tests); two per K-quant
/// super-block.
pub(super) fn block_isums(
    isa: Isa,
    kind: BlockKind,
    w_row: &[u8],
    a_row: &[i8],
    bsums: &[i32],
    nb: usize,
) -> Vec<i32> {
    match isa {
        Isa::Avx2 | Isa::Avx512Vnni if kind.is_k_quant() && has_avx2() => {
            let bb = kind.block_bytes();
            (0..nb)
                .flat_map(|b| {
                    // SAFETY: features detected above; whole super-blocks, 256 activation
                    // bytes and 16 sums per block (the caller checked the shapes).
                    let (sumi, summ) = unsafe {
                        k_isums(
                            kind,
                            &w_row[b * bb..(b + 1) * bb],
                            &a_row[b * QK_K..(b + 1) * QK_K],
                            &bsums[b * 16..(b + 1) * 16],
                        )
                    };
                    [sumi, summ]
                })
                .collect()
        }
        // SAFETY: features detected on this line; whole rows checked by the caller.
        Isa::Avx512Vnni if has_avx512_vnni() => unsafe { isums_vnni(kind, w_row, a_row, nb) },
        // SAFETY: as above.
        Isa::Avx2 if has_avx2() => unsafe { isums_avx2(kind, w_row, a_row, nb) },
        _ => Vec::new(),
    }
}
