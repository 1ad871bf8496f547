"""Transfer settings and the memory bound they imply.

Memory bound (default settings: concurrency 8, chunk_size 16 MiB):

    peak RSS  <=  base + concurrency x chunk_size x 2

`base` is the interpreter with boto3 loaded (~60-70 MiB).  Each of `concurrency` workers holds
at most one chunk (an upload reads one chunk, hashes it and sends it; a download receives one
chunk, verifies it and writes it), and the HTTP layer may hold one more copy of that chunk while
it is sent or received: hence x 2.  At the defaults that is ~70 + 8 x 16 x 2 = 326 MiB in the
worst case and ~200 MiB measured (docs/benchmarks.md) — independent of file size, because no
part of the engine holds more than its one chunk per worker: a 20 GiB file uses the same memory
as a 4 GiB one.  Raise either setting and the bound grows by exactly this formula.

Chunks moved in parts (transfer/parts.py, chunks of 256 MiB and more) do not change it: a part
is a slice of the chunk its worker already holds, sent or filled in place.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..policy.config import DEFAULT_CHUNK_SIZE, DEFAULT_CONCURRENCY

BASE_MEMORY = 70 * 1024 * 1024


@dataclass(frozen=True)
class TransferConfig:
    concurrency: int = DEFAULT_CONCURRENCY
    chunk_size: int | None = None  # None: the lake header's chunk size
    max_bandwidth: float | None = None  # bytes per second for the whole process; None = no limit

    def memory_bound(self, chunk_size: int | None = None) -> int:
        return BASE_MEMORY + self.concurrency * (chunk_size or self.chunk_size
                                                 or DEFAULT_CHUNK_SIZE) * 2
