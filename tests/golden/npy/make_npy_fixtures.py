"""Writes the .npy fixtures tests/npy.rs compares our reader and writer against.

Pinned: numpy 2.4.6 (Python 3). No randomness. Run from anywhere:
    python3 tests/golden/npy/make_npy_fixtures.py
Every file is np.save's output (format 1.0) except v2_f4.npy and v3_f4.npy, written with
an explicit version to exercise the 4-byte header length. tests/npy.rs hard-codes the
values below; the Rust tests read these bytes and never run Python.
"""
import os

import numpy as np
from numpy.lib import format as npformat

assert np.__version__ == "2.4.6", f"fixtures are pinned to numpy 2.4.6, found {np.__version__}"
HERE = os.path.dirname(os.path.abspath(__file__))


def save(name, array):
    np.save(os.path.join(HERE, name), array)


save("f4_2x3.npy", np.arange(6, dtype="<f4").reshape(2, 3))
save("f4_special.npy", np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4028235e38, 0.1], dtype="<f4"))
save("f8_scalar.npy", np.array(np.pi, dtype="<f8"))
save("i4_2x3x4.npy", (np.arange(24, dtype="<i4") - 12).reshape(2, 3, 4))
save("i8_ids.npy", np.array([0, -1, 2**40, 50279, -(2**63), 2**63 - 1], dtype="<i8"))
save("u4_empty.npy", np.zeros(0, dtype="<u4"))
save("u4_1000x0.npy", np.zeros((1000, 0), dtype="<u4"))  # a 4-digit first dimension
# header + '\n' ends exactly on 64 bytes: numpy then pads 64 spaces, not 0
save("f4_pad64.npy", np.zeros((0, 100, 1000, 1000, 1000, 1000, 0, 0, 0, 0), dtype="<f4"))
for version in [(2, 0), (3, 0)]:
    with open(os.path.join(HERE, f"v{version[0]}_f4.npy"), "wb") as f:
        npformat.write_array(f, np.arange(5, dtype="<f4"), version=version)
