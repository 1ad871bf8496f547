"""ckptlake: a versioned checkpoint and artifact lake on any S3-compatible bucket.

    import ckptlake
    lake = ckptlake.open()                      # --lake > $CKPTLAKE_LAKE > config > embedded default
    r = lake.push("ckpt/step_2000", "gpt2/run-7/ckpt", step=2000, metrics={"loss": 2.31})
    lake.pull("gpt2/run-7/ckpt@step=2000", "restore/")

Imports stay light (no boto3, no rich) so `ckptlake --help` and `import ckptlake` are fast.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import (AccessDenied, CkptlakeError, Conflict, IntegrityError, NotFound,
                     PolicyRefusal, TransferError, UsageError)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .lake import Lake

__all__ = ["open", "Lake", "__version__", "CkptlakeError", "UsageError", "NotFound",
           "AccessDenied", "IntegrityError", "Conflict", "PolicyRefusal", "TransferError"]


def open(lake: str | None = None, *, config: str | None = None, endpoint_url: str | None = None,
         profile: str | None = None, region: str | None = None, chunk_size: int | None = None,
         concurrency: int | None = None, max_bandwidth: float | None = None) -> "Lake":
    """Open a lake, resolving it like the CLI: `lake` > $CKPTLAKE_LAKE > config `lake:` > default.

    Keyword options override the config file's values.  The returned Lake's `origin` says how
    the lake was chosen (the CLI prints it so nobody pushes to the embedded default by mistake).
    """
    from .lake import Lake
    from .policy.config import load_config, resolve_lake
    from .store import open_store

    cfg = load_config(config)
    url, origin = resolve_lake(lake, cfg)
    concurrency = concurrency or cfg.concurrency
    store = open_store(url, endpoint_url=endpoint_url or cfg.endpoint_url,
                       profile=profile or cfg.profile, region=region or cfg.region,
                       max_connections=(concurrency or 8) + 4)
    return Lake(store, chunk_size=chunk_size or cfg.chunk_size, concurrency=concurrency,
                max_bandwidth=max_bandwidth or cfg.max_bandwidth, origin=origin)


def __getattr__(name: str):  # lazy: `ckptlake.Lake` without importing the engine up front
    if name == "Lake":
        from .lake import Lake

        return Lake
    raise AttributeError(name)
