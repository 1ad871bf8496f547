"""Chaos soak: every kind of client at once, against SeaweedFS behind a fault proxy (issue 12).

    python bench/soak.py --duration 120 --seed 1                   # what CI runs (tests/test_soak.py)
    python bench/soak.py --duration 1800 --seed 1 --out docs/benchmarks.md --json soak.json
    python bench/soak.py --endpoint http://127.0.0.1:8333 --bucket b   # an existing server

Run it with the interpreter that has ckptlake installed (the repo's .venv: `weed` is found next
to it).  For --duration seconds these clients run at the same time, every one of them a separate
process (the CLI, or a small Python child for the library-only actors), all pointed at a
FaultProxy (tests/faultproxy.py) in front of a throw-away SeaweedFS (bench/server.py):

* pushers: `ckptlake push` of small trees (a file shared across artifacts and versions, a fresh
  file, small packed files), to an artifact of their own or to one they share;
* a sharded pusher: `ckptlake push --shard R/W --step S`, 2 or 3 ranks in parallel; ranks that
  die are pushed again, and a step whose committer died is finished by a rank with a short
  stale_after (the library's `push_shard`);
* a checkpointer: a Python child using `lake.checkpointer(..., keep_last=2)`;
* a suspended-clock pusher: a Python child whose push pauses between its uploads and its commit
  until gc has swept some of its chunks and removed that record (record_retention later; at
  most 60 s), while its clocks say no time passed (CLOCK_MONOTONIC
  frozen, and `ckptlake.core.clock.now` too where that module exists): what a laptop lid or a
  paused VM does to a push;
* pullers: `ckptlake pull` of random committed versions, compared by SHA-256 with what was pushed;
* an alias mover: `ckptlake alias ART@vN NAME` to random committed versions;
* two gc loops: `ckptlake gc --yes` with grace_period 0s, sweep_window 2s, record_retention 4s;
* chaos: kill -9 of a random client every few seconds, and a new fault every few seconds (cut
  request/response bodies, 503 SlowDown bursts, stalls below and beyond read_timeout, the server
  resetting every connection for a moment, a client vanishing after a request head).

Every attempt and every commit is appended to a journal (JSON lines, fsync'd).  At the end, with
the chaos stopped: `ckptlake verify --read-data --json` (when this ckptlake has it), then the
soak's own check, straight against SeaweedFS: every journalled version is either in the lake and
pulls bit-exact, or was deleted by the retention policy (its tombstone is there); versions in the
lake that the journal missed (a client killed after its commit, before it could say so) must
pull as one of the trees attempted for their artifact; every alias points at a live version.
Exit status 0 only if that found nothing and every pull during the run was bit-exact; 1 otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
KiB, MiB = 1 << 10, 1 << 20
PREFIX = "soak"
POOL_BLOBS = 4
POOL_SIZE = 3 * MiB // 2  # one whole 1 MiB chunk + a tail: shared across trees and artifacts
CHUNK = "1MiB"  # the smallest chunk size ckptlake allows: more chunks, more sharing
CONNECT_TIMEOUT = 3
READ_TIMEOUT = 5
GRACE, SWEEP_WINDOW, RECORD_RETENTION = 0, 2, 4  # seconds; record_retention >= 2 x sweep_window
ALIAS_NAMES = ("best", "prod", "stable")
SHARD_STALE_AFTER = 3.0  # for the finishing rank only (the CLI uses the 300 s default)

CONFIG = """\
lake: s3://{bucket}/{lake_prefix}
endpoint_url: {endpoint}
chunk_size: {chunk}
concurrency: 4
connect_timeout: {connect}
read_timeout: {read}
retention:
  grace_period: {grace}s
  sweep_window: {window}s
  record_retention: {records}s
  rules:
    - match: "{prefix}/suspend/*"
      keep_all: true
    - match: "{prefix}/*"
      keep_last: 2
egress:
  warn_above_usd: null
  confirm_above_usd: null
"""


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux >= 5.3, or already gone
        return None


# ---- data --------------------------------------------------------------------------------------

# Every other pool blob holds bytes of 16 values only (4 bits of entropy a byte), so zstd halves
# it: those chunks are stored as frames (docs/format.md, "Chunk encodings") and the chaos runs
# over both kinds of chunk object, and over raw/framed dedup between pushers.
_LOW_ENTROPY = bytes((b & 0x0F) * 17 for b in range(256))


def pool_blob(seed: int, k: int) -> bytes:
    data = random.Random(seed * 1000 + k).randbytes(POOL_SIZE)
    return data.translate(_LOW_ENTROPY) if k % 2 else data


def write_file(path: Path, data: bytes, files: dict[str, str], root: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a writer that replaces files (the checkpointer may then link them)
    files[path.relative_to(root).as_posix()] = hashlib.sha256(data).hexdigest()


def make_tree(root: Path, rng: random.Random, seed: int, *, sub: str = "",
              small: bool = True) -> dict[str, str]:
    """A shared pool blob, a fresh file, a few small (packed) files: {relpath: sha256}."""
    files: dict[str, str] = {}
    base = root / sub if sub else root
    write_file(base / "shared.bin", pool_blob(seed, rng.randrange(POOL_BLOBS)), files, root)
    write_file(base / "own.bin", rng.randbytes(rng.randint(64 * KiB, 3 * MiB // 2)), files, root)
    if small:
        for j in range(rng.randint(2, 5)):
            data = b"constant %d\n" % j * 100 if j % 2 else rng.randbytes(rng.randint(1, 32) * KiB)
            write_file(base / "small" / f"f{j}.dat", data, files, root)
    return files


def tree_digest(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                while block := fh.read(MiB):
                    h.update(block)
            out[p.relative_to(root).as_posix()] = h.hexdigest()
    return out


# ---- child processes (library-only actors) ----------------------------------------------------

def open_child_lake(url: str) -> Any:
    """The library's Lake with the soak's settings (the CLI's come from ckptlake.yaml)."""
    from ckptlake import Lake
    from ckptlake.store import open_store

    return Lake(open_store(url, connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT),
                chunk_size=MiB, concurrency=4)


def child_checkpointer(args: argparse.Namespace) -> int:
    """Save a changing directory every ~0.5 s until the stop file appears; print a JSON line
    per attempt (before saving) and per commit."""
    lock = threading.Lock()

    def say(**doc: Any) -> None:
        with lock:
            print(json.dumps(doc), flush=True)

    rng = random.Random(args.seed)
    src = Path(args.dir) / "ckpt"
    lake = open_child_lake(args.lake)
    ck = lake.checkpointer(args.artifact, keep_last=2)
    step = args.step
    try:
        while not os.path.exists(args.stop):
            step += 1
            files: dict[str, str] = {}
            write_file(src / "model.bin", pool_blob(args.seed0, rng.randrange(POOL_BLOBS))
                       + rng.randbytes(200 * KiB), files, src)
            write_file(src / "opt.bin", rng.randbytes(rng.randint(16, 400) * KiB), files, src)
            write_file(src / "meta.json", json.dumps({"step": step}).encode(), files, src)
            say(event="attempt", artifact=args.artifact, step=step, files=files)
            fut = ck.save(src, step=step, metrics={"loss": rng.random()})

            def done(f: Any, s: int = step) -> None:
                if f.exception() is None:
                    say(event="commit", step=s, version=f.result().version)
                else:
                    say(event="failed", step=s, error=str(f.exception()))

            fut.add_done_callback(done)
            time.sleep(rng.uniform(0.2, 0.8))
        ck.close()
    except Exception as exc:  # noqa: BLE001 - the parent restarts us; say why
        say(event="error", error=f"{type(exc).__name__}: {exc}")
        print(f"ckptlake: error: {exc}", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            ck.close()
        return getattr(exc, "exit_code", 1)
    return 0


def install_suspendable_clock() -> dict[str, Any]:
    """Replace CLOCK_MONOTONIC as Python sees it (time.monotonic, monotonic_ns, clock_gettime)
    with one that can be frozen, *before* ckptlake is imported (its default arguments bind
    time.monotonic at import).  Returns the control dict: suspend(seconds) really sleeps while
    the clock stands still -- what a suspended laptop or a paused VM shows a process."""
    real_mono, real_cg = time.monotonic, time.clock_gettime
    state: dict[str, Any] = {"offset": 0.0, "frozen": None, "patched": []}

    def mono() -> float:
        frozen = state["frozen"]
        return frozen if frozen is not None else real_mono() - state["offset"]

    def mono_ns() -> int:
        return int(mono() * 1e9)

    def clock_gettime(clk: int) -> float:
        if clk == time.CLOCK_MONOTONIC:
            return mono()
        return real_cg(clk)

    time.monotonic, time.monotonic_ns, time.clock_gettime = mono, mono_ns, clock_gettime
    state["patched"] += ["time.monotonic", "time.monotonic_ns", "time.clock_gettime(MONOTONIC)"]

    def suspend(done: Callable[[], bool], at_most: float) -> None:
        state["frozen"] = mono()
        t0 = real_mono()
        while real_mono() - t0 < at_most and not done():
            time.sleep(1)  # the sleep itself uses the OS clock, not ours
        state["offset"] = real_mono() - state["frozen"]
        state["frozen"] = None

    state["suspend"] = suspend
    return state


def child_suspend(args: argparse.Namespace) -> int:
    """One push whose process is 'suspended' between its uploads and its commit."""
    state = install_suspendable_clock()
    try:  # the clock module of the fix, if this ckptlake has it: it must not see the pause either
        from ckptlake.core import clock as ck_clock  # type: ignore[attr-defined]
        real_now = ck_clock.now
        base: dict[str, float] = {"offset": 0.0}

        def now() -> float:
            return real_now() - base["offset"]

        ck_clock.now = now
        state["patched"].append("ckptlake.core.clock.now")
        inner = state["suspend"]

        def suspend(done: Callable[[], bool], at_most: float) -> None:
            t0 = real_now()
            inner(done, at_most)
            base["offset"] += real_now() - t0

        state["suspend"] = suspend
    except ImportError:
        pass
    from ckptlake.core import gc_guard

    real_guard = gc_guard.guard_commit
    paused: dict[str, Any] = {"s": 0.0, "forgotten": False}

    def guard_commit(store: Any, **kw: Any) -> Any:
        """Stay suspended until gc has condemned, swept and forgotten (removed the record of)
        some of this push's chunks -- the worst moment to wake up -- or --pause seconds."""
        digests = set(kw.get("referenced") or ())
        seen = {"named": False, "removed": False}

        def forgotten() -> bool:
            try:
                records, _ = gc_guard.read_records(store, lenient=True)
            except Exception:  # noqa: BLE001 - faults: look again in a second
                return False
            if any(digests.intersection(r.chunks) for r in records):
                seen["named"] = True
                return False
            seen["removed"] = seen["named"]
            return seen["removed"]

        t0 = time.time()
        state["suspend"](forgotten, args.pause)
        paused["s"] = time.time() - t0
        paused["forgotten"] = seen["removed"]
        return real_guard(store, **kw)

    gc_guard.guard_commit = guard_commit
    lake = open_child_lake(args.lake)
    try:
        r = lake.push(args.src, args.artifact, step=args.step)
    except Exception as exc:  # noqa: BLE001
        print(json.dumps({"event": "failed", "error": f"{type(exc).__name__}: {exc}",
                          "patched": state["patched"]}), flush=True)
        print(f"ckptlake: error: {exc}", file=sys.stderr, flush=True)
        return getattr(exc, "exit_code", 1)
    print(json.dumps({"event": "commit", "version": r.version, "paused": round(paused["s"], 2),
                      "forgotten": paused["forgotten"], "patched": state["patched"]}), flush=True)
    return 0


def child_shard_finish(args: argparse.Namespace) -> int:
    """Push one rank again with a short stale_after: takes over a claim whose owner died."""
    lake = open_child_lake(args.lake)
    try:
        r = lake.push_shard(args.src, args.artifact, step=args.step, rank=args.rank,
                            world=args.world, stale_after=SHARD_STALE_AFTER, wait_seconds=30)
    except Exception as exc:  # noqa: BLE001 - exit as the CLI would, with one line
        print(f"ckptlake: error: {exc}", file=sys.stderr, flush=True)
        return getattr(exc, "exit_code", 1)
    print(json.dumps({"version": r.version, "committed_here": r.committed_here}), flush=True)
    return 0


# ---- the orchestrator -------------------------------------------------------------------------

@dataclass
class Run:
    rc: int
    out: str
    err: str
    chaos_killed: bool = False
    timed_out: bool = False

    def json(self) -> dict[str, Any] | None:
        """The client's JSON document (the whole stdout, else its last line that is one)."""
        for text in (self.out, *reversed(self.out.strip().splitlines())):
            with contextlib.suppress(ValueError):
                doc = json.loads(text)
                if isinstance(doc, dict):
                    return doc
        return None


@dataclass
class Soak:
    args: argparse.Namespace
    work: Path
    endpoint: str  # the proxy's: what clients use
    direct: str  # SeaweedFS itself: the end check's
    bucket: str
    proxy: Any
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: Counter = field(default_factory=Counter)
    problems: list[dict] = field(default_factory=list)
    anomalies: list[dict] = field(default_factory=list)
    procs: dict[int, tuple[subprocess.Popen, str, bool]] = field(default_factory=dict)
    pidfds: dict[int, int | None] = field(default_factory=dict)  # pid -> pidfd (see run)
    killed: set[int] = field(default_factory=set)
    commits: list[tuple[str, int]] = field(default_factory=list)
    expected: dict[tuple[str, int], dict[str, str]] = field(default_factory=dict)
    suspend_info: dict[str, Any] = field(default_factory=dict)
    extended: float = 0.0  # seconds run past --duration to reach --min-ops
    failures: dict[str, list] = field(default_factory=dict)  # "kind exit rc" -> stderr samples
    exchanges: list = field(default_factory=list)  # the proxy's, kept for the end check
    integrity_seen: dict[str, int] = field(default_factory=dict)
    gone: set[tuple[str, int]] = field(default_factory=set)  # seen deleted by gc: pick others

    def __post_init__(self) -> None:
        self.rng = random.Random(self.args.seed)
        self.journal_path = self.work / "journal.jsonl"
        self.journal = open(self.journal_path, "a", encoding="utf-8")
        self.prefix = self.args.prefix
        self.lake = f"s3://{self.bucket}/{self.prefix}"
        self.config = self.work / "ckptlake.yaml"
        self.direct_config = self.work / "ckptlake-direct.yaml"
        for path, endpoint in ((self.config, self.endpoint), (self.direct_config, self.direct)):
            path.write_text(CONFIG.format(bucket=self.bucket, lake_prefix=self.prefix,
                                          prefix=PREFIX, endpoint=endpoint,
                                          chunk=CHUNK, connect=CONNECT_TIMEOUT, read=READ_TIMEOUT,
                                          grace=GRACE, window=SWEEP_WINDOW,
                                          records=RECORD_RETENTION))
        home = self.work / "home"
        for d in ("data", "config", "cache"):
            (home / d).mkdir(parents=True, exist_ok=True)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
            "LANG": "C.UTF-8", "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"), "XDG_CACHE_HOME": str(home / "cache"),
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "soak"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "soak"),
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(home / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
            "AWS_ENDPOINT_URL": self.endpoint, "CKPTLAKE_CONFIG": str(self.config),
            "PYTHONPATH": str(ROOT), "BOTO_DISABLE_CRT": "true",
        }
        self.direct_env = {**self.env, "AWS_ENDPOINT_URL": self.direct,
                           "CKPTLAKE_CONFIG": str(self.direct_config)}

    # -- bookkeeping --------------------------------------------------------------------------

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def log(self, **event: Any) -> None:
        """Append to the journal and fsync: what the end check trusts survives any kill."""
        event["t"] = round(time.time(), 3)
        line = json.dumps(event, sort_keys=True) + "\n"
        with self.lock:
            self.journal.write(line)
            self.journal.flush()
            os.fsync(self.journal.fileno())
            if event["event"] == "commit":
                key = (event["artifact"], event["version"])
                self.expected[key] = event["files"]
                self.commits.append(key)

    def problem(self, kind: str, **detail: Any) -> None:
        with self.lock:
            self.problems.append({"kind": kind, **detail})
        print(f"[soak] PROBLEM {kind}: {detail}", flush=True)

    def say(self, text: str) -> None:
        print(f"[soak {time.strftime('%H:%M:%S')}] {text}", flush=True)

    # -- clients ------------------------------------------------------------------------------

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ckptlake", *args]

    def child(self, role: str, *args: str) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), role, *args]

    def run(self, kind: str, argv: list[str], *, timeout: float, killable: bool = True,
            env: dict[str, str] | None = None,
            on_line: Callable[[str], None] | None = None) -> Run:
        p = subprocess.Popen(argv, env=env or self.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                             cwd=self.work)
        # A pidfd names this process and no other: a kill through it can never hit a process
        # that got the PID after ours was reaped (PIDs wrap at 32768 here, and the soak starts
        # thousands of processes next to, e.g., a test session's server).
        pidfd = _pidfd(p.pid)
        with self.lock:
            self.procs[p.pid] = (p, kind, killable)
            self.pidfds[p.pid] = pidfd
        timed_out = False
        try:
            if on_line is not None:
                err_chunks: list[str] = []
                t = threading.Thread(target=lambda: err_chunks.append(p.stderr.read()),
                                     daemon=True)
                t.start()
                out_lines = []
                for line in p.stdout:
                    out_lines.append(line)
                    on_line(line)
                p.wait()
                t.join(5)
                out, err = "".join(out_lines), "".join(err_chunks)
            else:
                try:
                    out, err = p.communicate(timeout=timeout)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    p.kill()
                    out, err = p.communicate()
        finally:
            with self.lock:
                self.procs.pop(p.pid, None)
                fd = self.pidfds.pop(p.pid, None)
                if fd is not None:
                    os.close(fd)
                chaos = p.pid in self.killed
                self.killed.discard(p.pid)
        r = Run(p.returncode, out, err, chaos_killed=chaos, timed_out=timed_out)
        self.count(f"exit.{kind}.{'killed' if chaos else 'timeout' if timed_out else r.rc}")
        if r.rc not in (0, None) and not chaos and not timed_out:
            tail = [ln for ln in err.strip().splitlines() if ln][-3:]
            with self.lock:
                samples = self.failures.setdefault(f"{kind} exit {r.rc}", [])
                if len(samples) < 3:
                    samples.append(tail[-1:])
                if r.rc == 1:
                    self.anomalies.append({"kind": kind, "argv": argv[3:], "stderr": tail})
            if r.rc == 5 and kind not in ("pull", "verify"):
                # A client finding the lake damaged (pulls of versions gc deleted under them
                # are told apart by the puller; verify's findings are reported on their own).
                msg = tail[-1] if tail else ""
                with self.lock:
                    first = msg not in self.integrity_seen
                    self.integrity_seen[msg] = self.integrity_seen.get(msg, 0) + 1
                if first:
                    self.problem("client met an integrity error", client=kind, stderr=msg)
        return r

    def sigkill(self, p: subprocess.Popen) -> bool:
        """SIGKILL one of our clients, through its pidfd where the OS has them; False if it is
        gone already."""
        with self.lock:
            fd = self.pidfds.get(p.pid)
            if fd is not None:
                try:
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                except ProcessLookupError:
                    return False
                return True
        if p.poll() is not None:
            return False
        p.send_signal(signal.SIGKILL)
        return True

    def kill_all(self) -> int:
        """SIGKILL every client still running, by the PIDs we started."""
        with self.lock:
            victims = list(self.procs.values())
        n = 0
        for p, _kind, _k in victims:
            if p.poll() is None:
                with self.lock:
                    self.killed.add(p.pid)  # not a failure of the client
                with contextlib.suppress(ProcessLookupError):
                    if self.sigkill(p):
                        n += 1
        return n

    MINIMUMS = ("push.ok", "shard.committed", "checkpointer.saved", "suspend.committed",
                "pull.bit_exact", "alias.moved", "gc.ok", "gc.versions_deleted")

    def short_of(self, n: int) -> list[str]:
        """The operations that did not happen n times yet (and kills), for --min-ops."""
        c = self.counts
        short = [k for k in self.MINIMUMS if c[k] < n
                 and not (k == "suspend.committed" and self.args.no_suspend)]
        if sum(v for k, v in c.items() if k.startswith("kill.")) < n:
            short.append("kills")
        return short

    def new_dir(self, kind: str) -> Path:
        d = self.work / kind / uuid.uuid4().hex[:12]
        d.mkdir(parents=True)
        return d

    def pick_commit(self, rng: random.Random, artifacts: tuple[str, ...] | None = None
                    ) -> tuple[str, int] | None:
        with self.lock:
            pool = [c for c in self.commits if (artifacts is None or c[0] in artifacts)
                    and c not in self.gone]
            if not pool:
                return None
            # Favour recent versions: those are alive; old ones mostly meet gc.
            return pool[min(len(pool) - 1, int(len(pool) * (1 - rng.random() ** 3)))]

    # -- actors ---------------------------------------------------------------------------------

    def actor(self, name: str, body: Callable[[random.Random], None]) -> threading.Thread:
        rng = random.Random(f"{self.args.seed}-{name}")

        def loop() -> None:
            while not self.stop.is_set():
                try:
                    body(rng)
                except Exception as exc:  # noqa: BLE001 - a soak bug, not a lake bug: report
                    self.count(f"actor_error.{name}")
                    with self.lock:
                        self.anomalies.append({"kind": f"actor {name}", "error": repr(exc)})
                    time.sleep(1)

        t = threading.Thread(target=loop, name=name, daemon=True)
        t.start()
        return t

    def pusher(self, i: int) -> Callable[[random.Random], None]:
        own = f"{PREFIX}/p{i}/ckpt"
        shared = f"{PREFIX}/shared/ckpt"
        step = [0]

        def body(rng: random.Random) -> None:
            artifact = shared if rng.random() < 0.3 else own
            step[0] += 1
            src = self.new_dir("src")
            files = make_tree(src, rng, self.args.seed)
            attempt = uuid.uuid4().hex[:12]
            self.log(event="attempt", actor=f"pusher{i}", attempt=attempt, artifact=artifact,
                     files=files)
            r = self.run("push", self.cli("push", str(src), artifact, "--json", "--step",
                                          str(step[0]), "--metric", f"loss={rng.random():.4f}"),
                         timeout=180)
            shutil.rmtree(src, ignore_errors=True)
            doc = r.json() if r.rc == 0 else None
            if doc and doc.get("version"):
                self.log(event="commit", actor=f"pusher{i}", attempt=attempt,
                         artifact=artifact, version=doc["version"], files=files)
                self.count("push.ok")
            else:
                self.count("push.failed")
            time.sleep(rng.uniform(0, 0.5))

        return body

    def sharder(self) -> Callable[[random.Random], None]:
        artifact = f"{PREFIX}/shard/ckpt"
        state = {"step": 0}

        def body(rng: random.Random) -> None:
            state["step"] += 1
            step, world = state["step"], rng.choice((2, 3))
            base = self.new_dir("shards")
            dirs, files = [], {}
            for r in range(world):
                d = base / f"rank{r}"
                d.mkdir()
                # Ranks keep their relative paths: each writes under its own name.
                files.update(make_tree(d, rng, self.args.seed, sub=f"rank{r}", small=r == 0))
                dirs.append(d)
            attempt = uuid.uuid4().hex[:12]
            self.log(event="attempt", actor="sharder", attempt=attempt, artifact=artifact,
                     step=step, world=world, files=files)
            todo, version, stuck = set(range(world)), None, False
            for _round in range(3):
                results: dict[int, Run] = {}

                def one(r: int) -> None:
                    results[r] = self.run("push-shard", self.cli(
                        "push", str(dirs[r]), artifact, "--shard", f"{r}/{world}", "--step",
                        str(step), "--json"), timeout=40)

                threads = [threading.Thread(target=one, args=(r,)) for r in sorted(todo)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                for r, res in results.items():
                    doc = res.json() if res.rc == 0 else None
                    if doc is not None:
                        todo.discard(r)
                        version = version or doc.get("version")
                    stuck = stuck or res.timed_out
                if not todo or stuck or self.stop.is_set():
                    break
                self.count("shard.rank_repushed", len(todo))
            if version is None and not self.stop.is_set():
                # Every record is in but no live rank committed (its committer died: the CLI's
                # ranks wait 300 s before taking a claim over), or ranks keep failing.  Ranks
                # pushed again through the library with a short stale_after finish the step.
                self.count("shard.finisher")
                for r in sorted(todo) or [0]:
                    res = self.run("shard-finish", self.child(
                        "child-shard-finish", "--lake", self.lake, "--artifact", artifact,
                        "--src", str(dirs[r]), "--rank", str(r), "--world", str(world),
                        "--step", str(step)), timeout=60, killable=False)
                    doc = res.json() if res.rc == 0 else None
                    version = version or (doc.get("version") if doc else None)
            if version is not None:
                self.log(event="commit", actor="sharder", attempt=attempt, artifact=artifact,
                         version=version, step=step, files=files)
                self.count("shard.committed")
            else:
                self.count("shard.left_pending")
            shutil.rmtree(base, ignore_errors=True)

        return body

    def checkpointer(self) -> Callable[[random.Random], None]:
        artifact = f"{PREFIX}/ckptr/ckpt"
        state = {"step": 0}

        def body(rng: random.Random) -> None:
            d = self.new_dir("ckptr")
            attempts: dict[int, dict[str, str]] = {}

            def on_line(line: str) -> None:
                try:
                    doc = json.loads(line)
                except ValueError:
                    return
                if doc.get("event") == "attempt":
                    attempts[doc["step"]] = doc["files"]
                    state["step"] = max(state["step"], doc["step"])
                    self.log(event="attempt", actor="checkpointer", artifact=artifact,
                             step=doc["step"], files=doc["files"])
                elif doc.get("event") == "commit":
                    self.log(event="commit", actor="checkpointer", artifact=artifact,
                             version=doc["version"], step=doc["step"],
                             files=attempts[doc["step"]])
                    self.count("checkpointer.saved")
                elif doc.get("event") in ("failed", "error"):
                    self.count("checkpointer.failed")

            self.count("checkpointer.started")
            self.run("checkpointer", self.child(
                "child-checkpointer", "--lake", self.lake, "--artifact", artifact,
                "--dir", str(d), "--step", str(state["step"] + 1000),
                "--seed", str(rng.randrange(1 << 30)), "--seed0", str(self.args.seed),
                "--stop", str(self.work / "stop")), timeout=1e9, on_line=on_line)
            state["step"] += 1000
            shutil.rmtree(d, ignore_errors=True)
            time.sleep(0.5)

        return body

    def suspender(self) -> Callable[[random.Random], None]:
        artifact = f"{PREFIX}/suspend/ckpt"
        state = {"step": 0}

        def body(rng: random.Random) -> None:
            state["step"] += 1
            src = self.new_dir("suspend")
            files = make_tree(src, rng, self.args.seed)
            attempt = uuid.uuid4().hex[:12]
            self.log(event="attempt", actor="suspender", attempt=attempt, artifact=artifact,
                     files=files)
            # At most: the child wakes as soon as gc has swept some of its chunks and removed
            # that record (record_retention after the sweep).
            pause = 60
            r = self.run("suspended-push", self.child(
                "child-suspend", "--lake", self.lake, "--artifact", artifact, "--src", str(src),
                "--pause", str(pause), "--step", str(state["step"])),
                timeout=180, killable=False)
            shutil.rmtree(src, ignore_errors=True)
            doc = r.json() or {}
            if doc.get("patched"):
                self.suspend_info["patched"] = doc["patched"]
            if r.rc == 0 and doc.get("version"):
                self.log(event="commit", actor="suspender", attempt=attempt, artifact=artifact,
                         version=doc["version"], files=files)
                self.count("suspend.committed")
                self.count("suspend.woke_after_record_removed", bool(doc.get("forgotten")))
                with self.lock:
                    self.suspend_info.setdefault("paused", []).append(doc.get("paused", 0))
            else:
                self.count("suspend.failed")
            self.stop.wait(rng.uniform(2, 6))

        return body

    def puller(self, i: int) -> Callable[[random.Random], None]:
        def body(rng: random.Random) -> None:
            pick = self.pick_commit(rng)
            if pick is None:
                time.sleep(0.5)
                return
            artifact, version = pick
            want = self.expected[pick]
            for attempt in (1, 2):
                dest = self.new_dir("pull")
                r = self.run("pull", self.cli("pull", f"{artifact}@v{version}",
                                              str(dest / "out"), "--json"), timeout=180)
                got = tree_digest(dest / "out") if r.rc == 0 else None
                shutil.rmtree(dest, ignore_errors=True)
                if r.rc == 0:
                    self.count("pull.ok")
                    if got == want:
                        self.count("pull.bit_exact")
                    else:
                        self.problem("pull not bit-exact", artifact=artifact, version=version,
                                     differing=sorted(k for k in set(got) | set(want)
                                                      if got.get(k) != want.get(k))[:5])
                    return
                if r.chaos_killed or r.timed_out or r.rc == 8:
                    self.count("pull.failed_transfer_or_killed")
                    return
                if self.tombstoned(artifact, version):
                    self.count("pull.deleted_by_gc")
                    with self.lock:
                        self.gone.add(pick)
                    return
                if attempt == 2:
                    self.problem("pull of a live version failed", artifact=artifact,
                                 version=version, rc=r.rc,
                                 stderr=[ln for ln in r.err.splitlines() if ln][-2:])
            time.sleep(rng.uniform(0, 0.3))

        return body

    def alias_mover(self) -> Callable[[random.Random], None]:
        def body(rng: random.Random) -> None:
            pick = self.pick_commit(rng, tuple(f"{PREFIX}/{a}/ckpt" for a in
                                               ("p0", "p1", "shared", "shard", "ckptr")))
            if pick is None:
                time.sleep(0.5)
                return
            artifact, version = pick
            name = rng.choice(ALIAS_NAMES)
            r = self.run("alias", self.cli("alias", f"{artifact}@v{version}", name, "--json"),
                         timeout=60)
            if r.rc == 0:
                self.count("alias.moved")
                self.log(event="alias", artifact=artifact, name=name, version=version)
            elif r.rc == 3:
                self.count("alias.target_gone")
                with self.lock:
                    self.gone.add(pick)
            else:
                self.count("alias.failed")
            time.sleep(rng.uniform(0.2, 1.5))

        return body

    def collector(self, i: int) -> Callable[[random.Random], None]:
        def body(rng: random.Random) -> None:
            r = self.run("gc", self.cli("gc", "--yes", "--json"), timeout=180)
            doc = r.json() if r.rc == 0 else None
            if doc is not None:
                res = doc.get("result") or {}
                self.count("gc.ok")
                self.count("gc.versions_deleted", len(res.get("versions_deleted", [])))
                self.count("gc.versions_spared", len(res.get("versions_spared", [])))
                self.count("gc.chunks_swept", res.get("chunks_swept", 0))
                self.count("gc.chunks_rescued", res.get("chunks_rescued", 0))
                self.count("gc.warnings", len(res.get("warnings", [])))
            else:
                self.count("gc.failed")
            time.sleep(rng.uniform(0, 1.0))

        return body

    # -- chaos --------------------------------------------------------------------------------

    FAULTS = ("drop-up", "drop-down", "503-burst", "503-rate", "stall", "stall-past-timeout",
              "outage", "vanish", "calm")

    def chaos(self) -> None:
        rng = random.Random(f"{self.args.seed}-chaos")
        next_kill = time.monotonic() + rng.uniform(2, 5)
        next_fault = time.monotonic() + 1
        while not self.stop.wait(rng.uniform(0.2, 0.6)):
            now = time.monotonic()
            if now >= next_kill:
                next_kill = now + rng.uniform(self.args.kill_every / 2, self.args.kill_every * 1.5)
                with self.lock:
                    victims = [(pid, kind) for pid, (p, kind, killable) in self.procs.items()
                               if killable and p.poll() is None]
                if victims:
                    # A kind first, then one of its processes: shard ranks (2-3 at once) and
                    # long gc runs would otherwise take most of the kills.
                    kind = rng.choice(sorted({k for _, k in victims}))
                    pid = rng.choice(sorted(p for p, k in victims if k == kind))
                    with self.lock:
                        self.killed.add(pid)
                    try:
                        with self.lock:
                            entry = self.procs.get(pid)
                        if entry is None or not self.sigkill(entry[0]):
                            raise ProcessLookupError(pid)
                        self.count(f"kill.{kind}")
                    except ProcessLookupError:
                        with self.lock:
                            self.killed.discard(pid)
            if now >= next_fault:
                next_fault = now + rng.uniform(1.5, 4)
                self.inject(rng, rng.choice(self.FAULTS))

    def inject(self, rng: random.Random, fault: str) -> None:
        p = self.proxy
        p.clear_faults()
        self.count(f"armed.{fault}")
        direction = rng.choice(("up", "down"))
        if fault == "drop-up":
            p.drop("up", after=rng.randint(1, 512 * KiB), count=rng.randint(1, 3))
        elif fault == "drop-down":
            p.drop("down", after=rng.randint(1, 512 * KiB), count=rng.randint(1, 3))
        elif fault == "503-burst":
            p.slowdown(count=rng.randint(3, 12))
        elif fault == "503-rate":
            p.slowdown(probability=0.15)
        elif fault == "stall":
            p.stall(direction, seconds=rng.uniform(0.3, 2), after=rng.randint(0, 256 * KiB),
                    count=rng.randint(1, 3))
        elif fault == "stall-past-timeout":
            p.stall(direction, seconds=READ_TIMEOUT + 1.5, after=rng.randint(0, 256 * KiB),
                    count=1)
        elif fault == "outage":
            p.down("reset")
            self.stop.wait(rng.uniform(0.3, 1.5))
            p.up()
        elif fault == "vanish":
            p.vanish(count=1, methods=["PUT"],
                     path=None if self.args.vanish == "all" else r"/chunks/")

    # -- the end check ------------------------------------------------------------------------

    def s3(self) -> Any:
        if not hasattr(self, "_s3"):
            import boto3
            import botocore.config
            self._s3 = boto3.client(
                "s3", endpoint_url=self.direct, region_name="us-east-1",
                aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
                config=botocore.config.Config(retries={"total_max_attempts": 5}))
        return self._s3

    def tombstoned(self, artifact: str, version: int) -> bool:
        from ckptlake.format import layout
        try:
            self.s3().head_object(Bucket=self.bucket,
                                  Key=f"{self.prefix}/{layout.tombstone_key(artifact, version)}")
            return True
        except Exception:  # noqa: BLE001 - 404 (or unreadable: then not proven deleted)
            return False

    def keys(self) -> dict[str, int]:
        """Key -> size of everything in the lake."""
        pages = self.s3().get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + "/")
        return {o["Key"][len(self.prefix) + 1:]: o["Size"]
                for page in pages for o in page.get("Contents", [])}

    def verify_command(self) -> dict[str, Any]:
        r = self.run("verify", self.cli("verify", "--read-data", "--json"), timeout=1800,
                     killable=False, env=self.direct_env)
        if r.rc == 2 and "No such command" in r.err:
            return {"ran": False, "note": "this ckptlake has no `verify` command: own check only"}
        doc = r.json() or {}
        out = {"ran": True, "rc": r.rc, "problems": doc.get("problems"),
               "unrestorable": doc.get("unrestorable"),
               "versions_checked": doc.get("versions_checked")}
        if r.rc not in (0, 5) or doc is None:
            out["stderr"] = [ln for ln in r.err.splitlines() if ln][-3:]
        if r.rc != 0:
            self.problem("verify --read-data found problems", rc=r.rc,
                         problems=(doc.get("problems") or [])[:10],
                         unrestorable=(doc.get("unrestorable") or [])[:10])
        return out

    def create_lake(self) -> None:
        """Write the lake header (with the soak's 1 MiB chunks) before the chaos starts,
        straight to SeaweedFS.  A header PUT cut after its head leaves an empty ckptlake.json,
        which the next push replaces (docs/format.md, "Empty objects"; tests/test_soak.py)."""
        from ckptlake.core.lakeheader import ensure_header
        from ckptlake.store import open_store

        with contextlib.ExitStack() as stack:
            saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                                     "AWS_SECRET_ACCESS_KEY")}
            stack.callback(lambda: [os.environ.pop(k, None) if v is None
                                    else os.environ.__setitem__(k, v) for k, v in saved.items()])
            os.environ.update(AWS_ENDPOINT_URL=self.direct,
                              AWS_ACCESS_KEY_ID=self.env["AWS_ACCESS_KEY_ID"],
                              AWS_SECRET_ACCESS_KEY=self.env["AWS_SECRET_ACCESS_KEY"])
            store = open_store(self.lake)
            ensure_header(store, chunk_size=MiB)
            store.close()

    def requests_for(self, key: str) -> list[str]:
        """What the proxy saw for this key: which fault, if any, made it what it is."""
        return [f"{ex.method} {ex.status} fault={ex.fault} outcome={ex.outcome} "
                f"up={ex.bytes_up}B" for ex in self.exchanges
                if unquote(ex.target.split("?", 1)[0]).endswith(key)][:6]

    def end_check(self) -> dict[str, Any]:
        """Straight against SeaweedFS, with the library (no proxy, no chaos)."""
        from ckptlake import Lake
        from ckptlake.core import catalog
        from ckptlake.format import layout
        from ckptlake.store import open_store

        os.environ.update(AWS_ENDPOINT_URL=self.direct,
                          AWS_ACCESS_KEY_ID=self.env["AWS_ACCESS_KEY_ID"],
                          AWS_SECRET_ACCESS_KEY=self.env["AWS_SECRET_ACCESS_KEY"],
                          AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
        # The journal, as written: it alone says what was committed.
        expected: dict[tuple[str, int], dict[str, str]] = {}
        attempted: dict[str, list[dict[str, str]]] = {}
        with open(self.journal_path, encoding="utf-8") as fh:
            for line in fh:
                ev = json.loads(line)
                if ev["event"] == "commit":
                    expected[(ev["artifact"], ev["version"])] = ev["files"]
                elif ev["event"] == "attempt":
                    attempted.setdefault(ev["artifact"], []).append(ev["files"])
        keys = self.keys()
        # A zero-byte manifest (its PUT cut after the head) is no version (docs/format.md,
        # "Empty objects"): counted, not checked as one.
        live = {p for k, size in keys.items() if size and (p := layout.parse_version_key(k))}
        out = Counter()
        out["empty_manifests"] = sum(1 for k, size in keys.items()
                                     if not size and layout.parse_version_key(k))
        tombs = {p for k, size in keys.items() if size and (p := layout.parse_tombstone_key(k))}
        artifacts = sorted({a for a, _ in live | tombs})
        store = open_store(self.lake)
        lake = Lake(store)

        def pull_digest(artifact: str, version: int) -> dict[str, str] | str:
            dest = self.new_dir("check")
            try:
                lake.pull(f"{artifact}@v{version}", dest / "out")
                return tree_digest(dest / "out")
            except Exception as exc:  # noqa: BLE001 - reported as unrestorable
                return f"{type(exc).__name__}: {exc}"
            finally:
                shutil.rmtree(dest, ignore_errors=True)

        for (artifact, version), files in sorted(expected.items()):
            if (artifact, version) in live:
                got = pull_digest(artifact, version)
                if got == files:
                    out["journalled_bit_exact"] += 1
                elif isinstance(got, str):
                    self.problem("version unrestorable", artifact=artifact, version=version,
                                 error=got[:300],
                                 requests=self.requests_for(layout.version_key(artifact, version)))
                else:
                    self.problem("version restores different bytes", artifact=artifact,
                                 version=version)
            elif (artifact, version) in tombs:
                out["journalled_deleted_by_policy"] += 1
            else:
                self.problem("version lost (no manifest, no tombstone)", artifact=artifact,
                             version=version)
        journalled = {}
        for (artifact, version), files in expected.items():
            journalled.setdefault(artifact, []).append(files)
        for artifact, version in sorted(live - set(expected)):
            got = pull_digest(artifact, version)
            if isinstance(got, str):
                self.problem("unjournalled version unrestorable", artifact=artifact,
                             version=version, error=got[:300],
                             requests=self.requests_for(layout.version_key(artifact, version)))
            elif got in attempted.get(artifact, []):
                out["unjournalled_verified"] += 1
                if got in journalled.get(artifact, []):
                    # The same tree is also journalled under another number: one push, two
                    # versions (a commit that landed but whose answer was lost, retried).
                    out["unjournalled_duplicate_of_a_journalled_commit"] += 1
            else:
                self.problem("unjournalled version matches no attempt", artifact=artifact,
                             version=version)
        for artifact in artifacts:
            for name, version in catalog.aliases(store, artifact).items():
                out["aliases"] += 1
                if (artifact, version) not in live:
                    self.problem("alias on a dead version", artifact=artifact, alias=name,
                                 version=version, tombstone=(artifact, version) in tombs)
        # How many chunk objects are frames (compressed): the chaos must have run over them.
        magic = b"CKZ\x01"
        for k in keys:
            if layout.parse_chunk_key(k) is None:
                continue
            out["chunk_objects"] += 1
            try:
                head = self.s3().get_object(Bucket=self.bucket, Key=f"{self.prefix}/{k}",
                                            Range="bytes=0-3")["Body"].read()
            except Exception:  # noqa: BLE001 - swept meanwhile: nothing to count
                continue
            out["chunk_objects_framed"] += head == magic
        out["versions_live"] = len(live)
        out["tombstones"] = len(tombs)
        out["journalled_commits"] = len(expected)
        out["shard_steps_pending"] = len(lake.pending())
        store.close()
        return dict(out)


# ---- setup and report -------------------------------------------------------------------------

@contextlib.contextmanager
def servers(args: argparse.Namespace, work: Path) -> Iterator[tuple[str, str]]:
    """(SeaweedFS endpoint, bucket): ours unless --endpoint."""
    if args.endpoint:
        import boto3
        client = boto3.client("s3", endpoint_url=args.endpoint, region_name="us-east-1",
                              aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "soak"),
                              aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY",
                                                                   "soak"))
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou,
                                 client.exceptions.BucketAlreadyExists):
            client.create_bucket(Bucket=args.bucket)
        yield args.endpoint, args.bucket
        return
    sys.path.insert(0, str(ROOT / "bench"))
    from server import SeaweedFS

    weed = SeaweedFS(Path(sys.executable).parent / "weed", work)
    try:
        weed.start()
        weed.create_bucket(args.bucket)
        yield weed.endpoint, args.bucket
    finally:
        weed.stop()


def _range(values: list[float] | None) -> str:
    return f"{min(values):.0f}-{max(values):.0f}" if values else "-"


def _short(text: str, n: int = 160) -> str:
    text = text.replace("ckptlake: error: ", "").replace("|", "/")
    return text if len(text) <= n else text[:n - 3] + "..."


def report(doc: dict[str, Any]) -> str:
    c = doc["counts"]

    def n(key: str) -> int:
        return c.get(key, 0)

    def group(prefix: str) -> str:
        items = sorted((k[len(prefix):], v) for k, v in c.items() if k.startswith(prefix))
        return ", ".join(f"{k} {v}" for k, v in items) or "none"

    faults = doc["faults_fired"]
    verify = doc["verify"]
    lines = [
        "<!-- bench:soak:start -->",
        f"## soak: chaos soak ({doc['duration_s']:.0f} s, seed {doc['seed']})",
        *([f"", f"(Ran {doc['extended_s']:.0f} s past --duration to reach --min-ops"
           + (f"; still short of: {', '.join(doc['short_of'])}" if doc["short_of"] else "")
           + ".)"] if doc["extended_s"] else []),
        "",
        f"`{doc['command']}` on {doc['date']} ({doc['machine']}); every client a process "
        "against SeaweedFS behind the fault proxy; gc with grace_period 0s, sweep_window "
        f"{SWEEP_WINDOW}s, record_retention {RECORD_RETENTION}s; chunk size {CHUNK}.",
        "",
        "| operation | result |",
        "|---|---|",
        f"| push (CLI) | {n('push.ok')} committed, {n('push.failed')} failed or killed |",
        f"| sharded push (CLI, 2-3 ranks) | {n('shard.committed')} steps committed, "
        f"{n('shard.rank_repushed')} ranks pushed again, {n('shard.finisher')} finished by "
        f"takeover, {n('shard.left_pending')} left pending |",
        f"| checkpointer (library) | {n('checkpointer.saved')} saved, "
        f"{n('checkpointer.started')} processes started |",
        f"| suspended-clock push | {n('suspend.committed')} committed, "
        f"{n('suspend.failed')} failed; suspended {_range(doc['suspend'].get('paused'))} s "
        f"(record_retention {RECORD_RETENTION} s), {n('suspend.woke_after_record_removed')} "
        "of them until gc had swept their chunks and removed that record; clocks frozen: "
        f"{', '.join(doc['suspend'].get('patched', [])) or '-'} |",
        f"| pull (CLI) | {n('pull.ok')} ok, {n('pull.bit_exact')} bit-exact, "
        f"{n('pull.deleted_by_gc')} found deleted by gc, "
        f"{n('pull.failed_transfer_or_killed')} failed or killed |",
        f"| alias (CLI) | {n('alias.moved')} moved, {n('alias.target_gone')} target gone, "
        f"{n('alias.failed')} failed |",
        f"| gc (CLI) | {n('gc.ok')} runs, {n('gc.failed')} failed or killed; "
        f"{n('gc.versions_deleted')} versions deleted, {n('gc.versions_spared')} spared, "
        f"{n('gc.chunks_swept')} chunks swept, {n('gc.chunks_rescued')} rescued |",
        f"| kill -9 | {group('kill.')} |",
        f"| faults armed | {group('armed.')} |",
        f"| faults fired (proxy) | {', '.join(f'{k} {v}' for k, v in sorted(faults.items()))} "
        f"({doc['proxy_requests']} requests through the proxy) |",
        "",
        "End check (journal against the lake, straight to SeaweedFS): "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(doc["end_check"].items()))
        + ".",
        "",
        ("`ckptlake verify --read-data`: " + (
            f"exit {verify['rc']}, {verify.get('versions_checked')} versions checked, "
            f"{len(verify.get('problems') or [])} problems, "
            f"{len(verify.get('unrestorable') or [])} unrestorable" if verify.get("ran")
            else verify.get("note", "not run"))) + ".",
        "",
        "Client failures other than kills and timeouts (count: a sample of stderr):",
        "",
        *(f"- {k} x{c.get('exit.' + k.replace(' exit ', '.'), '?')}: "
          f"{_short(' '.join(v[0]) if v else '')}" for k, v in sorted(doc["failures"].items())),
        "",
        f"**Problems: {len(doc['problems'])}** ({doc['versions_affected']} versions affected); "
        f"internal errors (exit 1): {doc['anomaly_count']}.",
        *(f"- {p['kind']}: " + ", ".join(f"{k}={_short(str(v))}" for k, v in p.items()
                                         if k not in ("kind", "requests"))
          for p in doc["problems"][:12]),
        "<!-- bench:soak:end -->",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].startswith("child-"):
        return child_main(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=120, help="seconds of chaos (default 120)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, help="replace the soak section of this markdown file")
    ap.add_argument("--json", type=Path, help="write the full result as JSON here")
    ap.add_argument("--workdir", type=Path, help="scratch dir (default: a new temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir (journal, logs)")
    ap.add_argument("--endpoint", help="use this SeaweedFS/S3 endpoint instead of starting one")
    ap.add_argument("--bucket", default="soak")
    ap.add_argument("--prefix", default="soak", help="the lake's key prefix in the bucket")
    ap.add_argument("--min-ops", type=int, default=0, metavar="N",
                    help="keep going past --duration (up to --max-duration) until every kind of "
                         "operation, and the kills, happened N times (a slow machine's CI)")
    ap.add_argument("--max-duration", type=float, help="default: 3 x --duration")
    ap.add_argument("--pushers", type=int, default=2)
    ap.add_argument("--pullers", type=int, default=2)
    ap.add_argument("--gcs", type=int, default=2)
    ap.add_argument("--kill-every", type=float, default=4.0,
                    help="mean seconds between kill -9s (default 4)")
    ap.add_argument("--vanish", choices=("all", "chunks"), default="all",
                    help="which PUTs a client may vanish in the middle of (after the request "
                         "head): any (default; on SeaweedFS that leaves empty objects, which "
                         "the lake counts as absent), or chunk uploads only")
    ap.add_argument("--no-suspend", action="store_true",
                    help="leave out the suspended-clock pusher")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    from faultproxy import FaultProxy

    base = args.workdir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ckptlake-soak-", dir=base))
    started = time.time()
    soak: Soak | None = None
    threads: list[threading.Thread] = []
    try:
        with servers(args, work / "weed") as (direct, bucket):
            proxy = FaultProxy(direct, seed=args.seed).start()
            try:
                soak = Soak(args, work, proxy.endpoint_url, direct, bucket, proxy)
                soak.say(f"SeaweedFS {direct}, fault proxy {proxy.endpoint_url}, lake "
                         f"{soak.lake}, scratch {work}, {args.duration:g} s")
                named: list[tuple[str, Callable]] = [
                    *((f"pusher{i}", soak.pusher(i)) for i in range(args.pushers)),
                    ("sharder", soak.sharder()), ("checkpointer", soak.checkpointer()),
                    *((f"puller{i}", soak.puller(i)) for i in range(args.pullers)),
                    ("alias", soak.alias_mover()),
                    *((f"gc{i}", soak.collector(i)) for i in range(args.gcs))]
                if not args.no_suspend:
                    named.append(("suspender", soak.suspender()))
                soak.create_lake()
                threads = [soak.actor(name, body) for name, body in named]
                chaos = threading.Thread(target=soak.chaos, name="chaos", daemon=True)
                chaos.start()
                t0 = time.monotonic()
                deadline = t0 + args.duration
                hard = t0 + max(args.duration, args.max_duration or 3 * args.duration)
                while (left := deadline - time.monotonic()) > 0 or (
                        soak.short_of(args.min_ops) and time.monotonic() < hard):
                    time.sleep(min(max(left, 5), 15))
                    c = soak.counts
                    soak.say(f"push {c['push.ok']} shard {c['shard.committed']} ckptr "
                             f"{c['checkpointer.saved']} pull {c['pull.bit_exact']} alias "
                             f"{c['alias.moved']} gc {c['gc.ok']} kills "
                             f"{sum(v for k, v in c.items() if k.startswith('kill.'))} "
                             f"problems {len(soak.problems)}")
                soak.extended = max(0.0, time.monotonic() - deadline)
                soak.stop.set()
                (work / "stop").touch()
                chaos.join(10)
                proxy.clear_faults()
                proxy.up()
                soak.say("stopping: letting running clients finish (60 s at most)")
                end = time.monotonic() + 60
                for t in threads:
                    t.join(max(0.1, end - time.monotonic()))
                left_running = soak.kill_all()
                for t in threads:
                    t.join(10)
                soak.say(f"clients stopped ({left_running} killed at the end); verifying")
                faults = dict(proxy.stats().faults)
                soak.exchanges = proxy.exchanges()
                requests = proxy.stats().total_requests
            finally:
                proxy.stop()
            verify = soak.verify_command()
            end = soak.end_check()
    except KeyboardInterrupt:
        print("[soak] interrupted", file=sys.stderr)
        return 130
    finally:
        if soak is not None:
            soak.stop.set()
            soak.kill_all()
            soak.journal.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    doc = {
        "seed": args.seed, "duration_s": round(args.duration + soak.extended, 1),
        "extended_s": round(soak.extended, 1), "short_of": soak.short_of(args.min_ops),
        "command": "python bench/soak.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d", time.gmtime(started)),
        "machine": f"{os.cpu_count()} cores",
        "wall_s": round(time.time() - started, 1),
        "counts": dict(sorted(soak.counts.items())), "faults_fired": faults,
        "proxy_requests": requests, "kills": sum(v for k, v in soak.counts.items()
                                                 if k.startswith("kill.")),
        "verify": verify, "end_check": end, "suspend": soak.suspend_info,
        "problems": soak.problems, "anomalies": soak.anomalies[:20],
        "anomaly_count": len(soak.anomalies), "failures": soak.failures,
        "versions_affected": len({(p["artifact"], p["version"]) for p in soak.problems
                                  if "artifact" in p and "version" in p}),
    }
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    text = report(doc)
    sys.path.insert(0, str(ROOT / "bench"))
    from report import publish

    publish(text, args.out, "soak", "soak")
    return 1 if soak.problems else 0


def child_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("role")
    ap.add_argument("--lake", required=True)
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--dir")
    ap.add_argument("--src")
    ap.add_argument("--step", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seed0", type=int, default=0)
    ap.add_argument("--stop")
    ap.add_argument("--pause", type=float, default=0)
    ap.add_argument("--rank", type=int, default=0)
    ap.add_argument("--world", type=int, default=1)
    args = ap.parse_args(argv)
    role = {"child-checkpointer": child_checkpointer, "child-suspend": child_suspend,
            "child-shard-finish": child_shard_finish}[args.role]
    return role(args)


if __name__ == "__main__":
    sys.exit(main())
