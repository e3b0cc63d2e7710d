//! The AVX2/FMA body of [`gemm_bias`](super::gemm::gemm_bias): a register tile of [`MR`]
//! activation rows by one 16-column panel (12 accumulators), the activations broadcast from
//! their rows in place, the panel read one cache line per inner step. Panels are taken
//! [`NC_PANELS`] at a time and the inner dimension [`KC`] at a time, so the block of panels
//! in use stays in L2 while every row tile of the share passes over it; the bias and GELU
//! are applied when the last block of the inner dimension leaves the registers.

use std::arch::x86_64::*;

use super::PANEL;
use super::x86::has_avx2;

/// Activation rows per register tile.
const MR: usize = 6;
/// Inner-dimension values per block.
const KC: usize = 384;
/// Panels per block (`KC · PANEL · 4` bytes each: 24 KiB).
const NC_PANELS: usize = 12;

/// `out = act(x · Wᵀ + bias)` over `panels` (`[n, k]` packed), `false` (nothing written)
/// without AVX2 and FMA. The caller checked that `x` is whole rows of `k`, `panels` holds
/// the packed weight, `bias` `n` values and `out` a row of `n` per row of `x`.
pub(super) fn gemm(
    x: &[f32],
    panels: &[f32],
    n: usize,
    k: usize,
    bias: &[f32],
    gelu: bool,
    out: &mut [f32],
) -> bool {
    let m = x.len() / k;
    let shapes_ok = k > 0
        && x.len() == m * k
        && panels.len() == n.div_ceil(PANEL) * k * PANEL
        && bias.len() == n
        && out.len() == m * n;
    if !shapes_ok || !has_avx2() {
        return false;
    }
    // SAFETY: AVX2 and FMA detected; the lengths were checked above, which is all the body
    // relies on to stay in bounds.
    unsafe { gemm_avx2(x, panels, n, k, bias, gelu, out) };
    true
}

/// Where one tile reads and writes: `rows` activation rows from `a` (row stride `lda`), a
/// panel block from `b` (`kl` rows of 16), `cols` output columns at `c` (row stride `ldc`).
struct Tile {
    a: *const f32,
    lda: usize,
    b: *const f32,
    kl: usize,
    c: *mut f32,
    ldc: usize,
    /// Start from zero (the first inner block) rather than from what `c` holds.
    first: bool,
    /// The 16 biases to add, with GELU after when `gelu`: the last inner block only.
    bias: Option<*const f32>,
    gelu: bool,
}

/// # Safety
/// The CPU must have AVX2 and FMA; `x`, `panels`, `bias` and `out` must have the lengths
/// [`gemm`] checks.
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_avx2(
    x: &[f32],
    panels: &[f32],
    n: usize,
    k: usize,
    bias: &[f32],
    gelu: bool,
    out: &mut [f32],
) {
    let m = x.len() / k;
    let np = n.div_ceil(PANEL);
    let mut edge_c = [0f32; MR * PANEL];
    let mut edge_bias = [0f32; PANEL];
    for jc in (0..np).step_by(NC_PANELS) {
        let jend = (jc + NC_PANELS).min(np);
        for kc in (0..k).step_by(KC) {
            let kl = KC.min(k - kc);
            let last = kc + kl == k;
            for i in (0..m).step_by(MR) {
                let rows = MR.min(m - i);
                for p in jc..jend {
                    let col0 = p * PANEL;
                    let cols = PANEL.min(n - col0);
                    // SAFETY: row `i + rows - 1 < m` of `x` holds `kc + kl <= k` values;
                    // panel `p < np` holds `k` rows of 16, of which `kc..kc + kl` are read;
                    // output rows `i..i + rows` hold columns `col0..col0 + cols <= n`. A
                    // partial panel goes through `edge_c` / `edge_bias`, whole tiles of 16.
                    unsafe {
                        let mut tile = Tile {
                            a: x.as_ptr().add(i * k + kc),
                            lda: k,
                            b: panels.as_ptr().add(p * k * PANEL + kc * PANEL),
                            kl,
                            c: out.as_mut_ptr().add(i * n + col0),
                            ldc: n,
                            first: kc == 0,
                            bias: last.then(|| bias.as_ptr().add(col0)),
                            gelu,
                        };
                        if cols == PANEL {
                            run_tile(rows, &tile);
                        } else {
                            for r in 0..rows {
                                let src = &out[(i + r) * n + col0..(i + r) * n + col0 + cols];
                                edge_c[r * PANEL..r * PANEL + cols].copy_from_slice(src);
                            }
                            edge_bias[..cols].copy_from_slice(&bias[col0..]);
                            (tile.c, tile.ldc) = (edge_c.as_mut_ptr(), PANEL);
                            tile.bias = last.then_some(edge_bias.as_ptr());
                            run_tile(rows, &tile);
                            for r in 0..rows {
                                let dst = &mut out[(i + r) * n + col0..(i + r) * n + col0 + cols];
                                dst.copy_from_slice(&edge_c[r * PANEL..r * PANEL + cols]);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// # Safety
/// As [`tile`], with `1 <= rows <= MR`.
#[target_feature(enable = "avx2,fma")]
unsafe fn run_tile(rows: usize, t: &Tile) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match rows {
            6 => tile::<6>(t),
            5 => tile::<5>(t),
            4 => tile::<4>(t),
            3 => tile::<3>(t),
            2 => tile::<2>(t),
            _ => tile::<1>(t),
        }
    }
}

/// One `R × 16` tile.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `t.a` must hold `R` rows of `t.kl` values at stride
/// `t.lda`, `t.b` `t.kl` rows of 16, `t.c` `R` rows of 16 at stride `t.ldc`, and `t.bias`
/// 16 values.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize>(t: &Tile) {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    // SAFETY: every offset below is within the extents the caller guarantees.
    unsafe {
        for kk in 0..t.kl {
            let b0 = _mm256_loadu_ps(t.b.add(kk * PANEL));
            let b1 = _mm256_loadu_ps(t.b.add(kk * PANEL + 8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = _mm256_broadcast_ss(&*t.a.add(r * t.lda + kk));
                acc[0] = _mm256_fmadd_ps(a, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(a, b1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let c = t.c.add(r * t.ldc);
            let (mut v0, mut v1) = (acc[0], acc[1]);
            if !t.first {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(c));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(c.add(8)));
            }
            if let Some(bias) = t.bias {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(bias));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(bias.add(8)));
                if t.gelu {
                    v0 = gelu_ps(v0);
                    v1 = gelu_ps(v1);
                }
            }
            _mm256_storeu_ps(c, v0);
            _mm256_storeu_ps(c.add(8), v1);
        }
    }
}

/// `0.5 · x · (1 + erf(x / √2))` per lane, erf as [`erf`](super::gemm::erf) computes it.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn gelu_ps(x: __m256) -> __m256 {
    let t = _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    let sign = _mm256_and_ps(t, _mm256_set1_ps(-0.0));
    let a = _mm256_andnot_ps(_mm256_set1_ps(-0.0), t);
    let mut p = _mm256_set1_ps(0.000_043_063_8);
    for c in [
        0.000_276_567_2,
        0.000_152_014_3,
        0.009_270_527,
        0.042_282_01,
    ] {
        p = _mm256_fmadd_ps(p, a, _mm256_set1_ps(c));
    }
    p = _mm256_fmadd_ps(p, a, _mm256_set1_ps(0.070_523_08));
    let one = _mm256_set1_ps(1.0);
    p = _mm256_fmadd_ps(p, a, one);
    let p2 = _mm256_mul_ps(p, p);
    let p4 = _mm256_mul_ps(p2, p2);
    let p8 = _mm256_mul_ps(p4, p4);
    let erf = _mm256_sub_ps(one, _mm256_div_ps(one, _mm256_mul_ps(p8, p8)));
    let erf = _mm256_or_ps(erf, sign);
    _mm256_mul_ps(
        _mm256_mul_ps(_mm256_set1_ps(0.5), x),
        _mm256_add_ps(one, erf),
    )
}

/// Decodes panel-ordered Q8_0 bytes (`qs`, rows of 16) with their column scales (16 per 32
/// rows) into `out`, one f32 per byte; `false` (nothing written) without AVX2 or when the
/// lengths do not match so.
pub(super) fn decode_q8(qs: &[i8], scales: &[f32], out: &mut [f32]) -> bool {
    const BLOCK: usize = 32 * PANEL;
    let ok = out.len() == qs.len()
        && qs.len().is_multiple_of(BLOCK)
        && scales.len() == qs.len() / BLOCK * PANEL;
    if !ok || !has_avx2() {
        return false;
    }
    // SAFETY: AVX2 detected; the lengths were checked above.
    unsafe { decode_q8_avx2(qs, scales, out) };
    true
}

/// # Safety
/// The CPU must have AVX2; `out` and `qs` must have one length, a multiple of 512, and
/// `scales` 16 values per 512.
#[target_feature(enable = "avx2")]
unsafe fn decode_q8_avx2(qs: &[i8], scales: &[f32], out: &mut [f32]) {
    let (q, o) = (qs.as_ptr(), out.as_mut_ptr());
    for (b, d) in scales.chunks_exact(PANEL).enumerate() {
        // SAFETY: block `b` has 16 scales, 512 bytes at `b · 512` of `qs` and as many
        // values of `out`, by the lengths the caller checked.
        unsafe {
            let d0 = _mm256_loadu_ps(d.as_ptr());
            let d1 = _mm256_loadu_ps(d.as_ptr().add(8));
            for row in 0..32 {
                let at = b * 32 * PANEL + row * PANEL;
                let bytes = _mm_loadu_si128(q.add(at).cast());
                let lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
                let hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(bytes)));
                _mm256_storeu_ps(o.add(at), _mm256_mul_ps(lo, d0));
                _mm256_storeu_ps(o.add(at + 8), _mm256_mul_ps(hi, d1));
            }
        }
    }
}
