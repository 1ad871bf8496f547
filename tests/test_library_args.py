"""The library's arguments, as a training script or a notebook passes them: bad values of the
documented types are ckptlake's typed errors (UsageError), never a TypeError, AttributeError,
IndexError or AssertionError from deep inside (found by an audit of the Python API)."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

import ckptlake
from ckptlake.errors import UsageError
from ckptlake.lake import Lake


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    lk = ckptlake.open(f"file://{tmp_path / 'lake'}")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "model.bin").write_bytes(b"weights")
    (src / "empty.pt").write_bytes(b"")
    lk.push(src, "a/b")
    yield lk
    lk.close()


def test_paths_inside_a_version_may_be_pathlib_paths(lake: Lake) -> None:
    assert b"".join(lake.cat("a/b", Path("sub/model.bin"))) == b"weights"
    assert [f["path"] for f in lake.files("a/b", Path("sub"))["files"]] == ["sub/model.bin"]
    with lake.open("a/b", Path("sub/model.bin")) as f:
        assert f.read() == b"weights"


@pytest.mark.parametrize("call", [
    lambda lk: lk.resolve(None), lambda lk: lk.files(None), lambda lk: lk.versions(Path("a/b")),
    lambda lk: lk.cat("a/b", 5), lambda lk: lk.push(".", Path("a/b")),
], ids=["resolve-None", "files-None", "versions-Path", "cat-int", "push-Path-artifact"])
def test_wrong_types_are_usage_errors(lake: Lake, call) -> None:
    with pytest.raises(UsageError):
        call(lake)


def test_zero_is_a_value_not_the_default(tmp_path: Path) -> None:
    for kw in ({"concurrency": 0}, {"chunk_size": 0}, {"max_bandwidth": 0}):
        with pytest.raises(UsageError):
            ckptlake.open(f"file://{tmp_path / 'l'}", **kw)


def test_gc_plan_takes_a_naive_now_as_utc(lake: Lake) -> None:
    plan = lake.gc_plan(now=datetime(2030, 1, 1))
    assert plan.now.utcoffset() is not None and plan.now.year == 2030


def test_torch_loads_fail_as_usage_errors(lake: Lake, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    with pytest.raises(UsageError, match="torch.load of a/b@v1:empty.pt failed"):
        lake.load_state_dict("a/b", "empty.pt")  # an empty message: IndexError before
    src = tmp_path / "st"
    src.mkdir()
    save_file({"w": torch.ones(2)}, str(src / "m.safetensors"))
    lake.push(src, "a/st")
    for device in ("nodev", "cuda:99"):  # unknown; or not built for (CPU torch: AssertionError)
        with pytest.raises(UsageError, match="map_location"):
            lake.load_state_dict("a/st", "m.safetensors", map_location=device)
