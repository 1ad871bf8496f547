"""Checks of diff, lineage, show, browse, contents and query that a mutation review found no test
exercised (each test names the check it guards and what a user would lose without it)."""
from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.errors import IntegrityError, NotFound, UsageError
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore
from test_compression import write_safetensors
# test_lineage's fixtures too: a MemoryStore lake with 1 MiB chunks, a one-file source
from test_lineage import _tombstone, lake, manifest, src, store  # noqa: F401
from test_diff import cli_lake  # noqa: F401  (the lake above as ckptlake.open's)

np = pytest.importorskip("numpy")
MiB = 1024 * 1024


def _dir(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    return d


# ---- diff: tensors, identity, files, bytes, values -------------------------------------------

def test_a_name_held_twice_on_each_side_pairs_with_nothing(lake: Lake, tmp_path: Path) -> None:
    """A: `w` in model.safetensors and ema.safetensors; B: `w` in shard1 and shard2.  Which A `w`
    became which B `w` is unknowable: pairing them anyway (first with first) would report a
    made-up "changed" (or "unchanged") tensor; the user must see 2 removed and 2 added."""
    a, b = _dir(tmp_path, "A"), _dir(tmp_path, "B")
    w = np.arange(8, dtype=np.float32)
    write_safetensors(a / "model.safetensors", {"w": w})
    write_safetensors(a / "ema.safetensors", {"w": w + 1})
    write_safetensors(b / "shard1.safetensors", {"w": w})
    write_safetensors(b / "shard2.safetensors", {"w": w + 2})
    lake.push(a, "t")
    lake.push(b, "t")
    t = lake.diff("t@v1", "t@v2").tensors
    assert sorted((x["name"], x["file"]) for x in t["removed"]) == [
        ("w", "ema.safetensors"), ("w", "model.safetensors")]
    assert sorted((x["name"], x["file"]) for x in t["added"]) == [
        ("w", "shard1.safetensors"), ("w", "shard2.safetensors")]
    assert t["changed"] == [] and t["unchanged"] == 0
    assert t["reshaped"] == [] and t["retyped"] == []


def _exit_code(*args: str) -> int:
    return CliRunner().invoke(app, list(args), catch_exceptions=False).exit_code


def test_step_or_metadata_alone_make_versions_different(cli_lake: Lake, src: Path) -> None:
    """Same files, other step (then other metadata): not identical, and `diff --exit-code` exits
    1.  A script gating on the exit code would otherwise skip a checkpoint whose step or
    metadata (lr, seed) changed."""
    lake = cli_lake
    lake.push(src, "s", step=1, metadata={"k": "x"})
    lake.push(src, "s", step=2, metadata={"k": "x"})  # step only
    lake.push(src, "s", step=2, metadata={"k": "y"})  # metadata only
    r = lake.diff("s@v1", "s@v2")
    assert not r.identical and r.step["changed"] and not r.files["modified"]
    r = lake.diff("s@v2", "s@v3")
    assert not r.identical and r.metadata["changed"] == {"k": {"a": "x", "b": "y"}}
    assert _exit_code("diff", "s@v1", "s@v2", "--exit-code", "-q") == 1
    assert _exit_code("diff", "s@v2", "s@v3", "--exit-code", "-q") == 1
    assert _exit_code("diff", "s@v3", "s@v3", "--exit-code", "-q") == 0


def test_retargeted_symlink_and_chmod_are_modifications(lake: Lake, tmp_path: Path) -> None:
    """A symlink `cur` retargeted from a to b, and a script made executable (bytes unchanged):
    both are modified and the versions differ.  Otherwise a pull of B next to A would be
    reported a no-op while `cur` points elsewhere and the script no longer runs."""
    d = _dir(tmp_path, "d")
    (d / "a").write_text("A")
    (d / "b").write_text("B")
    (d / "run.sh").write_text("echo hi\n")
    os.chmod(d / "run.sh", 0o644)
    os.symlink("a", d / "cur")
    lake.push(d, "l")
    (d / "cur").unlink()
    os.symlink("b", d / "cur")
    lake.push(d, "l")
    os.chmod(d / "run.sh", 0o755)
    lake.push(d, "l")
    r = lake.diff("l@v1", "l@v2")
    assert [f["path"] for f in r.files["modified"]] == ["cur"] and not r.identical
    r = lake.diff("l@v2", "l@v3")
    assert [f["path"] for f in r.files["modified"]] == ["run.sh"] and not r.identical


def test_bytes_of_b_count_a_chunk_two_files_share_once(lake: Lake, tmp_path: Path) -> None:
    """B holds w.bin and an identical copy.bin (2 MiB each): the lake stores (and a pull
    fetches) 2 MiB, not 4.  Counting per file doubled the reported cost of pulling B."""
    d = _dir(tmp_path, "B")
    data = np.random.default_rng(3).bytes(2 * MiB)
    (d / "w.bin").write_bytes(data)
    (d / "copy.bin").write_bytes(data)
    a = _dir(tmp_path, "A")
    (a / "x.txt").write_text("x")
    lake.push(a, "b")
    lake.push(d, "b")
    r = lake.diff("b@v1", "b@v2")
    assert r.bytes["total"] == 2 * MiB and r.bytes["to_fetch"] == 2 * MiB
    assert r.bytes["chunks"] == 2


def test_a_truncated_chunk_is_an_integrity_error(lake: Lake, store: MemoryStore,
                                                 tmp_path: Path) -> None:
    """A chunk of a changed tensor cut to half its size (a damaged object): diff --values says
    IntegrityError (the lake is damaged; run verify), not a numpy ValueError about shapes."""
    a, b = _dir(tmp_path, "A"), _dir(tmp_path, "B")
    x = np.arange(64, dtype=np.float32)
    write_safetensors(a / "m.safetensors", {"w": x})
    write_safetensors(b / "m.safetensors", {"w": x + 1})
    lake.push(a, "v", compression="none")
    lake.push(b, "v", compression="none")
    (entry,) = manifest(store, "v", 2).files
    key = layout.chunk_key(entry.chunks[0].digest)
    data = store.get(key)
    store.corrupt(key, data[:len(data) // 2])
    with pytest.raises(IntegrityError):
        lake.diff("v@v1", "v@v2", values=True)


def test_relative_change_from_zeros_is_undefined(lake: Lake, tmp_path: Path) -> None:
    """A all zeros, B all ones: ||b - a|| / ||a|| divides by zero: rel_l2 is None (undefined),
    never 0.0, which would tell the user the tensor did not change at all."""
    a, b = _dir(tmp_path, "A"), _dir(tmp_path, "B")
    write_safetensors(a / "m.safetensors", {"w": np.zeros(16, np.float32)})
    write_safetensors(b / "m.safetensors", {"w": np.ones(16, np.float32)})
    lake.push(a, "z")
    lake.push(b, "z")
    (t,) = lake.diff("z@v1", "z@v2", values=True).tensors["changed"]
    assert t["values"]["rel_l2"] is None and t["values"]["max_abs_diff"] == 1.0


# ---- contents (inspect) ------------------------------------------------------------------------

def test_a_transposed_view_of_the_same_storage_is_changed(lake: Lake, tmp_path: Path) -> None:
    """torch.save({"w": x}) then {"w": x.t()} of a 4x4 x: same storage bytes, same shape and
    dtype, other strides.  Loaded, `w` is a different matrix: inspect must report it changed."""
    torch = pytest.importorskip("torch")
    a, b = _dir(tmp_path, "A"), _dir(tmp_path, "B")
    x = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    torch.save({"w": x}, a / "m.pt")
    torch.save({"w": x.t()}, b / "m.pt")
    lake.push(a, "p")
    lake.push(b, "p")
    (c,) = lake.diff("p@v1", "p@v2", inspect=True).contents
    assert c["inspected"] and c["storages"]["changed"] == []
    assert [t["name"] for t in c["tensors"]["changed"]] == ["w"]
    assert c["tensors"]["unchanged"] == 0


def test_estimate_of_inspecting_a_one_chunk_torch_file_is_exact(lake: Lake,
                                                                tmp_path: Path) -> None:
    """A small torch.save file (one chunk) modified: the egress estimate of diff --inspect is
    what the diff reads (its one chunk per side), not twice that (first + last of one chunk):
    an over-estimate can refuse a diff the policy allows."""
    torch = pytest.importorskip("torch")
    from ckptlake.policy.egress import EgressPolicy

    a, b = _dir(tmp_path, "A"), _dir(tmp_path, "B")
    torch.save({"w": torch.zeros(100)}, a / "m.pt")
    torch.save({"w": torch.ones(100)}, b / "m.pt")
    lake.push(a, "e", compression="none")
    lake.push(b, "e", compression="none")
    est = lake.estimate_diff("e@v1", "e@v2", values=False, inspect=True, egress=EgressPolicy())
    (c,) = lake.diff("e@v1", "e@v2", inspect=True).contents
    assert c["inspected"] and c["bytes_fetched"] > 0
    assert est.bytes_to_download == c["bytes_fetched"]


def test_safetensors_without_tensor_records_on_one_side_is_not_inspected(
        lake: Lake, store: MemoryStore, tmp_path: Path) -> None:
    """v1 pushed by a ckptlake without tensor records, v2 modified: the contents record says
    kind safetensors, not inspected, and why; not "inspected" with no tensors compared, which
    reads as "nothing in it changed"."""
    a, b = _dir(tmp_path, "A"), _dir(tmp_path, "B")
    write_safetensors(a / "m.safetensors", {"w": np.zeros(4, np.float32)})
    write_safetensors(b / "m.safetensors", {"w": np.ones(4, np.float32)})
    lake.push(a, "u")
    raw = json.loads(store.get(layout.version_key("u", 1)))
    for f in raw["files"]:
        f.pop("tensors", None)
    store.put(layout.version_key("u", 1), json.dumps(raw).encode())
    lake.push(b, "u")
    (c,) = lake.diff("u@v1", "u@v2").contents
    assert (c["path"], c["kind"], c["inspected"]) == ("m.safetensors", "safetensors", False)
    assert "no tensor records" in c["reason"]


# ---- show --------------------------------------------------------------------------------------

def test_show_gives_expired_and_missing_status_of_neighbours(lake: Lake, store: MemoryStore,
                                                             src: Path) -> None:
    """show(child) of an expired parent says "expired" (and when), of a parent deleted without
    a tombstone "missing"; show(parent) of an expired child says "expired".  "ok" would send
    the user to pull a version that is gone."""
    lake.push(src, "p", step=1)
    lake.push(src, "c", parents=["p"])
    lake.push(src, "q")
    lake.push(src, "k", parents=["q"])
    _tombstone(store, "p", 1)
    (parent,) = lake.show("c").parents
    assert parent["status"] == "expired" and parent["deleted"] == "2026-12-01T00:00:00Z"
    _tombstone(store, "k", 1)
    (child,) = lake.show("q").children
    assert (child["artifact"], child["status"]) == ("k", "expired")
    assert child["deleted"] == "2026-12-01T00:00:00Z"
    lake.push(src, "r")
    lake.push(src, "d", parents=["r"])
    store.delete([layout.version_key("r", 1)])  # deleted without a tombstone
    (parent,) = lake.show("d").parents
    assert parent["status"] == "missing"


def test_show_lists_only_the_versions_own_aliases(lake: Lake, src: Path) -> None:
    """Aliases on two versions: each `show` lists only those naming it; listing all of the
    artifact's aliases would say v1 is `prod` when prod is v2."""
    lake.push(src, "al")
    lake.push(src, "al")
    lake.alias("al@v1", "old")
    lake.alias("al@v2", "prod")
    assert lake.show("al@v1").aliases == ["old"]
    assert lake.show("al@v2").aliases == ["prod"]


# ---- lineage -----------------------------------------------------------------------------------

def test_stale_summary_of_a_deleted_version_is_not_used_for_its_reused_number(
        lake: Lake, store: MemoryStore, src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kid@v1 deleted, its number claimed again (by a pusher from before 2026-12-07); the old
    summary survives.  lineage down from base must show the new kid@v1's metrics (from its
    manifest), not the dead one's."""
    from ckptlake.core import catalog

    lake.push(src, "base")
    lake.push(src, "kid", parents=["base"], metrics={"loss": 9.0})
    old = next(k for k in store.keys() if k.startswith("artifacts/kid/@s/"))
    data, etag, t = store._objects[old]
    store._objects[old] = (data, etag, t - timedelta(seconds=60))  # written long ago
    store.delete([layout.version_key("kid", 1)])
    store.delete([k for k in store.keys() if k.startswith("artifacts/kid/@s/") and k != old])
    with monkeypatch.context() as m:
        m.setattr(catalog, "next_number", lambda store, artifact: 1)
        lake.push(src, "kid", parents=["base"], metrics={"loss": 1.0}, provenance=False)
    store.delete([k for k in store.keys() if k.startswith("artifacts/kid/@s/") and k != old])
    node = lake.lineage("base", direction="down").node("kid@v1")
    assert node.status == "ok" and node.metrics == {"loss": 1.0}


def test_lineage_of_a_ref_that_names_nothing_is_not_found(lake: Lake, src: Path) -> None:
    """An unknown artifact, an unknown alias, a metric no version has: NotFound (exit code
    and message the CLI gives for a bad ref), not a TypeError/ValueError traceback from
    looking for a tombstone numbered `prod`."""
    lake.push(src, "a", metrics={"acc": 0.5})
    for ref in ("nope", "a@prod", "a@min:loss"):
        with pytest.raises(NotFound):
            lake.lineage(ref)


def test_tombstone_parent_without_relation_is_left_out(lake: Lake, store: MemoryStore,
                                                       src: Path) -> None:
    """A tombstone (written by another tool) whose parents record lacks `relation`: the walk
    through it still succeeds (no KeyError) and has no edge from it."""
    lake.push(src, "base")
    lake.push(src, "mid", parents=["base"])
    lake.push(src, "top", parents=["mid"])
    _tombstone(store, "mid", 1)
    key = "artifacts/mid/@tomb/1.json"
    doc = json.loads(store.get(key))
    for p in doc["parents"]:
        del p["relation"]
    store.put(key, json.dumps(doc).encode())
    g = lake.lineage("top")
    assert g.node("mid@v1").status == "expired"
    assert [(e.child, e.parent) for e in g.edges] == [("top@v1", "mid@v1")]


def test_marker_with_an_unknown_relation_is_ignored(lake: Lake, store: MemoryStore,
                                                    src: Path) -> None:
    """A lineage marker with relation `bogus-rel` (not one ckptlake writes): no edge, rather
    than an edge labelled with whatever a stray key says."""
    lake.push(src, "base")
    lake.push(src, "kid")
    store.put(layout.child_key("base", 1, "kid", 1, "bogus-rel"), b"")
    g = lake.lineage("base", direction="down")
    assert g.edges == [] and [n.id for n in g.nodes] == ["base@v1"]


# ---- browse ------------------------------------------------------------------------------------

def test_a_path_names_a_directory_not_a_name_prefix(lake: Lake, tmp_path: Path) -> None:
    """`tok` is the directory tok/, not every path starting with "tok": ls REF tok lists only
    tok/vocab.txt, and pull paths=["tok"] does not write tokenizer.json."""
    d = _dir(tmp_path, "d")
    (d / "tok").mkdir()
    (d / "tok" / "vocab.txt").write_text("v")
    (d / "tokenizer.json").write_text("{}")
    lake.push(d, "b")
    assert [f["path"] for f in lake.files("b", "tok")["files"]] == ["tok/vocab.txt"]
    dest = tmp_path / "out"
    lake.pull("b", dest, paths=["tok"])
    assert (dest / "tok" / "vocab.txt").read_text() == "v"
    assert not (dest / "tokenizer.json").exists()


def test_excluding_only_an_empty_directory_leaves_it_out(lake: Lake, tmp_path: Path) -> None:
    """pull --exclude empty where `empty` is an empty directory (every file kept): the pulled
    tree has no `empty`, as asked."""
    d = _dir(tmp_path, "d")
    (d / "f.txt").write_text("f")
    (d / "empty").mkdir()
    lake.push(d, "e")
    assert "empty" in {f["path"] for f in lake.files("e")["files"]}
    dest = tmp_path / "out"
    lake.pull("e", dest, exclude=["empty"])
    assert (dest / "f.txt").read_text() == "f"
    assert not (dest / "empty").exists()


# ---- query -------------------------------------------------------------------------------------

def test_negative_limit_is_a_usage_error(lake: Lake, src: Path) -> None:
    """versions(limit=-1) is a mistake: UsageError, not a silent slice (out[1:]: all but the
    oldest version).  Lake.versions and `ls --limit` check it first; core.query.select (which
    `ls` also calls on versions it listed itself) must refuse it on its own too."""
    from ckptlake.core.query import select

    lake.push(src, "q", metrics={"loss": 2.0})
    lake.push(src, "q", metrics={"loss": 1.0})
    with pytest.raises(UsageError):
        lake.versions("q", limit=-1)
    found = lake.versions("q")
    for sort in (None, "loss"):
        with pytest.raises(UsageError, match="limit"):
            select(found, sort=sort, limit=-1)
