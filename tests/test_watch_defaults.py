"""`watch` over a directory that holds more than checkpoints: with the default `--pattern '*'`,
the old default step regex took the first number of any name, so a TensorBoard event file
went up as step 1701234567, `--keep-local` deleted the real checkpoints to keep it, and every
later checkpoint was "older" for good, said in a note, exit 0."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.errors import NotFound
from ckptlake.watch import Watcher

ART = "t/w3"
TFEVENTS = "events.out.tfevents.1701234567.host"
OLD_DEFAULT = r"(?:.*?step[=_-]?)?(\d+)"  # the first number of any name


def write(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (1, 1))  # settled long ago


def steps(url: str, artifact: str = ART) -> list[int | None]:
    with ckptlake.open(url) as lake:
        try:
            return [v.step for v in lake.versions(artifact)]
        except NotFound:
            return []


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_the_default_takes_what_trainers_name_checkpoints_and_ignores_the_rest(
        local_lake_url, tmp_path) -> None:
    d = tmp_path / "ck"
    checkpoints = {
        "checkpoint-500": 500,  # HF Trainer
        "epoch=3-step=1200.ckpt": 1200, "epoch=4.ckpt": 4,  # Lightning
        "step_100": 100, "global_step800": 800,  # torch DCP, DeepSpeed
        "iter_0001000": 1000,  # Megatron
        "ckpt_100.pt": 100, "Checkpoint_7": 7, "42": 42,  # by hand; Orbax
    }
    others = [TFEVENTS, "train.log.1", "notes-v2.txt", "last.ckpt", "last-v1.ckpt",
              "trainer_state.json", "runs", "model-00001-of-00002.safetensors",
              "model-00042.safetensors", "latest_checkpointed_iteration.txt", "latest",
              "tmp-checkpoint-600", "step_700.tmp", "42.orbax-checkpoint-tmp-1",
              # a lock beside a checkpoint, copies under way, backups
              "checkpoint-400.lock", "step_100.part", "step_200.INCOMPLETE",
              "ckpt_300.pt.partial", "ckpt_500.pt.download", "step_600.pt~", "step_800.bak",
              "step_900.swp", "ckpt_10.pt.crdownload"]
    for name in [*checkpoints, *others]:
        write(d / name)
    write(d / ".hidden-step_9")  # hidden names are never looked at, nor reported
    events: list[Any] = []
    with ckptlake.open(local_lake_url) as lake:
        w = Watcher(lake, d, ART, on_event=events.append)
        found = w.candidates()
        w.candidates()  # said once per name
    assert {c.name: c.step for c in found} == checkpoints
    assert sorted(e.name for e in events) == sorted(others)
    assert {e.kind for e in events} == {"ignored"}
    assert "not named as a checkpoint" in events[0].message

    # An explicit --step-regex still takes what it matches, and says what it does not.
    events.clear()
    with ckptlake.open(local_lake_url) as lake:
        w = Watcher(lake, d, ART, pattern="model-*.safetensors",
                    step_regex=r"^model-(\d+)\.safetensors$", on_event=events.append)
        assert [(c.name, c.step) for c in w.candidates()] == [("model-00042.safetensors", 42)]
    assert [e.name for e in events] == ["model-00001-of-00002.safetensors"]
    assert "reads no step from its name" in events[0].message


def test_the_reviewed_directories_push_only_the_checkpoints(local_lake_url, tmp_path) -> None:
    d = tmp_path / "ck"
    write(d / "step_100" / "w.bin", b"1")
    write(d / "step_200" / "w.bin", b"2")
    write(d / TFEVENTS, b"tb")
    r = cli("watch", str(d), ART, "--once", "--keep-local", "1", "--settle", "0",
            "--lake", local_lake_url)
    assert r.exit_code == 0, r.output
    assert steps(local_lake_url) == [100, 200]
    assert sorted(p.name for p in d.iterdir()) == [TFEVENTS, "step_200"]
    assert f"ignoring {TFEVENTS}: not named as a checkpoint" in r.stderr

    logs = tmp_path / "logs"
    write(logs / "train.log.1")
    write(logs / "notes-v2.txt")
    r = cli("watch", str(logs), "t/logs", "--once", "--keep-local", "1", "--settle", "0",
            "--lake", local_lake_url)
    assert r.exit_code == 0 and r.stdout == "", r.output
    assert steps(local_lake_url, "t/logs") == []
    assert sorted(p.name for p in logs.iterdir()) == ["notes-v2.txt", "train.log.1"]
    assert "nothing to push" in r.stderr


def test_a_checkpoint_behind_a_step_far_ahead_fails_once_and_warns_with_the_way_out(
        local_lake_url, tmp_path) -> None:
    """Old rule: "not pushing step_300: step 300 is older than step 1701234567", a note, exit 0,
    and no way out named (rm never deletes a latest)."""
    d = tmp_path / "ck"
    write(d / "step_100" / "w.bin", b"1")
    write(d / TFEVENTS, b"tb")
    broad = ["--step-regex", OLD_DEFAULT, "--settle", "0", "--lake", local_lake_url]
    r = cli("watch", str(d), ART, "--once", *broad)
    assert r.exit_code == 0, r.output
    assert steps(local_lake_url) == [100, 1701234567]
    write(d / "step_300" / "w.bin", b"3")
    write(d / "step_400" / "w.bin", b"4")
    for extra in ([], ["--json"]):
        r = cli("watch", str(d), ART, "--once", *broad, *extra)
        assert r.exit_code == 6, r.output  # conflict: the lake holds a later step
        warning = ("warning: not pushing step_300: step 300 is older than step 1701234567 "
                   f"({ART}@v2, pushed from {TFEVENTS})")
        assert warning in r.stderr
        assert "warning: not pushing step_400" in r.stderr
        assert f"ckptlake push {d / 'step_300'} {ART} --step 300" in r.stderr
        assert f"ckptlake rm {ART}@v2" in r.stderr
    doc = json.loads(r.stdout.splitlines()[-1])
    assert doc["error"]["type"] == "Conflict" and doc["error"]["exit_code"] == 6
    assert doc["error"]["message"].startswith("could not push step_300 (and 1 more): step 300 "
                                              "is older than step 1701234567")
    assert steps(local_lake_url) == [100, 1701234567]

    # The way out it names works: push the first blocked step by hand, rm the stray step,
    # watch with the default regex.
    r = cli("push", str(d / "step_300"), ART, "--step", "300", "--lake", local_lake_url)
    assert r.exit_code == 0, r.output
    r = cli("rm", f"{ART}@v2", "--yes", "--lake", local_lake_url)
    assert r.exit_code == 0, r.output
    r = cli("watch", str(d), ART, "--once", "--settle", "0", "--lake", local_lake_url)
    assert r.exit_code == 0, r.output
    assert steps(local_lake_url) == [100, 300, 400]


def test_a_blocked_checkpoint_warns_once_per_name_while_watching(local_lake_url,
                                                                 tmp_path) -> None:
    d = tmp_path / "ck"
    write(d / "step_900" / "w.bin")
    events: list[Any] = []
    with ckptlake.open(local_lake_url) as lake:
        w = Watcher(lake, d, ART, settle=0, on_event=events.append)
        assert w.poll_once() == 1
        write(d / "step_100" / "w.bin")  # a trainer restarted from scratch into the same DIR
        for _ in range(3):
            assert w.poll_once() == 0
        write(d / "step_200" / "w.bin")
        assert w.poll_once() == 0
    blocked = [e for e in events if e.kind == "blocked"]
    assert [e.name for e in blocked] == ["step_100", "step_200"]
    assert blocked[0].error is not None and blocked[0].error.exit_code == 6
    assert "watch into a new artifact" in blocked[0].message


def test_keep_local_keeps_the_newest_real_checkpoints_not_a_stray_numbered_file(
        local_lake_url, tmp_path) -> None:
    """With a step regex that takes any number, the TensorBoard file was the newest "checkpoint"
    in the lake and --keep-local 1 deleted step_100 and step_200 to keep it."""
    d = tmp_path / "ck"
    for step in (100, 200, 300):
        write(d / f"step_{step}" / "w.bin", str(step).encode())
    write(d / TFEVENTS, b"tb")
    write(d / "train.log.1", b"log")
    events: list[Any] = []
    with ckptlake.open(local_lake_url) as lake:
        w = Watcher(lake, d, ART, step_regex=OLD_DEFAULT, settle=0, keep_local=2,
                    on_event=events.append)
        assert w.poll_once() == 5
    assert steps(local_lake_url) == [1, 100, 200, 300, 1701234567]
    assert sorted(p.name for p in d.iterdir()) == [TFEVENTS, "step_200", "step_300",
                                                   "train.log.1"]
    assert [e.name for e in events if e.kind == "pruned"] == ["step_100"]
