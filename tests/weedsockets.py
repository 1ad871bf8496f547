"""`weed server` makes a unix socket per service next to its TCP port,
/tmp/seaweedfs-<service>-<port>.sock (master-grpc, s3, s3-grpc, volume-grpc, filer, ...), and
leaves them behind when it is killed, as the tests and benchmarks do after a short grace: ~4
files in /tmp per server started, forever.  Stdlib only: bench/server.py uses it too."""
from __future__ import annotations

import contextlib
import glob
import os
import re
import stat
from typing import Iterable

_PORT_FLAG = re.compile(r"^-[\w.]*port[\w.]*=(\d+)$")


def remove_sockets(args: Iterable[object]) -> None:
    """Remove the sockets of a stopped `weed server` started with `args`: those named after
    a port its command line gave, or that port + 10000 (a service's default gRPC port); only
    sockets, only in /tmp, where weed puts them."""
    given = {int(m.group(1)) for a in args if (m := _PORT_FLAG.match(str(a)))}
    for port in given | {p + 10000 for p in given}:
        for path in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
