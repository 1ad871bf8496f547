"""PyTorch integration: `torch.distributed.checkpoint` (DCP) storage backed by a lake, and the
HF transformers Trainer callback (`LakeTrainerCallback`, `pull_for_resume`).

Imports torch: `import ckptlake` never imports this package, `import ckptlake.torch` does.
transformers is imported only when one of its names is first used (the [hf] extra).
"""
from __future__ import annotations

from typing import Any

from .dcp import LakeReader, LakeWriter, NotADcpCheckpoint

_LAZY = {"LakeTrainerCallback": "hf", "NotATrainerCheckpoint": "hf", "pull_for_resume": "hf"}

__all__ = ["LakeReader", "LakeWriter", "NotADcpCheckpoint", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
