"""Version summaries encoded in object keys, so one listing answers `ls` (docs/format.md).

Why keys and not objects: listing 1,000 versions is one request, reading 1,000 manifests is
1,000 (measured on SeaweedFS: 1.5-2 s for 1,000 small manifests with 16 parallel GETs, against
0.08 s for the listing).  A summary object per version would still cost a GET each.  So right
after a version's manifest is committed, push writes one empty object whose *key* carries what
`ls` shows: step, time, author, size, file count, metrics and (if it fits) metadata.

The manifest stays the source of truth: a summary is used only for a version whose manifest is
listed under `@v/`, a version without a (readable) summary is read from its manifest, and a
summary without metadata makes readers that need metadata read the manifest.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from ..format import layout
from ..format.manifest import Manifest, is_metric_value
from ..format.times import parse_time
from ..redact import redact, redact_metadata
from ..store.base import ObjectInfo, Store
from .identity import iso

# Keys stay below this many characters (relative to the lake root); S3 allows 1,024 bytes for
# the whole key, which leaves room for a lake prefix of up to ~220 characters.
MAX_KEY = 800


@dataclass(frozen=True)
class Summary:
    step: int | None
    created: datetime
    created_by: str
    total_bytes: int
    files: int
    metrics: dict[str, float]
    metadata: dict[str, str] | None  # None: too large for a key, read the manifest
    written: datetime | None = None  # when the summary key was written (from the listing)
    stored_bytes: int | None = None  # "t": written only when it differs from total_bytes


def _pack(doc: dict[str, Any]) -> str:
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    packed = zlib.compress(text, 9)
    tag, body = ("z", packed) if len(packed) < len(text) else ("j", text)
    return tag + base64.urlsafe_b64encode(body).decode().rstrip("=")


def _unpack(payload: str) -> dict[str, Any]:
    tag, body = payload[:1], payload[1:]
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    if tag == "z":
        raw = zlib.decompress(raw)
    elif tag != "j":
        raise ValueError(f"unknown summary encoding {tag!r}")
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("summary is not an object")
    return doc


# The payload of a summary key too long to carry even the summary without metadata: no
# summary (readers cannot decode it and read the manifest, as for any undecodable one), only
# the evidence that vN was committed, which gc and verify need to tell the version lost if its
# manifest is ever deleted outside ckptlake (docs/format.md, "Listing summaries").
EVIDENCE_ONLY = "e"


def summary_key(m: Manifest) -> str | None:
    """The key for m's summary (without metadata if it is too long; the EVIDENCE_ONLY key if
    that still is), or None if even that is too long (an artifact name near the limit)."""
    doc: dict[str, Any] = {"s": m.step, "c": iso(m.created), "u": m.created_by,
                           "b": m.total_bytes, "f": len(m.files), "m": m.metrics,
                           "d": m.metadata}
    stored = m.stored_bytes
    if stored != m.total_bytes:
        doc["t"] = stored
    key = layout.summary_key(m.artifact, m.version, _pack(doc))
    if len(key) > MAX_KEY:  # without metadata: readers that need it read the manifest
        del doc["d"]
        key = layout.summary_key(m.artifact, m.version, _pack(doc))
    if len(key) > MAX_KEY:
        key = layout.summary_key(m.artifact, m.version, EVIDENCE_ONLY)
    return key if len(key) <= MAX_KEY else None


def write_summary(store: Store, m: Manifest) -> None:
    key = summary_key(m)
    if key is not None:
        store.put(key, b"")


def _decode(payload: str) -> Summary:
    doc = _unpack(payload)
    step, metrics, metadata = doc.get("s"), doc["m"], doc.get("d")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        raise ValueError("malformed step")
    if not isinstance(metrics, dict) or not all(is_metric_value(v) for v in metrics.values()):
        raise ValueError("malformed metrics")
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError("malformed metadata")
    total, files, stored = doc["b"], doc["f"], doc.get("t", doc["b"])
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (total, files, stored)):
        raise ValueError("malformed sizes")
    return Summary(step=step, created=parse_time(doc["c"]),
                   created_by=redact(str(doc.get("u", ""))), total_bytes=total, files=files,
                   stored_bytes=stored,
                   metrics={k: float(v) for k, v in metrics.items()},
                   # redacted as a manifest's is when read (a summary written before keys
                   # were redacted may hold a URL's password in one)
                   metadata=None if metadata is None else redact_metadata(
                       {k: str(v) for k, v in metadata.items()}))


def _seconds(t: datetime) -> int:
    return int(t.timestamp())  # servers keep whole seconds (S3's Last-Modified)


def read_summaries(store: Store, artifact: str) -> dict[int, Summary]:
    """Every readable summary of an artifact, from one listing; undecodable keys are skipped
    (the manifest answers for those versions).  If a number has several (gc deleted a version
    and the number was claimed again), the newest wins; `usable` then also checks it is not
    older than the manifest."""
    return summaries_from(artifact, store.list(layout.summaries_prefix(artifact)))


def summaries_from(artifact: str, infos: Iterable[ObjectInfo]) -> dict[int, Summary]:
    """`read_summaries` from a listing already made (e.g. of `artifacts/<artifact>/@`)."""
    out: dict[int, Summary] = {}
    for info in infos:
        parsed = layout.parse_summary_key(info.key)
        if not parsed or parsed[0] != artifact:
            continue
        known = out.get(parsed[1])
        if known is not None and _seconds(known.written) > _seconds(info.modified):
            continue
        try:
            out[parsed[1]] = dataclasses.replace(_decode(parsed[2]), written=info.modified)
        except (ValueError, KeyError, TypeError, RecursionError, binascii.Error, zlib.error):
            continue
    return out


def committed(store: Store, artifact: str) -> dict[int, datetime]:
    """Version number -> time its manifest was written, from one listing of @v/."""
    return committed_from(artifact, store.list(layout.versions_prefix(artifact)))


def committed_from(artifact: str, infos: Iterable[ObjectInfo]) -> dict[int, datetime]:
    out = {}
    for info in infos:
        parsed = layout.parse_version_key(info.key)
        # a zero-byte manifest is no version (docs/format.md, "Empty objects")
        if parsed and parsed[0] == artifact and info.size > 0:
            out[parsed[1]] = info.modified
    return out


def usable(s: Summary | None, manifest_written: datetime | None) -> bool:
    """A summary describes the committed manifest only if it was written after it (it always
    is, right after the commit; an older one describes a deleted version whose number was
    claimed again)."""
    return (s is not None and manifest_written is not None
            and _seconds(s.written) >= _seconds(manifest_written))
