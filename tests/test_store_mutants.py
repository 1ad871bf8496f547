"""Checks of the store and transfer layers that a mutation review found no test exercising.

Each test here guards one line whose removal the rest of the suite did not notice: a short
read that must not pass for a whole body, parts and map items that must not outlive the call
that started them, stop checks before an attempt, MemoryStore's S3-like refusals of a badly
listed multipart completion, a temp file left behind, a create that must not overwrite.
"""
from __future__ import annotations

import errno
import io
import os
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from test_store_retry import FakeStore
from test_store_s3_errors import store, stub  # noqa: F401 (fixtures)

from ckptlake.core.createonce import create_once
from ckptlake.errors import (CkptlakeError, Interrupted, PreconditionFailed, TransferError,
                             TransientError)
from ckptlake.store.base import Store
from ckptlake.store.local import TMP_PREFIX, LocalStore
from ckptlake.store.memory import MemoryStore
from ckptlake.store.retry import RetryingStore
from ckptlake.store.s3 import S3Store
from ckptlake.transfer.parts import Parts
from ckptlake.transfer.pool import bounded_map, new_stop, stop_event, stopped_by

MiB = 1024 * 1024
WAIT = 30  # bounded waits: a broken fix fails instead of hanging the suite
# How long a part (or map item) that is still running holds on once the error has been raised
# to its caller: long enough for that caller to look, short enough to keep the test fast.  The
# correct code waits for it (so the test passes, 0.25 s later); a mutant that does not wait has
# raised long before it ends.
LINGER = 0.25


def _parts(workers: int = 3) -> Parts:
    """12 MiB objects in 5 MiB parts: parts 1, 2 and 3 (5, 5 and 2 MiB)."""
    return Parts(threshold=6 * MiB, part_size=5 * MiB, workers=workers)


# ---- A: a short body read into the caller's buffer ---------------------------------------------

@pytest.mark.parametrize("call", ["get_into", "get_range_into"])
def test_short_body_read_into_a_buffer_is_transient(store: S3Store,  # noqa: F811
                                                    stub: Stubber, call: str) -> None:
    """A connection cut after 3 of 10 bytes must be retried, not handed on as 10 bytes of which
    7 are whatever the reused buffer held before (a previous chunk's bytes)."""
    response: dict[str, Any] = {"Body": StreamingBody(io.BytesIO(b"abc"), 3),
                                "ContentLength": 10, "ETag": '"e"'}
    if call == "get_range_into":
        response["ContentRange"] = "bytes 0-9/20"
    stub.add_response("get_object", response)
    buffer = bytearray(b"Z" * 10)
    with pytest.raises(TransientError) as info:
        if call == "get_into":
            store.get_into("k", buffer)
        else:
            store.get_range_into("k", 0, buffer)
    assert "3 of 10" in str(info.value)
    stub.assert_no_pending_responses()


# ---- B, D, M: chunks in parts --------------------------------------------------------------------

class _OneRangeFails(MemoryStore):
    """The range at offset 0 fails for good once the two others are running; those two hold
    on until `caller_back` (or LINGER), counting themselves in `running` meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.running = 0
        self.others_running = threading.Event()
        self.caller_back = threading.Event()

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if start == 0:
            assert self.others_running.wait(WAIT)
            raise TransferError("range 1 refused")
        with self.lock:
            self.running += 1
            if self.running == 2:
                self.others_running.set()
        try:
            self.caller_back.wait(LINGER)
            return super().get_range(key, start, length)
        finally:
            with self.lock:
                self.running -= 1


def test_a_failed_ranged_read_returns_only_once_no_part_writes_into_the_buffer() -> None:
    """The caller reuses its chunk buffer as soon as get_into raises (the next chunk, a retry of
    this one): a range still running then would write stale bytes into that next chunk."""
    inner = _OneRangeFails()
    inner.put("chunks/big", os.urandom(12 * MiB))
    parts = _parts()
    try:
        with pytest.raises(TransferError, match="range 1 refused"):
            parts.get_into(inner, "chunks/big", 12 * MiB, bytearray(12 * MiB))
        running_when_raised = inner.running
    finally:
        inner.caller_back.set()
        parts.close()
    assert running_when_raised == 0


class _FailsWhileOthersBackOff(MemoryStore):
    """Part 1 fails for good once parts 2 and 3 are both in their retry backoff; parts 2 and 3
    fail with a transient error every time they are tried."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.tries: dict[int, int] = {}
        self.backing_off = 0
        self.others_backing_off = threading.Event()

    def on_retry(self, key: str, attempt: int, error: str, delay: float) -> None:
        with self.lock:
            self.backing_off += 1
            if self.backing_off == 2:
                self.others_backing_off.set()

    def upload_part(self, key, upload_id, part_number, data):  # type: ignore[override]
        if part_number == 1:
            assert self.others_backing_off.wait(WAIT)
            raise TransferError("part 1 refused")
        with self.lock:
            self.tries[part_number] = self.tries.get(part_number, 0) + 1
        raise TransientError("503 SlowDown")


def test_an_upload_given_up_ends_the_retry_backoffs_of_its_other_parts() -> None:
    """Once one part has failed for good the upload is lost: its sibling parts must not go on
    retrying (minutes of backoff and attempts, holding the caller, which waits for them)."""
    inner = _FailsWhileOthersBackOff()
    # A 2 s backoff: longer than the caller could plausibly take to see part 1's failure, so
    # a second try means the stop did not end the backoff.  (Not waited when it does.)
    retrying = RetryingStore(inner, attempts=2, base_delay=2.0, max_delay=2.0,
                             rand=lambda: 1.0, on_retry=inner.on_retry)
    parts = _parts()
    try:
        with pytest.raises(TransferError, match="part 1 refused"):
            parts.put(retrying, "chunks/big", bytes(12 * MiB))
    finally:
        parts.close()
    assert inner.tries == {2: 1, 3: 1}  # no second attempt after the upload was given up
    assert inner.calls["abort_multipart"] == 1 and list(inner.list_multipart("")) == []
    assert not inner.exists("chunks/big")


def test_a_ranged_read_of_a_shorter_object_returns_only_its_bytes() -> None:
    """An object shorter than the size asked for (a chunk truncated on the server) comes back
    as its own bytes, so the caller's digest check refuses it; the tail of the buffer (stale
    bytes of an earlier chunk) must not be returned as part of it."""
    store = MemoryStore()
    data = os.urandom(7 * MiB)
    store.put("chunks/short", data)
    parts = _parts()
    try:
        view = parts.get_into(store, "chunks/short", 12 * MiB, bytearray(b"S" * (12 * MiB)))
    finally:
        parts.close()
    assert len(view) == 7 * MiB
    assert bytes(view) == data


# ---- C, I: bounded_map --------------------------------------------------------------------------

def test_a_failed_map_returns_only_once_its_running_items_ended() -> None:
    """A map's caller may undo or reuse what its items work on once the error reaches it (a
    pull's staging files, a chunk buffer): an item still running then (or a worker thread
    still alive) would work on behind its back."""
    item1_running, caller_back, item1_done = (threading.Event(), threading.Event(),
                                              threading.Event())

    def work(i: int) -> int:
        if i == 0:
            assert item1_running.wait(WAIT)
            raise ValueError("item 0 failed")
        item1_running.set()
        caller_back.wait(LINGER)
        item1_done.set()
        return i

    try:
        with pytest.raises(ValueError, match="item 0 failed"):
            list(bounded_map(work, [0, 1], workers=2, name="ckptlake-mutant-c"))
        finished = item1_done.is_set()
        alive = [t.name for t in threading.enumerate() if t.name.startswith("ckptlake-mutant-c")]
    finally:
        caller_back.set()
    assert finished
    assert alive == []


def test_a_map_started_inside_a_stopped_item_is_stopped_from_the_start() -> None:
    """An item still running when its map was stopped (Ctrl-C, an exit deadline) may start a
    map of its own (catalog reads do): that map's items must see the stop, or they retry and
    wait for bandwidth as if nothing had happened."""
    have_stop, out = threading.Event(), {}

    def inner_item(_: int) -> bool:
        stop = stop_event()
        return stop is not None and stop.is_set()

    def outer_item(_: int) -> list[bool]:
        out["stop"] = stop_event()
        have_stop.set()
        assert out["stop"].wait(WAIT)
        return list(bounded_map(inner_item, [0, 1], workers=2))

    def runner() -> None:
        try:
            out["result"] = list(bounded_map(outer_item, [0], workers=1))
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            out["error"] = exc

    thread = threading.Thread(target=runner, daemon=True)
    thread.start()
    assert have_stop.wait(WAIT)
    out["stop"].set()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert out.get("result") == [[True, True]], out


# ---- F: no attempt after the stop ----------------------------------------------------------------

_CALLS: dict[str, Callable[[RetryingStore], Any]] = {
    "put": lambda s: s.put("k", b"new"),
    "stat": lambda s: s.stat("k"),
    "complete_multipart": lambda s: s.complete_multipart("big", "u0", [(1, '"p1"')]),
}


@pytest.mark.parametrize("call", list(_CALLS))
def test_a_stopped_worker_starts_no_attempt(call: str) -> None:
    """After a Ctrl-C or an exit deadline the retry layer sends nothing more: a put or a
    completion sent then would land after the caller gave the work up (an upload it then
    aborts, an object written behind its back)."""
    fake = FakeStore()
    fake.objects["k"] = (b"old", '"e0"')
    fake.uploads["u0"] = ("big", {1: b"abc"})
    store = RetryingStore(fake, sleep=lambda s: None)
    stop = threading.Event()
    stop.set()
    with stopped_by(stop), pytest.raises(Interrupted):
        _CALLS[call](store)
    assert fake.calls == []
    assert fake.objects == {"k": (b"old", '"e0"')} and "u0" in fake.uploads


class _StopsOnLastPart(MemoryStore):
    """The last part's upload_part stops the map the upload runs in, then returns normally:
    the stop comes after every part was sent, before the upload is completed."""

    def __init__(self, last: int) -> None:
        super().__init__()
        self.last = last
        self.stop: threading.Event | None = None

    def upload_part(self, key, upload_id, part_number, data):  # type: ignore[override]
        etag = super().upload_part(key, upload_id, part_number, data)
        if part_number == self.last:
            assert self.stop is not None
            self.stop.set()
        return etag


@pytest.mark.parametrize("retrying", [False, True], ids=["bare-store", "retry-layer"])
def test_an_upload_stopped_after_its_last_part_is_aborted_not_completed(retrying: bool) -> None:
    """A stop that comes as the last part ends (an exit deadline) gives the upload up: it is
    aborted, not completed behind the back of a caller that reports it interrupted -- with or
    without a retry layer between (each checks the stop before completing)."""
    inner = _StopsOnLastPart(last=3)
    store: Store = RetryingStore(inner, base_delay=0) if retrying else inner
    parts = _parts(workers=1)
    outer = new_stop()
    inner.stop = outer
    try:
        with stopped_by(outer), pytest.raises(Interrupted):
            parts.put(store, "chunks/big", bytes(12 * MiB))
    finally:
        parts.close()
    assert inner.calls["upload_part"] == 3
    assert inner.calls["complete_multipart"] == 0
    assert inner.calls["abort_multipart"] == 1
    assert list(inner.list_multipart("")) == [] and not inner.exists("chunks/big")


# ---- H: MemoryStore completes a multipart upload as S3 does ------------------------------------

def test_memory_store_refuses_parts_out_of_order_or_with_a_wrong_etag() -> None:
    """MemoryStore stands in for S3 in most of the suite: a completion S3 refuses (parts listed
    out of order, a part's ETag that is not the one its upload returned) must fail here too,
    or a bug in how Parts lists its parts passes every test but those on a real server."""
    store = MemoryStore()
    uid = store.create_multipart("mp/big")
    first, second = b"a" * (5 * MiB), b"tail"
    e1 = store.upload_part("mp/big", uid, 1, first)
    e2 = store.upload_part("mp/big", uid, 2, second)
    assert e1 != e2
    for wrong in ([(2, e2), (1, e1)], [(1, e2), (2, e1)], [(1, e1), (1, e1), (2, e2)],
                  [(1, '"0123"'), (2, e2)], [(1, e1), (3, e2)], []):
        with pytest.raises(TransferError):
            store.complete_multipart("mp/big", uid, wrong)
        assert not store.exists("mp/big")
        assert [u.upload_id for u in store.list_multipart("mp/")] == [uid]  # still pending
    e1_again = store.upload_part("mp/big", uid, 1, b"b" * (5 * MiB))  # other bytes: other ETag
    assert e1_again != e1
    with pytest.raises(TransferError):
        store.complete_multipart("mp/big", uid, [(1, e1), (2, e2)])
    store.complete_multipart("mp/big", uid, [(1, e1_again), (2, e2)])
    assert store.get("mp/big") == b"b" * (5 * MiB) + second
    assert list(store.list_multipart("mp/")) == []


def test_parts_upload_to_a_memory_store_round_trips() -> None:
    """Parts lists every part, in order, with its own ETag (S3 refuses anything else)."""
    store = MemoryStore()
    data = os.urandom(12 * MiB)
    parts = _parts()
    try:
        parts.put(store, "chunks/big", data)
    finally:
        parts.close()
    assert store.get("chunks/big") == data
    assert store.calls["upload_part"] == 3 and store.calls["complete_multipart"] == 1


# ---- K: LocalStore leaves no temp file behind ---------------------------------------------------

def test_a_failed_local_write_leaves_no_temp_file(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails (disk full, an I/O error) must not leave its temp file: nothing
    else ever removes it, and a lake that keeps failing would fill up with them."""
    local = LocalStore(tmp_path / "lake")
    local.put("a/existing", b"x")

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(CkptlakeError):
        local.put("a/new", b"data")
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "lake").rglob(f"{TMP_PREFIX}*")] == []
    assert not local.exists("a/new") and local.get("a/existing") == b"x"


# ---- N: create_once never overwrites data -------------------------------------------------------

@pytest.mark.parametrize("backend", ["memory", "local"])
def test_create_once_never_overwrites_an_object_with_data(backend: str, tmp_path: Path) -> None:
    """A key written once (a manifest, an alias record, a claim) that holds data is someone
    else's create, or ours whose response was lost: replacing it would lose their write.  Only
    an empty object (left by a cut upload) is taken over."""
    store: Store = MemoryStore() if backend == "memory" else LocalStore(tmp_path / "lake")
    store.put("records/claim", b"theirs")
    with pytest.raises(PreconditionFailed):
        create_once(store, "records/claim", b"ours")
    assert store.get("records/claim") == b"theirs"
    store.put("records/empty", b"")
    create_once(store, "records/empty", b"ours")  # an empty leftover counts as absent
    assert store.get("records/empty") == b"ours"
