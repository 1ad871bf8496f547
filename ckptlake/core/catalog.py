"""Reading the lake's records: version numbers, manifests, aliases, references.

Everything here is derived from listings and immutable manifests, so there is no index to keep
consistent: the listing of `@v/` is the truth about which versions exist.
"""
from __future__ import annotations

import json
import random
import time
from datetime import datetime
from typing import TYPE_CHECKING

from ..errors import IntegrityError, NotFound, PreconditionFailed, TransferError
from ..format import layout
from ..format.manifest import Manifest, decode_manifest
from ..format.refs import Ref, parse_ref, validate_alias, validate_artifact
from ..results import AliasResult, ArtifactInfo, VersionInfo
from ..store.base import Store
from ..transfer.pool import bounded_map
from .identity import iso, user_at_host, utcnow

if TYPE_CHECKING:
    from .tombstones import Tombstone

# Manifests and alias records are small; fetch many at once to hide request latency.
_META_WORKERS = 16


def version_numbers(store: Store, artifact: str) -> list[int]:
    """Committed version numbers of an artifact, ascending."""
    out = []
    for info in store.list(layout.versions_prefix(artifact)):
        parsed = layout.parse_version_key(info.key)
        if parsed and parsed[0] == artifact:
            out.append(parsed[1])
    return sorted(out)


def load_manifest(store: Store, artifact: str, number: int) -> Manifest:
    key = layout.version_key(artifact, number)
    try:
        data = store.get(key)
    except NotFound:
        raise _deleted_or_missing(store, artifact, number) from None
    m = decode_manifest(data, key=key)
    if m.artifact != artifact or m.version != number:
        raise IntegrityError(f"{key} claims to be {m.artifact}@v{m.version}")
    return m


def load_manifests(store: Store, artifact: str, numbers: list[int]) -> list[Manifest]:
    got = bounded_map(lambda n: load_manifest(store, artifact, n), numbers,
                      workers=_META_WORKERS, name="ckptlake-meta")
    return sorted(got, key=lambda m: m.version)


def _deleted_or_missing(store: Store, artifact: str, number: int) -> NotFound:
    """NotFound for a version; if gc deleted it, say when and under which rule."""
    from . import tombstones

    tomb = tombstones.load(store, artifact, number)
    if tomb is not None:
        return NotFound(f"{artifact}@v{number} was {tomb.deleted_text()}",
                        hint=f"{tomb.reason}; list what is left with: ckptlake ls {artifact} "
                             "--all")
    return NotFound(f"{artifact}@v{number} does not exist",
                    hint=f"list versions with: ckptlake ls {artifact}")


def _missing_artifact(artifact: str) -> NotFound:
    return NotFound(f"artifact {artifact} has no versions in this lake",
                    hint="list artifacts with: ckptlake ls")


def aliases(store: Store, artifact: str) -> dict[str, int]:
    """alias name -> version number."""
    names = [parsed[1] for info in store.list(layout.aliases_prefix(artifact))
             if (parsed := layout.parse_alias_key(info.key)) and parsed[0] == artifact]

    def read(name: str) -> tuple[str, int | None]:
        try:
            return name, _decode_alias(store.get(layout.alias_key(artifact, name)))
        except NotFound:  # removed between list and get
            return name, None

    got = bounded_map(read, names, workers=_META_WORKERS, name="ckptlake-meta")
    return {name: v for name, v in got if v is not None}


def _decode_alias(data: bytes) -> int:
    try:
        version = json.loads(data)["version"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise IntegrityError("malformed alias record") from None
    if not isinstance(version, int) or version < 1:
        raise IntegrityError("malformed alias record")
    return version


def resolve(store: Store, ref: str | Ref) -> Manifest:
    """The manifest a reference names (see format/refs.py for the grammar)."""
    ref = parse_ref(ref) if isinstance(ref, str) else ref
    if ref.kind == "version":
        return load_manifest(store, ref.artifact, int(ref.value))  # type: ignore[arg-type]
    if ref.kind == "alias":
        try:
            number = _decode_alias(store.get(layout.alias_key(ref.artifact, str(ref.value))))
        except NotFound:
            known = ", ".join(sorted(aliases(store, ref.artifact))) or "none"
            raise NotFound(f"{ref.artifact} has no alias {ref.value!r} (aliases: {known})") \
                from None
        return load_manifest(store, ref.artifact, number)
    numbers = version_numbers(store, ref.artifact)
    if not numbers:
        raise _missing_artifact(ref.artifact)
    if ref.kind == "latest":
        return load_manifest(store, ref.artifact, numbers[-1])
    # step=N: newest version with that step; read manifests newest first, a batch at a time.
    newest_first = numbers[::-1]
    for i in range(0, len(newest_first), _META_WORKERS):
        for m in sorted(load_manifests(store, ref.artifact, newest_first[i:i + _META_WORKERS]),
                        key=lambda m: -m.version):
            if m.step == ref.value:
                return m
    from . import tombstones

    for tomb in reversed(tombstones.load_all(store, ref.artifact, skip=set(numbers))):
        if tomb.step == ref.value:
            raise NotFound(f"{ref.artifact}@step={ref.value} (v{tomb.version}) was "
                           f"{tomb.deleted_text()}",
                           hint=f"{tomb.reason}; list what is left with: ckptlake ls "
                                f"{ref.artifact} --all")
    raise NotFound(f"{ref.artifact} has no version with step {ref.value}",
                   hint=f"list versions with: ckptlake ls {ref.artifact}")


def set_alias(store: Store, artifact: str, name: str, version: int) -> AliasResult:
    """Point `name` at `version` with compare-and-swap, so concurrent movers never lose updates
    silently: each move is applied whole, the last one to win the CAS stands."""
    validate_alias(name)
    key = layout.alias_key(artifact, name)
    body = json.dumps({"alias": name, "version": version, "updated": iso(utcnow()),
                       "updated_by": user_at_host()}).encode()
    for attempt in range(50):
        try:
            data, etag = store.get_with_etag(key)
        except NotFound:
            try:
                store.put(key, body, if_none_match=True)
                return AliasResult(artifact, name, version, None)
            except PreconditionFailed:
                continue
        previous = _decode_alias(data)
        try:
            store.put(key, body, if_match=etag)
            return AliasResult(artifact, name, version, previous)
        except PreconditionFailed:
            time.sleep(random.random() * 0.05 * (attempt + 1))
    raise TransferError(f"could not move alias {artifact}@{name}: too much contention")


def version_info(m: Manifest, alias_map: dict[str, int]) -> VersionInfo:
    return VersionInfo(
        artifact=m.artifact, version=m.version, step=m.step, created=m.created,
        created_by=m.created_by, total_bytes=m.total_bytes, files=len(m.files),
        metrics=dict(m.metrics), metadata=dict(m.metadata),
        aliases=sorted(a for a, v in alias_map.items() if v == m.version))


def versions(store: Store, artifact: str) -> list[VersionInfo]:
    validate_artifact(artifact)
    # The listings of @v/, @alias/ and @s/ (summaries, which answer for most versions; the
    # rest read their manifest) run at once.
    from .summary import committed, read_summaries, version_infos

    jobs = {"v": lambda: committed(store, artifact), "a": lambda: aliases(store, artifact),
            "s": lambda: read_summaries(store, artifact)}
    got = dict(bounded_map(lambda k: (k, jobs[k]()), list(jobs), workers=3,
                           name="ckptlake-meta"))
    if not got["v"]:
        raise _missing_artifact(artifact)
    return version_infos(store, artifact, got["v"], got["a"], got["s"])


def artifacts(store: Store, prefix: str = "") -> list[ArtifactInfo]:
    """Every artifact with at least one version; one listing of the artifacts/ tree."""
    found: dict[str, tuple[int, int, datetime]] = {}
    alias_names: dict[str, list[str]] = {}
    for info in store.list(layout.ARTIFACTS_PREFIX + prefix):
        if parsed := layout.parse_version_key(info.key):
            art, n = parsed
            count, latest, updated = found.get(art, (0, 0, info.modified))
            if n >= latest:
                latest, updated = n, info.modified
            found[art] = (count + 1, latest, updated)
        elif parsed_alias := layout.parse_alias_key(info.key):
            alias_names.setdefault(parsed_alias[0], []).append(parsed_alias[1])
    return [ArtifactInfo(artifact=a, versions=c, latest=n, updated=t,
                         aliases=sorted(alias_names.get(a, [])))
            for a, (c, n, t) in sorted(found.items())]


def expired(store: Store, artifact: str) -> list["Tombstone"]:
    """Versions gc deleted (their tombstones), oldest first; a tombstone next to a live
    manifest (an interrupted gc) is not shown."""
    from . import tombstones

    validate_artifact(artifact)
    return tombstones.load_all(store, artifact, skip=set(version_numbers(store, artifact)))


def expired_counts(store: Store, prefix: str = "") -> dict[str, int]:
    """artifact -> number of versions gc deleted; one listing of the artifacts/ tree."""
    live: set[tuple[str, int]] = set()
    tombs: set[tuple[str, int]] = set()
    for info in store.list(layout.ARTIFACTS_PREFIX + prefix):
        if parsed := layout.parse_version_key(info.key):
            live.add(parsed)
        elif parsed_tomb := layout.parse_tombstone_key(info.key):
            tombs.add(parsed_tomb)
    out: dict[str, int] = {}
    for art, _ in tombs - live:
        out[art] = out.get(art, 0) + 1
    return out
