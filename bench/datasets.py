"""Deterministic data sets, built once under bench/.work/data/<name>/, and their manifests.

Bytes come from random.Random seeded with "<dataset>:<path>", so every machine builds the same
incompressible, non-repeating files. A file already present with the right size is kept.
The manifest (path -> size, sha256) is computed once and cached next to the data.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
CHUNK = 16 * MiB


def _small(dataset: str, n: int, fmt: str) -> list[tuple[str, int]]:
    rng = random.Random(f"{dataset}:sizes")
    return [(fmt.format(i=i, d=i // 100), rng.randint(4 * KiB, 64 * KiB)) for i in range(n)]


def _ckpt1g() -> list[tuple[str, int]]:
    big = [(f"model-{i:05d}-of-00002.safetensors", 448 * MiB) for i in (1, 2)]
    optim = [(f"optimizer/shard-{i}.pt", 32 * MiB) for i in range(4)]
    return big + optim + _small("ckpt1g", 100, "extra/file-{i:03d}.bin")


def _ckpt2g() -> list[tuple[str, int]]:
    big = [(f"model-{i:05d}-of-00004.safetensors", 512 * MiB) for i in range(1, 5)]
    return big + _small("ckpt2g", 200, "extra/file-{i:03d}.bin")


DATASETS = {
    "ckpt1g": ("1 GiB checkpoint dir: 2 x 448 MiB + 4 x 32 MiB + 100 files of 4-64 KiB", _ckpt1g),
    "ckpt2g": ("2 GiB checkpoint dir: 4 x 512 MiB + 200 files of 4-64 KiB", _ckpt2g),
    "file4g": ("one 4 GiB file", lambda: [("blob.bin", 4 * GiB)]),
    "small10k": ("10,000 files of 4-64 KiB in 100 dirs",
                 lambda: _small("small10k", 10_000, "d{d:02d}/f{i:05d}.bin")),
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(4 * MiB)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


@dataclass
class Dataset:
    name: str
    description: str
    root: Path
    manifest: dict[str, tuple[int, str]]  # relative posix path -> (size, sha256)

    @property
    def total_bytes(self) -> int:
        return sum(size for size, _ in self.manifest.values())

    @property
    def files(self) -> int:
        return len(self.manifest)

    def verify(self, dest: Path) -> str | None:
        """None if dest holds exactly the data set's files with the same bytes, else why not."""
        found: dict[str, Path] = {}
        for dirpath, _, names in os.walk(dest):
            for n in names:
                p = Path(dirpath, n)
                found[p.relative_to(dest).as_posix()] = p
        missing = sorted(set(self.manifest) - set(found))
        extra = sorted(set(found) - set(self.manifest))
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if extra:
            problems.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
        bad = []
        for rel, p in found.items():
            if rel in self.manifest:
                size, digest = self.manifest[rel]
                if p.stat().st_size != size or sha256_file(p) != digest:
                    bad.append(rel)
        if bad:
            problems.append(f"{len(bad)} with wrong bytes (e.g. {sorted(bad)[0]})")
        return "; ".join(problems) or None


def _write_random(path: Path, size: int, seed: str) -> None:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        left = size
        while left:
            n = min(CHUNK, left)
            f.write(rng.randbytes(n))
            left -= n
    tmp.rename(path)


def build(name: str, data_dir: Path, log=print) -> Dataset:
    description, layout = DATASETS[name]
    files = layout()
    root = data_dir / name
    wanted = {rel for rel, _ in files}
    for dirpath, _, names in os.walk(root):  # e.g. a .part left by an interrupted build
        for n in names:
            p = Path(dirpath, n)
            if p.relative_to(root).as_posix() not in wanted:
                p.unlink()
    written = 0
    for rel, size in files:
        p = root / rel
        if not (p.is_file() and p.stat().st_size == size):
            _write_random(p, size, f"{name}:{rel}")
            written += size
    if written:
        log(f"[data] {name}: wrote {written / MiB:.0f} MiB into {root}")
    cache = data_dir / f"{name}.manifest.json"
    stamp = {rel: [size, (root / rel).stat().st_mtime_ns] for rel, size in files}
    try:
        cached = json.loads(cache.read_text())
        if cached["stamp"] == stamp:
            manifest = {k: tuple(v) for k, v in cached["manifest"].items()}
            return Dataset(name, description, root, manifest)
    except (OSError, ValueError, KeyError):
        pass
    log(f"[data] {name}: hashing {len(files)} files")
    manifest = {rel: (size, sha256_file(root / rel)) for rel, size in files}
    cache.write_text(json.dumps({"stamp": stamp, "manifest": manifest}))
    return Dataset(name, description, root, manifest)
