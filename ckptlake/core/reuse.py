"""Chunk-level reuse on pull: chunk bytes already on this machine are copied, not downloaded.

Pulling v2 over v1 used to keep only whole identical files; one changed tensor in an 87 MiB
file downloaded all of it.  Now, before a chunk is downloaded, the pull looks for its bytes in
local files, in this order (the rule is documented in README "Pull", and bounded so a pull never
hashes a whole tree blindly):

1. files the pull keeps because they are identical: the manifest says which chunk lies at which
   offset, so a chunk they share with a downloaded file is found without guessing;
2. the file being replaced at the destination (`--force`), at the same offset;
3. for each `--reference DIR`: the file at the same relative path, at the same offset; then up
   to `_SAME_SIZE_CANDIDATES` other files of exactly the same size (by path order), found by one
   walk of DIR that stops after `_MAX_INDEXED_FILES` files.

A candidate file that fails _GIVE_UP_AFTER chunks without supplying one is not tried again.
A candidate is used only if its bytes hash to the chunk's digest (or a packed file's own digest),
the same check a download passes, so a modified or truncated local file costs a read and a hash,
never a wrong byte: the chunk is then downloaded.
"""
from __future__ import annotations

import os
import stat
import threading
from typing import Sequence

from ..format.header import digest
from ..format.manifest import FileEntry, Manifest
from .fswalk import walk

_SAME_SIZE_CANDIDATES = 2
_MAX_INDEXED_FILES = 10_000
_GIVE_UP_AFTER = 16  # chunks a local candidate may fail to supply before it is dropped


class LocalSources:
    """For each staged file: local files that may hold its bytes at the same offsets; for each
    chunk digest: (path, offset, length) places in kept files that hold it."""

    def __init__(self, candidates: dict[str, list[str]],
                 known: dict[str, list[tuple[str, int]]]) -> None:
        self.candidates = candidates
        self.known = known
        self._lock = threading.Lock()
        self._misses: dict[str, int] = {}  # candidate -> chunks it failed to supply
        self._hits: set[str] = set()  # candidates that supplied at least one chunk

    def _worth_trying(self, path: str) -> bool:
        """A candidate that never matched in _GIVE_UP_AFTER tries is dropped: an unrelated
        old file (--force over another model) then costs a few chunk reads, not a read and a
        hash of all of it."""
        with self._lock:
            return path in self._hits or self._misses.get(path, 0) < _GIVE_UP_AFTER

    def _tried(self, path: str, hit: bool) -> bool:
        with self._lock:
            if hit:
                self._hits.add(path)
            else:
                self._misses[path] = self._misses.get(path, 0) + 1
        return hit

    def _try(self, path: str, offset: int, into: memoryview, algo: str, expected: str, *,
             whole: int | None = None) -> bool:
        if not self._worth_trying(path):
            return False
        return self._tried(path, _read_verified(path, offset, into, algo, expected,
                                                whole=whole))

    def __bool__(self) -> bool:
        return bool(self.candidates) or bool(self.known)

    def fill(self, unit: "object", buffer: memoryview, algo: str) -> memoryview | None:
        """Read the unit's chunk bytes from local files into `buffer` and verify them; None
        unless every target's bytes were found.

        A whole chunk (a slice) is found at one place and serves every target; a pack is
        assembled piece by piece, each packed file checked against its own digest."""
        targets = unit.targets  # type: ignore[attr-defined]
        chunk_digest: str = unit.digest  # type: ignore[attr-defined]
        end = 0
        slices = [t for t in targets if t[4] is None]
        if slices:
            length = slices[0][3]
            known = self.known.get(chunk_digest, ())
            places = [(c, t[1]) for t in slices for c in self.candidates.get(t[0], ())]
            if not (any(_read_verified(p, off, buffer[:length], algo, chunk_digest)
                        for p, off in known)
                    or any(self._try(p, off, buffer[:length], algo, chunk_digest)
                           for p, off in places)):
                return None
            end = length
        for path, file_offset, chunk_offset, length, file_digest in targets:
            if file_digest is None:
                continue
            piece = buffer[chunk_offset:chunk_offset + length]
            if len(piece) != length:
                return None
            if not any(self._try(c, file_offset, piece, algo, file_digest, whole=length)
                       for c in self.candidates.get(path, ())):
                return None
            end = max(end, chunk_offset + length)
        return buffer[:end]


def _read_verified(path: str, offset: int, into: memoryview, algo: str, expected: str, *,
                   whole: int | None = None) -> bool:
    """Fill `into` from `path` at `offset`; True if the bytes hash to `expected`.  `whole`:
    the file must be exactly that long (a packed file is compared whole)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if whole is not None and os.fstat(fd).st_size != whole:
            return False
        got = 0
        while got < len(into):
            n = os.preadv(fd, [into[got:]], offset + got)
            if n == 0:
                return False
            got += n
    except OSError:
        return False
    finally:
        os.close(fd)
    return digest(algo, into) == expected


def local_sources(m: Manifest, download: Sequence[FileEntry], reused: Sequence[FileEntry],
                  finals: dict[str, str], staged: dict[str, str],
                  references: Sequence[str]) -> LocalSources | None:
    """The plan (see the module docstring).  `finals`: entry path -> final path; `staged`:
    entry path -> staged path (the key the fetcher's targets use)."""
    known: dict[str, list[tuple[str, int]]] = {}
    for e in reused:
        offset = 0
        for ref in e.chunks:
            if ref.offset is None:
                known.setdefault(ref.digest, []).append((finals[e.path], offset))
            offset += ref.size
    by_size = _index_sizes(references) if references else {}
    candidates: dict[str, list[str]] = {}
    for e in download:
        found: list[str] = []
        final = finals.get(e.path)
        if final is not None and _regular(final):
            found.append(final)
        rel = e.path.split("/")
        if m.kind == "file":
            rel = rel[-1:]
        for ref_dir in references:
            p = os.path.join(ref_dir, *rel)
            if _regular(p) and p not in found:
                found.append(p)
        same = [p for p in by_size.get(e.size, ()) if p not in found]
        found += same[:_SAME_SIZE_CANDIDATES]
        if found:
            candidates[staged[e.path]] = found
    if not candidates and not known:
        return None
    return LocalSources(candidates, known)


def _regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _index_sizes(references: Sequence[str]) -> dict[int, list[str]]:
    """Regular files under the reference directories by size, at most _MAX_INDEXED_FILES."""
    out: dict[int, list[str]] = {}
    seen = 0
    for ref_dir in references:
        for dirpath, dirnames, filenames in walk(ref_dir):
            # staging directories of pulls hold preallocated, partly written files
            dirnames[:] = sorted(d for d in dirnames if ".ckptlake-pull-" not in d)
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_size > 0:
                    out.setdefault(st.st_size, []).append(path)
                seen += 1
                if seen >= _MAX_INDEXED_FILES:
                    return out
    return out
