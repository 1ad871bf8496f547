"""An in-memory store with S3's semantics, for fast unit tests and fault injection.

It also counts requests and bytes per operation, which tests use to prove what a push or pull
really sent (dedup, resume) without a proxy.
"""
from __future__ import annotations

import hashlib
import threading
import uuid
from collections import Counter
from datetime import datetime, timezone
from typing import Iterable, Iterator, Sequence

from ..errors import NotFound, PreconditionFailed, TransferError
from .base import MultipartUpload, ObjectInfo, Store, part_numbers


class MemoryStore(Store):
    def __init__(self, name: str = "test", *, storage_classes: bool = False) -> None:
        self.url = f"memory://{name}"
        # storage_classes: behave like S3 with classes (listing reports them, gc may tier);
        # off, like a server without them.
        self.supports_storage_classes = storage_classes
        self.classes: dict[str, str] = {}  # key -> class other than STANDARD
        self._lock = threading.Lock()
        self._objects: dict[str, tuple[bytes, str, datetime]] = {}
        # upload id -> (key, initiated, {part number: (bytes, the part's ETag)})
        self._uploads: dict[str, tuple[str, datetime, dict[int, tuple[bytes, str]]]] = {}
        self.calls: Counter[str] = Counter()
        self.bytes_in = 0  # bytes written by put/upload_part
        self.bytes_out = 0  # bytes returned by get/get_range

    def _obj(self, key: str) -> tuple[bytes, str, datetime]:
        try:
            return self._objects[key]
        except KeyError:
            raise NotFound(f"{self.url}/{key} does not exist") from None

    def get(self, key: str) -> bytes:
        self.calls["get"] += 1
        with self._lock:
            data = self._obj(key)[0]
            self.bytes_out += len(data)
        return data

    def get_range(self, key: str, start: int, length: int) -> bytes:
        self.calls["get_range"] += 1
        with self._lock:
            data = self._obj(key)[0][start:start + length]
            self.bytes_out += len(data)
        return data

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        self.calls["get"] += 1
        with self._lock:
            data, etag, _ = self._obj(key)
        return data, etag

    def stat(self, key: str) -> ObjectInfo:
        self.calls["stat"] += 1
        with self._lock:
            data, etag, t = self._obj(key)
            cls = self.classes.get(key, "STANDARD") if self.supports_storage_classes else None
        return ObjectInfo(key, len(data), etag, t, cls)

    def put(self, key: str, data: bytes | bytearray | memoryview, *,
            if_none_match: bool = False, if_match: str | None = None,
            sha256: str | None = None) -> str:
        self.calls["put"] += 1
        with self._lock:
            current = self._objects.get(key)
            if if_none_match and current is not None:
                raise PreconditionFailed(f"{self.url}/{key} already exists")
            if if_match is not None and (current is None or current[1] != if_match):
                raise PreconditionFailed(f"{self.url}/{key} changed")
            etag = f'"{uuid.uuid4().hex}"'
            self._objects[key] = (bytes(data), etag, datetime.now(timezone.utc))
            self.classes.pop(key, None)
            self.bytes_in += len(data)
        return etag

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        self.calls["list"] += 1
        with self._lock:
            items = sorted((k, v) for k, v in self._objects.items() if k.startswith(prefix)
                           and (start_after is None or k > start_after))
        for k, (data, etag, t) in items:
            yield ObjectInfo(k, len(data), etag, t,
                             self.classes.get(k, "STANDARD") if self.supports_storage_classes
                             else None)

    def set_storage_class(self, key: str, storage_class: str, *, etag: str | None = None
                          ) -> None:
        if not self.supports_storage_classes:
            super().set_storage_class(key, storage_class, etag=etag)
        self.calls["set_storage_class"] += 1
        with self._lock:
            current = self._obj(key)
            if etag is not None and current[1] != etag:
                raise PreconditionFailed(f"{self.url}/{key} changed")
            self.classes[key] = storage_class
            # S3's copy onto itself is a new write: a new LastModified (same bytes and ETag).
            self._objects[key] = (current[0], current[1], datetime.now(timezone.utc))

    def list_prefixes(self, prefix: str) -> Iterator[str]:
        with self._lock:
            subs = {prefix + k[len(prefix):].split("/", 1)[0] + "/"
                    for k in self._objects if k.startswith(prefix) and "/" in k[len(prefix):]}
        yield from sorted(subs)

    def delete(self, keys: Iterable[str]) -> None:
        with self._lock:
            for k in keys:
                self.calls["delete"] += 1
                self._objects.pop(k, None)
                self.classes.pop(k, None)

    def create_multipart(self, key: str) -> str:
        self.calls["create_multipart"] += 1
        uid = uuid.uuid4().hex
        with self._lock:
            self._uploads[uid] = (key, datetime.now(timezone.utc), {})
        return uid

    def upload_part(self, key: str, upload_id: str, part_number: int,
                    data: bytes | bytearray | memoryview) -> str:
        self.calls["upload_part"] += 1
        with self._lock:
            if upload_id not in self._uploads:
                raise NotFound(f"{self.url}/{key}: multipart upload {upload_id} not found")
            # S3's part ETag: the part's MD5, so a part sent again with other bytes gets
            # another ETag, and completing with the old one is refused (as S3 refuses it).
            etag = f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'
            self._uploads[upload_id][2][part_number] = (bytes(data), etag)
            self.bytes_in += len(data)
        return etag

    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]], *,
                           if_none_match: bool = False) -> str:
        """Refuses what S3 refuses (InvalidPartOrder, InvalidPart) with the upload left
        pending, as S3 leaves it: the parts must be listed in ascending order, each with the
        ETag its upload_part returned.  (S3's minimum part size is not checked here.)"""
        self.calls["complete_multipart"] += 1
        where = f"{self.url}/{key}"
        with self._lock:
            if upload_id not in self._uploads:
                raise NotFound(f"{where}: multipart upload {upload_id} not found")
            stored = self._uploads[upload_id][2]
            numbers = part_numbers(where, parts)
            for number, etag in parts:
                if number not in stored or stored[number][1] != etag:
                    raise TransferError(f"{where}: part {number} missing or its ETag does "
                                        "not match (InvalidPart)")
            body = b"".join(stored[n][0] for n in numbers)
            del self._uploads[upload_id]
        return self.put(key, body, if_none_match=if_none_match)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self.calls["abort_multipart"] += 1
        with self._lock:
            self._uploads.pop(upload_id, None)

    def multipart_bytes(self, key: str, upload_id: str) -> int | None:
        with self._lock:
            upload = self._uploads.get(upload_id)
            if upload is None or upload[0] != key:
                raise NotFound(f"no upload {upload_id} of {key}")
            return sum(len(p) for p, _ in upload[2].values())

    def list_multipart(self, prefix: str = "") -> Iterator[MultipartUpload]:
        with self._lock:
            items = [(k, uid, t) for uid, (k, t, _) in self._uploads.items()
                     if k.startswith(prefix)]
        for k, uid, t in sorted(items):
            yield MultipartUpload(k, uid, t)

    # test helpers
    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._objects)

    def corrupt(self, key: str, data: bytes) -> None:
        with self._lock:
            _, etag, t = self._objects[key]
            self._objects[key] = (data, etag, t)
