"""PyTorch integration: `save` / `load` of one torch.save file streamed to and from a lake,
`torch.distributed.checkpoint` (DCP) storage backed by a lake, the
HF transformers Trainer callback (`LakeTrainerCallback`, `pull_for_resume`) and a Lightning
`CheckpointIO` (`LakeCheckpointIO`).

Imports torch: `import ckptlake` never imports this package, `import ckptlake.torch` does.
transformers and lightning are imported only when one of their names is first used (the [hf]
and [lightning] extras).
"""
from __future__ import annotations

from typing import Any

from .dcp import LakeReader, LakeWriter, NotADcpCheckpoint
from .single import load, save

_LAZY = {"LakeTrainerCallback": "hf", "NotATrainerCheckpoint": "hf", "pull_for_resume": "hf",
         "LakeCheckpointIO": "lightning", "NotALightningCheckpoint": "lightning",
         "LakeStepGuard": "stepguard"}

__all__ = ["LakeReader", "LakeWriter", "NotADcpCheckpoint", "load", "save", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
