"""The Lake: the typed library API that the CLI and training scripts call.

It validates arguments, applies defaults, and delegates to core/ (push, pull, catalog).  It never
prints: progress goes to a `Progress` object, results come back as small dataclasses, failures
are `CkptlakeError`s that carry their exit code.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
from pathlib import Path
from typing import Iterator, Sequence

from .core import catalog
from .core import pull as _pull
from .core import push as _push
from .core.scan import scan
from .errors import UsageError
from .format.refs import Ref, parse_ref, validate_alias, validate_artifact
from .policy.config import DEFAULT_CONCURRENCY, check_chunk_size, check_concurrency
from .results import AliasResult, ArtifactInfo, PullResult, PushResult, VersionInfo
from .store.base import Store
from .transfer.progress import NullProgress, Progress
from .transfer.throttle import Throttle


def _check_metrics(metrics: dict[str, float] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in (metrics or {}).items():
        if not isinstance(k, str) or not k:
            raise UsageError("metric names must be non-empty strings")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UsageError(f"metric {k!r} must be a finite number, got {v!r}")
        out[k] = float(v)
    return out


def _check_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not k:
            raise UsageError("metadata keys must be non-empty strings")
        out[k] = str(v)
    return out


class Lake:
    """One lake: a store plus the format rules.  Safe to use from several threads."""

    def __init__(self, store: Store, *, chunk_size: int | None = None,
                 concurrency: int | None = None, max_bandwidth: float | None = None,
                 origin: str = "explicit") -> None:
        if chunk_size is not None:
            check_chunk_size(chunk_size)
        if concurrency is not None:
            check_concurrency(concurrency)
        self.store = store
        self.url = store.url
        self.origin = origin
        self.chunk_size = chunk_size  # None: the lake header's default
        self.concurrency = concurrency or DEFAULT_CONCURRENCY
        if max_bandwidth is not None and max_bandwidth <= 0:
            raise UsageError(f"max bandwidth must be positive, got {max_bandwidth}")
        # One bucket for the whole Lake: the limit holds across concurrent operations.
        self.throttle = Throttle(max_bandwidth)
        # Retries happen in the store's retry layer; route them to whoever is watching.
        self._watchers: set[Progress] = set()
        self._watch_lock = threading.Lock()
        if hasattr(store, "on_retry"):
            store.on_retry = self._report_retry  # type: ignore[attr-defined]

    def _report_retry(self, key: str, attempt: int, error: str, delay: float) -> None:
        with self._watch_lock:
            watchers = list(self._watchers)
        for progress in watchers:
            progress.retry(key=key, attempt=attempt, error=error, delay=delay)

    @contextlib.contextmanager
    def _watching(self, progress: Progress | None) -> Iterator[Progress]:
        progress = progress or NullProgress()
        with self._watch_lock:
            self._watchers.add(progress)
        try:
            yield progress
        finally:
            with self._watch_lock:
                self._watchers.discard(progress)

    def __repr__(self) -> str:
        return f"Lake({self.url!r})"

    def __enter__(self) -> "Lake":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def push(self, source: str | Path, artifact: str, *, step: int | None = None,
             metrics: dict[str, float] | None = None, metadata: dict[str, str] | None = None,
             aliases: Sequence[str] = (), exclude: Sequence[str] = (),
             follow_symlinks: bool = False, progress: Progress | None = None) -> PushResult:
        """Upload a file or directory as the next version of `artifact`.

        Only chunks the lake does not hold yet are sent.  The version becomes visible at once
        and whole when the manifest is written, after every chunk; if anything fails (or a file
        changes while it is read) nothing is committed and a re-run re-sends only what is
        missing.
        """
        validate_artifact(artifact)
        for name in aliases:
            validate_alias(name)
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
            raise UsageError(f"step must be a non-negative integer, got {step!r}")
        tree = scan(source, exclude=tuple(exclude), follow_symlinks=follow_symlinks)
        with self._watching(progress) as progress:
            return _push.push(self.store, tree, artifact, chunk_size=self.chunk_size,
                              concurrency=self.concurrency, step=step,
                              metrics=_check_metrics(metrics),
                              metadata=_check_metadata(metadata), aliases=list(aliases),
                              progress=progress, lake_url=self.url, throttle=self.throttle)

    def pull(self, ref: str | Ref, destination: str | Path, *, force: bool = False,
             progress: Progress | None = None) -> PullResult:
        """Restore one version into `destination`.

        A directory artifact restores into the directory `destination`; a file artifact
        restores to the path `destination` (or into it, if it is an existing directory).
        """
        m = catalog.resolve(self.store, ref)
        with self._watching(progress) as progress:
            return _pull.pull(self.store, m, os.fspath(destination), force=force,
                              concurrency=self.concurrency, progress=progress,
                              lake_url=self.url, throttle=self.throttle)

    def artifacts(self, prefix: str = "") -> list[ArtifactInfo]:
        """Artifacts with at least one version, sorted by name."""
        return catalog.artifacts(self.store, prefix)

    def versions(self, artifact: str) -> list[VersionInfo]:
        """Every version of an artifact, oldest first, with aliases."""
        return catalog.versions(self.store, artifact)

    ls = versions

    def resolve(self, ref: str | Ref) -> VersionInfo:
        """The version a reference names right now (latest, vN, step=N or an alias)."""
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        m = catalog.resolve(self.store, ref)
        return catalog.version_info(m, catalog.aliases(self.store, m.artifact))

    def alias(self, ref: str | Ref, name: str) -> AliasResult:
        """Point alias `name` at the version `ref` resolves to (compare-and-swap)."""
        validate_alias(name)
        m = catalog.resolve(self.store, ref)
        return catalog.set_alias(self.store, m.artifact, name, m.version)

    def close(self) -> None:
        self.store.close()
