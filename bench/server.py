"""A throw-away SeaweedFS (`weed server -s3`) on loopback, owned by the harness.

Started with free ports, ready once a CreateBucket succeeds, stopped by the PID we started
(SIGTERM, then SIGKILL after 10 s). Buckets are created/deleted with plain unsigned S3 calls:
with no -s3.config SeaweedFS runs without IAM, so any (or no) credentials are accepted.
"""
from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

READY_BUCKET = "bench"


def _remove_sockets(args: list) -> None:
    """The /tmp/seaweedfs-*.sock files weed leaves (tests/weedsockets.py, shared with the suite)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    try:
        from weedsockets import remove_sockets
    finally:
        sys.path.pop(0)
    remove_sockets(args)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """n distinct ports p (< 45000) with p and p+10000 (SeaweedFS gRPC) both free."""
    chosen: list[int] = []
    while len(chosen) < n:
        p = random.randrange(20000, 45000)
        if any(abs(p - c) in (0, 10000) for c in chosen):
            continue
        if _bindable(p) and _bindable(p + 10000):
            chosen.append(p)
    return chosen


class SeaweedFS:
    def __init__(self, weed: Path, workdir: Path):
        self.weed = weed
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.dir: Path | None = None
        self.log: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self, timeout: float = 90) -> "SeaweedFS":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="seaweedfs-", dir=self.workdir))
        self.s3_port, master, volume, filer = free_ports(4)
        cmd = [str(self.weed), f"-logdir={self.dir}", "server", "-s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-s3.port={self.s3_port}", f"-master.port={master}",
               f"-volume.port={volume}", f"-filer.port={filer}", f"-dir={self.dir}",
               "-volume.max=0", "-master.volumeSizeLimitMB=256", "-master.telemetry=false",
               # not in the brief, needed on a shared machine: these default to fixed ports
               "-s3.port.iceberg=0", "-s3.port.lance=0",
               # volume server otherwise lingers 10 s after SIGTERM
               "-volume.preStopSeconds=0"]
        # No AWS_* variables: SeaweedFS would turn them into an admin identity and enable auth.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.log = self.dir / "weed.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.create_bucket(READY_BUCKET)
                return self
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS not ready after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.5)

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except (OSError, AttributeError):
            return ""

    def _s3(self, method: str, path: str, timeout: float = 60) -> int:
        req = urllib.request.Request(self.endpoint + path, method=method, data=b"" if method == "PUT" else None)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status

    def create_bucket(self, name: str) -> None:
        try:
            self._s3("PUT", f"/{name}", timeout=5)
        except urllib.error.HTTPError as e:
            if e.code != 409:  # BucketAlreadyExists/OwnedByYou is fine
                raise

    def delete_bucket(self, name: str) -> None:
        """Deletes the bucket with its content (SeaweedFS drops the bucket's collection, so the
        disk space comes back at once)."""
        try:
            self._s3("DELETE", f"/{name}", timeout=300)
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None:
            _remove_sockets(self.proc.args)
        self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> "SeaweedFS":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def scratch_server(root: Path, prefix: str, bucket: str):
    """A scratch directory under root/bench/.work and a SeaweedFS in it with `bucket` made:
    (scratch, server), both gone on exit (the A/B scripts' common setting)."""
    (root / "bench/.work").mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=root / "bench/.work"))
    try:
        with SeaweedFS(root / ".venv/bin/weed", scratch / "weed") as weed:
            weed.create_bucket(bucket)
            yield scratch, weed
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
