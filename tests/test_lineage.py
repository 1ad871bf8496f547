"""Lineage on the in-memory store: parents, inputs, the reverse index, walks, renderings,
provenance and the manifest fields behind them."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from ckptlake.core import lineage as core
from ckptlake.core.provenance import collect, git_state, load_meta_file, redact_args
from ckptlake.errors import IntegrityError, NotFound, UsageError
from ckptlake.format import layout
from ckptlake.format.manifest import Manifest, decode_manifest
from ckptlake.format.refs import Ref
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

MiB = 1024 * 1024


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def lake(store: MemoryStore) -> Lake:
    return Lake(store, chunk_size=MiB, concurrency=4)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "w.bin").write_bytes(b"weights" * 100)
    return d


def manifest(store: MemoryStore, artifact: str, version: int) -> Manifest:
    return decode_manifest(store.get(layout.version_key(artifact, version)))


def story(lake: Lake, src: Path) -> None:
    """base -> ckpt v1 (fine-tuned, + dataset) -> v2 (resumed) -> model -> eval."""
    lake.push(src, "base/model", step=0, metrics={"loss": 3.0})
    lake.push(src, "ft/ckpt", step=100, parents=["base/model:fine-tuned-from"],
              inputs=["s3://data/wiki#sha256:abc"], metrics={"loss": 2.5})
    lake.push(src, "ft/ckpt", step=200, parents=["ft/ckpt@latest"], relation="resumed-from")
    lake.push(src, "ft/model", parents=["ft/ckpt"])
    lake.push(src, "ft/eval", parents=[("ft/model", "evaluated-from")], metrics={"acc": 0.7})


# ---- grammar -----------------------------------------------------------------------------------

def test_parse_parent_and_input() -> None:
    assert core.parse_parent("a/b@v3:fine-tuned-from") == (Ref("a/b", "version", 3),
                                                          "fine-tuned-from")
    assert core.parse_parent("a/b", "resumed-from") == (Ref("a/b"), "resumed-from")
    assert core.parse_parent("a/b@best") == (Ref("a/b", "alias", "best"), "derived-from")
    for bad in ("a/b:nope", "a/b:", "a b", "@v1"):
        with pytest.raises(UsageError):
            core.parse_parent(bad)
    assert core.parse_input("s3://d/wiki#sha256:ab") == {"uri": "s3://d/wiki",
                                                         "digest": "sha256:ab"}
    assert core.parse_input("hf://datasets/x") == {"uri": "hf://datasets/x"}
    for bad in ("", "#abc", "s3://x#", "a b"):
        with pytest.raises(UsageError):
            core.parse_input(bad)


# ---- push side ---------------------------------------------------------------------------------

def test_parents_are_fixed_version_numbers(lake: Lake, store: MemoryStore, src: Path) -> None:
    lake.push(src, "run/ckpt", step=1)
    lake.push(src, "run/ckpt", step=2)
    r = lake.push(src, "run/model", parents=["run/ckpt@latest"])
    lake.push(src, "run/ckpt", step=3)  # latest moves on; the recorded edge does not
    m = manifest(store, "run/model", r.version)
    assert m.parents == ({"artifact": "run/ckpt", "version": 2, "relation": "derived-from"},)
    assert store.exists(layout.child_key("run/ckpt", 2, "run/model", 1, "derived-from"))


def test_missing_parent_commits_and_uploads_nothing(lake: Lake, store: MemoryStore,
                                                   src: Path) -> None:
    with pytest.raises(NotFound, match="parent no/such"):
        lake.push(src, "a/b", parents=["no/such@v1"])
    assert store.keys() == [], "checked before anything was uploaded"
    lake.push(src, "base")
    before = store.keys()
    with pytest.raises(NotFound, match="parent base@v7"):
        lake.push(src, "a/b", parents=["base@v7"])
    assert store.keys() == before


def test_duplicate_parent_and_bad_relation(lake: Lake, src: Path) -> None:
    lake.push(src, "base")
    with pytest.raises(UsageError, match="twice"):
        lake.push(src, "a", parents=["base@v1", "base@latest:resumed-from"])
    with pytest.raises(UsageError, match="relation"):
        lake.push(src, "a", parents=["base"], relation="copied-from")


def test_metadata_file_and_provenance(lake: Lake, store: MemoryStore, src: Path,
                                      tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("lr: 3.0e-4\noptim:\n  name: adamw\n  betas: [0.9, 0.95]\nnote: hi\n")
    r = lake.push(src, "a", meta_file=params, metadata={"note": "explicit wins"},
                  provenance={"job": "42"})
    m = manifest(store, "a", r.version)
    assert m.metadata == {"lr": "0.0003", "optim.name": "adamw", "optim.betas": "[0.9, 0.95]",
                          "note": "explicit wins"}
    p = m.provenance
    assert p["job"] == "42" and p["ckptlake"] and p["python"] and p["hostname"] and p["user"]
    assert isinstance(p["command"], list)
    r = lake.push(src, "a", provenance=False)
    assert manifest(store, "a", r.version).provenance == {}


def test_meta_file_errors(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "bad.yaml").write_text("a: [")
    (tmp_path / "empty.yaml").write_text("")
    for name in ("list.json", "bad.json", "bad.yaml", "empty.yaml", "absent.json"):
        with pytest.raises(UsageError, match=re.escape(name)):
            load_meta_file(tmp_path / name)
    (tmp_path / "ok.json").write_text('{"a": {"b": 1, "c": null}, "d": true}')
    assert load_meta_file(tmp_path / "ok.json") == {"a.b": "1", "a.c": "null", "d": "true"}


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_state_of_the_source_checkout(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def git(*args: str, where: Path = repo) -> str:
        return subprocess.run(["git", "-C", str(where), *args], check=True, env=env,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (repo / "train.py").write_text("print(1)\n")
    git("add", "train.py")
    git("commit", "-qm", "init")
    head = git("rev-parse", "HEAD")
    (repo / "ckpt").mkdir()
    (repo / "ckpt" / "w.bin").write_bytes(b"x")  # untracked checkpoints do not make it dirty
    state = git_state(str(repo / "ckpt"))
    assert state == {"commit": head, "dirty": False, "root": str(repo)}
    (repo / "train.py").write_text("print(2)\n")
    assert git_state(str(repo))["dirty"] is True  # type: ignore[index]
    # run from another checkout (whatever pytest's cwd is): the source's checkout wins, the
    # cwd is only the fallback
    other = tmp_path / "other"
    other.mkdir()
    git("init", "-q", where=other)
    (other / "x.txt").write_text("other\n")
    git("add", "x.txt", where=other)
    git("commit", "-qm", "other", where=other)
    assert git("rev-parse", "HEAD", where=other) != head
    monkeypatch.chdir(other)
    assert collect(repo / "ckpt" / "w.bin")["git"]["commit"] == head


def test_provenance_never_fails_without_git(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on PATH
    out = collect(tmp_path)
    assert "git" not in out and out["python"]


def test_command_line_is_redacted() -> None:
    assert redact_args(["push", "--lake", "s3://key:secret@b/p",
                        "https://h/x?X-Amz-Signature=abc"]) == [
        "push", "--lake", "s3://b/p", "https://h/x?..."]


# ---- manifest fields ---------------------------------------------------------------------------

def test_old_manifests_without_lineage_still_decode(lake: Lake, store: MemoryStore,
                                                    src: Path) -> None:
    r = lake.push(src, "a", provenance=False)
    raw = json.loads(store.get(layout.version_key("a", r.version)))
    assert "inputs" not in raw and "provenance" not in raw and raw["parents"] == []
    for key in ("parents", "metrics", "metadata"):
        raw.pop(key)
    m = decode_manifest(json.dumps(raw).encode())
    assert m.parents == () and m.inputs == () and m.provenance == {}


@pytest.mark.parametrize("field,value", [
    ("parents", [{"artifact": "a", "version": 0, "relation": "derived-from"}]),
    ("parents", [{"artifact": "../x", "version": 1, "relation": "derived-from"}]),
    ("parents", [{"artifact": "a", "version": 1, "relation": "stolen-from"}]),
    ("parents", {"artifact": "a"}),
    ("inputs", [{"uri": ""}]),
    ("provenance", ["x"]),
])
def test_malformed_lineage_fields_are_refused(lake: Lake, store: MemoryStore, src: Path,
                                              field: str, value: object) -> None:
    r = lake.push(src, "a")
    raw = json.loads(store.get(layout.version_key("a", r.version)))
    raw[field] = value
    with pytest.raises(IntegrityError):
        decode_manifest(json.dumps(raw).encode())


@pytest.mark.parametrize("tensor", [
    {"name": "", "dtype": "F32", "shape": [1], "range": [0, 4], "digest": "ab" * 32},
    {"name": "t", "dtype": "f32", "shape": [1], "range": [0, 4], "digest": "ab" * 32},
    {"name": "t", "dtype": "F32", "shape": [True], "range": [0, 4], "digest": "ab" * 32},
    {"name": "t", "dtype": "F32", "shape": [1], "range": [0, 10 ** 9], "digest": "ab" * 32},
    {"name": "t", "dtype": "F32", "shape": [1], "range": [4, 0], "digest": "ab" * 32},
    {"name": "t", "dtype": "F32", "shape": [1], "range": [0, 4], "digest": "xyz"},
])
def test_malformed_tensor_records_are_refused(lake: Lake, store: MemoryStore, src: Path,
                                              tensor: dict) -> None:
    r = lake.push(src, "a")
    raw = json.loads(store.get(layout.version_key("a", r.version)))
    raw["files"][0]["tensors"] = [tensor]
    with pytest.raises(IntegrityError):
        decode_manifest(json.dumps(raw).encode())


# ---- walks -------------------------------------------------------------------------------------

def test_up_walks_to_base_and_inputs(lake: Lake, src: Path) -> None:
    story(lake, src)
    g = lake.lineage("ft/eval")
    assert g.root == "ft/eval@v1" and g.direction == "up"
    edges = {(e.child, e.parent, e.relation) for e in g.edges}
    assert edges == {
        ("ft/eval@v1", "ft/model@v1", "evaluated-from"),
        ("ft/model@v1", "ft/ckpt@v2", "derived-from"),
        ("ft/ckpt@v2", "ft/ckpt@v1", "resumed-from"),
        ("ft/ckpt@v1", "base/model@v1", "fine-tuned-from"),
        ("ft/ckpt@v1", "input:s3://data/wiki#sha256:abc", "input"),
    }
    base = g.node("base/model@v1")
    assert (base.status, base.step, base.metrics) == ("ok", 0, {"loss": 3.0})
    data = g.node("input:s3://data/wiki#sha256:abc")
    assert (data.kind, data.uri, data.digest) == ("input", "s3://data/wiki", "sha256:abc")
    assert json.loads(json.dumps(g.to_dict()))["root"] == "ft/eval@v1"


def test_depth_limits_the_walk(lake: Lake, src: Path) -> None:
    story(lake, src)
    assert {n.id for n in lake.lineage("ft/eval", depth=0).nodes} == {"ft/eval@v1"}
    assert {n.id for n in lake.lineage("ft/eval", depth=2).nodes} == {
        "ft/eval@v1", "ft/model@v1", "ft/ckpt@v2"}
    assert {n.id for n in lake.lineage("base/model", direction="down", depth=1).nodes} == {
        "base/model@v1", "ft/ckpt@v1"}


def test_down_reads_only_listings(lake: Lake, store: MemoryStore, src: Path) -> None:
    story(lake, src)
    for i in range(30):  # unrelated artifacts must not be read
        lake.push(src, f"other/a{i}")
    store.calls.clear()
    g = lake.lineage("base/model@v1", direction="down")
    assert {n.id for n in g.nodes} == {"base/model@v1", "ft/ckpt@v1", "ft/ckpt@v2",
                                       "ft/model@v1", "ft/eval@v1"}
    rels = {(e.child, e.relation) for e in g.edges}
    assert ("ft/eval@v1", "evaluated-from") in rels and ("ft/ckpt@v2", "resumed-from") in rels
    assert g.node("ft/eval@v1").metrics == {"acc": 0.7}
    assert store.calls["get"] == 1, "only the root's manifest: summaries answer for the rest"
    assert store.calls["list"] == 4, "one listing of `artifacts/<a>/@` per artifact reached"


def test_lineage_never_reads_a_data_chunk(src: Path) -> None:
    """Why lineage has no egress guard (unlike pull and diff --values): whatever the direction,
    through a tombstone too, it reads listings, manifests and tombstones, never a chunk."""
    read: list[str] = []

    class Recording(MemoryStore):
        def get(self, key: str) -> bytes:
            read.append(key)
            return super().get(key)

        def get_range(self, key: str, start: int, length: int) -> bytes:
            read.append(key)
            return super().get_range(key, start, length)

        def get_with_etag(self, key: str) -> tuple[bytes, str]:
            read.append(key)
            return super().get_with_etag(key)

    store = Recording()
    lake = Lake(store, chunk_size=MiB)
    story(lake, src)
    _tombstone(store, "ft/ckpt", 1)
    read.clear()
    for ref, direction in (("ft/eval", "up"), ("base/model", "down"), ("ft/ckpt@v2", "both")):
        lake.lineage(ref, direction=direction)
    assert read and any("/@tomb/" in k for k in read)
    assert not [k for k in read if k.startswith(layout.CHUNKS_PREFIX)]


def test_both_directions(lake: Lake, src: Path) -> None:
    story(lake, src)
    g = lake.lineage("ft/model", direction="both")
    ids = {n.id for n in g.nodes}
    assert {"ft/eval@v1", "base/model@v1", "input:s3://data/wiki#sha256:abc"} <= ids


def _tombstone(store: MemoryStore, artifact: str, version: int) -> None:
    m = manifest(store, artifact, version)
    store.delete([layout.version_key(artifact, version)])
    store.put(f"artifacts/{artifact}/@tomb/{version}.json", json.dumps({
        "number": version, "step": m.step, "metrics": m.metrics, "parents": list(m.parents),
        "deleted": "2026-12-01T00:00:00Z", "rule": "keep-last-1"}).encode())


def test_expired_versions_keep_the_chain(lake: Lake, store: MemoryStore, src: Path) -> None:
    story(lake, src)
    _tombstone(store, "ft/ckpt", 1)
    up = lake.lineage("ft/eval")
    v1 = up.node("ft/ckpt@v1")
    assert (v1.status, v1.deleted, v1.step) == ("expired", "2026-12-01T00:00:00Z", 100)
    assert up.node("base/model@v1").status == "ok", "walked on through the tombstone"
    down = lake.lineage("base/model", direction="down")
    assert down.node("ft/ckpt@v1").status == "expired"
    assert down.node("ft/eval@v1").status == "ok"
    assert lake.lineage("ft/ckpt@v1").node("ft/ckpt@v1").status == "expired"
    text = core.node_caption(v1)
    assert "expired 2026-12-01" in text


def test_missing_parent_and_dangling_markers(lake: Lake, store: MemoryStore, src: Path) -> None:
    story(lake, src)
    store.delete([layout.version_key("ft/ckpt", 1)])  # deleted without a tombstone
    up = lake.lineage("ft/eval")
    assert up.node("ft/ckpt@v1").status == "missing"
    assert "base/model@v1" not in {n.id for n in up.nodes}
    assert core.node_caption(up.node("ft/ckpt@v1")) == "missing"
    down = lake.lineage("base/model", direction="down")
    assert [n.id for n in down.nodes] == ["base/model@v1"], "marker without a child: ignored"


def test_marker_older_than_a_reused_number_is_ignored(lake: Lake, store: MemoryStore,
                                                      src: Path) -> None:
    lake.push(src, "base")
    lake.push(src, "kid", parents=["base"])
    key = layout.child_key("base", 1, "kid", 1, "derived-from")
    data, etag, t = store._objects[key]
    store._objects[key] = (data, etag, t - timedelta(seconds=30))  # marker from long ago
    assert [n.id for n in lake.lineage("base", direction="down").nodes] == ["base@v1"]


def test_lineage_of_unknown_version(lake: Lake, src: Path) -> None:
    lake.push(src, "a")
    with pytest.raises(NotFound):
        lake.lineage("a@v9")
    with pytest.raises(UsageError):
        lake.lineage("a", direction="sideways")


# ---- renderings --------------------------------------------------------------------------------

def test_tree_marks_repeated_nodes(lake: Lake, src: Path) -> None:
    lake.push(src, "base")
    lake.push(src, "left", parents=["base"])
    lake.push(src, "right", parents=["base"])
    lake.push(src, "merged", parents=["left", "right"])
    root = core.tree(lake.lineage("merged"))
    left, right = root.children
    assert (left.node.id, right.node.id) == ("left@v1", "right@v1")
    assert [c.repeated for c in (left.children[0], right.children[0])] == [False, True]
    assert right.children[0].children == []


def test_tree_of_a_long_chain_needs_no_recursion(lake: Lake, store: MemoryStore,
                                                 src: Path) -> None:
    lake.push(src, "c")
    m = manifest(store, "c", 1)
    for n in range(2, 1201):  # deeper than Python's recursion limit; manifests written directly
        child = Manifest(artifact="c", version=n, kind=m.kind, hash=m.hash, files=m.files,
                         parents=({"artifact": "c", "version": n - 1,
                                   "relation": "resumed-from"},))
        store.put(layout.version_key("c", n), child.encode())
        core.write_child_markers(store, child)
    from ckptlake.cli.lineage import render_tree

    text = render_tree(core.tree(lake.lineage("c@v1200")))
    assert text.count("resumed-from") == 1199
    assert len(lake.lineage("c@v1", direction="down").nodes) == 1200


def check_mermaid(text: str) -> set[str]:
    """Structural check of our Mermaid subset; returns the node ids."""
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    node = re.compile(r'^  (n\d+)(\["[^"\n]*"\]|\[\("[^"\n]*"\)\])$')
    edge = re.compile(r"^  (n\d+) -->\|([a-z-]+)\| (n\d+)$")
    defined, used = set(), set()
    for line in lines[1:]:
        if m := node.match(line):
            defined.add(m.group(1))
        elif m := edge.match(line):
            used |= {m.group(1), m.group(3)}
        else:
            assert re.match(r"^  (classDef \w+ .+|class (n\d+,?)+ \w+|style n\d+ .+)$", line), line
    assert used <= defined
    # labels: a raw '#' would start an entity; only our escapes may contain one
    labels = "".join(re.findall(r'"[^"]*"', text))
    assert "#" not in re.sub(r"#(\d+|quot|lt|gt);", "", labels)
    return defined


def test_mermaid_is_a_valid_flowchart(lake: Lake, store: MemoryStore, src: Path) -> None:
    story(lake, src)
    text = core.to_mermaid(lake.lineage("ft/eval"))
    assert len(check_mermaid(text)) == 6 and "#35;sha256:abc" in text
    _tombstone(store, "ft/ckpt", 1)
    text = core.to_mermaid(lake.lineage("ft/eval"))
    assert len(check_mermaid(text)) == 5  # the expired v1's input is not known
    assert re.search(r"^  class n\d+ expired$", text, re.M)


def test_dot_is_well_formed_and_renders(lake: Lake, store: MemoryStore, src: Path,
                                        tmp_path: Path) -> None:
    story(lake, src)
    assert "shape=note" in core.to_dot(lake.lineage("ft/eval"))  # the dataset
    _tombstone(store, "ft/ckpt", 1)
    text = core.to_dot(lake.lineage("ft/eval"))
    assert text.startswith("digraph lineage {") and text.rstrip().endswith("}")
    assert '"ft/ckpt@v1" -> "ft/ckpt@v2" [label="resumed-from"];' in text
    assert "dashed" in text
    dot = shutil.which("dot")
    if dot is None:
        pytest.skip("Graphviz `dot` is not installed (scripts/test.sh installs it)")
    p = subprocess.run([dot, "-Tsvg"], input=text, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "<svg" in p.stdout and "ft/eval@v1" in p.stdout and "resumed&#45;from" in p.stdout
