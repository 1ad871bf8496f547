"""weedsockets.remove_sockets: a killed `weed server` leaves no /tmp/seaweedfs-*.sock behind."""
from __future__ import annotations

import glob
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from weedsockets import remove_sockets


def _bound_socket(path: str) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)


def test_removes_the_sockets_of_its_ports_only() -> None:
    port = 20000 + os.getpid() % 9000
    mine = [f"/tmp/seaweedfs-s3-{port}.sock", f"/tmp/seaweedfs-s3-grpc-{port + 10000}.sock"]
    other = f"/tmp/seaweedfs-s3-{port + 1}.sock"
    not_a_socket = f"/tmp/seaweedfs-master-grpc-{port}.sock"
    made: list[str] = []  # only these are removed at the end: never a live server's
    try:
        for path in [*mine, other]:
            _bound_socket(path)  # fails (in use) rather than touch a live server's socket
            made.append(path)
        with open(not_a_socket, "x"):
            made.append(not_a_socket)
        remove_sockets(["weed", "server", f"-s3.port={port}", "-s3.port.iceberg=0"])
        assert not any(os.path.exists(p) for p in mine)
        assert os.path.exists(other) and os.path.exists(not_a_socket)
    finally:
        for path in made:
            if os.path.lexists(path):
                os.unlink(path)


@pytest.mark.seaweedfs
def test_a_stopped_server_leaves_none(tmp_path: Path) -> None:
    """conftest._stop (SIGTERM, then SIGKILL after a short grace) removes what weed made."""
    from conftest import _free_ports, _stop, _weed_binary

    s3, master, volume, filer = _free_ports(4)
    args = [str(_weed_binary()), f"-logdir={tmp_path}", "server", "-s3", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", f"-s3.port={s3}", f"-master.port={master}", f"-volume.port={volume}",
            f"-filer.port={filer}", f"-dir={tmp_path}", "-volume.max=0",
            "-master.volumeSizeLimitMB=64", "-master.telemetry=false", "-s3.port.iceberg=0",
            "-s3.port.lance=0", "-volume.preStopSeconds=0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(tmp_path / "weed.log", "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                                env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    ours = [f"/tmp/seaweedfs-s3-{s3}.sock", f"/tmp/seaweedfs-master-grpc-{master + 10000}.sock"]
    try:
        deadline = time.monotonic() + 60
        while not all(os.path.exists(p) for p in ours):
            assert proc.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "weed.log").read_text()[-2000:]
            time.sleep(0.1)
    finally:
        _stop(proc)
    left = [p for p in glob.glob("/tmp/seaweedfs-*.sock")
            if p.rsplit("-", 1)[1][:-len(".sock")] in
            {str(n) for port in (s3, master, volume, filer) for n in (port, port + 10000)}]
    assert left == []


@pytest.mark.seaweedfs
def test_the_session_server_logs_beside_its_log_not_in_tmp(seaweedfs: Any) -> None:
    """weed's glog files (weed.<host>.<user>.log.<LEVEL>.<time>.<pid>) default to /tmp, where
    every server of a suite left a few: the servers here pass -logdir."""
    assert not glob.glob(f"/tmp/weed.*.{seaweedfs.pid}")
    assert glob.glob(str(seaweedfs.log_path.parent / f"weed.*.{seaweedfs.pid}"))
