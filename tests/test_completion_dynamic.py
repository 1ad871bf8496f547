"""Completion from the lake: `ckptlake __complete` (names, aliases, @vN, @step=N, the paths
in a version; cache; time box), and the bash script driving it -- through its completion function and through a real
interactive bash whose readline gets a TAB on a pseudo-terminal.  zsh and fish run the same
way when installed (scripts/test.sh installs them best-effort), else those tests skip."""
from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from ckptlake.cli import complete
from ckptlake.lake import Lake
from ckptlake.store import open_store

ROOT = Path(__file__).resolve().parent.parent
COMPLETIONS = ROOT / "completions"


@pytest.fixture
def lake_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two artifacts with aliases and steps, and one nested under a directory level."""
    root = tmp_path / "lake"
    lake = Lake(open_store("file://" + str(root)))
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w" * 100)
    for artifact, steps in (("gpt2-small", (100, 200, 300)), ("bert-base", (5,)),
                            ("runs/exp1/ckpt", (1,))):
        for step in steps:
            (src / "w.bin").write_bytes(os.urandom(50))
            lake.push(src, artifact, step=step)
    lake.alias("gpt2-small@v2", "best")
    lake.alias("gpt2-small@v3", "prod")
    lake.close()
    monkeypatch.setenv("CKPTLAKE_LAKE", "file://" + str(root))
    return root


@pytest.fixture
def files_lake(lake_dir: Path, tmp_path: Path) -> Path:
    """`art`: v1 with a directory level, an empty directory and a symlink; v2 adds new.txt."""
    src = tmp_path / "art-src"
    (src / "tokenizer" / "sub").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "config.json").write_text("{}")
    (src / "tokenizer" / "vocab.json").write_text("{}")
    (src / "tokenizer" / "sub" / "x.txt").write_text("x")
    (src / "link").symlink_to("config.json")
    lake = Lake(open_store("file://" + str(lake_dir)))
    lake.push(src, "art")
    (src / "new.txt").write_text("new")
    lake.push(src, "art")
    lake.close()
    return lake_dir


# ---- the Python side -------------------------------------------------------------------------

def test_names_levels_and_selectors(lake_dir: Path) -> None:
    c = complete.candidates
    assert c("ref", "gpt", ["ckptlake", "pull", "gpt"]) == ["gpt2-small"]
    assert c("ref", "", []) == ["bert-base", "gpt2-small", "runs/"]
    assert c("artifact", "runs/", []) == ["runs/exp1/"]
    assert c("artifact", "runs/exp1/", []) == ["runs/exp1/ckpt"]
    assert c("ref", "gpt2-small@", []) == [
        "gpt2-small@latest", "gpt2-small@best", "gpt2-small@prod", "gpt2-small@v3",
        "gpt2-small@v2", "gpt2-small@v1", "gpt2-small@step=300", "gpt2-small@step=200",
        "gpt2-small@step=100"]
    assert c("ref", "gpt2-small@step=2", []) == ["gpt2-small@step=200"]
    assert c("ref", "gpt2-small@p", []) == ["gpt2-small@prod"]
    assert c("artifact", "gpt2-small@", []) == []  # an ARTIFACT argument takes no selector
    assert c("ref", "nope@", []) == ["nope@latest"]
    assert c("ref", "bad name@", []) == []  # never an error at a TAB


def test_lake_options_come_from_the_command_line(lake_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CKPTLAKE_LAKE")
    url = "file://" + str(lake_dir)
    assert complete.lake_options(["ckptlake", "ls", "--lake", url, "x"]) == {"lake": url}
    assert complete.lake_options(["ckptlake", "ls", "--lake", "=", url]) == {"lake": url}
    assert complete.lake_options(["ckptlake", "ls", f"--lake={url}", "--region", "r"]) == \
        {"lake": url, "region": "r"}
    assert complete.lake_options(["ckptlake", "ls", "-l"]) == {}  # value not typed yet
    assert complete.candidates("ref", "ber", ["ckptlake", "pull", "-l", url, "ber"]) == \
        ["bert-base"]
    other = tmp_path / "other"
    Lake(open_store("file://" + str(other))).close()
    assert complete.candidates("ref", "ber", ["ckptlake", "pull", "--lake", str(other)]) == []


def test_answers_are_cached_per_lake(lake_dir: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert complete.candidates("ref", "gpt2-small@b", []) == ["gpt2-small@best"]
    cache_files = list((Path(os.environ["XDG_CACHE_HOME"]) / "ckptlake").glob("complete-*"))
    assert cache_files
    lake_dir.rename(tmp_path / "moved")  # the lake is gone: the fresh cache answers
    assert complete.candidates("ref", "gpt2-small@b", []) == ["gpt2-small@best"]
    now = time.time()
    monkeypatch.setattr(complete.time, "time", lambda: now + complete.CACHE_TTL + 1)
    (tmp_path / "moved").rename(lake_dir)
    Lake(open_store("file://" + str(lake_dir))).alias("gpt2-small@v1", "baseline")
    assert complete.candidates("ref", "gpt2-small@b", []) == \
        ["gpt2-small@baseline", "gpt2-small@best"]  # stale: asked the lake again


class _Stuck:
    """A store whose every request hangs until released (a lake that does not answer)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def get(self, key: str) -> bytes:
        self.release.wait()
        raise OSError("released")

    def list_prefixes(self, prefix: str) -> Iterator[str]:
        self.release.wait()
        return iter(())

    def list(self, prefix: str) -> Iterator[Any]:
        self.release.wait()
        return iter(())


def test_a_slow_lake_gets_the_stale_cache_or_nothing(lake_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert complete.candidates("ref", "gpt2-small@p", []) == ["gpt2-small@prod"]
    now = time.time()
    monkeypatch.setattr(complete.time, "time", lambda: now + complete.CACHE_TTL + 1)
    stuck = _Stuck()
    real = complete._opener
    monkeypatch.setattr(complete, "_opener",
                        lambda options: (real(options)[0], lambda: stuck))
    try:
        # the stale answer, not a hang (nothing asked of the lake completes)
        assert complete.candidates("ref", "gpt2-small@p", [], budget=0.3) == \
            ["gpt2-small@prod"]
        assert complete.candidates("ref", "bert-base@", [], budget=0.3) == []  # never cached
    finally:
        stuck.release.set()


def test_paths_in_a_version_one_level_at_a_time(files_lake: Path) -> None:
    def c(word: str, ref: str = "art@v1") -> list[str]:
        return complete.candidates("path", word, ["ckptlake", "cat", ref], ref=ref)

    # directories end in '/', files and symlinks do not; an empty directory is a directory
    assert c("") == ["config.json", "empty/", "link", "tokenizer/"]
    assert c("tok") == ["tokenizer/"]
    assert c("tokenizer/") == ["tokenizer/sub/", "tokenizer/vocab.json"]
    assert c("tokenizer/v") == ["tokenizer/vocab.json"]
    assert c("tokenizer/sub/") == ["tokenizer/sub/x.txt"]
    assert c("li") == ["link"]
    assert c("empty/") == [] and c("nothing") == [] and c("config.json/") == []
    assert c("--include=tok") == ["--include=tokenizer/"]  # --opt=VALUE keeps its option
    # the ref resolves as the commands resolve it: latest (also without '@') is v2
    assert c("n", "art@v2") == c("n", "art") == c("n", "art@latest") == ["new.txt"]
    assert c("n") == []
    # a ref that does not resolve, or is not a ref: nothing, never an error
    for ref in ("art@v9", "nope@v1", "nope", "art@nosuchalias", "bad name@v1", ""):
        assert c("", ref) == [], ref


def test_paths_are_cached_per_version(files_lake: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real = complete._opener

    def counting(options: dict[str, str]) -> tuple[str, Any]:
        key, opener = real(options)

        def counted() -> Any:
            opened.append(key)
            return opener()

        return key, counted

    monkeypatch.setattr(complete, "_opener", counting)
    c = complete.candidates
    assert c("path", "tok", [], ref="art@v1") == ["tokenizer/"]
    assert c("path", "n", [], ref="art") == ["new.txt"]
    assert len(opened) == 2
    files_lake.rename(tmp_path / "moved")  # the lake is gone: the cache answers, no store opened
    assert c("path", "tok", [], ref="art@v1") == ["tokenizer/"]
    assert c("path", "n", [], ref="art") == ["new.txt"]
    assert len(opened) == 2
    # later than CACHE_TTL: a version's paths are still fresh (it never changes); what `art`
    # (latest) resolves to is asked again
    now = time.time()
    monkeypatch.setattr(complete.time, "time", lambda: now + complete.CACHE_TTL + 1)
    assert c("path", "tok", [], ref="art@v1") == ["tokenizer/"]
    assert len(opened) == 2
    (tmp_path / "moved").rename(files_lake)
    src = tmp_path / "v3"
    src.mkdir()
    (src / "newer.txt").write_text("3")
    Lake(open_store("file://" + str(files_lake))).push(src, "art")
    assert c("path", "n", [], ref="art") == ["newer.txt"]
    assert len(opened) == 3


def test_paths_from_a_slow_lake_are_the_cached_ones_or_none(
        files_lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert complete.candidates("path", "tok", [], ref="art") == ["tokenizer/"]
    now = time.time()
    monkeypatch.setattr(complete.time, "time", lambda: now + complete.VERSION_TTL + 1)
    stuck = _Stuck()
    real = complete._opener
    monkeypatch.setattr(complete, "_opener",
                        lambda options: (real(options)[0], lambda: stuck))
    try:
        assert complete.candidates("path", "tok", [], ref="art", budget=0.3) == \
            ["tokenizer/"]  # stale, not a hang
        assert complete.candidates("path", "c", [], ref="art", budget=0.3) == \
            ["config.json"]  # the same level, cached
        assert complete.candidates("path", "tokenizer/", [], ref="art", budget=0.3) == []
        assert complete.candidates("path", "tok", [], ref="art@v1", budget=0.3) == []
    finally:
        stuck.release.set()


def test_the_entry_point_prints_one_candidate_per_line(lake_dir: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "ckptlake", "__complete", "ref", "gpt2-small@v",
                        "--", "ckptlake", "pull"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout == "gpt2-small@v3\ngpt2-small@v2\ngpt2-small@v1\n"
    r = subprocess.run([sys.executable, "-m", "ckptlake", "__complete", "bogus"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""


def test_the_entry_point_completes_paths(files_lake: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "ckptlake", "__complete", "path", "tokenizer/",
                        "art@v1", "--", "ckptlake", "cat", "art@v1"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout == "tokenizer/sub/\ntokenizer/vocab.json\n"
    r = subprocess.run([sys.executable, "-m", "ckptlake", "__complete", "path", "tok"],
                       capture_output=True, text=True)  # no REF
    assert r.returncode == 2 and r.stdout == ""


# ---- bash --------------------------------------------------------------------------------------

@pytest.fixture
def shell_env(lake_dir: Path, tmp_path: Path) -> dict[str, str]:
    """PATH with a `ckptlake` that runs this checkout (the venv may have no console script)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "ckptlake"
    exe.write_text(f"#!/bin/sh\nexec '{sys.executable}' -m ckptlake \"$@\"\n")
    exe.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "TERM": "dumb",
            "INPUTRC": "/dev/null"}


def _bash_function(line: str, env: dict[str, str]) -> list[str]:
    """The completion function, with the variables bash sets for `line` (cursor at its end;
    COMP_WORDS split at '@' and '=' as bash's default COMP_WORDBREAKS does)."""
    script = (f"source '{COMPLETIONS / 'ckptlake.bash'}'\n"
              "COMP_LINE=\"$1\"; COMP_POINT=${#1}\n"
              "w=\"${1//=/ = }\"; w=\"${w//@/ @ }\"; read -ra COMP_WORDS <<< \"$w\"\n"
              "[[ \"$1\" == *' ' ]] && COMP_WORDS+=('')\n"
              "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
              "_ckptlake\n"
              "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    r = subprocess.run(["bash", "-c", script, "bash", line], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0, r.stderr
    return [x for x in r.stdout.splitlines() if x]


def test_bash_function_completes_refs_in_their_positions(shell_env: dict[str, str]) -> None:
    f = _bash_function
    assert f("ckptlake pull gpt", shell_env) == ["gpt2-small"]
    # bash replaces what follows the last '=' (COMP_WORDBREAKS), but readline keeps an '@' in
    # the word it replaces: candidates are cut to that (to "best" they turned "@b" into "b")
    assert f("ckptlake pull gpt2-small@b", shell_env) == ["@best"]
    assert f("ckptlake pull ru", shell_env) == ["runs/"]
    assert f("ckptlake pull gpt2-small@step=", shell_env) == ["300", "200", "100"]
    assert f("ckptlake pull gpt2-small@step=1", shell_env) == ["100"]
    # after a REF with '=', DEST is a path again, not a ref
    assert f("ckptlake pull gpt2-small@step=1 gpt", shell_env) == []
    assert f("ckptlake diff gpt2-small@v1 bert", shell_env) == ["bert-base"]
    assert f("ckptlake push ./src gp", shell_env) == ["gpt2-small"]  # ARTIFACT, 2nd
    assert f("ckptlake ls --json ber", shell_env) == ["bert-base"]
    assert f("ckptlake du gpt2-small@", shell_env) == []  # PREFIX: names only
    assert f("ckptlake gc gp", shell_env) == []


def test_bash_function_completes_paths_in_a_version(files_lake: Path,
                                                    shell_env: dict[str, str]) -> None:
    f = _bash_function
    assert f("ckptlake cat art@v1 tok", shell_env) == ["tokenizer/"]
    assert f("ckptlake cat art@v1 ", shell_env) == ["config.json", "empty/", "link",
                                                    "tokenizer/"]
    assert f("ckptlake cat art@v1 config.json ", shell_env) == []  # cat takes one PATH
    assert f("ckptlake ls art tokenizer/", shell_env) == ["tokenizer/sub/",
                                                          "tokenizer/vocab.json"]
    assert f("ckptlake ls --json art@v2 n", shell_env) == ["new.txt"]
    assert f("ckptlake pull art@v1 ./dest tokenizer/v", shell_env) == ["tokenizer/vocab.json"]
    assert f("ckptlake pull art@v1 ./dest config.json tok", shell_env) == ["tokenizer/"]
    assert f("ckptlake pull art@v2 ./dest --include n", shell_env) == ["new.txt"]
    assert f("ckptlake pull art@v2 ./dest --exclude=n", shell_env) == ["new.txt"]
    assert f("ckptlake pull -l x --include n", shell_env) == []  # no REF typed yet


def _controlling_terminal() -> None:
    import fcntl
    import termios

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class _Pty:
    """An interactive shell on a pseudo-terminal: what a user's terminal gives readline."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        import pty

        self.master, slave = pty.openpty()
        # its own session with the pty as controlling terminal: fish exits without one
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     cwd=cwd, start_new_session=True,
                                     preexec_fn=_controlling_terminal)
        os.close(slave)
        self.seen = ""

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, needle: str, timeout: float = 60.0, start: int = 0) -> str:
        """Wait for `needle` in what the terminal showed (from offset `start`)."""
        deadline = time.monotonic() + timeout
        while needle not in self.seen[start:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} never appeared; the terminal shows:\n"
                                     f"{self.seen[-2000:]}")
            ready, _, _ = select.select([self.master], [], [], min(left, 1.0))
            if ready:
                try:
                    self.seen += os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # the shell exited: the needle will never come
                    raise AssertionError(f"{needle!r} never appeared; the shell exited:\n"
                                         f"{self.seen[-2000:]}") from None
        return self.seen

    def close(self) -> None:
        self.proc.kill()  # the shell we started, by its own handle
        self.proc.wait()
        os.close(self.master)


def _interactive(argv: list[str], setup: str, env: dict[str, str], cwd: Path) -> _Pty:
    term = _Pty(argv, env, cwd)
    term.send(setup + "\n")
    term.send("echo READY-\"4\"\"2\"\n")  # bash, zsh and fish alike
    term.expect("READY-42")
    return term


def test_real_bash_tab(shell_env: dict[str, str], tmp_path: Path) -> None:
    term = _interactive(["bash", "--norc", "--noprofile", "-i"],
                        f"PS1='$ '; source '{COMPLETIONS / 'ckptlake.bash'}'", shell_env,
                        tmp_path)
    try:
        term.send("echo ckptlake pull gpt\t")  # `echo ...` is not completed: a baseline
        term.send("\x15")  # ^U: clear the line
        term.send("ckptlake pull gpt\t")
        term.expect("ckptlake pull gpt2-small ")
        start = len(term.seen)
        term.send("\x15ckptlake pull gpt2-small@\t\t")  # twice: list the candidates
        # bash lists the candidates as they replace the word: with the '@' readline keeps
        listed = term.expect("step=100")[start:]
        for c in ("@best", "@prod", "@v3", "@v1", "@latest", "@step=300"):
            assert c in listed.split()
        term.send("\x15ckptlake pull gpt2-small@step=3\t")
        term.expect("gpt2-small@step=300 ")
    finally:
        term.close()


def test_real_bash_tab_completes_paths(files_lake: Path, shell_env: dict[str, str],
                                       tmp_path: Path) -> None:
    term = _interactive(["bash", "--norc", "--noprofile", "-i"],
                        f"PS1='$ '; source '{COMPLETIONS / 'ckptlake.bash'}'", shell_env,
                        tmp_path)
    try:
        # a directory gets no space after it: the next letter continues the path
        term.send("ckptlake cat art@v1 tok\tv\t")
        term.expect("ckptlake cat art@v1 tokenizer/vocab.json ")
    finally:
        term.close()


def test_real_zsh_tab(shell_env: dict[str, str], tmp_path: Path) -> None:
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed (scripts/test.sh installs it best-effort)")
    fpath = tmp_path / "zfunc"
    fpath.mkdir()
    shutil.copy(COMPLETIONS / "_ckptlake", fpath / "_ckptlake")
    term = _interactive(["zsh", "-f", "-i"],
                        f"PS1='$ '; fpath=({fpath} $fpath); autoload -Uz compinit; "
                        "compinit -u -D", shell_env, tmp_path)
    try:
        term.send("ckptlake pull gpt\t")
        term.expect("ckptlake pull gpt2-small")
        term.send("\x15ckptlake pull gpt2-small@pr\t")
        term.expect("gpt2-small@prod")
    finally:
        term.close()


def test_real_zsh_tab_completes_paths(files_lake: Path, shell_env: dict[str, str],
                                      tmp_path: Path) -> None:
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed (scripts/test.sh installs it best-effort)")
    fpath = tmp_path / "zfunc"
    fpath.mkdir()
    shutil.copy(COMPLETIONS / "_ckptlake", fpath / "_ckptlake")
    term = _interactive(["zsh", "-f", "-i"],
                        f"PS1='$ '; fpath=({fpath} $fpath); autoload -Uz compinit; "
                        "compinit -u -D", shell_env, tmp_path)
    try:
        term.send("ckptlake cat art@v1 tok\tv\t")
        term.expect("ckptlake cat art@v1 tokenizer/vocab.json")
        term.send("\x15ckptlake pull art@v2 dest --include n\t")
        term.expect("--include new.txt")
    finally:
        term.close()


def test_real_fish_tab(shell_env: dict[str, str], tmp_path: Path) -> None:
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed (scripts/test.sh installs it best-effort)")
    term = _interactive(["fish", "--no-config", "-i"],
                        f"source '{COMPLETIONS / 'ckptlake.fish'}'", shell_env, tmp_path)
    try:
        term.send("ckptlake pull gpt\t")
        term.expect("gpt2-small")
        term.send("\x15ckptlake pull gpt2-small@pr\t")
        term.expect("gpt2-small@prod")
    finally:
        term.close()


def test_real_fish_tab_completes_paths(files_lake: Path, shell_env: dict[str, str],
                                       tmp_path: Path) -> None:
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed (scripts/test.sh installs it best-effort)")
    term = _interactive(["fish", "--no-config", "-i"],
                        f"source '{COMPLETIONS / 'ckptlake.fish'}'", shell_env, tmp_path)
    try:
        term.send("ckptlake cat art@v1 tok\tv\t")
        term.expect("tokenizer/vocab.json")
    finally:
        term.close()


# ---- fixed values (no lake involved) -----------------------------------------------------------

def _start_shell(shell: str, tmp_path: Path) -> _Pty:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed (scripts/test.sh installs it best-effort)")
    # no `ckptlake` on PATH and no lake: these values come from the script alone
    env = {**os.environ, "HOME": str(tmp_path), "TERM": "dumb", "INPUTRC": "/dev/null"}
    if shell == "bash":
        return _interactive(["bash", "--norc", "--noprofile", "-i"],
                            f"PS1='$ '; source '{COMPLETIONS / 'ckptlake.bash'}'", env, tmp_path)
    if shell == "zsh":
        fpath = tmp_path / "zfunc"
        fpath.mkdir()
        shutil.copy(COMPLETIONS / "_ckptlake", fpath / "_ckptlake")
        return _interactive(["zsh", "-f", "-i"],
                            f"PS1='$ '; fpath=({fpath} $fpath); autoload -Uz compinit; "
                            "compinit -u -D", env, tmp_path)
    return _interactive(["fish", "--no-config", "-i"],
                        f"source '{COMPLETIONS / 'ckptlake.fish'}'", env, tmp_path)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_real_shell_tab_completes_fixed_values(shell: str, tmp_path: Path) -> None:
    """cache's ACTION and the values of lineage --format, du --sort and push --compression,
    --hash and --relation: one TAB completes a unique prefix."""
    term = _start_shell(shell, tmp_path)
    try:
        for typed, value in (("ckptlake cache p", "prune"),
                             ("ckptlake lineage a --format mer", "mermaid"),
                             ("ckptlake lineage a -f do", "dot"),
                             ("ckptlake du --sort ex", "exclusive"),
                             ("ckptlake push src a --compression n", "none"),
                             ("ckptlake push --hash bl", "blake3"),
                             ("ckptlake push --parent p --relation res", "resumed-from")):
            start = len(term.seen)
            term.send(f"\x15{typed}\t")
            term.expect(value, timeout=20.0, start=start)
    finally:
        term.close()


def test_an_empty_manifest_is_offered_as_no_version(lake_dir: Path) -> None:
    """An empty object at @v/N (a PUT cut after its head) is no version: readers skip it and
    the next push takes its number; TAB offered `@v4` that every command then refused."""
    from ckptlake.format import layout

    (lake_dir / layout.version_key("gpt2-small", 4)).write_bytes(b"")
    got = complete.candidates("ref", "gpt2-small@v", [])
    assert "gpt2-small@v4" not in got and "gpt2-small@v3" in got
