"""Where each kind of object lives under the lake root.

`@` cannot occur in an artifact segment, so `artifacts/<artifact>/@v/` can never be confused
with the keys of a nested artifact such as `<artifact>/v`.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from ..errors import UsageError

HEADER_KEY = "ckptlake.json"
# A regional replica's marker, naming the lake it serves: no lake header is written beside it.
REPLICA_MARKER_KEY = "ckptlake-replica.json"
CHUNKS_PREFIX = "chunks/"
ARTIFACTS_PREFIX = "artifacts/"
# gc's own records (docs/format.md, "Deleting (gc)").
GC_PREFIX = "gc/"
CONDEMNED_PREFIX = "gc/condemned/"
GC_SETTINGS_KEY = "gc/settings.json"
PINS_PREFIX = "gc/pins/"

# versions are numbered from 1: `0000000000.json` names none (verify warns of such a key)
_VERSION_KEY = re.compile(r"artifacts/(.+)/@v/((?!0{10})[0-9]{10})\.json")
_ALIAS_KEY = re.compile(r"artifacts/(.+)/@alias/([^/]+)\.json")
# Both hashes of format 1 give 32 bytes (64 hex digits): a key of another length under chunks/
# is no chunk but someone else's object, which gc must never condemn or sweep.
_CHUNK_KEY = re.compile(r"chunks/([0-9a-f]{2})/([0-9a-f]{64})")


# Version numbers and steps appear in keys as exactly 10 zero-padded digits (lexical key order is
# numeric order, and every parser matches [0-9]{10}), so this is the largest either can be: a
# longer key would be written but never parsed back (an invisible version or sharded step).
NUMBER_DIGITS = 10
MAX_NUMBER = 10 ** NUMBER_DIGITS - 1  # 9,999,999,999


def check_step(step: object, what: str = "step") -> int:
    """`step` if it fits the keys (an int in 0..MAX_NUMBER), else a UsageError naming the
    limit; `what` names it as the caller knows it (e.g. "--step")."""
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_NUMBER:
        raise UsageError(f"{what} must be an integer from 0 to {MAX_NUMBER} "
                         f"({NUMBER_DIGITS} digits in the lake's keys), got {step!r}",
                         hint=_as_python(step, "int", lambda x: isinstance(x, int)
                                         and not isinstance(x, bool) and 0 <= x <= MAX_NUMBER))
    return step


def _as_python(value: object, kind: str, ok: Callable[[Any], bool]) -> str | None:
    """The fix for a numpy or torch number where a Python one is taken (a training loop's
    counter, its loss): when its Python value (`.item()`) would do, it is the type that is
    wrong, which "must be an integer" about a 6 does not say."""
    package = type(value).__module__.split(".")[0]
    if package not in ("numpy", "torch") or not hasattr(value, "item"):
        return None
    try:
        good = ok(value.item())  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a tensor of many elements, ...: no hint then
        return None
    return f"a {package} value: pass {kind}(x) or x.item()" if good else None


def check_version(number: object) -> int:
    """`number` if it is a version number the keys can hold (1..MAX_NUMBER)."""
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_NUMBER:
        raise UsageError(f"version numbers go from v1 to v{MAX_NUMBER} ({NUMBER_DIGITS} digits "
                         f"in the lake's keys), got {number!r}")
    return number


def _digits(number: int) -> str:
    """The 10-digit form of a version number or step; the last guard against writing a key
    that no parser would read back."""
    if not 0 <= number <= MAX_NUMBER:
        raise UsageError(f"{number} does not fit the lake's {NUMBER_DIGITS}-digit keys "
                         f"(0..{MAX_NUMBER})")
    return f"{number:0{NUMBER_DIGITS}d}"


def chunk_key(digest: str) -> str:
    # Two hex characters of fan-out keep local directories small and spread S3 key ranges.
    return f"{CHUNKS_PREFIX}{digest[:2]}/{digest}"


def versions_prefix(artifact: str) -> str:
    return f"{ARTIFACTS_PREFIX}{artifact}/@v/"


def version_key(artifact: str, number: int) -> str:
    # Zero-padded so that lexical key order is numeric order in every listing.
    return f"{versions_prefix(artifact)}{_digits(number)}.json"


def aliases_prefix(artifact: str) -> str:
    return f"{ARTIFACTS_PREFIX}{artifact}/@alias/"


def alias_key(artifact: str, name: str) -> str:
    return f"{aliases_prefix(artifact)}{name}.json"


def parse_version_key(key: str) -> tuple[str, int] | None:
    """(artifact, number) for a version manifest key, None for any other key."""
    m = _VERSION_KEY.fullmatch(key)
    return (m.group(1), int(m.group(2))) if m else None


def parse_alias_key(key: str) -> tuple[str, str] | None:
    m = _ALIAS_KEY.fullmatch(key)
    return (m.group(1), m.group(2)) if m else None


# --- lineage and listing indexes (docs/format.md, "Indexes") ---------------------------------
# Both are derived from manifests and written after the manifest they describe; readers trust
# them only for versions whose manifest is listed under @v/, so a stale entry is harmless.

_SUMMARY_KEY = re.compile(r"artifacts/(.+)/@s/((?!0{10})[0-9]{10})\.([A-Za-z0-9_/-]+)")
_CHILD_REST = re.compile(r"([0-9]{10})\.([A-Za-z0-9._!-]+)@([0-9]{10})\.([a-z-]+)")


def summaries_prefix(artifact: str) -> str:
    return f"{ARTIFACTS_PREFIX}{artifact}/@s/"


def summary_key(artifact: str, number: int, payload: str) -> str:
    """`<N>.<payload>`: base64url text, cut into path segments of at most 200 characters
    (local file names are limited to 255 bytes).  Most summaries fit in the first segment, so
    the keys stay flat, which servers that map '/' to directories (SeaweedFS) list fastest."""
    segments = "/".join(payload[i:i + 200] for i in range(0, len(payload), 200))
    return f"{summaries_prefix(artifact)}{_digits(number)}.{segments}"


def parse_summary_key(key: str) -> tuple[str, int, str] | None:
    """(artifact, number, payload) for a summary key, None for any other key."""
    m = _SUMMARY_KEY.fullmatch(key)
    return (m.group(1), int(m.group(2)), m.group(3).replace("/", "")) if m else None


def children_prefix(artifact: str, number: int | None = None) -> str:
    base = f"{ARTIFACTS_PREFIX}{artifact}/@children/"
    return base if number is None else f"{base}{_digits(number)}."


def child_key(parent: str, parent_version: int, child: str, child_version: int,
              relation: str) -> str:
    """One marker per lineage edge, under the parent, all in one flat "directory" (servers
    that map '/' to directories, like SeaweedFS and local lakes, list flat keys fastest):

        artifacts/<parent>/@children/<P>.<child with '/' written as '!'>@<C>.<relation>

    '!' cannot occur in an artifact name and needs no escaping in S3 keys, URLs or file names.
    """
    escaped = child.replace("/", "!")
    return f"{children_prefix(parent, parent_version)}{escaped}@{_digits(child_version)}.{relation}"


def parse_child_key(parent: str, key: str) -> tuple[int, str, int, str] | None:
    """(parent version, child artifact, child version, relation) for a marker under `parent`."""
    prefix = children_prefix(parent)
    if not key.startswith(prefix):
        return None
    m = _CHILD_REST.fullmatch(key[len(prefix):])
    child = m.group(2).replace("!", "/") if m else ""
    if not m or any(seg in ("", ".", "..") for seg in child.split("/")):
        return None
    return int(m.group(1)), child, int(m.group(3)), m.group(4)


def tombstones_prefix(artifact: str) -> str:
    return f"{ARTIFACTS_PREFIX}{artifact}/@tomb/"


# Padded to 10 digits (what ckptlake writes) or unpadded (another writer's): `042.json` is
# neither, and no tombstone -- counted by the numbering but read by nobody, it would hide
# which version it deleted from every check that reads tombstones by number.
_TOMB_KEY = re.compile(r"artifacts/(.+)/@tomb/((?!0{10})[0-9]{10}|[1-9][0-9]{0,9})\.json")


def parse_tombstone_key(key: str) -> tuple[str, int] | None:
    """(artifact, number) of a gc tombstone (JSON with number, step, metrics, parents, deleted,
    rule), written when gc deletes a version; lineage shows such versions as expired.  The
    number is zero-padded to 10 digits or not padded at all (tombstones.keys reads both)."""
    m = _TOMB_KEY.fullmatch(key)
    return (m.group(1), int(m.group(2))) if m else None


# --- sharded commits (docs/format.md, "Sharded commits") -------------------------------------
# One record per rank, then one claim object per step; the claim decides who writes the manifest.

# Rank and world in plain decimal, no leading zeros: `03-of-08.json` and `3-of-8.json` would
# both be rank 3 of 8, two records for one rank of which a reader could only keep one.  Only
# the form writers write is a record; any other key there is not the lake's (docs/format.md).
_SHARD_KEY = re.compile(
    r"artifacts/(.+)/@shards/([0-9]{10})/(?:(0|[1-9][0-9]*)-of-([1-9][0-9]*)|commit)\.json")


def shards_prefix(artifact: str) -> str:
    return f"{ARTIFACTS_PREFIX}{artifact}/@shards/"


def shard_step_prefix(artifact: str, step: int) -> str:
    return f"{shards_prefix(artifact)}{_digits(step)}/"


def shard_record_key(artifact: str, step: int, rank: int, world: int) -> str:
    return f"{shard_step_prefix(artifact, step)}{rank}-of-{world}.json"


def shard_claim_key(artifact: str, step: int) -> str:
    return f"{shard_step_prefix(artifact, step)}commit.json"


def parse_shard_key(key: str) -> tuple[str, int, int | None, int | None] | None:
    """(artifact, step, rank, world) for a shard record, (artifact, step, None, None) for a
    step's claim object, None for any other key."""
    m = _SHARD_KEY.fullmatch(key)
    if not m:
        return None
    rank, world = m.group(3), m.group(4)
    return (m.group(1), int(m.group(2)), None if rank is None else int(rank),
            None if world is None else int(world))


def parse_chunk_key(key: str) -> str | None:
    """The digest of a chunk key, None for anything else (including a misplaced digest)."""
    m = _CHUNK_KEY.fullmatch(key)
    return m.group(2) if m and m.group(2).startswith(m.group(1)) else None


def tombstone_key(artifact: str, number: int) -> str:
    """Where gc records a deleted version (same zero-padded number as its manifest key)."""
    return f"{tombstones_prefix(artifact)}{_digits(number)}.json"



def condemned_key(created_compact: str, token: str) -> str:
    """`gc/condemned/<YYYYMMDDTHHMMSS.ffffffZ>-<hex>.json`: key order is creation order."""
    return f"{CONDEMNED_PREFIX}{created_compact}-{token}.json"


def is_condemned_key(key: str) -> bool:
    """Every object under `gc/condemned/` is a condemnation record, whatever its name.

    Writers use condemned_key's form, but nothing is read from a record's name (ripeness is
    its `created` field), and a record a reader skipped for its name is one a push does not
    wait for while a gc sweeps its chunks: a reused chunk swept under a commit.  Something
    there that is no record at all reads as a malformed one, which is loud and safe (pushes
    wait, gc neither sweeps nor removes it, verify names it), never as nothing."""
    return _gc_object(key, CONDEMNED_PREFIX)


def _gc_object(key: str, prefix: str) -> bool:
    """Under `prefix`, a key that can be an object of ours: not a "folder" (`gc/pins/old/`,
    what S3 consoles, s3fs and Cyberduck create), nor a key no store would read (an empty,
    `.` or `..` segment): read as a record or pin, those stopped every push and every gc."""
    if not key.startswith(prefix) or len(key) == len(prefix) or "\x00" in key:
        return False
    return all(part not in ("", ".", "..") for part in key[len(prefix):].split("/"))


def pin_key(created_compact: str, token: str) -> str:
    """`gc/pins/<YYYYMMDDTHHMMSS.ffffffZ>-<hex>.json`: a committing push's chunks (gc_guard)."""
    return f"{PINS_PREFIX}{created_compact}-{token}.json"


def is_pin_key(key: str) -> bool:
    """Every object under `gc/pins/` is a pin, whatever its name: a pin skipped for its name
    is not a gc root, and its push's reused chunks could be swept under its commit.  Nothing
    is read from the name (a pin expires by its LastModified)."""
    return _gc_object(key, PINS_PREFIX)


_CHILD_MARKER = re.compile(
    r"artifacts/(.+?)/@children/([0-9]{10})\.([A-Za-z0-9._!-]+)@([0-9]{10})\.([a-z-]+)")


def is_lake_key(key: str) -> bool:
    """Does the lake's format own this key?  Anything else under the lake's prefix is foreign:
    gc reports it and never deletes it (docs/format.md)."""
    return (key in (HEADER_KEY, GC_SETTINGS_KEY) or parse_chunk_key(key) is not None
            or parse_version_key(key) is not None or parse_alias_key(key) is not None
            or parse_tombstone_key(key) is not None or is_condemned_key(key) or is_pin_key(key)
            or parse_summary_key(key) is not None or parse_shard_key(key) is not None
            or _CHILD_MARKER.fullmatch(key) is not None)
