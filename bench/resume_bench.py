#!/usr/bin/env python3
"""Resumed pull after a kill -9: how many bytes does the re-run move again?  (issue 3)

    python3 bench/resume_bench.py [--size 4GiB] [--kill-at 0.7] [--reps 3] \
        [--out docs/benchmarks.md]
    python3 bench/resume_bench.py --size 512MiB --reps 1      # a quick look

Target: `ckptlake pull` of a 4 GiB file interrupted at ~70 % (kill -9) and re-run transfers
<= 40 % of the bytes again.

Standard library only, like run.py (whose bench/.venv bootstrap it reuses: ckptlake and weed
come from there).  Steps:

1. a SeaweedFS of its own (bench/server.py) on loopback, stopped by its PID at the end;
2. one file of SIZE seeded random bytes (incompressible, no two chunks alike) in a temp dir
   under bench/.work/ (same disk as the other benches; deleted at the end), hashed as written;
3. `ckptlake push FILE bench/resume/blob --lake s3://resumebench/lake-... --json` straight to
   the server;
4. per rep: `ckptlake pull ... DEST --json` through a counting TCP proxy (below); the pull's
   staging journal (`.<dest name>.ckptlake-pull-<id>/journal` next to DEST, one line per chunk
   whose bytes are verified and written, see ckptlake/core/pull.py) is polled every 10 ms and
   the pull's process group gets SIGKILL once the journaled chunks cover KILL_AT of the file;
   then the same pull again, to completion; the result is checked against the source SHA-256.

Bytes moved are counted by the proxy, independent of ckptlake's own claims: every byte the
server sent towards the client (HTTP heads and bodies, all requests: manifest, header, chunk
GETs) that the proxy delivered into the client's socket.  Nothing is cached between client and
server, and the proxy is plain TCP (no HTTP parsing), so this is what a network link would have
carried.  The re-run's `ckptlake pull --json` result (bytes_downloaded / bytes_resumed /
bytes_reused) is printed next to it.
"""
from __future__ import annotations

import argparse
import fcntl
import glob
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import report
from datasets import sha256_file
import run
from server import SeaweedFS
from tools import CkptLake

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
CKPTLAKE = run.VENV / "bin" / "ckptlake"
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
CHUNK = 16 * MiB  # ckptlake's default chunk size (policy/config.py); pushed with it explicitly
BUCKET = "resumebench"
ARTIFACT = "bench/resume/blob"
TARGET = 0.40  # the bar: the re-run moves at most 40 % of the file
SECTION = "resume"


def log(msg: str) -> None:
    print(msg, flush=True)


def parse_size(s: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*", s, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {s!r} (e.g. 4GiB, 512MiB)")
    mult = {"": 1, "K": KiB, "M": MiB, "G": GiB, "T": 1 << 40}[m.group(2).upper()]
    n = int(float(m.group(1)) * mult)
    if n < 2 * CHUNK:
        raise argparse.ArgumentTypeError(f"at least {2 * CHUNK // MiB} MiB")
    return n


def fmt_size(n: int) -> str:
    return f"{n / GiB:g} GiB" if n % GiB == 0 else f"{n / MiB:g} MiB"


# ---------------------------------------------------------------- counting proxy

class CountingProxy:
    """A plain TCP relay on loopback that counts the bytes each way (per run: reset() between
    runs).  One thread per direction and connection; bytes move with splice(2) through a pipe
    (no copy into Python), with a recv/send fallback.  `down` counts the bytes delivered into
    the client's socket, `up` those delivered into the server's."""

    def __init__(self, upstream_port: int):
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self.down = self.up = self.connections = self.active = 0
        self._stopping = False
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        with self._lock:
            self.down = self.up = self.connections = 0

    def counts(self) -> dict:
        with self._lock:
            return {"down": self.down, "up": self.up, "connections": self.connections}

    def wait_idle(self, timeout: float = 10) -> bool:
        """Wait until every relayed connection is closed (their counts are final)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.active == 0:
                    return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        self._stopping = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                self.active += 1
            done = threading.Barrier(2, action=lambda: self._closed(client, server))
            for src, dst, way in ((client, server, "up"), (server, client, "down")):
                threading.Thread(target=self._pump, args=(src, dst, way, done), daemon=True,
                                 name=f"proxy-{way}").start()

    def _closed(self, client: socket.socket, server: socket.socket) -> None:
        client.close()
        server.close()
        with self._lock:
            self.active -= 1

    def _add(self, way: str, n: int) -> None:
        with self._lock:
            if way == "down":
                self.down += n
            else:
                self.up += n

    def _pump(self, src: socket.socket, dst: socket.socket, way: str,
              done: threading.Barrier) -> None:
        try:
            try:
                self._splice(src, dst, way)
            except OSError as e:
                if getattr(e, "errno", None) not in (22, 38):  # EINVAL / ENOSYS: no splice here
                    raise
                self._copy(src, dst, way)
            dst.shutdown(socket.SHUT_WR)  # pass the EOF on (half-close)
        except OSError:  # a peer died (the killed pull: reset): tear the pair down
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        finally:
            done.wait()

    def _splice(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        r, w = os.pipe()
        try:
            try:
                size = fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, MiB)
            except (OSError, AttributeError):
                size = 64 * KiB
            while n := os.splice(src.fileno(), w, size):
                while n:
                    m = os.splice(r, dst.fileno(), n)
                    n -= m
                    self._add(way, m)
        finally:
            os.close(r)
            os.close(w)

    def _copy(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        buf = memoryview(bytearray(MiB))
        while n := src.recv_into(buf):
            sent = 0
            while sent < n:
                m = dst.send(buf[sent:n])
                sent += m
                self._add(way, m)


# ---------------------------------------------------------------- data

def make_file(path: Path, size: int) -> str:
    """size seeded random bytes (the same on every machine), returns their SHA-256."""
    h = hashlib.sha256()
    rng = random.Random(f"resume:{size}")
    with open(path, "wb") as f:
        left = size
        while left:
            block = rng.randbytes(min(CHUNK, left))
            f.write(block)
            h.update(block)
            left -= len(block)
    return h.hexdigest()


# ---------------------------------------------------------------- one rep

def run_pull(cmd: list[str], env: dict, logbase: Path, proxy, *,
             kill_when=None) -> tuple[subprocess.Popen, float, int]:
    """Run the pull (own process group, output to logbase.out/.err) until it exits, or SIGKILL
    the group as soon as kill_when() is true.  Returns (process, wall s, proxy bytes sent to
    the client at the kill or exit)."""
    with open(f"{logbase}.out", "wb") as out, open(f"{logbase}.err", "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                cwd=WORK, start_new_session=True)
        try:
            deadline = t0 + run.RUN_TIMEOUT
            while proc.poll() is None and time.perf_counter() < deadline:
                if kill_when is not None and kill_when():
                    break
                time.sleep(0.01)
            at_end = proxy.counts()["down"]
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        return proc, time.perf_counter() - t0, at_end


def journaled(dest: Path) -> tuple[int, Path | None]:
    """Distinct chunks the pull's staging journal lists as written (complete lines only)."""
    for stage in glob.glob(str(dest.parent / f".{dest.name}.ckptlake-pull-*")):
        try:
            text = (Path(stage) / "journal").read_text()
        except OSError:
            continue
        return len({line for line in text.split("\n")[:-1] if line}), Path(stage)
    return 0, None


def ckptlake_cmd(*args: str, lake: str, endpoint: str) -> list[str]:
    return [str(CKPTLAKE), *args, "--lake", lake, "--endpoint-url", endpoint, "--json"]


def last_json(text: str) -> dict | None:
    try:
        doc = json.loads(text.strip().splitlines()[-1])
        return doc if isinstance(doc, dict) else None
    except (ValueError, IndexError):
        return None


def one_rep(rep: int, args, lake: str, proxy: CountingProxy, env: dict, work: Path,
            source_sha: str, logdir: Path) -> dict:
    size, nchunks = args.size, -(-args.size // CHUNK)
    dest = work / "dl" / f"r{rep}" / "blob.bin"
    shutil.rmtree(dest.parent, ignore_errors=True)
    dest.parent.mkdir(parents=True)
    cmd = ckptlake_cmd("pull", ARTIFACT, str(dest), lake=lake, endpoint=proxy.endpoint)
    rec: dict = {"rep": rep, "size": size, "chunks": nchunks}

    # -- run 1: killed once the journal covers kill_at of the file
    proxy.reset()
    kill_chunks = max(1, min(nchunks - 1, round(args.kill_at * nchunks)))
    proc, rec["killed_wall_s"], proxy_at_kill = run_pull(
        cmd, env, logdir / f"r{rep}-killed", proxy,
        kill_when=lambda: journaled(dest)[0] >= kill_chunks)
    if proc.returncode != -signal.SIGKILL:
        tail = (logdir / f"r{rep}-killed.err").read_text(errors="replace").strip()[-400:]
        raise RuntimeError(f"rep {rep}: the pull ended (exit {proc.returncode}) before "
                           f"{args.kill_at:.0%} was journaled; try a larger --size. {tail}")
    proxy.wait_idle()
    first = proxy.counts()
    done_chunks, stage = journaled(dest)  # what the killed run left for the re-run
    staged_bytes = min(size, done_chunks * CHUNK)
    rec.update({"kill_fraction": staged_bytes / size,
                "proxy_fraction_at_kill": proxy_at_kill / size,
                "journaled_chunks": done_chunks, "killed_bytes": first["down"],
                "killed_connections": first["connections"],
                "staging_left": stage is not None})

    # -- run 2: the same pull, to completion
    proxy.reset()
    proc, rec["rerun_wall_s"], _ = run_pull(cmd, env, logdir / f"r{rep}-rerun", proxy)
    proxy.wait_idle()
    second = proxy.counts()
    rec.update({"rerun_bytes": second["down"], "rerun_connections": second["connections"],
                "rerun_fraction": second["down"] / size,
                "ideal_fraction": 1 - staged_bytes / size,
                "result": last_json((logdir / f"r{rep}-rerun.out").read_text(errors="replace"))})
    if proc.returncode:
        tail = (logdir / f"r{rep}-rerun.err").read_text(errors="replace").strip()[-400:]
        rec["status"] = f"FAILED (re-run exit {proc.returncode}): {tail}"
    elif not dest.is_file():
        rec["status"] = "FAILED: no file at the destination"
    elif (got := sha256_file(dest)) != source_sha:
        rec["status"] = f"FAILED: SHA-256 {got[:16]}... != source {source_sha[:16]}..."
    else:
        rec["status"] = "ok"
    leftovers = glob.glob(str(dest.parent / f".{dest.name}.ckptlake-pull-*"))
    if rec["status"] == "ok" and leftovers:
        rec["status"] = f"ok (staging dir left behind: {Path(leftovers[0]).name})"
    rec["pass"] = rec["status"].startswith("ok") and rec["rerun_fraction"] <= TARGET
    shutil.rmtree(dest.parent, ignore_errors=True)
    return rec


# ---------------------------------------------------------------- report

def num(x) -> str:
    return f"{x:,}" if isinstance(x, int) else "?"


def rep_line(r: dict) -> str:
    res = r.get("result") or {}
    return (f"[rep {r['rep']}] killed at {r['kill_fraction']:.1%} journaled "
            f"({r['proxy_fraction_at_kill']:.1%} received) after {r['killed_wall_s']:.1f} s, "
            f"moved {r['killed_bytes'] / MiB:,.1f} MiB; re-run {r['rerun_wall_s']:.1f} s, moved "
            f"{r['rerun_bytes'] / MiB:,.1f} MiB = {r['rerun_fraction']:.1%} of the file "
            f"(ideal {r['ideal_fraction']:.1%}); ckptlake --json: downloaded "
            f"{num(res.get('bytes_downloaded'))} resumed {num(res.get('bytes_resumed'))} "
            f"reused {num(res.get('bytes_reused'))} B; {r['status']}; "
            f"{'PASS' if r['pass'] else 'FAIL'} (<= {TARGET:.0%})")


def section(recs: list[dict], meta: dict, args) -> str:
    rows = ["| rep | killed at (journaled / received) | killed run: wall s | killed run: MiB "
            "moved | re-run: wall s | re-run: MiB moved | re-run % of file | ideal % | "
            "ckptlake: downloaded / resumed MiB | ≤ 40 % |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
    for r in recs:
        res = r.get("result") or {}
        tool = (f"{res['bytes_downloaded'] / MiB:,.1f} / {res['bytes_resumed'] / MiB:,.1f}"
                if "bytes_downloaded" in res else "—")
        verdict = ("pass" if r["pass"] else "**FAIL**") + \
            ("" if r["status"] == "ok" else f" ({r['status'].replace('|', '/')})")
        rows.append(f"| {r['rep']} | {r['kill_fraction']:.1%} / {r['proxy_fraction_at_kill']:.1%} "
                    f"| {r['killed_wall_s']:.1f} | {r['killed_bytes'] / MiB:,.1f} "
                    f"| {r['rerun_wall_s']:.1f} | {r['rerun_bytes'] / MiB:,.1f} "
                    f"| {r['rerun_fraction']:.1%} | {r['ideal_fraction']:.1%} | {tool} "
                    f"| {verdict} |")

    def med(key: str) -> float:
        return statistics.median(r[key] for r in recs)

    rows.append(f"| **median** | {med('kill_fraction'):.1%} / {med('proxy_fraction_at_kill'):.1%} "
                f"| {med('killed_wall_s'):.1f} | {med('killed_bytes') / MiB:,.1f} "
                f"| {med('rerun_wall_s'):.1f} | {med('rerun_bytes') / MiB:,.1f} "
                f"| {med('rerun_fraction'):.1%} | {med('ideal_fraction'):.1%} | "
                f"| {'pass' if med('rerun_fraction') <= TARGET else '**FAIL**'} |")
    ok = sum(r["pass"] for r in recs)
    out = [
        f"<!-- bench:{SECTION}:start -->",
        f"## resume: pull of a {fmt_size(args.size)} file killed at ~{args.kill_at:.0%}, "
        "then re-run",
        "",
        f"Issue 3's bar: the re-run moves ≤ {TARGET:.0%} of the file again. "
        + report.run_where(meta),
        *report.reproduce(meta),
        f"Setup: one file of {args.size:,} seeded random bytes ({-(-args.size // CHUNK)} chunks of "
        f"{CHUNK // MiB} MiB), pushed once to a SeaweedFS on loopback. Per rep, `ckptlake pull "
        f"{ARTIFACT} DEST --json` (default settings: 8 parallel chunk GETs) into a fresh "
        "directory, through a plain TCP proxy that counts the bytes the server sent to the "
        "client (heads and bodies, every request). The pull gets SIGKILL once its staging "
        "journal lists the chunks covering the kill fraction ('journaled': written and "
        "verified, what a re-run can reuse; 'received': bytes the client had read off the wire "
        "by then, including chunks still in flight). Then the same command again, to "
        "completion; the result's SHA-256 is compared with the source. 'ideal' = the share of "
        "the file not journaled at the kill, the least a re-run must fetch. 'ckptlake' = the "
        "re-run's own `bytes_downloaded` / `bytes_resumed` from `--json`.",
        "",
        *rows,
        "",
        f"{ok}/{len(recs)} reps pass. Client and server share the machine's cores; wall times "
        "include the proxy hop.",
        "",
        "Versions:",
        "",
        *[f"- {k}: `{v}`" for k, v in meta["versions"].items()],
        f"<!-- bench:{SECTION}:end -->",
    ]
    return "\n".join(out)


# ---------------------------------------------------------------- main

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=parse_size, default=4 * GiB, help="file size (default 4GiB)")
    p.add_argument("--kill-at", type=float, default=0.7,
                   help="SIGKILL the first pull once this share of the file is journaled "
                        "(default 0.7)")
    p.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    p.add_argument("--out", type=Path, help="markdown file to write/replace the section in, "
                                            "e.g. docs/benchmarks.md")
    args = p.parse_args(argv)
    if not 0 < args.kill_at < 1:
        p.error("--kill-at must be between 0 and 1")
    return args


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    command = shlex.join(["python3", "bench/resume_bench.py",
                          "--size", fmt_size(args.size).replace(" ", ""),
                          "--kill-at", f"{args.kill_at:g}", "--reps", str(args.reps)]
                         + (["--out", str(args.out)] if args.out else []))
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` us: stop the server on the way out
    WORK.mkdir(exist_ok=True)
    run.ensure_venv(with_ckptlake=True)
    need = args.size * 3.2  # source, the server's copy, the download (+ SeaweedFS overhead)
    if shutil.disk_usage(WORK).free < need:
        sys.exit(f"need {need / GiB:.1f} GiB free under {WORK}")
    work = Path(tempfile.mkdtemp(prefix="resume-", dir=WORK))
    logdir = WORK / "logs-resume"  # kept after the run (run.py clears .work/logs)
    shutil.rmtree(logdir, ignore_errors=True)
    logdir.mkdir()
    server = SeaweedFS(run.VENV / "bin" / "weed", work)
    proxy = None
    recs: list[dict] = []
    try:
        t = time.perf_counter()
        src = work / "blob.bin"
        source_sha = make_file(src, args.size)
        log(f"[resume] {fmt_size(args.size)} of random bytes in {time.perf_counter() - t:.1f} s "
            f"(sha256 {source_sha[:16]}...)")
        server.start()
        server.create_bucket(BUCKET)
        proxy = CountingProxy(server.s3_port)
        env = run.tool_env(proxy.endpoint)
        lake = f"s3://{BUCKET}/lake-{int(time.time())}"
        meta = {"machine": run.machine_info(), "command": command,
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "versions": {"ckptlake": CkptLake(run.VENV / "bin", server.endpoint).version(env),
                             "SeaweedFS (server)": subprocess.run(
                                 [str(run.VENV / "bin" / "weed"), "version"], capture_output=True,
                                 text=True).stdout.strip().splitlines()[0]}}
        t = time.perf_counter()
        push = subprocess.run(ckptlake_cmd("push", str(src), ARTIFACT, "--chunk-size",
                                           f"{CHUNK // MiB}MiB", lake=lake,
                                           endpoint=server.endpoint),
                              env=env, capture_output=True, text=True, cwd=WORK)
        if push.returncode:
            raise RuntimeError(f"push failed ({push.returncode}): {push.stderr[-1000:]}")
        log(f"[resume] pushed to {lake} at {server.endpoint} in {time.perf_counter() - t:.1f} s: "
            f"{push.stdout.strip()}")
        log(f"[resume] pulls go through the counting proxy at {proxy.endpoint}; "
            f"logs in {logdir}")
        for rep in range(1, args.reps + 1):
            rec = one_rep(rep, args, lake, proxy, env, work, source_sha, logdir)
            recs.append(rec)
            log(rep_line(rec))
        text = section(recs, meta, args)
        report.publish(text, args.out, SECTION, "resume")
        out = WORK / "results" / f"resume-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({"meta": meta, "args": {**vars(args), "out": str(args.out)},
                                   "results": recs}, indent=1))
        log(f"[resume] raw results: {out}")
    except KeyboardInterrupt:
        sys.exit("interrupted")
    finally:
        if proxy is not None:
            proxy.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    if not all(r["pass"] for r in recs):
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
