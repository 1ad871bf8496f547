"""How long does a checkpoint stall a training loop?  (issue 6's measurement)

A simulated training loop (a fixed amount of single-threaded numpy matmul work per step)
checkpoints a SIZE MiB state every K steps to a SeaweedFS this script starts (and stops, by its
PID).  Every checkpoint's bytes differ from the previous one (the state is updated densely
before each checkpoint, as in full-parameter training), so nothing deduplicates.

Modes (each in a fresh artifact, with a state whose bytes no earlier mode uploaded):
  none        no checkpoints: the loop's own time
  sync        the script writes its files, then `lake.push()` (blocks until committed)
  save        the script writes its files (write-new + rename), then `Checkpointer.save()`
              (snapshot="auto": a copy the first time, hard links once the writer is seen
              replacing its files)
  save_copy   the same with snapshot="copy"
  save_state  `Checkpointer.save_state(arrays)` (no files: host copy, then background
              safetensors + upload), after `prepare_state()` at start-up
  train_state the same arrays as a full training state (issue 15): nested dicts with int keys
              (an optimizer's), a step, numpy's RNG state; then the same state saved once
              more, unchanged, to show that it uploads no data bytes
plus a reference: a copy of the same bytes in memory (into a reused buffer, and a fresh one).

"blocked" is the time the loop spends inside the checkpoint call (for sync: the push; for the
async modes: save()/save_state()).  The script's own file writing (sync, save, save_copy) is
reported apart ("write"): it is the trainer's cost (torch.save...), the same with or without
ckptlake.  Wall time includes draining the last uploads (close()).

    python bench/async_bench.py                       # 512 MiB every 200 steps of ~100 ms, x3
    python bench/async_bench.py --size-mib 64 --checkpoints 2 --every 10   # a quick look
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # the loop uses one core; the upload gets the other

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import ckptlake  # noqa: E402

MiB = 1 << 20
BUCKET = "asyncbench"
MODES = ("none", "sync", "save", "save_copy", "save_state", "train_state")


def training_state(arrays: list[np.ndarray], step: int) -> dict:
    """`arrays` laid out as a model + optimizer state dict would be (same bytes in total)."""
    half = len(arrays) // 2 or 1
    return {"model": {f"layers.{i}.weight": a for i, a in enumerate(arrays[:half])},
            "optim": {"state": {i: {"exp_avg": a} for i, a in enumerate(arrays[half:])},
                      "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999),
                                        "params": list(range(len(arrays) - half))}]},
            "step": step, "rng": np.random.get_state()}


# ---- the training loop -------------------------------------------------------------------------

@contextlib.contextmanager
def _seaweedfs(workdir: Path):
    """A throw-away SeaweedFS from bench/server.py (the launcher every bench shares)."""
    from server import SeaweedFS

    weed = SeaweedFS(Path(sys.executable).parent / "weed", workdir).start()
    try:
        weed.create_bucket(BUCKET)
        yield weed
    finally:
        weed.stop()


def calibrate(step_ms: float) -> tuple[np.ndarray, int]:
    """Matmuls per step for ~step_ms on an idle core (the fastest of several batches, so that
    other load on the machine does not shrink the work)."""
    a = np.random.default_rng(0).standard_normal((256, 256))
    best = float("inf")
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(20):
            a @ a
        best = min(best, (time.perf_counter() - t) / 20)
    return a, max(1, round(step_ms / 1000 / best))


def train_step(a: np.ndarray, repeats: int) -> None:
    for _ in range(repeats):
        a @ a


def write_files(arrays: list[np.ndarray], d: Path) -> None:
    """What a careful trainer does: write each file under a new name, then rename over."""
    d.mkdir(parents=True, exist_ok=True)
    for i, arr in enumerate(arrays):
        tmp = d / f".shard_{i}.bin.tmp"
        arr.tofile(tmp)
        os.replace(tmp, d / f"shard_{i}.bin")


def run_mode(mode: str, lake: ckptlake.Lake, base: list[np.ndarray], offset: float, args,
             work: tuple[np.ndarray, int], scratch: Path) -> dict:
    arrays = [b + np.float32(offset) for b in base]  # bytes no other mode uploaded
    art = f"bench/{mode}/ckpt"
    ckdir = scratch / mode / "latest"
    ck = None
    if mode.startswith("save") or mode == "train_state":
        ck = lake.checkpointer(art, snapshot="copy" if mode == "save_copy" else "auto",
                               snapshot_dir=str(scratch / mode / "snapshots"))
        if mode == "save_state":  # at start-up, as a training script would
            ck.prepare_state({f"shard_{i}": arr for i, arr in enumerate(arrays)}).join()
        elif mode == "train_state":
            ck.prepare_state(training_state(arrays, 0)).join()
    blocked: list[float] = []
    writes: list[float] = []
    busy: list[bool] = []
    steps = args.every * args.checkpoints
    a, repeats = work
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        train_step(a, repeats)
        if step % args.every:
            continue
        for arr in arrays:  # the dense update every weight gets
            arr += np.float32(1.0)
        if mode == "none":
            continue
        if mode not in ("save_state", "train_state"):
            tw = time.perf_counter()
            write_files(arrays, ckdir)
            writes.append(time.perf_counter() - tw)
        if ck is not None:
            busy.append(ck.pending > 0)  # the previous upload still running: save() waits
        tb = time.perf_counter()
        if mode == "sync":
            lake.push(ckdir, art, step=step)
        elif mode == "save_state":
            assert ck is not None
            ck.save_state({f"shard_{i}": arr for i, arr in enumerate(arrays)}, step=step)
        elif mode == "train_state":
            assert ck is not None
            ck.save_state(training_state(arrays, step), step=step)
        else:
            assert ck is not None
            ck.save(ckdir, step=step)
        blocked.append(time.perf_counter() - tb)
    loop = time.perf_counter() - t0
    drain = 0.0
    resave = None
    if mode == "train_state":  # nothing changed: no data bytes
        assert ck is not None
        ck.wait()
        resave = ck.save_state(training_state(arrays, steps), step=steps).result()
        steps_saved = list(range(args.every, steps + 1, args.every)) + [steps]
    else:
        steps_saved = list(range(args.every, steps + 1, args.every))
    if ck is not None:
        td = time.perf_counter()
        ck.close()
        drain = time.perf_counter() - td
    if mode != "none":
        assert [v.step for v in lake.versions(art)] == steps_saved, mode
    shutil.rmtree(scratch / mode, ignore_errors=True)
    return {"mode": mode, "blocked": blocked, "write": writes, "loop": loop, "drain": drain,
            "wall": loop + drain, "busy": busy,
            "resave_bytes_uploaded": None if resave is None else resave.bytes_uploaded}


def memcopy_reference(base: list[np.ndarray]) -> dict:
    reused = [np.empty_like(b) for b in base]
    for r, b in zip(reused, base):  # touch the pages once
        np.copyto(r, b)
    t = time.perf_counter()
    for r, b in zip(reused, base):
        np.copyto(r, b)
    warm = time.perf_counter() - t
    t = time.perf_counter()
    fresh = [np.array(b, copy=True) for b in base]
    cold = time.perf_counter() - t
    del fresh, reused
    return {"reused_buffer": warm, "fresh_buffer": cold}


def ms(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 10 else f"{x:.1f} s"


def report(results: list[dict], ref: dict, args) -> str:
    sync = next((r for r in results if r["mode"] == "sync"), None)
    sync_blocked = statistics.mean(sync["blocked"]) if sync else None
    lines = [f"{args.size_mib} MiB state, checkpoint every {args.every} steps of ~"
             f"{args.step_ms:g} ms, {args.checkpoints} checkpoints, SeaweedFS on loopback, "
             f"{os.cpu_count()} cores",
             "",
             "| mode | blocked per checkpoint (mean / max) | % of sync | script's file write "
             "| loop | drain at close | wall |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        b = r["blocked"]
        mean = statistics.mean(b) if b else 0.0
        pct = f"{100 * mean / sync_blocked:.1f} %" if sync_blocked and b else "-"
        write = ms(statistics.mean(r["write"])) if r["write"] else "-"
        lines.append(f"| {r['mode']} | {ms(mean)} / {ms(max(b)) if b else '-'} | {pct} | "
                     f"{write} | {r['loop']:.1f} s | {r['drain']:.1f} s | {r['wall']:.1f} s |")
    lines += ["", f"Reference, in-memory copy of the same {args.size_mib} MiB: "
                  f"{ms(ref['reused_buffer'])} into a reused buffer, "
                  f"{ms(ref['fresh_buffer'])} into a fresh one."]
    for r in results:
        if r["blocked"]:
            waited = sum(r.get("busy") or [])
            lines.append(f"- {r['mode']}: blocked " + ", ".join(ms(x) for x in r["blocked"])
                         + (f" ({waited} of them found the previous upload still running and "
                            "waited for it)" if waited else ""))
        if r.get("resave_bytes_uploaded") is not None:
            lines.append(f"- {r['mode']}: the same state saved again, unchanged: "
                         f"{r['resave_bytes_uploaded']} data bytes uploaded")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--arrays", type=int, default=8, help="files / tensors the state has")
    ap.add_argument("--every", type=int, default=200, help="checkpoint every K steps")
    ap.add_argument("--step-ms", type=float, default=100.0, help="compute per step")
    ap.add_argument("--checkpoints", type=int, default=3)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--workdir", default=None, help="scratch dir (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            sys.exit(f"unknown mode {m!r} (known: {', '.join(MODES)})")
    scratch = Path(args.workdir or tempfile.mkdtemp(prefix="ckptlake-async-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    n = args.size_mib * MiB // 4 // args.arrays
    rng = np.random.default_rng(1)
    base = [rng.standard_normal(n, dtype=np.float32) for _ in range(args.arrays)]
    work = calibrate(args.step_ms)
    ref = memcopy_reference(base)
    results = []
    try:
        with _seaweedfs(scratch / "weed") as weed:
            os.environ["AWS_ENDPOINT_URL"] = weed.endpoint
            for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                         "AWS_DEFAULT_REGION": "us-east-1",
                         "AWS_EC2_METADATA_DISABLED": "true"}.items():
                os.environ[k] = v
            lake = ckptlake.open(f"s3://{BUCKET}/lake-{int(time.time())}")
            try:
                for i, mode in enumerate(modes):
                    print(f"running {mode} ...", file=sys.stderr, flush=True)
                    results.append(run_mode(mode, lake, base, 10.0 * (i + 1), args, work,
                                            scratch))
            finally:
                lake.close()
    finally:
        if args.workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    print(report(results, ref, args))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "reference": ref,
                                               "results": results}, indent=1))


if __name__ == "__main__":
    main()
