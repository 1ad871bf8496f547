"""Compiled float codecs on the index (blosc2, numcodecs' Blosc), measured against ckptlake's bf16
bit planes + zstd on the same synthetic chunk: what a compiled decoder would buy a bf16 pull,
and at what ratio.  Neither package is a dependency, so this runs in a scratch venv:

    python3 -m venv /tmp/bl && /tmp/bl/bin/pip install -q blosc2 numcodecs numpy zstandard
    /tmp/bl/bin/python bench/compiled_codecs_eval.py

One 16 MiB chunk of bf16 (Gaussian, sigma 0.02, rounded from fp32), one thread, best of 10
(encode best of 3); seconds of CPU per GiB of raw bytes.
"""
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import blosc2  # noqa: E402
import numcodecs  # noqa: E402
from numcodecs import Blosc  # noqa: E402

from ckptlake.format import codecs  # noqa: E402

rng = np.random.default_rng(1)
n = 8 * 1024 * 1024
bf = ((rng.standard_normal(n).astype(np.float32) * 0.02).view(np.uint32) >> 16).astype(np.uint16)
raw = bf.tobytes()
GIB = len(raw) / 2**30


def best(fn, reps=10):
    out = 1e9
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t)
    return out


choice = codecs.choose(raw, "BF16")
enc = codecs.encode(raw, choice)
into = bytearray(len(raw))
print(f"ckptlake bf16 planes + zstd-1: ratio {len(enc) / len(raw):.3f}, "
      f"enc {best(lambda: codecs.encode(raw, choice), 3) / GIB:.3f} s/GiB, "
      f"dec {best(lambda: codecs.decode(enc, into)) / GIB:.3f} s/GiB")
blosc2.set_nthreads(1)
for name, cparams in [
    ("blosc2 bitshuffle + zstd-1", dict(codec=blosc2.Codec.ZSTD, clevel=1,
                                        filters=[blosc2.Filter.BITSHUFFLE], typesize=2)),
    ("blosc2 byte shuffle + zstd-1", dict(codec=blosc2.Codec.ZSTD, clevel=1,
                                          filters=[blosc2.Filter.SHUFFLE], typesize=2)),
    ("blosc2 bitshuffle + lz4", dict(codec=blosc2.Codec.LZ4, clevel=5,
                                     filters=[blosc2.Filter.BITSHUFFLE], typesize=2)),
]:
    c = blosc2.compress2(raw, nthreads=1, **cparams)
    e = best(lambda: blosc2.compress2(raw, nthreads=1, **cparams), 3)
    d = best(lambda: blosc2.decompress2(c))
    print(f"{name}: ratio {len(c) / len(raw):.3f}, enc {e / GIB:.3f} s/GiB, dec {d / GIB:.3f} s/GiB")
numcodecs.blosc.set_nthreads(1)
arr = np.frombuffer(raw, dtype=np.uint16)
out = np.empty_like(arr)
for label, shuffle in (("bitshuffle", Blosc.BITSHUFFLE), ("byte shuffle", Blosc.SHUFFLE)):
    codec = Blosc(cname="zstd", clevel=1, shuffle=shuffle, blocksize=0)
    c = codec.encode(arr)
    d = best(lambda: codec.decode(c, out=out))
    print(f"numcodecs Blosc {label} + zstd-1: ratio {len(c) / len(raw):.3f}, dec {d / GIB:.3f} s/GiB")
