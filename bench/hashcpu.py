"""CPU-seconds per GiB of the chunk hash over 16 MiB chunks (docs/benchmarks.md, "BLAKE3 lakes").

process_time counts every thread of the process, so the multi-threaded BLAKE3 figure is its
total CPU, not its wall time.
Run: .venv/bin/python bench/hashcpu.py [GiB]   (needs the blake3 package)
"""
import hashlib
import os
import sys
import time

import blake3

CHUNK = 16 * 1024 * 1024


def run(name, fn, chunks, rounds=3):
    best_cpu = best_wall = float("inf")
    for _ in range(rounds):
        w0, c0 = time.perf_counter(), time.process_time()
        for c in chunks:
            fn(c)
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - w0)
    gib = len(chunks) * CHUNK / 2**30
    print(f"{name:28s} {best_cpu / gib:6.3f} CPU-s/GiB  {best_wall / gib:6.3f} wall-s/GiB  "
          f"load {os.getloadavg()[0]:.2f}", flush=True)


def main():
    gib = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    chunks = [os.urandom(CHUNK) for _ in range(int(gib * 1024 // 16))]
    run("sha256 (hashlib)", lambda c: hashlib.sha256(c).hexdigest(), chunks)
    run("blake3 1 thread", lambda c: blake3.blake3(c).hexdigest(), chunks)
    run("blake3 max_threads=AUTO", lambda c: blake3.blake3(c, max_threads=blake3.blake3.AUTO)
        .hexdigest(), chunks)
    print(f"python {sys.version.split()[0]}, blake3 {blake3.__version__}, "
          f"{hashlib.sha256().name} via OpenSSL, cpus {os.cpu_count()}")


if __name__ == "__main__":
    main()
