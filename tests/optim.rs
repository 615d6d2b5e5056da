//! src/optim.rs: the learning-rate schedule against hand-computed values, AdamW against a
//! hand-worked step and against torch (tests/golden/adamw/, from make_adamw_golden.py),
//! clip_grad_norm against hand arithmetic and torch, checkpoint state, determinism.

use moe::cpu::threads::set_num_threads;
use moe::npy;
use moe::optim::{clip_grad_norm, global_norm, AdamW, AdamWConfig, Schedule};
use moe::rng::Rng;
use moe::tensor::Tensor;
use std::path::{Path, PathBuf};

fn golden(name: &str) -> Tensor {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/adamw").join(name);
    npy::read(&path).and_then(|a| a.to_tensor()).unwrap_or_else(|e| panic!("{e}"))
}

/// Row `i` of a stacked tensor (leading dimension = steps), with the remaining shape.
fn row(t: &Tensor, i: usize) -> Tensor {
    let shape = &t.shape()[1..];
    let n: usize = shape.iter().product();
    Tensor::new(shape, t.data()[i * n..(i + 1) * n].to_vec())
}

/// max over elements of |a − b| / max(|b|, 1e-3 · max|b|): relative, but an element near 0
/// is measured against the tensor's scale.
fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let scale = b.data().iter().fold(0.0f64, |m, &x| m.max(x.abs() as f64));
    let floor = (1e-3 * scale).max(f64::MIN_POSITIVE);
    a.data()
        .iter()
        .zip(b.data())
        .map(|(&x, &y)| (x as f64 - y as f64).abs() / (y.abs() as f64).max(floor))
        .fold(0.0, f64::max)
}

fn assert_close(what: &str, got: f64, want: f64, tol: f64) {
    assert!((got - want).abs() <= tol * want.abs().max(1e-12), "{what}: got {got:e}, want {want:e}");
}

// ---- schedule

#[test]
fn schedule_values_at_chosen_steps() {
    // peak 1e-3, warmup W = 10, cosine ends at S = 110, anneal A = 20: 130 steps; lo = 1e-4.
    let s = Schedule::olmoe(1e-3, 10, 110, 20).unwrap();
    assert_eq!(s.total_steps(), 130);
    let cases = [
        (0, 1e-4),          // warmup start: 0.1 · peak
        (5, 5.5e-4),        // 1e-4 + 0.9e-3 · 5/10
        (10, 1e-3),         // end of warmup: peak (cosine at progress 0)
        (35, 8.681981e-4),  // progress 1/4: 1e-4 + 0.9e-3 · (1 + cos(π/4))/2 = 1e-4 + 0.9e-3 · 0.8535534
        (60, 5.5e-4),       // progress 1/2: 1e-4 + 0.9e-3 · 1/2
        (109, 1.002220e-4), // progress 99/100: 1e-4 + 0.9e-3 · (1 + cos(0.99π))/2 = 1e-4 + 0.9e-3 · 2.4672e-4
        (110, 9.5e-5),      // anneal step 1 of 20: 1e-4 · (1 − 1/20)
        (119, 5e-5),        // anneal step 10 of 20: 1e-4 · (1 − 10/20)
        (128, 5e-6),        // 1e-4 · (1 − 19/20)
        (129, 0.0),         // last step: 0
        (500, 0.0),         // past the end: stays 0
    ];
    for (step, want) in cases {
        let got = s.lr(step) as f64;
        assert!((got - want).abs() <= 1e-6 * want.max(1e-4), "lr({step}) = {got:e}, want {want:e}");
    }
    // After the warmup the rate never rises.
    for step in 10..140 {
        assert!(s.lr(step + 1) <= s.lr(step), "lr rises from step {step} to {}", step + 1);
    }
}

#[test]
fn schedule_olmoe_scale_and_no_anneal() {
    // The main run: peak 4e-4, 2500 warmup steps, from 4e-5.
    let s = Schedule::olmoe(4e-4, 2500, 1_200_000, 23_842).unwrap();
    assert_close("lr(0)", s.lr(0) as f64, 4e-5, 1e-6);
    assert_close("lr(2500)", s.lr(2500) as f64, 4e-4, 1e-6);
    assert_close("lr(1_199_999)", s.lr(1_199_999) as f64, 4e-5, 1e-6);
    assert_eq!(s.lr(s.total_steps() - 1), 0.0);
    // Without an anneal the run ends on the cosine's floor.
    let s = Schedule::olmoe(1e-3, 0, 100, 0).unwrap();
    assert_close("lr(0), no warmup", s.lr(0) as f64, 1e-3, 1e-6);
    assert_close("lr(100), no anneal", s.lr(100) as f64, 1e-4, 1e-6);
}

#[test]
fn schedule_rejects_bad_fields() {
    let cases: [(Result<Schedule, _>, &str); 4] = [
        (Schedule::olmoe(1e-3, 200, 100, 10), "warmup_steps (200) is past the end"),
        (Schedule::olmoe(0.0, 10, 100, 10), "peak_lr must be a positive number"),
        (Schedule::olmoe(f64::NAN, 10, 100, 10), "peak_lr must be a positive number"),
        (Schedule::olmoe(1e-3, 0, 0, 0), "no steps"),
    ];
    for (result, needle) in cases {
        let msg = result.expect_err(needle).to_string();
        assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
    }
    let s = Schedule { min_lr_ratio: 1.5, ..Schedule::olmoe(1e-3, 10, 100, 10).unwrap() };
    assert!(s.validated().unwrap_err().to_string().contains("min_lr_ratio must be in [0, 1]"));
}

// ---- AdamW

#[test]
fn adamw_matches_a_hand_worked_step() {
    // p = [1, −2], g = [0.5, −0.1], lr 0.1, wd 0.1, β = (0.9, 0.95), eps 1e-8.
    // step 1:  p·(1 − 0.1·0.1)          = [0.99, −1.98]
    //          m = 0.1·g                 = [0.05, −0.01]      m̂ = m / (1 − 0.9)   = g
    //          v = 0.05·g²               = [0.0125, 0.0005]   v̂ = v / (1 − 0.95)  = g² → sqrt = |g|
    //          p −= 0.1 · g/(|g| + 1e-8) = 0.1·(±1 − O(1e-7)) → [0.89, −1.88]
    // step 2 (same g, lr 0.1):  m = 0.9·0.1g + 0.1g = 0.19g, m̂ = 0.19g/(1 − 0.81) = g;
    //          v = (0.95·0.05 + 0.05)g² = 0.0975g², v̂ = 0.0975g²/(1 − 0.9025) = g²
    //          p = [0.89·0.99 − 0.1, −1.88·0.99 + 0.1] = [0.7811, −1.7612]
    let mut p = Tensor::new(&[2], vec![1.0, -2.0]);
    let g = Tensor::new(&[2], vec![0.5, -0.1]);
    let mut opt = AdamW::new(AdamWConfig::default());
    opt.step(&mut [&mut p], &[&g], 0.1);
    let state = opt.state();
    assert_eq!(state.step, 1);
    for (got, want) in state.exp_avg[0].data().iter().zip([0.05, -0.01]) {
        assert_close("m after step 1", *got as f64, want, 1e-6);
    }
    for (got, want) in state.exp_avg_sq[0].data().iter().zip([0.0125, 0.0005]) {
        assert_close("v after step 1", *got as f64, want, 1e-6);
    }
    for (got, want) in p.data().iter().zip([0.89, -1.88]) {
        assert_close("p after step 1", *got as f64, want, 1e-6);
    }
    opt.step(&mut [&mut p], &[&g], 0.1);
    for (got, want) in p.data().iter().zip([0.7811, -1.7612]) {
        assert_close("p after step 2", *got as f64, want, 1e-6);
    }
}

#[test]
fn adamw_matches_torch_for_five_steps() {
    let lrs = golden("lrs.npy");
    let n_params = 4;
    let history: Vec<Tensor> = (0..n_params).map(|i| golden(&format!("p{i}_params.npy"))).collect();
    let grads: Vec<Tensor> = (0..n_params).map(|i| golden(&format!("p{i}_grads.npy"))).collect();
    let mut params: Vec<Tensor> = history.iter().map(|h| row(h, 0)).collect();
    let mut opt = AdamW::new(AdamWConfig::default());
    let mut worst = 0.0f64;
    for (t, &lr) in lrs.data().iter().enumerate() {
        let g: Vec<Tensor> = grads.iter().map(|g| row(g, t)).collect();
        let mut p: Vec<&mut Tensor> = params.iter_mut().collect();
        opt.step(&mut p, &g.iter().collect::<Vec<_>>(), lr);
        for (i, p) in params.iter().enumerate() {
            let d = max_rel_diff(p, &row(&history[i], t + 1));
            println!("step {} lr {lr:e} param {i} {:?}: max rel diff {d:.2e}", t + 1, p.shape());
            worst = worst.max(d);
        }
    }
    let state = opt.state();
    assert_eq!(state.step, 5);
    for i in 0..n_params {
        let dm = max_rel_diff(&state.exp_avg[i], &golden(&format!("p{i}_exp_avg.npy")));
        let dv = max_rel_diff(&state.exp_avg_sq[i], &golden(&format!("p{i}_exp_avg_sq.npy")));
        println!("param {i}: exp_avg max rel diff {dm:.2e}, exp_avg_sq {dv:.2e}");
        worst = worst.max(dm).max(dv);
    }
    println!("worst max rel diff vs torch: {worst:.2e}");
    assert!(worst <= 1e-5, "AdamW differs from torch by {worst:e} (> 1e-5)");
}

/// Random parameters and `steps` random gradients for them.
fn problem(shapes: &[&[usize]], steps: usize, seed: u64) -> (Vec<Tensor>, Vec<Vec<Tensor>>) {
    let mut rng = Rng::new(seed);
    let params = shapes.iter().map(|s| Tensor::randn(s, 1.0, &mut rng)).collect();
    let grads =
        (0..steps).map(|_| shapes.iter().map(|s| Tensor::randn(s, 0.1, &mut rng)).collect()).collect();
    (params, grads)
}

fn run(opt: &mut AdamW, params: &mut [Tensor], grads: &[Vec<Tensor>], first_step: usize) {
    for (t, g) in grads.iter().enumerate() {
        let lr = 1e-3 * (1 + first_step + t) as f32;
        let mut p: Vec<&mut Tensor> = params.iter_mut().collect();
        opt.step(&mut p, &g.iter().collect::<Vec<_>>(), lr);
    }
}

fn bits(ts: &[Tensor]) -> Vec<Vec<u32>> {
    ts.iter().map(|t| t.data().iter().map(|x| x.to_bits()).collect()).collect()
}

#[test]
fn adamw_state_restore_continues_bit_identically() {
    let (params, grads) = problem(&[&[3, 7], &[11], &[5]], 6, 7);
    // Uninterrupted: 6 steps.
    let mut straight = params.clone();
    let mut opt = AdamW::new(AdamWConfig::default());
    run(&mut opt, &mut straight, &grads, 0);
    // Interrupted after 3 steps: save the state, rebuild, continue.
    let mut resumed = params.clone();
    let mut first = AdamW::new(AdamWConfig::default());
    run(&mut first, &mut resumed, &grads[..3], 0);
    let saved = first.state();
    assert_eq!(saved.step, 3);
    drop(first);
    let mut second = AdamW::from_state(AdamWConfig::default(), saved).unwrap();
    run(&mut second, &mut resumed, &grads[3..], 3);
    assert_eq!(bits(&straight), bits(&resumed), "parameters differ after resuming");
    let (a, b) = (opt.state(), second.state());
    assert_eq!(a.step, b.step);
    assert_eq!(bits(&a.exp_avg), bits(&b.exp_avg));
    assert_eq!(bits(&a.exp_avg_sq), bits(&b.exp_avg_sq));
}

#[test]
fn adamw_from_state_rejects_inconsistent_state() {
    let mut state = {
        let (mut params, grads) = problem(&[&[4], &[2, 3]], 1, 3);
        let mut opt = AdamW::new(AdamWConfig::default());
        run(&mut opt, &mut params, &grads, 0);
        opt.state()
    };
    state.exp_avg_sq.pop();
    let msg = AdamW::from_state(AdamWConfig::default(), state.clone()).unwrap_err().to_string();
    assert!(msg.contains("2 first moments but 1 second moments"), "{msg}");
    state.exp_avg.clear();
    state.exp_avg_sq.clear();
    let msg = AdamW::from_state(AdamWConfig::default(), state).unwrap_err().to_string();
    assert!(msg.contains("step 1 but no moments"), "{msg}");
}

#[test]
fn adamw_and_norm_are_deterministic_across_thread_counts() {
    // 200,000 elements: above the threshold where par_rows splits the work.
    let (params, grads) = problem(&[&[400, 500], &[37]], 3, 11);
    let mut results = Vec::new();
    let mut norms = Vec::new();
    for threads in [1, 4, 3] {
        set_num_threads(threads);
        let mut p = params.clone();
        let mut opt = AdamW::new(AdamWConfig::default());
        run(&mut opt, &mut p, &grads, 0);
        results.push(bits(&p));
        norms.push(global_norm(&grads[0].iter().collect::<Vec<_>>()).to_bits());
    }
    set_num_threads(2);
    assert!(results.windows(2).all(|w| w[0] == w[1]), "AdamW depends on the thread count");
    assert!(norms.windows(2).all(|w| w[0] == w[1]), "global_norm depends on the thread count");
    // The same run twice gives the same bits.
    let mut again = params.clone();
    run(&mut AdamW::new(AdamWConfig::default()), &mut again, &grads, 0);
    assert_eq!(bits(&again), results[0]);
}

// ---- clip_grad_norm

#[test]
fn clip_grad_norm_by_hand() {
    // ‖[3, 4, 12]‖ = 13 > 1: every gradient × 1/(13 + 1e-6); the returned norm is 13.
    let mut a = Tensor::new(&[2], vec![3.0, 4.0]);
    let mut b = Tensor::new(&[1, 1], vec![12.0]);
    let norm = clip_grad_norm(&mut [&mut a, &mut b], 1.0);
    assert_eq!(norm, 13.0);
    for (got, want) in a.data().iter().chain(b.data()).zip([3.0 / 13.0, 4.0 / 13.0, 12.0 / 13.0]) {
        assert_close("clipped gradient", *got as f64, want, 1e-6);
    }
    // ‖[0.75, 1]‖ = 1.25, just over 1: × 1/1.250001 → [0.6, 0.8].
    let mut a = Tensor::new(&[2], vec![0.75, 1.0]);
    let norm = clip_grad_norm(&mut [&mut a], 1.0);
    assert_eq!(norm, 1.25);
    for (got, want) in a.data().iter().zip([0.6, 0.8]) {
        assert_close("clipped gradient", *got as f64, want, 1e-6);
    }
    // ‖[0.3, 0.4]‖ = 0.5 ≤ 1: untouched, bit for bit.
    let mut a = Tensor::new(&[2], vec![0.3, 0.4]);
    let norm = clip_grad_norm(&mut [&mut a], 1.0);
    assert_close("norm", norm as f64, 0.5, 1e-6);
    assert_eq!(a.data(), &[0.3, 0.4]);
}

#[test]
fn clip_grad_norm_matches_torch() {
    for case in ["big", "small"] {
        let mut grads: Vec<Tensor> = (0..4).map(|i| golden(&format!("clip_{case}_in{i}.npy"))).collect();
        let mut refs: Vec<&mut Tensor> = grads.iter_mut().collect();
        let norm = clip_grad_norm(&mut refs, 1.0);
        let want = golden(&format!("clip_{case}_norm.npy")).item();
        let dn = ((norm - want) / want).abs() as f64;
        let mut worst = dn;
        for (i, g) in grads.iter().enumerate() {
            worst = worst.max(max_rel_diff(g, &golden(&format!("clip_{case}_out{i}.npy"))));
        }
        println!("clip {case}: norm {norm} vs torch {want} (rel {dn:.2e}); worst rel diff {worst:.2e}");
        assert!(worst <= 1e-6, "clip_grad_norm ({case}) differs from torch by {worst:e}");
    }
}
