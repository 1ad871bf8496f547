"""The text renderings of `diff`, `lineage` and `show`, and core/identity.py: checks mutation
testing found untested.

Each test pins what a person reading the output relies on: the sign of a metric line, the letter
of a directory entry, whose aliases a version has, which versions were made from it, the order
and the markers of a lineage tree, and the times and names a record carries."""
from __future__ import annotations

import getpass
import json
import socket
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ckptlake.cli.diff import MAX_LINES
from ckptlake.core import lineage as core
from ckptlake.core.identity import iso, user_at_host
from ckptlake.lake import Lake
# fixtures: a memory lake the CLI opens (ckptlake.open patched)
from test_show_ls import lake, run, src, store  # noqa: F401


def _indented_after(lines: list[str], at: int) -> list[str]:
    out = []
    for line in lines[at + 1:]:
        if not line.startswith(" "):
            break
        out.append(line)
    return out


def section(stdout: str, heading: str) -> list[str]:
    """The indented lines right under `heading` (up to the next unindented line)."""
    lines = stdout.splitlines()
    return _indented_after(lines, lines.index(heading))


def entries(stdout: str) -> list[str]:
    """The file and directory entry lines of `diff` (between `files:` and `bytes:`)."""
    lines = stdout.splitlines()
    return _indented_after(lines, next(i for i, line in enumerate(lines)
                                       if line.startswith("files: ")))


def two_versions(lake: Lake, tmp_path: Path) -> None:  # noqa: F811
    """r@v1: loss, metadata old, an empty dir gone/; r@v2: acc, metadata new, an empty dir
    fresh/; the same w.bin in both."""
    v1 = tmp_path / "v1"
    (v1 / "gone").mkdir(parents=True)
    (v1 / "w.bin").write_bytes(b"w" * 100)
    v2 = tmp_path / "v2"
    (v2 / "fresh").mkdir(parents=True)
    (v2 / "w.bin").write_bytes(b"w" * 100)
    lake.push(v1, "r", metrics={"loss": 2}, metadata={"old": "1"})
    lake.push(v2, "r", metrics={"acc": 0.9}, metadata={"new": "2"})


# ---- diff ----------------------------------------------------------------------------------

def test_diff_metrics_and_metadata_added_and_removed_lines(
        lake: Lake, tmp_path: Path) -> None:  # noqa: F811
    """A metric B gained is `+`, one it lost `-`, and a metadata key A had and B dropped is
    listed: with the signs swapped a user would read that v2 lost its `acc` (and gained a
    `loss`), and a removed metadata key would vanish from the diff, so a dropped `dataset=`
    tag would go unseen."""
    two_versions(lake, tmp_path)
    r = run("diff", "r@v1", "r@v2")
    assert r.exit_code == 0, r.stderr
    assert section(r.stdout, "metrics:") == ["  + acc: 0.9", "  - loss: 2"]
    assert section(r.stdout, "metadata:") == ["  + new: 2", "  - old: 1"]


def test_diff_empty_directories_added_and_removed(lake: Lake, tmp_path: Path  # noqa: F811
                                                  ) -> None:
    """An empty directory A had and B lacks is `D`, one B gained `A`: shown as added, a
    removed directory reads as the opposite of what a pull of B does (it will not create it)."""
    two_versions(lake, tmp_path)
    r = run("diff", "r@v1", "r@v2")
    assert r.exit_code == 0, r.stderr
    assert "empty directories: 1 added, 1 removed" in r.stdout
    assert entries(r.stdout) == ["  A fresh/", "  D gone/"]


def test_diff_exactly_max_lines_files_are_all_listed(lake: Lake, tmp_path: Path  # noqa: F811
                                                     ) -> None:
    """Exactly MAX_LINES entries fit: all are listed and no "... N more" line says otherwise
    (a "... 1 more file" line with one file hidden would send the user to --json for a file
    that is not there, and hide a real one).  One more entry is cut, and said to be."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "base.bin").write_bytes(b"b")
    lake.push(d, "m")
    for i in range(MAX_LINES):
        (d / f"f{i:03d}.bin").write_bytes(b"x%d" % i)
    lake.push(d, "m")
    (d / "zzz.bin").write_bytes(b"one more")
    lake.push(d, "m")
    r = run("diff", "m@v1", "m@v2")
    assert r.exit_code == 0, r.stderr
    got = entries(r.stdout)
    assert len(got) == MAX_LINES
    assert got == [f"  A f{i:03d}.bin  2 B" if i < 10 else f"  A f{i:03d}.bin  3 B"
                   for i in range(MAX_LINES)]
    assert "more file" not in r.stdout
    r = run("diff", "m@v1", "m@v3")
    got = entries(r.stdout)
    assert len(got) == MAX_LINES + 1
    assert got[-1].startswith("    ... 1 more file ")


# ---- show ----------------------------------------------------------------------------------

def test_show_aliases_are_only_those_of_the_version(lake: Lake, src: Path) -> None:  # noqa: F811
    """`show r@v1` lists the aliases pointing at v1 only: had it listed every alias of the
    artifact, a user would believe v1 is `prod` and deploy or keep the wrong version."""
    lake.push(src, "r", aliases=["best"])
    lake.push(src, "r", aliases=["prod"])
    assert lake.show("r@v1").aliases == ["best"]
    assert lake.show("r@v2").aliases == ["prod"]
    doc = json.loads(run("show", "r@v1", "--json").stdout)
    assert doc["aliases"] == ["best"]
    r = run("show", "r@v1")
    assert r.exit_code == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("aliases "))
    assert line.split(None, 1)[1] == "best"


def test_show_children_are_all_listed_in_name_order(lake: Lake, src: Path) -> None:  # noqa: F811
    """Every version made from r@v1 is a child, whatever the relation: a missing fine-tuned
    model (or all but the first child) would tell a user deleting r@v1 that nothing depends on
    it."""
    lake.push(src, "r")
    lake.push(src, "c2", parents=["r@v1"], relation="fine-tuned-from")
    lake.push(src, "c1", parents=["r@v1"], relation="evaluated-from")
    lake.push(src, "c0", parents=["r@v1"], relation="fine-tuned-from")
    kids = [(c["artifact"], c["version"], c["relation"]) for c in lake.show("r@v1").children]
    assert kids == [("c0", 1, "fine-tuned-from"), ("c1", 1, "evaluated-from"),
                    ("c2", 1, "fine-tuned-from")]
    doc = json.loads(run("show", "r@v1", "--json").stdout)
    assert [(c["artifact"], c["relation"]) for c in doc["children"]] == [
        ("c0", "fine-tuned-from"), ("c1", "evaluated-from"), ("c2", "fine-tuned-from")]


# ---- lineage -------------------------------------------------------------------------------

def diamond(lake: Lake, src: Path) -> None:  # noqa: F811
    """base -> left, right -> merged -> child (merged has two parents)."""
    lake.push(src, "base")
    lake.push(src, "left", parents=["base"])
    lake.push(src, "right", parents=["base"])
    lake.push(src, "merged", parents=["left", "right"])
    lake.push(src, "child", parents=["merged"])


def test_lineage_tree_marks_the_repeated_node(lake: Lake, src: Path) -> None:  # noqa: F811
    """A version reached twice is printed twice, the second time marked "(shown above)" and
    not expanded: without the marker the user reads two separate bases (or an unexpanded
    one as having no ancestors)."""
    diamond(lake, src)
    r = run("lineage", "merged")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    marked = [x for x in lines if x.endswith("(shown above)")]
    assert len(marked) == 1 and "base@v1" in marked[0]
    assert sum("base@v1" in x for x in lines) == 2


def test_lineage_tree_lines_follow_core_tree_order(lake: Lake, src: Path) -> None:  # noqa: F811
    """Below a node that is not the root, its branches print in core.tree's order (left before
    right, as at the root and as --json/dot list them): reversed, the "(shown above)" marker
    lands on the branch printed first, above the one it points to."""
    diamond(lake, src)
    root = core.tree(lake.lineage("child"))

    def order(item: core.TreeItem) -> list[str]:
        out = [item.node.id]
        for c in item.children:
            out += order(c)
        return out

    expected = order(root)
    assert expected == ["child@v1", "merged@v1", "left@v1", "base@v1", "right@v1", "base@v1"]
    r = run("lineage", "child")
    assert r.exit_code == 0, r.stderr
    ids = [next(w for w in x.split() if "@v" in w) for x in r.stdout.splitlines() if "@v" in x]
    assert ids == expected
    last = r.stdout.splitlines()[-1]
    assert "base@v1" in last and last.endswith("(shown above)")


# ---- identity ------------------------------------------------------------------------------

def test_iso_times_end_in_z(lake: Lake, src: Path) -> None:  # noqa: F811
    """Times are written as UTC with a `Z` (docs/format.md, Times): `+00:00` would differ from
    every other record's spelling, and `show`'s created line would not match the manifest."""
    assert iso(datetime(2026, 1, 1, tzinfo=timezone.utc)) == "2026-01-01T00:00:00Z"
    lake.push(src, "r")
    created = lake.show("r@v1").created
    r = run("show", "r@v1")
    assert r.exit_code == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("created "))
    stamp = line.split()[1]
    assert stamp.endswith("Z") and "+00:00" not in line
    assert stamp == created.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def test_user_unknown_when_getuser_raises_oserror(lake: Lake, src: Path,  # noqa: F811
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """On Python 3.13 getpass.getuser raises OSError with no passwd entry and no $USER (a
    container): the record says `unknown@host` and the push still commits, rather than failing
    every push from such a job."""
    def no_user() -> str:
        raise OSError("No username set in the environment")

    monkeypatch.setattr(getpass, "getuser", no_user)
    who = f"unknown@{socket.gethostname()}"
    assert user_at_host() == who
    res = lake.push(src, "r")
    assert res.version == 1
    assert lake.show("r@v1").created_by == who
