"""on_sigterm="save": Python runs the handler between any two bytecodes, so a SIGTERM landing
inside an optimizer step took the final save of a half-updated state (some parameters a step
ahead of the others) under the old step, as the latest version (a review reproduced it 3 times
in 3 with AdamW(foreach=False)).  `with ck.atomic():` around the step defers the signal to the
block's end."""
from __future__ import annotations

import os
import signal
from typing import Any

import numpy as np
import pytest

import ckptlake

ART = "t/atomic"


@pytest.fixture
def lake(local_lake_url: str):
    with ckptlake.open(local_lake_url) as lk:
        yield lk


def _train(ck: Any, state: dict, steps: int, signal_at: tuple[int, int] | None,
           atomic: bool) -> None:
    """Each step updates the 4 "parameters" one after the other (as a per-parameter optimizer
    loop does), then counts the step; SIGTERM arrives at signal_at = (step, parameter)."""
    for step in range(1, steps + 1):
        block = ck.atomic() if atomic else _Nothing()
        with block:
            for k in range(4):
                if signal_at == (step, k):
                    os.kill(os.getpid(), signal.SIGTERM)
                state["w"][k] = step
            state["step"] = step


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


@pytest.mark.parametrize("atomic", [True, False])
def test_a_sigterm_inside_an_optimizer_step_saves_a_whole_step(lake: Any, atomic: bool) -> None:
    state = {"w": np.zeros(4), "step": 0}
    ck: Any = None

    def final() -> None:
        ck.save_state({"w": state["w"].copy()}, step=state["step"] + 100)

    ck = lake.checkpointer(ART, on_sigterm="save", final_save=final, exit_timeout=60,
                           retention=False)
    try:
        with pytest.raises(SystemExit) as exited:
            _train(ck, state, 5, signal_at=(3, 2), atomic=atomic)
        assert exited.value.code == 143
    finally:
        ck.close()
    [version] = lake.versions(ART)
    saved = lake.load_state(f"{ART}@v{version.version}")["w"]
    if atomic:  # the signal waited for step 3 to end: every parameter at step 3
        assert version.step == 103 and np.array_equal(saved, np.full(4, 3.0)), saved
    else:  # what the handler saw where the signal landed: two parameters ahead of the rest
        assert version.step == 102 and np.array_equal(saved, [3, 3, 2, 2]), saved


def test_atomic_blocks_nest_and_a_save_inside_one_waits_for_its_end(lake: Any) -> None:
    ck: Any = None
    seen: list[str] = []

    def final() -> None:
        seen.append("final")

    ck = lake.checkpointer(ART, on_sigterm="save", final_save=final, exit_timeout=60,
                           retention=False)
    try:
        with pytest.raises(SystemExit):
            with ck.atomic():
                with ck.atomic():
                    os.kill(os.getpid(), signal.SIGTERM)
                    seen.append("inner")
                seen.append("outer")  # the inner block's end is not the outer's
                ck.save_state({"w": np.ones(2)}, step=1)  # a save inside: not its end either
                seen.append("after save")
    finally:
        ck.close()
    assert seen == ["inner", "outer", "after save", "final"]
    assert [v.step for v in lake.versions(ART)] == [1]


def test_a_block_that_raises_takes_no_final_save_of_its_half_updated_state(lake: Any) -> None:
    """The signal waits; the block then raises (a NaN check, say): a final save at its end
    would commit the half-updated state.  The exception goes on; the next save acts."""
    state = {"w": np.zeros(4)}
    ck: Any = None
    ck = lake.checkpointer(ART, on_sigterm="save", exit_timeout=60, retention=False,
                           final_save=lambda: ck.save_state({"w": state["w"].copy()}, step=9))
    try:
        with pytest.raises(FloatingPointError):
            with ck.atomic():
                state["w"][:2] = 1
                os.kill(os.getpid(), signal.SIGTERM)
                raise FloatingPointError("step aborted half-way")
        with pytest.raises(SystemExit):
            state["w"][:] = 0  # the step undone; the loop saves
            ck.save_state({"w": state["w"].copy()}, step=1)
    finally:
        ck.close()
    steps = [(v.step, list(lake.load_state(f"{ART}@v{v.version}")["w"]))
             for v in lake.versions(ART)]
    assert steps == [(1, [0.0] * 4), (9, [0.0] * 4)], steps


def test_a_block_in_another_thread_holds_the_final_save_back(lake: Any) -> None:
    import threading
    import time

    state = {"w": np.zeros(4)}
    inside, go = threading.Event(), threading.Event()

    def train() -> None:
        with ck.atomic():
            state["w"][:2] = 1
            inside.set()
            go.wait(30)
            time.sleep(0.3)
            state["w"][2:] = 1

    ck: Any = None
    ck = lake.checkpointer(ART, on_sigterm="save", exit_timeout=20, retention=False,
                           final_save=lambda: ck.save_state({"w": state["w"].copy()}, step=1))
    worker = threading.Thread(target=train)
    try:
        worker.start()
        assert inside.wait(30)
        go.set()
        started = time.monotonic()
        with pytest.raises(SystemExit):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        took = time.monotonic() - started
    finally:
        worker.join(30)
        ck.close()
    # the block's end wakes the handler's wait (not the exit deadline, 20 s, ending it)
    assert took < 10, took
    [v] = lake.versions(ART)
    assert list(lake.load_state(f"{ART}@v{v.version}")["w"]) == [1.0] * 4


def test_a_save_waiting_for_room_in_a_block_keeps_the_exit_deadline(
        lake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The signal inside the block set the deadline but woke no one: a save waiting for the
    running upload (on_busy="wait") waited for all of it, past exit_timeout."""
    import threading
    import time

    from ckptlake.core import push as push_mod

    real, entered, release = push_mod.push, threading.Event(), threading.Event()

    def slow_push(*args: Any, **kw: Any) -> Any:
        entered.set()
        release.wait(60)
        return real(*args, **kw)

    monkeypatch.setattr(push_mod, "push", slow_push)
    ck = lake.checkpointer(ART, on_sigterm="wait", on_busy="wait", exit_timeout=1,
                           retention=False)
    started = time.monotonic()
    try:
        ck.save_state({"w": np.zeros(4)}, step=1)
        assert entered.wait(30)
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
        with pytest.raises(SystemExit):
            with ck.atomic():
                ck.save_state({"w": np.ones(4)}, step=2)  # waits for room
    finally:
        release.set()
        ck.close()
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("atomic", [True, False])
def test_a_save_of_another_thread_does_not_swallow_the_signal(lake: Any, atomic: bool) -> None:
    """The block's end left the signal to the save under way, which acts only for the main
    thread: with another thread's save under way, nothing ever acted on it.  The same outside
    an atomic block: the handler left it to that save (no final save, no exit)."""
    import contextlib
    import threading
    import time

    ck: Any = None
    holding, release = threading.Event(), threading.Event()
    ck = lake.checkpointer(ART, on_sigterm="save", exit_timeout=60, retention=False,
                           final_save=lambda: ck.save_state({"w": np.ones(2)}, step=99))

    def saver() -> None:
        with ck._saving():  # what save_state holds while it snapshots
            holding.set()
            release.wait(30)

    worker = threading.Thread(target=saver)
    worker.start()
    try:
        assert holding.wait(30)
        threading.Timer(0.3, release.set).start()
        with pytest.raises(SystemExit) as exited:
            with ck.atomic() if atomic else contextlib.nullcontext():
                os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the signal must be acted on (at the block's end), not never
        assert exited.value.code == 143
    finally:
        release.set()
        worker.join(30)
        ck.close()
    assert [v.step for v in lake.versions(ART)] == [99]
