"""SeekableReader: the position rules LakeFile, WholeFile and RangeStream share (as io's files)."""
from __future__ import annotations

import io

import pytest

from ckptlake.core.rawio import SeekableReader
from ckptlake.core.reader import LakeFile
from ckptlake.core.whole import WholeFile
from ckptlake.torch.planread import RangeStream


class Ten(SeekableReader):
    def _length(self) -> int:
        return 10


def test_seek_and_tell_like_a_file() -> None:
    f, ref = Ten(), io.BytesIO(bytes(10))
    for offset, whence in [(3, io.SEEK_SET), (4, io.SEEK_CUR), (-2, io.SEEK_END),
                           (25, io.SEEK_SET), (-25, io.SEEK_CUR), (5, io.SEEK_END),
                           (-1, io.SEEK_SET)]:
        try:
            want = ref.seek(offset, whence)
        except ValueError:
            with pytest.raises(ValueError, match="negative seek position"):
                f.seek(offset, whence)
            continue
        assert f.seek(offset, whence) == want == f.tell() == ref.tell()
    with pytest.raises(ValueError, match="negative seek position -6"):
        f.seek(-16, io.SEEK_END)  # BytesIO would clamp to 0; a real file refuses, as here
    assert f.tell() == 15
    with pytest.raises(ValueError, match="invalid whence"):
        f.seek(0, 7)
    assert f.readable() and f.seekable()


def test_closed_refuses() -> None:
    f = Ten()
    f.close()
    for call in (f.tell, f.readable, f.seekable, lambda: f.seek(0)):
        with pytest.raises(ValueError, match="closed file"):
            call()


def test_the_three_readers_share_it() -> None:
    for cls in (LakeFile, WholeFile, RangeStream):
        assert issubclass(cls, SeekableReader)
        assert cls.seek is SeekableReader.seek and cls.tell is SeekableReader.tell


def test_seek_refuses_a_non_integer_like_a_file() -> None:
    """A float offset is a TypeError at seek (as io.BytesIO), not at the next read."""
    f, ref = Ten(), io.BytesIO(bytes(10))
    for offset, whence in [(1.5, io.SEEK_SET), ("3", io.SEEK_SET), (2, 0.0)]:
        with pytest.raises(TypeError):
            ref.seek(offset, whence)
        with pytest.raises(TypeError):
            f.seek(offset, whence)
    assert f.tell() == 0
    assert f.seek(True) == 1  # like BytesIO: a bool is an int
