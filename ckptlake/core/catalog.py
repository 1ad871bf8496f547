"""Reading the lake's records: version numbers, manifests, aliases, references.

Everything here is derived from listings and immutable manifests, so there is no index to keep
consistent: the listing of `@v/` is the truth about which versions exist.
"""
from __future__ import annotations

import json
import random
import re
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import (CkptlakeError, IntegrityError, MissingChunk, NotFound, PreconditionFailed,
                      TransferError, UsageError)
from ..format import layout
from ..format.manifest import Manifest, decode_manifest, is_metric_value
from ..format.refs import Ref, parse_ref, validate_alias, validate_artifact
from ..results import AliasRemoveResult, AliasResult, ArtifactInfo, VersionInfo
from ..store.base import Store
from ..transfer.pool import bounded_map
from .identity import iso, user_at_host, utcnow
from .summary import Summary, committed, read_summaries, usable

if TYPE_CHECKING:
    from .tombstones import Tombstone

# Manifests and alias records are small; fetch many at once to hide request latency.
_META_WORKERS = 16


def version_numbers(store: Store, artifact: str) -> list[int]:
    """Committed version numbers of an artifact, ascending.

    A zero-byte manifest is no version (a PUT cut after its head; docs/format.md, "Empty
    objects"): the next push at that number replaces it.
    """
    out = []
    for info in store.list(layout.versions_prefix(artifact)):
        parsed = layout.parse_version_key(info.key)
        if parsed and parsed[0] == artifact and info.size > 0:
            out.append(parsed[1])
    return sorted(out)


def next_number(store: Store, artifact: str) -> int:
    """The number a new version of `artifact` takes: one above every version committed and
    every version deleted (docs/format.md, "Version numbers"), so that a number is never handed
    out twice even after the latest version was deleted.

    Manifests are listed before tombstones: a deleter writes the tombstone before it deletes
    the manifest, so a version deleted between the two listings is seen in the second one.
    Only tombstones above the highest manifest are listed (keys are zero-padded; an unpadded
    key of another writer sorts after the padded ones and is parsed like them).  So are listing
    summaries: a summary above every manifest and tombstone is a lost latest version (its
    manifest deleted outside ckptlake, core/gc.lost_versions), whose number handed out again
    would hide the loss and, its chunks then garbage, let gc sweep them."""
    from . import tombstones

    numbers = version_numbers(store, artifact)
    top = numbers[-1] if numbers else 0
    top = max([top, *tombstones.numbers(store, artifact, above=top)])
    prefix = layout.summaries_prefix(artifact)
    for info in store.list(prefix, start_after=f"{prefix}{top:010d}/"):
        parsed = layout.parse_summary_key(info.key)
        if parsed and parsed[0] == artifact and parsed[1] > top:
            top = parsed[1]
    return top + 1


def lost_above(store: Store, artifact: str, number: int) -> list[int]:
    """Versions above `number` that were committed (a listing summary says so: it is written
    after the manifest) and that have neither a manifest nor a tombstone: lost outside
    ckptlake.  `@latest` resolves to the highest manifest, so with the latest version lost a
    resume silently took the one before; this is what lets the reader say so.  One listing
    when nothing is lost (the summaries above `number`, usually none)."""
    prefix = layout.summaries_prefix(artifact)
    above = sorted({parsed[1] for info in store.list(prefix, start_after=f"{prefix}{number:010d}/")
                    if (parsed := layout.parse_summary_key(info.key))
                    and parsed[0] == artifact and parsed[1] > number})
    if not above:
        return []
    from . import tombstones

    # (an empty tombstone records no deletion: an `rm` cut after its head, the version live)
    deleted = set(tombstones.numbers(store, artifact, above=number, nonempty=True))
    lost = []
    for n in above:
        if n in deleted:
            continue
        try:  # committed since the listing of manifests: newer, not lost
            if store.stat(layout.version_key(artifact, n)).size > 0:
                continue
        except NotFound:
            pass
        # deleted since the listing of tombstones (a deleter writes the tombstone first)
        if tombstones.records_deletion(store, artifact, n):
            continue
        lost.append(n)
    return lost


def load_manifest(store: Store, artifact: str, number: int) -> Manifest:
    key = layout.version_key(artifact, number)
    try:
        data = store.get(key)
    except NotFound:
        data = b""  # absent: told apart below, as an empty record is
    if not data:  # a PUT cut after its head: no version (docs/format.md, "Empty objects")
        missing = _deleted_or_missing(store, artifact, number)
        if not getattr(missing, "lost", False) or not (data := _read_again(store, key)):
            raise missing
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
                        hint=f"{_reason(tomb)}list what is left with: ckptlake ls {artifact} "
                             "--all")
    if _has_summary(store, artifact, number):
        # a summary is written after its manifest: this version was committed, and its manifest
        # went without a ckptlake deleter (each writes the tombstone first)
        lost = NotFound(f"{artifact}@v{number} is lost: its manifest is gone, deleted outside "
                        "ckptlake (no tombstone; its listing summary is still there)",
                        hint=f"restore the manifest ({layout.version_key(artifact, number)}) "
                             f"from bucket versioning or a backup, or record it as deleted: "
                             f"ckptlake rm {artifact}@v{number}; ckptlake verify lists "
                             "every lost version")
        lost.lost = True  # type: ignore[attr-defined]  # worth a second read (load_manifest)
        return lost
    return NotFound(f"{artifact}@v{number} does not exist",
                    hint=f"list versions with: ckptlake ls {artifact}")


def _read_again(store: Store, key: str) -> bytes:
    """A committed version's manifest read as absent is read once more before it is called
    lost: one stale 404 or empty 200 from a gateway made `pull` advise `ckptlake rm` for an
    intact version.  b"" if it is still absent (or the read fails: the first answer stands)."""
    try:
        return store.get(key)
    except CkptlakeError:
        return b""


def _has_summary(store: Store, artifact: str, number: int) -> bool:
    """Only asked for a version without manifest or tombstone (one LIST, on an error's path);
    a listing that fails is no answer, and the plain "does not exist" stands."""
    try:
        prefix = f"{layout.summaries_prefix(artifact)}{number:010d}."
        return any((p := layout.parse_summary_key(info.key)) is not None
                   and p[:2] == (artifact, number) for info in store.list(prefix))
    except CkptlakeError:
        return False


def deleted_meanwhile(store: Store, artifact: str, number: int, error: MissingChunk, *,
                      doing: str = "being read") -> CkptlakeError:
    """What a reader's missing chunk means.  Once gc (or `ckptlake rm`) has deleted a version's
    manifest, it may sweep the chunks a reader of that version is still fetching: the version
    is gone (NotFound, exit 3, with its tombstone), not damaged.  A version whose manifest is
    still there has lost a chunk: `error`, unchanged (exit 5).  `store` is the lake's own, where
    manifests live (a replica's copy of one would not tell)."""
    key = layout.version_key(artifact, number)
    try:
        gone = store.stat(key).size == 0  # an empty record is no version (format.md)
    except NotFound:
        gone = True
    except CkptlakeError:  # the question cannot be answered now: report what was seen
        return error
    if gone and _read_again(store, key):
        gone = False  # one HEAD's 404 (or 0 bytes) is not the last word: the manifest is there
    if not gone:
        return error
    try:
        deleted = _deleted_or_missing(store, artifact, number)
    except CkptlakeError:
        deleted = NotFound(f"{artifact}@v{number} does not exist",
                           hint=f"list versions with: ckptlake ls {artifact}")
    deleted.message = (f"{deleted.message.replace(' does not exist', ' was deleted')} while it "
                       f"was {doing}")
    deleted.args = (deleted.message,)
    return deleted


def _reason(tomb: "Tombstone") -> str:
    """The deletion's recorded reason for a hint, labelled: bare, a user's `rm --reason`
    ("oops") read as part of the advice."""
    return f"reason: {tomb.reason}; " if tomb.reason else ""


def _missing_artifact(store: Store, artifact: str) -> NotFound:
    """No live version: never pushed, or every version deleted (rm --all, tombstones say)."""
    try:
        deleted = next(iter(store.list(layout.tombstones_prefix(artifact))), None) is not None
    except CkptlakeError:
        deleted = False
    if deleted:
        return NotFound(f"every version of {artifact} was deleted",
                        hint=f"see them with: ckptlake ls {artifact} --all")
    if _artifacts_below(store, artifact):
        return NotFound(f"artifact {artifact} has no versions in this lake",
                        hint=f"it is the start of other artifacts' names: list them with: "
                             f"ckptlake ls {artifact}/")
    return NotFound(f"artifact {artifact} has no versions in this lake",
                    hint="list artifacts with: ckptlake ls")


# One listing page: the hint is worth a request, not a walk through a large subtree.
_BELOW_SCAN = 1000


def _artifacts_below(store: Store, artifact: str) -> bool:
    """Whether artifacts live under `artifact/` (`ls proj` for proj/run-1/ckpt): the user
    meant the prefix, and "list artifacts with: ckptlake ls" would list the whole lake.  By
    the folders below it (one delimited listing), not its keys: an artifact's own records
    (@alias/, @children/, @s/, ...) sort before any version and could fill a page."""
    top = f"{layout.ARTIFACTS_PREFIX}{artifact}/"
    try:
        for i, prefix in enumerate(store.list_prefixes(top)):
            if i >= _BELOW_SCAN:
                return False
            if not prefix[len(top):].startswith("@"):
                return True
    except CkptlakeError:
        pass
    return False


def aliases(store: Store, artifact: str) -> dict[str, int]:
    """alias name -> version number."""
    names = [parsed[1] for info in store.list(layout.aliases_prefix(artifact))
             if (parsed := layout.parse_alias_key(info.key)) and parsed[0] == artifact]

    def read(name: str) -> tuple[str, int | None]:
        try:
            data = store.get(layout.alias_key(artifact, name))
        except NotFound:  # removed between list and get
            return name, None
        # an empty record (a PUT cut after its head) is no alias (docs/format.md)
        return name, _decode_alias(data, artifact, name) if data else None

    got = bounded_map(read, names, workers=_META_WORKERS, name="ckptlake-meta")
    return {name: v for name, v in got if v is not None}


def _decode_alias(data: bytes, artifact: str | None = None, name: str | None = None) -> int:
    """The version an alias record names.  Given the alias, the error names it and says how
    to repair it: one bad record fails `ls ARTIFACT`, `show` of every version and gc (which
    must not guess what it protects), and without its name only verify could find it."""
    try:
        version = json.loads(data)["version"]
    except (ValueError, KeyError, TypeError, RecursionError):
        version = None
    if type(version) is int and version >= 1:  # not True, which Python calls an int
        return version
    if artifact is None or name is None:
        raise IntegrityError("malformed alias record")
    raise IntegrityError(f"alias {name} of {artifact} is unusable: malformed alias record "
                         f"{layout.alias_key(artifact, name)}",
                         hint=f"point it again: ckptlake alias {artifact}@vN {name}")


def _case_hint(name: str, names: list[str]) -> str | None:
    """Selectors and aliases are case-sensitive: `@V1`, `@LATEST` and `@Prod` (with `prod`
    there) name no alias, and the user meant the other spelling."""
    lower = name.lower()
    if lower == "latest" or re.fullmatch(r"v[0-9]+", lower):
        return f"selectors are case-sensitive: did you mean @{lower}?"
    same = [n for n in names if n.lower() == lower]
    return f"aliases are case-sensitive: did you mean @{same[0]}?" if same else None


def resolve(store: Store, ref: str | Ref) -> Manifest:
    """The manifest a reference names (see format/refs.py for the grammar)."""
    ref = parse_ref(ref) if isinstance(ref, str) else ref
    if not isinstance(ref, Ref):
        raise UsageError(f"a reference is a string (ARTIFACT[@SELECTOR]) or a Ref, got {ref!r}")
    if ref.kind == "version":
        return load_manifest(store, ref.artifact, int(ref.value))  # type: ignore[arg-type]
    if ref.kind == "alias":
        try:
            data = store.get(layout.alias_key(ref.artifact, str(ref.value)))
            if not data:  # an empty record (a PUT cut after its head) is no alias
                raise NotFound("empty alias record")
            number = _decode_alias(data, ref.artifact, str(ref.value))
        except NotFound:
            names = sorted(aliases(store, ref.artifact))
            known = ", ".join(names) or "none"
            raise NotFound(f"{ref.artifact} has no alias {ref.value!r} (aliases: {known})",
                           hint=_case_hint(str(ref.value), names)) from None
        try:
            return load_manifest(store, ref.artifact, number)
        except NotFound as exc:  # say which alias led there: the user never typed v{number}
            exc.message = f"alias {ref.value!r} of {ref.artifact} points at v{number}: " \
                f"{exc.message}"
            exc.args = (exc.message,)
            raise
    if ref.kind in ("min", "max"):
        return _best(store, ref.artifact, ref.kind, str(ref.value))
    numbers = version_numbers(store, ref.artifact)
    if not numbers:
        raise _missing_artifact(store, ref.artifact)
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
                           hint=f"{_reason(tomb)}list what is left with: ckptlake ls "
                                f"{ref.artifact} --all")
    raise NotFound(f"{ref.artifact} has no version with step {ref.value}",
                   hint=f"list versions with: ckptlake ls {ref.artifact}")


def _best(store: Store, artifact: str, kind: str, metric: str) -> Manifest:
    """`@min:METRIC` / `@max:METRIC`: the live version with the best value, ties to the newest.

    Answered from the listings of `@v/` and of the summaries (two requests, run at once, for any
    number of versions); only versions without a usable summary have their manifest read, and
    then the chosen one.  Values that are missing or not finite numbers do not take part.
    """
    jobs = {"v": lambda: committed(store, artifact), "s": lambda: read_summaries(store, artifact)}
    got = dict(bounded_map(lambda k: (k, jobs[k]()), list(jobs), workers=2,
                           name="ckptlake-meta"))
    live, sums = got["v"], got["s"]
    if not live:
        raise _missing_artifact(store, artifact)
    metrics: dict[int, dict[str, Any]] = {}
    unsummarised = []
    for n, written in live.items():
        s = sums.get(n)
        if usable(s, written):
            metrics[n] = s.metrics  # type: ignore[union-attr]
        else:
            unsummarised.append(n)
    read = {m.version: m for m in load_manifests(store, artifact, unsummarised)}
    metrics.update({n: m.metrics for n, m in read.items()})
    while True:
        # the values as stored: Python compares ints and floats exactly (float() made two
        # integer counts that differ beyond 2^53 equal, and the tie went to the newer)
        scored = [(v, n) for n, ms in metrics.items() if is_metric_value(v := ms.get(metric))]
        if not scored:
            known = sorted({k for ms in metrics.values() for k in ms})
            raise NotFound(f"no live version of {artifact} has the metric {metric!r} "
                           f"(metrics: {', '.join(known) or 'none'})",
                           hint=f"list versions and their metrics with: ckptlake ls {artifact}")
        # Ties go to the newest version: compare (value, -n) for min, (value, n) for max.
        best = (min(scored, key=lambda t: (t[0], -t[1])) if kind == "min"
                else max(scored, key=lambda t: (t[0], t[1])))[1]
        if best in read:
            return read[best]
        # Chosen by its listing summary: the manifest is read anyway, and must agree.  A
        # summary that disagrees (forged, or damaged: verify warns of it) made this ref name
        # a version the manifests do not make best; it is scored by its manifest instead,
        # and the choice made again.
        m = read[best] = load_manifest(store, artifact, best)
        if m.metrics.get(metric) == metrics[best].get(metric):
            return m
        metrics[best] = m.metrics


# How long set_alias waits for a gc that is deleting the version right now (a tombstone next to
# the manifest) to finish: such a gc deletes the manifest, or removes the tombstone, within a
# request or two of its last read of the aliases.  A tombstone still there after this long is
# taken for one an interrupted gc left behind (readers ignore it: the manifest wins).
ALIAS_SETTLE_SECONDS = 10.0
_SETTLE_POLL = 0.2


def set_alias(store: Store, artifact: str, name: str, version: int, *,
              recorded: bool = False) -> AliasResult:
    """Point `name` at `version` with compare-and-swap, so concurrent movers never lose updates
    silently: each move is applied whole, the last one to win the CAS stands.

    A gc may be deleting `version` meanwhile: it spares aliased versions, but reads the aliases
    before it deletes, so an alias written after that read would point at a deleted version.
    After the CAS the version is checked again (`_survives`); if gc took it, the alias is put
    back as it was and NotFound is raised (docs/format.md, "Alias record").

    `recorded`: a name taken from a record an older client may have written (a sharded step's
    claim), checked by the rule it was written under (refs.validate_alias, existing=True).
    """
    validate_alias(name, existing=recorded)
    key = layout.alias_key(artifact, name)
    body = json.dumps({"alias": name, "version": version, "updated": iso(utcnow()),
                       "updated_by": user_at_host()}).encode()
    for attempt in range(50):
        try:
            data, etag = store.get_with_etag(key)
        except NotFound:
            try:
                ours = store.put(key, body, if_none_match=True)
            except PreconditionFailed:
                continue
            previous, previous_body = None, None
            break
        if not data:
            # An empty record (a PUT cut after its head) is no alias: replace it by CAS on its
            # ETag, like a create (docs/format.md, "Empty objects").
            try:
                ours = store.put(key, body, if_match=etag)
            except PreconditionFailed:
                continue
            previous, previous_body = None, None
            break
        try:
            previous = _decode_alias(data)
        except IntegrityError:  # a malformed record is repaired by moving the alias
            previous = None
        try:
            ours = store.put(key, body, if_match=etag)
            previous_body = data
            break
        except PreconditionFailed:
            time.sleep(random.random() * 0.05 * (attempt + 1))
    else:
        raise TransferError(f"could not move alias {artifact}@{name}: too much contention")
    if not _survives(store, artifact, version):
        undone = _undo_alias(store, key, ours, previous_body)
        back = f"v{previous}" if previous is not None else "its malformed record"
        what = (f"{artifact}@{name} is back at {back}" if previous_body is not None
                else f"{artifact}@{name} was removed again") if undone else \
            f"{artifact}@{name} was moved by someone else meanwhile and left as they set it"
        by = _deleter(store, artifact, version)
        raise NotFound(f"{artifact}@v{version} was deleted by {by} while the alias was being "
                       f"set; {what}", hint=f"pick a version that exists: ckptlake ls {artifact}")
    return AliasResult(artifact, name, version, previous)


def _deleter(store: Store, artifact: str, version: int) -> str:
    """'gc' or 'ckptlake rm', from the version's tombstone: both delete by the same protocol,
    and the message should send the user to the one that did it."""
    from . import tombstones

    try:
        tomb = tombstones.load(store, artifact, version)
    except TransferError:  # the message matters less than the failure it explains
        return "gc"
    if tomb is not None and tomb.rule in (tombstones.RM_RULE, tombstones.OTHER_RULE):
        return tombstones.RM_RULE if tomb.rule == tombstones.RM_RULE else "gc or ckptlake rm"
    return "gc"


def remove_alias(store: Store, artifact: str, name: str) -> AliasRemoveResult:
    """Remove alias `name`: compare-and-swap its record to an empty one, which every reader
    takes for no alias (docs/format.md "Empty objects"), and leave it there.

    The store has no conditional delete, so any delete -- of the record, or of the empty one
    after checking it -- could drop a move that landed just before it and already reported
    success.  The swap alone pins what is removed: a mover that got in first makes it fail,
    and we remove what they set (the user asked for no alias, whatever it named); a mover
    after it replaces the empty record by compare-and-swap, as a create, and stands.  The
    empty record costs one listing entry; gc does not remove it either (docs/format.md,
    "Alias record").
    """
    validate_artifact(artifact)
    validate_alias(name, existing=True)
    key = layout.alias_key(artifact, name)
    for attempt in range(50):
        try:
            data, etag = store.get_with_etag(key)
        except NotFound:
            data, etag = b"", ""
        if not data:  # absent, or empty (a PUT cut after its head): no alias
            # names from the listing alone: one malformed record must not hide the others
            known = ", ".join(sorted(
                parsed[1] for info in store.list(layout.aliases_prefix(artifact))
                if (parsed := layout.parse_alias_key(info.key)) and parsed[0] == artifact
                and info.size > 0)) or "none"
            raise NotFound(f"{artifact} has no alias {name!r} (aliases: {known})",
                           hint=f"list versions and their aliases with: ckptlake ls {artifact}")
        try:
            previous: int | None = _decode_alias(data)
        except IntegrityError:  # a malformed record is removed all the same
            previous = None
        try:
            store.put(key, b"", if_match=etag)
            break
        except PreconditionFailed:  # moved meanwhile: remove what it names now
            time.sleep(random.random() * 0.05 * (attempt + 1))
    else:
        raise TransferError(f"could not remove alias {artifact}@{name}: too much contention")
    return AliasRemoveResult(artifact, name, previous)


def _survives(store: Store, artifact: str, version: int) -> bool:
    """Whether `version` outlives a gc that may have read the aliases before our write.

    gc writes a version's tombstone before its last read of the aliases and deletes the
    manifest after it.  So: no tombstone now means any gc deleting the version reads the
    aliases after our write, and spares it.  A tombstone means that gc is in flight (it then
    deletes the manifest, or, having seen our alias, removes the tombstone) or was interrupted
    long ago: wait until one of the two is gone, up to ALIAS_SETTLE_SECONDS.  The tombstone
    at either key readers accept (padded or not: tombstones.keys): one at the unpadded key
    went unseen, and the alias was left naming the version gc deleted.
    """
    from . import clock, tombstones

    manifest = layout.version_key(artifact, version)
    tombs = tombstones.keys(artifact, version)
    deadline = clock.now() + ALIAS_SETTLE_SECONDS
    while True:
        if not store.exists(manifest):
            return False
        if not any(_nonempty(store, t) for t in tombs) or clock.now() >= deadline:
            return True
        time.sleep(_SETTLE_POLL)


def _nonempty(store: Store, key: str) -> bool:
    """Whether the object exists with content (an empty one counts as absent, docs/format.md);
    one request while it is absent, the common case."""
    try:
        return store.exists(key) and store.stat(key).size > 0
    except NotFound:
        return False


def _undo_alias(store: Store, key: str, ours: str, previous_body: bytes | None) -> bool:
    """Put the alias record back as it was before our write, if it is still ours.  False if
    another writer changed it since (theirs stands)."""
    try:
        if previous_body is not None:
            store.put(key, previous_body, if_match=ours)
            return True
        # There was no alias: remove ours.  The store has no conditional delete, so this checks
        # the ETag first (a mover of the same new alias in between would lose its write: the
        # residual risk in docs/format.md).
        _, etag = store.get_with_etag(key)
        if etag != ours:
            return False
        store.delete([key])
        return True
    except (PreconditionFailed, NotFound):
        return False


def version_info(m: Manifest, alias_map: dict[str, int]) -> VersionInfo:
    return VersionInfo(
        artifact=m.artifact, version=m.version, step=m.step, created=m.created,
        created_by=m.created_by, total_bytes=m.total_bytes, files=len(m.files),
        metrics=dict(m.metrics), metadata=dict(m.metadata),
        aliases=sorted(a for a, v in alias_map.items() if v == m.version),
        stored_bytes=m.stored_bytes)


def versions(store: Store, artifact: str) -> list[VersionInfo]:
    validate_artifact(artifact)
    # The listings of @v/, @alias/ and @s/ (summaries, which answer for most versions; the
    # rest read their manifest) run at once.
    jobs = {"v": lambda: committed(store, artifact), "a": lambda: aliases(store, artifact),
            "s": lambda: read_summaries(store, artifact)}
    got = dict(bounded_map(lambda k: (k, jobs[k]()), list(jobs), workers=3,
                           name="ckptlake-meta"))
    if not got["v"]:
        raise _missing_artifact(store, artifact)
    return _version_infos(store, artifact, got["v"], got["a"], got["s"])


def artifacts(store: Store, prefix: str = "") -> list[ArtifactInfo]:
    """Every artifact with at least one version; one listing of the artifacts/ tree."""
    found: dict[str, tuple[int, int, datetime]] = {}
    alias_names: dict[str, list[str]] = {}
    for info in store.list(layout.ARTIFACTS_PREFIX + prefix):
        if (parsed := layout.parse_version_key(info.key)) and info.size > 0:
            art, n = parsed
            count, latest, updated = found.get(art, (0, 0, info.modified))
            if n >= latest:
                latest, updated = n, info.modified
            found[art] = (count + 1, latest, updated)
        elif (parsed_alias := layout.parse_alias_key(info.key)) and info.size > 0:
            # an empty record (a removal cut short, a PUT cut after its head) is no alias
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
        if (parsed := layout.parse_version_key(info.key)) and info.size > 0:
            live.add(parsed)
        elif parsed_tomb := layout.parse_tombstone_key(info.key):
            tombs.add(parsed_tomb)
    out: dict[str, int] = {}
    for art, _ in tombs - live:
        out[art] = out.get(art, 0) + 1
    return out


def _version_infos(store: Store, artifact: str, versions: dict[int, datetime],
                  alias_map: dict[str, int], summaries: dict[int, Summary]) -> list[VersionInfo]:
    """VersionInfo for each committed version (number -> manifest time, see `committed`): from
    the summaries where they answer, else the manifest."""
    out, missing = [], []
    for n, written in sorted(versions.items()):
        s = summaries.get(n)
        if not usable(s, written) or s.metadata is None:  # type: ignore[union-attr]
            missing.append(n)
            continue
        assert s is not None and s.metadata is not None
        out.append(VersionInfo(
            artifact=artifact, version=n, step=s.step, created=s.created,
            created_by=s.created_by, total_bytes=s.total_bytes, files=s.files,
            metrics=dict(s.metrics), metadata=dict(s.metadata),
            aliases=sorted(a for a, v in alias_map.items() if v == n),
            stored_bytes=s.stored_bytes))
    out += [version_info(m, alias_map) for m in load_manifests(store, artifact, missing)]
    return sorted(out, key=lambda v: v.version)
