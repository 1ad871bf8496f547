"""The lake operations: push, pull, ls, resolve, alias — over the format and a store.

(Skeleton: bodies land in the next commit.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from .format.refs import Ref
from .results import AliasResult, ArtifactInfo, PullResult, PushResult, VersionInfo
from .store.base import Store
from .transfer.progress import Progress


class Lake:
    """One lake: a store plus the format rules.  Thread-safe for concurrent operations."""

    def __init__(self, store: Store, *, chunk_size: int | None = None,
                 concurrency: int | None = None) -> None:
        self.store = store
        self.url = store.url

    def push(self, source: str | Path, artifact: str, *, step: int | None = None,
             metrics: dict[str, float] | None = None, metadata: dict[str, str] | None = None,
             aliases: Sequence[str] = (), exclude: Sequence[str] = (),
             follow_symlinks: bool = False, progress: Progress | None = None) -> PushResult:
        """Upload a file or directory as the next version of `artifact`."""
        raise NotImplementedError

    def pull(self, ref: str | Ref, destination: str | Path, *, force: bool = False,
             progress: Progress | None = None) -> PullResult:
        """Restore one version into `destination` (a directory, or a file path for file artifacts)."""
        raise NotImplementedError

    def artifacts(self, prefix: str = "") -> list[ArtifactInfo]:
        raise NotImplementedError

    def versions(self, artifact: str) -> list[VersionInfo]:
        raise NotImplementedError

    def resolve(self, ref: str | Ref) -> VersionInfo:
        raise NotImplementedError

    def alias(self, ref: str | Ref, name: str) -> AliasResult:
        raise NotImplementedError

    def close(self) -> None:
        self.store.close()
