"""`watch --keep-local N` with `--exclude`: pruning a pushed checkpoint removes what its push
uploaded, never what --exclude kept out of the lake (a new user's first hour: notes and FIFOs
the README says to --exclude were deleted with the checkpoint)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ckptlake
from ckptlake.watch import Watcher

ART = "w/keep"


def _checkpoint(root: Path, step: int) -> Path:
    d = root / f"step_{step}"
    (d / "sub").mkdir(parents=True)
    (d / "model.bin").write_bytes(b"w%d" % step)
    (d / "sub" / "opt.bin").write_bytes(b"o%d" % step)
    (d / "notes.local").write_text(f"precious {step}")
    (d / "sub" / "cache.local").write_text("kept too")
    (d / "scratch").mkdir()
    (d / "scratch" / "big.bin").write_bytes(b"scratch")
    os.symlink("model.bin", d / "latest.bin")
    return d


def test_pruning_removes_only_what_the_push_took(tmp_path: Path) -> None:
    root = tmp_path / "ck"
    for step in (100, 200, 300):
        _checkpoint(root, step)
    os.mkfifo(root / "step_100" / "pipe")
    events: list[Any] = []
    with ckptlake.open(f"file://{tmp_path / 'lake'}") as lake:
        w = Watcher(lake, root, ART, settle=0, keep_local=1,
                    exclude=("*.local", "scratch/", "pipe"), on_event=events.append)
        assert w.poll_once() == 3
        stored = sorted(f["path"] for f in lake.files(f"{ART}@step=100")["files"])
        assert "notes.local" not in stored and "model.bin" in stored
        left = {str(p.relative_to(root)) for p in root.rglob("*")}
        assert left == {
            "step_100", "step_100/notes.local", "step_100/sub", "step_100/sub/cache.local",
            "step_100/scratch", "step_100/scratch/big.bin", "step_100/pipe",
            "step_200", "step_200/notes.local", "step_200/sub", "step_200/sub/cache.local",
            "step_200/scratch", "step_200/scratch/big.bin",
            "step_300", "step_300/model.bin", "step_300/sub", "step_300/sub/opt.bin",
            "step_300/notes.local", "step_300/sub/cache.local", "step_300/scratch",
            "step_300/scratch/big.bin", "step_300/latest.bin"}, left
        pruned = [e.message for e in events if e.kind == "pruned"]
        assert pruned == [
            "removed what local step_100 pushed, kept 4 entries --exclude left out "
            "(step 100 is in the lake)",
            "removed what local step_200 pushed, kept 3 entries --exclude left out "
            "(step 200 is in the lake)"], pruned
        # what is left is neither pushed again nor pruned again on the next passes
        for _ in range(2):
            assert w.poll_once() == 0
        assert [v.step for v in lake.versions(ART)] == [100, 200, 300]
        assert [e.kind for e in events].count("pruned") == 2
        assert (root / "step_100" / "notes.local").read_text() == "precious 100"


def test_without_exclude_the_whole_checkpoint_goes(tmp_path: Path) -> None:
    root = tmp_path / "ck"
    for step in (100, 200):
        d = root / f"step_{step}"
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "a.bin").write_bytes(b"a")
    target = tmp_path / "outside"
    target.mkdir()
    (target / "keep.bin").write_bytes(b"k")
    os.symlink(target, root / "step_100" / "link")  # a symlink is pruned, never its target
    with ckptlake.open(f"file://{tmp_path / 'lake'}") as lake:
        w = Watcher(lake, root, ART, settle=0, keep_local=1, follow_symlinks=True)
        assert w.poll_once() == 2
    assert sorted(p.name for p in root.iterdir()) == ["step_200"]
    assert (target / "keep.bin").read_bytes() == b"k"


def test_a_restarted_watch_leaves_the_kept_entries_alone(tmp_path: Path) -> None:
    """After a restart, the leftovers of a pruned checkpoint are no checkpoint to push again
    (its step is in the lake) and nothing to prune: they stay, and the watch only notes that those steps are in the lake."""
    root = tmp_path / "ck"
    for step in (100, 200):
        _checkpoint(root, step)
    url = f"file://{tmp_path / 'lake'}"
    with ckptlake.open(url) as lake:
        Watcher(lake, root, ART, settle=0, keep_local=1, exclude=("*.local", "scratch/"),
                ).poll_once()
        assert (root / "step_100" / "notes.local").exists()
        events: list[Any] = []
        again = Watcher(lake, root, ART, settle=0, keep_local=1,
                        exclude=("*.local", "scratch/"), on_event=events.append)
        assert again.poll_once() == 0
        assert [v.step for v in lake.versions(ART)] == [100, 200]
    assert (root / "step_100" / "notes.local").read_text() == "precious 100"
    assert {e.kind for e in events} <= {"known", "skipped"}, events
    assert any(e.kind == "known" and e.step == 100 for e in events), events


def test_what_pruning_left_is_no_duplicate_nor_a_deleted_step_to_restore(tmp_path: Path) -> None:
    """The directory a prune leaves (only excluded files) was taken for a checkpoint again:
    "step 100 was pushed from step_100 already; two checkpoints have that step", and, once gc
    deleted the step, "to restore it, push it by hand" (a push of nothing but the notes)."""
    from ckptlake.policy.retention import RetentionPolicy, Rule

    root = tmp_path / "ck"
    for step in (100, 200):
        _checkpoint(root, step)
    url = f"file://{tmp_path / 'lake'}"
    exclude = ("*.local", "scratch/")
    events: list[Any] = []
    with ckptlake.open(url) as lake:
        w = Watcher(lake, root, ART, settle=0, keep_local=1, exclude=exclude,
                    on_event=events.append)
        assert w.poll_once() == 2
        assert w.poll_once() == 0
        assert [e.kind for e in events] == ["pushed", "pushed", "pruned"], events
        policy = RetentionPolicy(rules=(Rule(match=ART, keep_last=1),), grace_period=0)
        lake.gc(lake.gc_plan(policy))
        assert [v.step for v in lake.versions(ART)] == [200]
        events.clear()
        again = Watcher(lake, root, ART, settle=0, keep_local=1, exclude=exclude,
                        on_event=events.append)
        assert again.poll_once() == 0
        assert [e.kind for e in events if e.kind not in ("known", "skipped")] == [], events
    assert (root / "step_100" / "notes.local").exists()
