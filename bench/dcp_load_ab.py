"""DCP load A/B, interleaved in the same gloo world, loading the same version, alternating
the order every rep: LakeReader's read_data (planned parallel fetches, ckptlake/torch/planread.py,
large tensor items read straight into the destination, itemread.py) next to the same with every
item through torch.load + copy_ (`--old planread`, the read path before itemread), or next to
torch's FileSystemReader.read_data over LakeFile streams (`--old torch`, before planread).

Why a separate script: on a shared, loaded machine the peers' numbers in bench/torch_bench.py
move by ±40 % between runs; alternating the two read paths in one world compares them under the
same load.  Wall: the slowest rank per load; CPU: user+sys of both ranks per GiB of state.

    .venv/bin/python bench/dcp_load_ab.py 512 6 [--old planread|torch]  # MiB of state, reps
"""
from __future__ import annotations

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
BUCKET = "dcpload"


def _cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_stime


def _child(rank: int, world: int, port: int, job: dict, out: str) -> None:
    os.environ.update(job["env"])
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    import ckptlake
    from ckptlake.torch import LakeReader, LakeWriter

    from ckptlake.torch import itemread

    direct_min = itemread.DIRECT_MIN

    class OldReader(LakeReader):
        if job["old"] == "torch":
            read_data = FileSystemReader.read_data
        else:
            def read_data(self, plan: Any, planner: Any) -> Any:
                itemread.DIRECT_MIN = 1 << 62  # every item through torch.load
                try:
                    return super().read_data(plan, planner)
                finally:
                    itemread.DIRECT_MIN = direct_min

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=600))
    mesh = init_device_mesh("cpu", (world,))
    rows = job["size_mib"] * MiB // 4 // 4096

    def state(zeros: bool) -> dict[str, Any]:
        g = torch.Generator().manual_seed(1)
        w = torch.zeros(rows, 4096) if zeros else torch.rand(rows, 4096, generator=g)
        return {"model": {"w": distribute_tensor(w, mesh, [Shard(0)]), "b": torch.ones(4096)}}

    lake = ckptlake.open(job["url"], endpoint_url=job["endpoint"])
    writer = LakeWriter(lake, "ab/dcp", step=1)
    ref = state(False)
    dcp.save(ref, storage_writer=writer)
    before = ("torch read_data over LakeFile" if job["old"] == "torch"
              else "planread, torch.load per item")
    paths = [(f"{before} (before)", OldReader), ("LakeReader (after)", LakeReader)]
    res: dict[str, list[list[float]]] = {name: [] for name, _ in paths}
    for rep in range(job["reps"]):
        for name, cls in paths if rep % 2 == 0 else paths[::-1]:
            target = state(True)
            dist.barrier()
            (c0, s0), t0 = _cpu(), time.perf_counter()
            dcp.load(target, storage_reader=cls(lake, f"ab/dcp@v{writer.version}"))
            wall = time.perf_counter() - t0
            c1, s1 = _cpu()
            assert torch.equal(target["model"]["w"].to_local(), ref["model"]["w"].to_local())
            res[name].append([wall, c1 - c0, s1 - s0])
    Path(out, f"{rank}.json").write_text(json.dumps(res))
    dist.barrier()
    os._exit(0)


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    old = "torch" if "--old" in sys.argv and sys.argv[sys.argv.index("--old") + 1] == "torch" \
        else "planread"
    args = [a for a in args if a != old]
    size = int(args[0]) if args else 512
    reps = int(args[1]) if len(args) > 1 else 6
    from server import SeaweedFS

    scratch = Path(tempfile.mkdtemp(prefix="dcpload-"))
    weed = SeaweedFS(Path(sys.executable).parent / "weed", scratch / "weed").start()
    try:
        weed.create_bucket(BUCKET)
        env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": weed.endpoint,
               "OMP_NUM_THREADS": "1"}
        job = {"size_mib": size, "reps": reps, "old": old, "url": f"s3://{BUCKET}/lake",
               "endpoint": weed.endpoint, "env": env}
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_child, args=(r, 2, port, job, str(scratch)))
                 for r in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(1800)
        reports = [json.loads((scratch / f"{r}.json").read_text()) for r in range(2)]
        gib = size / 1024
        print(f"2 ranks, {size} MiB state, {reps} reps each, medians")
        for name in reports[0]:
            runs = list(zip(reports[0][name], reports[1][name]))
            wall = [max(a[0], b[0]) for a, b in runs]
            cpu = [a[1] + b[1] for a, b in runs]
            sys_ = [a[2] + b[2] for a, b in runs]
            print(f"{name}: {statistics.median(wall):.2f} s "
                  f"({', '.join(f'{w:.2f}' for w in wall)}), "
                  f"{statistics.median(cpu) / gib:.2f} CPU-s/GiB "
                  f"(sys {statistics.median(sys_) / gib:.2f})")
    finally:
        weed.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
