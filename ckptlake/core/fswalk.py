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
    once per level too), and as safe: every directory is opened relative to its parent's
    descriptor with O_NOFOLLOW, so a directory swapped for a symlink meanwhile is unlinked as
    a link, never followed (a path-based walk deleted what such a link led to).  A `top`
    that is no directory (a file, a symlink) is left alone, as shutil's refuses it."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        root = os.open(top, flags)
    except OSError:
        return
    # each frame: (descriptor of a directory, its entries not yet handled, its parent's
    # descriptor and its name there, to rmdir it once it is empty)
    stack: list[tuple[int, list[str], int | None, str]] = []

    def enter(fd: int, parent: int | None, name: str) -> None:
        try:
            names = os.listdir(fd)
        except OSError:
            names = []
        stack.append((fd, names, parent, name))

    enter(root, None, top)
    while stack:
        fd, names, parent, name = stack[-1]
        if names:
            entry = names.pop()
            try:
                child = os.open(entry, flags, dir_fd=fd)
            except OSError:  # a file, a symlink (never followed), or gone: unlink it
                try:
                    os.unlink(entry, dir_fd=fd)
                except OSError:
                    pass
                continue
            enter(child, fd, entry)
            continue
        stack.pop()
        os.close(fd)
        try:
            if parent is None:
                os.rmdir(top)
            else:
                os.rmdir(name, dir_fd=parent)
        except OSError:
            pass
