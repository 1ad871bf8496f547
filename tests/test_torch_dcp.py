"""ckptlake.torch: DCP storage (LakeWriter / LakeReader) with real multi-process gloo worlds.

Each test spawns its worlds with the "spawn" start method and reports from the children through
small JSON files; processes are joined with a generous bound so a hang fails the test instead
of stalling the suite.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import ckptlake  # noqa: E402
from ckptlake.errors import NotFound  # noqa: E402

ROWS, COLS = 512, 512  # the sharded weight: 1 MiB of float32
JOIN_SECONDS = 240


# ---- what every rank saves / expects ----------------------------------------------------------

def _full_weight() -> Any:
    return torch.arange(ROWS * COLS, dtype=torch.float32).reshape(ROWS, COLS) / 7.0


def _bias() -> Any:
    return torch.linspace(-1.0, 1.0, 1000)


def _state(world: int, *, zeros: bool = False) -> dict[str, Any]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    w, b = _full_weight(), _bias()
    if zeros:
        w, b = torch.zeros_like(w), torch.zeros_like(b)
    return {"model": {"w": distribute_tensor(w, mesh, [Shard(0)]), "b": b},
            "extra": {"epoch": 0 if zeros else 3}}


# ---- child side -------------------------------------------------------------------------------

def rank_main(rank: int, world: int, port: int, out: str, env: dict[str, str],
              body: Callable[[], dict[str, Any]]) -> None:
    """A spawned rank: join the gloo world, run `body`, write what it returned (or how it
    failed) to OUT/rank<N>.json for the parent to assert on, and exit at once."""
    os.environ.clear()  # forked from the fork server: its environment is an earlier test's
    os.environ.update(env)
    result: dict[str, Any] = {"rank": rank}
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world, timeout=timedelta(seconds=20))
        result.update(body())
    except BaseException as e:  # reported to the parent, which asserts on it
        result["error"] = f"{type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc()[-3000:]
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    os._exit(0)  # no destroy_process_group: a peer may be dead


def _child(rank: int, world: int, port: int, url: str, scenario: str, out: str,
           env: dict[str, str]) -> None:
    rank_main(rank, world, port, out, env,
              lambda: SCENARIOS[scenario](rank, world, ckptlake.open(url)))


def _save_twice(rank: int, world: int, lake: Any) -> dict[str, Any]:
    import torch.distributed.checkpoint as dcp

    from ckptlake.torch import LakeWriter

    state = _state(world)
    w1 = LakeWriter(lake, "run", step=1, metrics={"loss": 0.5})
    dcp.save(state, storage_writer=w1)
    # A rank returns only once the version is committed: it is visible right away.
    visible = [v.version for v in lake.versions("run")]
    w2 = LakeWriter(lake, "run", step=2)
    fut = dcp.async_save(state, storage_writer=w2)
    fut.result()
    return {"v1": w1.version, "visible_after_save": visible, "v2": w2.version,
            "uploaded1": _uploaded(w1), "uploaded2": _uploaded(w2)}


def _uploaded(w: Any) -> int:
    return w.result.bytes_uploaded + (w.commit_result.bytes_uploaded if w.commit_result else 0)


def _load(rank: int, world: int, lake: Any) -> dict[str, Any]:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import DefaultLoadPlanner

    from ckptlake.torch import LakeReader

    state = _state(world, zeros=True)
    dcp.load(state, storage_reader=LakeReader(lake, "run@v1"))
    out: dict[str, Any] = {
        "w_equal": bool(torch.equal(state["model"]["w"].full_tensor(), _full_weight())),
        "b_equal": bool(torch.equal(state["model"]["b"], _bias())),
        "epoch": state["extra"]["epoch"]}
    # A key the checkpoint lacks: strict (torch's default) refuses, partial load fills the rest.
    state = _state(world, zeros=True)
    state["model"]["new"] = torch.ones(3)
    try:
        dcp.load(state, storage_reader=LakeReader(lake, "run@v1"))
        out["strict"] = "loaded"
    except BaseException as e:  # torch's CheckpointException is a BaseException
        out["strict"] = f"{type(e).__name__}: {e}"
    dcp.load(state, storage_reader=LakeReader(lake, "run@v1"),
             planner=DefaultLoadPlanner(allow_partial_load=True))
    out["partial_w_equal"] = bool(torch.equal(state["model"]["w"].full_tensor(), _full_weight()))
    out["partial_new_untouched"] = bool(torch.equal(state["model"]["new"], torch.ones(3)))
    return out


def _save_dying(rank: int, world: int, lake: Any) -> dict[str, Any]:
    import torch.distributed.checkpoint as dcp

    from ckptlake.torch import LakeWriter

    class Dying(LakeWriter):
        def write_data(self, plan: Any, planner: Any) -> Any:
            if rank == 1:
                os._exit(17)  # the rank dies before its record is written
            return super().write_data(plan, planner)

    dcp.save(_state(world), storage_writer=Dying(lake, "run", step=5))
    return {"saved": True}


def _save_step5(rank: int, world: int, lake: Any) -> dict[str, Any]:
    import torch.distributed.checkpoint as dcp

    from ckptlake.torch import LakeWriter

    w = LakeWriter(lake, "run", step=5)
    dcp.save(_state(world), storage_writer=w)
    return {"version": w.version, "repeated": w.result.repeated}


BIG = 2048  # the weight of the byte-counting scenarios: BIG x BIG float32, 16 MiB
SMALL_CHUNK = 1 << 20


def _big_weight() -> Any:  # random: incompressible, so stored bytes are raw bytes
    return torch.rand(BIG, BIG, generator=torch.Generator().manual_seed(5))


def _big_state(world: int, *, zeros: bool = False) -> dict[str, Any]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    w = torch.zeros(BIG, BIG) if zeros else _big_weight()
    mesh = init_device_mesh("cpu", (world,))
    state = {"w": distribute_tensor(w, mesh, [Shard(0)]),
             "b": torch.zeros(1000) if zeros else _bias()}
    if not zeros:  # saved, not loaded: its shards share each rank's file with w's
        state["v"] = distribute_tensor(_big_weight() + 1, mesh, [Shard(0)])
    return state


def _save_big(rank: int, world: int, lake: Any) -> dict[str, Any]:
    import torch.distributed.checkpoint as dcp

    from ckptlake.torch import LakeWriter

    lake = ckptlake.open(lake.url, chunk_size=SMALL_CHUNK)
    w = LakeWriter(lake, "big", step=1)
    dcp.save(_big_state(world), storage_writer=w)
    return {"version": w.version}


def _load_big(rank: int, world: int, lake: Any) -> dict[str, Any]:
    import torch.distributed.checkpoint as dcp

    from ckptlake.torch import LakeReader

    state = _big_state(world, zeros=True)
    # a window of two chunks: the fetches ahead stay bounded, and the load still completes
    reader = LakeReader(lake, "big@v1", window=2 * SMALL_CHUNK)
    dcp.load(state, storage_reader=reader)
    return {"fetched": reader.bytes_fetched,
            "w_equal": bool(torch.equal(state["w"].to_local(), _big_weight().chunk(world)[rank])),
            "b_equal": bool(torch.equal(state["b"], _bias()))}


SCENARIOS = {"save_twice": _save_twice, "load": _load, "save_dying": _save_dying,
             "save_step5": _save_step5, "save_big": _save_big, "load_big": _load_big}


# ---- parent side ------------------------------------------------------------------------------

def run_ranks(procs: list[Any], seconds: float) -> list[int]:
    """Start the rank processes, give each `seconds` to finish, kill the rest: the ranks that
    hung (a test asserts there are none, and never waits for ever)."""
    for p in procs:
        p.start()
    for p in procs:
        p.join(seconds)
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    return hung


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _context() -> Any:
    """Spawned ranks each imported torch again (~2 s of CPU apiece, most of this file's
    time): a fork server imports it once, before any thread runs, and forks every rank from
    that clean process (not from pytest's, whose threads a fork would copy half-way)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch.distributed", "torch.distributed.checkpoint",
                                "ckptlake", "ckptlake.torch"])
    return ctx


def spawn_world(target: Any, world: int, out: Path, *args: Any, seconds: float = JOIN_SECONDS,
                env: dict[str, str] | None = None) -> tuple[dict[int, dict], list[int]]:
    """Run `target(rank, world, port, *args, out, env)` in `world` spawned processes (a gloo
    world, see rank_main); ({rank: report}, exit codes).  No rank may hang."""
    ctx = _context()
    port = _free_port()
    # the parent's whole environment now, as a spawned rank had it (the fork server's is the
    # first caller's), with the test's own settings over it
    env = {**os.environ, **(env or {})}
    procs = [ctx.Process(target=target, args=(r, world, port, *args, str(out), env))
             for r in range(world)]
    hung = run_ranks(procs, seconds)
    assert not hung, f"ranks {hung} of {args} did not finish (a hang)"
    reports = {int(f.stem[4:]): json.loads(f.read_text()) for f in out.glob("rank*.json")}
    return reports, [p.exitcode for p in procs]


def _world(world: int, url: str, scenario: str, tmp: Path) -> tuple[dict[int, dict], list[int]]:
    """Run `scenario` on `world` ranks; ({rank: report}, exit codes)."""
    out = tmp / f"{scenario}-{world}-{os.urandom(3).hex()}"
    out.mkdir()
    return spawn_world(_child, world, out, url, scenario)


def _ok(reports: dict[int, dict], world: int) -> None:
    assert sorted(reports) == list(range(world))
    for r in reports.values():
        assert "error" not in r, r.get("traceback")


def test_save_is_one_version_and_loads_resharded(lake_url: str, tmp_path: Path) -> None:
    reports, _ = _world(4, lake_url, "save_twice", tmp_path)
    _ok(reports, 4)
    lake = ckptlake.open(lake_url)
    versions = lake.versions("run")
    assert [(v.version, v.step) for v in versions] == [(1, 1), (2, 2)]  # one version per save
    for r in reports.values():
        assert r["v1"] == 1 and r["v2"] == 2
        assert 1 in r["visible_after_save"]
    files = {f["path"] for f in lake.files("run@v1")["files"]}
    assert ".metadata" in files
    assert {f.split("_")[2] for f in files if f.endswith(".distcp")} == {"0", "1", "2", "3"}, \
        files  # every rank's data is in the one version
    assert files == {f["path"] for f in lake.files("run@v2")["files"]}
    assert lake.pending("run") == []
    assert sum(r["uploaded1"] for r in reports.values()) > ROWS * COLS  # the data went up once
    # The same state again (through async_save): no byte uploaded, by any rank.
    assert [r["uploaded2"] for r in reports.values()] == [0, 0, 0, 0]

    # Saved by 4 ranks, loaded by 2: DCP reshards through the lake's ranged reads.
    reports, _ = _world(2, lake_url, "load", tmp_path)
    _ok(reports, 2)
    for r in reports.values():
        assert r["w_equal"] and r["b_equal"] and r["epoch"] == 3
        assert "Missing key in checkpoint state_dict: model.new" in r["strict"]
        assert r["partial_w_equal"] and r["partial_new_untouched"]


def test_a_resharded_rank_fetches_its_half_plus_chunk_rounding(s3_lake_url: str,
                                                               tmp_path: Path) -> None:
    reports, _ = _world(4, s3_lake_url, "save_big", tmp_path)
    _ok(reports, 4)
    # Saved by 4 ranks (a quarter of w and of v each, in one file per rank), loaded by 2 into
    # a state without v: each rank needs two quarters of w, i.e. half of it, and b.
    reports, _ = _world(2, s3_lake_url, "load_big", tmp_path)
    _ok(reports, 2)
    half = BIG * BIG * 4 // 2
    for r in reports.values():
        assert r["w_equal"] and r["b_equal"]
        # its half (stored compressed a little: random floats in [0, 1) share exponent
        # bytes) and at most one extra chunk per file it reads from (torch.save's zip records,
        # b); the whole files it reads from would be twice as much
        assert half // 2 <= r["fetched"] <= half + 3 * SMALL_CHUNK, r["fetched"]


def test_rank_death_leaves_no_version_and_a_rerun_commits_once(local_lake_url: str,
                                                               tmp_path: Path) -> None:
    reports, codes = _world(3, local_lake_url, "save_dying", tmp_path)
    assert codes[1] == 17 and 1 not in reports
    for rank in (0, 2):  # the survivors fail (a bounded gloo wait), they do not hang
        assert "error" in reports[rank], reports[rank]
    lake = ckptlake.open(local_lake_url)
    with pytest.raises(NotFound):  # no version of the step, nor any other
        lake.versions("run")
    [step] = lake.pending("run")  # ranks 0 and 2 had pushed their data; the step waits
    assert step.step == 5 and step.present == 2

    reports, _ = _world(3, local_lake_url, "save_step5", tmp_path)
    _ok(reports, 3)
    assert [r["version"] for r in reports.values()] == [1, 1, 1]
    assert reports[0]["repeated"] and reports[2]["repeated"] and not reports[1]["repeated"]
    assert [(v.version, v.step) for v in lake.versions("run")] == [(1, 5)]
    assert lake.pending("run") == []


def test_single_process_save_and_typed_load_errors(local_lake_url: str, tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    from ckptlake.torch import LakeReader, LakeWriter, NotADcpCheckpoint

    lake = ckptlake.open(local_lake_url)
    state = {"w": torch.arange(10.0), "n": 4}
    stage = tmp_path / "stage"
    stage.mkdir()
    with pytest.warns(DeprecationWarning, match="staging_dir"):
        w = LakeWriter(lake, "solo", step=3, staging_dir=stage)
    dcp.save(state, storage_writer=w)  # no process group: a world of one
    assert w.version == 1 and w.commit_result.committed and w.commit_result.committed_here
    loaded = {"w": torch.zeros(10), "n": 0}
    dcp.load(loaded, storage_reader=LakeReader(lake, "solo@latest"))
    assert torch.equal(loaded["w"], state["w"]) and loaded["n"] == 4
    assert list(stage.iterdir()) == []  # nothing is staged: files stream into the lake

    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "model.bin").write_bytes(b"not a dcp checkpoint")
    lake.push(tmp_path / "plain", "plain")
    with pytest.raises(NotADcpCheckpoint, match=r"plain@v1 is not a DCP checkpoint"):
        LakeReader(lake, "plain@v1")
    with pytest.raises(NotFound, match="solo"):
        LakeReader(lake, "solo@v7")
    with pytest.raises(NotFound, match="nothere"):
        LakeReader(lake, "nothere@latest")


def test_resaving_a_step_with_writer_threads_commits_it_once(local_lake_url: str) -> None:
    import torch.distributed.checkpoint as dcp

    from ckptlake.torch import LakeWriter

    lake = ckptlake.open(local_lake_url)
    g = torch.Generator().manual_seed(0)
    state = {f"t{i}": torch.randn(200, 500, generator=g) for i in range(8)}
    # torch's two writer threads finish in either order, a coin toss per save: over ten steps
    # an order-dependent .metadata differs between a save and its repeat (almost) surely
    for step in range(1, 11):
        first = LakeWriter(lake, "t", step=step, thread_count=2)
        dcp.save(state, storage_writer=first)
        again = LakeWriter(lake, "t", step=step, thread_count=2)
        dcp.save(state, storage_writer=again)
        assert again.version == first.version == step
        assert again.result.repeated and again.commit_result.repeated
        assert _uploaded(again) == 0, step
        if step > 1:  # the unchanged state at a new step uploads nothing either
            assert _uploaded(first) == 0, step
    assert [v.step for v in lake.versions("t")] == list(range(1, 11))
    assert lake.pending("t") == []


EXIT_SCRIPT = textwrap.dedent("""
    import sys, torch, torch.distributed.checkpoint as dcp, ckptlake
    from ckptlake.torch import LakeWriter
    lake = ckptlake.open(sys.argv[1])
    w = torch.randn(1000, 1000, generator=torch.Generator().manual_seed(7))
    dcp.async_save({"w": w}, storage_writer=LakeWriter(lake, "a/ck", step=1))
    print("main done", flush=True)   # falls off the end: the future is never waited on
""")


def test_an_async_save_still_running_at_exit_is_committed(local_lake_url: str,
                                                          tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    from ckptlake.torch import LakeReader

    script = tmp_path / "train.py"
    script.write_text(EXIT_SCRIPT)
    p = subprocess.run([sys.executable, str(script), local_lake_url], capture_output=True,
                       text=True, timeout=240)
    assert p.returncode == 0, p.stderr
    assert "main done" in p.stdout and "LOST" not in p.stderr, p.stderr
    lake = ckptlake.open(local_lake_url)
    assert [(v.version, v.step) for v in lake.versions("a/ck")] == [(1, 1)]
    loaded = {"w": torch.zeros(1000, 1000)}
    dcp.load(loaded, storage_reader=LakeReader(lake, "a/ck@v1"))
    assert torch.equal(loaded["w"],
                       torch.randn(1000, 1000, generator=torch.Generator().manual_seed(7)))


STAGER_EXIT_SCRIPT = textwrap.dedent("""
    import sys, threading, time, torch, torch.distributed.checkpoint as dcp, ckptlake
    from concurrent.futures import Future
    from torch.distributed.checkpoint.staging import BlockingAsyncStager
    from ckptlake.torch import LakeWriter

    class BackgroundStager(BlockingAsyncStager):  # stages in the background, as DefaultStager
        def stage(self, state_dict):              # can: torch's thread reaches the writer late
            done = Future()
            def later():
                time.sleep(1.5)
                done.set_result(BlockingAsyncStager.stage(self, state_dict))
            threading.Thread(target=later, daemon=True).start()
            return done

    lake = ckptlake.open(sys.argv[1])
    w = torch.randn(1000, 1000, generator=torch.Generator().manual_seed(7))
    dcp.save({"w": w}, storage_writer=LakeWriter(lake, "a/sync", step=1))  # over: no wait
    unused = LakeWriter(lake, "a/unused", step=1)  # never saved with: nothing to wait for
    # a stager of the caller's own: torch never calls the writer's stage()
    dcp.async_save({"w": w}, storage_writer=LakeWriter(lake, "a/ck", step=1),
                   async_stager=BackgroundStager())
    print("main done", flush=True)
""")


def test_an_async_save_with_its_own_stager_still_running_at_exit_is_committed(
        local_lake_url: str, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(STAGER_EXIT_SCRIPT)
    p = subprocess.run([sys.executable, str(script), local_lake_url], capture_output=True,
                       text=True, timeout=240)
    assert p.returncode == 0, p.stderr
    assert "main done" in p.stdout and "LOST" not in p.stderr, p.stderr
    assert "a/unused" not in p.stderr and "a/sync" not in p.stderr, p.stderr
    lake = ckptlake.open(local_lake_url)
    assert [(v.version, v.step) for v in lake.versions("a/ck")] == [(1, 1)]
    assert [v.step for v in lake.versions("a/sync")] == [1]


GATED_EXIT_SCRIPT = textwrap.dedent("""
    import os, sys, time, torch, torch.distributed.checkpoint as dcp, ckptlake
    from ckptlake.torch import LakeWriter
    lake_url, gate = sys.argv[1:3]
    record = LakeWriter._record
    def gated(self, *args):  # held until the test opens the gate: "ok", or "fail"
        while not os.path.exists(gate):
            time.sleep(0.02)
        if open(gate).read() == "fail":
            raise OSError("the disk went away")
        return record(self, *args)
    LakeWriter._record = gated
    lake = ckptlake.open(lake_url)
    w = torch.randn(100, 100, generator=torch.Generator().manual_seed(7))
    dcp.async_save({"w": w}, storage_writer=LakeWriter(lake, "a/ck", step=1))
    print("main done", flush=True)
""")


@pytest.mark.parametrize("outcome", ["ok", "fail"])
def test_an_interrupt_while_waiting_at_exit_says_what_is_lost(local_lake_url: str,
                                                               tmp_path: Path,
                                                               outcome: str) -> None:
    """Ctrl-C stops only the exit hook's wait: Python still joins torch's thread, so the save
    may yet commit.  Said as "may be lost", then how it really ended."""
    script, gate = tmp_path / "train.py", tmp_path / "gate"
    script.write_text(GATED_EXIT_SCRIPT)
    p = subprocess.Popen([sys.executable, str(script), local_lake_url, str(gate)], text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = []
    try:
        assert p.stderr is not None
        interrupted = False
        for line in p.stderr:
            err.append(line)
            if interrupted and line.startswith("ckptlake:"):
                # what the hook said of the interrupt: the save goes on only now
                gate.write_text(outcome)
                break
            if "waiting for it" in line:
                p.send_signal(signal.SIGINT)  # Ctrl-C while the exit hook waits
                interrupted = True
        out, rest = p.communicate(timeout=120)
    finally:
        p.kill()
    stderr = "".join(err) + rest
    assert "main done" in out, stderr
    assert ("ckptlake: DCP checkpoint a/ck step 1 may be lost: still being written when "
            "interrupted" in stderr), stderr
    assert "Exception ignored" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    lake = ckptlake.open(local_lake_url)
    try:
        held = [(v.version, v.step) for v in lake.versions("a/ck")]
    except NotFound:
        held = []
    if outcome == "ok":
        assert held == [(1, 1)], stderr
        assert "ckptlake: DCP checkpoint a/ck step 1 was committed after all" in stderr, stderr
        assert "LOST" not in stderr, stderr
    else:
        assert held == [], stderr
        assert ("ckptlake: LOST DCP checkpoint a/ck step 1: its dcp.async_save failed "
                "(OSError: the disk went away)" in stderr), stderr
        assert "committed" not in stderr, stderr


def _unwritable_lake(url: str) -> Any:
    """A lake whose every chunk directory is a file: no chunk can be stored."""
    lake = ckptlake.open(url)
    chunks = Path(url[len("file://"):]) / "chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    for i in range(256):
        (chunks / f"{i:02x}").write_bytes(b"")
    return lake


def test_a_failed_async_save_is_logged_at_once_with_the_lakes_error(
        local_lake_url: str, caplog: pytest.LogCaptureFixture) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    from ckptlake.errors import UsageError
    from ckptlake.torch import LakeWriter

    lake = _unwritable_lake(local_lake_url)
    state = {"w": torch.randn(1000, 1000, generator=torch.Generator().manual_seed(7))}
    with caplog.at_level(logging.ERROR, logger="ckptlake"):
        f = dcp.async_save(state, storage_writer=LakeWriter(lake, "a/ck", step=1))
        deadline = time.monotonic() + 60
        while not f.done() and time.monotonic() < deadline:
            time.sleep(0.02)  # over, and nobody reads its future
        assert f.done()
        failed = [r.getMessage() for r in caplog.records if r.name == "ckptlake"]
        assert len(failed) == 1, failed
        # the lake's error, not torch's zip writer's "unexpected pos" that followed it
        assert failed[0].startswith("ckptlake: dcp.async_save of a/ck step 1 failed: "
                                    "UsageError: "), failed
        assert "cannot be written" in failed[0] and failed[0].endswith("(not committed)")
        caplog.clear()
        # a synchronous save's failure is its caller's to see (the lake's error): not logged
        with pytest.raises(CheckpointException) as raised:
            dcp.save(state, storage_writer=LakeWriter(lake, "a/ck", step=2))
        assert [r.getMessage() for r in caplog.records if r.name == "ckptlake"] == []
    [(error, _)] = raised.value.failures.values()  # (exception, its traceback)
    assert isinstance(error, UsageError) and "cannot be written" in str(error), error


def test_a_lake_writer_refuses_to_be_pickled_with_the_fix(local_lake_url: str) -> None:
    """dcp.async_save(async_checkpointer_type=PROCESS) pickles the writer into another process:
    it failed as "cannot pickle '_thread.lock' object" (a review)."""
    import pickle

    import ckptlake
    from ckptlake.errors import UsageError
    from ckptlake.torch import LakeWriter

    writer = LakeWriter(ckptlake.open(local_lake_url), "a/ck", step=1)
    with pytest.raises(UsageError, match=r"works in the process that made it: use "
                                         r"dcp.async_save with its default thread executor"):
        pickle.dumps(writer)


def test_importing_ckptlake_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, ckptlake; ckptlake.open; assert 'torch' not in sys.modules; "
            "import ckptlake.torch; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_reader_of_a_location_with_no_lake_says_so(tmp_path) -> None:
    import ckptlake
    from ckptlake.errors import NotFound
    from ckptlake.torch import LakeReader

    with pytest.raises(NotFound, match="no lake at file://"):
        LakeReader(ckptlake.open(f"file://{tmp_path / 'nolake'}"), "m/ckpt")
