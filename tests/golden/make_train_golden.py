#!/usr/bin/env python3
"""Golden reference for src/train.rs: a few whole training steps of OLMoE's recipe.

Python is used only here; tests/train_golden.rs reads the committed files without Python.

Pinned versions (the outputs were made with exactly these; see README.md):
    torch         2.15.0  (PyPI wheel, run on CPU, float32, one thread)
    transformers  5.23.0
    safetensors   0.8.0
    numpy         2.4.6
    python        3.11.7

What one step is (SPEC.md 1.4a and 2.1; src/train.rs `train_step`):
    for each of MICRO micro-batches (ids int64 [B, T]):
        out   = OlmoeForCausalLM(input_ids=ids, output_router_logits=True)
        ce    = HF's causal-LM loss (model.loss_function: shift inside, mean over B*(T-1))
        aux   = OLMoE training load balancing (megablocks' batched_load_balancing_loss), per
                layer l from the router logits: p = softmax(logits) (f32), c_e = how many of
                the N*K top-k slots went to expert e (no gradient),
                aux = E/(L*N^2*K) * sum_l sum_e c_{l,e} * sum_t p_{l,t,e}   (balance -> 1)
        z     = mean over layers of mean over tokens of logsumexp(router logits)^2
        total = ce + router_aux_loss_coef*aux + router_z_loss_coef*z    (0.01, 0.001)
        (total / MICRO).backward()                  gradients = mean over micro-batches
    norm = torch.nn.utils.clip_grad_norm_(all parameters, 1.0)      (norm before clipping)
    torch.optim.AdamW(betas (0.9, 0.95), eps 1e-8, weight_decay 0.1 on every parameter,
                      foreach=False), lr = LRS[step]; zero_grad

Seeds: the model's init uses torch.manual_seed(seed), the RMSNorm weights 1 + 0.1*N(0,1)
seed+1, the ids seed+2.  seed walks up from FIRST_SEED until the routing margin (gap between
the k-th and (k+1)-th router probability, f32 softmax) is >= MIN_ROUTING_MARGIN for every
token, layer, micro-batch and step; found with the versions above: seed 7000 (meta.json
records it and the margins).  CPU, float32 (never bfloat16), eager attention and eager MoE,
torch.use_deterministic_algorithms(True), one thread: two runs write identical files.

Regenerate:
    python3 tests/golden/make_train_golden.py      (in the env of README.md; about 5 s on 2 cores)

Writes tests/golden/train_steps/ (about 100 KB):
    config.json        save_pretrained's (+ router_z_loss_coef 0.001, which our config reads)
    model.safetensors  the initial weights, F32, hub per-expert names (as make_golden.py)
    ids.npy            int64 [STEPS, MICRO, B, T]   the micro-batches of each step
    lrs.npy            float32 [STEPS]              the learning rate of each step
    steps.json         per step: loss (mean over micro-batches of total), ce, aux, z (means
                       over micro-batches, unscaled), grad_norm (before clipping), and the
                       same per micro-batch under "micro"
    final.safetensors  every parameter after the last step, names as model.safetensors
    meta.json          seed, routing margins, versions, self-checks (a float64 replay)
"""

import json
import math
import os
import sys

import numpy as np
import safetensors
import torch
from safetensors.numpy import load_file as np_load_file
from safetensors.numpy import save_file as np_save_file

import transformers
from transformers import OlmoeConfig, OlmoeForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden import deterministic, hub_named  # noqa: E402  (the same layout and settings)

PINNED = {"torch": "2.15.0", "transformers": "5.23.0", "safetensors": "0.8.0", "numpy": "2.4.6"}

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "train_steps")

STEPS, MICRO, B, T = 3, 2, 2, 16
# Exactly representable in float32 (Rust passes the rate as f32); large enough that three
# steps move every weight well past float rounding.
LRS = [float(np.float32(x)) for x in (1e-2, 5e-3, 2e-3)]
MAX_GRAD_NORM = 1.0
BETAS, EPS, WEIGHT_DECAY = (0.9, 0.95), 1e-8, 0.1
ROUTER_Z_LOSS_COEF = 0.001
FIRST_SEED = 7000
MIN_ROUTING_MARGIN = 1e-4  # gap p_(k) - p_(k+1); a smaller one lets an f32 port pick another expert
NORM_WEIGHT_JITTER = 0.1  # RMSNorm weights = 1 + 0.1*N(0,1), so their decay and updates matter

CONFIG = dict(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=8,
    num_hidden_layers=2,
    num_attention_heads=4,  # head_dim 4
    num_key_value_heads=2,  # GQA
    num_experts=8,
    num_experts_per_tok=2,
    norm_topk_prob=False,
    max_position_embeddings=32,
    rms_norm_eps=1e-5,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    initializer_range=0.2,  # 10x OLMoE's 0.02: routing and attention far from uniform
    router_aux_loss_coef=0.01,
    router_z_loss_coef=ROUTER_Z_LOSS_COEF,  # not HF's; kept in config.json, read by our config
    tie_word_embeddings=False,
    clip_qkv=None,
    pad_token_id=None,  # no padding row: every id 0..63 may appear and every row trains
    bos_token_id=None,
    eos_token_id=None,
)


# ---- setup


def check_versions():
    have = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
            "safetensors": safetensors.__version__, "numpy": np.__version__}
    bad = {k: (have[k], v) for k, v in PINNED.items() if have[k] != v}
    if bad:
        msg = ", ".join(f"{k} {h} (pinned {p})" for k, (h, p) in bad.items())
        sys.exit(f"make_train_golden.py: version mismatch: {msg}. HINT: pip install the pinned versions.")


def build(seed):
    cfg = OlmoeConfig(**CONFIG)
    torch.manual_seed(seed)
    model = OlmoeForCausalLM(cfg)
    model.set_attn_implementation("eager")
    model.set_experts_implementation("eager")
    model = model.float().train()  # attention_dropout is 0: train() changes nothing numerically
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.copy_(1.0 + NORM_WEIGHT_JITTER * torch.randn(p.shape, generator=g))
    return cfg, model


def make_ids(vocab, seed):
    g = torch.Generator().manual_seed(seed + 2)
    return torch.randint(0, vocab, (STEPS, MICRO, B, T), generator=g)


# ---- losses (differentiable, in the router logits' dtype)


def load_balancing_olmoe(router_logits, num_experts, top_k):
    """E/(L*N^2*K) * sum_l sum_e c_{l,e} * sum_t p_{l,t,e}  (src/model/moe.rs, OlmoeTraining)."""
    L, N = len(router_logits), router_logits[0].shape[0]
    total = 0.0
    for r in router_logits:
        p = torch.softmax(r, -1)  # (N, E)
        with torch.no_grad():
            sel = torch.topk(p, top_k, -1).indices  # (N, K)
            counts = torch.bincount(sel.flatten(), minlength=num_experts).to(p.dtype)  # (E,)
        total = total + (counts * p.sum(0)).sum()
    return total * (num_experts / (L * N * N * top_k))


def router_z_loss(router_logits):
    """Mean over layers of the mean over tokens of logsumexp(logits)^2 (the paper's Eq. 4)."""
    return sum((torch.logsumexp(r, -1) ** 2).mean() for r in router_logits) / len(router_logits)


def routing_margin(router_logits, top_k):
    """Smallest p_(k) - p_(k+1) over layers and tokens, with the f32 softmax HF uses."""
    worst = math.inf
    for r in router_logits:
        p = torch.softmax(r.detach().float(), -1).sort(-1, descending=True).values
        worst = min(worst, (p[:, top_k - 1] - p[:, top_k]).min().item())
    return worst


# ---- the training run


def train(model, ids, lrs):
    """STEPS optimizer steps; returns (per-step records, per-step routing margins)."""
    cfg = model.config
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=lrs[0], betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY,
                            foreach=False, fused=False)
    steps, margins = [], []
    for s in range(ids.shape[0]):
        opt.zero_grad(set_to_none=True)
        micro, margin = [], math.inf
        for m in range(ids.shape[1]):
            x = ids[s, m]
            out = model(input_ids=x, output_router_logits=True)
            ce = model.loss_function(out.logits, x, cfg.vocab_size)  # HF's ForCausalLMLoss
            aux = load_balancing_olmoe(out.router_logits, cfg.num_experts, cfg.num_experts_per_tok)
            z = router_z_loss(out.router_logits)
            total = ce + cfg.router_aux_loss_coef * aux + ROUTER_Z_LOSS_COEF * z
            (total / ids.shape[1]).backward()
            micro.append({"loss": total.item(), "ce": ce.item(), "aux": aux.item(), "z": z.item()})
            margin = min(margin, routing_margin(out.router_logits, cfg.num_experts_per_tok))
        norm = torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM, foreach=False)
        for group in opt.param_groups:
            group["lr"] = lrs[s]
        opt.step()
        rec = {k: sum(mb[k] for mb in micro) / len(micro) for k in ("loss", "ce", "aux", "z")}
        rec["grad_norm"] = norm.item()
        rec["lr"] = lrs[s]
        rec["micro"] = micro
        steps.append(rec)
        margins.append(margin)
    return steps, margins


def choose_seed():
    for seed in range(FIRST_SEED, FIRST_SEED + 1000):
        cfg, model = build(seed)
        ids = make_ids(cfg.vocab_size, seed)
        initial = {n: p.detach().clone() for n, p in model.named_parameters()}
        steps, margins = train(model, ids, LRS)
        if min(margins) >= MIN_ROUTING_MARGIN:
            return seed, cfg, model, initial, ids, steps, margins
        print(f"  seed {seed} rejected (routing margin per step {[f'{m:.2g}' for m in margins]})")
    sys.exit("make_train_golden.py: no seed in 1000 tries")


def main():
    check_versions()
    deterministic()
    seed, cfg, model, initial, ids, steps, margins = choose_seed()
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):  # only our own files live here
        os.remove(os.path.join(OUT, f))

    # the initial checkpoint, as transformers writes it
    start = OlmoeForCausalLM(cfg)
    start.load_state_dict(initial, strict=True)
    start.save_pretrained(OUT, safe_serialization=True)
    gen = os.path.join(OUT, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)  # not needed by the Rust side
    on_disk = np_load_file(os.path.join(OUT, "model.safetensors"))
    mem = hub_named(initial)
    if set(on_disk) != set(mem):  # a transformers that writes fused experts: write the hub layout
        np_save_file({k: v.contiguous().numpy() for k, v in mem.items()}, os.path.join(OUT, "model.safetensors"),
                     metadata={"format": "pt"})
        on_disk = np_load_file(os.path.join(OUT, "model.safetensors"))
        layout = "fused on disk; rewritten as per-expert hub layout by make_train_golden.py"
    else:
        layout = "per-expert hub layout written by save_pretrained"
    for k, v in mem.items():
        assert np.array_equal(on_disk[k], v.numpy()), k
    saved_cfg = json.load(open(os.path.join(OUT, "config.json")))
    assert saved_cfg.get("router_z_loss_coef") == ROUTER_Z_LOSS_COEF, "config.json lost router_z_loss_coef"
    assert saved_cfg.get("pad_token_id") is None

    final = hub_named({n: p.detach() for n, p in model.named_parameters()})
    assert set(final) == set(on_disk)
    np_save_file({k: v.contiguous().numpy().astype(np.float32) for k, v in final.items()},
                 os.path.join(OUT, "final.safetensors"), metadata={"format": "pt"})
    np.save(os.path.join(OUT, "ids.npy"), ids.numpy().astype(np.int64))
    np.save(os.path.join(OUT, "lrs.npy"), np.array(LRS, dtype=np.float32))
    with open(os.path.join(OUT, "steps.json"), "w") as f:
        json.dump({"router_aux_loss_coef": cfg.router_aux_loss_coef, "router_z_loss_coef": ROUTER_Z_LOSS_COEF,
                   "max_grad_norm": MAX_GRAD_NORM, "steps": steps}, f, indent=2)
        f.write("\n")

    # ---- self-checks
    checks = {}
    # the same run again from the saved checkpoint: identical (determinism, save/load)
    again, info = OlmoeForCausalLM.from_pretrained(OUT, dtype=torch.float32, attn_implementation="eager",
                                                   experts_implementation="eager", output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    again.train()
    steps2, _ = train(again, ids, LRS)
    checks["rerun_from_files_identical"] = steps2 == steps and all(
        torch.equal(p, final_p) for p, final_p in
        zip(hub_named({n: p.detach() for n, p in again.named_parameters()}).values(), final.values()))
    assert checks["rerun_from_files_identical"], "a rerun from the saved files differs"
    # a float64 replay of the same recipe: how much float32 rounding the golden values carry
    # (the router's softmax stays f32 inside HF, so this is f64 up to ~1e-7 there)
    ref = OlmoeForCausalLM.from_pretrained(OUT, dtype=torch.float32, attn_implementation="eager",
                                           experts_implementation="eager").double().train()
    steps64, _ = train(ref, ids, LRS)
    for q in ("loss", "ce", "aux", "z", "grad_norm"):
        checks[f"f64_worst_rel_{q}"] = max(abs(a[q] - b[q]) / abs(b[q]) for a, b in zip(steps, steps64))
    final64 = hub_named({n: p.detach() for n, p in ref.named_parameters()})
    worst_abs = max(((final[k].double() - final64[k]).abs().max().item(), k) for k in final)
    checks["f64_worst_abs_final_weight"], checks["f64_worst_abs_final_weight_name"] = worst_abs
    moved = min((final[k] - initial_k).abs().max().item() for k, initial_k in mem.items())
    checks["smallest_max_abs_change_of_a_tensor"] = moved
    assert moved > 1e-4, "some tensor barely moved: the final-weight check would be weak"

    meta = {
        "seed": seed,
        "norm_weight_seed": seed + 1,
        "ids_seed": seed + 2,
        "min_routing_margin": min(margins),
        "routing_margin_per_step": margins,
        "layout": layout,
        "shapes": {"steps": STEPS, "micro_batches": MICRO, "batch": B, "seq": T},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "safetensors": safetensors.__version__, "numpy": np.__version__},
        "checks": checks,
    }
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    for s, rec in enumerate(steps):
        print(f"step {s}: loss {rec['loss']:.6f} ce {rec['ce']:.6f} aux {rec['aux']:.6f} z {rec['z']:.6f} "
              f"grad_norm {rec['grad_norm']:.6f} lr {rec['lr']:.3g}")
    print(f"seed {seed}, routing margin {min(margins):.3g}; f64 replay: final weights within "
          f"{checks['f64_worst_abs_final_weight']:.2e} ({checks['f64_worst_abs_final_weight_name']})")


if __name__ == "__main__":
    main()
