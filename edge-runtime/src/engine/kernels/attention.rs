//! Softmax attention of one head over strided f32 rows, the inner step of the encoder's fused
//! attention: `out = softmax(scale · Q Kᵀ) V` for the first `len` rows of a sequence, the
//! products on matrixmultiply's f32 GEMM (read in place through strides, nothing transposed),
//! the rows' exponentials in one pass (AVX2 when the CPU has it) and each row's division by
//! its sum applied to its `d` output values rather than to its `len` probabilities.

use anyhow::{Result, ensure};

/// The row kernel a softmax takes: the exponentials of a row less its maximum, and their sum.
#[derive(Debug)]
pub struct RowSoftmax {
    _private: (),
}

impl RowSoftmax {
    /// The best kernel for this CPU.
    pub fn new() -> Result<Self> {
        Ok(Self { _private: () })
    }

    /// `row[i] = e^(row[i] − max row)` in place; the sum of the new values.
    fn exp_sum(&self, row: &mut [f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if let Some(sum) = super::x86::softmax_exp_sum(row) {
            return sum;
        }
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        sum
    }
}

/// One head's rows: row `i`'s `d` values start at `i · stride + offset` of the buffer.
#[derive(Clone, Copy, Debug)]
pub struct HeadRows {
    /// Where row 0 starts.
    pub offset: usize,
    /// Distance between rows.
    pub stride: usize,
}

impl HeadRows {
    /// Whether `rows` rows of `d` values fit in a buffer of `len`.
    fn fits(self, buffer: usize, rows: usize, d: usize) -> bool {
        rows == 0
            || d == 0
            || (rows - 1)
                .checked_mul(self.stride)
                .and_then(|x| x.checked_add(self.offset))
                .and_then(|x| x.checked_add(d))
                .is_some_and(|end| end <= buffer)
    }
}

/// `out[i] = Σ_j softmax_j(scale · q[i] · k[j]) · v[j]` for `i, j < len`, every row `d`
/// values read at `rows` (the same layout in q, k and v) and written at `out_rows`. `scores`
/// is scratch of at least `len · (len + 1)` values.
#[allow(clippy::too_many_arguments, reason = "one head's whole geometry")]
pub fn attention_head(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    (rows, out_rows): (HeadRows, HeadRows),
    (len, d): (usize, usize),
    scale: f32,
    softmax: &RowSoftmax,
    scores: &mut [f32],
) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let fits = [q.len(), k.len(), v.len()]
        .iter()
        .all(|&b| rows.fits(b, len, d))
        && out_rows.fits(out.len(), len, d);
    ensure!(
        fits && d > 0
            && scores.len() >= len * (len + 1)
            && rows.stride >= d
            && out_rows.stride >= d,
        "attention over {len} rows of {d} at {rows:?} (out {out_rows:?}) in buffers of {}, {}, \
         {}, {} with {} scratch",
        q.len(),
        k.len(),
        v.len(),
        out.len(),
        scores.len()
    );
    let (scores, inverse) = scores[..len * (len + 1)].split_at_mut(len * len);
    let stride = rows.stride as isize;
    // SAFETY: every pointer is into a live slice; `fits` checked that rows `0..len` of `d`
    // values at `offset + i · stride` lie inside q, k, v (`rows`) and out (`out_rows`), and
    // `scores` holds `len`
    // rows of `len` values. A: q rows (row stride `stride`, column stride 1); B: kᵀ
    // (row stride 1, column stride `stride`); C: `len × len` written at row stride `len`.
    // `out` is the only buffer written and no input aliases it (distinct borrows).
    unsafe {
        matrixmultiply::sgemm(
            len,
            d,
            len,
            scale,
            q.as_ptr().add(rows.offset),
            stride,
            1,
            k.as_ptr().add(rows.offset),
            1,
            stride,
            0.0,
            scores.as_mut_ptr(),
            len as isize,
            1,
        );
    }
    for (row, inv) in scores.chunks_exact_mut(len).zip(inverse.iter_mut()) {
        *inv = softmax.exp_sum(row).recip();
    }
    // SAFETY: as above; A: the `len × len` probabilities at row stride `len`; B: v rows
    // (row stride `stride`, column stride 1); C: out rows, `len × d` at `out_rows`' stride,
    // inside `out` by `fits`.
    unsafe {
        matrixmultiply::sgemm(
            len,
            len,
            d,
            1.0,
            scores.as_ptr(),
            len as isize,
            1,
            v.as_ptr().add(rows.offset),
            stride,
            1,
            0.0,
            out.as_mut_ptr().add(out_rows.offset),
            out_rows.stride as isize,
            1,
        );
    }
    for (i, inv) in inverse.iter().enumerate() {
        let at = out_rows.offset + i * out_rows.stride;
        out[at..at + d].iter_mut().for_each(|o| *o *= inv);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain loops: the definition.
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        rows: HeadRows,
        len: usize,
        d: usize,
        scale: f32,
    ) -> Vec<f32> {
        let at = |b: &[f32], i: usize, c: usize| b[rows.offset + i * rows.stride + c];
        let mut out = vec![0.0; len * d];
        for i in 0..len {
            let s: Vec<f32> = (0..len)
                .map(|j| scale * (0..d).map(|c| at(q, i, c) * at(k, j, c)).sum::<f32>())
                .collect();
            let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = s.iter().map(|x| (x - max).exp()).collect();
            let total: f32 = e.iter().sum();
            for c in 0..d {
                out[i * d + c] = (0..len).map(|j| e[j] / total * at(v, j, c)).sum();
            }
        }
        out
    }

    #[test]
    fn one_head_of_interleaved_rows_matches_the_plain_loops_at_every_length() {
        let (heads, d) = (3, 8);
        let stride = heads * d;
        for len in [1, 2, 3, 5, 8, 13] {
            let n = len * stride;
            let fill = |seed: usize| -> Vec<f32> {
                (0..n)
                    .map(|i| ((i * 31 + seed * 17) % 23) as f32 / 7.0 - 1.5)
                    .collect()
            };
            let (q, k, v) = (fill(1), fill(2), fill(3));
            for h in 0..heads {
                let rows = HeadRows {
                    offset: h * d,
                    stride,
                };
                let mut out = vec![9.0; n];
                let mut scores = vec![0.0; len * (len + 1)];
                let softmax = RowSoftmax::new().expect("kernels");
                attention_head(
                    &q,
                    &k,
                    &v,
                    &mut out,
                    (rows, rows),
                    (len, d),
                    0.35,
                    &softmax,
                    &mut scores,
                )
                .expect("fits");
                let want = reference(&q, &k, &v, rows, len, d, 0.35);
                for i in 0..len {
                    for c in 0..d {
                        let got = out[h * d + i * stride + c];
                        assert!(
                            (got - want[i * d + c]).abs() < 1e-4,
                            "len {len} head {h} ({i}, {c}): {got} vs {}",
                            want[i * d + c]
                        );
                    }
                    // The other heads' columns are untouched.
                    let other = (h + 1) % heads;
                    assert_eq!(out[other * d + i * stride], 9.0);
                }
            }
        }
    }

    #[test]
    fn row_exponentials_match_libm_at_every_length_and_range() {
        let sm = RowSoftmax::new().expect("kernels");
        for len in [1, 7, 8, 9, 31, 256] {
            for spread in [0.5f32, 20.0, 200.0] {
                let row: Vec<f32> = (0..len)
                    .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * spread)
                    .collect();
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let want: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
                let mut got = row.clone();
                let sum = sm.exp_sum(&mut got);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-6 * w.max(1e-30) || (*w < 1e-37 && *g < 1e-37),
                        "len {len} spread {spread} at {i}: {g} vs {w}"
                    );
                }
                let total: f32 = want.iter().sum();
                assert!(
                    (sum - total).abs() <= 1e-5 * total,
                    "len {len}: {sum} vs {total}"
                );
            }
        }
        let mut odd = vec![0.0, f32::INFINITY, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        let sum = sm.exp_sum(&mut odd);
        assert!(
            sum.is_nan(),
            "an infinite score gives NaN as libm's loop does: {sum}"
        );
    }

    #[test]
    fn rows_beyond_a_buffer_or_short_scratch_are_an_error_not_a_read() {
        let buf = vec![0.0f32; 40];
        let mut out = vec![0.0f32; 40];
        let mut scores = vec![0.0f32; 64];
        let mut short = vec![0.0f32; 25];
        let rows = HeadRows {
            offset: 4,
            stride: 8,
        };
        let sm = RowSoftmax::new().expect("kernels");
        let mut run = |len, d, scores: &mut [f32]| {
            attention_head(
                &buf,
                &buf,
                &buf,
                &mut out,
                (rows, rows),
                (len, d),
                1.0,
                &sm,
                scores,
            )
        };
        assert!(run(5, 4, &mut scores).is_ok());
        assert!(run(5, 5, &mut scores).is_err());
        assert!(run(6, 4, &mut scores).is_err());
        assert!(run(5, 4, &mut [0.0; 10]).is_err());
        assert!(
            run(5, 4, &mut short).is_err(),
            "25 values hold the scores, not the sums"
        );
    }
}
