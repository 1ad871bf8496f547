"""Open a lake's store from its URL.

Supported: ``s3://bucket[/prefix]``, ``file:///absolute/path`` and plain paths (relative to the
current directory, ``~`` expanded).  Every store comes wrapped in RetryingStore, the single
retry layer.  Backends are imported on demand so that ``import ckptlake.store`` never pulls in
boto3.
"""
from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit

from ..errors import UsageError
from ..redact import redact, redact_url
from .base import (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, MultipartUpload,
                   ObjectInfo, Store)
from .retry import RetryingStore

__all__ = ["open_store", "Store", "ObjectInfo", "MultipartUpload", "RetryingStore"]

_SUPPORTED = "use s3://bucket[/prefix], file:///absolute/path or a local directory path"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# Loose on purpose: S3-compatible servers accept names AWS would not (capitals, underscores).
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{1,254}$")
_CREDENTIALS = "credentials come from the environment, ~/.aws or --profile, never from a URL"


def open_store(url: str, *, endpoint_url: str | None = None, profile: str | None = None,
               region: str | None = None, max_connections: int = 10,
               retry_attempts: int = 5, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
               read_timeout: float = DEFAULT_READ_TIMEOUT) -> Store:
    """The retrying store for `url`; UsageError for anything we cannot serve.

    `connect_timeout` (connecting and sending, upload bodies included) and `read_timeout`
    (waiting for a response and its body), in seconds, apply to S3; a timeout fails that
    attempt with a TransientError, which the RetryingStore retries like any other.
    """
    if not isinstance(url, str) or not url.strip():
        raise UsageError("empty lake URL", hint=_SUPPORTED)
    url = url.strip()
    # Refused before anything echoes them: a URL with user info or a query would be shown (and
    # kept in shell histories and CI logs) with its secret; messages quote the redacted form.
    if redact_url(url) != url:
        raise UsageError(f"lake URL {redact(url)!r} must not hold credentials or a query string",
                         hint=_CREDENTIALS)
    if endpoint_url is not None and redact_url(endpoint_url) != endpoint_url:
        raise UsageError(f"endpoint URL {redact(endpoint_url)!r} must not hold credentials or a "
                         "query string", hint=_CREDENTIALS)
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else None
    if endpoint_url is not None and scheme == "s3":
        _check_endpoint_path(endpoint_url, _parse_s3(url)[0])
    inner: Store
    if scheme == "s3":
        bucket, prefix = _parse_s3(url)
        from .s3 import S3Store

        inner = S3Store(bucket, prefix, endpoint_url=endpoint_url, profile=profile,
                        region=region, max_connections=max_connections,
                        connect_timeout=connect_timeout, read_timeout=read_timeout)
    elif scheme == "file":
        from .local import LocalStore

        inner = LocalStore(_parse_file(url))
    elif scheme is None:
        from .local import LocalStore

        inner = LocalStore(os.path.abspath(os.path.expanduser(url)))
    else:
        raise UsageError(f"unsupported lake URL scheme {scheme}:// in {redact(url)!r}",
                         hint=_SUPPORTED)
    return RetryingStore(inner, attempts=retry_attempts)


def _check_endpoint_path(endpoint_url: str, bucket: str) -> None:
    """botocore puts an endpoint's path in front of every request's, so the lake's bucket pasted
    onto the endpoint (http://host:8333/mybucket) made the lake "not found" (exit 3) rather than
    a usage error naming the mistake.  Another path is left alone: a server behind a gateway
    may be served under one.  A fragment never reaches a server; the query is refused above,
    with its own hint."""
    parts = urlsplit(endpoint_url.strip())
    first = parts.path.strip("/").split("/")[0]
    if first != bucket and not parts.fragment:
        return
    root = f"{parts.scheme}://{parts.netloc}"
    raise UsageError(f"endpoint URL {redact(endpoint_url)!r} holds "
                     + (f"the lake's bucket {bucket!r}" if first == bucket else "a fragment")
                     + ": it names the server alone",
                     hint=f"use http(s)://host[:port], here {root}, with the bucket in the lake "
                          f"URL (s3://{bucket}/...)")


def _parse_s3(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    bucket = parts.netloc
    if not bucket:
        raise UsageError(f"lake URL {url!r} has no bucket", hint=_SUPPORTED)
    if not _BUCKET.match(bucket):
        raise UsageError(f"lake URL {url!r}: {bucket!r} is not a bucket name", hint=_SUPPORTED)
    if parts.query or parts.fragment:
        raise UsageError(f"lake URL {url!r} must not have a query or fragment", hint=_SUPPORTED)
    prefix = parts.path.strip("/")
    if any(seg in ("", ".", "..") for seg in prefix.split("/")) and prefix:
        raise UsageError(f"lake URL {url!r}: empty, '.' or '..' segment in the prefix",
                         hint=_SUPPORTED)
    return bucket, prefix


def _parse_file(url: str) -> str:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise UsageError(f"lake URL {url!r} names a host; only local paths are supported",
                         hint=_SUPPORTED)
    if parts.query or parts.fragment:
        raise UsageError(f"lake URL {url!r} must not have a query or fragment", hint=_SUPPORTED)
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise UsageError(f"lake URL {url!r} must hold an absolute path", hint=_SUPPORTED)
    return os.path.normpath(path)
