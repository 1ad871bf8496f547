"""The text renderings of `du`, `ls` and `show` (cli/du.py, cli/ls.py, cli/show.py): checks
mutation testing found untested.

The --json documents are tested elsewhere; these pin the human views to them, so a person
reading the table sees the numbers and the rows a script would."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ckptlake.cli.output import format_bytes
from ckptlake.lake import Lake
from ckptlake.store import open_store
from test_du import built
from test_du import cli as du_cli
# fixtures: a memory lake the CLI opens (ckptlake.open patched)
from test_show_ls import lake, run, src, store  # noqa: F401

MiB = 1024 * 1024


def cells(header: str, line: str, headers: tuple[str, ...]) -> list[str]:
    """The cells of one row of a plain (non-terminal) table, cut where the headers start."""
    starts, at = [], 0
    for h in headers:
        at = header.index(h, at)
        starts.append(at)
        at += len(h)
    ends = starts[1:] + [None]
    return [line[s:e].strip() for s, e in zip(starts, ends)]


# ---- du ------------------------------------------------------------------------------------

def test_du_table_cells_are_the_json_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    """Every cell of an artifact row and of a version row is its --json number formatted: a
    user deciding what to delete reads EXCLUSIVE (what deleting frees) and FREES $/MONTH; had
    EXCLUSIVE and SHARED been swapped, or a version's FREES shown its whole stored cost, they
    would delete the wrong thing.  (The price is high so every cost differs in cents.)"""
    from ckptlake.cli.du import HEADERS

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckptlake.yaml").write_text(
        "lake: ./lake\nretention:\n  storage_price_per_gb_month: 1000000\n")
    built(open_store(str(tmp_path / "lake")))
    doc = json.loads(du_cli("du", "--versions", "--sort", "name", "--json").stdout)
    r = du_cli("du", "--versions", "--sort", "name")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    header = lines[0]

    def usd(x: float) -> str:
        return f"${x:,.2f}"

    def expect(name: str, second: str, x: dict[str, Any]) -> list[str]:
        return [name, second, format_bytes(x["logical_bytes"]), format_bytes(x["stored_bytes"]),
                format_bytes(x["exclusive_bytes"]), format_bytes(x["shared_bytes"]),
                usd(x["stored_usd_month"]), usd(x["exclusive_usd_month"])]

    a = doc["artifacts"][0]
    assert a["artifact"] == "a/ckpt" and a["exclusive_bytes"] != a["shared_bytes"]
    row = next(line for line in lines if line.startswith("a/ckpt "))
    assert cells(header, row, HEADERS) == expect("a/ckpt", str(a["version_count"]), a)
    v1 = next(v for v in a["versions"] if v["version"] == 1)
    assert usd(v1["stored_usd_month"]) != usd(v1["exclusive_usd_month"])
    assert format_bytes(v1["exclusive_bytes"]) != format_bytes(v1["shared_bytes"])
    row = next(line for line in lines if line.lstrip().startswith("@v1 "))
    assert cells(header, row, HEADERS) == expect("@v1", f"step {v1['step']}", v1)


# ---- ls ------------------------------------------------------------------------------------

def files_dir(tmp_path: Path, name: str, files: dict[str, bytes]) -> Path:
    d = tmp_path / name
    for path, data in files.items():
        (d / path).parent.mkdir(parents=True, exist_ok=True)
        (d / path).write_bytes(data)
    return d


def test_ls_prefix_pending_lists_only_steps_under_the_prefix(
        lake: Lake, tmp_path: Path) -> None:  # noqa: F811
    """`ls p/ --pending` answers "which sharded steps of my project are stuck": steps of other
    prefixes listed there would send the user chasing another team's ranks."""
    d = files_dir(tmp_path, "r0", {"w0.bin": b"rank zero"})
    lake.push_shard(d, "p/a", step=1, rank=0, world=2)
    lake.push_shard(d, "q/b", step=1, rank=0, world=2)
    assert {p.artifact for p in lake.pending()} == {"p/a", "q/b"}
    doc = json.loads(run("ls", "p/", "--pending", "--json").stdout)
    assert [p["artifact"] for p in doc["pending"]] == ["p/a"]
    r = run("ls", "p/", "--pending")
    assert r.exit_code == 0, r.stderr
    assert [line.split()[0] for line in r.stdout.splitlines()[1:]] == ["p/a"]


def test_ls_prefix_all_leaves_out_deleted_artifacts_outside_the_prefix(
        lake: Lake, tmp_path: Path) -> None:  # noqa: F811
    """`ls p/ --all` lists what is under p/: a fully deleted q/x, or an artifact named p
    (its keys live under artifacts/p/ too), is not under it."""
    d = files_dir(tmp_path, "s", {"w.bin": b"weights"})
    for name in ("p/a", "p", "q/x"):
        lake.push(d, name)
    lake.delete_artifact("p")
    lake.delete_artifact("q/x")
    doc = json.loads(run("ls", "p/", "--all", "--json").stdout)
    assert [a["artifact"] for a in doc["artifacts"]] == ["p/a"]
    r = run("ls", "p/", "--all")
    assert r.exit_code == 0, r.stderr
    assert [line.split()[0] for line in r.stdout.splitlines()[1:]] == ["p/a"]


def test_ls_all_json_is_in_the_tables_name_order(lake: Lake, tmp_path: Path  # noqa: F811
                                                 ) -> None:
    """`ls --all --json` lists the artifacts in name order, deleted ones in place, as the
    table does: a script pairing the two views, or diffing listings, sees the same order."""
    d = files_dir(tmp_path, "s", {"w.bin": b"weights"})
    lake.push(d, "b/x")
    lake.push(d, "a/x")
    lake.delete_artifact("a/x")
    doc = json.loads(run("ls", "--all", "--json").stdout)
    assert [(a["artifact"], a["expired"]) for a in doc["artifacts"]] == [("a/x", 1), ("b/x", 0)]
    r = run("ls", "--all")
    assert [line.split()[0] for line in r.stdout.splitlines()[1:]] == ["a/x", "b/x"]


def test_ls_tree_directory_rows_sum_the_files_below(lake: Lake, tmp_path: Path  # noqa: F811
                                                    ) -> None:
    """A directory's row in `ls REF --tree` is the total of every file below it (what pulling
    that directory costs), not the size of one of them."""
    d = files_dir(tmp_path, "s", {"d/a": b"a" * 1000, "d/b": b"b" * 24})
    lake.push(d, "t")
    r = run("ls", "t@latest", "--tree")
    assert r.exit_code == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    assert ["d/", "1.00", "KiB", "dir"] in rows
    assert ["a", "1000", "B", "file"] in rows and ["b", "24", "B", "file"] in rows


# ---- show ----------------------------------------------------------------------------------

def test_show_marks_a_deleted_parent_expired(lake: Lake, src: Path) -> None:  # noqa: F811
    """A parent deleted by rm (or gc) is shown as expired: the user learns the lineage link
    cannot be followed (pull base@v1 would fail), instead of a parent that looks alive."""
    lake.push(src, "base", step=0)
    lake.push(src, "ft", parents=["base"])
    lake.delete("base@v1")
    doc = json.loads(run("show", "ft", "--json").stdout)
    assert doc["parents"][0]["status"] == "expired"
    r = run("show", "ft")
    assert r.exit_code == 0, r.stderr
    line = next(line for line in r.stdout.splitlines() if "base@v1" in line)
    assert "(expired" in line


def test_show_states_the_compression_ratio_stored_over_logical(
        lake: Lake, tmp_path: Path) -> None:  # noqa: F811
    """`show` says what share of the logical bytes is stored ("0.51 of logical"): the number a
    user checks to see what compression buys; inverted it reads as growth."""
    half = os.urandom(MiB) + b"ab" * (MiB // 2)
    d = files_dir(tmp_path, "s", {"w.bin": half})
    lake.push(d, "c", compression="auto")
    doc = json.loads(run("show", "c", "--json").stdout)
    total, stored = doc["total_bytes"], doc["stored_bytes"]
    assert 0.3 < stored / total < 0.9
    r = run("show", "c")
    assert r.exit_code == 0, r.stderr
    assert f"({format_bytes(stored)} stored, {stored / total:.2f} of logical)" in r.stdout


def test_show_counts_the_files_not_listed(lake: Lake, tmp_path: Path) -> None:  # noqa: F811
    """51 files: 50 listed, then "... 1 more": the user is told exactly how many are hidden
    (and that --json lists them), not one too few or too many."""
    d = files_dir(tmp_path, "s", {f"f{i:02d}.txt": str(i).encode() for i in range(51)})
    lake.push(d, "many")
    r = run("show", "many")
    assert r.exit_code == 0, r.stderr
    assert "  ... 1 more (--json lists them all)" in r.stdout.splitlines()
    assert sum(1 for line in r.stdout.splitlines() if line.endswith(".txt")) == 50
