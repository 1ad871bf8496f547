"""What a push asks of the store: one listing instead of a HEAD per chunk where that is cheaper,
and, in a SHA-256 lake, no second SHA-256 of each chunk in the S3 signer (a BLAKE3 lake's
digests cannot stand in for it: tests/test_blake3.py)."""
from __future__ import annotations

import filecmp
import hashlib
import json
import os
import random
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ckptlake.core import push as push_mod
from ckptlake.format import layout
from ckptlake.format.header import DEFAULT_HASH
from ckptlake.format.header import digest as hash_of
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

MiB = 1024 * 1024


def tree(root: Path, n_big: int = 3, seed: int = 0) -> Path:
    root.mkdir()
    rnd = __import__("random").Random(seed)
    for i in range(n_big):
        (root / f"shard{i}.bin").write_bytes(rnd.randbytes(2 * MiB + i))
    (root / "config.json").write_text('{"a": 1}')
    return root


def chunk_puts(store: MemoryStore) -> int:
    return sum(1 for k in store._objects if k.startswith(layout.CHUNKS_PREFIX))


# The push that creates a lake asks once whether the location is a replica (its marker): no
# lake header is written there.  No chunk is ever HEADed where the listing answers.
NEW_LAKE_HEADS = 1


def test_cold_push_lists_once_and_sends_no_head(tmp_path: Path) -> None:
    store = MemoryStore()
    lake = Lake(store, chunk_size=MiB, concurrency=4)
    lake.push(tree(tmp_path / "a"), "p/r/ckpt")
    assert store.calls["stat"] == NEW_LAKE_HEADS
    assert chunk_puts(store) == 9  # 2 + 3 + 3 slices of the shards, one pack for config


def test_repush_deduplicates_from_the_listing(tmp_path: Path) -> None:
    store = MemoryStore()
    lake = Lake(store, chunk_size=MiB, concurrency=4)
    src = tree(tmp_path / "a")
    lake.push(src, "p/r/ckpt")
    puts = store.calls["put"]
    store.calls.clear()
    result = lake.push(src, "p/r/ckpt")
    assert result.bytes_uploaded == 0 and result.chunks_deduplicated > 0
    assert store.calls["stat"] == 0
    # only the manifest (and summary records) were written, no chunk
    assert store.calls["put"] < puts and chunk_puts(store) == 9


def test_large_lake_falls_back_to_heads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore()
    for i in range(40):  # a lake holding more chunks than the listing budget allows
        d = hashlib.sha256(str(i).encode()).hexdigest()
        store.put(layout.chunk_key(d), b"x")
    monkeypatch.setattr(push_mod, "LIST_PAGE_KEYS", 10)
    store.calls.clear()
    lake = Lake(store, chunk_size=MiB, concurrency=4)
    lake.push(tree(tmp_path / "a"), "p/r/ckpt")  # 9 units -> budget 1 page of 10 keys
    assert store.calls["stat"] == 9 + NEW_LAKE_HEADS


def test_known_chunks_budget() -> None:
    store = MemoryStore()
    for i in range(5):
        store.put(layout.chunk_key(hashlib.sha256(bytes([i])).hexdigest()), b"abc")
    store.put("artifacts/x/@v/0000000001.json", b"{}")  # not a chunk: not listed
    known = push_mod.known_chunks(store, units=1)
    assert known is not None and len(known) == 5 and set(known.values()) == {3}
    assert push_mod.known_chunks(store, units=8 * 1) is not None
    old = push_mod.LIST_PAGE_KEYS
    try:
        push_mod.LIST_PAGE_KEYS = 4
        assert push_mod.known_chunks(store, units=1) is None
        assert push_mod.known_chunks(store, units=16) is not None  # 2 pages of 4 >= 5 keys
    finally:
        push_mod.LIST_PAGE_KEYS = old


def test_wrong_sized_chunk_in_listing_is_sent_again(tmp_path: Path) -> None:
    """The listing carries sizes: the empty object a cut-off PUT leaves behind is replaced."""
    store = MemoryStore()
    lake = Lake(store, chunk_size=MiB, concurrency=4)
    src = tree(tmp_path / "a", n_big=1)
    first = (src / "shard0.bin").read_bytes()[:MiB]
    key = layout.chunk_key(hash_of(DEFAULT_HASH, first))  # the hash of the lake the push makes
    store.put(key, b"")
    lake.push(src, "p/r/ckpt")
    assert store.get(key) == first


# ---- S3: the signer reuses the chunk digest -----------------------------------------------

def _sent_content_sha256(store: Any) -> list[str]:
    seen: list[str] = []

    def before_send(request: Any, **_: Any) -> None:
        value = request.headers.get("X-Amz-Content-SHA256")
        seen.append(value.decode() if isinstance(value, bytes) else value)

    store._client.meta.events.register("before-send.s3.PutObject", before_send)
    return seen


def test_s3_put_signs_with_the_given_sha256(moto_store: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.auth

    hashed: list[int] = []  # bytes fed to the signer's SHA-256, per call
    real = botocore.auth.sha256

    class Counting:
        def __init__(self, data: bytes = b"") -> None:
            self.h = real(data)
            hashed.append(len(data))

        def update(self, data: bytes) -> None:
            hashed.append(len(data))
            self.h.update(data)

        def __getattr__(self, name: str) -> Any:  # hmac uses it as a digestmod too
            return getattr(self.h, name)

    monkeypatch.setattr(botocore.auth, "sha256", Counting)
    seen = _sent_content_sha256(moto_store)
    data = os.urandom(MiB)
    digest = hashlib.sha256(data).hexdigest()
    moto_store.put("chunks/aa/x", data, sha256=digest)
    assert seen == [digest]
    assert sum(hashed) < MiB  # the body was not hashed again
    # no hint: moto's endpoint is https, where such a body goes UNSIGNED-PAYLOAD (store/s3.py)
    moto_store.put("chunks/aa/y", data)
    assert seen == [digest, "UNSIGNED-PAYLOAD"] and sum(hashed) < MiB
    # the hint is really what is signed: a different value is sent as given
    moto_store.put("chunks/aa/z", data, sha256="0" * 64)
    assert seen[-1] == "0" * 64
    assert moto_store.get("chunks/aa/x") == data


def test_s3_hint_does_not_leak_into_other_puts(moto_store: Any) -> None:
    seen = _sent_content_sha256(moto_store)
    moto_store.put("a", b"one", sha256="1" * 64)
    moto_store.put("b", b"two")
    assert seen == ["1" * 64, "UNSIGNED-PAYLOAD"]  # https (moto): no free digest, unsigned


_CRT_SCRIPT = r"""
import hashlib, json
import botocore.auth, botocore.compat
from moto import mock_aws
from ckptlake.store.s3 import S3Store

assert botocore.compat.HAS_CRT, "botocore does not use awscrt here"
assert botocore.auth.AUTH_TYPE_MAPS["s3v4"].__module__ == "botocore.crt.auth"
with mock_aws():
    store = S3Store("crt-bucket", "lake")
    store._client.create_bucket(Bucket="crt-bucket")
    seen = []

    def signed(request, **_):
        value = request.headers["X-Amz-Content-SHA256"]
        seen.append(value.decode() if isinstance(value, bytes) else value)

    store._client.meta.events.register("before-send.s3.PutObject", signed)
    store.put("chunks/aa/x", b"one", sha256="0" * 64)
    store.put("chunks/aa/y", b"two")
    assert store.get("chunks/aa/x") == b"one"
    print(json.dumps(seen))
"""


def test_s3_hint_reaches_botocores_c_signer_when_awscrt_is_installed() -> None:
    """With awscrt installed botocore signs with awscrt's C signer, which hashes every body
    itself unless told the digest (the suite otherwise runs without it: BOTO_DISABLE_CRT in
    conftest.py).  A deliberately wrong hint proves it is what gets signed."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "BOTO_DISABLE_CRT"}
    p = subprocess.run([sys.executable, "-c", _CRT_SCRIPT], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1]) == ["0" * 64, "UNSIGNED-PAYLOAD"]


# ---- against SeaweedFS ---------------------------------------------------------------------

def _s3_store(url: str) -> Any:
    from ckptlake.store import open_store

    return open_store(url)


def test_get_into_reads_the_socket_directly_and_reuses_connections(
        s3_lake_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptlake.store import s3 as s3mod

    store = _s3_store(s3_lake_url)
    blobs = {f"chunks/ab/{i}": os.urandom(3 * MiB + i) for i in range(4)}
    for k, v in blobs.items():
        store.put(k, v)
    fast: list[bool] = []
    real = s3mod._plain_readinto
    monkeypatch.setattr(s3mod, "_plain_readinto",
                        lambda raw: fast.append(real(raw) is not None) or real(raw))
    made: list[int] = []
    import urllib3.connectionpool as cp

    real_new = cp.HTTPConnectionPool._new_conn
    monkeypatch.setattr(cp.HTTPConnectionPool, "_new_conn",
                        lambda self: made.append(1) or real_new(self))
    buf = bytearray(4 * MiB)
    for _ in range(3):
        for k, v in blobs.items():
            assert bytes(store.get_into(k, buf)) == v
    assert fast and all(fast)
    assert len(made) <= 1  # sequential reads share one pooled connection


# ---- identical chunks within one push are stored once (issue 12, defect 8) ------------------

class CountingStore(MemoryStore):
    """Counts PUTs and HEADs per chunk key.  `gate_heads`: a chunk HEAD waits (up to half a
    second) for a second HEAD of the same key, so that two workers checking one digest both
    see it missing, as they do whenever the first PUT is still on the wire."""

    def __init__(self, gate_heads: bool = False) -> None:
        super().__init__()
        self.chunk_puts: Counter[str] = Counter()
        self.chunk_heads: Counter[str] = Counter()
        self._count_lock = threading.Condition()
        self.gate_heads = gate_heads

    def put(self, key: str, data: Any, **kw: Any) -> str:
        if key.startswith(layout.CHUNKS_PREFIX):
            with self._count_lock:
                self.chunk_puts[key] += 1
        return super().put(key, data, **kw)

    def stat(self, key: str) -> Any:
        if key.startswith(layout.CHUNKS_PREFIX):
            with self._count_lock:
                self.chunk_heads[key] += 1
                self._count_lock.notify_all()
                if self.gate_heads:
                    self._count_lock.wait_for(lambda: self.chunk_heads[key] >= 2, timeout=0.5)
        return super().stat(key)


def identical_files(root: Path, n: int = 8, size: int = MiB) -> Path:
    root.mkdir()
    data = random.Random(7).randbytes(size)
    for i in range(n):
        (root / f"copy{i}.bin").write_bytes(data)
    return root


def test_identical_files_are_uploaded_once_from_the_listing(tmp_path: Path) -> None:
    store = CountingStore()
    lake = Lake(store, chunk_size=MiB, concurrency=8)
    result = lake.push(identical_files(tmp_path / "a"), "p/r/ckpt")
    assert store.calls["stat"] == NEW_LAKE_HEADS  # listing mode
    assert sum(store.chunk_puts.values()) == 1
    assert (result.chunks_uploaded, result.bytes_uploaded) == (1, MiB)
    assert (result.chunks_deduplicated, result.bytes_deduplicated) == (7, 7 * MiB)
    assert result.bytes_uploaded + result.bytes_deduplicated == result.bytes_scanned


def test_identical_files_are_uploaded_once_with_heads(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push_mod, "known_chunks", lambda store, units: None)  # a large lake
    store = CountingStore(gate_heads=True)
    lake = Lake(store, chunk_size=MiB, concurrency=8)
    result = lake.push(identical_files(tmp_path / "a"), "p/r/ckpt")
    assert sum(store.chunk_puts.values()) == 1
    assert sum(store.chunk_heads.values()) == 1  # the later copies ask nobody
    assert (result.chunks_uploaded, result.chunks_deduplicated) == (1, 7)


@pytest.mark.parametrize("heads", [False, True])
def test_sparse_file_uploads_each_distinct_chunk_once(tmp_path: Path, heads: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """64 chunks, 2 distinct (some data, then 63 MiB of hole): 2 PUTs, 2 MiB sent."""
    if heads:
        monkeypatch.setattr(push_mod, "known_chunks", lambda store, units: None)
    sparse = tmp_path / "sparse.bin"
    with open(sparse, "wb") as fh:
        fh.write(random.Random(1).randbytes(MiB))
        fh.truncate(64 * MiB)
    store = CountingStore(gate_heads=heads)
    lake = Lake(store, chunk_size=MiB, concurrency=8)
    result = lake.push(sparse, "p/r/sparse")
    assert len(store.chunk_puts) == 2 and sum(store.chunk_puts.values()) == 2
    assert (result.chunks_uploaded, result.bytes_uploaded) == (2, 2 * MiB)
    assert (result.chunks_deduplicated, result.bytes_deduplicated) == (62, 62 * MiB)
    if heads:
        assert sum(store.chunk_heads.values()) == 2
    out = lake.pull("p/r/sparse", tmp_path / "out.bin")
    assert filecmp.cmp(out.destination, sparse, shallow=False)
