"""The two text rules every printed line follows, apart from output.py so that the progress
displays (progress.py, richbar.py), which output.py creates, need not import it back."""
from __future__ import annotations

from typing import Any

from ..redact import kept_spans, verbatim

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


# What a terminal acts on rather than shows: C0 and C1 controls but newline and tab (ESC
# starts colour, cursor, title and OSC 8 link sequences), DEL, and the bidirectional
# overrides and isolates (a row shown reversed).
_DRIVES = {c: _escape(chr(c)) for c in [*range(0x00, 0x09), *range(0x0b, 0x20),
                                        *range(0x7f, 0xa0), *range(0x202a, 0x202f),
                                        *range(0x2066, 0x206a)]}


def no_controls(text: str) -> str:
    """`text` with what would drive the terminal written as escapes (`\x1b`), the rest as it
    is (a backslash too: unlike shown_name, this runs on lines whose names are escaped
    already).  For every line built from values a lake holds: a metric name, a tombstone's
    reason, an alias or artifact name read from a key, a store's error message, written by
    whoever can write the bucket, reached the terminal raw."""
    return text.translate(_DRIVES) if not text.isprintable() else text


def one_cell(text: str) -> str:
    """`no_controls` for a table cell or a tree label, which is one line: a newline or tab
    in a value the lake holds (a tombstone's rule, a metric name) forged rows there."""
    return no_controls(text).translate(_CELL) if not text.isprintable() else text


_CELL = {ord(c): e for c, e in _ESCAPES.items()}


def shown_path(path: str) -> str:
    """A path inside a version as printed: escaped as `shown_name`, and marked for the output's
    redaction to leave alone (redact.verbatim: a file named `key=2026` is no secret)."""
    return verbatim(shown_name(path))


def shown_line(line: str) -> str:
    """`shown_name` on the parts of `line` not already shown by `shown_path`."""
    return "".join(verbatim(piece) if kept else shown_name(piece)
                   for piece, kept in kept_spans(line))


def exact_paths(entries: list[dict[str, Any]], keys: tuple[str, ...] = ("path",)
                ) -> list[dict[str, Any]]:
    """A --json list of files with their paths marked for redaction to leave alone: a script
    pulls by the paths it reads.  Not a link's target: that is free text (it may be a URL
    with a password in it)."""
    return [{k: verbatim(v) if k in keys and isinstance(v, str) else v for k, v in e.items()}
            for e in entries]
