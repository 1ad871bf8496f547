"""Hash throughput on this machine, single thread, 16 MiB buffers (one chunk).

    bench/.venv/bin/python bench/hashes.py      # blake3/xxhash are measured if installed

Why it exists: the chunk hash is on every byte of every push and pull; the lake header fixes
it for the lifetime of a lake, so the choice is made once, from numbers.
"""
from __future__ import annotations

import hashlib
import os
import time


def measure(fn, data: bytes, seconds: float = 1.0) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(data)
        n += 1
    return n * len(data) / (time.perf_counter() - start) / 1e6


def main() -> None:
    data = os.urandom(16 << 20)
    candidates = {"sha256 (hashlib)": lambda d: hashlib.sha256(d).digest(),
                  "blake2b (hashlib)": lambda d: hashlib.blake2b(d).digest()}
    try:
        import blake3

        candidates["blake3 (1 thread)"] = lambda d: blake3.blake3(d).digest()
    except ImportError:
        pass
    try:
        import xxhash

        candidates["xxh3_128 (not cryptographic)"] = lambda d: xxhash.xxh3_128(d).digest()
    except ImportError:
        pass
    print("| hash | MB/s, one core |\n|---|--:|")
    for name, fn in candidates.items():
        print(f"| {name} | {measure(fn, data):,.0f} |")


if __name__ == "__main__":
    main()
