"""os.walk without its recursion.

Python 3.11's os.walk recurses once per directory level: a tree 1,000 directories deep (a
version a manifest may hold, a DEST a pull inspects) was a RecursionError, exit 1.  Same
contract as `os.walk(top)` (top-down, symlinks to directories listed but not entered, errors
ignored, `dirnames` pruned in place by the caller), one explicit stack instead."""
from __future__ import annotations

import os
from typing import Iterator


def walk(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
    stack = [top]
    while stack:
        here = stack.pop()
        try:
            with os.scandir(here) as it:
                entries = list(it)
        except OSError:
            continue
        dirs, files = [], []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            (dirs if is_dir else files).append(entry.name)
        yield here, dirs, files
        # as os.walk: a symlink to a directory is listed among dirs and not entered
        stack.extend(os.path.join(here, d) for d in reversed(dirs)
                     if not os.path.islink(os.path.join(here, d)))


def rmtree(top: str) -> None:
    """shutil.rmtree(top, ignore_errors=True) without its recursion (Python 3.11's recurses
    once per level too).  Symlinks are removed, never followed."""
    try:
        if os.path.islink(top) or not os.path.isdir(top):
            os.unlink(top)
            return
    except OSError:
        return
    seen = []
    for here, dirs, files in walk(top):
        seen.append(here)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(here, d))]:
            try:
                os.unlink(os.path.join(here, name))
            except OSError:
                pass
    for here in reversed(seen):
        try:
            os.rmdir(here)
        except OSError:
            pass
