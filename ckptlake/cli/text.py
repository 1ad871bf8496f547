"""The two text rules every printed line follows, apart from output.py so that the progress
displays (progress.py, richbar.py), which output.py creates, need not import it back."""
from __future__ import annotations

PROG = "ckptlake"


def one_line(text: str) -> str:
    """Errors are one line so `2>&1 | tail -1` and log scrapers always get the whole message."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())
