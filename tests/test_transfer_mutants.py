"""Checks of transfer/parts.py and transfer/pool.py that a mutation review found no test
exercising: a Ctrl-C during a multipart upload must still abort it, a failed abort must not
hide the error that stopped the upload, and a failed map must not run the items it had
submitted but not started."""
from __future__ import annotations

import signal
import sys
import threading
from typing import Iterator

import pytest
from test_parts import _FailingPart
from test_store_mutants import MiB, WAIT, _parts

from ckptlake.errors import TransferError
from ckptlake.store.memory import MemoryStore
from ckptlake.transfer.pool import bounded_map, stop_event

KEY = "chunks/big"
DATA = bytes(12 * MiB)  # parts 1, 2 and 3 (5, 5 and 2 MiB) with _parts()


class _Part2WaitsForTheStop(MemoryStore):
    """upload_part for part 2 says it is in flight, then holds on until the upload was given
    up (its part stop is set, which happens only once the caller's thread was interrupted):
    the Ctrl-C lands deterministically while that part is running."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = threading.Event()

    def upload_part(self, key, upload_id, part_number, data):  # type: ignore[override]
        if part_number == 2:
            self.in_flight.set()
            stop = stop_event()
            assert stop is not None
            stop.wait(WAIT)
        return super().upload_part(key, upload_id, part_number, data)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="POSIX signals")
def test_ctrl_c_while_a_part_is_in_flight_aborts_the_multipart_upload() -> None:
    """A Ctrl-C (KeyboardInterrupt, not an Exception) in the middle of a large chunk's upload
    must abort the multipart upload.  Otherwise the parts already sent stay stored, and billed,
    as an incomplete upload until gc's grace period runs out -- gigabytes per interrupted
    chunk of a large-chunk lake."""
    store = _Part2WaitsForTheStop()
    main = threading.main_thread().ident
    assert threading.get_ident() == main  # (the SIGINT goes to this thread)

    def interrupt() -> None:
        if store.in_flight.wait(WAIT):
            signal.pthread_kill(main, signal.SIGINT)

    helper = threading.Thread(target=interrupt, daemon=True)
    helper.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            _parts(workers=3).put(store, KEY, DATA)
    finally:
        helper.join(WAIT)
    assert store.in_flight.is_set()
    assert store.calls["abort_multipart"] == 1
    assert store.calls["complete_multipart"] == 0
    assert list(store.list_multipart("")) == []  # nothing left pending, billed, for gc to find
    assert KEY not in store.keys()


class _AbortFailsToo(_FailingPart):
    """Part 2 is refused for good, and the abort that follows fails too (server down)."""

    def abort_multipart(self, key, upload_id):  # type: ignore[override]
        self.calls["abort_multipart"] += 1
        raise TransferError("abort: connection refused")


def test_a_failed_abort_does_not_hide_the_error_that_stopped_the_upload() -> None:
    """When the abort after a failed part fails as well, the user must be told why the upload
    failed (the part refused), not only that its clean-up did (gc aborts the upload later):
    the abort's error would send them chasing a connection problem instead."""
    store = _AbortFailsToo(TransferError("part refused"))
    with pytest.raises(TransferError, match="part refused"):
        _parts(workers=3).put(store, KEY, DATA)
    assert store.calls["abort_multipart"] == 1
    assert store.calls["complete_multipart"] == 0
    assert KEY not in store.keys()


def test_a_failed_map_does_not_run_the_items_it_had_not_started() -> None:
    """After an item fails, the items submitted but not started yet are dropped: they would
    otherwise still run (uploads, deletes) after the transfer has already failed, and the
    caller would wait for all of them before seeing the error.

    Ordering, without sleeps: item 0 fails; the items generator hands over item 1 only once
    item 0 has raised, so the pool's one thread is idle and item 1 is queued for it; the
    switch interval is raised so that thread cannot take the GIL (and item 1) before the main
    thread, which never blocks on that path, has raised the failure and cancelled item 1."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    try:
        for _ in range(50):
            raised = threading.Event()
            ran: list[int] = []

            def work(i: int) -> int:
                if i == 0:
                    raised.set()
                    raise ValueError("boom")
                ran.append(i)
                return i

            def items() -> Iterator[int]:
                yield 0
                assert raised.wait(WAIT)
                yield 1
                yield 2

            with pytest.raises(ValueError, match="boom"):
                list(bounded_map(work, items(), workers=2))
            assert ran == []  # (bounded_map's pool was shut down and joined: nothing runs later)
    finally:
        sys.setswitchinterval(interval)
