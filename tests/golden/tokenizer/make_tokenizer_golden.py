#!/usr/bin/env python3
"""Golden ids for the Rust byte-level BPE tokenizer (src/tokenizer/), made by Hugging Face's
`tokenizers` library with the real OLMo / OLMoE tokenizer file.

Pinned versions (the outputs were made with exactly these; others are refused unless given
--any-version):
    tokenizers  0.23.3   (PyPI wheel; its regex engine is Oniguruma, its NFC the
                          unicode-normalization-alignments crate)
    python      3.11.7

Inputs (read, never modified):
    tests/golden/tokenizer/olmoe-gpt-neox-olmo-dolma-v1_5.json   the OLMo tokenizer (copied here
        byte for byte from ../shared/tokenizers/ by this script when missing; see SOURCE there)
    data/shakespeare/*.txt                                        the bundled corpus

Outputs (all in tests/golden/tokenizer/):
    olmo_ids.json      [{"text", "ids"}]: hand-picked cases, then seeded random strings built to
                       stress the split pattern and the added tokens (runs of spaces, tabs,
                       newlines, apostrophes, the special tokens), encoded with the OLMo file.
    corpus_ids.json    {"files", "bytes", "ids"}: the first `bytes` bytes of the sorted corpus
                       files concatenated (the Rust test rebuilds the text from data/).
    pretokenize.json   [{"text", "pieces"}]: the ByteLevel pre-tokenizer's split (GPT-2 regex,
                       run by Oniguruma) of raw, un-normalized text, pieces as plain text.
    variant_ids.json   {"add_prefix_space", "added_tokens", "cases"}: the OLMo file with the
                       ByteLevel pre-tokenizer's add_prefix_space set and extra added tokens
                       (lstrip/rstrip, single_word, normalized with a non-NFC content,
                       overlapping contents); the Rust test applies the same patch.

Every text here uses characters of Unicode <= 14.0 whose NFC the library and Python's
unicodedata agree on (the library's NFC data is older: about 50 marks added since Unicode 11
have combining class 0 there; Oniguruma's \\p{L} is Unicode 16, Python 3.11's is 14.0).

Run from the repository root (two runs write byte-identical files):
    /tmp/gvenv/bin/python tests/golden/tokenizer/make_tokenizer_golden.py
"""

import argparse
import json
import os
import random
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
TOKENIZER_NAME = "olmoe-gpt-neox-olmo-dolma-v1_5.json"
TOKENIZER = os.path.join(HERE, TOKENIZER_NAME)
SHARED_TOKENIZER = os.path.join(ROOT, "..", "shared", "tokenizers", TOKENIZER_NAME)
CORPUS = os.path.join(ROOT, "data", "shakespeare")
CORPUS_BYTES = 200_000
SEED = 1234

SHAKESPEARE = """HAMLET. To be, or not to be, that is the question:
Whether 'tis nobler in the mind to suffer
The slings and arrows of outrageous fortune,
Or to take arms against a sea of troubles,
And by opposing end them? To die: to sleep;
No more; and by a sleep to say we end
The heart-ache and the thousand natural shocks
That flesh is heir to, 'tis a consummation
Devoutly to be wish'd. To die, to sleep;
To sleep: perchance to dream: ay, there's the rub;
For in that sleep of death what dreams may come
When we have shuffled off this mortal coil,
Must give us pause."""

CASES = [
    # ASCII prose, contractions (the pattern's are lowercase only)
    "Hello world",
    "Hello my friend, how is your day going?",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure it's fine; they're here, we've won, I'll go, he'd say, don't.",
    "DON'T SHOUT. I'M HERE. IT'S 'S 'T 'RE 'VE 'M 'LL 'D",
    "'s't're've'm'll'd 'sss ''s '",
    "rock 'n' roll, o'clock, y'all, ma'am",
    # digits and numbers
    "0 1 12 123 1234 12345 123456 3.14159 -2.5e10 1,000,000 0x1F",
    "Call 555-0123 before 10:30pm on 2024-01-15.",
    "\u00bd \u00b2 \u2167 \u0663\u0664\u0665 \u0969\u096a",
    # punctuation runs
    "!!! ??? ... --- *** ### @@@ $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}}",
    "a+b=c; x->y; p!=q && r||s; ~/.config/*.json",
    "\"quoted\" 'single' `back` \u00abguillemets\u00bb \u201ccurly\u201d",
    # code with runs of spaces, tabs and newlines
    "def f(x):\n    return x * 2\n\n\nclass A:\n\tpass\n",
    "if (a) {\n        b();\n    }\n\t\tc;\n",
    "x    =",
    "x =",
    "x  =  y   =   z",
    "a\tb\t\tc\t\t\td",
    "line1\nline2\n\nline3\n\n\n",
    "windows\r\nline\r\n\r\nend",
    "  leading and trailing  ",
    " ",
    "  ",
    "\n",
    "\t",
    " " * 24,
    " " * 25,
    " " * 30 + "x",
    "a" + " " * 24 + "b",
    "a" + " " * 50 + "b",
    "a \n b \n\n c",
    "end with space ",
    "end with newline\n",
    "   \n   \n",
    # Unicode whitespace (\s is White_Space; 0x1C-0x1F are not, 0x85 is)
    "no\u00a0break\u00a0space",
    "em\u2003space and ideographic\u3000space",
    "\u2028line sep\u2029para sep\u0085nel",
    "mixed \u00a0 \u2003\u3000 \t spaces",
    "\u001cfile\u001dgroup\u001erecord\u001funit",
    "zero\u200bwidth\u200cnon\u200djoiner\ufeffbom",
    # accented Latin, Greek, Cyrillic
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m \u00fcber Stra\u00dfe",
    "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u03ba\u03cc\u03c3\u03bc\u03b5",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",
    # combining marks that NFC composes, and ones it only reorders
    "e\u0301",
    "cafe\u0301 and cafe\u0301",
    "A\u030a \u212b \u2126",
    "a\u0316\u0301 a\u0301\u0316 o\u0308\u0304",
    "\u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af",
    "\u1100\u1161 \uac00\u11a8",
    # CJK, Arabic, Devanagari, Thai
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u6771\u4eac\u90fd",
    "\u3053\u3093\u306b\u3061\u306f\u3001\u30ab\u30bf\u30ab\u30ca",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e \u0915\u093f",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a",
    # emoji, ZWJ sequences, flags, other 4-byte characters
    "\U0001f600 \U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f1fa\U0001f1f8",
    "smile\U0001f600\U0001f600\U0001f600end",
    "\U0001d54f\U0001d552\U0001d565 \U00020000\U0002a6d6 \U0001f9ea",
    # added tokens in context
    "<|endoftext|>",
    "Hello<|endoftext|>World",
    "first doc.<|endoftext|>second doc.",
    "<|endoftext|><|endoftext|> <|padding|>",
    "<|endoftext|>\n\n",
    "contact |||IP_ADDRESS||| or |||EMAIL_ADDRESS|||, |||PHONE_NUMBER|||",
    "|||IP_ADDRESS|||||||IP_ADDRESS|||",
    "<|endoftext",
    "<|endoftext|",
    "e\u0301<|endoftext|>\u0301",
    "a  <|endoftext|>  b",
    # the empty string, and a Shakespeare passage
    "",
    SHAKESPEARE,
]


def random_strings(rng):
    """Strings from small pools that hit every branch of the pattern and the added tokens."""
    pool = (
        list("aAzZ09'stredvml ") + [" "] * 6 + ["\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2003"]
        + list(".,!?-_()\"") + ["\u00e9", "e\u0301", "\u4e2d", "\U0001f600", "\u0663", "\u00bd"]
        + ["<|endoftext|>", "<|padding|>", "|||IP_ADDRESS|||", "<|endo", "|||"]
        + ["DON'T", "it's", "we'll"]
    )
    out = []
    for _ in range(300):
        n = rng.randrange(0, 30)
        out.append("".join(rng.choice(pool) for _ in range(n)))
    return out


def split_strings(rng):
    """Raw strings for the pre-tokenizer alone: every class of character, no normalization."""
    pool = (
        list("ab'stredvmlSTRE1 ") + [" "] * 5 + ["\t", "\n", "\r", "\x0b", "\x0c", "\x85", "\u00a0"]
        + ["\u1680", "\u2000", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\x1c"]
        + ["\u200b", "\ufeff", "\u00e9", "\u0301", "\u4e2d", "\U0001f600", "\u0663", "\u2167"]
        + list(".,!?-_\"#") + ["\u00bd", "\u00b2"]
    )
    out = []
    for _ in range(400):
        n = rng.randrange(0, 25)
        out.append("".join(rng.choice(pool) for _ in range(n)))
    return out


VARIANT_ADDED = [
    # lstrip + rstrip, special, matched in the raw text
    {"content": "<mask>", "single_word": False, "lstrip": True, "rstrip": True,
     "normalized": False, "special": True},
    # overlaps <mask>: the longest match at the leftmost position wins
    {"content": "<mask>x", "single_word": False, "lstrip": False, "rstrip": False,
     "normalized": False, "special": True},
    # single_word, matched in the normalized text
    {"content": "qzx", "single_word": True, "lstrip": False, "rstrip": False,
     "normalized": True, "special": False},
    # normalized with a non-NFC content: matched as its NFC form "café"
    {"content": "cafe\u0301", "single_word": False, "lstrip": False, "rstrip": False,
     "normalized": True, "special": False},
    # not normalized with a non-NFC content: matched in the raw text only
    {"content": "e\u0301!", "single_word": False, "lstrip": False, "rstrip": False,
     "normalized": False, "special": False},
    # rstrip only, normalized
    {"content": "[R]", "single_word": False, "lstrip": False, "rstrip": True,
     "normalized": True, "special": False},
]

VARIANT_CASES = [
    "", " ", "Hello world", " Hello world", "hello<mask>world", "hello <mask> world",
    "hello  <mask>\t\tworld", "<mask>", " <mask> ", "<mask>x", "<mask> x", "a<mask>xb",
    "Aqzx qzx qzx. (qzx) qzx_ x-qzx-y qzx1 \u00e9qzx", "qzx", "the caf\u00e9 cafe\u0301 cafe",
    "e\u0301! \u00e9! e\u0301 !", "x [R]   y [R]\n\nz", "<|endoftext|>Hello", "Hello<|endoftext|>",
    "a<|endoftext|>b<mask>c", "x    =", "  two", "\nnewline", "<mask>    <mask>",
]


def load_tokenizer(path):
    from tokenizers import Tokenizer
    return Tokenizer.from_file(path)


def encode(tok, text):
    return tok.encode(text, add_special_tokens=False).ids


def pieces(text):
    from tokenizers import pre_tokenizers
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    unmap = {c: b for b, c in enumerate(bytes_to_unicode())}
    return [bytes(unmap[c] for c in p).decode("utf-8") for p, _ in bl.pre_tokenize_str(text)]


def bytes_to_unicode():
    """GPT-2's table: char for each byte 0..255."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return [table[b] for b in range(256)]


def corpus_prefix():
    files = sorted(f for f in os.listdir(CORPUS) if f.endswith(".txt"))
    data = b"".join(open(os.path.join(CORPUS, f), "rb").read() for f in files)
    cut = CORPUS_BYTES
    while cut > 0 and (data[cut] & 0xC0) == 0x80:  # back to a character boundary
        cut -= 1
    return files, cut, data[:cut].decode("utf-8")


def write_json(name, value):
    path = os.path.join(HERE, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=True, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--any-version", action="store_true")
    args = parser.parse_args()
    import tokenizers
    if tokenizers.__version__ != "0.23.3" and not args.any_version:
        sys.exit(f"tokenizers {tokenizers.__version__} found, 0.23.3 pinned (--any-version to go on)")
    if not os.path.exists(TOKENIZER):
        shutil.copyfile(SHARED_TOKENIZER, TOKENIZER)
        print(f"copied {SHARED_TOKENIZER} -> {os.path.relpath(TOKENIZER, ROOT)}")
    tok = load_tokenizer(TOKENIZER)
    assert tok.get_vocab_size(with_added_tokens=True) == 50280

    rng = random.Random(SEED)
    texts = CASES + random_strings(rng)
    cases = [{"text": t, "ids": encode(tok, t)} for t in texts]
    write_json("olmo_ids.json", cases)

    files, nbytes, text = corpus_prefix()
    write_json("corpus_ids.json", {"files": files, "bytes": nbytes, "ids": encode(tok, text)})

    split_texts = CASES + split_strings(rng)
    write_json("pretokenize.json", [{"text": t, "pieces": pieces(t)} for t in split_texts])

    # The variant: add_prefix_space and extra added tokens, ids after the vocabulary.
    spec = json.load(open(TOKENIZER, encoding="utf-8"))
    spec["pre_tokenizer"]["add_prefix_space"] = True
    added = [dict(id=50280 + i, **t) for i, t in enumerate(VARIANT_ADDED)]
    spec["added_tokens"] += added
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "variant.json")
        json.dump(spec, open(path, "w", encoding="utf-8"))
        vtok = load_tokenizer(path)
    for t in added:
        assert vtok.token_to_id(t["content"]) == t["id"], t
    write_json("variant_ids.json", {
        "add_prefix_space": True,
        "added_tokens": added,
        "cases": [{"text": t, "ids": encode(vtok, t)} for t in VARIANT_CASES],
    })


if __name__ == "__main__":
    main()
