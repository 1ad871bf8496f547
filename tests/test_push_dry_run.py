"""`push --dry-run`: the push's own decisions (what the lake holds, what each new chunk encodes
to, the version number) and nothing written, on a local lake and on SeaweedFS."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.store import open_store

from test_compression import CH, source

COUNTS = ("version", "files", "bytes_scanned", "bytes_uploaded", "bytes_deduplicated",
          "chunks_uploaded", "chunks_deduplicated", "bytes_sent", "bytes_stored", "compression")


def cli(*args: object) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def objects(url: str) -> dict[str, int]:
    store = open_store(url)
    try:
        return {o.key: o.size for o in store.list("")}
    finally:
        store.close()


def test_dry_run_says_what_the_push_does_and_writes_nothing(lake_url: str,
                                                            tmp_path: Path) -> None:
    src = source(tmp_path)
    dry = cli("--lake", lake_url, "push", src, "run/ckpt", "--dry-run", "--json",
              "--chunk-size", CH)
    assert dry.exit_code == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] is True
    assert objects(lake_url) == {}, "a dry run on a new lake created it"
    if lake_url.startswith("file://"):
        assert not Path(lake_url[len("file://"):]).exists()
    assert any("would create it" in w for w in plan["warnings"])
    with ckptlake.open(lake_url, chunk_size=CH) as lake:
        done = lake.push(src, "run/ckpt").to_dict()
    assert done["dry_run"] is False
    assert {k: plan[k] for k in COUNTS} == {k: done[k] for k in COUNTS}
    assert plan["bytes_sent"] < plan["bytes_uploaded"], "compression counted"

    # a changed source: the dry run names the new chunks only, and the next number
    (src / "cfg" / "0.json").write_text("changed")
    (src / "extra.bin").write_bytes(b"\x01" * 5000)
    before = objects(lake_url)
    r = cli("--lake", lake_url, "push", src, "run/ckpt", "--dry-run", "--step", 7,
            "--alias", "prod", "--chunk-size", CH)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("would push run/ckpt as v2 (step 7; alias prod):"), r.stdout
    assert "nothing was written" in r.stdout
    assert objects(lake_url) == before
    plan = json.loads(cli("--lake", lake_url, "push", src, "run/ckpt", "--dry-run",
                          "--json", "--chunk-size", CH).stdout)
    with ckptlake.open(lake_url, chunk_size=CH) as lake:
        done = lake.push(src, "run/ckpt").to_dict()
        assert lake.resolve("run/ckpt@latest").version == 2
    assert {k: plan[k] for k in COUNTS} == {k: done[k] for k in COUNTS}
    assert 0 < plan["bytes_uploaded"] < plan["bytes_scanned"] // 4


def test_dry_run_refuses_what_the_push_refuses(local_lake_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"a" * 10_000)
    lake = ["--lake", local_lake_url]
    r = cli(*lake, "push", tmp_path / "nope", "run/ckpt", "--dry-run")
    assert r.exit_code == 3, r.stderr
    r = cli(*lake, "push", src, "run/ckpt", "--dry-run", "--metric", "loss=x")
    assert r.exit_code == 2, r.stderr
    r = cli(*lake, "push", src, "run/ckpt", "--dry-run", "--shard", "0/2", "--step", 1)
    assert r.exit_code == 2 and "--dry-run cannot be combined with --shard" in r.stderr
    r = cli(*lake, "push", src, "run/ckpt", "--dry-run", "--parent", "other@v1")
    assert r.exit_code == 3, r.stderr
    assert cli(*lake, "push", src, "run/ckpt", "--hash", "sha256", "-q").exit_code == 0
    r = cli(*lake, "push", src, "run/ckpt", "--dry-run", "--hash", "blake3")
    assert r.exit_code == 2 and "sha256" in r.stderr
    with ckptlake.open(local_lake_url) as lk:
        with pytest.raises(ckptlake.UsageError):
            lk.push(src, "run/ckpt", dry_run="yes")  # type: ignore[arg-type]
        assert [v.version for v in lk.versions("run/ckpt")] == [1]


def test_dry_run_of_a_lake_whose_header_is_lost(local_lake_url: str, tmp_path: Path) -> None:
    """The header a push would rewrite is only described: still absent afterwards."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"a" * 10_000)
    with ckptlake.open(local_lake_url) as lake:
        lake.push(src, "run/ckpt")
    header = Path(local_lake_url[len("file://"):]) / "ckptlake.json"
    assert header.is_file()
    header.unlink()
    r = cli("--lake", local_lake_url, "push", src, "run/ckpt", "--dry-run", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["version"] == 2 and doc["bytes_uploaded"] == 0
    assert any("header" in w and "is lost" in w for w in doc["warnings"]), doc["warnings"]
    assert not header.exists()


def test_dry_run_of_one_file(local_lake_url: str, tmp_path: Path) -> None:
    f = tmp_path / "model.bin"
    f.write_bytes(bytes(range(256)) * 400)
    with ckptlake.open(local_lake_url) as lake:
        plan = lake.push(f, "run/model", dry_run=True, metrics={"acc": 0.5})
        assert (plan.dry_run, plan.version, plan.files, plan.bytes_uploaded) == \
            (True, 1, 1, 102400)
        assert lake.artifacts() == []
        done = lake.push(f, "run/model")
        assert (done.version, done.bytes_sent) == (1, plan.bytes_sent)
        again = lake.push(f, "run/model", dry_run=True)
        assert (again.version, again.bytes_uploaded, again.bytes_deduplicated) == (2, 0, 102400)


def test_dry_run_refuses_gc_settings_the_commit_would_refuse(local_lake_url: str,
                                                             tmp_path: Path) -> None:
    """The commit's guard refuses a damaged gc/settings.json: the dry run said exit 0, and the
    push itself refused only after uploading every chunk (left for gc, which refuses the same
    file).  Both refuse now, before anything is sent."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"a" * 10_000)
    with ckptlake.open(local_lake_url) as lake:
        lake.push(src, "run/ckpt")
        lake.store.put("gc/settings.json", b'{"bad": 1}')
        (src / "b.bin").write_bytes(b"b" * 10_000)
        before = objects(local_lake_url)
        with pytest.raises(ckptlake.IntegrityError, match="gc/settings.json"):
            lake.push(src, "run/ckpt", dry_run=True)
        with pytest.raises(ckptlake.IntegrityError, match="gc/settings.json"):
            lake.push(src, "run/ckpt")
        with pytest.raises(ckptlake.IntegrityError, match="gc/settings.json"):
            lake.writer("run/one", "w.bin")
        assert objects(local_lake_url) == before, "a chunk was sent before the refusal"
    r = cli("--lake", local_lake_url, "push", src, "run/ckpt", "--dry-run")
    assert r.exit_code == 5, r.stderr


def test_dry_run_to_a_local_path_that_is_a_file(tmp_path: Path) -> None:
    """No lake there yet, and none can ever be: the push says so (exit 2), and so must the dry
    run, not "the push would create it"."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"a")
    afile = tmp_path / "afile"
    afile.write_text("hi")
    for extra in (["--dry-run"], []):
        r = cli("--lake", f"file://{afile}", "push", src, "q", *extra)
        assert r.exit_code == 2 and "is a file" in r.stderr, (extra, r.stderr)
    r = cli("--lake", f"file://{afile}/sub", "push", src, "q", "--dry-run")
    assert r.exit_code == 2 and "is a file" in r.stderr, r.stderr
    assert afile.read_text() == "hi"

