"""`ckptlake watch`: a fake trainer process writes checkpoints; watch pushes each once, in step
order, survives its own restart without duplicates and exits 0 on SIGTERM (finishing or
abandoning the upload under way)."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import pytest

import ckptlake
from ckptlake.watch import Watcher
from ckptlake.errors import UsageError

ART = "shell/run/ckpt"
MiB = 1 << 20

TRAINER = textwrap.dedent("""
    # A trainer that writes step_N/ directories, Orbax-style: files, then the marker last.
    import os, random, sys, time
    out, first, last, every, pause = sys.argv[1], *map(int, sys.argv[2:5]), float(sys.argv[5])
    os.makedirs(out, exist_ok=True)
    for step in range(first, last + 1, every):
        d = os.path.join(out, f"step_{step}")
        os.makedirs(d, exist_ok=True)
        rnd = random.Random(step)
        with open(os.path.join(d, "model.bin"), "wb") as f:
            f.write(rnd.randbytes(150_000))
        with open(os.path.join(d, "meta.json"), "w") as f:
            f.write('{"step": %d}' % step)
        time.sleep(pause)  # the window in which a watcher sees it incomplete
        open(os.path.join(d, "COMMIT_SUCCESS"), "w").close()
    open(os.path.join(out, "trainer.done"), "w").close()
""")


def watch_cmd(directory: Path, url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ckptlake", "watch", str(directory), ART, "--pattern",
            "step_*", "--step-regex", r"step_(\d+)", "--marker", "COMMIT_SUCCESS",
            "--poll", "0.1", "--lake", url, *extra]


def lake_steps(url: str) -> list[int | None]:
    with ckptlake.open(url) as lake:
        try:
            return [v.step for v in lake.versions(ART)]
        except ckptlake.NotFound:
            return []


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def digest_tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_watch_pushes_a_trainers_checkpoints_once_across_a_restart(
        lake_url, tmp_path, seaweedfs_env_if_s3) -> None:
    env = seaweedfs_env_if_s3
    ckdir = tmp_path / "checkpoints"
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    trainer = subprocess.Popen([sys.executable, str(script), str(ckdir), "10", "60", "10",
                                "0.15"], env=env)
    try:
        first = subprocess.Popen(watch_cmd(ckdir, lake_url, "--json"), env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: len(lake_steps(lake_url)) >= 2, "the first checkpoints")
        code, out, err = stop(first)
        assert code == 0, err
        docs = [json.loads(line) for line in out.splitlines()]
        assert docs and all(d["checkpoint"] == f"step_{d['step']}" for d in docs)
        seen = lake_steps(lake_url)
        assert seen == sorted(seen) and len(set(seen)) == len(seen)

        second = subprocess.Popen(watch_cmd(ckdir, lake_url), env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        trainer.wait(120)
        wait_for(lambda: lake_steps(lake_url) == [10, 20, 30, 40, 50, 60], "every step")
        code, out, err = stop(second)
        assert code == 0, err
    finally:
        if trainer.poll() is None:
            trainer.kill()
    assert len(out.splitlines()) == 6 - len(seen)  # one line per checkpoint it pushed
    assert all(line.startswith(f"pushed {ART}@v") for line in out.splitlines())
    for step in (10, 40):
        with ckptlake.open(lake_url) as lake:
            lake.pull(f"{ART}@step={step}", tmp_path / f"r{step}")
        assert digest_tree(tmp_path / f"r{step}") == digest_tree(ckdir / f"step_{step}")
    # A third start finds nothing to do: no duplicates, and it says which steps it skipped.
    third = subprocess.run(watch_cmd(ckdir, lake_url, "--once"), env=env, capture_output=True,
                           text=True, timeout=120)
    assert third.returncode == 0 and third.stdout == ""
    assert "step 60 (step_60) is already in the lake" in third.stderr
    assert lake_steps(lake_url) == [10, 20, 30, 40, 50, 60]


@pytest.fixture
def seaweedfs_env_if_s3(request: pytest.FixtureRequest, lake_url: str) -> dict[str, str]:
    if lake_url.startswith("s3://"):
        return request.getfixturevalue("seaweedfs").env
    return dict(os.environ)


@pytest.mark.parametrize("drain,finished", [(60.0, True), (0.3, False)])
def test_sigterm_finishes_or_abandons_the_upload_and_exits_0(local_lake_url, tmp_path, drain,
                                                             finished) -> None:
    ckdir = tmp_path / "checkpoints"
    (ckdir / "step_1").mkdir(parents=True)
    (ckdir / "step_1" / "big.bin").write_bytes(os.urandom(12 * MiB))
    (ckdir / "step_1" / "COMMIT_SUCCESS").touch()
    lake_dir = Path(local_lake_url.removeprefix("file://"))
    # 1 MiB chunks at 4 MiB/s: the upload takes about 3 s, long enough to be stopped in it.
    proc = subprocess.Popen(watch_cmd(ckdir, local_lake_url, "--drain", str(drain),
                                      "--max-bandwidth", "4MiB", "--chunk-size", "1MiB"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (lake_dir / "chunks").is_dir() and any((lake_dir / "chunks").rglob("*"))
             or proc.poll() is not None, "the upload to start")
    code, out, err = stop(proc)
    assert code == 0, err
    if finished:
        assert "waiting up to 60 s" in err and out.startswith(f"pushed {ART}@v1")
        assert lake_steps(local_lake_url) == [1]
    else:
        assert "abandoned the upload of step_1" in err and out == ""
        assert lake_steps(local_lake_url) == []


# ---- the library, in-process ---------------------------------------------------------------------

def test_settle_rule_keep_local_and_older_steps(local_lake_url, tmp_path) -> None:
    now = [1000.0]
    events: list[Any] = []
    d = tmp_path / "ck"
    d.mkdir()

    def make(step: int, mtime: float) -> None:
        p = d / f"ckpt-{step:05d}.pt"
        p.write_bytes(str(step).encode())
        os.utime(p, (mtime, mtime))

    with ckptlake.open(local_lake_url) as lake:
        w = Watcher(lake, d, ART, pattern="ckpt-*.pt", step_regex=r"ckpt-(?P<step>\d+)",
                    settle=30, keep_local=1, clock=lambda: now[0], on_event=events.append)
        make(100, 900.0)
        make(200, 990.0)  # modified 10 s ago: not settled
        (d / "notes.txt").write_text("ignored: does not match")
        assert w.poll_once() == 1 and lake_steps(local_lake_url) == [100]
        now[0] = 1025.0
        assert w.poll_once() == 1 and lake_steps(local_lake_url) == [100, 200]
        assert sorted(p.name for p in d.iterdir()) == ["ckpt-00200.pt", "notes.txt"]
        make(150, 900.0)  # complete, but older than a pushed step: blocked, kept locally
        make(300, 1020.0)  # not settled yet: never pruned, not pushed
        assert w.poll_once() == 0
        assert [e.kind for e in events] == ["pushed", "pushed", "pruned", "blocked"]
        assert "older than step 200 (shell/run/ckpt@v2, pushed from ckpt-00200.pt)" in \
            events[-1].message
        assert (d / "ckpt-00150.pt").exists() and (d / "ckpt-00300.pt").exists()


def test_marker_is_required_when_configured_and_regex_is_checked(local_lake_url,
                                                                 tmp_path) -> None:
    d = tmp_path / "ck"
    (d / "step_5").mkdir(parents=True)
    (d / "step_5" / "f").write_text("x")
    os.utime(d / "step_5" / "f", (1, 1))
    with ckptlake.open(local_lake_url) as lake:
        w = Watcher(lake, d, ART, pattern="step_*", step_regex=r"step_(\d+)",
                    marker="COMMIT_SUCCESS", settle=0)
        assert w.poll_once() == 0  # old and quiet, but no marker: a crashed partial write
        (d / "step_5" / "COMMIT_SUCCESS").touch()
        assert w.poll_once() == 1
        for bad in ("step_", "step_(\\d+"):
            with pytest.raises(UsageError):
                Watcher(lake, d, ART, step_regex=bad)


def test_watch_cli_validates_before_touching_the_lake(tmp_path) -> None:
    from typer.testing import CliRunner

    from ckptlake.cli.app import app

    r = CliRunner().invoke(app, ["watch", str(tmp_path), ART, "--step-regex", "nogroup",
                                 "--lake", "s3://no-such-bucket-here/x"])
    assert r.exit_code == 2 and "group" in r.output


def test_watch_once_over_a_missing_directory_is_not_found(tmp_path) -> None:
    """A one-shot watch (cron) over a mistyped DIR pushed nothing and exited 0."""
    from typer.testing import CliRunner

    from ckptlake.cli.app import app

    lake = f"file://{tmp_path / 'lake'}"
    r = CliRunner().invoke(app, ["watch", str(tmp_path / "nosuch"), ART, "--once",
                                 "--lake", lake, "--json"])
    assert r.exit_code == 3, r.output
    assert "no such directory" in json.loads(r.stdout)["error"]["message"]
    (tmp_path / "afile").write_text("x")
    for once in (["--once"], []):  # a file is never a watch directory
        r = CliRunner().invoke(app, ["watch", str(tmp_path / "afile"), ART, *once,
                                     "--lake", lake])
        assert r.exit_code == 2 and "is a file" in r.output, r.output
