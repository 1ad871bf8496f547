"""PyTorch integration: `torch.distributed.checkpoint` (DCP) storage backed by a lake.

Imports torch: `import ckptlake` never imports this package, `import ckptlake.torch` does.
"""
from __future__ import annotations

from .dcp import LakeReader, LakeWriter, NotADcpCheckpoint

__all__ = ["LakeReader", "LakeWriter", "NotADcpCheckpoint"]
