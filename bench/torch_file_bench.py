"""Single-file torch.save / torch.load: `ckptlake.torch.save` (Lake.writer, streamed chunk
uploads) and `load` (Lake.open) vs s3torchconnector's `S3Checkpoint` writer/reader, against one
SeaweedFS this script starts (bench/server.py) and stops.

The state dict: SIZE MiB of float32 (torch.rand, new values every rep: nothing deduplicates
between reps) in 8 tensors plus a small one.  Each op runs in a fresh spawned process (no warm
client); tools run interleaved per rep; medians are reported.  Per op: wall time of the call
and client CPU-seconds per GiB (user+sys of the process, all its threads, during the call).
The loaded dict is compared with the saved one (outside the timing).  Lake defaults (its
compression setting included: auto for the new lake) are used, as a user would get them,
unless --compression says otherwise.

    python bench/torch_file_bench.py                  # 512 MiB, 5 reps
    python bench/torch_file_bench.py --size-mib 256 --reps 3
    python bench/torch_file_bench.py --s3tc-gbps 1 10   # the peer at two throughput targets
Runs in the repo's .venv with s3torchconnector==1.5.0 installed next to torch==2.13.0 (see
bench/torch_bench.py).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MiB = 1 << 20
BUCKET = "torchfilebench"


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _state(size_mib: int, seed: int) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    per = size_mib * MiB // 4 // 8
    sd: dict[str, Any] = {f"layer{i}.weight": torch.rand(per, generator=g) for i in range(8)}
    sd["bias"] = torch.full((4096,), float(seed))
    return sd


def _timed(fn: Any) -> tuple[Any, dict[str, float]]:
    c, t = _cpu(), time.perf_counter()
    out = fn()
    return out, {"wall": time.perf_counter() - t, "cpu": _cpu() - c}


def _child(job: dict, out: str) -> None:
    os.environ.update(job["env"])
    import torch

    state = _state(job["size_mib"], job["seed"])
    res: dict[str, Any] = {}
    if job["tool"] == "ckptlake":
        import ckptlake
        from ckptlake.torch import load, save

        lake = ckptlake.open(job["url"], endpoint_url=job["endpoint"])
        opts = {"compression": job["compression"]} if job["compression"] else {}
        r, res["save"] = _timed(lambda: save(state, lake, "bench/file", step=job["seed"],
                                             **opts))
        got, res["load"] = _timed(lambda: load(lake, f"bench/file@v{r.version}"))
    else:
        from s3torchconnector import S3Checkpoint, S3ClientConfig

        ckpt = S3Checkpoint(region="us-east-1", s3client_config=S3ClientConfig(
            force_path_style=True, throughput_target_gbps=job["gbps"]))
        uri = f"s3://{BUCKET}/s3ckpt/{job['tag']}.pt"

        def save() -> None:
            with ckpt.writer(uri) as w:
                torch.save(state, w)

        def load() -> Any:
            with ckpt.reader(uri) as f:
                return torch.load(f, weights_only=True)

        _, res["save"] = _timed(save)
        got, res["load"] = _timed(load)
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)
    Path(out).write_text(json.dumps(res))
    os._exit(0)


def run_job(job: dict, scratch: Path) -> dict:
    out = Path(tempfile.mkdtemp(dir=scratch)) / "r.json"
    p = multiprocessing.get_context("spawn").Process(target=_child, args=(job, str(out)))
    p.start()
    p.join(1800)
    if p.exitcode != 0:
        raise SystemExit(f"{job['tool']} failed (exit {p.exitcode})")
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--compression", choices=["auto", "none"], default=None,
                    help="ckptlake's compression (default: the lake's, auto for a new lake)")
    ap.add_argument("--s3tc-gbps", type=float, nargs="+", default=[10.0],
                    help="S3ClientConfig.throughput_target_gbps values for the peer (its "
                         "default 10 sizes the CRT's connection pool); each runs as its own tool "
                         "and the speed-ups are against its best median per op")
    args = ap.parse_args()
    from server import SeaweedFS

    scratch = Path(tempfile.mkdtemp(prefix="torchfilebench-"))
    weed = SeaweedFS(Path(sys.executable).parent / "weed", scratch / "weed").start()
    try:
        weed.create_bucket(BUCKET)
        env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": weed.endpoint,
               "OMP_NUM_THREADS": "1"}
        runs: dict[str, list[dict]] = {}
        for rep in range(args.reps):
            peers = [("s3checkpoint" if len(args.s3tc_gbps) == 1 else f"s3checkpoint@{g:g}", g)
                     for g in args.s3tc_gbps]
            for tool, gbps in [("ckptlake", None), *peers]:
                job = {"tool": tool.split("@")[0], "size_mib": args.size_mib,
                       "seed": rep * 10 + 1, "url": f"s3://{BUCKET}/lake",
                       "endpoint": weed.endpoint, "env": env, "tag": f"r{rep}-{gbps}",
                       "compression": args.compression, "gbps": gbps}
                r = runs.setdefault(tool, [])
                r.append(run_job(job, scratch))
                print(f"rep {rep} {tool}: " + ", ".join(
                    f"{op} {v['wall']:.2f}s" for op, v in r[-1].items()), flush=True)
        gib = args.size_mib / 1024
        import torch
        import s3torchconnector

        print(f"\n{args.size_mib} MiB state dict, {args.reps} reps, medians, ckptlake "
              f"compression {args.compression or 'lake default'} "
              f"(torch {torch.__version__}, s3torchconnector {s3torchconnector.__version__})")
        summary: dict[str, dict[str, float]] = {}
        for name, rs in runs.items():
            s = summary[name] = {}
            for op in ("save", "load"):
                s[f"{op}_s"] = statistics.median(r[op]["wall"] for r in rs)
                s[f"{op}_cpu_per_gib"] = statistics.median(r[op]["cpu"] for r in rs) / gib
            s["save_load_s"] = statistics.median(r["save"]["wall"] + r["load"]["wall"]
                                                 for r in rs)
            print(name, json.dumps({k: round(v, 3) for k, v in s.items()}))
        ck = summary["ckptlake"]
        peers = {k: v for k, v in summary.items() if k != "ckptlake"}
        for op in ("save", "load", "save_load"):
            best = min(peers, key=lambda k: peers[k][f"{op}_s"])
            print(f"{op} speed-up vs S3Checkpoint ({best}, its best): "
                  f"{peers[best][f'{op}_s'] / ck[f'{op}_s']:.2f}x")
    finally:
        weed.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
