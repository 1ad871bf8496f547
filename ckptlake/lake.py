"""The Lake: the typed library API that the CLI and training scripts call.

It validates arguments, applies defaults, and delegates to core/ (push, pull, catalog).  It never
prints: progress goes to a `Progress` object, results come back as small dataclasses, failures
are `CkptlakeError`s that carry their exit code.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from .core import catalog
from .core import pull as _pull
from .core import push as _push
from .core.scan import scan
from .errors import CkptlakeError, UsageError
from .format import layout
from .format.refs import Ref, parse_ref, validate_alias, validate_artifact
from .policy.config import (DEFAULT_CONCURRENCY, DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE,
                            check_chunk_size, check_concurrency, check_part_settings)
from .results import (AliasResult, ArtifactInfo, PullResult, PushResult, VerifyResult,
                      VersionInfo)
from .store.base import Store
from .transfer.parts import Parts
from .transfer.progress import NullProgress, Progress

from .transfer.throttle import Throttle

if TYPE_CHECKING:
    from datetime import datetime
    from typing import Callable

    from .core.gc import GcPlan, GcResult
    from .core.tombstones import Tombstone
    from .policy.egress import EgressEstimate, EgressPolicy
    from .policy.retention import RetentionPolicy
    from .checkpointer import Checkpointer
    from .core.diff import DiffResult
    from .core.lineage import LineageGraph
    from .core.shards import PendingStep, ShardPushResult
    from .core.show import VersionDetail


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
                 multipart_threshold: int | None = None, part_size: int | None = None,
                 origin: str = "explicit") -> None:
        if chunk_size is not None:
            check_chunk_size(chunk_size)
        if concurrency is not None:
            check_concurrency(concurrency)
        check_part_settings(multipart_threshold, part_size)
        self.store = store
        self.url = store.url
        self.origin = origin
        self.chunk_size = chunk_size  # None: the lake header's default
        self.concurrency = concurrency or DEFAULT_CONCURRENCY
        if max_bandwidth is not None and max_bandwidth <= 0:
            raise UsageError(f"max bandwidth must be positive, got {max_bandwidth}")
        # One bucket for the whole Lake: the limit holds across concurrent operations.
        self.throttle = Throttle(max_bandwidth)
        # Chunk objects of at least the threshold move as multipart uploads / ranged GETs.
        self.parts = Parts(threshold=multipart_threshold or DEFAULT_MULTIPART_THRESHOLD,
                           part_size=part_size or DEFAULT_PART_SIZE, workers=self.concurrency)
        # Retries happen in the store's retry layer; route them to whoever is watching.
        self._watchers: set[Progress] = set()
        self._watch_lock = threading.Lock()
        # Gets the retries no operation's `progress` is watching (listing, reading manifests):
        # the CLI sets it so every command shows its retries, not only push and pull.
        self.retry_listener: Progress | None = None
        if hasattr(store, "on_retry"):
            store.on_retry = self._report_retry  # type: ignore[attr-defined]

    def _report_retry(self, key: str, attempt: int, error: str, delay: float) -> None:
        with self._watch_lock:
            watchers = list(self._watchers)
        if not watchers and self.retry_listener is not None:
            watchers = [self.retry_listener]
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

    def exists(self) -> bool:
        """Whether a lake is here: its header (written by the first push), or at least one
        artifact of a lake whose header was lost.  Readers use it to tell "no lake at this
        location" (a typo, most likely) from an empty lake."""
        from .errors import NotFound

        try:
            self.store.stat(layout.HEADER_KEY)
            return True
        except NotFound:
            return next(iter(self.store.list(layout.ARTIFACTS_PREFIX)), None) is not None

    def __repr__(self) -> str:
        return f"Lake({self.url!r})"

    def __enter__(self) -> "Lake":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def push(self, source: str | Path, artifact: str, *, step: int | None = None,
             metrics: dict[str, float] | None = None, metadata: dict[str, str] | None = None,
             aliases: Sequence[str] = (), exclude: Sequence[str] = (),
             follow_symlinks: bool = False, progress: Progress | None = None,
             parents: Sequence[Any] = (), relation: str = "derived-from",
             inputs: Sequence[str | dict[str, str]] = (),
             meta_file: str | Path | None = None,
             provenance: bool | dict[str, Any] = True) -> PushResult:
        """Upload a file or directory as the next version of `artifact`.

        Only chunks the lake does not hold yet are sent.  The version becomes visible at once
        and whole when the manifest is written, after every chunk; if anything fails (or a file
        changes while it is read) nothing is committed and a re-run re-sends only what is
        missing.

        Lineage: `parents` are references ("REF" or "REF:RELATION", Refs, or (ref, relation)
        pairs; `relation` is the default), resolved now to fixed version numbers (NotFound if
        one does not exist); `inputs` are URIs ("URI#DIGEST" pins a digest).  `meta_file` adds
        a JSON/YAML mapping to `metadata` (explicit `metadata` keys win).  `provenance` (git
        state of the source, command line, host, user, Python and ckptlake versions) is
        collected unless False; a dict adds to or overrides what is collected.
        """
        from .core import lineage as _lineage
        from .core import provenance as _provenance
        from .format.safetensors import TensorObserver

        validate_artifact(artifact)
        for name in aliases:
            validate_alias(name)
        if step is not None:
            layout.check_step(step)
        input_items = tuple(dict(i) if isinstance(i, dict) else _lineage.parse_input(i)
                            for i in inputs)
        all_metadata = {**(_provenance.load_meta_file(meta_file) if meta_file else {}),
                        **(metadata or {})}
        parent_edges = _lineage.resolve_parents(self.store, parents, relation=relation) \
            if parents else ()
        tree = scan(source, exclude=tuple(exclude), follow_symlinks=follow_symlinks)
        fields: dict[str, Any] = {"parents": parent_edges, "inputs": input_items}
        if provenance is not False:
            fields["provenance"] = {**_provenance.collect(source),
                                    **(provenance if isinstance(provenance, dict) else {})}
        tensors = TensorObserver((f.path, f.abspath) for f in tree.files)
        with self._watching(progress) as progress:
            result = _push.push(self.store, tree, artifact, chunk_size=self.chunk_size,
                                concurrency=self.concurrency, step=step,
                                metrics=_check_metrics(metrics),
                                metadata=_check_metadata(all_metadata), aliases=list(aliases),
                                progress=progress, lake_url=self.url, throttle=self.throttle,
                                parts=self.parts, observers=[tensors] if tensors else [],
                                manifest_fields=fields)
        warnings = self._after_commit(artifact, result.version)
        return dataclasses.replace(result, warnings=[*result.warnings, *warnings]) \
            if warnings else result

    def _after_commit(self, artifact: str, version: int) -> list[str]:
        """Write the indexes derived from the committed manifest (docs/format.md, "Indexes"):
        lineage markers under each parent, then the listing summary.

        The version is committed whatever happens here, so failures become warnings rather
        than errors (a re-run would push a second version): without its markers the version is
        missing from `lineage --down` of its parents; without its summary, `ls` reads its
        manifest instead.
        """
        from .core import lineage as _lineage
        from .core import summary as _summary

        warnings = []
        try:
            m = catalog.load_manifest(self.store, artifact, version)
        except CkptlakeError as exc:
            return [f"could not re-read {artifact}@v{version} to index it: {exc}"]
        try:
            _lineage.write_child_markers(self.store, m)
        except CkptlakeError as exc:
            warnings.append(f"{artifact}@v{version} is committed, but its lineage markers could "
                            f"not be written (lineage --down of its parents will miss it): {exc}")
        try:
            _summary.write_summary(self.store, m)
        except CkptlakeError as exc:
            warnings.append(f"{artifact}@v{version} is committed, but its listing summary "
                            f"could not be written (ls reads its manifest instead): {exc}")
        return warnings

    def pull(self, ref: str | Ref, destination: str | Path, *, force: bool = False,
             progress: Progress | None = None, egress: "EgressPolicy | None" = None,
             yes: bool = False, confirm: "Callable[[EgressEstimate], bool] | None" = None,
             on_estimate: "Callable[[EgressEstimate], None] | None" = None) -> PullResult:
        """Restore one version into `destination`.

        A directory artifact restores into the directory `destination`; a file artifact
        restores to the path `destination` (or into it, if it is an existing directory).

        egress: an egress policy (policy/egress.py) to apply before anything is downloaded:
        the estimate goes to `on_estimate` (the CLI warns with it); above
        `confirm_above_usd` the pull goes on only with `yes=True` or if `confirm(estimate)`
        returns True, else raises PolicyRefusal.  None (the default): no egress check.
        """
        m = catalog.resolve(self.store, ref)
        if egress is not None:
            from .core import egress as _egress

            est = _egress.estimate_pull(self.store, m, os.fspath(destination), egress)
            if on_estimate is not None:
                on_estimate(est)
            _egress.enforce(est, yes=yes, confirm=confirm)
        with self._watching(progress) as progress:
            return _pull.pull(self.store, m, os.fspath(destination), force=force,
                              concurrency=self.concurrency, progress=progress,
                              lake_url=self.url, throttle=self.throttle, parts=self.parts)

    def artifacts(self, prefix: str = "") -> list[ArtifactInfo]:
        """Artifacts with at least one version, sorted by name."""
        return catalog.artifacts(self.store, prefix)

    def versions(self, artifact: str, *, where: Sequence[str] = (), sort: str | None = None,
                 limit: int | None = None) -> list[VersionInfo]:
        """Every version of an artifact, oldest first, with aliases.

        `where` ("val_loss<2.5", "step>=1000": all must hold), `sort` ("val_loss",
        "-val_loss") and `limit` select among them (see core/query.py).
        """
        found = catalog.versions(self.store, artifact)
        if not where and sort is None and limit is None:
            return found
        from .core.query import select

        return select(found, where=where, sort=sort, limit=limit)

    ls = versions

    def resolve(self, ref: str | Ref) -> VersionInfo:
        """The version a reference names right now (latest, vN, step=N or an alias)."""
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        m = catalog.resolve(self.store, ref)
        return catalog.version_info(m, catalog.aliases(self.store, m.artifact))

    def alias(self, ref: str | Ref, name: str) -> AliasResult:
        """Point alias `name` at the version `ref` resolves to (compare-and-swap).

        NotFound if a gc deleted that version meanwhile; the alias is then put back as it was
        (docs/format.md, "Alias record")."""
        validate_alias(name)
        m = catalog.resolve(self.store, ref)
        return catalog.set_alias(self.store, m.artifact, name, m.version)

    # ---- training nodes (issue 6): sharded commits, async checkpointer --------------------

    def push_shard(self, source: str | Path, artifact: str, *, step: int, rank: int,
                   world: int, metrics: dict[str, float] | None = None,
                   metadata: dict[str, str] | None = None, aliases: Sequence[str] = (),
                   exclude: Sequence[str] = (), follow_symlinks: bool = False,
                   progress: Progress | None = None, stale_after: float | None = None,
                   wait_seconds: float | None = None) -> "ShardPushResult":
        """Push rank `rank`'s files of a checkpoint written by `world` ranks at `step`.

        The version is committed exactly once, when the last rank's record is in (see
        docs/format.md, "Sharded commits"); until then `pending()` lists the step.  Ranks keep
        their relative paths: they must write distinct file names (or identical bytes).
        Pushing a rank twice is harmless.  `result.version` is None while ranks are missing.
        """
        from .core import shards

        validate_artifact(artifact)
        for name in aliases:
            validate_alias(name)
        layout.check_step(step)
        for what, n in (("rank", rank), ("world", world)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise UsageError(f"{what} must be a non-negative integer, got {n!r}")
        if not 0 <= rank < world:
            raise UsageError(f"shard rank must be in 0..{world - 1} for a world of {world}, "
                             f"got {rank}")
        from .format.safetensors import TensorObserver

        tree = scan(source, exclude=tuple(exclude), follow_symlinks=follow_symlinks)
        tensors = TensorObserver((f.path, f.abspath) for f in tree.files)
        with self._watching(progress) as progress:
            result = shards.push_shard(
                self.store, tree, artifact, step=step, rank=rank, world=world,
                chunk_size=self.chunk_size, concurrency=self.concurrency,
                metrics=_check_metrics(metrics), metadata=_check_metadata(metadata),
                aliases=list(aliases), progress=progress, lake_url=self.url,
                stale_after=shards.DEFAULT_STALE_AFTER if stale_after is None else stale_after,
                wait_seconds=wait_seconds, throttle=self.throttle, parts=self.parts,
                observers=[tensors] if tensors else [])
        if result.committed_here and result.version is not None:
            self._after_commit(artifact, result.version)
        return result

    def pending(self, artifact: str | None = None) -> list["PendingStep"]:
        """Sharded steps without a committed version (ranks missing, or a commit under way)."""
        from .core import shards

        if artifact is not None:
            validate_artifact(artifact)
        return shards.pending(self.store, artifact)

    def checkpointer(self, artifact: str, **options: Any) -> "Checkpointer":
        """An asynchronous checkpointer for `artifact`: `save()`/`save_state()` return at once
        and upload in the background (see ckptlake.checkpointer.Checkpointer for options)."""
        from .checkpointer import Checkpointer

        return Checkpointer(self, artifact, **options)

    def lineage(self, ref: str | Ref, *, direction: str = "up",
                depth: int | None = None) -> "LineageGraph":
        """Ancestors (`up`), descendants (`down`) or `both` of a version, with inputs as leaves;
        versions deleted by gc appear with status "expired", unknown ones as "missing".
        Reads listings, manifests and tombstones only, never a data chunk: no egress guard."""
        from .core.lineage import lineage

        return lineage(self.store, ref, direction=direction, depth=depth)

    def show(self, ref: str | Ref) -> "VersionDetail":
        """Everything about one version: files, totals, step, metrics, metadata, provenance,
        aliases, parents, inputs and children."""
        from .core.show import show

        return show(self.store, ref)

    def diff(self, a: str | Ref, b: str | Ref, *, values: bool = False,
             egress: "EgressPolicy | None" = None, yes: bool = False,
             confirm: "Callable[[EgressEstimate], bool] | None" = None,
             on_estimate: "Callable[[EgressEstimate], None] | None" = None) -> "DiffResult":
        """What changed from version `a` to version `b` (any two artifacts): metadata, files,
        shared bytes and, for .safetensors files, tensors, all from the two manifests.
        `values=True` also fetches the changed tensors' bytes (only those) for value
        statistics; it needs numpy.

        egress: with `values=True`, the egress guard of `pull` (see there): the tensor bytes
        about to be fetched are estimated and priced first (`on_estimate`), and above
        `confirm_above_usd` the diff fetches nothing unless `yes` or `confirm(estimate)`,
        raising PolicyRefusal.  None (the default): no egress check.
        """
        from .core import diff as _diff

        ma, mb = catalog.resolve(self.store, a), catalog.resolve(self.store, b)
        if values and egress is not None:
            from .core import egress as _egress

            est = _egress.estimate_diff(self.store, ma, mb, egress)
            if est.bytes_to_download:
                _diff.require_numpy()  # a missing numpy fails before any cost is put to anyone
            if on_estimate is not None:
                on_estimate(est)
            _egress.enforce(est, yes=yes, confirm=confirm)
        return _diff.diff(self.store, ma, mb, values=values)

    # ---- retention, gc and egress (issue 4) -------------------------------------------------

    def estimate_pull(self, ref: str | Ref, destination: str | Path, *,
                      egress: "EgressPolicy | None" = None) -> "EgressEstimate":
        """What pulling `ref` into `destination` would download, over which route, at what
        cost; nothing is downloaded or created.  egress None: the config file's policy."""
        from .core import egress as _egress
        from .policy.config import load_config
        from .policy.egress import load_egress

        m = catalog.resolve(self.store, ref)
        policy = egress if egress is not None else load_egress(load_config())
        return _egress.estimate_pull(self.store, m, os.fspath(destination), policy)

    def estimate_diff(self, a: str | Ref, b: str | Ref, *,
                      egress: "EgressPolicy | None" = None) -> "EgressEstimate":
        """What `diff(a, b, values=True)` would download (the changed tensors' bytes, both
        sides), over which route, at what cost; reads the two manifests only.  egress None:
        the config file's policy."""
        from .core import egress as _egress
        from .policy.config import load_config
        from .policy.egress import load_egress

        ma, mb = catalog.resolve(self.store, a), catalog.resolve(self.store, b)
        policy = egress if egress is not None else load_egress(load_config())
        return _egress.estimate_diff(self.store, ma, mb, policy)

    def gc_plan(self, policy: "RetentionPolicy | str | Path | None" = None, *,
                match: str | None = None, now: "datetime | None" = None) -> "GcPlan":
        """What `gc` would delete now and why; reads only.

        policy: a RetentionPolicy, a path to a YAML file with a `retention:` section, or None
        for the config file's.  match: consider only artifacts matching this glob.
        """
        from .core.gc import plan_gc

        return plan_gc(self.store, _retention(policy), now=now, match=match)

    def gc(self, plan: "GcPlan", *, on_event: "Callable[[str], None] | None" = None
           ) -> "GcResult":
        """Carry out a plan from `gc_plan` (docs/format.md, "Deleting (gc)"): delete its
        versions (leaving tombstones), then sweep/condemn unreferenced chunks.  Safe to
        interrupt and re-run, and safe next to concurrent pushes."""
        from .core.gc import execute

        return execute(self.store, plan, on_event=on_event)

    def expired(self, artifact: str) -> "list[Tombstone]":
        """Versions of `artifact` that gc deleted (their tombstones), oldest first."""
        return catalog.expired(self.store, artifact)

    def expired_counts(self, prefix: str = "") -> dict[str, int]:
        """artifact -> number of its versions gc deleted."""
        return catalog.expired_counts(self.store, prefix)

    def verify(self, ref: str | Ref | None = None, *, read_data: bool = False,
               subset: "str | float | None" = None, seed: int | None = None,
               progress: Progress | None = None) -> "VerifyResult":
        """Check that versions can be restored (restic's `check`; core/verify.py says what is
        checked and what it costs).

        ref: None for the whole lake, "ARTIFACT" for every version, alias and shard step of
        one artifact, "ARTIFACT@SELECTOR" (or a Ref) for one version.  read_data: download
        and re-hash every referenced chunk once.  subset: re-hash only a reproducible subset,
        "5%" or "N/M" (or a fraction 0 < f <= 1), chosen by `seed` (default 0: the same
        chunks every run; vary it to cover others).  Problems come back in the result
        (`.ok`, `.problems`, `.unrestorable`); NotFound only if the lake or the reference
        does not exist.
        """
        from .core.verify import verify

        with self._watching(progress) as progress:
            return verify(self.store, ref, lake_url=self.url, concurrency=self.concurrency,
                          read_data=read_data, subset=subset, seed=seed, parts=self.parts,
                          throttle=self.throttle, progress=progress)

    def close(self) -> None:
        self.parts.close()
        self.store.close()


def _retention(policy: "RetentionPolicy | str | Path | None") -> "RetentionPolicy":
    from .policy.config import load_config
    from .policy.retention import RetentionPolicy, load_retention

    if isinstance(policy, RetentionPolicy):
        return policy
    if policy is None:
        return load_retention(load_config())
    return load_retention(load_config(os.fspath(policy), origin="the policy argument"))
