"""The egress guard's measurements: what a pull or a `diff --values` would download, and where
the lake is.

Pricing and thresholds are policy (policy/egress.py); this module only looks: at the manifests,
at the destination (read-only: nothing is created, unlike the pull's own placement step), and
at the bucket's region (one HeadBucket, S3 lakes only).  `lineage` downloads no data chunks
(listings, manifests and tombstones only) and so has no guard.
"""
from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, Callable

from ..errors import CkptlakeError, PolicyRefusal
from ..format.manifest import FileEntry, Manifest
from ..policy.egress import EgressEstimate, EgressPolicy, estimate
from ..store.base import Store
from ..units import format_bytes

if TYPE_CHECKING:
    from .cache import ChunkCache


def bytes_to_fetch(m: Manifest, destination: str, lake_url: str | None = None,
                   cache: "ChunkCache | None" = None) -> tuple[int, int]:
    """(chunk-object bytes the pull downloads, as stored, bytes it will not download).

    The pull's rules (core/pull.py): a regular file at the final path whose bytes match the
    manifest is kept (verified here too); a chunk that an interrupted pull of the same version
    journaled in its staging directory is reused (counted from the journal; the pull re-verifies
    it, and fetches it after all in the rare case that fails); everything else is fetched.  A
    pack chunk is fetched whole, so it counts once, at its full size (up to the last file of the
    version in it), even when only some of its files are needed.  A chunk the local chunk cache
    holds counts as present (by a stat: the pull verifies it when read).  Chunks that
    chunk-level reuse will copy from local files (core/reuse.py) are not subtracted: finding
    them means hashing, so the estimate stays an upper bound.
    """
    from .browse import object_sizes
    from .pull import final_root, journaled_chunks, staging_dir

    root = final_root(m, destination)
    if m.kind == "file":
        finals = {m.files[0].path: root}
    elif os.path.lexists(root) and not os.path.isdir(root):
        finals = {}  # the pull will refuse; nothing is present
    else:
        finals = {e.path: os.path.join(root, *e.path.split("/")) for e in m.files}
    present = 0
    needed: list[FileEntry] = []
    for e in m.files:
        if e.symlink is not None:
            continue
        final = finals.get(e.path)
        if final is not None and _present(final, e, m.hash):
            present += e.size
        else:
            needed.append(e)
    objects: dict[str, int] = {}
    staged_files: dict[str, int] = {}
    staged = journaled_chunks(staging_dir(root, lake_url, m)) if lake_url else set()
    whole_size = object_sizes(m)  # a pack is fetched whole, also for part of a version
    for e in needed:
        for ref in e.chunks:
            if ref.digest in staged or (cache is not None and _cached(cache, m.hash,
                                                                       ref.digest)):
                staged_files[ref.digest] = staged_files.get(ref.digest, 0) + ref.size
                continue
            # what crosses the wire: an encoded chunk at its stored size (manifest hint)
            objects[ref.digest] = m.stored.get(ref.digest, whole_size[ref.digest])
    return sum(objects.values()), present + sum(staged_files.values())


def _cached(cache: "ChunkCache", algo: str, chunk: str) -> bool:
    return os.path.isfile(cache.entry_path(algo, chunk))


def _present(path: str, entry: FileEntry, algo: str) -> bool:
    from .pull import _matches  # the pull's own comparison, read-only

    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    try:
        return _matches(path, entry, algo)
    except OSError:
        return False


def lake_region(store: Store, policy: EgressPolicy) -> tuple[str | None, str]:
    """(region, where it came from); None when neither the config nor the bucket says."""
    if policy.lake_region:
        return policy.lake_region, "egress.lake_region"
    if not is_remote(store):
        return None, "n/a"
    probe = getattr(store, "bucket_region", None)
    if probe is None:
        return None, "unknown"
    try:
        region = probe()
    except CkptlakeError:
        return None, "unknown (HeadBucket failed)"
    return (region, "bucket") if region else (None, "unknown (the server does not say)")


def is_remote(store: Store) -> bool:
    return store.url.startswith("s3://")


def estimate_download(store: Store, policy: EgressPolicy, *, artifact: str, version: int,
                      bytes_total: int, bytes_present: int, bytes_to_download: int,
                      operation: str = "pull", base: str | None = None) -> EgressEstimate:
    """Price `bytes_to_download` fetched from this store: the route comes from the lake's
    region (asked from the bucket only if the config does not say) and the client's."""
    remote = is_remote(store)
    region, origin = lake_region(store, policy) if remote else (None, "n/a")
    return estimate(policy, artifact=artifact, version=version, bytes_total=bytes_total,
                    bytes_present=bytes_present, bytes_to_download=bytes_to_download,
                    local=not remote, lake_region=region, lake_region_origin=origin,
                    operation=operation, base=base)


def estimate_pull(store: Store, m: Manifest, destination: str, policy: EgressPolicy,
                  cache: "ChunkCache | None" = None) -> EgressEstimate:
    to_download, present = bytes_to_fetch(m, destination, store.url, cache)
    return estimate_download(store, policy, artifact=m.artifact, version=m.version,
                             bytes_total=m.total_bytes, bytes_present=present,
                             bytes_to_download=to_download)


def estimate_diff(store: Store, a: Manifest, b: Manifest, policy: EgressPolicy, *,
                  values: bool = True, inspect: bool = False) -> EgressEstimate:
    """What `diff --values` of a -> b would download: the byte ranges of the changed tensors,
    both sides (ranged GETs count their range, not the chunk); with `inspect`, plus the chunks
    read inside modified safetensors and torch files (core/contents.py).  From the manifests
    alone."""
    from .diff import bytes_to_fetch

    return estimate_download(store, policy, artifact=b.artifact, version=b.version,
                             bytes_total=a.total_bytes + b.total_bytes, bytes_present=0,
                             bytes_to_download=bytes_to_fetch(a, b, values=values,
                                                               inspect=inspect),
                             operation="diff", base=f"{a.artifact}@v{a.version}")


_HINTS = {"pull": "run again with --yes to accept the cost, or pull from a lake in your region",
          "diff": "run again with --yes to accept the cost, or without --values and --inspect "
                  "(the diff of the manifests downloads no tensor data)"}


def enforce(est: EgressEstimate, *, yes: bool,
            confirm: Callable[[EgressEstimate], bool] | None) -> None:
    """Raise PolicyRefusal if the estimate needs a confirmation nobody gave."""
    if not est.needs_confirmation or yes:
        return
    if confirm is not None and confirm(est):
        return
    raise PolicyRefusal(
        f"{est.subject()} would download "
        f"{format_bytes(est.bytes_to_download)} over {est.route_text()}: {est.cost_text()}, "
        f"above egress.confirm_above_usd ({est.confirm_above_usd:.2f}); nothing was downloaded",
        hint=_HINTS.get(est.operation, _HINTS["pull"]))

