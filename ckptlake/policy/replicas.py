"""`replicas:` in ckptlake.yaml: regional copies of the lake's chunks that pulls read through.

    replicas:
      - name: eu                       # [a-z0-9-]+, unique
        url: s3://ckpt-eu/lakes/team   # or file:///...
        region: eu-west-1
        endpoint_url: null             # optional, like the top-level key
        profile: null                  # optional

Validated here, from the raw list the config parser keeps, so every error names the file, the
line and the key (`replicas[1].region`).  Why the checks:

* a region name must be one we know (AWS's, R2's location hints, or one the same file already
  names as `region:`, `egress.lake_region` or `egress.client_region`): a typo would silently
  never match the client's region, and every pull would pay the crossing the replica exists to
  save;
* two replicas in one region: which one a client reads would be arbitrary;
* a replica whose URL is the origin's: pull-through would read and write the lake itself;
  one inside the lake's prefix (or holding the lake under its own) mixes the two key spaces,
  and gc and du would report the other's objects as "not the lake's".

A replica without `endpoint_url` uses the lake's (the top-level key, or --endpoint-url): a
file that sets one endpoint for a MinIO/SeaweedFS lake means its replicas to be there too,
not at AWS (ReplicaSet.endpoint_of).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, UsageError

__all__ = ["ReplicaSpec", "REPLICA_KEYS", "KNOWN_REGIONS", "load_replicas", "same_location",
           "overlap", "inherited_endpoint", "check_not_origin", "location_key"]

REPLICA_KEYS = ("name", "url", "region", "endpoint_url", "profile")
NAME_RE = re.compile(r"[a-z0-9-]+")
MAX_NAME = 63
# "none" is `--replica none` (read the origin); the rest would read as options.
RESERVED_NAMES = ("none", "origin")

KNOWN_REGIONS = frozenset({
    # AWS commercial, GovCloud and China partitions
    "us-east-1", "us-east-2", "us-west-1", "us-west-2",
    "af-south-1", "ap-east-1", "ap-east-2", "ap-south-1", "ap-south-2",
    "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
    "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4",
    "ap-southeast-5", "ap-southeast-7",
    "ca-central-1", "ca-west-1",
    "eu-central-1", "eu-central-2", "eu-west-1", "eu-west-2", "eu-west-3",
    "eu-north-1", "eu-south-1", "eu-south-2",
    "il-central-1", "me-central-1", "me-south-1", "mx-central-1", "sa-east-1",
    "us-gov-east-1", "us-gov-west-1", "cn-north-1", "cn-northwest-1",
    # Cloudflare R2 location hints
    "wnam", "enam", "weur", "eeur", "apac", "oc",
})


@dataclass(frozen=True)
class ReplicaSpec:
    name: str
    url: str
    region: str
    endpoint_url: str | None = None
    profile: str | None = None
    line: int | None = None  # where it is declared, for messages

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "region": self.region,
                "endpoint_url": self.endpoint_url, "profile": self.profile}


def _describe(value: Any) -> str:
    from .config import describe_value

    return describe_value(value)


def load_replicas(config: Any) -> list[ReplicaSpec]:
    """The validated `replicas:` list of a Config (empty if the file has none)."""
    raw = getattr(config, "replicas", None)
    source = getattr(config, "source", None)
    line_of = getattr(config, "line_of", lambda key: None)

    def fail(message: str, key: str, hint: str | None = None) -> ConfigError:
        return ConfigError(message, path=source, line=line_of(key), key=key, hint=hint)

    if raw is None:
        return []
    if not isinstance(raw, list):
        raise fail(f"must be a list of replicas, got {_describe(raw)}", "replicas",
                   "e.g. replicas: [{name: eu, url: s3://ckpt-eu/lakes/team, region: eu-west-1}]")
    egress = getattr(config, "egress", None) or {}
    declared = {v for v in (getattr(config, "region", None),
                            egress.get("lake_region") if isinstance(egress, dict) else None,
                            egress.get("client_region") if isinstance(egress, dict) else None)
                if isinstance(v, str)}
    known = KNOWN_REGIONS | declared
    out: list[ReplicaSpec] = []
    names: dict[str, int] = {}
    regions: dict[str, str] = {}
    for i, item in enumerate(raw):
        at = f"replicas[{i}]"
        if not isinstance(item, dict):
            raise fail(f"must be a mapping (name, url, region), got {_describe(item)}", at)
        for key in item:
            if key not in REPLICA_KEYS:
                close = difflib.get_close_matches(str(key), REPLICA_KEYS, n=1, cutoff=0.6)
                raise fail("unknown key", f"{at}.{key}",
                           f"did you mean `{close[0]}`?" if close
                           else "valid keys: " + ", ".join(REPLICA_KEYS))
        for key in ("name", "url", "region"):
            if item.get(key) is None:
                raise fail(f"needs {key}:", at, "a replica needs name, url and region")
        name = item["name"]
        if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > MAX_NAME:
            raise fail(f"must be made of a-z, 0-9 and '-' (at most {MAX_NAME}), got "
                       f"{_describe(name)}", f"{at}.name", "e.g. name: eu")
        if name in RESERVED_NAMES:
            raise fail(f"{name!r} is reserved (--replica {name} means the origin)",
                       f"{at}.name", "choose another name")
        if name in names:
            raise fail(f"a second replica named {name!r} (the first is replicas[{names[name]}])",
                       f"{at}.name", "replica names must be unique")
        names[name] = i
        url = item["url"]
        if not isinstance(url, str) or not url.strip():
            raise fail(f"must be a lake URL, got {_describe(url)}", f"{at}.url",
                       "s3://bucket/prefix or file:///absolute/path")
        url = url.strip()
        if not (url.startswith("s3://") or url.startswith("file:///")):
            raise fail(f"must be an s3:// or file:/// URL, got {url!r}", f"{at}.url",
                       "s3://bucket/prefix or file:///absolute/path")
        try:
            from ..store import _parse_file, _parse_s3

            _parse_s3(url) if url.startswith("s3://") else _parse_file(url)
        except UsageError as exc:
            raise fail(exc.message, f"{at}.url", exc.hint) from None
        region = item["region"]
        if not isinstance(region, str) or not region.strip():
            raise fail(f"must be a region name such as eu-west-1, got {_describe(region)}",
                       f"{at}.region")
        region = region.strip()
        if region not in known:
            close = difflib.get_close_matches(region, sorted(known), n=1, cutoff=0.7)
            raise fail(f"unknown region {region!r}", f"{at}.region",
                       f"did you mean {close[0]}?" if close else
                       "use an AWS region (eu-west-1) or name it as egress.lake_region / "
                       "egress.client_region too")
        if region in regions:
            raise fail(f"a second replica in {region} (replica {regions[region]!r} is there "
                       "already)", f"{at}.region",
                       "a client reads the replica of its region: keep one per region")
        regions[region] = name
        opt: dict[str, str | None] = {}
        for key in ("endpoint_url", "profile"):
            value = item.get(key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise fail(f"must be a non-empty string or null, got {_describe(value)}",
                           f"{at}.{key}")
            opt[key] = value.strip() if isinstance(value, str) else None
        if opt["endpoint_url"] is not None:
            from ..redact import redact_url

            ep = opt["endpoint_url"]
            if redact_url(ep) != ep or not re.match(r"https?://[^/]", ep):
                raise fail("must be an http:// or https:// URL without credentials",
                           f"{at}.endpoint_url", "e.g. http://localhost:9000")
        if getattr(config, "lake", None) is not None and config.source is not None:
            from .config import resolve_lake

            origin_url = resolve_lake(None, _only_lake(config))[0]
            origin_ep = getattr(config, "endpoint_url", None)
            where = overlap(url, inherited_endpoint(url, opt["endpoint_url"], origin_ep),
                            origin_url, origin_ep)
            if where is not None:
                raise fail(f"{_OVERLAP_TEXT[where]} ({origin_url})", f"{at}.url",
                           "a replica must be another bucket, or a prefix outside the lake's")
        out.append(ReplicaSpec(name=name, url=url, region=region, line=line_of(at), **opt))
    return out


def _only_lake(config: Any) -> Any:
    """The config with nothing but its lake, for resolve_lake (which also reads the env)."""
    from .config import Config

    return Config(source=config.source, lake=config.lake)


def _norm(url: str) -> str:
    return url.rstrip("/")


def inherited_endpoint(url: str, endpoint: str | None, origin_endpoint: str | None
                       ) -> str | None:
    """The endpoint a replica at `url` is reached at: its own `endpoint_url`, else (s3://
    only) the lake's, else None (the AWS default)."""
    if endpoint is not None or not url.startswith("s3://"):
        return endpoint
    return origin_endpoint


def _location(url: str) -> tuple[str, tuple[str, ...]] | None:
    """(bucket or "file", path segments) of a lake URL; None if it does not parse.  A file
    path is resolved (os.path.realpath), so two spellings of one directory are one place."""
    import os

    from ..store import _parse_file, _parse_s3

    try:
        if url.startswith("s3://"):
            bucket, prefix = _parse_s3(url)
            return f"s3:{bucket}", tuple(prefix.split("/")) if prefix else ()
        if url.startswith("file:"):
            path = _parse_file(url)
        elif "://" in url:
            return None
        else:
            path = os.path.abspath(os.path.expanduser(url))
    except UsageError:
        return None
    # Where the directory really is: a replica at a symlink to the lake (or to a directory
    # inside it) is the lake, however the config spells it.
    try:
        path = os.path.realpath(path)
    except (ValueError, OSError):  # a NUL byte (a malformed replica marker's origin), ...
        return None
    return "file", tuple(seg for seg in path.split("/") if seg)


_OVERLAP_TEXT = {"same": "is the origin lake itself", "inside": "is inside the origin lake",
                 "holds": "holds the origin lake under its prefix"}


def server_of(endpoint: str | None) -> tuple[str, str, int | None, str] | None:
    """An endpoint URL as what names the server: scheme and host compared case-insensitively,
    the scheme's default port spelled out, this host's loopback names as one (`localhost`,
    127.0.0.1, ::1: one server on this machine, however a config spells it).  Other names
    are not resolved: two names on one address may well be two services (virtual hosts; R2's
    per-account endpoints).  None is AWS's own endpoint."""
    if not endpoint:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # not a port: compared as written
        return scheme, parts.netloc.lower(), None, parts.path.rstrip("/")
    port = port or {"http": 80, "https": 443}.get(scheme)
    host = (parts.hostname or "").lower().rstrip(".")
    if host in ("localhost", "::1") or host.startswith("127.") and host.count(".") == 3:
        host = "localhost"
    return scheme, host, port, parts.path.rstrip("/")


def overlap(a: str, a_endpoint: str | None, b: str, b_endpoint: str | None) -> str | None:
    """How location `a` overlaps location `b`: "same", "inside" (a is under b's prefix),
    "holds" (b is under a's), or None.

    S3: only on the same server.  An endpoint is the one each is reached at (for a replica,
    after inheritance: see inherited_endpoint), so an unset one is AWS's and differs from any
    custom one: `s3://ml-ckpts` at AWS and `s3://ml-ckpts/eu` on a MinIO are two buckets that
    happen to share a name."""
    if a.startswith("s3://") and server_of(a_endpoint) != server_of(b_endpoint):
        return None
    la, lb = _location(a), _location(b)
    if la is None or lb is None:
        return "same" if _norm(a) == _norm(b) else None
    if la[0] != lb[0]:
        return None
    if la[1] == lb[1]:
        return "same"
    if la[1][:len(lb[1])] == lb[1]:
        return "inside"
    if lb[1][:len(la[1])] == la[1]:
        return "holds"
    return None


def location_key(url: str) -> str:
    """A lake URL as one string per place (file paths resolved, trailing slashes dropped), for
    comparing a replica marker's `origin` with the lake's URL when no endpoint is known."""
    loc = _location(url)
    if loc is None:
        return _norm(url)
    return f"{loc[0]}:/" + "/".join(loc[1])


def same_location(a: str, a_endpoint: str | None, b: str, b_endpoint: str | None) -> bool:
    """Do two lake URLs name the same place?  (See overlap.)"""
    return overlap(a, a_endpoint, b, b_endpoint) == "same"


def check_not_origin(spec: ReplicaSpec, origin_url: str, origin_endpoint: str | None) -> None:
    """At open time (the lake may come from --lake): a replica must not be the lake, nor
    overlap it.

    `origin_endpoint` is where the lake is reached (None: AWS's own endpoint, not "unknown"):
    callers pass the lake's real one (ReplicaSet.origin_endpoint).  None for a lake on a
    MinIO/SeaweedFS put a replica that names that server in its `endpoint_url` on another
    server than the lake, and let one inside the lake through."""
    where = overlap(spec.url, inherited_endpoint(spec.url, spec.endpoint_url, origin_endpoint),
                    origin_url, origin_endpoint)
    if where is not None:
        what = {"same": "is the lake itself", "inside": f"is inside the lake {origin_url}",
                "holds": f"holds the lake {origin_url} under its prefix"}[where]
        raise UsageError(f"replica {spec.name!r} ({spec.url}) {what}",
                         hint="a replica must be another bucket, or a prefix outside the "
                              "lake's; pass --replica none or fix replicas: in the config")
