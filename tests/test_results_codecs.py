"""A zstd frame followed by other bytes is corrupt on every read path: `cat` and plain `verify`
(one-shot decode) said what `pull` and `verify --read-data` (buffer decode) refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.format import codecs, layout
from ckptlake.format.header import MIN_CHUNK_SIZE

zstandard = pytest.importorskip("zstandard")
TEXT = b"".join(b'{"step": %d, "loss": 2.31}\n' % i for i in range(20_000))


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def zstd_frame(tail: bytes) -> bytes:
    body = zstandard.ZstdCompressor(level=1).compress(TEXT)
    return codecs.HEAD.pack(codecs.MAGIC, codecs.CODEC_ZSTD, 0, 0, len(TEXT)) + body + tail


@pytest.mark.parametrize("tail", [b"\0" * 10, b"\x28\xb5\x2f\xfd", b"x",
                                  zstandard.ZstdCompressor().compress(b"more")],
                         ids=["zeros", "a-magic", "one-byte", "another-frame"])
def test_bytes_after_the_zstd_frame_are_corrupt_on_both_paths(tail: bytes) -> None:
    assert bytes(codecs.decode(zstd_frame(b""))) == TEXT
    with pytest.raises(codecs.CodecError, match=f"{len(tail)} bytes after its frame"):
        codecs.decode(zstd_frame(tail))
    with pytest.raises(codecs.CodecError, match=f"{len(tail)} bytes after its frame"):
        codecs.decode(zstd_frame(tail), into=bytearray(len(TEXT)))


def test_a_truncated_zstd_frame_is_corrupt_on_both_paths() -> None:
    frame = zstd_frame(b"")[:-5]
    for into in (None, bytearray(len(TEXT))):
        with pytest.raises(codecs.CodecError):
            codecs.decode(frame, into=into)


def test_cat_verify_and_pull_agree_on_a_zstd_chunk_with_bytes_after_it(
        local_lake_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "log.jsonl").write_bytes(TEXT)
    lake = ckptlake.open(local_lake_url, chunk_size=MIN_CHUNK_SIZE)
    lake.push(src, "z", compression="auto")
    m = json.loads(lake.store.get(layout.version_key("z", 1)))
    (d,) = m["stored"]
    key = layout.chunk_key(d)
    body = lake.store.get(key)
    assert codecs.describe(body) == "zstd"
    assert cli("verify", "--lake", local_lake_url).exit_code == 0
    lake.store.put(key, body + b"\0" * 10)
    v = cli("verify", "--lake", local_lake_url)
    assert v.exit_code == 5 and "no problems found" not in v.stdout
    assert "z@v1" in v.stdout
    c = cli("cat", "z", "log.jsonl", "--lake", local_lake_url)
    assert c.exit_code == 5 and key in c.stderr
    p = cli("pull", "z", tmp_path / "dest", "--lake", local_lake_url)
    assert p.exit_code == 5 and key in p.stderr
    assert not (tmp_path / "dest").exists()
