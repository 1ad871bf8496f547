"""ckptlake: a versioned checkpoint and artifact lake on any S3-compatible bucket.

    import ckptlake
    lake = ckptlake.open()                      # --lake > $CKPTLAKE_LAKE > config > embedded default
    r = lake.push("ckpt/step_2000", "gpt2/run-7/ckpt", step=2000, metrics={"loss": 2.31})
    lake.pull("gpt2/run-7/ckpt@step=2000", "restore/")

Imports stay light (no boto3, no rich) so `ckptlake --help` and `import ckptlake` are fast.
"""
from __future__ import annotations

import os as _os
from typing import TYPE_CHECKING, Any

from .errors import (AccessDenied, CkptlakeError, Conflict, IntegrityError, NotFound,
                     PolicyRefusal, TransferError, UsageError)

__version__ = "0.1.0"

if TYPE_CHECKING:
    import os

    from .lake import Lake

__all__ = ["open", "Lake", "__version__", "CkptlakeError", "UsageError", "NotFound",
           "AccessDenied", "IntegrityError", "Conflict", "PolicyRefusal", "TransferError"]


def _path_text(value: Any, what: str) -> str | None:
    """A lake or config given as a pathlib.Path (as push and pull take paths) is its text;
    anything else but a string was an AttributeError deep in the config code."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, _os.PathLike) and isinstance(text := _os.fspath(value), str):
        return text
    if what == "lake":
        raise UsageError(f"lake must be a URL or a path (a str or os.PathLike), got {value!r}",
                         hint="e.g. ckptlake.open('s3://bucket/lake') or "
                              "ckptlake.open(Path('lake'))")
    raise UsageError(f"{what} must be a file's path (a str or os.PathLike), got {value!r}",
                     hint=f"e.g. ckptlake.open({what}='ckptlake.yaml')")


def open(lake: "str | os.PathLike[str] | None" = None, *,
         config: "str | os.PathLike[str] | None" = None, endpoint_url: str | None = None,
         profile: str | None = None, region: str | None = None, chunk_size: int | None = None,
         concurrency: int | None = None, max_bandwidth: float | None = None,
         connect_timeout: float | None = None, read_timeout: float | None = None,
         multipart_threshold: int | None = None, part_size: int | None = None,
         cache: "str | os.PathLike[str] | bool | None" = None,
         cache_size: int | None = None, replica: str | None = None) -> "Lake":
    """Open a lake, resolving it like the CLI: `lake` > $CKPTLAKE_LAKE > config `lake:` > default.

    Keyword options override the config file's values.  The returned Lake's `origin` says how
    the lake was chosen (the CLI prints it so nobody pushes to the embedded default by mistake).

    `connect_timeout` / `read_timeout` are seconds (S3 lakes; defaults 10 and 60): connecting
    and sending a request (an upload's body too) may stall for `connect_timeout`, waiting for
    a response or the next piece of its body for `read_timeout`; past that the attempt fails
    and is retried.

    `multipart_threshold` / `part_size` are bytes (defaults 256 MiB and 16 MiB): chunk objects
    of at least the threshold go up as multipart uploads and come down as parallel ranged
    GETs of `part_size` each.  They matter only for lakes with chunks of 256 MiB or more.

    `cache`: a directory for the local chunk cache (core/cache.py), shared by every pull on
    this machine that names it: a chunk comes from the lake once.  None (the default):
    $CKPTLAKE_CACHE, else `cache:` in the config, else no cache; False: no cache.
    `cache_size` bounds it in bytes, at least 1 MiB as in the config (default
    $CKPTLAKE_CACHE_SIZE, the config's, or 20 GiB); least recently used chunks are evicted
    beyond it.  A `cache_size` with no cache to bound (cache=False, or none configured) is a
    UsageError: the caller meant a cache it would not get.

    `replica`: the regional replica (`replicas:` in the config) chunk reads go through by
    default: a name, "none" (the lake itself), or None: the replica whose region is the
    client's (egress.client_region, else $AWS_REGION / $AWS_DEFAULT_REGION), if any.  Pulls
    and reads may override it per call.
    """
    from .lake import Lake
    from .policy.config import (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT,
                                _cache_size_problem, check_endpoint_option,
                                check_part_settings, check_timeout,
                                load_config, resolve_lake)
    from .store import open_store

    # Checked before anything else: a bad argument must not wait for the config or network.
    lake, config = _path_text(lake, "lake"), _path_text(config, "config")
    if connect_timeout is not None:
        check_timeout(connect_timeout, "connect timeout")
    if read_timeout is not None:
        check_timeout(read_timeout, "read timeout")
    check_part_settings(multipart_threshold, part_size)
    check_endpoint_option(endpoint_url, "endpoint_url")
    if cache_size is not None and (problem := _cache_size_problem(cache_size)):
        raise UsageError(f"cache_size {problem}", hint="e.g. 20 * 2**30 (20 GiB)")
    cfg = load_config(config)
    url, origin = resolve_lake(lake, cfg)
    if endpoint_url is None and cfg.endpoint_url and url.startswith("s3://"):
        # Said next to the lake: a config file's endpoint redirects even an explicit --lake
        origin += f"; endpoint {cfg.endpoint_url} from endpoint_url: in {cfg.source}"
    chunk_cache = _chunk_cache(cache, cache_size, cfg)
    # None means "from the config"; 0 is a value, refused by Lake as Lake(store, ...) refuses
    # it (with `or`, 0 silently became the default, and max_bandwidth=0 no limit)
    concurrency = cfg.concurrency if concurrency is None else concurrency
    try:
        store = open_store(url, endpoint_url=endpoint_url or cfg.endpoint_url,
                           profile=profile or cfg.profile, region=region or cfg.region,
                           # chunk workers plus part workers (transfer/parts.py), and a few spare
                           max_connections=2 * (concurrency or 8) + 4,
                           connect_timeout=_first(connect_timeout, cfg.connect_timeout,
                                                  DEFAULT_CONNECT_TIMEOUT),
                           read_timeout=_first(read_timeout, cfg.read_timeout,
                                               DEFAULT_READ_TIMEOUT))
    except UsageError as exc:
        if profile is None and cfg.profile and \
                exc.message == f"AWS profile {cfg.profile!r} not found":
            # the store cannot know the name came from a config file: say which one
            exc.message = f"AWS profile {cfg.profile!r} (profile: in {cfg.source}) not found"
            exc.args = (exc.message,)
            exc.hint = (f"fix profile: in {cfg.source}, or add that profile to ~/.aws/config")
        raise
    replicas = _replicas(cfg, replica, url, endpoint_url or cfg.endpoint_url
                         or _resolved_endpoint(store),
                         connect_timeout=_first(connect_timeout, cfg.connect_timeout,
                                                DEFAULT_CONNECT_TIMEOUT),
                         read_timeout=_first(read_timeout, cfg.read_timeout,
                                             DEFAULT_READ_TIMEOUT),
                         max_connections=2 * (concurrency or 8) + 4)
    def given(value: Any, default: Any) -> Any:
        return default if value is None else value

    return Lake(store, chunk_size=given(chunk_size, cfg.chunk_size), concurrency=concurrency,
                max_bandwidth=given(max_bandwidth, cfg.max_bandwidth),
                multipart_threshold=given(multipart_threshold, cfg.multipart_threshold),
                part_size=given(part_size, cfg.part_size), origin=origin, cache=chunk_cache,
                replicas=replicas)


def _replicas(cfg: Any, choice: str | None, url: str, endpoint: str | None, **opts: Any) -> Any:
    """The config's replicas (validated: errors name file and line), or None without any."""
    if choice is not None and (not isinstance(choice, str) or not choice):
        raise UsageError(f"replica must be a replica name or 'none', got {choice!r}")
    if getattr(cfg, "replicas", None) is None and choice in (None, "none"):
        return None  # the common case, without importing the replicas' validation (start-up)
    from .policy.replicas import check_not_origin, load_replicas

    specs = load_replicas(cfg)
    if not specs:
        if choice not in (None, "none"):
            raise UsageError(f"no replica named {choice!r} (none are configured)",
                             hint="replicas are declared under replicas: in ckptlake.yaml")
        return None
    from .core.replicas import ReplicaSet
    from .policy.egress import client_region, load_egress

    region, region_origin = client_region(load_egress(cfg))
    rs = ReplicaSet(specs, client_region=region, client_region_origin=region_origin,
                    default=choice, origin_endpoint=endpoint, **opts)
    if choice not in (None, "none"):
        check_not_origin(rs.by_name(choice), url, endpoint)  # fails now, before any request
    return rs


def _chunk_cache(cache: Any, cache_size: int | None, cfg: Any) -> Any:
    from .policy.config import resolve_cache

    if cache is False:
        if cache_size is not None:
            raise UsageError("cache_size was given with cache=False",
                             hint="leave cache_size out, or pass cache=DIR")
        return None
    if cache is None or cache is True:
        setting = resolve_cache(cfg)
        if setting is None:
            if cache is True or cache_size is not None:
                what = "cache=True" if cache is True else "cache_size was given"
                raise UsageError(f"{what}, but no cache directory is configured",
                                 hint="set $CKPTLAKE_CACHE or cache: in ckptlake.yaml, or "
                                      "pass cache=DIR")
            return None
        directory, size = setting.dir, cache_size or setting.size
    elif not isinstance(cache, (str, _os.PathLike)) or not _os.fspath(cache):
        raise UsageError(f"cache must be a directory, True, False or None, got {cache!r}")
    else:
        directory, size = cache, cache_size
    # imported only for a cache in use: most commands run without one (start-up, issue 13)
    from .core.cache import DEFAULT_CACHE_SIZE, ChunkCache

    return ChunkCache(directory, size or DEFAULT_CACHE_SIZE)


def _resolved_endpoint(store: Any) -> "str | None":
    """The S3 endpoint of a lake opened without one here ($AWS_ENDPOINT_URL, README): None
    would mean AWS to the replica nesting check, which would then miss a replica on the
    lake's own server."""
    while getattr(store, "inner", None) is not None:
        store = store.inner
    resolved = getattr(store, "resolved_endpoint", None)
    return resolved() if resolved is not None else None


def _first(*values: float | None) -> float:
    return next(float(v) for v in values if v is not None)


def __getattr__(name: str):  # lazy: `ckptlake.Lake` without importing the engine up front
    if name == "Lake":
        from .lake import Lake

        return Lake
    raise AttributeError(name)
