"""Pull placement through what the destination already holds (review of fd39596): absolute
link targets resolved as the kernel reads them, two paths of the version that a directory
symlink makes one, and a directory symlink that a forced pull of the next version replaces."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ckptlake.errors import Conflict, UnsafeManifest
from ckptlake.lake import Lake
from test_sources_fixes import _lake, _tree  # the same helpers: a memory lake, DEST as a dict


# ---- an absolute target already in DEST is not normalized before it is resolved ----------

def test_an_absolute_dest_link_with_dotdot_after_a_dir_link_is_resolved_as_the_kernel_does(
        tmp_path: Path) -> None:
    lake = _lake()
    src = tmp_path / "s"
    src.mkdir()
    os.symlink("z", src / "V")  # dangling at push: DEST's z decides where it leads
    lake.push(src, "t")
    (tmp_path / "outside" / "deep").mkdir(parents=True)
    (tmp_path / "outside" / "secret").write_text("S")
    dest = tmp_path / "d2"
    dest.mkdir()
    os.symlink(tmp_path / "outside" / "deep", dest / "s")
    os.symlink(f"{dest}/s/../secret", dest / "z")  # the kernel: outside/secret
    before = _tree(dest)
    with pytest.raises(UnsafeManifest, match="outside"):
        lake.pull("t", dest)
    assert _tree(dest) == before
    # the same spelling through a real directory of DEST stays inside: pulled
    os.unlink(dest / "s")
    (dest / "s").mkdir()
    (dest / "secret").write_text("in")
    lake.pull("t", dest)
    assert (dest / "V").read_text() == "in"


# ---- two paths of the version on one place ------------------------------------------------

def _coll(tmp_path: Path) -> Lake:
    lake = _lake()
    src = tmp_path / "s"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    (src / "a" / "f").write_text("A")
    (src / "b" / "f").write_text("B")
    os.symlink("a/f", src / "L")
    lake.push(src, "coll")
    return lake


def test_a_dest_dir_link_that_makes_two_version_files_one_is_a_conflict(
        tmp_path: Path) -> None:
    lake = _coll(tmp_path)
    dest = tmp_path / "d"
    (dest / "b").mkdir(parents=True)
    (dest / "b" / "f").write_text("B")
    os.symlink("b", dest / "a")
    before = _tree(dest)
    for force in (True, False):  # forced: a/f overwrote b/f ("2 B reused"), silently
        with pytest.raises(Conflict) as info:
            lake.pull("coll", dest, force=force)
        message = info.value.message
        assert "a/f" in message and "b/f" in message and str(dest / "a") in message
        assert _tree(dest) == before
    os.unlink(dest / "b" / "f")  # unforced: a/f placed, then 'b/f appeared during the pull'
    before = _tree(dest)
    with pytest.raises(Conflict, match="a/f"):
        lake.pull("coll", dest)
    assert _tree(dest) == before


def test_a_version_file_landing_on_a_version_directory_is_a_conflict(tmp_path: Path) -> None:
    lake = _lake()
    src = tmp_path / "s"
    (src / "a").mkdir(parents=True)
    (src / "b" / "x").mkdir(parents=True)
    (src / "a" / "x").write_text("file")
    (src / "b" / "x" / "y").write_text("below")
    lake.push(src, "fd")
    dest = tmp_path / "d"
    (dest / "b").mkdir(parents=True)
    os.symlink("b", dest / "a")
    before = _tree(dest)
    with pytest.raises(Conflict, match="b/x"):
        lake.pull("fd", dest)
    assert _tree(dest) == before


# ---- a directory symlink a version left, and the next version's links -----------------

def _v1_v2(tmp_path: Path, model2: str) -> Lake:
    lake = _lake()
    v1 = tmp_path / "v1"
    (v1 / "step1").mkdir(parents=True)
    (v1 / "step1" / "model").write_text("one")
    os.symlink("step1", v1 / "ckpt")
    lake.push(v1, "run")
    v2 = tmp_path / "v2"
    (v2 / "ckpt").mkdir(parents=True)
    (v2 / "ckpt" / "model").write_text(model2)
    os.symlink("model", v2 / "ckpt" / "latest")
    lake.push(v2, "run")
    return lake


def test_a_forced_pull_places_links_through_a_dir_link_that_names_the_same(
        tmp_path: Path) -> None:
    lake = _v1_v2(tmp_path, "two")
    dest = tmp_path / "d"
    lake.pull("run@v1", dest)
    with pytest.raises(Conflict, match="different files"):  # model differs: --force's
        lake.pull("run@v2", dest)
    lake.pull("run@v2", dest, force=True)
    assert (dest / "ckpt" / "model").read_text() == "two"
    assert (dest / "ckpt" / "latest").read_text() == "two"


def test_a_link_through_a_dir_link_that_names_the_same_needs_no_force(tmp_path: Path) -> None:
    lake = _v1_v2(tmp_path, "one")
    dest = tmp_path / "d"
    lake.pull("run@v1", dest)
    lake.pull("run@v2", dest)
    assert os.readlink(dest / "ckpt" / "latest") == "model"
    assert (dest / "ckpt" / "latest").read_text() == "one"
