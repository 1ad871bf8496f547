"""Large chunk objects move in parts: multipart uploads up, parallel ranged GETs down."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import ckptlake
from ckptlake.errors import IntegrityError, NotFound, TransferError, TransientError, UsageError
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore
from ckptlake.store.retry import RetryingStore
from ckptlake.transfer.parts import MAX_PARTS, Parts, part_ranges, part_size_for

MiB = 1024 * 1024
GiB = 1024 * MiB

# 12 MiB chunks, parts from 6 MiB on, 5 MiB each: a 30 MiB file is chunks of 12, 12 and 6 MiB,
# sent as 3 + 3 + 2 parts.
SETTINGS = {"chunk_size": 12 * MiB, "multipart_threshold": 6 * MiB, "part_size": 5 * MiB}
PARTS_OF_30MIB = 8


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total = 0
        self.steps: list[int] = []

    def start(self, **_: object) -> None: ...

    def advance(self, nbytes: int) -> None:
        with self.lock:
            self.total += nbytes
            self.steps.append(nbytes)

    def retry(self, **_: object) -> None: ...

    def finish(self) -> None: ...


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(os.urandom(30 * MiB))
    (src / "config.json").write_bytes(b'{"layers": 2}')
    return src


def test_part_size_grows_so_no_upload_needs_more_than_10000_parts() -> None:
    assert part_size_for(100 * MiB, 16 * MiB) == 16 * MiB
    assert part_size_for(10 * MiB, 1 * MiB) == 5 * MiB  # S3's minimum part
    big = 200 * GiB
    assert part_size_for(big, 16 * MiB) == -(-big // MAX_PARTS) > 16 * MiB
    assert len(part_ranges(big, part_size_for(big, 16 * MiB))) <= MAX_PARTS
    ranges = part_ranges(12 * MiB, 5 * MiB)
    assert ranges == [(1, 0, 5 * MiB), (2, 5 * MiB, 5 * MiB), (3, 10 * MiB, 2 * MiB)]
    parts = Parts(threshold=64 * MiB, part_size=16 * MiB)
    assert parts.applies(64 * MiB) and not parts.applies(64 * MiB - 1)
    assert not Parts(threshold=5 * MiB, part_size=16 * MiB).applies(16 * MiB)  # one part: a PUT


def test_large_chunks_go_up_in_parts_and_come_down_as_ranges(tmp_path: Path) -> None:
    store = MemoryStore()
    lake = Lake(store, concurrency=3, **SETTINGS)
    src = _source(tmp_path)
    up = Recorder()
    r = lake.push(src, "m/big", progress=up)
    assert store.calls["create_multipart"] == store.calls["complete_multipart"] == 3
    assert store.calls["upload_part"] == PARTS_OF_30MIB
    assert list(store.list_multipart("")) == []
    assert up.total == r.bytes_scanned == 30 * MiB + 13  # each byte reported once
    assert 5 * MiB in up.steps  # ... part by part, not one step per 12 MiB chunk

    down = Recorder()
    out = lake.pull("m/big", tmp_path / "out", progress=down)
    assert (tmp_path / "out" / "model.bin").read_bytes() == (src / "model.bin").read_bytes()
    assert (tmp_path / "out" / "config.json").read_bytes() == b'{"layers": 2}'
    assert store.calls["get_range"] == PARTS_OF_30MIB
    assert down.total == out.bytes_total and 5 * MiB in down.steps
    lake.close()


def test_chunks_below_the_threshold_are_one_put_and_one_get_each(tmp_path: Path) -> None:
    store = MemoryStore()
    lake = Lake(store, chunk_size=12 * MiB, concurrency=3)  # default threshold: 256 MiB
    src = _source(tmp_path)
    lake.push(src, "m/big")
    lake.pull("m/big", tmp_path / "out")
    assert store.calls["create_multipart"] == store.calls["get_range"] == 0
    assert (tmp_path / "out" / "model.bin").read_bytes() == (src / "model.bin").read_bytes()


class _FailingPart(MemoryStore):
    """upload_part fails for part 2 (of every upload, or of the first `times` tries)."""

    def __init__(self, error: Exception, times: int = 10**9) -> None:
        super().__init__()
        self.error, self.times = error, times

    def upload_part(self, key, upload_id, part_number, data):  # type: ignore[override]
        if part_number == 2 and self.times > 0:
            self.times -= 1
            self.calls["upload_part"] += 1
            raise self.error
        return super().upload_part(key, upload_id, part_number, data)


def test_a_part_that_fails_for_good_aborts_the_upload_and_commits_nothing(
        tmp_path: Path) -> None:
    store = _FailingPart(TransferError("part refused"))
    lake = Lake(store, concurrency=2, **SETTINGS)
    with pytest.raises(TransferError, match="part refused"):
        lake.push(_source(tmp_path), "m/big")
    assert store.calls["abort_multipart"] >= 1
    assert store.calls["abort_multipart"] == store.calls["create_multipart"]
    assert list(store.list_multipart("")) == []  # nothing left for gc to find
    with pytest.raises(NotFound):
        lake.resolve("m/big")


def test_a_transient_part_failure_is_retried_alone(tmp_path: Path) -> None:
    inner = _FailingPart(TransientError("503 SlowDown"), times=1)
    store = RetryingStore(inner, base_delay=0, sleep=lambda s: None)
    lake = Lake(store, concurrency=2, **SETTINGS)
    src = _source(tmp_path)
    lake.push(src, "m/big")
    assert inner.calls["upload_part"] == PARTS_OF_30MIB + 1  # one part again, not the chunk
    assert inner.calls["create_multipart"] == 3 and inner.calls["abort_multipart"] == 0
    lake.pull("m/big", tmp_path / "out")
    assert (tmp_path / "out" / "model.bin").read_bytes() == (src / "model.bin").read_bytes()


def test_a_corrupt_large_chunk_is_refused_after_its_ranged_read(tmp_path: Path) -> None:
    store = MemoryStore()
    lake = Lake(store, concurrency=2, **SETTINGS)
    lake.push(_source(tmp_path), "m/big")
    key = next(k for k in store.keys() if k.startswith("chunks/")
               and len(store.get(k)) == 12 * MiB)
    data = bytearray(store.get(key))
    data[7 * MiB] ^= 1  # one bit, in the second part
    store.corrupt(key, bytes(data))
    with pytest.raises(IntegrityError, match="corrupt"):
        lake.pull("m/big", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_part_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="part size must be between 5MiB and 1GiB"):
        Lake(MemoryStore(), part_size=4 * MiB)
    with pytest.raises(UsageError, match="multipart threshold must be between 5MiB and 5GiB"):
        ckptlake.open(str(tmp_path / "lake"), multipart_threshold=6 * GiB)
    cfg = tmp_path / "ckptlake.yaml"
    cfg.write_text("lake: ./lake\nmultipart_threshold: 128MiB\npart_size: 32 MiB\n")
    lake = ckptlake.open(config=str(cfg))
    assert (lake.parts.threshold, lake.parts.part_size) == (128 * MiB, 32 * MiB)
    lake.close()


@pytest.mark.seaweedfs
def test_multipart_round_trip_on_a_real_s3_server(s3_lake_url: str, tmp_path: Path) -> None:
    lake = ckptlake.open(s3_lake_url, concurrency=4, **SETTINGS)
    src = _source(tmp_path)
    lake.push(src, "m/big")
    infos = [i for i in lake.store.list("chunks/") if i.size >= 6 * MiB]
    # S3 gives a multipart object the ETag "<md5 of the part md5s>-<number of parts>"
    assert sorted(i.etag.strip('"').rsplit("-", 1)[-1] for i in infos) == ["2", "3", "3"]
    assert list(lake.store.list_multipart("")) == []
    lake.pull("m/big", tmp_path / "out")
    assert (tmp_path / "out" / "model.bin").read_bytes() == (src / "model.bin").read_bytes()
    lake.close()
