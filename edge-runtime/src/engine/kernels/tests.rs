use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::engine::quant::dequantize;

const KINDS: [BlockKind; 8] = [
    BlockKind::Q4_0,
    BlockKind::Q4_1,
    BlockKind::Q5_0,
    BlockKind::Q5_1,
    BlockKind::Q8_0,
    BlockKind::Q4K,
    BlockKind::Q5K,
    BlockKind::Q6K,
];

fn simd_paths() -> Vec<Isa> {
    [Isa::Avx2, Isa::Avx512Vnni, Isa::Neon]
        .into_iter()
        .filter(|isa| isa.is_available())
        .collect()
}

/// How a test fills weight blocks.
#[derive(Clone, Copy, Debug)]
enum Fill {
    Random,
    /// Every nibble 0 (Q4: −8 / 0) or every byte −128, at the largest finite f16 scale.
    LowestCodes,
    /// Every nibble 15 (Q4: +7 / 15) or every byte +127, at the largest finite f16 scale.
    HighestCodes,
}

fn f16_bytes(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_le_bytes()
}

fn weight_bytes(
    kind: BlockKind,
    rows: usize,
    cols: usize,
    fill: Fill,
    rng: &mut StdRng,
) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rows * cols / kind.block_values() {
        out.extend(weight_block(kind, fill, rng));
    }
    out
}

/// One block of `kind`: scales (and offsets or mins) in f16, payload bytes random or, for
/// the extreme fills, all lowest or all highest codes at the largest finite f16 scale.
fn weight_block(kind: BlockKind, fill: Fill, rng: &mut StdRng) -> Vec<u8> {
    let (scale, code): (f32, Option<u8>) = match fill {
        Fill::Random => (rng.random_range(-0.1..0.1), None),
        Fill::LowestCodes => (f16::MAX.to_f32(), Some(0x00)),
        Fill::HighestCodes => (-f16::MAX.to_f32(), Some(0xFF)),
    };
    let offset = match fill {
        Fill::Random => rng.random_range(-0.5..0.5),
        _ => f16::MAX.to_f32(),
    };
    let mut payload = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| match (code, kind) {
                (Some(0x00), BlockKind::Q8_0) => 0x80, // −128
                (Some(_), BlockKind::Q8_0) => 0x7F,    // +127
                (Some(c), _) => c,
                (None, _) => rng.random(),
            })
            .collect()
    };
    let bb = kind.block_bytes();
    let with_offset = [f16_bytes(scale), f16_bytes(offset)].concat();
    match kind {
        BlockKind::Q4_0 | BlockKind::Q5_0 | BlockKind::Q8_0 => {
            [&f16_bytes(scale)[..], &payload(bb - 2)].concat()
        }
        BlockKind::Q4_1 | BlockKind::Q5_1 | BlockKind::Q4K | BlockKind::Q5K => {
            [with_offset, payload(bb - 4)].concat()
        }
        BlockKind::Q6K => {
            // Values, then 16 signed scales (−128 or +127 when extreme), then d.
            let scales = match code {
                Some(0x00) => vec![0x80; 16],
                Some(_) => vec![0x7F; 16],
                None => payload(16),
            };
            [payload(192), scales, f16_bytes(scale).to_vec()].concat()
        }
    }
}

fn activations(rows: usize, cols: usize, extreme: bool, rng: &mut StdRng) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| {
            if extreme {
                if i % 3 == 0 { -1.0e4 } else { 1.0e4 }
            } else {
                rng.random_range(-3.0..3.0)
            }
        })
        .collect()
}

/// The scalar product, and per output the sum of the magnitudes of its value products
/// (`Σ |dw·da·w·a|` plus the offset or min terms): the scale of any summation order's error.
fn scalar_with_magnitude(w: &QuantMatrix<'_>, x: &Q8Rows) -> (Vec<f32>, Vec<f32>) {
    let mut out = vec![0f32; w.rows() * x.rows()];
    matmul_t(Isa::Scalar, w, 0, x, &mut out).expect("scalar product");
    let nb = x.blocks_per_row();
    let (bb, bv) = (w.kind().block_bytes(), w.kind().block_values());
    let abs_isum = |p: &[i8], q: &[i8]| -> i32 {
        p.iter()
            .zip(q)
            .map(|(&p, &q)| (i32::from(p) * i32::from(q)).abs())
            .sum()
    };
    let mut mag = vec![0f32; out.len()];
    for r in 0..w.rows() {
        let row = w.row(r);
        for i in 0..x.rows() {
            mag[r * x.rows() + i] = (0..nb)
                .map(|b| {
                    let blk = &row[b * bb..(b + 1) * bb];
                    let at = i * nb + b;
                    let a = &x.qs[at * bv..(at + 1) * bv];
                    if w.kind().is_k_quant() {
                        let k = unpack_k(w.kind(), blk);
                        let bs = &x.bsums[at * 16..(at + 1) * 16];
                        let sumi: i32 = (0..QK_K / k.sub)
                            .map(|j| {
                                let s = j * k.sub..(j + 1) * k.sub;
                                k.scales[j].abs() * abs_isum(&k.w[s.clone()], &a[s])
                            })
                            .sum();
                        let summ: i32 = (0..8)
                            .map(|j| (k.mins[j] * (bs[2 * j] + bs[2 * j + 1])).abs())
                            .sum();
                        (k.d * x.d[at]).abs() * sumi as f32 + (k.dmin * x.d[at]).abs() * summ as f32
                    } else {
                        let (dw, mw, wq) = unpack_block(w.kind(), blk);
                        (dw * x.d[at]).abs() * abs_isum(&wq, a) as f32 + (mw * x.s[at]).abs()
                    }
                })
                .sum();
        }
    }
    (out, mag)
}

fn check_paths_agree(kind: BlockKind, rows: usize, cols: usize, m: usize, fill: Fill, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let bytes = weight_bytes(kind, rows, cols, fill, &mut rng);
    let w = QuantMatrix::new(kind, rows, cols, &bytes).expect("matrix");
    let extreme = !matches!(fill, Fill::Random);
    let mut x = Q8Rows::default();
    x.quantize_for(kind, &activations(m, cols, extreme, &mut rng), m, cols)
        .expect("quantizes");
    let (want, mag) = scalar_with_magnitude(&w, &x);
    for isa in std::iter::once(Isa::Scalar).chain(simd_paths()) {
        let case = format!("{isa:?} {kind:?} {rows}x{cols} m={m} {fill:?}");
        for r in 0..rows {
            for i in 0..m {
                assert_eq!(
                    block_isums(isa, &w, r, &x, i).expect("sums"),
                    block_isums(Isa::Scalar, &w, r, &x, i).expect("sums"),
                    "{case}: integer sums of row {r}, activation {i}"
                );
            }
        }
        let mut got = vec![f32::NAN; want.len()];
        matmul_t(isa, &w, 0, &x, &mut got).expect("product");
        for (j, ((g, s), mg)) in got.iter().zip(&want).zip(&mag).enumerate() {
            assert!(g.is_finite(), "{case}: output {j} is {g}");
            assert!(
                (g - s).abs() <= 1e-5 * mg.max(f32::MIN_POSITIVE),
                "{case}: output {j}: {g} vs scalar {s} (term magnitude {mg})"
            );
        }
        // The row-major product is the transposed one, value for value.
        let mut row_major = vec![f32::NAN; want.len()];
        matmul(isa, &w, &x, &mut row_major).expect("product");
        for r in 0..rows {
            for i in 0..m {
                assert_eq!(
                    row_major[i * rows + r].to_bits(),
                    got[r * m + i].to_bits(),
                    "{case}: row-major output of row {r}, activation {i}"
                );
            }
        }
    }
}

#[test]
fn every_simd_path_equals_the_scalar_reference_on_random_blocks() {
    let mut seed = 0;
    for kind in KINDS {
        // Row and activation counts not divisible by the tile size, decode and prefill; the
        // inner dimension in 1 to 3 blocks of the format.
        let bv = kind.block_values();
        for (rows, cols) in [(1, bv), (3, 2 * bv), (7, 3 * bv), (13, 2 * bv)] {
            for m in [1, 2, 3, 4, 5, 7, 9] {
                seed += 1;
                check_paths_agree(kind, rows, cols, m, Fill::Random, seed);
            }
        }
    }
}

#[test]
fn every_simd_path_equals_the_scalar_reference_on_extreme_blocks() {
    for kind in KINDS {
        for fill in [Fill::LowestCodes, Fill::HighestCodes] {
            for m in [1, 3, 4, 6] {
                check_paths_agree(kind, 5, 2 * kind.block_values(), m, fill, 7);
            }
        }
    }
}

#[test]
fn scalar_product_is_close_to_the_dequantized_f32_product() {
    let mut rng = StdRng::seed_from_u64(42);
    let (rows, cols, m) = (6, 512, 3);
    for kind in KINDS {
        let bytes = weight_bytes(kind, rows, cols, Fill::Random, &mut rng);
        let w = QuantMatrix::new(kind, rows, cols, &bytes).expect("matrix");
        let wf = dequantize(kind.ggml(), &bytes, rows * cols).expect("decodes");
        let xf = activations(m, cols, false, &mut rng);
        let mut x = Q8Rows::default();
        x.quantize_for(kind, &xf, m, cols).expect("quantizes");
        let mut got = vec![0f32; rows * m];
        matmul_t(Isa::Scalar, &w, 0, &x, &mut got).expect("product");
        for r in 0..rows {
            for i in 0..m {
                let terms = (0..cols).map(|k| wf[r * cols + k] * xf[i * cols + k]);
                let (exact, mag) = terms.fold((0f32, 0f32), |(s, a), t| (s + t, a + t.abs()));
                let g = got[r * m + i];
                // int8 activations carry about 1/254 relative error per value.
                assert!(
                    (g - exact).abs() <= 0.01 * mag,
                    "{kind:?} row {r} act {i}: {g} vs f32 {exact} (magnitude {mag})"
                );
            }
        }
    }
}

#[test]
fn a_row_range_writes_only_its_own_rows() {
    let mut rng = StdRng::seed_from_u64(3);
    let bytes = weight_bytes(BlockKind::Q4_1, 10, 64, Fill::Random, &mut rng);
    let w = QuantMatrix::new(BlockKind::Q4_1, 10, 64, &bytes).expect("matrix");
    let mut x = Q8Rows::default();
    x.quantize(&activations(2, 64, false, &mut rng), 2, 64)
        .expect("quantizes");
    let mut all = vec![0f32; 20];
    matmul_t(Isa::detect(), &w, 0, &x, &mut all).expect("whole");
    let mut part = vec![0f32; 6];
    matmul_t(Isa::detect(), &w, 4, &x, &mut part).expect("rows 4..7");
    assert_eq!(part, all[8..14]);
}

#[test]
fn activation_quantization_keeps_minus_128_out_and_survives_non_finite_values() {
    let mut x = Q8Rows::default();
    let mut v = vec![0f32; 64];
    v[0] = -5.0;
    v[1] = 5.0;
    v[32] = f32::NAN;
    v[33] = f32::INFINITY;
    x.quantize(&v, 1, 64).expect("quantizes");
    assert_eq!(x.qs[0], -127);
    assert_eq!(x.qs[1], 127);
    assert!(x.qs.iter().all(|&q| q != i8::MIN));
    assert_eq!(x.s[0], 0.0); // −127 + 127
}

#[test]
fn every_simd_quantizer_writes_the_scalar_bytes_scales_and_sums() {
    let mut rng = StdRng::seed_from_u64(17);
    let mut v: Vec<f32> = (0..64 * 32).map(|_| rng.random_range(-3.0..3.0)).collect();
    // Ties at the rounding point, a zero block, tiny and huge scales, one value per block
    // much larger than the rest, and the non-finite values the scalar path takes over.
    v[..32].copy_from_slice(&[0.0; 32]);
    for (i, x) in v[32..64].iter_mut().enumerate() {
        *x = (i as f32 - 16.0) * 0.5;
    }
    v[64..96].iter_mut().for_each(|x| *x *= 1e-30);
    v[96..128].iter_mut().for_each(|x| *x *= 1e30);
    v[130] = -7.0e4;
    v[160] = f32::NAN;
    v[200] = f32::NEG_INFINITY;
    v[230] = f32::MAX;
    let mut want = Q8Rows::default();
    want.quantize_on(Isa::Scalar, &v, 64, 32)
        .expect("quantizes");
    for isa in simd_paths() {
        let mut got = Q8Rows::default();
        got.quantize_on(isa, &v, 64, 32).expect("quantizes");
        assert_eq!(got.qs, want.qs, "{isa:?} bytes");
        let bits = |f: &[f32]| f.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got.d), bits(&want.d), "{isa:?} scales");
        assert_eq!(bits(&got.s), bits(&want.s), "{isa:?} sums");
    }
}

#[test]
fn the_f32_dot_and_axpy_equal_plain_sums_at_every_length() {
    let mut rng = StdRng::seed_from_u64(23);
    for n in [0, 1, 7, 8, 9, 15, 16, 17, 31, 64, 70] {
        let a: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
        let b: Vec<f32> = (0..n + 3).map(|_| rng.random_range(-2.0..2.0)).collect();
        let want: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        let mag: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from((x * y).abs()))
            .sum();
        let got = dot(&a, &b);
        assert!(
            (f64::from(got) - want).abs() <= 1e-5 * mag.max(1e-30),
            "dot n={n}: {got} vs {want}"
        );
        let mut y: Vec<f32> = b.clone();
        axpy(0.75, &a, &mut y);
        for (i, v) in y.iter().enumerate() {
            let expect = if i < n { b[i] + 0.75 * a[i] } else { b[i] };
            assert!(
                (v - expect).abs() <= 1e-6 * (1.0 + expect.abs()),
                "axpy n={n} at {i}"
            );
        }
    }
}

#[test]
fn the_f32_product_and_the_q8_0_decoder_equal_plain_loops_and_refuse_bad_shapes() {
    let mut rng = StdRng::seed_from_u64(29);
    let (n, k) = (13, 64);
    let values: Vec<f32> = (0..n * k).map(|_| rng.random_range(-2.0..2.0)).collect();
    let bytes = quant::quantize(GgmlType::Q8_0, &values).expect("quantizes");
    let w = QuantMatrix::new(BlockKind::Q8_0, n, k, &bytes).expect("matrix");
    let mut decoded = vec![5.0; 3];
    decode_q8_0(&w, &mut decoded).expect("decodes");
    assert_eq!(
        decoded,
        dequantize(GgmlType::Q8_0, &bytes, n * k).expect("decodes")
    );
    for m in [1, 3, 17] {
        let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-2.0..2.0)).collect();
        let mut out = vec![0.0; m * n];
        matmul_f32_t(&x, &decoded, k, &mut out).expect("fits");
        for i in 0..m {
            for r in 0..n {
                let row = &x[i * k..(i + 1) * k];
                let want: f32 = row.iter().zip(&decoded[r * k..]).map(|(a, b)| a * b).sum();
                assert!((out[i * n + r] - want).abs() <= 1e-4, "m={m} ({i}, {r})");
            }
        }
    }
    let mut out = vec![0.0; 2 * n];
    assert!(matmul_f32_t(&[0.0; 2 * 64], &decoded, 64, &mut out[1..]).is_err());
    assert!(matmul_f32_t(&[0.0; 2 * 64 + 1], &decoded, 64, &mut out).is_err());
    assert!(matmul_f32_t(&[], &[], 0, &mut []).is_err());
    let q4 = quant::quantize(GgmlType::Q4_0, &values).expect("quantizes");
    let w4 = QuantMatrix::new(BlockKind::Q4_0, n, k, &q4).expect("matrix");
    assert!(decode_q8_0(&w4, &mut decoded).is_err());
}

#[test]
fn refuses_mismatched_shapes_without_panicking() {
    assert_eq!(
        QuantMatrix::new(BlockKind::Q4_0, 2, 33, &[0; 36]).err(),
        Some(KernelError::NotWholeBlocks {
            cols: 33,
            block: 32
        })
    );
    assert_eq!(
        QuantMatrix::new(BlockKind::Q4K, 1, 96, &[0; 144]).err(),
        Some(KernelError::NotWholeBlocks {
            cols: 96,
            block: 256
        })
    );
    assert!(matches!(
        QuantMatrix::new(BlockKind::Q4_0, 2, 32, &[0; 35]),
        Err(KernelError::WeightLength { expected: 36, .. })
    ));
    assert!(QuantMatrix::new(BlockKind::Q8_0, usize::MAX, 64, &[]).is_err());
    assert_eq!(
        BlockKind::from_ggml(GgmlType::Q2K),
        Err(KernelError::Unsupported(GgmlType::Q2K))
    );
    let mut x = Q8Rows::default();
    assert!(x.quantize(&[0.0; 63], 2, 32).is_err());
    assert!(x.quantize(&[0.0; 0], 0, 0).is_err());
    let bytes = vec![0u8; 2 * 18];
    let w = QuantMatrix::new(BlockKind::Q4_0, 2, 32, &bytes).expect("matrix");
    x.quantize(&[1.0; 64], 1, 64).expect("quantizes");
    assert!(matmul_t(Isa::Scalar, &w, 0, &x, &mut [0.0; 2]).is_err()); // 64 vs 32 cols
    x.quantize(&[1.0; 32], 1, 32).expect("quantizes");
    assert!(matmul_t(Isa::Scalar, &w, 1, &x, &mut [0.0; 2]).is_err()); // rows 1..3 of 2
    assert!(matmul_t(Isa::Scalar, &w, usize::MAX, &x, &mut [0.0; 1]).is_err());
    assert!(block_isums(Isa::Scalar, &w, 2, &x, 0).is_err());
}

#[test]
fn k_quant_weights_refuse_activations_quantized_in_32_value_blocks() {
    let mut rng = StdRng::seed_from_u64(9);
    let bytes = weight_bytes(BlockKind::Q6K, 2, 256, Fill::Random, &mut rng);
    let w = QuantMatrix::new(BlockKind::Q6K, 2, 256, &bytes).expect("matrix");
    let xf = activations(1, 256, false, &mut rng);
    let mut x = Q8Rows::default();
    x.quantize(&xf, 1, 256).expect("quantizes");
    assert!(matmul_t(Isa::Scalar, &w, 0, &x, &mut [0.0; 2]).is_err());
    assert!(block_isums(Isa::Scalar, &w, 0, &x, 0).is_err());
    x.quantize_k(&xf, 1, 256).expect("quantizes");
    assert!(matmul_t(Isa::detect(), &w, 0, &x, &mut [0.0; 2]).is_ok());
}

#[test]
fn q8_k_activations_follow_ggml_reference_quantization() {
    // The value of largest magnitude, −127/64, maps to −127 through iscale = −127 / max = 64
    // (exact in f32); halves round to even; every 16 values are summed.
    let mut v = vec![0f32; 256];
    v[0] = -127.0 / 64.0;
    v[1] = 2.5 / 64.0; // 2.5 → 2
    v[2] = 0.5 / 64.0; // 0.5 → 0
    v[3] = 1.5 / 64.0; // 1.5 → 2
    v[17] = -3.5 / 64.0; // −3.5 → −4
    let mut x = Q8Rows::default();
    x.quantize_k(&v, 1, 256).expect("quantizes");
    assert_eq!(&x.qs[..4], &[-127, 2, 0, 2]);
    assert_eq!(x.qs[17], -4);
    assert_eq!(x.d[0], 1.0 / 64.0);
    assert_eq!(x.bsums[0], -127 + 2 + 2);
    assert_eq!(x.bsums[1], -4);
    assert_eq!(x.bsums.len(), 16);
}

/// `erf(x)` in f64 from its Taylor series (|x| < 4, where the terms still cancel in f64).
fn erf_reference(x: f64) -> f64 {
    if x.abs() >= 4.0 {
        return x.signum();
    }
    let (mut term, mut sum) = (x, x);
    for n in 1..200 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// `act(x · wᵀ + bias)` in f64, `w` row-major `[n, k]`.
fn dense_reference(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    k: usize,
    act: gemm::Activation,
) -> Vec<f64> {
    let n = bias.len();
    let mut out = Vec::new();
    for row in x.chunks_exact(k) {
        for r in 0..n {
            let dot: f64 = row
                .iter()
                .zip(&w[r * k..(r + 1) * k])
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let v = dot + f64::from(bias[r]);
            out.push(match act {
                gemm::Activation::Identity => v,
                gemm::Activation::Gelu => 0.5 * v * (1.0 + erf_reference(v / 2f64.sqrt())),
            });
        }
    }
    out
}

#[test]
fn the_erf_and_gelu_approximations_stay_within_a_few_millionths() {
    for i in -800..=800 {
        let x = i as f32 / 100.0;
        let want = erf_reference(f64::from(x));
        // 3·10⁻⁷ of the formula, and f32 rounding through the 16th power.
        assert!((f64::from(gemm::erf(x)) - want).abs() < 3e-6, "erf({x})");
        let g = 0.5 * f64::from(x) * (1.0 + erf_reference(f64::from(x) / 2f64.sqrt()));
        let tol = 1e-6 * (1.0 + g.abs());
        assert!((f64::from(gemm::gelu(x)) - g).abs() < tol, "gelu({x})");
    }
    assert!(gemm::gelu(f32::NAN).is_nan());
    assert_eq!(gemm::gelu(1e30), 1e30);
    assert_eq!(gemm::gelu(-1e30), 0.0);
}

#[test]
fn the_packed_f32_product_equals_a_plain_product_on_every_path_at_odd_shapes() {
    let mut rng = StdRng::seed_from_u64(31);
    let mut paths = simd_paths();
    paths.push(Isa::Scalar);
    // Tails of the 6-row tile and the 16-column panel, an inner dimension over one 384-value
    // block, and more panels than one L2 block holds (12).
    for (m, n, k) in [
        (1, 1, 1),
        (5, 15, 7),
        (6, 16, 32),
        (7, 17, 33),
        (13, 40, 385),
        (2, 200, 9),
        (11, 209, 800),
    ] {
        let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let bias: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut packed = gemm::AlignedBuf::default();
        gemm::pack_panels(&w, n, k, &mut packed).expect("packs");
        let panels = gemm::Panels::new(packed.as_slice(), n, k).expect("panels");
        for act in [gemm::Activation::Identity, gemm::Activation::Gelu] {
            let want = dense_reference(&x, &w, &bias, k, act);
            for &isa in &paths {
                let mut out = vec![f32::NAN; m * n];
                gemm::gemm_bias_on(isa, &x, panels, &bias, act, &mut out).expect("fits");
                let tol = 1e-5 * (k as f64).sqrt();
                for (i, (&got, &want)) in out.iter().zip(&want).enumerate() {
                    assert!(
                        (f64::from(got) - want).abs() <= tol,
                        "{isa:?} {act:?} {m}×{n}×{k} at {i}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn packed_products_refuse_mismatched_shapes() {
    let mut packed = gemm::AlignedBuf::default();
    assert!(gemm::pack_panels(&[0.0; 5], 2, 3, &mut packed).is_err());
    gemm::pack_panels(&[0.0; 6], 2, 3, &mut packed).expect("packs");
    assert!(gemm::Panels::new(packed.as_slice(), 17, 3).is_err());
    assert!(gemm::Panels::new(packed.as_slice(), 2, 4).is_err());
    let panels = gemm::Panels::new(packed.as_slice(), 2, 3).expect("panels");
    let id = gemm::Activation::Identity;
    let mut out = [0.0; 4];
    assert!(gemm::gemm_bias(&[0.0; 7], panels, &[0.0; 2], id, &mut out).is_err());
    assert!(gemm::gemm_bias(&[0.0; 6], panels, &[0.0; 3], id, &mut out).is_err());
    assert!(gemm::gemm_bias(&[0.0; 6], panels, &[0.0; 2], id, &mut out[..3]).is_err());
    assert!(gemm::gemm_bias(&[0.0; 6], panels, &[0.0; 2], id, &mut out).is_ok());
}

#[test]
fn q8_0_weights_decode_into_the_panels_their_f32_values_pack_into() {
    let mut rng = StdRng::seed_from_u64(37);
    for (n, k) in [(1, 32), (17, 64), (40, 96)] {
        let values: Vec<f32> = (0..n * k).map(|_| rng.random_range(-2.0..2.0)).collect();
        let bytes = quant::quantize(GgmlType::Q8_0, &values).expect("quantizes");
        let w = QuantMatrix::new(BlockKind::Q8_0, n, k, &bytes).expect("matrix");
        let f32s = dequantize(GgmlType::Q8_0, &bytes, n * k).expect("decodes");
        let mut packed = gemm::AlignedBuf::default();
        gemm::pack_panels(&f32s, n, k, &mut packed).expect("packs");
        let q8 = gemm::Q8Panels::from_q8_0(&w).expect("rearranges");
        assert_eq!((q8.n(), q8.k()), (n, k));
        // Whole on every path, and one panel at a time, into buffers holding stale values.
        let mut paths = simd_paths();
        paths.push(Isa::Scalar);
        for isa in paths {
            let mut out = vec![9.0; gemm::panels_len(n, k)];
            q8.decode_on(isa, 0, &mut out).expect("decodes");
            assert_eq!(out, packed.as_slice(), "{isa:?} {n}×{k}");
        }
        let mut one = vec![9.0; k * gemm::PANEL];
        let last = n.div_ceil(gemm::PANEL) - 1;
        q8.decode(last, &mut one).expect("decodes");
        assert_eq!(one, packed.as_slice()[last * k * gemm::PANEL..]);
        assert!(q8.decode(last + 1, &mut one).is_err());
        assert!(q8.decode(0, &mut one[1..]).is_err());
    }
    let q4 = quant::quantize(GgmlType::Q4_0, &[0.5; 64]).expect("quantizes");
    let w4 = QuantMatrix::new(BlockKind::Q4_0, 2, 32, &q4).expect("matrix");
    assert!(gemm::Q8Panels::from_q8_0(&w4).is_err());
}

#[test]
fn a_residual_layer_norm_equals_the_onnx_definition() {
    let mut rng = StdRng::seed_from_u64(41);
    for n in [1, 7, 8, 384, 389] {
        let rows = 3;
        let y: Vec<f32> = (0..rows * n).map(|_| rng.random_range(-3.0..3.0)).collect();
        let res: Vec<f32> = (0..rows * n).map(|_| rng.random_range(-3.0..3.0)).collect();
        let gamma: Vec<f32> = (0..n).map(|_| rng.random_range(0.5..1.5)).collect();
        let beta: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let eps = 1e-5;
        let mut got = y.clone();
        gemm::add_layer_norm(&mut got, &res, &gamma, &beta, eps).expect("fits");
        for r in 0..rows {
            let s: Vec<f64> = (0..n)
                .map(|j| f64::from(y[r * n + j]) + f64::from(res[r * n + j]))
                .collect();
            let mean = s.iter().sum::<f64>() / n as f64;
            let var = s.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
            for j in 0..n {
                let want = (s[j] - mean) / (var + f64::from(eps)).sqrt() * f64::from(gamma[j])
                    + f64::from(beta[j]);
                let g = f64::from(got[r * n + j]);
                assert!(
                    (g - want).abs() < 1e-4,
                    "n={n} row {r} col {j}: {g} vs {want}"
                );
            }
        }
    }
    let mut y = [0.0; 6];
    assert!(gemm::add_layer_norm(&mut y, &[0.0; 5], &[1.0; 3], &[0.0; 3], 1e-5).is_err());
    assert!(gemm::add_layer_norm(&mut y, &[0.0; 6], &[1.0; 4], &[0.0; 4], 1e-5).is_err());
    assert!(gemm::add_layer_norm(&mut y, &[0.0; 6], &[1.0; 3], &[0.0; 2], 1e-5).is_err());
}
