#!/usr/bin/env python3
"""Writes src/tokenizer/unicode_tables.rs: the \\p{L} / \\p{N} classes and the NFC data.

Source of truth: Python 3.11.7's `unicodedata`, unidata_version 14.0.0 (Unicode 14.0.0).
The script refuses another Unicode version unless given --any-version, and then names the
version it used in the generated file's header. Nothing is downloaded: CompositionExclusions.txt
and DerivedNormalizationProps.txt are not read; what they say is derived from `unicodedata`
and checked against it (see below).

Tables (all sorted, searched by binary search in src/tokenizer/unicode.rs):
    LETTER              inclusive merged ranges of General_Category Lu Ll Lt Lm Lo  (\\p{L})
    NUMBER              inclusive merged ranges of General_Category Nd Nl No        (\\p{N})
    COMBINING_CLASS     (first, last, ccc) ranges of equal non-zero Canonical_Combining_Class
    NFC_NOT_QUICK_YES   ranges of code points whose NFC_Quick_Check is No or Maybe
    DECOMPOSITION       code point -> its full (recursive) canonical decomposition; only
                        canonical mappings (no <compat> ones), Hangul syllables left out
    COMPOSITION         (first, second) -> primary composite, for every canonical
                        decomposition of length 2 that is not a full composition exclusion

Derivations, each checked over all 0x110000 code points:
    full composition exclusion  = has a canonical decomposition and NFC(c) != c.
        That is the union of singletons (U+212B ANGSTROM SIGN -> U+00C5), non-starter
        decompositions (U+0344) and CompositionExclusions.txt (U+0958): checked that
        `unicodedata.is_normalized('NFC', c)` is False exactly there, and that a length-2
        pair (a, b) of composite c composes, NFC(a + b) == c, exactly when c is not excluded.
    NFC_Quick_Check No          = the full composition exclusions.
    NFC_Quick_Check Maybe       = every `second` of COMPOSITION, plus the Hangul vowel jamo
        U+1161..U+1175 and trailing jamo U+11A8..U+11C2 (these compose algorithmically).
    DECOMPOSITION[c]            = the recursive expansion of the canonical mapping, checked to
        equal unicodedata.normalize('NFD', c).
Hangul syllables (U+AC00..U+D7A3) are decomposed and composed arithmetically in Rust
(SBase 0xAC00, LBase 0x1100, VBase 0x1161, TBase 0x11A7; 19 L, 21 V, 28 T), not tabled.

Run from the repository root:
    python3 tests/golden/tokenizer/make_unicode_tables.py
Two runs write byte-identical files.
"""

import argparse
import os
import sys
import unicodedata

PINNED_UNICODE = "14.0.0"
OUT = "src/tokenizer/unicode_tables.rs"
MAX_CP = 0x110000
S_BASE, S_COUNT = 0xAC00, 11172


def is_surrogate(cp):
    return 0xD800 <= cp <= 0xDFFF


def ranges(cps):
    """Sorted code points -> merged inclusive (first, last) ranges."""
    out = []
    for cp in cps:
        if out and out[-1][1] + 1 == cp:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return [tuple(r) for r in out]


def canonical_mapping(cp):
    """The one-level canonical decomposition of cp as a list, or None (none or <compat>)."""
    d = unicodedata.decomposition(chr(cp))
    if not d or d.startswith("<"):
        return None
    return [int(h, 16) for h in d.split()]


def full_decomposition(cp):
    m = canonical_mapping(cp)
    if m is None:
        return [cp]
    return [x for part in m for x in full_decomposition(part)]


def build():
    cat = [unicodedata.category(chr(cp)) for cp in range(MAX_CP)]
    letter = ranges(cp for cp in range(MAX_CP) if cat[cp] in ("Lu", "Ll", "Lt", "Lm", "Lo"))
    number = ranges(cp for cp in range(MAX_CP) if cat[cp] in ("Nd", "Nl", "No"))

    ccc = [unicodedata.combining(chr(cp)) for cp in range(MAX_CP)]
    assert all(c == 0 for c in ccc[:0x300]), "unicode.rs assumes ccc 0 below U+0300"
    combining = []
    for cp in range(MAX_CP):
        if ccc[cp] == 0:
            continue
        if combining and combining[-1][1] + 1 == cp and combining[-1][2] == ccc[cp]:
            combining[-1][1] = cp
        else:
            combining.append([cp, cp, ccc[cp]])

    decomposition, composition, excluded = {}, {}, set()
    for cp in range(MAX_CP):
        if is_surrogate(cp):
            continue
        m = canonical_mapping(cp)
        if m is None:
            continue
        assert not (S_BASE <= cp < S_BASE + S_COUNT), "Hangul has no table decomposition"
        full = full_decomposition(cp)
        nfd = unicodedata.normalize("NFD", chr(cp))
        assert "".join(map(chr, full)) == nfd, f"U+{cp:04X}: recursive decomposition != NFD"
        assert not any(S_BASE <= x < S_BASE + S_COUNT for x in full)
        decomposition[cp] = full
        is_excluded = unicodedata.normalize("NFC", chr(cp)) != chr(cp)
        if is_excluded:
            excluded.add(cp)
        if len(m) == 2:
            composes = unicodedata.normalize("NFC", chr(m[0]) + chr(m[1])) == chr(cp)
            assert composes == (not is_excluded), f"U+{cp:04X}: exclusion test disagrees"
            if composes:
                assert (m[0], m[1]) not in composition
                composition[(m[0], m[1])] = cp
        else:
            assert len(m) == 1 and is_excluded, f"U+{cp:04X}: a singleton must be excluded"

    # is_normalized('NFC', c) is False exactly on the full composition exclusions.
    not_normalized = {
        cp for cp in range(MAX_CP) if not is_surrogate(cp) and not unicodedata.is_normalized("NFC", chr(cp))
    }
    assert not_normalized == excluded, "full composition exclusion != {c : c not NFC}"
    # Spot checks of each kind of exclusion, and of a few compositions.
    for cp in (0x212B, 0x2126, 0x0340, 0x0344, 0x0F73, 0x0958, 0x2ADC, 0x1D15E, 0xFB1D):
        assert cp in excluded, f"U+{cp:04X} should be excluded"
    assert composition[(0x41, 0x300)] == 0xC0 and composition[(0xC7, 0x301)] == 0x1E08
    assert composition[(0x304B, 0x3099)] == 0x304C and composition[(0x0DD9, 0x0DCF)] == 0x0DDC

    assert min(decomposition) >= 0xC0, "unicode.rs assumes no decomposition below U+00C0"
    maybe = {second for (_, second) in composition}
    maybe |= set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))
    assert not (maybe & excluded)
    quick = ranges(sorted(maybe | excluded))
    assert quick[0][0] >= 0x300, "unicode.rs assumes NFC_Quick_Check Yes below U+0300"
    return dict(
        letter=letter,
        number=number,
        combining=[tuple(r) for r in combining],
        quick=quick,
        decomposition=sorted(decomposition.items()),
        composition=sorted(composition.items()),
        n_excluded=len(excluded),
        n_maybe=len(maybe),
    )


def wrap(items, indent="    ", width=100):
    """Comma-separated items, several to a line."""
    lines, line = [], indent
    for item in items:
        piece = item + ","
        if len(line) + len(piece) + 1 > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += piece + " "
    if line.strip():
        lines.append(line.rstrip())
    return "\n".join(lines)


def ch(cp):
    return f"'\\u{{{cp:X}}}'"


def render(t, version):
    letter = wrap(f"(0x{a:X}, 0x{b:X})" for a, b in t["letter"])
    number = wrap(f"(0x{a:X}, 0x{b:X})" for a, b in t["number"])
    combining = wrap(f"(0x{a:X}, 0x{b:X}, {c})" for a, b, c in t["combining"])
    quick = wrap(f"(0x{a:X}, 0x{b:X})" for a, b in t["quick"])
    decomposition = wrap(f"(0x{cp:X}, &[{', '.join(ch(x) for x in d)}])" for cp, d in t["decomposition"])
    composition = wrap(f"((0x{a:X}, 0x{b:X}), {ch(c)})" for (a, b), c in t["composition"])
    return f"""\
// @generated by tests/golden/tokenizer/make_unicode_tables.py (Unicode {version}) — do not edit
//! Unicode {version} tables for `\\p{{L}}`, `\\p{{N}}` and NFC, from Python's `unicodedata`.
//! Every table is sorted by its key and searched by binary search; see unicode.rs.
//! Hangul syllables are not here: unicode.rs decomposes and composes them arithmetically.

/// `\\p{{L}}`: General_Category Lu, Ll, Lt, Lm, Lo, as merged inclusive ranges ({len(t["letter"])}).
#[rustfmt::skip]
pub(super) static LETTER: &[(u32, u32)] = &[
{letter}
];

/// `\\p{{N}}`: General_Category Nd, Nl, No, as merged inclusive ranges ({len(t["number"])}).
#[rustfmt::skip]
pub(super) static NUMBER: &[(u32, u32)] = &[
{number}
];

/// Canonical_Combining_Class: (first, last, class) for runs of one non-zero class ({len(t["combining"])});
/// every other code point has class 0.
#[rustfmt::skip]
pub(super) static COMBINING_CLASS: &[(u32, u32, u8)] = &[
{combining}
];

/// Code points whose NFC_Quick_Check is No ({t["n_excluded"]}: the full composition exclusions)
/// or Maybe ({t["n_maybe"]}: those that can compose with a preceding starter), as ranges
/// ({len(t["quick"])}). A string of other characters whose non-zero classes never decrease
/// is already in NFC.
#[rustfmt::skip]
pub(super) static NFC_NOT_QUICK_YES: &[(u32, u32)] = &[
{quick}
];

/// Full canonical decomposition (recursive, canonically ordered) of every code point that has
/// one, Hangul syllables excepted ({len(t["decomposition"])}).
#[rustfmt::skip]
pub(super) static DECOMPOSITION: &[(u32, &[char])] = &[
{decomposition}
];

/// Canonical composition: (first, second) -> primary composite, for every canonical mapping
/// of length 2 that is not a full composition exclusion ({len(t["composition"])}).
#[rustfmt::skip]
pub(super) static COMPOSITION: &[((u32, u32), char)] = &[
{composition}
];
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--any-version", action="store_true", help="allow a Unicode version other than 14.0.0")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    version = unicodedata.unidata_version
    print(f"python {sys.version.split()[0]}, unicodedata.unidata_version {version}")
    if version != PINNED_UNICODE and not args.any_version:
        sys.exit(f"unicodedata is Unicode {version}, pinned {PINNED_UNICODE}; pass --any-version to use it")
    t = build()
    text = render(t, version)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    print(
        f"wrote {args.out} ({os.path.getsize(args.out)} bytes): "
        f"LETTER {len(t['letter'])} ranges, NUMBER {len(t['number'])}, "
        f"COMBINING_CLASS {len(t['combining'])}, NFC_NOT_QUICK_YES {len(t['quick'])} "
        f"(No {t['n_excluded']}, Maybe {t['n_maybe']}), DECOMPOSITION {len(t['decomposition'])}, "
        f"COMPOSITION {len(t['composition'])}"
    )


if __name__ == "__main__":
    main()
