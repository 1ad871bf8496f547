"""Checkpointer fixes: the SIGTERM deadline is real and waited for once, the snapshot directory
does not outlive a SIGTERM exit, unsupported tensors are refused naming their entry, and a
retention failure that repeats after every commit is logged once."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ckptlake
from ckptlake.errors import NotFound, UsageError

np = pytest.importorskip("numpy")

ART = "slow/b"

# A 4 MiB random (incompressible) state on a lake capped at 1 MB/s: its upload takes ~4 s.
PREEMPTED = textwrap.dedent("""
    import logging, sys, time
    import numpy as np
    import ckptlake

    logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(message)s")
    lake = ckptlake.open(sys.argv[1], max_bandwidth=float(sys.argv[3]))
    ck = lake.checkpointer("slow/b", on_sigterm="wait", exit_timeout=float(sys.argv[2]),
                           retention=False)
    rng = np.random.default_rng(0)
    ck.save_state({"w": rng.standard_normal(int(sys.argv[4]), dtype=np.float32)}, step=1)
    print("ready", flush=True)
    time.sleep(120)
""")


def run_preempted(tmp_path: Path, *, exit_timeout: float, bandwidth: float,
                  floats: int) -> tuple[int, str, Path, str]:
    """Run PREEMPTED, SIGTERM it once save_state returned; (status, log, its TMPDIR, lake)."""
    url = (tmp_path / "lake").as_uri()
    script = tmp_path / "preempted.py"
    script.write_text(PREEMPTED)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmpdir)}
    proc = subprocess.Popen([sys.executable, str(script), url, str(exit_timeout),
                             str(bandwidth), str(floats)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err.decode(), tmpdir, url


def test_sigterm_deadline_cuts_the_upload_off_and_is_waited_for_once(tmp_path) -> None:
    status, err, tmpdir, url = run_preempted(tmp_path, exit_timeout=0.5, bandwidth=1e6,
                                             floats=1024 * 1024)
    assert status == 143, err
    # One wait, one LOST naming what was lost; the exit hook does not wait again.
    assert err.count("waiting for them up to 0.5 s") == 1, err
    assert err.count("LOST") == 1, err
    assert "LOST checkpoint(s) of slow/b: step 1 (cut off while uploading)" in err
    assert "failed in the background" not in err, err
    # No version appears after the deadline: the cut-off upload never commits.
    assert "committed slow/b" not in err, err
    with ckptlake.open(url) as lake:
        with pytest.raises(NotFound):
            lake.versions(ART)
    assert not (tmpdir / "ckptlake-snapshots").exists(), err


def test_sigterm_upload_done_in_time_commits_once_and_leaves_no_snapshot_dir(tmp_path) -> None:
    # 1 MiB at 1 MB/s: still uploading at the SIGTERM, done well within exit_timeout.
    status, err, tmpdir, url = run_preempted(tmp_path, exit_timeout=60, bandwidth=1e6,
                                             floats=256 * 1024)
    assert status == 143, err
    assert "LOST" not in err, err
    assert err.count("committed slow/b@v1") == 1, err
    with ckptlake.open(url) as lake:
        assert [v.version for v in lake.versions(ART)] == [1]
    assert not (tmpdir / "ckptlake-snapshots").exists(), err


# ---- unsupported tensors ----------------------------------------------------------------------

def _unsupported() -> dict[str, object]:
    torch = pytest.importorskip("torch")
    return {
        "float8_e8m0fnu": lambda: torch.zeros(4, dtype=torch.uint8).view(torch.float8_e8m0fnu),
        "float8_e4m3fnuz": lambda: torch.zeros(4).to(torch.float8_e4m3fnuz),
        "float8_e5m2fnuz": lambda: torch.zeros(4).to(torch.float8_e5m2fnuz),
        "float4_e2m1fn_x2": lambda: torch.zeros(4, dtype=torch.uint8).view(
            torch.float4_e2m1fn_x2),
        "complex64": lambda: torch.zeros(3, dtype=torch.complex64),
        "conj": lambda: torch.randn(3, dtype=torch.complex64).conj(),
        "sparse_coo": lambda: torch.eye(3).to_sparse(),
        "meta": lambda: torch.empty(3, device="meta"),
    }


@pytest.mark.parametrize("kind", ["float8_e8m0fnu", "float8_e4m3fnuz", "float8_e5m2fnuz",
                                  "float4_e2m1fn_x2", "complex64", "conj", "sparse_coo",
                                  "meta"])
def test_unsupported_tensor_is_a_usage_error_naming_the_entry(local_lake_url, kind) -> None:
    tensor = _unsupported()[kind]()
    state = {"model": {"ok": np.zeros(3, np.float32), "bad": tensor}, "step": 1}
    with ckptlake.open(local_lake_url) as lake:
        with lake.checkpointer("run/t", retention=False) as ck:
            # prepare_state reads shapes and dtypes only: a meta tensor is fine there
            attempts = [lambda: ck.save_state(state, step=1)]
            if kind != "meta":
                attempts.append(lambda: ck.prepare_state(state))
            for attempt in attempts:
                with pytest.raises(UsageError, match=r"'model/bad'") as info:
                    attempt()
                assert kind.split("_")[0] in str(info.value) or kind in ("conj", "meta")
            assert ck.pending == 0
        with pytest.raises(NotFound):
            lake.versions("run/t")


def test_prepare_state_takes_a_model_built_on_the_meta_device(local_lake_url) -> None:
    """Deferred init: the trainer prepares buffers from a meta model at start-up, then saves
    the materialized one (2960456 refused the meta tensors there)."""
    torch = pytest.importorskip("torch")
    with torch.device("meta"):
        meta = torch.nn.Linear(4, 4)
    real = torch.nn.Linear(4, 4)
    with ckptlake.open(local_lake_url) as lake:
        with lake.checkpointer("run/t", retention=False) as ck:
            ck.prepare_state(meta.state_dict())
            ck.save_state(real.state_dict(), step=1)
        out = lake.load_state("run/t")
    assert torch.equal(torch.as_tensor(out["weight"]), real.weight.detach())


def test_supported_fp8_and_neg_bit_views_round_trip(local_lake_url) -> None:
    torch = pytest.importorskip("torch")
    neg = torch.randn(3, dtype=torch.complex64).conj().imag  # float32 with the neg bit set
    state = {"neg": neg, "e4m3": torch.randn(4).to(torch.float8_e4m3fn),
             "e5m2": torch.randn(4).to(torch.float8_e5m2)}
    with ckptlake.open(local_lake_url) as lake:
        with lake.checkpointer("run/t", retention=False) as ck:
            ck.save_state(state, step=1)
        out = lake.load_state("run/t")
    assert torch.equal(out["neg"], neg.resolve_neg())
    for key in ("e4m3", "e5m2"):
        assert out[key].dtype == state[key].dtype
        assert torch.equal(out[key].view(torch.uint8), state[key].view(torch.uint8))


# ---- retention failure repeated at every commit -----------------------------------------------

def test_repeated_retention_failure_is_logged_once(local_lake_url, tmp_path, caplog) -> None:
    policy = tmp_path / "policy.yaml"
    # keep_missing: false: with the default, versions without the metric are kept as gc keeps
    # them and nothing fails (test_checkpointer_policy)
    policy.write_text('retention:\n  rules:\n    - match: "run/*"\n'
                      '      keep_best: {metric: val_loss, mode: min, keep_missing: false}\n')
    with ckptlake.open(local_lake_url) as lake:
        with caplog.at_level(logging.ERROR, logger="ckptlake"):
            with lake.checkpointer("run/r", retention=policy) as ck:
                for step in range(1, 6):
                    ck.save_state({"w": np.full(4, step, np.float32)}, step=step).result(60)
        errors = [r for r in caplog.records
                  if r.levelno >= logging.ERROR and "retention of run/r" in r.getMessage()]
        assert len(errors) == 1, caplog.text
        assert "val_loss" in errors[0].getMessage()
        assert len(ck.retention_errors) == 5  # every failure is still listed
        assert len(lake.versions("run/r")) == 5


def test_exit_without_close_leaves_no_snapshot_dir(tmp_path) -> None:
    script = tmp_path / "noclose.py"
    script.write_text(textwrap.dedent("""
        import sys
        import numpy as np
        import ckptlake

        ck = ckptlake.open(sys.argv[1]).checkpointer("run/x", retention=False)
        ck.save_state({"w": np.zeros(1024, np.float32)}, step=1)
    """))
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    url = (tmp_path / "lake").as_uri()
    done = subprocess.run([sys.executable, str(script), url], capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(tmpdir)}, timeout=120)
    assert done.returncode == 0, done.stderr
    with ckptlake.open(url) as lake:
        assert [v.version for v in lake.versions("run/x")] == [1]
    assert not (tmpdir / "ckptlake-snapshots").exists(), done.stderr
