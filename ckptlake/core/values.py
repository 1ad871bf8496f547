"""Checks of the user-given values a version records (metrics, metadata).

Shared by the library's push and the checkpointer, which must refuse bad values on the
caller's thread, before anything is uploaded.
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Any

from ..errors import UsageError


def check_metrics(metrics: dict[str, float] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    if metrics is not None and not hasattr(metrics, "items"):
        raise UsageError(f"metrics must be a mapping of name to number, got {metrics!r}")
    for k, v in (metrics or {}).items():
        if not isinstance(k, str) or not k:
            raise UsageError("metric names must be non-empty strings")
        # numbers.Real: numpy's float32 too (a logger's value), which is no float subclass
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise UsageError(f"metric {k!r} must be a finite number, got {v!r}")
        out[k] = float(v)
    return out


def check_names(value: Any, what: str) -> tuple[str, ...]:
    """aliases=, exclude=: a sequence of strings, and one string is one name.  Iterated as a
    sequence, "best" was the aliases b, e, s, t and exclude="*.txt" excluded everything ("*"):
    an empty version, committed."""
    if value is None:
        return ()
    if isinstance(value, (str, os.PathLike)):
        value = (value,)
    out = []
    for v in value:
        v = os.fspath(v) if isinstance(v, os.PathLike) else v
        if not isinstance(v, str):
            raise UsageError(f"{what}: expected strings, got {v!r}")
        out.append(v)
    return tuple(out)


def check_inputs(inputs: Any) -> tuple[dict[str, str], ...]:
    """inputs=: "URI[#DIGEST]" strings or {"uri", "digest"?} dicts, checked by the rule readers
    apply (format/manifest.py): a dict stored unchecked ({"url": ...}) made every later read of
    the artifact's versions fail.  One string (or dict) is one input."""
    from .lineage import parse_input

    if inputs is None:
        return ()
    if isinstance(inputs, (str, dict)):
        inputs = (inputs,)
    out = []
    for i in inputs:
        if isinstance(i, dict):
            uri, digest = i.get("uri"), i.get("digest", "")
            if (set(i) - {"uri", "digest"} or not isinstance(uri, str) or not uri.strip()
                    or not isinstance(digest, str)
                    or any(c.isspace() or ord(c) < 32 for c in uri + digest)):
                raise UsageError(f"invalid input {i!r}",
                                 hint='a dict has "uri" (a string without spaces) and '
                                      'optionally "digest"')
            out.append({"uri": uri, **({"digest": digest} if digest else {})})
        elif isinstance(i, (str, os.PathLike)):
            out.append(parse_input(os.fspath(i)))
        else:
            raise UsageError(f"invalid input {i!r}",
                             hint="use a URI[#DIGEST] string or a {'uri': ..., 'digest': ...} "
                                  "dict")
    return tuple(out)


def check_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not k:
            raise UsageError("metadata keys must be non-empty strings")
        out[k] = str(v)
    return out


def check_destination(destination: Any) -> str:
    """pull's DEST: "" would merge the version into the current directory (a Path made of it
    is "."), which nobody means; say "." for that.  A trailing "/" is kept: it says "into
    this directory" (core/pull.final_root)."""
    if not isinstance(destination, (str, os.PathLike)):
        raise UsageError(f"destination must be a path, got {destination!r}")
    out = os.fspath(destination)
    if not isinstance(out, str) or not out:
        raise UsageError("destination is empty", hint='name a directory; "." is the current one')
    return out
