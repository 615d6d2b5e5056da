#!/usr/bin/env python3
"""Golden reference for src/optim.rs: torch.optim.AdamW steps and clip_grad_norm_.

Python is used only here; tests/optim.rs reads the committed .npy files without Python.

Pinned versions (the outputs were made with exactly these):
    torch   2.15.0  (PyPI wheel, CPU, float32, one thread)
    numpy   2.4.6
    python  3.11.7
Seed: SEED = 1234 (torch.manual_seed) for parameters, gradients and the clip inputs.

AdamW is torch's default CPU path (single-tensor, foreach=False, fused=False) with OLMoE's
hyper-parameters: betas (0.9, 0.95), eps 1e-8, weight_decay 0.1 (decoupled). The learning
rate changes every step (values exactly representable in float32, since Rust passes f32).

Writes tests/golden/adamw/ (about 6 KB):
    lrs.npy                 float32 [STEPS]          the learning rate of each step
    p{i}_params.npy         float32 [STEPS+1, *shape] parameter i: row 0 initial, row t after step t
    p{i}_grads.npy          float32 [STEPS, *shape]   the gradient of parameter i at step t+1
    p{i}_exp_avg.npy        float32 [*shape]          torch's state['exp_avg'] after the last step
    p{i}_exp_avg_sq.npy     float32 [*shape]          torch's state['exp_avg_sq'] after the last step
    clip_{case}_in{i}.npy   float32 gradients before torch.nn.utils.clip_grad_norm_(max_norm=1.0)
    clip_{case}_out{i}.npy  float32 the same after it
    clip_{case}_norm.npy    float32 [] the total norm it returned
    (case "big": norm > 1, scaled down; case "small": norm < 1, left as is)

Regenerate:
    python3 tests/golden/make_adamw_golden.py
"""

import os

import numpy as np
import torch

SEED = 1234
STEPS = 5
# (shape, gradient scale): a matrix, a vector, a length past one AVX-512 register plus a
# tail, and one with gradients so small that eps = 1e-8 matters next to sqrt(v).
PARAMS = [((3, 5), 1.0), ((7,), 0.3), ((2, 19), 2.0), ((4,), 1e-7)]
LRS = [1e-2, 2e-2, 5e-2, 3e-2, 5e-3]
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "adamw")


def save(name, tensor):
    np.save(os.path.join(OUT, name), tensor.detach().numpy().astype(np.float32))


def main():
    assert torch.__version__.startswith("2.15.0"), torch.__version__
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    os.makedirs(OUT, exist_ok=True)

    # ---- AdamW
    params = [torch.nn.Parameter(torch.randn(shape)) for shape, _ in PARAMS]
    opt = torch.optim.AdamW(
        params, lr=LRS[0], betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, foreach=False, fused=False
    )
    lrs = [float(np.float32(lr)) for lr in LRS]
    history = [[p.detach().clone()] for p in params]
    grads = [[] for _ in params]
    for t in range(STEPS):
        for i, (p, (shape, scale)) in enumerate(zip(params, PARAMS)):
            p.grad = torch.randn(shape) * scale
            grads[i].append(p.grad.clone())
        for group in opt.param_groups:
            group["lr"] = lrs[t]
        opt.step()
        for i, p in enumerate(params):
            history[i].append(p.detach().clone())
    np.save(os.path.join(OUT, "lrs.npy"), np.array(lrs, dtype=np.float32))
    for i, p in enumerate(params):
        save(f"p{i}_params.npy", torch.stack(history[i]))
        save(f"p{i}_grads.npy", torch.stack(grads[i]))
        save(f"p{i}_exp_avg.npy", opt.state[p]["exp_avg"])
        save(f"p{i}_exp_avg_sq.npy", opt.state[p]["exp_avg_sq"])

    # ---- clip_grad_norm_
    for case, scale in [("big", 1.0), ("small", 0.05)]:
        ps = [torch.nn.Parameter(torch.zeros(shape)) for shape, _ in PARAMS]
        for i, p in enumerate(ps):
            p.grad = torch.randn(p.shape) * scale
            save(f"clip_{case}_in{i}.npy", p.grad)
        norm = torch.nn.utils.clip_grad_norm_(ps, max_norm=1.0, foreach=False)
        for i, p in enumerate(ps):
            save(f"clip_{case}_out{i}.npy", p.grad)
        save(f"clip_{case}_norm.npy", norm)
        print(f"clip {case}: total norm {norm.item():.6f}")


if __name__ == "__main__":
    main()
