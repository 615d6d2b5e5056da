//! RoPE and fused causal attention (grouped-query, with a KV-cache offset), forward and backward.

use crate::autograd::{Op, Tape, Var};
use crate::cpu::gemm::{gemm_serial, MatRef};
use crate::cpu::threads;
use crate::ops;
use crate::tensor::Tensor;

/// The four dimensions of a (B, T, H, D) tensor, or a panic naming the op and the shape.
pub fn bthd(shape: &[usize], op: &str) -> [usize; 4] {
    match shape {
        &[b, t, h, d] => [b, t, h, d],
        _ => panic!("{op}: expected a (B, T, H, D) tensor, got shape {shape:?}"),
    }
}

// ---- RoPE
//
// RoPE, Hugging Face's "rotate_half" layout.  x, y: (B, T, H, D), D even
// token t of the T sits at position p = pos0 + t; i = 0..D/2 pairs x_i with x_{i+D/2}
// forward:  inv_freq_i = 1 / θ^(2i/D);   a_i = p · inv_freq_i        (f32 throughout, as HF)
//           y_i       = x_i · cos a_i − x_{i+D/2} · sin a_i
//           y_{i+D/2} = x_{i+D/2} · cos a_i + x_i · sin a_i
//           HF: q_embed = (q * cos) + (rotate_half(q) * sin)
// backward: the inverse rotation (by −a_i):
//           dx_i       += dy_i · cos a_i + dy_{i+D/2} · sin a_i
//           dx_{i+D/2} += dy_{i+D/2} · cos a_i − dy_i · sin a_i

impl Tape {
    /// Rotates q or k (B, T, H, D) by the positions pos0, pos0 + 1, … of its T tokens.
    pub fn rope(&mut self, x: Var, pos0: usize, theta: f32) -> Var {
        let shape = self.shape(x).to_vec();
        let [b, t, h, d] = bthd(&shape, "rope");
        #[cfg(feature = "cuda")]
        if self.value(x).gpu().is_some() {
            let y = crate::cuda::ops::rope(self.value(x), pos0, theta, [b, t, h, d]);
            return self.push(y, Op::Rope { x, pos0, theta });
        }
        let mut y = vec![0.0; self.value(x).numel()];
        rope_forward(&mut y, self.value(x).data(), pos0, theta, [b, t, h, d]);
        self.push(Tensor::new(&shape, y), Op::Rope { x, pos0, theta })
    }
}

/// (cos a_i, sin a_i) for i = 0..D/2 at position `pos`, in f32 exactly as Hugging Face computes
/// them: `inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))`, then
/// `freqs = inv_freq @ position_ids.float()` (one f32 product), then `emb.cos()`, `emb.sin()`.
pub fn rope_cos_sin(pos: usize, d: usize, theta: f32) -> Vec<(f32, f32)> {
    (0..d / 2)
        .map(|i| {
            let inv_freq = 1.0 / theta.powf((2 * i) as f32 / d as f32);
            let angle = pos as f32 * inv_freq;
            (angle.cos(), angle.sin())
        })
        .collect()
}

/// `bthd`: the (B, T, H, D) shape of x.
pub fn rope_forward(y: &mut [f32], x: &[f32], pos0: usize, theta: f32, bthd: [usize; 4]) {
    rotate(y, x, pos0, theta, bthd, 1.0, |y, v| *y = v);
}

pub fn rope_backward(dx: &mut [f32], dy: &[f32], pos0: usize, theta: f32, bthd: [usize; 4]) {
    rotate(dx, dy, pos0, theta, bthd, -1.0, |dx, v| *dx += v);
}

/// Rotates every D-wide head vector of `x` (B, T, H, D) by the angles of its token's position
/// (by minus them when `sin_sign` is −1), handing each result to `store` (write or add) for
/// `out`. Threaded over the B·T token rows.
fn rotate(
    out: &mut [f32],
    x: &[f32],
    pos0: usize,
    theta: f32,
    [b, t, h, d]: [usize; 4],
    sin_sign: f32,
    store: impl Fn(&mut f32, f32) + Sync,
) {
    assert!(d > 0 && d % 2 == 0, "rope: head dim D must be even and positive, got D = {d}");
    let row_len = h * d;
    assert!(
        x.len() == b * t * row_len && out.len() == x.len(),
        "rope: x holds {} values and out {}, (B, T, H, D) = ({b}, {t}, {h}, {d}) needs {}",
        x.len(),
        out.len(),
        b * t * row_len
    );
    let half = d / 2;
    // (T, D/2)
    let cos_sin: Vec<(f32, f32)> = (0..t).flat_map(|i| rope_cos_sin(pos0 + i, d, theta)).collect();
    threads::par_rows(out, row_len, row_len, |first_row, out_rows| {
        for (r, out_row) in out_rows.chunks_exact_mut(row_len).enumerate() {
            let row = first_row + r;
            let angles = &cos_sin[(row % t) * half..][..half];
            let x_row = &x[row * row_len..][..row_len];
            for (out_head, x_head) in out_row.chunks_exact_mut(d).zip(x_row.chunks_exact(d)) {
                let (out1, out2) = out_head.split_at_mut(half);
                let (x1, x2) = x_head.split_at(half);
                for i in 0..half {
                    let (cos, sin) = (angles[i].0, sin_sign * angles[i].1);
                    store(&mut out1[i], x1[i] * cos - x2[i] * sin);
                    store(&mut out2[i], x2[i] * cos + x1[i] * sin);
                }
            }
        }
    });
}

// ---- causal attention
//
// Fused causal attention, grouped-query.  q, out: (B, T, H, D)   k, v: (B, S, Hkv, D)   lse: (B, H, T)
// S ≥ T: the T queries follow S − T cached keys, so query i (at position S − T + i) sees keys
// j ≤ S − T + i. Query head h reads kv head h / (H / Hkv).
// forward:  s_ij  = q_i · k_j / √D                    (j visible to i)
//           lse_i = ln Σ_j exp(s_ij)                  (f32, max subtracted; saved)
//           P_ij  = exp(s_ij − lse_i);   out_i = Σ_j P_ij · v_j
//           HF: attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * self.scaling
// backward: P recomputed from lse (never saved);   δ_i = Σ_d dout_id · out_id
//           dv_j += Σ_i P_ij · dout_i;   dP_ij = dout_i · v_j
//           dS_ij = P_ij · (dP_ij − δ_i)
//           dq_i += Σ_j dS_ij · k_j / √D;   dk_j += Σ_i dS_ij · q_i / √D
// Work: one task per (b, h) forward and per (b, kv head) backward, whose H / Hkv query heads run
// in order so dk and dv sum in a fixed order; results are copied into place in task order, so
// the bits do not depend on the thread count. The products are GEMMs on strided head views.
// Each task forms the full T×S score matrix (T·S floats of memory per running task) and
// ignores its masked part: simple, at most twice the causal work.

/// The sizes of one attention call: q (B, T, H, D), k and v (B, S, Hkv, D).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionDims {
    pub b: usize,
    pub t: usize,
    pub s: usize,
    pub h: usize,
    pub hkv: usize,
    pub d: usize,
}

impl AttentionDims {
    /// The sizes read off q's and k's shapes.
    pub fn of(q_shape: &[usize], k_shape: &[usize]) -> AttentionDims {
        let [b, t, h, d] = bthd(q_shape, "causal_attention q");
        let [_, s, hkv, _] = bthd(k_shape, "causal_attention k");
        AttentionDims { b, t, s, h, hkv, d }
    }

    /// Where the query heads and the kv heads sit, and how many query heads share a kv head.
    fn heads(&self) -> (Heads, Heads, usize) {
        let (q, kv) = (
            Heads { seq: self.t, heads: self.h, d: self.d },
            Heads { seq: self.s, heads: self.hkv, d: self.d },
        );
        (q, kv, self.h / self.hkv)
    }
}

impl Tape {
    /// Causal self-attention of q (B, T, H, D) over k, v (B, S, Hkv, D); see above.
    pub fn causal_attention(&mut self, q: Var, k: Var, v: Var) -> Var {
        let (q_shape, k_shape, v_shape) = (self.shape(q).to_vec(), self.shape(k).to_vec(), self.shape(v));
        let [b, t, h, d] = bthd(&q_shape, "causal_attention q");
        let [kb, s, hkv, kd] = bthd(&k_shape, "causal_attention k");
        assert!(v_shape == k_shape, "causal_attention: k {k_shape:?} and v {v_shape:?} differ in shape");
        let fail = |why: String| -> ! { panic!("causal_attention: q {q_shape:?} and k {k_shape:?}: {why}") };
        if kb != b {
            fail(format!("batch sizes {b} and {kb} differ"));
        }
        if kd != d {
            fail(format!("head dims {d} and {kd} differ"));
        }
        if hkv == 0 || h % hkv != 0 {
            fail(format!("{h} query heads are not a multiple of {hkv} kv heads"));
        }
        if s < t {
            fail(format!("{t} queries but only {s} keys (S must be ≥ T)"));
        }
        let dims = AttentionDims { b, t, s, h, hkv, d };
        #[cfg(feature = "cuda")]
        if self.value(q).gpu().is_some() {
            let (out, lse) =
                crate::cuda::ops::causal_attention(self.value(q), self.value(k), self.value(v), dims);
            return self.push(out, Op::CausalAttention { q, k, v, lse });
        }
        let mut out = vec![0.0; b * t * h * d];
        let mut lse = vec![0.0; b * h * t];
        let (q_data, k_data, v_data) = (self.value(q).data(), self.value(k).data(), self.value(v).data());
        attention_forward(&mut out, &mut lse, q_data, k_data, v_data, dims);
        self.push(
            Tensor::new(&q_shape, out),
            Op::CausalAttention { q, k, v, lse: Tensor::new(&[b * h * t], lse) },
        )
    }
}

/// Where the heads sit in a (B, seq, heads, D) tensor.
#[derive(Clone, Copy)]
struct Heads {
    seq: usize,
    heads: usize,
    d: usize,
}

impl Heads {
    /// Head `head` of batch entry `bi` as a (seq × D) view: row stride heads·D.
    fn view<'a>(&self, x: &'a [f32], bi: usize, head: usize) -> MatRef<'a> {
        let start = (bi * self.seq * self.heads + head) * self.d;
        MatRef::new(&x[start..], self.seq, self.d, self.heads * self.d, 1)
    }

    /// The seq D-wide rows of head `head` of batch entry `bi`, to write into.
    fn rows_mut<'a>(&self, x: &'a mut [f32], bi: usize, head: usize) -> impl Iterator<Item = &'a mut [f32]> {
        let (row_len, d) = (self.heads * self.d, self.d);
        let batch = &mut x[bi * self.seq * row_len..(bi + 1) * self.seq * row_len];
        batch.chunks_exact_mut(row_len).map(move |row| &mut row[head * d..(head + 1) * d])
    }
}

/// Keys visible to query i of T when the queries follow S − T cached keys.
fn visible_keys(i: usize, t: usize, s: usize) -> usize {
    s - t + i + 1
}

fn score_scale(d: usize) -> f32 {
    1.0 / (d as f32).sqrt()
}

/// s = q·kᵀ / √D of one query head: (T × S) row-major, masked entries included.
fn scaled_scores(scores: &mut [f32], q_h: MatRef, k_g: MatRef) {
    gemm_serial(scores, k_g.rows(), q_h, k_g.t(), false);
    let scale = score_scale(q_h.cols());
    scores.iter_mut().for_each(|s| *s *= scale);
}

/// Scores (T × S) → probabilities in place: P_ij = exp(s_ij − lse_i) where j is visible, else 0.
fn probs_from_scores(p: &mut [f32], lse: &[f32], t: usize, s: usize) {
    for (i, row) in p.chunks_exact_mut(s).enumerate() {
        let (visible, masked) = row.split_at_mut(visible_keys(i, t, s));
        visible.iter_mut().for_each(|x| *x = (*x - lse[i]).exp());
        masked.fill(0.0);
    }
}

pub fn attention_forward(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: AttentionDims,
) {
    let AttentionDims { b, t, s, h, d, .. } = dims;
    let (q_heads, kv_heads, group) = dims.heads();
    let per_task = threads::par_map(b * h, 2 * t * s * d, |items| {
        let attend = |item: usize| {
            let (bi, hi) = (item / h, item % h);
            let (k_g, v_g) = (kv_heads.view(k, bi, hi / group), kv_heads.view(v, bi, hi / group));
            head_forward(q_heads.view(q, bi, hi), k_g, v_g)
        };
        items.map(attend).collect::<Vec<_>>()
    });
    // item = bi·H + hi, the row order of lse (B, H, T)
    for (item, (out_h, lse_h)) in per_task.into_iter().flatten().enumerate() {
        for (dst, src) in q_heads.rows_mut(out, item / h, item % h).zip(out_h.chunks_exact(d)) {
            dst.copy_from_slice(src);
        }
        lse[item * t..(item + 1) * t].copy_from_slice(&lse_h);
    }
}

/// One query head: returns its out (T × D, row-major) and lse (T).
fn head_forward(q_h: MatRef, k_g: MatRef, v_g: MatRef) -> (Vec<f32>, Vec<f32>) {
    let (t, s, d) = (q_h.rows(), k_g.rows(), q_h.cols());
    let mut p = vec![0.0; t * s];
    scaled_scores(&mut p, q_h, k_g);
    let lse: Vec<f32> =
        p.chunks_exact(s).enumerate().map(|(i, row)| ops::logsumexp(&row[..visible_keys(i, t, s)])).collect();
    probs_from_scores(&mut p, &lse, t, s);
    let mut out = vec![0.0; t * d];
    gemm_serial(&mut out, d, MatRef::row_major(&p, t, s), v_g, false); // out = P·v
    (out, lse)
}

#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    lse: &[f32],
    out: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: AttentionDims,
) {
    let AttentionDims { b, t, s, h, hkv, d } = dims;
    let (q_heads, kv_heads, group) = dims.heads();
    // δ: (B, T, H), one per query row and head
    let delta: Vec<f32> = dout.chunks_exact(d).zip(out.chunks_exact(d)).map(|(g, o)| dot(g, o)).collect();
    let per_task = threads::par_map(b * hkv, 4 * group * t * s * d, |items| {
        let kv_head_grads = |item: usize| {
            let (bi, g) = (item / hkv, item % hkv);
            let (k_g, v_g) = (kv_heads.view(k, bi, g), kv_heads.view(v, bi, g));
            let (mut dk_g, mut dv_g) = (vec![0.0; s * d], vec![0.0; s * d]);
            let dq_group: Vec<Vec<f32>> = (g * group..(g + 1) * group)
                .map(|hi| {
                    let lse_h = &lse[(bi * h + hi) * t..][..t];
                    let delta_h: Vec<f32> = (0..t).map(|i| delta[(bi * t + i) * h + hi]).collect();
                    let (q_h, dout_h) = (q_heads.view(q, bi, hi), q_heads.view(dout, bi, hi));
                    head_backward(&mut dk_g, &mut dv_g, dout_h, lse_h, &delta_h, q_h, k_g, v_g)
                })
                .collect();
            (dq_group, dk_g, dv_g)
        };
        items.map(kv_head_grads).collect::<Vec<_>>()
    });
    // item = bi·Hkv + g
    for (item, (dq_group, dk_g, dv_g)) in per_task.into_iter().flatten().enumerate() {
        let (bi, g) = (item / hkv, item % hkv);
        for (j, dq_h) in dq_group.iter().enumerate() {
            add_head(dq, dq_h, q_heads, bi, g * group + j);
        }
        add_head(dk, &dk_g, kv_heads, bi, g);
        add_head(dv, &dv_g, kv_heads, bi, g);
    }
}

/// Adds a head's (seq × D) row-major gradient into its place in a (B, seq, heads, D) one.
fn add_head(grad: &mut [f32], head_grad: &[f32], heads: Heads, bi: usize, head: usize) {
    for (dst, src) in heads.rows_mut(grad, bi, head).zip(head_grad.chunks_exact(heads.d)) {
        ops::accumulate(dst, src);
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// One query head's backward: adds its share to its kv head's dk_g, dv_g (S × D) and returns
/// its dq (T × D). `delta_h` (T) holds δ_i = Σ_d dout_id · out_id.
#[allow(clippy::too_many_arguments)]
fn head_backward(
    dk_g: &mut [f32],
    dv_g: &mut [f32],
    dout_h: MatRef,
    lse_h: &[f32],
    delta_h: &[f32],
    q_h: MatRef,
    k_g: MatRef,
    v_g: MatRef,
) -> Vec<f32> {
    let (t, s, d) = (q_h.rows(), k_g.rows(), q_h.cols());
    let mut p = vec![0.0; t * s];
    scaled_scores(&mut p, q_h, k_g);
    probs_from_scores(&mut p, lse_h, t, s);
    gemm_serial(dv_g, d, MatRef::row_major(&p, t, s).t(), dout_h, true); // dv += Pᵀ·dout
    let mut ds = vec![0.0; t * s];
    gemm_serial(&mut ds, s, dout_h, v_g.t(), false); // dP = dout·vᵀ
    let scale = score_scale(d);
    for ((ds_row, p_row), &delta_i) in ds.chunks_exact_mut(s).zip(p.chunks_exact(s)).zip(delta_h) {
        for (ds_ij, &p_ij) in ds_row.iter_mut().zip(p_row) {
            *ds_ij = p_ij * (*ds_ij - delta_i) * scale; // dS / √D
        }
    }
    let ds = MatRef::row_major(&ds, t, s);
    let mut dq_h = vec![0.0; t * d];
    gemm_serial(&mut dq_h, d, ds, k_g, false); // dq = dS·k / √D
    gemm_serial(dk_g, d, ds.t(), q_h, true); // dk += dSᵀ·q / √D
    dq_h
}
