"""Pull: resolve -> check the destination -> fetch and verify chunks into staging -> place.

Safety rules (docs/format.md, "Reading"):
- Every byte is verified against its chunk digest before it is written anywhere a user looks.
- Data is written into a staging directory on the destination's file system (beside a new
  destination, inside an existing one: see staging_dir); final names appear only after every
  file of the version is complete and verified: a new destination directory appears with one
  rename, an existing one receives one rename per file.  A failed or interrupted pull never
  leaves a half-written file under a final name.
- Files already at the destination that are identical (bytes and executable bit) are kept (not
  downloaded again); files that differ are a Conflict unless `force`; files the version does
  not mention are left alone.
- Manifest paths were validated when decoded (format/manifest.py); here we also refuse to write
  through symlinks that already exist in the destination and lead outside it.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import mmap
import os
import shlex
import shutil
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from ..errors import (AccessDenied, CkptlakeError, Conflict, IntegrityError, Interrupted,
                      MissingChunk, NotFound, UnsafeManifest, UsageError)
from ..format import layout
from ..format.header import digest, new_hasher
from ..format.manifest import FileEntry, LinkResolver, Manifest
from ..results import PullResult
from ..store.base import Store
from ..transfer.parts import Parts
from ..transfer.pool import Counter, bounded_map
from ..transfer.progress import Progress
from ..transfer.throttle import Throttle
from ..units import format_bytes
from .browse import object_sizes
from ..format import codecs
from .chunkio import (DECODERS, MISSING_HINT, ChunkBuffers, anonymous, fix_mmap_threshold,
                      open_object)
from .fswalk import rmtree, walk
from .reuse import LocalSources, local_sources

if TYPE_CHECKING:  # a cache is optional: its module loads only when one is configured
    from .cache import ChunkCache

_READ_BLOCK = 4 * 1024 * 1024
# How hints spell the option that overwrites: a library caller's keyword; the CLI passes
# "--force" (a hint naming a flag the caller cannot pass sends a Python user looking for it).
FORCE_KEYWORD = "force=True"


# The file digest of a target that is one of several ranges of a packed file: the file's
# digest covers its pieces together (docs/format.md, "Reading part of a version"), so each
# piece is written unchecked and the staged file is hashed whole once every piece is there
# (_check_assembled), before anything is placed.  Checking each piece against it refused
# valid data.
_ASSEMBLED = ""


def _assembled(e: FileEntry) -> bool:
    return e.digest is not None and len(e.chunks) > 1 and any(
        c.offset is not None for c in e.chunks)


@dataclass
class _Unit:
    """One chunk object to fetch, and every place its bytes go."""

    digest: str
    # (staged path, offset in file, offset in chunk, length, whole-file digest or None)
    targets: list[tuple[str, int, int, int, str | None]] = field(default_factory=list)
    zero: bool = False  # all zero bytes: nothing to fetch (the digest says what they are)
    holes: int = 0  # bytes of a zero unit left as holes in fresh staged files (no write)

    @property
    def nbytes(self) -> int:
        return sum(t[3] for t in self.targets) + self.holes


def _inside(root_real: str, path: str) -> bool:
    """True if `path`, with every symlink in its existing part resolved, stays under root."""
    real = os.path.realpath(path)
    # (rstrip: a destination of "/" itself, where root + sep was "//" and nothing inside)
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _link_leading_out(root: str, root_real: str, path: str) -> str | None:
    """The first symlink on the way from `root` to the version's `path` (its directories)
    that leads outside the destination, to name in the error: the user has to remove or
    move it.  None if none is found (the tree changed meanwhile)."""
    here = root
    for part in path.split("/")[:-1]:
        here = os.path.join(here, part)
        if os.path.islink(here) and not _inside(root_real, here):
            return here
    return None


def _matches(path: str, entry: FileEntry, algo: str) -> bool:
    """Does the regular file at `path` hold exactly the entry's bytes?"""
    if os.path.getsize(path) != entry.size:
        return False
    with open(path, "rb") as fh:
        if entry.digest is not None:
            h = new_hasher(algo)
            while block := fh.read(_READ_BLOCK):
                h.update(block)
            return h.hexdigest() == entry.digest
        for ref in entry.chunks:
            if digest(algo, fh.read(ref.size)) != ref.digest:
                return False
    return True


def _needed_dirs(m: Manifest) -> list[str]:
    """Every directory the version needs (its empty directories and each path's parents),
    relative, parents before children."""
    dirs = set(m.dirs)
    for path in [e.path for e in m.files] + list(m.dirs):
        parts = path.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return sorted(dirs, key=lambda d: (d.count("/"), d))


class _Placement:
    """The whole placement plan, checked before anything is downloaded or moved.

    Into an existing directory (merge semantics): an identical file is kept; a file or symlink
    that differs (a file in its bytes, or only in its executable bit, which `force` sets), or
    that stands where the version needs a directory (one of its directories, or the parent of
    one of its paths), is a conflict that `force` resolves by replacing it; a directory where
    the version has a file or a symlink is a conflict even with `force`, since removing it
    could lose files the version does not mention.  Every conflict is found here,
    so a refused pull leaves the destination exactly as it was.  A symlink to a directory
    inside the destination counts as that directory; one that leads outside is unsafe.  Two
    paths of the version that such a symlink makes one (`a -> b` with the version's `a/f` and
    `b/f`) are a conflict even with `force`: one would overwrite the other.  A directory
    symlink that the version's own links would be read through differently (see _check_links)
    is a conflict that `force` resolves by replacing it with the directory.
    """

    def __init__(self, m: Manifest, destination: str, force: bool,
                 force_flag: str = FORCE_KEYWORD) -> None:
        self.m = m
        self.force_flag = force_flag
        dest = self.final_root = final_root(m, destination)
        if m.kind == "file":
            self.finals = {m.files[0].path: self.final_root}
        else:
            if os.path.lexists(dest) and not os.path.isdir(dest):
                raise Conflict(f"destination {destination} exists and is not a directory")
            self.finals = {e.path: os.path.join(dest, *e.path.split("/")) for e in m.files}
        self.fresh = not os.path.lexists(self.final_root)
        parent = os.path.dirname(self.final_root)
        self.root_real = os.path.realpath(self.final_root if m.kind == "dir" else parent)
        self.download: list[FileEntry] = []
        self.reused: list[FileEntry] = []
        self.links: list[FileEntry] = []
        self.clear: list[str] = []  # files and symlinks replaced by directories (force)
        self.relink: set[str] = set()  # directory symlinks among those (see _check_links)
        self.modes: list[tuple[str, bool]] = []  # identical bytes, other executable bit (force)
        # paths found absent: placed only if still absent (see _place_new), never replaced
        self.absent: set[str] = set()
        self.changed = 0  # changes placement made to the destination (see _partly_placed)
        self._check(force)
        self.made: list[str] = []  # DEST's parents made here (see unmake)
        try:
            self.made = makedirs(parent)
        except (FileExistsError, NotADirectoryError):
            raise Conflict(f"cannot create {parent}: a file is in the way") from None

    def _check(self, force: bool) -> None:
        while True:
            try:
                return self._plan(force)
            except _Relink as r:  # planned again: what lies below it is another place now
                self.relink.add(r.directory)
                self.download, self.reused, self.links = [], [], []
                self.clear, self.modes, self.absent = [], [], set()

    def _inside(self, directory: str) -> bool:
        """_inside(root_real, directory), from the parent's answer (a realpath per directory
        costs one lstat per level each: a version 1,200 directories deep took 27 s)."""
        real = _real_dir(directory, self.final_root, self._reals)
        return real == self.root_real or real.startswith(self.root_real.rstrip(os.sep) + os.sep)

    def _plan(self, force: bool) -> None:
        self._reals: dict[str, str] = {}  # directory -> its realpath, for this plan
        differ: list[str] = []  # what `force` replaces
        blocked: list[tuple[str, str]] = []  # (directory, what the version has there)
        special: list[str] = []  # FIFOs, sockets, devices where the version has a file
        absent: set[str] = set()  # needed directories that are missing or to be cleared
        # Where each path of the version lands, relative to root_real: the destination's
        # symlinks to directories are followed by the kernel, the version's new directories
        # are not there yet.  `through`: the first such symlink on the way, for messages.
        self._lands: dict[str, str] = {"": ""}
        self._through: dict[str, str] = {}
        self._cleared: set[str] = set()  # needed directories that are files or symlinks now
        spots: dict[str, str] = {}  # landing -> the version's path that lands there
        if self.m.kind == "dir" and not self.fresh:
            for d in _needed_dirs(self.m):
                if d.rpartition("/")[0] in absent:
                    absent.add(d)  # nothing can exist below a missing directory
                    continue
                path = os.path.join(self.final_root, *d.split("/"))
                if not self._inside(os.path.dirname(path)):
                    link = _link_leading_out(self.final_root, self.root_real, d + "/")
                    raise UnsafeManifest(
                        f"{d} would be created through "
                        + (f"the symlink {link}, which leads " if link else
                           "a symlink that leads ") + f"outside {self.final_root}",
                        hint="remove or move that symlink, or pull into an empty directory")
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    absent.add(d)
                    continue
                if stat.S_ISDIR(st.st_mode) or (stat.S_ISLNK(st.st_mode) and d not in self.relink
                                                and os.path.isdir(path)):
                    continue
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    special.append(path)  # a FIFO, socket or device: never --force'd away
                    absent.add(d)
                    continue
                differ.append(f"{path} (the version has a directory there)")
                self.clear.append(path)
                self._cleared.add(d)
                absent.add(d)
            for d in _needed_dirs(self.m):  # directories may share a place, files may not
                spots.setdefault(self._land(d, absent), d)
        for e in self.m.files:
            final = self.finals[e.path]
            if not self.fresh and self.m.kind == "dir" and not self._inside(
                    os.path.dirname(final)):
                link = _link_leading_out(self.final_root, self.root_real, e.path)
                raise UnsafeManifest(
                    f"{e.path} would be written through "
                    + (f"the symlink {link}, which leads " if link else "a symlink that leads ")
                    + f"outside {self.final_root}",
                    hint="remove or move that symlink, or pull into an empty directory")
            if not self.fresh and self.m.kind == "dir":
                parent, _, name = e.path.rpartition("/")
                spot = self._lands[e.path] = _join(self._land(parent, absent), name)
                if (other := spots.setdefault(spot, e.path)) != e.path:
                    self._same_place(e.path, other, spot)
            st = None
            if not self.fresh and e.path.rpartition("/")[0] not in absent:
                try:
                    st = os.lstat(final)
                except (FileNotFoundError, NotADirectoryError):
                    pass  # NotADirectory: a single file's parent path is a file (see __init__)
            if st is None:
                self.absent.add(e.path)
            elif not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)
                      or stat.S_ISDIR(st.st_mode)):
                # a FIFO, a socket, a device node (as root, `pull ART /dev/null --force`
                # replaced /dev/null): never the user's data to overwrite
                special.append(final)
                continue
            if e.symlink is not None:
                self.links.append(e)
                if st is None or (stat.S_ISLNK(st.st_mode) and os.readlink(final) == e.symlink):
                    continue
                if stat.S_ISDIR(st.st_mode):
                    blocked.append((final, "symlink"))
                else:
                    differ.append(final)
                continue
            if st is None:
                self.download.append(e)
            elif stat.S_ISDIR(st.st_mode):
                blocked.append((final, "file"))
            elif stat.S_ISREG(st.st_mode) and _matches(final, e, self.m.hash):
                self.reused.append(e)
                # Restoring the version includes its executable bits (README): a file that
                # differs in that bit alone differs, and `force` fixes the bit, bytes kept.
                if bool(st.st_mode & stat.S_IXUSR) != e.executable:
                    differ.append(f"{final} (its executable bit differs)")
                    self.modes.append((final, e.executable))
            else:
                differ.append(final)
                self.download.append(e)
        if special:
            more = f" (and {len(special) - 1} more)" if len(special) > 1 else ""
            err = Conflict(f"{special[0]} is not a regular file (a FIFO, socket or device); the "
                           f"version has a file or directory there{more}",
                           hint=f"{self.force_flag} never replaces one: pull to another path")
            err.exact = (special[0],)  # a destination path: shown as it is (no secret)
            raise err
        if blocked:
            more = f" (and {len(blocked) - 1} more)" if len(blocked) > 1 else ""
            err = Conflict(f"{blocked[0][0]} is a directory; the version has a {blocked[0][1]} "
                           f"there{more}", hint=f"{self.force_flag} never removes a directory: "
                                                "move it away, or pull into an empty directory")
            err.exact = (blocked[0][0],)
            raise err
        if differ and not force:
            more = f" and {len(differ) - 1} more" if len(differ) > 1 else ""
            err = Conflict(f"destination holds different files than {self.m.artifact}@v"
                           f"{self.m.version}: {differ[0]}{more}",
                           hint=f"use {self.force_flag} to overwrite them, or pull into an "
                                "empty directory")
            err.exact = (differ[0],)
            raise err
        if self.links and not self.fresh:
            self._check_links(force)

    def _land(self, d: str, absent: set[str]) -> str:
        """Where the version's directory `d` lands (see _plan); memoized, parents first."""
        if d in self._lands:
            return self._lands[d]
        parent, _, name = d.rpartition("/")
        rel = _join(self._land(parent, absent), name)
        if parent in self._through:
            self._through[d] = self._through[parent]
        if d not in absent:
            path = os.path.join(self.root_real, *rel.split("/"))
            if os.path.islink(path):
                real = os.path.relpath(os.path.realpath(path), self.root_real)
                rel = "" if real == "." else real.replace(os.sep, "/")
                self._through.setdefault(d, d)
        self._lands[d] = rel
        return rel

    def _same_place(self, path: str, other: str, spot: str) -> None:
        link = self._through.get(path.rpartition("/")[0]) or self._through.get(
            other.rpartition("/")[0]) or self._through.get(other, "?")
        raise Conflict(f"the version's {other} and {path} would both be "
                       f"{os.path.join(self.root_real, *spot.split('/'))}: the symlink "
                       f"{os.path.join(self.final_root, *link.split('/'))} makes them one",
                       hint="replace that symlink by the directory it points to, or pull into "
                            "an empty directory")

    def idle(self) -> bool:
        """Is the destination already the version (nothing to download, clear, chmod, link or
        make)?  Then the pull writes nothing, so it needs no staging directory: an up-to-date
        destination on a read-only file system (a read-only mount of a model cache) pulls
        fine, as it did before staging moved inside the destination."""
        if self.fresh or self.download or self.clear or self.modes:
            return False
        for e in self.links:
            final = self.finals[e.path]
            if not (os.path.islink(final) and os.readlink(final) == e.symlink):
                return False
        return self.m.kind != "dir" or all(
            os.path.isdir(os.path.join(self.final_root, *d.split("/")))
            for d in _needed_dirs(self.m))

    def _check_links(self, force: bool) -> None:
        """The version's symlinks must stay inside the destination as it will be: through the
        version's own links (already checked when the manifest was decoded) and through links
        already on disk that the version leaves in place (a merge pull into an existing
        directory, whose `data -> /mnt/data` would make `cur -> data/x` lead outside).  Each
        link is resolved from where it lands, as the kernel will read it.

        A link placed through a symlink to a directory already in the destination reads its
        target from there: with `sub -> x/y/real`, the version's `sub/up -> ../file.txt` would
        name `x/y/file.txt`, not the version's `file.txt`.  Where it names what it names in
        the version (`ckpt -> step1`, the version's `ckpt/latest -> model`) nothing is wrong;
        otherwise that is a conflict, which `force` resolves by replacing the directory
        symlink with a directory, so that the link lands where the version has it."""
        def land(path: str) -> str:
            return self._lands.get(path, path)

        regular = {land(e.path) for e in self.m.files if e.symlink is None}
        # replaced by directories (--force): the kernel will not follow what is there now
        cleared = {land(d) for d in self._cleared}
        seen: dict[str, str | None] = {}

        def on_disk(rel: str) -> str | None:
            if rel in regular or rel in cleared:
                return None  # the version puts a regular file or a directory there
            if rel not in seen:
                path = os.path.join(self.root_real, *rel.split("/"))
                try:
                    target = os.readlink(path)
                except OSError:
                    target = None
                if target is not None and os.path.isabs(target):
                    target = self._from_root(target, path)
                seen[rel] = target
            return seen[rel]

        links = {e.path: e.symlink for e in self.links if e.symlink is not None}
        resolver = LinkResolver({land(p): t for p, t in links.items()}, where=self.final_root,
                                lookup=on_disk)
        in_version = LinkResolver(links)
        for path, target in links.items():
            directory = self._through.get(path.rpartition("/")[0])
            if directory is None:
                continue  # lands where the version has it
            try:
                named = resolver.locate("/".join(in_version.resolve(path)[0]))
                same = resolver.resolve(land(path))[0] == named
            except UnsafeManifest:
                if not force:
                    raise
                same = False
            if same:
                continue
            if force:
                raise _Relink(directory)
            raise Conflict(
                f"the version's symlink {path} would be placed through the symlink "
                f"{os.path.join(self.final_root, *directory.split('/'))}, where its target "
                f"{target[:200]!r} names another file than in the version",
                hint=f"use {self.force_flag} to replace that symlink by a directory, or pull "
                     "into an empty directory")
        resolver.check_all()

    def _from_root(self, target: str, link: str) -> str:
        """An existing link's absolute target as a path from the destination's root ("/..."),
        or UnsafeManifest when it leads outside (the version's links must not go through it).

        Never normalized as a string: the kernel resolves `s` in `root/s/../x` before the
        `..`, so with `s -> /elsewhere/deep` that is `/elsewhere/x`, not `root/x`.  The target
        is resolved one prefix at a time up to the first that reaches the destination, and
        the rest is kept as written, `..` and all, for LinkResolver to walk through the tree
        as the version leaves it (which also refuses a `..` that climbs out of it again)."""
        parts = target.split("/")
        for i in range(1, len(parts) + 1):
            real = os.path.realpath("/" + "/".join(parts[:i]))
            if real == self.root_real or real.startswith(self.root_real.rstrip(os.sep) + os.sep):
                rel = os.path.relpath(real, self.root_real).replace(os.sep, "/")
                return "/" + _join("" if rel == "." else rel, "/".join(parts[i:]))
        raise UnsafeManifest(f"a symlink of the version would lead outside {self.final_root} "
                             f"through the existing symlink {link}",
                             hint="refusing to restore it; pull into an empty directory")


class _Relink(Exception):
    """`force` replaces the destination's directory symlink at `directory` (a path of the
    version) with a directory: the placement is planned again without following it."""

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.directory = directory


def _join(base: str, name: str) -> str:
    return f"{base}/{name}" if base and name else base or name


# Every staging directory's name holds this (core/reuse.py skips such directories).
_TAG = ".ckptlake-pull-"
_ID_CHARS = 12


def staging_dir(final_root: str, lake_url: str, m: Manifest) -> str:
    """The staging directory of a pull of this version to this final path (see _Staging).

    It must be where placement can rename from: a rename cannot cross file systems (EXDEV),
    and an existing destination directory may be a mount point (a docker volume, an NVMe
    mount) whose parent is another file system, or read-only.  So staging lives in the
    directory that receives the version's top-level entries: beside a new destination (which
    then appears with one rename), inside an existing one, under a hidden name.  A re-run
    computes the same path, which is how an interrupted pull finds its work again.
    """
    text = f"{lake_url}\0{m.artifact}\0{m.version}"
    # A partial pull (core/browse.py) stages apart: a whole pull's staged files must not be
    # renamed into a destination that asked for part of the version, nor the other way round.
    if selection := getattr(m, "selection", ()):
        text += "\0" + "\0".join(selection)
    ident = hashlib.sha256(text.encode()).hexdigest()[:_ID_CHARS]
    if m.kind == "dir" and os.path.isdir(final_root):
        return os.path.join(final_root, _TAG + ident)
    parent, name = os.path.split(final_root)
    return os.path.join(parent, _beside_prefix(parent, name) + ident)


def _beside_prefix(parent: str, name: str) -> str:
    """`.NAME.ckptlake-pull-`, the name of a staging directory beside NAME without its id;
    for a NAME too long for that to fit the file system's name limit (a legal 250-character
    destination), NAME is cut and a hash of the whole of it keeps the prefix NAME's own."""
    prefix = f".{name}{_TAG}"
    limit = _name_max(parent)
    raw = os.fsencode(name)
    if len(os.fsencode(prefix)) + _ID_CHARS <= limit:
        return prefix
    mark = "~" + hashlib.sha256(raw).hexdigest()[:8]
    room = limit - _ID_CHARS - len(_TAG) - len(mark) - 1
    # cut on bytes (the limit counts bytes); a cut UTF-8 sequence round-trips as escapes
    return f".{os.fsdecode(raw[:max(room, 0)])}{mark}{_TAG}"


def _name_max(directory: str) -> int:
    try:
        limit = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255
    return limit if limit > 0 else 255


def final_root(m: Manifest, destination: str) -> str:
    """Where the version lands: the destination directory, or for a single-file version the
    file's path (inside `destination` when that is an existing directory)."""
    dest = os.path.abspath(destination)
    if m.kind == "file":
        name = m.files[0].path.rsplit("/", 1)[-1]
        # "DIR/" means into DIR, made if missing (as cp, aws s3 cp): abspath drops the "/".
        into = destination.endswith(("/", os.sep)) or os.path.isdir(dest)
        return os.path.join(dest, name) if into else dest
    return dest


def _check_outside_lake(m: Manifest, destination: str, lake_url: str) -> None:
    """A pull must not write into the local lake it reads: with --force it replaced the lake's
    own objects (a version holding a `ckptlake.json` overwrote the header), and without it,
    a version could add objects to the lake (a crafted manifest).  Refused before anything is
    read: DEST at or inside the lake, or a version path at or below the lake inside DEST."""
    if not lake_url.startswith("file://"):
        return
    lake = os.path.realpath(lake_url[len("file://"):])
    root = os.path.realpath(final_root(m, destination))
    if root == lake or root.startswith(lake.rstrip(os.sep) + os.sep):
        where = "is the lake" if root == lake else "is inside the lake"
        raise UsageError(f"{destination} {where} {lake_url}: pulling there would write into "
                         "the lake's own files",
                         hint="pull into a directory outside the lake")
    if m.kind == "file" or not lake.startswith(root.rstrip(os.sep) + os.sep):
        return
    rel = os.path.relpath(lake, root).replace(os.sep, "/")
    for path in [*(e.path for e in m.files), *m.dirs]:
        if path == rel or path.startswith(rel + "/"):
            raise UsageError(f"{m.artifact}@v{m.version} has {path}, inside the lake {lake_url} "
                             f"(at {rel}/ in {destination}): pulling it there would write into "
                             "the lake's own files",
                             hint="pull into a directory that does not hold the lake")


def _check_landing(p: "_Placement", lake_url: str) -> None:
    """_check_outside_lake by where each file and directory really lands: a directory symlink
    in DEST (`DEST/sub -> the lake`, anywhere) is followed when placing, so a version's
    `sub/ckptlake.json` replaced the lake's header with --force.  One realpath per distinct
    directory, for local lakes only."""
    if not lake_url.startswith("file://"):
        return
    lake = os.path.realpath(lake_url[len("file://"):])
    inside = lake.rstrip(os.sep) + os.sep
    seen: dict[str, str] = {}  # (a realpath per directory cost a warm pull of 2,000 ~25 %)
    paths = [*p.finals.values(),
             *(os.path.join(p.final_root, *d.split("/"), "") for d in p.m.dirs)]
    for final in paths:
        parent = os.path.dirname(final)
        real = _real_dir(parent, p.final_root, seen)
        if real == lake or real.startswith(inside):
            raise UsageError(f"{p.m.artifact}@v{p.m.version} would place "
                             f"{os.path.relpath(final, p.final_root)} inside the lake "
                             f"{lake_url} (through {parent}): pulling it there would write "
                             "into the lake's own files",
                             hint="pull into a directory whose symlinks do not lead into the "
                                  "lake")


def _real_dir(directory: str, root: str, known: dict[str, str]) -> str:
    """os.path.realpath(directory), one lstat per directory below `root`: a parent's answer
    (kept in `known`) is reused, and the chain is a loop, not a recursion (a version 1,000
    directories deep was a RecursionError, exit 1)."""
    todo: list[tuple[str, str]] = []  # (directory, its name), deepest first
    real = known.get(directory)
    while real is None:
        parent, name = os.path.split(directory)
        if not name or parent == directory or not directory.startswith(root):
            real = known[directory] = os.path.realpath(directory)
            break
        todo.append((directory, name))
        directory = parent
        real = known.get(directory)
    for directory, name in reversed(todo):
        here = os.path.join(real, name)
        real = known[directory] = os.path.realpath(here) if os.path.islink(here) else here
    return real


def makedirs(path: str) -> list[str]:
    """os.makedirs(path, exist_ok=True) without its recursion (one frame per missing parent:
    a version 1,000 directories deep was a RecursionError, exit 1); the directories it made,
    outermost first."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    made = []
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except FileExistsError:
            if not os.path.isdir(d):
                raise
        else:
            made.append(d)
    return made


def unmake(made: list[str]) -> None:
    """Remove the directories `makedirs` made, innermost first, as far as they are empty: a
    pull that fails with nothing to resume leaves DEST's parents as it found them."""
    for d in reversed(made):
        try:
            os.rmdir(d)
        except OSError:
            return


def abandoned_stagings(final_root: str) -> list[tuple[str, int]]:
    """Staging directories of `final_root` (beside it, and inside it when it is a directory,
    see staging_dir) that no running pull holds, with the bytes they occupy: what interrupted
    pulls left that nobody re-ran (another version, say, once `latest` moved on).  Each holds
    files preallocated at full size, so they are worth a word.  Known by the name and the
    `.lock` every staging holds (as core/scan.py's _pull_staging): a directory of the user's
    own, or of a version, named `.ckptlake-pull-notes` is no staging, and must never be
    offered for deletion."""
    parent, name = os.path.split(final_root)
    places = [(parent, _beside_prefix(parent, name))]
    if os.path.isdir(final_root):
        places.append((final_root, _TAG))
    entries = []
    for where, prefix in places:
        try:
            entries += [e.path for e in os.scandir(where)
                        if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False)
                        and os.path.isfile(os.path.join(e.path, ".lock"))]
        except OSError:
            continue
    return sorted((path, _disk_usage(path)) for path in entries if not _held(path))


def _held(staging: str) -> bool:
    """Does a running pull hold this staging directory's lock (see _Staging)?"""
    try:
        fd = os.open(os.path.join(staging, ".lock"), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _disk_usage(root: str) -> int:
    used = 0
    for dirpath, _dirs, files in walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                used += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return used


def journaled_chunks(staging: str) -> set[str]:
    """Chunks an earlier, interrupted pull recorded as fully written into `staging`.  Only
    complete lines count: a line cut by a crash names no chunk."""
    try:
        with open(os.path.join(staging, "journal")) as fh:
            return {line.strip() for line in fh if line.endswith("\n")}
    except OSError:  # no staging (or a file where it would be): nothing to resume from
        return set()


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _own_directory(path: str) -> bool:
    """Make the staging directory `path`, or accept the one an earlier pull of this user
    left; True if made here.  Its name is predictable (see staging_dir), and beside a new
    destination it may sit in a directory others can write (/tmp): a symlink planted there, or
    a directory another user made, would have this pull write the version's files wherever it
    leads, and place them (a planted link to a file outside was overwritten with the version's
    bytes).  So the path must be a real directory of this user, made by mkdir, not followed."""
    try:
        os.mkdir(path, 0o700)
        return True
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else (
            "not a directory" if not stat.S_ISDIR(st.st_mode) else "another user's directory")
        raise Conflict(f"refusing to stage a pull in {path}: it is {what}, not one this user's "
                       "pull made", hint="remove it (nothing of yours is in it), or pull "
                                         "elsewhere")
    return False


def _refuse_kept(path: str, rel: str, what: str) -> Conflict:
    return Conflict(f"refusing to resume the pull staged in {path}: {rel} in it is {what}, "
                    "which no pull makes",
                    hint=f"remove it: rm -rf {shlex.quote(path)}; then pull again")


def _check_kept(path: str) -> None:
    """A staging directory an earlier pull left (checked under its lock: no other pull is
    using it) holds only what pulls make: its journal a file, its data, links and modes
    directories, and below data directories, files and the version's own symlinks (made
    there just before the rename that places them: a pull interrupted then leaves them).  A
    symlink planted where a pull makes none had the journal appended wherever it led, and a
    resumed placement unlink a file outside (links, modes): refused (Conflict, saying to remove
    it).  One below data, planted or the version's, is removed, never followed: a planted
    linked directory had staged files written outside the destination, and whatever sat
    behind one is simply fetched again."""
    for name, want_dir in (("journal", False), ("data", True), ("links", True),
                           ("modes", True)):
        try:
            st = os.lstat(os.path.join(path, name))
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            raise _refuse_kept(path, name, "a symlink")
        if (stat.S_ISDIR(st.st_mode) if want_dir else stat.S_ISREG(st.st_mode)) is False:
            raise _refuse_kept(path, name, "of the wrong type")
    root = os.path.join(path, "data")
    for top, dirs, files in walk(root):  # never follows a link
        for entry in dirs + files:
            full = os.path.join(top, entry)
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                os.unlink(full)  # the link itself; walk does not descend into it
            elif not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise _refuse_kept(path, os.path.relpath(full, path), "not a file")


class _Staging:
    """A directory the version's files are renamed from (see staging_dir), owned by one pull
    at a time (flock).

    Its name is derived from (lake, artifact, version), so a pull that was interrupted or lost
    its connection finds its earlier work again: `journal` lists the chunks whose bytes were
    fully written; on resume each is re-verified from the staged bytes (a local re-hash is far
    cheaper than a download) and only the rest is fetched.
    """

    def __init__(self, final_root: str, lake_url: str, m: Manifest) -> None:
        self.path = staging_dir(final_root, lake_url, m)
        name = os.path.basename(self.path)
        if os.path.dirname(self.path) == final_root and any(
                path.split("/", 1)[0] == name for path in [*(e.path for e in m.files), *m.dirs]):
            # only a crafted version names it (the name hashes lake, artifact and version):
            # placing it would rename staged files into their own staging directory
            raise UnsafeManifest(f"{m.artifact}@v{m.version} has a path named like the staging "
                                 f"directory of a pull into {final_root}: {name}",
                                 hint="refusing to pull it into an existing directory")
        made = _own_directory(self.path)
        self._lock = -1
        try:
            try:
                self._lock = os.open(os.path.join(self.path, ".lock"),
                                     os.O_CREAT | os.O_RDWR | _NOFOLLOW, 0o600)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise _refuse_kept(self.path, ".lock", "a symlink") from None
                if exc.errno in (errno.EISDIR, errno.ENXIO):  # a directory, a socket
                    raise _refuse_kept(self.path, ".lock", "of the wrong type") from None
                raise
            if not stat.S_ISREG(os.fstat(self._lock).st_mode):  # a FIFO opens
                raise _refuse_kept(self.path, ".lock", "of the wrong type")
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                made = False  # the other pull's
                raise Conflict(f"another pull into {final_root} is running") from None
            if not made:
                _check_kept(self.path)
            self.done = journaled_chunks(self.path)
            self._journal = os.fdopen(  # line-buffered: one write per chunk
                os.open(os.path.join(self.path, "journal"),
                        os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o600),
                "a", buffering=1)
        except BaseException:
            if self._lock >= 0:
                os.close(self._lock)
            if made:  # nothing in it worth keeping, and it would be in the user's way
                rmtree(self.path)
            raise
        self._journal_lock = threading.Lock()

    def file(self, rel: str) -> str:
        return os.path.join(self.path, "data", *rel.split("/"))

    def record(self, chunk_digest: str) -> None:
        with self._journal_lock:
            self._journal.write(chunk_digest + "\n")

    def close(self, *, keep: bool) -> None:
        self._journal.close()
        if not keep:
            rmtree(self.path)
        os.close(self._lock)


def _preallocate(fd: int, size: int, ranges: list[tuple[int, int]] | None = None, *,
                 reserve: bool = True) -> None:
    """Reserve the file's blocks before the parallel writes (only `ranges`, (offset, length),
    if given: the rest stays a hole).

    Measured on ext4 here: 8 threads pwrite-ing 16 MiB pieces into a sparse (ftruncate'd) 1 GiB
    file cost 1.3-2.7 s of system time (block allocation under the inode lock, per write);
    after posix_fallocate the same writes cost 0.22 s.  Filesystems without fallocate get a
    sparse file as before.
    """
    if size == 0:
        return
    os.ftruncate(fd, size)
    if not reserve:
        return
    try:
        for offset, length in [(0, size)] if ranges is None else ranges:
            os.posix_fallocate(fd, offset, length)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


# At most this many distinct chunk sizes are hashed as zeros to recognise all-zero chunks: a
# crafted manifest must not make a pull hash gigabytes of zeros.
_ZERO_SIZES = 4
_ZERO_BLOCK = bytes(1024 * 1024)


def _zero_digest(algo: str, size: int) -> str:
    h = new_hasher(algo)
    for _ in range(size // len(_ZERO_BLOCK)):
        h.update(_ZERO_BLOCK)
    h.update(_ZERO_BLOCK[:size % len(_ZERO_BLOCK)])
    return h.hexdigest()


def zero_chunks(entries: list[FileEntry], algo: str) -> set[str]:
    """Digests of the whole chunks that hold only zero bytes: the holes of sparse files (and
    zero-filled buffers), which need neither a download nor a write.

    Only chunks referenced more than once are candidates (a hole longer than two chunks is
    one chunk object referenced again and again); their digest is compared with the digest of
    that many zeros.
    """
    refs: dict[str, list[int]] = {}
    for e in entries:
        for c in e.chunks:
            if c.offset is None and c.size:
                ref = refs.setdefault(c.digest, [c.size, 0])
                ref[1] += 1
                if ref[0] != c.size:  # one chunk, two sizes: a damaged manifest, which the
                    ref[0] = -1       # download path reports; never written as zeros
    counts: dict[int, int] = {}
    for size, n in refs.values():
        if n > 1 and size > 0:
            counts[size] = counts.get(size, 0) + n
    sizes = sorted(counts, key=lambda sz: -counts[sz])[:_ZERO_SIZES]
    zeros = {_zero_digest(algo, sz) for sz in sizes}
    return {d for d, (size, _) in refs.items() if d in zeros and size > 0}


def _prepare(staging: _Staging, entries: list[FileEntry], algo: str) -> dict[str, _Unit]:
    """Create the staged files at full size and group their bytes by chunk object.

    Staged files left by an interrupted pull of the same version are kept, not truncated: the
    journal says which of their chunks are already in place.  All-zero chunks are left as
    holes in the files created here (sparse files stay sparse); in kept files they are written.
    """
    zeros = zero_chunks(entries, algo)
    units: dict[str, _Unit] = {}
    made: set[str] = set()  # directories made (or found) here: one mkdir per directory
    for e in entries:
        path = staging.file(e.path)
        parent = os.path.dirname(path)
        if parent not in made:
            makedirs(parent)
            made.add(parent)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | _NOFOLLOW,  # (see _own_directory)
                     0o777 if e.executable else 0o666)
        try:
            had = os.fstat(fd).st_size
            fresh = had != e.size
            if fresh:
                if had:
                    os.ftruncate(fd, 0)
                # A file of one chunk is written by one write: nothing to gain from reserving
                # its blocks first (see _preallocate), and a tree of many small files (a
                # pull's first ~0.05 s per 200 files, before any chunk is fetched) pays for it.
                _preallocate(fd, e.size, _data_ranges(e, zeros) if zeros else None,
                             reserve=len(e.chunks) > 1)
        except OSError as err:
            if err.errno != errno.EFBIG:
                raise
            limit = _file_size_limit()
            if limit is not None and limit < e.size:
                raise UsageError(f"cannot restore {e.path} ({format_bytes(e.size)}): larger "
                                 f"than this process may write ({format_bytes(limit)}, the "
                                 "file size limit)",
                                 hint="raise it (ulimit -f unlimited) and pull again") from None
            raise UsageError(f"cannot restore {e.path} ({format_bytes(e.size)}): larger than "
                             "the destination's file system allows") from None
        finally:
            os.close(fd)
        offset = 0
        for ref in e.chunks:
            unit = units.setdefault(ref.digest, _Unit(ref.digest, zero=ref.digest in zeros))
            if unit.zero and fresh and ref.offset is None:
                unit.holes += ref.size
            else:
                unit.targets.append((path, offset, ref.offset or 0, ref.size,
                                     None if ref.offset is None
                                     else _ASSEMBLED if _assembled(e) else e.digest))
            offset += ref.size
    return units


def _data_ranges(e: FileEntry, zeros: set[str]) -> list[tuple[int, int]]:
    """(offset, length) runs of the file that are not all-zero chunks, merged."""
    out: list[tuple[int, int]] = []
    offset = 0
    for ref in e.chunks:
        if ref.digest not in zeros or ref.offset is not None:
            if out and out[-1][0] + out[-1][1] == offset:
                out[-1] = (out[-1][0], out[-1][1] + ref.size)
            else:
                out.append((offset, ref.size))
        offset += ref.size
    return out


def _check_assembled(m: Manifest, entries: list[FileEntry], staging: _Staging) -> None:
    """Hash each staged packed file of several ranges whole (see _ASSEMBLED)."""
    for e in entries:
        if _assembled(e):
            h = new_hasher(m.hash)
            with open(staging.file(e.path), "rb") as fh:
                while block := fh.read(_READ_BLOCK):
                    h.update(block)
            if h.hexdigest() != e.digest:
                raise IntegrityError(f"packed file {e.path} of {m.artifact}@v{m.version} does "
                                     "not match its digest",
                                     hint="the manifest is damaged; nothing was written from it")


def _already_staged(unit: _Unit, algo: str) -> bool:
    """Do the staged files hold this chunk's bytes at every target (verified by hash)?"""
    for path, file_offset, _chunk_offset, length, file_digest in unit.targets:
        with open(path, "rb", buffering=0) as fh:
            data = os.pread(fh.fileno(), length, file_offset)
        expected = file_digest if file_digest is not None else unit.digest
        if len(data) != length or not expected or digest(algo, data) != expected:
            return False
    return True


class _Fetcher:
    def __init__(self, store: Store, m: Manifest, progress: Progress,
                 staging: _Staging, throttle: Throttle | None = None,
                 parts: Parts | None = None, local: LocalSources | None = None,
                 cache: ChunkCache | None = None,
                 shared_files: set[str] | frozenset[str] = frozenset()
                 ) -> None:
        self.store, self.m, self.progress, self.staging = store, m, progress, staging
        self.throttle = throttle or Throttle(None)
        self.parts = parts
        self.local = local  # chunk bytes already on this machine (core/reuse.py)
        self.cache = cache  # the opt-in chunk cache (core/cache.py)
        self.downloaded = Counter()
        self.resumed = Counter()
        self.copied = Counter()  # bytes copied from local files instead of downloaded
        self.cached = Counter()  # bytes read from the chunk cache instead of downloaded
        self._local = threading.local()
        # The largest chunk object this version references: every fetch fits the buffer.
        # From the whole version, also when pulling part of it: a pack is fetched (and
        # verified) whole, whichever of its files are wanted.
        self.object_size = object_sizes(m)  # digest -> size of its chunk object
        if m.stored:
            fix_mmap_threshold()  # decoding allocates chunk-sized buffers (see there)
        self.chunk_capacity = max(self.object_size.values(), default=0)
        # room for any chunk at any in-page shift (see _shift): one size, so every buffer fits
        self._decode = ChunkBuffers(self.chunk_capacity + _DIRECT_ALIGN)
        self.leftovers = _Leftovers(staging)
        self.shared_files = shared_files  # staged files written by more than one chunk

    def _buffer(self) -> mmap.mmap:
        """One chunk-sized buffer per worker thread, reused for every chunk it fetches.

        Private anonymous memory (chunkio.anonymous): page-aligned, as O_DIRECT writes
        require.
        """
        buf = getattr(self._local, "buffer", None)
        if buf is None:
            buf = self._local.buffer = anonymous(max(self.chunk_capacity, 1) + _DIRECT_ALIGN)
        return buf

    def _view(self, unit: _Unit) -> memoryview:
        """This thread's buffer, from where the unit's bytes should start (see _shift)."""
        return memoryview(self._buffer())[_shift(unit):]

    def __call__(self, unit: _Unit) -> None:
        if unit.zero:  # known bytes: holes stay holes, kept staged files get zeros written
            for path, file_offset, _chunk_offset, length, file_digest in unit.targets:
                piece = bytes(length)
                if file_digest and digest(self.m.hash, piece) != file_digest:
                    raise IntegrityError(f"packed file in chunk {unit.digest} does not match "
                                         "its digest")
                _write(path, memoryview(piece), file_offset, direct=False)
            self.progress.advance(unit.nbytes)
            return
        if unit.digest in self.staging.done and _already_staged(unit, self.m.hash):
            self.resumed.add(unit.nbytes)
            self.progress.advance(unit.nbytes)
            return
        key = layout.chunk_key(unit.digest)
        if self.local is not None:
            local = self.local.fill(unit, self._view(unit), self.m.hash)
            if local is not None:
                self._write_targets(unit, local, key)
                self.copied.add(unit.nbytes)
                self.progress.advance(unit.nbytes)
                return
        if self.cache is None:
            self._download(unit, key)
            return
        if self._from_cache(unit, key):
            return
        # Another process pulling the same version is likely fetching this very chunk: wait
        # for it (bounded, see ChunkCache.filling) and read the cache, so it is fetched once.
        with self.cache.filling(self.m.hash, unit.digest):
            if not self._from_cache(unit, key):
                self._download(unit, key)

    def _from_cache(self, unit: _Unit, key: str) -> bool:
        cached = self.cache.get_into(self.m.hash, unit.digest, self._view(unit))
        if cached is None:
            return False
        self._write_targets(unit, cached, key)
        self.cached.add(unit.nbytes)
        self.progress.advance(unit.nbytes)
        return True

    def _download(self, unit: _Unit, key: str) -> None:
        size = self.object_size[unit.digest]
        # an encoded object crosses the wire at its stored size (the manifest's hint)
        self.throttle.acquire(self.m.stored.get(unit.digest, size))
        in_parts = self.parts is not None and self.parts.applies(size)
        # A chunk object that one file takes whole (a slice) reports progress part by part.
        per_part = in_parts and unit.nbytes == size and len(unit.targets) == 1
        try:
            if in_parts:
                data = self.parts.get_into(self.store, key, size, self._view(unit),
                                           on_part=self.progress.advance if per_part else None)
            else:
                data = self.store.get_into(key, self._view(unit))  # type: ignore[arg-type]
        except NotFound:
            raise MissingChunk(f"chunk {key} of {self.m.artifact}@v{self.m.version} is "
                               "missing from the lake", hint=MISSING_HINT) from None
        self.downloaded.add(len(data))  # bytes that crossed the wire
        where = f"{self.m.artifact}@v{self.m.version}"
        try:
            self._open_and_finish(unit, data, key, per_part, where)
        except IntegrityError:
            # A regional replica's bad copy: read again from the origin, which also replaces
            # it (store/replica.py); any other store has no second copy.
            again = self._refetched(key, unit)
            if again is None:
                raise
            self._open_and_finish(unit, again, key, per_part, where)

    def _open_and_finish(self, unit: _Unit, data: memoryview, key: str, per_part: bool,
                         where: str) -> None:
        # decoded (if it is a frame) and verified; an IntegrityError names the chunk and the
        # version, and nothing reaches the destination (staging is discarded)
        # The raw size, if a file takes the chunk whole: open_object then refuses a frame
        # claiming another before allocating what it claims (a pack's raw size is unknown).
        raw = next((t[3] for t in unit.targets if t[4] is None), None)
        if codecs.looks_framed(data):
            with DECODERS:  # the decoded copy lives until written: bounded
                shift = _shift(unit)
                buf = self._decode.take((codecs.frame_rawlen(data) if raw is None else raw)
                                        + shift)
                try:
                    opened = memoryview(open_object(
                        self.m.hash, unit.digest, data, raw_size=raw, key=key, where=where,
                        into=memoryview(buf)[shift:] if buf is not None else None))
                    self._finish(unit, opened, key, per_part)
                    del opened
                finally:
                    self._decode.give(buf)
            return
        # (raw bytes: checked against the targets' sizes after their digest, by _finish,
        # which tells a manifest that lies about the size from a corrupt chunk)
        self._finish(unit, open_object(self.m.hash, unit.digest, data, raw_size=None, key=key,
                                       where=where), key, per_part)

    def _finish(self, unit: _Unit, data: memoryview, key: str, per_part: bool) -> None:
        if self.cache is not None:
            self.cache.put(self.m.hash, unit.digest, data)
        self._write_targets(unit, data, key)
        if not per_part:
            self.progress.advance(unit.nbytes)

    def _refetched(self, key: str, unit: _Unit) -> memoryview | None:
        """A chunk that did not match its digest, read again from a store's second copy (a
        regional replica's origin, store/replica.py, which also replaces the bad copy); None
        if there is none.  The caller verifies it like the first read."""
        refetch = getattr(self.store, "refetch_into", None)
        if refetch is None:
            return None
        return refetch(key, self._view(unit))

    def _write_targets(self, unit: _Unit, data: memoryview, key: str) -> None:
        """Write a verified chunk's bytes to every place the version needs them, then journal
        it (a resumed pull re-verifies what the journal names)."""
        view = data
        held: list[tuple[str, int, bytes]] = []
        for path, file_offset, chunk_offset, length, file_digest in unit.targets:
            piece = view[chunk_offset:chunk_offset + length]
            # a whole-chunk reference (no file digest) is the whole chunk: a size that says
            # less would splice part of a chunk into the file, bytes that were never pushed
            if len(piece) != length or (file_digest is None and length != len(view)):
                raise IntegrityError(
                    f"chunk {key} of {self.m.artifact}@v{self.m.version} holds {len(view)} "
                    f"bytes, but the manifest says {length}"
                    + ("" if file_digest is None else f" from offset {chunk_offset}"),
                    hint="the manifest is damaged; nothing was written from it")
            if file_digest and digest(self.m.hash, piece) != file_digest:
                raise IntegrityError(f"packed file in chunk {key} does not match its digest")
            # only a file that other chunks write too can have direct writes in flight
            _write(path, piece, file_offset,
                   direct=chunk_offset == 0 and isinstance(data.obj, mmap.mmap),
                   held=held if path in self.shared_files else None)
        if held:
            self.leftovers.add(unit.digest, held)  # journaled once they are written
        else:
            self.staging.record(unit.digest)


_DIRECT_ALIGN = 4096


def _shift(unit: "_Unit") -> int:
    """Where in a page-aligned buffer a chunk's bytes should start so that every byte sits at
    the same offset within its page as it will within the file: then the page-aligned middle
    of a chunk at an unaligned file offset (a tensor-aligned chunk of a safetensors file starts
    wherever its tensor does) can still be written with O_DIRECT (see _write).  Only for a
    chunk that starts one file's range; packs keep offset 0."""
    targets = unit.targets
    if len(targets) == 1 and targets[0][2] == 0:
        return targets[0][1] % _DIRECT_ALIGN
    return 0
# CKPTLAKE_NO_DIRECT_IO=1 forces buffered writes (an escape hatch for odd filesystems).
_direct_ok = not os.environ.get("CKPTLAKE_NO_DIRECT_IO") and hasattr(os, "O_DIRECT")


def _write(path: str, piece: memoryview, offset: int, *, direct: bool,
           held: list[tuple[str, int, bytes]] | None = None) -> None:
    """Write a verified piece at its offset in a staged file.

    held: where the unaligned head and tail of a direct write go instead of being written
    (as (path, offset, bytes); see _Leftovers), and a chunk too small to write direct.

    The page-aligned part of a chunk bypasses the page cache (O_DIRECT): measured here, right
    after the server had taken a 1 GiB upload, copying pulled bytes into new page-cache pages
    cost 2.3 s of kernel time per GiB (perf: copy_folio_from_iter_atomic 55 %); on a 2 GiB
    bf16 safetensors pull, whose tensor-aligned chunks start at unaligned offsets and so all
    went through the page cache, it was half of the client's CPU.  A piece whose memory and
    file offset agree within the page (see _shift) is written as an unaligned head and tail
    through the page cache and an aligned middle direct; anything else, and filesystems that
    refuse O_DIRECT, take the ordinary buffered write.
    """
    global _direct_ok
    n = len(piece)
    head = -offset % _DIRECT_ALIGN
    if direct and _direct_ok and n >= head + _DIRECT_ALIGN \
            and _address(piece[head:head + 1]) % _DIRECT_ALIGN == 0:
        aligned = (n - head) - (n - head) % _DIRECT_ALIGN
        try:
            fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
        except OSError:
            _direct_ok = False
        else:
            short = None
            try:
                done = os.pwrite(fd, piece[head:head + aligned], offset + head)
                if done < aligned:  # a full disk: the next write says so (ENOSPC)
                    short = (piece[head + done:head + aligned], offset + head + done)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                _direct_ok = False  # buffer or filesystem not suitable: buffered from now on
                aligned = 0
            finally:
                os.close(fd)
            if short is not None:
                _buffered(path, *short)
            if aligned:
                rest = [(piece[:head], offset),
                        (piece[head + aligned:], offset + head + aligned)]
                for part, at in rest:
                    if not len(part):
                        continue
                    if held is not None:
                        held.append((path, at, bytes(part)))
                    else:
                        _buffered(path, part, at)
                return
    if held is not None and direct and _direct_ok and n <= _HELD_WHOLE:
        # a chunk too small to write direct (a norm's weights) lands in a file that others
        # write direct just the same: held like an edge
        held.append((path, offset, bytes(piece)))
        return
    _buffered(path, piece, offset)


# What _Leftovers holds back at most before writing it out.
LEFTOVER_BYTES = 4 * 1024 * 1024
# A chunk that cannot be written direct at all is held back whole up to this size.
_HELD_WHOLE = 64 * 1024


class _Leftovers:
    """The unaligned heads and tails of the chunks written with O_DIRECT into files of more
    than one chunk, held back and written through the page cache in batches, not one by one
    between the direct writes (a file of one chunk has no other writes to wait for).

    Why: a buffered write takes the file's inode lock exclusively, and ext4 holds it shared
    through every direct write in flight on the file; a buffered write of a few hundred bytes
    then waits for those writes to finish, and new direct writes queue behind it.  Measured on
    a 2 GiB bf16 pull from SeaweedFS (tensor-aligned chunks start anywhere in their file):
    528 such writes took 2.5 thread-s (median 0.03 ms, p90 16 ms, max 44 ms), all of it with
    a decode slot held, while the disk was busy 1.5 s of the pull's 3.6 s.

    Chunks too small to be written direct at all (up to _HELD_WHOLE: a norm's weights, a
    safetensors header) are held whole, for the same reason.  A chunk is journaled only once
    its held pieces are written, so an interrupted pull fetches again the chunks whose pieces
    were still held.  At most LEFTOVER_BYTES (+ one chunk's pieces) are held: memory stays
    bounded whatever the size of the version.
    """

    def __init__(self, staging: "_Staging") -> None:
        self.staging = staging
        self._lock = threading.Lock()
        self._pieces: list[tuple[str, int, bytes]] = []
        self._digests: list[str] = []
        self._bytes = 0

    def add(self, chunk_digest: str, pieces: list[tuple[str, int, bytes]]) -> None:
        with self._lock:
            self._pieces += pieces
            self._digests.append(chunk_digest)
            self._bytes += sum(len(p[2]) for p in pieces)
            if self._bytes < LEFTOVER_BYTES:
                return
            batch = self._take()
        self._write(*batch)

    def flush(self) -> None:
        with self._lock:
            batch = self._take()
        self._write(*batch)

    def _take(self) -> tuple[list[tuple[str, int, bytes]], list[str]]:
        batch = self._pieces, self._digests
        self._pieces, self._digests, self._bytes = [], [], 0
        return batch

    def _write(self, pieces: list[tuple[str, int, bytes]], digests: list[str]) -> None:
        pieces.sort(key=lambda p: (p[0], p[1]))  # one open per file
        fd, open_path = -1, None
        try:
            for path, offset, data in pieces:
                if path != open_path:
                    if fd >= 0:
                        os.close(fd)
                        fd = -1
                    fd, open_path = os.open(path, os.O_WRONLY), path
                _pwrite_all(fd, memoryview(data), offset)
        finally:
            if fd >= 0:
                os.close(fd)
        for d in digests:
            self.staging.record(d)


def _buffered(path: str, piece: memoryview, offset: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        _pwrite_all(fd, piece, offset)
    finally:
        os.close(fd)


def _pwrite_all(fd: int, piece: memoryview, offset: int) -> None:
    """pwrite until every byte is out.  A write that fills the disk returns what fit without
    an error; taking that for done placed files ending in zeros (never re-read) under their
    final names with exit 0.  The write after a short one raises the cause (ENOSPC)."""
    piece = piece.cast("B") if piece.ndim != 1 or piece.itemsize != 1 else piece
    while len(piece):
        done = os.pwrite(fd, piece, offset)
        if done <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        piece, offset = piece[done:], offset + done


def _address(view: memoryview) -> int:
    """The memory address of a (writable, mmap-backed) view's first byte; -1 if unknown."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(view))
    except (TypeError, ValueError):
        return -1


def _place(p: _Placement, staging: _Staging) -> None:
    """Move verified files from staging to their final names, as planned by _Placement (which
    found every conflict already); anything in the way now appeared during the pull."""
    try:
        _place_planned(p, staging)
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as e:
        raise Conflict(f"{e.filename or p.final_root} changed while the version was being "
                       "pulled", hint="pull again") from None
    except OSError as e:
        if e.errno != errno.ENOTEMPTY:
            raise
        raise Conflict(f"{p.final_root} appeared while the version was being pulled",
                       hint="pull again") from None


def _place_planned(p: _Placement, staging: _Staging) -> None:
    m = p.m
    if p.fresh and m.kind == "dir":
        data = os.path.join(staging.path, "data")
        makedirs(data)
        for d in m.dirs:
            makedirs(os.path.join(data, *d.split("/")))
        for e in p.links:
            link = staging.file(e.path)
            makedirs(os.path.dirname(link))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)  # made by a run interrupted just before its rename
            os.symlink(e.symlink, link)  # type: ignore[arg-type]
        os.rename(data, p.final_root)  # the whole tree appears at once
        return
    for i, (path, executable) in enumerate(p.modes):  # --force: only the executable bit differs
        _fix_executable(path, executable, staging, i)
        p.changed += 1
    for path in p.clear:  # --force: files and symlinks where the version has directories
        os.unlink(path)
        p.changed += 1
    # Every directory first: one that cannot be made (no permission, an immutable parent)
    # fails the pull before any file of the version took its final name, not after some did.
    for d in sorted({os.path.dirname(p.finals[e.path]) for e in (*p.download, *p.links)}
                    | {os.path.join(p.final_root, *d.split("/")) for d in m.dirs}):
        makedirs(d)
    for e in p.download:
        final = p.finals[e.path]
        makedirs(os.path.dirname(final))
        if e.path in p.absent:
            _place_new(staging.file(e.path), final)
        else:  # planned: --force replaces what differs
            os.replace(staging.file(e.path), final)
        p.changed += 1
    for d in m.dirs:
        makedirs(os.path.join(p.final_root, *d.split("/")))
    links = os.path.join(staging.path, "links")
    for i, e in enumerate(p.links):
        final = p.finals[e.path]
        if os.path.islink(final) and os.readlink(final) == e.symlink:
            continue
        makedirs(os.path.dirname(final))
        if e.path in p.absent:  # symlink(2) never replaces: anything there appeared since
            try:
                os.symlink(e.symlink, final)  # type: ignore[arg-type]
            except FileExistsError:
                raise _appeared(final) from None
            p.changed += 1
            continue
        # a short name of its own: the link's name plus a suffix could pass NAME_MAX
        makedirs(links)
        tmp = os.path.join(links, str(i))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # made by a run interrupted before its rename
        os.symlink(e.symlink, tmp)  # type: ignore[arg-type]
        os.replace(tmp, final)
        p.changed += 1


# A file system that has no hard links (or none here) says so with one of these.
_NO_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV,
             errno.ENOSYS)


def _place_new(staged: str, final: str) -> None:
    """Move a staged file to a final name the plan found absent, never over anything that
    appeared there during the pull (a file the user wrote, another pull's): rename(2) would
    replace it silently, link(2) refuses (EEXIST), so the file is linked, then unlinked from
    staging.  Where the file system has no hard links (some FUSE and network mounts, vfat),
    the name is checked again just before the rename: a narrow window remains there, since
    Linux offers no portable rename that refuses to replace.  A crash between link and unlink
    leaves the file placed and its staged name too: the re-run finds it identical."""
    try:
        os.link(staged, final, follow_symlinks=False)
    except FileExistsError:
        raise _appeared(final) from None
    except OSError as e:
        if e.errno not in _NO_LINKS:
            raise
        if os.path.lexists(final):
            raise _appeared(final) from None
        os.replace(staged, final)
        return
    os.unlink(staged)


def _appeared(path: str) -> Conflict:
    return Conflict(f"{path} appeared during the pull",
                    hint="move it away and pull again: the verified files are kept")


def _fix_executable(path: str, executable: bool, staging: "_Staging", i: int) -> None:
    """Give the file the version's executable bit.  A file with other hard links (a `cp -al`
    snapshot, a `--reference` tree) shares its mode with them: chmod would change the
    snapshot too, so the destination gets its own copy with the bit, renamed over it."""
    if os.lstat(path).st_nlink <= 1:
        _set_executable(path, executable)
        return
    tmp = os.path.join(staging.path, "modes", str(i))
    makedirs(os.path.dirname(tmp))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # left by a run interrupted before its rename
    shutil.copy2(path, tmp)  # bytes, mode and times; the bit is set below
    _set_executable(tmp, executable)
    os.replace(tmp, path)


def _set_executable(path: str, executable: bool) -> None:
    """Give the file the version's executable bit, keeping the rest of its mode: execute
    where it is readable (as a new file gets 0o777 less the umask), or nowhere."""
    mode = stat.S_IMODE(os.lstat(path).st_mode)
    if executable:
        mode |= (mode & 0o444) >> 2 | stat.S_IXUSR
    else:
        mode &= ~0o111
    os.chmod(path, mode)


def _check_renames(p: _Placement, staging: _Staging) -> None:
    """Refuse, before anything is downloaded, a merge pull whose files would be renamed onto
    another file system than the staging directory's (a mount below the destination):
    otherwise placement would fail half way, some files moved and the rest not.  A new
    destination and a single file are renamed within one directory: nothing to check."""
    if p.fresh or p.m.kind != "dir":
        return
    moved = list(p.download) + [
        e for e in p.links
        if not (os.path.islink(p.finals[e.path]) and os.readlink(p.finals[e.path]) == e.symlink)]
    checked: set[str] = set()
    for e in moved:
        d = os.path.dirname(p.finals[e.path])
        # a directory still to be made is made on its nearest existing ancestor's file system
        while d != p.final_root and d not in checked and not os.path.isdir(d):
            d = os.path.dirname(d)
        if d in checked:
            continue
        checked.add(d)
        if _other_file_system(staging.path, d):
            raise UsageError(f"{d} is on another file system than {p.final_root}: the version's "
                             "files cannot be renamed into it",
                             hint="pull into a directory with no mount point below it")


def _other_file_system(staging: str, directory: str) -> bool:
    """Would a rename from `staging` into `directory` fail with EXDEV?  Asked without changing
    anything: Linux compares the two parents' mounts before it refuses to rename ".", so that
    rename fails with EXDEV across mounts (bind mounts of one file system too, which share
    st_dev) and with EBUSY otherwise."""
    try:
        if os.stat(staging).st_dev != os.stat(directory).st_dev:
            return True
        os.rename(os.path.join(staging, "."), os.path.join(directory, "."))
    except OSError as e:
        return e.errno == errno.EXDEV
    return False  # "." is never renamed; not reached


# What no re-run can fix on this file system: staged bytes are not worth keeping.
_PATH_MAX = 4096  # Linux's, with the terminating NUL
_HOPELESS = (errno.EFBIG, errno.ENAMETOOLONG, errno.EXDEV, errno.EBUSY)


_WRITE_HINT = "pull into a directory you can write to"
_SPACE_HINT = "free some space and pull again: verified chunks are kept"
# errno -> (error type, message, hint) for the file system's refusals while staging or placing
_FS_FAILURES: dict[int, tuple[type[CkptlakeError], str, str]] = {
    errno.EACCES: (AccessDenied, "cannot write to {where}: {why}", _WRITE_HINT),
    errno.EPERM: (AccessDenied, "cannot write to {where}: {why}", _WRITE_HINT),
    errno.EROFS: (AccessDenied, "cannot write to {where}: {why}", _WRITE_HINT),
    errno.ENOSPC: (UsageError, "no space left on the device holding {dest}", _SPACE_HINT),
    errno.EDQUOT: (UsageError, "disk quota exceeded on the device holding {dest}", _SPACE_HINT),
    errno.ENAMETOOLONG: (UsageError, "cannot write {where}: {why}",
                         "pull into a directory with a shorter path"),
    errno.EFBIG: (UsageError, "cannot write {where}: {why}",
                  "the version cannot be restored on this file system"),
    # a mount point where a file would be renamed
    errno.EXDEV: (UsageError, "cannot move the version into place at {where}: {why}",
                  "pull into a directory with no mount point below it"),
    errno.EBUSY: (UsageError, "cannot move the version into place at {where}: {why}",
                  "pull into a directory with no mount point below it"),
}


_NO_SYNC = bool(os.environ.get("CKPTLAKE_NO_SYNC"))
_syncfs: Callable[[int], int] | None | bool = False  # False: not looked up yet


def _flush_to_disk(staging: str, files: list[str]) -> None:
    """Have the staged bytes on the disk before any of them gets a final name.

    Why: neither a direct write (its extents stay "unwritten" until the journal commits) nor
    a buffered one is durable by itself, and a rename is not ordered after the data it names:
    after a power loss or a kernel crash a placed file could read as zeros or holes, which a
    resumed training run would load.  One syncfs(2) of the staging's file system covers every
    file in one call (a tree of 1,000 small files would pay 1,000 fsyncs); where it is missing
    (not Linux), each staged file is fsynced.  CKPTLAKE_NO_SYNC=1 skips it (scratch space).
    """
    global _syncfs
    if _syncfs is False:
        _syncfs = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            _syncfs = libc.syncfs
        except (OSError, AttributeError, TypeError):
            pass
    if _syncfs is not None:
        fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
        try:
            done = _syncfs(fd)  # type: ignore[operator]
            err = ctypes.get_errno() if done != 0 else 0
        finally:
            os.close(fd)
        if done == 0:
            return
        if err not in (errno.ENOSYS, errno.EPERM, errno.EOPNOTSUPP, errno.EINVAL):
            # EIO and the like: the bytes may not be on the disk; nothing is placed
            raise IntegrityError(f"could not flush the pulled files to the disk holding "
                                 f"{os.path.dirname(staging)}: {os.strerror(err)}",
                                 hint="check the disk (dmesg), then pull again: verified chunks "
                                      "are kept")
        # a file system or sandbox without syncfs: one fsync per file, below
    for path in files:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # not staged (nothing to write)
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _file_size_limit() -> int | None:
    """The process's file size limit (RLIMIT_FSIZE, `ulimit -f`), if it has one: it fails a
    large file with the same EFBIG as a file system's own limit, and the cure differs."""
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def _failure(e: OSError, destination: str) -> CkptlakeError | None:
    """The typed error for an OSError while staging or placing a version: the file system's
    refusals (permissions, read-only, full, limits, mounts) are the user's to act on; None
    for anything else, which is unexpected and stays an internal error (exit 1, --debug)."""
    known = _FS_FAILURES.get(e.errno) if e.errno is not None else None
    if known is None:
        return None
    kind, text, hint = known
    where = _shown(e.filename2) or _shown(e.filename) or destination
    if e.errno == errno.ENAMETOOLONG and isinstance(e.filename, (str, bytes)) \
            and len(os.fsencode(e.filename)) >= _PATH_MAX:
        # A path, not a name, too long: the version's path with DEST (and, while staging,
        # the staging directory's ~40 bytes) passes PATH_MAX.  "/" named as the place that
        # failed, with "a shorter path" as the cure, helped no one when even / was too long.
        staged = _TAG in os.fsdecode(e.filename)
        return kind(f"cannot write below {where}: {e.strerror}: a path of the version "
                    f"there is {len(os.fsencode(e.filename))} bytes long"
                    + (" while staged" if staged else "")
                    + f", past the system's limit of {_PATH_MAX - 1}",
                    hint="pull into a directory with a shorter path; a file whose path alone "
                         "is that long can still be read with ckptlake cat")
    return kind(text.format(where=where, why=e.strerror, dest=destination), hint=hint)


def _shown(path: str | bytes | int | None) -> str | None:
    """`path` as the user knows it: a path inside a staging directory names the directory
    that holds the staging instead (its name means nothing to the user)."""
    if path is None or isinstance(path, int):
        return None
    text = os.fsdecode(path)
    parts = text.split(os.sep)
    for i, part in enumerate(parts):
        if _TAG in part:
            return os.sep.join(parts[:i]) or os.sep
    return text


def _partly_placed(e: BaseException, p: _Placement, destination: str) -> CkptlakeError:
    """The error for a failure or interrupt after placement changed the destination: it now
    mixes the version with what was there, which the user must hear (a bare "interrupted" or
    "cannot write to f99.bin" reads as if nothing happened).  The staging is kept, even for
    errors that otherwise drop it (EXDEV, a conflict): the files not yet placed are in it,
    verified, so the re-run places them without downloading them again.  Ctrl-C stays exit
    130, as Interrupted (the CLI prints a bare KeyboardInterrupt as "interrupted", no more)."""
    ref = f"{p.m.artifact}@v{p.m.version}"
    partly = f"{p.final_root} now holds part of {ref}"
    flag = p.force_flag
    if getattr(p.m, "selection", ()) or flag != "--force":  # (a library call: no command line)
        again = f"run the same pull again with {flag} to finish placing it from the kept staging"
    else:
        again = (f"run `ckptlake pull {ref} {p.final_root} --force` to finish placing it from "
                 "the kept staging")
    if isinstance(e, Conflict):  # something appeared in the way: force would replace it
        again = f"move it away, then {again.replace(f' with {flag}', '').replace(' --force', '')}" \
                f" ({flag} replaces it)"
    if isinstance(e, KeyboardInterrupt):
        return Interrupted(f"interrupted while placing {ref}: {partly}", hint=again)
    if isinstance(e, CkptlakeError):
        failure: CkptlakeError = e
    elif isinstance(e, OSError) and (known := _failure(e, destination)) is not None:
        failure = known
    else:
        failure = CkptlakeError(f"{type(e).__name__}: {e}")
    failure.message = f"{failure.message}; {partly}"
    failure.hint = again
    failure.args = (failure.message,)
    return failure


def _leftover_warning(final_root: str) -> list[str]:
    if not (left := abandoned_stagings(final_root)):
        return []
    more = f" and {len(left) - 1} more" if len(left) > 1 else ""
    return [f"interrupted pulls left {format_bytes(sum(n for _, n in left))} in "
            f"{left[0][0]}{more}; delete them if those pulls will not be re-run"]


def _up_to_date(p: _Placement, lake_url: str, progress: Progress,
                started: float) -> PullResult:
    """The result of a pull that finds the destination already holding the version: every
    byte reused, nothing staged (see _Placement.idle)."""
    m = p.m
    progress.start(phase="pull", total_bytes=0, total_files=0)
    progress.finish()
    warnings = _leftover_warning(p.final_root)
    return PullResult(
        warnings=warnings, lake=lake_url, artifact=m.artifact, version=m.version,
        destination=p.final_root, files=len(m.files), bytes_total=m.total_bytes,
        bytes_downloaded=0, bytes_reused=sum(e.size for e in p.reused), bytes_resumed=0,
        seconds=round(time.monotonic() - started, 3), bytes_from_cache=0)


def pull(store: Store, m: Manifest, destination: str, *, force: bool, concurrency: int,
         progress: Progress, lake_url: str, throttle: Throttle | None = None,
         parts: Parts | None = None, cache: ChunkCache | None = None,
         reference: Sequence[str] = (), force_flag: str = FORCE_KEYWORD,
         before_place: "Callable[[], None] | None" = None) -> PullResult:
    """force_flag: how hints spell `force` for the caller (FORCE_KEYWORD, or the CLI's
    "--force").  before_place: called once every byte is staged and verified, before the
    first rename; what it raises fails the pull with nothing placed (the caller's check that
    the version was not deleted meanwhile)."""
    started = time.monotonic()
    _check_outside_lake(m, destination, lake_url)
    try:
        placement = _Placement(m, destination, force, force_flag)
        try:
            _check_landing(placement, lake_url)
            if placement.idle():
                return _up_to_date(placement, lake_url, progress, started)
            try:
                staging = _Staging(placement.final_root, lake_url, m)
            except FileNotFoundError:
                # DEST's parent, found there, was removed since: another pull that had made
                # it failed and removed it (unmake) before this one's staging was in it
                placement.made += makedirs(os.path.dirname(placement.final_root))
                staging = _Staging(placement.final_root, lake_url, m)
        except BaseException:
            unmake(placement.made)
            raise
    except OSError as e:
        if (failure := _failure(e, destination)) is not None:
            raise failure from None
        if e.errno == errno.ENOENT:  # creating DEST's parent or the staging there
            named = os.fsdecode(e.filename) if isinstance(e.filename, (str, bytes)) else None
            shown = _shown(named) or destination
            what = f"create {shown}" if shown == named else f"write to {shown}"
            raise UsageError(f"cannot {what}: {e.strerror}",
                             hint="pull into a directory that exists or can be created"
                             ) from None
        raise
    total = sum(e.size for e in placement.download)
    progress.start(phase="pull", total_bytes=total, total_files=len(placement.download))
    cache = cache.session() if cache is not None else None
    keep = True  # interrupted or storage failing: keep staged chunks for the next attempt
    placing = False
    try:
        _check_renames(placement, staging)
        units = _prepare(staging, placement.download, m.hash)
        if cache is not None:  # (see ChunkCache.protect)
            cache.protect = frozenset(d for d in units
                                      if os.path.isfile(cache.entry_path(m.hash, d)))
        local = local_sources(m, placement.download, placement.reused, placement.finals,
                              {e.path: staging.file(e.path) for e in placement.download},
                              reference)
        fetcher = _Fetcher(store, m, progress, staging, throttle, parts, local, cache,
                           shared_files={staging.file(e.path) for e in placement.download
                                         if len(e.chunks) > 1})
        for _ in bounded_map(fetcher, list(units.values()), workers=concurrency,
                             name="ckptlake-pull"):
            pass
        fetcher.leftovers.flush()
        _check_assembled(m, placement.download, staging)
        if not _NO_SYNC:
            _flush_to_disk(staging.path, [staging.file(e.path) for e in placement.download])
        if before_place is not None:
            before_place()
        placing = True
        _place(placement, staging)
        keep = False
    except BaseException as e:
        if placement.changed:  # keep the staging: the re-run finishes without downloading
            raise _partly_placed(e, placement, destination) from (
                None if isinstance(e, (CkptlakeError, OSError, KeyboardInterrupt)) else e)
        if isinstance(e, (IntegrityError, UnsafeManifest, Conflict, UsageError, NotFound)):
            # nothing worth resuming from, but for something that appeared in the way while
            # placing: every file is verified in staging, for the re-run once it is moved
            keep = placing and isinstance(e, Conflict)
            raise
        if not isinstance(e, OSError):
            raise
        if e.errno in _HOPELESS:
            keep = False  # no retry can succeed on this file system
        if (failure := _failure(e, destination)) is None:
            raise
        raise failure from None
    finally:
        staging.close(keep=keep)
        if not keep and not placing:
            unmake(placement.made)
        progress.finish()
    if cache is not None and cache.failure is None:
        cache.record_version(lake_url, m.artifact, m.version, m.hash, fetcher.object_size)
    warnings = []
    if cache is not None and cache.failure:
        warnings.append(f"{cache.failure}; the pull went on without caching")
    if cache is not None and cache.dropped:
        warnings.append(f"dropped {cache.dropped} corrupt chunk cache "
                        f"entr{'y' if cache.dropped == 1 else 'ies'} in {cache.dir} and "
                        "downloaded those chunks instead")
    warnings += _leftover_warning(placement.final_root)
    return PullResult(
        warnings=warnings,
        lake=lake_url, artifact=m.artifact, version=m.version,
        destination=placement.final_root, files=len(m.files), bytes_total=m.total_bytes,
        bytes_downloaded=fetcher.downloaded.value,
        bytes_reused=sum(e.size for e in placement.reused) + fetcher.copied.value,
        bytes_resumed=fetcher.resumed.value,
        seconds=round(time.monotonic() - started, 3),
        bytes_from_cache=fetcher.cached.value)

