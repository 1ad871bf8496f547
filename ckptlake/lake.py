"""The Lake: the typed library API that the CLI and training scripts call.

It validates arguments, applies defaults, and delegates to core/ (push, pull, catalog).  It never
prints: progress goes to a `Progress` object, results come back as small dataclasses, failures
are `CkptlakeError`s that carry their exit code.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from .core import catalog
from .core.values import (check_arg, check_destination, check_inputs, check_metadata,
                          check_metrics, check_policy_arg, check_provenance, check_reason)
from .errors import (CkptlakeError, Interrupted, MissingChunk, NotFound, TransferError,
                     TransientError, UsageError)
from .format import layout
from .format.refs import Ref, parse_ref, validate_alias, validate_artifact
from .policy.config import (DEFAULT_CONCURRENCY, DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE,
                            check_chunk_size, check_concurrency, check_part_settings)
from .results import (AliasRemoveResult, AliasResult, ArtifactInfo, DeleteArtifactResult,
                      DeleteResult, DiscardResult, PullResult, PushResult, VerifyResult,
                      VersionInfo)
from .store.base import Store
from .transfer.parts import Parts
from .transfer.progress import NullProgress, Progress

from .transfer.throttle import Throttle

if TYPE_CHECKING:
    from datetime import datetime
    from typing import Callable

    from .core.du import DuReport
    from .core.gc import GcPlan, GcResult
    from .core.tombstones import Tombstone
    from .policy.egress import EgressEstimate, EgressPolicy
    from .policy.retention import RetentionPolicy
    from .checkpointer import Checkpointer
    from .core.cache import ChunkCache
    from .core.copy import CopyResult
    from .core.diff import DiffResult
    from .core.lineage import LineageGraph
    from .core.replicas import ReplicaSet, ReplicateResult
    from .core.shards import PendingStep, ShardPushResult
    from .core.reader import LakeFile
    from .core.show import VersionDetail
    from .core.whole import WholeFile
    from .core.streampush import CommittingWriter
    from .format.manifest import Manifest


class Lake:
    """One lake: a store plus the format rules.  Safe to use from several threads."""

    def __init__(self, store: Store, *, chunk_size: int | None = None,
                 concurrency: int | None = None, max_bandwidth: float | None = None,
                 multipart_threshold: int | None = None, part_size: int | None = None,
                 origin: str = "explicit", cache: "ChunkCache | None" = None,
                 replicas: "ReplicaSet | None" = None) -> None:
        if chunk_size is not None:
            check_chunk_size(chunk_size)
        if concurrency is not None:
            check_concurrency(concurrency)
        check_part_settings(multipart_threshold, part_size)
        self.store = store
        self.url = store.url
        self.origin = origin
        self.cache = cache  # the local chunk cache pulls read through (core/cache.py), or None
        # Regional replicas chunk reads may go through (core/replicas.py), or None; their
        # stores are opened once and shared by every operation of this Lake.
        self.replicas = replicas
        self._replica_backends: dict[str, Store] = {}
        self.chunk_size = chunk_size  # None: the lake header's default
        self.concurrency = concurrency or DEFAULT_CONCURRENCY
        check_arg("max_bandwidth", max_bandwidth, "number", optional=True, positive=True)
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

    def replica_for(self, replica: str | None = None) -> "Any":
        """The ReplicaSpec chunk reads would go through: `replica` (a name, or "none"), else
        the default given to ckptlake.open, else the one in the client's region; None: the
        lake itself."""
        if self.replicas is None:
            if replica not in (None, "none"):
                raise UsageError(f"no replica named {replica!r} (none are configured)",
                                 hint="replicas are declared under replicas: in ckptlake.yaml")
            return None
        return self.replicas.select(replica)

    def _no_offline_replica(self, replica: str | None) -> str:
        if self.replicas is None or not self.replicas.names():
            return "--offline-replica found no replica: none are configured"
        if replica == "none":
            return "--offline-replica has nothing to fall back on with --replica none"
        region = self.replicas.client_region
        return ("--offline-replica found no replica " + (
            f"in this client's region ({region})" if region else
            "(this client's region is unknown)") + "; name one with --replica "
            + " or --replica ".join(self.replicas.names()))

    def replica_named(self, name: str) -> "Any":
        """The configured replica `name` (a ReplicaSpec): UsageError if there is none of that
        name ("none" included), from the configuration alone, before any request."""
        check_arg("to", name, "str")
        if self.replicas is None or name == "none":
            raise UsageError(f"no replica named {name!r}" + (" (none are configured)"
                                                            if self.replicas is None else ""),
                             hint="replicas are declared under replicas: in ckptlake.yaml")
        return self.replicas.by_name(name)

    def _replica_backend(self, spec: Any) -> Store:
        with self._watch_lock:
            backend = self._replica_backends.get(spec.name)
            if backend is None:
                backend = self._replica_backends[spec.name] = self.replicas.open_store(spec)  # type: ignore[union-attr]
                if hasattr(backend, "on_retry"):
                    backend.on_retry = self._report_retry  # type: ignore[attr-defined]
            return backend

    def _data(self, replica: str | None = None,
              on_warning: "Callable[[str], None] | None" = None,
              caller_verifies: bool = False, algo: str | None = None) -> Store:
        """The store chunk bytes are read from: the lake, or (store/replica.py) the lake with
        chunk reads going through the selected replica.  Manifests always come from the lake.
        algo: the hash of the manifest read (the replica checks bytes with it; None: the lake
        header's)."""
        spec = self.replica_for(replica)
        if spec is None:
            return self.store
        return self.replicas.wrap(self.store, spec, self._replica_backend(spec),  # type: ignore[union-attr]
                                  on_warning=on_warning, caller_verifies=caller_verifies,
                                  algo=algo)

    def exists(self) -> bool:
        """Whether a lake is here: its header (written by the first push), or at least one
        artifact of a lake whose header was lost.  Readers use it to tell "no lake at this
        location" (a typo, most likely) from an empty lake."""
        try:
            self.store.stat(layout.HEADER_KEY)
            return True
        except NotFound:
            return next(iter(self.store.list(layout.ARTIFACTS_PREFIX)), None) is not None

    def __copy__(self) -> "Lake":
        """A shallow copy sharing the store, as before __reduce__ (which copy.copy would
        use) refused pickling."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        return other

    def __reduce__(self) -> Any:
        """Pickled for a spawned worker (a DataLoader with the spawn start method) it failed
        with "cannot pickle '_thread.lock' object", naming neither the lake nor what to do."""
        raise TypeError(f"a Lake ({self.url}) cannot be pickled: open it in the worker "
                        "process with ckptlake.open(...) (a forked worker may use this one)")

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
             provenance: bool | dict[str, Any] = True,
             compression: str | None = None, hash: str | None = None,
             dry_run: bool = False) -> PushResult:
        """Upload a file or directory as the next version of `artifact`.

        Only chunks the lake does not hold yet are sent.  The version becomes visible at once
        and whole when the manifest is written, after every chunk (a chunk it deduplicated
        against that a concurrent gc swept is restored before that: docs/format.md, "The push
        side"); if anything fails (or a file changes while it is read) nothing is committed
        and a re-run re-sends only what is missing.  An alias that cannot be set after the
        commit raises its error saying the version is committed (do not push again: set the
        alias with `alias`).

        Lineage: `parents` are references ("REF" or "REF:RELATION", Refs, or (ref, relation)
        pairs; `relation` is the default), resolved now to fixed version numbers (NotFound if
        one does not exist); `inputs` are URIs ("URI#DIGEST" pins a digest).  `meta_file` adds
        a JSON/YAML mapping to `metadata` (explicit `metadata` keys win).  `provenance` (git
        state of the source, command line, host, user, Python and ckptlake versions) is
        collected unless False; a dict adds to or overrides what is collected.
        `compression`: "auto" (store chunks encoded where that saves bytes) or "none";
        default: the lake header's setting ("auto" for lakes this version creates, "none"
        for older lakes).  `hash`: "blake3" (default) or "sha256", the chunk hash of a lake
        this push creates; an existing lake keeps its own (SHA-256 for lakes made before
        BLAKE3 was the default), and naming another hash than an existing lake's is refused
        (UsageError).

        `dry_run`: every check a push makes, the source read and hashed and each chunk looked
        up in the lake (and encoded, to count the bytes to send), and nothing written: the
        result (`dry_run` True) says what the push would upload and which version number it
        would take now.
        """
        from .core import lineage as _lineage
        from .core import provenance as _provenance
        from .core import push as _push  # here, not at import: a pull does not need it
        from .format.safetensors import TensorObserver

        validate_artifact(artifact)
        aliases, exclude = check_arg("aliases", aliases, "names"), \
            check_arg("exclude", exclude, "names")
        for name in aliases:
            validate_alias(name)
        if step is not None:
            layout.check_step(step)
        check_arg("source", source, "path")
        check_arg("follow_symlinks", follow_symlinks, "bool")
        check_arg("dry_run", dry_run, "bool")
        check_arg("meta_file", meta_file, "path", optional=True)
        check_provenance(provenance)
        input_items = check_inputs(inputs)
        all_metadata = {**(_provenance.load_meta_file(meta_file) if meta_file else {}),
                        **check_metadata(metadata)}
        parent_edges = _lineage.resolve_parents(self.store, parents, relation=relation,
                                                child=artifact) \
            if parents else ()
        from .core.scan import scan

        tree = scan(source, exclude=exclude, follow_symlinks=follow_symlinks,
                    avoid=self._local_dir())

        def said_if_empty(result: PushResult) -> PushResult:
            warning = _push.empty_version_warning(result, tree, os.fspath(source))
            return dataclasses.replace(result, warnings=[warning, *result.warnings]) \
                if warning else result

        fields: dict[str, Any] = {"parents": parent_edges, "inputs": input_items}
        if provenance is not False:
            fields["provenance"] = {**_provenance.collect(source),
                                    **(provenance if isinstance(provenance, dict) else {})}
        if dry_run:
            with self._watching(progress) as progress:
                return said_if_empty(_push.plan(
                    self.store, tree, artifact, chunk_size=self.chunk_size,
                    concurrency=self.concurrency, step=step, aliases=list(aliases),
                    progress=progress, lake_url=self.url, compression=compression, hash=hash,
                    metrics=check_metrics(metrics), metadata=check_metadata(all_metadata),
                    manifest_fields=fields))
        tensors = TensorObserver((f.path, f.abspath) for f in tree.files)
        with self._watching(progress) as progress:
            try:
                result = _push.push(
                    self.store, tree, artifact, chunk_size=self.chunk_size,
                    concurrency=self.concurrency, step=step, metrics=check_metrics(metrics),
                    metadata=check_metadata(all_metadata), aliases=list(aliases),
                    progress=progress, lake_url=self.url, throttle=self.throttle,
                    parts=self.parts, observers=[tensors] if tensors else [],
                    manifest_fields=fields, compression=compression, hash=hash)
            except _push.AliasNotSet as exc:
                return self._indexed(exc)
        return said_if_empty(self._indexed(result))

    def _indexed(self, result: PushResult | Any) -> PushResult:
        """The committed version's indexes written (_after_commit); for an alias that could
        not be set after the commit (core/push.AliasNotSet), written too, then its error."""
        from .core.push import AliasNotSet

        failed = result if isinstance(result, AliasNotSet) else None
        if failed is not None:
            result = failed.result
        try:
            warnings = self._after_commit(result.artifact, result.version)
        except KeyboardInterrupt:
            # Committed already: its indexes (a few small writes; the listing summary is what
            # tells a lost manifest later) are finished with interrupts held back, and the
            # interrupt is then reported with the version, as a retry must not push it again.
            from .transfer.pool import signals_blocked

            try:
                with signals_blocked():
                    self._after_commit(result.artifact, result.version)
            except KeyboardInterrupt:
                pass  # another one, held to the end of it: this is reported as interrupted
            if failed is not None:
                raise failed.committed_error() from None
            ref = f"{result.artifact}@v{result.version}"
            err = Interrupted(f"interrupted after {ref} was committed (whole: nothing to "
                              "finish)", hint=f"pushing again would commit another version; "
                                              f"see it with: ckptlake show {ref}")
            err.fields = {"artifact": result.artifact, "version": result.version}
            raise err from None
        if failed is not None:
            raise failed.committed_error()
        return dataclasses.replace(result, warnings=[*result.warnings, *warnings]) \
            if warnings else result

    def writer(self, artifact: str, path: "str | os.PathLike[str]", *, step: int | None = None,
               metrics: dict[str, float] | None = None, metadata: dict[str, str] | None = None,
               aliases: Sequence[str] = (), parents: Sequence[Any] = (),
               relation: str = "derived-from", inputs: Sequence[str | dict[str, str]] = (),
               provenance: bool | dict[str, Any] = True, compression: str | None = None,
               progress: Progress | None = None) -> "CommittingWriter":
        """A write-only binary file that becomes the next version of `artifact`, holding this
        one file at `path`: `with lake.writer("run", "model.pt", step=N) as f:
        torch.save(state, f)`.

        Bytes are cut, hashed, compressed and uploaded while they are written (no local
        copy; memory about (concurrency + 2) x chunk size), into the same chunks as
        `push` of the finished file would store.  A clean close (or `with` exit) commits,
        like `push` of a one-file directory, and leaves the PushResult in `.result`; an
        exception inside the `with` block, or `abort()`, commits nothing.  Upload errors are
        raised by the next write or by close.  The file is not seekable (torch.save, pickle,
        safetensors' `save` into bytes, tar streams need no seek).  Arguments are checked
        here, before any byte is written; see `push` for their meaning.
        """
        from .core import clock
        from .core import lineage as _lineage
        from .core import provenance as _provenance
        from .core import push as _push
        from .core.lakeheader import open_or_create_header
        from .core.streampush import CommittingWriter, check_path

        validate_artifact(artifact)
        path = check_path(path)
        aliases = check_arg("aliases", aliases, "names")
        check_provenance(provenance)
        for name in aliases:
            validate_alias(name)
        if step is not None:
            layout.check_step(step)
        checked_metrics, checked_metadata = check_metrics(metrics), check_metadata(metadata)
        input_items = check_inputs(inputs)
        parent_edges = _lineage.resolve_parents(self.store, parents, relation=relation,
                                                child=artifact) \
            if parents else ()
        fields: dict[str, Any] = {"parents": parent_edges, "inputs": input_items}
        if provenance is not False:
            fields["provenance"] = {**_provenance.collect(None),
                                    **(provenance if isinstance(provenance, dict) else {})}
        started, started_wall = clock.now(), time.time()
        header, created = open_or_create_header(
            self.store, **({"chunk_size": self.chunk_size} if self.chunk_size else {}),
            compression=compression)  # an explicit choice is a new lake's default
        mode = _push.resolve_compression(compression, header.compression)
        _push.check_settings(self.store)  # what the commit's guard would refuse, refused now
        watch = self._watching(progress)
        watched = watch.__enter__()

        def commit(entry: Any, w: Any) -> PushResult:
            try:
                result = _push.commit_upload(
                    self.store, artifact, header=header, created=created, compression=mode,
                    files=(entry,), dirs=(), kind="file", up=w.uploader, step=step,
                    metrics=checked_metrics, metadata=checked_metadata,
                    aliases=list(aliases), lake_url=self.url, manifest_fields=fields,
                    started=started, started_wall=started_wall, bytes_scanned=w.size)
            except _push.AliasNotSet as exc:
                return self._indexed(exc)
            return self._indexed(result)

        return CommittingWriter(
            self.store, path, algo=header.hash, chunk_size=self.chunk_size or header.chunk_size,
            concurrency=self.concurrency, progress=watched, throttle=self.throttle,
            parts=self.parts, compression=mode, commit=commit,
            release=lambda: watch.__exit__(None, None, None))

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
        name = _shortened(f"{artifact}@v{version}", 80)
        try:
            m = catalog.load_manifest(self.store, artifact, version)
        except CkptlakeError as exc:
            return [f"could not re-read {name} to index it: {_shortened(str(exc), 200)}"]
        try:
            _lineage.write_child_markers(self.store, m)
        except CkptlakeError as exc:
            warnings.append(f"{name} is committed, but its lineage markers could not be "
                            f"written (lineage --down of its parents will miss it): "
                            f"{_shortened(str(exc), 200)}")
        try:
            _summary.write_summary(self.store, m)
        except CkptlakeError as exc:
            warnings.append(f"{name} is committed, but its listing summary "
                            f"could not be written (ls reads its manifest instead; should the "
                            f"manifest ever be deleted outside ckptlake, nothing says the "
                            f"version existed): {_shortened(str(exc), 200)}")
        return warnings

    def pull(self, ref: str | Ref, destination: str | Path, *, force: bool = False,
             progress: Progress | None = None, egress: "EgressPolicy | None" = None,
             yes: bool = False, confirm: "Callable[[EgressEstimate], bool] | None" = None,
             on_estimate: "Callable[[EgressEstimate], None] | None" = None,
             paths: Sequence[str] = (), include: Sequence[str] = (),
             exclude: Sequence[str] = (),
             reference: "Sequence[str | Path]" = (), use_cache: bool = True,
             replica: str | None = None, offline_replica: bool = False,
             _force_flag: str | None = None) -> PullResult:
        """Restore one version into `destination`, or part of it.

        A directory artifact restores into the directory `destination`; a file artifact
        restores to the path `destination` (or into it, if it is an existing directory).

        paths / include / exclude: pull only part of the version: entries matching any of
        `paths` (exact paths or directory prefixes) or any `include` glob, and no `exclude`
        glob (core/browse.py has the rule).  Everything else (estimate, verification, resume,
        the result's counts) then covers the selection only.  NotFound if a path or include
        pattern matches nothing.

        egress: an egress policy (policy/egress.py) to apply before anything is downloaded:
        the estimate goes to `on_estimate` (the CLI warns with it); above
        `confirm_above_usd` the pull goes on only with `yes=True` or if `confirm(estimate)`
        returns True, else raises PolicyRefusal.  None (the default): no egress check.

        Chunks already on this machine are copied, not downloaded (core/reuse.py): from files
        kept as identical, from the files `force` replaces (at the same offsets), and from
        each `reference` directory (the same relative path, then files of the same size).
        With the lake's chunk cache (`ckptlake.open(cache=...)`) and `use_cache`, chunks are
        read from the cache when there, and downloaded ones are added to it.

        replica: read chunks through this regional replica (a name from `replicas:`), or
        "none" for the lake itself; None: the one in the client's region, if any (see
        docs/format.md, "Replicas").  The result's `replica` says where the bytes came from.
        offline_replica: if the lake cannot be reached, serve the version from that replica
        as it holds it (versions pulled through it whole, or replicated), saying so in the
        result's warnings; aliases, and deletions since, are not known then.

        _force_flag: how error hints name `force` ("force=True" when None); the CLI passes
        "--force".
        """
        from .core import pull as _pull  # here, not at import: ls and push do not need it
        from .core.browse import select

        destination = check_destination(destination)
        force_flag = check_arg("_force_flag", _force_flag, "str", optional=True) \
            or _pull.FORCE_KEYWORD
        for what, flag in (("force", force), ("yes", yes), ("use_cache", use_cache),
                           ("offline_replica", offline_replica)):
            check_arg(what, flag, "bool")
        check_arg("replica", replica, "str", optional=True)
        check_arg("confirm", confirm, "callable", optional=True)
        check_arg("on_estimate", on_estimate, "callable", optional=True)
        paths, include, exclude = (check_arg(what, v, "names") for what, v in (
            ("paths", paths), ("include", include), ("exclude", exclude)))
        refs = list(check_arg("reference", reference, "names"))
        for r in refs:
            if not os.path.lexists(r):  # a missing local path is exit 3, as for push SOURCE
                raise NotFound(f"reference directory {r} does not exist",
                               hint="--reference names a directory holding an earlier copy")
            if not os.path.isdir(r):
                raise UsageError(f"reference directory {r} is not a directory",
                                 hint="--reference names a directory holding an earlier copy")
        try:
            m = select(self._manifest(ref), paths, include, exclude)
        except (TransferError, TransientError) as exc:
            if not offline_replica:
                raise
            if self.replica_for(replica) is None:
                # --offline-replica had nothing to fall back on: say so, not only that the
                # lake is down (the flag looked ignored)
                exc.hint = "; ".join(filter(None, [getattr(exc, "hint", None),
                                                   self._no_offline_replica(replica)]))
                raise
            return self._pull_offline(exc, ref, destination, replica=replica, force=force,
                                      progress=progress, paths=paths, include=include,
                                      exclude=exclude, reference=refs, use_cache=use_cache,
                                      force_flag=force_flag)
        lost = self._lost_latest(ref, m)
        # the pull hashes every chunk, with the manifest's hash
        data = self._data(replica, caller_verifies=True, algo=m.hash)
        if egress is not None:
            from .core import egress as _egress

            est = _egress.estimate_pull(data, m, os.fspath(destination), egress,
                                        self.cache if use_cache else None, route_if_needed=True)
            if on_estimate is not None:
                on_estimate(est)
            _egress.enforce(est, yes=yes, confirm=confirm)

        def still_there() -> None:
            # `rm` leaves the chunks a pull reads: only the manifest tells that the version
            # was deleted while it came (a leaked secret's), and it is then not placed
            gone = catalog.deleted_meanwhile(
                self.store, m.artifact, m.version, MissingChunk("(checked before placing)"),
                doing="being pulled; nothing of it was placed")
            if not isinstance(gone, MissingChunk):
                raise gone

        with self._watching(progress) as progress:
            try:
                result = _pull.pull(data, m, os.fspath(destination), force=force,
                                    concurrency=self.concurrency, progress=progress,
                                    lake_url=self.url, throttle=self.throttle, parts=self.parts,
                                    cache=self.cache if use_cache else None, reference=refs,
                                    force_flag=force_flag, before_place=still_there)
            except MissingChunk as e:  # chunks are all fetched before anything is placed
                raise catalog.deleted_meanwhile(
                    self.store, m.artifact, m.version, e,
                    doing="being pulled; nothing of it was placed") from None
        if lost:
            result = dataclasses.replace(result, warnings=[lost, *result.warnings])
        stats = getattr(data, "stats", None)
        if stats is None:
            return result
        from .core.browse import object_sizes

        # Every chunk object went through the replica (none came from a local copy, the
        # cache, or the origin uncached): it holds the version whole, servable offline.
        # All-zero chunks count as held: no pull fetches them (holes), offline ones neither.
        through = stats.chunks_from_replica + stats.chunks_pulled_through
        needed = set(object_sizes(m)) - _pull.zero_chunks(m.files, m.hash)
        if stats.writes_off is None and stats.replica_down is None \
                and stats.chunks_from_origin == 0 and through >= len(needed) \
                and data.writable():  # type: ignore[attr-defined]
            from .core.replicas import keep_pulled_manifest

            keep_pulled_manifest(self.store, data.replica, m)  # type: ignore[attr-defined]
        return dataclasses.replace(result, replica=stats.to_dict(),
                                   warnings=[*data.warnings, *result.warnings])  # type: ignore[attr-defined]

    def _lost_latest(self, ref: str | Ref, m: "Manifest") -> str | None:
        """What to say when `@latest` resolved below a lost version: a resume after a crash
        would otherwise go on from an older checkpoint without a word."""
        if (ref if isinstance(ref, Ref) else parse_ref(ref)).kind != "latest":
            return None
        lost = catalog.lost_above(self.store, m.artifact, m.version)
        if not lost:
            return None
        which = ", ".join(f"v{n}" for n in lost[:3]) + (", ..." if len(lost) > 3 else "")
        return (f"{m.artifact}@latest is v{m.version}, the newest readable version: {which} "
                f"{'was' if len(lost) == 1 else 'were'} committed after it and {'is' if len(lost) == 1 else 'are'} "
                "lost (manifest gone, no tombstone; ckptlake verify lists lost versions)")

    def _pull_offline(self, exc: Exception, ref: str | Ref, destination: str | Path, *,
                      replica: str | None, force: bool, progress: Progress | None,
                      paths: Sequence[str], include: Sequence[str], exclude: Sequence[str],
                      reference: Sequence[str], use_cache: bool,
                      force_flag: str) -> PullResult:
        """The lake is unreachable: the version as the replica holds it (its manifest copy and
        its chunks), verified like any pull; no egress guard (the replica is in this region)."""
        from .core import pull as _pull
        from .core.browse import select
        from .core.replicas import check_offline, resolve_offline
        from .store.replica import OfflineReplicaStore

        spec = self.replica_for(replica)
        backend = self._replica_backend(spec)
        # Another lake's manifest copies would be served as this lake's versions.
        check_offline(backend, spec, self.url)
        # A version the replica lacks is exit 8, not 3: it may exist at the unreachable lake.
        m = select(resolve_offline(backend, ref, name=spec.name), paths, include, exclude)
        # A chunk the replica lacks is the replica's gap with the lake out of reach (exit 8),
        # not a chunk "missing from the lake".
        data = OfflineReplicaStore(backend, name=spec.name, chunk_digest=layout.parse_chunk_key,
                                   origin_url=self.url, origin_error=str(exc))
        with self._watching(progress) as progress:
            result = _pull.pull(data, m, os.fspath(destination), force=force,
                                concurrency=self.concurrency, progress=progress,
                                lake_url=self.url, throttle=self.throttle, parts=self.parts,
                                cache=self.cache if use_cache else None, reference=reference,
                                force_flag=force_flag)
        note = (f"the lake {self.url} cannot be reached ({exc}); served {m.artifact}@v"
                f"{m.version} from replica {spec.name} ({spec.region}) as it holds it "
                "(--offline-replica): aliases, newer versions and deletions since are not known")
        return dataclasses.replace(result, warnings=[note, *result.warnings],
                                   replica={"name": spec.name, "region": spec.region,
                                            "offline": True,
                                            "bytes_from_replica": result.bytes_downloaded})

    def files(self, ref: str | Ref, prefix: str | None = None) -> dict[str, Any]:
        """{"artifact", "version", "files"}: the version `ref` names and its files, symlinks
        and empty directories sorted by path (each {"path", "size", "kind"} with kind file,
        safetensors, symlink or dir; "tensors" for safetensors, "target" for symlinks); with
        `prefix`, only those at or below that path (NotFound if none).  Reads one manifest."""
        from .core.browse import list_files

        m = self._manifest(ref)
        return {"artifact": m.artifact, "version": m.version, "files": list_files(m, prefix)}

    def cat(self, ref: str | Ref, path: str | None = None, *, replica: str | None = None,
            on_warning: "Callable[[str], None] | None" = None,
            egress: "EgressPolicy | None" = None, yes: bool = False,
            confirm: "Callable[[EgressEstimate], bool] | None" = None,
            on_estimate: "Callable[[EgressEstimate], None] | None" = None) -> Iterator[bytes]:
        """The bytes of one file of a version, chunk by chunk, each verified before it is
        yielded (IntegrityError at the first that does not match, and nothing after).

        A small (packed) file costs one ranged GET of its bytes; a large one, one GET per
        chunk.  UsageError for a directory or a symlink, NotFound for a path not in the
        version.  `path` may be left out for a version that is one file.  The manifest is
        read (and the path checked) before the first item.

        egress: the egress guard of `pull` (see there) for this file's bytes (a pack counted
        whole: an upper bound): estimated and priced before anything is read; above
        confirm_above_usd nothing is read unless `yes` or `confirm(estimate)` (else
        PolicyRefusal).  None (the default): no egress check."""
        from .core.browse import find_file, read_file

        check_arg("replica", replica, "str", optional=True)
        check_arg("on_warning", on_warning, "callable", optional=True)
        check_arg("yes", yes, "bool")
        check_arg("confirm", confirm, "callable", optional=True)
        check_arg("on_estimate", on_estimate, "callable", optional=True)
        m = self._manifest(ref)
        if path is None:
            if m.kind != "file":
                raise UsageError(f"{m.artifact}@v{m.version} is a directory: say which file",
                                 hint=f"list its files with: ckptlake ls "
                                      f"{m.artifact}@v{m.version}")
            path = m.files[0].path
        entry = find_file(m, path)
        data = self._data(replica, on_warning, algo=m.hash)
        if egress is not None:
            from .core import egress as _egress

            # (no cache: cat reads every chunk from the lake, never from the chunk cache)
            est = _egress.estimate_pull(data, dataclasses.replace(m, files=(entry,), dirs=()),
                                        None, egress, None, route_if_needed=True,
                                        operation="cat")
            if on_estimate is not None:
                on_estimate(est)
            _egress.enforce(est, yes=yes, confirm=confirm)
        # (a chunk missing because the version was deleted meanwhile is NotFound already:
        # core/chunkio.missing_from)
        return read_file(data, m, entry, throttle=self.throttle)

    def artifacts(self, prefix: str = "") -> list[ArtifactInfo]:
        """Artifacts with at least one version, sorted by name."""
        return catalog.artifacts(self.store, check_arg("prefix", prefix, "str"))

    def versions(self, artifact: str, *, where: Sequence[str] = (), sort: str | None = None,
                 limit: int | None = None) -> list[VersionInfo]:
        """Every version of an artifact, oldest first, with aliases.

        `where` ("val_loss<2.5", "step>=1000": all must hold), `sort` ("val_loss",
        "-val_loss") and `limit` select among them (see core/query.py).
        """
        from .core.query import Condition, Sort

        if where is None:
            where = ()
        elif isinstance(where, (str, Condition)):
            where = (where,)  # one condition, not its characters
        where = tuple(where) if isinstance(where, Iterable) else where
        if not isinstance(where, tuple) or not all(isinstance(w, (str, Condition))
                                                   for w in where):
            raise UsageError(f"where must be a condition string (e.g. 'val_loss<2.5') or a "
                             f"list of them, got {where!r}")
        if sort is not None and not isinstance(sort, Sort):
            check_arg("sort", sort, "str")
        limit = check_arg("limit", limit, "int", optional=True, minimum=0)
        found = catalog.versions(self.store, artifact)
        if not where and sort is None and limit is None:
            return found
        from .core.query import select

        return select(found, where=where, sort=sort, limit=limit)

    ls = versions

    def _manifest(self, ref: str | Ref) -> "Manifest":
        """catalog.resolve, except that at a location holding no lake at all the error says
        so, as the CLI's readers do: "artifact x has no versions" sends a user with a mistyped
        lake URL looking for a typo in the artifact instead."""
        try:
            return catalog.resolve(self.store, ref)
        except NotFound:
            if self.exists():
                raise
            raise self.absent_error() from None

    def _manifest_told(self, ref: str | Ref) -> "Manifest":
        """_manifest for the readers a training job resumes through: a lost latest version
        (see _lost_latest) is logged as a warning on the `ckptlake` logger."""
        m = self._manifest(ref)
        if (lost := self._lost_latest(ref, m)) is not None:
            import logging

            logging.getLogger("ckptlake").warning("ckptlake: %s", lost)
        return m

    def _local_dir(self) -> str | None:
        """The directory of a local lake (scan refuses to push it into itself), else None."""
        return self.url[len("file://"):] if self.url.startswith("file://") else None

    def absent_error(self, origin: str | None = None) -> NotFound:
        """What to say where no lake is (`origin`: where the location came from, e.g.
        "--lake").  A local location that is a file gets its own words: "nothing was ever
        pushed there" would send the user looking for a lake that cannot exist."""
        from .redact import redact
        from .store.local import LocalStore

        where = redact(self.url) + (f" ({origin})" if origin else "")
        base = self.store
        while (inner := getattr(base, "inner", None)) is not None:  # a retry wrapper
            base = inner
        if isinstance(base, LocalStore) and (blocker := base.root_blocker()) is not None:
            return NotFound(f"no lake at {where}: {blocker[0]}", hint=blocker[1])
        return NotFound(f"no lake at {where}: nothing was ever pushed there",
                        hint="check the lake location; the first push creates a lake")

    def _check_known(self) -> None:
        """Before deleting or rewriting records: refuse a lake of a newer format (exit 5),
        as push does (core/lakeheader.check_known)."""
        from .core.lakeheader import check_known

        check_known(self.store)

    def resolve(self, ref: str | Ref) -> VersionInfo:
        """The version a reference names right now (latest, vN, step=N, an alias, or
        min:METRIC / max:METRIC: the best value among the live versions, ties to the newest)."""
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        m = self._manifest_told(ref)
        return catalog.version_info(m, catalog.aliases(self.store, m.artifact))

    def alias(self, ref: str | Ref, name: str) -> AliasResult:
        """Point alias `name` at the version `ref` resolves to (compare-and-swap).

        NotFound if a gc deleted that version meanwhile; the alias is then put back as it was
        (docs/format.md, "Alias record")."""
        validate_alias(check_arg("name", name, "str"))
        self._check_known()
        m = self._manifest(ref)
        return catalog.set_alias(self.store, m.artifact, name, m.version)

    def remove_alias(self, artifact: str, name: str) -> AliasRemoveResult:
        """Remove alias `name` of `artifact` (MLflow's delete_registered_model_alias).  The
        version it named is then no longer protected from gc's retention, nor from `delete`.
        NotFound (naming the aliases there are) if there is no such alias.  A concurrent move
        of the same alias is either removed too or stands (docs/format.md, "Alias record")."""
        validate_artifact(check_arg("artifact", artifact, "str"))
        # (one set before new names took case into account stays removable)
        validate_alias(check_arg("name", name, "str"), existing=True)
        self._check_known()
        try:
            return catalog.remove_alias(self.store, artifact, name)
        except NotFound:
            if self.exists():
                raise
            raise self.absent_error() from None

    def delete(self, ref: str | Ref, *, reason: str | None = None, dry_run: bool = False
               ) -> DeleteResult:
        """Delete one version by hand (`ckptlake rm`): a bad checkpoint, or one pushed with a
        secret in it.  It becomes unreadable at once; its chunks stay until gc sweeps them.

        gc's own deleter does it (core/gc.delete_versions: tombstone, aliases read again, then
        the manifest), so lineage keeps the version (as expired, rule "ckptlake rm", with
        `reason`) and an alias set meanwhile spares it.  Refused (PolicyRefusal, exit 7) for
        an aliased version.  The latest version may go too: a push numbers its version above
        every tombstone as well as every manifest (catalog.next_number), so its number is never
        handed out again.  A lost version (vN only: its summary, no manifest, no tombstone; gc
        refuses to run while one is listed) gets its tombstone, nothing else to delete.
        NotFound for a version that does not exist or was deleted already.
        dry_run: every check, nothing written.
        """
        from .core import tombstones
        from .core.gc import ArtifactPlan, GcResult, VersionPlan, delete_versions
        from .core.identity import user_at_host, utcnow
        from .errors import IntegrityError, PolicyRefusal
        from .redact import redact

        if isinstance(ref, str):
            bare = "@" not in ref
            ref = parse_ref(ref)
            if bare:  # one version, named: `rm ARTIFACT` reads like "the whole artifact"
                raise UsageError(
                    f"rm deletes one version: name it, e.g. {ref.artifact}@latest or "
                    f"{ref.artifact}@v1",
                    hint=f"to delete every version of {ref.artifact}: ckptlake rm "
                         f"{ref.artifact} --all")
        if not isinstance(ref, Ref):
            raise UsageError(f"a reference is a string (ARTIFACT@SELECTOR) or a Ref, got "
                             f"{ref!r}")
        check_arg("dry_run", dry_run, "bool")
        reason = check_reason(reason)
        if reason is not None:
            reason = redact(reason)  # it is stored, and shown by every read of the version
        self._check_known()
        artifact = ref.artifact
        created: Any = None
        m: Any = None
        lost: "tuple[int, Any, Any] | None" = None
        try:
            m = self._manifest(ref)
            number, step, created, created_by = m.version, m.step, m.created, m.created_by
            total_bytes, files = m.total_bytes, len(m.files)
        except IntegrityError as exc:
            # A manifest no reader accepts blocks gc (it must not guess what the version
            # references); deleting it by its number is the way out -- unless a newer ckptlake
            # wrote it: that one is a good version this one cannot read.
            if ref.kind != "version":
                raise
            number = int(ref.value)  # type: ignore[arg-type]
            if self._newer_manifest(artifact, number, exc):
                raise PolicyRefusal(
                    f"{artifact}@v{number} was written by a newer ckptlake ({exc.message}); rm "
                    "deletes an unreadable manifest only when it is damaged",
                    hint="upgrade ckptlake, then run the same rm") from None
            step, created_by, total_bytes, files = None, "", 0, 0
            created = self.store.stat(layout.version_key(artifact, number)).modified
        except NotFound:
            # A lost version (its listing summary, no manifest, no tombstone: a manifest
            # deleted outside ckptlake) blocks gc; deleting it by its number records it as
            # deleted, so its chunks may go and its number is never handed out again.
            lost = self._lost(ref) if ref.kind == "version" else None
            if lost is None:
                raise
            number, summary, written = lost
            step = summary.step if summary else None
            created = summary.created if summary else written
            created_by = summary.created_by if summary else ""
            total_bytes = summary.total_bytes if summary else 0
            files = summary.files if summary else 0
        numbers = catalog.version_numbers(self.store, artifact)
        names = sorted(a for a, v in catalog.aliases(self.store, artifact).items()
                       if v == number)
        if names:
            raise self._aliased(artifact, number, names)
        who = user_at_host()
        reason = reason or f"deleted by hand by {who}"
        now = utcnow()
        result = DeleteResult(
            lake=self.url, artifact=artifact, version=number, step=step, created=created,
            created_by=created_by, total_bytes=total_bytes, files=files,
            rule=tombstones.RM_RULE, reason=reason, dry_run=dry_run, deleted=False)
        if dry_run:
            return result
        if lost is not None:
            # nothing to delete but the record that it is deleted: the tombstone alone
            tomb = self._lost_tombstone(artifact, number, summary, written, reason=reason,
                                        now=now, who=who)
            if not tombstones.write(self.store, tomb):
                raise self._deleted_meanwhile(artifact, number)
            return dataclasses.replace(result, deleted=True, deleted_at=now, deleted_by=who)
        replaced = self._replace_stale_tombstone(artifact, number, m, result, now)
        plan = VersionPlan(
            artifact=artifact, version=number, step=step, created=created or now,
            age_seconds=max(0, int((now - (created or now)).total_seconds())),
            total_bytes=total_bytes, files=files, keep=False, rule=tombstones.RM_RULE,
            reason=reason)
        done = GcResult()
        written = delete_versions(self.store, ArtifactPlan(
            artifact=artifact, rule=tombstones.RM_RULE, rule_line=None, versions=len(numbers),
            delete=[plan], kept=[], kept_by={}), done, deleted=now, keep_latest=False)
        if f"{artifact}@v{number}" in done.versions_deleted:
            if replaced or number in written:
                return dataclasses.replace(result, deleted=True, deleted_at=now, deleted_by=who)
            # another deleter's tombstone landed first: the lake records its reason and time
            raise self._deleted_meanwhile(artifact, number)
        if f"{artifact}@v{number}" in done.versions_spared:  # aliased while we deleted
            if replaced and self._unwrite_tombstones(artifact, {number: replaced}):
                raise self._deleted_meanwhile(artifact, number)  # by another deleter
            names = sorted(a for a, v in catalog.aliases(self.store, artifact).items()
                           if v == number)
            if names:
                raise self._aliased(artifact, number, names)
            raise PolicyRefusal(f"{artifact}@v{number} was aliased while rm ran, so it was not "
                                "deleted (the alias has been removed again since)",
                                hint="run the same rm again")
        catalog.load_manifest(self.store, artifact, number)  # deleted by someone else: says so
        raise NotFound(f"{artifact}@v{number} was deleted meanwhile",
                       hint=f"list what is left with: ckptlake ls {artifact} --all")

    def _lost(self, ref: Ref) -> "tuple[int, Any, Any] | None":
        """(number, its summary or None, when its summary key was written) of version `ref` if
        it is lost (core/gc.lost_versions: a summary key without manifest or tombstone), else
        None.  The summary is None for a key this ckptlake cannot decode (a newer encoding, a
        damaged one): gc counts the key, so rm must too."""
        number = int(ref.value)  # type: ignore[arg-type]
        got = self._lost_versions(ref.artifact, only=number).get(number)
        return None if got is None else (number, *got)

    def _lost_versions(self, artifact: str, *, only: int | None = None,
                       upto: int | None = None, live: Sequence[int] = ()
                       ) -> "dict[int, tuple[Any, Any]]":
        """Number -> (its summary or None, when its summary key was written) of each lost
        version of `artifact` (see _lost), as gc would find them: rm of one and rm --all must
        take the versions that block gc, no fewer.  only/upto: just that number, or those up to
        it.  live: numbers known to have a manifest (rm --all listed them), not looked at."""
        from .core import tombstones
        from .core.gc import lost_versions
        from .core.summary import summaries_from

        keys: dict[int, list[Any]] = {}
        for info in self.store.list(layout.summaries_prefix(artifact)):
            p = layout.parse_summary_key(info.key)
            if p and p[0] == artifact and (only is None or p[1] == only) and \
                    (upto is None or p[1] <= upto):
                keys.setdefault(p[1], []).append(info)
        # listed after the summaries: a version deleted meanwhile has its tombstone by then
        # (lost_versions looks at every suspect twice more anyway)
        tombed = () if only is not None or not keys else \
            {(artifact, n) for n in tombstones.numbers(self.store, artifact, nonempty=True)}
        lost = lost_versions(self.store, [(artifact, n) for n in keys],
                             {(artifact, n) for n in live}, tombed) if keys else []
        return {n: (summaries_from(artifact, keys[n]).get(n),
                    max(info.modified for info in keys[n])) for _, n in lost}

    @staticmethod
    def _lost_tombstone(artifact: str, number: int, summary: Any, written: Any, *,
                        reason: str, now: Any, who: str) -> "Tombstone":
        """The tombstone rm writes for a lost version (its manifest is gone, so there is
        nothing else to delete): with what the summary knew of it (if this ckptlake can read
        it), so `ls --all` shows its size, not "0 B"."""
        from .core import tombstones

        return tombstones.Tombstone(
            artifact=artifact, version=number, step=summary.step if summary else None,
            created=(summary.created if summary else written) or now,
            created_by=summary.created_by if summary else "",
            metrics=dict(summary.metrics) if summary else {},
            metadata=dict(summary.metadata or {}) if summary else {}, parents=[],
            total_bytes=summary.total_bytes if summary else 0,
            files=summary.files if summary else 0, deleted=now, deleted_by=who,
            rule=tombstones.RM_RULE, reason=f"{reason} (lost: its manifest was gone)")

    def delete_artifact(self, artifact: str, *, reason: str | None = None,
                        dry_run: bool = False, upto: int | None = None
                        ) -> DeleteArtifactResult:
        """Delete every version of `artifact` by hand (`ckptlake rm ARTIFACT --all`): what
        MLflow's "delete registered model" or W&B's "delete collection" do.  Each version goes
        as `delete` deletes one (tombstone, aliases read again, manifest), in one batch; chunks
        are left to gc.  The artifact's numbers stay claimed by the tombstones: a later push
        to it takes the next number, never an old one.  Its lost versions (see `delete`) get
        their tombstone too (`lost`, among `versions`), so gc runs again afterwards.

        Refused (PolicyRefusal, exit 7) while any alias names a version (the aliases say
        which versions are in use: remove them first), or if a newer ckptlake wrote a
        manifest; NotFound if it has no live or lost version.  upto: only versions up to vN
        (what a dry run showed the user: one pushed since is not deleted unasked).  Versions pushed
        while it runs stay, and so does one aliased meanwhile (`spared`).  Steps of sharded
        saves not committed are no versions and stay (`pending` names them)."""
        from .core import shards, tombstones
        from .core.gc import ArtifactPlan, GcResult, VersionPlan, delete_versions
        from .core.identity import user_at_host, utcnow
        from .errors import IntegrityError, PolicyRefusal
        from .format.refs import validate_artifact
        from .redact import redact

        if not isinstance(artifact, str):
            raise UsageError(f"artifact must be a string, got {artifact!r}")
        validate_artifact(artifact)
        check_arg("dry_run", dry_run, "bool")
        if upto is not None:
            check_arg("upto", upto, "int", minimum=1)
        reason = check_reason(reason)
        if reason is not None:
            reason = redact(reason)
        self._check_known()
        numbers = [n for n in catalog.version_numbers(self.store, artifact)
                   if upto is None or n <= upto]
        # Lost versions go too, as rm of one takes it: left out, they kept gc refusing after
        # the artifact was "deleted", with nothing the user could see to delete.
        lost = self._lost_versions(artifact, upto=upto, live=numbers)
        # Sharded steps not committed yet are no versions and stay: said, since a commit of
        # one (the last rank's push, a takeover) brings the "deleted" artifact back.
        steps = sorted({p.step for p in shards.pending(self.store, artifact)})
        if not numbers and not lost:
            raise self._nothing_to_delete(artifact, steps)
        named = sorted((v, a) for a, v in catalog.aliases(self.store, artifact).items()
                       if v in numbers or v in lost)
        if named:
            shown = ", ".join(f"{a} -> v{v}" for v, a in named[:5]) + \
                (" ..." if len(named) > 5 else "")
            raise PolicyRefusal(
                f"{artifact} has aliased versions ({shown}); an aliased version is never "
                "deleted, so nothing was deleted",
                hint="remove the aliases first: " + "; ".join(
                    f"ckptlake alias --delete {artifact} {a}" for _, a in named[:3])
                + (" ..." if len(named) > 3 else ""))
        now = utcnow()
        plans: list[VersionPlan] = []
        total = files = 0
        who = user_at_host()
        reason = reason or f"deleted by hand by {who}"
        for n in numbers:
            step: int | None = None
            try:
                m = catalog.load_manifest(self.store, artifact, n)
                step, created, size, count = m.step, m.created, m.total_bytes, len(m.files)
            except NotFound:
                continue  # deleted meanwhile
            except IntegrityError as exc:
                if self._newer_manifest(artifact, n, exc):
                    raise PolicyRefusal(
                        f"{artifact}@v{n} was written by a newer ckptlake ({exc.message}); "
                        "nothing was deleted", hint="upgrade ckptlake, then run the same rm"
                    ) from None
                created = self.store.stat(layout.version_key(artifact, n)).modified
                size = count = 0
            total += size
            files += count
            plans.append(VersionPlan(
                artifact=artifact, version=n, step=step, created=created,
                age_seconds=max(0, int((now - created).total_seconds())), total_bytes=size,
                files=count, keep=False, rule=tombstones.RM_RULE, reason=reason))
        for summary, _ in lost.values():
            total += summary.total_bytes if summary else 0
            files += summary.files if summary else 0
        if not plans and not lost:  # every manifest went between the listing and its read
            raise self._nothing_to_delete(artifact, steps)
        result = DeleteArtifactResult(
            lake=self.url, artifact=artifact,
            versions=sorted([p.version for p in plans] + list(lost)), total_bytes=total,
            files=files, rule=tombstones.RM_RULE, reason=reason, dry_run=dry_run,
            lost=sorted(lost), pending=steps)
        if dry_run:
            return result
        tombed = set(tombstones.numbers(self.store, artifact))
        replaced: "dict[int, Tombstone]" = {}
        theirs: set[int] = set()
        for p in plans:
            if p.version not in tombed:
                continue
            # an interrupted deleter's tombstone next to a live manifest records this
            # deletion instead, as rm of one version does; a young one is a deleter at work:
            # the manifest still goes (both want it gone), but the lake records that deletion,
            # so it is reported as gone, not as this rm's
            try:
                try:
                    m = catalog.load_manifest(self.store, artifact, p.version)
                except IntegrityError:
                    m = None
                if tomb := self._replace_stale_tombstone(artifact, p.version, m, result, now,
                                                         created=p.created):
                    replaced[p.version] = tomb
            except NotFound:
                theirs.add(p.version)
        done = GcResult()
        if plans:
            delete_versions(self.store, ArtifactPlan(
                artifact=artifact, rule=tombstones.RM_RULE, rule_line=None,
                versions=len(numbers), delete=plans, kept=[], kept_by={}), done, deleted=now,
                keep_latest=False)
        # a lost version's tombstone is all there is to write; one there first is another
        # deleter's (gone), as for rm of one
        recorded = [n for n, (summary, written) in sorted(lost.items())
                    if tombstones.write(self.store, self._lost_tombstone(
                        artifact, n, summary, written, reason=reason, now=now, who=who))]

        def numbers_in(refs: list[str]) -> list[int]:
            prefix = f"{artifact}@v"
            return sorted(int(r[len(prefix):]) for r in refs if r.startswith(prefix))

        deleted = sorted([n for n in numbers_in(done.versions_deleted) if n not in theirs]
                         + recorded)
        spared = numbers_in(done.versions_spared)
        if stale := {n: replaced[n] for n in spared if n in replaced}:
            # next to a version an alias spared; one another deleter took meanwhile is gone
            taken = self._unwrite_tombstones(artifact, stale)
            spared = [n for n in spared if n not in taken]
        gone = [n for n in result.versions if n not in deleted and n not in spared]
        return dataclasses.replace(
            result, deleted=deleted, spared=spared, gone=gone,
            remaining=catalog.version_numbers(self.store, artifact), deleted_at=now,
            deleted_by=who)

    def _nothing_to_delete(self, artifact: str, pending: list[int]) -> NotFound:
        """delete_artifact with no version left to delete: deleted already (tombstones say
        so), or never pushed; its pending sharded steps, if any, are what is left."""
        from .core.shards import describe_steps

        one = len(pending) == 1
        steps = (f"; its pending sharded {'step' if one else 'steps'} "
                 f"({describe_steps(pending)}) {'is' if one else 'are'} no version"
                 if pending else "")
        discard = (f"discard a pending step with: ckptlake rm {artifact}@step={pending[0]} "
                   "--pending" if pending else "")
        if next(iter(self.store.list(layout.tombstones_prefix(artifact))), None) is not None:
            return NotFound(f"every version of {artifact} was deleted already{steps}",
                            hint=discard or f"see them with: ckptlake ls {artifact} --all")
        return NotFound(f"{artifact} has no version{steps}",
                        hint=discard or "see the artifacts with: ckptlake ls")

    def _newer_manifest(self, artifact: str, number: int, exc: CkptlakeError) -> bool:
        """Whether an unreadable manifest is one a newer ckptlake wrote (a higher
        `ckptlake_manifest`, or what decode_manifest says only a newer one writes)."""
        import json

        from .format.manifest import MANIFEST_FORMAT

        if exc.hint == "upgrade ckptlake":
            return True
        try:
            raw = json.loads(self.store.get(layout.version_key(artifact, number)))
        except (NotFound, ValueError, RecursionError):
            return False
        fmt = raw.get("ckptlake_manifest") if isinstance(raw, dict) else None
        return type(fmt) is int and fmt > MANIFEST_FORMAT

    def _replace_stale_tombstone(self, artifact: str, number: int, m: Any,
                                 result: "DeleteResult | DeleteArtifactResult", now: Any,
                                 created: Any = None) -> "Tombstone | None":
        """Make room for rm's tombstone where one stands next to the manifest already.

        One older than catalog.ALIAS_SETTLE_SECONDS is an interrupted deleter's: it is
        replaced by compare-and-swap (the new one is returned), so the lake records this
        deletion's reason and time, which rm reports.  A younger one is a deleter at work
        now: its deletion is reported instead (NotFound), and nothing is written."""
        from .core import tombstones
        from .core.gc import _raw_metadata
        from .core.identity import user_at_host
        from .errors import PreconditionFailed

        key = layout.tombstone_key(artifact, number)
        try:
            data, etag = self.store.get_with_etag(key)
        except NotFound:
            return None
        if not data:  # a PUT cut after its head: the deleter's create replaces it
            return None
        old = tombstones.decode(data)
        if old is not None and (now - old.deleted).total_seconds() < \
                catalog.ALIAS_SETTLE_SECONDS:
            raise self._deleted_meanwhile(artifact, number)
        if m is not None:
            mine = tombstones.from_manifest(m, deleted=now, rule=tombstones.RM_RULE,
                                            reason=result.reason)
        else:
            mine = tombstones.Tombstone(
                artifact=artifact, version=number, step=None, created=created or getattr(result, 'created', None) or now,
                created_by="", metrics={}, parents=[], total_bytes=0, files=0,
                metadata=_raw_metadata(self.store, layout.version_key(artifact, number)),
                deleted=now, deleted_by=user_at_host(), rule=tombstones.RM_RULE,
                reason=result.reason)
        try:
            self.store.put(key, mine.encode(), if_match=etag)
        except PreconditionFailed:  # another deleter replaced or removed it just now
            raise self._deleted_meanwhile(artifact, number) from None
        return mine

    def _unwrite_tombstones(self, artifact: str, written: "dict[int, Tombstone]") -> set[int]:
        """Remove the tombstones rm put next to versions an alias then spared; one whose
        manifest another deleter (which found the tombstone in place, and no alias) deleted
        meanwhile is put back (tombstones.put_back: the version must not be left with neither,
        its number free; gc's deleter does the same).  Returns the numbers put back."""
        from .core import tombstones

        self.store.delete([layout.tombstone_key(artifact, n) for n in written])
        back = set()
        for n, tomb in written.items():
            if not self.store.exists(layout.version_key(artifact, n)):
                tombstones.put_back(self.store, tomb, spared="ckptlake rm spared it for an alias")
                back.add(n)
        return back

    def _deleted_meanwhile(self, artifact: str, number: int) -> NotFound:
        """What the lake records of a deletion another deleter (gc, rm) made or is making."""
        from .core import tombstones

        tomb = tombstones.load(self.store, artifact, number)
        what = tomb.deleted_text() if tomb is not None else "deleted"
        # labelled: bare, the user's --reason ("oops") read as part of the hint
        why = f"reason: {tomb.reason}; " if tomb is not None and tomb.reason else ""
        if self.store.exists(layout.version_key(artifact, number)):
            return NotFound(f"{artifact}@v{number} is being deleted by another deleter "
                            f"(its tombstone: {what})",
                            hint=f"{why}if ckptlake ls {artifact} still lists it in a minute, "
                                 "that deleter was interrupted: run the same rm again")
        return NotFound(f"{artifact}@v{number} was {what} meanwhile",
                        hint=f"{why}list what is left with: ckptlake ls {artifact} --all")

    @staticmethod
    def _aliased(artifact: str, number: int, names: list[str]) -> CkptlakeError:
        """The refusal to delete an aliased version, naming the command that frees it."""
        from .errors import PolicyRefusal

        # a line, however many aliases (1,050 made a 12 KB error line)
        which = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10
                                         else "")
        return PolicyRefusal(
            f"{artifact}@v{number} is aliased ({which}) and an aliased version is never "
            "deleted", hint="remove the alias first: " + "; ".join(
                f"ckptlake alias --delete {artifact} {n}" for n in names[:3])
            + (" ..." if len(names) > 3 else "") + f"; or move it: ckptlake alias "
            f"{artifact}@vN {names[0]}")

    # ---- training nodes (issue 6): sharded commits, async checkpointer --------------------

    def push_shard(self, source: str | Path, artifact: str, *, step: int, rank: int,
                   world: int, metrics: dict[str, float] | None = None,
                   metadata: dict[str, str] | None = None, aliases: Sequence[str] = (),
                   exclude: Sequence[str] = (), follow_symlinks: bool = False,
                   progress: Progress | None = None, stale_after: float | None = None,
                   wait_seconds: float | None = None,
                   compression: str | None = None,
                   save_id: str | None = None) -> "ShardPushResult":
        """Push rank `rank`'s files of a checkpoint written by `world` ranks at `step`.

        The version is committed exactly once, when the last rank's record is in (see
        docs/format.md, "Sharded commits"); until then `pending()` lists the step.  Ranks keep
        their relative paths: they must write distinct file names (or identical bytes).
        Pushing a rank twice is harmless.  `result.version` is None while ranks are missing.

        `save_id`: the same for every rank of one save, another for each attempt (e.g. the
        scheduler's job id and restart count).  Without it, a re-run of a crashed save can
        commit a version mixing the crashed save's leftover records with its own; with it, a
        rank meeting another save's records is refused (Conflict) until that save is
        discarded (`discard_pending`).
        """
        from .core import shards

        validate_artifact(artifact)
        aliases, exclude = check_arg("aliases", aliases, "names"), \
            check_arg("exclude", exclude, "names")
        for name in aliases:
            validate_alias(name)
        layout.check_step(step)
        check_arg("source", source, "path")
        check_arg("follow_symlinks", follow_symlinks, "bool")
        rank, world = check_arg("rank", rank, "int", minimum=0), \
            check_arg("world", world, "int", minimum=0)
        if world < 1:
            raise UsageError(f"world must be at least 1, got {world}")
        if not 0 <= rank < world:
            raise UsageError(f"shard rank must be in 0..{world - 1} for a world of {world}, "
                             f"got {rank}")
        for what, t in (("stale_after", stale_after), ("wait_seconds", wait_seconds)):
            # checked before the upload: a bad one failed after it, leaving the step stuck
            check_arg(what, t, "seconds", optional=True)
        if save_id is not None:
            from .format.refs import validate_save_id

            validate_save_id(save_id)
        from .format.safetensors import TensorObserver

        from .core.scan import scan

        tree = scan(source, exclude=exclude, follow_symlinks=follow_symlinks,
                    avoid=self._local_dir())
        tensors = TensorObserver((f.path, f.abspath) for f in tree.files)
        with self._watching(progress) as progress:
            result = shards.push_shard(
                self.store, tree, artifact, step=step, rank=rank, world=world,
                chunk_size=self.chunk_size, concurrency=self.concurrency,
                metrics=check_metrics(metrics), metadata=check_metadata(metadata),
                aliases=list(aliases), progress=progress, lake_url=self.url,
                stale_after=shards.DEFAULT_STALE_AFTER if stale_after is None else stale_after,
                wait_seconds=wait_seconds, throttle=self.throttle, parts=self.parts,
                observers=[tensors] if tensors else [], compression=compression,
                save=save_id)
        if result.version is not None:
            if result.committed_here:
                self._after_commit(artifact, result.version)
            else:
                self._ensure_indexed(artifact, result.version)
        return result

    def _ensure_indexed(self, artifact: str, version: int) -> None:
        """For a rank that found its step committed by another: write the version's indexes if
        its listing summary is not there.  The committing process may have died between its
        manifest and its summary, and a version without a summary cannot be told lost if its
        manifest goes (docs/format.md, "Listing summaries").  One listing; the writes are the
        same keys the committer writes, so doing them twice changes nothing."""
        prefix = layout.summary_key(artifact, version, "")  # "<...>/@s/<NNNNNNNNNN>."
        try:
            if next(iter(self.store.list(prefix)), None) is not None:
                return
        except CkptlakeError:
            return  # (the committer's own summary is the usual one; this is the spare)
        import logging

        for warning in self._after_commit(artifact, version):
            logging.getLogger("ckptlake").warning("ckptlake: %s", warning)

    def pending(self, artifact: str | None = None) -> list["PendingStep"]:
        """Sharded steps without a committed version (ranks missing, or a commit under way)."""
        from .core import shards

        if artifact is not None:
            validate_artifact(artifact)
        return shards.pending(self.store, artifact)

    def discard_pending(self, artifact: str, step: int, *, reason: str | None = None,
                        dry_run: bool = False, stale_after: float | None = None,
                        force: bool = False) -> DiscardResult:
        """Discard a sharded step that never committed (`ckptlake rm ARTIFACT@step=N
        --pending`): a crashed save whose records block its re-run ("already pushed with
        other files") and keep their chunks alive as gc roots.  Afterwards the step saves
        again as a fresh one, and gc sweeps the chunks only it used after the grace period.

        Refused (PolicyRefusal, exit 7) for a committed step (rm ARTIFACT@vN deletes its
        version) and for a claim updated less than `stale_after` seconds ago (default
        core/shards.DEFAULT_STALE_AFTER): an owner may be committing it; and, unless `force`
        (every rank of that save has stopped), while the step's newest shard record is younger
        than `stale_after`: a rank still writing would leave a record the step's next save
        commits with its own.  NotFound if the step has nothing under it; Conflict
        (shards.LandedCommit) if the commit turns out to have landed, with dry_run too.
        dry_run: the checks, nothing written.  The protocol: docs/format.md, "Discarding a
        pending step"."""
        from .core import shards
        from .redact import redact

        validate_artifact(artifact)
        step = check_arg("step", step, "int", minimum=0)
        layout.check_step(step)
        check_arg("dry_run", dry_run, "bool")
        check_arg("force", force, "bool")
        stale_after = check_arg("stale_after", stale_after, "seconds", optional=True)
        reason = check_reason(reason)
        if reason is not None:
            reason = redact(reason)  # it is stored in the claim and shown by every push
        self._check_known()
        return shards.discard_step(
            self.store, artifact, step, lake_url=self.url, reason=reason, dry_run=dry_run,
            stale_after=shards.DEFAULT_STALE_AFTER if stale_after is None else stale_after,
            force=force)

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

        check_arg("depth", depth, "int", optional=True, minimum=0)
        return lineage(self.store, ref, direction=direction, depth=depth)

    def show(self, ref: str | Ref) -> "VersionDetail":
        """Everything about one version: files, totals, step, metrics, metadata, provenance,
        aliases, parents, inputs and children."""
        from .core.show import show

        return show(self.store, ref)

    def diff(self, a: str | Ref, b: str | Ref, *, values: bool = False, inspect: bool = False,
             egress: "EgressPolicy | None" = None, yes: bool = False,
             confirm: "Callable[[EgressEstimate], bool] | None" = None,
             on_estimate: "Callable[[EgressEstimate], None] | None" = None) -> "DiffResult":
        """What changed from version `a` to version `b` (any two artifacts): metadata, files,
        shared bytes and, for .safetensors files, tensors, all from the two manifests.
        `values=True` also fetches the changed tensors' bytes (only those) for value
        statistics; it needs numpy.  `inspect=True` looks inside modified files: safetensors
        `__metadata__`, torch archives' storages and (with torch installed) tensors, reading
        whole chunks, typically each side's first and last.  `result.contents` says per
        modified file what was looked into (`"inspected": False` where nothing was).

        egress: with `values` or `inspect`, the egress guard of `pull` (see there): the bytes
        about to be fetched are estimated and priced first (`on_estimate`), and above
        `confirm_above_usd` the diff fetches nothing unless `yes` or `confirm(estimate)`,
        raising PolicyRefusal.  None (the default): no egress check.
        """
        from .core import diff as _diff

        for what, flag in (("values", values), ("inspect", inspect), ("yes", yes)):
            check_arg(what, flag, "bool")
        check_arg("confirm", confirm, "callable", optional=True)
        check_arg("on_estimate", on_estimate, "callable", optional=True)
        ma, mb = self._manifest(a), self._manifest(b)
        if (values or inspect) and egress is not None:
            from .core import egress as _egress

            est = _egress.estimate_diff(self.store, ma, mb, egress, values=values,
                                        inspect=inspect)
            if values and _diff.values_to_fetch(_diff.value_pairs(ma, mb)):
                _diff.require_numpy()  # a missing numpy fails before any cost is put to anyone
            if on_estimate is not None:
                on_estimate(est)
            _egress.enforce(est, yes=yes, confirm=confirm)
        return _diff.diff(self._data() if (values or inspect) else self.store, ma, mb,
                          values=values, inspect=inspect)

    # ---- reading in place (issue 14) ------------------------------------------------------

    def open(self, ref: str | Ref, path: str | None = None, *,
             readahead: int | None = None, replica: str | None = None,
             max_buffer: int = 0) -> "LakeFile | WholeFile":
        """A read-only, seekable binary file object over one file of a version, fetched chunk
        by chunk with ranged GETs and verified before any byte is returned (core/reader.py):
        `torch.load`, `zipfile`, `tarfile`, `json.load` read it as they read a local file.

        path None: the file of a single-file version.  Symlinks of the version are followed
        (they stay inside it).  `readahead`: chunks fetched ahead while reading forward
        (default 2; memory (3 + readahead) x chunk size).  NotFound names the version and
        close matches; a directory is a UsageError.  Use it as a context manager, or close it.
        `replica`: as for `pull` (None: the replica of the client's region, if any).

        `max_buffer`: a file of at most this many bytes is instead read whole before open
        returns (core/whole.py): all its chunks in parallel at the lake's concurrency, each
        decoded into its place in one buffer of the file's size and verified, then served
        from memory (the file's size, until closed).  For a reader of all of the file whose
        limit is fetching, not the client's CPU: the fresh buffer's page faults made it cost
        more CPU than streaming on 2 cores (docs/benchmarks.md).  Default 0: always stream.
        """
        from .core.reader import find_file

        max_buffer = check_arg("max_buffer", max_buffer, "int", minimum=0)
        check_arg("replica", replica, "str", optional=True)
        m = self._manifest_told(ref)
        return self._open_entry(m, find_file(m, path), readahead=readahead, replica=replica,
                                max_buffer=max_buffer)

    def _open_entry(self, m: Any, entry: Any, *, readahead: int | None = None,
                    replica: str | None = None, max_buffer: int = 0
                    ) -> "LakeFile | WholeFile":
        from .core.reader import DEFAULT_READAHEAD, LakeFile

        name = f"{m.artifact}@v{m.version}:{entry.path}"
        readahead = DEFAULT_READAHEAD if readahead is None else readahead
        if 0 < entry.size <= max_buffer and entry.symlink is None:
            check_arg("readahead", readahead, "int", minimum=0)
            from .core.whole import read_whole

            return read_whole(self._data(replica), entry, m.hash, name=name,
                              workers=self.concurrency, parts=self.parts,
                              throttle=self.throttle, stored=m.stored)
        return LakeFile(self._data(replica), entry, m.hash, name=name, readahead=readahead,
                        parts=self.parts, throttle=self.throttle, stored=m.stored)

    def tensors(self, ref: str | Ref, names: "str | Sequence[str] | None" = None, *,
                path: str | None = None, framework: str = "np") -> dict[str, Any]:
        """Tensors of the version's `.safetensors` files, fetching only their bytes.

        Each tensor's byte range (from the manifest's tensor records) is fetched with ranged
        GETs and verified against its recorded digest before it is returned: one tensor of a
        2 GiB file costs its own bytes plus the manifest.  names None: every tensor (of `path`,
        or of all the version's safetensors files; a name in several files needs `path`).
        framework "np" (numpy arrays) or "pt" (torch tensors); both imported only here.  numpy
        has no bfloat16 or float8: such tensors raise UsageError with "np" (use "pt").
        An unknown name raises NotFound listing close matches (without any, some of the
        names the version holds).  Returns {name: array}.
        """
        from .core.reader import require

        require(framework)  # a missing numpy/torch fails before any request
        return self._tensors(self._manifest_told(ref), names, path, framework)

    def _tensors(self, m: Any, names: Any, path: str | None, framework: str) -> dict[str, Any]:
        from .core import reader
        from .core.diff import read_tensor_into

        picks = reader.select_tensors(m, names, path)
        data = self._data()
        lib = reader.require(framework)
        for _, t in picks:
            reader.check_dtype(t, framework, lib)

        def fetch(pick: tuple[Any, Any]) -> tuple[str, bytearray]:
            entry, t = pick
            buffer = bytearray(t.nbytes)
            self.throttle.acquire(t.nbytes)
            read_tensor_into(data, entry, t, buffer, workers=self.concurrency,
                             stored=m.stored, algo=m.hash,
                             where=f"{m.artifact}@v{m.version}")
            return t.name, buffer

        from .transfer.pool import bounded_map

        fetched = dict(bounded_map(fetch, picks, workers=min(4, self.concurrency),
                                   name="ckptlake-tensors"))
        return {t.name: reader.as_array(fetched[t.name], t, framework, lib) for _, t in picks}

    def load_state_dict(self, ref: str | Ref, path: str | None = None, *,
                        map_location: Any = None) -> dict[str, Any]:
        """A torch state dict read in place: `torch.load(lake.open(ref, path),
        map_location=..., weights_only=True)` for a torch file (.pt, .pth, .bin), or the
        tensors of `.safetensors` files as torch tensors.  path None: the version's only
        torch file, else its safetensors files; if that is ambiguous, UsageError lists them."""
        from .core import reader

        torch = reader.require("pt")
        m = self._manifest_told(ref)
        if path is None:
            torch_files = [e.path for e in m.files
                           if e.symlink is None and e.path.lower().endswith(reader.TORCH_SUFFIXES)]
            st_files = [e.path for e in m.files if e.tensors is not None]
            if len(torch_files) == 1 and not st_files:
                path = torch_files[0]
            elif st_files and not torch_files:
                return _to_device(self._tensors(m, None, None, "pt"), map_location)
            else:
                found = torch_files + st_files
                raise UsageError(f"{m.artifact}@v{m.version} holds "
                                 + (f"{len(found)} candidate files: " + ", ".join(found[:5])
                                    if found else "no torch or safetensors file"),
                                 hint="pass path= to choose one" if found else
                                 "lake.open() reads any file")
        entry = reader.find_file(m, path)
        if entry.tensors is not None:
            return _to_device(self._tensors(m, None, entry.path, "pt"), map_location)
        with self._open_entry(m, entry) as fh:
            try:
                return torch.load(fh, map_location=map_location, weights_only=True)
            except CkptlakeError:
                raise
            except Exception as exc:  # torch's own errors: not a torch file, unsafe pickle
                first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]  # may be ""
                raise UsageError(f"torch.load of {m.artifact}@v{m.version}:{entry.path} "
                                 f"failed: {first}",
                                 hint="only weights_only=True files load this way") from None

    def load_state(self, ref: str | Ref, *, map_location: Any = None) -> Any:
        """The training state `Checkpointer.save_state` saved as `ref`, rebuilt: the same nested
        dicts (int keys stay ints), lists, tuples and plain values, with torch tensors where
        torch tensors were saved and numpy arrays where numpy arrays were.  Reads only through
        verified reads and never unpickles (docs/format.md, "Training state").

        map_location: a device for the torch tensors (default: CPU).  A version saved by an
        older ckptlake (one safetensors file, nested keys joined with ".") comes back as that
        flat {name: tensor} mapping.  NotFound if `ref` does not exist; UsageError (naming the
        version) if it is not a training state.
        """
        from .core import reader
        from .format import state as _state

        m = self._manifest_told(ref)
        what = f"{m.artifact}@v{m.version}"
        by_path = {e.path: e for e in m.files if e.symlink is None}
        entry = by_path.get(_state.SKELETON_FILENAME)
        if entry is None:
            return self._load_flat_state(m, what, map_location)
        with reader.LakeFile(self._data(), entry, m.hash, name=f"{what}:{entry.path}",
                             readahead=0, parts=self.parts, throttle=self.throttle,
                             stored=m.stored) as fh:
            skeleton = _state.parse(fh.read(), what)
        path = skeleton.get("file")
        if not isinstance(path, str) or path not in by_path:
            raise UsageError(f"{what}: the tensor file {path!r} named by "
                             f"{_state.SKELETON_FILENAME} is not in the version")
        file = by_path[path]
        groups: dict[str, list[str]] = {}
        for node in _state.tensor_refs(skeleton):
            framework = node.get("framework")
            if framework not in reader.FRAMEWORKS:
                raise UsageError(f"{what}: tensor {node['$tensor']!r} has an unknown "
                                 f"framework {framework!r}")
            groups.setdefault(framework, []).append(node["$tensor"])
        tensors: dict[str, Any] = {}
        for framework, names in sorted(groups.items()):
            lib = reader.require(framework)
            if file.tensors is None:
                # saved under a name without .safetensors (allowed until 2026-12-07): the push
                # kept no tensor records, so the file is read whole and its header parsed here
                with reader.LakeFile(self._data(), file, m.hash, name=f"{what}:{path}",
                                     parts=self.parts, throttle=self.throttle,
                                     stored=m.stored) as fh:
                    got = reader.unrecorded_tensors(fh.read(), names, framework, lib,
                                                    f"{what}:{path}")
            else:
                got = self._tensors(m, names, path, framework)
            tensors.update(_to_device(got, map_location) if framework == "pt" else got)
        return _state.decode(skeleton, tensors, what)

    def _load_flat_state(self, m: Any, what: str, map_location: Any) -> dict[str, Any]:
        """A state saved before the skeleton existed: one safetensors file whose header
        metadata has "format" (pt | np), as the old `save_state` wrote it."""
        import json
        import struct

        from .core import reader

        files = [e for e in m.files if e.symlink is None]
        if len(files) != 1 or files[0].tensors is None:
            raise UsageError(f"{what} is not a training state (saved by save_state)",
                             hint="lake.pull() or lake.open() read any version")
        entry = files[0]
        with reader.LakeFile(self._data(), entry, m.hash, name=f"{what}:{entry.path}",
                             readahead=0, parts=self.parts, throttle=self.throttle,
                             stored=m.stored) as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            try:
                header = json.loads(fh.read(n))
            except ValueError:
                header = {}
        fmt = (header.get("__metadata__") or {}).get("format") if isinstance(header, dict) \
            else None
        if fmt not in reader.FRAMEWORKS:
            raise UsageError(f"{what} is not a training state (saved by save_state)",
                             hint="lake.tensors() reads the tensors of any safetensors file")
        reader.require(fmt)
        got = self._tensors(m, None, entry.path, fmt) if entry.tensors else {}
        return _to_device(got, map_location) if fmt == "pt" else got

    # ---- retention, gc and egress (issue 4) -------------------------------------------------

    def estimate_pull(self, ref: str | Ref, destination: str | Path, *,
                      egress: "EgressPolicy | None" = None, paths: Sequence[str] = (),
                      include: Sequence[str] = (), exclude: Sequence[str] = (),
                      replica: str | None = None, use_cache: bool = True
                      ) -> "EgressEstimate":
        """What pulling `ref` (or the part `paths`/`include`/`exclude` select, as in `pull`)
        into `destination` would download, over which route, at what cost; nothing is
        downloaded or created.  egress None: the config file's policy.  `use_cache`: as for
        `pull` (False: chunks in the lake's chunk cache count as downloaded, as that pull
        downloads them)."""
        from .core import egress as _egress
        from .core.browse import select
        from .policy.config import load_config
        from .policy.egress import load_egress

        destination = check_destination(destination)
        check_arg("use_cache", use_cache, "bool")
        check_arg("replica", replica, "str", optional=True)
        paths, include, exclude = (check_arg(what, v, "names") for what, v in (
            ("paths", paths), ("include", include), ("exclude", exclude)))
        m = select(self._manifest(ref), paths, include, exclude)
        policy = egress if egress is not None else load_egress(load_config())
        return _egress.estimate_pull(self._data(replica), m, os.fspath(destination), policy,
                                     self.cache if use_cache else None)

    def estimate_diff(self, a: str | Ref, b: str | Ref, *,
                      egress: "EgressPolicy | None" = None, values: bool = True,
                      inspect: bool = False) -> "EgressEstimate":
        """What `diff(a, b, values=, inspect=)` would download (values: the changed tensors'
        bytes, both sides; inspect: the chunks read inside modified files), over which route,
        at what cost; reads the two manifests only.  egress None: the config file's policy."""
        from .core import egress as _egress
        from .policy.config import load_config
        from .policy.egress import load_egress

        check_arg("values", values, "bool")
        check_arg("inspect", inspect, "bool")
        ma, mb = self._manifest(a), self._manifest(b)
        policy = egress if egress is not None else load_egress(load_config())
        return _egress.estimate_diff(self.store, ma, mb, policy, values=values,
                                     inspect=inspect)

    def gc_plan(self, policy: "RetentionPolicy | str | Path | None" = None, *,
                match: str | None = None, now: "datetime | None" = None) -> "GcPlan":
        """What `gc` would delete now and why; reads only.

        policy: a RetentionPolicy, a path to a YAML file with a `retention:` section, or None
        for the config file's.  match: consider only artifacts matching this glob.
        """
        from .core.gc import plan_gc
        from .policy.retention import resolve_retention

        from datetime import datetime

        check_policy_arg("policy", policy)
        check_arg("match", match, "str", optional=True)
        if now is not None and not isinstance(now, datetime):
            raise UsageError(f"now must be a datetime or None, got {now!r}")
        return plan_gc(self.store, resolve_retention(policy), now=now, match=match)

    def gc(self, plan: "GcPlan", *, on_event: "Callable[[str], None] | None" = None
           ) -> "GcResult":
        """Carry out a plan from `gc_plan` (docs/format.md, "Deleting (gc)"): delete its
        versions (leaving tombstones), then sweep/condemn unreferenced chunks.  Safe to
        interrupt and re-run, and safe next to concurrent pushes."""
        from .core.gc import execute

        from .core.gc import GcPlan

        if not isinstance(plan, GcPlan):
            raise UsageError(f"plan must be a GcPlan (from lake.gc_plan()), got "
                             f"{type(plan).__name__}")
        check_arg("on_event", on_event, "callable", optional=True)
        result = execute(self.store, plan, on_event=on_event)
        if self.replicas is not None and self.replicas.specs:
            self._gc_replicas(plan, result)
        return result

    def _gc_replicas(self, plan: "GcPlan", result: "GcResult") -> None:
        """Sweep every configured replica after the lake (core/replicas.gc_replica).  A replica
        that cannot be swept is a warning: the lake's gc is done, and the replica only holds
        copies."""
        from .core.gc_guard import GcSettings
        from .core.replicas import gc_replica

        settings = GcSettings(**plan.settings)
        for spec in self.replicas.specs:  # type: ignore[union-attr]
            try:
                result.replicas.append(gc_replica(
                    self.store, self._replica_backend(spec), spec, settings,
                    origin_endpoint=self.replicas.origin_endpoint))  # type: ignore[union-attr]
            except CkptlakeError as exc:
                result.warnings.append(f"replica {spec.name} ({spec.url}) was not swept: "
                                       f"{exc}")

    def replicate(self, ref: str | Ref, to: str, *, verify: bool = False,
                  progress: Progress | None = None) -> "ReplicateResult":
        """Copy the chunks of version `ref` that replica `to` lacks, ahead of the pulls that
        would fetch them through it (CI, after publishing a model).  Each chunk is verified
        against its digest before it is written (create-if-absent).  Resumable: a re-run
        copies only what is still missing.  verify: also read back the chunks already there
        and replace any that do not match."""
        from .core.replicas import replicate

        check_arg("verify", verify, "bool")
        spec = self.replica_named(to)
        m = self._manifest(ref)
        with self._watching(progress) as progress:
            return replicate(self.store, self._replica_backend(spec), m, spec=spec,
                             lake_url=self.url, concurrency=self.concurrency, verify=verify,
                             progress=progress, origin_endpoint=self.replicas.origin_endpoint)

    def copy(self, ref: str | Ref, to: "Lake | None" = None, artifact: str | None = None, *,
             aliases: Sequence[str] = (), progress: Progress | None = None,
             egress: "EgressPolicy | None" = None, yes: bool = False,
             confirm: "Callable[[EgressEstimate], bool] | None" = None,
             on_estimate: "Callable[[EgressEstimate], None] | None" = None) -> "CopyResult":
        """Copy version `ref` into lake `to` (None: this lake) as the next version of
        `artifact` (None: the same name), with its files, step, metrics, metadata, inputs and
        provenance; the new version's provenance says where it came from (`copied_from`), and
        within one lake it is a child (derived-from) of the original.

        Only the chunk objects the destination lacks are read and written, as they are
        stored (encoded ones stay encoded, except into a lake whose header says compression
        none), each verified against its digest before it is written.  The commit is a
        push's: a new version number, aliases after it (an alias that cannot be set raises
        its error saying the version is committed).  An interrupted copy commits nothing, and
        a re-run copies only what is still missing.  A destination lake that does not exist
        yet is created with the source's chunk hash.  One that hashes chunks differently
        shares no chunk with this one: the version is then pulled into a temporary directory
        and pushed (`rechunked` in the result; local disk for the whole version).

        egress, yes, confirm, on_estimate: as for `pull`, for the bytes read from this lake.
        """
        from .core import copy as _copy
        from .core.lakeheader import open_or_create_header, read_header, versions_hash
        from .core.push import AliasNotSet

        if to is not None and not isinstance(to, Lake):
            raise UsageError(f"to must be a Lake (ckptlake.open(...)), got {to!r}")
        if artifact is not None:
            validate_artifact(artifact)
        if to is None and artifact is None:
            raise UsageError("a copy needs somewhere to go: another lake (to=) or another "
                             "artifact name (artifact=)",
                             hint="ckptlake cp REF --to LAKE_URL, or --as ARTIFACT")
        aliases = check_arg("aliases", aliases, "names")
        for name in aliases:
            validate_alias(name)
        check_arg("yes", yes, "bool")
        check_arg("confirm", confirm, "callable", optional=True)
        check_arg("on_estimate", on_estimate, "callable", optional=True)
        dest, same = self._copy_target(to)
        m = self._manifest(ref)
        name = artifact if artifact is not None else m.artifact
        existing = read_header(dest.store)
        dest_hash = existing.hash if existing is not None else versions_hash(dest.store)[1]
        if dest_hash is not None and dest_hash != m.hash:
            return self._copy_rechunked(m, dest, name, aliases=aliases, progress=progress,
                                        egress=egress, yes=yes, confirm=confirm,
                                        on_estimate=on_estimate, dest_hash=dest_hash)
        dest._check_known()

        def before_copy(total: int, objects: dict[str, int]) -> None:
            if egress is None:
                return
            from .core import egress as _egress

            est = _egress.estimate_copy(self.store, m, objects, total, egress,
                                        route_if_needed=True)
            if on_estimate is not None:
                on_estimate(est)
            _egress.enforce(est, yes=yes, confirm=confirm)

        with self._watching(progress) as progress, dest._watching(progress):
            result, pushed = _copy.copy_version(
                self.store, dest.store, m, name, aliases=aliases,
                concurrency=self.concurrency, source_url=self.url, dest_url=dest.url,
                same_lake=same, progress=progress, throttle=dest.throttle,
                open_header=lambda: open_or_create_header(dest.store, hash=m.hash),
                before_copy=before_copy)
        warnings = dest._after_commit(name, result.to_version)
        if isinstance(pushed, AliasNotSet):
            raise pushed.committed_error()
        return dataclasses.replace(result, warnings=[*result.warnings, *warnings]) \
            if warnings else result

    def _copy_target(self, to: "Lake | None") -> "tuple[Lake, bool]":
        """(the lake a copy goes into, whether it is this one: `to` may name it another way);
        UsageError for a lake inside the other, whose keys would mix."""
        from .policy.replicas import overlap

        dest = to if to is not None else self
        where = "same" if dest is self else overlap(
            self.url, _endpoint(self.store), dest.url, _endpoint(dest.store))
        if where in ("inside", "holds"):
            raise UsageError(f"cannot copy between {self.url} and {dest.url}: one lake is "
                             "inside the other", hint="copy into a lake of its own location")
        return (self, True) if where == "same" else (dest, False)

    def estimate_copy(self, ref: str | Ref, to: "Lake | None" = None, *,
                      egress: "EgressPolicy | None" = None) -> "EgressEstimate":
        """What `copy(ref, to)` would read from this lake now (the chunk objects `to` lacks, as
        stored; the whole version when the lakes hash chunks differently), over which route, at
        what cost; nothing is copied or created.  egress None: the config file's policy."""
        from .core import copy as _copy
        from .core import egress as _egress
        from .core.lakeheader import read_header, versions_hash
        from .policy.config import load_config
        from .policy.egress import load_egress

        if to is not None and not isinstance(to, Lake):
            raise UsageError(f"to must be a Lake (ckptlake.open(...)), got {to!r}")
        dest, _same = self._copy_target(to)  # what the copy would refuse, refused
        dest.store.check_writable()
        policy = egress if egress is not None else load_egress(load_config())
        m = self._manifest(ref)
        existing = read_header(dest.store)
        dest_hash = existing.hash if existing is not None else versions_hash(dest.store)[1]
        if dest_hash is not None and dest_hash != m.hash:
            # a pull of the whole version (the copy's own guard prices it as one)
            return _egress.estimate_pull(self.store, m, None, policy, operation="cp")
        total, objects = _copy.objects_to_copy(self.store, dest.store, m,
                                               concurrency=self.concurrency)
        return _egress.estimate_copy(self.store, m, objects, total, policy)

    def _copy_rechunked(self, m: "Manifest", dest: "Lake", artifact: str, *,
                        aliases: Sequence[str], progress: Progress | None,
                        egress: "EgressPolicy | None", yes: bool,
                        confirm: "Callable[[EgressEstimate], bool] | None",
                        on_estimate: "Callable[[EgressEstimate], None] | None",
                        dest_hash: str) -> "CopyResult":
        """Lake.copy between lakes of different chunk hashes: through a temporary local copy
        (a pull, verified) and a push of it with the version's own fields."""
        import tempfile

        from .core import copy as _copy
        from .core import pull as _pull

        started = time.monotonic()
        fields = _copy.copy_fields(m, source_url=self.url, same_lake=False)
        # not TemporaryDirectory: its clean-up recurses once per level (a version 1,200
        # directories deep was an internal error, its whole copy left in $TMPDIR)
        from .core.fswalk import rmtree

        tmp = tempfile.mkdtemp(prefix="ckptlake-cp-")
        try:
            target = os.path.join(tmp, m.files[0].path if m.kind == "file" else "version")
            if egress is not None:
                from .core import egress as _egress

                est = _egress.estimate_pull(self.store, m, target, egress, None,
                                            route_if_needed=True, operation="cp")
                if on_estimate is not None:
                    on_estimate(est)
                _egress.enforce(est, yes=yes, confirm=confirm)
            with self._watching(progress) as watched:
                try:
                    _pull.pull(self.store, m, target, force=False,
                               concurrency=self.concurrency, progress=watched,
                               lake_url=self.url, throttle=self.throttle, parts=self.parts)
                except MissingChunk as e:
                    raise catalog.deleted_meanwhile(
                        self.store, m.artifact, m.version, e,
                        doing="being copied; nothing of it was committed") from None
            # core push with the version's own fields: Lake.push would add this machine's
            # provenance (and the git state around $TMPDIR) to the source's
            from .core import push as _push
            from .core.scan import MAX_DEPTH, TooDeep, scan
            from .format.safetensors import TensorObserver

            try:
                tree = scan(target, exclude=(), follow_symlinks=False,
                            avoid=dest._local_dir())
            except TooDeep:
                raise UsageError(
                    f"{m.artifact}@v{m.version} is nested too deeply (more than {MAX_DEPTH} "
                    f"directory levels) to copy into {dest.url}, a lake of another chunk hash: "
                    "that copy pushes the version again",
                    hint="copy it into a lake of the same hash (its chunks go as they are), "
                         "or pull it") from None
            tensors = TensorObserver((f.path, f.abspath) for f in tree.files)
            with dest._watching(progress) as watched:
                try:
                    pushed = dest._indexed(_push.push(
                        dest.store, tree, artifact, chunk_size=dest.chunk_size,
                        concurrency=dest.concurrency, step=m.step, metrics=dict(m.metrics),
                        metadata=dict(m.metadata), aliases=list(aliases), progress=watched,
                        lake_url=dest.url, throttle=dest.throttle, parts=dest.parts,
                        observers=[tensors] if tensors else [], manifest_fields=fields))
                except _push.AliasNotSet as exc:
                    dest._indexed(exc)  # raises the alias error, the version committed
                    raise AssertionError("unreachable") from None
        finally:
            rmtree(tmp)
        from .core.copy import CopyResult

        return CopyResult(
            lake=self.url, artifact=m.artifact, version=m.version, to_lake=dest.url,
            to_artifact=artifact, to_version=pushed.version, files=len(m.files),
            bytes=m.total_bytes, chunks=pushed.chunks_uploaded + pushed.chunks_deduplicated,
            chunks_present=pushed.chunks_deduplicated, chunks_copied=pushed.chunks_uploaded,
            bytes_copied=pushed.bytes_sent if pushed.bytes_sent is not None
            else pushed.bytes_uploaded,
            bytes_stored=pushed.bytes_stored, aliases=list(pushed.aliases),
            seconds=round(time.monotonic() - started, 3), rechunked=True,
            warnings=[f"{dest.url} hashes chunks with {dest_hash}, {self.url} with {m.hash}: "
                      "no chunk is shared, so the version went through a local copy and a "
                      "push", *pushed.warnings],
            aliases_moved=dict(pushed.aliases_moved))

    def du(self, prefix: str = "", *, versions: bool = False, sort: str = "stored",
           price: float | None = None) -> "DuReport":
        """Per artifact (and per version with versions=True): logical, stored, exclusive
        (freed if it alone were deleted) and shared bytes, and their monthly cost at `price`
        $/GiB-month (None: retention.storage_price_per_gb_month of the config file).  Reads
        listings and manifests only (core/du.py); prefix selects the artifacts reported,
        sharing is always counted lake-wide."""
        from .core.du import disk_usage
        from .policy.retention import resolve_retention

        check_arg("prefix", prefix, "str")
        check_arg("versions", versions, "bool")
        price = check_arg("price", price, "number", optional=True, minimum=0)
        if price is None:
            price = resolve_retention(None).storage_price_per_gb_month
        return disk_usage(self.store, prefix=prefix, versions=versions, price=price, sort=sort)

    def expired(self, artifact: str) -> "list[Tombstone]":
        """Versions of `artifact` that gc deleted (their tombstones), oldest first."""
        return catalog.expired(self.store, artifact)

    def expired_counts(self, prefix: str = "") -> dict[str, int]:
        """artifact -> number of its versions gc deleted."""
        return catalog.expired_counts(self.store, check_arg("prefix", prefix, "str"))

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

        check_arg("read_data", read_data, "bool")
        if ref is not None and not isinstance(ref, (str, Ref)):
            raise UsageError(f"ref must be None (the whole lake), an artifact or a reference "
                             f"string, or a Ref, got {ref!r}")
        with self._watching(progress) as progress:
            return verify(self.store, ref, lake_url=self.url, concurrency=self.concurrency,
                          read_data=read_data, subset=subset, seed=seed, parts=self.parts,
                          throttle=self.throttle, progress=progress)

    def close(self) -> None:
        self.parts.close()
        for backend in self._replica_backends.values():
            backend.close()
        self._replica_backends = {}
        self.store.close()


def _shortened(text: str, limit: int) -> str:
    """`text` on one line of at most `limit` characters, its middle cut: a warning naming a
    512-character artifact and a store error quoting its whole key ran to 1.5 KB."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    half = (limit - 3) // 2
    return text[:half] + "..." + text[len(text) - (limit - 3 - half):]


def _endpoint(store: Store) -> str | None:
    """The endpoint an S3 store talks to (None: AWS's own, or a local lake)."""
    while (inner := getattr(store, "inner", None)) is not None:
        store = inner
    resolved = getattr(store, "resolved_endpoint", None)
    return resolved() if callable(resolved) else None


def _to_device(tensors: dict[str, Any], map_location: Any) -> dict[str, Any]:
    if map_location is None:
        return tensors
    if callable(map_location) or isinstance(map_location, dict):
        raise UsageError("map_location for safetensors must be a device (e.g. 'cpu')")
    try:
        return {k: v.to(map_location) for k, v in tensors.items()}
    except (RuntimeError, AssertionError, TypeError, ValueError) as exc:
        # torch's answer to a device it does not know or was not built for ("cuda" on a
        # CPU build: an AssertionError), as torch.load's path reports it
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        raise UsageError(f"map_location={map_location!r}: {first}",
                         hint="name a device this torch has, e.g. 'cpu'") from None
