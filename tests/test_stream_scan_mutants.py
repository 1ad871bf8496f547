"""Checks in core/streampush.py (Lake.writer) and core/scan.py (push's source scan) that no
other test exercised (mutation review: each was weakened and the suite still passed).

Each test fails with its check removed.  Interleavings come from hooks (a wrapped store call,
a wrapped method), never from thread timing.
"""
from __future__ import annotations

import json
import os
import random
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from ckptlake.errors import SourceChanged, TransferError, UsageError
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

torch = pytest.importorskip("torch")

from test_streamwrite import (FailingStore, _chunks, no_versions,  # noqa: E402
                              torch_bytes)

MiB = 1024 * 1024


def _read_back(lake: Lake, artifact: str) -> bytes:
    with lake.open(artifact + "@latest") as fh:
        return fh.read()


# ---- 1. the pack threshold --------------------------------------------------------------------

def test_writer_round_trips_sizes_around_the_pack_threshold() -> None:
    """A file of exactly the pack threshold (1 MiB, a common tensor size) has already been
    cut into a chunk while written; packing it whole as well stored a broken file: the user
    would read back something other than what was saved."""
    from ckptlake.core.push import PACK_THRESHOLD

    for chunk_size in (MiB, 4 * MiB):
        lake = Lake(MemoryStore(), chunk_size=chunk_size, concurrency=2)
        small = min(PACK_THRESHOLD, chunk_size)
        for i, size in enumerate((small - 1, small, small + 1)):
            data = random.Random(size).randbytes(size)
            with lake.writer(f"a{i}", "m.bin") as f:
                f.write(data)
            assert f.result.version == 1
            assert _read_back(lake, f"a{i}") == data, (chunk_size, size)


# ---- 2. a file shorter than its own layout says --------------------------------------------------

def _short_safetensors() -> bytes:
    header = {"t": {"dtype": "F32", "shape": [MiB], "data_offsets": [0, 4 * MiB]}}
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + random.Random(5).randbytes(2 * MiB + 123)


def test_a_file_shorter_than_its_header_says_is_stored_whole() -> None:
    """Cuts planned past the end of a truncated file (a safetensors whose header promises more
    data, a torch.save archive cut short) are void; the bytes left after the last complete
    cut must still be stored, or the version silently lacks the file's tail."""
    lake = Lake(MemoryStore(), chunk_size=MiB, concurrency=2)
    for name, data in (("m.safetensors", _short_safetensors()),
                       ("m.pt", torch_bytes(1)[:3 * MiB + 5])):
        art = name.replace(".", "-")
        with lake.writer(art, name) as f:
            f.write(data)
        with lake.open(art + "@v1") as fh:
            assert fh.read() == data, name


# ---- 3. a failed commit is raised again, never retried --------------------------------------------

def test_a_commit_that_failed_is_raised_again_and_not_retried() -> None:
    """The commit landed but reported an error: a second close() must raise again, not commit
    a second version of the same file."""
    lake = Lake(MemoryStore(), chunk_size=MiB, concurrency=2)
    f = lake.writer("run", "m.bin")
    real, calls = f._commit, []

    def commit(entry: Any, w: Any) -> Any:
        calls.append(1)
        real(entry, w)
        raise TransferError("commit answer lost")

    f._commit = commit
    f.write(random.Random(0).randbytes(2 * MiB))
    with pytest.raises(TransferError, match="answer lost"):
        f.close()
    with pytest.raises(TransferError, match="answer lost"):
        f.close()
    assert [v.version for v in lake.versions("run")] == [1]
    assert calls == [1]


# ---- 5. an unreadable condemnation record ------------------------------------------------------

def test_an_unreadable_condemnation_record_during_the_write_fails_it() -> None:
    """A condemnation record that cannot be read may name any chunk the write reused: the
    write must fail with nothing committed, not commit a version gc may make incomplete."""
    from ckptlake.core.gc_guard import GcSettings
    from ckptlake.format import layout

    lake = Lake(MemoryStore(), chunk_size=MiB, concurrency=3)
    data = random.Random(8).randbytes(2 * MiB + 3)
    with lake.writer("old", "m.bin") as f:
        f.write(data)
    assert _chunks(lake, "old")
    lake.store.put(layout.GC_SETTINGS_KEY, GcSettings(0, 1, 2).encode(updated="t", updated_by="t"))
    with pytest.raises(TransferError, match="condemned"):
        with lake.writer("new", "m.bin") as f:
            f.write(data)
            lake.store.put(layout.condemned_key("20260101T000000.000000Z", "abcd1234"),
                           b"{not json")
    assert no_versions(lake, "new")


# ---- 6. special files in SOURCE -----------------------------------------------------------------

def test_a_fifo_in_the_source_is_refused(tmp_path: Path) -> None:
    """A FIFO (or socket, device) in the pushed directory cannot be stored as a file: reading
    it would hang the push or store garbage; the scan must name it."""
    from ckptlake.core.scan import scan

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"x")
    os.mkfifo(src / "pipe")
    with pytest.raises(UsageError, match="not a regular file"):
        scan(src)


# ---- 7. a failure at close aborts ------------------------------------------------------------------

def _stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ckptlake-stream")]


def test_an_upload_failure_at_close_closes_the_writer_and_its_threads() -> None:
    """An upload error raised by close() must leave the writer closed, its lock released and
    its upload threads gone; else a training loop leaks threads and the lake's writer slot
    on every failed checkpoint."""
    before = set(_stream_threads())
    lake = Lake(FailingStore(fail_after=0), chunk_size=MiB, concurrency=2)
    f = lake.writer("run", "m.bin")
    real, released = f._release, []

    def release() -> None:
        released.append(1)
        if real is not None:
            real()

    f._release = release
    f.write(random.Random(1).randbytes(MiB + 1))
    with pytest.raises(TransferError):
        f.close()
    assert f.closed
    assert released == [1]
    assert set(_stream_threads()) - before == set()
    assert no_versions(lake, "run")


# ---- 9. an upload error shows at the next write ----------------------------------------------------

def test_a_finished_failed_upload_fails_the_next_write() -> None:
    """An upload that already failed must stop the next write: otherwise the caller keeps
    streaming gigabytes that can never be committed."""
    lake = Lake(FailingStore(fail_after=0), chunk_size=MiB, concurrency=4)
    f = lake.writer("run", "m.bin")
    try:
        f.write(random.Random(1).randbytes(MiB + 1))  # one chunk in flight, failing
        futs = list(f._pending.pending)
        assert futs
        for fut in futs:
            try:
                fut.exception(timeout=5)  # wait until the upload has failed
            except Exception:  # noqa: BLE001
                pass
        assert all(fut.done() for fut in futs)
        with pytest.raises(TransferError, match="connection reset"):
            f.write(b"x")
    finally:
        f.abort()
    assert no_versions(lake, "run")


# ---- 10. abort inside a with block ------------------------------------------------------------------

def test_abort_inside_with_leaves_quietly() -> None:
    """`f.abort()` inside the `with` block: the exit must neither commit nor raise
    "the lake file was aborted" at a user who asked for exactly that."""
    lake = Lake(MemoryStore(), chunk_size=MiB, concurrency=2)
    with lake.writer("run", "m.bin") as f:
        f.write(b"partial")
        f.abort()
    assert no_versions(lake, "run")


# ---- 11. a source file deleted during the push -----------------------------------------------------

def test_a_source_file_deleted_after_the_scan_is_source_changed(tmp_path: Path) -> None:
    """A file removed while being pushed is reported as SourceChanged (exit code, hint "push
    again"), not as a raw FileNotFoundError traceback."""
    from ckptlake.core.scan import scan

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"abc")
    tree = scan(src)
    (src / "a.bin").unlink()
    with pytest.raises(SourceChanged, match="disappeared"):
        tree.files[0].check_unchanged()


# ---- 12. backpressure ----------------------------------------------------------------------------

def test_chunks_in_flight_never_exceed_concurrency() -> None:
    """At most `concurrency` chunks are in flight: it bounds the writer's memory to about
    (concurrency + 2) x chunk size whatever the file size."""
    lake = Lake(MemoryStore(), chunk_size=MiB, concurrency=2)
    f = lake.writer("run", "m.bin")
    real, peak = f._pending.add, [0]

    def add(fut: Any) -> None:
        real(fut)
        peak[0] = max(peak[0], len(f._pending))

    f._pending.add = add
    f.write(random.Random(3).randbytes(8 * MiB + 1))  # one write: no collection in between
    f.close()
    assert peak[0] == 2
    assert f.result.version == 1


# ---- 13. a link to the source's root -----------------------------------------------------------------

def test_a_link_to_the_source_root_is_stored_as_a_link(tmp_path: Path) -> None:
    """`me -> .` points at the pushed directory itself: inside the tree, stored as a link (not
    refused as pointing outside)."""
    from ckptlake.core.scan import scan

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"x")
    os.symlink(".", src / "me")
    tree = scan(src)
    assert tree.symlinks == [("me", ".")]
