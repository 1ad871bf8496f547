"""ckptlake.torch DCP: loading runs no code from the lake, and the ranks of a save or load agree.

- a crafted `.metadata` (or object item) is refused by name and its code never runs, nor can
  it set attributes on an allowed class (pickle BUILD), while real saves of several kinds load;
- ranks whose moving ref resolved to different versions fail the load with a Conflict instead
  of mixing tensors of two versions;
- ranks that disagree on the step fail the save with a UsageError before anything is written,
  with torch's plan caching too, and after the write (typed, before `.metadata`) when the
  planner drops the ranks' targets; ranks reaching one file:// lake by different paths save;
- `LakeWriter.version` on a non-coordinator rank stays the version its save committed when
  another version of the same step appears later.

The last three need a real 2-rank gloo world (spawned, reporting through JSON files, as in
tests/test_torch_dcp.py); one world runs all three in sequence to keep the suite fast.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import ckptlake  # noqa: E402
from ckptlake.errors import IntegrityError  # noqa: E402
from test_torch_dcp import rank_main, spawn_world  # noqa: E402

JOIN_SECONDS = 120


class _WritesMarker:
    """A pickle that, when loaded, creates `path` (a harmless stand-in for any code)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


@dataclasses.dataclass
class Point:  # an object item of the user's own class: loads only once the user allows it
    x: int
    y: int


def _push_dir(lake: Any, tmp: Path, name: str, files: dict[str, bytes], artifact: str) -> None:
    src = tmp / name
    src.mkdir()
    for path, data in files.items():
        (src / path).write_bytes(data)
    lake.push(src, artifact)


def test_a_crafted_metadata_is_refused_and_runs_nothing(local_lake_url: str,
                                                        tmp_path: Path) -> None:
    from ckptlake.torch import LakeReader

    lake = ckptlake.open(local_lake_url)
    marker = tmp_path / "code-ran"
    _push_dir(lake, tmp_path, "evil", {".metadata": pickle.dumps(_WritesMarker(str(marker)))},
              "shared/model")
    # refused where the reader is made, before any collective: typed, naming version and global
    with pytest.raises(IntegrityError, match=r"shared/model@v1: its \.metadata refers to "
                                             r"io\.open, which is not DCP metadata") as e:
        LakeReader(lake, "shared/model@latest")
    assert e.value.exit_code == 5
    assert not marker.exists()

    # not a pickle at all / not a Metadata: the same typed refusal, not a traceback from pickle
    _push_dir(lake, tmp_path, "junk", {".metadata": b"\x80\x04junk"}, "shared/model")
    with pytest.raises(IntegrityError, match=r"shared/model@v2: its \.metadata is not a "
                                             r"readable DCP metadata"):
        LakeReader(lake, "shared/model@v2")
    _push_dir(lake, tmp_path, "dict", {".metadata": pickle.dumps({"a": 1})}, "shared/model")
    with pytest.raises(IntegrityError, match=r"shared/model@v3: its \.metadata holds a dict"):
        LakeReader(lake, "shared/model@v3")


def test_a_crafted_metadata_cannot_change_an_allowed_class(local_lake_url: str,
                                                           tmp_path: Path) -> None:
    """pickle's BUILD sets attributes on whatever find_class returned, a class included: a
    few opcodes before a genuine Metadata would rewire pathlib for the whole process."""
    import pathlib

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemWriter

    from ckptlake.torch import LakeReader

    lake = ckptlake.open(local_lake_url)
    real = tmp_path / "real"
    dcp.save({"w": torch.ones(3)}, storage_writer=FileSystemWriter(real), no_dist=True)
    body = pickle.dumps(pickle.loads((real / ".metadata").read_bytes()), protocol=2)
    assert body[:2] == b"\x80\x02"

    def string(s: str) -> bytes:
        return b"X" + len(s).to_bytes(4, "little") + s.encode()

    original = pathlib.PurePath.__dict__["is_relative_to"]
    crafted = {  # each followed by the genuine Metadata
        # GLOBAL PurePath; (None, {'is_relative_to': Path}); BUILD; POP: setattr on the class
        "class": (b"cpathlib\nPurePath\nN}" + string("is_relative_to") + b"cpathlib\nPath\ns"
                  + b"\x86b0", r"sets attributes on the class pathlib\.PurePath"),
        # a Metadata whose state names no field of it (here, one that shadows __setstate__)
        "dunder": (b"ctorch.distributed.checkpoint.metadata\nMetadata\n)\x81}"
                   + string("__setstate__") + b"cbuiltins\nset\nsb0",
                   r"sets '__setstate__' on a torch\.distributed\.checkpoint\.metadata\.Metadata"),
    }
    for n, (name, (ops, refusal)) in enumerate(crafted.items(), start=1):
        _push_dir(lake, tmp_path, name, {".metadata": b"\x80\x02" + ops + body[2:]},
                  "shared/model")
        with pytest.raises(IntegrityError, match=rf"shared/model@v{n}: its \.metadata "
                                                 f"{refusal}") as e:
            LakeReader(lake, f"shared/model@v{n}")
        assert e.value.exit_code == 5
        assert pathlib.PurePath.__dict__["is_relative_to"] is original
    assert not pathlib.Path("/etc").is_relative_to("/tmp")
    # the genuine metadata alone still loads
    lake.push(real, "shared/model")
    loaded = {"w": torch.zeros(3)}
    dcp.load(loaded, storage_reader=LakeReader(lake, "shared/model@v3"), no_dist=True)
    assert torch.equal(loaded["w"], torch.ones(3))


def test_a_crafted_object_item_is_refused_and_runs_nothing(local_lake_url: str,
                                                           tmp_path: Path) -> None:
    """The `.metadata` may be genuine DCP metadata that declares any key an object item:
    torch's planner would load its bytes with torch.load(weights_only=False)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import (BytesStorageMetadata, Metadata,
                                                       MetadataIndex)

    from ckptlake.torch import LakeReader, LakeWriter

    lake = ckptlake.open(local_lake_url)
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(_WritesMarker(str(marker)), protocol=2)
    md = Metadata(state_dict_metadata={"epoch": BytesStorageMetadata()},
                  storage_data={MetadataIndex("epoch"): _StorageInfo("__0_0.distcp", 0,
                                                                      len(payload))})
    _push_dir(lake, tmp_path, "evil", {".metadata": pickle.dumps(md), "__0_0.distcp": payload},
              "shared/model")
    state = {"epoch": 0}
    with pytest.raises(BaseException) as e:  # torch wraps it: CheckpointException
        dcp.load(state, storage_reader=LakeReader(lake, "shared/model@v1"))
    assert "IntegrityError: shared/model@v1: item epoch is a pickled object that torch's " \
           "weights-only load refuses (refers to io.open)" in str(e.value)
    assert not marker.exists() and state == {"epoch": 0}

    # an object of the user's own class: refused the same way, loaded once the user allows it
    dcp.save({"p": Point(1, 2), "n": 3}, storage_writer=LakeWriter(lake, "own", step=1))
    state = {"p": None, "n": 0}
    with pytest.raises(BaseException, match=r"refers to [\w.]*Point"):
        dcp.load(state, storage_reader=LakeReader(lake, "own@v1"))
    with torch.serialization.safe_globals([Point]):
        dcp.load(state, storage_reader=LakeReader(lake, "own@v1"))
    assert state == {"p": Point(1, 2), "n": 3}


def test_real_saves_of_several_kinds_still_load(local_lake_url: str, tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemWriter

    from ckptlake.torch import LakeReader, LakeWriter

    lake = ckptlake.open(local_lake_url)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optim": opt.state_dict(),
             "bf16": torch.arange(6, dtype=torch.bfloat16), "i8": torch.arange(4, dtype=torch.int8),
             "cl": torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last),
             "od": collections.OrderedDict(a=1), "extra": {"epoch": 3, "name": "run", "ok": True,
                                                           "lrs": [0.1, 0.01], "raw": b"\x00"}}
    dcp.save(state, storage_writer=LakeWriter(lake, "real", step=1))
    zero = {"model": {k: torch.zeros_like(v) for k, v in model.state_dict().items()},
            "optim": {"state": {i: {k: torch.zeros_like(v) for k, v in s.items()}
                                for i, s in opt.state_dict()["state"].items()},
                      "param_groups": [{"params": [], "lr": 0.0}]},
            "bf16": torch.zeros(6, dtype=torch.bfloat16), "i8": torch.zeros(4, dtype=torch.int8),
            "cl": torch.zeros(2, 3, 4, 5), "od": collections.OrderedDict(a=0),
            "extra": {"epoch": 0, "name": "", "ok": False, "lrs": [], "raw": b""}}
    dcp.load(zero, storage_reader=LakeReader(lake, "real@v1"))
    for k, v in model.state_dict().items():
        assert torch.equal(zero["model"][k], v), k
    exp_avg = opt.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(zero["optim"]["state"][0]["exp_avg"], exp_avg)
    assert zero["optim"]["param_groups"][0]["lr"] == 0.01
    assert torch.equal(zero["bf16"], state["bf16"]) and torch.equal(zero["i8"], state["i8"])
    assert torch.equal(zero["cl"], state["cl"]) and zero["od"] == {"a": 1}
    assert zero["extra"] == state["extra"]

    # a directory written by torch's own FileSystemWriter (checkpoint_id: a pathlib path), pushed
    fsw = tmp_path / "fsw"
    dcp.save({"w": torch.arange(3.0)}, storage_writer=FileSystemWriter(fsw))
    lake.push(fsw, "fsw")
    loaded = {"w": torch.zeros(3)}
    dcp.load(loaded, storage_reader=LakeReader(lake, "fsw@v1"))
    assert torch.equal(loaded["w"], torch.arange(3.0))


# ---- 2-rank world -------------------------------------------------------------------------

def _state(world: int, seed: int) -> dict[str, Any]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    return {"w": distribute_tensor(torch.full((8, 4), float(seed)), mesh, [Shard(0)]),
            "b": torch.full((3,), float(seed)), "epoch": seed}


def _failure(e: BaseException) -> dict[str, Any]:
    """What dcp.save/load raised: torch wraps every rank's error in a CheckpointException."""
    failures = getattr(e, "failures", None) or {}
    return {"raised": type(e).__name__, "text": str(e),
            "types": {str(r): type(exc).__name__ for r, (exc, _) in failures.items()},
            "codes": {str(r): getattr(exc, "exit_code", None) for r, (exc, _) in failures.items()}}


def _drops_targets() -> Any:
    """A save planner that drops the local plans' storage_data (as torch's plan caching did
    for an unchanged plan): the ranks' agreement can be checked only once they have written."""
    from torch.distributed.checkpoint import DefaultSavePlanner

    class DropsTargets(DefaultSavePlanner):
        def create_global_plan(self, all_plans: list[Any]) -> Any:
            plans, md = super().create_global_plan(all_plans)
            return [dataclasses.replace(p, storage_data=None) for p in plans], md

    return DropsTargets()


def _agreement(rank: int, world: int, lake: Any) -> dict[str, Any]:
    import torch.distributed.checkpoint as dcp

    from ckptlake.torch import LakeReader, LakeWriter

    out: dict[str, Any] = {}
    # F4: a per-rank step counter that drifted
    try:
        dcp.save(_state(world, 9), storage_writer=LakeWriter(lake, "run", step=10 + rank))
        out["drift"] = "saved"
    except BaseException as e:
        out["drift"] = _failure(e)
    dist.barrier()
    if rank == 0:
        out["drift_pending"] = [(p.step, p.present) for p in lake.pending("run")]
        out["drift_listed"] = [i.key for i in lake.store.list("")]  # not even a chunk

    # F1: "run@latest" resolved by rank 0 before a commit, by rank 1 after it
    dcp.save(_state(world, 1), storage_writer=LakeWriter(lake, "run", step=1))
    reader = LakeReader(lake, "run@latest") if rank == 0 else None
    dist.barrier()
    w2 = LakeWriter(lake, "run", step=2)
    dcp.save(_state(world, 2), storage_writer=w2)
    if rank == 1:
        reader = LakeReader(lake, "run@latest")
    state = _state(world, 0)
    try:
        dcp.load(state, storage_reader=reader)
        out["mixed"] = "loaded"
    except BaseException as e:
        out["mixed"] = _failure(e)
    out["mixed_untouched"] = bool((state["w"].to_local() == 0).all()) and state["epoch"] == 0

    # F6: another version of step 2 appears after the save (an eval job, say)
    if rank == 0:
        notes = Path(tempfile.mkdtemp())
        (notes / "notes.txt").write_text("eval")
        lake.push(notes, "run", step=2)
    dist.barrier()
    out["w2_version"] = w2.version  # read only now: the claim, not @step=2 (now v3)
    out["w2_committed_here"] = bool(w2.result.committed_here or w2.commit_result)

    # torch's plan caching: from the second save on, an unchanged plan carried no target
    from torch.distributed.checkpoint import DefaultSavePlanner

    for step in (1, 2, 10 + rank):
        try:
            dcp.save(_state(world, step), storage_writer=LakeWriter(lake, "cached", step=step),
                     planner=DefaultSavePlanner(enable_plan_caching=True))
            out["cached_drift"] = "saved"
        except BaseException as e:
            out["cached_drift"] = _failure(e)
    # a planner that drops the targets: checked once written, before .metadata, and typed
    try:
        dcp.save(_state(world, 4), storage_writer=LakeWriter(lake, "dropped", step=20 + rank),
                 planner=_drops_targets())
        out["dropped"] = "saved"
    except BaseException as e:
        out["dropped"] = _failure(e)

    # rank 1 reaches the same shared directory through a symlink (another mount point): fine
    other = Path(tempfile.mkdtemp())
    if rank == 1:
        (other / "link").symlink_to(lake.url[len("file://"):])
    linked = ckptlake.open(f"file://{other / 'link'}") if rank == 1 else lake
    w = LakeWriter(linked, "linked", step=1)
    dcp.save(_state(world, 5), storage_writer=w)
    out["linked"] = w.version
    # ...but a path that is another directory is named once the commit cannot happen
    try:
        dcp.save(_state(world, 6), storage_writer=LakeWriter(
            ckptlake.open(f"file://{other / 'elsewhere'}") if rank == 1 else lake, "linked",
            step=2))
        out["elsewhere"] = "saved"
    except BaseException as e:
        out["elsewhere"] = _failure(e)
    return out


def _child(rank: int, world: int, port: int, url: str, out: str, env: dict[str, str]) -> None:
    rank_main(rank, world, port, out, env,
              lambda: _agreement(rank, world, ckptlake.open(url)))


def test_ranks_agree_on_the_version_they_load_and_the_step_they_save(local_lake_url: str,
                                                                      tmp_path: Path) -> None:
    world = 2
    env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "XDG_", "CKPTLAKE"))}
    env["TMPDIR"] = str(tmp_path)
    reports, _ = spawn_world(_child, world, tmp_path, local_lake_url, seconds=JOIN_SECONDS,
                             env=env)
    assert sorted(reports) == [0, 1]
    for r in reports.values():
        assert "error" not in r, r.get("traceback")

    for r in reports.values():
        # F4: a typed usage error naming each rank's step, raised by the coordinator's plan...
        drift = r["drift"]
        assert drift != "saved" and drift["types"] == {"0": "UsageError"}, drift
        assert drift["codes"] == {"0": 2}
        assert "rank 0: run step 10; rank 1: run step 11" in drift["text"]
        # F1: a conflict naming each rank's version, before any tensor was read into the state
        mixed = r["mixed"]
        assert mixed != "loaded" and mixed["types"] == {"0": "Conflict"}, mixed
        assert mixed["codes"] == {"0": 6}
        assert "run@v1 on rank 0; run@v2 on rank 1" in mixed["text"]
        assert 'LakeReader(lake, "run@v2")' in mixed["text"]
        assert r["mixed_untouched"]
        # F6: the version this save committed, on the coordinator and the other rank alike
        assert r["w2_version"] == 2, r
        # plan caching: refused before anything was written, as without it
        cached = r["cached_drift"]
        assert cached != "saved" and cached["types"] == {"0": "UsageError"}, cached
        assert "rank 0: cached step 10; rank 1: cached step 11" in cached["text"]
        assert "nothing was written" in cached["text"]
        # no targets in the plans: typed and named after the write, not torch's RuntimeError
        dropped = r["dropped"]
        assert dropped != "saved" and dropped["types"] == {"0": "UsageError"}, dropped
        assert "rank 0: dropped step 20; rank 1: dropped step 21" in dropped["text"]
        assert "not committed; each rank's files are recorded as a pending step" \
            in dropped["text"]
        assert r["linked"] == 1
        elsewhere = r["elsewhere"]
        assert elsewhere != "saved" and elsewhere["types"] == {"0": "UsageError"}, elsewhere
        assert "linked step 2: not committed, as the ranks wrote to different lakes (rank 0: " \
            f"{local_lake_url}; rank 1: file://" in elsewhere["text"]
    assert not reports[1]["w2_committed_here"]  # rank 1 learnt it from the step's claim
    # ...before anything was written: no record, no pending step
    assert reports[0]["drift_pending"] == [] and reports[0]["drift_listed"] == []

    lake = ckptlake.open(local_lake_url)
    assert [(v.version, v.step) for v in lake.versions("run")] == [(1, 1), (2, 2), (3, 2)]
    assert lake.pending("run") == []
    assert [(v.version, v.step) for v in lake.versions("cached")] == [(1, 1), (2, 2)]
    assert lake.pending("cached") == []
    assert [(p.step, p.ranks) for p in lake.pending("dropped")] == [(20, [0]), (21, [1])]
    assert [(v.version, v.step) for v in lake.versions("linked")] == [(1, 1)]


def test_ranks_reaching_one_s3_server_by_loopback_names_save_one_checkpoint() -> None:
    """Rank 0's config said http://localhost:8333, rank 1's http://127.0.0.1:8333: the save
    target compared the endpoints as written and refused one server as two lakes."""
    from types import SimpleNamespace

    from ckptlake.torch.dcp import _SaveTarget

    def target(endpoint: str, bucket: str = "bkt") -> Any:
        client = SimpleNamespace(meta=SimpleNamespace(endpoint_url=endpoint))
        lake = SimpleNamespace(url=f"s3://{bucket}/lake", store=SimpleNamespace(_client=client))
        return _SaveTarget.of(SimpleNamespace(lake=lake, artifact="run", step=3))  # type: ignore

    assert target("http://localhost:8333").key == target("http://127.0.0.1:8333/").key
    assert target("http://localhost:8333").key != target("http://localhost:9000").key
    assert target("http://localhost:8333").key != target("http://localhost:8333", "b2").key
    assert target("https://s3.example.com").key != target("http://s3.example.com").key
