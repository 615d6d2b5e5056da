#!/usr/bin/env python3
"""Dev-time check of `moe tokenizer-train` against the Python `tokenizers` library.

Not part of `cargo test` (it needs Python and the library); run it after changing training:

    cargo build --release
    /tmp/gvenv/bin/python tests/golden/tokenizer/check_trained.py [--vocab-size 4096] [--held-out hamlet.txt]

Made with tokenizers 0.23.3 (python 3.11). What it does, on the Shakespeare corpus in
data/shakespeare with one play held out:
1. trains our tokenizer (`moe tokenizer-train`, each file one document) and the library's
   (BpeTrainer with the same special tokens, the ByteLevel alphabet, NFC, ByteLevel
   pre-tokenizer, `train_from_iterator` on the same documents);
2. compares the merges (how many of the first N agree, in order) and the vocabularies;
3. loads OUR tokenizer.json in the library and encodes the held-out play (and a few
   non-ASCII strings) with both: the ids must be identical;
4. encodes the same with the LIBRARY's trained file in both (`moe tokenize` on its file).
Exit status 1 on any difference.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tokenizers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

REPO = Path(__file__).resolve().parents[3]
MOE = REPO / "target" / "release" / "moe"
SPECIAL_TOKENS = ["<|endoftext|>", "<|padding|>"]
EXTRA = [
    "café naïve — “quoted” façade, e\u0301 (NFC), Ελληνικά, русский, 日本語, 🙂👍🏽 👨‍👩‍👧",
    "  x    =  1\t\ttabs\n\n\n  spaces   \r\n",
    "<|endoftext|>Enter HAMLET<|padding|>",
    "",
]


def library_train(docs, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer)
    return tok


def merges_of(path):
    merges = json.loads(Path(path).read_text(encoding="utf-8"))["model"]["merges"]
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in merges]


def moe_ids(tokenizer_path, text, tmp):
    f = Path(tmp) / "text.txt"
    f.write_text(text, encoding="utf-8")
    out = subprocess.run(
        [str(MOE), "tokenize", "--tokenizer", str(tokenizer_path), "--file", str(f)],
        check=True, capture_output=True, text=True,
    )
    return [int(i) for i in out.stdout.split()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--held-out", default="hamlet.txt")
    ap.add_argument("--corpus", default=str(REPO / "data" / "shakespeare"))
    args = ap.parse_args()
    if not MOE.exists():
        sys.exit(f"{MOE} is missing: run `cargo build --release` first")
    files = sorted(Path(args.corpus).rglob("*.txt"))
    held_out = [f for f in files if f.name == args.held_out]
    train_files = [f for f in files if f.name != args.held_out]
    if len(held_out) != 1:
        sys.exit(f"held-out play {args.held_out} not in {args.corpus}")
    docs = [f.read_text(encoding="utf-8") for f in train_files]
    print(f"tokenizers {tokenizers.__version__}; {len(docs)} documents, "
          f"{sum(map(len, docs)) / 1e6:.2f} MB; held out: {args.held_out}; vocab {args.vocab_size}")
    failed = False

    with tempfile.TemporaryDirectory() as tmp:
        ours_path = Path(tmp) / "ours.json"
        t = time.perf_counter()
        subprocess.run(
            [str(MOE), "tokenizer-train", "--input", ",".join(map(str, train_files)),
             "--vocab-size", str(args.vocab_size), "--out", str(ours_path)],
            check=True, capture_output=True, text=True,
        )
        ours_s = time.perf_counter() - t
        t = time.perf_counter()
        lib = library_train(docs, args.vocab_size)
        lib_s = time.perf_counter() - t
        lib_path = Path(tmp) / "library.json"
        lib.save(str(lib_path))
        print(f"training: ours {ours_s:.2f} s (the whole command), library {lib_s:.2f} s")

        ours_merges, lib_merges = merges_of(ours_path), merges_of(lib_path)
        prefix = next((i for i, (a, b) in enumerate(zip(ours_merges, lib_merges)) if a != b),
                      min(len(ours_merges), len(lib_merges)))
        same_pos = sum(a == b for a, b in zip(ours_merges, lib_merges))
        print(f"merges: ours {len(ours_merges)}, library {len(lib_merges)}; the first {prefix} agree "
              f"in order; {same_pos} agree position by position")
        if ours_merges != lib_merges:
            failed = True
            print(f"  first difference at merge {prefix}: ours {ours_merges[prefix:prefix + 1]}, "
                  f"library {lib_merges[prefix:prefix + 1]}")
        ours_vocab = json.loads(ours_path.read_text(encoding="utf-8"))["model"]["vocab"]
        lib_vocab = json.loads(lib_path.read_text(encoding="utf-8"))["model"]["vocab"]
        print(f"vocab: {'identical' if ours_vocab == lib_vocab else 'DIFFERENT'} ({len(ours_vocab)} entries)")
        failed |= ours_vocab != lib_vocab

        ours_in_lib = Tokenizer.from_file(str(ours_path))
        texts = [held_out[0].read_text(encoding="utf-8")] + EXTRA
        for name, path, in_lib in [("ours", ours_path, ours_in_lib), ("library's", lib_path, lib)]:
            same = 0
            n_ids = 0
            for i, text in enumerate(texts):
                want = in_lib.encode(text).ids
                got = moe_ids(path, text, tmp)
                n_ids += len(want)
                if got == want:
                    same += 1
                else:
                    failed = True
                    k = next((j for j, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                    print(f"  {name} tokenizer, text {i}: ids differ at {k}: moe {got[k:k + 5]}, "
                          f"library {want[k:k + 5]}")
            print(f"{name} tokenizer.json in both: {same}/{len(texts)} texts identical "
                  f"({n_ids} library ids; held-out play: {len(texts[0]) / 1e3:.0f} kB)")
        roundtrip = ours_in_lib.decode(ours_in_lib.encode(texts[0]).ids) == texts[0]
        print(f"library decode(encode(held-out)) with our file: {'exact' if roundtrip else 'DIFFERENT'}")
        failed |= not roundtrip

    print("FAILED" if failed else "ok")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
