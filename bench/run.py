#!/usr/bin/env python3
"""ckptlake vs. peer S3 tools on a local SeaweedFS. See bench/README.md.

    python3 bench/run.py [--datasets ckpt1g] [--reps 5] [--tools ...] [--out docs/benchmarks.md]

Standard library only: the tools live in bench/.venv, which this script creates.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import datasets
import report
from server import SeaweedFS
from tools import TOOLS, Tool

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = HERE / ".venv"
WORK = HERE / ".work"
RUN_TIMEOUT = 1800  # seconds for one tool run before it is killed and counted as FAILED
PAGE = os.sysconf("SC_PAGE_SIZE")
HZ = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- bench/.venv

def _pip(*args: str) -> None:
    r = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", *args],
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"pip install {' '.join(args)} failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")


def ensure_venv(with_ckptlake: bool) -> None:
    """Create bench/.venv and (re)install the pinned tools when requirements.txt (or, for
    ckptlake, the repo's pyproject.toml) changed since the last install."""
    if not (VENV / "bin" / "python").exists():
        log(f"[venv] creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    wanted = [("requirements", HERE / "requirements.txt", ("-r", str(HERE / "requirements.txt")))]
    if with_ckptlake:
        # blake3 (the hash of new lakes) is a base dependency
        wanted.append(("ckptlake", REPO / "pyproject.toml", ("-e", str(REPO))))
    for name, source, pip_args in wanted:
        stamp = VENV / f".bench-{name}.sha256"
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        if stamp.exists() and stamp.read_text() == digest:
            continue
        log(f"[venv] pip install {' '.join(pip_args)}")
        _pip(*pip_args)
        stamp.write_text(digest)


def tool_env(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "RCLONE_", "S3_", "CKPTLAKE_", "VIRTUAL_ENV", "PYTHON"))}
    (WORK / "rclone.conf").touch()
    env.update({
        "PATH": f"{VENV / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": endpoint,
        # keep the user's ~/.aws, ~/.config/ckptlake etc. out of the measurement (tools also
        # run with cwd=bench/.work, so no ./ckptlake.yaml either)
        "XDG_CONFIG_HOME": str(WORK / "xdg-config"),
        "AWS_CONFIG_FILE": str(WORK / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(WORK / "no-aws-credentials"),
        # awscrt is in bench/.venv for crt_transfer.py only; botocore would otherwise pick it up
        # by itself (its C SigV4 signer and CRC32 instead of the pure-Python ones) and change how
        # ckptlake, aws and boto3 run compared with a plain `pip install`. crt_transfer.py uses
        # awscrt directly and is not affected by this switch.
        "BOTO_DISABLE_CRT": "true",
        "RCLONE_CONFIG": str(WORK / "rclone.conf"),
        "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "SeaweedFS",
        "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint, "RCLONE_CONFIG_BENCH_ENV_AUTH": "false",
        "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": "bench",
        "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": "bench-secret",
        "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
    })
    return env


# ---------------------------------------------------------------- one measured run

class TreeRss(threading.Thread):
    """Samples the summed RSS of a process and all its descendants every 0.1 s, so a tool
    that forks workers is not under-reported (wait4's ru_maxrss is per process)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def _tree(self, pid: int) -> list[int]:
        out = [pid]
        for f in glob.glob(f"/proc/{pid}/task/*/children"):
            try:
                out += [c for k in open(f).read().split() for c in self._tree(int(k))]
            except OSError:
                pass
        return out

    def run(self) -> None:
        while not self.done.wait(0.1):
            total = 0
            for pid in self._tree(self.pid):
                try:
                    total += int(open(f"/proc/{pid}/statm").read().split()[1]) * PAGE
                except (OSError, IndexError, ValueError):
                    pass
            self.peak = max(self.peak, total)


def cpu_seconds(server_pid: int) -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of the SeaweedFS process) so far."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    stat = open(f"/proc/{server_pid}/stat").read().rsplit(")", 1)[1].split()
    return busy / HZ, (int(stat[11]) + int(stat[12])) / HZ


def measure(cmd: list[str], env: dict, logbase: Path, server_pid: int) -> dict:
    """Run cmd to completion; wall time, CPU (user+sys of it and its waited-for children) and
    peak RSS come from os.wait4 on the child plus the tree sampler above. Also records the
    server's CPU and that of everything else on the machine during the run (background noise)."""
    with open(f"{logbase}.out", "wb") as out, open(f"{logbase}.err", "wb") as err:
        # Every run starts with nothing left to write back: an earlier run's dirty pages (the
        # server's volume files after an upload, a page-cache writer's downloads) would be
        # written back during whichever run came 30 s later, and only runs that write to the
        # disk themselves (O_DIRECT) would wait behind them.
        os.sync()
        busy0, server0 = cpu_seconds(server_pid)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                cwd=WORK, start_new_session=True)
        sampler = TreeRss(proc.pid)
        sampler.start()
        timer = threading.Timer(RUN_TIMEOUT, os.killpg, (proc.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, ru = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C: take the tool down with us
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            timer.cancel()
            sampler.done.set()
        wall = time.perf_counter() - t0
        busy1, server1 = cpu_seconds(server_pid)
        proc.returncode = os.waitstatus_to_exitcode(status)
        # Not timed: what the run left for the kernel to write (a download through the page
        # cache is on disk only after this; one written with O_DIRECT already is).
        t1 = time.perf_counter()
        os.sync()
        flush = time.perf_counter() - t1
    cpu = ru.ru_utime + ru.ru_stime
    rec = {"wall_s": wall, "cpu_s": cpu, "rss_mib": max(ru.ru_maxrss, sampler.peak // 1024) / 1024,
           "server_cpu_s": server1 - server0, "flush_s": flush,
           "other_cpu_s": max(0.0, busy1 - busy0 - cpu - (server1 - server0)),
           "rc": proc.returncode, "status": "ok", "cmd": shlex.join(cmd)}
    try:  # ckptlake --json: keep its result document (bytes uploaded, deduplicated, ...)
        doc = json.loads(Path(f"{logbase}.out").read_text().strip().splitlines()[-1])
        if isinstance(doc, dict):
            rec["result"] = doc
    except (ValueError, IndexError):
        pass
    if proc.returncode:
        why = "timeout" if wall >= RUN_TIMEOUT else f"exit {proc.returncode}"
        tail = Path(f"{logbase}.err").read_text(errors="replace").strip().splitlines()[-3:]
        rec["status"] = f"FAILED ({why}): {' | '.join(tail)[-300:]}"
    return rec


# ---------------------------------------------------------------- the benchmark

def warm_up(ds: datasets.Dataset, tool: Tool, server: SeaweedFS, env: dict,
            logdir: Path) -> None:
    """One uncounted upload + download before rep 1 (also tune_bench.py's, at ckptlake's
    defaults).  The first write after the server started grows SeaweedFS's volumes and ran
    ~15-30 % slower (ckptlake push, rep 1 of file4g: 155.7 vs ~186 MiB/s later), which always
    hit whichever tool or grid point runs first."""
    bucket = f"bench-{ds.name}-warmup"
    server.create_bucket(bucket)
    dest = WORK / "dl" / "warmup"
    try:
        for op in ("upload", "download"):
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            rec = measure(tool.command(op, ds.root, bucket, ds.name, dest), env,
                          logdir / f"{ds.name}-warmup-{tool.name}-{op}", server.proc.pid)
            log(f"[bench] warm-up {ds.name} {tool.name} {op}: {rec['wall_s']:.1f} s, "
                f"{rec['status']} (not counted)")
    finally:
        shutil.rmtree(dest, ignore_errors=True)
        server.delete_bucket(bucket)


def run_dataset(ds: datasets.Dataset, tools: list[Tool], reps: int, server: SeaweedFS,
                env: dict, logdir: Path) -> list[dict]:
    warm_up(ds, tools[0], server, env, logdir)
    records = []
    for rep in range(1, reps + 1):
        for tool in tools:  # interleaved: rep 1 = A B C ..., rep 2 = A B C ...
            bucket = f"bench-{ds.name}-{tool.name}-r{rep}"
            server.create_bucket(bucket)
            uploaded = False
            try:
                for op in tool.ops:
                    base = {"dataset": ds.name, "rep": rep, "tool": tool.name, "op": op,
                            "bytes": ds.total_bytes}
                    if op != "upload" and not uploaded:
                        records.append({**base, "status": "FAILED (upload failed)"})
                        continue
                    dest = WORK / "dl" / f"{tool.name}-r{rep}"
                    shutil.rmtree(dest, ignore_errors=True)
                    dest.mkdir(parents=True)
                    cmd = tool.command(op, ds.root, bucket, ds.name, dest)
                    rec = {**base, **measure(cmd, env, logdir / f"{ds.name}-r{rep}-{tool.name}-{op}",
                                         server.proc.pid)}
                    if op == "download" and rec["status"] == "ok":
                        if problem := ds.verify(dest):
                            rec["status"] = f"FAILED (verification): {problem}"
                    shutil.rmtree(dest, ignore_errors=True)
                    uploaded |= op == "upload" and rec["status"] == "ok"
                    records.append(rec)
                    log(report.progress_line(rec, reps))
            finally:
                server.delete_bucket(bucket)  # also frees the disk space at once
    return records


def machine_info() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "unknown")
    mem_kib = next(int(line.split()[1]) for line in open("/proc/meminfo")
                   if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem_kib / 2**20, 1),
            "kernel": os.uname().release, "python": sys.version.split()[0]}


def versions(tools: list[Tool], env: dict) -> dict[str, str]:
    out = {}
    for tool in tools:
        try:
            out[tool.label] = tool.version(env)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            sys.exit(f"{tool.name} is not usable ({e}); leave it out with --tools")
    weed = subprocess.run([str(VENV / "bin" / "weed"), "version"], capture_output=True, text=True)
    out["SeaweedFS (server)"] = weed.stdout.strip().splitlines()[0]
    py = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "freeze"],
                        capture_output=True, text=True).stdout.splitlines()
    pinned = {line.split("==")[0].lower() for line in (HERE / "requirements.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    out["pip (bench/.venv)"] = ", ".join(l for l in py if l.split("==")[0].lower() in pinned)
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    def names(choices):
        def parse(s: str) -> list[str]:
            items = [x for x in s.replace(",", " ").split() if x]
            bad = [x for x in items if x not in choices]
            if bad or not items:
                raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
            return items
        return parse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", type=names(list(datasets.DATASETS)), default=["ckpt1g"],
                   help=f"comma-separated, of: {', '.join(datasets.DATASETS)} (default ckpt1g)")
    p.add_argument("--reps", type=int, default=5, help="repetitions per tool and op (default 5)")
    default_tools = [t for t in TOOLS if t not in ("ckptlake-sha256", "ckptlake-base")]
    p.add_argument("--tools", type=names(list(TOOLS)), default=default_tools,
                   help=f"comma-separated, of: {', '.join(TOOLS)} (default all but "
                        "ckptlake-sha256 and ckptlake-base)")
    p.add_argument("--out", type=Path, help="markdown file to write/replace the section(s) in, "
                                            "e.g. docs/benchmarks.md")
    return p.parse_args(argv)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    command = shlex.join(["python3", "bench/run.py", "--datasets", ",".join(args.datasets),
                          "--reps", str(args.reps), "--tools", ",".join(args.tools)]
                         + (["--out", str(args.out)] if args.out else []))
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` us: stop the server on the way out
    WORK.mkdir(exist_ok=True)
    ensure_venv(with_ckptlake=any(t.startswith("ckptlake") for t in args.tools))
    data = {name: datasets.build(name, WORK / "data", log) for name in args.datasets}
    need = max(d.total_bytes for d in data.values()) * 2.2  # one copy on the server, one downloaded
    if shutil.disk_usage(WORK).free < need:
        sys.exit(f"need {need / 2**30:.1f} GiB free under {WORK}")
    logdir = WORK / "logs"
    shutil.rmtree(logdir, ignore_errors=True)
    logdir.mkdir()
    server = SeaweedFS(VENV / "bin" / "weed", WORK)
    try:
        server.start()
        env = tool_env(server.endpoint)
        tools = [TOOLS[name](VENV / "bin", server.endpoint) for name in args.tools]
        meta = {"machine": machine_info(), "versions": versions(tools, env), "command": command,
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "reps": args.reps,
                "tools": {t.name: t.label for t in tools}}
        log(f"[bench] SeaweedFS at {server.endpoint}; tools: {', '.join(args.tools)}; "
            f"{args.reps} reps; logs in {logdir}")
        results = {}
        for name, ds in data.items():
            records = run_dataset(ds, tools, args.reps, server, env, logdir)
            results[name] = records
            section = report.section(ds, records, meta)
            report.publish(section, args.out, name, "bench")
    except KeyboardInterrupt:
        sys.exit("interrupted")
    finally:
        server.stop()
        shutil.rmtree(WORK / "dl", ignore_errors=True)
    out = WORK / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    log(f"[bench] raw results: {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
