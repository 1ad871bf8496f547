"""gc at scale on a local lake: time and peak RSS of `gc --dry-run` and a real `gc --yes`.

    python bench/gc_scale_bench.py --chunks 2000000 --versions 2000
    python bench/gc_scale_bench.py --chunks 200000 --versions 2000 --before /tmp/ckptlake-da14cd3

Builds a synthetic lake straight on disk (not a test; issue 12's scale check): chunk files of 8
bytes written with os.open/os.write under chunks/<hh>/ (gc lists chunks and reads their size and
mtime, never their bytes), manifests through the format's own Manifest (the sizes in them
match the chunk files), 20 artifacts, each version referencing `2 * chunks / versions` chunks in
files of 64 chunks, half shared with the previous version, plus 5% unreferenced chunks.  Then,
for this tree's code and (with --before DIR) another source tree of ckptlake -- e.g. `git
archive da14cd3 | tar -x -C DIR` -- it runs, as subprocesses, `ckptlake gc --dry-run --json`
(grace 24h) and `ckptlake gc --yes --json` (grace 0s: retention, mark, condemn and sweep in one
run), each on a freshly built lake.  --spill-at N adds a dry run of this tree with gc's
SPILL_AT set to N.  Peak RSS is the child's VmHWM (see gc_bench.timed_cli).  Everything is
removed at the end, unless --keep.  On tmpfs (--dir /dev/shm) building is fast; mind its inode
limit (`df -i`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

POLICY = """\
lake: file://{lake}
retention:
  grace_period: {grace}
  rules:
    - match: "bench/*/ckpt"
      keep_last: 50
      keep_every_steps: 10000
      keep_best: {{metric: val_loss, mode: min, count: 5}}
"""
CHUNK = 8
PER_FILE = 64


def build(root: Path, *, versions: int, chunks: int, artifacts: int) -> dict:
    from ckptlake.format import layout
    from ckptlake.core.lakeheader import ensure_header
    from ckptlake.format.manifest import ChunkRef, FileEntry, Manifest
    from ckptlake.store import open_store

    store = open_store(f"file://{root}")
    ensure_header(store, hash="sha256")  # the manifests below name sha256
    t0 = time.monotonic()
    digests: list[str] = []
    made: set[str] = set()
    for i in range(chunks):
        data = i.to_bytes(CHUNK, "big")
        d = hashlib.sha256(data).hexdigest()
        digests.append(d)
        folder = root / "chunks" / d[:2]
        if d[:2] not in made:
            folder.mkdir(parents=True, exist_ok=True)
            made.add(d[:2])
        fd = os.open(folder / d, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)
        if (i + 1) % 500_000 == 0:
            print(f"  chunks: {i + 1}/{chunks} ({(i + 1) / (time.monotonic() - t0):.0f}/s)",
                  flush=True)
    chunk_seconds = time.monotonic() - t0
    referenced = chunks - chunks // 20
    per = max(2, 2 * referenced // versions)
    rng = random.Random(1)
    now = datetime.now(timezone.utc)
    t1 = time.monotonic()
    for v in range(versions):
        artifact = f"bench/a{v % artifacts}/ckpt"
        number = v // artifacts + 1
        start = (v * per // 2) % referenced
        refs = [digests[(start + k) % referenced] for k in range(per)]
        files = tuple(
            FileEntry(path=f"shard-{j // PER_FILE:04d}.bin",
                      size=CHUNK * len(refs[j:j + PER_FILE]),
                      chunks=tuple(ChunkRef(d, CHUNK) for d in refs[j:j + PER_FILE]))
            for j in range(0, per, PER_FILE))
        m = Manifest(artifact=artifact, version=number, kind="dir", hash="sha256", files=files,
                     step=number * 100, created=now - timedelta(hours=versions - v),
                     metrics={"val_loss": rng.random()})
        store.put(layout.version_key(artifact, number), m.encode(), if_none_match=True)
    store.close()
    return {"chunk_write_seconds": round(chunk_seconds, 1),
            "manifest_write_seconds": round(time.monotonic() - t1, 1),
            "chunks_per_manifest": per}


def run_gc(code: Path, cfg: Path, args: list[str], workdir: Path, spill_at: int | None = None
           ) -> tuple[float, int, dict]:
    """(seconds, peak RSS in MiB, JSON) of `ckptlake gc ...` run from the source tree `code`;
    with spill_at, through the same CLI entry point after setting gc's SPILL_AT."""
    from gc_bench import _vm_hwm_kib

    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, "-m", "ckptlake"]
    if spill_at is not None:
        cmd = [sys.executable, "-c", "import sys; import ckptlake.core.gc as g; "
               f"g.SPILL_AT = {spill_at}; from ckptlake.cli.app import main; "
               "sys.argv[0] = 'ckptlake'; main()"]
    cmd += ["gc", *args, "--json", "--config", str(cfg)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.monotonic()
        p = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=out, stderr=err, text=True)
        peak = 0
        while p.poll() is None:  # VmHWM only rises: sampling misses at most the last 20 ms
            peak = max(peak, _vm_hwm_kib(p.pid))
            time.sleep(0.02)
        seconds = time.monotonic() - t
        out.seek(0)
        err.seek(0)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{err.read()}")
        return seconds, peak // 1024, json.loads(out.read())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=2_000_000)
    ap.add_argument("--versions", type=int, default=2_000)
    ap.add_argument("--artifacts", type=int, default=20)
    ap.add_argument("--before", type=Path, help="another ckptlake source tree to compare")
    ap.add_argument("--spill-at", type=int, action="append", default=[],
                    help="also a dry run of this tree with gc's SPILL_AT set to this")
    ap.add_argument("--dir", type=Path, default=None, help="where to build (default: $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="leave the last lake behind")
    ap.add_argument("--skip-execute", action="store_true", help="only gc --dry-run")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="ckptlake-gc-scale-", dir=args.dir))
    lake = workdir / "lake"
    codes = [("after", ROOT)] + ([("before", args.before.resolve())] if args.before else [])
    rows = []

    def fresh_lake() -> dict:
        shutil.rmtree(lake, ignore_errors=True)
        print(f"building {args.versions} versions / {args.chunks} chunks in {lake} ...",
              flush=True)
        built = build(lake, versions=args.versions, chunks=args.chunks,
                      artifacts=args.artifacts)
        print(f"  built: {built}", flush=True)
        return built

    try:
        built = fresh_lake()
        dry = [(label, code, None) for label, code in codes]
        dry += [(f"after, SPILL_AT={n:,}", ROOT, n) for n in args.spill_at]
        cfg = workdir / "dry.yaml"
        cfg.write_text(POLICY.format(lake=lake, grace="24h"))
        for label, code, spill_at in dry:
            seconds, rss, out = run_gc(code, cfg, ["--dry-run"], workdir, spill_at)
            plan = out["plan"]
            rows.append((label, "gc --dry-run", seconds, rss,
                         f"{plan['chunks']['objects']} chunks, {plan['versions_deleted']} of "
                         f"{plan['versions_total']} versions to delete, "
                         f"{plan['freed_by_versions']['objects']} chunks freed by them"))
            print(f"{label}: gc --dry-run {seconds:.1f} s, peak RSS {rss} MiB", flush=True)
        if not args.skip_execute:
            # A fresh lake for each run (not `cp -al`: tmpfs counts every link as an inode).
            cfg = workdir / "run.yaml"
            cfg.write_text(POLICY.format(lake=lake, grace="0s"))
            for i, (label, code) in enumerate(codes):
                if i:
                    fresh_lake()
                seconds, rss, out = run_gc(code, cfg, ["--yes"], workdir)
                r = out["result"]
                rows.append((label, "gc --yes (grace 0s)", seconds, rss,
                             f"{len(r['versions_deleted'])} versions deleted, "
                             f"{r['chunks_condemned']} condemned, {r['chunks_swept']} swept, "
                             f"{r['manifest_listings']} manifest listings"))
                print(f"{label}: gc --yes {seconds:.1f} s, peak RSS {rss} MiB", flush=True)
        print(f"\n{args.chunks:,} chunks / {args.versions:,} versions "
              f"({built['chunks_per_manifest']} chunks per manifest)\n")
        print("| code | command | time | peak RSS | what |\n|---|---|--:|--:|---|")
        for label, cmd, seconds, rss, what in rows:
            print(f"| {label} | `{cmd}` | {seconds:.1f} s | {rss} MiB | {what} |")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
