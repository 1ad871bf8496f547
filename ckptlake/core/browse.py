"""Part of a version: listing its files (`ls REF`), choosing some (`pull REF DEST PATH...`,
`--include`/`--exclude`) and reading one (`cat REF PATH`).

Why a manifest *view* rather than a separate code path: a partial pull is an ordinary pull of a
manifest that mentions fewer files, so the egress estimate, staging, verification, resume and
the result document all follow from the one pull machinery (core/pull.py) unchanged.  The view
remembers the whole manifest (chunk objects are sized from it: a pack is fetched and verified
whole) and what selected it (a partial pull stages apart from a whole one, see
pull.staging_dir).

Selection rule (README, "Taking part of a version"): a file, symlink or empty directory of the
version is selected if it matches any PATH or any --include glob (everything, when neither is
given) and no --exclude glob.  A PATH is an exact path or a directory prefix (`tokenizer` or
`tokenizer/` selects everything below it).  A glob is matched (fnmatch, case-sensitive) against
the whole relative path and against each of its parent directories, so `*` (and `**`) also
match '/': `--include '*.json'` takes JSON files at any depth, `--exclude optimizer` a whole
directory.  Each PATH and --include must select something, else NotFound (exit 3).
"""
from __future__ import annotations

import dataclasses
import os
import posixpath
import shlex
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Callable, Iterator, Sequence

from ..errors import CkptlakeError, IntegrityError, NotFound, UsageError
from ..format import layout
from ..format.header import digest as _digest
from ..format.manifest import FileEntry, LinkResolver, Manifest
from ..store.base import Store
from . import chunkio
from .chunkio import RangeReader


@dataclass(frozen=True)
class ManifestView(Manifest):
    """A manifest restricted to a selection of its entries (never written anywhere)."""

    whole: Manifest | None = None
    selection: tuple[str, ...] = ()  # what chose the entries, for the staging identity


def whole(m: Manifest) -> Manifest:
    """The complete manifest behind a view (or the manifest itself)."""
    return getattr(m, "whole", None) or m


def object_sizes(m: Manifest) -> dict[str, int]:
    """digest -> bytes of the chunk object, as far as the whole version tells (a pack is as
    long as its last file, whichever files a view keeps)."""
    out: dict[str, int] = {}
    for f in whole(m).files:
        for c in f.chunks:
            end = (c.offset or 0) + c.size
            if end > out.get(c.digest, 0):
                out[c.digest] = end
    return out


def _clean(path: "str | os.PathLike[str]") -> str:
    """A path as `ls` shows it, less a leading "./" and slashes at its ends.  A backslash and a
    space are parts of a name (a push stores them as given): read as "/" and stripped, `a\\b`
    and `"x "` named other files, `a/b` and `x`, whose bytes came out with exit 0."""
    p = _path_text(path)
    while p.startswith("./"):
        p = p[2:]
    return p.strip("/")


def _path_text(path: Any) -> str:
    """A path inside a version, as str or os.PathLike (a pathlib.Path, as for push and pull's
    local paths); anything else is a UsageError, not an AttributeError from deep inside."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise UsageError(f"a path inside a version must be a string, got {path!r}")
    return path


def _parents(path: str) -> Iterator[str]:
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def _glob_hits(path: str, pattern: str) -> bool:
    return fnmatchcase(path, pattern) or any(fnmatchcase(d, pattern) for d in _parents(path))


def _path_hits(path: str, wanted: str) -> bool:
    return wanted == "" or path == wanted or path.startswith(wanted + "/")


def select(m: Manifest, paths: Sequence[str] = (), include: Sequence[str] = (),
           exclude: Sequence[str] = ()) -> Manifest:
    """The view of `m` holding the entries the selection rule (module docstring) picks; `m`
    itself when nothing restricts it.  NotFound if a PATH or --include picks nothing, or if
    the excludes leave nothing."""
    # One string is one pattern (not its characters).
    paths, include, exclude = ([x] if isinstance(x, str) else list(x)
                               for x in (paths, include, exclude))
    paths = [str(p) for p in paths]
    include, exclude = [str(g) for g in include], [str(g) for g in exclude]
    if not paths and not include and not exclude:
        return m
    for g in include + exclude:
        if not g.strip():
            raise UsageError("empty --include/--exclude pattern")
    wanted = [(p, _clean(p)) for p in paths]
    for raw, p in wanted:
        if not p:
            raise UsageError(f"empty path {raw!r}: name a file or directory of the version")
    name = f"{m.artifact}@v{m.version}"
    entries: list[tuple[str, Any]] = [(e.path, e) for e in m.files] + [(d, d) for d in m.dirs]
    hit_paths: set[str] = set()
    hit_globs: set[str] = set()

    def chosen(path: str) -> bool:
        ok = not wanted and not include
        for raw, p in wanted:
            if _path_hits(path, p):
                hit_paths.add(raw)
                ok = True
        for g in include:
            if _glob_hits(path, g):
                hit_globs.add(g)
                ok = True
        return ok and not any(_glob_hits(path, g) for g in exclude)

    keep = {path for path, _ in entries if chosen(path)}
    # A directory of the version that is not empty has no entry of its own: a PATH naming it
    # (e.g. `tokenizer`) counts as hit through the files below it (_path_hits above).
    missed = [raw for raw, _ in wanted if raw not in hit_paths] + \
        [g for g in include if g not in hit_globs]
    if missed:
        what = ", ".join(repr(x) for x in missed)
        globby = any(c in raw for raw, _ in wanted if raw in missed for c in "*?[")
        raise NotFound(f"{what} match{'es' if len(missed) == 1 else ''} nothing in {name}",
                       hint=("PATH arguments are literal paths; pass a pattern with --include"
                             if globby else f"list its files with: ckptlake ls {name}"))
    if not keep:
        raise NotFound(f"the selection leaves nothing of {name} (every match is excluded)",
                       hint=f"list its files with: ckptlake ls {name}")
    files = tuple(e for e in m.files if e.path in keep)
    if len(files) == len(m.files) and set(m.dirs) <= keep:
        return m
    selection = tuple(["path:" + p for _, p in wanted] + ["include:" + g for g in include]
                      + ["exclude:" + g for g in exclude])
    fields = {f.name: getattr(m, f.name) for f in dataclasses.fields(Manifest)}
    fields.update(files=files, dirs=tuple(d for d in m.dirs if d in keep))
    return ManifestView(**fields, whole=whole(m), selection=selection)


# ---- ls REF ---------------------------------------------------------------------------------

def entry_kind(e: FileEntry) -> str:
    if e.symlink is not None:
        return "symlink"
    if e.tensors is not None:
        return "safetensors"
    return "file"


def list_files(m: Manifest, prefix: str | None = None) -> list[dict[str, Any]]:
    """The version's files, symlinks and empty directories, sorted by path; with `prefix`,
    those at or below that path (NotFound if none)."""
    rows: list[dict[str, Any]] = []
    for e in m.files:
        row: dict[str, Any] = {"path": e.path, "size": e.size, "kind": entry_kind(e)}
        if e.symlink is not None:
            row["target"] = e.symlink
        if e.tensors is not None:
            row["tensors"] = len(e.tensors)
        if e.executable:
            row["executable"] = True
        rows.append(row)
    rows += [{"path": d, "size": 0, "kind": "dir"} for d in m.dirs]
    if prefix is not None:
        # read as `cat` reads a path (walk_path): `ls V .`, `ls V sub/../g.txt` and `ls V
        # cur/x` (cur a symlink) named nothing while `cat` found the same paths
        name = f"{m.artifact}@v{m.version}"
        links = {e.path: e.symlink for e in m.files if e.symlink is not None}
        p = "/".join(walk_path(prefix, links, name, follow_last=False,
                               dirs=lambda: version_dirs(m)))
        if p:
            rows = [r for r in rows if _path_hits(r["path"], p)]
        if p and not rows:
            led = f", which leads to {_shown(p)!r}," if p != _clean(prefix) else ""
            raise _exact(NotFound(f"{_path_text(prefix)!r}{led} matches nothing in {name}",
                                  hint=f"list its files with: ckptlake ls {name}"), prefix, p,
                         links)
    return sorted(rows, key=lambda r: r["path"])


# ---- cat REF PATH ---------------------------------------------------------------------------

def version_dirs(m: Manifest) -> set[str]:
    """Every directory of the version: each entry's parents, and its empty directories."""
    out = set(m.dirs)
    for e in m.files:
        out.update(_parents(e.path))
    return out


def walk_path(path: "str | os.PathLike[str]", links: dict[str, str], where: str, *,
              follow_last: bool, dirs: "Callable[[], set[str]] | None" = None) -> list[str]:
    """The components of where `path` leads in a version whose symlinks are `links`: "." and
    ".." segments as the disk reads them, and each symlink met on the way followed as a pull
    would make the disk follow it (a ".." after it climbs from where it leads); the last
    component too if `follow_last`.  Shared by `cat` (find_file) and `lake.open`
    (core/reader.py), so that they agree on what a path names."""
    resolver = LinkResolver(links, where=where)
    segments = _path_text(path).split("/")  # (no backslash or space rewritten: _clean)
    cur: list[str] = []
    known: set[str] | None = None  # the version's directories, once a ".." needs them
    for i, seg in enumerate(segments):
        if seg in ("", "."):
            continue
        if seg == "..":
            if not cur:
                raise NotFound(f"{path!r} leads outside {where}")
            if dirs is not None:
                # as the disk reads it: `missing/../f` and `file.txt/../f` name nothing
                known = known if known is not None else dirs()
                if (here := "/".join(cur)) not in known:
                    raise NotFound(f"{_path_text(path)!r} goes through {here!r}, which is no "
                                   f"directory of {where}",
                                   hint=f"list its files with: ckptlake ls {where}")
            cur.pop()
            continue
        cur.append(seg)
        p = "/".join(cur)
        if p in links and (follow_last or any(segments[i + 1:])):
            cur = list(resolver.resolve(p)[0])
    return cur


def names_a_directory(path: "str | os.PathLike[str]") -> bool:
    """Does PATH end as only a directory's name can (`f.txt/`, `f.txt/.`)?  The disk answers
    "Not a directory" for a file named so; cat and lake.open served it."""
    text = _path_text(path)
    return text.endswith("/") or text.endswith("/.") or text == "."


def _exact(err: CkptlakeError, arg: Any, resolved: str, links: dict[str, str]
           ) -> CkptlakeError:
    """`err` with the path the user gave (and the version's path it names, unless a link was
    followed on the way: a link's target is free text, redacted) marked as no secret
    (CkptlakeError.exact), in every form a message or hint shows them."""
    paths = [arg] if isinstance(arg, str) else []
    if paths and not _through_link(arg, links):
        paths.append(resolved)
    err.exact = tuple(form for path in paths for form in (path, _shown(path), _arg(path)))
    return err


def _through_link(arg: str, links: dict[str, str]) -> bool:
    """Does `arg` (as written, "." and ".." included) pass a symlink of the version on its
    way (walk_path would follow it)?  Without one, the path it names is made of its own
    parts (`key=2026/./part.txt` is `key=2026/part.txt`)."""
    cur: list[str] = []
    for seg in arg.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if cur:
                cur.pop()
            continue
        cur.append(seg)
        if "/".join(cur) in links:
            return True
    return False


def _shown(path: str) -> str:
    """A version's path in a message: as it is, unless a terminal would act on it (an escape
    sequence, a newline): then with C-style escapes, as `ls` shows it."""
    return path if path.isprintable() else repr(path)[1:-1]


def _arg(path: str) -> str:
    """A version's path as a shell argument in a hint, so that the command works as shown:
    quoted, and written with $'...' escapes if it holds characters a terminal acts on."""
    if path.isprintable():
        return shlex.quote(path)
    out = []
    for c in path:
        if c in "\\'":
            out.append("\\" + c)
        elif c.isprintable():
            out.append(c)
        else:
            out.append(f"\\x{ord(c):02x}" if ord(c) < 0x100 else
                       f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
    return "$'" + "".join(out) + "'"


def find_file(m: Manifest, path: str) -> FileEntry:
    """The regular file at `path`; UsageError (exit 2) for a directory or a symlink, NotFound
    (exit 3) for a path the version does not have.

    Read as `lake.open` reads it (core/reader.py), so that `cat` and `open` agree on what a
    path names: "." and ".." segments, and a symlink of the version met on the way (`cur/f`
    with `cur -> step1`) followed as a pull would make the disk follow it, a ".." after it
    climbing from where it leads.  Only a path that ends at a symlink is refused: cat shows a
    file's bytes, and which file the link names is for the user to see (the hint)."""
    name = f"{m.artifact}@v{m.version}"
    links = {e.path: e.symlink for e in m.files if e.symlink is not None}
    p = "/".join(walk_path(path, links, name, follow_last=False, dirs=lambda: version_dirs(m)))
    if p in links and names_a_directory(path):
        # `lnk/` as the disk reads it: the link followed, and a file there is no directory
        try:
            there = "/".join(walk_path(p, links, name, follow_last=True))
        except (NotFound, UsageError, IntegrityError):
            there = None
        if there is not None and any(e.path == there and e.symlink is None for e in m.files):
            raise NotFound(f"{_path_text(path)!r}: {_shown(p)} in {name} leads to the file "
                           f"{_shown(there)}, not a directory",
                           hint=f"ckptlake cat {name} {_arg(there)}")
    if p in links:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(p), links[p]))
        hint = f"cat its target: ckptlake cat {name} {_arg(target)}"
        if (where := _dir_behind(m, links, name, p)) is not None:
            # `cat` of a directory is refused too: the hint must be a command that works
            hint = f"list its target with: ckptlake ls {name} {_arg(where) if where else ''}"
        raise UsageError(f"{_shown(p)} in {name} is a symlink (-> {_shown(links[p])}), not a "
                         "file", hint=hint.rstrip())
    for e in m.files:
        if e.path == p and e.symlink is None:
            if names_a_directory(path):
                raise _exact(NotFound(f"{_path_text(path)!r}: {_shown(p)} in {name} is a file, "
                                      "not a directory", hint=f"ckptlake cat {name} {_arg(p)}"),
                             path, p, links)
            return e
    if p == "" or p in m.dirs or any(e.path.startswith(p + "/") for e in m.files):
        raise _exact(UsageError(f"{_shown(p) or '/'} in {name} is a directory, not a file",
                                hint=f"list it with: ckptlake ls {name} "
                                     f"{_arg(p) if p else ''}".rstrip()), path, p, links)
    hint = f"list its files with: ckptlake ls {name}"
    if p != _clean(path):
        raise _exact(NotFound(f"{path!r} in {name} leads to {p!r}, which the version does "
                              "not hold", hint=hint), path, p, links)
    raise _exact(NotFound(f"{path!r} is not a file of {name}", hint=hint), path, p, links)


def _dir_behind(m: Manifest, links: dict[str, str], name: str, link: str) -> str | None:
    """The directory of the version the symlink `link` leads to (through any further links;
    "" for the root), or None: a file, or a dangling or unsafe link, whose hint stays `cat`."""
    try:
        p = "/".join(walk_path(link, links, name, follow_last=True))
    except (NotFound, UsageError, IntegrityError):
        return None
    if p == "" or p in m.dirs or any(e.path.startswith(p + "/") for e in m.files):
        return p
    return None


def read_file(store: Store, m: Manifest, entry: FileEntry, *, throttle: Any = None
              ) -> Iterator[bytes]:
    """The file's bytes, chunk by chunk, each verified before it is yielded: a consumer never
    sees a byte that did not match its digest (IntegrityError instead, and nothing after).

    A whole chunk object is fetched and checked against its digest; a packed file is fetched
    as the byte range of its pack it occupies (one ranged GET), checked against the file's own
    digest.  So a small file costs one request, whatever the size of the version.
    """
    name = f"{m.artifact}@v{m.version}"
    packed: list[bytes] = []  # a packed file is verified whole (its digest), then yielded
    ranges = RangeReader(store, m.hash, m.stored, name, keep=1)
    def packed_bytes(rr: RangeReader) -> bytes:
        out = []
        for r in entry.chunks:
            if throttle is not None:
                throttle.acquire(rr.stored.get(r.digest, r.size) or r.size)
            out.append(bytes(rr.get_range(r.digest, r.offset or 0, r.size)))
        return b"".join(out)

    if entry.digest is not None and entry.chunks and all(r.offset is not None
                                                         for r in entry.chunks):
        data = packed_bytes(ranges)
        if (_digest(m.hash, data) != entry.digest
                and chunkio.retry_whole(m.stored, [r.digest for r in entry.chunks])):
            # a stale hint: a pack read by range is stored encoded; read the packs whole
            data = packed_bytes(RangeReader(store, m.hash, chunkio.EveryChunk(), name, keep=1))
        if len(data) != entry.size or _digest(m.hash, data) != entry.digest:
            raise _corrupt(layout.chunk_key(entry.chunks[0].digest), name, entry)
        yield data
        return
    for ref in entry.chunks:
        key = layout.chunk_key(ref.digest)
        if throttle is not None:
            throttle.acquire(m.stored.get(ref.digest, ref.size))
        if ref.offset is None:
            # decoded if it is a frame, and verified against the chunk's digest
            yield bytes(chunkio.fetch(store, m.hash, ref.digest, raw_size=ref.size, where=name))
            continue
        data = bytes(ranges.get_range(ref.digest, ref.offset, ref.size)) if ref.size else b""
        if len(data) != ref.size:
            raise _corrupt(key, name, entry)
        packed.append(data)
    if entry.digest is not None:
        data = b"".join(packed)
        if _digest(m.hash, data) != entry.digest:
            raise _corrupt(layout.chunk_key(entry.chunks[0].digest), name, entry)
        yield data


def _corrupt(key: str, name: str, entry: FileEntry) -> IntegrityError:
    return IntegrityError(f"chunk {key} of {name} is corrupt (its bytes do not match their "
                          f"digest); {entry.path} stops before it",
                          hint="run: ckptlake verify " + name)
