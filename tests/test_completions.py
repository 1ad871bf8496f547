"""The committed static completion scripts match the CLI and are valid shell.

Why byte-for-byte: the scripts are generated from the Typer command tree; if someone adds an
option and forgets to regenerate, users' TAB completion silently goes stale.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import typer

from ckptlake.cli import completions
from ckptlake.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
COMPLETIONS = ROOT / "completions"
REGEN = "run python -m ckptlake.cli.completions --write completions/"


@pytest.mark.parametrize("shell", sorted(completions.FILES))
def test_committed_scripts_are_up_to_date(shell: str) -> None:
    path = COMPLETIONS / completions.FILES[shell]
    assert path.exists(), f"{path} is missing: {REGEN}"
    assert path.read_bytes() == completions.render(shell).encode("utf-8"), \
        f"{path.name} is stale: {REGEN}"


def test_generation_is_deterministic(tmp_path: Path) -> None:
    first = {s: completions.render(s) for s in completions.FILES}
    completions.write_all(tmp_path)
    for shell, name in completions.FILES.items():
        assert (tmp_path / name).read_text() == first[shell] == completions.render(shell)


def _long_options() -> dict[str, set[str]]:
    group = typer.main.get_command(app)
    found = {"": {o for p in group.params for o in p.opts if o.startswith("--")}}
    for name, command in group.commands.items():
        found[name] = {o for p in command.params
                       for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}
    return found


@pytest.mark.parametrize("shell", sorted(completions.FILES))
def test_every_command_and_long_option_appears(shell: str) -> None:
    text = (COMPLETIONS / completions.FILES[shell]).read_text()
    options = _long_options()
    assert {"push", "pull", "ls", "alias", "show", "lineage", "diff"} <= set(options) - {""}
    for command, opts in options.items():
        if command:
            assert command in text, (shell, command)
        for opt in opts | {"--help"}:
            token = opt[2:] if shell == "fish" else opt  # fish writes `-l lake`
            assert token in text, (shell, command, opt)
    if shell == "fish":
        for command, opts in options.items():
            if command:
                for opt in opts:
                    assert f"__fish_seen_subcommand_from {command}' -l {opt[2:]}" in text or \
                        f"__fish_seen_subcommand_from {command}' -s " in text


def test_contract_options_are_present() -> None:
    options = _long_options()
    common = {"--lake", "--endpoint-url", "--profile", "--region", "--config", "--json",
              "--quiet", "--debug"}
    assert {"--step", "--metric", "--meta", "--alias", "--exclude", "--follow-symlinks",
            "--chunk-size", "--concurrency"} | common <= options["push"]
    assert {"--force", "--concurrency"} | common <= options["pull"]
    assert common <= options["ls"] and common <= options["alias"]
    assert "--version" in options[""]


def test_bash_syntax() -> None:
    bash = shutil.which("bash")
    assert bash, "bash is required"
    r = subprocess.run([bash, "-n", str(COMPLETIONS / "ckptlake.bash")], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr


def _bash_complete(words: list[str], cwd: Path) -> list[str]:
    """Run the completion function the way bash would for `words` (cursor on the last)."""
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    script = (f"source '{COMPLETIONS / 'ckptlake.bash'}'\n"
              f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
              "_ckptlake\n"
              "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if line]


def test_bash_completes_commands_options_and_paths(tmp_path: Path) -> None:
    (tmp_path / "ckpt_dir").mkdir()
    (tmp_path / "ckpt.bin").write_bytes(b"")
    assert _bash_complete(["ckptlake", "pu"], tmp_path) == ["push", "pull"]
    assert _bash_complete(["ckptlake", "push", "--fol"], tmp_path) == ["--follow-symlinks"]
    assert _bash_complete(["ckptlake", "push", "ck"], tmp_path) == ["ckpt.bin", "ckpt_dir"]
    # ARTIFACT (second positional of push) is not a path
    assert _bash_complete(["ckptlake", "push", "ckpt_dir", "ck"], tmp_path) == []
    # the value of --lake is free-form, and does not count as a positional
    assert _bash_complete(["ckptlake", "push", "--lake", "ck"], tmp_path) == []
    assert _bash_complete(["ckptlake", "pull", "--lake", "x", "a/b", "ckpt_"], tmp_path) == \
        ["ckpt_dir"]
    assert _bash_complete(["ckptlake", "ls", "--config", "ckpt."], tmp_path) == ["ckpt.bin"]
    # the lake and output options also go before the command
    assert _bash_complete(["ckptlake", "--js"], tmp_path) == ["--json"]
    assert _bash_complete(["ckptlake", "--config", "ckpt."], tmp_path) == ["ckpt.bin"]
    assert _bash_complete(["ckptlake", "--lake", "p"], tmp_path) == []
    assert _bash_complete(["ckptlake", "--json", "pu"], tmp_path) == ["push", "pull"]


@pytest.mark.parametrize("shell,path", [("zsh", "_ckptlake"), ("fish", "ckptlake.fish")])
def test_other_shells_syntax(shell: str, path: str) -> None:
    exe = shutil.which(shell)
    if exe is None:
        pytest.skip(f"{shell} is not installed")
    r = subprocess.run([exe, "-n", str(COMPLETIONS / path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_zsh_script_shape() -> None:
    """Without zsh at hand, at least check the structure compinit relies on."""
    text = (COMPLETIONS / "_ckptlake").read_text()
    assert text.startswith("#compdef ckptlake\n")
    assert text.rstrip().endswith('_ckptlake "$@"')
    for command in ("push", "pull", "ls", "alias"):
        assert f"_ckptlake_{command}() {{" in text
    assert "'1:SOURCE:_files'" in text and "'2:DEST:_files'" in text
    # quotes balance on every line (a stray quote breaks the whole file)
    for line in text.splitlines():
        if not line.startswith("#"):
            assert line.replace("'\\''", "").count("'") % 2 == 0, line


def test_fish_script_shape() -> None:
    text = (COMPLETIONS / "ckptlake.fish").read_text()
    assert "complete -c ckptlake -f" in text
    assert "complete -c ckptlake -n '__fish_seen_subcommand_from push' -F" in text
    inside = False  # the helper functions (completion from the lake)
    for line in text.splitlines():
        if line.startswith("function __ckptlake_"):
            inside = True
        elif line == "end" and inside:
            inside = False
        elif line and not line.startswith("#") and not inside:
            assert line.startswith("complete -c ckptlake "), line
    assert not inside


def test_module_prints_one_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert completions.main(["--shell", "bash"]) == 0
    assert capsys.readouterr().out == completions.render("bash")
