"""Rebuild tests/data/lake-format1.tar.gz: a small lake written by ckptlake before chunk
encodings existed (commit 1089132, main before the `codec` branch).  Run it with THAT code:

    git archive 1089132 | tar -x -C /tmp/old
    PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/tmp/old python tests/data/make_format1_lake.py OUT.tar.gz

The sources are deterministic (tests/test_format_compat.py regenerates them to compare).
"""
from __future__ import annotations

import os
import sys
import tarfile
import tempfile
from pathlib import Path


def sources(version: int) -> dict[str, bytes]:
    """Files of version 1 and 2: compressible text in a sliced file (2 chunks of 1 MiB + a
    tail), small packed files, a .safetensors file, an empty file; v2 changes one slice."""
    import struct
    import json

    lines = b"".join(b"step %06d loss %.4f\n" % (i, 1 / (i + 1)) for i in range(60_000))
    big = bytearray(lines[:(2 << 20) + 12345])
    if version == 2:
        big[(1 << 20) + 5:(1 << 20) + 9] = b"XXXX"
    tensor = struct.pack("<256f", *[(i % 17) / 16 for i in range(256)])
    header = json.dumps({"w": {"dtype": "F32", "shape": [16, 16],
                               "data_offsets": [0, len(tensor)]}}).encode()
    header += b" " * (-len(header) % 8)
    return {"big.log": bytes(big), "cfg/a.json": b'{"lr": 0.1}\n' * 10,
            "cfg/b.txt": b"version %d\n" % version, "empty": b"",
            "model.safetensors": struct.pack("<Q", len(header)) + header + tensor}


def main(out: str) -> None:
    import ckptlake

    with tempfile.TemporaryDirectory() as tmp:
        lake_dir = Path(tmp) / "lake"
        lake = ckptlake.open(f"file://{lake_dir}", chunk_size=1 << 20)
        for v in (1, 2):
            src = Path(tmp) / f"src{v}"
            for name, data in sources(v).items():
                (src / name).parent.mkdir(parents=True, exist_ok=True)
                (src / name).write_bytes(data)
            lake.push(src, "run/ckpt", step=v * 100, metrics={"loss": 1.0 / v},
                      aliases=["best"] if v == 1 else (), provenance=False)
        with tarfile.open(out, "w:gz") as tar:
            for path in sorted(lake_dir.rglob("*")):
                if ".ckptlake-locks" in path.parts:
                    continue
                tar.add(path, arcname=str(path.relative_to(lake_dir.parent)), recursive=False)


if __name__ == "__main__":
    sys.path.insert(0, os.environ.get("PYTHONPATH", ""))
    main(sys.argv[1])
