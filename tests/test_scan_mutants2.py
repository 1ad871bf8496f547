"""What a push takes from SOURCE (core/scan.py `scan`) and what `watch --keep-local` deletes of a
pushed checkpoint (`remove_pushed`): checks that had no test, each pinning one line whose loss
would cost a user data, a leak or a version a pull refuses."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
import ckptlake.core.scan
from ckptlake.cli.app import app
from ckptlake.core.scan import remove_pushed, scan
from ckptlake.core.scan import scan as real_scan
from ckptlake.errors import UsageError
from ckptlake.watch import Watcher


def _outside(tmp_path: Path) -> Path:
    target = tmp_path / "outside"
    target.mkdir()
    (target / "keep.bin").write_bytes(b"k")
    return target


# ---- remove_pushed: a symlink to a directory is removed as a link, never followed ---------

def test_remove_pushed_removes_a_dir_symlink_not_what_it_points_at(tmp_path: Path) -> None:
    """A checkpoint holding a link to a directory elsewhere (a dataset, a shared cache): pruning
    it with --exclude must unlink the link, not recurse through it and delete the user's files
    outside the checkpoint."""
    target = _outside(tmp_path)
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "m").write_bytes(b"m")
    (ck / "n.local").write_text("notes")
    os.symlink(target, ck / "link")
    assert remove_pushed(ck, ("*.local",)) == 1
    assert (target / "keep.bin").read_bytes() == b"k"
    assert not os.path.lexists(ck / "link") and not (ck / "m").exists()
    assert (ck / "n.local").read_text() == "notes"


def test_watch_keep_local_prunes_a_dir_symlink_as_a_link(tmp_path: Path) -> None:
    """The same through `watch --keep-local 1 --exclude '*.local' --follow-symlinks`: the
    pushed step_100 is pruned, the directory its link pointed at keeps its files."""
    target = _outside(tmp_path)
    root = tmp_path / "ck"
    for step in (100, 200):
        d = root / f"step_{step}"
        d.mkdir(parents=True)
        (d / "m.bin").write_bytes(b"m%d" % step)
        (d / "n.local").write_text(f"notes {step}")
    os.symlink(target, root / "step_100" / "link")
    events: list[Any] = []
    with ckptlake.open(f"file://{tmp_path / 'lake'}") as lake:
        w = Watcher(lake, root, "w/link", settle=0, keep_local=1, exclude=("*.local",),
                    follow_symlinks=True, on_event=events.append)
        assert w.poll_once() == 2
    assert (target / "keep.bin").read_bytes() == b"k"
    assert sorted(p.name for p in (root / "step_100").iterdir()) == ["n.local"]
    assert [e.kind for e in events].count("pruned") == 1, events
    assert not [e for e in events if e.kind == "failed"], events


# ---- scan: `--exclude name/` matches a symlink to a directory ------------------------------

def test_exclude_dir_pattern_matches_a_symlink_to_a_directory(tmp_path: Path) -> None:
    """`--exclude data/` on a source whose `data` is a link to a directory: with
    --follow-symlinks its files (`secret`) must stay out of the lake; without it the push must
    not be refused for a link the user excluded, and no link is stored."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    src = tmp_path / "src"
    src.mkdir()
    (src / "m").write_text("m")
    os.symlink(outside, src / "data")
    tree = scan(src, exclude=("data/",), follow_symlinks=True)
    assert [f.path for f in tree.files] == ["m"]
    assert tree.warnings == []
    tree = scan(src, exclude=("data/",))
    assert [f.path for f in tree.files] == ["m"] and tree.symlinks == []
    assert tree.warnings == []


# ---- scan: a followed symlink into a subdirectory of the lake -------------------------------

def test_scan_refuses_a_followed_symlink_into_a_subdirectory_of_the_lake(tmp_path: Path) -> None:
    """A link to <lake>/chunks, not the lake itself, still stores the lake's objects in every
    version (each push bigger than the last): it must be refused."""
    lake_dir = tmp_path / "lake"
    (lake_dir / "chunks").mkdir(parents=True)
    (lake_dir / "chunks" / "c").write_text("chunk")
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_text("w")
    os.symlink(lake_dir / "chunks", src / "objs")
    with pytest.raises(UsageError, match="leads into the lake"):
        scan(src, follow_symlinks=True, avoid=str(lake_dir))


# ---- scan: a link whose stored target is too long for a pull -------------------------------

def test_scan_refuses_a_link_whose_stored_target_a_pull_would_refuse(tmp_path: Path) -> None:
    """Both real paths (and the link's own absolute text) fit PATH_MAX, yet the target a scan
    stores, relative to the link ('../' * depth + the long path), exceeds MAX_LINK_TARGET: committing it would make a version no pull
    accepts, so the push must be refused up front."""
    src = tmp_path / "s"
    src.mkdir()
    budget = 4096 - len(str(src)) - 40  # room for one real path on this machine
    seg = "b" * 250 + "/"
    m = min(14, budget // len(seg))
    long_dir = src / (seg * m)
    long_dir.mkdir(parents=True)
    (long_dir / "f").write_text("f")
    stored_len = len(seg * m) + 1
    k = (4095 - stored_len) // 3 + 20  # '../' * k makes the stored target exceed 4095
    assert len(str(src)) + 2 * k + 10 < 4096
    link_dir = src / ("a/" * k)
    link_dir.mkdir(parents=True)
    # absolute: the kernel itself refuses a link text over 4095 bytes
    os.symlink(long_dir / "f", link_dir / "lnk")
    assert 3 * k + stored_len > 4095
    with pytest.raises(UsageError, match="a pull would refuse"):
        scan(src)


# ---- remove_pushed: an interrupted pull's staging directory is kept -------------------------

def test_remove_pushed_keeps_a_pull_staging_directory(tmp_path: Path) -> None:
    """A pull interrupted into the checkpoint's directory left its staging dir (with its
    lock): a push never took it, so pruning must not delete it (the pull resumes from it)."""
    ck = tmp_path / "ck"
    staging = ck / ".ckptlake-pull-x"
    staging.mkdir(parents=True)
    (staging / ".lock").write_text("")
    (staging / "part").write_bytes(b"p")
    (ck / "m").write_bytes(b"m")
    (ck / "n.local").write_text("n")
    assert remove_pushed(ck, ("*.local",)) == 2
    assert (staging / ".lock").is_file() and (staging / "part").read_bytes() == b"p"
    assert not (ck / "m").exists() and (ck / "n.local").exists()


# ---- scan: every exclude pattern is tried, not only the first that matches ------------------

def test_an_exclude_shadowed_by_an_earlier_one_is_no_warning(tmp_path: Path) -> None:
    """`--exclude '*.tmp' --exclude a.tmp`: both matched a.tmp; warning that `a.tmp` matched
    nothing would send the user hunting for a typo that is not there."""
    src = tmp_path / "s"
    src.mkdir()
    (src / "a.tmp").write_text("t")
    (src / "m").write_text("m")
    tree = scan(src, exclude=("*.tmp", "a.tmp"))
    assert [f.path for f in tree.files] == ["m"]
    assert tree.warnings == []


# ---- remove_pushed: nothing kept, the checkpoint directory itself goes -----------------------

def test_remove_pushed_removes_the_directory_when_nothing_was_kept(tmp_path: Path) -> None:
    """An --exclude that matched nothing in this checkpoint: pruning removes it entirely, not
    an empty step_N directory the next watch pass takes for a checkpoint."""
    d = tmp_path / "step_100"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "a.bin").write_bytes(b"a")
    (d / "m").write_bytes(b"m")
    assert remove_pushed(d, ("*.nope",)) == 0
    assert not os.path.lexists(d)


# ---- push: a source file replaced by another regular file between scan and read -------------

def test_a_file_replaced_by_another_file_after_the_scan_says_replaced(tmp_path: Path,
                                                                      monkeypatch: Any) -> None:
    """The scanned a.bin is renamed over by another regular file (a trainer's atomic save) before
    it is read: the push must fail saying it was replaced, before reading the new bytes."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"A" * 1000)
    other = tmp_path / "other.bin"

    def scan_then_replace(*a: Any, **k: Any) -> Any:
        tree = real_scan(*a, **k)
        other.write_bytes(b"B" * 1000)
        os.replace(other, src / "a.bin")
        return tree

    monkeypatch.setattr(ckptlake.core.scan, "scan", scan_then_replace)
    lake_dir = tmp_path / "lake"
    r = CliRunner().invoke(app, ["push", str(src), "p/a", "--lake", f"file://{lake_dir}"],
                           catch_exceptions=False)
    assert r.exit_code == 6, (r.exit_code, r.stdout, r.stderr)
    assert "a.bin was replaced" in r.stderr and "nothing was committed" in r.stderr, r.stderr
    assert sorted(lake_dir.glob("artifacts/**/@v/*.json")) == []
