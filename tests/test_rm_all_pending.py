"""`rm ARTIFACT --all` said nothing of the artifact's sharded steps not committed yet: they are
no versions, so they stay, and the commit of one (its last rank's push, a takeover) brought the
"deleted" artifact back with a new version.  Now the plan, the result and the JSON name them,
with the command that discards one; with no version at all, the NotFound says they are there."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app

ART = "t/pend"


def run(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def _rank(tmp_path: Path, rank: int) -> Path:
    d = tmp_path / f"rank{rank}"
    d.mkdir(exist_ok=True)
    (d / f"shard{rank}.bin").write_bytes(bytes([rank]) * 3000)
    return d


def test_rm_all_names_the_pending_steps_it_leaves(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'lake'}"
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w" * 4000)
    assert run("push", src, ART, "--lake", url).exit_code == 0
    with ckptlake.open(url) as lake:  # step 7: rank 0 of 2 in, rank 1 not yet
        assert lake.push_shard(_rank(tmp_path, 0), ART, step=7, rank=0, world=2).version is None
    r = run("rm", ART, "--all", "--dry-run", "--lake", url, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["pending"] == [7]
    r = run("rm", ART, "--all", "--reason", "abandoned", "--yes", "--lake", url)
    assert r.exit_code == 0, r.output
    assert f"{ART} also has 1 pending sharded step (step=7), which rm leaves" in r.stdout
    assert f"ckptlake rm {ART}@step=7 --pending" in r.stdout
    # what the note warns of: the last rank's push commits a new version of the artifact
    with ckptlake.open(url) as lake:
        done = lake.push_shard(_rank(tmp_path, 1), ART, step=7, rank=1, world=2)
        assert done.version == 2
    # no version left, no pending step: the plain messages
    r = run("rm", ART, "--all", "--yes", "--lake", url, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["pending"] == [], r.output
    r = run("rm", ART, "--all", "--yes", "--lake", url)
    assert r.exit_code == 3 and "was deleted already" in r.output, r.output
    assert "pending sharded" not in r.output


def test_with_only_pending_steps_the_not_found_names_them(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'lake'}"
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w")
    assert run("push", src, "t/other", "--lake", url).exit_code == 0  # the lake exists
    with ckptlake.open(url) as lake:
        lake.push_shard(_rank(tmp_path, 0), ART, step=3, rank=0, world=2)
    r = run("rm", ART, "--all", "--yes", "--lake", url)
    assert r.exit_code == 3, r.output
    assert f"{ART} has no version; its pending sharded step (step=3) is no version" in r.output
    assert f"ckptlake rm {ART}@step=3 --pending" in r.output
