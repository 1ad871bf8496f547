"""`cp` / Lake.copy: a version copied into another lake, or under another name in one lake.

What must hold: the copy pulls back byte for byte with the version's own fields; only the
chunks the destination lacks are written, each verified first (a corrupt one is refused and
nothing is committed); a lake that hashes chunks differently goes through a local copy; a
`compression: none` lake gets raw chunks; the egress guard prices what is read; the command
line refuses what it can before opening a lake.
"""
from __future__ import annotations

import json
import random
import struct
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core.copy import _Copier
from ckptlake.core.lakeheader import read_header
from ckptlake.errors import IntegrityError, NotFound, PolicyRefusal, UsageError
from ckptlake.format import layout
from ckptlake.format.header import digest
from ckptlake.policy.egress import EgressPolicy
from ckptlake.transfer.progress import NullProgress

from test_cli import no_open  # noqa: F401  (fixture: usage errors never open the lake)

MiB = 1 << 20


def cli(*args: object) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def make_src(root: Path, seed: int = 0) -> Path:
    """Float weights (stored encoded), random bytes (stored raw), small files (one pack), an
    empty directory."""
    rng = random.Random(seed)
    (root / "sub").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "weights.bin").write_bytes(
        b"".join(struct.pack("<f", rng.gauss(0, 0.02)) for _ in range(400_000)))
    (root / "noise.bin").write_bytes(rng.randbytes(3 * MiB))
    (root / "sub" / "config.json").write_text(json.dumps({"seed": seed}))
    (root / "sub" / "vocab.txt").write_text("a\nb\nc\n")
    return root


def tree(root: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = p.read_bytes() if p.is_file() else None
    return out


def chunk_keys(lake: ckptlake.Lake) -> set[str]:
    return {o.key for o in lake.store.list("chunks/")}


def damaged_lake(root: Path, a: ckptlake.Lake, src: Path) -> ckptlake.Lake:
    """A lake holding every chunk of a's run/x (pushed as `other`), each object cut to half."""
    b = ckptlake.open("file://" + root.as_posix())
    b.push(src, "other")
    for d in a._manifest("run/x").chunk_digests():
        key = layout.chunk_key(d)
        body = b.store.get(key)
        b.store.put(key, body[:len(body) // 2])
    return b


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_src(tmp_path / "src")


@pytest.fixture
def a(tmp_path: Path, src: Path) -> ckptlake.Lake:
    lake = ckptlake.open("file://" + (tmp_path / "a").as_posix())
    lake.push(src, "run/x", step=700, metrics={"loss": 0.25}, metadata={"team": "nlp"},
              inputs=["s3://data/train#sha256:" + "0" * 64],
              provenance={"git_commit": "abc123"})
    return lake


def test_a_copy_into_another_lake_pulls_back_with_its_fields(
        a: ckptlake.Lake, src: Path, lake_url: str, tmp_path: Path) -> None:
    b = ckptlake.open(lake_url)
    r = a.copy("run/x", b, aliases=["prod"])
    assert (r.to_lake, r.to_artifact, r.to_version, r.aliases) == (b.url, "run/x", 1, ["prod"])
    assert r.chunks_copied == r.chunks > 0 and r.chunks_present == 0 and not r.rechunked
    m = a._manifest("run/x")
    assert r.bytes_copied == m.stored_bytes  # encoded chunks travel encoded
    assert r.bytes_stored == m.stored_bytes < m.total_bytes
    b.pull("run/x@prod", tmp_path / "out")
    assert tree(tmp_path / "out") == tree(src)
    d = b.show("run/x@prod")
    assert (d.step, d.metrics, d.metadata) == (700, {"loss": 0.25}, {"team": "nlp"})
    assert d.inputs == list(m.inputs) and d.parents == []  # run/x's parents are a's, not b's
    assert d.provenance["git_commit"] == "abc123"
    assert d.provenance["copied_from"] == {
        "lake": a.url, "artifact": "run/x", "version": 1,
        "created": m.created.isoformat().replace("+00:00", "Z")}
    assert read_header(b.store).hash == m.hash  # a new lake gets the source's hash

    # again: nothing left to write, a second version
    again = a.copy("run/x", b)
    assert (again.to_version, again.chunks_copied, again.bytes_copied) == (2, 0, 0)
    assert again.chunks_present == r.chunks


def test_a_copy_out_of_an_s3_lake(s3_lake_url: str, src: Path, tmp_path: Path) -> None:
    s3 = ckptlake.open(s3_lake_url)
    s3.push(src, "m", step=3)
    local = ckptlake.open("file://" + (tmp_path / "l").as_posix())
    r = s3.copy("m", local, "copied/m")
    assert r.to_version == 1 and r.chunks_copied == r.chunks
    local.pull("copied/m", tmp_path / "out")
    assert tree(tmp_path / "out") == tree(src)


def test_between_two_lakes_on_one_s3_server_the_server_copies_the_chunks(
        s3_lake_url: str, src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each chunk is read and verified here, then copied by the server (CopyObject with the
    ETag read): no chunk byte is uploaded by the client, as with s5cmd or aws s3 cp between
    buckets."""
    from ckptlake.store.s3 import S3Store

    a = ckptlake.open(s3_lake_url + "/a")
    a.push(src, "m", step=9)
    real_put = S3Store.put

    def no_chunk_puts(self: S3Store, key: str, data: Any, **kw: Any) -> str:
        assert not key.startswith("chunks/"), f"chunk {key} was uploaded, not copied"
        return real_put(self, key, data, **kw)

    monkeypatch.setattr(S3Store, "put", no_chunk_puts)
    b = ckptlake.open(s3_lake_url + "/b")
    r = a.copy("m", b, aliases=["prod"])
    assert r.chunks_copied == r.chunks and r.bytes_copied == a._manifest("m").stored_bytes
    monkeypatch.setattr(S3Store, "put", real_put)
    b.pull("m@prod", tmp_path / "out")
    assert tree(tmp_path / "out") == tree(src)
    assert b._manifest("m").stored == a._manifest("m").stored

    # a source object replaced between the read and the copy (ETag changed): the bytes read
    # and verified are written instead, not whatever the source holds now
    c = ckptlake.open(s3_lake_url + "/c")
    d = sorted(a._manifest("m").chunk_digests())[0]
    real_get = S3Store.get_with_etag

    def stale_etag(self: S3Store, key: str) -> tuple[bytes, str]:
        data, _etag = real_get(self, key)
        return data, '"0123456789abcdef0123456789abcdef"'

    puts: list[str] = []

    def counted(self: S3Store, key: str, data: Any, **kw: Any) -> str:
        puts.append(key)
        return real_put(self, key, data, **kw)

    monkeypatch.setattr(S3Store, "get_with_etag", stale_etag)
    monkeypatch.setattr(S3Store, "put", counted)
    r = a.copy("m", c)
    assert r.chunks_copied == r.chunks
    assert sorted(k for k in puts if k.startswith("chunks/")) == sorted(
        layout.chunk_key(x) for x in a._manifest("m").chunk_digests())
    monkeypatch.setattr(S3Store, "get_with_etag", real_get)
    assert c.store.get(layout.chunk_key(d)) == a.store.get(layout.chunk_key(d))
    c.pull("m", tmp_path / "out2")
    assert tree(tmp_path / "out2") == tree(src)


def test_within_one_lake_it_writes_no_chunk_and_is_a_child(a: ckptlake.Lake) -> None:
    before = chunk_keys(a)
    r = a.copy("run/x@v1", artifact="models/x", aliases=["candidate"])
    assert (r.to_lake, r.to_artifact, r.chunks_copied, r.bytes_copied) == \
        (a.url, "models/x", 0, 0)
    assert chunk_keys(a) == before
    assert a._manifest("models/x@candidate").parents == (
        {"artifact": "run/x", "version": 1, "relation": "derived-from"},)
    # the same lake reached through another handle is still one lake
    other = ckptlake.open(a.url)
    r2 = a.copy("run/x", other, "models/x")
    assert r2.to_version == 2 and r2.chunks_copied == 0
    assert a.show("models/x@v2").parents[0]["artifact"] == "run/x"
    # and onto its own name: the old version becomes the latest again (a rollback)
    r3 = a.copy("run/x@v1", artifact="run/x")
    assert r3.to_version == 2 and a.resolve("run/x").version == 2


def test_a_lake_of_another_hash_gets_it_through_a_local_copy(
        a: ckptlake.Lake, src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # the local copy is made in `tmp`
    c = ckptlake.open("file://" + (tmp_path / "c").as_posix())
    (tmp_path / "seed.txt").write_text("seed")
    c.push(tmp_path / "seed.txt", "seed", hash="sha256")
    r = a.copy("run/x", c, aliases=["prod"])
    assert r.rechunked and r.to_version == 1 and r.aliases == ["prod"]
    assert any("sha256" in w and "local copy" in w for w in r.warnings), r.warnings
    m = c._manifest("run/x@prod")
    assert m.hash == "sha256" and m.step == 700 and m.metrics == {"loss": 0.25}
    assert m.provenance["copied_from"]["lake"] == a.url
    c.pull("run/x", tmp_path / "out")
    assert tree(tmp_path / "out") == tree(src)
    assert not list(tmp.iterdir())  # the local copy is removed


def test_into_a_compression_none_lake_chunks_are_stored_decoded(
        a: ckptlake.Lake, src: Path, tmp_path: Path) -> None:
    m = a._manifest("run/x")
    assert m.stored, "the source must hold encoded chunks for this test to mean anything"
    n = ckptlake.open("file://" + (tmp_path / "n").as_posix())
    (tmp_path / "seed.txt").write_text("seed")
    n.push(tmp_path / "seed.txt", "seed", hash=m.hash, compression="none")
    r = a.copy("run/x", n)
    for d in m.chunk_digests():
        body = n.store.get(layout.chunk_key(d))
        assert digest(m.hash, body) == d  # raw: readable by a ckptlake that knows no frames
    copied = n._manifest("run/x")
    assert copied.stored == {} and r.bytes_stored == sum(copied.raw_sizes().values())
    n.pull("run/x", tmp_path / "out")
    assert tree(tmp_path / "out") == tree(src)


def test_a_corrupt_chunk_is_refused_and_nothing_is_committed(
        a: ckptlake.Lake, tmp_path: Path) -> None:
    m = a._manifest("run/x")
    bad = sorted(m.chunk_digests())[0]
    key = layout.chunk_key(bad)
    body = bytearray(a.store.get(key))
    body[len(body) // 2] ^= 0xFF
    a.store.put(key, bytes(body))
    b = ckptlake.open("file://" + (tmp_path / "b").as_posix())
    with pytest.raises(IntegrityError) as e:
        a.copy("run/x", b)
    assert key in e.value.message and "run/x@v1" in e.value.message
    with pytest.raises(NotFound):
        b.resolve("run/x")
    assert key not in chunk_keys(b)


def test_an_interrupted_copy_commits_nothing_and_a_rerun_copies_the_rest(
        a: ckptlake.Lake, src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = ckptlake.open("file://" + (tmp_path / "b").as_posix())
    m = a._manifest("run/x")
    last = sorted(m.chunk_digests())[-1]
    real_put = type(b.store).put

    def failing(self: Any, key: str, data: Any, **kw: Any) -> str:
        if key == layout.chunk_key(last):
            raise KeyboardInterrupt
        return real_put(self, key, data, **kw)

    monkeypatch.setattr(type(b.store), "put", failing)
    with pytest.raises(KeyboardInterrupt):
        a.copy("run/x", b)
    monkeypatch.setattr(type(b.store), "put", real_put)
    with pytest.raises(NotFound):
        b.resolve("run/x")
    written = chunk_keys(b)
    assert layout.chunk_key(last) not in written
    r = a.copy("run/x", b)
    assert r.to_version == 1 and r.chunks_copied == 1 + (r.chunks - 1 - len(written))
    b.pull("run/x", tmp_path / "out")
    assert tree(tmp_path / "out") == tree(src)


def test_an_empty_object_left_by_a_cut_upload_is_replaced(
        a: ckptlake.Lake, src: Path, tmp_path: Path) -> None:
    b = ckptlake.open("file://" + (tmp_path / "b").as_posix())
    d = sorted(a._manifest("run/x").chunk_digests())[0]
    b.store.put(layout.chunk_key(d), b"")
    r = a.copy("run/x", b)
    assert r.chunks_copied == r.chunks
    assert b.store.stat(layout.chunk_key(d)).size > 0
    b.pull("run/x", tmp_path / "out")
    assert tree(tmp_path / "out") == tree(src)


def test_the_guard_copies_again_what_a_sweep_removed(a: ckptlake.Lake, tmp_path: Path) -> None:
    """What the commit guard calls when a concurrent gc of the destination swept a chunk the
    copy found present: the chunk comes back from the source."""
    b = ckptlake.open("file://" + (tmp_path / "b").as_posix())
    a.copy("run/x", b)
    m = a._manifest("run/x")
    d = sorted(m.chunk_digests())[0]
    b.store.delete([layout.chunk_key(d)])
    copier = _Copier(a.store, b.store, m, concurrency=2, progress=NullProgress(),
                     throttle=None)
    copier.reupload({d})
    assert b.store.get(layout.chunk_key(d)) == a.store.get(layout.chunk_key(d))


def test_egress_above_the_confirmation_threshold_needs_yes(
        s3_lake_url: str, src: Path, tmp_path: Path) -> None:
    s3 = ckptlake.open(s3_lake_url)
    s3.push(src, "m")
    local = ckptlake.open("file://" + (tmp_path / "l").as_posix())
    policy = EgressPolicy(lake_region="us-east-1", client_region="eu-west-1",
                          price_per_gb={"inter_region": 1000.0, "same_region": 0.0,
                                        "internet": 1000.0},
                          confirm_above_usd=0.01)
    seen: list[Any] = []
    priced = s3.estimate_copy("m", local, egress=policy)
    assert priced.needs_confirmation and priced.route == "inter_region"
    with pytest.raises(PolicyRefusal):
        s3.copy("m", local, egress=policy, on_estimate=seen.append)
    assert seen[0].cost_usd == priced.cost_usd
    assert seen and seen[0].operation == "cp" and seen[0].bytes_to_download == \
        s3._manifest("m").stored_bytes
    assert not local.exists()  # refused before anything was written: not even a lake
    r = s3.copy("m", local, egress=policy, yes=True)
    assert r.to_version == 1
    # the same copy again reads nothing: nothing to price
    seen.clear()
    s3.copy("m", local, egress=policy, on_estimate=seen.append)
    assert seen[0].bytes_to_download == 0


def test_library_arguments_are_checked(a: ckptlake.Lake, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="somewhere to go"):
        a.copy("run/x")
    with pytest.raises(UsageError, match="must be a Lake"):
        a.copy("run/x", "file:///tmp/elsewhere")  # type: ignore[arg-type]
    inner = ckptlake.open(a.url + "/inner")
    with pytest.raises(UsageError, match="inside the other"):
        a.copy("run/x", inner)
    assert not inner.exists()


@pytest.mark.usefixtures("no_open")
def test_cli_refuses_before_opening_a_lake() -> None:
    r = cli("cp", "run/x")
    assert r.exit_code == 2 and "--to LAKE_URL" in r.stderr, r.stderr
    r = cli("cp", "run/x", "--to", " ")
    assert r.exit_code == 2 and "--to is empty" in r.stderr, r.stderr
    r = cli("cp", "run/x", "--as", "bad name")
    assert r.exit_code == 2, r.stderr
    r = cli("cp", "run/x@", "--as", "y")
    assert r.exit_code == 2, r.stderr
    r = cli("cp", "run/x", "--as", "y", "--alias", "no/slash")
    assert r.exit_code == 2, r.stderr
    r = cli("cp", "run/x", "--to", "file:///tmp/x", "--to-endpoint-url", "")
    assert r.exit_code == 2 and "--to-endpoint-url is empty" in r.stderr, r.stderr


def test_cli_copies_and_reports_json(a: ckptlake.Lake, src: Path, tmp_path: Path) -> None:
    to = "file://" + (tmp_path / "b").as_posix()
    r = cli("cp", "run/x", "--lake", a.url, "--to", to, "--as", "models/x", "--alias", "prod",
            "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {k: doc[k] for k in ("lake", "artifact", "version", "to_lake", "to_artifact",
                                "to_version", "aliases", "rechunked")} == {
        "lake": a.url, "artifact": "run/x", "version": 1, "to_lake": to,
        "to_artifact": "models/x", "to_version": 1, "aliases": ["prod"], "rechunked": False}
    assert doc["chunks_copied"] == doc["chunks"] > 0 and doc["chunks_present"] == 0
    assert any("created a new lake" in w for w in doc["warnings"])
    r = cli("cp", "run/x", "--lake", a.url, "--to", to)
    assert r.exit_code == 0 and "copied run/x@v1 -> " + to + " run/x@v1" in r.stdout + r.stderr
    r = cli("cp", "run/x", "--lake", a.url, "--to", to, "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["chunks_copied"] == 0 and doc["chunks_present"] == doc["chunks"] > 0
    r = cli("pull", "models/x@prod", tmp_path / "out", "--lake", to, "-q")
    assert r.exit_code == 0 and tree(tmp_path / "out") == tree(src)
    # a missing version, a missing lake: exit 3
    r = cli("cp", "run/x@v9", "--lake", a.url, "--as", "y")
    assert r.exit_code == 3 and "run/x@v9" in r.stderr
    r = cli("cp", "run/x", "--lake", a.url + "-nowhere", "--as", "y")
    assert r.exit_code == 3 and "no lake at" in r.stderr
    r = cli("cp", "run/x", "--lake", a.url, "--to", a.url + "/in")
    assert r.exit_code == 2 and "inside" in r.stderr


def test_damaged_objects_at_the_destination_are_written_over_not_committed_on(
        a: ckptlake.Lake, src: Path, tmp_path: Path) -> None:
    """Push's rule: a raw object cut short, or a frame cut short, is written again (the
    review found a copy committing on top of them, with their cut sizes as `stored` hints)."""
    b = damaged_lake(tmp_path / "b", a, src)
    m = a._manifest("run/x")
    r = a.copy("run/x", b)
    assert r.chunks_repaired == r.chunks_copied == r.chunks and r.chunks_present == 0
    copied = b._manifest("run/x")
    assert copied.stored == m.stored
    b.pull("run/x", tmp_path / "out")
    assert tree(tmp_path / "out") == tree(src)
    b.pull("other", tmp_path / "out2")  # the version the damage hit is whole again too
    assert tree(tmp_path / "out2") == tree(src)


def test_through_a_local_copy_the_provenance_is_the_sources_alone(
        tmp_path: Path, src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The review's case: the push of the temporary copy added this machine's command, host
    and the git state around $TMPDIR to a version pushed without provenance."""
    import subprocess

    a = ckptlake.open("file://" + (tmp_path / "a").as_posix())
    a.push(src, "m", provenance=False)
    repo = tmp_path / "repo"
    (repo / "tmp").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    monkeypatch.setenv("TMPDIR", str(repo / "tmp"))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    c = ckptlake.open("file://" + (tmp_path / "c").as_posix())
    (tmp_path / "seed.txt").write_text("seed")
    c.push(tmp_path / "seed.txt", "seed", hash="sha256")
    r = a.copy("m", c)
    assert r.rechunked
    assert c._manifest("m").provenance == {"copied_from": {
        "lake": a.url, "artifact": "m", "version": 1,
        "created": a._manifest("m").created.isoformat().replace("+00:00", "Z")}}
    assert not list((repo / "tmp").iterdir())


def test_a_chunk_the_guard_copies_again_is_counted_once(
        a: ckptlake.Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk found present, swept by a gc of the destination before the commit and copied
    again by the guard: copied (and recopied), not also present."""
    b = ckptlake.open("file://" + (tmp_path / "b").as_posix())
    a.copy("run/x", b)
    d = sorted(a._manifest("run/x").chunk_digests())[0]

    def swept_then_guarded(self: _Copier) -> None:
        self.dst.delete([layout.chunk_key(d)])
        self.reupload({d})

    monkeypatch.setattr(_Copier, "before_commit", swept_then_guarded)
    r = a.copy("run/x", b)
    assert (r.chunks_copied, r.chunks_recopied, r.chunks_present) == (1, 1, r.chunks - 1)
    assert b.store.stat(layout.chunk_key(d)).size > 0


def test_a_copy_that_fails_on_its_first_chunk_leaves_no_lake(
        tmp_path: Path) -> None:
    a = ckptlake.open("file://" + (tmp_path / "a").as_posix())
    (tmp_path / "one.bin").write_bytes(random.Random(1).randbytes(1000))
    a.push(tmp_path / "one.bin", "m")
    (d,) = a._manifest("m").chunk_digests()
    a.store.put(layout.chunk_key(d), b"x" * 1000)
    b = ckptlake.open("file://" + (tmp_path / "b").as_posix())
    with pytest.raises(IntegrityError):
        a.copy("m", b)
    assert not b.exists() and not (tmp_path / "b").exists()


def test_chunks_in_flight_are_bounded_by_memory_not_only_by_concurrency(
        a: ckptlake.Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lake of 1 GiB chunks copied 8 at a time would hold ~16 GiB (each chunk and its decoded
    bytes): the workers are cut to what COPY_MEMORY holds."""
    import threading

    from ckptlake.core import copy as copy_mod

    largest = max(a._manifest("run/x").raw_sizes().values())
    monkeypatch.setattr(copy_mod, "COPY_MEMORY", 2 * largest)  # room for one chunk
    active, peak, lock = [0], [0], threading.Lock()
    real = _Copier.copy

    def counting(self: _Copier, d: str, **kw: Any) -> int:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            import time
            time.sleep(0.05)  # widen the window in which two would overlap
            return real(self, d, **kw)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(_Copier, "copy", counting)
    b = ckptlake.open("file://" + (tmp_path / "b").as_posix(), concurrency=8)
    r = a.copy("run/x", b)
    assert r.chunks_copied == r.chunks >= 3 and peak[0] == 1


def test_estimate_says_what_the_copy_would_read_and_creates_nothing(
        a: ckptlake.Lake, tmp_path: Path) -> None:
    b = ckptlake.open("file://" + (tmp_path / "b").as_posix())
    m = a._manifest("run/x")
    est = a.estimate_copy("run/x", b, egress=EgressPolicy())
    assert (est.operation, est.bytes_total, est.bytes_to_download, est.bytes_present) == \
        ("cp", m.stored_bytes, m.stored_bytes, 0)
    assert not (tmp_path / "b").exists()
    seen: list[Any] = []
    a.copy("run/x", b, egress=EgressPolicy(), on_estimate=seen.append)
    assert seen[0].bytes_to_download == est.bytes_to_download
    again = a.estimate_copy("run/x", b, egress=EgressPolicy())
    assert (again.bytes_to_download, again.bytes_present) == (0, m.stored_bytes)
    # a lake of another hash: the whole version is read (pulled, then pushed)
    c = ckptlake.open("file://" + (tmp_path / "c").as_posix())
    (tmp_path / "seed.txt").write_text("seed")
    c.push(tmp_path / "seed.txt", "seed", hash="sha256")
    other = a.estimate_copy("run/x", c, egress=EgressPolicy())
    assert other.bytes_to_download == m.stored_bytes
    with pytest.raises(NotFound):
        c.resolve("run/x")


def test_cli_estimate_prints_the_estimate_and_copies_nothing(
        a: ckptlake.Lake, tmp_path: Path) -> None:
    to = "file://" + (tmp_path / "b").as_posix()
    r = cli("cp", "run/x", "--lake", a.url, "--to", to, "--estimate", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    m = a._manifest("run/x")
    assert (doc["operation"], doc["bytes_to_download"], doc["to_lake"]) == \
        ("cp", m.stored_bytes, to)
    assert not (tmp_path / "b").exists()
    r = cli("cp", "run/x", "--lake", a.url, "--to", to, "--estimate")
    assert r.exit_code == 0 and "cp of run/x@v1: would read" in r.stdout, r.stdout


def test_cli_max_bandwidth_limits_the_copy_and_is_checked(
        a: ckptlake.Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--max-bandwidth as push and pull take it: the chunks a copy writes (or has the server
    copy) go through the destination's limit; a bad value is exit 2 before any lake opens."""
    from ckptlake.transfer.throttle import Throttle

    charged: list[int] = []
    real = Throttle.acquire

    def spy(self: Throttle, n: int) -> None:
        if self.rate is not None:
            charged.append(n)
        return real(self, n)

    monkeypatch.setattr(Throttle, "acquire", spy)
    to = "file://" + (tmp_path / "b").as_posix()
    r = cli("cp", "run/x", "--lake", a.url, "--to", to, "--max-bandwidth", "1GiB", "--json")
    assert r.exit_code == 0, r.stderr
    assert sum(charged) == json.loads(r.stdout)["bytes_copied"] > 0
    r = cli("cp", "run/x", "--lake", a.url, "--to", to, "--max-bandwidth", "0")
    assert r.exit_code == 2 and "must be positive" in r.stderr
