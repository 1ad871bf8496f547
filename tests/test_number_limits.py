"""Steps and version numbers are bounded by the keys that hold them (10 digits, issue 12 defect 7).

A sharded push at step 10**10 used to write `@shards/10000000000/...`, which no listing parses:
the step never committed, `ls --pending` did not show it and gc did not protect its chunks, and
the push exited 0.  Every way a step or version number enters now refuses what the keys cannot
hold, before anything is written.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core import shards
from ckptlake.watch import Watcher
from ckptlake.errors import EXIT_USAGE, UsageError
from ckptlake.format import layout
from ckptlake.format.refs import parse_ref
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

MAX = 9_999_999_999  # 10 digits
ART = "lim/run/ckpt"


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_the_limit_is_what_the_key_parsers_read_back() -> None:
    assert layout.MAX_NUMBER == MAX
    assert layout.parse_version_key(layout.version_key("a/b", MAX)) == ("a/b", MAX)
    assert layout.parse_shard_key(layout.shard_claim_key("a/b", MAX)) == ("a/b", MAX, None, None)
    for make in (lambda: layout.version_key("a/b", MAX + 1),
                 lambda: layout.shard_step_prefix("a/b", MAX + 1),
                 lambda: layout.tombstone_key("a/b", MAX + 1),
                 lambda: layout.summary_key("a/b", MAX + 1, "x"),
                 lambda: layout.child_key("a", 1, "b", MAX + 1, "derived-from")):
        with pytest.raises(UsageError, match="9999999999"):
            make()


@pytest.mark.parametrize("args", [["--step", "10000000000", "--shard", "0/1"],
                                  ["--step", "10000000000", "--shard", "1/2"],
                                  ["--step", "10000000000"]])
def test_cli_push_refuses_a_step_the_keys_cannot_hold(tmp_path: Path, args: list[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"abc")
    lake = tmp_path / "lake"
    r = CliRunner().invoke(app, ["push", str(src), ART, *args, "--lake", f"file://{lake}"])
    assert r.exit_code == EXIT_USAGE, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("ckptlake: error")]
    assert len(errors) == 1 and "9999999999" in errors[0], r.output
    assert files_under(lake) == []  # not even the lake header


def test_cli_push_at_the_largest_step_commits(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"abc")
    url = f"file://{tmp_path / 'lake'}"
    r = CliRunner().invoke(app, ["push", str(src), ART, "--step", str(MAX), "--shard", "0/1",
                                 "--lake", url])
    assert r.exit_code == 0, r.output
    with ckptlake.open(url) as lk:
        assert lk.resolve(f"{ART}@step={MAX}").version == 1
        assert lk.pending() == []


def test_python_api_refuses_out_of_range_steps(tmp_path: Path) -> None:
    store = MemoryStore()
    lake = Lake(store)
    f = tmp_path / "f"
    f.write_bytes(b"x")
    for bad in (MAX + 1, 10 ** 12, -1):
        with pytest.raises(UsageError, match="0 to 9999999999"):
            lake.push(f, ART, step=bad)
        with pytest.raises(UsageError, match="0 to 9999999999"):
            lake.push_shard(f, ART, step=bad, rank=0, world=1)
        with pytest.raises(UsageError, match="0 to 9999999999"):
            shards.push_shard(store, None, ART, step=bad, rank=0, world=1,  # type: ignore
                              chunk_size=None, concurrency=1, metrics={}, metadata={},
                              aliases=[], progress=None, lake_url="")  # type: ignore
        ck = lake.checkpointer(ART)
        try:
            with pytest.raises(UsageError, match="0 to 9999999999"):
                ck.save(f, step=bad)
        finally:
            ck.close()
    assert store._objects == {}


def test_selectors_refuse_numbers_the_keys_cannot_hold() -> None:
    assert parse_ref(f"a/b@v{MAX}").value == MAX
    assert parse_ref(f"a/b@step={MAX}").value == MAX
    assert parse_ref("a/b@step=0").value == 0
    for bad in ("a/b@v10000000000", "a/b@step=10000000000", "a/b@step=-1",
                "a/b@v" + "9" * 5000, "a/b@step=" + "1" * 5000):
        with pytest.raises(UsageError, match="9999999999") as info:
            parse_ref(bad)
        assert "\n" not in str(info.value) and len(str(info.value)) < 200


def test_cli_selector_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["pull", f"{ART}@v10000000000", str(tmp_path / "out"),
                                 "--lake", f"file://{tmp_path / 'lake'}"])
    assert r.exit_code == EXIT_USAGE and "9999999999" in r.output, r.output


def test_a_full_artifact_refuses_the_next_version(tmp_path: Path) -> None:
    store = MemoryStore()
    lake = Lake(store)
    f = tmp_path / "f"
    f.write_bytes(b"x")
    lake.push(f, ART)
    # what the 9,999,999,999th push leaves: the manifest under the largest key
    store.put(layout.version_key(ART, MAX), store.get(layout.version_key(ART, 1)))
    with pytest.raises(UsageError, match="largest version number"):
        lake.push(f, ART)
    assert [layout.parse_version_key(k) for k in store._objects
            if layout.parse_version_key(k)] == [(ART, 1), (ART, MAX)]


def test_a_full_artifact_fails_a_sharded_step_cleanly(tmp_path: Path) -> None:
    store = MemoryStore()
    lake = Lake(store)
    f = tmp_path / "f"
    f.write_bytes(b"x")
    lake.push(f, ART)
    store.put(layout.version_key(ART, MAX), store.get(layout.version_key(ART, 1)))
    with pytest.raises(UsageError, match="largest version number"):
        lake.push_shard(f, ART, step=5, rank=0, world=1)
    (step,) = lake.pending(ART)
    assert step.state == "failed" and "largest version number" in (step.error or "")


def test_watch_skips_a_directory_whose_number_is_no_step(tmp_path: Path) -> None:
    watched = tmp_path / "ckpts"
    for name in ("step_5", "step_17333472001234"):  # the second: a timestamp in milliseconds
        (watched / name).mkdir(parents=True)
        (watched / name / "w.bin").write_bytes(name.encode())
    events = []
    lake = Lake(MemoryStore())
    w = Watcher(lake, watched, ART, settle=0, on_event=events.append)
    assert w.poll_once() == 1
    assert [(e.kind, e.step) for e in events] == [("pushed", 5), ("skipped", 17333472001234)]
    assert "9999999999" in events[1].message
    assert os.path.isdir(watched / "step_17333472001234")
