//! f32 GEMM, BLIS-style:  C (M×N) = A (M×K) · B (K×N), or C += A·B.
//!
//! A and B are strided views ([`MatRef`]), so every transposed form the backward needs
//! (A·Bᵀ, Aᵀ·B, …) is the same code: the transpose is absorbed by packing.
//!
//! Loop nest (Goto / BLIS), with the packed block that each level keeps in cache:
//! ```text
//! for jc in N by NC:                      B panel  KC×NC  (L3)
//!   for pc in K by KC:  pack B[pc.., jc..] into NR-wide slivers, k-major
//!     for ic in M by MC:                  A block  MC×KC  (L2)
//!       pack A[ic.., pc..] into MR-tall slivers, k-major
//!       for jr in NC by NR: for ir in MC by MR:
//!         micro-kernel: C[MR×NR] (+)= Σ_p a_sliver[p] ⊗ b_sliver[p]   (registers)
//! ```
//! Edges are zero-padded in the packed slivers, so the micro-kernel always runs full tiles;
//! a partial tile goes through a small buffer. Every C element sums its K products in the
//! same order whatever the thread count: threads split C into disjoint blocks.

use super::dot::dot_f32;
use super::threads;

/// Micro-tile height and width: 6×16 f32 = 12 AVX2 accumulators of 8 lanes, leaving
/// registers for two B vectors and one broadcast A value.
pub const MR: usize = 6;
pub const NR: usize = 16;
/// Cache blocks: an A block of MC×KC floats (185 KiB) sits in L2, a KC-long B sliver
/// (16 KiB) in L1, and the B panel KC×NC (1.5 MiB) in L3.
const KC: usize = 256;
const MC: usize = 180;
const NC: usize = 1536;

/// A read-only strided matrix: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    pub fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> MatRef<'a> {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * rs + (cols - 1) * cs;
            assert!(
                last < data.len(),
                "MatRef: a {rows}×{cols} view with strides ({rs}, {cs}) needs {} values, got {}",
                last + 1,
                data.len()
            );
        }
        MatRef { data, rows, cols, rs, cs }
    }

    /// A contiguous row-major matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> MatRef<'a> {
        MatRef::new(data, rows, cols, cols, 1)
    }

    /// The transpose: same storage, strides swapped.
    pub fn t(self) -> MatRef<'a> {
        MatRef { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    #[inline]
    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }

    /// Rows `start..start+len` as a view of their own.
    fn row_block(self, start: usize, len: usize) -> MatRef<'a> {
        let offset = if len == 0 { 0 } else { start * self.rs };
        MatRef { data: &self.data[offset..], rows: len, ..self }
    }

    /// Columns `start..start+len` as a view of their own.
    fn col_block(self, start: usize, len: usize) -> MatRef<'a> {
        self.t().row_block(start, len).t()
    }
}

/// Which micro-kernel runs the tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust, any CPU.
    Scalar,
    /// AVX2 + FMA intrinsics, chosen at run time when the CPU has both.
    Avx2Fma,
}

impl Kernel {
    /// The fastest kernel this CPU runs (checked once, then cached).
    pub fn detect() -> Kernel {
        static DETECTED: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Kernel::Avx2Fma;
            }
            Kernel::Scalar
        })
    }
}

/// C (+)= A·B on all threads with the fastest kernel. C is M×N row-major with row stride
/// `ldc` (≥ N); `accumulate` adds to C instead of overwriting it.
pub fn gemm(c: &mut [f32], ldc: usize, a: MatRef, b: MatRef, accumulate: bool) {
    let work = a.rows * b.cols * a.cols;
    gemm_with(Kernel::detect(), threads::threads_for(work), c, ldc, a, b, accumulate);
}

/// [`gemm`] on the calling thread only: for ops that already run one task per thread.
pub fn gemm_serial(c: &mut [f32], ldc: usize, a: MatRef, b: MatRef, accumulate: bool) {
    gemm_with(Kernel::detect(), 1, c, ldc, a, b, accumulate);
}

/// [`gemm`] with a chosen kernel and thread count (tests compare kernels with it).
pub fn gemm_with(
    kernel: Kernel,
    n_threads: usize,
    c: &mut [f32],
    ldc: usize,
    a: MatRef,
    b: MatRef,
    accumulate: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "gemm: A is {m}×{k} but B is {}×{n}", b.rows);
    assert!(ldc >= n, "gemm: ldc {ldc} < N {n}");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        c.len() >= (m - 1) * ldc + n,
        "gemm: C ({m}×{n}, ldc {ldc}) needs {} values, got {}",
        (m - 1) * ldc + n,
        c.len()
    );
    if m == 1 && a.cs == 1 && (b.rs == 1 || b.cs == 1) {
        return gemv(kernel, &mut c[..n], a, b, accumulate);
    }
    // C as row slices, each exactly N long: threads get disjoint sets of them.
    let mut rows: Vec<&mut [f32]> = c.chunks_mut(ldc).take(m).map(|row| &mut row[..n]).collect();
    if n_threads <= 1 {
        return gemm_block(kernel, &mut rows, a, b, accumulate);
    }
    // Each thread packs the whole of the operand it shares: B (K×N) when C is split by rows,
    // A (M×K) when split by columns. Share the smaller one.
    if m >= n && m >= n_threads * MR {
        std::thread::scope(|s| {
            let mut rest = &mut rows[..];
            for r in threads::split_range(m, n_threads, MR) {
                let (band, tail) = rest.split_at_mut(r.len());
                rest = tail;
                let a_band = a.row_block(r.start, r.len());
                s.spawn(move || gemm_block(kernel, band, a_band, b, accumulate));
            }
        });
    } else {
        let ranges = threads::split_range(n, n_threads, NR);
        let mut column_blocks: Vec<Vec<&mut [f32]>> = ranges.iter().map(|_| Vec::with_capacity(m)).collect();
        for row in rows {
            let mut rest = row;
            for (block, r) in column_blocks.iter_mut().zip(&ranges) {
                let (part, tail) = rest.split_at_mut(r.len());
                block.push(part);
                rest = tail;
            }
        }
        std::thread::scope(|s| {
            for (r, mut block) in ranges.iter().zip(column_blocks) {
                let b_block = b.col_block(r.start, r.len());
                s.spawn(move || gemm_block(kernel, &mut block, a, b_block, accumulate));
            }
        });
    }
}

/// One row of A (a decode step's attention: one query): C (1×N) (+)= a·B with no packing,
/// on the calling thread. As N dot products when B's columns are contiguous (B = Kᵀ), else
/// as K rows of B, each scaled by a_p and added (B = V).
fn gemv(kernel: Kernel, c: &mut [f32], a: MatRef, b: MatRef, accumulate: bool) {
    let (k, n) = (a.cols, b.cols);
    let a_row = &a.data[..k];
    if !accumulate {
        c.fill(0.0);
    }
    if b.rs == 1 {
        for (j, c) in c.iter_mut().enumerate() {
            *c += dot_f32(kernel, &b.data[j * b.cs..j * b.cs + k], a_row);
        }
    } else {
        for (p, &a_p) in a_row.iter().enumerate() {
            for (c, &b) in c.iter_mut().zip(&b.data[p * b.rs..p * b.rs + n]) {
                *c += a_p * b;
            }
        }
    }
}

/// The single-threaded loop nest above, over C given as its M rows (each N long).
fn gemm_block(kernel: Kernel, c: &mut [&mut [f32]], a: MatRef, b: MatRef, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if k == 0 {
        if !accumulate {
            c.iter_mut().for_each(|row| row.fill(0.0));
        }
        return;
    }
    let mut b_pack = vec![0.0f32; KC.min(k) * n.min(NC).next_multiple_of(NR)];
    let mut a_pack = vec![0.0f32; KC.min(k) * m.min(MC).next_multiple_of(MR)];
    let mut tile = [[0.0f32; NR]; MR];
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            pack_b(&mut b_pack, b, pc, kc, jc, nc);
            let add_to_c = accumulate || pc > 0;
            for ic in (0..m).step_by(MC) {
                let mc = MC.min(m - ic);
                pack_a(&mut a_pack, a, ic, mc, pc, kc);
                for jr in (0..nc).step_by(NR) {
                    let nr = NR.min(nc - jr);
                    let b_sliver = &b_pack[jr * kc..(jr + NR) * kc];
                    for ir in (0..mc).step_by(MR) {
                        let mr = MR.min(mc - ir);
                        let a_sliver = &a_pack[ir * kc..(ir + MR) * kc];
                        let c_rows = &mut c[ic + ir..ic + ir + mr];
                        if mr == MR && nr == NR {
                            run_kernel(kernel, kc, a_sliver, b_sliver, c_rows, jc + jr, add_to_c);
                            continue;
                        }
                        // Partial tile: compute the full tile into a buffer, keep the valid part.
                        let mut tile_rows = tile.each_mut().map(|row| row.as_mut_slice());
                        run_kernel(kernel, kc, a_sliver, b_sliver, &mut tile_rows, 0, false);
                        for (row, src) in c_rows.iter_mut().zip(&tile) {
                            let dst = &mut row[jc + jr..jc + jr + nr];
                            if add_to_c {
                                dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                            } else {
                                dst.copy_from_slice(&src[..nr]);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Packs A[i0..i0+mc, p0..p0+kc] into MR-tall slivers: sliver s holds, for each p, the MR
/// values A[i0 + s·MR + r, p0 + p] (r = 0..MR), zero past row mc.
fn pack_a(dst: &mut [f32], a: MatRef, i0: usize, mc: usize, p0: usize, kc: usize) {
    for (s, sliver) in dst.chunks_exact_mut(MR * kc).take(mc.div_ceil(MR)).enumerate() {
        let (first, rows) = (i0 + s * MR, MR.min(mc - s * MR));
        if rows < MR {
            sliver.fill(0.0);
        }
        if a.cs == 1 {
            // Row-major A (activations): each row is contiguous, scattered with stride MR.
            for r in 0..rows {
                let start = (first + r) * a.rs + p0;
                for (p, &v) in a.data[start..start + kc].iter().enumerate() {
                    sliver[p * MR + r] = v;
                }
            }
        } else if a.rs == 1 {
            // Column-major A (a transposed operand): each column's MR values are contiguous.
            for (p, col) in sliver.chunks_exact_mut(MR).enumerate() {
                let start = (p0 + p) * a.cs + first;
                col[..rows].copy_from_slice(&a.data[start..start + rows]);
            }
        } else {
            for (p, col) in sliver.chunks_exact_mut(MR).enumerate() {
                for (r, v) in col[..rows].iter_mut().enumerate() {
                    *v = a.at(first + r, p0 + p);
                }
            }
        }
    }
}

/// Packs B[p0..p0+kc, j0..j0+nc] into NR-wide slivers: sliver s holds, for each p, the NR
/// values B[p0 + p, j0 + s·NR + c] (c = 0..NR), zero past column nc.
fn pack_b(dst: &mut [f32], b: MatRef, p0: usize, kc: usize, j0: usize, nc: usize) {
    for (s, sliver) in dst.chunks_exact_mut(NR * kc).take(nc.div_ceil(NR)).enumerate() {
        let cols = NR.min(nc - s * NR);
        if b.rs == 1 {
            // Column-contiguous B (a transposed weight): read each column in order.
            sliver.fill(0.0);
            for col in 0..cols {
                let start = p0 + (j0 + s * NR + col) * b.cs;
                for (p, &v) in b.data[start..start + kc].iter().enumerate() {
                    sliver[p * NR + col] = v;
                }
            }
            continue;
        }
        for (p, row) in sliver.chunks_exact_mut(NR).enumerate() {
            if cols == NR && b.cs == 1 {
                let start = (p0 + p) * b.rs + j0 + s * NR;
                row.copy_from_slice(&b.data[start..start + NR]);
            } else {
                for (col, v) in row.iter_mut().enumerate() {
                    *v = if col < cols { b.at(p0 + p, j0 + s * NR + col) } else { 0.0 };
                }
            }
        }
    }
}

/// One MR×NR tile: C[i][col + j] (+)= Σ_p a[p·MR + i] · b[p·NR + j], C given as MR rows.
fn run_kernel(
    kernel: Kernel,
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [&mut [f32]],
    col: usize,
    accumulate: bool,
) {
    assert!(a.len() >= kc * MR && b.len() >= kc * NR && c.len() >= MR);
    match kernel {
        Kernel::Scalar => kernel_scalar(kc, a, b, c, col, accumulate),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2Fma => {
            let rows: [*mut f32; MR] = std::array::from_fn(|i| c[i][col..col + NR].as_mut_ptr());
            // SAFETY: Avx2Fma is only chosen by `Kernel::detect` on a CPU with AVX2 and FMA (or by
            // a test that checked the same); a and b lengths were asserted above, and each row
            // pointer starts NR in-bounds values (the slice above would have panicked otherwise).
            unsafe { kernel_avx2_fma(kc, a.as_ptr(), b.as_ptr(), rows, accumulate) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Kernel::Avx2Fma => unreachable!("Avx2Fma exists only on x86_64"),
    }
}

/// The portable micro-kernel: the same sums in the same order as the SIMD one, with a
/// separate multiply and add (no fused rounding), so results agree to f32 rounding.
fn kernel_scalar(kc: usize, a: &[f32], b: &[f32], c: &mut [&mut [f32]], col: usize, accumulate: bool) {
    let mut acc = [[0.0f32; NR]; MR];
    for (a_col, b_row) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(kc) {
        for (acc_row, &a_i) in acc.iter_mut().zip(a_col) {
            for (acc_ij, &b_j) in acc_row.iter_mut().zip(b_row) {
                *acc_ij += a_i * b_j;
            }
        }
    }
    for (row, acc_row) in c.iter_mut().zip(&acc) {
        for (c_ij, &v) in row[col..col + NR].iter_mut().zip(acc_row) {
            *c_ij = if accumulate { *c_ij + v } else { v };
        }
    }
}

/// The AVX2 micro-kernel: 12 ymm accumulators (6 rows × 2 vectors of 8). Per p: two loads
/// of B, then for each row one broadcast of A and two FMAs.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `a` must hold kc·MR floats, `b` kc·NR, and each of the
/// MR row pointers NR writable floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2_fma(kc: usize, a: *const f32, b: *const f32, c: [*mut f32; MR], accumulate: bool) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    for p in 0..kc {
        let b0 = _mm256_loadu_ps(b.add(p * NR));
        let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
        for (i, acc_row) in acc.iter_mut().enumerate() {
            let a_i = _mm256_broadcast_ss(&*a.add(p * MR + i));
            acc_row[0] = _mm256_fmadd_ps(a_i, b0, acc_row[0]);
            acc_row[1] = _mm256_fmadd_ps(a_i, b1, acc_row[1]);
        }
    }
    for (&row, acc_row) in c.iter().zip(&acc) {
        for (half, &v) in acc_row.iter().enumerate() {
            let dst = row.add(half * 8);
            let v = if accumulate { _mm256_add_ps(_mm256_loadu_ps(dst), v) } else { v };
            _mm256_storeu_ps(dst, v);
        }
    }
}
