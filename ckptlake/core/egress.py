"""The egress guard's measurements: what a pull or a `diff --values` would download, and where
the lake is.

Pricing and thresholds are policy (policy/egress.py); this module only looks: at the manifests,
at the destination (read-only: nothing is created, unlike the pull's own placement step), and
at the bucket's region (one HeadBucket, S3 lakes only; a pull skips it when the answer cannot
matter: see estimate_download).  `lineage` downloads no data chunks
(listings, manifests and tombstones only) and so has no guard.
"""
from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, Callable, Mapping

from ..errors import CkptlakeError, PolicyRefusal
from ..format.manifest import FileEntry, Manifest
from ..policy.egress import (GB, EgressEstimate, EgressPolicy, estimate, threshold_text,
                             usd_text)
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
    objects, present = objects_to_fetch(m, destination, lake_url, cache)
    return sum(objects.values()), present


def objects_to_fetch(m: Manifest, destination: str | None, lake_url: str | None = None,
                     cache: "ChunkCache | None" = None) -> tuple[dict[str, int], int]:
    """({digest: object size} the pull downloads, bytes it will not download): the chunks
    behind bytes_to_fetch, for an estimate that asks a replica which it holds.  destination
    None: a read to stdout (`cat`), where nothing is present nor journaled."""
    from .browse import object_sizes

    if destination is not None:  # (cat's estimate does without pull's module: start-up)
        from .pull import final_root, journaled_chunks, staging_dir

        root = final_root(m, destination)
    if destination is None:
        finals: dict[str, str] = {}
    elif m.kind == "file":
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
    staged = journaled_chunks(staging_dir(root, lake_url, m)) \
        if lake_url and destination is not None else set()
    whole_size = object_sizes(m)  # a pack is fetched whole, also for part of a version
    for e in needed:
        for ref in e.chunks:
            if ref.digest in staged or (cache is not None and _cached(
                    cache, m.hash, ref.digest, whole_size[ref.digest], ref.offset is None)):
                staged_files[ref.digest] = staged_files.get(ref.digest, 0) + ref.size
                continue
            # what crosses the wire: an encoded chunk at its stored size (manifest hint)
            objects[ref.digest] = m.stored.get(ref.digest, whole_size[ref.digest])
    return objects, present + sum(staged_files.values())


def _cached(cache: "ChunkCache", algo: str, chunk: str, size: int, whole: bool) -> bool:
    """Whether the cache holds the chunk, by a stat of its entry: a regular file (a symlink's
    target) of the chunk object's size as the cache keeps it, decoded (`size`: the raw size
    the version tells, exact unless the chunk is a pack (`whole` False), which may run on
    past this version's last file).  A truncated or empty entry would be dropped and
    downloaded, so it counts as downloaded here."""
    try:
        st = os.stat(cache.entry_path(algo, chunk))
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and (st.st_size == size if whole else st.st_size >= size)


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
                      operation: str = "pull", base: str | None = None,
                      route_if_needed: bool = False) -> EgressEstimate:
    """Price `bytes_to_download` fetched from this store: the route comes from the lake's
    region (asked from the bucket only if the config does not say) and the client's.

    `route_if_needed`: ask the bucket only if the answer can change the outcome, i.e. if at
    the highest price the cost could pass warn_above_usd or confirm_above_usd.  Below both,
    the route stays unknown and the cost is the upper bound, as for a bucket that does not
    say: a pull of a small checkpoint saves the HeadBucket round trip (issue 13: start-up)."""
    remote = is_remote(store)
    if remote and route_if_needed and not policy.lake_region \
            and _below_thresholds(policy, bytes_to_download):
        region, origin = None, "not asked (below the egress thresholds at any price)"
    else:
        region, origin = lake_region(store, policy) if remote else (None, "n/a")
    return estimate(policy, artifact=artifact, version=version, bytes_total=bytes_total,
                    bytes_present=bytes_present, bytes_to_download=bytes_to_download,
                    local=not remote, lake_region=region, lake_region_origin=origin,
                    operation=operation, base=base)


def _below_thresholds(policy: EgressPolicy, nbytes: int) -> bool:
    """Whether `nbytes` at the highest configured price stays within every threshold."""
    price = max(policy.price_per_gb.values(), default=0.0) \
        + max((policy.retrieval_per_gb or {}).values(), default=0.0)
    upper = round(nbytes / GB * price, 6)
    return all(upper <= limit for limit in (policy.warn_above_usd, policy.confirm_above_usd)
               if limit is not None)


def estimate_pull(store: Store, m: Manifest, destination: str | None, policy: EgressPolicy,
                  cache: "ChunkCache | None" = None, *,
                  route_if_needed: bool = False, operation: str = "pull") -> EgressEstimate:
    """destination None, operation "cat": reading one file to stdout (m holds that file; no
    cache: cat reads none).  A pack counts whole, as for a pull, though cat reads only its
    file's range of a raw one: an upper bound."""
    objects, present = objects_to_fetch(m, destination, store.url, cache)
    replica = getattr(store, "replica", None) is not None and getattr(store, "usable", False)
    # The replica's split prices each share on its own route: that needs the routes resolved.
    est = estimate_download(store, policy, artifact=m.artifact, version=m.version,
                            bytes_total=m.total_bytes, bytes_present=present,
                            bytes_to_download=sum(objects.values()), operation=operation,
                            route_if_needed=route_if_needed and not replica)
    if replica:
        est = with_replica_sources(est, store, objects, policy)
    elif getattr(store, "replica", None) is not None:
        import dataclasses

        # the replica was refused or unreachable: without its warning the estimate prices
        # every byte from the lake and does not say why, where the pull itself would
        est = dataclasses.replace(est, warnings=list(store.warnings))  # type: ignore[attr-defined]
    origin = getattr(store, "origin", store)  # through a replica: the lake's classes
    if policy.retrieval_per_gb and is_remote(origin) and objects \
            and getattr(origin, "supports_storage_classes", False):
        est = with_retrieval(est, origin, objects, policy.retrieval_per_gb)
    return est


def estimate_copy(store: Store, m: Manifest, objects: dict[str, int], bytes_total: int,
                  policy: EgressPolicy, *, route_if_needed: bool = False) -> EgressEstimate:
    """What `cp` of `m` reads from `store`: `objects` (digest -> bytes as stored), the chunk
    objects the destination lacks, of `bytes_total` in the version; priced as a pull's, the
    retrieval fee of tiered chunks included."""
    est = estimate_download(store, policy, artifact=m.artifact, version=m.version,
                            bytes_total=bytes_total,
                            bytes_present=bytes_total - sum(objects.values()),
                            bytes_to_download=sum(objects.values()), operation="cp",
                            route_if_needed=route_if_needed)
    if policy.retrieval_per_gb and is_remote(store) and objects \
            and getattr(store, "supports_storage_classes", False):
        est = with_retrieval(est, store, objects, policy.retrieval_per_gb)
    return est


def with_retrieval(est: EgressEstimate, store: Store, objects: dict[str, int],
                   prices: Mapping[str, float]) -> EgressEstimate:
    """Add the retrieval fee of the chunks in a class that charges per GB read (STANDARD_IA,
    GLACIER_IR, ... where gc's tiering put them), asked with one HEAD per chunk.  Through a
    replica every chunk is counted as read from the lake: an upper bound."""
    import dataclasses

    from ..errors import NotFound
    from ..format import layout
    from ..transfer.pool import bounded_map

    def cls_of(item: tuple[str, int]) -> tuple[str | None, int]:
        try:
            return store.stat(layout.chunk_key(item[0])).storage_class, item[1]
        except NotFound:
            return None, item[1]  # the pull will say so

    by_class: dict[str, int] = {}
    for cls, size in bounded_map(cls_of, objects.items(), workers=16, name="ckptlake-class"):
        if cls is not None and prices.get(cls, 0.0) > 0:
            by_class[cls] = by_class.get(cls, 0) + size
    if not by_class:
        return est
    retrieval = [{"class": cls, "bytes": n, "price_per_gb": prices[cls],
                  "cost_usd": round(n / GB * prices[cls], 6)}
                 for cls, n in sorted(by_class.items())]
    return dataclasses.replace(est, retrieval=retrieval, cost_usd=round(
        est.cost_usd + sum(r["cost_usd"] for r in retrieval), 6))


def with_replica_sources(est: EgressEstimate, store: Store, objects: dict[str, int],
                         policy: EgressPolicy) -> EgressEstimate:
    """Split a pull's bytes by where they come from: what the replica holds (one HEAD per
    chunk) is priced on the route replica -> client, the rest comes through from the origin
    on the lake's route (docs/format.md, "Replicas")."""
    import dataclasses

    from ..policy.egress import GB, route_between, route_price
    from .replicas import replica_presence

    from ..policy.egress import client_region

    held, lacking = replica_presence(store.replica, objects)  # type: ignore[attr-defined]
    region = store.region  # type: ignore[attr-defined]
    client, client_origin = est.client_region, est.client_region_origin
    if est.route == "local" and not is_remote(store.replica):  # type: ignore[attr-defined]
        replica_route = origin_route = "local"
        replica_price = origin_price = 0.0
    else:
        # a local lake may have an S3 replica: what it serves crosses from its region
        if est.route == "local":
            client, client_origin = client_region(policy)
        replica_route = route_between(region, client)
        replica_price = route_price(policy, replica_route)
        origin_route, origin_price = est.route, est.price_per_gb
    sources = [
        {"source": f"replica {store.name}", "region": region,  # type: ignore[attr-defined]
         "bytes": held, "route": replica_route, "price_per_gb": replica_price,
         "cost_usd": round(held / GB * replica_price, 6)},
        {"source": "origin", "region": est.lake_region, "bytes": lacking,
         "route": origin_route, "price_per_gb": origin_price,
         "cost_usd": round(lacking / GB * origin_price, 6)},
    ]
    cost = round(sum(s["cost_usd"] for s in sources), 6)
    return dataclasses.replace(
        est, sources=sources, cost_usd=cost, client_region=client,
        client_region_origin=client_origin,
        cost_is_upper_bound=est.cost_is_upper_bound or (held > 0 and replica_route == "unknown"))


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
          "cat": "run again with --yes to accept the cost, or read from a lake in your region",
          "cp": "run again with --yes to accept the cost, or copy from a lake in your region",
          "diff": "run again with --yes to accept the cost, or without --values and --inspect "
                  "(the diff of the manifests downloads no tensor data)"}


def enforce(est: EgressEstimate, *, yes: bool,
            confirm: Callable[[EgressEstimate], bool] | None) -> None:
    """Raise PolicyRefusal if the estimate needs a confirmation nobody gave."""
    if not est.needs_confirmation or yes:
        return
    if confirm is not None and confirm(est):
        return
    # through a replica the bytes cross on each source's own route (a local lake's S3 replica
    # is no "local lake (no egress)")
    over = est.sources_text() if est.sources else f"over {est.route_text()}"
    raise PolicyRefusal(
        f"{est.subject()} would download "
        f"{format_bytes(est.bytes_to_download)} {over}: {est.cost_text(est.confirm_above_usd)}, "
        f"above egress.confirm_above_usd "
        f"({threshold_text(est.confirm_above_usd, est.cost_usd)}); nothing was "
        "downloaded",
        hint=_HINTS.get(est.operation, _HINTS["pull"]))

