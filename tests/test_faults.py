"""Fault injection between the CLI and SeaweedFS (issue 3, "Fault-injection tests").

Every test runs the real CLI as a subprocess whose S3 endpoint is a FaultProxy (tests/faultproxy.py)
in front of the session's SeaweedFS, so what is measured is what went over the wire:

* push and pull of a ~290 MiB tree succeed bit-exact while connections are dropped mid-body,
  `503 SlowDown` bursts are answered and bodies stall;
* with the server down (from the start, or dying mid-push) the run fails with exit code 8, one
  error line naming the object and the attempts, and commits no version;
* kill -9 mid-push and mid-pull, then a re-run: the right result, with measurably fewer bytes
  through the proxy (and the JSON's bytes_deduplicated / bytes_resumed say why);
* kill -9 in the instant between a chunk PUT's head and its body (made deterministic): the
  empty object SeaweedFS keeps for it must not be trusted by the next push;
* a body stalled past the client's timeout fails that attempt, which is retried (the timeouts
  are set to 2 s in a config file, instead of the default 10 s / 60 s, so this takes seconds).

Sizes are the smallest that still prove the point at --concurrency 4: 8 MiB chunks keep at most
4 x 8 MiB in flight, small against the ~55% of the tree a killed run gets through.
"""
from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ckptlake.errors import EXIT_OK, EXIT_TRANSFER
from faultproxy import FaultProxy, Stats

MiB = 1024 * 1024
CONCURRENCY = "4"
CHUNK = "8MiB"
ATTEMPTS = 5  # the library's default retry budget (store/__init__.py: retry_attempts)
TIMEOUT = 2  # seconds: connect_timeout and read_timeout in the stall-past-the-timeout test
ARTIFACT = "faults/run-1/ckpt"
KILL_AT = 0.55  # fraction of the tree's bytes the proxy must have seen before kill -9


# ---- data --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tree:
    root: Path
    total: int  # bytes of all files
    digest: dict[str, tuple[int, str]]


def tree_digest(root: Path) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                while block := fh.read(4 * MiB):
                    h.update(block)
            out[p.relative_to(root).as_posix()] = (p.stat().st_size, h.hexdigest())
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    """2 x 128 MiB shards + 40 small files (packed below 1 MiB, sliced above): ~290 MiB."""
    root = tmp_path_factory.mktemp("faults") / "ckpt"
    (root / "extra" / "nested").mkdir(parents=True)
    rnd = random.Random(20240503)
    for name in ("model-00001-of-00002.bin", "model-00002-of-00002.bin"):
        with open(root / name, "wb") as fh:
            for _ in range(128):
                fh.write(rnd.randbytes(MiB))
    for i in range(40):
        sub = root / "extra" / ("nested" if i % 2 else "")
        (sub / f"shard-{i:02d}.json").write_bytes(rnd.randbytes(rnd.randint(1, 1536) * 1024))
    (root / "extra" / "empty.txt").write_bytes(b"")
    digest = tree_digest(root)
    return Tree(root, sum(size for size, _ in digest.values()), digest)


# ---- the CLI -----------------------------------------------------------------------------------

def _argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "ckptlake", *args]


def cli(env: dict[str, str], *args: str, check: int | None = EXIT_OK
        ) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(_argv(*args), env=env, capture_output=True, text=True, timeout=300)
    if check is not None:
        assert p.returncode == check, \
            f"exit {p.returncode}, expected {check}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


def push_args(tree: Tree, lake: str, *extra: str) -> list[str]:
    return ["push", str(tree.root), ARTIFACT, "--lake", lake, "--concurrency", CONCURRENCY,
            "--chunk-size", CHUNK, *extra]


def pull_args(lake: str, dest: Path, *extra: str) -> list[str]:
    return ["pull", ARTIFACT, str(dest), "--lake", lake, "--concurrency", CONCURRENCY, *extra]


def push_json(env: dict[str, str], tree: Tree, lake: str) -> dict[str, Any]:
    return json.loads(cli(env, *push_args(tree, lake, "--json")).stdout)


def pull_json(env: dict[str, str], lake: str, dest: Path) -> dict[str, Any]:
    return json.loads(cli(env, *pull_args(lake, dest, "--json")).stdout)


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("ckptlake: error:")]


def version_keys(seaweedfs: Any, lake: str) -> list[str]:
    return [k for k in _keys(seaweedfs, lake) if "/@v/" in k]


def _keys(seaweedfs: Any, lake: str) -> list[str]:
    prefix = lake.split("/", 3)[3] + "/"
    pages = seaweedfs.client().get_paginator("list_objects_v2").paginate(
        Bucket=seaweedfs.bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

def empty_chunks(seaweedfs: Any, lake: str) -> dict[str, int]:
    """Chunk objects that are empty but not named for empty content: never written whole."""
    prefix = lake.split("/", 3)[3] + "/chunks/"
    pages = seaweedfs.client().get_paginator("list_objects_v2").paginate(
        Bucket=seaweedfs.bucket, Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])
            if o["Size"] == 0 and not o["Key"].endswith(EMPTY_SHA256)}


def report(label: str, stats: Stats, tree: Tree) -> None:
    """Shown with -s (and in the failure output): the byte counts the assertions work on."""
    print(f"\n[{label}] up {stats.bytes_up / MiB:.1f} MiB ({stats.bytes_up / tree.total:.0%} of "
          f"tree), down {stats.bytes_down / MiB:.1f} MiB ({stats.bytes_down / tree.total:.0%}), "
          f"requests {stats.requests}, statuses {stats.statuses}, faults {stats.faults}")


# ---- proxy -------------------------------------------------------------------------------------

@pytest.fixture
def proxy(seaweedfs: Any) -> Iterator[FaultProxy]:
    with FaultProxy(seaweedfs.endpoint_url, seed=7) as px:
        yield px


@pytest.fixture
def env(seaweedfs: Any, proxy: FaultProxy) -> dict[str, str]:
    """The CLI's environment, with the proxy as its S3 endpoint."""
    return {**seaweedfs.env, "AWS_ENDPOINT_URL": proxy.endpoint_url}


# ---- 0. the proxy itself (no S3): framings SeaweedFS does not use, keep-alive, a cut ---------

class _Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    PAYLOAD = bytes(range(256)) * 4096  # 1 MiB

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(self.PAYLOAD), 100_000):
                piece = self.PAYLOAD[i:i + 100_000]
                self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        else:  # no length: the body ends when the connection does
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(self.PAYLOAD)
            self.close_connection = True

    def do_PUT(self) -> None:  # chunked request body, echoed back with a length
        body = b""
        while size := int(self.rfile.readline().split(b";")[0], 16):
            body += self.rfile.read(size)
            self.rfile.readline()
        self.rfile.readline()
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "12345")
        self.end_headers()


def test_proxy_relays_every_framing_and_cuts_where_told() -> None:
    origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    payload = _Origin.PAYLOAD
    try:
        with FaultProxy(f"http://127.0.0.1:{origin.server_port}") as px:
            conn = http.client.HTTPConnection("127.0.0.1", px.port, timeout=10)
            for _ in range(2):  # one keep-alive connection, several exchanges
                conn.request("GET", "/chunked")
                r = conn.getresponse()
                assert r.read() == payload and r.getheader("Transfer-Encoding") == "chunked"
                conn.request("HEAD", "/x")
                r = conn.getresponse()
                assert r.status == 200 and r.read() == b""
                conn.request("PUT", "/echo", body=iter([payload[:300_000], payload[300_000:]]),
                             encode_chunked=True)
                r = conn.getresponse()
                assert r.status == 201 and r.read() == payload
            conn.request("GET", "/close")
            assert conn.getresponse().read() == payload
            stats = px.stats()
            assert stats.connections == 1, "keep-alive was not kept"
            assert stats.requests == {"GET": 3, "HEAD": 2, "PUT": 2}
            assert stats.bytes_up == 2 * len(payload)
            assert stats.bytes_down == 5 * len(payload)

            px.drop("down", after=250_000, count=1, path="/chunked")
            conn = http.client.HTTPConnection("127.0.0.1", px.port, timeout=10)
            conn.request("GET", "/chunked")
            with pytest.raises((http.client.IncompleteRead, ConnectionError)):
                conn.getresponse().read()
            assert px.stats().faults == {"drop": 1}
            assert px.stats().bytes_down == 5 * len(payload) + 250_000
    finally:
        origin.shutdown()
        origin.server_close()


# ---- 1. faults a transfer must ride out --------------------------------------------------------

CHUNKS = r"/chunks/"


def _drop(px: FaultProxy, direction: str) -> int:
    # 4 chunk bodies cut after 3 MiB; no object more than twice (the client tries 5 times).
    px.drop(direction, after=3 * MiB, count=4, methods=["PUT" if direction == "up" else "GET"],
            path=CHUNKS, max_per_target=2)
    return 4


def _slowdown(px: FaultProxy, direction: str) -> int:
    # Two bursts on any request: at the very start (header, listing, manifest reads) and
    # in the middle of the chunk traffic.
    px.slowdown(count=4, max_per_target=2)
    px.slowdown(count=8, skip=20, max_per_target=2)
    return 12


def _stall(px: FaultProxy, direction: str) -> int:
    # Well below the default 60 s read timeout: the requests must simply wait, not fail.
    px.stall(direction, seconds=2.5, after=2 * MiB, count=2, path=CHUNKS)
    return 2


FAULTS: dict[str, tuple[str, Callable[[FaultProxy, str], int]]] = {
    "drop-mid-body": ("drop", _drop),
    "503-slowdown-bursts": ("slowdown", _slowdown),
    "stall-mid-body": ("stall", _stall),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_push_and_pull_ride_out(fault: str, seaweedfs: Any, s3_lake_url: str,
                                proxy: FaultProxy, env: dict[str, str], tree: Tree,
                                tmp_path: Path) -> None:
    kind, arm = FAULTS[fault]

    expected = arm(proxy, "up")
    pushed = push_json(env, tree, s3_lake_url)
    up = proxy.stats()
    report(f"{fault}: push", up, tree)
    assert up.faults.get(kind, 0) == expected, "the faults did not all happen"
    assert pushed["version"] == 1
    assert pushed["bytes_uploaded"] == pushed["bytes_scanned"] == tree.total
    assert len(version_keys(seaweedfs, s3_lake_url)) == 1
    if kind == "drop":  # the cut bodies were sent again, in full
        assert up.bytes_up >= tree.total + expected * 3 * MiB
        assert _most_tries("PUT", proxy) in (2, 3)
    if kind == "stall":  # a stall is not a failure: nothing was sent twice
        assert tree.total <= up.bytes_up < tree.total + 8 * MiB
        assert _most_tries("PUT", proxy) == 1
    if kind == "slowdown":
        assert up.statuses.get(503) == expected

    proxy.clear_faults()
    proxy.reset_stats()
    expected = arm(proxy, "down")
    dest = tmp_path / "restore"
    pulled = pull_json(env, s3_lake_url, dest)
    down = proxy.stats()
    report(f"{fault}: pull", down, tree)
    assert down.faults.get(kind, 0) == expected, "the faults did not all happen"
    assert pulled["bytes_downloaded"] == pulled["bytes_total"] == tree.total
    assert tree_digest(dest) == tree.digest, "pulled tree differs from the source"
    if kind == "drop":
        assert down.bytes_down >= tree.total + expected * 3 * MiB
        assert _most_tries("GET", proxy) in (2, 3)
    if kind == "stall":
        assert tree.total <= down.bytes_down < tree.total + 8 * MiB
        assert _most_tries("GET", proxy) == 1


def _most_tries(method: str, proxy: FaultProxy) -> int:
    """The most requests any one chunk saw with `method`."""
    tries = Counter(e.target for e in proxy.exchanges()
                    if e.method == method and re.search(CHUNKS, e.target))
    return max(tries.values(), default=0)


def test_stall_past_the_read_timeout_is_retried(seaweedfs: Any, s3_lake_url: str,
                                                proxy: FaultProxy, env: dict[str, str],
                                                tmp_path: Path) -> None:
    """A body that stops for longer than the client's timeout fails that attempt; the retry
    layer reports it (a retry line on stderr) and sends the request again on a new connection,
    and push and pull still succeed bit-exact.  Which timeout: urllib3 applies connect_timeout
    while sending a request (an upload's body too) and read_timeout to the response (a
    download's body), so the config sets both to 2 s; the stall (120 s) is never waited out."""
    config = tmp_path / "ckptlake.yaml"
    config.write_text(f"connect_timeout: {TIMEOUT}\nread_timeout: {TIMEOUT}\n",
                      encoding="utf-8")
    src = tmp_path / "src"
    src.mkdir()
    (src / "weights.bin").write_bytes(random.Random(9).randbytes(24 * MiB))
    small = Tree(src, 24 * MiB, tree_digest(src))
    # Long enough that a client waiting it out is told from one that gave up even on a loaded
    # machine (a passing run never waits it: the proxy ends a stall when it stops).
    stall = 60 * TIMEOUT

    proxy.stall("up", seconds=stall, after=1 * MiB, count=1, path=CHUNKS)
    began = time.monotonic()
    pushed = cli(env, *push_args(small, s3_lake_url, "--config", str(config)))
    took = time.monotonic() - began
    up = proxy.stats()
    report(f"push, one body stalled past the timeout ({took:.1f} s)", up, small)
    assert up.faults.get("stall") == 1
    target = _stalled_target("PUT", proxy)
    assert _tries("PUT", target, proxy) == 2, "the stalled upload was not retried"
    # The client blocks sending into the stalled body; urllib3 reports that send timing out
    # (after connect_timeout) as "Connection aborted" (botocore: ConnectionClosedError).
    _assert_retry_reported(pushed.stderr, target, ("timeout", "ConnectionClosedError"))
    assert TIMEOUT <= took < stall, "the push did not give up on the stall after the timeout"
    assert len(version_keys(seaweedfs, s3_lake_url)) == 1
    assert up.bytes_up >= small.total + 1 * MiB  # the stalled chunk was sent again, whole

    proxy.clear_faults()
    proxy.reset_stats()
    proxy.stall("down", seconds=stall, after=1 * MiB, count=1, path=CHUNKS)
    dest = tmp_path / "restore"
    began = time.monotonic()
    pulled = cli(env, *pull_args(s3_lake_url, dest, "--config", str(config)))
    took = time.monotonic() - began
    down = proxy.stats()
    report(f"pull, one body stalled past the timeout ({took:.1f} s)", down, small)
    assert down.faults.get("stall") == 1
    target = _stalled_target("GET", proxy)
    assert _tries("GET", target, proxy) == 2, "the stalled download was not retried"
    _assert_retry_reported(pulled.stderr, target, ("ReadTimeoutError",))
    assert TIMEOUT <= took < stall, "the pull did not give up on the stall after the timeout"
    assert tree_digest(dest) == small.digest, "pulled tree differs from the source"


def test_parts_ride_out_dropped_connections(seaweedfs: Any, s3_lake_url: str,
                                            proxy: FaultProxy, env: dict[str, str],
                                            tmp_path: Path) -> None:
    """Large chunks (32 MiB here, parts of 8 MiB from 16 MiB on): a part whose body is cut is
    sent again alone -- not its whole chunk -- and a ranged read that is cut is read again
    alone; no multipart upload is left behind."""
    config = tmp_path / "ckptlake.yaml"
    config.write_text("multipart_threshold: 16MiB\npart_size: 8MiB\n", encoding="utf-8")
    src = tmp_path / "src"
    src.mkdir()
    (src / "weights.bin").write_bytes(random.Random(11).randbytes(64 * MiB))
    small = Tree(src, 64 * MiB, tree_digest(src))
    argv = push_args(small, s3_lake_url, "--config", str(config), "--json")
    argv[argv.index("--chunk-size") + 1] = "32MiB"

    proxy.drop("up", after=3 * MiB, count=2, methods=["PUT"], path=r"/chunks/.*partNumber=",
               max_per_target=1)
    pushed = json.loads(cli(env, *argv).stdout)
    up = proxy.stats()
    report("parts: push, 2 part bodies cut", up, small)
    parts = [e for e in proxy.exchanges() if e.method == "PUT" and "partNumber=" in e.target]
    assert up.faults.get("drop") == 2 and len(parts) == 8 + 2  # 2 chunks x 4 parts, 2 again
    assert pushed["bytes_uploaded"] == small.total
    # what was sent twice: the 3 MiB cut off each dropped part, not a 32 MiB chunk
    assert small.total + 2 * 3 * MiB <= up.bytes_up < small.total + 2 * 3 * MiB + 2 * MiB
    created = [e for e in proxy.exchanges() if e.method == "POST" and "uploads" in e.target
               and "uploadId" not in e.target]
    assert len(created) == 2  # one multipart upload per chunk, none started again
    lake_prefix = s3_lake_url.split("/", 3)[3]
    uploads = seaweedfs.client().list_multipart_uploads(Bucket=seaweedfs.bucket,
                                                        Prefix=lake_prefix)
    assert uploads.get("Uploads", []) == []

    proxy.clear_faults()
    proxy.reset_stats()
    proxy.drop("down", after=3 * MiB, count=2, methods=["GET"], path=CHUNKS, max_per_target=1)
    dest = tmp_path / "restore"
    pulled = json.loads(cli(env, *pull_args(s3_lake_url, dest, "--config", str(config),
                                            "--json")).stdout)
    down = proxy.stats()
    report("parts: pull, 2 ranged bodies cut", down, small)
    ranged = [e for e in proxy.exchanges() if e.method == "GET" and re.search(CHUNKS, e.target)]
    assert down.faults.get("drop") == 2 and len(ranged) == 8 + 2
    assert pulled["bytes_downloaded"] == small.total
    assert small.total + 2 * 3 * MiB <= down.bytes_down < small.total + 2 * 3 * MiB + 2 * MiB
    assert tree_digest(dest) == small.digest, "pulled tree differs from the source"


def _stalled_target(method: str, proxy: FaultProxy) -> str:
    """The request target (/bucket/key) whose `method` body the proxy stalled."""
    stalled = [e.target for e in proxy.exchanges() if e.method == method and e.fault
               and e.fault.startswith("stall")]
    assert len(stalled) == 1, stalled
    return stalled[0]


def _tries(method: str, target: str, proxy: FaultProxy) -> int:
    return sum(1 for e in proxy.exchanges() if e.method == method and e.target == target)


def _assert_retry_reported(stderr: str, target: str, causes: tuple[str, ...]) -> None:
    """The retry layer's progress event for the stalled object, as the CLI prints it
    (`ckptlake: retry 1 for <key> in 0.1 s: <object>: <op>: <cause>`), naming one of `causes`."""
    key = target.split("/", 2)[2]  # /bucket/key
    retries = [ln for ln in stderr.splitlines() if re.match(r"ckptlake: retry \d+ for ", ln)]
    print("\n" + "\n".join(retries))
    assert any(key in ln and any(c.lower() in ln.lower() for c in causes) for ln in retries), \
        f"no retry of {key} for {' or '.join(causes)} on stderr:\n{stderr}"


# ---- 2. the server stays down ------------------------------------------------------------------

def _assert_gave_up(p: subprocess.CompletedProcess[str], lake: str) -> re.Match[str]:
    lines = error_lines(p.stderr)
    assert len(lines) == 1, p.stderr
    print(f"\n{lines[0]}")
    m = re.search(rf"{re.escape(lake)}/(\S+): failed after (\d+) attempts; last error: \S",
                  lines[0])
    assert m is not None, f"error line does not name the object and the attempts: {lines[0]}"
    assert int(m.group(2)) == ATTEMPTS
    return m


@pytest.mark.parametrize("mode,op", [("reset", "push"), ("refuse", "pull")])
def test_server_down_fails_with_exit_8_and_commits_nothing(mode: str, op: str, seaweedfs: Any,
                                                          s3_lake_url: str, proxy: FaultProxy,
                                                          env: dict[str, str], tree: Tree,
                                                          tmp_path: Path) -> None:
    """Every connection reset on accept (push) / refused (pull), for the whole run."""
    proxy.down(mode)
    dest = tmp_path / "restore"
    args = push_args(tree, s3_lake_url) if op == "push" else pull_args(s3_lake_url, dest)
    p = cli(env, *args, check=EXIT_TRANSFER)
    _assert_gave_up(p, s3_lake_url)
    stats = proxy.stats()
    if mode == "reset":  # one connection per attempt: no second retry layer underneath ours
        assert stats.connections == ATTEMPTS, stats
    assert stats.bytes_up == stats.bytes_down == 0
    assert _keys(seaweedfs, s3_lake_url) == []  # nothing committed, nothing at all
    assert not dest.exists()


def test_server_dies_mid_push_commits_nothing_and_rerun_resumes(
        seaweedfs: Any, s3_lake_url: str, proxy: FaultProxy, env: dict[str, str], tree: Tree,
        tmp_path: Path) -> None:
    p = subprocess.Popen(_argv(*push_args(tree, s3_lake_url, "--json")), env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proxy.wait_for(lambda s: s.bytes_up >= 0.35 * tree.total, timeout=120,
                       alive=lambda: p.poll() is None)
        proxy.down("refuse")  # live connections cut, new ones refused
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    report("server dies mid-push", proxy.stats(), tree)
    assert p.returncode == EXIT_TRANSFER, f"stdout: {out}\nstderr: {err}"
    m = _assert_gave_up(subprocess.CompletedProcess(p.args, p.returncode, out, err), s3_lake_url)
    assert m.group(1).startswith("chunks/"), m.group(0)
    doc = json.loads(out)["error"]  # --json: one document on stdout for errors too
    assert doc["type"] == "TransferError" and doc["exit_code"] == EXIT_TRANSFER
    assert m.group(0) in doc["message"]
    assert version_keys(seaweedfs, s3_lake_url) == []
    stored = [k for k in _keys(seaweedfs, s3_lake_url) if "/chunks/" in k]
    assert stored, "no chunk was stored before the server died"

    proxy.up()
    proxy.reset_stats()
    again = push_json(env, tree, s3_lake_url)
    rerun = proxy.stats()
    report("re-push after the server came back", rerun, tree)
    assert again["version"] == 1
    assert again["bytes_deduplicated"] > 0
    assert again["bytes_uploaded"] + again["bytes_deduplicated"] == tree.total
    assert rerun.bytes_up < tree.total - again["bytes_deduplicated"] + 4 * MiB


# ---- 3. kill -9 and re-run ---------------------------------------------------------------------

def _kill_midway(proxy: FaultProxy, argv: list[str], env: dict[str, str],
                 moved: Callable[[Stats], int], total: int) -> int:
    """Start the CLI, SIGKILL it once the proxy has moved KILL_AT of `total`; bytes moved."""
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proxy.wait_for(lambda s: moved(s) >= KILL_AT * total, timeout=120,
                       alive=lambda: p.poll() is None)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert p.returncode == -signal.SIGKILL, "the client finished before it could be killed"
    return moved(proxy.stats())


def test_kill9_mid_push_and_mid_pull_then_rerun_moves_less(seaweedfs: Any, s3_lake_url: str,
                                                           proxy: FaultProxy,
                                                           env: dict[str, str], tree: Tree,
                                                           tmp_path: Path) -> None:
    # push, killed at ~55%: nothing committed; the re-run sends only what is missing
    killed_at = _kill_midway(proxy, _argv(*push_args(tree, s3_lake_url)), env,
                             lambda s: s.bytes_up, tree.total)
    report("push killed", proxy.stats(), tree)
    assert version_keys(seaweedfs, s3_lake_url) == [], "a killed push committed a version"

    proxy.reset_stats()
    again = push_json(env, tree, s3_lake_url)
    rerun = proxy.stats()
    report("re-push", rerun, tree)
    # SeaweedFS keeps an empty object for a PUT whose client died between head and body, and
    # a kill -9 lands in that instant now and then: the re-push must have replaced it.
    assert sorted(empty_chunks(seaweedfs, s3_lake_url)) == [], "re-push kept an empty chunk"
    print(f"push killed at {killed_at / MiB:.1f} MiB; re-run sent {rerun.bytes_up / MiB:.1f} MiB "
          f"of {tree.total / MiB:.1f} MiB; JSON {again}")
    assert again["version"] == 1
    assert again["bytes_uploaded"] + again["bytes_deduplicated"] == tree.total
    assert again["bytes_deduplicated"] >= 0.3 * tree.total
    assert again["bytes_uploaded"] <= rerun.bytes_up  # the proxy saw every byte it claims
    assert rerun.bytes_up <= 0.7 * tree.total

    # pull, killed at ~55%: nothing under the final name; the re-run fetches only the rest
    dest = tmp_path / "restore" / "ckpt"
    proxy.reset_stats()
    killed_at = _kill_midway(proxy, _argv(*pull_args(s3_lake_url, dest)), env,
                             lambda s: s.bytes_down, tree.total)
    report("pull killed", proxy.stats(), tree)
    assert not dest.exists(), "a killed pull left files under the final name"
    staging = list(dest.parent.glob(".ckpt.ckptlake-pull-*"))
    assert len(staging) == 1, "no staging directory to resume from"

    proxy.reset_stats()
    pulled = pull_json(env, s3_lake_url, dest)
    rerun = proxy.stats()
    report("re-pull", rerun, tree)
    print(f"pull killed at {killed_at / MiB:.1f} MiB; re-run fetched "
          f"{rerun.bytes_down / MiB:.1f} MiB of {tree.total / MiB:.1f} MiB; JSON {pulled}")
    assert pulled["bytes_resumed"] >= 0.3 * tree.total
    assert pulled["bytes_downloaded"] + pulled["bytes_resumed"] == pulled["bytes_total"] \
        == tree.total
    assert pulled["bytes_downloaded"] <= rerun.bytes_down
    assert rerun.bytes_down <= 0.7 * tree.total
    assert tree_digest(dest) == tree.digest, "pulled tree differs from the source"
    assert not staging[0].exists(), "staging left behind after a successful pull"


def test_push_killed_right_after_a_request_head_then_rerun(seaweedfs: Any, s3_lake_url: str,
                                                           proxy: FaultProxy,
                                                           env: dict[str, str],
                                                           tmp_path: Path) -> None:
    """kill -9 in the instant between a chunk PUT's head and its body, made deterministic.

    SeaweedFS 4.48 answers such a request (Content-Length and signed payload hash of N > 0
    bytes, then a clean close before the first body byte) by storing an empty object under
    the key.  A small source is enough to show what the next push does with it.
    """
    src = tmp_path / "src"
    src.mkdir()
    rnd = random.Random(5)
    (src / "weights.bin").write_bytes(rnd.randbytes(24 * MiB))
    small = Tree(src, 24 * MiB, tree_digest(src))

    proxy.vanish(count=1, methods=["PUT"], path=CHUNKS)
    p = subprocess.Popen(_argv(*push_args(small, s3_lake_url)), env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proxy.wait_for(lambda s: any(e.outcome == "vanished" for e in proxy.exchanges()),
                       timeout=120, alive=lambda: p.poll() is None)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert version_keys(seaweedfs, s3_lake_url) == []
    target = next(e.target for e in proxy.exchanges() if e.outcome == "vanished")
    key = target.split("/", 2)[2]  # /bucket/key
    s3 = seaweedfs.client()
    try:
        left = s3.head_object(Bucket=seaweedfs.bucket, Key=key)["ContentLength"]
    except s3.exceptions.ClientError:
        left = None
    print(f"\nthe cut PUT left {key}: {'nothing' if left is None else f'{left} bytes'}")
    if left != 0:
        pytest.skip("this SeaweedFS keeps no empty object for a PUT cut after its head")

    proxy.clear_faults()
    again = push_json(env, small, s3_lake_url)
    print(f"re-push: {again}")
    dest = tmp_path / "restore"
    pulled = cli(seaweedfs.env, *pull_args(s3_lake_url, dest, "--json"), check=None)
    assert pulled.returncode == EXIT_OK, f"the re-pushed version cannot be pulled: {pulled.stdout}"
    assert tree_digest(dest) == small.digest
