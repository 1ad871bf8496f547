"""ckptlake.torch: checks a mutation review found no test exercised.

Each test guards one check of the PyTorch integrations whose removal loses a user something:
a checkpoint that holds another save's values, a step recorded as saved when it is not, a
resume from an older version than the one asked for, a load that mixes two versions.  The
2-rank gloo world is spawned as in tests/test_torch_dcp_fixes.py (reports as JSON files).
"""
from __future__ import annotations

import json
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
dcp = pytest.importorskip("torch.distributed.checkpoint")
if not dist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import ckptlake  # noqa: E402
from ckptlake.errors import IntegrityError, NotFound, UsageError  # noqa: E402
from ckptlake.torch import LakeReader, LakeWriter, staging  # noqa: E402
from test_torch_dcp import rank_main, spawn_world  # noqa: E402

MiB = 1 << 20
pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
JOIN_SECONDS = 120


@pytest.fixture(autouse=True)
def _empty_staging_cache() -> Any:
    staging.clear_cache()
    yield
    staging.clear_cache()


def _unreachable(_: Any) -> Any:
    raise AssertionError("fallback used")


# ---- staging ----------------------------------------------------------------------------------

def test_a_cached_buffer_set_goes_to_one_save_only() -> None:
    """Two async saves of one artifact in flight at once (the second staged while the first
    is still uploading): if both got the released set of an earlier save, the second's copy
    would overwrite the values the first is writing, and the first checkpoint would hold the
    second's weights."""
    staging.stage({"w": torch.ones(64)}, cache_key="run", fallback=_unreachable).release()
    first = staging.stage({"w": torch.full((64,), 1.0)}, cache_key="run", fallback=_unreachable)
    second = staging.stage({"w": torch.full((64,), 2.0)}, cache_key="run",
                           fallback=_unreachable)
    assert first.state["w"].data_ptr() != second.state["w"].data_ptr()
    assert torch.equal(first.state["w"], torch.full((64,), 1.0))
    assert torch.equal(second.state["w"], torch.full((64,), 2.0))


def test_a_cached_buffer_of_another_dtype_is_not_reused() -> None:
    """A model cast between saves (float32 to bfloat16, same shapes): reusing the float32
    buffer would save the tensor as float32, and a load into the bfloat16 model would be
    refused or silently converted."""
    staging.stage({"w": torch.ones(4, 4)}, cache_key="run", fallback=_unreachable).release()
    src = torch.arange(16, dtype=torch.bfloat16).reshape(4, 4)
    staged = staging.stage({"w": src}, cache_key="run", fallback=_unreachable).state["w"]
    assert staged.dtype == torch.bfloat16
    assert torch.equal(staged, src)


# ---- dcp.py: the writer ------------------------------------------------------------------------

def test_overlapping_async_saves_each_commit_their_own_state(
        local_lake_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The training loop goes on (and saves again) while an async save uploads: the staged
    copy must be released for reuse only once its files are written, or the next save's
    staging overwrites it and the first step's checkpoint holds the second step's weights."""
    from ckptlake.torch import dcp as lake_dcp

    lake = ckptlake.open(local_lake_url)
    writing, second_staged = threading.Event(), threading.Event()
    real = lake_dcp._LakeFS.create_stream

    def gated(self: Any, path: Any, mode: str) -> Any:
        if str(path).endswith(".distcp"):
            writing.set()
            second_staged.wait(20)  # the first save writes its data only after save 2 staged
        return real(self, path, mode)

    monkeypatch.setattr(lake_dcp._LakeFS, "create_stream", gated)
    state = {"w": torch.full((1000,), 1.0)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f1 = dcp.async_save(state, storage_writer=LakeWriter(lake, "run", step=1))
        assert writing.wait(20)  # save 1 is about to write its staged copy
        state["w"].fill_(2.0)
        f2 = dcp.async_save(state, storage_writer=LakeWriter(lake, "run", step=2))
        second_staged.set()
        f1.result(60)
        f2.result(60)
    for step, value in ((1, 1.0), (2, 2.0)):
        out = {"w": torch.zeros(1000)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcp.load(out, storage_reader=LakeReader(lake, f"run@step={step}"), no_dist=True)
        assert torch.equal(out["w"], torch.full((1000,), value)), step


def test_a_writer_refuses_a_checkpoint_id_it_does_not_write(local_lake_url: str) -> None:
    """checkpoint_id names where a FileSystemWriter writes; a LakeWriter given another one
    would silently write its own artifact and step instead of what the caller named."""
    lake = ckptlake.open(local_lake_url)
    with pytest.raises(UsageError, match=r"LakeWriter writes run@step1, not checkpoint_id "
                                         r"'run@step2'"):
        dcp.save({"w": torch.ones(3)}, checkpoint_id="run@step2",
                 storage_writer=LakeWriter(lake, "run", step=1), no_dist=True)
    assert lake.pending("run") == []
    assert [i.key for i in lake.store.list("") if "run" in i.key] == []


def test_a_reader_refuses_a_checkpoint_id_it_does_not_read(local_lake_url: str) -> None:
    """dcp.load(checkpoint_id="run@v3", storage_reader=LakeReader(lake, "run@v2")): the
    caller asked for v3; loading v2 without a word would resume from the wrong version."""
    lake = ckptlake.open(local_lake_url)
    for step in (1, 2, 3):
        dcp.save({"w": torch.full((3,), float(step))},
                 storage_writer=LakeWriter(lake, "run", step=step), no_dist=True)
    out = {"w": torch.zeros(3)}
    with pytest.raises(UsageError, match=r"LakeReader reads run@v2, not checkpoint_id "
                                         r"'run@v3'"):
        dcp.load(out, checkpoint_id="run@v3", storage_reader=LakeReader(lake, "run@v2"),
                 no_dist=True)
    assert torch.equal(out["w"], torch.zeros(3))


def test_a_version_missing_a_data_file_is_an_integrity_error(local_lake_url: str,
                                                              tmp_path: Path) -> None:
    """A pushed DCP directory whose .distcp was lost (a copy cut short): the load must say the
    checkpoint is incomplete, not fail with an AttributeError from deep inside torch."""
    from torch.distributed.checkpoint import FileSystemWriter

    lake = ckptlake.open(local_lake_url)
    src = tmp_path / "ckpt"
    dcp.save({"w": torch.arange(3.0)}, storage_writer=FileSystemWriter(src), no_dist=True)
    data = [p for p in src.iterdir() if p.name.endswith(".distcp")]
    assert data
    for p in data:
        p.unlink()
    lake.push(src, "partial")
    with pytest.raises(BaseException) as e:  # torch wraps it in a CheckpointException
        dcp.load({"w": torch.zeros(3)}, storage_reader=LakeReader(lake, "partial@v1"),
                 no_dist=True)
    failures = getattr(e.value, "failures", None) or {0: (e.value, None)}
    errors = [exc for exc, _ in failures.values()]
    assert [type(exc) for exc in errors] == [IntegrityError], errors
    assert "partial@v1 has no file __0_0.distcp" in str(errors[0])
    assert errors[0].hint == "the checkpoint is incomplete"


def test_a_dcp_version_gets_its_listing_summary(local_lake_url: str) -> None:
    """`ckptlake ls` lists versions from their summary keys; a DCP version without one is read
    from its manifest each time (slow on a big lake) and misses its lineage markers."""
    from ckptlake.format import layout

    lake = ckptlake.open(local_lake_url)
    w = LakeWriter(lake, "run", step=1)
    dcp.save({"w": torch.ones(3)}, storage_writer=w, no_dist=True)
    keys = [i.key for i in lake.store.list(layout.summaries_prefix("run"))]
    assert [layout.parse_summary_key(k)[:2] for k in keys] == [("run", w.version)], keys


def test_a_reader_refuses_a_per_rank_metadata_read(local_lake_url: str) -> None:
    """read_metadata(rank=N) is torch's no-collectives layout (one .metadata per rank):
    answering it with the global .metadata would plan a load of other ranks' items."""
    lake = ckptlake.open(local_lake_url)
    dcp.save({"w": torch.ones(3)}, storage_writer=LakeWriter(lake, "run", step=1), no_dist=True)
    reader = LakeReader(lake, "run@v1")
    with pytest.raises(UsageError, match="saved with collectives"):
        reader.read_metadata(rank=1)


# ---- planread ----------------------------------------------------------------------------------

def test_a_segment_still_being_fetched_is_not_given_to_another_fetch(
        local_lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request that reads only part of its item (a resharded load) releases segments whose
    fetch is still running: their buffer reused by the next fetch would be written twice at
    once, and the next tensor would load another chunk's bytes."""
    from ckptlake.core.reader import LakeFile
    from ckptlake.torch.dcp import _VersionFS
    from ckptlake.torch.planread import read_plan

    lake = ckptlake.open(local_lake_url, chunk_size=MiB)
    src = tmp_path / "src"
    src.mkdir()
    blobs = {name: os.urandom(4 * MiB) for name in ("a.bin", "b.bin")}
    for name, data in blobs.items():
        (src / name).write_bytes(data)
    lake.push(src, "blobs")
    fs = _VersionFS(lake, lake._manifest("blobs@v1"), 0)
    files = {name: fs.create_stream(name, "rb") for name in blobs}

    lock = threading.Lock()
    running: dict[int, tuple[threading.Event, threading.Event]] = {}  # id(buffer) -> events
    real = LakeFile.fetch_segment
    a_file = files["a.bin"]

    def fetch(self: Any, i: int, buffer: Any = None) -> Any:
        if self is a_file and i > 0:  # never read by the request: held until shared, if ever
            go, done = threading.Event(), threading.Event()
            with lock:
                running[id(buffer)] = (go, done)
            try:
                go.wait(1.5)
                return real(self, i, buffer)
            finally:
                done.set()
                with lock:
                    running.pop(id(buffer), None)
        out = real(self, i, buffer)
        with lock:
            other = running.get(id(buffer))
        if other is not None:  # the buffer of a fetch still running: let it write now
            other[0].set()
            other[1].wait(10)
        return out

    monkeypatch.setattr(LakeFile, "fetch_segment", fetch)
    got: dict[str, bytes] = {}

    def handle(req: str, stream: Any) -> None:
        got[req] = stream.read(1) if req == "a.bin" else stream.read()

    try:
        read_plan([(name, name, 0, len(data)) for name, data in blobs.items()], files, handle,
                  workers=4, window=2 * MiB)
    finally:
        for f in files.values():
            f.close()
    assert got["a.bin"] == blobs["a.bin"][:1]
    assert got["b.bin"] == blobs["b.bin"]


# ---- a 2-rank world ----------------------------------------------------------------------------

def _unshared(rank: int, world: int, url: str, other: str) -> dict[str, Any]:
    """Rank 1 on another host whose directory at the lake's path is not the shared one."""
    lake = ckptlake.open(url if rank == 0 else other)
    lake.url = url  # the same path, so the ranks' targets agree
    out: dict[str, Any] = {}
    try:
        dcp.save({"w": torch.full((4,), float(rank))},
                 storage_writer=LakeWriter(lake, "run", step=1))
        out["saved"] = "saved"
    except BaseException as e:
        failures = getattr(e, "failures", None) or {}
        out["saved"] = {"raised": type(e).__name__, "text": str(e),
                        "types": {str(r): type(x).__name__ for r, (x, _) in failures.items()}}
    return out


def _child(rank: int, world: int, port: int, url: str, other: str, out: str,
           env: dict[str, str]) -> None:
    rank_main(rank, world, port, out, env, lambda: _unshared(rank, world, url, other))


def test_a_step_not_committed_after_every_write_fails_the_save(local_lake_url: str,
                                                              tmp_path: Path) -> None:
    """Ranks that write to directories that only look like one lake: the coordinator's record
    does not complete the step.  dcp.save must fail, or the job goes on believing step 1 is
    saved while the lake holds only a pending step nobody can load."""
    world = 2
    other = tmp_path / "other-host"
    ckptlake.open(local_lake_url)  # (made; rank 1's copy of the path is another directory)
    env = {k: v for k, v in os.environ.items()
           if k.startswith(("AWS_", "XDG_", "CKPTLAKE", "PYTHONPATH"))}
    env["TMPDIR"] = str(tmp_path)
    reports, _ = spawn_world(_child, world, tmp_path, local_lake_url, f"file://{other}",
                             seconds=JOIN_SECONDS, env=env)
    assert sorted(reports) == [0, 1]
    for r in reports.values():
        assert "error" not in r, r.get("traceback")
        saved = r["saved"]
        assert saved != "saved" and saved["types"] == {"0": "Conflict"}, saved
        assert "run step 1: not committed after every rank's write (2 of 3 shard records " \
               "seen)" in saved["text"], saved
    lake = ckptlake.open(local_lake_url)
    with pytest.raises(NotFound):
        lake.versions("run")  # no version at all
    assert [(p.step, p.present) for p in lake.pending("run")] == [(1, 2)]


# ---- Lightning ---------------------------------------------------------------------------------

def _lightning_checkpoint(step: int) -> dict[str, Any]:
    return {"state_dict": {"w": torch.full((3,), float(step))}, "global_step": step,
            "epoch": 0, "pytorch-lightning_version": "2.0.0"}


def test_a_path_saved_again_resumes_from_its_newest_version(local_lake_url: str,
                                                            tmp_path: Path) -> None:
    """last.ckpt saved, resumed from, saved again: the version resumed from is kept (never
    deleted by the run that resumed from it), so the path names two versions.  Resuming from
    the path must take the newer, or a restart silently loses the training since."""
    pytest.importorskip("lightning.pytorch")
    from ckptlake.torch import LakeCheckpointIO

    lake = ckptlake.open(local_lake_url)
    io = LakeCheckpointIO(lake, "pl/run", async_upload=False)
    last = str(tmp_path / "last.ckpt")
    io.save_checkpoint(_lightning_checkpoint(4), last)
    assert io.load_checkpoint("lake://pl/run")["global_step"] == 4
    io.save_checkpoint(_lightning_checkpoint(8), last)
    io.wait()
    assert [v.step for v in lake.versions("pl/run")] == [4, 8]  # v1 kept: resumed from
    assert io.load_checkpoint(last)["global_step"] == 8
    io.teardown()


def test_loading_waits_for_this_runs_pending_saves(local_lake_url: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """With async uploads, a resume right after a save (the trainer's restart path) must see
    that save committed; otherwise lake://run (@latest) resumes from the save before it."""
    pytest.importorskip("lightning.pytorch")
    from ckptlake.core import push as push_mod
    from ckptlake.torch import LakeCheckpointIO

    lake = ckptlake.open(local_lake_url)
    io = LakeCheckpointIO(lake, "pl/run", async_upload=True)
    io.save_checkpoint(_lightning_checkpoint(4), str(tmp_path / "a.ckpt"))
    io.wait()
    real, entered, loading = push_mod.push, threading.Event(), threading.Event()

    def slow(*a: Any, **k: Any) -> Any:
        entered.set()
        loading.wait(10)  # released once the load has started, plus a window
        return real(*a, **k)

    monkeypatch.setattr(push_mod, "push", slow)
    io.save_checkpoint(_lightning_checkpoint(8), str(tmp_path / "b.ckpt"))
    assert entered.wait(10)
    timer = threading.Timer(0.5, loading.set)
    timer.start()
    try:
        assert io.load_checkpoint("lake://pl/run")["global_step"] == 8
    finally:
        loading.set()
        timer.cancel()
        io.teardown()


# ---- HF ----------------------------------------------------------------------------------------

def test_pull_for_resume_pulls_the_version_it_resolved(local_lake_url: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """pull_for_resume("run@latest") names the directory after the version it resolved; a
    push landing before the pull must not put a newer checkpoint's files in it (the Trainer
    would resume step 20's state under checkpoint-10, or a mix of both)."""
    pytest.importorskip("transformers")
    from ckptlake.lake import Lake
    from ckptlake.torch import pull_for_resume

    lake = ckptlake.open(local_lake_url)

    def trainer_dir(step: int) -> Path:
        d = tmp_path / f"src{step}"
        d.mkdir()
        (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        (d / "weights.bin").write_bytes(bytes([step]) * 16)
        return d

    lake.push(trainer_dir(10), "hf/run", step=10)
    real = Lake.pull

    def racing(self: Any, what: Any, *a: Any, **k: Any) -> Any:
        if lake.versions("hf/run")[-1].step != 20:
            lake.push(trainer_dir(20), "hf/run", step=20)  # another job's push, just now
        return real(self, what, *a, **k)

    monkeypatch.setattr(Lake, "pull", racing)
    path = pull_for_resume(lake, "hf/run@latest", tmp_path / "out")
    assert os.path.basename(path) == "checkpoint-10"
    assert json.loads((Path(path) / "trainer_state.json").read_text())["global_step"] == 10
    assert (Path(path) / "weights.bin").read_bytes() == bytes([10]) * 16


def test_an_uncached_save_keeps_no_buffers_after_release() -> None:
    """cache_staged_state_dict=False: the user chose not to keep a copy of the state in host
    memory between saves; a released set kept anyway (under no key) is a full copy of the
    rank's state never freed."""
    staging.stage({"w": torch.ones(64)}, cache_key=None, fallback=_unreachable).release()
    assert staging._CACHE == {}
