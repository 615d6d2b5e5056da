#!/usr/bin/env python3
"""Golden reference files for the Rust port of transformers' OlmoeForCausalLM.

Python is used only here, to write the files under tests/golden/<variant>/; the
Rust tests read the committed outputs without Python.

Pinned versions (the outputs were made with exactly these; see the README):
    torch         2.15.0  (PyPI wheel, run on CPU, float32)
    transformers  5.23.0
    safetensors   0.8.0
    numpy         2.4.6
    python        3.11.7

Seeds: each variant starts at FIRST_SEED[variant] and walks up until the
routing margin (gap between the k-th and (k+1)-th router softmax probability,
every layer, every token) is >= MIN_ROUTING_MARGIN, every expert of every layer
receives at least one token, and, for `clip`, no q/k/v value sits within
MIN_CLIP_MARGIN of +-clip_qkv.  Seeds this found with the versions above:
base 9, renorm 1014, gqa 2005, tied 3014, clip 4008 (norm weights use seed+1,
ids seed+2).  meta.json in each folder records the seed and margins.  CPU,
float32 throughout (never bfloat16), torch.use_deterministic_algorithms(True),
one thread: two runs give byte-identical files.

Regenerate:
    python3 tests/golden/make_golden.py
Check a checkpoint the Rust code saved (round trip through transformers):
    python3 tests/golden/make_golden.py --roundtrip DIR [--golden base]
    (loads DIR with OlmoeForCausalLM.from_pretrained, runs it on
    tests/golden/<golden>/ids.npy and compares with logits.npy: exit 1 on a
    missing/unexpected tensor or a logit more than 1e-4 away.)

Per variant the folder holds:
    config.json, model.safetensors  save_pretrained(safe_serialization=True);
                                    per-expert hub tensor names (checked below)
    ids.npy          int64 [B, T]
    logits.npy       float32 [B, T, V]  model(input_ids=ids, output_router_logits=True).logits
    losses.json      loss (next-token CE only, HF's ForCausalLMLoss, mean over B*(T-1)),
                     aux_loss (HF load_balancing_loss_func, unscaled), z_loss (mean over
                     all layers' tokens of logsumexp(router_logits)^2), router_aux_loss_coef
    grads.safetensors  float32 d(loss + router_aux_loss_coef * aux_loss)/d(param) for every
                     parameter, under the hub (per-expert) names of model.safetensors
    meta.json        seed, routing margins, clip statistics, self-check results
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import safetensors
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file as np_load_file
from safetensors.numpy import save_file as np_save_file
from safetensors.torch import load_file as pt_load_file

import transformers
from transformers import OlmoeConfig, OlmoeForCausalLM

PINNED = {"torch": "2.15.0", "transformers": "5.23.0", "safetensors": "0.8.0", "numpy": "2.4.6"}

HERE = os.path.dirname(os.path.abspath(__file__))

B, T = 2, 12
MIN_ROUTING_MARGIN = 1e-3  # gap p_(k) - p_(k+1); a smaller one lets an f32 port pick another expert
MIN_CLIP_MARGIN = 1e-4  # | |x| - clip_qkv | for every q/k/v value (gradient of clamp jumps there)
# and every expert of every layer must receive a token (no all-zero expert gradient)
NORM_WEIGHT_JITTER = 0.1  # RMSNorm weights = 1 + 0.1*N(0,1) so a port that ignores them fails

COMMON = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=16,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    num_experts=8,
    num_experts_per_tok=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    initializer_range=0.2,  # 10x OLMoE's 0.02: routing and attention far from uniform
    router_aux_loss_coef=0.01,
    norm_topk_prob=False,
    tie_word_embeddings=False,
    clip_qkv=None,
    pad_token_id=1,  # OLMoE's; only the "pad" variant's ids contain it (see make_ids)
    bos_token_id=None,
    eos_token_id=95,  # OLMoE's 50279 does not fit a 96-token vocabulary
)

VARIANTS = {
    "base": dict(),  # OLMoE's own setting: no renormalisation, MHA, untied
    "renorm": dict(norm_topk_prob=True),
    "gqa": dict(num_key_value_heads=2),
    "tied": dict(tie_word_embeddings=True),
    "clip": dict(clip_qkv=1.0),  # q/k are unit-RMS after QK-norm: about a third of q/k/v is clipped
    "pad": dict(),  # base, with pad tokens among the ids: the pad row of embed_tokens gets no gradient
}
FIRST_SEED = {"base": 0, "renorm": 1000, "gqa": 2000, "tied": 3000, "clip": 4000, "pad": 5000}
WITH_PAD_IDS = {"pad"}


# ---- setup


def check_versions(strict):
    have = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
            "safetensors": safetensors.__version__, "numpy": np.__version__}
    bad = {k: (have[k], v) for k, v in PINNED.items() if have[k] != v}
    if bad:
        msg = ", ".join(f"{k} {h} (pinned {p})" for k, (h, p) in bad.items())
        if strict:
            sys.exit(f"make_golden.py: version mismatch: {msg}. HINT: pip install the pinned versions, "
                     "or pass --any-version to write files anyway.")
        print(f"warning: version mismatch: {msg}", file=sys.stderr)


def deterministic():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)


def build(variant, seed):
    cfg = OlmoeConfig(**{**COMMON, **VARIANTS[variant]})
    torch.manual_seed(seed)
    # Plain eager code paths: eager attention, eager (loop over experts) MoE.
    model = OlmoeForCausalLM(cfg)
    model.set_attn_implementation("eager")
    model.set_experts_implementation("eager")
    model = model.float().eval()  # dropout is 0 anyway; eval() only fixes attention_dropout
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.copy_(1.0 + NORM_WEIGHT_JITTER * torch.randn(p.shape, generator=g))
    return cfg, model


def make_ids(vocab, pad, seed, with_pad):
    # nn.Embedding(padding_idx=pad_token_id) zeroes that row's gradient in HF. Most variants
    # keep the pad id out of the inputs; the "pad" variant puts it at every 4th position.
    g = torch.Generator().manual_seed(seed + 2)
    ids = torch.randint(0, vocab - 1, (B, T), generator=g)
    ids[ids >= pad] += 1
    assert not (ids == pad).any()
    if with_pad:
        ids[:, 1::4] = pad
    return ids


# ---- hub names <-> transformers 5's fused experts


def hub_named(named):
    """{name: tensor} in transformers-5 memory layout -> hub per-expert layout.

    mlp.experts.gate_up_proj [E, 2I, d] -> experts.{e}.gate_proj.weight = [e, :I], up_proj = [e, I:]
    mlp.experts.down_proj    [E, d, I]  -> experts.{e}.down_proj.weight = [e]
    (OlmoeExperts.forward: `gate, up = linear(x, gate_up_proj[e]).chunk(2, dim=-1)`.)
    """
    out = {}
    for name, t in named.items():
        if name.endswith("mlp.experts.gate_up_proj"):
            stem = name[: -len("gate_up_proj")]
            inter = t.shape[1] // 2
            for e in range(t.shape[0]):
                out[f"{stem}{e}.gate_proj.weight"] = t[e, :inter]
                out[f"{stem}{e}.up_proj.weight"] = t[e, inter:]
        elif name.endswith("mlp.experts.down_proj"):
            stem = name[: -len("down_proj")]
            for e in range(t.shape[0]):
                out[f"{stem}{e}.down_proj.weight"] = t[e]
        else:
            out[name] = t
    return out


# ---- losses


def z_loss_of(router_logits):
    """Mean over all layers' tokens of logsumexp(router logits)^2 (unscaled, float64)."""
    rows = torch.cat([r.double() for r in router_logits], 0)
    return (torch.logsumexp(rows, -1) ** 2).mean()


def aux_loss_mixtral_form(router_logits, num_experts, top_k):
    """HF's load_balancing_loss_func in its older one_hot form, float64, as a cross-check."""
    g = torch.cat([r.double() for r in router_logits], 0)  # (L*N, E)
    p = torch.softmax(g, -1)
    sel = torch.topk(p, top_k, -1).indices
    mask = F.one_hot(sel, num_experts).double()  # (L*N, K, E)
    tokens_per_expert = mask.mean(0)  # (K, E)
    router_prob_per_expert = p.mean(0)  # (E,)
    return num_experts * (tokens_per_expert * router_prob_per_expert).sum()


def routing_margin(router_logits, top_k):
    """Smallest p_(k) - p_(k+1) over layers and tokens, with the f32 softmax HF uses."""
    worst = math.inf
    per_layer = []
    for r in router_logits:
        p = torch.softmax(r.float(), -1).sort(-1, descending=True).values
        gap = (p[:, top_k - 1] - p[:, top_k]).min().item()
        per_layer.append(gap)
        worst = min(worst, gap)
    return worst, per_layer


# ---- an independent float64 forward, written from SPEC.md 1.2, reading the saved files


def reference_forward(folder, ids):
    """Re-computes logits and losses in float64 from config.json + model.safetensors (hub
    names) without transformers' modules; returns (logits, ce, aux, z, grads by hub name)."""
    cfg = json.load(open(os.path.join(folder, "config.json")))
    w = {k: v.double().requires_grad_(True) for k, v in pt_load_file(os.path.join(folder, "model.safetensors")).items()}
    C, H, Hkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D, E, K, L = C // H, cfg["num_experts"], cfg["num_experts_per_tok"], cfg["num_hidden_layers"]
    eps, theta = cfg["rms_norm_eps"], cfg["rope_parameters"]["rope_theta"]
    clip = cfg["clip_qkv"]
    Bn, Tn = ids.shape
    N = Bn * Tn

    def rms(x, wt):
        return wt * (x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps))

    inv = 1.0 / theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    fr = torch.arange(Tn, dtype=torch.float64)[:, None] * inv[None]
    cos, sin = torch.cat([fr, fr], -1).cos(), torch.cat([fr, fr], -1).sin()  # (T, D)

    def rope(x):  # (B, h, T, D)
        rot = torch.cat([-x[..., D // 2:], x[..., : D // 2]], -1)
        return x * cos + rot * sin

    x = w["model.embed_tokens.weight"][ids]  # (B, T, C)
    causal = torch.full((Tn, Tn), -math.inf, dtype=torch.float64).triu(1)
    router_logits = []
    for l in range(L):
        p = f"model.layers.{l}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = rms(h @ w[p + "self_attn.q_proj.weight"].T, w[p + "self_attn.q_norm.weight"])
        k = rms(h @ w[p + "self_attn.k_proj.weight"].T, w[p + "self_attn.k_norm.weight"])
        v = h @ w[p + "self_attn.v_proj.weight"].T
        if clip is not None:
            q, k, v = q.clamp(-clip, clip), k.clamp(-clip, clip), v.clamp(-clip, clip)
        q = rope(q.view(Bn, Tn, H, D).transpose(1, 2))
        k = rope(k.view(Bn, Tn, Hkv, D).transpose(1, 2)).repeat_interleave(H // Hkv, 1)
        v = v.view(Bn, Tn, Hkv, D).transpose(1, 2).repeat_interleave(H // Hkv, 1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D) + causal, -1) @ v
        x = x + att.transpose(1, 2).reshape(Bn, Tn, C) @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"]).reshape(N, C)
        logits_r = h @ w[p + "mlp.gate.weight"].T  # (N, E)
        router_logits.append(logits_r)
        probs = torch.softmax(logits_r, -1)
        topv, topi = torch.topk(probs, K, -1)
        if cfg["norm_topk_prob"]:
            topv = topv / topv.sum(-1, keepdim=True)
        y = torch.zeros_like(h)
        for e in range(E):  # the slow twin: a loop over experts, as HF does
            tok, slot = torch.where(topi == e)
            if len(tok) == 0:
                continue
            pe = p + f"mlp.experts.{e}."
            he = h[tok]
            out = (F.silu(he @ w[pe + "gate_proj.weight"].T) * (he @ w[pe + "up_proj.weight"].T)) @ w[pe + "down_proj.weight"].T
            y = y.index_add(0, tok, out * topv[tok, slot, None])
        x = x + y.view(Bn, Tn, C)
    x = rms(x, w["model.norm.weight"])
    head = w["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else w["lm_head.weight"]
    logits = x @ head.T
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    aux = aux_loss_mixtral_form(router_logits, E, K)
    z = z_loss_of(router_logits)
    (ce + cfg["router_aux_loss_coef"] * aux).backward()
    grads = {k: (t.grad if t.grad is not None else torch.zeros_like(t)).detach() for k, t in w.items()}
    # HF's nn.Embedding(padding_idx) gives the pad row no gradient through the lookup (with
    # tied embeddings the lm_head path would still reach it; no variant combines the two).
    if (ids == cfg["pad_token_id"]).any():
        assert not cfg["tie_word_embeddings"]
        grads["model.embed_tokens.weight"][cfg["pad_token_id"]] = 0
    return logits.detach(), ce.item(), aux.item(), z.item(), grads


# ---- one variant


def run_hf(model, ids):
    """Forward + backward the way the golden files define it; returns a dict of results."""
    model.zero_grad(set_to_none=True)
    clip_stats = []
    hooks = []
    if model.config.clip_qkv is not None:
        c = model.config.clip_qkv

        # Record the pre-clamp q/k/v (after q_norm/k_norm, as HF clamps them) by hooking the norms and v_proj.
        def rec(mod, inp, out):
            a = out.detach().abs()
            clip_stats.append(((a > c).sum().item(), a.numel(), (a - c).abs().min().item()))

        for layer in model.model.layers:
            for m in (layer.self_attn.q_norm, layer.self_attn.k_norm, layer.self_attn.v_proj):
                hooks.append(m.register_forward_hook(rec))
    out = model(input_ids=ids, output_router_logits=True)
    for hk in hooks:
        hk.remove()
    cfg = model.config
    ce = model.loss_function(out.logits, ids, cfg.vocab_size)  # HF's ForCausalLMLoss: shift inside, mean
    aux = out.aux_loss
    total = ce + cfg.router_aux_loss_coef * aux
    total.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return dict(out=out, ce=ce, aux=aux, total=total, grads=grads, clip_stats=clip_stats)


def choose_seed(variant):
    for seed in range(FIRST_SEED[variant], FIRST_SEED[variant] + 1000):
        cfg, model = build(variant, seed)
        ids = make_ids(cfg.vocab_size, cfg.pad_token_id, seed, variant in WITH_PAD_IDS)
        r = run_hf(model, ids)
        margin, per_layer = routing_margin(r["out"].router_logits, cfg.num_experts_per_tok)
        # every expert of every layer gets at least one token, so no expert gradient is all zero
        used = all(torch.topk(torch.softmax(rl.float(), -1), cfg.num_experts_per_tok, -1).indices.unique().numel()
                   == cfg.num_experts for rl in r["out"].router_logits)
        ok = margin >= MIN_ROUTING_MARGIN and used
        if cfg.clip_qkv is not None:
            clipped = sum(s[0] for s in r["clip_stats"])
            total = sum(s[1] for s in r["clip_stats"])
            cmargin = min(s[2] for s in r["clip_stats"])
            ok = ok and cmargin >= MIN_CLIP_MARGIN and 0 < clipped < total
        if ok:
            return seed, cfg, model, ids, r, margin, per_layer
        print(f"  {variant}: seed {seed} rejected (routing margin {margin:.3g}, every expert used: {used})")
    sys.exit(f"make_golden.py: no seed for {variant} in 1000 tries")


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def make_variant(variant, root):
    seed, cfg, model, ids, r, margin, per_layer = choose_seed(variant)
    folder = os.path.join(root, variant)
    os.makedirs(folder, exist_ok=True)
    for f in os.listdir(folder):  # only our own files live here
        os.remove(os.path.join(folder, f))
    out = r["out"]
    V = cfg.vocab_size

    # checkpoint as transformers writes it
    model.save_pretrained(folder, safe_serialization=True)
    gen = os.path.join(folder, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)  # not needed by the Rust side
    on_disk = np_load_file(os.path.join(folder, "model.safetensors"))
    mem = hub_named({n: p.detach() for n, p in model.named_parameters()})
    if any(".mlp.experts.gate_up_proj" in k or k.endswith(".mlp.experts.down_proj") for k in on_disk):
        # transformers wrote its fused layout: rewrite the hub's per-expert layout ourselves
        np_save_file({k: v.contiguous().numpy() for k, v in mem.items()}, os.path.join(folder, "model.safetensors"),
                     metadata={"format": "pt"})
        on_disk = np_load_file(os.path.join(folder, "model.safetensors"))
        layout = "fused on disk; rewritten as per-expert hub layout by make_golden.py"
    else:
        layout = "per-expert hub layout written by save_pretrained"
    assert set(on_disk) == set(mem), (sorted(set(on_disk) ^ set(mem)))
    for k, v in mem.items():  # the fused -> per-expert mapping is exactly what transformers saves
        assert np.array_equal(on_disk[k], v.numpy()), k

    # logits, losses
    logits = out.logits.detach()
    np.save(os.path.join(folder, "ids.npy"), ids.numpy().astype(np.int64))
    np.save(os.path.join(folder, "logits.npy"), logits.numpy().astype(np.float32))
    z = z_loss_of(out.router_logits)
    losses = {
        "loss": r["ce"].item(),
        "aux_loss": r["aux"].item(),
        "z_loss": z.item(),
        "router_aux_loss_coef": cfg.router_aux_loss_coef,
    }
    with open(os.path.join(folder, "losses.json"), "w") as f:
        json.dump(losses, f, indent=2)
        f.write("\n")

    # gradients under hub names
    grads = hub_named(r["grads"])
    assert set(grads) == set(on_disk), sorted(set(grads) ^ set(on_disk))
    for k in grads:
        assert tuple(grads[k].shape) == on_disk[k].shape, k
    np_save_file({k: v.contiguous().numpy().astype(np.float32) for k, v in grads.items()},
                 os.path.join(folder, "grads.safetensors"))

    # ---- self-checks
    checks = {}
    with torch.no_grad():
        hf = model(input_ids=ids, labels=ids, output_router_logits=True)
    # outputs.loss = CE + coef * aux when labels are given
    checks["hf_loss_minus_total"] = abs(hf.loss.item() - r["total"].item())
    assert checks["hf_loss_minus_total"] < 1e-6, checks
    manual_ce = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1)).item()
    checks["ce_vs_manual"] = abs(manual_ce - losses["loss"])
    checks["aux_vs_one_hot_form"] = abs(aux_loss_mixtral_form(out.router_logits, cfg.num_experts,
                                                              cfg.num_experts_per_tok).item() - losses["aux_loss"])
    assert checks["ce_vs_manual"] < 1e-6 and checks["aux_vs_one_hot_form"] < 1e-6, checks
    # round trip: transformers loads the folder back and gives the same logits
    back, info = OlmoeForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager",
                                                  experts_implementation="eager", output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        checks["roundtrip_max_abs_logits"] = (back(input_ids=ids).logits - logits).abs().max().item()
    assert checks["roundtrip_max_abs_logits"] == 0.0, checks
    # independent float64 forward/backward from the saved files (SPEC.md 1.2)
    ref_logits, ref_ce, ref_aux, ref_z, ref_grads = reference_forward(folder, ids)
    checks["f64_max_abs_logits"] = (ref_logits - logits.double()).abs().max().item()
    checks["f64_abs_loss"] = abs(ref_ce - losses["loss"])
    checks["f64_abs_aux"] = abs(ref_aux - losses["aux_loss"])
    checks["f64_abs_z"] = abs(ref_z - losses["z_loss"])
    worst_name, worst = max(((k, rel(grads[k], ref_grads[k])) for k in grads if ref_grads[k].norm() > 0),
                            key=lambda kv: kv[1])
    checks["f64_worst_grad_rel"] = worst
    checks["f64_worst_grad_name"] = worst_name
    checks["zero_grad_tensors"] = sorted(k for k in grads if grads[k].abs().max() == 0)
    assert checks["f64_max_abs_logits"] < 1e-5 and worst < 1e-4, checks
    assert max(checks["f64_abs_loss"], checks["f64_abs_aux"], checks["f64_abs_z"]) < 1e-5, checks

    meta = {
        "variant": variant,
        "seed": seed,
        "ids_seed": seed + 2,
        "norm_weight_seed": seed + 1,
        "min_routing_margin": margin,
        "routing_margin_per_layer": per_layer,
        "layout": layout,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "safetensors": safetensors.__version__, "numpy": np.__version__},
        "checks": checks,
    }
    if cfg.clip_qkv is not None:
        cs = r["clip_stats"]
        meta["clip_qkv"] = {
            "clip": cfg.clip_qkv,
            "clipped_values": sum(s[0] for s in cs),
            "total_values": sum(s[1] for s in cs),
            "per_tensor_clipped": [f"{s[0]}/{s[1]}" for s in cs],  # layer-major: q, k, v
            "min_distance_to_clip": min(s[2] for s in cs),
        }
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"{variant}: seed {seed}, routing margin {margin:.4g}, loss {losses['loss']:.6f}, "
          f"aux {losses['aux_loss']:.6f}, z {losses['z_loss']:.6f}; f64 check: logits {checks['f64_max_abs_logits']:.2e}, "
          f"worst grad rel {worst:.2e} ({worst_name})"
          + (f"; clipped {meta['clip_qkv']['clipped_values']}/{meta['clip_qkv']['total_values']}" if "clip_qkv" in meta else ""))


# ---- round trip of a Rust-saved checkpoint


def roundtrip(folder, golden, root):
    ids = torch.from_numpy(np.load(os.path.join(root, golden, "ids.npy")))
    want = torch.from_numpy(np.load(os.path.join(root, golden, "logits.npy")))
    model, info = OlmoeForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager",
                                                   experts_implementation="eager", output_loading_info=True)
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    with torch.no_grad():
        got = model(input_ids=ids).logits
    diff = (got - want).abs().max().item()
    print(f"roundtrip {folder} vs {golden}: max |logits diff| = {diff:.3e}; loading problems: {bad or 'none'}")
    return 0 if (not bad and diff <= 1e-4) else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", default=HERE, help="root folder (default: tests/golden)")
    ap.add_argument("--any-version", action="store_true", help="write files even if versions differ from the pins")
    ap.add_argument("--roundtrip", metavar="DIR", help="load DIR in transformers and compare with --golden's logits")
    ap.add_argument("--golden", default="base", choices=list(VARIANTS))
    a = ap.parse_args()
    deterministic()
    if a.roundtrip:
        check_versions(strict=False)
        sys.exit(roundtrip(a.roundtrip, a.golden, a.out))
    check_versions(strict=not a.any_version)
    for v in a.variants:
        make_variant(v, a.out)


if __name__ == "__main__":
    main()
