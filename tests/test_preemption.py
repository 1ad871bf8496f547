"""SIGTERM at random points of a training loop (issue 15, item 5, on_sigterm): the lake holds
only whole checkpoints afterwards, each equal to a state the loop saved; never a torn one."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import ckptlake

np = pytest.importorskip("numpy")

ART = "run/preempt"
FINAL_STEP = 999_999  # the step of LOOP's final save (on_sigterm="save")

LOOP = textwrap.dedent("""
    import sys, time
    import numpy as np
    import ckptlake

    def make_state(step):
        return {"w": np.full(600_000, step, np.float32),
                "optim": {"state": {0: {"m": np.arange(5_000, dtype=np.float64) * step}},
                          "param_groups": [{"lr": 0.1 / step, "betas": (0.9, 0.99)}]},
                "step": step}

    FINAL_STEP = 999_999  # the final save's step: the test looks for it in the lake
    lake = ckptlake.open(sys.argv[1], chunk_size=1024 * 1024)
    final = (lambda: ck.save_state(make_state(FINAL_STEP), step=FINAL_STEP))
    ck = lake.checkpointer("run/preempt", on_busy=sys.argv[2], retention=False,
                           exit_timeout=30, on_sigterm=sys.argv[3],
                           final_save=final if sys.argv[3] == "save" else None)
    print("ready", flush=True)
    for step in range(1, 100_000):
        state = make_state(step)
        if ck.save_state(state, step=step) is not None:  # None: skipped (on_busy="skip")
            print(step, flush=True)
        time.sleep(0.01)
""")


def make_state(step: int) -> dict:
    return {"w": np.full(600_000, step, np.float32),
            "optim": {"state": {0: {"m": np.arange(5_000, dtype=np.float64) * step}},
                      "param_groups": [{"lr": 0.1 / step, "betas": (0.9, 0.99)}]},
            "step": step}


def same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("trial", range(8))
def test_sigterm_at_random_points_leaves_only_whole_checkpoints(tmp_path, trial) -> None:
    rng = random.Random(1500 + trial)
    url = (tmp_path / "lake").as_uri()
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    on_busy = rng.choice(["wait", "queue", "skip"])
    on_sigterm = ("wait", "save")[trial % 2]
    proc = subprocess.Popen([sys.executable, str(script), url, on_busy, on_sigterm],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=tmp_path)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 1.2))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err.decode()[-2000:]
    assert b"SIGTERM" in err and b"Traceback" not in err, err.decode()[-2000:]
    with ckptlake.open(url) as lake:
        try:
            versions = lake.versions(ART)
        except ckptlake.NotFound:
            versions = []  # signalled before the first commit: no trace at all is fine
        # Every save that was accepted before the signal was committed (waited for).
        accepted = {int(line) for line in out.split()}
        assert accepted <= {v.step for v in versions}
        # The final save (on_sigterm="save") is committed too: the job's last state is what
        # a preempted run resumes from; "wait" takes none.
        assert (FINAL_STEP in {v.step for v in versions}) == (on_sigterm == "save"), \
            err.decode()[-2000:]
        for v in versions:
            got = lake.load_state(f"{ART}@v{v.version}")
            assert got["step"] == v.step
            assert same(make_state(v.step), got), f"v{v.version} is not the state of its step"
        assert lake.verify(ART if versions else None).ok
