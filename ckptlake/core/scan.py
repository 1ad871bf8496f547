"""Walk a push source into a list of what to store, refusing what cannot round-trip safely.

The identity recorded here (size, mtime_ns, inode) is checked again after the bytes were read:
a training script still writing a checkpoint must make the push fail, not commit a torn file.
"""
from __future__ import annotations

import errno
import fnmatch
import os
import posixpath
import shlex
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AccessDenied, IntegrityError, NotFound, SourceChanged, UsageError
from ..format.manifest import check_links


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
        """Changes that move size, mtime or inode: write(2), truncate, a replacing rename.
        Stores through a shared mmap into pages already dirty move none of them (README).
        ctime is not compared: a trainer's `ln step_2000/model latest/model` changes it and
        nothing else, and must not fail the push."""
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
    warnings: list[str] = field(default_factory=list)  # e.g. an --exclude that matched nothing
    # Entries --exclude left out: an empty tree with some is a push of a SOURCE whose every
    # file matched, which the push's warning names as the likelier cause of an empty version.
    excluded: int = 0
    # scan()'s arguments for a directory, so that check_complete can walk it again
    rescan: dict[str, Any] | None = None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def check_complete(self) -> None:
        """SourceChanged if the directory now holds entries it did not hold when scanned.

        check_unchanged proves each scanned file is the one whose bytes were stored; only a
        walk sees a file added since.  A checkpoint written file by file (a trainer pausing
        between files longer than `watch --settle`) would otherwise commit without the file
        that landed during the upload, and no later push would add it: that step is in the
        lake."""
        if self.rescan is None or self.kind != "dir":
            return
        try:
            now = scan(self.root, **self.rescan)
        except TooDeep:  # the tree is as deep as it was: the same answer, not a change
            raise
        except (UsageError, AccessDenied) as exc:  # what appeared cannot even be pushed
            raise SourceChanged(f"{self.root} changed while it was being pushed ({exc.message})"
                                "; nothing was committed",
                                hint="push again once the writer is done") from None
        before = ({f.path for f in self.files}, set(self.symlinks), set(self.empty_dirs))
        after = ({f.path for f in now.files}, set(now.symlinks), set(now.empty_dirs))
        if before == after:
            return
        added = sorted((after[0] - before[0]) | {p for p, _ in after[1] - before[1]}
                       | (after[2] - before[2]))
        what = (f"{os.path.join(self.root, added[0])} appeared" if added else
                f"{self.root} lost an entry")
        raise SourceChanged(f"{what} while the directory was being pushed"
                            + (f" (and {len(added) - 1} more)" if len(added) > 1 else "")
                            + "; nothing was committed",
                            hint="push again once the writer is done")


@dataclass(frozen=True)
class _Pattern:
    given: str  # as the user wrote it, for the warning
    glob: str
    anchored: bool  # "/x" or "./x": the whole relative path only, not any name
    dir_only: bool  # "x/": directories (and links to them) only, with everything below


def _patterns(exclude: tuple[str, ...] | list[str]) -> list[_Pattern]:
    """--exclude globs as written in shells and other tools' ignore files: `sub/`, `./sub`
    and `/sub` used to match nothing at all, silently."""
    out = []
    for given in exclude:
        glob, anchored = given, False
        while glob.startswith("./") or glob.startswith("/"):
            glob, anchored = glob[1:] if glob[0] == "/" else glob[2:], True
        dir_only = glob.endswith("/")
        glob = glob.rstrip("/")
        if not glob or glob == ".":
            raise UsageError(f"--exclude {given!r} names the whole push source",
                             hint="exclude what is inside it, e.g. --exclude 'logs/'")
        out.append(_Pattern(given, glob, anchored, dir_only))
    return out


@dataclass
class _Excludes:
    patterns: list[_Pattern]
    matched: set[str] = field(default_factory=set)  # `given` of those that matched something


def _excluded(path: str, excludes: _Excludes) -> bool:
    """`path` is relative, a directory's with a trailing "/".  Every pattern is tried (not
    the first match only), so that `matched` tells which ones matched nothing."""
    is_dir, rel = path.endswith("/"), path.rstrip("/")
    name = rel.rsplit("/", 1)[-1]
    hit = False
    for p in excludes.patterns:
        if (not p.dir_only or is_dir) and (fnmatch.fnmatchcase(rel, p.glob) or (
                not p.anchored and fnmatch.fnmatchcase(name, p.glob))):
            excludes.matched.add(p.given)
            hit = True
    return hit


def lake_inside(source: str | Path, lake_dir: str, exclude: tuple[str, ...] = ()) -> str | None:
    """Where (relative to `source`, "." for itself) the local lake `lake_dir` lies inside a
    push source that would include it, else None.  Pushing it would store the lake's own
    objects in every version, each push making the next one bigger."""
    root, lake = os.path.realpath(os.fspath(source)), os.path.realpath(lake_dir)
    if lake != root and not lake.startswith(root.rstrip(os.sep) + os.sep):
        return None
    rel = os.path.relpath(lake, root).replace(os.sep, "/")
    if rel == ".":
        return rel
    parts, excludes = rel.split("/"), _Excludes(_patterns(exclude))
    for i in range(1, len(parts) + 1):
        if _excluded("/".join(parts[:i]) + "/", excludes):
            return None
    return rel


def exclude_pattern(rel: str) -> str:
    """The --exclude that leaves out exactly the directory `rel` (relative to the source), to
    suggest in a message: anchored, since a bare `sub/` also drops every other directory named
    `sub`, and with fnmatch's special characters escaped, since `lake[1]/` would match
    `lake1/` and not `lake[1]/`."""
    escaped = "".join(f"[{c}]" if c in "*?[" else c for c in rel.strip("/"))
    return f"/{escaped}/"


def _is_dir(entry: os.DirEntry) -> bool:
    """A directory, or a symlink to one, for `--exclude 'name/'`: whether the link would be
    kept or followed, the user who wrote that means it.  A loop or a dangling link is not."""
    try:
        return entry.is_dir()
    except OSError:
        return False


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
    if st.st_size == 0 and _holds_bytes(abspath):
        try:
            now = os.stat(abspath)
        except OSError:
            now = None
        if now is None or (now.st_size, now.st_mtime_ns) != (0, st.st_mtime_ns):
            # a writer filling a file created empty: a change, which a push again mends
            raise SourceChanged(f"{abspath} changed while it was being scanned",
                                hint="push again once the writer is done")
        raise UsageError(f"{abspath} says it is empty yet reading it returns bytes (a /proc or "
                         "/sys file): a lake would store it empty",
                         hint="copy it into a regular file first, or --exclude it")
    return SourceFile(path=rel, abspath=abspath, size=st.st_size,
                      executable=bool(st.st_mode & stat.S_IXUSR), mtime_ns=st.st_mtime_ns,
                      inode=st.st_ino)


def _holds_bytes(abspath: str) -> bool:
    """Does a file whose size is 0 give bytes when read?  Kernel pseudo-files (`/proc/cpuinfo`)
    do: a push stores a file's size's worth of bytes, so it would commit one empty and say
    nothing.  One small read per empty file, which checkpoints hardly hold."""
    try:
        fd = os.open(abspath, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False  # the upload's own open says what is wrong
    try:
        return bool(os.read(fd, 1))
    except OSError:
        return False
    finally:
        os.close(fd)


def scan(source: str | Path, *, exclude: tuple[str, ...] = (),
         follow_symlinks: bool = False, avoid: str | None = None) -> SourceTree:
    """Describe `source` (a file or a directory) for a push.

    `avoid`: a local lake's directory, which the push must not read.  Checked on every
    directory walked, by its real path: reached through a symlink that --follow-symlinks
    follows, the lake is nowhere below SOURCE on paper (the push's own check of where the
    lake lies cannot see it), yet every version would store it, each push bigger than the last.
    A SOURCE that is itself inside that directory is not this check's business."""
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
    tree = SourceTree(root=root, kind="dir",
                      rescan={"exclude": exclude, "follow_symlinks": follow_symlinks,
                              "avoid": avoid})
    real_root = os.path.realpath(root)
    excludes = _Excludes(_patterns(exclude))
    if avoid is not None:
        avoid = os.path.realpath(avoid)
        if _below(real_root, avoid):
            avoid = None
    try:
        _walk(tree, root, "", real_root, excludes, follow_symlinks, seen=set(),
              real=real_root, avoid=avoid)
    except (FileNotFoundError, NotADirectoryError) as e:  # removed or replaced while we looked
        raise SourceChanged(f"{e.filename or source} changed while it was being scanned",
                            hint="push again once the writer is done") from None
    except RecursionError:  # one call per level: ~900 directories deep, an internal error
        raise TooDeep(f"{source} holds directories nested too deeply to push",
                      hint="--exclude what lies that deep, or push a directory below it"
                      ) from None
    except OSError as e:
        if e.errno not in (errno.ENAMETOOLONG, errno.ELOOP):
            raise
        # a tree deeper than PATH_MAX, or than the kernel follows links: the path itself can
        # be thousands of characters, so only its ends are shown
        raise TooDeep(f"cannot read {_short(e.filename or source)}: {e.strerror}",
                      hint="--exclude what lies that deep, or push a directory below it")\
            from None
    tree.files.sort(key=lambda f: f.path)
    tree.symlinks.sort()
    tree.empty_dirs.sort()
    if avoid is not None and _below(avoid, real_root):
        # An --exclude of the local lake inside SOURCE (which a push asks for) is no typo when
        # the lake's directory does not exist yet, before the first push: it matches the lake
        # and the directories holding it all the same.
        parts = os.path.relpath(avoid, real_root).replace(os.sep, "/").split("/")
        for i in range(1, len(parts) + 1):
            _excluded("/".join(parts[:i]) + "/", excludes)
    # Without the source's name: a watch passes one --exclude to every checkpoint and says
    # each warning once.
    tree.warnings += [f"--exclude {p.given!r} matched nothing"
                      for p in excludes.patterns if p.given not in excludes.matched]
    try:  # the check a puller makes: a version it would refuse is never committed
        check_links(dict(tree.symlinks), where=os.fspath(source))
    except IntegrityError as e:
        raise UsageError(f"{e.message}; a pull would refuse it",
                         hint="exclude it with --exclude") from None
    return tree


def remove_pushed(source: str | Path, exclude: tuple[str, ...] = ()) -> int:
    """Delete what a push of the directory `source` with these excludes took (a pushed
    checkpoint that `watch --keep-local` prunes); keep what they left out, and the directories
    holding it.  Returns how many entries were kept.

    Why not a plain rmtree: --exclude is how the README tells a user to keep notes, FIFOs and
    unreadable files out of a push, and those are in no version: deleting them with the
    checkpoint lost them.  Symlinks are removed as links, never followed."""
    root = os.path.abspath(os.fspath(source))
    if not exclude:
        shutil.rmtree(root)
        return 0
    return _remove_below(root, "", _Excludes(_patterns(exclude)))


def _remove_below(absdir: str, reldir: str, excludes: _Excludes) -> int:
    kept = 0
    for entry in sorted(os.scandir(absdir), key=lambda e: e.name):
        rel = f"{reldir}{entry.name}"
        if _excluded(rel + ("/" if _is_dir(entry) else ""), excludes) or _pull_staging(entry):
            kept += 1
        elif entry.is_dir(follow_symlinks=False):
            kept += _remove_below(entry.path, rel + "/", excludes)
        else:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass
    if not kept:
        os.rmdir(absdir)
    return kept


def _short(path: str | bytes | int, keep: int = 60) -> str:
    text = os.fsdecode(path) if not isinstance(path, int) else str(path)
    return text if len(text) <= 2 * keep + 5 else f"{text[:keep]}...{text[-keep:]}"


def _below(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


# One frame per level: a fixed bound, well inside Python's recursion limit (1,000 frames)
# whatever the caller's own depth (a Lightning or HF callback runs ~200 frames deep), so that
# the walk again before the commit (check_complete, deeper in the stack) meets the same
# answer: a tree near the limit passed the first walk, and the second's RecursionError
# failed the push as "changed while it was being pushed" (exit 6).
MAX_DEPTH = 500


class TooDeep(UsageError):
    """A tree deeper than a push walks: the same answer on every walk of it."""


def _walk(tree: SourceTree, absdir: str, reldir: str, real_root: str,
          exclude: _Excludes, follow: bool, seen: set[tuple[int, int]], *, real: str,
          avoid: str | None) -> None:
    """`real`: absdir's real path (a directory's is its parent's plus its name, unless it
    was reached through a followed symlink)."""
    if reldir.count("/") > MAX_DEPTH:
        raise TooDeep(f"{tree.root} holds directories nested too deeply to push (more than "
                      f"{MAX_DEPTH} levels)",
                      hint="--exclude what lies that deep, or push a directory below it")
    if avoid is not None and reldir and _below(real, avoid):
        where = reldir.rstrip("/")
        raise UsageError(f"the push source's {where}/ leads into the lake {avoid}, so every "
                         "version would store it",
                         hint=f"--exclude {shlex.quote(exclude_pattern(where))}, or keep the "
                              "lake out of SOURCE")
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
        if _excluded(rel + ("/" if _is_dir(entry) else ""), exclude):
            tree.excluded += 1
            continue
        if _pull_staging(entry):
            continue
        _check_name(rel, entry.path)
        kept += 1
        below = os.path.join(real, entry.name)
        if entry.is_symlink():
            if _keep_symlink(tree, entry, rel, real_root, follow):
                continue
            st = os.stat(entry.path)  # follow it: store what it points at
            below = os.path.realpath(entry.path)
        else:
            st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            _walk(tree, entry.path, rel + "/", real_root, exclude, follow, seen, real=below,
                  avoid=avoid)
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
            raise UsageError(f"symlink {rel} -> {target} is part of a symlink loop, or of a "
                             "chain of more links than the kernel follows (40)",
                             hint="exclude it with --exclude") from None
    resolved = os.path.realpath(entry.path)
    if resolved == real_root or resolved.startswith(real_root.rstrip(os.sep) + os.sep):
        # Store the target relative to where the link is in the tree, so it survives a move
        # and a puller can check lexically that it stays inside the tree.  Not relative to
        # the link's real directory: below a directory reached through --follow-symlinks
        # that is somewhere else entirely.
        in_tree = os.path.relpath(resolved, real_root).replace(os.sep, "/")
        stored = posixpath.relpath("/" + in_tree, "/" + posixpath.dirname(rel))
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
