"""Delta against the parent version: measured, to decide issue 13's stretch item
(docs/benchmarks.md, "Delta against the parent version (issue 13 stretch)").

Consecutive checkpoints of one run hold the same tensors with small updates; XOR with the same
bytes of the previous checkpoint zeroes the bits that did not change (sign, exponent, the high
mantissa bits).  The issue's rule: ship delta chunks only if they store >= 15 % less than plain
compression on a real training run.

Trains bench/codec_bench.py's small transformer (same model, data and AdamW) on CPU, one
thread, and saves a checkpoint every `--interval` steps (fp32 weights, bf16 weights, fp32
weights + AdamW state, as safetensors; cached in `--out`).  Then, for each pair of checkpoints
`k * interval` steps apart (k from `--pairs-every`), cuts the child as a push does
(format/chunking.py: tensor-aligned, 16 MiB) and per chunk measures the stored bytes of

* plain: ckptlake's codec (`codecs.encode_auto(chunk, dtype)`, raw if it declines);
* delta: chunk XOR the parent's bytes at the same offsets (the layouts are identical: same
  tensors, same shapes), encoded the best way available: the codec with the chunk's dtype hint,
  the codec without a hint (zstd / bf16 / fp32 bit planes), byte planes + zstd, plain zstd-1;
* best of both per chunk (what a shipped design would store).

Every winning delta is decoded and XORed back onto the parent: it must give the child's bytes.

A chunk whose bytes equal the parent's costs nothing either way (dedup) and is counted apart.
CPU time (time.process_time, this process, one thread) of the delta encode is reported per
GiB of raw chunk: XOR + the hinted codec alone, and XOR + trying every candidate.

    python bench/delta_bench.py [--steps 600] [--interval 50] [--pairs-every 1,4]
                                [--out /tmp/delta-bench]
    python bench/delta_bench.py --steps 20 --interval 10 --out /tmp/delta-smoke   # smoke
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CHUNK = 16 * 1024 * 1024
NAMES = ("fp32", "bf16", "fp32+adamw")
GIB = 1024 ** 3


def make_checkpoints(steps: int, interval: int, out: Path) -> dict[int, float]:
    """Train and save every `interval` steps: out/step_N/<name>.safetensors.  Returns
    step -> loss (cached with the checkpoints: the same seed gives the same run)."""
    losses_path = out / f"losses-{steps}-{interval}.json"
    wanted = range(interval, steps + 1, interval)
    if losses_path.exists() and all((out / f"step_{s}" / f"{n}.safetensors").exists()
                                    for s in wanted for n in NAMES):
        return {int(k): v for k, v in json.loads(losses_path.read_text()).items()}
    from codec_bench import state_blobs, train

    losses: dict[int, float] = {}

    def save(step: int, model, opt, loss: float) -> None:
        if step % interval:
            return
        d = out / f"step_{step}"
        d.mkdir(parents=True, exist_ok=True)
        for name, blob in state_blobs(model, opt).items():
            (d / f"{name}.safetensors").write_bytes(blob)
        losses[step] = loss

    train(steps, on_step=save)
    losses_path.write_text(json.dumps(losses))
    return losses


@dataclass
class Tally:
    raw: int = 0
    dedup: int = 0  # bytes of chunks equal to the parent's: free either way
    plain: int = 0
    delta: int = 0
    best: int = 0
    delta_cpu: float = 0.0  # XOR + hinted codec
    delta_cpu_all: float = 0.0  # XOR + every candidate
    wins: dict[str, int] = field(default_factory=dict)  # delta candidate -> bytes it won

    def add(self, other: "Tally") -> None:
        for k in ("raw", "dedup", "plain", "delta", "best", "delta_cpu", "delta_cpu_all"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        for k, v in other.wins.items():
            self.wins[k] = self.wins.get(k, 0) + v


def _stored(frame, raw_len: int) -> int:
    """What the object would take: never more than the raw bytes (stored raw then)."""
    return raw_len if frame is None else min(len(frame), raw_len)


def component(names: list[str]) -> str:
    """What a chunk holds, for the AdamW checkpoint's breakdown."""
    kinds = {"exp_avg_sq" if n.endswith(".exp_avg_sq") else
             "exp_avg" if n.endswith(".exp_avg") else "weights" for n in names}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def compare(parent: bytes, child: bytes) -> dict[str, Tally]:
    """component -> tally of one pair of checkpoints (the same tensors, shapes and order)."""
    import numpy as np
    import zstandard

    from ckptlake.format import chunking, codecs

    def read(buf: bytes):
        return lambda off, n: buf[off:off + n]

    plan = chunking.plan(read(child), len(child), CHUNK)
    layout = chunking.detect(read(child), len(child))
    if plan.kind != "safetensors" or chunking.plan(read(parent), len(parent), CHUNK) != plan \
            or child[:layout.head] != parent[:layout.head]:
        raise SystemExit("delta_bench: parent and child differ in layout; not comparable")
    zc = zstandard.ZstdCompressor(level=1)
    byte_planes = codecs.Choice(codecs.CODEC_PLANES, codecs.PLANES_BYTES4)
    candidates = {
        "codec+hint": lambda x, dt: codecs.encode_auto(x, dt),
        "codec": lambda x, dt: codecs.encode_auto(x, None),
        "byte planes": lambda x, dt: codecs.encode(x, byte_planes) if len(x) % 4 == 0 else None,
        "zstd-1": lambda x, dt: codecs.HEAD.pack(codecs.MAGIC, codecs.CODEC_ZSTD, 0, 0, len(x))
        + zc.compress(x),  # a frame as codecs writes it (16-byte head)
    }
    out: dict[str, Tally] = {}
    for cut in plan.cuts:
        c = memoryview(child)[cut.offset:cut.offset + cut.length]
        p = memoryview(parent)[cut.offset:cut.offset + cut.length]
        names = [it.name for it in layout.items
                 if it.start < cut.offset + cut.length and it.end > cut.offset]
        t = out.setdefault(component(names) if names else "header", Tally())
        t.raw += cut.length
        if c == p:
            t.dedup += cut.length
            continue
        plain = _stored(codecs.encode_auto(c, cut.dtype), cut.length)
        t0 = time.process_time()
        wide = np.uint64 if cut.length % 8 == 0 else np.uint8
        x = np.bitwise_xor(np.frombuffer(c, wide), np.frombuffer(p, wide)).tobytes()
        t_xor = time.process_time() - t0
        sizes, frames = {}, {}
        for cname, enc in candidates.items():
            t0 = time.process_time()
            frames[cname] = enc(x, cut.dtype)
            sizes[cname] = _stored(frames[cname], cut.length)
            dt = time.process_time() - t0
            t.delta_cpu_all += dt
            if cname == "codec+hint":
                t.delta_cpu += dt
        t.delta_cpu += t_xor
        t.delta_cpu_all += t_xor
        won = min(sizes, key=sizes.get)
        if sizes[won] < cut.length:  # the delta restores the child: no measuring mistake
            back = np.frombuffer(codecs.decode(frames[won]), np.uint8)
            if np.bitwise_xor(back, np.frombuffer(p, np.uint8)).tobytes() != c:
                raise SystemExit(f"delta_bench: {won} delta of bytes {cut.offset}+"
                                 f"{cut.length} does not restore the child")
        t.wins[won] = t.wins.get(won, 0) + cut.length
        t.plain += plain
        t.delta += sizes[won]
        t.best += min(plain, sizes[won])
    return out


def fmt_row(label: str, t: Tally) -> str:
    changed = t.raw - t.dedup
    if not changed:
        return f"{label:<44} {t.raw / 1e6:>7.1f}  (all chunks unchanged: dedup)"
    won = max(t.wins, key=t.wins.get) if t.wins else "-"
    return (f"{label:<44} {t.raw / 1e6:>7.1f} {t.dedup / t.raw:>6.3f} {t.plain / changed:>7.3f} "
            f"{t.delta / changed:>7.3f} {t.delta / t.plain:>7.3f} {t.best / t.plain:>7.3f} "
            f"{t.delta_cpu / (changed / GIB):>6.2f} {t.delta_cpu_all / (changed / GIB):>6.2f}"
            f"  {won}")


HEAD = (f"{'pair / group':<44} {'raw MB':>7} {'dedup':>6} {'plain':>7} {'delta':>7} "
        f"{'d/plain':>7} {'best/pl':>7} {'s/GiB':>6} {'s/GiB*':>6}  most won by")


def main() -> None:
    ap = argparse.ArgumentParser(
        description="Delta (XOR with the parent checkpoint) vs plain compression on a real "
                    "small training run (issue 13 stretch).")
    ap.add_argument("--steps", type=int, default=600, help="training steps (default 600)")
    ap.add_argument("--interval", type=int, default=50,
                    help="save a checkpoint every N steps (default 50)")
    ap.add_argument("--pairs-every", default="1,4",
                    help="compare checkpoints k saves apart, for each k (default 1,4: every "
                         "50 and every 200 steps with the default interval)")
    ap.add_argument("--out", default="/tmp/delta-bench", help="checkpoint cache directory")
    args = ap.parse_args()
    if args.steps < 2 * args.interval or args.interval < 1:
        ap.error("need --interval >= 1 and --steps >= 2 x --interval (two checkpoints)")
    try:
        ks = sorted({int(k) for k in args.pairs_every.split(",")})
    except ValueError:
        ap.error("--pairs-every: comma-separated integers, e.g. 1,4")
    if not ks or ks[0] < 1:
        ap.error("--pairs-every: integers >= 1")

    import numpy
    import torch
    import zstandard

    out = Path(args.out)
    t0 = time.time()
    losses = make_checkpoints(args.steps, args.interval, out)
    print(f"trained/loaded {args.steps} steps in {time.time() - t0:.0f} s; loss at saves: "
          + ", ".join(f"{s}:{l:.2f}" for s, l in sorted(losses.items())))
    print(f"torch {torch.__version__}, numpy {numpy.__version__}, zstandard "
          f"{zstandard.__version__}, Python {sys.version.split()[0]}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("columns: stored / raw of the changed chunks (plain, delta); d/plain = delta / plain; "
          "best/pl = per-chunk min(plain, delta) / plain; s/GiB = CPU s per GiB changed, XOR + "
          "hinted codec; s/GiB* = XOR + every candidate")
    saves = sorted(losses)
    t0 = time.time()
    for k in ks:
        gap = k * args.interval
        pairs = [(a, b) for a, b in zip(saves, saves[k:])]
        if not pairs:
            print(f"\n(no pairs {gap} steps apart)")
            continue
        early_n = len(pairs) // 2  # early: the first half of the pairs (none if only one)
        for name in NAMES:
            print(f"\n== {name}, every {gap} steps ({len(pairs)} pairs) ==")
            print(HEAD)
            groups = {"early": Tally(), "later": Tally(), "all": Tally()}
            comps: dict[str, Tally] = {}
            for i, (a, b) in enumerate(pairs):
                pa = (out / f"step_{a}" / f"{name}.safetensors").read_bytes()
                pb = (out / f"step_{b}" / f"{name}.safetensors").read_bytes()
                per = compare(pa, pb)
                pair = Tally()
                for cname, t in per.items():
                    pair.add(t)
                    if i >= early_n:
                        comps.setdefault(cname, Tally()).add(t)
                print(fmt_row(f"{a} -> {b}", pair), flush=True)
                groups["early" if i < early_n else "later"].add(pair)
                groups["all"].add(pair)
            print(fmt_row(f"EARLY (first {early_n} pairs)", groups["early"])
                  if early_n else "EARLY: (one pair only: see all)")
            print(fmt_row(f"LATER (last {len(pairs) - early_n} pairs)", groups["later"]))
            print(fmt_row("ALL", groups["all"]))
            if name == "fp32+adamw":
                for cname in ("weights", "exp_avg", "exp_avg_sq", "mixed", "header"):
                    if cname in comps:
                        print(fmt_row(f"  later pairs: {cname} chunks", comps[cname]))
    print(f"\nanalysis {time.time() - t0:.0f} s wall")


if __name__ == "__main__":
    main()
