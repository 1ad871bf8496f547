"""Copy a directory tree to/from S3 with awscrt's C S3 client (aws-c-s3), driven directly.

    python crt_transfer.py upload   [--verify] SRC_DIR BUCKET PREFIX
    python crt_transfer.py download [--verify] BUCKET PREFIX DEST_DIR

One awscrt.s3.S3Client moves all the data: PUT_OBJECT requests with send_filepath (it switches
to multipart above its threshold) and GET_OBJECT requests with recv_filepath (it splits them
into ranged GETs). Every file is submitted as one request and the client parallelises across
and within them on its own event-loop threads; at most WINDOW requests are open at a time so
that 10,000 small files do not hold 10,000 open files. Client settings are the CRT defaults
(part size, throughput target, memory limit, checksums) unless --part-size/--throughput-gbps/
--memory-limit are given (the bench never does); the settings are printed at the end, and what
the defaults come to is in bench/README.md (seen with --crt-log Debug).

Endpoint, credentials and region come from boto3's usual chain (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID/..., AWS_REGION), as in tm_transfer.py. The CRT client is not told the
endpoint directly: each request carries the endpoint's host:port as its Host header and the
path-style path /BUCKET/KEY, and TLS is off for an http:// endpoint. boto3 is used only to
list the objects of a download (ListObjectsV2); no object data goes through it.

--verify (the `crt-verify` tool in run.py, for a like-for-like line next to ckptlake, which
hashes on push and checks every byte on pull): upload stores each file's SHA-256 (hashed
before sending) as x-amz-meta-sha256; download reads every file back once it is written,
hashes it (hashlib, on a thread pool of one thread per core, overlapping the downloads still
running) and fails if any digest differs from the object's x-amz-meta-sha256 or is missing.
Runs under bench/.venv's python.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from urllib.parse import quote, urlsplit

import boto3
from awscrt import __version__ as CRT_VERSION
from awscrt.auth import AwsCredentialsProvider
from awscrt.http import HttpHeaders, HttpRequest
from awscrt.io import LogLevel, init_logging
from awscrt.s3 import S3Client, S3RequestTlsMode, S3RequestType

WINDOW = 256  # open requests at most; the client itself runs far fewer connections
META_SHA = "x-amz-meta-sha256"


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    buf = bytearray(4 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])  # releases the GIL: the pool's threads hash in parallel
    return h.hexdigest()


class Crt:
    """An S3Client bound to one endpoint, plus the bookkeeping for a window of requests."""

    def __init__(self, args: argparse.Namespace, session: boto3.Session, endpoint: str):
        url = urlsplit(endpoint)
        self.host, self.base = url.netloc, url.path.rstrip("/")
        creds = session.get_credentials()
        if creds is None:
            raise SystemExit("no AWS credentials found")
        creds = creds.get_frozen_credentials()
        self.settings = {"region": session.region_name or "us-east-1",
                         "tls_mode": S3RequestTlsMode.ENABLED if url.scheme == "https"
                         else S3RequestTlsMode.DISABLED,
                         "part_size": args.part_size, "throughput_target_gbps": args.throughput_gbps,
                         "memory_limit": args.memory_limit}
        self.client = S3Client(
            credential_provider=AwsCredentialsProvider.new_static(
                creds.access_key, creds.secret_key, creds.token),
            **self.settings)
        self.open: dict[Future, tuple] = {}  # finished_future -> (S3Request, label, on_ok)

    def path(self, bucket: str, key: str) -> str:
        return f"{self.base}/{bucket}/{quote(key, safe='/~')}"

    def submit(self, label: str, on_ok=None, **request_kwargs) -> None:
        """Start one request (after waiting for a free slot in the window); on_ok() is called
        in this thread once it has succeeded."""
        while len(self.open) >= WINDOW:
            self._reap(wait(self.open, return_when=FIRST_COMPLETED).done)
        req = self.client.make_request(**request_kwargs)
        self.open[req.finished_future] = (req, label, on_ok)  # keeps the request alive

    def drain(self) -> None:
        while self.open:
            self._reap(wait(self.open, return_when=FIRST_COMPLETED).done)

    def _reap(self, done) -> None:
        for fut in done:
            _, label, on_ok = self.open.pop(fut)
            exc = fut.exception()
            if exc is not None:
                for req, _, _ in self.open.values():
                    req.cancel()
                detail = ""
                body = getattr(exc, "body", None)
                if body:
                    detail = " " + body.decode(errors="replace")[:300]
                raise SystemExit(f"{label}: {type(exc).__name__}: {exc} "
                                 f"(HTTP {getattr(exc, 'status_code', '?')}, "
                                 f"{getattr(exc, 'operation_name', '?')}){detail}")
            if on_ok is not None:
                on_ok()

    def described(self) -> str:
        s = self.settings
        return (f"awscrt {CRT_VERSION} S3Client, tls {s['tls_mode'].name}, "
                f"part_size {s['part_size'] or 'CRT default'}, throughput_target_gbps "
                f"{s['throughput_target_gbps'] or 'CRT default'}, memory_limit "
                f"{s['memory_limit'] or 'CRT default'}, window {WINDOW}")


def upload(crt: Crt, src: Path, bucket: str, prefix: str, verify: bool) -> int:
    files = sorted(Path(d, n) for d, _, names in os.walk(src) for n in names)
    pool = ThreadPoolExecutor(os.cpu_count() or 1)
    try:
        # --verify: hash ahead of the uploads on the pool; map() yields the digests in order
        digests = pool.map(sha256_file, map(str, files)) if verify else (None for _ in files)
        for path, digest in zip(files, digests):
            key = f"{prefix}/{path.relative_to(src).as_posix()}"
            headers = HttpHeaders([("Host", crt.host), ("Content-Length", str(path.stat().st_size))])
            if digest:
                headers.add(META_SHA, digest)
            crt.submit(f"PUT {key}", type=S3RequestType.PUT_OBJECT,
                       request=HttpRequest("PUT", crt.path(bucket, key), headers),
                       send_filepath=str(path))
        crt.drain()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error: no hashing of the rest
    return len(files)


def download(crt: Crt, s3, bucket: str, prefix: str, dest: Path, verify: bool) -> int:
    expected: dict[str, str | None] = {}  # target -> x-amz-meta-sha256 of its object
    hashed: dict[str, Future] = {}  # target -> its SHA-256 as read back, on the pool
    pool = ThreadPoolExecutor(os.cpu_count() or 1)

    def remember_sha(target: str):
        def on_headers(status_code, headers, **kwargs):  # once per GET, on a CRT thread
            if 200 <= status_code < 300:
                expected[target] = next((v for k, v in headers if k.lower() == META_SHA), None)
        return on_headers

    n = 0
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):
                    continue
                target = str(dest / obj["Key"][len(prefix):])
                os.makedirs(os.path.dirname(target), exist_ok=True)
                # An empty object cannot go through GET_OBJECT here: its first ranged GET gets
                # 416 InvalidRange, and aws-c-s3 only accepts that as "empty object" when the
                # error XML carries <ActualObjectSize>0</ActualObjectSize> (as AWS S3 sends),
                # which SeaweedFS 4.48 omits. So those go as one plain GetObject, still via CRT.
                kind = {"type": S3RequestType.GET_OBJECT} if obj["Size"] else \
                    {"type": S3RequestType.DEFAULT, "operation_name": "GetObject"}
                crt.submit(f"GET {obj['Key']}", **kind,
                           request=HttpRequest("GET", crt.path(bucket, obj["Key"]),
                                               HttpHeaders([("Host", crt.host)])),
                           recv_filepath=target,
                           on_headers=remember_sha(target) if verify else None,
                           on_ok=(lambda t=target: hashed.__setitem__(t, pool.submit(sha256_file, t)))
                           if verify else None)
                n += 1
        crt.drain()
    finally:
        pool.shutdown(wait=True)
    if verify:
        bad = [t for t, f in hashed.items() if f.result() != expected.get(t)]
        if len(hashed) != n:
            raise SystemExit(f"verify: {n - len(hashed)} of {n} files were not hashed")
        if bad:
            raise SystemExit(f"verify: {len(bad)} of {n} files do not match their {META_SHA} "
                             f"(e.g. {bad[0]}: {hashed[bad[0]].result()}, "
                             f"expected {expected.get(bad[0])})")
    return n


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("op", choices=("upload", "download"))
    p.add_argument("args", nargs=3, metavar="ARG",
                   help="upload: SRC_DIR BUCKET PREFIX; download: BUCKET PREFIX DEST_DIR")
    p.add_argument("--verify", action="store_true",
                   help="upload: store each file's SHA-256 as x-amz-meta-sha256; download: "
                        "hash every written file and check it against that")
    p.add_argument("--part-size", type=int, help="bytes (default: the CRT's)")
    p.add_argument("--throughput-gbps", type=float, help="Gbit/s (default: the CRT's)")
    p.add_argument("--memory-limit", type=int, help="bytes (default: the CRT's)")
    p.add_argument("--crt-log", choices=[lvl.name for lvl in LogLevel],
                   help="awscrt log level, to stderr (diagnostics only)")
    args = p.parse_args(argv)
    if args.crt_log:
        init_logging(LogLevel[args.crt_log], "stderr")
    session = boto3.Session()
    s3 = session.client("s3")  # resolves AWS_ENDPOINT_URL like tm_transfer.py does
    crt = Crt(args, session, s3.meta.endpoint_url)
    if args.op == "upload":
        src, bucket, prefix = Path(args.args[0]), args.args[1], args.args[2].strip("/")
        n = upload(crt, src, bucket, prefix, args.verify)
    else:
        bucket, prefix, dest = args.args[0], args.args[1].strip("/") + "/", Path(args.args[2])
        n = download(crt, s3, bucket, prefix, dest, args.verify)
    print(f"{args.op}ed {n} files{' (SHA-256 verified)' if args.verify and args.op == 'download' else ''}"
          f" with {crt.described()}")


if __name__ == "__main__":
    main(sys.argv[1:])
