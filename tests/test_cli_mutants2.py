"""CLI checks and pass-throughs a mutation-testing review of ckptlake/cli/*.py found no test
holding: each test here fails if the line it names is dropped or switched off.

Usage errors run with `no_open` (refused before the lake is opened); the rest run on local
(file://) lakes and file:// replicas, in process."""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest

import ckptlake
from ckptlake import errors
from test_cache import ART as CACHE_ART
from test_cache import entry_files, setup  # noqa: F401  (fixture)
from test_cli import OpenSpy, fake, no_open, run, src  # noqa: F401  (fixtures)

MiB = 1 << 20


# ---- helpers ------------------------------------------------------------------------------

@pytest.fixture
def lake(tmp_path: Path) -> str:
    return (tmp_path / "lake").as_uri()


def make_src(root: Path, size: int = 64 * 1024, seed: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "w.bin").write_bytes(random.Random(seed).randbytes(size))
    return root


def versions_of(url: str, artifact: str) -> list[int]:
    with ckptlake.open(url) as lk:
        try:
            return [v.version for v in lk.versions(artifact)]
        except errors.NotFound:
            return []


def replica_cfg(tmp_path: Path, *, client_region: str | None = None) -> Path:
    """A config with replica eu (a file:// directory, eu-west-1); the client's region set
    only when asked (else no replica is chosen by default)."""
    body = (f"replicas:\n  - name: eu\n    url: {(tmp_path / 'eu').as_uri()}\n"
            "    region: eu-west-1\n")
    if client_region:
        body += f"egress:\n  client_region: {client_region}\n"
    cfg = tmp_path / "ckptlake.yaml"
    cfg.write_text(body)
    return cfg


def replica_files(tmp_path: Path) -> list[Path]:
    root = tmp_path / "eu" / "chunks"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture(autouse=True)
def _no_ambient_region(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "CKPTLAKE_CACHE", "CKPTLAKE_CACHE_SIZE",
                 "CKPTLAKE_CONFIG", "CKPTLAKE_LAKE"):
        monkeypatch.delenv(name, raising=False)


# ---- push: option combinations refused before the lake is opened ---------------------------

def test_push_shard_with_parent_is_refused(no_open: None, src: Path) -> None:
    """A sharded push does not record lineage yet: --parent with --shard would commit a
    version silently missing the parent the user named."""
    r = run("push", src, "a/b", "--shard", "0/1", "--step", "1", "--parent", "a/base@v1")
    assert r.exit_code == 2, r.stderr
    assert "cannot be combined with --shard" in r.stderr


def test_push_shard_with_hash_is_refused(no_open: None, src: Path) -> None:
    """A sharded push cannot pick the lake's hash: --hash sha256 would be ignored and the lake
    created with blake3 where SHA-256 keys were required."""
    r = run("push", src, "a/b", "--shard", "0/1", "--step", "1", "--hash", "sha256")
    assert r.exit_code == 2, r.stderr
    assert "--hash cannot be combined with --shard" in r.stderr


def test_push_relation_without_parent_is_refused(no_open: None, src: Path) -> None:
    """--relation alone describes nothing: silently dropping it loses the lineage the user
    thought they recorded."""
    r = run("push", src, "a/b", "--relation", "resumed-from")
    assert r.exit_code == 2, r.stderr
    assert "--relation applies to --parent" in r.stderr


def test_push_the_lake_itself_says_so(tmp_path: Path, lake: str) -> None:
    """Pushing the lake's own directory: the message says it IS the source (push the
    checkpoint's directory), not a confusing "inside SOURCE (at ./)" with an --exclude hint."""
    assert run("push", make_src(tmp_path / "s"), "x/y", "--lake", lake, "-q").exit_code == 0
    r = run("push", tmp_path / "lake", "a/b", "--lake", lake)
    assert r.exit_code == 2, r.stderr
    assert "is SOURCE itself" in r.stderr and "inside SOURCE" not in r.stderr
    assert versions_of(lake, "a/b") == []


def test_push_meta_wins_over_meta_file(fake: OpenSpy, src: Path, tmp_path: Path) -> None:
    """--meta on the command line overrides the same key of --meta-file (the help says so):
    else a per-run override of a shared params file is silently lost."""
    mf = tmp_path / "params.yaml"
    mf.write_text("k: file\nother: kept\n")
    r = run("push", src, "a/b", "--meta-file", mf, "--meta", "k=cli")
    assert r.exit_code == 0, r.stderr
    [(_, _, pkw)] = fake.lake.calls
    assert pkw["metadata"]["k"] == "cli" and pkw["metadata"]["other"] == "kept"


# ---- other usage errors -------------------------------------------------------------------

def test_alias_delete_of_a_version_is_refused(no_open: None) -> None:
    """alias --delete takes an artifact: a@v1 would remove the alias whatever version it names,
    not only "if it is v1" as the user may think."""
    r = run("alias", "--delete", "a/b@v1", "best")
    assert r.exit_code == 2, r.stderr
    assert "takes an artifact, not a version" in r.stderr


def test_du_bad_sort_is_refused(no_open: None) -> None:
    """A typo in --sort is exit 2 at once, not a scan of the whole lake first."""
    r = run("du", "--sort", "bogus")
    assert r.exit_code == 2, r.stderr
    assert "--sort 'bogus'" in r.stderr


def test_lineage_up_and_down_is_refused(no_open: None) -> None:
    """--up --down: one direction would be silently dropped; --both is the way."""
    r = run("lineage", "a/b@v1", "--up", "--down")
    assert r.exit_code == 2, r.stderr
    assert "at most one of --up, --down and --both" in r.stderr


# ---- cache ------------------------------------------------------------------------------

def test_cache_prune_max_size_and_all_is_refused(setup: Any, tmp_path: Path) -> None:
    """--max-size with --all is ambiguous: taking --all would empty a cache the user meant to
    trim to 5 GiB."""
    lk, _, _, cache_dir = setup
    lk.pull(CACHE_ART, tmp_path / "out")
    before = {p: p.read_bytes() for p in entry_files(cache_dir)}
    assert before
    r = run("cache", "prune", "--max-size", "5GiB", "--all", "--dir", cache_dir)
    assert r.exit_code == 2, r.stderr
    assert "give --max-size or --all, not both" in r.stderr
    assert {p: p.read_bytes() for p in entry_files(cache_dir)} == before


def test_cache_ls_dir_keeps_the_configured_size(tmp_path: Path) -> None:
    """cache ls --dir reports the bound the config sets (cache: size:), not the default."""
    d = tmp_path / "cache"
    d.mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"cache:\n  dir: {d}\n  size: 1MiB\n")
    r = run("cache", "ls", "--dir", d, "--json", "--config", cfg)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["max_size"] == MiB


# ---- watch -------------------------------------------------------------------------------

def test_watch_passes_exclude_through(tmp_path: Path, lake: str) -> None:
    """watch --exclude leaves the matching files out of the version (a temp file, a huge
    optimizer state the user chose not to store), and a glob matching nothing in a checkpoint
    is not reported (README: one meant for a single checkpoint matches nothing in others)."""
    d = tmp_path / "ckpts"
    for step, extra in ((1, "x.tmp"), (2, None)):
        c = make_src(d / f"step_{step}", seed=step)
        if extra:
            (c / extra).write_bytes(b"scratch")
    r = run("watch", d, "a/b", "--once", "--settle", "0", "--exclude", "*.tmp",
            "--exclude", "nothing-*", "--lake", lake, "--json")
    assert r.exit_code == 0, r.stderr
    docs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [d["checkpoint"] for d in docs] == ["step_1", "step_2"]
    assert not [w for d in docs for w in d["warnings"] if "matched nothing" in w], docs
    assert "matched nothing" not in r.stderr
    with ckptlake.open(lake) as lk:
        assert [f["path"] for f in lk.files("a/b@v1")["files"]] == ["w.bin"]


# ---- replicas ----------------------------------------------------------------------------

def test_replicate_verify_repairs_a_bad_copy(tmp_path: Path, lake: str) -> None:
    """replicate --verify reads back what the replica holds and replaces a corrupt copy:
    without it a bad copy of the same size is never noticed until a pull fails over."""
    cfg = replica_cfg(tmp_path)
    assert run("push", make_src(tmp_path / "s", 3 * MiB), "m/a", "--chunk-size", "1MiB",
               "--lake", lake, "-q").exit_code == 0
    assert run("replicate", "m/a", "--to", "eu", "--lake", lake, "--config", cfg,
               "-q").exit_code == 0
    victim = replica_files(tmp_path)[0]
    good = victim.read_bytes()
    victim.write_bytes(bytes(len(good)))
    r = run("replicate", "m/a", "--to", "eu", "--verify", "--json", "--lake", lake,
            "--config", cfg)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["chunks_repaired"] == 1
    assert victim.read_bytes() == good


def test_pull_estimate_honours_replica(tmp_path: Path, lake: str) -> None:
    """pull --estimate --replica NAME|none prices the route the pull would take with that
    choice, not the default one."""
    assert run("push", make_src(tmp_path / "s"), "m/a", "--lake", lake, "-q").exit_code == 0
    for region in (None, "eu-west-1"):  # default: no replica, then replica eu
        cfg = replica_cfg(tmp_path, client_region=region)
        docs = {}
        for choice in ("eu", "none"):
            r = run("pull", "m/a", tmp_path / "o", "--estimate", "--json", "--replica",
                    choice, "--lake", lake, "--config", cfg)
            assert r.exit_code == 0, r.stderr
            docs[choice] = json.loads(r.stdout)
        assert [s["source"] for s in docs["eu"]["sources"]][:1] == ["replica eu"], docs
        assert docs["none"]["sources"] == [], docs


def test_cat_honours_replica(tmp_path: Path, lake: str) -> None:
    """cat --replica eu reads through (and fills) the replica; --replica none never touches
    it, even where it is the default choice."""
    assert run("push", make_src(tmp_path / "s"), "m/a", "--lake", lake, "-q").exit_code == 0
    want = (tmp_path / "s" / "w.bin").read_bytes()
    r = run("cat", "m/a", "w.bin", "--replica", "none", "--lake", lake,
            "--config", replica_cfg(tmp_path, client_region="eu-west-1"))
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes == want and replica_files(tmp_path) == []
    r = run("cat", "m/a", "w.bin", "--replica", "eu", "--lake", lake,
            "--config", replica_cfg(tmp_path))
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes == want and replica_files(tmp_path) != []


# ---- cat ---------------------------------------------------------------------------------

def test_cat_json_error_after_bytes_stays_off_stdout(tmp_path: Path, lake: str) -> None:
    """Once cat has written part of the file, a corrupt later chunk is exit 5 with the error
    on stderr only: a JSON error document appended to stdout would read as the file's tail."""
    s = tmp_path / "s"
    s.mkdir()
    data = random.Random(5).randbytes(2 * MiB)
    (s / "w.bin").write_bytes(data)
    assert run("push", s, "m/a", "--chunk-size", "1MiB", "--hash", "sha256",
               "--compression", "none", "--lake", lake, "-q").exit_code == 0
    second = hashlib.sha256(data[MiB:]).hexdigest()
    [victim] = [p for p in (tmp_path / "lake" / "chunks").rglob("*")
                if p.is_file() and second in p.name]
    raw = bytearray(victim.read_bytes())
    raw[-1] ^= 0xFF
    victim.write_bytes(bytes(raw))
    r = run("cat", "m/a", "w.bin", "--json", "--lake", lake)
    assert r.exit_code == 5, r.stderr
    assert r.stdout_bytes == data[:MiB]
    assert b'{"error"' not in r.stdout_bytes
    assert r.stderr.strip()


# ---- verify / pull document fields ------------------------------------------------------

def test_verify_seed_is_used(tmp_path: Path, lake: str) -> None:
    """--seed makes --read-data-subset repeatable: the seed given is the one used (and
    reported), so a second run reads the same chunks."""
    assert run("push", make_src(tmp_path / "s"), "m/a", "--lake", lake, "-q").exit_code == 0
    r = run("verify", "--read-data-subset", "50%", "--seed", "7", "--json", "--lake", lake)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["seed"] == 7


def test_pull_estimate_destination_is_absolute(tmp_path: Path, lake: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The estimate's destination is absolute, as the pull's own document has it: a script
    comparing the two (or run from another directory) gets the same path."""
    assert run("push", make_src(tmp_path / "s"), "m/a", "--lake", lake, "-q").exit_code == 0
    monkeypatch.chdir(tmp_path)
    r = run("pull", "m/a", "rel/dir", "--estimate", "--json", "--lake", lake)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["destination"] == str(tmp_path / "rel" / "dir")


# ---- options passed through to ckptlake.open ---------------------------------------------

@pytest.mark.parametrize("args, want", [
    (["pull", "a/b", "d", "--concurrency", "3", "--max-bandwidth", "10MiB"],
     {"concurrency": 3, "max_bandwidth": 10 * MiB}),
    (["verify", "--concurrency", "3", "--max-bandwidth", "10MiB"],
     {"concurrency": 3, "max_bandwidth": 10 * MiB}),
    (["replicate", "a/b", "--to", "eu", "--concurrency", "3"], {"concurrency": 3}),
])
def test_transfer_options_reach_the_lake(fake: OpenSpy, args: list[str],
                                         want: dict[str, Any]) -> None:
    """--concurrency and --max-bandwidth bound what a command does to the network: dropped,
    a pull saturates a shared link the user meant to cap."""
    fake.error = errors.NotFound("stop here")
    r = run(*args)
    assert r.exit_code == 3, r.stderr
    [(_, kwargs)] = fake.calls
    assert {k: kwargs[k] for k in want} == want


# ---- minor -------------------------------------------------------------------------------

def test_du_warns_of_missing_chunks(tmp_path: Path, lake: str) -> None:
    """du says when manifests reference chunks the listing lacks (a damaged lake, whose
    sizes are then wrong): the pointer to verify is the user's only hint."""
    assert run("push", make_src(tmp_path / "s"), "m/a", "--lake", lake, "-q").exit_code == 0
    [chunk] = [p for p in (tmp_path / "lake" / "chunks").rglob("*") if p.is_file()]
    chunk.unlink()
    r = run("du", "--lake", lake)
    assert r.exit_code == 0, r.stderr
    assert "1 reference to chunks the listing does not have" in r.stderr
    assert "ckptlake verify" in r.stderr


def test_alias_listing_is_sorted_by_alias(tmp_path: Path, lake: str) -> None:
    """`alias ARTIFACT` lists by alias name, whatever versions they point at: a script
    diffing two listings sees no spurious change."""
    for seed in (1, 2):
        assert run("push", make_src(tmp_path / f"s{seed}", seed=seed), "m/a", "--lake", lake,
                   "-q").exit_code == 0
    assert run("alias", "m/a@v1", "zeta", "--lake", lake, "-q").exit_code == 0
    assert run("alias", "m/a@v2", "alpha", "--lake", lake, "-q").exit_code == 0
    r = run("alias", "m/a", "--json", "--lake", lake)
    assert r.exit_code == 0, r.stderr
    assert [(a["alias"], a["version"]) for a in json.loads(r.stdout)["aliases"]] == [
        ("alpha", 2), ("zeta", 1)]
    human = run("alias", "m/a", "--lake", lake).stdout
    assert human.index("alpha") < human.index("zeta")
