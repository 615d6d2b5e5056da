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
//! The dot products themselves are in dot.rs.

use super::dot::{bf16_operand, dot_bf16, dot_f32};
use super::gemm::{gemm_with, Kernel, MatRef};
use super::threads;
use half::bf16;
use std::borrow::Cow;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use std::thread::Thread;

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

    /// Whether the values are borrowed (from a memory map) rather than a copy.
    pub fn is_borrowed(&self) -> bool {
        matches!(self, Values::F32(Cow::Borrowed(_)) | Values::BF16(Cow::Borrowed(_)))
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
    linear_with(Kernel::detect(), None, y, x, w, t);
}

/// [`linear`] with a chosen kernel (tests run the scalar one on AVX2 machines too), and with
/// [`Helpers`] to share the decoding path's rows with, if there are any.
pub fn linear_with<'w, 'a>(
    kernel: Kernel,
    helpers: Option<&Helpers<'w, 'a>>,
    y: &mut [f32],
    x: &[f32],
    w: &'w Matrix<'a>,
    t: usize,
) {
    let (n, k) = (w.rows, w.cols);
    assert_eq!(x.len(), t * k, "linear: x has {} values, expected T {t} × K {k}", x.len());
    assert_eq!(y.len(), t * n, "linear: y has {} values, expected T {t} × N {n}", y.len());
    if t == 0 || n == 0 {
        return;
    }
    if t <= STREAMING_ROWS {
        return linear_streaming(kernel, helpers, y, x, w, t);
    }
    let x_mat = MatRef::row_major(x, t, k);
    match &w.values {
        Values::F32(data) => {
            let w_t = MatRef::row_major(data, n, k).t();
            gemm_with(kernel, threads::threads_for(t * n * k), y, n, x_mat, w_t, false);
        }
        Values::BF16(_) => linear_bf16_blocks(kernel, y, x_mat, w),
    }
}

/// The decoding path: W's rows are split between the calling thread and the helpers (or new
/// threads, without helpers); each row is widened once and dotted with the T rows of x.
/// yᵀ (N, T) is built first (each thread owns whole rows of it), then transposed.
fn linear_streaming<'w, 'a>(
    kernel: Kernel,
    helpers: Option<&Helpers<'w, 'a>>,
    y: &mut [f32],
    x: &[f32],
    w: &'w Matrix<'a>,
    t: usize,
) {
    let (n, k) = (w.rows, w.cols);
    // The bf16 kernel reads x in its own order (see dot.rs).
    let x: Cow<[f32]> = match &w.values {
        Values::BF16(_) => Cow::Owned(x.chunks_exact(k).flat_map(|row| bf16_operand(kernel, row)).collect()),
        Values::F32(_) => Cow::Borrowed(x),
    };
    let mut y_t = vec![0.0; n * t];
    match helpers {
        Some(helpers) if n * k * t >= MIN_SHARED_WEIGHTS => helpers.share(kernel, w, &x, t, &mut y_t),
        Some(_) => stream_rows(kernel, w, &x, t, 0, &mut y_t),
        None => {
            threads::par_rows(&mut y_t, t, t * k, |first, chunk| stream_rows(kernel, w, &x, t, first, chunk))
        }
    }
    for (j, y_row) in y_t.chunks_exact(t).enumerate() {
        for (i, &v) in y_row.iter().enumerate() {
            y[i * n + j] = v;
        }
    }
}

/// Rows first.. of yᵀ (as many as `y_t` holds, T values each): row r is W's row r dotted
/// with each of the T rows of x (x in the kernel's order for bf16 W).
fn stream_rows(kernel: Kernel, w: &Matrix, x: &[f32], t: usize, first: usize, y_t: &mut [f32]) {
    let k = w.cols;
    for (i, y_row) in y_t.chunks_exact_mut(t).enumerate() {
        let row = (first + i) * k..(first + i + 1) * k;
        for (j, y) in y_row.iter_mut().enumerate() {
            *y = match &w.values {
                Values::F32(v) => dot_f32(kernel, &v[row.clone()], &x[j * k..(j + 1) * k]),
                Values::BF16(v) => dot_bf16(kernel, &v[row.clone()], &x[j * k..(j + 1) * k]),
            };
        }
    }
}

/// The prefill path for bf16 W: threads split W's rows; each widens BLOCK_ROWS rows at a time
/// into an f32 buffer and multiplies them with x into its own (T × its rows) slab of y.
fn linear_bf16_blocks(kernel: Kernel, y: &mut [f32], x: MatRef, w: &Matrix) {
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
            gemm_with(kernel, 1, &mut slab[at..], rows.len(), x, block.t(), false);
        }
        (rows, slab)
    });
    for (rows, slab) in slabs {
        for (y_row, slab_row) in y.chunks_exact_mut(n).zip(slab.chunks_exact(rows.len())) {
            y_row[rows.clone()].copy_from_slice(slab_row);
        }
    }
}

// ---- helpers: threads that stay up for a whole generation

/// Products smaller than this stay on the calling thread even with helpers.
const MIN_SHARED_WEIGHTS: usize = 1 << 14;
/// Idle helpers spin this many times (a PAUSE is some tens to ~140 cycles: 40–100 µs in
/// all), then sleep until woken.
const SPINS_BEFORE_SLEEP: u32 = 1 << 11;

/// Threads kept up for the length of [`with_helpers`], each taking a share of the rows of
/// every streamed product (`linear` with T ≤ 4). Handing a share over costs well under a
/// microsecond, starting a thread about 25 µs: more than a decode step spends on most of its
/// matrices. Idle helpers spin a while, then sleep (parked) until the next share wakes them,
/// so a long stretch without shares (a prefill's GEMMs) leaves the cores to it. Every row is
/// still one dot product on one thread, so results do not depend on the number of helpers.
///
/// Lifetimes: a share names its matrix, borrowed for 'w (the weights outlive the helpers);
/// x is a per-product temporary that does not, so it is copied into `x` instead.
pub struct Helpers<'w, 'a> {
    /// The current product's x (in the kernel's order); helpers read it at the same time.
    x: RwLock<Vec<f32>>,
    slots: Vec<Slot<'w, 'a>>,
    stop: AtomicBool,
    /// One product at a time: two threads posting at once would garble the mailboxes.
    turn: Mutex<()>,
}

/// One helper's mailbox: a share is posted by bumping `posted`, and done when `done` equals
/// it. Aligned to its own cache lines, as the helper spins on `posted`.
#[repr(align(128))]
struct Slot<'w, 'a> {
    /// The helper's thread, to wake it.
    thread: OnceLock<Thread>,
    job: Mutex<Job<'w, 'a>>,
    posted: AtomicUsize,
    done: AtomicUsize,
    /// Set if the helper panicked, so the caller stops waiting.
    failed: AtomicBool,
}

/// What the caller posts (a share) and what the helper gives back (its rows of yᵀ).
struct Job<'w, 'a> {
    share: Option<Share<'w, 'a>>,
    out: Vec<f32>,
}

/// Rows `rows` of yᵀ = W·xᵀ.
struct Share<'w, 'a> {
    kernel: Kernel,
    w: &'w Matrix<'a>,
    t: usize,
    rows: Range<usize>,
}

impl Slot<'_, '_> {
    /// Wakes the helper if it sleeps (cheap if it does not).
    fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

/// Runs `f` with num_threads() − 1 helpers (None on one thread), stopped when `f` returns.
pub fn with_helpers<'w, 'a: 'w, R>(f: impl FnOnce(Option<&Helpers<'w, 'a>>) -> R) -> R {
    let n = threads::num_threads();
    if n <= 1 {
        return f(None);
    }
    let slot = || Slot {
        thread: OnceLock::new(),
        job: Mutex::new(Job { share: None, out: Vec::new() }),
        posted: 0.into(),
        done: 0.into(),
        failed: false.into(),
    };
    let helpers = Helpers {
        x: RwLock::new(Vec::new()),
        slots: (1..n).map(|_| slot()).collect(),
        stop: false.into(),
        turn: Mutex::new(()),
    };
    std::thread::scope(|s| {
        for slot in &helpers.slots {
            let helpers = &helpers;
            s.spawn(move || helpers.serve(slot));
        }
        // Stop the helpers however `f` ends (a panic included), so the scope can join them.
        struct Stop<'h, 'w, 'a>(&'h Helpers<'w, 'a>);
        impl Drop for Stop<'_, '_, '_> {
            fn drop(&mut self) {
                self.0.stop.store(true, Ordering::Release);
                self.0.slots.iter().for_each(Slot::wake);
            }
        }
        let _stop = Stop(&helpers);
        f(Some(&helpers))
    })
}

impl<'w, 'a> Helpers<'w, 'a> {
    /// yᵀ (N, T) = W·xᵀ: the first share of W's rows on the calling thread, one share per helper.
    fn share(&self, kernel: Kernel, w: &'w Matrix<'a>, x: &[f32], t: usize, y_t: &mut [f32]) {
        let Ok(_turn) = self.turn.try_lock() else {
            return stream_rows(kernel, w, x, t, 0, y_t); // another thread has the helpers
        };
        let parts = threads::split_range(w.rows, self.slots.len() + 1, 1);
        let mut shared_x = self.x.write().expect("helpers: x lock");
        shared_x.clear();
        shared_x.extend_from_slice(x);
        drop(shared_x);
        for (slot, rows) in self.slots.iter().zip(&parts[1..]) {
            slot.job.lock().expect("helpers: job lock").share =
                Some(Share { kernel, w, t, rows: rows.clone() });
            slot.posted.fetch_add(1, Ordering::Release);
            slot.wake();
        }
        stream_rows(kernel, w, x, t, 0, &mut y_t[..parts[0].len() * t]);
        for (slot, rows) in self.slots.iter().zip(&parts[1..]) {
            let posted = slot.posted.load(Ordering::Relaxed);
            while slot.done.load(Ordering::Acquire) != posted {
                assert!(!slot.failed.load(Ordering::Acquire), "helpers: a helper thread panicked");
                std::hint::spin_loop();
            }
            y_t[rows.start * t..rows.end * t]
                .copy_from_slice(&slot.job.lock().expect("helpers: job lock").out);
        }
    }

    /// A helper's loop: wait for a share, compute it, say so; until stopped.
    fn serve(&self, slot: &Slot<'w, 'a>) {
        struct Failed<'s>(&'s AtomicBool);
        impl Drop for Failed<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.store(true, Ordering::Release);
                }
            }
        }
        let _failed = Failed(&slot.failed);
        slot.thread.get_or_init(std::thread::current);
        let (mut seen, mut idle) = (0, 0u32);
        loop {
            let posted = slot.posted.load(Ordering::Acquire);
            if posted == seen {
                if self.stop.load(Ordering::Acquire) {
                    return;
                }
                idle = idle.saturating_add(1);
                if idle < SPINS_BEFORE_SLEEP {
                    std::hint::spin_loop();
                } else {
                    // Woken by `wake`; the timeout only bounds what a missed wake-up costs.
                    std::thread::park_timeout(std::time::Duration::from_millis(10));
                }
                continue;
            }
            (seen, idle) = (posted, 0);
            let mut job = slot.job.lock().expect("helpers: job lock");
            let share = job.share.take().expect("a posted share");
            let x = self.x.read().expect("helpers: x lock");
            job.out.resize(share.rows.len() * share.t, 0.0);
            stream_rows(share.kernel, share.w, &x, share.t, share.rows.start, &mut job.out);
            drop((job, x));
            slot.done.store(seen, Ordering::Release);
        }
    }
}
