"""`cp` / Lake.copy: checks the mutation run of the copy found untested.

Each test pins one behaviour a user relies on: a copy never commits on a damaged object, keeps
what the version says about itself, refuses what the egress guard or the lake layout forbids
before it writes, and reports what it did exactly.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

import ckptlake
from ckptlake.errors import (CkptlakeError, IntegrityError, NotFound, PolicyRefusal,
                             UsageError)
from ckptlake.format import layout
from ckptlake.format.header import digest
from ckptlake.policy.egress import EgressPolicy

from test_cp import a, chunk_keys, cli, damaged_lake, src, tree  # noqa: F401  (a, src: fixtures)


def _sha256_lake(tmp_path: Path, name: str) -> ckptlake.Lake:
    """A local lake that hashes chunks with SHA-256 (the source lakes here use the default)."""
    lake = ckptlake.open("file://" + (tmp_path / name).as_posix())
    seed = tmp_path / f"{name}-seed.txt"
    seed.write_text("seed")
    lake.push(seed, "seed", hash="sha256")
    return lake


def _policy() -> EgressPolicy:
    return EgressPolicy(lake_region="us-east-1", client_region="eu-west-1",
                        price_per_gb={"inter_region": 1000.0, "same_region": 0.0,
                                      "internet": 1000.0},
                        confirm_above_usd=0.01)


# 1 ------------------------------------------------------------------------------------------

def test_an_empty_object_appearing_after_the_presence_check_is_replaced(
        a: ckptlake.Lake, src: Path, tmp_path: Path) -> None:
    """An upload cut after its head leaves an empty object; if it appears after the copy looked
    (a concurrent pusher dying), the copy's create-if-absent write fails on it.  Taking that
    as "written meanwhile" would commit a version whose chunks are empty objects: the user's
    model unrestorable at the destination."""
    from ckptlake.core.copy import copy_version
    from ckptlake.core.lakeheader import open_or_create_header

    b = ckptlake.open("file://" + (tmp_path / "b").as_posix())
    m = a._manifest("run/x")
    digests = sorted(m.chunk_digests())

    def cut_uploads(total: int, objects: dict[str, int]) -> None:
        for d in digests:
            b.store.put(layout.chunk_key(d), b"")

    result, _pushed = copy_version(
        a.store, b.store, m, "run/x", aliases=(), concurrency=2, source_url=a.url,
        dest_url=b.url, same_lake=False,
        open_header=lambda: open_or_create_header(b.store, hash=m.hash),
        before_copy=cut_uploads)
    assert result.chunks_copied == result.chunks == len(digests)
    for d in digests:
        assert b.store.stat(layout.chunk_key(d)).size > 0
    b.pull("run/x", tmp_path / "out")
    assert tree(tmp_path / "out") == tree(src)


# 2 ------------------------------------------------------------------------------------------

def test_server_copy_into_a_compression_none_s3_lake_stores_chunks_decoded(
        s3_lake_url: str, src: Path, tmp_path: Path) -> None:
    """Two lakes on one S3 server: the server copies chunks as they are stored, which is only
    right when they are stored the same way.  A `compression: none` lake is kept readable by
    ckptlakes that know no frames: a server copy of an encoded chunk would leave it unreadable
    to them."""
    a = ckptlake.open(s3_lake_url + "/a")
    a.push(src, "m")
    m = a._manifest("m")
    assert m.stored, "the source must hold encoded chunks for this test to mean anything"
    n = ckptlake.open(s3_lake_url + "/n")
    (tmp_path / "seed.txt").write_text("seed")
    n.push(tmp_path / "seed.txt", "seed", hash=m.hash, compression="none")
    r = a.copy("m", n)
    assert r.chunks_copied == r.chunks
    for d in m.chunk_digests():
        assert digest(m.hash, n.store.get(layout.chunk_key(d))) == d
    assert n._manifest("m").stored == {}
    n.pull("m", tmp_path / "out")
    assert tree(tmp_path / "out") == tree(src)


# 3 ------------------------------------------------------------------------------------------

def test_a_single_file_version_stays_a_file(tmp_path: Path) -> None:
    """A version pushed from one file pulls back as that file (`pull m out.bin`); copied as a
    directory version it would pull as a directory holding it, breaking every script that
    loads out.bin."""
    a = ckptlake.open("file://" + (tmp_path / "a").as_posix())
    body = random.Random(3).randbytes(5000)
    (tmp_path / "one.bin").write_bytes(body)
    a.push(tmp_path / "one.bin", "m")
    b = ckptlake.open("file://" + (tmp_path / "b").as_posix())
    a.copy("m", b)
    assert b.show("m").kind == "file"
    b.pull("m", tmp_path / "out.bin")
    assert (tmp_path / "out.bin").is_file()
    assert (tmp_path / "out.bin").read_bytes() == body


# 4 ------------------------------------------------------------------------------------------

def test_an_alias_that_cannot_be_set_raises_saying_the_version_is_committed(
        a: ckptlake.Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deploy that copies with aliases=["prod"] must learn prod was not moved (it would keep
    serving the old model silently), and that the version exists (not copy it again)."""
    from ckptlake.core import catalog

    def refuse(*args: Any, **kw: Any) -> None:
        raise CkptlakeError("alias write refused")

    monkeypatch.setattr(catalog, "set_alias", refuse)
    b = ckptlake.open("file://" + (tmp_path / "b").as_posix())
    with pytest.raises(CkptlakeError, match="is committed"):
        a.copy("run/x", b, aliases=["prod"])
    monkeypatch.undo()
    assert b.resolve("run/x").version == 1


# 5 ------------------------------------------------------------------------------------------

def test_a_copy_through_a_local_copy_keeps_the_versions_own_fields(
        a: ckptlake.Lake, tmp_path: Path) -> None:
    """Between lakes of different hashes the copy is a pull and a push: the push must carry the
    version's metadata, inputs, provenance, step and metrics, or the copy loses what makes it
    more than pull-then-push."""
    c = _sha256_lake(tmp_path, "c")
    r = a.copy("run/x", c)
    assert r.rechunked
    m = c._manifest("run/x")
    src_m = a._manifest("run/x")
    assert m.metadata == {"team": "nlp"}
    assert tuple(m.inputs) == tuple(src_m.inputs) and m.inputs
    assert m.provenance["git_commit"] == "abc123"
    assert (m.step, m.metrics) == (700, {"loss": 0.25})


# 6 ------------------------------------------------------------------------------------------

def test_the_egress_guard_stops_a_copy_through_a_local_copy(
        s3_lake_url: str, src: Path, tmp_path: Path) -> None:
    """Into a lake of another hash the whole version is downloaded: the egress guard must
    refuse it above the confirmation threshold (a surprise cross-region bill otherwise), and
    commit nothing."""
    s3 = ckptlake.open(s3_lake_url)
    s3.push(src, "m")
    local = _sha256_lake(tmp_path, "l")
    before = chunk_keys(local)
    with pytest.raises(PolicyRefusal):
        s3.copy("m", local, egress=_policy())
    with pytest.raises(NotFound):
        local.resolve("m")
    assert chunk_keys(local) == before


# 7 ------------------------------------------------------------------------------------------

def test_a_lake_cannot_be_copied_into_the_lake_that_holds_it(
        a: ckptlake.Lake, tmp_path: Path) -> None:
    """A lake under another lake's location: writing the outer lake's chunks and versions from
    the inner one mixes two lakes' objects (gc of one sweeps the other's)."""
    inner = ckptlake.open(a.url + "/inner")
    (tmp_path / "one.bin").write_bytes(b"inner lake")
    inner.push(tmp_path / "one.bin", "m")
    before = chunk_keys(a)
    with pytest.raises(UsageError, match="inside the other"):
        inner.copy("m", a)
    assert chunk_keys(a) == before
    with pytest.raises(NotFound):
        a.resolve("m")


# 8 ------------------------------------------------------------------------------------------

def test_damaged_gc_settings_at_the_destination_refuse_before_any_chunk_moves(
        a: ckptlake.Lake, tmp_path: Path) -> None:
    """The commit's guard refuses an unreadable gc/settings.json; found only then, every chunk
    would have been copied (paid for, and left for gc) first."""
    b = ckptlake.open("file://" + (tmp_path / "b").as_posix())
    (tmp_path / "seed.txt").write_text("seed")
    b.push(tmp_path / "seed.txt", "seed", hash=a._manifest("run/x").hash)
    b.store.put(layout.GC_SETTINGS_KEY, b"{not json")
    before = chunk_keys(b)
    with pytest.raises(IntegrityError):
        a.copy("run/x", b)
    assert chunk_keys(b) == before


# 9 ------------------------------------------------------------------------------------------

def test_a_server_copy_whose_source_is_gone_falls_back_to_the_bytes_read(
        a: ckptlake.Lake, src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server copy can find the source object gone (a gc of the source between the read
    and the copy): the bytes already read and verified are written instead; the copy must not
    fail on a chunk it holds."""
    b = ckptlake.open("file://" + (tmp_path / "b").as_posix())
    calls: list[str] = []

    def gone(self: Any, source: Any, key: str, **kw: Any) -> bool:
        calls.append(key)
        raise NotFound(f"{key} is gone")

    monkeypatch.setattr(type(b.store), "copy_in", gone)
    r = a.copy("run/x", b)
    assert calls, "the server copy was never tried: this test means nothing"
    assert r.chunks_copied == r.chunks
    monkeypatch.undo()
    b.pull("run/x", tmp_path / "out")
    assert tree(tmp_path / "out") == tree(src)


# 10 -----------------------------------------------------------------------------------------

def test_encoded_chunks_found_present_keep_their_stored_sizes(
        a: ckptlake.Lake, tmp_path: Path) -> None:
    """A version committed on chunks already there must record their stored (encoded) sizes:
    without them du, the egress estimate and pulls' sizing take them as raw."""
    b = ckptlake.open("file://" + (tmp_path / "b").as_posix())
    m = a._manifest("run/x")
    assert m.stored
    a.copy("run/x", b)
    r = a.copy("run/x", b)
    assert r.to_version == 2 and r.chunks_copied == 0
    assert b._manifest("run/x@v2").stored == m.stored
    assert r.bytes_stored == m.stored_bytes


# 11 -----------------------------------------------------------------------------------------

def test_no_server_copy_between_two_s3_endpoints() -> None:
    """CopyObject only works within one server: asked of another endpoint it would fail, or
    worse, copy an object of the same name from the wrong server."""
    from ckptlake.store.s3 import S3Store

    one = S3Store("b", "p", endpoint_url="http://127.0.0.1:1")
    two = S3Store("b", "q", endpoint_url="http://127.0.0.1:2")
    copy_object = mock.Mock()
    two._client.copy_object = copy_object
    one._client.copy_object = copy_object
    assert two.copy_in(one, "chunks/aa/x") is False
    copy_object.assert_not_called()


# 12 -----------------------------------------------------------------------------------------

def test_cli_endpoint_url_reaches_the_destination_without_to_endpoint_url(
        s3_lake_url: str, src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cp --endpoint-url E --to s3://...` between two lakes on one server: the destination
    uses E too (not AWS), without repeating it as --to-endpoint-url."""
    import os

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    s3 = ckptlake.open(s3_lake_url + "/a")
    s3.push(src, "m")
    s3.close()
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    r = cli("cp", "m", "--lake", s3_lake_url + "/a", "--endpoint-url", endpoint,
            "--to", s3_lake_url + "/b", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["to_version"] == 1 and doc["chunks_copied"] == doc["chunks"] > 0


# 13 -----------------------------------------------------------------------------------------

def test_the_egress_estimate_counts_damaged_objects_as_downloads(
        a: ckptlake.Lake, src: Path, tmp_path: Path) -> None:
    """Damaged objects at the destination are copied again from the source: the estimate the
    user is asked to confirm must count them, or it understates the bill."""
    b = damaged_lake(tmp_path / "b", a, src)
    m = a._manifest("run/x")
    policy = EgressPolicy(lake_region="us-east-1", client_region="eu-west-1",
                          price_per_gb={"inter_region": 1000.0, "same_region": 0.0,
                                        "internet": 1000.0},
                          confirm_above_usd=1e12)
    seen: list[Any] = []
    a.copy("run/x", b, egress=policy, on_estimate=seen.append, yes=True)
    assert seen and seen[0].bytes_to_download == m.stored_bytes
