"""The Checkpointer against SeaweedFS through the fault-injecting proxy (tests/faultproxy.py):

* the exit deadline is the process's deadline: a cut-off upload whose chunk PUT stalls starts no
  further attempt (store/retry.py stops at its pool's stop event), and a SIGTERM exit does not
  wait for the request still in flight (daemon upload workers, transfer/pool.py); the cut-off
  snapshot is removed;
* a Ctrl-C during close() leaves the pending upload to the exit hook: it is waited for, cut
  off and reported LOST, and its snapshot removed, instead of vanishing unsaid;
* a manifest write whose answer was lost (the server wrote it, then went away) is read back: a
  checkpoint reported failed is not in the lake, and one that is in the lake is not reported
  failed (so it is not saved again as a duplicate version).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

import ckptlake
from ckptlake.core import push as push_mod
from ckptlake.errors import EXIT_TRANSFER, NotFound, OutcomeUnknown, PreconditionFailed, \
    TransferError, TransientError
from faultproxy import FaultProxy

np = pytest.importorskip("numpy")

MiB = 1024 * 1024
ART = "faults/ck"
CHUNKS = r"/chunks/"


@pytest.fixture
def proxy(seaweedfs: Any) -> Iterator[FaultProxy]:
    with FaultProxy(seaweedfs.endpoint_url, seed=11) as px:
        yield px


def _stalled_tries(proxy: FaultProxy) -> int:
    """How often the chunk whose PUT was stalled was sent (one stalled chunk per test)."""
    puts = [e for e in proxy.exchanges() if e.method == "PUT" and "/chunks/" in e.target]
    stalled = {e.target for e in puts if e.fault}
    assert len(stalled) == 1, puts
    return sum(1 for e in puts if e.target in stalled)


# ---- 1. the cut-off upload starts no further attempt ------------------------------------------

def test_cut_off_upload_is_not_retried(s3_lake_url: str, proxy: FaultProxy,
                                       tmp_path: Path) -> None:
    """Every chunk PUT stalls past the client's timeout (2 s).  The exit drain (what the exit
    hook and the SIGTERM handler run) cuts the upload off during its first attempt; that attempt
    ends at its timeout, and then no second attempt may go out (the retry loop used to run all 5,
    minutes at the default timeouts, after the checkpoint was already reported LOST)."""
    lake = ckptlake.open(s3_lake_url, endpoint_url=proxy.endpoint_url, connect_timeout=2,
                         read_timeout=2)
    ck = lake.checkpointer(ART, exit_timeout=0.5, retention=False,
                           snapshot_dir=tmp_path / "snaps")
    proxy.stall("up", seconds=600, after=1 * MiB, count=10, path=CHUNKS)
    try:
        ck.save_state({"w": np.random.default_rng(1).random(1 << 20, dtype=np.float32)},
                      step=1)
        proxy.wait_for(lambda s: s.faults.get("stall", 0) >= 1, timeout=30)
        ck._drain_at_exit()  # the exit hook's work: wait, cut off, grace, LOST
        # The stalled attempt ended (2 s) within the grace, and the job with it.
        assert ck.pending == 0
        assert _stalled_tries(proxy) == 1
        assert ck.results == []
    finally:
        proxy.clear_faults()
        ck._shut_down()
        lake.close()
    assert _stalled_tries(proxy) == 1  # and none later either
    with pytest.raises(NotFound):
        ckptlake.open(s3_lake_url).versions(ART)
    assert not (tmp_path / "snaps").exists() or not os.listdir(tmp_path / "snaps")


# ---- 1 + 4. a SIGTERM exit comes at the deadline, not when retries run out --------------------

PREEMPTED = textwrap.dedent("""
    import logging, sys, time
    import numpy as np
    import ckptlake

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    lake = ckptlake.open(sys.argv[1], endpoint_url=sys.argv[2], connect_timeout=60,
                         read_timeout=60)
    ck = lake.checkpointer("faults/ck", exit_timeout=1, on_sigterm="wait", retention=False)
    ck.save_state({"w": np.random.default_rng(0).random(1 << 20, dtype=np.float32)}, step=1)
    print("ready", flush=True)
    time.sleep(600)
""")


def _run_child(tmp_path: Path, source: str, args: list[str], sig: int, *, proxy: FaultProxy,
               after: float = 0.0, limit: float = 30.0) -> tuple[int | None, str, Path]:
    """Run `source`; once it printed "ready" and the proxy stalled a chunk PUT, wait `after`
    seconds and send `sig`.  (returncode or None if still running after `limit` s, stderr,
    its TMPDIR)."""
    script = tmp_path / "child.py"
    script.write_text(source)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmpdir)}
    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        proxy.wait_for(lambda s: s.faults.get("stall", 0) >= 1, timeout=30)
        time.sleep(after)
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=limit)
            status: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            status = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return status, err.decode(), tmpdir


def _leftovers(tmpdir: Path) -> list[str]:
    return [str(p.relative_to(tmpdir)) for p in tmpdir.rglob("*")]


def test_sigterm_exit_does_not_wait_for_a_stalled_request(s3_lake_url: str, proxy: FaultProxy,
                                                          tmp_path: Path) -> None:
    """exit_timeout=1, client timeouts 60 s (the defaults' read timeout), the chunk PUT stalls
    for 10 minutes.  The process must exit with 143 once the deadline and the grace (5 s) are
    over, after one LOST line, leaving no snapshot; it took 5 minutes (5 attempts x 60 s)."""
    proxy.stall("up", seconds=600, after=1 * MiB, count=10, path=CHUNKS)
    status, err, tmpdir = _run_child(tmp_path, PREEMPTED, [s3_lake_url, proxy.endpoint_url],
                                     signal.SIGTERM, proxy=proxy, limit=30)
    proxy.clear_faults()
    assert status == 143, f"still running 30 s after SIGTERM (exit_timeout=1)\n{err}"
    assert err.count("LOST checkpoint(s) of faults/ck: step 1 (cut off while uploading)") == 1, \
        err
    assert "committed faults/ck" not in err, err
    assert _stalled_tries(proxy) == 1  # no attempt after the cut-off
    assert _leftovers(tmpdir) == [], err  # the cut-off snapshot is not left behind
    with pytest.raises(NotFound):
        ckptlake.open(s3_lake_url).versions(ART)


# ---- 2. Ctrl-C during close() ------------------------------------------------------------------

INTERRUPTED_CLOSE = textwrap.dedent("""
    import logging, sys
    import numpy as np
    import ckptlake

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    lake = ckptlake.open(sys.argv[1], endpoint_url=sys.argv[2], connect_timeout=30,
                         read_timeout=30)
    ck = lake.checkpointer("faults/ck", exit_timeout=1, retention=False)
    ck.save_state({"w": np.random.default_rng(0).random(1 << 20, dtype=np.float32)}, step=1)
    print("ready", flush=True)
    try:
        ck.close()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        raise
""")


def test_ctrl_c_during_close_leaves_the_upload_to_the_exit_hook(s3_lake_url: str,
                                                                proxy: FaultProxy,
                                                                tmp_path: Path) -> None:
    """The chunk PUT stalls 8 s; Ctrl-C arrives in close().  The KeyboardInterrupt comes at
    once, and then the exit hook still does its job: it says the upload is pending, waits
    exit_timeout, cuts it off (its bytes arrive after the deadline: never committed) and logs
    it as LOST; the snapshot is removed.  It used to vanish with no word, snapshot left."""
    proxy.stall("up", seconds=8, after=1 * MiB, count=1, path=CHUNKS)
    status, err, tmpdir = _run_child(tmp_path, INTERRUPTED_CLOSE,
                                     [s3_lake_url, proxy.endpoint_url], signal.SIGINT,
                                     proxy=proxy, after=0.3, limit=60)
    assert status is not None and status != 0, err
    interrupted = err.index("interrupted\n")
    pending = err.find("process is exiting with 1 checkpoint upload(s) of faults/ck pending")
    lost = err.find("LOST checkpoint(s) of faults/ck: step 1 (cut off while uploading)")
    assert interrupted < pending < lost, err  # in this order: Ctrl-C, the wait, the loss
    assert "committed faults/ck" not in err, err
    assert _leftovers(tmpdir) == [], err
    with pytest.raises(NotFound):
        ckptlake.open(s3_lake_url).versions(ART)


# ---- 3. a manifest write whose answer was lost -------------------------------------------------

class _LostAnswer:
    """Around the lake's S3Store: the manifest PUT of version `number` reaches the server, then
    the server "goes away" for the next `away` requests on that key (PUTs and GETs alike
    raise TransientError), as a server that committed and died before answering would."""

    def __init__(self, lake: Any, number: int, away: int) -> None:
        self.inner = lake.store.inner
        self.key = f"artifacts/{ART}/@v/{number:010d}.json"
        self.away = away
        self.armed = True
        self.puts = 0
        self._put, self._get = self.inner.put, self.inner.get

    def put(self, key: str, data: Any, **kw: Any) -> str:
        if key == self.key:
            self.puts += 1
            if self.armed:
                self.armed = False
                self._put(key, data, **kw)  # the server writes it...
                raise TransientError(f"{key}: connection reset (injected, after the write)")
            self._outage(key)
        return self._put(key, data, **kw)

    def get(self, key: str) -> bytes:
        if key == self.key:
            self._outage(key)
        return self._get(key)

    def _outage(self, key: str) -> None:
        if self.away > 0:
            self.away -= 1
            raise TransientError(f"{key}: connection refused (injected outage)")


def _lost_answer(monkeypatch: pytest.MonkeyPatch, lake: Any, number: int,
                 away: int) -> _LostAnswer:
    fault = _LostAnswer(lake, number, away)
    monkeypatch.setattr(lake.store.inner, "put", fault.put)
    monkeypatch.setattr(lake.store.inner, "get", fault.get)
    monkeypatch.setattr(lake.store, "base_delay", 0.001)
    monkeypatch.setattr(push_mod, "_READBACK_WAITS", (0.01, 0.01))
    return fault


def _state(step: int) -> dict[str, Any]:
    return {"w": np.full(1024, step, np.float32), "step": step}


def test_committed_manifest_whose_answer_was_lost_is_a_success(
        s3_lake_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server is away for the 4 remaining PUT attempts and the first read-back round (5
    GETs): the second read-back finds our manifest, so step 2 is committed as v2, reported
    committed, and step 3 becomes v3 (it used to fail, and the rerun duplicated v2 as v3)."""
    lake = ckptlake.open(s3_lake_url)
    with lake.checkpointer(ART, retention=False) as ck:
        ck.save_state(_state(1), step=1)
        ck.wait()
        fault = _lost_answer(monkeypatch, lake, 2, away=4 + 5)
        ck.save_state(_state(2), step=2)
        results = ck.wait()
        assert fault.puts == 5 and fault.away == 0
        assert [(r.version, r.step) for r in results] == [(1, 1), (2, 2)]
        ck.save_state(_state(3), step=3)
    assert [(v.version, v.step) for v in lake.versions(ART)] == [(1, 1), (2, 2), (3, 3)]


def test_unreadable_outcome_says_the_version_may_be_committed(
        s3_lake_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server stays away through every read-back: the failure names the version that may
    have been committed and where to look, and keeps the transfer exit code."""
    lake = ckptlake.open(s3_lake_url)
    with lake.checkpointer(ART, retention=False) as ck:
        ck.save_state(_state(1), step=1)
        ck.wait()
        fault = _lost_answer(monkeypatch, lake, 2, away=1000)
        ck.save_state(_state(2), step=2)
        with pytest.raises(OutcomeUnknown) as info:
            ck.wait()
        fault.away = 0
    message = str(info.value)
    assert "version v2 may have been committed" in message, message
    assert f"ckptlake ls {ART}" in message, message
    assert info.value.exit_code == EXIT_TRANSFER
    assert [(v.version, v.step) for v in lake.versions(ART)] == [(1, 1), (2, 2)]


def test_manifest_write_that_did_not_land_is_written_again_once_the_server_is_back(
        s3_lake_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every attempt fails before the server writes anything, and the read-back finds no
    manifest.  Absent is not "never" (a timed-out write may still land), so the manifest is
    written again, conditionally: here that commits it, once (a plain failure here let a late
    write land after the caller was told nothing was committed)."""
    lake = ckptlake.open(s3_lake_url)
    with lake.checkpointer(ART, retention=False) as ck:
        ck.save_state(_state(1), step=1)
        ck.wait()
        fault = _lost_answer(monkeypatch, lake, 2, away=5)
        fault.armed = False
        ck.save_state(_state(2), step=2)
        assert [(r.version, r.step) for r in ck.wait()] == [(1, 1), (2, 2)]
    assert [(v.version, v.step) for v in lake.versions(ART)] == [(1, 1), (2, 2)]


# ---- Lightning: the removal skipped after a failed save ----------------------------------------

def test_lightning_removal_skip_names_what_was_not_deleted(local_lake_url: str,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    """With every save failed, the key Lightning removes names no version: the warning says
    what was not deleted, not that "the versions of" it were kept."""
    pytest.importorskip("lightning")
    import logging

    from ckptlake.torch.lightning import LakeCheckpointIO

    io = LakeCheckpointIO(ckptlake.open(local_lake_url), "lt")
    io._failed = [("/ckpts/epoch=0-step=4.ckpt", "failed to upload")]  # a failed upload's
    with caplog.at_level(logging.WARNING, logger="ckptlake"):
        io.remove_checkpoint("/ckpts/epoch=0-step=2.ckpt")
        io.wait()  # the removal runs on the plugin's job thread (async_upload)
    assert "lt: did not delete /ckpts/epoch=0-step=2.ckpt, which Lightning removed" \
        in caplog.text, caplog.text
    assert "kept the versions" not in caplog.text


def test_a_manifest_write_that_lands_late_is_not_reported_failed(
        local_lake_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every attempt times out on our side, and the last one's write reaches the server 0.3 s
    later: the first read-back (at once) found nothing and said "failed, rerun" while v2 was
    landing; the rerun made v3 of the same checkpoint.  Now the conditional write is made
    again: it finds the late one (ours) and reports it committed, once."""
    import threading

    lake = ckptlake.open(local_lake_url)
    src = Path(local_lake_url[len("file://"):]).parent / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w")
    lake.push(src, ART)
    inner = lake.store.inner
    real_put = inner.put
    calls = {"n": 0}
    timers: list[threading.Timer] = []
    monkeypatch.setattr(lake.store, "base_delay", 0.001)

    late: list[str] = []

    def land_late(key: str, data: bytes, kw: dict[str, Any]) -> None:
        try:
            real_put(key, data, **kw)
            late.append("landed")
        except PreconditionFailed:  # our conditional re-write was first: the late one loses
            late.append("refused")

    def put(key: str, data: bytes, **kw: Any) -> Any:
        if "/@v/" in key and kw.get("if_none_match") and calls["n"] < 5:
            calls["n"] += 1
            if calls["n"] == 5:  # the server writes it after we gave up on the answer
                timer = threading.Timer(0.3, land_late, (key, data, kw))
                timers.append(timer)
                timer.start()
            raise TransientError(f"{key}: read timed out")
        return real_put(key, data, **kw)

    monkeypatch.setattr(inner, "put", put)
    (src / "w.bin").write_bytes(b"v2")
    result = lake.push(src, ART)
    for timer in timers:
        timer.join()
    assert result.version == 2 and len(late) == 1
    assert [v.version for v in lake.versions(ART)] == [1, 2]
