"""HF Trainer + LakeTrainerCallback: how long the training loop is blocked per checkpoint.

A GPT-2 built from a config (no download) trains on CPU with save_steps=1 against a SeaweedFS
this script starts (bench/server.py) and stops.  Per checkpoint it records the Trainer's own
write of `checkpoint-<step>` (its `_save_checkpoint`), the time the callback's `on_save` blocks
the loop (snapshot + scan, plus waiting for a still-running upload under on_busy="wait"), and
the background upload's own time.  With --on-busy queue (default here) a save never waits for
an upload still running, so the stall is the snapshot alone; with the callback's default
("wait") a save that comes while the previous upload runs waits for it.  Each checkpoint holds
new values (every step changes the weights and the optimizer state), so little deduplicates
between checkpoints.  Medians over
the checkpoints of a run; one run per snapshot mode.

    python bench/hf_bench.py                         # ~330 MiB checkpoints, 4 saves per mode
    python bench/hf_bench.py --layers 2 --hidden 256 --saves 3
Runs in the repo's .venv (scripts/test.sh: torch, transformers and accelerate come with the
[test] extra).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MiB = 1 << 20
BUCKET = "hfbench"


def run(url: str, out: Path, snapshot: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import transformers

    import ckptlake
    from ckptlake.torch import LakeTrainerCallback

    class Data(torch.utils.data.Dataset):
        def __init__(self) -> None:
            g = torch.Generator().manual_seed(0)
            self.x = torch.randint(0, args.vocab, (64, 16), generator=g)

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {"input_ids": self.x[i], "labels": self.x[i]}

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=args.vocab, n_positions=16, n_embd=args.hidden, n_layer=args.layers,
        n_head=4, bos_token_id=0, eos_token_id=0))
    lake = ckptlake.open(url)
    busy = {"on_busy": args.on_busy}
    if args.on_busy == "queue":
        busy["max_pending"] = args.saves  # never wait: measure the snapshot alone
    cb = LakeTrainerCallback(lake, f"bench/{snapshot}", snapshot=snapshot, **busy)
    targs = transformers.TrainingArguments(
        output_dir=str(out), max_steps=args.saves, save_steps=1, logging_steps=1,
        per_device_train_batch_size=1, report_to=[], use_cpu=True, disable_tqdm=True,
        save_total_limit=1)
    trainer = transformers.Trainer(model=model, args=targs, train_dataset=Data(), callbacks=[cb])
    writes, stalls, pending = [], [], []
    real_save, real_on_save = trainer._save_checkpoint, cb.on_save

    def timed_save(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return real_save(*a, **kw)
        finally:
            writes.append(time.perf_counter() - t)

    def timed_on_save(*a: Any, **kw: Any) -> Any:
        pending.append(cb._ck.pending if cb._ck is not None else 0)
        t = time.perf_counter()
        try:
            return real_on_save(*a, **kw)
        finally:
            stalls.append(time.perf_counter() - t)

    trainer._save_checkpoint = timed_save
    cb.on_save = timed_on_save
    t = time.perf_counter()
    trainer.train()  # on_train_end waits for the uploads
    total = time.perf_counter() - t
    size = sum(f.stat().st_size for f in out.glob("checkpoint-*/*"))
    return {"snapshot": snapshot, "on_busy": args.on_busy, "checkpoint_mib": round(size / MiB, 1),
            "trainer_write_s": round(statistics.median(writes), 3),
            "on_save_stall_s": round(statistics.median(stalls), 3),
            "on_save_stall_max_s": round(max(stalls), 3),
            "saves_that_found_an_upload_running": sum(1 for p in pending if p),
            "upload_s": round(statistics.median(r.seconds for r in cb.results), 3),
            "uploaded_mib": [round(r.bytes_uploaded / MiB, 1) for r in cb.results],
            "train_s": round(total, 2), "saves": len(cb.results)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--saves", type=int, default=4)
    p.add_argument("--modes", nargs="+", default=["link", "copy"])
    p.add_argument("--on-busy", default="queue", choices=["queue", "wait"],
                   help="queue (default): a save never waits for a running upload, so the "
                        "stall is the snapshot alone; wait: the callback's default")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from server import SeaweedFS

    import torch
    import transformers

    scratch = Path(tempfile.mkdtemp(prefix="hf-bench-"))
    weed = SeaweedFS(Path(sys.executable).parent / "weed", scratch / "weed").start()
    try:
        weed.create_bucket(BUCKET)
        os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": weed.endpoint})
        results = [run(f"s3://{BUCKET}/{mode}", scratch / f"out-{mode}", mode, args)
                   for mode in args.modes]
    finally:
        weed.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__,
                      "model": f"GPT-2 {args.layers} layers, hidden {args.hidden}, "
                               f"vocab {args.vocab}", "results": results}, indent=1))


if __name__ == "__main__":
    main()
