"""The position half of a read-only, seekable binary file: what LakeFile (streamed chunks),
WholeFile (one verified buffer) and the DCP plan reader's RangeStream share, so that a seek
past the end, a negative position or a bad `whence` answers the same way from all three (as
io's own files do), and each class keeps only how it reads."""
from __future__ import annotations

import io
import operator


class SeekableReader(io.RawIOBase):
    """Subclasses set `_pos` (0 at the start) and give `_length()`; `_check_open()` is where
    those that refuse use after close() raise."""

    _pos = 0

    def _length(self) -> int:
        raise NotImplementedError

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    def readable(self) -> bool:
        self._check_open()
        return True

    def seekable(self) -> bool:
        self._check_open()
        return True

    # Read-only as `open(path, "rb")` is: writable() False, and the writing calls raise
    # io.UnsupportedOperation (an OSError and a ValueError, which is what code probing a file
    # object catches), where io.RawIOBase's write raised a bare NotImplementedError.
    def writable(self) -> bool:
        self._check_open()
        return False

    def _read_only(self, op: str) -> io.UnsupportedOperation:
        self._check_open()
        name = getattr(self, "name", "") or "this file"
        return io.UnsupportedOperation(
            f"{op}: {name} is read-only (versions in a lake are immutable; write a new "
            "version with Lake.writer() or Lake.push())")

    def write(self, data: object) -> int:
        raise self._read_only("write")

    def writelines(self, lines: object) -> None:
        raise self._read_only("writelines")

    def truncate(self, size: int | None = None) -> int:
        raise self._read_only("truncate")

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        # TypeError here, as io's files raise it, for 1.5 or "3": accepted, it would fail the
        # next read far from its cause.  Anything with __index__ (numpy ints) is an offset.
        offset, whence = operator.index(offset), operator.index(whence)
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._length() + offset
        else:
            raise ValueError(f"invalid whence ({whence!r})")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos
