#!/usr/bin/env python3
"""Chunk size x concurrency of `ckptlake push` / `pull` on a local SeaweedFS (issue 3:
"Measure before choosing: thread counts, chunk size").

    python3 bench/tune_bench.py [--datasets ckpt2g] [--chunk-sizes 8MiB,16MiB,32MiB,64MiB]
        [--concurrency 4,8,16] [--reps 5] [--seed 1] [--out docs/benchmarks.md]
    python3 bench/tune_bench.py --datasets ckpt1g --reps 1 --chunk-sizes 16MiB,32MiB \
        --concurrency 8                                    # a quick look

Standard library only; the machinery is bench/run.py's (bench/.venv bootstrap, scrubbed tool
environment, run.measure: wall time, client CPU from wait4, peak RSS of the process tree, CPU
of the `weed` server), the SeaweedFS of bench/server.py and the data sets of bench/datasets.py.

Grid points run interleaved: the points are shuffled once (--seed) and every rep runs all of
them in that order, after one untimed push + pull at the defaults (warm-up). Per point and
rep: `ckptlake push SRC bench/tune --lake s3://BUCKET/lake --chunk-size X --concurrency N
--json` into a fresh bucket (cold, empty lake), `ckptlake pull bench/tune DEST --lake ...
--concurrency N --json` into a fresh empty directory, verify every pulled file (size + SHA-256
against the data set's cached manifest), delete the bucket. `--out` replaces the
`<!-- bench:tune:start/end -->` section of the file.

The default grid (12 points x 5 reps of ckpt2g) takes about 20 minutes on the quiet 2-core dev
machine (~25 when other work shares it).
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import datasets
import report
import run
from server import SeaweedFS
from tools import CkptLake

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
SECTION = "tune"
ARTIFACT = "tune"  # pushed as bench/tune (CkptLake.upload prefixes bench/)
OPS = ("push", "pull")
DEFAULTS = {"datasets": "ckpt2g", "chunk_sizes": "8MiB,16MiB,32MiB,64MiB", "concurrency": "4,8,16",
            "reps": 5, "seed": 1}
log = run.log


# ---------------------------------------------------------------- grid

def parse_size(s: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*", s, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {s!r} (e.g. 16MiB, 1GiB, 4194304)")
    return int(m.group(1)) * {"": 1, "b": 1, "kib": KiB, "mib": MiB, "gib": GiB}[
        (m.group(2) or "").lower()]


def fmt_size(n: int, sep: str = "") -> str:
    """16777216 -> '16MiB' (what the ckptlake CLI takes); sep=' ' for the report."""
    for unit, mult in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n % mult == 0:
            return f"{n // mult}{sep}{unit}"
    return str(n)


def csv_of(parse):
    def parse_list(s: str) -> list:
        items = [x for x in s.replace(",", " ").split() if x]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        out = [parse(x) for x in items]
        return sorted(set(out), key=out.index)
    return parse_list


def positive_int(s: str) -> int:
    try:
        n = int(s)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {s!r}")
    return n


def dataset_name(s: str) -> str:
    if s not in datasets.DATASETS:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(datasets.DATASETS)}")
    return s


def point_label(chunk: int, conc: int) -> str:
    return f"{fmt_size(chunk)}×{conc}"


def ckptlake_defaults() -> tuple[int, int]:
    """(chunk size, concurrency) ckptlake uses when given neither, from the installed package."""
    out = subprocess.run([str(run.VENV / "bin" / "python"), "-c",
                          "from ckptlake.policy.config import DEFAULT_CHUNK_SIZE as s, "
                          "DEFAULT_CONCURRENCY as c; print(s, c)"],
                         capture_output=True, text=True, check=True)
    size, conc = out.stdout.split()
    return int(size), int(conc)


# ---------------------------------------------------------------- the runs

def with_flags(cmd: list[str], *flags: str) -> list[str]:
    """CkptLake's command line with flags inserted before its trailing --json."""
    assert cmd[-1] == "--json", cmd
    return cmd[:-1] + list(flags) + ["--json"]


def run_point(ds: datasets.Dataset, chunk: int, conc: int, rep: int, reps: int,
              ck: CkptLake, server: SeaweedFS, env: dict, logdir: Path, dl: Path) -> list[dict]:
    label = point_label(chunk, conc)
    bucket = f"tune-{ds.name}-{fmt_size(chunk).lower()}-c{conc}-r{rep}"
    base = {"dataset": ds.name, "rep": rep, "tool": label, "chunk_size": chunk,
            "concurrency": conc, "bytes": ds.total_bytes}
    logbase = logdir / f"{ds.name}-r{rep}-{fmt_size(chunk)}-c{conc}"
    records = []
    server.create_bucket(bucket)
    try:
        push = {**base, "op": "push", **run.measure(
            with_flags(ck.upload(ds.root, bucket, ARTIFACT), "--chunk-size", fmt_size(chunk),
                       "--concurrency", str(conc)),
            env, Path(f"{logbase}-push"), server.proc.pid)}
        records.append(push)
        log(report.progress_line(push, reps))
        if push["status"] != "ok":
            records.append({**base, "op": "pull", "status": "FAILED (push failed)"})
            log(report.progress_line(records[-1], reps))
            return records
        dest = dl / f"{fmt_size(chunk)}-c{conc}-r{rep}"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        try:
            pull = {**base, "op": "pull", **run.measure(
                with_flags(ck.download(bucket, ARTIFACT, dest), "--concurrency", str(conc)),
                env, Path(f"{logbase}-pull"), server.proc.pid)}
            if pull["status"] == "ok" and (problem := ds.verify(dest)):
                pull["status"] = f"FAILED (verification): {problem}"
        finally:
            shutil.rmtree(dest, ignore_errors=True)
        records.append(pull)
        log(report.progress_line(pull, reps))
        return records
    finally:
        server.delete_bucket(bucket)  # also frees the disk space at once


# ---------------------------------------------------------------- report

def _per_gib(recs: list[dict], key: str) -> float:
    return median(r[key] / (r["bytes"] / GiB) for r in recs)


def _dataset_part(ds: datasets.Dataset, records: list[dict], meta: dict) -> list[str]:
    d_chunk, d_conc = meta["default"]
    chunks, concs = meta["chunk_sizes"], meta["concurrency"]
    out = [f"### {ds.name}: {ds.description}", "",
           f"{ds.total_bytes / MiB:.0f} MiB in {ds.files} files.", ""]
    for op in OPS:
        runs = [r for r in records if r["op"] == op]
        by_point = {(c, n): [r for r in runs if (r["chunk_size"], r["concurrency"]) == (c, n)]
                    for c in sorted(chunks) for n in sorted(concs)}
        good = {p: [r for r in rs if report.ok(r)] for p, rs in by_point.items()}
        speed = {p: median(report.mibps(r) for r in rs) for p, rs in good.items() if rs}
        # per rep, this point's MiB/s over the default's in the same rep (paired: drift cancels)
        default_by_rep = {r["rep"]: report.mibps(r) for r in good.get((d_chunk, d_conc), [])}
        out += [f"**{op}**" + (" (`--chunk-size` X `--concurrency` N)" if op == "push"
                               else " (`--concurrency` N; chunks as pushed)"), "",
                "| chunk × concurrency | MiB/s median | MiB/s min–max | ÷ default | "
                "client CPU-s per GiB | server CPU-s per GiB | peak RSS MiB | "
                + ("chunks sent | " if op == "push" else "") + "ok runs |",
                "|---|--:|--:|--:|--:|--:|--:|--:|" + ("--:|" if op == "push" else "")]
        for (c, n), rs in by_point.items():
            ok_rs = good[(c, n)]
            name = f"{fmt_size(c, ' ')} × {n}"
            if (c, n) == (d_chunk, d_conc):
                name = f"**{name} (default)**"
            count = f"{len(ok_rs)}/{len(rs)}" + ("" if len(ok_rs) == len(rs) else " ⚠")
            if not ok_rs:
                cells = ["**FAILED**", "", "", "", "", ""] + ([""] if op == "push" else [])
            else:
                speeds = [report.mibps(r) for r in ok_rs]
                ratios = [report.mibps(r) / default_by_rep[r["rep"]] for r in ok_rs
                          if r["rep"] in default_by_rep]
                cells = [f"{median(speeds):.1f}", f"{min(speeds):.1f}–{max(speeds):.1f}",
                         f"{median(ratios):.2f}" if ratios else "—",
                         f"{_per_gib(ok_rs, 'cpu_s'):.2f}",
                         f"{_per_gib(ok_rs, 'server_cpu_s'):.2f}",
                         f"{median(r['rss_mib'] for r in ok_rs):.0f}"]
                if op == "push":
                    sent = [r["result"].get("chunks_uploaded") for r in ok_rs
                            if isinstance(r.get("result"), dict)]
                    cells.append(f"{median(sent):.0f}" if sent and None not in sent else "—")
            out.append(f"| {name} | " + " | ".join(cells + [count]) + " |")
        if speed:
            best = max(speed, key=speed.get)
            line = (f"Fastest {op} by median: {fmt_size(best[0], ' ')} × {best[1]} at "
                    f"{speed[best]:.1f} MiB/s")
            if best == (d_chunk, d_conc):
                line += " — the default."
            elif (d_chunk, d_conc) in speed:
                d_speeds = [report.mibps(r) for r in good[(d_chunk, d_conc)]]
                b_speeds = [report.mibps(r) for r in good[best]]
                overlap = min(b_speeds) <= max(d_speeds)
                line += (f"; the default's median is {speed[(d_chunk, d_conc)] / speed[best]:.0%} "
                         f"of it, and their min–max ranges "
                         f"{'overlap' if overlap else 'do not overlap'}.")
            else:
                line += "; the default is not in the grid."
            out += ["", line]
        out += [""]
    out += [report._background(records, {r["tool"]: r["tool"] for r in records}), ""]
    return out


def section(data: dict[str, datasets.Dataset], results: dict[str, list[dict]], meta: dict) -> str:
    d_chunk, d_conc = meta["default"]
    order = ", ".join(f"{fmt_size(c)}×{n}" for c, n in meta["order"])
    out = [
        f"<!-- bench:{SECTION}:start -->",
        "## tune: chunk size × concurrency of ckptlake push/pull",
        "",
        "Issue 3: measure before choosing the thread count and chunk size. ckptlake's defaults: "
        f"{fmt_size(d_chunk, ' ')} chunks, {d_conc} parallel chunk transfers. "
        + report.run_where(meta),
        *report.reproduce(meta),
        "Setup: one `weed server -s3` (SeaweedFS) on loopback on the same machine, so client and "
        "server share the cores; warm page cache; source data, server data and pulls on the same "
        f"disk. {meta['reps']} reps; every rep runs all grid points in one order, shuffled once "
        f"(seed {meta['seed']}): {order}. Per point and rep: `ckptlake push SRC bench/tune "
        "--lake s3://BUCKET/lake --chunk-size X --concurrency N --json` into a fresh bucket "
        "(empty lake, nothing to deduplicate), then `ckptlake pull bench/tune DEST --lake ... "
        "--concurrency N --json` into a fresh empty directory, verified file by file (size + "
        "SHA-256; wrong bytes = FAILED, not timed); then the bucket is deleted. Nothing else "
        "is configured (scrubbed environment, no ckptlake.yaml).",
        "",
    ]
    for name, ds in data.items():
        out += _dataset_part(ds, results[name], meta)
    out += [
        "MiB/s = data set size / wall time of the client process. **÷ default** = median over "
        "the reps of this point's MiB/s divided by the default point's MiB/s in the same rep "
        "(paired, so slow drift of the machine cancels). Client CPU-s per GiB = user+sys CPU of "
        "`ckptlake` (from wait4) per GiB of data set; server CPU-s per GiB = the same for the "
        "`weed` process during the run. Peak RSS = max of wait4's ru_maxrss and the summed RSS of "
        "the client's process tree sampled every 0.1 s. Chunks sent = `chunks_uploaded` of "
        "`ckptlake push --json` (confirms the chunk size took effect). All medians over the ok "
        "runs.",
    ]
    failed = [r for rs in results.values() for r in rs if not report.ok(r)]
    if failed:
        out += ["", "Failed runs:", ""] + [
            f"- {r['dataset']} rep {r['rep']} {r['tool']} {r['op']}: {r['status']}" for r in failed]
    out += ["", "Versions:", ""] + [f"- {k}: `{v}`" for k, v in meta["versions"].items()]
    for name in data:
        recs = sorted(results[name], key=lambda r: (r["rep"], meta["order"].index(
            (r["chunk_size"], r["concurrency"])), OPS.index(r["op"])))
        out += ["", f"<details><summary>Raw per-rep numbers ({name}, in run order)</summary>", "",
                *report._raw(recs, {r["tool"]: r["tool"] for r in recs},
                             label="chunk×concurrency"),
                "", "</details>"]
    out.append(f"<!-- bench:{SECTION}:end -->")
    return "\n".join(out)


# ---------------------------------------------------------------- main

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", type=csv_of(dataset_name),
                   default=csv_of(dataset_name)(DEFAULTS["datasets"]),
                   help=f"comma-separated, of: {', '.join(datasets.DATASETS)} "
                        f"(default {DEFAULTS['datasets']})")
    p.add_argument("--chunk-sizes", type=csv_of(parse_size),
                   default=csv_of(parse_size)(DEFAULTS["chunk_sizes"]),
                   help=f"comma-separated chunk sizes (default {DEFAULTS['chunk_sizes']})")
    p.add_argument("--concurrency", type=csv_of(positive_int),
                   default=csv_of(positive_int)(DEFAULTS["concurrency"]),
                   help=f"comma-separated parallel transfer counts, used for push and pull "
                        f"(default {DEFAULTS['concurrency']})")
    p.add_argument("--reps", type=positive_int, default=DEFAULTS["reps"],
                   help=f"repetitions of the whole grid (default {DEFAULTS['reps']})")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                   help="seed of the one shuffle of the grid's run order "
                        f"(default {DEFAULTS['seed']})")
    p.add_argument("--out", type=Path, help="markdown file to write/replace the tune section in, "
                                            "e.g. docs/benchmarks.md")
    return p.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    command = shlex.join(["python3", "bench/tune_bench.py", "--datasets", ",".join(args.datasets),
                          "--chunk-sizes", ",".join(fmt_size(c) for c in args.chunk_sizes),
                          "--concurrency", ",".join(map(str, args.concurrency)),
                          "--reps", str(args.reps), "--seed", str(args.seed)]
                         + (["--out", str(args.out)] if args.out else []))
    signal.signal(signal.SIGTERM, run._interrupt)  # `kill` us: stop the server on the way out
    run.WORK.mkdir(exist_ok=True)
    run.ensure_venv(with_ckptlake=True)
    default = ckptlake_defaults()
    data = {name: datasets.build(name, run.WORK / "data", log) for name in args.datasets}
    need = max(d.total_bytes for d in data.values()) * 2.2  # one copy on the server, one pulled
    if shutil.disk_usage(run.WORK).free < need:
        sys.exit(f"need {need / GiB:.1f} GiB free under {run.WORK}")
    points = list(itertools.product(args.chunk_sizes, args.concurrency))
    random.Random(args.seed).shuffle(points)  # once: every rep runs this order
    # own logs/ and download dirs: run.py clears .work/logs and .work/dl
    logdir, dl = run.WORK / "logs-tune", run.WORK / "dl-tune"
    shutil.rmtree(logdir, ignore_errors=True)
    logdir.mkdir()
    out = run.WORK / "results" / f"tune-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    server = SeaweedFS(run.VENV / "bin" / "weed", run.WORK)
    results: dict[str, list[dict]] = {name: [] for name in data}
    meta: dict = {}
    try:
        server.start()
        env = run.tool_env(server.endpoint)
        ck = CkptLake(run.VENV / "bin", server.endpoint)
        meta = {"machine": run.machine_info(), "versions": run.versions([ck], env),
                "command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "reps": args.reps, "seed": args.seed, "default": list(default),
                "chunk_sizes": args.chunk_sizes, "concurrency": args.concurrency,
                "order": [list(p) for p in points]}
        n_runs = len(points) * len(data) * args.reps
        log(f"[tune] SeaweedFS at {server.endpoint}; {len(points)} points × {len(data)} data "
            f"set(s) × {args.reps} reps = {n_runs} push+pull pairs; order: "
            f"{', '.join(point_label(*p) for p in points)}; default {point_label(*default)}; "
            f"logs in {logdir}")
        for ds in data.values():
            run.warm_up(ds, ck, server, env, logdir)  # at the defaults
        t0 = time.perf_counter()
        for rep in range(1, args.reps + 1):
            for name, ds in data.items():
                for chunk, conc in points:
                    results[name] += run_point(ds, chunk, conc, rep, args.reps, ck, server, env,
                                               logdir, dl)
            out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
            took = time.perf_counter() - t0
            log(f"[tune] rep {rep}/{args.reps} done after {took / 60:.1f} min; about "
                f"{took / rep * (args.reps - rep) / 60:.1f} min to go")
    except KeyboardInterrupt:
        sys.exit("interrupted")
    finally:
        server.stop()
        shutil.rmtree(dl, ignore_errors=True)
        if meta:
            out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
            log(f"[tune] raw results: {out}")
    meta["order"] = [tuple(p) for p in meta["order"]]
    text = section(data, results, meta)
    report.publish(text, args.out, SECTION, "tune")
    if any(not report.ok(r) for rs in results.values() for r in rs):
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
