//! Launch wrappers for `kernels/embedding.ptx`: the embedding lookup, gather_rows and
//! scatter_add_rows, forward and backward (twins: `ops::dense`, `ops::moe`).
//!
//! Two kernels do all six: `take_rows` (dst_m = or += src_{idx_m}, one block per dst row)
//! and `add_rows_into` (dst_{idx_m} += src_m). The scatter has no float atomics: the host
//! sorts the (idx_m, m) pairs and uploads, for each distinct row, its m's in ascending
//! order; one block per distinct row adds them to the old value in that order, the CPU
//! twin's order, so the scatters give the CPU's bits. That is why the scatter wrappers take
//! their indices on the host (`&[u32]`, which the tape keeps anyway); the gathers take them
//! on the device.
//!
//! Backward wrappers accumulate into their input gradients (+=), as the CPU twins do.

use super::elementwise::len_u32;
use super::gpu::{driver, Buf, Family, Gpu};
use crate::error::Result;
use cudarc::driver::{LaunchConfig, PushKernelArg};

/// Threads per block of both kernels; each block strides over the C columns of a row.
const BLOCK: u32 = 256;

/// A grid of one block per row: `rows` blocks (at most 2^31 − 1, CUDA's grid limit).
fn one_block_per_row(rows: usize, op: &str) -> LaunchConfig {
    assert!(rows <= i32::MAX as usize, "{op}: one block per row allows at most 2^31 - 1 rows, got {rows}");
    LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

// ---- forward and backward of the three ops

/// y_n = table[ids_n] (twin: `ops::dense::embedding_forward`). table: (V, C), y: (N, C).
/// An id >= V gives a NaN row (the tape checks ids before this).
pub fn embedding_forward(
    gpu: &Gpu,
    y: &mut Buf<f32>,
    table: &Buf<f32>,
    ids: &Buf<u32>,
    c: usize,
) -> Result<()> {
    take_rows(gpu, "embedding_forward", y, table, ids, c, false)
}

/// dtable[ids_n] += dy_n in ascending n, except ids_n == padding_idx (twin:
/// `ops::dense::embedding_backward`). dtable: (V, C), dy: (N, C).
pub fn embedding_backward(
    gpu: &Gpu,
    dtable: &mut Buf<f32>,
    dy: &Buf<f32>,
    ids: &[u32],
    padding_idx: Option<u32>,
    c: usize,
) -> Result<()> {
    add_rows_into(gpu, "embedding_backward", dtable, dy, ids, padding_idx, c)
}

/// y_m = x_{idx_m} (twin: `ops::moe::gather_rows_forward`). x: (R, C), y: (M, C).
/// An idx_m >= R gives a NaN row.
pub fn gather_rows_forward(
    gpu: &Gpu,
    y: &mut Buf<f32>,
    x: &Buf<f32>,
    idx: &Buf<u32>,
    c: usize,
) -> Result<()> {
    take_rows(gpu, "gather_rows_forward", y, x, idx, c, false)
}

/// dx_{idx_m} += dy_m in ascending m (twin: `ops::moe::gather_rows_backward`).
/// dx: (R, C), dy: (M, C).
pub fn gather_rows_backward(
    gpu: &Gpu,
    dx: &mut Buf<f32>,
    dy: &Buf<f32>,
    idx: &[u32],
    c: usize,
) -> Result<()> {
    add_rows_into(gpu, "gather_rows_backward", dx, dy, idx, None, c)
}

/// y_r = Σ_{m: idx_m = r} x_m in ascending m, 0 for rows no m hits (twin:
/// `ops::moe::scatter_add_rows_forward`). x: (M, C), y: (R, C), overwritten.
pub fn scatter_add_rows_forward(
    gpu: &Gpu,
    y: &mut Buf<f32>,
    x: &Buf<f32>,
    idx: &[u32],
    c: usize,
) -> Result<()> {
    gpu.stream().memset_zeros(y).map_err(driver("scatter_add_rows_forward: zeroing y"))?;
    add_rows_into(gpu, "scatter_add_rows_forward", y, x, idx, None, c)
}

/// dx_m += dy_{idx_m} (twin: `ops::moe::scatter_add_rows_backward`). dx: (M, C), dy: (R, C).
/// An idx_m >= R makes row m NaN.
pub fn scatter_add_rows_backward(
    gpu: &Gpu,
    dx: &mut Buf<f32>,
    dy: &Buf<f32>,
    idx: &Buf<u32>,
    c: usize,
) -> Result<()> {
    take_rows(gpu, "scatter_add_rows_backward", dx, dy, idx, c, true)
}

// ---- the two kernels

/// dst_m = src_{idx_m} (or += when `add`). src: (R, C), dst: (M, C), idx: (M) on the device.
fn take_rows(
    gpu: &Gpu,
    op: &str,
    dst: &mut Buf<f32>,
    src: &Buf<f32>,
    idx: &Buf<u32>,
    c: usize,
    add: bool,
) -> Result<()> {
    let m = idx.len();
    assert_eq!(dst.len(), m * c, "{op}: the output holds {} values, expected {m} rows of C = {c}", dst.len());
    if m == 0 || c == 0 {
        return Ok(());
    }
    assert_eq!(src.len() % c, 0, "{op}: the source holds {} values, not whole rows of C = {c}", src.len());
    let rows = len_u32(src.len() / c, op);
    let c32 = len_u32(c, op);
    assert!(c32 <= u32::MAX - BLOCK, "{op}: C = {c} is too wide for the column loop");
    let launch = one_block_per_row(m, op);
    let add = u32::from(add);
    let f = gpu.function(Family::Embedding, "take_rows")?;
    // SAFETY: take_rows(f32 *dst, const f32 *src, const u32 *idx, u32 c, u32 r, u32 add), grid
    // = M: block m reads idx[m] (idx holds M), writes dst[m*C .. (m+1)*C] (dst holds M*C), and
    // reads src row idx[m] only when idx[m] < r = src.len() / C.
    unsafe {
        gpu.stream()
            .launch_builder(&f)
            .arg(dst)
            .arg(src)
            .arg(idx)
            .arg(&c32)
            .arg(&rows)
            .arg(&add)
            .launch(launch)
    }
    .map_err(driver(format!("launching take_rows ({op})")))?;
    Ok(())
}

/// The rows of one scatter, grouped on the host: group g adds src rows
/// `order[start[g]..start[g + 1]]` (ascending) into dst row `row[g]`.
struct RowGroups {
    row: Vec<u32>,
    start: Vec<u32>,
    order: Vec<u32>,
}

/// Groups m = 0..M by idx_m, leaving out every m with idx_m == skip.
fn row_groups(idx: &[u32], skip: Option<u32>) -> RowGroups {
    let mut order: Vec<u32> = (0..idx.len() as u32).filter(|&m| Some(idx[m as usize]) != skip).collect();
    // A stable sort: the m's of one row stay ascending.
    order.sort_by_key(|&m| idx[m as usize]);
    let (mut row, mut start) = (Vec::new(), Vec::new());
    for (k, &m) in order.iter().enumerate() {
        let r = idx[m as usize];
        if row.last() != Some(&r) {
            row.push(r);
            start.push(k as u32);
        }
    }
    start.push(order.len() as u32);
    RowGroups { row, start, order }
}

/// dst_{idx_m} += src_m for every m (but those with idx_m == skip), in ascending m.
/// src: (M, C), dst: (R, C), idx: (M) on the host.
fn add_rows_into(
    gpu: &Gpu,
    op: &str,
    dst: &mut Buf<f32>,
    src: &Buf<f32>,
    idx: &[u32],
    skip: Option<u32>,
    c: usize,
) -> Result<()> {
    let m = idx.len();
    assert_eq!(src.len(), m * c, "{op}: the source holds {} values, expected {m} rows of C = {c}", src.len());
    if m == 0 || c == 0 {
        return Ok(());
    }
    assert_eq!(dst.len() % c, 0, "{op}: the output holds {} values, not whole rows of C = {c}", dst.len());
    let rows = dst.len() / c;
    if let Some((m, &r)) = idx.iter().enumerate().find(|&(_, &r)| r as usize >= rows) {
        panic!("{op}: idx[{m}] = {r} is out of range: the output has {rows} rows");
    }
    len_u32(m, op); // the m's travel as u32
    let c32 = len_u32(c, op);
    assert!(c32 <= u32::MAX - BLOCK, "{op}: C = {c} is too wide for the column loop");
    let groups = row_groups(idx, skip);
    if groups.row.is_empty() {
        return Ok(());
    }
    let launch = one_block_per_row(groups.row.len(), op);
    let (row, start, order) =
        (gpu.upload(&groups.row)?, gpu.upload(&groups.start)?, gpu.upload(&groups.order)?);
    let f = gpu.function(Family::Embedding, "add_rows_into")?;
    // SAFETY: add_rows_into(f32 *dst, const f32 *src, const u32 *group_row, const u32
    // *group_start, const u32 *order, u32 c), grid = G = group_row.len(): block g reads
    // group_row[g] < R (checked above; dst holds R*C), group_start[g], group_start[g+1]
    // (G+1 values), and order[k] < M for k in between (order holds at most M, src M*C).
    unsafe {
        gpu.stream()
            .launch_builder(&f)
            .arg(dst)
            .arg(src)
            .arg(&row)
            .arg(&start)
            .arg(&order)
            .arg(&c32)
            .launch(launch)
    }
    .map_err(driver(format!("launching add_rows_into ({op})")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::row_groups;

    #[test]
    fn row_groups_sort_by_row_and_keep_m_ascending() {
        // idx: m=0→5, 1→2, 2→5, 3→7(skipped), 4→2, 5→0
        let g = row_groups(&[5, 2, 5, 7, 2, 0], Some(7));
        assert_eq!(g.row, [0, 2, 5]);
        assert_eq!(g.start, [0, 1, 3, 5]);
        assert_eq!(g.order, [5, 1, 4, 0, 2]);
        let empty = row_groups(&[3, 3], Some(3));
        assert!(empty.row.is_empty() && empty.order.is_empty());
        assert_eq!(empty.start, [0]);
    }
}
