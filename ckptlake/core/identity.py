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
    return f"{user}@{socket.gethostname()}"


def tool_version() -> str:
    from .. import __version__

    return f"ckptlake/{__version__}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(t: datetime) -> str:
    from ..format.times import time_text

    return time_text(t)
