"""A streaming read of a lake whose chunks come in ranged parts: the errors name what a
one-request read names."""
from __future__ import annotations

import random

import pytest

from ckptlake.errors import MissingChunk
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

MiB = 1 << 20


def test_a_missing_chunk_read_in_parts_is_named_like_one_read_whole() -> None:
    """A lake whose chunks are fetched as ranged parts (chunk size >= multipart threshold): a
    missing chunk object said "memory://.../chunks/.. does not exist" (exit 3, no version, no
    hint) instead of naming the chunk and the version (exit 5), as the one-request path does.
    (Found by the mutation review of core/reader.py.)"""
    lake = Lake(MemoryStore(), chunk_size=12 * MiB, multipart_threshold=10 * MiB,
                part_size=5 * MiB)
    with lake.writer("p/x", "w.bin") as f:
        f.write(random.Random(3).randbytes(25 * MiB))
    m = lake._manifest("p/x")
    first = m.files[0].chunks[0].digest
    lake.store.delete([layout.chunk_key(first)])
    with pytest.raises(MissingChunk) as e:
        lake.open("p/x").read(10)
    assert "p/x@v1" in e.value.message and e.value.exit_code == 5
