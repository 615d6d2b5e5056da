//! Launch wrappers for `kernels/expert_matmul.ptx`: the grouped BF16 matmul on the tensor
//! cores, one weight matrix per expert over rows already sorted by expert.
//!
//! x: (M, K) bf16   w: (E, N, K) bf16, w[e] stored like a PyTorch Linear (out, in)   dy: (M, N) bf16
//! offsets: (E + 1), rows offsets[e]..offsets[e+1] belong to expert e (may be empty)
//! forward:          y[rows_e]   = x[rows_e] · w[e]ᵀ       y (M, N) f32, overwritten
//! backward input:   dx[rows_e] += dy[rows_e] · w[e]       dx (M, K) f32, accumulated
//! backward weight:  dw[e]      += dy[rows_e]ᵀ · x[rows_e]  dw (E, N, K) f32, accumulated
//! exactly as the CPU twins `ops::matmul::grouped_matmul_forward` / `grouped_matmul_backward`
//! (the kernels take an `accumulate` flag; these wrappers pass 0 for the forward, 1 for the
//! backward products). bf16 arrays are bit patterns (`to_bf16_bits`); products are summed in
//! f32. K and N must be multiples of 8. With one group (offsets = [0, M]) the forward is a dense
//! y = x·wᵀ: the attention projections and lm_head.

use super::elementwise::len_u32;
use super::gpu::{driver, Buf, Family, Gpu};
use crate::error::Result;
use cudarc::driver::{LaunchConfig, PushKernelArg};

/// Rows and columns of the output tile one block computes.
pub const TILE: usize = 128;
/// Threads per block: 8 warps, each a 64 × 32 piece of the tile.
const THREADS: u32 = 256;
/// The most blocks `grid.y` / `grid.z` may hold.
const GRID_YZ: usize = 65_535;

/// bf16 bit patterns of `x` (round to nearest even), the form the kernels read.
pub fn to_bf16_bits(x: &[f32]) -> Vec<u16> {
    x.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect()
}

/// The row tiles of a grouped product, as (expert, first row, end row) triples: each expert's
/// rows offsets[e]..offsets[e+1] cut into runs of at most `TILE`, in order. No tile spans two
/// experts, and an empty expert has none. Block t of the forward / backward-input launch
/// computes the rows of triple t.
pub fn row_tiles(offsets: &[usize]) -> Vec<u32> {
    let mut tiles = Vec::new();
    for (e, rows) in offsets.windows(2).enumerate() {
        let mut start = rows[0];
        while start < rows[1] {
            let end = (start + TILE).min(rows[1]);
            for v in [e, start, end] {
                tiles.push(u32::try_from(v).expect("row_tiles: offsets past u32"));
            }
            start = end;
        }
    }
    tiles
}

/// (E, M) from offsets, after checking that they rise from 0.
fn groups(op: &str, offsets: &[usize]) -> (usize, usize) {
    assert!(
        !offsets.is_empty() && offsets[0] == 0 && offsets.windows(2).all(|p| p[0] <= p[1]),
        "{op}: offsets {offsets:?} must rise from 0 in E + 1 steps"
    );
    (offsets.len() - 1, offsets[offsets.len() - 1])
}

/// The shape checks every product shares: K and N, and each buffer's length.
fn check_sizes(op: &str, k: usize, n: usize, bufs: &[(&str, usize, usize)]) {
    assert!(
        k > 0 && k.is_multiple_of(8) && n > 0 && n.is_multiple_of(8),
        "{op}: K = {k} and N = {n} must be positive multiples of 8 (the kernel copies rows in \
         16-byte runs of 8 bf16)"
    );
    for &(name, len, want) in bufs {
        assert_eq!(len, want, "{op}: {name} holds {len} values, expected {want}");
        len_u32(want, op);
    }
}

/// One block per (row tile, column tile of the output's `cols` columns), as a 1-D grid: the
/// kernel orders them so blocks running together share operand tiles in L2.
fn row_tile_launch(op: &str, tiles: usize, cols: usize) -> LaunchConfig {
    let blocks = tiles * cols.div_ceil(TILE);
    assert!(blocks < 1 << 31, "{op}: {tiles} row tiles × {cols} columns is {blocks} blocks, over 2^31 - 1");
    LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// y[rows_e] = x[rows_e] · w[e]ᵀ: y (M, N) f32 is overwritten (twin: `grouped_matmul_forward`).
pub fn grouped_matmul_forward(
    gpu: &Gpu,
    y: &mut Buf<f32>,
    x: &Buf<u16>,
    w: &Buf<u16>,
    offsets: &[usize],
    k: usize,
    n: usize,
) -> Result<()> {
    const OP: &str = "grouped_matmul_forward";
    let (e, m) = groups(OP, offsets);
    check_sizes(OP, k, n, &[("y", y.len(), m * n), ("x", x.len(), m * k), ("w", w.len(), e * n * k)]);
    launch_row_tiled(gpu, OP, y, x, w, offsets, k, n, n, false)
}

/// dx[rows_e] += dy[rows_e] · w[e]: accumulates into dx (M, K) f32, like the twin
/// (`grouped_matmul_backward`'s dx).
pub fn grouped_matmul_backward_input(
    gpu: &Gpu,
    dx: &mut Buf<f32>,
    dy: &Buf<u16>,
    w: &Buf<u16>,
    offsets: &[usize],
    k: usize,
    n: usize,
) -> Result<()> {
    const OP: &str = "grouped_matmul_backward_input";
    let (e, m) = groups(OP, offsets);
    check_sizes(OP, k, n, &[("dx", dx.len(), m * k), ("dy", dy.len(), m * n), ("w", w.len(), e * n * k)]);
    launch_row_tiled(gpu, OP, dx, dy, w, offsets, k, n, k, true)
}

/// The launch the forward and the input gradient share: out (M, cols) from a's rows and the
/// experts' w (E, N, K), one block per (row tile, 128 output columns); cols = N for the
/// forward (written), K for the input gradient (accumulated). Sizes are checked by the callers.
#[allow(clippy::too_many_arguments)]
fn launch_row_tiled(
    gpu: &Gpu,
    op: &str,
    out: &mut Buf<f32>,
    a: &Buf<u16>,
    w: &Buf<u16>,
    offsets: &[usize],
    k: usize,
    n: usize,
    cols: usize,
    accumulate: bool,
) -> Result<()> {
    if offsets[offsets.len() - 1] == 0 {
        return Ok(());
    }
    let tiles = row_tiles(offsets);
    let launch = row_tile_launch(op, tiles.len() / 3, cols);
    let tiles = gpu.upload(&tiles)?;
    let (n32, k32, accumulate) = (n as u32, k as u32, accumulate as u32);
    let f = gpu.function(Family::ExpertMatmul, op)?;
    // SAFETY: both kernels take (f32 *out, const u16 *a, const u16 *w, const u32 *tiles,
    // u32 n, u32 k, u32 accumulate); the grid is T·ceil(cols / 128) blocks for the T triples of
    // tiles, so each block reads one triple, whose rows lie in 0..M and expert in 0..E
    // (row_tiles of checked offsets); it reads a and writes out only at those rows, and w only
    // in w[e], at columns < cols and reduction indices < the other of N, K (bounds-checked in
    // the kernel); the callers asserted out, a and w hold M·cols, M·(N + K − cols) and E·N·K.
    unsafe {
        gpu.stream()
            .launch_builder(&f)
            .arg(out)
            .arg(a)
            .arg(w)
            .arg(&tiles)
            .arg(&n32)
            .arg(&k32)
            .arg(&accumulate)
            .launch(launch)
    }
    .map_err(driver(format!("launching {op}")))?;
    Ok(())
}

/// dw[e] += dy[rows_e]ᵀ · x[rows_e]: accumulates into dw (E, N, K) f32, like the twin
/// (`grouped_matmul_backward`'s dw); an empty expert's dw[e] is left as it is.
pub fn grouped_matmul_backward_weight(
    gpu: &Gpu,
    dw: &mut Buf<f32>,
    dy: &Buf<u16>,
    x: &Buf<u16>,
    offsets: &[usize],
    k: usize,
    n: usize,
) -> Result<()> {
    const OP: &str = "grouped_matmul_backward_weight";
    let (e, m) = groups(OP, offsets);
    check_sizes(OP, k, n, &[("dw", dw.len(), e * n * k), ("dy", dy.len(), m * n), ("x", x.len(), m * k)]);
    if m == 0 {
        return Ok(()); // dw += 0
    }
    let (col_blocks, row_blocks) = (k.div_ceil(TILE), n.div_ceil(TILE));
    assert!(row_blocks <= GRID_YZ, "{OP}: N = {n} needs {row_blocks} row tiles, grid.y holds {GRID_YZ}");
    assert!(e <= GRID_YZ, "{OP}: {e} experts, grid.z holds {GRID_YZ}");
    let launch = LaunchConfig {
        grid_dim: (col_blocks as u32, row_blocks as u32, e as u32),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    // M < 2^32 (len_u32 of M·K above), so every offset fits a u32.
    let offsets32: Vec<u32> = offsets.iter().map(|&o| o as u32).collect();
    let offsets32 = gpu.upload(&offsets32)?;
    let (n32, k32, accumulate) = (n as u32, k as u32, 1u32);
    let f = gpu.function(Family::ExpertMatmul, OP)?;
    // SAFETY: grouped_matmul_backward_weight(f32 *dw, const u16 *dy, const u16 *x,
    // const u32 *offsets, u32 n, u32 k, u32 accumulate): block (i, j, e) reads offsets[e] and
    // offsets[e+1] (e < grid.z = E, offsets holds E + 1), rows offsets[e]..offsets[e+1] <= M of
    // dy and x at columns < N and < K, and reads/writes dw[e] at rows < N and columns < K
    // (bounds-checked in the kernel); dw, dy, x hold E·N·K, M·N, M·K values (asserted above).
    unsafe {
        gpu.stream()
            .launch_builder(&f)
            .arg(dw)
            .arg(dy)
            .arg(x)
            .arg(&offsets32)
            .arg(&n32)
            .arg(&k32)
            .arg(&accumulate)
            .launch(launch)
    }
    .map_err(driver("launching grouped_matmul_backward_weight"))?;
    Ok(())
}
