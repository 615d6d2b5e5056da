//! Launch wrappers for `kernels/rope.ptx`: one thread per rotated pair (x_i, x_{i+D/2}).

use super::elementwise::len_u32;
use super::gpu::{driver, grid_for, Buf, Family, Gpu};
use crate::error::Result;
use crate::ops::attention::rope_cos_sin;
use cudarc::driver::PushKernelArg;

/// y = x (B, T, H, D) rotated by the angles of positions pos0, pos0 + 1, … of its T tokens
/// (twin: `ops::attention::rope_forward`). `bthd`: the (B, T, H, D) shape of x.
pub fn rope_forward(
    gpu: &Gpu,
    y: &mut Buf<f32>,
    x: &Buf<f32>,
    pos0: usize,
    theta: f32,
    bthd: [usize; 4],
) -> Result<()> {
    rotate(gpu, "rope_forward", y, x, pos0, theta, bthd)
}

/// dx += dy rotated back by the same angles (twin: `ops::attention::rope_backward`; it
/// accumulates into dx, as the twin does).
pub fn rope_backward(
    gpu: &Gpu,
    dx: &mut Buf<f32>,
    dy: &Buf<f32>,
    pos0: usize,
    theta: f32,
    bthd: [usize; 4],
) -> Result<()> {
    rotate(gpu, "rope_backward", dx, dy, pos0, theta, bthd)
}

/// Launches `kernel` (rope_forward or rope_backward) over every pair of `x`, writing or adding
/// into `out`.
fn rotate(
    gpu: &Gpu,
    kernel: &str,
    out: &mut Buf<f32>,
    x: &Buf<f32>,
    pos0: usize,
    theta: f32,
    [b, t, h, d]: [usize; 4],
) -> Result<()> {
    assert!(d > 0 && d % 2 == 0, "{kernel}: head dim D must be even and positive, got D = {d}");
    let len = b * t * h * d;
    assert!(
        x.len() == len && out.len() == len,
        "{kernel}: x holds {} values and out {}, (B, T, H, D) = ({b}, {t}, {h}, {d}) needs {len}",
        x.len(),
        out.len()
    );
    len_u32(len, kernel);
    if len == 0 {
        return Ok(());
    }
    let half = d / 2;
    // (T, D/2, 2): (cos a_i, sin a_i) of each token, from the twin's own function, so the
    // kernel rotates by bit-identical angles.
    let cos_sin: Vec<f32> =
        (0..t).flat_map(|i| rope_cos_sin(pos0 + i, d, theta)).flat_map(|(cos, sin)| [cos, sin]).collect();
    let cos_sin = gpu.upload(&cos_sin)?;
    let pairs = len / 2;
    let (n, t32, h32, half32) =
        (len_u32(pairs, kernel), len_u32(t, kernel), len_u32(h, kernel), len_u32(half, kernel));
    let launch = grid_for(pairs, 256);
    let f = gpu.function(Family::Rope, kernel)?;
    // SAFETY: rope_forward / rope_backward(f32 *out, const f32 *x, const f32 *cos_sin, u32 n,
    // u32 t, u32 h, u32 half) touch elements below n*2 = B*T*H*D of out and x (both hold that
    // many, asserted above) and below T*D of cos_sin (it holds T*(D/2) pairs).
    unsafe {
        gpu.stream()
            .launch_builder(&f)
            .arg(out)
            .arg(x)
            .arg(&cos_sin)
            .arg(&n)
            .arg(&t32)
            .arg(&h32)
            .arg(&half32)
            .launch(launch)
    }
    .map_err(driver(format!("launching {kernel}")))?;
    Ok(())
}
