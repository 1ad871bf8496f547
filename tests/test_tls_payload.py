"""Bodies whose SHA-256 is not known for free go UNSIGNED-PAYLOAD over https, and only there
(store/s3.py, _UNSIGNED_CONTEXT): against the session SeaweedFS's TLS listener and its plain
one, with botocore's Python signer and with awscrt's C signer."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import ckptlake
from ckptlake.format import layout

MiB = 1024 * 1024
UNSIGNED = "UNSIGNED-PAYLOAD"


def _source(root: Path) -> Path:
    root.mkdir()
    (root / "weights.bin").write_bytes(os.urandom(3 * MiB))  # raw chunks
    (root / "log.txt").write_bytes(b"step 1 loss 2.5\n" * 40_000)  # an encoded (zstd) chunk
    return root


def _signed_bodies(lake: Any) -> list[tuple[str, str, int]]:
    """(operation, X-Amz-Content-SHA256, body bytes) of every chunk PutObject / UploadPart."""
    seen: list[tuple[str, str, int]] = []
    store = lake.store
    while not hasattr(store, "_client"):  # RetryingStore and friends wrap the S3Store
        store = store.inner
    for op in ("PutObject", "UploadPart"):
        def before_send(request: Any, op: str = op, **_: Any) -> None:
            if f"/{layout.CHUNKS_PREFIX}" not in request.url:
                return
            value = request.headers.get("X-Amz-Content-SHA256")
            body = request.body
            size = len(body) if isinstance(body, (bytes, bytearray)) else len(body.read()) \
                if hasattr(body, "read") else 0
            if hasattr(body, "seek"):
                body.seek(0)
            seen.append((op, value.decode() if isinstance(value, bytes) else value, size))

        store._client.meta.events.register(f"before-send.s3.{op}", before_send)
    return seen


def _open(seaweedfs: Any, monkeypatch: pytest.MonkeyPatch, tls: bool, **options: Any) -> Any:
    endpoint = seaweedfs.https_endpoint_url if tls else seaweedfs.endpoint_url
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_CA_BUNDLE", seaweedfs.ca_bundle)
    return ckptlake.open(f"s3://{seaweedfs.bucket}/tls-{os.urandom(6).hex()}", **options)


@pytest.mark.seaweedfs
@pytest.mark.parametrize("tls", [True, False], ids=["https", "http"])
def test_blake3_lake_bodies_go_unsigned_only_over_tls(seaweedfs: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      tls: bool) -> None:
    src = _source(tmp_path / "src")
    lake = _open(seaweedfs, monkeypatch, tls, chunk_size=MiB)
    try:
        seen = _signed_bodies(lake)
        result = lake.push(src, "tls/blake3", hash="blake3")
        assert result.bytes_sent < result.bytes_uploaded  # one chunk went encoded
        assert len(seen) == result.chunks_uploaded >= 4
        if tls:
            assert {value for _, value, _ in seen} == {UNSIGNED}
        else:  # signed: botocore hashed each body (a BLAKE3 key is no SHA-256 to hand over)
            assert UNSIGNED not in {value for _, value, _ in seen}
        lake.pull("tls/blake3", tmp_path / "back")
    finally:
        lake.close()
    for name in ("weights.bin", "log.txt"):
        assert (tmp_path / "back" / name).read_bytes() == (src / name).read_bytes()


@pytest.mark.seaweedfs
def test_sha256_lake_still_signs_raw_chunks_with_their_key_over_tls(
        seaweedfs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A raw chunk's key is its body's SHA-256: signing costs nothing, so it stays signed (the
    server can check it); an encoded chunk's body has no free digest and goes unsigned."""
    src = _source(tmp_path / "src")
    lake = _open(seaweedfs, monkeypatch, True, chunk_size=MiB)
    try:
        seen = _signed_bodies(lake)
        lake.push(src, "tls/sha", hash="sha256")
    finally:
        lake.close()
    raw = {hashlib.sha256(src.joinpath("weights.bin").read_bytes()[i:i + MiB]).hexdigest()
           for i in range(0, 3 * MiB, MiB)}
    values = [value for _, value, _ in seen]
    assert raw <= set(values)
    assert values.count(UNSIGNED) == len(values) - len(raw) >= 1


@pytest.mark.seaweedfs
def test_multipart_parts_go_unsigned_over_tls(seaweedfs: Any, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(12 * MiB)
    (src / "big.bin").write_bytes(data)
    lake = _open(seaweedfs, monkeypatch, True, chunk_size=16 * MiB,
                 multipart_threshold=8 * MiB, part_size=5 * MiB)
    try:
        seen = _signed_bodies(lake)
        lake.push(src, "tls/parts", hash="sha256", compression="none")
        lake.pull("tls/parts", tmp_path / "back")
    finally:
        lake.close()
    assert [(op, value) for op, value, _ in seen] == [("UploadPart", UNSIGNED)] * 3
    assert (tmp_path / "back" / "big.bin").read_bytes() == data


_CRT_SCRIPT = r"""
import json, os, sys
import botocore.auth, botocore.compat
import ckptlake
from ckptlake.store.s3 import _b

assert botocore.compat.HAS_CRT, "botocore does not use awscrt here"
lake = ckptlake.open(sys.argv[1], chunk_size=1024 * 1024)
store = lake.store
while not hasattr(store, "_client"):
    store = store.inner
assert botocore.auth.AUTH_TYPE_MAPS["s3v4"].__module__ == "botocore.crt.auth"
seen = []
store._client.meta.events.register(
    "before-send.s3.PutObject",
    lambda request, **_: seen.append(request.headers["X-Amz-Content-SHA256"].decode()
                                     if isinstance(request.headers["X-Amz-Content-SHA256"], bytes)
                                     else request.headers["X-Amz-Content-SHA256"])
    if "/chunks/" in request.url else None)
lake.push(sys.argv[2], "tls/crt", hash="blake3")
lake.pull("tls/crt", sys.argv[3])
lake.close()
print(json.dumps(seen))
"""


@pytest.mark.seaweedfs
def test_c_signer_sends_unsigned_over_tls_too(seaweedfs: Any, tmp_path: Path) -> None:
    pytest.importorskip("awscrt")
    src = _source(tmp_path / "src")
    env = {k: v for k, v in os.environ.items() if k != "BOTO_DISABLE_CRT"}
    env.update(AWS_ENDPOINT_URL=seaweedfs.https_endpoint_url, AWS_CA_BUNDLE=seaweedfs.ca_bundle)
    p = subprocess.run([sys.executable, "-c", _CRT_SCRIPT,
                        f"s3://{seaweedfs.bucket}/tls-{os.urandom(6).hex()}", str(src),
                        str(tmp_path / "back")], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    seen = json.loads(p.stdout.strip().splitlines()[-1])
    assert len(seen) >= 4 and set(seen) == {UNSIGNED}
    assert (tmp_path / "back" / "weights.bin").read_bytes() == \
        (src / "weights.bin").read_bytes()
