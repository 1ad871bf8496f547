"""Walk a push source into a list of what to store, refusing what cannot round-trip safely.

The identity recorded here (size, mtime_ns, inode) is checked again after the bytes were read:
a training script still writing a checkpoint must make the push fail, not commit a torn file.
"""
from __future__ import annotations

import errno
import fnmatch
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AccessDenied, NotFound, SourceChanged, UsageError


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative, '/'-separated
    abspath: str
    size: int
    executable: bool
    mtime_ns: int
    inode: int

    def open(self) -> int:
        """A read-only descriptor of the file that was scanned, or SourceChanged.

        O_NONBLOCK because the path may have become a FIFO since the scan (opening one for
        reading waits for a writer, forever); fstat then proves it is still the regular file
        that was scanned, not a directory, device or another file put in its place.
        """
        try:
            fd = os.open(self.abspath, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SourceChanged(f"{self.abspath} disappeared while it was being pushed; "
                                "nothing was committed",
                                hint="push again once the writer is done") from None
        except PermissionError:
            raise AccessDenied(f"cannot read {self.abspath}: permission denied; nothing was "
                               "committed", hint="fix its permissions or --exclude it") from None
        except OSError as e:  # ENXIO (a socket), ELOOP (now a symlink), ...
            raise SourceChanged(f"{self.abspath} can no longer be read as the file that was "
                                f"scanned ({e.strerror}); nothing was committed",
                                hint="push again once the writer is done") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_ino != self.inode:
            os.close(fd)
            raise SourceChanged(f"{self.abspath} was replaced while it was being pushed"
                                + ("" if stat.S_ISREG(st.st_mode) else
                                   " by something that is not a regular file")
                                + "; nothing was committed",
                                hint="push again once the writer is done")
        return fd

    def check_unchanged(self) -> None:
        try:
            st = os.stat(self.abspath)
        except FileNotFoundError:
            raise SourceChanged(f"{self.abspath} disappeared while it was being pushed",
                                hint="push again once the writer is done") from None
        if (st.st_size, st.st_mtime_ns, st.st_ino) != (self.size, self.mtime_ns, self.inode):
            raise SourceChanged(f"{self.abspath} changed while it was being pushed; "
                                "nothing was committed",
                                hint="push again once the writer is done")


@dataclass
class SourceTree:
    root: str
    kind: str  # "dir" | "file"
    files: list[SourceFile] = field(default_factory=list)
    symlinks: list[tuple[str, str]] = field(default_factory=list)  # (path, relative target)
    empty_dirs: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _excluded(rel: str, patterns: tuple[str, ...]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def _pull_staging(entry: os.DirEntry) -> bool:
    """The staging directory an interrupted pull left in (or beside) a directory
    (core/pull.py, staging_dir: preallocated, partly written files): never part of a push of
    that directory.  Known by its name and its lock file."""
    return (".ckptlake-pull-" in entry.name and entry.is_dir(follow_symlinks=False)
            and os.path.isfile(os.path.join(entry.path, ".lock")))


def _check_name(rel: str, abspath: str) -> None:
    """Manifests store paths as UTF-8 (JSON): a name that is not (bytes the file system
    allows, decoded by Python with surrogate escapes) cannot be stored, so it is refused
    before anything is uploaded, not met as an encoding error mid-push."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(abspath).decode("utf-8", "backslashreplace")
        raise UsageError(f"{shown}: the name is not valid UTF-8, which a lake cannot store",
                         hint="rename it, or --exclude it") from None


def _source_file(rel: str, abspath: str, st: os.stat_result) -> SourceFile:
    # Unreadable files fail the push here, before anything is uploaded (the read would fail
    # only after the other files' chunks were sent).
    if not os.access(abspath, os.R_OK):
        raise AccessDenied(f"cannot read {abspath}: permission denied",
                           hint="fix its permissions or --exclude it")
    return SourceFile(path=rel, abspath=abspath, size=st.st_size,
                      executable=bool(st.st_mode & stat.S_IXUSR), mtime_ns=st.st_mtime_ns,
                      inode=st.st_ino)


def scan(source: str | Path, *, exclude: tuple[str, ...] = (),
         follow_symlinks: bool = False) -> SourceTree:
    """Describe `source` (a file or a directory) for a push."""
    root = os.path.abspath(os.fspath(source))
    try:
        st = os.stat(root)
    except FileNotFoundError:
        raise NotFound(f"push source {source} does not exist") from None
    except PermissionError:
        raise AccessDenied(f"cannot read push source {source}: permission denied") from None
    if stat.S_ISREG(st.st_mode):
        _check_name(os.path.basename(root), root)
        return SourceTree(root=root, kind="file",
                          files=[_source_file(os.path.basename(root), root, st)])
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"push source {source} is neither a file nor a directory")
    tree = SourceTree(root=root, kind="dir")
    real_root = os.path.realpath(root)
    try:
        _walk(tree, root, "", real_root, exclude, follow_symlinks, seen=set())
    except (FileNotFoundError, NotADirectoryError) as e:  # removed or replaced while we looked
        raise SourceChanged(f"{e.filename or source} changed while it was being scanned",
                            hint="push again once the writer is done") from None
    tree.files.sort(key=lambda f: f.path)
    tree.symlinks.sort()
    tree.empty_dirs.sort()
    return tree


def _walk(tree: SourceTree, absdir: str, reldir: str, real_root: str,
          exclude: tuple[str, ...], follow: bool, seen: set[tuple[int, int]]) -> None:
    try:
        entries = sorted(os.scandir(absdir), key=lambda e: e.name)
    except PermissionError:
        raise AccessDenied(f"cannot list {absdir}: permission denied",
                           hint="fix its permissions or --exclude it") from None
    dst = os.stat(absdir)
    if (dst.st_dev, dst.st_ino) in seen:  # a followed symlink loop
        raise UsageError(f"symlink loop at {absdir}")
    seen = seen | {(dst.st_dev, dst.st_ino)}
    kept = 0
    for entry in entries:
        rel = f"{reldir}{entry.name}"
        if _excluded(rel, exclude) or _pull_staging(entry):
            continue
        _check_name(rel, entry.path)
        kept += 1
        if entry.is_symlink():
            if _keep_symlink(tree, entry, rel, real_root, follow):
                continue
            st = os.stat(entry.path)  # follow it: store what it points at
        else:
            st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            _walk(tree, entry.path, rel + "/", real_root, exclude, follow, seen)
        elif stat.S_ISREG(st.st_mode):
            tree.files.append(_source_file(rel, entry.path, st))
        else:
            raise UsageError(f"{entry.path} is not a regular file, directory or symlink",
                             hint="exclude it with --exclude")
    if kept == 0 and reldir:
        tree.empty_dirs.append(reldir.rstrip("/"))


def _keep_symlink(tree: SourceTree, entry: os.DirEntry, rel: str, real_root: str,
                  follow: bool) -> bool:
    """Record a symlink that stays inside the tree; True if recorded (not to be followed)."""
    target = os.readlink(entry.path)
    try:
        os.stat(entry.path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a puller would refuse it (format/manifest.py)
            raise UsageError(f"symlink {rel} -> {target} is part of a symlink loop",
                             hint="exclude it with --exclude") from None
    resolved = os.path.realpath(entry.path)
    if resolved == real_root or resolved.startswith(real_root + os.sep):
        # Store the target relative to the link's real directory, so it survives a move
        # and a puller can check lexically that it stays inside the tree.
        link_dir = os.path.realpath(os.path.dirname(entry.path))
        stored = os.path.relpath(resolved, link_dir).replace(os.sep, "/")
        _check_name(stored, resolved)
        tree.symlinks.append((rel, stored))
        return True
    if not follow:
        raise UsageError(f"symlink {rel} -> {target} points outside the pushed tree",
                         hint="use --follow-symlinks to store what it points at, "
                              "or --exclude it")
    if not os.path.exists(entry.path):
        raise UsageError(f"symlink {rel} -> {target} is broken")
    return False
