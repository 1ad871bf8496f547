"""How long does `trainer.save_checkpoint` stall a Lightning loop with LakeCheckpointIO?

A model of SIZE MiB of float32 weights (Linear layers) is trained one step with AdamW (so the
checkpoint holds ~3 x SIZE: weights and two moments), then `trainer.save_checkpoint` is called
REPS times, the weights and moments changed densely in between (nothing deduplicates).  Modes:

  torch        Lightning's default TorchCheckpointIO: torch.save to a local file
  lake-sync    LakeCheckpointIO(async_upload=False): returns once the version is committed
  lake-async   LakeCheckpointIO(): returns after the host copy; "committed" adds the wait for
               the upload (io.wait())

The lake is a SeaweedFS this script starts on loopback (bench/server.py) and stops, or a local
file:// lake with --local.

    cd bench && ../.venv/bin/python lightning_bench.py                 # 128 MiB, 5 reps
    cd bench && ../.venv/bin/python lightning_bench.py --size-mib 32 --reps 3 --local
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

BUCKET = "lightning-bench"


def _model(size_mib: int) -> Any:
    import lightning.pytorch as pl
    import torch

    width = 1024
    layers = max(1, size_mib * (1 << 20) // (4 * width * width))

    class Big(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False)
                                             for _ in range(layers)])

        def training_step(self, batch: Any, idx: int) -> Any:
            return self.net(batch[0]).pow(2).mean()

        def configure_optimizers(self) -> Any:
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    return Big()


def _loader() -> Any:
    import torch

    ds = torch.utils.data.TensorDataset(torch.randn(4, 1024))
    return torch.utils.data.DataLoader(ds, batch_size=4)


def run_mode(mode: str, size_mib: int, reps: int, url: str, scratch: Path) -> dict[str, float]:
    import lightning.pytorch as pl
    import torch

    import ckptlake
    from ckptlake.torch import LakeCheckpointIO

    plugins: list[Any] = []
    io = None
    if mode != "torch":
        io = LakeCheckpointIO(ckptlake.open(url), f"bench/{mode}",
                              async_upload=mode == "lake-async")
        plugins = [io]
    model = _model(size_mib)
    trainer = pl.Trainer(max_steps=1, plugins=plugins, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=scratch, accelerator="cpu", devices=1)
    trainer.fit(model, _loader())
    opt = trainer.optimizers[0]
    blocked, committed = [], []
    for rep in range(reps):
        with torch.no_grad():  # change every byte: nothing deduplicates
            for p in model.parameters():
                p.add_(torch.randn_like(p))
                for v in opt.state[p].values():
                    if v.dim():
                        v.add_(1.0)
        t0 = time.perf_counter()
        trainer.save_checkpoint(scratch / mode / f"step={rep}.ckpt")
        blocked.append(time.perf_counter() - t0)
        if io is not None:
            io.wait()
        committed.append(time.perf_counter() - t0)
    if io is not None:
        io.teardown()
    return {"blocked": statistics.median(blocked), "committed": statistics.median(committed)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--local", action="store_true", help="a file:// lake instead of SeaweedFS")
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="lightningbench-"))
    weed = None
    try:
        if args.local:
            url = "file://" + str(scratch / "lake")
        else:
            from server import SeaweedFS

            weed = SeaweedFS(Path(sys.executable).parent / "weed", scratch / "weed").start()
            weed.create_bucket(BUCKET)
            os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                              AWS_REGION="us-east-1", AWS_ENDPOINT_URL=weed.endpoint)
            url = f"s3://{BUCKET}/lake"
        results = {m: run_mode(m, args.size_mib, args.reps, url, scratch)
                   for m in ("torch", "lake-sync", "lake-async")}
        ckpt_mib = 3 * args.size_mib
        print(f"\n{args.size_mib} MiB model + AdamW (~{ckpt_mib} MiB checkpoint), "
              f"{args.reps} reps, medians, lake {'file://' if args.local else 'SeaweedFS'}")
        print("| mode | blocked in save_checkpoint | until committed |")
        print("|---|--:|--:|")
        for m, r in results.items():
            print(f"| {m} | {r['blocked'] * 1000:,.0f} ms | {r['committed'] * 1000:,.0f} ms |")
        sync = results["lake-sync"]["blocked"]
        print(f"lake-async blocked / lake-sync: {results['lake-async']['blocked'] / sync:.1%}")
    finally:
        if weed is not None:
            weed.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
