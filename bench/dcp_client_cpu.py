"""Client CPU of `dcp.save` through ckptlake.torch.LakeWriter, with no network or server: one
process, `Lake(MemoryStore())`, 3 saves of a 256 MiB float32 state (new values each), printing
wall time and CPU-s/GiB per save.  ROOT is the source tree to import ckptlake from, so two
trees (e.g. a `git archive` of main and this checkout) can be compared with the same venv:

    OMP_NUM_THREADS=1 .venv/bin/python bench/dcp_client_cpu.py "$PWD"
    OMP_NUM_THREADS=1 .venv/bin/python bench/dcp_client_cpu.py /tmp/main-tree
"""
import sys, time, resource, warnings
root = sys.argv[1]; sys.path.insert(0, root)
warnings.simplefilter("ignore")
import torch, torch.distributed.checkpoint as dcp
import ckptlake
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore
from ckptlake.torch import LakeWriter
assert ckptlake.__file__.startswith(root), ckptlake.__file__
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
lake = Lake(MemoryStore())
out = []
for rep in range(3):
    g = torch.Generator().manual_seed(rep)
    state = {"w": torch.rand(256 * 2**20 // 4 // 4096, 4096, generator=g)}
    c, t = cpu(), time.perf_counter()
    dcp.save(state, storage_writer=LakeWriter(lake, "x", step=rep))
    out.append((time.perf_counter() - t, (cpu() - c) * 4))
print(root, " ".join(f"{w:.2f}s/{c:.2f}cpu-s/GiB" for w, c in out))
