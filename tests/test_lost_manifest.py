"""A version whose manifest is gone with no tombstone (deleted by hand, by a lifecycle rule):
verify said "no problems found" and gc swept its chunks as garbage, so a manifest restored from
bucket versioning then pointed at nothing.  Its listing summary (written after the manifest)
shows it was committed; every ckptlake deleter writes a tombstone before it removes a manifest."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.format import layout

ART = "t/lost"


def run(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def three_versions(root: Path, src: Path) -> str:
    """Three versions of ART, each with a file of its own: the lake's URL."""
    url = f"file://{root}"
    src.mkdir()
    for n in (1, 2, 3):
        (src / "w.bin").write_bytes(bytes([n]) * 5000)
        assert run("push", src, ART, "--lake", url).exit_code == 0
    return url


@pytest.fixture
def lake(tmp_path: Path) -> tuple[str, Path, Path]:
    """Three versions; v2's manifest deleted by hand."""
    root = tmp_path / "lake"
    url = three_versions(root, tmp_path / "src")
    manifest = root / layout.version_key(ART, 2)
    saved = tmp_path / "v2.json"
    saved.write_bytes(manifest.read_bytes())  # the copy bucket versioning would keep
    manifest.unlink()
    assert list((root / "artifacts" / ART / "@s").glob("0000000002.*"))
    return url, root, saved


def _policy(tmp_path: Path) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text("retention:\n  grace_period: 0s\n  rules:\n    - match: '*'\n"
                 "      keep_last: 10\n")
    return p


def test_verify_reports_the_lost_version(lake: tuple[str, Path, Path]) -> None:
    url, _, _ = lake
    r = run("verify", "--lake", url, "--json")
    assert r.exit_code == 5, r.output
    [problem] = json.loads(r.stdout)["problems"]
    assert (problem["artifact"], problem["version"]) == (ART, 2)
    assert "is lost: its manifest is gone" in problem["message"]


def test_gc_refuses_until_the_manifest_is_restored_or_the_summary_deleted(
        lake: tuple[str, Path, Path], tmp_path: Path) -> None:
    url, root, saved = lake
    policy = _policy(tmp_path)
    chunks = sorted(p.name for p in (root / "chunks").rglob("*") if p.is_file())
    for extra in (["--dry-run"], ["--yes"]):
        r = run("gc", "--policy", policy, "--lake", url, *extra)
        assert r.exit_code == 5, r.output
        assert f"{ART}@v2 is lost" in r.stderr and "restore its manifest" in r.stderr
    assert sorted(p.name for p in (root / "chunks").rglob("*") if p.is_file()) == chunks
    # restored from the backup: the version is whole again
    (root / layout.version_key(ART, 2)).write_bytes(saved.read_bytes())
    assert run("verify", "--lake", url).exit_code == 0
    out = tmp_path / "out"
    assert run("pull", f"{ART}@v2", out, "--lake", url).exit_code == 0
    assert (out / "w.bin").read_bytes() == bytes([2]) * 5000
    # gone for good: rm records it as deleted (its number stays claimed), gc collects its chunks
    (root / layout.version_key(ART, 2)).unlink()
    r = run("gc", "--policy", policy, "--lake", url, "--dry-run")
    assert f"record it as deleted: ckptlake rm {ART}@v2" in r.stderr, r.stderr
    r = run("rm", f"{ART}@v2", "--lake", url, "--yes")
    assert r.exit_code == 0, r.output
    r = run("gc", "--policy", policy, "--lake", url, "--yes")
    assert r.exit_code == 0, r.output
    assert run("verify", "--lake", url).exit_code == 0
    assert sorted(p.name for p in (root / "chunks").rglob("*") if p.is_file()) != chunks
    (tmp_path / "src" / "w.bin").write_bytes(b"new")
    r = run("push", tmp_path / "src", ART, "--lake", url, "--json")
    assert json.loads(r.stdout)["version"] == 4  # v2 is not handed out again
    r = run("ls", ART, "--all", "--lake", url, "--json")
    assert [v["version"] for v in json.loads(r.stdout)["versions"]] == [1, 3, 4]


def test_rm_of_an_unreadable_manifest_is_the_way_out_gc_names(tmp_path: Path) -> None:
    url = three_versions(tmp_path / "lake", tmp_path / "src")
    key = tmp_path / "lake" / layout.version_key(ART, 2)
    key.write_bytes(b"{not json")
    r = run("gc", "--policy", _policy(tmp_path), "--lake", url, "--dry-run")
    assert r.exit_code == 5 and f"delete the version: ckptlake rm {ART}@v2" in r.stderr
    assert run("rm", f"{ART}@v2", "--lake", url, "--yes").exit_code == 0
    assert run("gc", "--policy", _policy(tmp_path), "--lake", url, "--yes").exit_code == 0


def test_a_version_deleted_by_rm_or_gc_is_not_lost(tmp_path: Path) -> None:
    """Their tombstone says so; their summary may stay (deleting it is always safe)."""
    url = three_versions(tmp_path / "lake", tmp_path / "src")
    assert run("rm", f"{ART}@v2", "--lake", url, "--yes").exit_code == 0
    with ckptlake.open(url) as handle:
        from ckptlake.policy.retention import RetentionPolicy, Rule

        handle.gc(handle.gc_plan(RetentionPolicy(rules=(Rule(match="*", keep_last=1),),
                                                 grace_period=0)))
        assert [v.version for v in handle.versions(ART)] == [3]
    assert run("verify", "--lake", url).exit_code == 0
    assert run("gc", "--policy", _policy(tmp_path), "--lake", url, "--yes").exit_code == 0


def test_a_lost_latest_versions_number_is_not_handed_out_again(tmp_path: Path) -> None:
    """v3, the latest, lost: a push took v3 again (no manifest, no tombstone claimed it), which
    hid the loss (v3 read as the new checkpoint, its old chunks garbage, swept by the next gc)."""
    url = three_versions(tmp_path / "lake", tmp_path / "src")
    (tmp_path / "lake" / layout.version_key(ART, 3)).unlink()
    (tmp_path / "src" / "w.bin").write_bytes(b"next")
    r = run("push", tmp_path / "src", ART, "--lake", url, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["version"] == 4
    r = run("verify", "--lake", url, "--json")
    assert [(p["version"], p["kind"]) for p in json.loads(r.stdout)["problems"]] == [
        (3, "manifest")]


def test_rm_of_a_lost_version_keeps_what_its_summary_knew_and_takes_any_summary_key(
        tmp_path: Path) -> None:
    """The tombstone carries the summary's size, files and metrics (`ls --all` showed "0 B");
    a summary key this ckptlake cannot decode (a newer encoding) still makes the version lost
    for gc, so rm takes it too (it said "does not exist", leaving gc blocked)."""
    root = tmp_path / "lake"
    url = f"file://{root}"
    src = tmp_path / "src"
    src.mkdir()
    for n in (1, 2, 3):
        (src / "w.bin").write_bytes(bytes([n]) * 5000)
        assert run("push", src, ART, "--lake", url, "--metric", f"loss={n / 4}").exit_code == 0
    (root / layout.version_key(ART, 2)).unlink()
    assert run("rm", f"{ART}@v2", "--lake", url, "--yes").exit_code == 0
    r = run("ls", ART, "--all", "--lake", url, "--json")
    [v2] = [v for v in json.loads(r.stdout).get("expired", []) if v["version"] == 2] or \
        [v for v in json.loads(r.stdout)["versions"] if v["version"] == 2]
    assert (v2["total_bytes"], v2["files"], v2["metrics"]) == (5000, 1, {"loss": 0.5}), v2
    # v3: its summary in a key this ckptlake cannot decode
    (root / layout.version_key(ART, 3)).unlink()
    [key] = (root / "artifacts" / ART / "@s").glob("0000000003.*")
    key.rename(key.with_name("0000000003.yFUTUREFORMAT"))
    assert run("gc", "--policy", _policy(tmp_path), "--lake", url, "--dry-run").exit_code == 5
    assert run("rm", f"{ART}@v3", "--lake", url, "--yes").exit_code == 0
    assert run("gc", "--policy", _policy(tmp_path), "--lake", url, "--yes").exit_code == 0


def test_an_emptied_manifest_with_its_summary_is_lost_and_a_v0_summary_is_nothing(
        tmp_path: Path) -> None:
    """A manifest emptied outside ckptlake (ckptlake writes a summary only after a whole
    manifest): its chunks were swept as garbage.  A stray summary key numbered 0 named a
    'v0' that rm cannot take."""
    root = tmp_path / "lake"
    url = three_versions(root, tmp_path / "src")
    (root / layout.version_key(ART, 2)).write_bytes(b"")
    r = run("verify", "--lake", url, "--json")
    assert [(p["version"], "is lost" in p["message"]) for p in json.loads(r.stdout)["problems"]
            if p["kind"] == "manifest"] == [(2, True)]
    assert run("gc", "--policy", _policy(tmp_path), "--lake", url, "--dry-run").exit_code == 5
    assert run("rm", f"{ART}@v2", "--lake", url, "--yes").exit_code == 0
    assert run("gc", "--policy", _policy(tmp_path), "--lake", url, "--yes").exit_code == 0
    (root / "artifacts" / ART / "@s" / "0000000000.jAAAA").write_bytes(b"")
    assert run("verify", "--lake", url).exit_code == 0
    assert run("gc", "--policy", _policy(tmp_path), "--lake", url, "--dry-run").exit_code == 0


def test_pull_of_latest_says_a_later_version_is_lost(tmp_path: Path, caplog: Any) -> None:
    """`@latest` resolves to the highest manifest: with v3's gone, a resume after a crash
    pulled v2 without a word.  The pull still gives v2 (the newest readable version) and says
    that v3 is lost; a reader through the library API logs it; a pinned version, a latest
    removed by `rm`, and a lake with nothing lost say nothing."""
    root = tmp_path / "lake"
    url = three_versions(root, tmp_path / "src")
    r = run("pull", ART, tmp_path / "ok", "--lake", url, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["warnings"] == [], r.output
    (root / layout.version_key(ART, 3)).unlink()
    r = run("pull", ART, tmp_path / "a", "--lake", url, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["version"] == 2
    [warning] = out["warnings"]
    assert f"{ART}@latest is v2" in warning and "v3 was committed after it and is lost" in warning
    r = run("pull", ART, tmp_path / "b", "--lake", url)
    assert r.exit_code == 0 and "v3 was committed after it and is lost" in r.stderr, r.output
    assert "lost" not in run("pull", f"{ART}@v2", tmp_path / "c", "--lake", url).stderr
    lake = ckptlake.open(url)
    with caplog.at_level("WARNING", logger="ckptlake"):
        assert lake.resolve(ART).version == 2
    assert "v3 was committed after it and is lost" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="ckptlake"):
        lake.resolve(f"{ART}@v2")
    assert caplog.text == ""
    assert run("rm", f"{ART}@v3", "--lake", url, "--yes").exit_code == 0  # records the loss
    r = run("pull", ART, tmp_path / "d", "--lake", url, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["warnings"] == [], r.output


def test_a_version_committed_after_the_listing_is_not_called_lost(tmp_path: Path) -> None:
    """A summary above the highest manifest listed is also what a push committing meanwhile
    leaves (its manifest came after the listing): the manifest is looked at before "lost"."""
    from ckptlake.core import catalog

    root = tmp_path / "lake"
    url = three_versions(root, tmp_path / "src")
    store = ckptlake.open(url).store
    assert catalog.lost_above(store, ART, 2) == []
    assert catalog.lost_above(store, ART, 3) == []
    (root / layout.version_key(ART, 3)).write_bytes(b"")  # a PUT cut after its head
    assert catalog.lost_above(store, ART, 2) == [3]


def test_lost_above_reads_the_tombstone_again_and_ignores_an_empty_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A version deleted between the tombstone listing and the manifest's stat was called
    lost; an empty tombstone (an `rm` cut after its head) hid a real loss."""
    from ckptlake.core import catalog, tombstones

    root = tmp_path / "lake"
    url = three_versions(root, tmp_path / "src")
    store = ckptlake.open(url).store
    (root / layout.version_key(ART, 3)).unlink()
    tomb = root / layout.tombstone_key(ART, 3)
    tomb.parent.mkdir(parents=True, exist_ok=True)
    tomb.write_bytes(b"")
    assert catalog.lost_above(store, ART, 2) == [3]
    tomb.unlink()
    real = tombstones.numbers

    def listed_then_deleted(*a: Any, **k: Any) -> list[int]:
        got = real(*a, **k)
        assert run("rm", f"{ART}@v3", "--lake", url, "--yes").exit_code == 0
        return got

    monkeypatch.setattr(tombstones, "numbers", listed_then_deleted)
    assert catalog.lost_above(store, ART, 2) == []
