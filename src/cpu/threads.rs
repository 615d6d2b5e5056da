//! Threads for the CPU kernels: `std::thread::scope`, one scoped thread per chunk of work
//! but the first, which the calling thread runs itself.
//!
//! Determinism: work is split into contiguous ranges that depend only on the problem size
//! and the thread count, each output element is written by exactly one thread, and partial
//! results of a reduction are combined in thread order. Same inputs + same thread count
//! give the same bits.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// 0 = not chosen yet: the first call to [`num_threads`] picks the default.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Below this much work (roughly: multiply-adds or element visits) per thread, spawning a
/// thread costs more than it saves.
pub const MIN_WORK_PER_THREAD: usize = 1 << 16;

/// The thread count: set by `--threads N`, else `MOE_THREADS`, else every available core.
pub fn num_threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => {
            let n = std::env::var("MOE_THREADS")
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|&n| n > 0)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            THREADS.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

pub fn set_num_threads(n: usize) {
    assert!(n > 0, "thread count must be at least 1");
    THREADS.store(n, Ordering::Relaxed);
}

/// How many threads `work` units deserve: at most [`num_threads`], each given at least
/// [`MIN_WORK_PER_THREAD`].
pub fn threads_for(work: usize) -> usize {
    (work / MIN_WORK_PER_THREAD).clamp(1, num_threads())
}

/// `0..n` cut into `parts` contiguous ranges whose lengths differ by at most one
/// (and are multiples of `align`, except the last).
pub fn split_range(n: usize, parts: usize, align: usize) -> Vec<Range<usize>> {
    let blocks = n.div_ceil(align);
    let parts = parts.clamp(1, blocks.max(1));
    (0..parts)
        .map(|p| {
            let start = (blocks * p / parts * align).min(n);
            let end = (blocks * (p + 1) / parts * align).min(n);
            start..end
        })
        .collect()
}

/// Runs `f(range)` over `0..n` split across threads (by `work_per_item`), and returns each
/// range's result in order: combine them in that order for a deterministic reduction.
pub fn par_map<T: Send>(n: usize, work_per_item: usize, f: impl Fn(Range<usize>) -> T + Sync) -> Vec<T> {
    let ranges = split_range(n, threads_for(n.saturating_mul(work_per_item)), 1);
    if ranges.len() == 1 {
        return vec![f(0..n)];
    }
    std::thread::scope(|s| {
        let mut ranges = ranges.into_iter();
        let first = ranges.next().expect("at least one range");
        let handles: Vec<_> = ranges.map(|r| s.spawn(|| f(r))).collect();
        let mut out = vec![f(first)];
        out.extend(handles.into_iter().map(|h| h.join().expect("worker thread panicked")));
        out
    })
}

/// Splits `out`, a matrix of rows of `row_len` values, into chunks of whole rows, and runs
/// `f(first_row, chunk)` on each chunk, the first on the calling thread, each other one on a
/// thread of its own.
pub fn par_rows(out: &mut [f32], row_len: usize, work_per_row: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    par_rows2(out, row_len, &mut [], 0, work_per_row, |row, a, _| f(row, a));
}

/// [`par_rows`] for two outputs with the same number of rows (e.g. y and rstd).
pub fn par_rows2(
    a: &mut [f32],
    a_row_len: usize,
    b: &mut [f32],
    b_row_len: usize,
    work_per_row: usize,
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) {
    let rows = a.len().checked_div(a_row_len).unwrap_or(0);
    assert_eq!(a.len(), rows * a_row_len, "par_rows: length not a multiple of the row");
    assert_eq!(b.len(), rows * b_row_len, "par_rows2: outputs have different row counts");
    if rows == 0 {
        return;
    }
    let ranges = split_range(rows, threads_for(rows.saturating_mul(work_per_row)), 1);
    if ranges.len() == 1 {
        return f(0, a, b);
    }
    let mut chunks = Vec::with_capacity(ranges.len());
    let (mut a_rest, mut b_rest) = (a, b);
    for r in ranges {
        let (a_chunk, a_tail) = a_rest.split_at_mut(r.len() * a_row_len);
        let (b_chunk, b_tail) = b_rest.split_at_mut(r.len() * b_row_len);
        (a_rest, b_rest) = (a_tail, b_tail);
        chunks.push((r.start, a_chunk, b_chunk));
    }
    std::thread::scope(|s| {
        let mut chunks = chunks.into_iter();
        let (first_row, a_first, b_first) = chunks.next().expect("at least one chunk");
        for (row, a_chunk, b_chunk) in chunks {
            let f = &f;
            s.spawn(move || f(row, a_chunk, b_chunk));
        }
        f(first_row, a_first, b_first);
    });
}
