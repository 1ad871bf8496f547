"""Mutants of the step guard, LakeCheckpointIO's placeholders, rm's lost versions, gc's lost
re-check, the atomic blocks of other threads, an interrupted push's alias failure and the local
store's stale temp removal that no test killed."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core import gc as gcmod
from ckptlake.core import tombstones
from ckptlake.format import layout
from ckptlake.store.local import LocalStore

from test_lost_manifest import ART as LOST_ART, _policy, run, three_versions
from test_lightning_step_guard import FIT_TAIL, run_fit
from test_lost_review import _VanishingStore

# ---- 1, 2: LakeStepGuard (Lightning, in a subprocess) ----------------------------------------

_HEAD = r"""
import os, signal, sys
import torch
import lightning.pytorch as pl
import ckptlake
from ckptlake.torch import LakeCheckpointIO, LakeStepGuard
"""


# The step updates `a`, gets the SIGTERM, then raises (a NaN check, say): `a` is half a step on.
RAISING = _HEAD + r"""
class Raising(torch.optim.Optimizer):
    def __init__(self, params):
        super().__init__(params, {})
    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            with torch.enable_grad():
                closure()
        params = [p for g in self.param_groups for p in g["params"]]
        params[0].add_(1.0)
        os.kill(os.getpid(), signal.SIGTERM)
        raise FloatingPointError("step aborted half-way")

class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.zeros(2))
        self.b = torch.nn.Parameter(torch.zeros(2))
    def training_step(self, batch, i):
        return (self.a.sum() + self.b.sum()) * 0.0 + batch[0].sum() * 0.0
    def configure_optimizers(self):
        return Raising(self.parameters())
""" + FIT_TAIL

# Manual optimization, two optimizers stepped in one training_step; SIGTERM inside the first
# (after it updated `a`) at the third batch.
TWO_OPTIMIZERS = _HEAD + r"""
class Adder(torch.optim.Optimizer):
    def __init__(self, params, tag):
        super().__init__(params, {})
        self.n, self.tag = 0, tag
    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            with torch.enable_grad():
                closure()
        self.n += 1
        for g in self.param_groups:
            for p in g["params"]:
                p.add_(1.0)
        if self.tag == "a" and self.n == 3:
            os.kill(os.getpid(), signal.SIGTERM)

class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.a = torch.nn.Parameter(torch.zeros(2))
        self.b = torch.nn.Parameter(torch.zeros(2))
    def training_step(self, batch, i):
        oa, ob = self.optimizers()
        oa.step()
        ob.step()
    def configure_optimizers(self):
        return [Adder([self.a], "a"), Adder([self.b], "b")]
""" + FIT_TAIL


def _fit(tmp_path: Path, script: str) -> tuple[subprocess.CompletedProcess, str]:
    return run_fit(tmp_path, script, "guard", str(tmp_path / "root"))


def _versions(url: str, artifact: str) -> list[Any]:
    with ckptlake.open(url) as lake:
        try:
            return lake.versions(artifact)
        except ckptlake.errors.NotFound:
            return []


def test_a_step_that_raises_after_the_sigterm_ends_with_its_exception_and_no_final_save(
        tmp_path: Path) -> None:
    """on_exception closes the block without acting: a final save there would commit `a`
    half a step on, under the old global_step."""
    done, url = _fit(tmp_path, RAISING)
    assert "not reached" not in done.stdout
    assert done.returncode not in (0, 143), (done.returncode, done.stderr[-3000:])
    assert "FloatingPointError" in done.stderr, done.stderr[-3000:]
    assert _versions(url, "pl/guard") == []


def test_two_optimizers_in_one_batch_are_one_block_acted_on_at_its_end(tmp_path: Path) -> None:
    """The second optimizer's hook must not open a second block: one left open kept the
    signal waiting for ever (the run went on to its end, with no final save)."""
    done, url = _fit(tmp_path, TWO_OPTIMIZERS)
    assert "not reached" not in done.stdout
    assert done.returncode == 143, (done.returncode, done.stderr[-3000:])
    [v] = _versions(url, "pl/guard")
    with ckptlake.open(url) as lake:
        sd = lake.load_state(f"pl/guard@v{v.version}")["state_dict"]
    assert (float(sd["a"][0]), float(sd["b"][0])) == (3.0, 3.0), sd


# ---- 3: LakeCheckpointIO never overwrites nor removes a file that is not its placeholder ---

REAL = b"REAL torch checkpoint"


def _ckpt(step: int) -> dict[str, Any]:
    torch = pytest.importorskip("torch")
    return {"state_dict": {"w": torch.full((2,), float(step))}, "global_step": step,
            "callbacks": {}}


def _io(lake: Any) -> Any:
    pytest.importorskip("lightning.pytorch")
    from ckptlake.torch import LakeCheckpointIO

    return LakeCheckpointIO(lake, "exp/real", async_upload=False)


def _real_file(tmp_path: Path) -> Path:
    """A user's own file where Lightning will save (or remove) a checkpoint."""
    path = tmp_path / "ck" / "epoch=0.ckpt"
    path.parent.mkdir()
    path.write_bytes(REAL)
    return path


def test_a_save_does_not_overwrite_a_real_file_at_its_path(
        local_lake_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _real_file(tmp_path)
    with ckptlake.open(local_lake_url) as lake:
        io = _io(lake)
        try:
            with caplog.at_level(logging.WARNING, logger="ckptlake"):
                io.save_checkpoint(_ckpt(2), path)
        finally:
            io.teardown()
        assert [v.step for v in lake.versions("exp/real")] == [2]
    assert path.read_bytes() == REAL
    assert f"did not write a placeholder over {path}" in caplog.text


def test_a_removal_does_not_delete_a_real_file_at_its_path(local_lake_url: str,
                                                           tmp_path: Path) -> None:
    path = _real_file(tmp_path)
    with ckptlake.open(local_lake_url) as lake:
        io = _io(lake)
        try:
            io.save_checkpoint(_ckpt(2), path)
            io.save_checkpoint(_ckpt(3), tmp_path / "ck" / "other.ckpt")
            io.remove_checkpoint(path)
        finally:
            io.teardown()
    assert path.read_bytes() == REAL


# ---- 4: rm --all and lost versions ---------------------------------------------------------


def test_rm_all_upto_takes_no_lost_version_above_it(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gcmod, "LOST_RECHECK", 0.0)
    root = tmp_path / "lake"
    url = three_versions(root, tmp_path / "src")
    os.remove(root / layout.version_key(LOST_ART, 3))
    with ckptlake.open(url) as lake:
        result = lake.delete_artifact(LOST_ART, upto=1, reason="x")
        assert result.lost == []
        assert result.versions == [1]
        assert not tombstones.present(lake.store, LOST_ART, 3)
        assert tombstones.present(lake.store, LOST_ART, 1)


def test_rm_all_takes_a_lost_version_beside_an_empty_tombstone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty tombstone records no deletion: the lost version is rm's to record, or gc keeps
    refusing after the artifact was deleted."""
    monkeypatch.setattr(gcmod, "LOST_RECHECK", 0.0)
    root = tmp_path / "lake"
    url = three_versions(root, tmp_path / "src")
    os.remove(root / layout.version_key(LOST_ART, 2))
    tomb = root / layout.tombstone_key(LOST_ART, 2)
    tomb.parent.mkdir(parents=True, exist_ok=True)
    tomb.write_bytes(b"")
    r = run("rm", LOST_ART, "--all", "--yes", "--lake", url, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["lost"] == [2], r.stdout
    assert tomb.stat().st_size > 0
    r = run("gc", "--policy", _policy(tmp_path), "--lake", url, "--yes")
    assert r.exit_code == 0, r.output


# ---- 5: gc's lost re-check reads only a tombstone that records this version ----------------


def _tombstone_of(root: Path, number: int) -> dict[str, Any]:
    """The tombstone document an rm of `number` would write."""
    from ckptlake.format.manifest import decode_manifest

    m = decode_manifest((root / layout.version_key(LOST_ART, number)).read_bytes())
    return json.loads(tombstones.from_manifest(m, deleted=m.created, rule=tombstones.RM_RULE,
                                               reason="test").encode())


def _mark_with_tombstone_at_v2(tmp_path: Path, make: Callable[[Path], bytes]) -> None:
    """Three versions, `make(root)` written at v2's tombstone key, then gc's mark, with v2's
    manifest vanishing between its listing and its read."""
    from ckptlake.core.gc import _Marker, _Scratch

    root = tmp_path / "lake"
    three_versions(root, tmp_path / "src")
    key = root / layout.tombstone_key(LOST_ART, 2)
    data = make(root)
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_bytes(data)
    store = _VanishingStore(root, layout.version_key(LOST_ART, 2))
    scratch = _Scratch()
    try:
        _Marker(store, time.monotonic, scratch).mark()
    finally:
        scratch.close()
        assert not store.armed  # the manifest did vanish under the mark


def test_gc_mark_does_not_take_another_versions_tombstone_for_the_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptlake.errors import IntegrityError

    monkeypatch.setattr(gcmod, "LOST_RECHECK", 0.0)

    def v1s(root: Path) -> bytes:  # v1's tombstone, byte for byte, at v2's key
        doc = _tombstone_of(root, 1)
        assert (doc["artifact"], doc["version"]) == (LOST_ART, 1)
        return json.dumps(doc).encode()

    with pytest.raises(IntegrityError, match=f"{LOST_ART}@v2 is lost"):
        _mark_with_tombstone_at_v2(tmp_path, v1s)


def test_gc_mark_takes_a_newer_ckptlakes_tombstone_for_the_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gcmod, "LOST_RECHECK", 0.0)

    def newer(root: Path) -> bytes:
        doc = _tombstone_of(root, 2)
        doc["ckptlake_tombstone"] = tombstones.TOMBSTONE_FORMAT + 1
        data = json.dumps(doc).encode()
        assert tombstones.decode(data) is None  # this ckptlake cannot read it
        return data

    _mark_with_tombstone_at_v2(tmp_path, newer)  # no IntegrityError: a deletion it records


# ---- 6: a block in another thread past the exit deadline ------------------------------------


def test_a_block_in_another_thread_past_the_exit_deadline_takes_no_final_save(
        local_lake_url: str, caplog: pytest.LogCaptureFixture) -> None:
    art = "t/atomic"
    state = {"w": np.zeros(4)}
    inside, release = threading.Event(), threading.Event()
    with ckptlake.open(local_lake_url) as lake:
        ck: Any = None

        def train() -> None:
            with ck.atomic():
                state["w"][:2] = 1
                inside.set()
                release.wait(20)  # stuck well past exit_timeout
                state["w"][2:] = 1

        ck = lake.checkpointer(art, on_sigterm="save", exit_timeout=2, retention=False,
                               final_save=lambda: ck.save_state({"w": state["w"].copy()},
                                                                step=1))
        worker = threading.Thread(target=train)
        try:
            worker.start()
            assert inside.wait(30)
            with caplog.at_level(logging.ERROR, logger="ckptlake"):
                started = time.monotonic()
                with pytest.raises(SystemExit) as exited:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(30)
                took = time.monotonic() - started
            assert exited.value.code == 143
        finally:
            release.set()
            worker.join(30)
            ck.close()
        assert took < 10, took  # the exit deadline (2 s), not the block's end (20 s)
        assert "the final checkpoint of t/atomic was not taken" in caplog.text
        try:
            versions = lake.versions(art)
        except ckptlake.errors.NotFound:
            versions = []
        assert versions == []


# ---- 7: an interrupt while indexing, after an alias failed ----------------------------------


def test_an_interrupt_while_indexing_still_reports_the_alias_that_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptlake.core import catalog as cat_mod
    from ckptlake.errors import TransientError
    from ckptlake.lake import Lake

    def set_alias(*args: Any, **kw: Any) -> Any:
        raise TransientError("the alias server said no")

    real, calls = Lake._after_commit, []

    def after_commit(self: Lake, *args: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args)

    monkeypatch.setattr(cat_mod, "set_alias", set_alias)
    monkeypatch.setattr(Lake, "_after_commit", after_commit)
    (tmp_path / "m.bin").write_bytes(b"weights")
    lake = tmp_path / "lake"
    r = CliRunner().invoke(app, ["push", str(tmp_path / "m.bin"), "ci/model", "--alias", "prod",
                                 "--lake", str(lake), "--json"])
    assert len(calls) == 2  # interrupted, then finished with interrupts held back
    err = json.loads(r.stdout)["error"]
    assert "ci/model@v1 is committed, but alias prod could not be set" in err["message"], err
    assert "the alias server said no" in err["message"]
    assert (err["artifact"], err["version"]) == ("ci/model", 1)
    assert r.exit_code not in (0, 130), r.output


# ---- 8: a stale temp file written again after the listing is not removed ---------------------


def test_a_temp_file_written_again_after_the_listing_is_not_removed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "lake")
    store.put("artifacts/a/b", b"1")
    temp = store.root / "artifacts" / "a" / ".tmp-1-0123456789abcdef"
    temp.write_bytes(b"old")
    past = time.time() - 10 * 24 * 3600
    os.utime(temp, (past, past))
    [up] = store.list_multipart("")
    assert up.upload_id == "artifacts/a/.tmp-1-0123456789abcdef"
    temp.write_bytes(b"a live writer's new bytes")  # fresh mtime: a writer at work
    store.abort_multipart(up.key, up.upload_id)
    assert temp.read_bytes() == b"a live writer's new bytes"
    assert store.get("artifacts/a/b") == b"1"
