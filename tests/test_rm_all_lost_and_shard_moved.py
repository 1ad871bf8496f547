"""`rm ARTIFACT --all` left an artifact's lost versions (a summary, no manifest, no tombstone)
behind, so gc still refused after it; and a sharded push did not say which alias it moved from
which version, while a plain push does (`aliases_moved`)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ckptlake.cli.app import app
from ckptlake.core import gc as gc_mod
from ckptlake.format import layout

ART = "t/lostall"


def run(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def lost_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """v1, v2, v3 of ART; v2's manifest removed by hand (lost)."""
    monkeypatch.setattr(gc_mod, "LOST_RECHECK", 0.0)  # its second look, without the wait
    root, src = tmp_path / "lake", tmp_path / "src"
    url = f"file://{root}"
    src.mkdir()
    for n in (1, 2, 3):
        (src / "w.bin").write_bytes(bytes([n]) * 5000)
        assert run("push", src, ART, "--lake", url).exit_code == 0
    os.remove(root / layout.version_key(ART, 2))
    return url, root


def _policy(tmp_path: Path) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text("retention:\n  grace_period: 0s\n  rules:\n    - match: '*'\n"
                 "      keep_last: 10\n")
    return p


def test_rm_all_dry_run_lists_the_lost_version_and_deletes_nothing(
        lost_v2: tuple[str, Path]) -> None:
    url, root = lost_v2
    before = sorted(str(p) for p in root.rglob("*"))
    r = run("rm", ART, "--all", "--dry-run", "--lake", url, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["versions"] == [1, 2, 3] and doc["lost"] == [2] and doc["deleted"] == []
    r = run("rm", ART, "--all", "--dry-run", "--lake", url)
    assert r.exit_code == 0, r.output
    assert "v1-v3" in r.stdout and "v2 was lost" in r.stdout, r.stdout
    assert sorted(str(p) for p in root.rglob("*")) == before


def test_rm_all_records_the_lost_version_so_gc_runs_again(lost_v2: tuple[str, Path],
                                                          tmp_path: Path) -> None:
    url, root = lost_v2
    policy = _policy(tmp_path)
    assert run("gc", "--policy", policy, "--lake", url, "--yes").exit_code == 5  # lost: refused
    r = run("rm", ART, "--all", "--yes", "--lake", url, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    r = run("gc", "--policy", policy, "--lake", url, "--yes")
    assert r.exit_code == 0, r.output
    r = run("verify", "--lake", url, "--json")
    assert r.exit_code == 0, r.output
    assert not [p for p in json.loads(r.stdout)["problems"] if "lost" in p["message"]]
    assert (doc["deleted"], doc.get("lost"), doc["gone"]) == ([1, 2, 3], [2], [])
    assert "(lost: its manifest was gone)" in json.loads(
        (root / layout.tombstone_key(ART, 2)).read_text())["reason"]


def test_rm_all_of_an_artifact_whose_only_version_is_lost(lost_v2: tuple[str, Path]) -> None:
    """Its live versions deleted already, the lost one is still what blocks gc: rm --all
    takes it (it said "every version was deleted already")."""
    url, root = lost_v2
    for n in (1, 3):
        assert run("rm", f"{ART}@v{n}", "--yes", "--lake", url).exit_code == 0
    r = run("rm", ART, "--all", "--yes", "--lake", url, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["deleted"] == [2]
    assert run("verify", "--lake", url).exit_code == 0


def test_rm_all_refuses_while_an_alias_names_the_lost_version(
        lost_v2: tuple[str, Path]) -> None:
    url, root = lost_v2
    (root / layout.alias_key(ART, "prod")).parent.mkdir(parents=True, exist_ok=True)
    assert run("alias", f"{ART}@v1", "prod", "--lake", url).exit_code == 0
    raw = json.loads((root / layout.alias_key(ART, "prod")).read_text())
    (root / layout.alias_key(ART, "prod")).write_text(json.dumps({**raw, "version": 2}))
    r = run("rm", ART, "--all", "--yes", "--lake", url)
    assert r.exit_code == 7, r.output
    assert "prod -> v2" in r.stderr
    assert not (root / layout.tombstone_key(ART, 2)).exists()


def test_the_committing_rank_of_a_sharded_push_reports_the_alias_it_moved(
        tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'lake'}"
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"first")
    assert run("push", src, ART, "--alias", "prod", "--lake", url).exit_code == 0  # prod -> v1
    docs = []
    for rank in (0, 1):
        d = tmp_path / f"rank{rank}"
        d.mkdir()
        (d / f"shard-{rank}.bin").write_bytes(bytes([rank]) * 1000)
        r = run("push", d, ART, "--step", 7, "--shard", f"{rank}/2", "--alias", "prod",
                "--lake", url, "--json")
        assert r.exit_code == 0, r.output
        docs.append(json.loads(r.stdout))
    pending, last = docs
    assert pending["version"] is None and pending["aliases_moved"] == {}
    assert last["committed_here"] and last["version"] == 2
    assert last["aliases_moved"] == {"prod": 1}


def test_reading_a_lost_version_says_it_is_lost_and_names_the_alias(
        lost_v2: tuple[str, Path]) -> None:
    """`pull ART@v2` of a lost version said "does not exist", which `ls` (not listing it)
    seemed to confirm; through an alias the message did not name the alias at all."""
    url, root = lost_v2
    assert run("alias", f"{ART}@v3", "good", "--lake", url).exit_code == 0
    os.remove(root / layout.version_key(ART, 3))  # v3 lost too, behind its alias
    for ref, head in ((f"{ART}@v2", f"{ART}@v2 is lost"),
                      (f"{ART}@good", f"alias 'good' of {ART} points at v3: {ART}@v3 is lost")):
        r = run("pull", ref, "out", "--lake", url)
        assert r.exit_code == 3, r.output
        assert f"{head}: its manifest is gone, deleted outside ckptlake" in r.output, r.output
        assert "ckptlake rm" in r.output and "ckptlake verify" in r.output
    r = run("pull", f"{ART}@v9", "out", "--lake", url)
    assert r.exit_code == 3 and f"{ART}@v9 does not exist" in r.output, r.output
