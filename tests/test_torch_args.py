"""ckptlake.torch's entry points check their arguments when called, before anything is uploaded:
a wrong type or value is a UsageError (exit 2) naming the parameter.

Found by a review: `LakeWriter(aliases="best")` committed the aliases b, e, s, t (and so did the
HF callback's); LakeWriter looked at metrics, metadata, aliases and stale_after only after the
rank's data was uploaded, so a bad one (`stale_after="soon"`) left the step pending for ever.
No process worlds here: a 1-rank `dcp.save(no_dist=True)` on a file:// lake where a real save
is needed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

torch = pytest.importorskip("torch")
dcp = pytest.importorskip("torch.distributed.checkpoint")

import ckptlake  # noqa: E402
import ckptlake.torch as ct  # noqa: E402
from ckptlake.errors import UsageError  # noqa: E402
from ckptlake.lake import Lake  # noqa: E402
from ckptlake.torch import LakeReader, LakeWriter  # noqa: E402


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[Lake]:
    lk = ckptlake.open(f"file://{tmp_path / 'lake'}")
    yield lk
    lk.close()


def _stored(lake: Lake) -> list[str]:
    root = Path(lake.url[len("file://"):])
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) \
        if root.exists() else []


def _refused(call: Any, words: str) -> None:
    with pytest.raises(UsageError) as err:
        call()
    assert words in str(err.value), str(err.value)
    assert err.value.exit_code == 2


@pytest.mark.parametrize("kw, words", [
    ({"aliases": 1}, "aliases must be a string or a list"),
    ({"aliases": ["Bad Alias!"]}, "invalid alias name 'Bad Alias!'"),
    ({"metrics": {"loss": "nan?"}}, "metric 'loss' must be a finite number"),
    ({"metrics": {"loss": float("nan")}}, "metric 'loss' must be a finite number"),
    ({"metrics": [1.0]}, "metrics must be a mapping"),
    ({"metadata": ["x"]}, "metadata must be a mapping"),
    ({"stale_after": "soon"}, "stale_after must be a non-negative number of seconds"),
    ({"stale_after": -1}, "stale_after must be a non-negative number of seconds"),
    ({"thread_count": 0}, "thread_count must be a positive integer"),
    ({"thread_count": "2"}, "thread_count must be a positive integer"),
    ({"cache_staged_state_dict": "no"}, "cache_staged_state_dict must be True or False"),
    ({"staging_dir": 1}, "staging_dir must be a path"),
    ({"step": "3"}, "step must be an integer"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_dcp_writer_refuses_bad_arguments_before_any_upload(lake: Lake, kw: dict[str, Any],
                                                            words: str) -> None:
    args = {"step": 1, **kw}
    _refused(lambda: LakeWriter(lake, "x/dcp", **args), words)
    assert _stored(lake) == []


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_one_alias_string_is_one_alias_of_a_dcp_save(lake: Lake) -> None:
    w = LakeWriter(lake, "x/dcp", step=4, aliases="best", metrics={"loss": 1},
                   metadata={"n": 2}, stale_after=float("inf"))
    dcp.save({"w": torch.zeros(4)}, storage_writer=w, no_dist=True)
    v = lake.resolve("x/dcp@best")
    assert (v.version, v.aliases, v.metrics, v.metadata["n"]) == (1, ["best"], {"loss": 1.0}, "2")
    assert lake.pending() == []


@pytest.mark.parametrize("call, words", [
    (lambda lk: LakeWriter(lk.url, "x/dcp", step=1), "lake must be a Lake"),
    (lambda lk: LakeReader(lk.url, "x/dcp"), "lake must be a Lake"),
    (lambda lk: LakeReader(lk, "x/dcp", window="1"), "window must be a non-negative integer"),
    (lambda lk: LakeReader(lk, "x/dcp", readahead=-1), "readahead must be a non-negative"),
    (lambda lk: LakeReader(lk, 5), "a reference is a string"),
    (lambda lk: ct.save({}, lk.url, "x/pt"), "lake must be a Lake"),
    (lambda lk: ct.save({}, lk, "x/pt", aliases=2), "aliases must be a string or a list"),
    (lambda lk: ct.save({}, lk, "x/pt", metadata=["x"]), "metadata must be a mapping"),
    (lambda lk: ct.load(lk.url, "x/pt"), "lake must be a Lake"),
    (lambda lk: ct.load(lk, "x/pt", weights_only=0), "weights_only must be True or False"),
    (lambda lk: ct.load(lk, "x/pt", max_buffer="1"), "max_buffer must be a non-negative"),
    (lambda lk: ct.load(lk, "x/pt", path=1), "path must be a path"),
], ids=["writer-url", "reader-url", "window", "readahead", "reader-ref", "save-url",
        "save-aliases", "save-metadata", "load-url", "load-weights_only", "load-max_buffer",
        "load-path"])
def test_dcp_reader_and_single_file_calls_check_their_arguments(lake: Lake, call: Any,
                                                                words: str) -> None:
    _refused(lambda: call(lake), words)
    assert _stored(lake) == []


def test_single_file_save_takes_one_alias_string(lake: Lake) -> None:
    ct.save({"w": torch.ones(2)}, lake, "x/pt", aliases="best")
    assert lake.resolve("x/pt@best").aliases == ["best"]
    assert torch.equal(ct.load(lake, "x/pt@best")["w"], torch.ones(2))


def test_hf_callback_and_pull_for_resume_check_their_arguments(lake: Lake,
                                                               tmp_path: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pytest.importorskip("transformers")
    from ckptlake.torch import LakeTrainerCallback, pull_for_resume

    assert LakeTrainerCallback(lake, "x/hf", aliases="best").aliases == ("best",)
    cb = LakeTrainerCallback(lake.url, "x/hf", metadata={"n": 1})
    assert cb.metadata["n"] == "1" and cb.metadata["framework"].startswith("transformers ")
    cb.lake.close()
    dest = tmp_path / "out"
    for call, words in (
            (lambda: LakeTrainerCallback(lake, "x/hf", aliases=["Bad Alias!"]), "invalid alias"),
            (lambda: LakeTrainerCallback(lake, "x/hf", aliases=3), "aliases must be a string"),
            (lambda: LakeTrainerCallback(lake, "x/hf", metadata=["x"]), "metadata must be a"),
            (lambda: LakeTrainerCallback(5, "x/hf"), "lake must be a Lake or a lake URL"),
            (lambda: pull_for_resume(lake, "x/hf", 5), "dest must be a path"),
            (lambda: pull_for_resume(lake, "x/hf", dest, force="no"), "force must be True"),
            (lambda: pull_for_resume(None, "x/hf", dest), "lake must be a Lake or a lake URL")):
        _refused(call, words)
    assert not dest.exists() and _stored(lake) == []


def test_lightning_plugin_checks_its_arguments(lake: Lake, tmp_path: Path) -> None:
    pytest.importorskip("lightning.pytorch")
    from ckptlake.torch import LakeCheckpointIO

    _refused(lambda: LakeCheckpointIO(lake, "x/pl", async_upload="no"),
             "async_upload must be True or False")
    _refused(lambda: LakeCheckpointIO(5, "x/pl"), "lake must be a Lake or a lake URL")
    io = LakeCheckpointIO(lake, "x/pl", async_upload=False)
    try:
        ckpt = {"global_step": 3, "state_dict": {"w": torch.zeros(2)}}
        path = tmp_path / "a.ckpt"
        for options, words in (({"metrics": [1.0]}, "metrics must be a mapping"),
                               ({"metadata": ["x"]}, "metadata must be a mapping"),
                               ({"aliases": ["Bad Alias!"]}, "invalid alias name"),
                               ({"aliases": 2}, "aliases must be a string or a list")):
            _refused(lambda: io.save_checkpoint(ckpt, path, storage_options=options), words)
        _refused(lambda: io.save_checkpoint(ckpt, 5), "path must be a path")
        _refused(lambda: io.remove_checkpoint(5), "path must be a path")
        _refused(lambda: io.version_of(5), "path must be a path")
        _refused(lambda: io.load_checkpoint(5), "path must be a path")
        assert lake.artifacts() == []
        io.save_checkpoint(ckpt, path, storage_options={"aliases": "best",
                                                        "metrics": {"acc": 0.5}})
        v = lake.resolve("x/pl@best")
        assert (v.step, v.aliases, v.metrics) == (3, ["best"], {"acc": 0.5})
    finally:
        io.teardown()
