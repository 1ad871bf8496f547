"""What a forked child must not take over from its parent.

Training jobs fork after opening a lake: DataLoader workers (fork is Linux's default start
method), multiprocessing pools, launchers.  The child gets a copy of every object but only the
thread that forked: a thread pool's bookkeeping says its threads are there (they are not, so
work submitted in the child waits for ever), a lock another thread held stays held, and a
connection pool's sockets are the parent's own connections (two processes writing one socket
mixed their requests: a pin object was stored with another process's request as its body).

Objects that hold such state register here; after a fork the child calls their `_after_fork`,
which drops the state (it is rebuilt on first use, in the child's own name).  Nothing is done
in the parent, and nothing the child drops is closed: closing a socket or a pool there would
act on the parent's."""
from __future__ import annotations

import os
import weakref
from typing import Any

# by id: not every such object is hashable (a dataclass with eq)
_live: "weakref.WeakValueDictionary[int, Any]" = weakref.WeakValueDictionary()


def reset_in_child(obj: Any) -> None:
    """Call obj._after_fork() in every child forked while obj lives."""
    _live[id(obj)] = obj


def _after_fork_in_child() -> None:
    for obj in list(_live.values()):
        try:
            obj._after_fork()
        except Exception:  # pragma: no cover - a child must start whatever one object does
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)
