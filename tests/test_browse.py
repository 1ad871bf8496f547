"""Part of a version (issue 14): `ls REF [PATH]`, partial pull (PATH..., --include/--exclude),
`cat REF PATH`, and the metric selectors `@min:METRIC` / `@max:METRIC`."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core import catalog, summary
from ckptlake.errors import IntegrityError, NotFound, UsageError
from ckptlake.format import layout
from ckptlake.format.refs import Ref, parse_ref
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

KiB, MiB = 1024, 1024 * 1024


class Recording(MemoryStore):
    """A MemoryStore that records every read: ("get"|"range"|"list", key or prefix, bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[str, str, int]] = []

    def get(self, key: str) -> bytes:
        data = super().get(key)
        self.reads.append(("get", key, len(data)))
        return data

    def get_range(self, key: str, start: int, length: int) -> bytes:
        data = super().get_range(key, start, length)
        self.reads.append(("range", key, len(data)))
        return data

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Any:
        self.reads.append(("list", prefix, 0))
        return super().list(prefix, start_after=start_after)

    def corrupt(self, key: str, at: int = 0) -> None:
        data, etag, t = self._objects[key]
        self._objects[key] = (data[:at] + bytes([data[at] ^ 1]) + data[at + 1:], etag, t)


@pytest.fixture
def store() -> Recording:
    return Recording()


@pytest.fixture
def lake(store: Recording, monkeypatch: pytest.MonkeyPatch) -> Lake:
    lake = Lake(store, chunk_size=MiB, concurrency=4)
    lake.close = lambda: None  # type: ignore[method-assign]
    monkeypatch.setattr(ckptlake, "open", lambda *a, **k: lake)  # for the CLI tests
    return lake


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def make_tree(root: Path) -> Path:
    """config.json (1 KiB, packed), big.bin (3.5 MiB: four 1 MiB chunks), tok/ (two small
    files), an empty dir and a symlink."""
    root.mkdir()
    (root / "config.json").write_bytes(b"{" + b"c" * (KiB - 2) + b"}")
    (root / "big.bin").write_bytes(os.urandom(3 * MiB + MiB // 2))
    (root / "tok").mkdir()
    (root / "tok" / "vocab.txt").write_text("a b c\n")
    (root / "tok" / "merges.txt").write_text("a b\n")
    (root / "empty").mkdir()
    (root / "link.json").symlink_to("config.json")
    return root


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "src")


def tree_of(root: Path) -> dict[str, str | bytes | None]:
    """path -> bytes, 'link:target' or None (directory), relative to root."""
    out: dict[str, Any] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            out[rel] = (f"link:{os.readlink(p)}" if p.is_symlink()
                        else None if p.is_dir() else p.read_bytes())
    return out


# ---- metric selectors -------------------------------------------------------------------------

def test_parse_metric_selectors() -> None:
    assert parse_ref("a/b@min:val_loss") == Ref("a/b", "min", "val_loss")
    assert parse_ref("a/b@max:eval/acc.top-1") == Ref("a/b", "max", "eval/acc.top-1")
    assert str(parse_ref("a/b@min:val_loss")) == "a/b@min:val_loss"
    for bad in ("a@min:", "a@max:x y", "a@min:x@y", "a@mean:x"):
        with pytest.raises(UsageError):
            parse_ref(bad)


def push_metrics(lake: Lake, src: Path, rows: list[dict[str, float]]) -> None:
    for i, metrics in enumerate(rows, start=1):
        lake.push(src, "run/ckpt", step=i, metrics=metrics)


def test_min_max_ties_newest_and_missing_values(lake: Lake, tmp_path: Path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    (one / "w").write_bytes(b"w")
    push_metrics(lake, one, [{"loss": 2.0, "acc": 0.5}, {"loss": 1.0}, {"loss": 1.0, "acc": 0.9},
                             {"acc": 0.9}, {"loss": 3.0}])
    assert lake.resolve("run/ckpt@min:loss").version == 3  # v2 and v3 tie: the newest
    assert lake.resolve("run/ckpt@max:loss").version == 5
    assert lake.resolve("run/ckpt@max:acc").version == 4  # v3 and v4 tie; v2, v5 lack it
    assert lake.resolve("run/ckpt@min:acc").version == 1
    with pytest.raises(NotFound, match=r"has the metric 'f1' \(metrics: acc, loss\)") as e:
        lake.resolve("run/ckpt@min:f1")
    assert e.value.exit_code == 3
    r = run("show", "run/ckpt@min:f1")
    assert r.exit_code == 3 and "metrics: acc, loss" in r.output


def test_selector_over_1000_versions_reads_listings_and_one_manifest(
        lake: Lake, store: Recording, tmp_path: Path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    (one / "w").write_bytes(b"w")
    lake.push(one, "run/ckpt", metrics={"val_loss": 5.0})
    m = catalog.load_manifest(store, "run/ckpt", 1)
    for n in range(2, 1001):  # versions 2..1000 with their summaries, as push writes them
        mn = dataclasses.replace(m, version=n, metrics={"val_loss": abs(n - 617) + 0.5})
        store.put(layout.version_key("run/ckpt", n), mn.encode())
        summary.write_summary(store, mn)
    store.reads.clear()
    assert catalog.resolve(store, "run/ckpt@min:val_loss").version == 617
    manifest_gets = [k for op, k, _ in store.reads if op == "get" and "/@v/" in k]
    assert manifest_gets == [layout.version_key("run/ckpt", 617)]
    # The listings of @v/ and of the summaries; nothing else.
    assert sorted(k for op, k, _ in store.reads if op == "list") == sorted(
        [layout.versions_prefix("run/ckpt"), layout.summaries_prefix("run/ckpt")])
    assert len(store.reads) == 3


def test_selector_falls_back_to_manifests_without_summaries(
        lake: Lake, store: Recording, src: Path) -> None:
    push_metrics(lake, src, [{"val_loss": 2.0}, {"val_loss": 1.0}, {"val_loss": 3.0}])
    store.delete([i.key for i in store.list(layout.summaries_prefix("run/ckpt"))])
    assert lake.resolve("run/ckpt@min:val_loss").version == 2


def test_selectors_everywhere_a_ref_is_taken(lake: Lake, src: Path, tmp_path: Path) -> None:
    push_metrics(lake, src, [{"val_loss": 2.0}, {"val_loss": 1.0}, {"val_loss": 3.0}])
    r = run("show", "run/ckpt@min:val_loss", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["version"] == 2
    r = run("pull", "run/ckpt@min:val_loss", str(tmp_path / "out"), "config.json", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["version"] == 2
    r = run("alias", "run/ckpt@min:val_loss", "best", "--json")
    assert r.exit_code == 0, r.output
    assert lake.resolve("run/ckpt@best").version == 2
    r = run("diff", "run/ckpt@min:val_loss", "run/ckpt@max:val_loss", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (doc["a"]["version"], doc["b"]["version"]) == (2, 3)
    lake.push(src, "run/tuned", parents=["run/ckpt@min:val_loss:fine-tuned-from"])
    r = run("lineage", "run/tuned", "--json")
    assert r.exit_code == 0 and '"run/ckpt@v2"' in r.stdout
    r = run("lineage", "run/ckpt@max:val_loss", "--json")
    assert r.exit_code == 0 and '"run/ckpt@v3"' in r.stdout
    r = run("push", str(src), "run/tuned", "--parent", "run/ckpt@max:val_loss", "--json")
    assert r.exit_code == 0, r.output
    assert lake.show("run/tuned").parents[0]["version"] == 3
    r = run("ls", "run/ckpt@max:val_loss", "--json")
    assert json.loads(r.stdout)["version"] == 3
    r = run("cat", "run/ckpt@min:val_loss", "tok/merges.txt")
    assert r.exit_code == 0 and r.stdout == "a b\n"
    r = run("verify", "run/ckpt@min:val_loss", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["versions_checked"] == 1
    assert lake.files("run/ckpt@max:val_loss", "tok")["version"] == 3


# ---- ls REF [PATH] ----------------------------------------------------------------------------

def test_ls_ref_lists_files(lake: Lake, src: Path) -> None:
    lake.push(src, "m/base")
    r = run("ls", "m/base@v1", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (doc["artifact"], doc["version"]) == ("m/base", 1)
    by_path = {f["path"]: f for f in doc["files"]}
    assert [f["path"] for f in doc["files"]] == sorted(by_path)
    assert by_path["big.bin"] == {"path": "big.bin", "size": 3 * MiB + MiB // 2, "kind": "file"}
    assert by_path["empty"]["kind"] == "dir"
    assert by_path["link.json"] == {"path": "link.json", "size": 0, "kind": "symlink",
                                    "target": "config.json"}
    human = run("ls", "m/base@latest").stdout
    assert "tok/vocab.txt" in human and "symlink -> config.json" in human and "empty/" in human
    # ARTIFACT alone still lists versions; ARTIFACT PATH means its latest version.
    assert json.loads(run("ls", "m/base", "--json").stdout)["versions"][0]["version"] == 1
    doc = json.loads(run("ls", "m/base", "tok", "--json").stdout)
    assert [f["path"] for f in doc["files"]] == ["tok/merges.txt", "tok/vocab.txt"]
    assert [f["path"] for f in json.loads(run("ls", "m/base@v1", "tok/vocab.txt/",
                                              "--json").stdout)["files"]] == ["tok/vocab.txt"]


def test_ls_ref_path_reads_dots_and_links_as_cat_does(lake: Lake, src: Path) -> None:
    """`ls V .`, `ls V tok/../config.json` and `ls V cur/vocab.txt` (cur -> tok) said
    "matches nothing" while `cat` of the same paths found the file."""
    (src / "cur").symlink_to("tok")
    lake.push(src, "m/base")

    def paths(*where: str) -> list[str]:
        r = run("ls", "m/base@v1", *where, "--json")
        assert r.exit_code == 0, (where, r.output)
        return [f["path"] for f in json.loads(r.stdout)["files"]]

    everything = paths()
    assert paths(".") == paths("./") == paths("tok/..") == everything
    assert paths("tok/../config.json") == paths("./tok/./../config.json") == ["config.json"]
    assert paths("cur/vocab.txt") == paths("tok//vocab.txt") == ["tok/vocab.txt"]
    assert paths("cur/") == paths("cur") == ["cur"]  # the link itself, as ls of a link shows
    assert run("cat", "m/base@v1", "tok/../config.json").stdout == (src / "config.json").read_text()
    r = run("ls", "m/base@v1", "tok/../nope")
    assert r.exit_code == 3 and "'tok/../nope', which leads to 'nope', matches nothing" in r.output
    r = run("ls", "m/base@v1", "..")
    assert r.exit_code == 3 and "leads outside m/base@v1" in r.output, r.output


def test_dot_dot_after_what_is_no_directory_names_nothing(lake: Lake, src: Path) -> None:
    """`cat V nope/../config.json` and `cat V config.json/../config.json` served the file,
    which a pulled copy does not give (No such file; Not a directory)."""
    lake.push(src, "m/base")
    for path in ("nope/../config.json", "config.json/../config.json", "tok/nope/../../big.bin"):
        for cmd in ("cat", "ls"):
            r = run(cmd, "m/base@v1", path)
            assert r.exit_code == 3, (cmd, path, r.output)
            assert "which is no directory of m/base@v1" in r.output, r.output
        with pytest.raises(NotFound, match="no directory"):
            lake.open("m/base@v1", path)
    assert run("cat", "m/base@v1", "tok/../config.json").exit_code == 0
    assert run("cat", "m/base@v1", "empty/../config.json").exit_code == 0  # an empty directory
    assert run("cat", "m/base@v1", "link.json/../config.json").exit_code == 3  # a link to a file
    for path in ("config.json/", "config.json/.", "tok/vocab.txt/", "link.json/"):  # file as dir
        r = run("cat", "m/base@v1", path)
        assert r.exit_code == 3 and "not a directory" in r.output, (path, r.output)
        with pytest.raises(NotFound, match="is a file, not a directory"):
            lake.open("m/base@v1", path)


def test_ls_ref_tree(lake: Lake, src: Path) -> None:
    (src / "tok" / "deep").mkdir()
    (src / "tok" / "deep" / "x.txt").write_text("xy")
    lake.push(src, "m/base")
    lines = [line.split()[0] for line in run("ls", "m/base@v1", "--tree").stdout.splitlines()]
    assert lines == ["PATH", "big.bin", "config.json", "empty/", "link.json", "tok/", "deep/",
                     "x.txt", "merges.txt", "vocab.txt"]
    assert "  deep/" in run("ls", "m/base@v1", "--tree").stdout
    assert run("ls", "m/base", "--tree").exit_code == 2


def test_ls_ref_safetensors_kind(lake: Lake, tmp_path: Path) -> None:
    d = tmp_path / "st"
    d.mkdir()
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                         "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}).encode()
    (d / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 12)
    lake.push(d, "m/st")
    r = run("ls", "m/st@v1")
    assert "safetensors (2 tensors)" in r.stdout
    assert json.loads(run("ls", "m/st@v1", "--json").stdout)["files"][0]["tensors"] == 2


def test_ls_ref_bad_input(lake: Lake, src: Path) -> None:
    lake.push(src, "m/base")
    r = run("ls", "m/base@v1", "nope")
    assert r.exit_code == 3 and "'nope'" in r.output and "m/base@v1" in r.output
    assert run("ls", "m/base@v9").exit_code == 3
    r = run("ls", "m/base@v1", "--sort", "loss")
    assert r.exit_code == 2 and "names one version" in r.output


# ---- partial pull -----------------------------------------------------------------------------

def test_partial_pull_by_path_prefix_and_globs(lake: Lake, src: Path, tmp_path: Path) -> None:
    lake.push(src, "m/base")
    out = tmp_path / "a"
    r = run("pull", "m/base@v1", str(out), "config.json", "tok/", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert tree_of(out) == {"config.json": (src / "config.json").read_bytes(), "tok": None,
                            "tok/vocab.txt": b"a b c\n", "tok/merges.txt": b"a b\n"}
    assert (doc["files"], doc["bytes_total"]) == (3, KiB + 6 + 4)
    assert doc["selection"] == {"paths": ["config.json", "tok/"]}
    assert doc["bytes_downloaded"] < MiB  # one pack, not big.bin

    out = tmp_path / "b"
    r = run("pull", "m/base", str(out), "--include", "*.txt", "--include", "link*",
            "--exclude", "tok/merges*", "--json")
    assert r.exit_code == 0, r.output
    assert tree_of(out) == {"tok": None, "tok/vocab.txt": b"a b c\n",
                            "link.json": "link:config.json"}
    out = tmp_path / "c"  # --exclude alone: everything else (the empty directory too)
    r = run("pull", "m/base", str(out), "--exclude", "big.bin", "--exclude", "tok")
    assert r.exit_code == 0, r.output
    assert sorted(tree_of(out)) == ["config.json", "empty", "link.json"]


def test_partial_pull_matching_nothing_is_exit_3(lake: Lake, src: Path, tmp_path: Path) -> None:
    lake.push(src, "m/base")
    out = tmp_path / "out"
    r = run("pull", "m/base", str(out), "config.json", "nope", "--include", "*.yaml")
    assert r.exit_code == 3
    assert "'nope', '*.yaml' match nothing in m/base@v1" in r.output
    r = run("pull", "m/base", str(out), "config.json", "--exclude", "*.json", "--json")
    assert r.exit_code == 3 and json.loads(r.stdout)["error"]["exit_code"] == 3
    assert "leaves nothing" in r.output
    r = run("pull", "m/base", str(out), "*.json")
    assert r.exit_code == 3 and "use --include" not in r.output and "--include" in r.output
    with pytest.raises(NotFound, match="'tok/nope' matches nothing"):
        lake.pull("m/base", out, paths="tok/nope")  # one string is one path
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_partial_pull_estimate_covers_only_the_selection(
        lake: Lake, src: Path, tmp_path: Path) -> None:
    lake.push(src, "m/base")
    out = tmp_path / "out"
    r = run("pull", "m/base", str(out), "big.bin", "--estimate", "--json")
    est = json.loads(r.stdout)
    assert (est["bytes_total"], est["bytes_to_download"]) == (3 * MiB + MiB // 2,) * 2
    assert est["selection"] == {"paths": ["big.bin"]}
    r = run("pull", "m/base", str(out), "tok", "--estimate", "--json")
    assert json.loads(r.stdout)["bytes_to_download"] < MiB
    res = lake.pull("m/base", out, paths=["big.bin"])
    assert res.bytes_downloaded == 3 * MiB + MiB // 2 and res.files == 1
    assert tree_of(out) == {"big.bin": (src / "big.bin").read_bytes()}


def test_partial_pull_resumes_and_stages_apart(lake: Lake, store: Recording, src: Path,
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """An interrupted partial pull resumes its own staged chunks; an interrupted whole pull's
    staging is never renamed into a destination that asked for one file."""
    lake.push(src, "m/base")
    out = tmp_path / "out"
    real_get, calls = store.get_into, []

    def flaky(key: str, buffer: Any) -> Any:
        if key.startswith(layout.CHUNKS_PREFIX):
            calls.append(key)
            if len(calls) == 3:
                raise KeyboardInterrupt
        return real_get(key, buffer)

    monkeypatch.setattr(store, "get_into", flaky)
    lake.concurrency = 1
    with pytest.raises(KeyboardInterrupt):
        lake.pull("m/base", out, paths=["big.bin"])
    assert not out.exists()
    with pytest.raises(KeyboardInterrupt):  # a whole pull into the same place, interrupted
        calls.clear()
        lake.pull("m/base", out)
    monkeypatch.setattr(store, "get_into", real_get)
    res = lake.pull("m/base", out, paths=["big.bin"])
    assert res.bytes_resumed == 2 * MiB and res.bytes_downloaded == MiB + MiB // 2
    assert tree_of(out) == {"big.bin": (src / "big.bin").read_bytes()}


def test_partial_pull_of_part_of_a_large_pack(tmp_path: Path) -> None:
    """A pack fetched in parts (above the multipart threshold) is fetched and verified whole,
    even when the wanted file ends before the pack does; the estimate counts it whole."""
    from ckptlake.policy.egress import EgressPolicy

    store = Recording()
    lake = Lake(store, chunk_size=8 * MiB, multipart_threshold=5 * MiB, part_size=5 * MiB)
    d = tmp_path / "small"
    d.mkdir()
    import zlib

    # Names that do not open a new pack (push's content-defined pack boundaries): one pack.
    names = [n for n in (f"p{i:03d}.bin" for i in range(200)) if zlib.crc32(n.encode()) & 31]
    for name in names[:8]:
        (d / name).write_bytes(os.urandom(900 * KiB))
    lake.push(d, "m/packs")
    m = catalog.load_manifest(store, "m/packs", 1)
    pack_size: dict[str, int] = {}
    for f in m.files:
        c = f.chunks[0]
        pack_size[c.digest] = max(pack_size.get(c.digest, 0), c.offset + c.size)
    cands = [f for f in m.files if f.chunks[0].offset + f.chunks[0].size >= 5 * MiB + 1
             and f.chunks[0].offset + f.chunks[0].size < pack_size[f.chunks[0].digest]]
    assert cands, "precondition: a file ending past the threshold, before its pack's end"
    f = cands[0]
    est = lake.estimate_pull("m/packs", tmp_path / "out", paths=[f.path], egress=EgressPolicy())
    res = lake.pull("m/packs", tmp_path / "out", paths=[f.path])
    assert (tmp_path / "out" / f.path).read_bytes() == (d / f.path).read_bytes()
    assert res.bytes_downloaded == est.bytes_to_download == pack_size[f.chunks[0].digest]


# ---- cat --------------------------------------------------------------------------------------

def test_cat_small_file_fetches_one_range_and_the_manifest(
        lake: Lake, store: Recording, src: Path) -> None:
    lake.push(src, "m/base")
    store.reads.clear()
    r = run("cat", "m/base@v1", "config.json")
    assert r.exit_code == 0 and r.stdout_bytes == (src / "config.json").read_bytes()
    # @v1: the manifest; the file: one ranged GET of its 1 KiB in its pack.  Nothing else.
    assert [(op, k.split("/")[-2] if op == "get" else "chunk", n) for op, k, n in store.reads] \
        == [("get", "@v", store.reads[0][2]), ("range", "chunk", KiB)]
    assert store.reads[0][1] == layout.version_key("m/base", 1)
    store.reads.clear()
    assert b"".join(lake.cat("m/base", "tok/vocab.txt")) == b"a b c\n"  # latest: + 1 listing
    assert [op for op, _, _ in store.reads] == ["list", "get", "range"]


def test_cat_multi_chunk_file_is_bit_exact(lake: Lake, store: Recording, src: Path) -> None:
    lake.push(src, "m/base")
    store.reads.clear()
    r = run("cat", "m/base@v1", "big.bin")
    assert r.exit_code == 0 and r.stdout_bytes == (src / "big.bin").read_bytes()
    assert [n for op, _, n in store.reads if op == "get"][1:] == [MiB, MiB, MiB, MiB // 2]


def test_cat_corrupt_chunk_stops_before_it(lake: Lake, store: Recording, src: Path) -> None:
    lake.push(src, "m/base")
    m = catalog.load_manifest(store, "m/base", 1)
    big = next(f for f in m.files if f.path == "big.bin")
    store.corrupt(layout.chunk_key(big.chunks[2].digest), at=MiB - 1)
    r = run("cat", "m/base@v1", "big.bin")
    assert r.exit_code == 5 and "corrupt" in r.stderr
    assert r.stdout_bytes == (src / "big.bin").read_bytes()[:2 * MiB]
    conf = next(f for f in m.files if f.path == "config.json")
    store.corrupt(layout.chunk_key(conf.chunks[0].digest), at=conf.chunks[0].offset + 10)
    r = run("cat", "m/base@v1", "config.json")
    assert r.exit_code == 5 and r.stdout_bytes == b""
    with pytest.raises(IntegrityError):
        b"".join(lake.cat("m/base", "config.json"))


def test_cat_bad_paths(lake: Lake, src: Path) -> None:
    lake.push(src, "m/base")
    r = run("cat", "m/base", "tok")
    assert r.exit_code == 2 and "is a directory" in r.output and "ckptlake ls m/base@v1 tok" \
        in r.output
    assert run("cat", "m/base", "empty").exit_code == 2
    r = run("cat", "m/base", "link.json")
    assert r.exit_code == 2 and "is a symlink" in r.output and "cat m/base@v1 config.json" \
        in r.output
    r = run("cat", "m/base", "nope.json")
    assert r.exit_code == 3 and "'nope.json' is not a file of m/base@v1" in r.output
    assert run("cat", "m/base@v7", "config.json").exit_code == 3
    with pytest.raises(UsageError):
        lake.cat("m/base", "tok")  # refused before any data is read, not at the first next()


def test_cat_resolves_dot_segments_like_lake_open(lake: Lake, src: Path) -> None:
    """"." is the version's root (a directory, exit 2, as "" and "/"), `tok/../config.json`
    is config.json, as `lake.open` reads it; ".." above the root, or out of a symlink (where
    the disk would climb from the link's target) is followed."""
    (src / "dirlink").symlink_to("tok")
    lake.push(src, "m/base")
    for root in (".", "./", "/"):
        r = run("cat", "m/base", root)
        assert r.exit_code == 2 and "is a directory" in r.output, (root, r.output)
    for path in ("tok/../config.json", "./config.json", "tok/./../config.json"):
        r = run("cat", "m/base", path)
        assert r.exit_code == 0 and r.stdout_bytes == (src / "config.json").read_bytes(), path
        with lake.open("m/base", path) as fh:
            assert fh.read() == (src / "config.json").read_bytes()
    assert run("cat", "m/base", "../config.json").exit_code == 3
    r = run("cat", "m/base", "dirlink/../config.json")  # through the link, as the disk does
    assert r.exit_code == 0 and r.stdout_bytes == (src / "config.json").read_bytes()


def test_cat_no_longer_points_at_show(lake: Lake, src: Path) -> None:
    lake.push(src, "m/base")
    r = run("cat", "m/base", "config.json")
    assert r.exit_code == 0 and "calls it" not in r.output


# ---- end to end, local and S3 -----------------------------------------------------------------

def test_browse_end_to_end(lake_url: str, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    with ckptlake.open(lake_url) as lk:
        lk.push(src, "e2e/m", metrics={"val_loss": 2.0})
        lk.push(src, "e2e/m", metrics={"val_loss": 1.5})
        lk.push(src, "e2e/m", metrics={"val_loss": 1.7})
    base = ["--lake", lake_url]
    doc = json.loads(CliRunner().invoke(app, ["ls", "e2e/m@min:val_loss", "tok", "--json",
                                              *base]).stdout)
    assert doc["version"] == 2 and len(doc["files"]) == 2
    r = CliRunner().invoke(app, ["cat", "e2e/m@min:val_loss", "big.bin", *base])
    assert r.exit_code == 0 and r.stdout_bytes == (src / "big.bin").read_bytes()
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["pull", "e2e/m@max:val_loss", str(out), "tok",
                                 "--include", "*.json", "--json", *base])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["version"] == 1  # the highest val_loss
    assert sorted(tree_of(out)) == ["config.json", "link.json", "tok", "tok/merges.txt",
                                    "tok/vocab.txt"]
