"""Where each kind of object lives under the lake root.

`@` cannot occur in an artifact segment, so `artifacts/<artifact>/@v/` can never be confused
with the keys of a nested artifact such as `<artifact>/v`.
"""
from __future__ import annotations

import re

HEADER_KEY = "ckptlake.json"
CHUNKS_PREFIX = "chunks/"
ARTIFACTS_PREFIX = "artifacts/"

_VERSION_KEY = re.compile(r"artifacts/(.+)/@v/([0-9]{10})\.json")
_ALIAS_KEY = re.compile(r"artifacts/(.+)/@alias/([^/]+)\.json")


def chunk_key(digest: str) -> str:
    # Two hex characters of fan-out keep local directories small and spread S3 key ranges.
    return f"{CHUNKS_PREFIX}{digest[:2]}/{digest}"


def versions_prefix(artifact: str) -> str:
    return f"{ARTIFACTS_PREFIX}{artifact}/@v/"


def version_key(artifact: str, number: int) -> str:
    # Zero-padded so that lexical key order is numeric order in every listing.
    return f"{versions_prefix(artifact)}{number:010d}.json"


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
