#!/usr/bin/env python3
"""Regenerates vectors.json: reference draws from numpy's legacy RandomState
and CPython's random module, the two generators package mtrand reproduces.

Run from the repository root (needs python3 and numpy; Debian: apt-get
install -y python3-numpy):

    python3 core/mtrand/testdata/gen_vectors.py > core/mtrand/testdata/vectors.json
"""
import json
import random
import sys

import numpy as np

out = {
    "numpy_version": np.__version__,
    "python_version": sys.version.split()[0],
    "permutation": [],
    "randint": [],
    "raw_uint32": [],
    "py_shuffle": [],
    "py_getrandbits": [],
}

for seed in [0, 1, 42, 99, 1337, 1338, 3301, 2**31 - 1, 2**32 - 1, 123456789]:
    for n in [1, 2, 3, 10, 20, 100, 1000]:
        out["permutation"].append(
            {"seed": seed, "n": n, "perm": np.random.RandomState(seed).permutation(n).tolist()})
# One long permutation: exercises draws across MT19937's 624-word refills.
out["permutation"].append(
    {"seed": 1337, "n": 5000, "perm": np.random.RandomState(1337).permutation(5000).tolist()})

for seed in [0, 42, 1337, 3301]:
    for n in [1, 2, 7, 10, 1000, 65536, 2**31, 2**32]:
        rs = np.random.RandomState(seed)
        first = rs.randint(0, n, size=16).tolist()
        second = rs.randint(0, n, size=16).tolist()
        out["randint"].append({"seed": seed, "n": n, "first": first, "second": second})

for seed in [0, 5489, 1337]:
    rs = np.random.RandomState(seed)
    # randint over the full 32-bit range returns the raw MT19937 words.
    out["raw_uint32"].append({"seed": seed, "words": rs.randint(0, 2**32, size=700, dtype=np.uint64).tolist()})

for seed in [0, 1, 7, 42, 1337, 2**32 - 1, 2**32, 2**40 + 5, -42, 2**63 - 1]:
    for n in [1, 2, 10, 33, 1000]:
        xs = list(range(n))
        random.Random(seed).shuffle(xs)
        out["py_shuffle"].append({"seed": seed, "n": n, "shuffled": xs})

for seed in [0, 42]:
    r = random.Random(seed)
    out["py_getrandbits"].append({"seed": seed, "k": 32, "values": [r.getrandbits(32) for _ in range(700)]})

json.dump(out, sys.stdout, separators=(",", ":"))
sys.stdout.write("\n")
