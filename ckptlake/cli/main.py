"""The console script's entry point (`ckptlake`, `python -m ckptlake`), kept apart from app.py.

Why a module of its own: building the Typer app imports Typer (~30 ms), and the shell scripts'
`ckptlake __complete ...` (cli/complete.py) runs on every TAB and needs none of it.  This module
imports nothing but the standard library until it knows which of the two it runs.
"""
from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["__complete"]:  # the shell scripts, at TAB time (cli/complete.py)
        import os

        from .complete import main as complete

        code = complete(sys.argv[2:])
        # Not sys.exit: a lookup still waiting on a slow lake must not hold the shell.
        os._exit(code)
    import gc

    # No collector passes during start-up either: the imports and the S3 client's parsed models
    # (~100k objects, all alive to the end) made gen-2 passes that found nothing (~0.015 s of a
    # 1 KiB S3 pull, docs/benchmarks.md).  open_lake turns it back on, with all that frozen,
    # before a command's own work (watch runs for days; its garbage must be collected).
    gc.disable()
    from . import output
    from .app import app
    from .output import PROG

    output.COLLECTOR_PAUSED = True

    # Frozen objects are skipped by the garbage collector's passes.  What the imports made lives
    # as long as the process, so no pass needs to look at it (~0.02 s of a 1 KiB S3 pull); and
    # at exit the interpreter runs full collections over everything still alive (an S3 command
    # holds botocore's parsed models, ~100k objects: 0.05-0.1 s), so the command's leftovers
    # are frozen too.  atexit handlers, finalizers and the freeing of modules run as usual.
    from ..core import chunkio

    chunkio.TUNE_MALLOC = True  # the CLI owns its process (see chunkio.fix_mmap_threshold)
    gc.freeze()
    try:
        app(prog_name=PROG)
    finally:
        gc.freeze()
