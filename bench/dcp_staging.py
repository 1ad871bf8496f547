"""`dcp.async_save` staging alone: the time the training loop is blocked copying one rank's
state (a DTensor Shard(0) of SIZE MiB float32 in a 1-rank gloo world, plus a small tensor), by
stager: torch's default BlockingAsyncStager, torch's cache_staged_state_dict=True, and
ckptlake/torch/staging.py with 1, 2 and 4 copy threads, without and with its buffer cache.

    .venv/bin/python bench/dcp_staging.py 256 4      # MiB, reps (medians; the cache is warm
                                                     # from the second rep on)
"""
from __future__ import annotations

import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # as in bench/torch_bench.py


def main() -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.staging import BlockingAsyncStager
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from ckptlake.torch import staging

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                            world_size=1)
    mesh = init_device_mesh("cpu", (1,))

    def state(seed: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(seed)
        w = torch.rand(size * (1 << 20) // 4 // 4096, 4096, generator=g)
        return {"model": {"w": distribute_tensor(w, mesh, [Shard(0)]),
                          "b": torch.full((4096,), float(seed))}}

    def run(name: str, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        times = []
        for rep in range(reps):
            src = state(rep)
            t = time.perf_counter()
            out = fn(src)
            times.append(time.perf_counter() - t)
            a, b = out["model"]["w"].to_local(), src["model"]["w"].to_local()
            assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
            del out
        print(f"{name}: {statistics.median(times):.3f} s "
              f"({', '.join(f'{x:.3f}' for x in times)})", flush=True)

    run("torch BlockingAsyncStager (default)", lambda s: BlockingAsyncStager().stage(s))
    try:
        cached = BlockingAsyncStager(cache_staged_state_dict=True)
        run("torch cache_staged_state_dict=True", cached.stage)
    except RuntimeError as e:  # pins memory: needs an accelerator
        print(f"torch cache_staged_state_dict=True: fails here ({str(e)[:80]})")
    for threads in (1, 2, 4):
        run(f"ckptlake staging, {threads} threads, no cache",
            lambda s: staging.stage(s, cache_key=None, fallback=None, threads=threads).state)

    def with_cache(src: dict[str, Any], threads: int) -> dict[str, Any]:
        staged = staging.stage(src, cache_key=f"bench{threads}", fallback=None, threads=threads)
        staged.release()  # as LakeWriter does once its files are written
        return staged.state

    for threads in (1, 2, 4):
        run(f"ckptlake staging, {threads} threads, cache", lambda s: with_cache(s, threads))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
