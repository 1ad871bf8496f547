"""The library's arguments, as a training script or a notebook passes them: bad values of the
documented types are ckptlake's typed errors (UsageError), never a TypeError, AttributeError,
IndexError or AssertionError from deep inside (found by an audit of the Python API)."""
from __future__ import annotations

import os
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


@pytest.mark.parametrize("call, words", [
    (lambda lk, d: lk.versions("a/b", limit="2"), "limit must be a non-negative integer"),
    (lambda lk, d: lk.versions("a/b", limit=1.5), "limit must be a non-negative integer"),
    (lambda lk, d: lk.versions("a/b", sort=1), "sort must be a string"),
    (lambda lk, d: lk.versions("a/b", where=1), "where must be a condition string"),
    (lambda lk, d: lk.du(price="1"), "price must be a non-negative number"),
    (lambda lk, d: lk.du(price=-1), "price must be a non-negative number"),
    (lambda lk, d: lk.du(prefix=1), "prefix must be a string"),
    (lambda lk, d: lk.du(versions="no"), "versions must be True or False"),
    (lambda lk, d: lk.artifacts(1), "prefix must be a string"),
    (lambda lk, d: lk.expired_counts(1), "prefix must be a string"),
    (lambda lk, d: lk.lineage("a/b", depth="2"), "depth must be a non-negative integer"),
    (lambda lk, d: lk.gc_plan(match=1), "match must be a string"),
    (lambda lk, d: lk.gc_plan(now="2030-01-01"), "now must be a datetime"),
    (lambda lk, d: lk.gc_plan(policy=1), "policy must be a RetentionPolicy"),
    (lambda lk, d: lk.gc("plan"), "plan must be a GcPlan"),
    (lambda lk, d: lk.alias("a/b", 1), "name must be a string"),
    (lambda lk, d: lk.verify(read_data="no"), "read_data must be True or False"),
    (lambda lk, d: lk.pull("a/b", d, force="no"), "force must be True or False"),
    (lambda lk, d: lk.pull("a/b", d, use_cache=1), "use_cache must be True or False"),
    (lambda lk, d: lk.pull("a/b", d, paths=1), "paths must be a string or a list"),
    (lambda lk, d: lk.pull("a/b", d, reference=1), "reference must be a string or a list"),
    (lambda lk, d: lk.pull("a/b", d, replica=1), "replica must be a string"),
    (lambda lk, d: lk.estimate_pull("a/b", d, use_cache="no"), "use_cache must be True"),
    (lambda lk, d: lk.diff("a/b", "a/b", values="no"), "values must be True or False"),
    (lambda lk, d: lk.push(d, "a/c", follow_symlinks="no"), "follow_symlinks must be True"),
    (lambda lk, d: lk.push(d, "a/c", meta_file=1), "meta_file must be a path"),
    (lambda lk, d: lk.push(d, "a/c", provenance="no"), "provenance must be True, False or"),
    (lambda lk, d: lk.push(d, "a/c", aliases=1), "aliases must be a string or a list"),
    (lambda lk, d: lk.push(1, "a/c"), "source must be a path"),
    (lambda lk, d: lk.verify(1), "ref must be None"),
    (lambda lk, d: lk.open("a/b", "sub/model.bin", replica=1), "replica must be a string"),
    (lambda lk, d: Lake(lk.store, max_bandwidth="1"), "max_bandwidth must be a positive"),
    (lambda lk, d: lk.checkpointer("a/f", exit_timeout="2"), "exit_timeout must be a non-neg"),
    (lambda lk, d: lk.checkpointer("a/f", reuse_buffers="no"), "reuse_buffers must be True"),
    (lambda lk, d: lk.checkpointer("a/f", snapshot_dir=1), "snapshot_dir must be a path"),
    (lambda lk, d: lk.checkpointer("a/f", retention=1), "retention must be a RetentionPolicy"),
])
def test_wrong_types_name_the_parameter_and_the_type(lake: Lake, tmp_path: Path, call,
                                                      words: str) -> None:
    """A bare TypeError from deep inside before (limit="2" compared with 0, price="1"
    multiplied), or worse, a string taken for True: force="no" replaced files."""
    dest = tmp_path / "dest"
    with pytest.raises(UsageError) as err:
        call(lake, dest)
    assert words in str(err.value) and err.value.exit_code == 2
    assert not dest.exists()


def test_flags_and_counts_may_be_numpys(lake: Lake, tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    assert lake.pull("a/b", tmp_path / "o", force=np.bool_(True)).version == 1
    assert len(lake.versions("a/b", limit=np.int64(1))) == 1


def test_checkpointer_calls_check_their_arguments(lake: Lake, tmp_path: Path) -> None:
    with lake.checkpointer("a/ck", retention=False) as ck:
        for call, words in ((lambda: ck.wait(timeout="1"), "timeout must be a non-negative"),
                            (lambda: ck.save(1), "path must be a path"),
                            (lambda: ck.save(tmp_path, exclude=1), "exclude must be a string"),
                            (lambda: ck.save_state({}, filename=1), "filename must be a string"),
                            (lambda: ck.save_state({}, aliases=2), "aliases must be a string")):
            with pytest.raises(UsageError, match=words):
                call()
        assert ck.wait(timeout=float("inf")) == []  # for ever: no deadline


def test_one_where_string_is_one_condition(lake: Lake, tmp_path: Path) -> None:
    """Iterated, "loss<2" was the conditions "l", "o", ...: an error about "l"."""
    lake.push(tmp_path / "src", "a/m", metrics={"loss": 1.5})
    assert [v.version for v in lake.versions("a/m", where="loss<2")] == [1]
    assert lake.versions("a/m", where="loss>2") == []


@pytest.mark.parametrize("max_buffer", [0, 1 << 20], ids=["streamed", "whole"])
def test_an_opened_file_is_read_only_like_a_file_opened_rb(lake: Lake,
                                                           max_buffer: int) -> None:
    import io

    with lake.open("a/b", "sub/model.bin", max_buffer=max_buffer) as f:
        assert f.writable() is False
        for call in (lambda: f.write(b"x"), lambda: f.writelines([b"x"]), lambda: f.truncate(),
                     lambda: f.truncate(0)):
            with pytest.raises(io.UnsupportedOperation, match="immutable.*Lake.writer"):
                call()
        assert f.read() == b"weights"  # unharmed
    with pytest.raises(ValueError, match="closed"):
        f.write(b"x")


def _review_lake(tmp_path: Path) -> "ckptlake.Lake":
    lk = ckptlake.open(f"file://{tmp_path / 'lake'}")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("x")
    lk.push(src, "a/b")
    return lk


# Review of 83fba27: None is no names as before, a huge int is no OverflowError, and an
# infinite exit_timeout waits at exit instead of losing the checkpoint.


def test_none_is_no_names_as_before(tmp_path: Path) -> None:
    """check_names always took None as "none"; check_arg refused it (push(aliases=None))."""
    lake = _review_lake(tmp_path)
    r = lake.push(tmp_path / "src", "a/b", aliases=None, exclude=None)
    assert r.version == 2
    lake.pull("a/b", tmp_path / "o", paths=None, include=None, exclude=None, reference=None)
    lake.checkpointer("a/c", aliases=None).close()


def test_a_huge_int_is_a_usage_error_not_overflow(tmp_path: Path) -> None:
    lake = _review_lake(tmp_path)
    assert len(lake.versions("a/b", limit=10 ** 400)) == 1  # worked before 83fba27
    with pytest.raises(UsageError, match="price"):
        lake.du(price=10 ** 400)


def test_exit_timeout_inf_waits_at_exit(tmp_path: Path) -> None:
    """check_arg admits an infinite exit_timeout ("wait for ever"); the exit hook then raised
    OverflowError from Condition.wait and the pending checkpoint was lost."""
    src = tmp_path / "s"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(600_000))
    with ckptlake.open(f"file://{tmp_path / 'lake'}", max_bandwidth=1_000_000) as lk:
        ck = lk.checkpointer("a/b", exit_timeout=float("inf"))
        ck.save(src, step=1)
        ck._drain_at_exit()  # what the exit hook / SIGTERM handler runs
        assert [v.step for v in lk.versions("a/b")] == [1]
        ck.close()


def test_metadata_that_is_no_mapping_is_a_usage_error(tmp_path: Path) -> None:
    """A list of metadata failed with an AttributeError (.items) in every writer."""
    lake = _review_lake(tmp_path)
    with pytest.raises(UsageError, match="metadata must be a mapping"):
        lake.push(tmp_path / "src", "a/b", metadata=["x"])  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="metadata must be a mapping"):
        lake.checkpointer("a/c").save(tmp_path / "src", step=1, metadata=["x"])  # type: ignore


def test_lone_surrogates_in_metadata_and_metric_names_are_usage_errors(tmp_path: Path) -> None:
    """`--meta note=$'\\xff'` arrives as '\\udcff': the push failed with a bare
    UnicodeEncodeError (exit 1) after its upload."""
    lake = _review_lake(tmp_path)
    for kw in ({"metadata": {"note": "\udcff"}}, {"metadata": {"k\ud800": "v"}},
               {"metrics": {"loss\udcff": 1.0}}):
        with pytest.raises(UsageError, match="not valid Unicode"):
            lake.push(tmp_path / "src", "a/b", **kw)  # type: ignore[arg-type]
    assert [v.version for v in lake.versions("a/b")] == [1]


def test_the_lake_and_config_may_be_paths_and_nothing_else(tmp_path: Path) -> None:
    """open(Path(...)) was an AttributeError from the config code, bytes a TypeError."""
    with ckptlake.open(tmp_path / "l") as a, ckptlake.open(str(tmp_path / "l")) as b:
        assert a.url == b.url == f"file://{tmp_path / 'l'}"
    (tmp_path / "c.yaml").write_text(f"lake: file://{tmp_path / 'fromcfg'}\n")
    with ckptlake.open(config=tmp_path / "c.yaml") as c:
        assert c.url == f"file://{tmp_path / 'fromcfg'}"
    for kw, bad, said in (("lake", b"file:///x", "lake must be a URL or a path"),
                          ("lake", 5, "lake must be a URL or a path"),
                          ("config", 5, "config must be a file's path")):
        with pytest.raises(UsageError, match=said) as err:
            ckptlake.open(**{kw: bad})
        assert err.value.exit_code == 2


def test_a_writer_takes_a_pathlib_name(lake: Lake) -> None:
    with lake.writer("w/a", Path("sub") / "m.pt") as f:
        f.write(b"abc")
    assert [r["path"] for r in lake.files("w/a")["files"]] == ["sub/m.pt"]
    with pytest.raises(UsageError, match="a path inside a version must be a string, got 5"):
        lake.writer("w/a", 5)  # type: ignore[arg-type]


def test_metadata_lists_and_dicts_are_stored_as_json(lake: Lake, tmp_path: Path) -> None:
    """They were stored as Python's repr (`{'n': 1}`), which nothing reads back."""
    (tmp_path / "f").write_bytes(b"x")
    r = lake.push(tmp_path / "f", "m/a", metadata={"opt": {"lr": 3e-4, "betas": [0.9, 0.95]},
                                                    "tags": ("a", "b"), "n": 1, "s": "text"})
    meta = lake.show(r.ref).metadata
    assert meta["opt"] == '{"lr": 0.0003, "betas": [0.9, 0.95]}' and meta["tags"] == '["a", "b"]'
    assert (meta["n"], meta["s"]) == ("1", "text")
