#!/usr/bin/env python3
"""Where the client's CPU goes in a push and a pull: ckptlake next to s5cmd, under `perf`
(issue 3: "report honestly where short, with a profile of where time goes").

    python3 bench/profile_bench.py [--dataset ckpt2g] [--tools ckptlake,s5cmd] [--reps 3]
        [--out docs/benchmarks.md]

Needs Linux `perf` (run as root, or with kernel.perf_event_paranoid <= 1 for the kernel's
share). Standard library only; the machinery is bench/run.py's (bench/.venv, scrubbed tool
environment, run.measure for wall time and the `weed` server's CPU), the SeaweedFS of
bench/server.py and the data sets of bench/datasets.py.

Every run is recorded with `perf record -F 499 -g` (the client process and its threads only,
not the server). Each sample is put in one bucket, by its stack: the first kernel frame from
the leaf up that says what the kernel was doing (a page fault, a socket receive or send,
the loopback's softirq delivery, a file syscall, a futex/schedule), else the leaf's library:
OpenSSL's libcrypto (hashlib's SHA-256, plus SigV4's HMACs), the Python interpreter with its
C extension modules, libc, a Go binary. CPU-s per GiB = samples x sampling period / data set
size: measured CPU, not estimated. The fixed cost of one `ckptlake` command (interpreter
start, imports, botocore client, the lake header and manifest reads) is measured separately
as a pull of a 1 KiB artifact.

Per rep, tools interleaved: warm-up push + pull (first rep only, not counted), then per tool
an upload into a fresh bucket and a download of it into a fresh directory (verified file by
file, size + SHA-256), then the 1 KiB pull. Takes ~4 minutes for ckpt2g x 3 reps.
`--out` replaces the `<!-- bench:profile:start/end -->` section of the file.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from statistics import median

import datasets
import report
import run
from server import SeaweedFS
from tools import TOOLS, Tool

GiB = 1 << 30
SECTION = "profile"
FREQ = 499  # Hz: ~2 ms per sample; enough for a 3 s pull, small overhead
OPS = ("upload", "download")
log = run.log

# Kernel frames that say what a sample's syscall or fault was for, most specific first when
# walking a stack from the leaf up (a page fault inside a socket copy counts as memory).
KERNEL_MARKS = (
    ("kernel: page faults, mmap/munmap (memory)",
     ("asm_exc_page_fault", "exc_page_fault", "__x64_sys_munmap", "__x64_sys_mmap",
      "__x64_sys_madvise", "__x64_sys_brk")),
    ("kernel: loopback delivery (softirq)",
     ("net_rx_action", "__napi_poll", "handle_softirqs", "__do_softirq", "do_softirq")),
    ("kernel: socket receive (copy into the buffer)",
     ("tcp_recvmsg", "sock_recvmsg", "__sys_recvfrom", "__sys_recvmsg", "sock_read_iter")),
    ("kernel: socket send",
     ("tcp_sendmsg", "sock_sendmsg", "__sys_sendto", "__sys_sendmsg", "sock_write_iter")),
    ("kernel: file I/O (read, write, open, stat, rename)",
     ("vfs_read", "vfs_write", "ksys_read", "ksys_write", "ksys_pread64", "ksys_pwrite64",
      "do_sys_openat2", "vfs_statx", "vfs_fstat", "__x64_sys_close", "vfs_fallocate",
      "do_renameat2", "do_unlinkat", "do_mkdirat", "vfs_fsync", "iterate_dir", "ext4_",
      "iomap_", "filemap_", "do_splice", "vfs_copy_file_range", "__x64_sys_sendfile")),
    ("kernel: scheduling, futex, polling",
     ("futex_", "__x64_sys_futex", "schedule", "__x64_sys_sched_yield", "do_epoll_",
      "do_sys_poll", "do_select", "__x64_sys_nanosleep", "hrtimer_nanosleep")),
)
USER_LIBS = (
    ("SHA-256 and HMAC (OpenSSL libcrypto)", ("libcrypto",)),
    ("Python interpreter (+ C extension modules)", ("libpython", "cpython-", "/bin/python")),
    ("libc (malloc, memcpy, locks)", ("libc.so", "libc-", "ld-linux", "libm.so")),
)
KERNEL_OTHER = "kernel: other (syscall entry/exit, timers, ...)"
GO = "Go code (the tool and the Go runtime)"
OTHER = "other / unresolved"


def classify(frames: list[tuple[str, str]], go_binaries: tuple[str, ...]) -> str:
    """One bucket for one sample; frames are (symbol, dso) from the leaf up."""
    if not frames:
        return OTHER
    for sym, dso in frames:
        if dso != "[kernel.kallsyms]":
            break
        for bucket, marks in KERNEL_MARKS:
            if sym.startswith(marks):
                return bucket
    leaf_sym, leaf_dso = frames[0]
    if leaf_dso == "[kernel.kallsyms]":
        return KERNEL_OTHER
    for bucket, marks in USER_LIBS:
        if any(m in leaf_dso for m in marks):
            return bucket
    if any(leaf_dso.endswith("/" + g) for g in go_binaries):
        return GO
    return OTHER


_HEADER = re.compile(r"^\S.*?\s(\d+)\s+[\w:-]+:\s*$")
_FRAME = re.compile(r"^\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$")


def profile(data: Path, go_binaries: tuple[str, ...]) -> tuple[Counter, float]:
    """(CPU seconds per bucket, total CPU seconds) of one perf.data file."""
    out = subprocess.run(["perf", "script", "-i", str(data), "-F", "comm,period,event,ip,sym,dso"],
                         capture_output=True, text=True, check=True).stdout
    buckets: Counter = Counter()
    period, frames = None, []

    def flush() -> None:
        if period is not None:
            buckets[classify(frames, go_binaries)] += period / 1e9  # cpu-clock period: ns
    for line in out.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            flush()
            m = _HEADER.match(line)
            period, frames = (int(m.group(1)) if m else None), []
            continue
        m = _FRAME.match(line)
        if m:
            sym = m.group(1).rsplit("+0x", 1)[0]
            frames.append((sym, m.group(2)))
    flush()
    return buckets, sum(buckets.values())


# ---------------------------------------------------------------- runs

def perf_cmd(path: Path, cmd: list[str]) -> list[str]:
    return [shutil.which("perf") or "perf", "record", "-q", "-e", "cpu-clock", "-F", str(FREQ),
            "-g", "-o", str(path), "--", *cmd]


def profiled(cmd: list[str], env: dict, base: dict, logbase: Path, server: SeaweedFS,
             go_binaries: tuple[str, ...]) -> dict:
    data = Path(f"{logbase}.perf.data")
    rec = {**base, **run.measure(perf_cmd(data, cmd), env, logbase, server.proc.pid)}
    rec["cmd"] = shlex.join(cmd)
    if rec["status"] == "ok":
        rec["buckets"], rec["cpu_s"] = profile(data, go_binaries)  # the client's own CPU
    data.unlink(missing_ok=True)
    return rec


def one_rep(ds: datasets.Dataset, tools: list[Tool], rep: int, reps: int, server: SeaweedFS,
            env: dict, logdir: Path, tiny: Path, count: bool = True) -> list[dict]:
    """One upload + download per tool (and ckptlake's 1 KiB pull); count=False: a warm-up."""
    records = []
    for tool in tools:
        bucket = f"prof-{ds.name}-{tool.name}-r{rep}"
        server.create_bucket(bucket)
        dest = run.WORK / "dl-profile" / f"{tool.name}-r{rep}"
        try:
            for op in OPS:
                base = {"dataset": ds.name, "rep": rep, "tool": tool.name, "op": op,
                        "bytes": ds.total_bytes}
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir(parents=True)
                cmd = tool.command(op, ds.root, bucket, ds.name, dest)
                rec = profiled(cmd, env, base, logdir / f"r{rep}-{tool.name}-{op}", server,
                               _go_names(tool))
                if op == "download" and rec["status"] == "ok" and (bad := ds.verify(dest)):
                    rec["status"] = f"FAILED (verification): {bad}"
                records.append(rec)
                if count:
                    log(report.progress_line(rec, reps))
                if rec["status"] != "ok":
                    break
            if tool.name == "ckptlake":
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir(parents=True)
                push = tool.upload(tiny, bucket, "tiny")
                run.measure(push, env, logdir / f"r{rep}-tiny-push", server.proc.pid)
                pull = tool.download(bucket, "tiny", dest)
                # wall time without perf (whose own start-up would double it), then the profile
                plain = run.measure(pull, env, logdir / f"r{rep}-tiny-pull-plain", server.proc.pid)
                rec = profiled(pull, env, {**base, "op": "1 KiB pull", "bytes": 1024},
                               logdir / f"r{rep}-tiny-pull", server, ())
                rec["plain_wall_s"], rec["plain_cpu_s"] = plain["wall_s"], plain["cpu_s"]
                records.append(rec)
        finally:
            shutil.rmtree(dest, ignore_errors=True)
            server.delete_bucket(bucket)
    return records if count else []


def _go_names(tool: Tool) -> tuple[str, ...]:
    return () if tool.name == "ckptlake" else (Path(tool.command("download", Path("x"), "b", "p",
                                                                  Path("d"))[0]).name,)


# ---------------------------------------------------------------- report

def section(ds: datasets.Dataset, records: list[dict], meta: dict) -> str:
    tools = meta["tools"]
    ok = [r for r in records if r["status"] == "ok"]
    gib = ds.total_bytes / GiB
    out = [
        f"<!-- bench:{SECTION}:start -->",
        f"## profile: where the client's CPU goes ({ds.name}, ckptlake next to "
        f"{', '.join(v for k, v in tools.items() if k != 'ckptlake')})",
        "",
        f"{ds.name}: {ds.description}, {ds.total_bytes / (1 << 20):.0f} MiB. "
        + report.run_where(meta),
        *report.reproduce(meta),
        f"Every run under `perf record -e cpu-clock -F {FREQ} -g` (the client process and its "
        "threads; the `weed` server is not profiled, its CPU comes from /proc). Each sample goes "
        "in one row by its stack: the first kernel frame from the leaf up that says what the "
        "kernel was doing for the client (page fault, socket receive or send, loopback softirq, "
        "file syscall, futex/schedule), else the library the sample's leaf is in. CPU-s per GiB "
        "= samples × period / data set size, summed over the ok runs and divided by their "
        f"number ({meta['reps']} reps, tools interleaved, after one uncounted ckptlake push + "
        "pull). No throughput here: under perf the wall times came out in whole-second steps "
        "(3.10, 4.11, 12.12 s ...: perf notices the client's exit late), so MiB/s is what the "
        "benchmark tables measure without perf.",
        "",
    ]
    for op in OPS:
        cols = [t for t in tools if any(r["tool"] == t and r["op"] == op for r in ok)]
        if not cols:
            continue
        recs = {t: [r for r in ok if r["tool"] == t and r["op"] == op] for t in cols}
        rows = sorted({b for rs in recs.values() for r in rs for b in r["buckets"]},
                      key=lambda b: -sum(r["buckets"].get(b, 0) for rs in recs.values()
                                         for r in rs))
        out += [f"**{op}** — client CPU-s per GiB (share of the client's CPU)", "",
                "| where | " + " | ".join(tools[t] for t in cols) + " |",
                "|---|" + "--:|" * len(cols)]

        def per_gib(t: str, bucket: str | None) -> float:
            rs = recs[t]
            total = sum((r["buckets"].get(bucket, 0) if bucket else r["cpu_s"]) for r in rs)
            return total / len(rs) / gib

        for b in rows:
            cells = []
            for t in cols:
                v, tot = per_gib(t, b), per_gib(t, None)
                cells.append(f"{v:.3f} ({100 * v / tot:.0f} %)" if v else "—")
            out.append(f"| {b} | " + " | ".join(cells) + " |")
        out.append("| **client total** | " + " | ".join(f"**{per_gib(t, None):.2f}**"
                                                       for t in cols) + " |")
        out.append("| server (`weed`) CPU-s per GiB | " + " | ".join(
            f"{median(r['server_cpu_s'] for r in recs[t]) / gib:.2f}" for t in cols) + " |")
        out.append("")
    tiny = [r for r in ok if r["op"] == "1 KiB pull"]
    if tiny:
        cpu = median(r["plain_cpu_s"] for r in tiny)
        wall = median(r["plain_wall_s"] for r in tiny)
        top = Counter()
        for r in tiny:
            top.update(r["buckets"])
        py = top.get("Python interpreter (+ C extension modules)", 0) / max(sum(top.values()), 1e-9)
        out += [f"**Fixed cost of one command**: `ckptlake pull` of a 1 KiB artifact takes "
                f"{wall:.2f} s wall and {cpu:.2f} CPU-s (median of {len(tiny)}, without perf; "
                f"under perf {100 * py:.0f} % of its samples are in the Python interpreter: "
                "start-up, imports, botocore's client, the lake header and manifest reads). "
                f"A pull of the data set pays it once: {cpu / gib:.2f} of the pull's client "
                "CPU-s per GiB above.", ""]
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        out += ["Failed runs:", ""] + [f"- rep {r['rep']} {tools[r['tool']]} {r['op']}: "
                                       f"{r['status']}" for r in failed] + [""]
    out += ["Versions:", ""] + [f"- {k}: `{v}`" for k, v in meta["versions"].items()]
    out.append(f"<!-- bench:{SECTION}:end -->")
    return "\n".join(out)


# ---------------------------------------------------------------- main

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=list(datasets.DATASETS), default="ckpt2g")
    p.add_argument("--tools", default="ckptlake,s5cmd",
                   help="comma-separated, ckptlake first (default ckptlake,s5cmd)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", type=Path, help="markdown file to write/replace the profile "
                                            "section in, e.g. docs/benchmarks.md")
    args = p.parse_args(argv)
    args.tools = args.tools.split(",")
    bad = [t for t in args.tools if t not in TOOLS or t in ("crt", "crt-verify", "boto3", "aws")]
    if bad or args.tools[0] != "ckptlake":
        p.error("--tools: ckptlake first, then any of s5cmd, rclone (Go binaries: their "
                "stacks resolve; the Python peers would all land in the interpreter row)")
    if args.reps < 1:
        p.error("--reps must be at least 1")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if not shutil.which("perf"):
        sys.exit("profile_bench.py needs Linux `perf` (e.g. apt install linux-perf / "
                 "linux-tools-$(uname -r))")
    command = shlex.join(["python3", "bench/profile_bench.py", "--dataset", args.dataset,
                          "--tools", ",".join(args.tools), "--reps", str(args.reps)]
                         + (["--out", str(args.out)] if args.out else []))
    signal.signal(signal.SIGTERM, run._interrupt)
    run.WORK.mkdir(exist_ok=True)
    run.ensure_venv(with_ckptlake=True)
    ds = datasets.build(args.dataset, run.WORK / "data", log)
    logdir = run.WORK / "logs-profile"
    shutil.rmtree(logdir, ignore_errors=True)
    logdir.mkdir()
    tiny = run.WORK / "tiny-artifact"
    tiny.mkdir(exist_ok=True)
    (tiny / "meta.json").write_bytes(b"{}" + b" " * 1022)
    server = SeaweedFS(run.VENV / "bin" / "weed", run.WORK)
    try:
        server.start()
        env = run.tool_env(server.endpoint)
        tools = [TOOLS[name](run.VENV / "bin", server.endpoint) for name in args.tools]
        probe = subprocess.run(perf_cmd(logdir / "probe.data", ["true"]), capture_output=True,
                               text=True)
        if probe.returncode:
            sys.exit(f"perf record does not work here: {probe.stderr.strip()[-300:]}")
        meta = {"machine": run.machine_info(), "versions": run.versions(tools, env),
                "command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "reps": args.reps, "tools": {t.name: t.label for t in tools}}
        log(f"[profile] SeaweedFS at {server.endpoint}; warm-up (not counted)")
        one_rep(ds, tools[:1], 0, args.reps, server, env, logdir, tiny, count=False)
        records = []
        for rep in range(1, args.reps + 1):
            records += one_rep(ds, tools, rep, args.reps, server, env, logdir, tiny)
        raw = run.WORK / "results" / f"profile-{time.strftime('%Y%m%d-%H%M%S')}.json"
        raw.parent.mkdir(exist_ok=True)
        raw.write_text(json.dumps({"meta": meta, "records": records}, indent=1))
        text = section(ds, records, meta)
        report.publish(text, args.out, SECTION, "profile")
    except KeyboardInterrupt:
        sys.exit("interrupted")
    finally:
        server.stop()
        shutil.rmtree(run.WORK / "dl-profile", ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
