"""The one storage interface everything above talks to.

Why so small: the lake's correctness rests only on these operations and on S3's strong
read-after-write consistency plus conditional writes.  Any backend that implements them with the
same semantics (see the contract on each method) can hold a lake, and one conformance suite
(tests/test_store_conformance.py) runs against every backend.

Keys are '/'-separated and relative to the lake root (bucket+prefix, or a directory).  Backends
raise only errors from ckptlake.errors: NotFound, PreconditionFailed, AccessDenied,
TransientError (worth retrying) and TransferError (permanent).  Nothing above the store knows
boto3's or the OS's exceptions.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Iterator, Sequence

from ..errors import TransferError

# Network timeouts of remote backends, in seconds.  connect: the longest wait while connecting
# and while sending a request, body included (urllib3 applies it to both); read: the longest
# wait for a response and for each further piece of its body.
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    modified: datetime  # timezone-aware UTC
    # S3 storage class as the listing reports it (STANDARD, STANDARD_IA, ...); None where the
    # backend has none (local lakes).  Not part of the lake's format: gc's tiering reads it.
    storage_class: str | None = None


@dataclass(frozen=True)
class MultipartUpload:
    key: str
    upload_id: str
    initiated: datetime


class Store(abc.ABC):
    """Contract of an object store holding one lake."""

    #: Human-readable location ("s3://bucket/prefix", "file:///path"); never contains secrets.
    url: str

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """Whole object.  NotFound if absent."""

    def get_into(self, key: str, buffer: bytearray) -> memoryview:
        """Whole object read into `buffer` (reused by the caller), as a view of its bytes.

        Why: a pull reads thousands of chunk-sized objects.  A fresh 16 MiB bytes object per
        chunk is mapped, faulted in and unmapped by malloc every time; measured on this
        machine that churn cost 0.7-2.9 s of system time per GiB pulled (docs/benchmarks.md).
        Objects larger than the buffer come back as a view of a new bytes object.
        """
        data = self.get(key)
        if len(data) > len(buffer):
            return memoryview(data)
        view = memoryview(buffer)[:len(data)]
        view[:] = data
        return view

    def get_range_into(self, key: str, start: int, buffer: bytearray | memoryview) -> memoryview:
        """Bytes [start, start+len(buffer)) read into `buffer`, as a view of what was read
        (fewer only at the object's end).  NotFound if absent.

        Why: a large chunk is fetched as parallel ranged GETs straight into one chunk buffer
        (transfer/parts.py), without a part-sized allocation per range.
        """
        data = self.get_range(key, start, len(buffer))
        view = memoryview(buffer)[:len(data)]
        view[:] = data
        return view

    @abc.abstractmethod
    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Bytes [start, start+length) of an object (fewer only at its end).  NotFound if absent."""

    @abc.abstractmethod
    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """Whole object and its current ETag, for a later put(if_match=etag)."""

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size, ETag and time of an object.  NotFound if absent."""

    def exists(self, key: str) -> bool:
        from ..errors import NotFound

        try:
            self.stat(key)
        except NotFound:
            return False
        return True

    @abc.abstractmethod
    def put(self, key: str, data: bytes | bytearray | memoryview, *,
            if_none_match: bool = False, if_match: str | None = None,
            sha256: str | None = None) -> str:
        """Write an object atomically (readers see the old or the new bytes, never a mix).

        if_none_match=True: create only if absent, else PreconditionFailed (nothing written).
        if_match=ETAG: replace only if the current ETag equals ETAG, else PreconditionFailed
        (also when the object is absent).  Returns the new ETag.
        sha256: the hex SHA-256 of `data` when the caller already has it (a chunk's key is
        its hash); a backend that must hash the body anyway (SigV4 over http) uses it instead.
        A wrong value makes the put fail on servers that check it, so pass only a real digest.
        """

    @abc.abstractmethod
    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Every object whose key starts with prefix, in key order, paged under the hood.

        start_after: only keys after this one (S3's StartAfter), so an interrupted listing can
        resume where it stopped instead of starting over.
        """

    @abc.abstractmethod
    def list_prefixes(self, prefix: str) -> Iterator[str]:
        """Immediate 'sub-directories' of prefix (which must end with '/'), each ending with '/'."""

    @abc.abstractmethod
    def delete(self, keys: Iterable[str]) -> None:
        """Delete objects, batched; absent keys are not an error."""

    # Multipart: used for objects larger than one PUT should carry, and so gc can find and
    # abort uploads a crashed push left behind.
    @abc.abstractmethod
    def create_multipart(self, key: str) -> str:
        """Start a multipart upload; returns its upload id."""

    @abc.abstractmethod
    def upload_part(self, key: str, upload_id: str, part_number: int,
                    data: bytes | bytearray | memoryview) -> str:
        """Upload part N (1-based); returns the part's ETag."""

    @abc.abstractmethod
    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]], *,
                           if_none_match: bool = False) -> str:
        """Join parts [(number, etag)] into the object; returns its ETag."""

    @abc.abstractmethod
    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop an upload and its parts; unknown ids are not an error."""

    @abc.abstractmethod
    def list_multipart(self, prefix: str = "") -> Iterator[MultipartUpload]:
        """Uploads started and neither completed nor aborted."""

    def multipart_bytes(self, key: str, upload_id: str) -> int | None:
        """Bytes of the parts an unfinished upload holds (S3 bills them as stored until the
        upload is completed or aborted; `du` counts them); None if this store cannot tell.
        NotFound if the upload is gone."""
        return None

    #: Whether objects have storage classes that set_storage_class can change (S3).
    supports_storage_classes: bool = False

    def set_storage_class(self, key: str, storage_class: str, *, etag: str | None = None
                          ) -> None:
        """Move an object to another storage class, its bytes and metadata unchanged (S3: a
        server-side copy onto itself).  etag: only if the object still has this ETag, else
        PreconditionFailed.  NotFound if absent; StorageClassUnsupported where the backend or
        server has no such class (nothing changed)."""
        from ..errors import StorageClassUnsupported

        raise StorageClassUnsupported(f"{self.url}: this lake has no storage classes")

    def copy_in(self, source: "Store", key: str, *, if_match: str | None = None) -> bool:
        """Have the server copy object `key` of `source` to `key` here, its bytes never passing
        through this process (S3: CopyObject between two lakes on one server), and True; False
        when that cannot be done here (another kind of store, another server, a server or
        credentials that refuse it): the caller moves the bytes itself.  if_match: only if the
        source object still has this ETag (the bytes the caller verified), else
        PreconditionFailed.  Unconditional at the destination (a copy over an object writes
        the same bytes there: keys are content-addressed).  NotFound if the source is gone."""
        return False

    def check_writable(self) -> None:
        """Raise what the first write would, where no key can ever be written (a local lake
        path that is a file): `push --dry-run` writes nothing and must still refuse such a
        location as the push would.  Nothing by default (other failures are the request's)."""

    def close(self) -> None:
        """Release connections/threads.  Idempotent."""


class ForwardingStore(Store):
    """A store that passes every object call to `self.inner`: the base of wrappers that change
    a few calls (a replica's reads) and keep the rest as they are, without a copy of each.
    Storage classes and `close` are not forwarded: a wrapper neither moves objects between
    classes nor owns the store it wraps."""

    inner: Store

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def get_into(self, key: str, buffer: bytearray) -> memoryview:
        return self.inner.get_into(key, buffer)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self.inner.get_range(key, start, length)

    def get_range_into(self, key: str, start: int, buffer: bytearray | memoryview) -> memoryview:
        return self.inner.get_range_into(key, start, buffer)

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        return self.inner.get_with_etag(key)

    def stat(self, key: str) -> ObjectInfo:
        return self.inner.stat(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def put(self, key: str, data: bytes | bytearray | memoryview, *,
            if_none_match: bool = False, if_match: str | None = None,
            sha256: str | None = None) -> str:
        return self.inner.put(key, data, if_none_match=if_none_match, if_match=if_match,
                              sha256=sha256)

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix, start_after=start_after)

    def list_prefixes(self, prefix: str) -> Iterator[str]:
        return self.inner.list_prefixes(prefix)

    def delete(self, keys: Iterable[str]) -> None:
        self.inner.delete(keys)

    def create_multipart(self, key: str) -> str:
        return self.inner.create_multipart(key)

    def upload_part(self, key: str, upload_id: str, part_number: int,
                    data: bytes | bytearray | memoryview) -> str:
        return self.inner.upload_part(key, upload_id, part_number, data)

    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]], *,
                           if_none_match: bool = False) -> str:
        return self.inner.complete_multipart(key, upload_id, parts, if_none_match=if_none_match)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self.inner.abort_multipart(key, upload_id)

    def list_multipart(self, prefix: str = "") -> Iterator[MultipartUpload]:
        return self.inner.list_multipart(prefix)

    def multipart_bytes(self, key: str, upload_id: str) -> int | None:
        return self.inner.multipart_bytes(key, upload_id)


def part_numbers(where: str, parts: Sequence[tuple[int, str]]) -> list[int]:
    """The part numbers of a multipart completion, refused as S3 refuses them: none at all, or
    not in ascending order without duplicates (InvalidPartOrder).  For the stores that stand
    in for S3 (local, memory): what S3 refuses must fail there too, or a pusher's bug passes."""
    if not parts:
        raise TransferError(f"{where}: multipart upload needs at least one part")
    numbers = [n for n, _ in parts]
    if numbers != sorted(set(numbers)):
        raise TransferError(f"{where}: parts must be listed in ascending order without "
                            "duplicates (InvalidPartOrder)")
    return numbers
