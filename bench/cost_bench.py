#!/usr/bin/env python3
"""Regional replicas: what a remote region's pulls cost the origin (issue 16, item 1).

    .venv/bin/python bench/cost_bench.py [--size 1GiB] [--pulls 5] [--reps 3]

Two SeaweedFS servers on loopback play two regions: the origin ("us-east-1") and a replica
("eu-west-1"); the client says it is in eu-west-1.  Every byte the origin sends goes through
a small TCP proxy in front of it that counts them (the origin's egress, measured below the
client: HTTP headers included, not taken from ckptlake's own result).  Goals (issue 16):

1. 5 pulls of a SIZE version from the remote region: origin egress <= 1.05 x SIZE
   (without a replica: 5 x SIZE; measured too, with one pull x 5);
2. a pull through a warm replica: >= 0.95 x the speed of a pull straight from one server
   (the origin, without the proxy), medians of --reps interleaved runs;
3. replicate a version whose chunks half exist in the replica: copies only the missing half
   (chunks copied, and origin egress during it);
4. a version deleted by gc at the origin: never served from the replica afterwards (pull
   fails with "deleted by gc"; its chunks are gone from the replica after gc).

Runs in-process on the repository's ckptlake.  Data: one file of SIZE seeded random bytes,
16 MiB chunks.  Every pulled tree is checked against the source by SHA-256.  Temp files live
under bench/.work/ and are deleted; the servers are stopped by the PIDs started here.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
os.environ.pop("AWS_REGION", None)
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

from server import SeaweedFS  # noqa: E402

from ckptlake.core.replicas import ReplicaSet  # noqa: E402
from ckptlake.errors import NotFound  # noqa: E402
from ckptlake.lake import Lake  # noqa: E402
from ckptlake.policy.config import parse_size  # noqa: E402
from ckptlake.policy.replicas import ReplicaSpec  # noqa: E402
from ckptlake.policy.retention import RetentionPolicy, Rule  # noqa: E402
from ckptlake.store import open_store  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
CHUNK = 16 * MiB


class CountingProxy:
    """TCP proxy on 127.0.0.1: counts the bytes the upstream sends back (egress)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.egress = 0
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, up, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        try:
            while True:
                n = src.recv_into(buf)
                if not n:
                    break
                dst.sendall(view[:n])
                if count:
                    with self._lock:
                        self.egress += n
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def take(self) -> int:
        with self._lock:
            n, self.egress = self.egress, 0
        return n

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(8 * MiB):
            h.update(block)
    return h.hexdigest()


def make_file(path: Path, size: int, seed: int, reuse: bytes | None = None) -> None:
    """SIZE seeded random bytes; with `reuse`, its first half is `reuse`'s first half."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        done = 0
        while done < size:
            n = min(CHUNK, size - done)
            if reuse is not None and done < size // 2:
                with open(reuse, "rb") as src:
                    src.seek(done)
                    fh.write(src.read(n))
            else:
                fh.write(rng.randbytes(n))
            done += n


def lake_with(origin_url: str, endpoint: str, replica: ReplicaSpec | None,
              client: str = "eu-west-1") -> Lake:
    store = open_store(origin_url, endpoint_url=endpoint, max_connections=24)
    rs = ReplicaSet([replica], client_region=client) if replica else None
    return Lake(store, concurrency=8, replicas=rs)


def timed_pull(lake: Lake, ref: str, dest: Path, expect: str, **kw) -> tuple[float, object]:
    t0 = time.monotonic()
    r = lake.pull(ref, dest, **kw)
    dt = time.monotonic() - t0
    got = sha(dest / "model.bin")
    if got != expect:
        raise SystemExit(f"pulled bytes differ from the source ({ref})")
    shutil.rmtree(dest)
    return dt, r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--pulls", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--weed", default=str(HERE.parent / ".venv" / "bin" / "weed"))
    args = ap.parse_args()
    size = parse_size(args.size)
    work = HERE / ".work"
    work.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="cost-", dir=work))
    origin_srv = SeaweedFS(Path(args.weed), tmp / "us").start()
    replica_srv = SeaweedFS(Path(args.weed), tmp / "eu").start()
    proxy = CountingProxy(origin_srv.s3_port)
    try:
        for srv in (origin_srv, replica_srv):
            srv.create_bucket("lake")
        origin_url, replica_url = "s3://lake/origin", "s3://lake/eu"
        spec = ReplicaSpec(name="eu", url=replica_url, region="eu-west-1",
                           endpoint_url=replica_srv.endpoint)
        src = tmp / "src"
        make_file(src / "model.bin", size, 1)
        expect = sha(src / "model.bin")
        print(f"load: {os.getloadavg()[0]:.1f} (2 cores); size {args.size}", flush=True)

        lake = lake_with(origin_url, proxy.endpoint, spec)
        direct = lake_with(origin_url, origin_srv.endpoint, None)
        lake.push(src, "m/model")
        proxy.take()

        # 1. N pulls from the remote region, through the replica (the first one fills it).
        per_pull = []
        for i in range(args.pulls):
            dt, r = timed_pull(lake, "m/model", tmp / f"p{i}", expect)
            per_pull.append((proxy.take(), dt, r.replica))  # type: ignore[attr-defined]
        egress_replica = sum(e for e, _, _ in per_pull)
        dt, _ = timed_pull(lake, "m/model", tmp / "none", expect, replica="none")
        egress_one_direct = proxy.take()
        print(f"1. {args.pulls} pulls via replica: origin egress {egress_replica / GiB:.3f} GiB "
              f"= {egress_replica / size:.3f} x size (goal <= 1.05); per pull: "
              + ", ".join(f"{e / MiB:.1f} MiB" for e, _, _ in per_pull)
              + f".  Without a replica: {egress_one_direct / MiB:.1f} MiB per pull, "
              f"{args.pulls} pulls = {args.pulls * egress_one_direct / size:.2f} x size", flush=True)

        # 2. warm replica vs straight from one server, interleaved.
        warm, straight = [], []
        for i in range(args.reps):
            dt_s, _ = timed_pull(direct, "m/model", tmp / f"s{i}", expect)
            straight.append(size / dt_s / MiB)
            dt_w, r = timed_pull(lake, "m/model", tmp / f"w{i}", expect)
            assert r.replica["bytes_pulled_through"] == 0  # type: ignore[attr-defined]
            warm.append(size / dt_w / MiB)
        proxy.take()
        ratio = statistics.median(warm) / statistics.median(straight)
        print(f"2. warm replica pull {statistics.median(warm):.0f} MiB/s (runs: "
              + ", ".join(f"{v:.0f}" for v in warm) + f") vs straight from the origin "
              f"{statistics.median(straight):.0f} MiB/s (runs: "
              + ", ".join(f"{v:.0f}" for v in straight) + f"): {ratio:.2f}x (goal >= 0.95)",
              flush=True)

        # 3. replicate a version whose chunks half exist in the replica.
        make_file(tmp / "half" / "model.bin", size, 2, reuse=src / "model.bin")
        v = lake.push(tmp / "half", "m/model")
        proxy.take()
        rr = lake.replicate(v.ref, "eu")
        egress_rep = proxy.take()
        print(f"3. replicate {v.ref} (half its chunks in the replica): copied {rr.chunks_copied} "
              f"of {rr.chunks} chunks ({rr.bytes_copied / MiB:.0f} MiB), {rr.chunks_present} "
              f"present; origin egress {egress_rep / MiB:.1f} MiB; again: "
              f"{lake.replicate(v.ref, 'eu').chunks_copied} copied", flush=True)

        # 4. gc deletes v1 at the origin: the replica never serves it again.
        replica_store = open_store(replica_url, endpoint_url=replica_srv.endpoint)
        before = {i.key for i in replica_store.list("chunks/")}
        policy = RetentionPolicy(rules=(Rule(match="m/*", keep_last=1),), grace_period=0,
                                 sweep_window=30, record_retention=60)
        result = lake.gc(lake.gc_plan(policy))
        after = {i.key for i in replica_store.list("chunks/")}
        try:
            lake.pull("m/model@v1", tmp / "gone")
            served = "SERVED (goal missed)"
        except NotFound as exc:
            served = f"refused: {exc}"
        live = {i.key for i in lake.store.list("chunks/")}
        print(f"4. gc deleted {result.versions_deleted}; replica swept "
              f"{result.replicas[0]['chunks_swept']} chunks ({len(before)} -> {len(after)}; "
              f"replica == live origin chunks: {after == live}); pull m/model@v1 via the "
              f"replica: {served}", flush=True)
        replica_store.close()
        lake.close()
        direct.close()
    finally:
        proxy.close()
        origin_srv.stop()
        replica_srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
