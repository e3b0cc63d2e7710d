//! aarch64 NEON integer product of weight and activation bytes (widening `smull` + pairwise
//! adds), plugged into the generic block loops (the same loops the scalar path runs, so the
//! x86 and scalar tests exercise everything here but this one function). Built and run only
//! on aarch64: untested on this x86 build host (see `cross/README.md`).

use std::arch::aarch64::*;

/// `Σ w[i] · a[i]` over `w.len()` values (a multiple of 16); `a` holds at least as many.
pub(super) fn isum(w: &[i8], a: &[i8]) -> i32 {
    let a = &a[..w.len()];
    let mut acc_total = 0i32;
    for (wc, ac) in w.chunks_exact(16).zip(a.chunks_exact(16)) {
        // SAFETY: NEON is detected by the caller (`Isa::is_available`); both chunks hold 16
        // bytes, read as one vector each.
        acc_total += unsafe {
            let wv = vld1q_s8(wc.as_ptr());
            let av = vld1q_s8(ac.as_ptr());
            let lo = vmull_s8(vget_low_s8(wv), vget_low_s8(av));
            let hi = vmull_s8(vget_high_s8(wv), vget_high_s8(av));
            let acc = vpadalq_s16(vdupq_n_s32(0), lo);
            vaddvq_s32(vpadalq_s16(acc, hi))
        };
    }
    acc_total
}
