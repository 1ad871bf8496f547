"""S3Store against servers that answer in ways a review found mishandled: redirects, body-less
refusals of a HEAD, a bad region, writes without an ETag, wrong ranges, digest mismatches.

Most answers come from a small fake S3 server (exact status, headers and body of every answer,
no network beyond 127.0.0.1); the rest from botocore's Stubber.
"""
from __future__ import annotations

import http.server
import io
import threading
from typing import Any, Callable, Iterator

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from typer.testing import CliRunner

from ckptlake.cli.app import app
from ckptlake.errors import (AccessDenied, OutcomeUnknown, TransferError, TransientError,
                             UsageError)
from ckptlake.store.retry import RetryingStore
from ckptlake.store.s3 import S3Store

Answer = tuple[int, dict[str, str], bytes]


class _FakeS3(http.server.BaseHTTPRequestHandler):
    """Answers every request with `answer(method, path)`; records what it was asked."""

    protocol_version = "HTTP/1.1"
    answer: Callable[[str, str], Answer]
    seen: list[tuple[str, str]]

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        type(self).seen.append((self.command, self.path))
        status, headers, body = type(self).answer(self.command, self.path)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _reply


class FakeS3:
    def __init__(self, answer: Callable[[str, str], Answer]) -> None:
        self.handler = type("Handler", (_FakeS3,), {"answer": staticmethod(answer), "seen": []})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self.handler)
        self.server.daemon_threads = True
        self.endpoint_url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def seen(self) -> list[tuple[str, str]]:
        return self.handler.seen

    def store(self) -> S3Store:
        return S3Store("bkt", "pfx", endpoint_url=self.endpoint_url)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_s3() -> Iterator[Callable[[Callable[[str, str], Answer]], FakeS3]]:
    servers: list[FakeS3] = []

    def start(answer: Callable[[str, str], Answer]) -> FakeS3:
        servers.append(FakeS3(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def _ls(endpoint_url: str) -> Any:
    return CliRunner().invoke(app, ["--lake", "s3://bkt/pfx", "--endpoint-url", endpoint_url,
                                    "ls"], catch_exceptions=False)


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Store]:
    s = S3Store("bucket", "pre", endpoint_url="http://127.0.0.1:9")
    yield s
    s.close()


@pytest.fixture
def stub(store: S3Store) -> Iterator[Stubber]:
    with Stubber(store._client) as stubber:
        yield stubber


# ---- 7: redirects ------------------------------------------------------------------------------

def _redirect(status: int) -> Callable[[str, str], Answer]:
    return lambda method, path: (status, {"Location": f"https://127.0.0.1:9443{path}"}, b"")


@pytest.mark.parametrize("status", [301, 307])
def test_a_redirecting_endpoint_is_one_request_and_names_the_target(
        fake_s3: Any, status: int) -> None:
    """Once botocore's region redirector asked HeadBucket again and again: ~80 requests, then
    RecursionError, an internal error."""
    server = fake_s3(_redirect(status))
    with pytest.raises(TransferError) as info:
        server.store().stat("ckptlake.json")
    assert not isinstance(info.value, TransientError)
    assert info.value.hint == ("the endpoint redirects to https://127.0.0.1:9443: use that URL "
                               "(http->https?)")
    assert len(server.seen) == 1


def test_permanent_redirect_error_names_its_endpoint(fake_s3: Any) -> None:
    body = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>PermanentRedirect</Code>"
            b"<Message>The bucket you are attempting to access must be addressed using the "
            b"specified endpoint.</Message><Endpoint>s3.example.net</Endpoint></Error>")
    server = fake_s3(lambda method, path: (301, {"Content-Type": "application/xml"}, body))
    with pytest.raises(TransferError) as info:
        server.store().get("k")
    assert "PermanentRedirect" in str(info.value)
    assert "redirects to s3.example.net" in (info.value.hint or "")
    assert len(server.seen) == 1


def test_ls_on_a_redirecting_endpoint_exits_8(fake_s3: Any) -> None:
    server = fake_s3(_redirect(301))
    result = _ls(server.endpoint_url)
    assert result.exit_code == 8, result.output
    assert "redirects to https://127.0.0.1:9443" in result.output
    assert "internal error" not in result.output
    assert len(server.seen) <= 5


def test_the_region_redirector_stays_for_aws_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.utils import S3RegionRedirectorv2

    def redirectors(s: S3Store) -> list[Any]:
        search = s._client.meta.events._emitter._handlers.prefix_search
        return [h for h in search("needs-retry.s3")
                if isinstance(getattr(h, "__self__", None), S3RegionRedirectorv2)]

    assert redirectors(S3Store("bkt", "p")) != []  # AWS: other regions are found by it
    assert redirectors(S3Store("bkt", "p", endpoint_url="http://127.0.0.1:9")) == []
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    assert redirectors(S3Store("bkt", "p")) == []


def test_recursion_in_botocore_is_a_transfer_error(store: S3Store,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def recurse(**kwargs: Any) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(store._client, "head_object", recurse)
    monkeypatch.setattr(store._client, "get_object", recurse)
    for call in (lambda: store.stat("k"), lambda: store.get("k")):
        with pytest.raises(TransferError) as info:
            call()
        assert "recursed" in str(info.value)
        assert not isinstance(info.value, TransientError)


def test_a_region_redirect_names_the_region(store: S3Store, stub: Stubber) -> None:
    stub.add_client_error("get_object", service_error_code="PermanentRedirect",
                          http_status_code=301,
                          response_meta={"HTTPHeaders": {"x-amz-bucket-region": "eu-west-3"}})
    with pytest.raises(TransferError) as info:
        store.get("k")
    assert info.value.hint == "the bucket is in region eu-west-3: pass --region eu-west-3"


# ---- 8: a HEAD refused with a bare 400 ---------------------------------------------------------

def test_bodyless_400_on_head_is_access_denied(fake_s3: Any) -> None:
    """An expired session token: S3 answers the HEAD 400 with no body (no code to read)."""
    server = fake_s3(lambda method, path: (400, {}, b""))
    s = server.store()
    with pytest.raises(AccessDenied) as info:
        s.stat("ckptlake.json")
    assert "session token" in str(info.value)
    assert "--profile" in (info.value.hint or "") and "--region" in (info.value.hint or "")
    result = _ls(server.endpoint_url)
    assert result.exit_code == 4, result.output


def test_a_400_with_a_code_keeps_its_meaning(store: S3Store, stub: Stubber) -> None:
    stub.add_client_error("get_object", service_error_code="InvalidArgument",
                          http_status_code=400)
    with pytest.raises(TransferError) as info:
        store.get("k")
    assert not isinstance(info.value, (AccessDenied, TransientError))


# ---- m1: a bad region --------------------------------------------------------------------------

def test_bad_region_is_said_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    for make in (lambda: S3Store("bkt", "p", region="eu west 1"),
                 lambda: S3Store("bkt", "p", region="eu west 1",
                                 endpoint_url="http://127.0.0.1:9")):
        with pytest.raises(UsageError) as info:
            make()
        assert "invalid region" in str(info.value)
        assert "endpoint URL" not in str(info.value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu west 1")
    with pytest.raises(UsageError, match="invalid region"):
        S3Store("bkt", "p")


# ---- m2: a write answered without an ETag ------------------------------------------------------

def test_put_without_etag_is_a_transfer_error(fake_s3: Any) -> None:
    server = fake_s3(lambda method, path: (200, {}, b""))
    s = server.store()
    with pytest.raises(TransferError) as info:
        s.put("k", b"x")
    assert not isinstance(info.value, (TransientError, OutcomeUnknown))
    assert "put: the server answered 200 (server: BaseHTTP/" in str(info.value)
    assert "without an ETag header" in str(info.value)
    with pytest.raises(OutcomeUnknown, match="the object was written"):
        s.put("k", b"x", if_none_match=True)  # a version's manifest reads it back
    with pytest.raises(TransferError, match="upload_part 1: the server answered 200"):
        s.upload_part("k", "u1", 1, b"x")


def test_complete_multipart_without_etag_is_a_transfer_error(store: S3Store,
                                                             stub: Stubber) -> None:
    stub.add_response("complete_multipart_upload", {"Bucket": "bucket", "Key": "pre/k"})
    with pytest.raises(TransferError, match="complete_multipart: the server answered"):
        store.complete_multipart("k", "u1", [(1, '"e"')])


# ---- m3: a 206 for another range ---------------------------------------------------------------

def _ranged(stub: Stubber, content_range: str, data: bytes) -> None:
    stub.add_response("get_object", {"Body": StreamingBody(io.BytesIO(data), len(data)),
                                     "ContentLength": len(data), "ContentRange": content_range,
                                     "ETag": '"e"'})


@pytest.mark.parametrize("content_range", ["bytes 20-24/100", "bytes 10-12/100",
                                           "bytes 10-19/100", "bytes */100", "nonsense"])
def test_a_range_answered_with_another_is_refused(store: S3Store, stub: Stubber,
                                                  content_range: str) -> None:
    for call in (lambda: store.get_range("k", 10, 5),
                 lambda: store.get_range_into("k", 10, bytearray(5))):
        _ranged(stub, content_range, b"abcde")
        with pytest.raises(TransferError, match="answered the range bytes=10-14") as info:
            call()
        assert not isinstance(info.value, TransientError)  # the same answer on every try


def test_a_range_clipped_at_the_end_of_the_object_is_fine(store: S3Store, stub: Stubber) -> None:
    _ranged(stub, "bytes 10-14/100", b"abcde")
    assert store.get_range("k", 10, 5) == b"abcde"
    _ranged(stub, "bytes 95-99/100", b"vwxyz")
    assert store.get_range("k", 95, 10) == b"vwxyz"
    _ranged(stub, "bytes 95-99/100", b"vwxyz")
    assert bytes(store.get_range_into("k", 95, bytearray(10))) == b"vwxyz"


# ---- m4: digest mismatches are retried; a skewed clock is named --------------------------------

@pytest.mark.parametrize("code", ["BadDigest", "XAmzContentSHA256Mismatch"])
def test_a_body_corrupted_in_transit_is_retried(store: S3Store, stub: Stubber, code: str) -> None:
    stub.add_client_error("put_object", service_error_code=code, http_status_code=400)
    stub.add_response("put_object", {"ETag": '"e"'})
    retrying = RetryingStore(store, attempts=3, sleep=lambda _: None)
    assert retrying.put("k", b"x") == '"e"'
    stub.assert_no_pending_responses()


def test_a_skewed_clock_gets_a_clock_hint(store: S3Store, stub: Stubber) -> None:
    stub.add_client_error("get_object", service_error_code="RequestTimeTooSkewed",
                          http_status_code=403)
    with pytest.raises(AccessDenied) as info:
        store.get("k")
    assert "clock" in (info.value.hint or "")
    assert "--profile" not in (info.value.hint or "")


def test_a_wrong_signing_region_is_named(store: S3Store, stub: Stubber) -> None:
    stub.add_client_error("head_object", service_error_code="AuthorizationHeaderMalformed",
                          http_status_code=400, service_error_meta={"Region": "eu-central-1"})
    with pytest.raises(TransferError) as info:
        store.stat("k")
    assert info.value.hint == "the server expects region eu-central-1: pass --region eu-central-1"


def test_a_read_timeout_mid_body_names_the_endpoint_and_the_setting() -> None:
    """urllib3 knows no endpoint for a body that stopped: 'Read timeout on endpoint URL:
    "None"' was the whole cause of a stalled read (a review)."""
    from botocore.exceptions import ReadTimeoutError

    store = S3Store("bkt", endpoint_url="http://127.0.0.1:9", read_timeout=2)
    err = store._map(ReadTimeoutError(endpoint_url="None", error="Read timed out."), "k", "get")
    assert isinstance(err, TransientError)
    assert '"None"' not in err.message
    assert "no data for 2 s (read_timeout) from http://127.0.0.1:9" in err.message
