"""Small result objects the operations return (and the CLI renders, or dumps with --json)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class _Result:
    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))  # type: ignore[call-overload]


@dataclass(frozen=True)
class PushResult(_Result):
    lake: str
    artifact: str
    version: int
    step: int | None
    files: int
    bytes_scanned: int  # bytes of the source read and hashed
    bytes_uploaded: int  # chunk bytes actually sent
    bytes_deduplicated: int  # chunk bytes already in the lake (not sent)
    chunks_uploaded: int
    chunks_deduplicated: int
    aliases: list[str]
    seconds: float
    # Committed, but an index derived from it (lineage markers, listing summary) failed.
    warnings: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.artifact}@v{self.version}"


@dataclass(frozen=True)
class PullResult(_Result):
    lake: str
    artifact: str
    version: int
    destination: str
    files: int
    bytes_total: int  # size of the version
    bytes_downloaded: int  # chunk bytes fetched from the lake
    bytes_reused: int  # bytes already present and verified at the destination
    bytes_resumed: int  # bytes an interrupted earlier pull had staged (verified, not re-fetched)
    seconds: float
    # Done, but something beside the destination needs a look (e.g. abandoned staging dirs).
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VersionInfo(_Result):
    artifact: str
    version: int
    step: int | None
    created: datetime
    created_by: str
    total_bytes: int
    files: int
    metrics: dict[str, float]
    metadata: dict[str, str]
    aliases: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ArtifactInfo(_Result):
    artifact: str
    versions: int
    latest: int
    updated: datetime  # time the latest version was committed
    aliases: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AliasResult(_Result):
    artifact: str
    alias: str
    version: int
    previous: int | None  # version it pointed at before, None if new
