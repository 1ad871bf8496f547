"""PyTorch integration: `torch.distributed.checkpoint` (DCP) storage backed by a lake, and a
Lightning `CheckpointIO` (`LakeCheckpointIO`, imported from .lightning only when asked for).

Imports torch: `import ckptlake` never imports this package, `import ckptlake.torch` does.
"""
from __future__ import annotations

from typing import Any

from .dcp import LakeReader, LakeWriter, NotADcpCheckpoint

__all__ = ["LakeReader", "LakeWriter", "NotADcpCheckpoint"]


def __getattr__(name: str) -> Any:  # lazy: Lightning only for those who use it
    if name in ("LakeCheckpointIO", "NotALightningCheckpoint"):
        from . import lightning

        return getattr(lightning, name)
    raise AttributeError(name)
