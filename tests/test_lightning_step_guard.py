"""LakeStepGuard: with on_sigterm="save" the final checkpoint was taken where the SIGTERM
landed, also inside the optimizer step (which updates parameters one after another): a
half-updated state saved under the old global_step, as the latest version."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ckptlake

# A one-epoch fit of Tiny on the lake (argv: LAKE_URL, "guard" or not, ROOT), SIGTERM-saved.
FIT_TAIL = r"""
data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(8, 2)),
                                   batch_size=1)
holder = {}
io = LakeCheckpointIO(ckptlake.open(sys.argv[1]), "pl/guard", on_sigterm="save",
                      final_save=lambda: holder["t"].save_checkpoint("final.ckpt"),
                      exit_timeout=60)
guard = [LakeStepGuard()] if sys.argv[2] == "guard" else []
t = holder["t"] = pl.Trainer(max_epochs=1, plugins=[io], callbacks=guard, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, accelerator="cpu", devices=1,
                             default_root_dir=sys.argv[3])
t.fit(Tiny(), data)
print("not reached", flush=True)
"""

SCRIPT = r"""
import os, signal, sys
import torch
import lightning.pytorch as pl
import ckptlake
from ckptlake.torch import LakeCheckpointIO, LakeStepGuard

class PerParam(torch.optim.Optimizer):
    # each parameter in turn, as AdamW(foreach=False) does; SIGTERM after the first, at step 3
    def __init__(self, params):
        super().__init__(params, {})
        self.n = 0
    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            with torch.enable_grad():
                closure()
        self.n += 1
        params = [p for g in self.param_groups for p in g["params"]]
        for k, p in enumerate(params):
            p.add_(1.0)           # every parameter counts the steps it took
            if self.n == 3 and k == 0:
                os.kill(os.getpid(), signal.SIGTERM)

class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.zeros(2))
        self.b = torch.nn.Parameter(torch.zeros(2))
    def training_step(self, batch, i):
        return (self.a.sum() + self.b.sum()) * 0.0 + batch[0].sum() * 0.0 + self.a.sum() * 0
    def configure_optimizers(self):
        return PerParam(self.parameters())

""" + FIT_TAIL


def run_fit(tmp_path: Path, script: str, *args: str
            ) -> tuple[subprocess.CompletedProcess, str]:
    """Run a Lightning `script` in its own process on a lake under tmp_path: (result, url)."""
    pytest.importorskip("lightning.pytorch")
    path = tmp_path / "fit.py"
    path.write_text(script)
    url = (tmp_path / "lake").as_uri()
    done = subprocess.run([sys.executable, str(path), url, *args],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return done, url


@pytest.mark.parametrize("mode", ["guard", "none"])
def test_the_final_save_on_sigterm_is_of_a_whole_optimizer_step(tmp_path: Path,
                                                                 mode: str) -> None:
    done, url = run_fit(tmp_path, SCRIPT, mode, str(tmp_path / "root"))
    assert "not reached" not in done.stdout
    assert done.returncode == 143, done.stderr[-3000:]
    with ckptlake.open(url) as lake:
        [v] = lake.versions("pl/guard")
        sd = lake.load_state(f"pl/guard@v{v.version}")["state_dict"]
    a, b = float(sd["a"][0]), float(sd["b"][0])
    if mode == "guard":  # the signal waited for the end of the batch: step 3 whole
        assert (a, b, v.step) == (3.0, 3.0, 3), (a, b, v.step)
        assert "without ckptlake.torch.LakeStepGuard" not in done.stderr
    else:  # where it landed: a took step 3, b did not, and the step says 2
        assert (a, b, v.step) == (3.0, 2.0, 2), (a, b, v.step)
        assert "without ckptlake.torch.LakeStepGuard" in done.stderr
