"""Follow-ups to the audit of sources, replicas, cat, ls and the cache (fd39596, bbc4d8c,
edf9834, 21e7a1e): replicas on another server, a lake reached through --follow-symlinks, the
--exclude a message suggests, cat reading paths as lake.open does, ls escaping format
characters, and cache prune saying that it waits."""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ckptlake.core.cache as cache_mod
from ckptlake.cli.app import app
from ckptlake.cli.ls import shown_name
from ckptlake.core.cache import ChunkCache
from ckptlake.core.scan import exclude_pattern, lake_inside, scan
from ckptlake.errors import EXIT_USAGE, NotFound, UsageError
from ckptlake.lake import Lake
from ckptlake.policy.replicas import ReplicaSpec, check_not_origin, overlap, same_location
from ckptlake.store.memory import MemoryStore


# ---- 3. a replica on another server, same bucket name -------------------------------------

def test_a_replica_on_another_server_may_share_the_lakes_bucket_name(tmp_path: Path) -> None:
    from ckptlake.policy.config import load_config
    from ckptlake.policy.replicas import load_replicas

    cfg = tmp_path / "ckptlake.yaml"
    cfg.write_text("lake: s3://ml-ckpts\nreplicas:\n  - name: eu\n    url: s3://ml-ckpts/eu\n"
                   "    region: eu-west-1\n    endpoint_url: http://127.0.0.1:9\n")
    assert [s.name for s in load_replicas(load_config(str(cfg)))] == ["eu"]
    spec = ReplicaSpec(name="eu", url="s3://ml-ckpts/eu", region="eu-west-1",
                       endpoint_url="http://127.0.0.1:9")
    check_not_origin(spec, "s3://ml-ckpts", None)  # the lake at AWS, the replica elsewhere
    assert overlap("s3://bkt/x", None, "s3://bkt", "http://minio:9000") is None
    assert not same_location("s3://bkt", "http://minio:9000", "s3://bkt", None)


def test_a_replica_on_the_lakes_server_is_still_refused_however_it_is_spelled() -> None:
    inherits = ReplicaSpec(name="eu", url="s3://bkt/lake/sub", region="eu-west-1")
    with pytest.raises(UsageError) as err:  # no endpoint_url: the lake's
        check_not_origin(inherits, "s3://bkt/lake", "http://minio:9000")
    assert err.value.exit_code == EXIT_USAGE
    spelled = ReplicaSpec(name="eu", url="s3://bkt/lake/sub", region="eu-west-1",
                          endpoint_url="HTTP://Minio:9000/")
    with pytest.raises(UsageError):
        check_not_origin(spelled, "s3://bkt/lake", "http://minio:9000")
    assert same_location("s3://bkt", "https://s3.example", "s3://bkt", "https://S3.example:443")


# ---- 5. a local lake reached through --follow-symlinks ------------------------------------

def test_scan_refuses_a_lake_reached_through_a_followed_symlink(tmp_path: Path) -> None:
    far = tmp_path / "far"
    lake_dir = far / "lakeX"
    (lake_dir / "chunks").mkdir(parents=True)
    (lake_dir / "chunks" / "c").write_text("chunk")
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_text("w")
    os.symlink(lake_dir, src / "lk")
    with pytest.raises(UsageError) as err:
        scan(src, follow_symlinks=True, avoid=str(lake_dir))
    assert "lk/" in err.value.message and str(lake_dir) in err.value.message
    assert "--exclude /lk/" in (err.value.hint or "")
    os.unlink(src / "lk")
    (far / "data.bin").write_text("d")
    os.symlink(far, src / "up")  # the lake below a followed directory
    with pytest.raises(UsageError, match="up/lakeX/"):
        scan(src, follow_symlinks=True, avoid=str(lake_dir))
    tree = scan(src, follow_symlinks=True, avoid=str(lake_dir), exclude=("/up/lakeX/",))
    assert {f.path for f in tree.files} == {"w.bin", "up/data.bin"}
    assert scan(lake_dir, avoid=str(lake_dir)).files  # SOURCE in the lake: not this check


# ---- 6. the --exclude a message suggests ---------------------------------------------------

def test_the_suggested_exclude_is_anchored_and_glob_escaped(tmp_path: Path) -> None:
    assert exclude_pattern("sub/lake[1]") == "/sub/lake[[]1]/"
    assert exclude_pattern("a*b?") == "/a[*]b[?]/"
    src = tmp_path / "src"
    for d in ("sub/lake[1]", "sub/lake1", "other/sub/lake[1]", "lake[1]"):
        (src / d).mkdir(parents=True)
        (src / d / "f").write_text(d)
    lake = src / "sub" / "lake[1]"
    pattern = exclude_pattern(lake_inside(src, str(lake)))  # type: ignore[arg-type]
    assert lake_inside(src, str(lake), (pattern,)) is None
    kept = {f.path for f in scan(src, exclude=(pattern,)).files}
    assert kept == {"sub/lake1/f", "other/sub/lake[1]/f", "lake[1]/f"}


# ---- 7. cat reads a path as lake.open does -------------------------------------------------

def test_cat_follows_the_versions_directory_links_as_open_does(tmp_path: Path) -> None:
    lake = Lake(MemoryStore(), chunk_size=1 << 20, concurrency=2)
    src = tmp_path / "s"
    (src / "step1" / "sub").mkdir(parents=True)
    (src / "step1" / "f").write_text("F")
    (src / "g").write_text("G")
    os.symlink("step1", src / "cur")
    os.symlink("g", src / "gl")
    lake.push(src, "t")
    for path, want in (("cur/../g", "G"), ("cur/f", "F"), ("cur/sub/../f", "F"),
                       ("./cur/./f", "F")):
        assert b"".join(lake.cat("t", path)) == want.encode(), path
        with lake.open("t", path) as fh:
            assert fh.read() == want.encode()
    for path, hint in (("cur", "ckptlake ls t@v1 step1"), ("cur/", "ckptlake ls t@v1 step1"),
                       ("gl", "ckptlake cat t@v1 g")):
        # ends at a link: its target is the hint (ls for a directory: cat of it fails)
        with pytest.raises(UsageError, match="is a symlink") as err:
            lake.cat("t", path)
        assert hint in (err.value.hint or ""), path
    with pytest.raises(UsageError, match="is a directory"):
        lake.cat("t", "cur/.")
    with pytest.raises(NotFound, match="step1/nope"):
        lake.cat("t", "cur/nope")


# ---- 8. ls escapes every character that is not printable ---------------------------------

def test_ls_escapes_format_characters_but_not_spaces(tmp_path: Path) -> None:
    assert shown_name("a\u202eb c") == "a\\u202eb c"
    assert shown_name("zw\u200bj\ufeff") == "zw\\u200bj\\ufeff"
    assert shown_name("plain name.bin") == "plain name.bin"
    # a backslash too (as `ls -b`): "new\\nline" and "new<LF>line" looked the same (a review)
    assert shown_name("new\\nline") == "new\\\\nline" and shown_name("new\nline") == "new\\nline"
    src = tmp_path / "s"
    src.mkdir()
    (src / "evil\u202etxt.exe").write_text("1")
    lake = str(tmp_path / "lake")
    assert CliRunner().invoke(app, ["push", str(src), "t", "--lake", lake]).exit_code == 0
    r = CliRunner().invoke(app, ["ls", "t@v1", "--lake", lake])
    assert r.exit_code == 0 and "\u202e" not in r.stdout and "evil\\u202etxt.exe" in r.stdout
    r = CliRunner().invoke(app, ["ls", "t@v1", "--lake", lake, "--json"])
    assert [f["path"] for f in json.loads(r.stdout)["files"]] == ["evil\u202etxt.exe"]


# ---- 9. cache prune says that it waits for another evictor -------------------------------

def test_cache_prune_says_it_waits_for_the_eviction_lock(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cache_dir = tmp_path / "c"
    ChunkCache(cache_dir, 1 << 20).put("sha256", "0" * 64, b"x")
    monkeypatch.setattr(cache_mod, "_EVICT_WAIT", 0.2)
    fd = os.open(cache_dir / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        res = CliRunner().invoke(app, ["cache", "prune", "--all", "--dir", str(cache_dir)],
                                 env={"CKPTLAKE_CACHE": "", "CKPTLAKE_CONFIG": ""})
    finally:
        os.close(fd)
    assert res.exit_code == 6, res.output
    assert res.stderr.count("waiting for another process") == 1, res.stderr
    res = CliRunner().invoke(app, ["cache", "prune", "--all", "--dir", str(cache_dir)],
                             env={"CKPTLAKE_CACHE": "", "CKPTLAKE_CONFIG": ""})
    assert res.exit_code == 0 and "waiting" not in res.stderr, res.output


def test_push_refuses_a_lake_reached_through_a_followed_link_and_hints_an_anchored_exclude(
        tmp_path: Path) -> None:
    """End to end (Lake.push passes the lake's directory to scan): --follow-symlinks pushed a
    linked local lake into itself; the lake-inside-SOURCE hint is anchored and escaped."""
    lake_dir = tmp_path / "lake[1]"
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w")
    runner = CliRunner()
    assert runner.invoke(app, ["--lake", str(lake_dir), "push", str(src), "a/b"]).exit_code == 0
    (src / "lk").symlink_to(lake_dir)
    r = runner.invoke(app, ["--lake", str(lake_dir), "push", str(src), "a/b",
                            "--follow-symlinks"])
    assert r.exit_code == 2, r.output
    inside = tmp_path / "src2"
    inside.mkdir()
    (inside / "w.bin").write_bytes(b"w")
    r = runner.invoke(app, ["--lake", str(inside / "lake[1]"), "push", str(inside), "a/b"])
    assert r.exit_code == 2 and "--exclude '/lake[[]1]/'" in r.stderr, r.stderr
