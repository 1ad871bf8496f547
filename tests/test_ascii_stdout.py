"""A stdout that cannot encode every character (PYTHONIOENCODING=ascii, a C locale without
UTF-8 mode) failed `ls` of a version with an accented file name, and `lineage`'s tree glyphs,
with exit 1 and no output at all."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _ckptlake(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ckptlake", *args], capture_output=True,
                          cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHONIOENCODING": "ascii", "PYTHONUTF8": "0",
                               "HOME": str(cwd / "home")})


def test_an_ascii_stdout_gets_escapes_not_a_failure(tmp_path: Path) -> None:
    (tmp_path / "modèle_é.txt").write_bytes(b"x")
    lake = str(tmp_path / "lake")
    assert _ckptlake("push", "modèle_é.txt", "uni/base", "--lake", lake,
                     cwd=tmp_path).returncode == 0
    assert _ckptlake("push", "modèle_é.txt", "uni/child", "--parent", "uni/base@v1",
                     "--lake", lake, cwd=tmp_path).returncode == 0
    r = _ckptlake("ls", "uni/base@latest", "--lake", lake, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert b"mod\\xe8le_\\xe9.txt" in r.stdout
    r = _ckptlake("lineage", "uni/base", "--down", "--lake", lake, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert b"uni/child@v1" in r.stdout and r.stdout.isascii()
