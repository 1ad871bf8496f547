"""DCP save/load: ckptlake.torch (LakeWriter/LakeReader) vs s3torchconnector's S3StorageWriter/
S3StorageReader, against one SeaweedFS this script starts (bench/server.py) and stops.

Every op runs in a fresh gloo world of RANKS spawned processes holding the same state: one
float32 weight of SIZE MiB sharded across the ranks (DTensor Shard(0)) plus a small replicated
tensor.  Each rep uses new values (nothing deduplicates between reps).  Tools run interleaved
per rep; medians are reported.  Per op: end-to-end wall time (the slowest rank, from a barrier
before the call to its return) and client CPU-seconds per GiB (user+sys of all ranks during
the call).  Extra, ckptlake: `dcp.async_save` time the caller is blocked (until the future is
returned) next to a synchronous save of changed bytes, for a first async save and the next
one (staging buffers cached by then), and the bytes a second save of the
unchanged state uploads.  s3torchconnector is run at each --s3tc-threads and the best is shown.

    python bench/torch_bench.py                       # 2 ranks, 2048 MiB, 5 reps
    python bench/torch_bench.py --size-mib 512 --reps 3 --s3tc-threads 1 4 8
Runs in the repo's .venv (scripts/test.sh: torch==2.13.0 from the [test] extra), after
`.venv/bin/pip install s3torchconnector==1.5.0 tenacity==9.2.1` with that torch already present
(not in bench/requirements.txt: bench/.venv has no torch, and s3torchconnector would pull an
unpinned one; its DCP module imports tenacity without declaring it).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MiB = 1 << 20
BUCKET = "torchbench"


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _state(world: int, size_mib: int, seed: int, zeros: bool = False) -> dict[str, Any]:
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    cols = 4096
    rows = size_mib * MiB // 4 // cols
    mesh = init_device_mesh("cpu", (world,))
    g = torch.Generator().manual_seed(seed)
    w = torch.zeros(rows, cols) if zeros else torch.rand(rows, cols, generator=g)
    return {"model": {"w": distribute_tensor(w, mesh, [Shard(0)]),
                      "b": torch.zeros(4096) if zeros else torch.full((4096,), float(seed))}}


def _timed(fn: Any) -> dict[str, float]:
    import torch.distributed as dist

    dist.barrier()
    c, t = _cpu(), time.perf_counter()
    fn()
    return {"wall": time.perf_counter() - t, "cpu": _cpu() - c}


def _child(rank: int, world: int, port: int, job: dict, out: str) -> None:
    os.environ.update(job["env"])
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=600))
    size, seed, tool = job["size_mib"], job["seed"], job["tool"]
    state = _state(world, size, seed)
    res: dict[str, Any] = {}
    if tool == "ckptlake":
        import ckptlake
        from ckptlake.torch import LakeReader, LakeWriter

        lake = ckptlake.open(job["url"], endpoint_url=job["endpoint"])
        w = LakeWriter(lake, "bench/dcp", step=seed * 10)
        res["save"] = _timed(lambda: dcp.save(state, storage_writer=w))
        target = _state(world, size, seed, zeros=True)
        res["load"] = _timed(lambda: dcp.load(
            target, storage_reader=LakeReader(lake, f"bench/dcp@v{w.version}")))
        # the unchanged state again: what does it upload?
        w2 = LakeWriter(lake, "bench/dcp", step=seed * 10 + 1)
        res["resave"] = _timed(lambda: dcp.save(state, storage_writer=w2))
        res["resave"]["uploaded"] = w2.result.bytes_uploaded + (
            w2.commit_result.bytes_uploaded if w2.commit_result else 0)
        # async_save of changed bytes: time blocked, then the wait for the commit
        changed = _state(world, size, seed + 100000)
        w3 = LakeWriter(lake, "bench/dcp", step=seed * 10 + 2)
        holder: dict[str, Any] = {}
        res["async_blocked"] = _timed(
            lambda: holder.update(f=dcp.async_save(changed, storage_writer=w3)))
        t = time.perf_counter()
        holder["f"].result()
        res["async_total"] = {"wall": res["async_blocked"]["wall"] + time.perf_counter() - t}
        # the next async_save, as a training loop's would be: LakeWriter's staging buffers
        # (cache_staged_state_dict, its default) are warm now
        changed = _state(world, size, seed + 200000)
        w4 = LakeWriter(lake, "bench/dcp", step=seed * 10 + 3)
        res["async_blocked_warm"] = _timed(
            lambda: holder.update(f=dcp.async_save(changed, storage_writer=w4)))
        holder["f"].result()
    else:
        from s3torchconnector import S3ClientConfig
        from s3torchconnector.dcp import S3StorageReader, S3StorageWriter

        cfg = S3ClientConfig(force_path_style=True)
        path = f"s3://{BUCKET}/s3tc/{job['tag']}/"
        res["save"] = _timed(lambda: dcp.save(state, storage_writer=S3StorageWriter(
            "us-east-1", path, s3client_config=cfg, thread_count=job["threads"])))
        target = _state(world, size, seed, zeros=True)
        res["load"] = _timed(lambda: dcp.load(target, storage_reader=S3StorageReader(
            "us-east-1", path, s3client_config=cfg)))
    import torch
    assert torch.equal(target["model"]["w"].to_local(), state["model"]["w"].to_local())
    Path(out, f"{rank}.json").write_text(json.dumps(res))
    dist.barrier()
    os._exit(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_job(job: dict, ranks: int, scratch: Path) -> dict:
    out = Path(tempfile.mkdtemp(dir=scratch))
    ctx = multiprocessing.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_child, args=(r, ranks, port, job, str(out))) for r in range(ranks)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(1800)
    reports = [json.loads((out / f"{r}.json").read_text()) for r in range(ranks)]
    merged: dict[str, Any] = {}
    for op in reports[0]:
        merged[op] = {"wall": max(r[op]["wall"] for r in reports),
                      "cpu": sum(r[op].get("cpu", 0.0) for r in reports)}
        if "uploaded" in reports[0][op]:
            merged[op]["uploaded"] = sum(r[op]["uploaded"] for r in reports)
    return merged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--s3tc-threads", type=int, nargs="+", default=[1, 4, 8])
    args = ap.parse_args()
    from server import SeaweedFS

    scratch = Path(tempfile.mkdtemp(prefix="torchbench-"))
    weed = SeaweedFS(Path(sys.executable).parent / "weed", scratch / "weed").start()
    try:
        weed.create_bucket(BUCKET)
        env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": weed.endpoint,
               "OMP_NUM_THREADS": "1"}
        tools = [("ckptlake", 0)] + [("s3tc", t) for t in args.s3tc_threads]
        runs: dict[str, list[dict]] = {}
        for rep in range(args.reps):
            for tool, threads in tools:
                name = tool if tool == "ckptlake" else f"s3torchconnector t={threads}"
                job = {"tool": tool, "threads": threads, "size_mib": args.size_mib,
                       "seed": rep * 100 + len(runs.get(name, [])) + 1 + threads,
                       "url": f"s3://{BUCKET}/lake", "endpoint": weed.endpoint, "env": env,
                       "tag": f"r{rep}-t{threads}"}
                r = run_job(job, args.ranks, scratch)
                runs.setdefault(name, []).append(r)
                print(f"rep {rep} {name}: " + ", ".join(
                    f"{op} {v['wall']:.2f}s" for op, v in r.items()), flush=True)
        gib = args.size_mib / 1024
        print(f"\n{args.ranks} ranks, {args.size_mib} MiB state, {args.reps} reps, medians")
        summary: dict[str, dict[str, float]] = {}
        for name, rs in runs.items():
            s = summary[name] = {}
            for op in rs[0]:
                s[f"{op}_s"] = statistics.median(r[op]["wall"] for r in rs)
                if rs[0][op]["cpu"]:
                    s[f"{op}_cpu_per_gib"] = statistics.median(r[op]["cpu"] for r in rs) / gib
                if "uploaded" in rs[0][op]:
                    s[f"{op}_uploaded_bytes"] = max(r[op]["uploaded"] for r in rs)
            print(name, json.dumps({k: round(v, 3) for k, v in s.items()}))
        best = min((n for n in summary if n.startswith("s3torch")),
                   key=lambda n: summary[n]["save_s"])
        best_load = min((n for n in summary if n.startswith("s3torch")),
                        key=lambda n: summary[n]["load_s"])
        ck = summary["ckptlake"]
        print(f"save speed-up vs {best}: {summary[best]['save_s'] / ck['save_s']:.2f}x")
        print(f"load speed-up vs {best_load}: {summary[best_load]['load_s'] / ck['load_s']:.2f}x")
        print(f"async_save blocked / sync save: {ck['async_blocked_s'] / ck['save_s']:.1%}")
        print(f"next async_save blocked / sync save: "
              f"{ck['async_blocked_warm_s'] / ck['save_s']:.1%}")
    finally:
        weed.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
