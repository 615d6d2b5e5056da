//! Keeping freed memory in the process.
//!
//! A training step frees and reallocates the same large buffers (activations, gradients,
//! logits) every time. glibc's malloc hands blocks past its mmap threshold back to the
//! kernel on free, so each reuse page-faults in fresh zeroed pages: measured on the default
//! `moe train` config, about a fifth of a step's time went to the kernel (sys 4.1 s vs
//! 1.1 s over 10 steps). Telling malloc never to mmap and never to trim the heap keeps
//! those pages for the next step; peak memory is unchanged.

/// Sets glibc's malloc to keep freed memory (no-op elsewhere). Call once, first thing.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    // glibc's malloc.h: M_TRIM_THRESHOLD -1, M_MMAP_MAX -4.
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_MAX: i32 = -4;
    // SAFETY: mallopt is glibc's (the target_env says it is there) and takes two ints; it only
    // changes malloc's tuning parameters, which is sound at any time.
    unsafe {
        mallopt(M_MMAP_MAX, 0);
        mallopt(M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}
