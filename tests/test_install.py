"""From a fresh clone to a working `ckptlake` on PATH with the README's install lines.

The lines are read from README.md (the block after `<!-- install: ... -->`) and run as written,
with HOME in a temporary directory, in a copy of the checkout (a build writes `build/` and
`*.egg-info` beside the sources; the real checkout stays clean).  pip installs from the package
indexes it is configured with.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_readme import README, blocks

ROOT = Path(__file__).parent.parent


def clone(tmp_path: Path) -> Path:
    """What a clone holds that an install reads (not tests, bench, .venv or build output)."""
    dest = tmp_path / "ckptlake"  # a clone in a folder named like the package (issue 17)
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "ckptlake", dest / "ckptlake",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def test_the_readme_install_lines_put_ckptlake_on_path(tmp_path: Path) -> None:
    install = [b for b in blocks(README.read_text()) if b.marker == "install"]
    assert len(install) == 1
    home = tmp_path / "home"
    home.mkdir()
    source = clone(tmp_path)
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("VIRTUAL_ENV", None)
    r = subprocess.run(["bash", "-euc", install[0].text], cwd=source, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    path = os.pathsep.join([str(home / ".local" / "bin"), env.get("PATH", "")])
    found = shutil.which("ckptlake", path=path)
    assert found == str(home / ".local" / "bin" / "ckptlake")
    env["PATH"] = path
    version = subprocess.run(["ckptlake", "--version"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("ckptlake "), version.stderr
    lake = tmp_path / "lake"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("hello\n")
    pushed = subprocess.run(["ckptlake", "push", str(tmp_path / "src"), "a/b", "--lake",
                             str(lake), "--quiet"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert pushed.returncode == 0, pushed.stderr
    listed = subprocess.run(["ckptlake", "ls", "--lake", str(lake)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "a/b" in listed.stdout, listed.stderr
    # Python from the clone's parent directory, where the folder `ckptlake/` of the clone
    # could pass for the package (a namespace package): the installed package wins.
    python = home / ".venvs" / "ckptlake" / "bin" / "python"
    imported = subprocess.run([str(python), "-c", "import ckptlake; print(ckptlake.open)"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0 and "function open" in imported.stdout, imported.stderr


def test_import_from_the_clones_parent_directory(tmp_path: Path) -> None:
    """The test venv's editable install (scripts/test.sh, scripts/demo.sh) is a path entry, not
    an import hook: a folder named `ckptlake` in the current directory (the clone, seen from
    its parent) cannot shadow it as a namespace package."""
    (tmp_path / "ckptlake").mkdir()
    (tmp_path / "ckptlake" / "README.md").write_text("a clone\n")
    r = subprocess.run([sys.executable, "-c", "import ckptlake; print(ckptlake.open)"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "function open" in r.stdout, r.stderr


@pytest.mark.parametrize("tool, argv", [("pipx", ["pipx", "install", "."]),
                                        ("uv", ["uv", "tool", "install", "."])])
def test_pipx_and_uv_lines(tool: str, argv: list[str], tmp_path: Path) -> None:
    """The README's one-command installs, where the tool is installed."""
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    readme = README.read_text()
    assert " ".join(argv) in readme
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home), "PIPX_HOME": str(home / "pipx"),
           "PIPX_BIN_DIR": str(home / ".local" / "bin"), "UV_TOOL_DIR": str(home / "uv"),
           "UV_TOOL_BIN_DIR": str(home / ".local" / "bin"), "XDG_CACHE_HOME": str(tmp_path)}
    r = subprocess.run(argv, cwd=clone(tmp_path), env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (home / ".local" / "bin" / "ckptlake").exists()
