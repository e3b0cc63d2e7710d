//! aarch64 NEON integer sum of one block (widening `smull` + pairwise adds), plugged into the
//! generic block loop. Built and run only on aarch64: untested on this x86 build host (see
//! `cross/README.md`).

use std::arch::aarch64::*;

use crate::engine::quant::QK;

/// `Σ w[i] · a[i]` over one 32-value block; `a` holds at least 32 bytes.
pub(super) fn isum(w: &[i8; QK], a: &[i8]) -> i32 {
    let a = &a[..QK];
    // SAFETY: NEON is detected by the caller (`Isa::is_available`); both slices hold 32
    // bytes, read as two 16-byte vectors each.
    unsafe {
        let mut acc = vdupq_n_s32(0);
        for h in 0..2 {
            let wv = vld1q_s8(w.as_ptr().add(16 * h));
            let av = vld1q_s8(a.as_ptr().add(16 * h));
            let lo = vmull_s8(vget_low_s8(wv), vget_low_s8(av));
            let hi = vmull_s8(vget_high_s8(wv), vget_high_s8(av));
            acc = vpadalq_s16(acc, lo);
            acc = vpadalq_s16(acc, hi);
        }
        vaddvq_s32(acc)
    }
}
