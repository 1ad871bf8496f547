"""`LakeStepGuard`: a Lightning callback that holds a SIGTERM back while the optimizer steps.

With `LakeCheckpointIO(..., on_sigterm="save", final_save=...)` the final checkpoint is taken
where the signal lands, and Python runs a signal handler between any two bytecodes: inside an
optimizer step (which updates parameters one after another) it saved a half-updated state
under the old `global_step`, the latest version a resume then starts from (a review took one
such in three runs).  Lightning runs the step inside its loop, where the training code cannot
wrap it in `Checkpointer.atomic()`; this callback opens that block before each optimizer step
and closes it at the end of the batch (the step counted), so the signal is acted on there.

    trainer = Trainer(plugins=[io], callbacks=[LakeStepGuard(), ModelCheckpoint(...)])
"""
from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch.callbacks import Callback
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise ModuleNotFoundError(
        f"ckptlake.torch.LakeStepGuard needs Lightning ({exc}): "
        "pip install 'ckptlake[lightning]'", name=exc.name) from None

from ..checkpointer import enter_atomic, leave_atomic

# Set once a guard has joined a fit: LakeCheckpointIO warns about on_sigterm="save" without one.
SEEN = False


class LakeStepGuard(Callback):
    """See the module doc.  Stateless between fits; one per Trainer."""

    def __init__(self) -> None:
        self._open = 0

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        global SEEN
        SEEN = True

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if not self._open:  # several optimizers (or manual steps) in one batch: one block
            enter_atomic()
            self._open = 1

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._close()  # may raise SystemExit: the SIGTERM that waited, acted on now

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._close(act=False)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._close(act=False)

    def _close(self, act: bool = True) -> None:
        if not self._open:
            return
        self._open = 0
        # act=False: the batch did not end (an exception): no final save mid-unwind; a SIGTERM
        # that waited is acted on by the next save, or at exit like any other
        leave_atomic(act=act)
