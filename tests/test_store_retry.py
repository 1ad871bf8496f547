"""RetryingStore: what is retried, how long it waits, when it gives up, and the subtle cases
(a conditional write whose response was lost; a listing interrupted half way)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Sequence

import pytest

from ckptlake.errors import (AccessDenied, NotFound, PreconditionFailed, TransferError,
                             TransientError, UsageError)
from ckptlake.store.base import MultipartUpload, ObjectInfo, Store
from ckptlake.store.retry import RetryingStore

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class FakeStore(Store):
    """A dict-backed store whose calls can be scripted to fail.

    fail[method] is a list consumed one entry per call: an exception to raise, or a callable
    run *after* the real operation and returning the exception to raise (a lost response:
    the server did the work, the client saw an error).
    """

    url = "fake://lake"

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.uploads: dict[str, tuple[str, dict[int, bytes]]] = {}
        self.fail: dict[str, list[Any]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.list_fail_after: list[int] = []  # list(): raise after yielding N items, per call
        self.extra_attribute = "reachable"
        self._n = 0

    def _etag(self) -> str:
        self._n += 1
        return f'"e{self._n}"'

    def _step(self, method: str, arg: Any, op: Callable[[], Any]) -> Any:
        self.calls.append((method, arg))
        script = self.fail.get(method)
        action = script.pop(0) if script else None
        if isinstance(action, BaseException):
            raise action
        result = op()
        if action is not None:
            raise action()
        return result

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.calls if m == method)

    def _obj(self, key: str) -> tuple[bytes, str]:
        if key not in self.objects:
            raise NotFound(f"{self.url}/{key}: not found")
        return self.objects[key]

    def get(self, key: str) -> bytes:
        return self._step("get", key, lambda: self._obj(key)[0])

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self._step("get_range", key, lambda: self._obj(key)[0][start:start + length])

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        return self._step("get_with_etag", key, lambda: self._obj(key))

    def stat(self, key: str) -> ObjectInfo:
        def op() -> ObjectInfo:
            data, etag = self._obj(key)
            return ObjectInfo(key, len(data), etag, T0)
        return self._step("stat", key, op)

    def put(self, key: str, data: bytes | bytearray | memoryview, *,
            if_none_match: bool = False, if_match: str | None = None,
            sha256: str | None = None) -> str:
        def op() -> str:
            current = self.objects.get(key)
            if if_none_match and current is not None:
                raise PreconditionFailed(f"{key} exists")
            if if_match is not None and (current is None or current[1] != if_match):
                raise PreconditionFailed(f"{key} changed")
            etag = self._etag()
            self.objects[key] = (bytes(data), etag)
            return etag
        return self._step("put", key, op)

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        self.calls.append(("list", start_after))
        limit = self.list_fail_after.pop(0) if self.list_fail_after else None
        keys = sorted(k for k in self.objects if k.startswith(prefix)
                      and (start_after is None or k > start_after))
        for n, key in enumerate(keys):
            if n == limit:
                raise TransientError(f"list interrupted at {key}")
            yield ObjectInfo(key, len(self.objects[key][0]), self.objects[key][1], T0)
        if limit is not None and limit >= len(keys):
            raise TransientError("list interrupted at the end")

    def list_prefixes(self, prefix: str) -> Iterator[str]:
        self.calls.append(("list_prefixes", prefix))
        limit = self.list_fail_after.pop(0) if self.list_fail_after else None
        subs = sorted({prefix + k[len(prefix):].split("/", 1)[0] + "/" for k in self.objects
                       if k.startswith(prefix) and "/" in k[len(prefix):]})
        for n, sub in enumerate(subs):
            if n == limit:
                raise TransientError("list_prefixes interrupted")
            yield sub

    def delete(self, keys: Iterable[str]) -> None:
        keys = list(keys)

        def op() -> None:
            for k in keys:
                self.objects.pop(k, None)
        self._step("delete", keys, op)

    def create_multipart(self, key: str) -> str:
        def op() -> str:
            uid = f"u{len(self.uploads)}"
            self.uploads[uid] = (key, {})
            return uid
        return self._step("create_multipart", key, op)

    def upload_part(self, key: str, upload_id: str, part_number: int,
                    data: bytes | bytearray | memoryview) -> str:
        def op() -> str:
            self.uploads[upload_id][1][part_number] = bytes(data)
            return f'"p{part_number}"'
        return self._step("upload_part", key, op)

    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]], *,
                           if_none_match: bool = False) -> str:
        def op() -> str:
            if upload_id not in self.uploads:
                raise NotFound(f"upload {upload_id} not found")
            if if_none_match and key in self.objects:
                raise PreconditionFailed(f"{key} exists")
            _, stored = self.uploads.pop(upload_id)
            etag = self._etag()
            self.objects[key] = (b"".join(stored[n] for n, _ in parts), etag)
            return etag
        return self._step("complete_multipart", key, op)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self._step("abort_multipart", key, lambda: self.uploads.pop(upload_id, None))

    def list_multipart(self, prefix: str = "") -> Iterator[MultipartUpload]:
        self.calls.append(("list_multipart", prefix))
        for uid, (key, _) in sorted(self.uploads.items()):
            if key.startswith(prefix):
                yield MultipartUpload(key, uid, T0)


class Recorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.retries: list[tuple[str, int, str, float]] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def on_retry(self, key: str, attempt: int, error: str, delay: float) -> None:
        self.retries.append((key, attempt, error, delay))


@pytest.fixture
def fake() -> FakeStore:
    return FakeStore()


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def wrap(fake: FakeStore, rec: Recorder, *, rand: Callable[[], float] = lambda: 0.5,
         **kw: Any) -> RetryingStore:
    return RetryingStore(fake, sleep=rec.sleep, rand=rand, on_retry=rec.on_retry, **kw)


def lost_response() -> Callable[[], TransientError]:
    return lambda: TransientError("connection reset while reading the response")


# ---- backoff ---------------------------------------------------------------------------------

def test_transient_errors_are_retried_with_jittered_backoff(fake: FakeStore, rec: Recorder) -> None:
    fake.objects["k"] = (b"data", '"e0"')
    fake.fail["get"] = [TransientError("503 SlowDown"), TransientError("reset")]
    store = wrap(fake, rec, base_delay=0.2)
    assert store.get("k") == b"data"
    assert fake.count("get") == 3
    assert rec.sleeps == pytest.approx([0.5 * 0.2, 0.5 * 0.4])
    assert rec.retries == [("k", 1, "503 SlowDown", pytest.approx(0.1)),
                           ("k", 2, "reset", pytest.approx(0.2))]


def test_full_jitter_and_cap(fake: FakeStore, rec: Recorder) -> None:
    fake.objects["k"] = (b"data", '"e0"')
    fake.fail["stat"] = [TransientError("x")] * 6
    draws = iter([1.0, 1.0, 0.0, 0.25, 1.0, 0.5])
    store = wrap(fake, rec, rand=lambda: next(draws), attempts=7, base_delay=1.0, max_delay=5.0)
    store.stat("k")
    # ceilings 1, 2, 4, 8->5, 16->5, 32->5; each scaled by its random draw
    assert rec.sleeps == pytest.approx([1.0, 2.0, 0.0, 1.25, 5.0, 2.5])


def test_gives_up_with_transfer_error_naming_key_attempts_and_cause(
        fake: FakeStore, rec: Recorder) -> None:
    fake.objects["chunks/ab/abc"] = (b"data", '"e0"')
    fake.fail["get"] = [TransientError(f"503 SlowDown #{i}") for i in range(1, 4)]
    store = wrap(fake, rec, attempts=3)
    with pytest.raises(TransferError) as info:
        store.get("chunks/ab/abc")
    assert not isinstance(info.value, TransientError)  # final: not to be retried again above
    message = str(info.value)
    assert "fake://lake/chunks/ab/abc" in message
    assert "3 attempts" in message
    assert "503 SlowDown #3" in message
    assert fake.count("get") == 3
    assert len(rec.sleeps) == 2  # no pointless sleep after the last attempt


def throttled(text: str) -> TransientError:
    error = TransientError(text)
    error.throttled = True
    return error


def test_a_server_asking_to_slow_down_is_backed_off_longer_and_told_so(
        fake: FakeStore, rec: Recorder) -> None:
    """A SlowDown burst outlasted the ~3 s of backoff meant for a hiccup and ended as "check
    connectivity": throttling starts at 1 s (doubling, capped) and its give-up says to lower
    the concurrency."""
    key = "chunks/ab/abc"
    fake.objects[key] = fake.objects["k"] = (b"data", '"e0"')
    fake.fail["get"] = [throttled("503 SlowDown"), TransientError("reset"),
                        throttled("503 SlowDown")]
    store = wrap(fake, rec, base_delay=0.2, max_delay=10.0)
    assert store.get(key) == b"data"
    assert rec.sleeps == pytest.approx([0.5 * 1.0, 0.5 * 0.4, 0.5 * 4.0])
    # not a chunk (a manifest's commit): the short backoff, which fits a checkpointer's grace
    # for a commit under way at its exit deadline
    rec.sleeps.clear()
    fake.fail["get"] = [throttled("503 SlowDown")]
    assert store.get("k") == b"data"
    assert rec.sleeps == pytest.approx([0.5 * 0.2])
    fake.fail["get"] = [throttled(f"503 SlowDown #{i}") for i in range(1, 4)]
    with pytest.raises(TransferError) as info:
        wrap(fake, rec, attempts=3).get("k")
    assert "lower the concurrency" in info.value.hint and "connectivity" not in info.value.hint
    fake.fail["get"] = [TransientError(f"reset #{i}") for i in range(1, 4)]
    with pytest.raises(TransferError) as info:
        wrap(fake, rec, attempts=3).get("k")
    assert "check connectivity" in info.value.hint


@pytest.mark.parametrize("error", [NotFound("gone"), PreconditionFailed("lost"),
                                   AccessDenied("no"), TransferError("permanent"),
                                   UsageError("bad")], ids=lambda e: type(e).__name__)
def test_answers_are_not_retried(fake: FakeStore, rec: Recorder, error: Exception) -> None:
    fake.fail["put"] = [error]
    store = wrap(fake, rec)
    with pytest.raises(type(error)) as info:
        store.put("k", b"x")
    assert info.value is error
    assert fake.count("put") == 1
    assert rec.sleeps == []


def test_on_retry_is_a_settable_attribute(fake: FakeStore, rec: Recorder) -> None:
    store = RetryingStore(fake, sleep=rec.sleep, rand=lambda: 0.0)
    fake.fail["create_multipart"] = [TransientError("x")]
    store.create_multipart("k")  # no callback yet: fine
    events: list[tuple[str, int]] = []
    store.on_retry = lambda key, attempt, error, delay: events.append((key, attempt))
    fake.fail["create_multipart"] = [TransientError("x")]
    store.create_multipart("k2")
    assert events == [("k2", 1)]


def test_invalid_attempts_refused(fake: FakeStore) -> None:
    with pytest.raises(UsageError):
        RetryingStore(fake, attempts=0)


def test_backend_extras_reachable_through_wrapper(fake: FakeStore) -> None:
    store = RetryingStore(fake)
    assert store.extra_attribute == "reachable"
    assert store.url == fake.url
    with pytest.raises(AttributeError):
        store.no_such_attribute  # noqa: B018


# ---- conditional writes whose response was lost ------------------------------------------------

def test_if_none_match_put_that_landed_before_a_lost_response_succeeds(
        fake: FakeStore, rec: Recorder) -> None:
    fake.fail["put"] = [lost_response()]
    store = wrap(fake, rec)
    etag = store.put("versions/0001.json", b"manifest A", if_none_match=True)
    assert fake.objects["versions/0001.json"] == (b"manifest A", etag)
    assert fake.count("put") == 2  # the retry saw PreconditionFailed (our own write)


def test_if_none_match_race_lost_during_retry_still_fails(fake: FakeStore) -> None:
    fake.fail["put"] = [TransientError("timeout")]  # fails without writing anything

    def other_writer_wins_meanwhile(seconds: float) -> None:
        fake.objects["v"] = (b"manifest B", '"other"')

    store = RetryingStore(fake, sleep=other_writer_wins_meanwhile, rand=lambda: 0.5)
    with pytest.raises(PreconditionFailed):
        store.put("v", b"manifest A", if_none_match=True)
    assert fake.objects["v"][0] == b"manifest B"
    assert fake.count("get_with_etag") == 1  # it did look before concluding


def test_precondition_failure_on_first_attempt_is_not_second_guessed(
        fake: FakeStore, rec: Recorder) -> None:
    fake.objects["v"] = (b"same bytes", '"e0"')
    store = wrap(fake, rec)
    with pytest.raises(PreconditionFailed):
        store.put("v", b"same bytes", if_none_match=True)
    assert fake.count("get_with_etag") == 0  # no transient failure: a genuine lost race


def test_if_match_put_that_landed_before_a_lost_response_succeeds(
        fake: FakeStore, rec: Recorder) -> None:
    fake.objects["alias"] = (b"v1", '"e0"')
    fake.fail["put"] = [lost_response()]
    store = wrap(fake, rec)
    etag = store.put("alias", b"v2", if_match='"e0"')
    assert fake.objects["alias"] == (b"v2", etag)


def test_unconditional_put_is_simply_retried(fake: FakeStore, rec: Recorder) -> None:
    fake.fail["put"] = [lost_response(), TransientError("x")]
    store = wrap(fake, rec)
    etag = store.put("k", b"data")
    assert fake.objects["k"] == (b"data", etag)
    assert fake.count("put") == 3


def test_complete_multipart_that_landed_before_a_lost_response_succeeds(
        fake: FakeStore, rec: Recorder) -> None:
    store = wrap(fake, rec)
    uid = store.create_multipart("big")
    part = store.upload_part("big", uid, 1, b"abc")
    fake.fail["complete_multipart"] = [lost_response()]
    etag = store.complete_multipart("big", uid, [(1, part)], if_none_match=True)
    assert fake.objects["big"] == (b"abc", etag)


def test_complete_multipart_precondition_with_upload_still_pending_fails(
        fake: FakeStore, rec: Recorder) -> None:
    store = wrap(fake, rec)
    uid = store.create_multipart("big")
    part = store.upload_part("big", uid, 1, b"abc")
    fake.objects["big"] = (b"someone else", '"x"')
    fake.fail["complete_multipart"] = [TransientError("timeout")]
    with pytest.raises(PreconditionFailed):
        store.complete_multipart("big", uid, [(1, part)], if_none_match=True)
    assert fake.objects["big"][0] == b"someone else"


# ---- everything else is wrapped too -----------------------------------------------------------

def test_every_single_call_method_is_retried(fake: FakeStore, rec: Recorder) -> None:
    store = wrap(fake, rec)
    fake.objects["k"] = (b"0123456789", '"e0"')
    calls: dict[str, Callable[[], Any]] = {
        "get": lambda: store.get("k"),
        "get_range": lambda: store.get_range("k", 2, 3),
        "get_with_etag": lambda: store.get_with_etag("k"),
        "stat": lambda: store.stat("k"),
        "put": lambda: store.put("k2", b"x"),
        "create_multipart": lambda: store.create_multipart("m"),
        "abort_multipart": lambda: store.abort_multipart("m", "nope"),
    }
    for method, call in calls.items():
        fake.fail[method] = [TransientError("blip")]
        call()
        assert fake.count(method) == 2, method
    assert store.exists("k") and not store.exists("missing")


def test_delete_retries_the_same_keys_from_a_one_shot_iterator(
        fake: FakeStore, rec: Recorder) -> None:
    for k in "abc":
        fake.objects[k] = (b"", '"e"')
    fake.fail["delete"] = [TransientError("blip")]
    store = wrap(fake, rec)
    store.delete(iter(["a", "b", "c"]))
    assert fake.objects == {}
    assert [arg for m, arg in fake.calls if m == "delete"] == [["a", "b", "c"]] * 2
    store.delete([])
    assert fake.count("delete") == 2  # nothing to send


# ---- listings ----------------------------------------------------------------------------------

def test_list_resumes_after_the_last_key_yielded(fake: FakeStore, rec: Recorder) -> None:
    keys = [f"k{i:02d}" for i in range(10)]
    for k in keys:
        fake.objects[k] = (b"", '"e"')
    fake.list_fail_after = [3, 4]
    store = wrap(fake, rec)
    assert [i.key for i in store.list()] == keys  # each key exactly once
    assert [arg for m, arg in fake.calls if m == "list"] == [None, "k02", "k06"]
    assert [r[1] for r in rec.retries] == [1, 1]  # progress resets the failure count


def test_list_passes_start_after_through(fake: FakeStore, rec: Recorder) -> None:
    for k in ("a", "b", "c"):
        fake.objects[k] = (b"", '"e"')
    assert [i.key for i in wrap(fake, rec).list(start_after="a")] == ["b", "c"]


def test_list_gives_up_when_no_progress(fake: FakeStore, rec: Recorder) -> None:
    fake.objects["p/k"] = (b"", '"e"')
    fake.list_fail_after = [0, 0, 0]
    store = wrap(fake, rec, attempts=3)
    with pytest.raises(TransferError) as info:
        list(store.list("p/"))
    assert "3 attempts" in str(info.value) and "fake://lake/p/" in str(info.value)


def test_list_prefixes_restart_skips_what_was_yielded(fake: FakeStore, rec: Recorder) -> None:
    for k in ("p/a/1", "p/b/1", "p/c/1", "p/d/1"):
        fake.objects[k] = (b"", '"e"')
    fake.list_fail_after = [2]
    store = wrap(fake, rec)
    assert list(store.list_prefixes("p/")) == ["p/a/", "p/b/", "p/c/", "p/d/"]
    assert fake.count("list_prefixes") == 2
