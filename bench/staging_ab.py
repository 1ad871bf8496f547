"""`dcp.async_save` staging into fresh buffers, with and without `staging.populate`
(ckptlake/torch/staging.py): PROCS processes at once (the ranks of one machine), each staging a
SIZE MiB float32 tensor into new buffers REPS times per variant, alternating the order every rep.
Prints each process's median wall and CPU per variant.

    .venv/bin/python bench/staging_ab.py [SIZE_MIB=1024] [REPS=6] [PROCS=2]
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(size_mib: int, reps: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(ROOT))
    import torch

    from ckptlake.torch import staging

    src = {"w": torch.rand(size_mib * (1 << 20) // 4)}
    res: dict[str, list[tuple[float, float]]] = {"fault": [], "populate": []}
    for rep in range(reps):
        for mode in (["fault", "populate"] if rep % 2 == 0 else ["populate", "fault"]):
            staging._madvise = False if mode == "fault" else None  # False: populate is off
            t0, c0 = time.perf_counter(), time.process_time()
            st = staging.stage(src, cache_key=None, fallback=None)
            res[mode].append((time.perf_counter() - t0, time.process_time() - c0))
            assert torch.equal(st.state["w"], src["w"])
            del st
    for mode, xs in res.items():
        print(f"pid {os.getpid()} {mode:8s}: wall {statistics.median(x[0] for x in xs):.3f} s, "
              f"CPU {statistics.median(x[1] for x in xs):.3f} s "
              f"({', '.join(f'{x[0]:.3f}' for x in xs)})", flush=True)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(int(sys.argv[2]), int(sys.argv[3]))
        return
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    procs = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    children = [subprocess.Popen([sys.executable, __file__, "--child", str(size), str(reps)])
                for _ in range(procs)]
    sys.exit(max(p.wait() for p in children))


if __name__ == "__main__":
    main()
