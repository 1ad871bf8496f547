"""A chunk's body leaves in large socket writes, not in urllib3's 16 KiB pieces
(store/s3.py _widen_send_blocks): against the session SeaweedFS, bytes and buffer bodies."""
from __future__ import annotations

import os
import socket
from typing import Any

import pytest

from ckptlake.store.s3 import _SEND_BLOCK, S3Store

MiB = 1024 * 1024
pytestmark = pytest.mark.seaweedfs


@pytest.mark.parametrize("kind", ["bytes", "bytearray"])
def test_a_put_body_goes_out_in_large_writes(seaweedfs: Any, monkeypatch: pytest.MonkeyPatch,
                                             kind: str) -> None:
    store = S3Store(seaweedfs.bucket, f"sendblocks-{kind}", endpoint_url=seaweedfs.endpoint_url)
    data = os.urandom(4 * MiB)
    sizes: list[int] = []
    sendall = socket.socket.sendall

    def spy(self: socket.socket, payload: Any, *args: Any) -> Any:
        sizes.append(memoryview(payload).nbytes)
        return sendall(self, payload, *args)

    try:
        monkeypatch.setattr(socket.socket, "sendall", spy)
        store.put("k", data if kind == "bytes" else bytearray(data))
        monkeypatch.undo()
        assert store.get("k") == data
    finally:
        store.close()
    assert sum(sizes) >= len(data)
    assert max(sizes) == _SEND_BLOCK > 16 * 1024  # urllib3's default: 16 KiB
    assert len(sizes) <= len(data) // _SEND_BLOCK + 4  # headers, and nothing else in pieces


def test_a_proxied_connection_gets_them_too(seaweedfs: Any) -> None:
    """Behind HTTPS_PROXY / HTTP_PROXY botocore makes a proxy's pool manager on first use."""
    store = S3Store(seaweedfs.bucket, "sendblocks-proxy", endpoint_url=seaweedfs.endpoint_url)
    try:
        http = store._client._endpoint.http_session
        proxied = http._get_proxy_manager("http://127.0.0.1:9")  # made, never connected
        assert proxied.connection_pool_kw["blocksize"] == _SEND_BLOCK
        assert http._manager.connection_pool_kw["blocksize"] == _SEND_BLOCK
    finally:
        store.close()
