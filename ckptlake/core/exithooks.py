"""Work that must finish before the interpreter stops background uploads at exit.

concurrent.futures sets its shutdown flag in a *threading* exit hook, which runs before
`atexit` hooks; after that no upload can start its worker pool.  Threading exit hooks run in
reverse order of registration, and concurrent.futures.thread registered its own when this
module imported it, so a hook registered here runs first.  Used by the Checkpointer (pending
uploads) and by ckptlake.torch's LakeWriter (dcp.async_save under way).
"""
from __future__ import annotations

import concurrent.futures.thread  # noqa: F401  (imported first: see the module docstring)
import contextlib
import threading
from typing import Callable

_LOCK = threading.Lock()
_REGISTERED: set[Callable[[], None]] = set()


def before_pools_close(hook: Callable[[], None]) -> None:
    """Run `hook` at exit while thread pools still start (once, however often asked)."""
    with _LOCK:
        if hook in _REGISTERED:
            return
        _REGISTERED.add(hook)
        register = getattr(threading, "_register_atexit", None)
        if register is not None:
            with contextlib.suppress(RuntimeError):  # already shutting down
                register(hook)
                return
        import atexit

        atexit.register(hook)  # too late to upload, not to say what was lost
