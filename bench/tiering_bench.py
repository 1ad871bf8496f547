"""The tiering plan for a synthetic lake of 1,000 versions (issue 16's goal: $/month before and
after, per class, in the dry run).  Not a timing benchmark: it prints what `ckptlake gc
--dry-run` would print for that lake, from the same plan code.

    python bench/tiering_bench.py            # the plan as gc --dry-run prints it
    python bench/tiering_bench.py --json     # the plan's `tiering` document

The lake lives in memory and its chunk objects are placeholders that the listing reports at
their declared sizes (gc's plan lists chunks, it never reads them), so 1.1 TiB costs nothing.

    team/llm/ckpt   800 versions, one every 6 h (200 days); each 1 GiB of its own (4 chunks of
                    256 MiB) + a 4 KiB config + one 256 MiB chunk every version shares (frozen
                    embeddings).  Rule: keep_all, keep_last 5, keep_best val_loss min 3,
                    tier {after: 30d, class: STANDARD_IA}; alias prod -> v100.
    team/llm/model  200 versions, one a day (200 days); each exports the weights of the
                    checkpoint of that day (2 of its 4 chunks, shared) and 256 MiB of its own.
                    Rule: keep_all,
                    tier {after: 90d, class: GLACIER_IR}; alias best -> v50.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ckptlake.core.catalog import set_alias  # noqa: E402
from ckptlake.format import layout  # noqa: E402
from ckptlake.format.manifest import ChunkRef, FileEntry, Manifest  # noqa: E402
from ckptlake.policy.retention import (KeepBest, RetentionPolicy, Rule, Tier)  # noqa: E402
from ckptlake.store.base import ObjectInfo  # noqa: E402
from ckptlake.store.memory import MemoryStore  # noqa: E402

MiB = 1 << 20
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


class SparseStore(MemoryStore):
    """A MemoryStore with storage classes whose chunk objects are empty placeholders listed at
    a declared size."""

    def __init__(self) -> None:
        super().__init__("tiering-bench", storage_classes=True)
        self.sizes: dict[str, int] = {}

    def add_chunk(self, digest: str, size: int) -> None:
        key = layout.chunk_key(digest)
        if key not in self.sizes:
            self.put(key, b"")
            self.sizes[key] = size

    def list(self, prefix: str = "", *, start_after: str | None = None
             ) -> Iterator[ObjectInfo]:
        for info in super().list(prefix, start_after=start_after):
            size = self.sizes.get(info.key)
            yield info if size is None else ObjectInfo(info.key, size, info.etag, info.modified,
                                                       info.storage_class)


def digest(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def build(store: SparseStore, *, ckpts: int = 800, models: int = 200, now: datetime = NOW,
          chunk: int = 256 * MiB) -> None:
    shared = digest("shared")
    store.add_chunk(shared, chunk)
    for n in range(1, ckpts + 1):
        own = [digest("ckpt", n, i) for i in range(4)]
        cfg = digest("cfg", n)
        for d in own:
            store.add_chunk(d, chunk)
        store.add_chunk(cfg, 4096)
        files = (FileEntry("model.bin", 4 * chunk, chunks=tuple(ChunkRef(d, chunk) for d in own)),
                 FileEntry("embed.bin", chunk, chunks=(ChunkRef(shared, chunk),)),
                 FileEntry("config.json", 4096, chunks=(ChunkRef(cfg, 4096),)))
        m = Manifest(artifact="team/llm/ckpt", version=n, kind="dir", hash="sha256",
                     files=files, step=500 * n, created=now - timedelta(hours=6 * (ckpts - n)),
                     metrics={"val_loss": round(3.0 - n / 1000 + (n * 7919 % 13) / 100, 4)})
        store.put(layout.version_key(m.artifact, n), m.encode())
    for n in range(1, models + 1):
        ck = 4 * n  # the checkpoint of that day
        shared_with_ckpt = [digest("ckpt", ck, i) for i in range(2)]
        head = digest("model", n)  # the export's own bytes
        store.add_chunk(head, chunk)
        files = (FileEntry("weights.bin", 2 * chunk,
                           chunks=tuple(ChunkRef(d, chunk) for d in shared_with_ckpt)),
                 FileEntry("export.bin", chunk, chunks=(ChunkRef(head, chunk),)))
        m = Manifest(artifact="team/llm/model", version=n, kind="dir", hash="sha256",
                     files=files, step=500 * ck, created=now - timedelta(days=models - n))
        store.put(layout.version_key(m.artifact, n), m.encode())
    set_alias(store, "team/llm/ckpt", "prod", min(100, ckpts))
    set_alias(store, "team/llm/model", "best", min(50, models))


def policy() -> RetentionPolicy:
    return RetentionPolicy(rules=(
        Rule(match="*/ckpt", keep_all=True, keep_last=5,
             keep_best=KeepBest(metric="val_loss", mode="min", count=3),
             tier=Tier(after=30 * 86400, storage_class="STANDARD_IA"), index=0),
        Rule(match="*/model", keep_all=True,
             tier=Tier(after=90 * 86400, storage_class="GLACIER_IR"), index=1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print the plan's tiering document")
    args = ap.parse_args()
    from ckptlake.cli.gc import plan_text
    from ckptlake.core.gc import plan_gc

    store = SparseStore()
    build(store)
    plan = plan_gc(store, policy(), now=NOW)
    if args.json:
        print(json.dumps(plan.tiering.to_dict() if plan.tiering else None, indent=2))
    else:
        print(plan_text(plan))


if __name__ == "__main__":
    main()
