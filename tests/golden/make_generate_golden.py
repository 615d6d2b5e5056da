#!/usr/bin/env python3
"""Golden greedy generations: transformers' OlmoeForCausalLM.generate(do_sample=False,
use_cache=True) on the small random checkpoints of make_golden.py, for tests/generate.rs.

Pinned versions and determinism: as make_golden.py (torch 2.15.0, transformers 5.23.0, CPU,
float32, one thread); it imports make_golden's helpers. Outputs are byte-identical run to run.

Writes tests/golden/generate/:
    <variant>.json      for base, renorm, gqa, tied, clip (reading tests/golden/<variant>/):
                        {"prompt": [...], "generated": [...], "seed", "greedy_margin",
                         "routing_margin", "max_new_tokens"}
    bf16_sharded/       base's weights rounded to bfloat16, in three shards with
                        model.safetensors.index.json, config.json (dtype bfloat16) and
                        expected.json as above. transformers loads it with dtype=float32
                        (bf16 -> f32 is exact, and the RoPE buffers are made fresh in f32,
                        never rounded), so the reference is the f32 model of the bf16 values.

Prompt seeds walk up from FIRST_SEED until every generated step's greedy choice wins by at
least MIN_GREEDY_MARGIN (top-1 minus top-2 logit) and every router decision over the whole
sequence by at least MIN_ROUTING_MARGIN (k-th minus (k+1)-th probability): a correct f32
port cannot flip either by rounding.

Regenerate:
    python3 tests/golden/make_generate_golden.py
"""

import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden import check_versions, deterministic, routing_margin  # noqa: E402

from transformers import OlmoeForCausalLM  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "generate")
VARIANTS = ["base", "renorm", "gqa", "tied", "clip"]
PROMPT_LEN, MAX_NEW_TOKENS = 5, 24
MIN_GREEDY_MARGIN = 1e-3
MIN_ROUTING_MARGIN = 1e-3
FIRST_SEED = 100
SHARDS = 3


def load(folder):
    model = OlmoeForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager",
                                             experts_implementation="eager")
    return model.eval()


def greedy(model, prompt):
    cfg = model.config
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), do_sample=False, use_cache=True,
                             max_new_tokens=MAX_NEW_TOKENS, eos_token_id=cfg.eos_token_id,
                             pad_token_id=cfg.pad_token_id)
    return out[0, len(prompt):].tolist()


def margins(model, prompt, generated):
    """(smallest top-1 minus top-2 logit over the generated steps, smallest routing margin),
    from one uncached forward pass over the whole sequence."""
    seq = torch.tensor([prompt + generated])
    with torch.no_grad():
        out = model(input_ids=seq, output_router_logits=True)
    logits = out.logits[0, len(prompt) - 1: len(prompt) - 1 + len(generated)]
    top2 = logits.topk(2, -1)
    assert (top2.indices[:, 0] == torch.tensor(generated)).all(), "uncached argmax differs from generate()"
    greedy_margin = (top2.values[:, 0] - top2.values[:, 1]).min().item()
    routing, _ = routing_margin(out.router_logits, model.config.num_experts_per_tok)
    return greedy_margin, routing


def choose(model, label):
    vocab, pad, eos = model.config.vocab_size, model.config.pad_token_id, model.config.eos_token_id
    for seed in range(FIRST_SEED, FIRST_SEED + 1000):
        g = torch.Generator().manual_seed(seed)
        prompt = [i for i in torch.randint(0, vocab, (4 * PROMPT_LEN,), generator=g).tolist() if i not in (pad, eos)]
        prompt = prompt[:PROMPT_LEN]
        generated = greedy(model, prompt)
        greedy_margin, routing = margins(model, prompt, generated)
        if greedy_margin >= MIN_GREEDY_MARGIN and routing >= MIN_ROUTING_MARGIN:
            print(f"{label}: seed {seed}, greedy margin {greedy_margin:.3g}, routing margin {routing:.3g}, "
                  f"{len(generated)} tokens")
            return {"prompt": prompt, "generated": generated, "seed": seed, "greedy_margin": greedy_margin,
                    "routing_margin": routing, "max_new_tokens": MAX_NEW_TOKENS}
        print(f"  {label}: seed {seed} rejected (greedy margin {greedy_margin:.3g}, routing {routing:.3g})")
    sys.exit(f"make_generate_golden.py: no prompt for {label} in 1000 seeds")


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def make_bf16_sharded(base):
    """base's hub-named tensors rounded to bfloat16, in SHARDS files plus the index."""
    folder = os.path.join(OUT, "bf16_sharded")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(os.path.join(base, "model.safetensors")).items()}
    names = list(tensors)
    weight_map, total = {}, 0
    for s in range(SHARDS):
        part = names[s * len(names) // SHARDS: (s + 1) * len(names) // SHARDS]
        file = f"model-{s + 1:05d}-of-{SHARDS:05d}.safetensors"
        save_file({k: tensors[k] for k in part}, os.path.join(folder, file), metadata={"format": "pt"})
        weight_map.update({k: file for k in part})
        total += sum(tensors[k].numel() * 2 for k in part)
    write_json(os.path.join(folder, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
    config = json.load(open(os.path.join(base, "config.json")))
    config["dtype"] = "bfloat16"
    write_json(os.path.join(folder, "config.json"), config)
    model = load(folder)
    for name, p in model.named_parameters():  # loaded exactly: bf16 -> f32 is exact
        if name in tensors:
            assert torch.equal(p.detach(), tensors[name].float()), name
    write_json(os.path.join(folder, "expected.json"), choose(model, "bf16_sharded"))


def main():
    check_versions(strict="--any-version" not in sys.argv)
    deterministic()
    os.makedirs(OUT, exist_ok=True)
    for variant in VARIANTS:
        write_json(os.path.join(OUT, f"{variant}.json"), choose(load(os.path.join(HERE, variant)), variant))
    make_bf16_sharded(os.path.join(HERE, "base"))


if __name__ == "__main__":
    main()
