"""torch.save / torch.load of one file in a lake, streamed: `save` serialises straight into
chunk uploads (core/streampush.py, no local file), `load` reads through `Lake.open`, chunk by chunk
(or, with max_buffer, the whole file in parallel into memory first: core/whole.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..core.values import check_arg
from ._args import check_lake, check_version_fields

if TYPE_CHECKING:
    from ..format.refs import Ref
    from ..lake import Lake
    from ..results import PushResult


def save(obj: Any, lake: "Lake", artifact: str, path: str = "model.pt", *,
         step: int | None = None, metrics: dict[str, float] | None = None,
         metadata: dict[str, str] | None = None, aliases: Sequence[str] = (),
         **options: Any) -> "PushResult":
    """`torch.save(obj)` as the next version of `artifact`, one file at `path`.  Commits once
    the whole file is stored; if torch.save raises, nothing is committed.  `options` go to
    `Lake.writer` (parents, inputs, compression, ...), which checks them all before
    torch.save runs."""
    check_lake(lake)
    metrics, metadata, aliases = check_version_fields(metrics, metadata, aliases)
    with lake.writer(artifact, path, step=step, metrics=metrics, metadata=metadata,
                     aliases=aliases, **options) as f:
        torch.save(obj, f)
    return f.result


def load(lake: "Lake", ref: "str | Ref", path: str | None = "model.pt", *,
         map_location: Any = None, weights_only: bool = True,
         max_buffer: int | None = 0) -> Any:
    """`torch.load` of `path` in version `ref` (path None: the version's only file).
    `weights_only=True` (torch's default) refuses pickled code; pass False only for
    versions you trust.

    The file streams chunk by chunk through `Lake.open` (reused, verified chunk buffers;
    memory a few chunks).  `max_buffer`: a file of at most that many bytes is instead fetched
    whole first (`Lake.open(max_buffer=...)`, core/whole.py: all chunks in parallel, decoded
    into place in one buffer, verified) and torch copies its storages out of that buffer: the
    peak is about twice the file.  None: 40 % of the memory available now (the cgroup's limit
    counts; core/whole.default_max_buffer), which keeps that peak under 80 % of it.
    Why streaming is the default: on the 2-core test machine it took less CPU and time than
    the whole-file read, whose file-sized buffer costs its page faults (1 GiB: 3.5 vs 3.9
    CPU-s/GiB, docs/benchmarks.md, "whole-file load"); reading whole pays where fetching, not
    the client's CPU, is the limit (many cores, a distant store)."""
    check_lake(lake)
    check_arg("path", path, "path", optional=True, empty=True)  # inside the version
    # (0 would be False: the pickle's code would run)
    weights_only = check_arg("weights_only", weights_only, "bool")
    bound = check_arg("max_buffer", max_buffer, "int", optional=True, minimum=0)
    if bound is None:
        from ..core.whole import default_max_buffer

        bound = default_max_buffer()
    with lake.open(ref, path, max_buffer=bound) as f:
        return torch.load(f, map_location=map_location, weights_only=weights_only)
