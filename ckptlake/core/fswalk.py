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
        dirs, files, links = [], [], set()
        for entry in entries:
            try:
                is_dir = entry.is_dir()
                if is_dir and entry.is_symlink():
                    links.add(entry.name)
            except OSError:
                is_dir = False
            (dirs if is_dir else files).append(entry.name)
        yield here, dirs, files
        # as os.walk: a symlink to a directory is listed among dirs and not entered
        stack.extend(os.path.join(here, d) for d in reversed(dirs) if d not in links)


def rmtree(top: str) -> None:
    """shutil.rmtree(top, ignore_errors=True) without its recursion (Python 3.11's recurses
    once per level too), and as safe: each directory is opened relative to its parent's
    descriptor with O_NOFOLLOW, so a directory swapped for a symlink meanwhile is unlinked as
    a link, never followed (a path-based walk deleted what such a link led to).  One or two
    descriptors at a time, whatever the depth: going back up is `..` from the child, checked to
    be the directory it came from (one descriptor per level ran out at `ulimit -n`, and the
    tree was silently left).  A `top` that is no directory (a file, a symlink) is left alone,
    as shutil's refuses it."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(top, flags)
    except OSError:
        return

    def identity(d: int) -> tuple[int, int]:
        st = os.fstat(d)
        return st.st_dev, st.st_ino

    def names(d: int) -> list[str]:
        try:
            return os.listdir(d)
        except OSError:
            return []

    # frames: [entries not yet handled, (st_dev, st_ino) of the directory, its name in its
    # parent]; only the deepest frame's directory is open (fd)
    stack: list[tuple[list[str], tuple[int, int], str]] = [(names(fd), identity(fd), top)]
    try:
        while stack:
            todo, _, name = stack[-1]
            if todo:
                entry = todo.pop()
                try:
                    child = os.open(entry, flags, dir_fd=fd)
                except OSError:  # a file, a symlink (never followed), or gone: unlink it
                    try:
                        os.unlink(entry, dir_fd=fd)
                    except OSError:
                        pass
                    continue
                os.close(fd)
                fd = child
                stack.append((names(fd), identity(fd), entry))
                continue
            stack.pop()
            if not stack:
                break
            try:
                parent = os.open("..", flags, dir_fd=fd)
            except OSError:  # no search permission on the child: back by path, checked
                try:
                    parent = os.open(os.path.join(top, *(f[2] for f in stack[1:])), flags)
                except OSError:
                    return
            os.close(fd)
            fd = parent
            if identity(fd) != stack[-1][1]:  # moved meanwhile: stop rather than guess
                return
            try:
                os.rmdir(name, dir_fd=fd)
            except OSError:
                pass
    finally:
        os.close(fd)
    try:
        os.rmdir(top)
    except OSError:
        pass
