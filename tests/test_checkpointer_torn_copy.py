"""A Checkpointer's copy snapshot (snapshot="copy", and "auto" until it has learned the writer)
of a file the writer rewrites in place while it is copied holds old and new bytes that the
source never held at once; push checked only the copy, which nobody changes, and committed it.
A file deleted between the scan and the copy raised a bare FileNotFoundError.  Both are now
SourceChanged from save(), and nothing is committed."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import ckptlake
from ckptlake import checkpointer as ck_mod
from ckptlake.errors import NotFound, SourceChanged


def _src(tmp_path: Path) -> Path:
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "model.bin").write_bytes(b"A" * 300_000)
    (src / "b.bin").write_bytes(b"b" * 1000)
    return src


@pytest.mark.parametrize("snapshot", ["copy", "auto"])
def test_a_file_rewritten_while_copied_fails_the_save(tmp_path: Path, snapshot: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    src = _src(tmp_path)
    real = ck_mod._copy_file

    def copy_then_rewrite(a: str, b: str, *args: Any, **kw: Any) -> Any:
        out = real(a, b, *args, **kw)
        if a.endswith("model.bin"):
            with open(a, "r+b") as f:  # in place: same inode, same size
                f.write(b"B" * 150_000)
        return out

    monkeypatch.setattr(ck_mod, "_copy_file", copy_then_rewrite)
    with ckptlake.open(f"file://{tmp_path / 'lake'}") as lake:
        with lake.checkpointer("c/t", snapshot=snapshot) as ck:
            with pytest.raises(SourceChanged, match="model.bin changed"):
                ck.save(src, step=1)
        with pytest.raises(NotFound):
            lake.versions("c/t")


def test_a_file_deleted_before_its_copy_fails_the_save(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    src = _src(tmp_path)
    real = ck_mod._copy_file

    def delete_first(a: str, b: str, *args: Any, **kw: Any) -> Any:
        if a.endswith("b.bin"):
            os.unlink(a)
        return real(a, b, *args, **kw)

    monkeypatch.setattr(ck_mod, "_copy_file", delete_first)
    with ckptlake.open(f"file://{tmp_path / 'lake'}") as lake:
        with lake.checkpointer("c/d", snapshot="copy") as ck:
            with pytest.raises(SourceChanged, match="b.bin disappeared"):
                ck.save(src, step=1)
