#!/usr/bin/env python3
"""Golden cases for tests/unicode.rs: \\p{L} / \\p{N} classes and NFC, from Python's unicodedata.

Source of truth: Python 3.11.7's `unicodedata`, unidata_version 14.0.0 (the version
make_unicode_tables.py pins; refused otherwise unless --any-version). Seed 20240604; two runs
write byte-identical files. Nothing is downloaded: Unicode's NormalizationTest.txt is not
available offline here (no copy on this machine, none in a pip package we use), so the
NFC cases are generated instead, aimed at every table entry and every rule.

unicode_classes.json  {"unicode", "cases": [[code point, general category], ...]}
    the code points either side of both ends of every \\p{L} and \\p{N} range, 600 random
    code points, and hand-picked tricky ones (U+00AA, U+00B2, U+2160, U+0345, U+3007, ...).
    Surrogates are left out (not Rust chars).
nfc_cases.json        {"unicode", "cases": [[input, unicodedata.normalize('NFC', input)], ...]}
    1. each code point with a canonical decomposition, alone (singletons, exclusions and
       non-starter decompositions decompose; the rest must survive) and as its NFD form
       (must recompose, or not, exactly as Python does);
    2. each code point with a non-zero combining class, scrambled among marks of the next lower,
       the same and the next higher class (NFC sees a class only through its order among the
       others, so this pins each one), and among marks that compose with "a";
    3. Hangul: the first and last syllables, the jamo edges (U+11A7 and U+11C3 are not
       trailing consonants, U+1175/U+1176), 300 random syllables as L V (T) jamo, mixed with
       precomposed LV syllables followed by T jamo;
    4. 3000 random strings of 1 to 10 chars from a pool heavy in combining marks, precomposed
       letters, Hangul, singletons (U+212B, U+2126), exclusions (U+0958), non-starter
       decompositions (U+0344), starters that compose as a second (U+0DCF, U+0CD5, U+102E).

Run from the repository root:
    python3 tests/golden/tokenizer/make_nfc_cases.py
"""

import argparse
import json
import os
import random
import sys
import unicodedata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_unicode_tables as tables  # noqa: E402

SEED = 20240604
DIR = "tests/golden/tokenizer"
MAX_CP = 0x110000


def nfc(s):
    return unicodedata.normalize("NFC", s)


def class_cases(rng, t):
    cps = set()
    for lo, hi in t["letter"] + t["number"]:
        cps |= {lo - 1, lo, hi, hi + 1}
    cps |= {rng.randrange(0x80, 0x30000) for _ in range(400)}
    cps |= {rng.randrange(0, MAX_CP) for _ in range(200)}
    tricky = [
        0x5F, 0x30, 0x39, 0x41, 0x7A, 0xAA, 0xB2, 0xB5, 0xBA, 0xBC, 0xD7, 0xF7, 0x2C6, 0x300, 0x345,
        0x661, 0x16EE, 0x2160, 0x2182, 0x2460, 0x3007, 0x3021, 0x3038, 0x4E00, 0x9FFF, 0xAC00, 0xD7A3,
        0xFF10, 0xFF21, 0x10140, 0x1D7CE, 0x1F600, 0x1F1E6, 0x20000, 0x2A6DF, 0x323AF, 0x10FFFF, 0xE000,
    ]
    cps |= set(tricky)
    cps = sorted(cp for cp in cps if 0 <= cp < MAX_CP and not tables.is_surrogate(cp))
    return [[cp, unicodedata.category(chr(cp))] for cp in cps]


def build_pool(rng, t):
    decomposable = [cp for cp, _ in t["decomposition"]]
    marks = [cp for lo, hi, _ in t["combining"] for cp in range(lo, hi + 1)]
    common_marks = [0x300, 0x301, 0x302, 0x303, 0x304, 0x306, 0x307, 0x308, 0x30A, 0x30B, 0x30C, 0x31B,
                    0x323, 0x324, 0x325, 0x327, 0x328, 0x32D, 0x330, 0x331, 0x334, 0x338, 0x342, 0x345,
                    0x5B4, 0x5BC, 0x5C1, 0x5C2, 0x653, 0x654, 0x655, 0x93C, 0x94D, 0x9BC, 0x3099, 0x309A,
                    0x1DCE, 0x302A, 0x302E, 0x035C, 0x0315, 0x0F71, 0x0F72, 0x0F74, 0x0F80, 0x1D165,
                    0x1D16E, 0x20D2, 0x0340, 0x0341, 0x0343]
    bases = [ord(c) for c in "AEIOUaeiouCcNnSsZzGgKkRrYyWwHhLl<=>"] + [
        0x391, 0x3B1, 0x3B7, 0x3C9, 0x3A9, 0x3BF, 0x3C5, 0x3B9, 0x410, 0x418, 0x435, 0x438, 0x456,
        0x5D0, 0x5E9, 0x627, 0x648, 0x64A, 0x928, 0x915, 0x995, 0x9C7, 0xB47, 0xBC6, 0xBC7, 0xC46,
        0xCBF, 0xCC6, 0xD46, 0xD47, 0xDD9, 0xDDC, 0x1025, 0x1B05, 0x1B3A, 0x304B, 0x306F, 0x30A6,
        0x30CF, 0x11099, 0x11131, 0x11347, 0x114B9, 0x115B8, 0x11935, 0x2190, 0x2203, 0x2208,
        0x1F600, 0x4E00, 0x1D157, 0x1D1B9]
    seconds = [0x9BE, 0x9D7, 0xB3E, 0xB56, 0xB57, 0xBBE, 0xBD7, 0xC56, 0xCC2, 0xCD5, 0xCD6, 0xD3E,
               0xD57, 0xDCA, 0xDCF, 0xDDF, 0x102E, 0x1B35, 0x110BA, 0x11127, 0x1133E, 0x11357,
               0x114B0, 0x114BA, 0x114BD, 0x115AF, 0x11930]
    precomposed = [0xC0, 0xC5, 0xC7, 0xC9, 0xD1, 0xE0, 0xE5, 0xE7, 0xF1, 0x1D8, 0x1E08, 0x1E69, 0x1EAB,
                   0x1EA0, 0x1EDA, 0x3AC, 0x1F00, 0x1FF7, 0x1FB3, 0x419, 0x439, 0x451, 0x304C, 0x30D1,
                   0x0DDA, 0x0DDD, 0x0CCB, 0x0BCA, 0x1026, 0x226E, 0x2260, 0x1E9B, 0x0385, 0x1FEE]
    specials = [0x212B, 0x2126, 0x212A, 0x0340, 0x0341, 0x0343, 0x0344, 0x0374, 0x037E, 0x0387,
                0x0958, 0x0959, 0x095F, 0x09DC, 0x09DF, 0x0A33, 0x0A5E, 0x0B5C, 0x0F43, 0x0F73,
                0x0F75, 0x0F81, 0xFB1D, 0xFB1F, 0xFB2A, 0xFB4E, 0x2ADC, 0x1D15E, 0x1D164, 0x1D1BB,
                0x2000, 0x2001, 0xF900, 0xFA10, 0x2F800, 0x2FA1D, 0x1E9E, 0x3131, 0xFB01, 0x1D400]
    hangul_l = list(range(0x1100, 0x1113)) + [0x1113, 0x115F]
    hangul_v = list(range(0x1161, 0x1176)) + [0x1176, 0x11A7]
    hangul_t = list(range(0x11A8, 0x11C3)) + [0x11A7, 0x11C3]
    groups = [
        (30, lambda: rng.choice(common_marks)),
        (10, lambda: rng.choice(marks)),
        (15, lambda: rng.choice(bases)),
        (8, lambda: rng.choice(precomposed)),
        (8, lambda: rng.choice(decomposable)),
        (7, lambda: rng.choice(specials)),
        (5, lambda: rng.choice(seconds)),
        (3, lambda: rng.choice(hangul_l)),
        (3, lambda: rng.choice(hangul_v)),
        (3, lambda: rng.choice(hangul_t)),
        (4, lambda: rng.randrange(0xAC00, 0xD7A4)),
        (4, lambda: rng.choice(" ax.")),
    ]
    weights = [w for w, _ in groups]

    def draw():
        cp = rng.choices(groups, weights)[0][1]()
        return cp if isinstance(cp, str) else chr(cp)

    return draw


def nfc_cases(rng, t):
    inputs = []
    # 1. every canonical decomposition, composed and decomposed
    for cp, _ in t["decomposition"]:
        inputs.append(chr(cp))
        inputs.append(unicodedata.normalize("NFD", chr(cp)))
    # 2. every non-zero combining class: each mark scrambled among marks of the next lower, the
    #    same and the next higher class (only the order of classes matters to NFC, so this pins
    #    each class as far as NFC can see it), and among marks that compose with "a"
    marks = [0x323, 0x301, 0x31B, 0x327]  # 220, 230, 216, 202
    by_class = {}
    for lo, hi, k in t["combining"]:
        by_class.setdefault(k, []).extend(range(lo, hi + 1))
    classes = sorted(by_class)
    for lo, hi, k in t["combining"]:
        for cp in range(lo, hi + 1):
            i = classes.index(k)
            near = [by_class[classes[j]][0] for j in (i - 1, i + 1) if 0 <= j < len(classes)]
            near += [x for x in by_class[k][:2] if x != cp][:1]
            for _ in range(2):
                seq = near + [cp]
                rng.shuffle(seq)
                inputs.append("a" + "".join(map(chr, seq)))
            around = rng.sample(marks, 3)
            inputs.append("a" + chr(around[0]) + chr(cp) + chr(around[1]) + chr(around[2]))
    # 3. Hangul
    hangul = [0xAC00, 0xAC01, 0xAC1B, 0xAC1C, 0xD788, 0xD7A3] + [rng.randrange(0xAC00, 0xD7A4) for _ in range(300)]
    for s in hangul:
        inputs.append(unicodedata.normalize("NFD", chr(s)))
        lv = 0xAC00 + (s - 0xAC00) // 28 * 28
        inputs.append(chr(lv) + chr(0x11A7 + rng.randrange(0, 30)))
    for seq in ([0x1100, 0x1161], [0x1100, 0x1161, 0x11A7], [0x1100, 0x1161, 0x11A8], [0x1100, 0x1161, 0x11C2],
                [0x1100, 0x1161, 0x11C3], [0x1112, 0x1175, 0x11C2], [0x1113, 0x1161], [0x1100, 0x1176],
                [0x1100, 0x11A7], [0x1100, 0x1161, 0x11A8, 0x11A8], [0xAC00, 0x11A8, 0x11A8],
                [0xAC01, 0x11A8], [0x1100, 0x300, 0x1161], [0x1100, 0x1161, 0x300, 0x11A8], [0x1161, 0x11A8],
                [0xAC00, 0x1161], [0x3131, 0x314F]):
        inputs.append("".join(map(chr, seq)))
    # 4. random strings from the pool
    draw = build_pool(rng, t)
    for _ in range(3000):
        inputs.append("".join(draw() for _ in range(rng.randint(1, 10))))
    seen, cases = set(), []
    for s in inputs:
        if s not in seen:
            seen.add(s)
            cases.append([s, nfc(s)])
    return cases


def check_quick(cases, t):
    """The quick check unicode.rs uses never calls a non-NFC string NFC."""
    quick = t["quick"]

    def not_yes(cp):
        return any(lo <= cp <= hi for lo, hi in quick)

    n_yes = 0
    for s, out in cases:
        last, yes = 0, True
        for c in s:
            k = unicodedata.combining(c)
            if (k != 0 and last > k) or not_yes(ord(c)):
                yes = False
                break
            last = k
        if yes:
            n_yes += 1
            assert out == s, f"quick check says {s!r} is NFC"
    return n_yes


def write(path, version, key, rows):
    body = ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(f'{{"unicode": "{version}", "python": "{sys.version.split()[0]}", "{key}": [\n{body}\n]}}\n')
    print(f"wrote {path}: {len(rows)} cases, {os.path.getsize(path)} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--any-version", action="store_true", help="allow a Unicode version other than 14.0.0")
    args = ap.parse_args()
    version = unicodedata.unidata_version
    print(f"python {sys.version.split()[0]}, unicodedata.unidata_version {version}")
    if version != tables.PINNED_UNICODE and not args.any_version:
        sys.exit(f"unicodedata is Unicode {version}, pinned {tables.PINNED_UNICODE}; pass --any-version")
    t = tables.build()
    rng = random.Random(SEED)
    classes = class_cases(rng, t)
    cases = nfc_cases(rng, t)
    n_yes = check_quick(cases, t)
    n_changed = sum(s != out for s, out in cases)
    print(f"nfc: {n_changed} of {len(cases)} inputs change; quick check passes {n_yes} (all NFC)")
    write(os.path.join(DIR, "unicode_classes.json"), version, "cases", classes)
    write(os.path.join(DIR, "nfc_cases.json"), version, "cases", cases)


if __name__ == "__main__":
    main()
