"""Content-defined chunking (FastCDC) vs fixed offsets, for large files of no known layout.

    pip install --target /tmp/cdc fastcdc==1.7.0 pith-cdc==0.1.1    # not dependencies of ckptlake
    PYTHONPATH=/tmp/cdc .venv/bin/python bench/cdc_bench.py [--size-mib 256] [--chunk-mib 16]

Why it exists: format/chunking.py cuts model files at their tensors' boundaries; every other
large file is still cut at fixed offsets, which lose every later chunk when bytes are inserted
near the start.  A rolling hash (FastCDC) places cuts by content instead, at the price of
hashing every byte once more.  This measures both sides of that trade on one core:

- speed of each chunker (MB/s), next to SHA-256 (what a push already spends per byte);
- bytes a re-push would upload after (a) appending 1 MiB to a log file, (b) inserting 40 bytes
  4 KiB into a binary file (a real one: torch's libtorch_cpu.so, if present).

CDC parameters keep push's memory bound: min = chunk/4, avg = chunk/2, max = chunk.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import random
import sys
import time
import types
from typing import Callable, Iterable


def gear_table() -> list[int]:
    rng = random.Random(1)
    return [rng.getrandbits(64) for _ in range(256)]


def pure_python_gear(data: bytes, mn: int, avg: int, mx: int) -> list[tuple[int, int]]:
    """The smallest honest pure-Python FastCDC: gear hash, normalized masks, min-size skip."""
    gear = gear_table()
    bits = avg.bit_length() - 1
    mask_s, mask_l = (1 << (bits + 1)) - 1 << (63 - bits), (1 << (bits - 1)) - 1 << (63 - bits)
    full = (1 << 64) - 1
    out, start, n = [], 0, len(data)
    while start < n:
        end = min(n, start + mx)
        i, h, cut = start + mn, 0, end
        if i >= end:
            out.append((start, end - start))
            break
        mid = min(end, start + avg)
        while i < mid:
            h = ((h << 1) + gear[data[i]]) & full
            i += 1
            if not h & mask_s:
                cut = i
                break
        else:
            while i < end:
                h = ((h << 1) + gear[data[i]]) & full
                i += 1
                if not h & mask_l:
                    cut = i
                    break
        out.append((start, cut - start))
        start = cut
    return out


def load_chunkers() -> dict[str, Callable[[bytes, int, int, int], list[tuple[int, int]]]]:
    out: dict[str, Callable[[bytes, int, int, int], list[tuple[int, int]]]] = {}
    # fastcdc 1.7.0 imports click at the top of its package (for its CLI) and prints a
    # warning when the compiled module is missing; neither matters for a measurement
    # (click is not installed here: typer vendors it), so it gets a stand-in that accepts
    # anything: a base class, a decorator, a no-op
    class Anything:
        def __init__(self, *a: object, **k: object) -> None:
            pass

        def __call__(self, *a: object, **k: object) -> object:
            return a[0] if len(a) == 1 and callable(a[0]) else self

    stub = types.ModuleType("click")
    stub.__getattr__ = lambda name: Anything  # type: ignore[method-assign]
    had_click = "click" in sys.modules
    sys.modules.setdefault("click", stub)
    try:
        from fastcdc.fastcdc_cy import fastcdc_cy

        out["fastcdc 1.7.0 (Cython)"] = lambda d, mn, avg, mx: [
            (c.offset, c.length) for c in fastcdc_cy(d, mn, avg, mx)]
    except ImportError as exc:
        print(f"fastcdc (Cython) not measured: {exc}", file=sys.stderr)
    try:
        from fastcdc.fastcdc_py import fastcdc_py

        out["fastcdc 1.7.0 (pure Python)"] = lambda d, mn, avg, mx: [
            (c.offset, c.length) for c in fastcdc_py(d, mn, avg, mx)]
    except ImportError:
        pass
    try:
        import pith_cdc

        def pith(d: bytes, mn: int, avg: int, mx: int) -> list[tuple[int, int]]:
            return [(c.offset, c.length) for c in pith_cdc.chunk(d, mn, avg, mx)]
        pith(b"x" * 100_000, 2048, 8192, 32768)  # finds its cdylib
        out["pith-cdc 0.1.1 (Rust, ctypes)"] = pith
    except Exception as exc:  # noqa: BLE001 - not installed, or no cdylib
        print(f"pith-cdc not measured: {exc}", file=sys.stderr)
    if not had_click:
        del sys.modules["click"]
    out["pure Python gear loop (this file)"] = pure_python_gear
    return out


def new_bytes(old: bytes, new: bytes, cuts_old: Iterable[tuple[int, int]],
              cuts_new: Iterable[tuple[int, int]]) -> tuple[int, int]:
    """(bytes, chunks) of `new` whose chunk digests `old` does not have: what a push uploads."""
    have = {hashlib.sha256(old[o:o + n]).digest() for o, n in cuts_old}
    up = [(o, n) for o, n in cuts_new if hashlib.sha256(new[o:o + n]).digest() not in have]
    return sum(n for _, n in up), len(up)


def fixed(data: bytes, chunk: int) -> list[tuple[int, int]]:
    return [(o, min(chunk, len(data) - o)) for o in range(0, len(data), chunk)]


def log_file(size: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    lines, total, step = [], 0, 0
    while total < size:
        step += 1
        line = (f"2026-12-04T{step // 3600 % 24:02d}:{step // 60 % 60:02d}:{step % 60:02d}Z "
                f"step={step} loss={rng.uniform(1.5, 3):.4f} lr={3e-4 * rng.random():.3e} "
                f"grad_norm={rng.uniform(0.1, 4):.3f} tok/s={rng.randint(90_000, 130_000)}\n")
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--chunk-mib", type=int, default=16)
    ap.add_argument("--python-sample-mib", type=int, default=4,
                    help="pure-Python chunkers are timed on this much only")
    args = ap.parse_args()
    size, chunk = args.size_mib << 20, args.chunk_mib << 20
    chunkers = load_chunkers()

    # (a) is averaged over 8 log lengths: what either side uploads depends on where the old
    # end falls relative to the last cut, which one length would pick by luck
    full = log_file(size + (1 << 20))
    lengths = [size - random.Random(k).randrange(chunk) for k in range(8)]
    cases: dict[str, list[tuple[bytes, bytes]]] = {
        "(a) log, 1 MiB appended (mean of 8 lengths)":
            [(full[:n], full[:n + (1 << 20)]) for n in lengths]}
    base = full[:size]
    try:
        spec = importlib.util.find_spec("torch")
        lib = os.path.join(list(spec.submodule_search_locations)[0], "lib",  # type: ignore
                           "libtorch_cpu.so")
        with open(lib, "rb") as fh:
            binary, what = fh.read(size), "libtorch_cpu.so"
    except (AttributeError, TypeError, IndexError, OSError):
        binary, what = random.Random(2).randbytes(size), "random bytes"
    cases[f"(b) {what}, 40 bytes inserted at 4 KiB"] = [(
        binary, binary[:4096] + b"\x00inserted by cdc_bench.py, forty bytes\x00" + binary[4096:])]

    configs = [(chunk // 4, chunk // 2, chunk), (chunk // 16, chunk // 4, chunk)]
    print(f"one core; {args.size_mib} MiB per file; fixed chunk {args.chunk_mib} MiB; "
          f"Python {sys.version.split()[0]}")
    print("\n| chunker | MB/s, one core |\n|---|--:|")
    t = time.perf_counter()
    hashlib.sha256(binary).digest()
    print(f"| SHA-256 (hashlib; push hashes every byte already) | "
          f"{len(binary) / (time.perf_counter() - t) / 1e6:,.0f} |")
    sample = binary[:args.python_sample_mib << 20]
    for name, fn in chunkers.items():
        # min/avg/max = 1/16, 1/4, 1 of the chunk size; the slow ones get a sample and the
        # same ratios scaled to it (the same share of bytes skipped below the minimum)
        data = sample if "Python" in name else binary
        top = chunk if data is binary else len(sample) // 16
        mn, avg, mx = top // 16, top // 4, top
        t = time.perf_counter()
        fn(data, mn, avg, mx)
        print(f"| {name} | {len(data) / (time.perf_counter() - t) / 1e6:,.1f} |")

    print("\n| file | chunker (min/avg/max MiB) | uploaded after the change | chunks |"
          "\n|---|---|--:|--:|")
    for label, pairs in cases.items():
        def mean(cut: Callable[[bytes], list[tuple[int, int]]]) -> tuple[float, float, float]:
            got = [new_bytes(o, n, cut(o), cut(n)) + (len(cut(n)),) for o, n in pairs]
            return tuple(sum(g[i] for g in got) / len(got) for i in range(3))  # type: ignore
        fb, fc, ft = mean(lambda d: fixed(d, chunk))
        print(f"| {label} | fixed offsets ({args.chunk_mib}) | {fb / 2**20:,.1f} MiB | "
              f"{fc:.1f} of {ft:.0f} |")
        for name, fn in chunkers.items():
            if "Python" in name:
                continue
            for mn, avg, mx in configs:
                try:
                    cb, cc, ct = mean(lambda d: fn(d, mn, avg, mx))  # noqa: B023
                except Exception:  # noqa: BLE001 - sizes the chunker refuses
                    continue
                print(f"| {label} | {name} ({mn >> 20}/{avg >> 20}/{mx >> 20}) | "
                      f"{cb / 2**20:,.1f} MiB | {cc:.1f} of {ct:.0f} |")


if __name__ == "__main__":
    main()
