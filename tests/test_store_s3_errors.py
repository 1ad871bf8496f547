"""S3Store's translation of S3/botocore failures into ckptlake errors, and message hygiene.

Driven by botocore's Stubber (exact server answers, no network), a refused local port (real
connection errors), a local HTTP server that stalls (real read timeouts), moto, and SeaweedFS
with a wrong secret (a real signature check).
"""
from __future__ import annotations

import http.server
import io
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import botocore.exceptions as bex
import pytest
import urllib3.exceptions
from botocore.response import StreamingBody
from botocore.stub import Stubber

import ckptlake
from ckptlake.errors import (AccessDenied, NotFound, PreconditionFailed, TransferError,
                             TransientError, UsageError)
from ckptlake.store import open_store
from ckptlake.store.retry import RetryingStore
from ckptlake.store.s3 import S3Store

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSecretKey99"
TOKEN = "FwoGZXIvYXdzEJr//////////wEaDSessionTokenValue0123456789"


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Store]:
    """An S3Store whose credentials are recognisable secrets; its client never hits a network."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    s = S3Store("bucket", "pre/fix", endpoint_url="http://127.0.0.1:9")
    yield s
    s.close()


@pytest.fixture
def stub(store: S3Store) -> Iterator[Stubber]:
    with Stubber(store._client) as stubber:
        yield stubber


def _no_secrets(error: BaseException) -> None:
    text = f"{error} {getattr(error, 'hint', '')} {error!r}"
    for secret in (SECRET, TOKEN, "deadbeefcafe"):
        assert secret not in text


# ---- ClientError codes ------------------------------------------------------------------------

@pytest.mark.parametrize("code,status,expected", [
    ("NoSuchKey", 404, NotFound),
    ("404", 404, NotFound),
    ("AccessDenied", 403, AccessDenied),
    ("InvalidAccessKeyId", 403, AccessDenied),
    ("SignatureDoesNotMatch", 403, AccessDenied),
    ("ExpiredToken", 400, AccessDenied),
    ("SlowDown", 503, TransientError),
    ("ServiceUnavailable", 503, TransientError),
    ("InternalError", 500, TransientError),
    ("RequestTimeout", 400, TransientError),
    ("BadGateway", 502, TransientError),
    ("GatewayTimeout", 504, TransientError),
    ("PreconditionFailed", 412, PreconditionFailed),
    ("ConditionalRequestConflict", 409, PreconditionFailed),
])
def test_client_error_mapping(store: S3Store, stub: Stubber, code: str, status: int,
                              expected: type[Exception]) -> None:
    stub.add_client_error("get_object", service_error_code=code, http_status_code=status)
    with pytest.raises(expected) as info:
        store.get("dir/obj")
    assert "s3://bucket/pre/fix/dir/obj" in str(info.value)
    if code == "ExpiredToken":  # right credentials, session over: not "configure them"
        assert "session token has expired" in (info.value.hint or "")
    elif expected is AccessDenied:
        assert "--profile" in (info.value.hint or "")
    if expected is TransientError:  # a "slow down" is backed off longer (store/retry.py)
        assert info.value.throttled == (code == "SlowDown")


def test_no_such_bucket_is_not_found_with_hint(store: S3Store, stub: Stubber) -> None:
    stub.add_client_error("list_objects_v2", service_error_code="NoSuchBucket",
                          http_status_code=404)
    with pytest.raises(NotFound) as info:
        list(store.list("x/"))
    assert "bucket" in str(info.value).lower()
    assert info.value.hint == "create the bucket or fix --lake"


def test_unknown_client_error_is_permanent(store: S3Store, stub: Stubber) -> None:
    stub.add_client_error("put_object", service_error_code="InvalidStorageClass",
                          service_message="The storage class you specified is not valid",
                          http_status_code=400)
    with pytest.raises(TransferError) as info:
        store.put("k", b"x")
    assert not isinstance(info.value, TransientError)
    assert "InvalidStorageClass" in str(info.value)
    assert "storage class you specified" in str(info.value)


def test_if_match_on_missing_key_is_precondition_failed(store: S3Store, stub: Stubber) -> None:
    """AWS answers If-Match on an absent key with 404; the contract says PreconditionFailed."""
    stub.add_client_error("put_object", service_error_code="NoSuchKey", http_status_code=404)
    with pytest.raises(PreconditionFailed):
        store.put("alias", b"x", if_match='"abc"')


def test_conditional_headers_are_sent(store: S3Store, stub: Stubber) -> None:
    stub.add_response("put_object", {"ETag": '"new"'},
                      {"Bucket": "bucket", "Key": "pre/fix/k", "Body": b"x", "IfNoneMatch": "*"})
    stub.add_response("put_object", {"ETag": '"newer"'},
                      {"Bucket": "bucket", "Key": "pre/fix/k", "Body": b"y", "IfMatch": '"new"'})
    assert store.put("k", b"x", if_none_match=True) == '"new"'
    assert store.put("k", bytearray(b"y"), if_match='"new"') == '"newer"'
    stub.assert_no_pending_responses()


def test_range_past_end_is_empty(store: S3Store, stub: Stubber) -> None:
    stub.add_client_error("get_object", service_error_code="InvalidRange", http_status_code=416)
    assert store.get_range("k", 100, 10) == b""


# ---- bodies ------------------------------------------------------------------------------------

def test_short_body_is_transient(store: S3Store, stub: Stubber) -> None:
    body = StreamingBody(io.BytesIO(b"abc"), 3)  # the stream itself does not notice
    stub.add_response("get_object", {"Body": body, "ContentLength": 10, "ETag": '"e"'})
    with pytest.raises(TransientError) as info:
        store.get("k")
    assert "3 of 10" in str(info.value)


def test_incomplete_read_is_transient(store: S3Store, stub: Stubber) -> None:
    body = StreamingBody(io.BytesIO(b"abc"), 10)  # botocore raises IncompleteReadError
    stub.add_response("get_object", {"Body": body, "ContentLength": 10, "ETag": '"e"'})
    with pytest.raises(TransientError):
        store.get("k")


class _BrokenStream(io.RawIOBase):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def read(self, size: int = -1) -> bytes:
        raise self.error


@pytest.mark.parametrize("error", [
    urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead"),
    bex.ResponseStreamingError(error="connection reset"),
    ConnectionResetError(104, "Connection reset by peer"),
], ids=lambda e: type(e).__name__)
def test_errors_while_streaming_the_body_are_transient(store: S3Store, stub: Stubber,
                                                       error: BaseException) -> None:
    stub.add_response("get_object", {"Body": StreamingBody(_BrokenStream(error), 10),
                                     "ContentLength": 10, "ETag": '"e"'})
    with pytest.raises(TransientError):
        store.get("k")


# ---- transport and credential errors -------------------------------------------------------------

@pytest.mark.parametrize("error", [
    bex.EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
    bex.ConnectTimeoutError(endpoint_url="http://127.0.0.1:9"),
    bex.ReadTimeoutError(endpoint_url="http://127.0.0.1:9"),
    bex.ConnectionClosedError(endpoint_url="http://127.0.0.1:9"),
], ids=lambda e: type(e).__name__)
def test_transport_errors_are_transient(store: S3Store, monkeypatch: pytest.MonkeyPatch,
                                        error: BaseException) -> None:
    def fail(**kwargs: Any) -> None:
        raise error

    monkeypatch.setattr(store._client, "head_object", fail)
    with pytest.raises(TransientError) as info:
        store.stat("k")
    assert "s3://bucket/pre/fix/k" in str(info.value)


# ---- timeouts: configurable, and retried by the one retry layer ---------------------------------

class _StallingS3(http.server.BaseHTTPRequestHandler):
    """GET answers BODY; the first `stalls` requests stop (before the head or mid-body) for
    longer than the client's read timeout."""

    protocol_version = "HTTP/1.1"
    BODY = bytes(range(256)) * 64  # 16 KiB
    where = "head"
    stalls = 1
    seen: list[str] = []
    release = threading.Event()

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        stall = len(self.seen) <= self.stalls
        if stall and self.where == "head":
            self.release.wait(10)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.BODY)))
        self.send_header("ETag", '"e"')
        self.end_headers()
        if stall and self.where == "body":
            self.wfile.write(self.BODY[:1000])
            self.wfile.flush()
            self.release.wait(10)
        try:
            self.wfile.write(self.BODY if not stall or self.where == "head" else self.BODY[1000:])
        except OSError:  # the client gave up on this connection: what a timeout does
            pass


@pytest.fixture
def stalling_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_StallingS3]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    handler = type("Handler", (_StallingS3,), {"seen": [], "release": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    handler.endpoint_url = f"http://127.0.0.1:{server.server_port}"  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()


class _StallingUpload(http.server.BaseHTTPRequestHandler):
    """PUT stores nothing and answers an ETag; the first `stalls` requests stop taking the body
    (a stalled upload: the client's send blocks once the socket buffers are full)."""

    protocol_version = "HTTP/1.1"
    stalls = 1
    seen: list[int] = []
    release = threading.Event()

    def log_message(self, *args: Any) -> None:
        pass

    def do_PUT(self) -> None:
        type(self).seen.append(0)
        length = int(self.headers["Content-Length"])
        if len(self.seen) <= self.stalls:
            self.release.wait(10)
            self.close_connection = True
            return
        got = 0
        while got < length:
            piece = self.rfile.read(min(1 << 20, length - got))
            if not piece:
                return
            got += len(piece)
        self.seen[-1] = got
        self.send_response(200)
        self.send_header("ETag", '"e"')
        self.send_header("Content-Length", "0")
        self.end_headers()


class _SmallWindowServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # A small receive window (inherited by accepted sockets): a stalled upload blocks the
        # client after a few hundred KiB instead of after megabytes of kernel buffers.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        super().server_bind()


def test_timeouts_reach_the_client() -> None:
    default = S3Store("bucket", "p", endpoint_url="http://127.0.0.1:9")
    assert (default._client.meta.config.connect_timeout,
            default._client.meta.config.read_timeout) == (10, 60)
    tuned = open_store("s3://bucket/p", endpoint_url="http://127.0.0.1:9", connect_timeout=1.5,
                       read_timeout=2.5)
    assert (tuned.inner._client.meta.config.connect_timeout,
            tuned.inner._client.meta.config.read_timeout) == (1.5, 2.5)


def test_open_takes_timeouts_from_the_config_and_its_arguments(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CKPTLAKE_LAKE", raising=False)
    config = tmp_path / "ckptlake.yaml"
    config.write_text("lake: s3://bucket/p\nendpoint_url: http://127.0.0.1:9\n"
                      "connect_timeout: 3\nread_timeout: 90s\n", encoding="utf-8")

    def timeouts(lake: Any) -> tuple[float, float]:
        cfg = lake.store.inner._client.meta.config
        return cfg.connect_timeout, cfg.read_timeout

    with ckptlake.open(config=str(config)) as lake:
        assert timeouts(lake) == (3, 90)
    with ckptlake.open(config=str(config), read_timeout=2, connect_timeout=0.5) as lake:
        assert timeouts(lake) == (0.5, 2)
    config.write_text("lake: s3://bucket/p\nendpoint_url: http://127.0.0.1:9\n",
                      encoding="utf-8")
    with ckptlake.open(config=str(config)) as lake:
        assert timeouts(lake) == (10, 60)
    for bad in ({"read_timeout": 0}, {"connect_timeout": -1}, {"read_timeout": float("nan")},
                {"read_timeout": "60"}, {"read_timeout": 3601}):
        with pytest.raises(UsageError) as info:
            ckptlake.open(config=str(config), **bad)  # type: ignore[arg-type]
        assert "timeout" in str(info.value)


@pytest.mark.parametrize("method", ["get", "get_into"])
@pytest.mark.parametrize("where", ["head", "body"])
def test_read_timeout_is_transient_and_retried(stalling_endpoint: type[_StallingS3], where: str,
                                               method: str) -> None:
    """A response that stops for longer than read_timeout -- before its head (botocore's
    ReadTimeoutError) or in the middle of the body (urllib3's, while streaming) -- fails that
    attempt with a TransientError; RetryingStore reports the retry and the next attempt, on a
    fresh connection, returns the whole object."""
    stalling_endpoint.where = where
    endpoint = stalling_endpoint.endpoint_url  # type: ignore[attr-defined]
    inner = S3Store("bucket", "p", endpoint_url=endpoint, read_timeout=0.3)
    with pytest.raises(TransientError) as info:
        inner.get("k") if method == "get" else inner.get_into("k", bytearray(1 << 16))
    assert "timeout" in str(info.value).lower(), info.value
    assert "s3://bucket/p/k" in str(info.value)

    stalling_endpoint.seen.clear()
    retries: list[tuple[str, int, str]] = []
    store = RetryingStore(inner, sleep=lambda _: None,
                          on_retry=lambda key, attempt, error, delay:
                          retries.append((key, attempt, error)))
    got = store.get("k") if method == "get" else store.get_into("k", bytearray(1 << 16))
    assert bytes(got) == _StallingS3.BODY
    assert stalling_endpoint.seen == ["/bucket/p/k"] * 2
    assert len(retries) == 1 and retries[0][:2] == ("k", 1)
    assert "timeout" in retries[0][2].lower()


def test_stalled_upload_is_bounded_by_connect_timeout_and_retried(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib3 applies the *connect* timeout while sending a request, body included (the read
    timeout starts once the request is sent): a server that stops taking an upload's body
    fails the attempt after connect_timeout -- as a ConnectionClosedError, transient -- and the
    retry sends it again, whole."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    handler = type("Handler", (_StallingUpload,), {"seen": [], "release": threading.Event()})
    server = _SmallWindowServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    body = bytes(8 << 20)
    try:
        inner = S3Store("bucket", "p", endpoint_url=f"http://127.0.0.1:{server.server_port}",
                        connect_timeout=0.5, read_timeout=30)
        retries: list[str] = []
        store = RetryingStore(inner, sleep=lambda _: None,
                              on_retry=lambda key, attempt, error, delay: retries.append(error))
        began = time.monotonic()
        assert store.put("k", body) == '"e"'
        assert time.monotonic() - began < 10  # neither read_timeout nor the stall waited out
        assert handler.seen == [0, len(body)]
        assert len(retries) == 1 and "s3://bucket/p/k: put: " in retries[0]
        assert "ConnectionClosedError" in retries[0] or "timeout" in retries[0].lower()
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()


def test_connection_refused_for_real(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = S3Store("bucket", "", endpoint_url=f"http://127.0.0.1:{port}")
    with pytest.raises(TransientError) as info:
        store.get("k")
    assert "s3://bucket/k" in str(info.value)


def test_missing_credentials_are_access_denied(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    store = S3Store("bucket", "p", endpoint_url="http://127.0.0.1:9")
    with pytest.raises(AccessDenied) as info:
        store.get("k")
    assert "credentials" in str(info.value).lower()
    assert "--profile" in (info.value.hint or "")


def test_unknown_profile_is_usage_error() -> None:
    with pytest.raises(UsageError) as info:
        S3Store("bucket", "p", profile="no-such-profile-here")
    assert "no-such-profile-here" in str(info.value)


def test_unknown_profile_from_the_environment_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """It said "AWS profile None not found" (the --profile argument, not given)."""
    monkeypatch.setenv("AWS_PROFILE", "env-profile-nowhere")
    with pytest.raises(UsageError) as info:
        S3Store("bucket", "p", endpoint_url="http://127.0.0.1:9")
    assert "'env-profile-nowhere' ($AWS_PROFILE)" in str(info.value)


def test_invalid_endpoint_is_usage_error() -> None:
    with pytest.raises(UsageError):
        S3Store("bucket", "p", endpoint_url="not a url")


# ---- delete batches ----------------------------------------------------------------------------

def test_delete_batches_and_reports_errors(store: S3Store, stub: Stubber) -> None:
    keys = [f"k{i:04d}" for i in range(1500)]
    stub.add_response("delete_objects", {}, {
        "Bucket": "bucket",
        "Delete": {"Objects": [{"Key": f"pre/fix/{k}"} for k in keys[:1000]], "Quiet": True}})
    stub.add_response("delete_objects", {"Errors": [
        {"Key": "pre/fix/k1200", "Code": "NoSuchKey", "Message": "gone already"},
        {"Key": "pre/fix/k1234", "Code": "AccessDenied", "Message": "Access Denied"}]}, {
        "Bucket": "bucket",
        "Delete": {"Objects": [{"Key": f"pre/fix/{k}"} for k in keys[1000:]], "Quiet": True}})
    with pytest.raises(AccessDenied) as info:
        store.delete(iter(keys))
    assert "s3://bucket/pre/fix/k1234" in str(info.value)
    stub.assert_no_pending_responses()


def test_delete_ignores_missing_key_errors(store: S3Store, stub: Stubber) -> None:
    stub.add_response("delete_objects", {"Errors": [
        {"Key": "pre/fix/a", "Code": "NoSuchKey", "Message": "gone"}]})
    store.delete(["a"])
    stub.assert_no_pending_responses()  # (the request was sent)


# ---- secrets never leak --------------------------------------------------------------------------

def test_messages_never_contain_secrets(store: S3Store, stub: Stubber) -> None:
    leaky = (f"Denied for https://bucket.s3.amazonaws.com/k?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE"
             f"%2F20260101&X-Amz-Signature=deadbeefcafe&X-Amz-Security-Token={TOKEN} "
             f"secret was {SECRET}")
    stub.add_client_error("get_object", service_error_code="AccessDenied",
                          service_message=leaky, http_status_code=403)
    stub.add_client_error("put_object", service_error_code="SignatureDoesNotMatch",
                          service_message=f"The request signature we calculated does not "
                                          f"match (key {SECRET})",
                          service_error_meta={"SignatureProvided": "deadbeefcafe",
                                              "StringToSign": "AWS4-HMAC-SHA256 deadbeefcafe"},
                          http_status_code=403)
    for call in (lambda: store.get("k"), lambda: store.put("k", b"x")):
        with pytest.raises(AccessDenied) as info:
            call()
        _no_secrets(info.value)
    assert SECRET not in repr(store) and SECRET not in store.url


# ---- bucket region -------------------------------------------------------------------------------

def test_bucket_region_from_header(store: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    answer = {"ResponseMetadata": {"HTTPHeaders": {"x-amz-bucket-region": "eu-west-3"}}}
    monkeypatch.setattr(store._client, "head_bucket", lambda **kw: answer)
    assert store.bucket_region() == "eu-west-3"


def test_bucket_region_from_refusal_header(store: S3Store, stub: Stubber) -> None:
    stub.add_client_error("head_bucket", service_error_code="403", http_status_code=403,
                          response_meta={"HTTPHeaders": {"x-amz-bucket-region": "ap-south-1"}})
    assert store.bucket_region() == "ap-south-1"
    stub.add_client_error("head_bucket", service_error_code="403", http_status_code=403)
    assert store.bucket_region() is None
    stub.add_client_error("head_bucket", service_error_code="404", http_status_code=404)
    with pytest.raises(NotFound) as info:
        store.bucket_region()
    assert info.value.hint == "create the bucket or fix --lake"


def test_bucket_region_on_moto(moto_store: S3Store) -> None:
    assert moto_store.bucket_region() == "us-east-1"


# ---- the same, against servers -----------------------------------------------------------------

def test_moto_missing_bucket(moto_store: S3Store) -> None:
    other = S3Store("no-such-bucket-here", "p")
    with pytest.raises(NotFound) as info:
        other.get("k")
    assert info.value.hint == "create the bucket or fix --lake"
    with pytest.raises(NotFound):
        list(other.list())


def test_seaweedfs_wrong_secret_is_access_denied_without_leaking(
        seaweedfs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # the server expects "testing"
    store = S3Store(seaweedfs.bucket, "p", endpoint_url=seaweedfs.endpoint_url)
    with pytest.raises(AccessDenied) as info:
        store.put("k", b"x")
    _no_secrets(info.value)
    assert "s3://ckptlake-test/p/k" in str(info.value)


def test_seaweedfs_missing_bucket(seaweedfs: Any) -> None:
    store = S3Store("no-such-bucket-here", "p", endpoint_url=seaweedfs.endpoint_url)
    with pytest.raises(NotFound) as info:
        store.get("k")
    assert info.value.hint == "create the bucket or fix --lake"


def test_a_ranged_read_answered_with_the_whole_object_is_refused(moto_store: Any) -> None:
    """A server that ignores Range sends the whole object: that must not pass for the range,
    neither as bytes (get_range) nor into a buffer (get_range_into)."""
    moto_store.put("r", bytes(range(100)))

    def drop_content_range(parsed: dict, **_: Any) -> None:
        parsed.pop("ContentRange", None)

    moto_store._client.meta.events.register("after-call.s3.GetObject", drop_content_range)
    with pytest.raises(TransferError, match="ignored the Range header"):
        moto_store.get_range("r", 10, 5)
    with pytest.raises(TransferError, match="ignored the Range header"):
        moto_store.get_range_into("r", 10, bytearray(5))
    assert moto_store.get("r") == bytes(range(100))  # whole reads are unaffected


@pytest.mark.parametrize("var", ["AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"])
def test_a_malformed_aws_file_is_a_usage_error_not_a_transfer_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    """Exit 8 ("storage unreachable") told a CI wrapper to retry what no retry mends."""
    from typer.testing import CliRunner

    from ckptlake.cli.app import app

    bad = tmp_path / "aws"
    bad.write_text("[default\nregion=us-east-1\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(var, str(bad))
    r = CliRunner().invoke(app, ["ls", "--lake", "s3://mybucket/lake", "--endpoint-url",
                                 "http://127.0.0.1:9", "--json"])
    assert r.exit_code == 2, r.output
    assert f"Unable to parse config file: {bad}" in r.output and "UsageError" in r.output


# ---- listing answers that are no listing -------------------------------------------------------

def test_a_listing_answered_without_a_listing_is_a_transient_error(store: S3Store,
                                                                   stub: Stubber) -> None:
    """A 200 whose body held no ListBucketResult (a gateway's empty answer) parsed as a page
    without keys: ls said "no artifacts", and gc condemned and swept every chunk."""
    stub.add_response("list_objects_v2", {})
    with pytest.raises(TransientError, match="answered without a listing"):
        list(store.list("chunks/"))
    for _ in range(3):
        stub.add_response("list_objects_v2", {})
    retrying = RetryingStore(store, attempts=3, base_delay=0)
    with pytest.raises(TransferError, match="answered without a listing"):
        list(retrying.list("chunks/"))
    stub.add_response("list_multipart_uploads", {})
    with pytest.raises(TransientError, match="answered without a listing"):
        list(store.list_multipart(""))
    stub.add_response("list_objects_v2", {"IsTruncated": False, "KeyCount": 0})
    assert list(store.list("chunks/")) == []  # a real empty listing is one


def test_a_listing_whose_markers_cycle_ends(store: S3Store, stub: Stubber) -> None:
    """Tokens T0, T1, T0, ...: botocore catches only a token repeated at once; this listed
    for ever."""
    def page(token: str, key: str) -> dict[str, Any]:
        return {"IsTruncated": True, "NextContinuationToken": token, "KeyCount": 1,
                "Contents": [{"Key": f"pre/fix/{key}", "Size": 1, "ETag": '"e"',
                              "LastModified": datetime(2026, 12, 1, tzinfo=timezone.utc)}]}

    stub.add_response("list_objects_v2", page("T0", "a"))
    stub.add_response("list_objects_v2", page("T1", "b"))
    stub.add_response("list_objects_v2", page("T0", "c"))
    with pytest.raises(TransferError, match="repeats a continuation marker"):
        list(store.list(""))
    truncated = page("T0", "a")
    del truncated["NextContinuationToken"]  # "more", but not where: botocore stops there
    stub.add_response("list_objects_v2", truncated)
    with pytest.raises(TransientError, match="goes on but not where"):
        list(store.list(""))


# ---- one stale answer about a manifest is not the last word --------------------------------

class _StaleOnce:
    """A MemoryStore whose next HEAD (or GET) of a manifest says it is absent, once."""

    def __init__(self) -> None:
        from ckptlake.store.memory import MemoryStore

        class Store(MemoryStore):
            stale_stat = stale_get = False

            def stat(self, key: str):  # type: ignore[no-untyped-def]
                if self.stale_stat and "/@v/" in key:
                    self.stale_stat = False
                    raise NotFound(f"{key}: not found")
                return super().stat(key)

            stale_404 = False

            def get(self, key: str) -> bytes:
                if self.stale_get and "/@v/" in key:
                    self.stale_get = False
                    return b""  # a 200 with an empty body
                if self.stale_404 and "/@v/" in key:
                    self.stale_404 = False
                    raise NotFound(f"{key}: not found")
                return super().get(key)

        self.store = Store()


def test_one_stale_answer_does_not_make_a_version_lost(tmp_path: Path) -> None:
    """A gateway's single stale 404 for the HEAD before placing (or an empty 200 for the
    manifest) made pull say the intact version "is lost" and advise `ckptlake rm` for it."""
    from ckptlake.lake import Lake

    store = _StaleOnce().store
    lake = Lake(store)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    lake.push(src, "exp/a")
    store.stale_stat = True
    assert lake.pull("exp/a@v1", tmp_path / "o1").version == 1
    assert (tmp_path / "o1" / "a.txt").read_text() == "a"
    store.stale_get = True
    assert lake.show("exp/a@v1").version == 1
    store.stale_404 = True
    assert lake.show("exp/a@v1").version == 1
    store.stale_404 = True
    assert lake.pull("exp/a@v1", tmp_path / "o2").version == 1
    from ckptlake.format import layout

    store.delete([layout.version_key("exp/a", 1)])  # really gone: lost, as before
    with pytest.raises(NotFound, match="is lost"):
        lake.show("exp/a@v1")


# ---- a HEAD's bare 403 when the clocks differ ---------------------------------------------------

@pytest.mark.parametrize("offset_min, clock", [(-20, True), (75, True), (5, False)])
def test_a_bare_403_on_a_head_names_a_clock_off_the_servers(
        store: S3Store, stub: Stubber, offset_min: int, clock: bool) -> None:
    """S3 answers a HEAD signed with a clock 15+ minutes off with a bodiless 403: `ls`, `gc`
    and `du` start with one and sent the user after their credentials."""
    from datetime import timedelta
    from email.utils import format_datetime

    server = datetime.now(timezone.utc) + timedelta(minutes=offset_min)
    stub.add_client_error("head_object", service_error_code="", http_status_code=403,
                          response_meta={"HTTPHeaders": {"date": format_datetime(server, True)}})
    with pytest.raises(AccessDenied) as info:
        store.stat("k")
    text = str(info.value)
    assert ("clock is off" in text) == clock, text
    assert ("configure AWS credentials" in text) != clock, text
    if offset_min == 75:
        assert "clock is 1 h 15 min off" in text, text
    if offset_min == -20:
        assert "clock is 20 min off" in text, text


def test_a_bodiless_503_on_a_head_is_a_slow_down(store: S3Store, stub: Stubber) -> None:
    """A HEAD's 503 has no body, so its code is "503": it missed the throttle codes, and a
    burst on the HEADs every command and every chunk's dedup make ended as "check
    connectivity" after the short backoff."""
    stub.add_client_error("head_object", service_error_code="503", http_status_code=503)
    with pytest.raises(TransientError) as info:
        store.stat("dir/obj")
    assert info.value.throttled


def test_a_bodiless_503_on_a_get_is_no_slow_down(store: S3Store, stub: Stubber) -> None:
    """A GET's or PUT's 503 without S3's XML is a proxy's page (a gateway down): S3 says
    SlowDown in the body.  It got the slow-down backoff and the 'lower the concurrency' hint."""
    stub.add_client_error("get_object", service_error_code="503", http_status_code=503)
    with pytest.raises(TransientError) as info:
        store.get("dir/obj")
    assert not info.value.throttled
