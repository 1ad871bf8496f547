"""Who and what wrote a record: user@host and the tool version, for manifests and aliases."""
from __future__ import annotations

import getpass
import socket
from datetime import datetime, timezone


def user_at_host() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers) and no $USER
        user = "unknown"
    return environment_text(f"{user}@{socket.gethostname()}")


def environment_text(text: str) -> str:
    """`text` from the environment (argv, the working directory, $USER, the host name) as it
    can be stored: records are UTF-8 JSON, and Python hands bytes that are not UTF-8 over as
    lone surrogates (`caf\\xe9` is 'caf\\udce9'), which made the commit fail with an internal
    error after the whole upload.  Such bytes become `\\xe9`, as the tool prints them.  (Not
    os.fsencode: in a C locale without UTF-8 mode that is ASCII and refuses a plain 'é'; the
    surrogate escapes of any locale are the original bytes all the same.)"""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no decoding made (from a program): kept visible
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def tool_version() -> str:
    from .. import __version__

    return f"ckptlake/{__version__}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(t: datetime) -> str:
    from ..format.times import time_text

    return time_text(t)
