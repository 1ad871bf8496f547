"""`show`, and `ls` grown up: --where/--sort/--limit, metric columns, listing summaries."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core import summary
from ckptlake.core.query import parse_sort, parse_where, select
from ckptlake.errors import UsageError
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

MiB = 1024 * 1024


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def lake(store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> Lake:
    lake = Lake(store, chunk_size=MiB, concurrency=4)
    lake.close = lambda: None  # type: ignore[method-assign]
    monkeypatch.setattr(ckptlake, "open", lambda *a, **k: lake)  # for the CLI tests
    return lake


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "w.bin").write_bytes(b"w" * 1000)
    (d / "run.sh").write_text("#!/bin/sh\n")
    (d / "run.sh").chmod(0o755)
    return d


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def fill(lake: Lake, src: Path) -> None:
    for i, (loss, val) in enumerate([(3.0, 3.1), (2.6, 2.7), (2.2, 2.4), (2.4, None),
                                     (1.9, 2.3)], start=1):
        metrics = {"loss": loss} | ({"val_loss": val} if val is not None else {})
        lake.push(src, "run/ckpt", step=i * 500, metrics=metrics, metadata={"i": str(i)})


# ---- query -------------------------------------------------------------------------------------

def test_parse_where_and_sort() -> None:
    c = parse_where(" val_loss <= 2.5 ")
    assert (c.key, c.op, c.value) == ("val_loss", "<=", 2.5)
    assert parse_where("eval/acc=0.5").op == "=="
    assert parse_where("step!=1e3").value == 1000
    for bad in ("val_loss", "<2", "loss<abc", "loss<inf", "loss<<2"):
        with pytest.raises(UsageError):
            parse_where(bad)
    assert parse_sort("-loss") == parse_sort("loss:desc")
    assert parse_sort("loss").descending is False
    with pytest.raises(UsageError):
        parse_sort("-")


def test_where_sort_limit(lake: Lake, src: Path) -> None:
    fill(lake, src)
    got = lake.versions("run/ckpt", where=["val_loss<2.5"])
    assert [v.version for v in got] == [3, 5]
    got = lake.versions("run/ckpt", where=["loss<3", "step>=1500"])
    assert [v.version for v in got] == [3, 4, 5]
    got = lake.versions("run/ckpt", sort="val_loss")
    assert [v.version for v in got] == [5, 3, 2, 1, 4], "without val_loss: last"
    got = lake.versions("run/ckpt", sort="-loss", limit=2)
    assert [v.version for v in got] == [1, 2]
    assert [v.version for v in lake.versions("run/ckpt", limit=2)] == [4, 5], "newest"
    assert lake.versions("run/ckpt", limit=0) == []
    assert [v.version for v in lake.versions("run/ckpt", where=["version==2"])] == [2]
    versions = lake.versions("run/ckpt")
    assert select(versions, where=["size>0"]) == versions


def test_sort_ties_go_to_the_newest_like_min_max(lake: Lake, src: Path) -> None:
    """`ls --sort val_loss --limit 1` names the version `@min:val_loss` pulls (and keep_best
    keeps): on a tie, the newest.  Sorted oldest first, a CI script picking the best from `ls`
    got another version than `pull @min:`."""
    for i, val in enumerate([2.0, 1.5, 1.5, 3.0, 1.5, None, None], start=1):
        lake.push(src, "run/ckpt", step=i, metrics={} if val is None else {"val_loss": val})
    got = [v.version for v in lake.versions("run/ckpt", sort="val_loss")]
    assert got == [5, 3, 2, 1, 4, 7, 6]
    assert got[0] == lake.resolve("run/ckpt@min:val_loss").version
    got = [v.version for v in lake.versions("run/ckpt", sort="-val_loss", limit=3)]
    assert got == [4, 1, 5]
    assert lake.resolve("run/ckpt@max:val_loss").version == 4


def test_cli_ls_query_and_metric_columns(lake: Lake, src: Path) -> None:
    fill(lake, src)
    r = run("ls", "run/ckpt", "--where", "val_loss<2.5", "--where", "step>=1000",
            "--sort", "val_loss", "--limit", "5")
    assert r.exit_code == 0, r.stderr
    header, *rows = r.stdout.splitlines()
    assert header.split() == ["VERSION", "STEP", "SIZE", "AGE", "ALIASES", "val_loss",
                              "METRICS"]
    assert [row.split()[0] for row in rows] == ["v5", "v3"]
    assert rows[0].split()[6:] == ["2.3", "loss=1.9"]
    doc = json.loads(run("ls", "run/ckpt", "--sort", "-loss", "--limit", "1", "--json").stdout)
    assert [v["version"] for v in doc["versions"]] == [1]
    assert doc["versions"][0]["metadata"] == {"i": "1"}
    r = run("ls", "--where", "loss<2")
    assert r.exit_code == 2 and "give an ARTIFACT" in r.stderr
    r = run("ls", "run/ckpt", "--where", "loss<<2")
    assert r.exit_code == 2 and "--where" in r.stderr
    r = run("ls", "run/ckpt", "--where", "loss<0")
    assert r.exit_code == 0 and r.stdout == "" and "matching the query" in r.stderr


# ---- summaries ---------------------------------------------------------------------------------

def test_ls_is_answered_by_listings(lake: Lake, store: MemoryStore, src: Path) -> None:
    fill(lake, src)
    lake.alias("run/ckpt@v2", "best")
    store.calls.clear()
    versions = lake.versions("run/ckpt")
    assert store.calls["get"] == 1, "the alias record only: no manifest was read"
    from ckptlake.core.catalog import load_manifests, version_info

    exact = [version_info(m, {"best": 2}) for m in load_manifests(store, "run/ckpt",
                                                                   [1, 2, 3, 4, 5])]
    assert [v.to_dict() for v in versions] == [v.to_dict() for v in exact]


def test_summaries_fall_back_to_manifests(lake: Lake, store: MemoryStore, src: Path) -> None:
    lake.push(src, "a", metrics={"loss": 1.0})
    params = {f"p{i}": __import__("hashlib").sha256(b"%d" % i).hexdigest() for i in range(20)}
    lake.push(src, "a", metadata=params)
    noise = {__import__("hashlib").sha256(bytes([i])).hexdigest()[:24]: i / 7 for i in range(40)}
    lake.push(src, "a", metrics=noise)  # incompressible: does not fit in a key
    keys = [k for k in store.keys() if k.startswith("artifacts/a/@s/")]
    parsed = {layout.parse_summary_key(k)[1]: k for k in keys}  # type: ignore[index]
    assert set(parsed) == {1, 2, 3}
    # v3's metrics do not fit in a key: its key says only that v3 was committed
    assert parsed[3].endswith("." + summary.EVIDENCE_ONLY)
    assert 3 not in summary.read_summaries(store, "a")
    assert all(len(k) <= summary.MAX_KEY for k in keys)
    store.put("artifacts/a/@s/0000000001.jnot-base64-json!", b"")  # garbage is skipped
    store.put(layout.summary_key("a", 9, "jeyJ4IjoxfQ"), b"")  # v9 has no manifest: ignored
    store.calls.clear()
    versions = lake.versions("a")
    assert [v.version for v in versions] == [1, 2, 3]
    assert store.calls["get"] == 2, "v2 (metadata too large for its key) and v3 read manifests"
    assert versions[1].metadata == params
    assert versions[2].metrics == noise


def test_summary_round_trip_is_exact(lake: Lake, store: MemoryStore, src: Path) -> None:
    lake.push(src, "a/b", step=7, metrics={"x": 0.1 + 0.2, "big": 1e300, "neg": -3.0},
              metadata={"ü": "ñ ✓", "empty": ""})
    s = summary.read_summaries(store, "a/b")[1]
    assert s.metrics == {"x": 0.1 + 0.2, "big": 1e300, "neg": -3.0}
    assert s.metadata == {"ü": "ñ ✓", "empty": ""} and s.step == 7 and s.files == 2


# ---- show --------------------------------------------------------------------------------------

def test_show_everything(lake: Lake, src: Path) -> None:
    lake.push(src, "base", step=0)
    lake.push(src, "ft", step=10, metrics={"loss": 2.0}, metadata={"lr": "1e-4"},
              parents=["base:fine-tuned-from"], inputs=["s3://data/x#sha256:1"],
              aliases=["best"])
    lake.push(src, "eval", parents=["ft:evaluated-from"])
    d = lake.show("ft@best")
    assert (d.artifact, d.version, d.step, d.kind) == ("ft", 1, 10, "dir")
    assert d.aliases == ["best"] and d.metrics == {"loss": 2.0} and d.metadata == {"lr": "1e-4"}
    assert d.parents == [{"artifact": "base", "version": 1, "relation": "fine-tuned-from",
                          "status": "ok", "step": 0, "deleted": None}]
    assert d.children == [{"artifact": "eval", "version": 1, "relation": "evaluated-from",
                           "status": "ok", "step": None, "deleted": None}]
    assert d.inputs == [{"uri": "s3://data/x", "digest": "sha256:1"}]
    assert d.files == [{"path": "run.sh", "size": 10, "executable": True},
                       {"path": "w.bin", "size": 1000}]
    assert d.total_bytes == 1010 and d.file_count == 2 and d.chunks == 1
    assert d.provenance["ckptlake"] == ckptlake.__version__


def test_cli_show(lake: Lake, src: Path) -> None:
    lake.push(src, "base", step=0)
    lake.push(src, "ft", parents=["base"], metrics={"loss": 2.0})
    r = run("show", "ft")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["version", "ft@v1"]
    assert any(line.split()[:4] == ["parents", "↑", "derived-from", "base@v1"] for line in lines)
    assert any(line.split() == ["metrics", "loss=2"] for line in lines)
    assert lines[-2].split() == ["10", "B", "run.sh", "(executable)"]
    doc = json.loads(run("show", "ft", "--json").stdout)
    assert doc["lake"] == "memory://test" and doc["parents"][0]["status"] == "ok"
    assert {"files", "provenance", "children", "inputs", "aliases", "total_bytes"} <= set(doc)
    r = run("show", "ft@v5")
    assert r.exit_code == 3
    assert run("show", "f t").exit_code == 2


def test_summary_of_a_deleted_version_is_not_used_for_its_reused_number(
        lake: Lake, store: MemoryStore, src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from ckptlake.core import catalog

    lake.push(src, "a", metrics={"loss": 9.0})
    old = next(k for k in store.keys() if k.startswith("artifacts/a/@s/"))
    data, etag, t = store._objects[old]
    store._objects[old] = (data, etag, t - timedelta(seconds=60))  # written long ago
    store.delete([layout.version_key("a", 1)])  # deleted (as gc would) ...
    store.delete([k for k in store.keys() if k.startswith("artifacts/a/@s/") and k != old])
    with monkeypatch.context() as m:  # ... and v1 claimed again (a pusher from before
        m.setattr(catalog, "next_number", lambda store, artifact: 1)  # 2026-12-07)
        lake.push(src, "a", metrics={"loss": 1.0}, provenance=False)
    store.delete([k for k in store.keys() if k.startswith("artifacts/a/@s/") and k != old])
    [v] = lake.versions("a")
    assert (v.version, v.metrics) == (1, {"loss": 1.0}), "the manifest, not the stale summary"
    # @min:/@max: rank v1 by its own manifest too (by the dead one's summary, 9.0, pull
    # a@min:loss gave a worse checkpoint)
    lake.push(src, "a", metrics={"loss": 5.0})  # v2, with its own (good) summary
    assert lake.resolve("a@min:loss").version == 1
    assert lake.resolve("a@max:loss").version == 2
