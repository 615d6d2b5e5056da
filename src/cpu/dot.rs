//! Dot products Σ_k w_k · x_k, with w f32 or bf16 and x f32, accumulated in f32: the inner
//! loop of decoding (linear.rs) and of one-query attention (gemm.rs's M = 1 path). Each has a
//! portable version and an AVX2 + FMA one, picked by [`Kernel`].

use super::gemm::Kernel;
use half::bf16;

pub fn dot_f32(kernel: Kernel, w: &[f32], x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len(), "dot_f32: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx2Fma {
        // SAFETY: Kernel::Avx2Fma is only detected on CPUs with AVX2 and FMA.
        return unsafe { avx2::dot_f32(w, x) };
    }
    let _ = kernel;
    w.iter().zip(x).map(|(w, x)| w * x).sum()
}

/// x as [`dot_bf16`] with this kernel reads it: the AVX2 kernel wants each whole block of
/// 16 values as its 8 even-indexed ones, then its 8 odd-indexed ones (see avx2::dot_bf16);
/// the portable one wants x as it is. Made once per x, used for every row of W.
pub fn bf16_operand(kernel: Kernel, x: &[f32]) -> Vec<f32> {
    if kernel != Kernel::Avx2Fma {
        return x.to_vec();
    }
    let whole = x.len() / 16 * 16;
    let blocks = x[..whole].chunks_exact(16);
    let reordered = blocks.flat_map(|b| (0..16).map(move |i| b[evens_then_odds_source(i)]));
    reordered.chain(x[whole..].iter().copied()).collect()
}

/// Σ w·x, with x from [`bf16_operand`] for the same kernel.
pub fn dot_bf16(kernel: Kernel, w: &[bf16], x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len(), "dot_bf16: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx2Fma {
        // SAFETY: Kernel::Avx2Fma is only detected on CPUs with AVX2 and FMA.
        return unsafe { avx2::dot_bf16(w, x) };
    }
    let _ = kernel;
    w.iter().zip(x).map(|(w, x)| w.to_f32() * x).sum()
}

/// Where value i of a reordered 16-block came from: 0, 2, …, 14, 1, 3, …, 15.
fn evens_then_odds_source(i: usize) -> usize {
    if i < 8 {
        2 * i
    } else {
        2 * (i - 8) + 1
    }
}

/// The dot products with AVX2 + FMA: four 8-lane accumulators (32 values per iteration, so
/// four FMA chains are in flight), summed at the end; the remainder is done scalar.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use half::bf16;
    use std::arch::x86_64::*;

    const STEP: usize = 32;
    /// How far ahead of the loads the prefetches reach.
    const PREFETCH_BYTES: usize = 2048;

    /// Σ of the 8 lanes of each accumulator, then the scalar tail.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn finish(acc: [__m256; 4], tail: f32) -> f32 {
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let half = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
        let pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
        let one = _mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1));
        _mm_cvtss_f32(one) + tail
    }

    /// w and x of equal length (checked by the caller).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
        let whole = w.len() / STEP * STEP;
        let mut acc = [_mm256_setzero_ps(); 4];
        for i in (0..whole).step_by(STEP) {
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: i + 8j + 8 ≤ whole ≤ len of both slices; loadu has no alignment need.
                let (wv, xv) =
                    (_mm256_loadu_ps(w.as_ptr().add(i + 8 * j)), _mm256_loadu_ps(x.as_ptr().add(i + 8 * j)));
                *a = _mm256_fmadd_ps(wv, xv, *a);
            }
        }
        let tail: f32 = w[whole..].iter().zip(&x[whole..]).map(|(w, x)| w * x).sum();
        finish(acc, tail)
    }

    /// Σ w·x with w bf16 and x from `bf16_operand`. A 256-bit load takes 16 bf16 as
    /// 8 32-bit lanes, lane j = w[2j+1] << 16 | w[2j]; shifting each lane left by 16 gives
    /// w[2j] as an f32, masking off its low half gives w[2j+1]: no shuffle, which is why x is
    /// split into evens and odds. w and x of equal length (checked by the caller).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_bf16(w: &[bf16], x: &[f32]) -> f32 {
        let whole = w.len() / STEP * STEP;
        let high_half = _mm256_set1_epi32(0xFFFF_0000_u32 as i32);
        let mut acc = [_mm256_setzero_ps(); 4];
        for i in (0..whole).step_by(STEP) {
            // The hardware prefetchers stop at 4 KiB page boundaries (a 2048-wide bf16 row is
            // one page): ask for the line PREFETCH_BYTES ahead, past the row's end if need be.
            _mm_prefetch::<_MM_HINT_T0>(w.as_ptr().wrapping_add(i + PREFETCH_BYTES / 2) as *const i8);
            for half in 0..2 {
                let at = i + 16 * half;
                // SAFETY: at + 16 ≤ whole ≤ len of both slices; unaligned loads.
                let raw = _mm256_loadu_si256(w.as_ptr().add(at) as *const __m256i);
                let evens = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
                let odds = _mm256_castsi256_ps(_mm256_and_si256(raw, high_half));
                let (x_evens, x_odds) =
                    (_mm256_loadu_ps(x.as_ptr().add(at)), _mm256_loadu_ps(x.as_ptr().add(at + 8)));
                acc[2 * half] = _mm256_fmadd_ps(evens, x_evens, acc[2 * half]);
                acc[2 * half + 1] = _mm256_fmadd_ps(odds, x_odds, acc[2 * half + 1]);
            }
        }
        // The tail: a whole 16-block still in evens-then-odds order, then the plain rest.
        let mut tail = 0.0;
        for (w, x) in w[whole..].chunks(16).zip(x[whole..].chunks(16)) {
            if w.len() == 16 {
                tail += x
                    .iter()
                    .enumerate()
                    .map(|(i, x)| w[super::evens_then_odds_source(i)].to_f32() * x)
                    .sum::<f32>();
            } else {
                tail += w.iter().zip(x).map(|(w, x)| w.to_f32() * x).sum::<f32>();
            }
        }
        finish(acc, tail)
    }
}
