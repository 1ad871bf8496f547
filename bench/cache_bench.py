#!/usr/bin/env python3
"""Local chunk reuse and the chunk cache on pull (issue 14, items 5-6).

    .venv/bin/python bench/cache_bench.py [--size 1GiB] [--reps 3]

Goals: pull v2 over v1 where one 16 MiB region changed downloads <= 2 chunks; a second pull of
the same version through the cache runs at >= 1 GiB/s and takes 0 bytes from the store.

Runs in-process on the repository's ckptlake (not bench/.venv's), against a local-directory
lake wrapped in a store that counts every chunk byte it returns, so "bytes from the store" is
measured below the pull, not taken from its own result.  Per rep, in a fresh temp dir under
bench/.work/ (deleted at the end):

1. one file of SIZE seeded random bytes (v1), pushed with 16 MiB chunks; v2 = v1 with one
   16 MiB region at an unaligned offset (SIZE/3 + 12345) rewritten, pushed;
2. cold: pull v1 through an empty cache into A (downloads everything, fills the cache);
3. warm: pull v1 through the cache into B (timed: MiB/s; store bytes must be 0);
4. reuse: pull v2 --force over A, cache off (store bytes: the changed region's chunks).

The warm pull's wall time depends on the machine's load; its CPU seconds per GiB (all threads)
do much less: on an idle machine with N cores the warm pull cannot beat N / cpu_s_per_gib GiB/s.
copy_hash_mib_s is the machine's state at that moment: `cp` of the pulled file plus one SHA-256
pass over the copy, single-threaded.

Every pulled file is checked against its source by SHA-256.  The page cache is not dropped
(not root here): the warm pull reads cache entries the cold pull just wrote, as a job would
that starts right after another on the same node.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ckptlake.core.cache import ChunkCache  # noqa: E402
from ckptlake.format import layout  # noqa: E402
from ckptlake.lake import Lake  # noqa: E402
from ckptlake.policy.config import parse_size  # noqa: E402
from ckptlake.store.local import LocalStore  # noqa: E402

MiB = 1 << 20
CHUNK = 16 * MiB


class CountingStore(LocalStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.chunk_bytes = 0

    def get_into(self, key, buffer):  # type: ignore[no-untyped-def]
        view = super().get_into(key, buffer)
        if key.startswith(layout.CHUNKS_PREFIX):
            self.chunk_bytes += len(view)
        return view

    def get(self, key):  # type: ignore[no-untyped-def]
        data = super().get(key)
        if key.startswith(layout.CHUNKS_PREFIX):
            self.chunk_bytes += len(data)
        return data


def write_random(path: Path, size: int, seed: int) -> str:
    rnd = random.Random(seed)
    h = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            block = rnd.randbytes(min(left, 16 * MiB))
            fh.write(block)
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(16 * MiB):
            h.update(block)
    return h.hexdigest()


def rep(work: Path, size: int, seed: int) -> dict[str, float]:
    src = work / "src"
    src.mkdir()
    f = src / "model.safetensors"
    v1_digest = write_random(f, size, seed)
    store = CountingStore(work / "lake")
    lake = Lake(store, chunk_size=CHUNK, cache=ChunkCache(work / "cache", 4 * size))
    lake.push(src, "bench/cache/model")
    region = size // 3 + 12345
    with open(f, "r+b") as fh:
        fh.seek(region)
        fh.write(random.Random(seed + 1).randbytes(16 * MiB))
    v2_digest = sha256(f)
    lake.push(src, "bench/cache/model")
    shutil.rmtree(src)

    out: dict[str, float] = {}
    store.chunk_bytes = 0
    t = time.perf_counter()
    lake.pull("bench/cache/model@v1", work / "A")
    out["cold_s"] = time.perf_counter() - t
    out["cold_store_mib"] = store.chunk_bytes / MiB
    store.chunk_bytes = 0
    t, cpu = time.perf_counter(), time.process_time()
    r = lake.pull("bench/cache/model@v1", work / "B")
    out["warm_s"] = time.perf_counter() - t
    out["warm_mib_s"] = size / MiB / out["warm_s"]
    # CPU seconds of all threads per GiB: what the warm pull costs whatever the machine's load
    out["warm_cpu_s_per_gib"] = (time.process_time() - cpu) / (size / (1 << 30))
    out["warm_store_mib"] = store.chunk_bytes / MiB
    assert r.bytes_from_cache == size, r
    assert sha256(work / "B" / "model.safetensors") == v1_digest
    # the machine right now: a plain copy plus one SHA-256 of the same bytes (what a warm pull
    # must do at least: read, hash, write), single-threaded
    t = time.perf_counter()
    shutil.copyfile(work / "B" / "model.safetensors", work / "copy")
    sha256(work / "copy")
    out["copy_hash_mib_s"] = size / MiB / (time.perf_counter() - t)
    os.unlink(work / "copy")
    shutil.rmtree(work / "B")
    store.chunk_bytes = 0
    t = time.perf_counter()
    r = lake.pull("bench/cache/model@v2", work / "A", force=True, use_cache=False)
    out["reuse_s"] = time.perf_counter() - t
    out["reuse_store_mib"] = store.chunk_bytes / MiB
    out["reuse_reused_mib"] = r.bytes_reused / MiB
    assert sha256(work / "A" / "model.safetensors") == v2_digest
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    size = parse_size(args.size)
    (HERE / ".work").mkdir(exist_ok=True)
    results = []
    for i in range(args.reps):
        work = Path(tempfile.mkdtemp(prefix="cache-", dir=HERE / ".work"))
        try:
            results.append(rep(work, size, seed=i))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"rep {i + 1}: " + ", ".join(f"{k}={v:.2f}" for k, v in results[-1].items()),
              flush=True)
    print(f"medians over {args.reps} reps, {args.size} file, 16 MiB chunks, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores:")
    for key in results[0]:
        print(f"  {key:18s} {statistics.median(r[key] for r in results):10.2f}")


if __name__ == "__main__":
    main()
