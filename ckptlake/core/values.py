"""Checks of the user-given values a version records (metrics, metadata), and of the
library's plain arguments (check_arg).

Shared by the library's push and the checkpointer, which must refuse bad values on the
caller's thread, before anything is uploaded.
"""
from __future__ import annotations

import json

import math
import numbers
import os
from collections.abc import Iterable
from typing import Any

from ..errors import UsageError


def check_metrics(metrics: dict[str, float] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    if metrics is not None and not hasattr(metrics, "items"):
        raise UsageError(f"metrics must be a mapping of name to number, got {metrics!r}")
    for k, v in (metrics or {}).items():
        if not isinstance(k, str) or not k:
            raise UsageError("metric names must be non-empty strings")
        check_text(k, "metric name")
        # numbers.Real: numpy's float32 too (a logger's value), which is no float subclass
        if not _finite_real(v):
            from ..format.layout import _as_python

            raise UsageError(f"metric {k!r} must be a finite number, got {_short(v)}",
                             hint=_as_python(v, "float", lambda x: isinstance(x, (int, float))
                                             and _finite_real(x)))
        out[k] = float(v)
    return out


def _finite_real(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int beyond a float's range (10**400)
        return False


def _short(v: Any) -> str:
    text = repr(v) if not isinstance(v, int) or v.bit_length() < 200 else f"an integer of " \
        f"about {v.bit_length() * 3 // 10} digits"
    return text if len(text) <= 80 else text[:77] + "..."


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
    for i in out:  # (as metadata: undecodable bytes failed the commit, after the upload)
        for value in i.values():
            check_text(value, "input")
    return tuple(out)


def check_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if metadata is not None and not hasattr(metadata, "items"):  # a list failed on .items
        shown = repr(metadata) if len(repr(metadata)) <= 60 else repr(metadata)[:57] + "..."
        raise UsageError(f"metadata must be a mapping of key to string, got {shown}")
    from ..redact import redact

    stored: dict[str, str] = {}  # key as stored (redacted) -> the key given
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not k:
            raise UsageError("metadata keys must be non-empty strings")
        out[check_text(k, "metadata key")] = check_text(_metadata_text(v),
                                                        f"metadata value of {k!r}")
        # Keys are stored redacted: two that differ only in a credential or a query would
        # become one, and one value would be lost without a word
        seen = stored.setdefault(redact(k), k)
        if seen != k:
            raise UsageError(f"metadata keys {redact(seen)!r} and {redact(k)!r} are the same key "
                             "once their credentials and query strings are removed, as keys "
                             "are stored", hint="name them apart without secrets")
    return out


def _metadata_text(value: Any) -> str:
    """A metadata value as stored: text as given, a list or mapping as JSON (what
    `--meta-file` stores for them: `{'n': 1}`, Python's repr, was no format anything reads),
    anything else as str() writes it."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple)):
        import json

        try:
            return json.dumps(value, default=str, separators=(", ", ": "))  # as --meta-file
        except (TypeError, ValueError):  # non-string keys of mixed types, a cycle
            return str(value)
    return str(value)


def check_text(text: str, what: str) -> str:
    """`text` if it can be stored (manifests are UTF-8 JSON): a lone surrogate -- a command
    line's undecodable byte ($'\\xff' arrives as '\\udcff') -- failed the push with a bare
    UnicodeEncodeError after its upload."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(f"{what} is not valid Unicode text: it holds {text[exc.start]!r} at "
                         f"character {exc.start}",
                         hint="pass text, not raw bytes (decode it, or use its hex)") from None
    return text


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


_KINDS = {"bool": "True or False", "int": "an integer", "number": "a number",
          "seconds": "a non-negative number of seconds", "str": "a string",
          "path": "a path (str or os.PathLike)", "callable": "a callable",
          "names": "a string or a list of strings"}


def check_arg(name: str, value: Any, kind: str, *, optional: bool = False,
              minimum: float | None = None, positive: bool = False,
              empty: bool = False) -> Any:
    """The one check of the library's plain arguments (Lake, Checkpointer): UsageError (exit 2)
    naming the parameter and the type it takes, else the value to use (an int for "int", a
    float for "number" and "seconds", a tuple for "names").

    Why: a wrong type otherwise fails far from its cause with a bare TypeError (`limit="2"`
    compared with 0, `price="1"` multiplied), or, for a flag, passes as True: `force="no"`
    replaced the destination's files.  Bools are refused where numbers are meant (True is no
    count), and numbers where bools are (1 may be a typo for another argument).  "seconds"
    may be infinite (wait for ever); "number" may not (a price, a rate).  A "path" may not be
    "" (made a Path, it is ".": a push of the current directory) unless `empty` (a path inside
    a version, where "" names a one-file version's file)."""
    if value is None and kind == "names":
        return ()  # as check_names always took it: no names
    if value is None and optional:
        return None
    given, what = value, _KINDS[kind]
    endless = kind == "seconds"
    if endless:
        kind, minimum = "number", 0
    elif minimum == 0 or positive:
        what = f"a {'positive' if positive else 'non-negative'} {what.split()[-1]}"
    elif minimum is not None:
        what = f"{what} >= {minimum:g}"
    if kind == "bool":  # numpy's too (np.True_ from a comparison): no bool subclass
        ok = isinstance(value, bool) or (getattr(getattr(value, "dtype", None), "kind", "")
                                         == "b" and getattr(value, "ndim", None) == 0)
        value = bool(value) if ok else value
    elif kind in ("int", "number"):
        # an int is finite however large (math.isfinite(10**400) overflows)
        ok = isinstance(value, numbers.Integral if kind == "int" else numbers.Real) \
            and not isinstance(value, bool) and (isinstance(value, numbers.Integral)
                                                 or math.isfinite(value)
                                                 or endless and value == math.inf)
        if ok:
            try:
                value = int(value) if kind == "int" else float(value)
            except OverflowError:  # 10**400 as a price: no float holds it
                ok = False
            ok = ok and not ((minimum is not None and value < minimum)
                             or (positive and value <= 0))
    elif kind == "str":
        ok = isinstance(value, str)
    elif kind == "path":
        ok = isinstance(value, (str, os.PathLike)) and isinstance(os.fspath(value), str)
        if ok and not empty and os.fspath(value) == "":
            # no path: made a Path, "" is "." (a push of the current directory)
            raise UsageError(f"{name} is empty", hint='name a path; "." is the current '
                                                      "directory")
    elif kind == "callable":
        ok = callable(value)
    else:  # "names": check_names takes one string as one name, and fails on a number
        if isinstance(value, (str, os.PathLike, Iterable)):
            return check_names(value, name)
        ok = False
    if not ok:
        shown = repr(given) if len(repr(given)) <= 60 else repr(given)[:57] + "..."
        raise UsageError(f"{name} must be {what}{' or None' if optional else ''}, got {shown}")
    return value


def check_provenance(provenance: Any) -> None:
    if provenance is not None and not isinstance(provenance, (bool, dict)):
        raise UsageError(f"provenance must be True, False or a dict of fields to add, got "
                         f"{provenance!r}")
    if isinstance(provenance, dict):
        # checked before anything is uploaded: a value JSON cannot hold (NaN, bytes, an
        # object) failed the commit after the upload, or was written as a bare NaN that
        # `show --json` then failed on (exit 1)
        try:
            _string_keys(provenance)
            json.dumps(provenance, allow_nan=False, ensure_ascii=False).encode()
        except (ValueError, TypeError, RecursionError) as exc:
            raise UsageError(f"provenance= holds a value a manifest cannot store: {exc}",
                             hint="use JSON values: strings, finite numbers, booleans, None, "
                                  "lists and dicts with string keys") from None


def _string_keys(value: Any, depth: int = 0) -> None:
    """TypeError for a mapping key that is no string: JSON would turn 1 into "1", and
    `{1: "a", "1": "b"}` kept one of the two without a word."""
    if depth > 64:
        raise RecursionError("nested more than 64 levels")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"key {k!r} is not a string")
            _string_keys(v, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _string_keys(v, depth + 1)


def check_policy_arg(name: str, policy: Any) -> None:
    """A retention policy argument: a RetentionPolicy, the path of a file holding one, or None
    (the config file's)."""
    from ..policy.retention import RetentionPolicy

    if policy is None or isinstance(policy, RetentionPolicy):
        return
    if not isinstance(policy, (str, os.PathLike)) or not isinstance(os.fspath(policy), str):
        raise UsageError(f"{name} must be a RetentionPolicy, the path of a policy file, or "
                         f"None, got {policy!r}")


def check_reason(reason: str | None, name: str = "reason") -> str | None:
    """A deletion's reason as stored in its tombstone and shown by every later read: one line
    of at most 500 printable characters (whitespace runs, newlines too, become one space)."""
    if reason is None:
        return None
    reason = " ".join(check_arg(name, reason, "str").split())
    if not reason or len(reason) > 500 or not reason.isprintable():
        raise UsageError(f"{name} must be 1 to 500 printable characters (whitespace and "
                         "newlines become single spaces)",
                         hint="e.g. 'pushed with an API token in it'")
    return reason
