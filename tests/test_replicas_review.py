"""Replicas, from a review: a version with all-zero chunks pulled whole through a replica is
servable offline (no pull fetches those chunks), and `replicate` replaces the empty object a
cut upload left where its commit guard asks for a chunk again."""
from __future__ import annotations

import os
from pathlib import Path

import ckptlake  # noqa: F401  (the package's import order, as the other replica tests)
from ckptlake.core.catalog import load_manifest
from ckptlake.core.replicas import replicate
from ckptlake.format import layout
from ckptlake.store import open_store

from test_replicas import MiB, FlakyOrigin, memory_lake, write_src


def _tree_with_zeros(root: Path) -> Path:
    write_src(root, 3)
    (root / "zeros.bin").write_bytes(bytes(3 * MiB))  # three 1 MiB chunks: one zero object
    return root


def test_a_version_with_zero_chunks_pulled_through_whole_is_servable_offline(
        tmp_path: Path) -> None:
    origin = FlakyOrigin()
    lake = memory_lake(tmp_path, origin=origin)
    src = _tree_with_zeros(tmp_path / "src")
    lake.push(src, "z/m")
    r = lake.pull("z/m", tmp_path / "o1")
    assert r.replica["chunks_from_origin"] == 0
    assert (tmp_path / "eu" / layout.version_key("z/m", 1)).is_file()  # the manifest copy
    origin.down = True
    got = lake.pull("z/m@v1", tmp_path / "o2", offline_replica=True)
    assert got.version == 1
    for name in os.listdir(src):
        assert (tmp_path / "o2" / name).read_bytes() == (src / name).read_bytes()


def test_replicate_replaces_an_empty_chunk_object_its_guard_asks_for_again(
        tmp_path: Path, monkeypatch) -> None:
    import ckptlake.core.gc_guard as gc_guard

    lake = memory_lake(tmp_path)
    v = lake.push(write_src(tmp_path / "s", 4), "b/m")
    m = load_manifest(lake.store, v.artifact, v.version)
    replica = open_store((tmp_path / "eu").as_uri())
    victim = layout.chunk_key(sorted(c.digest for e in m.files for c in e.chunks)[0])
    original = gc_guard.guard_commit
    staged: list[str] = []

    def guard_commit(*args, **kwargs):
        # what a sweep then a cut pull-through upload leave: the chunk replicate found
        # present is an empty object when the guard checks the version's chunks (started
        # unknown: it checks them all, as it does when a sweep may have run meanwhile)
        if not staged:
            staged.append(victim)
            (tmp_path / "eu" / victim).write_bytes(b"")
        return original(*args, **{**kwargs, "started": None, "started_wall": None})

    monkeypatch.setattr(gc_guard, "guard_commit", guard_commit)
    spec = lake.replicas.specs[0]  # type: ignore[union-attr]
    r = replicate(lake.store, replica, m, spec=spec, lake_url=lake.url, concurrency=4)
    assert staged, "the empty object was not staged: the test proves nothing"
    assert r.chunks_recopied == 1
    assert replica.get(victim) == lake.store.get(victim)


def test_a_push_or_cp_into_a_replicas_location_is_refused(tmp_path: Path) -> None:
    """Before: a lake header was written beside the marker; pulls then skipped the replica
    and gc refused it, and the replica's manifest copies passed for a lost header's versions."""
    from typer.testing import CliRunner

    from ckptlake.cli.app import app
    from ckptlake.errors import UsageError
    import pytest

    lake = memory_lake(tmp_path)
    lake.push(write_src(tmp_path / "s", 5), "m/a")
    lake.pull("m/a", tmp_path / "o")  # writes the replica's marker and a manifest copy
    eu = tmp_path / "eu"
    assert (eu / "ckptlake-replica.json").is_file()
    with ckptlake.open(eu.as_uri()) as wrong, pytest.raises(UsageError, match="replica"):
        wrong.push(tmp_path / "s", "m/a")
    r = CliRunner().invoke(app, ["push", str(tmp_path / "s"), "x/y", "--lake", eu.as_uri()])
    assert r.exit_code == 2 and "regional replica" in r.output, r.output
    src = tmp_path / "src-lake"
    with ckptlake.open(src.as_uri()) as other:
        other.push(tmp_path / "s", "m/a")
    r = CliRunner().invoke(app, ["cp", "m/a", "--lake", src.as_uri(), "--to", eu.as_uri()])
    assert r.exit_code == 2 and "regional replica" in r.output, r.output
    assert not (eu / "ckptlake.json").exists()


def test_an_empty_replica_marker_counts_as_absent_for_a_new_lake(tmp_path: Path) -> None:
    """docs/format.md: a zero-byte marker (a cut PUT) counts as absent."""
    loc = tmp_path / "l0"
    loc.mkdir()
    (loc / "ckptlake-replica.json").write_bytes(b"")
    src = write_src(tmp_path / "s", 6)
    with ckptlake.open(loc.as_uri()) as lake:
        assert lake.push(src, "p/x").version == 1
