"""Lineage at depth: the tree of a long chain on a narrow terminal, and the size of its output."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from ckptlake.core import lineage as core
from ckptlake.format import layout
from ckptlake.format.manifest import Manifest
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

from test_lineage import lake, manifest, src, store  # noqa: F401

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def chain(store: MemoryStore, lake: Lake, src: Path, n: int) -> None:  # noqa: F811
    """c@v1 <- c@v2 <- ... <- c@vN, manifests and markers written directly (fast)."""
    lake.push(src, "c")
    m = manifest(store, "c", 1)
    for v in range(2, n + 1):
        child = Manifest(artifact="c", version=v, kind=m.kind, hash=m.hash, files=m.files,
                         step=v, parents=({"artifact": "c", "version": v - 1,
                                           "relation": "derived-from"},))
        store.put(layout.version_key("c", v), child.encode())
        core.write_child_markers(store, child)


def on_terminal(monkeypatch: pytest.MonkeyPatch, columns: int, root: core.TreeItem) -> str:
    from ckptlake.cli.lineage import render_tree

    monkeypatch.setenv("COLUMNS", str(columns))  # what rich's Console takes for the width
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    return _ANSI.sub("", render_tree(root))


@pytest.mark.parametrize("columns", [20, 80])
def test_a_deep_chain_on_a_narrow_terminal_loses_no_version(
        monkeypatch: pytest.MonkeyPatch, store: MemoryStore, lake: Lake, src: Path,  # noqa: F811
        columns: int) -> None:
    """rich's Tree indented each link 4 columns and dropped, silently, whatever passed the
    terminal's width: 20 of 250 versions at 80 columns."""
    chain(store, lake, src, 60)
    for ref, direction in (("c@v60", "up"), ("c@v1", "down")):
        text = on_terminal(monkeypatch, columns, core.tree(lake.lineage(ref,
                                                                        direction=direction)))
        for v in range(1, 61):
            assert re.search(rf"\bc@v{v}\b", text), f"c@v{v} is missing ({direction})"


def test_tree_output_of_a_chain_is_linear_in_its_length(
        store: MemoryStore, lake: Lake, src: Path) -> None:  # noqa: F811
    """A chain is drawn flat: one line per version at one indent (the tree grew with the square
    of the chain's length, 2 MB and a 4,042-character line for 1,000 versions)."""
    from ckptlake.cli.lineage import render_tree

    chain(store, lake, src, 300)
    lines = render_tree(core.tree(lake.lineage("c@v300"))).splitlines()
    assert len(lines) == 300 and max(len(x) for x in lines) < 50
    assert lines[0] == "c@v300  step 300"
    assert lines[1] == "↑ derived-from  c@v299  step 299"


def test_only_branches_are_indented_and_a_mark_says_where_the_version_is(
        store: MemoryStore, lake: Lake, src: Path) -> None:  # noqa: F811
    """The longer side of a fork continues at the fork's indent, the other is indented under it;
    printed before its expansion, a version reached twice says it is shown below."""
    from ckptlake.cli.lineage import render_tree

    chain(store, lake, src, 6)
    lake.push(src, "z", parents=["c@v2"])
    lake.push(src, "b", parents=["z", "c@v4"])
    text = render_tree(core.tree(lake.lineage("c@v1", direction="down")))
    assert text.splitlines() == [
        "c@v1",
        "↓ derived-from  c@v2  step 2",
        "├─ ↓ derived-from  z@v1",
        "│  ↓ derived-from  b@v1  (shown below)",
        "↓ derived-from  c@v3  step 3",
        "↓ derived-from  c@v4  step 4",
        "├─ ↓ derived-from  b@v1",
        "↓ derived-from  c@v5  step 5",
        "↓ derived-from  c@v6  step 6",
    ]


# ---- lineage markers of long child names ---------------------------------------------------------

def _long(n: int) -> str:
    return "x" * (n // 2) + "/" + "y" * (n - n // 2 - 1)


def test_a_child_name_its_marker_cannot_hold_is_refused_before_upload(
        tmp_path: Path, src: Path) -> None:  # noqa: F811
    """On a local lake a marker's last segment is a file name (255 bytes): the version was
    committed, its marker never written (File name too long), and `lineage --down` of the
    parent missed it for good with only a warning to say so."""
    from ckptlake.errors import UsageError

    import ckptlake

    lake = ckptlake.open(f"file://{tmp_path / 'lake'}")
    lake.push(src, "base")
    with pytest.raises(UsageError, match=r"at most 220 with a derived-from parent"):
        lake.push(src, _long(501), parents=["base@v1"])
    assert [n.id for n in lake.lineage("base@v1", direction="down").nodes] == ["base@v1"]
    assert sorted(p.name for p in (tmp_path / "lake" / "artifacts").iterdir()) == ["base"]
    with pytest.raises(UsageError, match=r"at most 217 with a fine-tuned-from parent"):
        lake.push(src, _long(218), parents=["base@v1:fine-tuned-from"])
    # the longest name that fits is pushed and found by its parent's --down
    r = lake.push(src, _long(217), parents=["base@v1:fine-tuned-from"])
    assert not r.warnings
    down = lake.lineage("base@v1", direction="down")
    assert f"{_long(217)}@v1" in {n.id for n in down.nodes}
    r = lake.push(src, _long(220), parents=["base@v1"])
    assert not r.warnings


def test_the_cli_refuses_it_in_one_line_with_exit_2(
        tmp_path: Path, src: Path) -> None:  # noqa: F811
    from typer.testing import CliRunner

    from ckptlake.cli.app import app

    url = f"file://{tmp_path / 'lake'}"
    runner = CliRunner()
    assert runner.invoke(app, ["push", str(src), "c/base", "--lake", url]).exit_code == 0
    r = runner.invoke(app, ["push", str(src), "x" * 250 + "/" + "y" * 250,
                            "--parent", "c/base@v1", "--lake", url])
    assert r.exit_code == 2, r.output
    err = [x for x in r.stderr.splitlines() if "error" in x]
    assert len(err) == 1 and len(err[0]) < 400 and "at most 220" in err[0]
    assert "v1" not in r.stdout  # nothing was pushed


def test_a_copy_within_a_lake_to_such_a_name_is_refused(
        tmp_path: Path, src: Path) -> None:  # noqa: F811
    """A copy within one lake names its source as a derived-from parent."""
    import ckptlake
    from ckptlake.errors import UsageError

    lake = ckptlake.open(f"file://{tmp_path / 'lake'}")
    lake.push(src, "base")
    with pytest.raises(UsageError, match="at most 220"):
        lake.copy("base@v1", None, _long(300))
    assert [n.id for n in lake.lineage("base@v1", direction="down").nodes] == ["base@v1"]


def test_the_warning_of_unwritten_markers_is_one_short_line(
        store: MemoryStore, lake: Lake, src: Path) -> None:  # noqa: F811
    """It named the 512-character artifact and quoted the store's error with its whole key:
    ~1.5 KB."""
    from ckptlake.errors import TransferError

    lake.push(src, "base")
    put = store.put

    def failing(key: str, data: bytes, *args, **kwargs):  # type: ignore[no-untyped-def]
        if "/@children/" in key:
            raise TransferError(f"cannot write {key} " + "z" * 500 + ": File name too long")
        return put(key, data, *args, **kwargs)

    store.put = failing  # type: ignore[method-assign]
    r = lake.push(src, "a" * 100 + "/" + "b" * 100, parents=["base@v1"])
    [warning] = [w for w in r.warnings if "lineage markers" in w]
    assert "\n" not in warning and len(warning) < 400, warning
    assert warning.endswith("File name too long")


def test_lineage_format_json_is_valid_unicode() -> None:
    """`lineage --format json` printed a lone surrogate (an undecodable byte in a stored input
    URI) as `\\udcfe`, which `--json` shows as `\\xfe`."""
    from ckptlake.cli.lineage import render

    text = render(None, "json", {"inputs": ["s3://bkt/d\udcfe"]})
    assert "\\udcfe" not in text and "d\\\\xfe" in text
    text.encode("utf-8")


def test_lightning_says_when_it_saves_without_the_resumed_from_parent(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """LakeCheckpointIO took any refusal of the resumed-from edge for "given twice" and
    dropped the edge without a word (a name too long for its lineage marker)."""
    pytest.importorskip("lightning.pytorch")
    import ckptlake
    from ckptlake.torch import LakeCheckpointIO

    name = "r/" + "n" * 219
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("x")
    lake = ckptlake.open(f"file://{tmp_path / 'lake'}")
    lake.push(src, name)
    io = LakeCheckpointIO(lake, name)
    io._resumed(f"{name}@v1")
    with caplog.at_level("WARNING", logger="ckptlake"):
        ck = io._checkpointer()
    assert "saving without the resumed-from parent" in caplog.text
    ck.close()
