"""The two text rules every printed line follows, apart from output.py so that the progress
displays (progress.py, richbar.py), which output.py creates, need not import it back."""
from __future__ import annotations

PROG = "ckptlake"


def one_line(text: str) -> str:
    """Errors are one line so `2>&1 | tail -1` and log scrapers always get the whole message."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def shown_name(name: str) -> str:
    """A file name as a table cell: a name is whatever the pushing file system allowed, and a
    newline in it would break the row, an escape sequence would drive the terminal, a
    bidirectional override (U+202E) would show the rest of the row reversed.  Every character
    Python does not call printable (control, format, separator, unassigned, surrogate) becomes
    a C-style escape (`\\n`, `\\x1b`, `\\u202e`), as `ls -b` shows them, except a plain
    space; and a backslash `\\\\`, as `ls -b` does, so that a name holding a backslash and an
    `n` is not shown as one holding a newline.  --json keeps the name exact."""
    if name.isprintable() and "\\" not in name:
        return name
    return "".join("\\\\" if c == "\\" else c if c == " " or c.isprintable()
                   else _ESCAPES.get(c) or _escape(c) for c in name)


def _escape(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"
