"""Bash completion from the lake, with the words bash really makes: COMP_WORDS split at every
COMP_WORDBREAKS character (so `--lake file:///x` is `--lake file : ///x`), and readline
replacing the word from its last break character on, an '@' included (rl_special_prefixes)."""
from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ckptlake.lake import Lake
from ckptlake.store import open_store

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "completions" / "ckptlake.bash"


@pytest.fixture
def lake_url(tmp_path: Path) -> str:
    root = tmp_path / "lake"
    lake = Lake(open_store("file://" + str(root)))
    src = tmp_path / "src"
    src.mkdir()
    for step in (1, 2):
        (src / "w.bin").write_bytes(os.urandom(40))
        lake.push(src, "runs/gpt2", step=step)
    lake.alias("runs/gpt2@v1", "best")
    lake.close()
    return "file://" + str(root)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A `ckptlake` on PATH that runs this checkout, and no lake but the one on the line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "ckptlake"
    exe.write_text(f"#!/bin/sh\nexec '{sys.executable}' -m ckptlake \"$@\"\n")
    exe.chmod(0o755)
    out = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "TERM": "dumb",
           "INPUTRC": "/dev/null"}
    out.pop("CKPTLAKE_LAKE", None)
    return out


def _bash_words(line: str) -> list[str]:
    """COMP_WORDS as bash makes them with its default COMP_WORDBREAKS ('@', '=' and ':' are
    words of their own)."""
    words = [piece for word in line.split() for piece in re.findall(r"[@=:]|[^@=:]+", word)]
    return words + [""] if line.endswith(" ") else words


def _complete(line: str, env: dict[str, str], *, wordbreaks: str | None = None) -> list[str]:
    words = _bash_words(line) if wordbreaks is None else line.split()
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    script = (("COMP_WORDBREAKS=\"$2\"\n" if wordbreaks is not None else "")
              + f"source '{SCRIPT}'\n"
              "COMP_LINE=\"$1\"; COMP_POINT=${#1}\n"
              f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
              "_ckptlake\n"
              "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    r = subprocess.run(["bash", "-c", script, "bash", line, wordbreaks or ""], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return [x for x in r.stdout.splitlines() if x]


def test_a_lake_url_with_a_colon_is_the_lake_completed_from(lake_url: str,
                                                            env: dict[str, str]) -> None:
    assert _complete(f"ckptlake ls --lake {lake_url} ru", env) == ["runs/"]
    assert _complete(f"ckptlake ls --lake {lake_url} runs/", env) == ["runs/gpt2"]
    assert _complete(f"ckptlake ls --lake={lake_url} runs/", env) == ["runs/gpt2"]
    assert _complete(f"ckptlake --lake {lake_url} pull runs/", env) == ["runs/gpt2"]


def test_the_at_sign_stays_in_what_bash_replaces(lake_url: str, env: dict[str, str]) -> None:
    # readline replaces "@be" (the '@' is one of its special prefixes), not "be"
    assert _complete(f"ckptlake ls --lake {lake_url} runs/gpt2@be", env) == ["@best"]
    # after '=', only what follows it
    assert _complete(f"ckptlake ls --lake {lake_url} runs/gpt2@step=", env) == ["2", "1"]
    # without '@' in COMP_WORDBREAKS, bash replaces the whole word
    assert _complete(f"ckptlake ls --lake {lake_url} runs/gpt2@be", env,
                     wordbreaks=" \t\n\"'><=;|&(:") == ["runs/gpt2@best"]


def test_real_bash_tab_keeps_the_at_sign(lake_url: str, env: dict[str, str],
                                         tmp_path: Path) -> None:
    """A TAB in an interactive bash on a pseudo-terminal: what the user's line becomes."""
    import pty

    bash = shutil.which("bash")
    assert bash, "bash is required"
    master, slave = pty.openpty()
    proc = subprocess.Popen([bash, "--norc", "--noprofile", "-i"], stdin=slave, stdout=slave,
                            stderr=slave, env=env, cwd=tmp_path, start_new_session=True)
    os.close(slave)
    seen = ""

    def expect(needle: str, start: int) -> None:
        nonlocal seen
        deadline = time.monotonic() + 60
        while needle not in seen[start:]:
            assert time.monotonic() < deadline, f"{needle!r} never appeared in:\n{seen[-2000:]}"
            if select.select([master], [], [], 1.0)[0]:
                try:
                    seen += os.read(master, 65536).decode(errors="replace")
                except OSError:
                    raise AssertionError(f"the shell exited:\n{seen[-2000:]}") from None

    try:
        os.write(master, f"PS1='$ '; source '{SCRIPT}'; echo READY-\"4\"\"2\"\n".encode())
        expect("READY-42", 0)
        start = len(seen)
        os.write(master, f"ckptlake ls --lake {lake_url} runs/gpt2@be\t".encode())
        # readline moves back over "@be" and writes the candidate: "@best", then a space
        expect("@best ", start)
        os.write(master, b"\x15")  # ^U: the line is never run
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
