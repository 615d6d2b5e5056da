//! y = x·Wᵀ for inference, with W as the checkpoint stores it: f32 or bf16, usually borrowed
//! straight from a memory map. A bf16 weight is converted to f32 as it is read, never held
//! in f32 as a whole, so a bf16 model needs about its file size in memory.
//!
//! ```text
//! x (T, K) f32    W (N, K) f32 or bf16    y (T, N) f32        y_tn = Σ_k x_tk · W_nk
//! T ≤ 4 (decoding): each weight row is read once, widened to f32 in registers and dotted
//!                   with the T rows of x; threads split the N rows. This is memory-bound:
//!                   its speed is the speed at which W streams in from memory.
//! T > 4 (prefill):  f32 W goes straight to the GEMM; bf16 W is widened a block of rows at a
//!                   time into a small f32 buffer and each block goes through the GEMM.
//! ```
//! bf16 → f32 is exact: a bf16 is the top 16 bits of an f32, so widening is a 16-bit shift.

use super::gemm::{gemm, gemm_serial, Kernel, MatRef};
use super::threads;
use half::bf16;
use std::borrow::Cow;

/// The values of a weight matrix, row-major, in their stored dtype.
#[derive(Clone, Debug)]
pub enum Values<'a> {
    F32(Cow<'a, [f32]>),
    BF16(Cow<'a, [bf16]>),
}

impl<'a> Values<'a> {
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::BF16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values `start..start + len`: borrowed values stay borrowed, owned ones are copied.
    pub fn part(&self, start: usize, len: usize) -> Values<'a> {
        fn cut<'a, T: Clone>(v: &Cow<'a, [T]>, start: usize, len: usize) -> Cow<'a, [T]> {
            match v {
                Cow::Borrowed(s) => Cow::Borrowed(&s[start..start + len]),
                Cow::Owned(s) => Cow::Owned(s[start..start + len].to_vec()),
            }
        }
        match self {
            Values::F32(v) => Values::F32(cut(v, start, len)),
            Values::BF16(v) => Values::BF16(cut(v, start, len)),
        }
    }

    /// Bytes per value.
    pub fn value_size(&self) -> usize {
        match self {
            Values::F32(_) => 4,
            Values::BF16(_) => 2,
        }
    }

    /// The stored dtype's safetensors name.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            Values::F32(_) => "F32",
            Values::BF16(_) => "BF16",
        }
    }
}

/// A weight matrix W (rows × cols), row-major. A vector is a 1 × cols matrix.
#[derive(Clone, Debug)]
pub struct Matrix<'a> {
    values: Values<'a>,
    rows: usize,
    cols: usize,
}

impl<'a> Matrix<'a> {
    pub fn new(values: Values<'a>, rows: usize, cols: usize) -> Matrix<'a> {
        assert_eq!(values.len(), rows * cols, "Matrix: {} values for {rows} × {cols}", values.len());
        Matrix { values, rows, cols }
    }

    /// A borrowed f32 matrix.
    pub fn f32(data: &'a [f32], rows: usize, cols: usize) -> Matrix<'a> {
        Matrix::new(Values::F32(Cow::Borrowed(data)), rows, cols)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn values(&self) -> &Values<'a> {
        &self.values
    }

    /// Bytes the matrix occupies in its stored dtype (what reading it once costs).
    pub fn bytes(&self) -> usize {
        self.values.len() * self.values.value_size()
    }

    /// Row `r` (cols values), widened to f32 into `out`.
    pub fn row_to_f32(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows, "Matrix::row_to_f32: row {r} of {} rows", self.rows);
        self.rows_to_f32(r, out);
    }

    /// Every value, widened to f32.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        self.rows_to_f32(0, &mut out);
        out
    }

    /// Rows first_row.. (as many as `out` holds), widened to f32.
    fn rows_to_f32(&self, first_row: usize, out: &mut [f32]) {
        let range = first_row * self.cols..first_row * self.cols + out.len();
        match &self.values {
            Values::F32(v) => out.copy_from_slice(&v[range]),
            Values::BF16(v) => {
                for (o, w) in out.iter_mut().zip(&v[range]) {
                    *o = w.to_f32();
                }
            }
        }
    }
}

/// Up to this many rows of x, [`linear`] streams W row by row (the decoding path).
pub const STREAMING_ROWS: usize = 4;

/// bf16 rows widened per block on the prefill path: 64 rows × K values of f32.
const BLOCK_ROWS: usize = 64;

/// y (T, N) = x (T, K) · Wᵀ, W (N, K) f32 or bf16; y is overwritten.
pub fn linear(y: &mut [f32], x: &[f32], w: &Matrix, t: usize) {
    let (n, k) = (w.rows, w.cols);
    assert_eq!(x.len(), t * k, "linear: x has {} values, expected T {t} × K {k}", x.len());
    assert_eq!(y.len(), t * n, "linear: y has {} values, expected T {t} × N {n}", y.len());
    if t == 0 || n == 0 {
        return;
    }
    if t <= STREAMING_ROWS {
        return linear_streaming(y, x, w, t);
    }
    let x_mat = MatRef::row_major(x, t, k);
    match &w.values {
        Values::F32(data) => gemm(y, n, x_mat, MatRef::row_major(data, n, k).t(), false),
        Values::BF16(_) => linear_bf16_blocks(y, x_mat, w),
    }
}

/// The decoding path: threads split W's rows; each row is widened once and dotted with the
/// T rows of x. yᵀ (N, T) is built first (each thread owns whole rows of it), then transposed.
fn linear_streaming(y: &mut [f32], x: &[f32], w: &Matrix, t: usize) {
    let (n, k) = (w.rows, w.cols);
    let kernel = Kernel::detect();
    // The AVX2 bf16 kernel reads x with each 16-value block split into evens then odds.
    let x_bf16_order: Vec<f32> = match (&w.values, kernel) {
        (Values::BF16(_), Kernel::Avx2Fma) => x.chunks_exact(k).flat_map(evens_then_odds).collect(),
        _ => Vec::new(),
    };
    let mut y_t = vec![0.0; n * t];
    threads::par_rows(&mut y_t, t, t * k, |first, chunk| {
        for (i, y_row) in chunk.chunks_exact_mut(t).enumerate() {
            let row = (first + i) * k..(first + i + 1) * k;
            for (j, y) in y_row.iter_mut().enumerate() {
                *y = match &w.values {
                    Values::F32(v) => dot_f32(kernel, &v[row.clone()], &x[j * k..(j + 1) * k]),
                    Values::BF16(v) if kernel == Kernel::Avx2Fma => {
                        // SAFETY: Kernel::Avx2Fma is only detected on CPUs with AVX2 and FMA.
                        unsafe { avx2::dot_bf16(&v[row.clone()], &x_bf16_order[j * k..(j + 1) * k]) }
                    }
                    Values::BF16(v) => {
                        v[row.clone()].iter().zip(&x[j * k..]).map(|(w, x)| w.to_f32() * x).sum()
                    }
                };
            }
        }
    });
    for (j, y_row) in y_t.chunks_exact(t).enumerate() {
        for (i, &v) in y_row.iter().enumerate() {
            y[i * n + j] = v;
        }
    }
}

/// Where value i of a reordered 16-block came from: 0, 2, …, 14, 1, 3, …, 15.
fn evens_then_odds_source(i: usize) -> usize {
    if i < 8 {
        2 * i
    } else {
        2 * (i - 8) + 1
    }
}

/// x with each whole block of 16 values reordered as its 8 even-indexed values, then its 8
/// odd-indexed ones (x0 x2 … x14 x1 x3 … x15); the tail past the last whole block as it is.
fn evens_then_odds(x: &[f32]) -> Vec<f32> {
    let whole = x.len() / 16 * 16;
    let blocks = x[..whole].chunks_exact(16);
    let reordered = blocks.flat_map(|b| (0..16).map(move |i| b[evens_then_odds_source(i)]));
    reordered.chain(x[whole..].iter().copied()).collect()
}

/// The prefill path for bf16 W: threads split W's rows; each widens BLOCK_ROWS rows at a time
/// into an f32 buffer and multiplies them with x into its own (T × its rows) slab of y.
fn linear_bf16_blocks(y: &mut [f32], x: MatRef, w: &Matrix) {
    let (t, n, k) = (x.rows(), w.rows, w.cols);
    let slabs = threads::par_map(n.div_ceil(BLOCK_ROWS), t * k * BLOCK_ROWS, |blocks| {
        let rows = blocks.start * BLOCK_ROWS..(blocks.end * BLOCK_ROWS).min(n);
        let mut slab = vec![0.0; t * rows.len()];
        let mut widened = vec![0.0; BLOCK_ROWS * k];
        for start in rows.clone().step_by(BLOCK_ROWS) {
            let len = BLOCK_ROWS.min(rows.end - start);
            w.rows_to_f32(start, &mut widened[..len * k]);
            let block = MatRef::row_major(&widened[..len * k], len, k);
            let at = start - rows.start;
            gemm_serial(&mut slab[at..], rows.len(), x, block.t(), false);
        }
        (rows, slab)
    });
    for (rows, slab) in slabs {
        for (y_row, slab_row) in y.chunks_exact_mut(n).zip(slab.chunks_exact(rows.len())) {
            y_row[rows.clone()].copy_from_slice(slab_row);
        }
    }
}

// ---- dot products: Σ_k w_k · x_k, w f32 or bf16, f32 accumulation

pub(super) fn dot_f32(kernel: Kernel, w: &[f32], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx2Fma {
        // SAFETY: Kernel::Avx2Fma is only detected on CPUs with AVX2 and FMA.
        return unsafe { avx2::dot_f32(w, x) };
    }
    let _ = kernel;
    w.iter().zip(x).map(|(w, x)| w * x).sum()
}

/// The dot products with AVX2 + FMA: four 8-lane accumulators (32 values per iteration, so
/// four FMA chains are in flight), summed at the end; the remainder is done scalar.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use half::bf16;
    use std::arch::x86_64::*;

    const STEP: usize = 32;
    const PREFETCH: usize = 1024;

    /// Σ of the 8 lanes of each accumulator, then the scalar tail.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn finish(acc: [__m256; 4], tail: f32) -> f32 {
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let half = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
        let pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
        let one = _mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1));
        _mm_cvtss_f32(one) + tail
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
        assert_eq!(w.len(), x.len(), "dot_f32: lengths differ");
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

    /// Σ w·x with w bf16 and x in `evens_then_odds` order. A 256-bit load takes 16 bf16 as
    /// 8 32-bit lanes, lane j = w[2j+1] << 16 | w[2j]; shifting each lane left by 16 gives
    /// w[2j] as an f32, masking off its low half gives w[2j+1]: no shuffle, which is why x is
    /// split into evens and odds.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_bf16(w: &[bf16], x: &[f32]) -> f32 {
        assert_eq!(w.len(), x.len(), "dot_bf16: lengths differ");
        let whole = w.len() / STEP * STEP;
        let high_half = _mm256_set1_epi32(0xFFFF_0000_u32 as i32);
        let mut acc = [_mm256_setzero_ps(); 4];
        for i in (0..whole).step_by(STEP) {
            // The hardware prefetchers stop at 4 KiB page boundaries (a 2048-wide bf16 row is
            // one page): ask for the line PREFETCH values ahead, past the row's end if need be.
            _mm_prefetch::<_MM_HINT_T0>(w.as_ptr().wrapping_add(i + PREFETCH) as *const i8);
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
        // The tail: whole 16-blocks still in evens-then-odds order, then the plain rest.
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
