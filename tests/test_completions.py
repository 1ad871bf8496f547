"""The committed static completion scripts match the CLI and are valid shell.

Why byte-for-byte: the scripts are generated from the Typer command tree; if someone adds an
option and forgets to regenerate, users' TAB completion silently goes stale.
"""
from __future__ import annotations

import enum
import shutil
import subprocess
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

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
                    assert f"__ckptlake_using {command}' -l {opt[2:]}" in text or \
                        f"__ckptlake_using {command}' -s " in text


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
    assert "complete -c ckptlake -n '__ckptlake_using push' -F" in text
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


# ---- fixed values: what an option or argument accepts from a fixed set completes -------------

# (command, option or argument) -> the values, in the order the scripts offer them
FIXED = {
    ("cache", "ACTION"): ("ls", "prune"),
    ("completion", "SHELL"): ("bash", "zsh", "fish"),
    ("lineage", "--format"): ("tree", "json", "dot", "mermaid"),
    ("du", "--sort"): ("stored", "exclusive", "logical", "name"),
    ("push", "--compression"): ("auto", "none"),
    ("push", "--hash"): ("sha256", "blake3"),
    ("push", "--relation"): ("derived-from", "resumed-from", "fine-tuned-from",
                             "evaluated-from"),
}


def _fixed_in_tree() -> dict[tuple[str, str], tuple[str, ...]]:
    _, subs = completions.command_tree()
    found = {}
    for cmd in subs:
        found.update({(cmd.name, o.long[0]): o.choices for o in cmd.options if o.choices})
        found.update({(cmd.name, a.metavar): a.choices for a in cmd.args if a.choices})
    return found


def test_fixed_values_come_from_where_the_commands_check_them() -> None:
    """Declared once: the values the command accepts are the values that complete."""
    from ckptlake.cli import cache, completion, lineage
    from ckptlake.core.du import SORT_KEYS
    from ckptlake.format.codecs import COMPRESSION_MODES
    from ckptlake.format.header import SUPPORTED_HASHES
    from ckptlake.format.manifest import RELATIONS

    checked = {("cache", "ACTION"): cache.ACTIONS, ("completion", "SHELL"): completion.SHELLS,
               ("lineage", "--format"): lineage.FORMATS,
               ("du", "--sort"): SORT_KEYS, ("push", "--compression"): COMPRESSION_MODES,
               ("push", "--hash"): SUPPORTED_HASHES, ("push", "--relation"): RELATIONS}
    assert _fixed_in_tree() == checked == FIXED


def test_bad_fixed_values_are_refused_as_before() -> None:
    """Declaring the values for completion leaves each command's own check (one line, exit 2)."""
    expected = {
        ("cache", "nonsense"): "unknown cache action 'nonsense' (use ls or prune)",
        ("completion", "tcsh"): "unknown shell 'tcsh' (use bash, zsh or fish)",
        ("lineage", "a", "--format", "x"): "unknown --format 'x' (one of tree, json, dot, "
                                           "mermaid)",
        ("du", "--sort", "size"): "--sort 'size': expected one of stored, exclusive, logical, "
                                  "name",
        ("push", "src", "a", "--compression", "zip"): "--compression must be auto or none, not "
                                                      "'zip'",
        ("push", "src", "a", "--hash", "md5"): "--hash must be sha256 or blake3, not 'md5'",
        ("push", "src", "a", "--parent", "b", "--relation", "x"):
            "unknown relation 'x' (one of derived-from, resumed-from, fine-tuned-from, "
            "evaluated-from)",
    }
    for args, message in expected.items():
        r = CliRunner().invoke(app, list(args))
        assert (r.exit_code, r.stderr) == (2, f"ckptlake: error: {message}\n"), args


def _names(command: str, name: str) -> list[str]:
    if not name.startswith("--"):
        return []
    group = typer.main.get_command(app)
    (param,) = [p for p in group.commands[command].params if name in p.opts]
    return [*(o for o in param.opts if o.startswith("--")),
            *(o for o in param.opts if not o.startswith("--"))]


@pytest.mark.parametrize("shell", sorted(completions.FILES))
def test_scripts_offer_the_fixed_values(shell: str) -> None:
    text = (COMPLETIONS / completions.FILES[shell]).read_text()
    for (command, name), values in FIXED.items():
        words = " ".join(values)
        names = _names(command, name)
        if shell == "bash":
            compgen = f'COMPREPLY=( $(compgen -W "{words}" -- "$cur") )'
            want = (f"{'|'.join(names)}) {compgen}; return 0 ;;" if names
                    else f"0) {compgen} ;;  # {name}")
        elif shell == "zsh":
            want = f":({words})'" if names else f"'1:{name}:({words})'"
        else:
            flags = " ".join(f"-s {n[1:]}" for n in names if not n.startswith("--"))
            # a positional: counted past the command's value-taking options (cache: 3)
            takes = {"cache": " --max-size --dir --config"}.get(command, "")
            want = (f"{flags} -l {name[2:]} -x -a '{words}'".lstrip() if names
                    else f"__ckptlake_arg 0{takes}' -a '{words}'")
        assert want in text, (shell, command, name)
    if shell == "zsh":
        assert "'1:ACTION:(ls prune)'" in text
        assert "{-f+,--format=}'[tree (default), json, dot (Graphviz) or mermaid]:FORMAT:" \
               "(tree json dot mermaid)'" in text


def test_bash_completes_fixed_values(tmp_path: Path) -> None:
    (tmp_path / "ls.txt").write_bytes(b"")  # never offered: ACTION is not a path
    c = _bash_complete
    assert c(["ckptlake", "cache", ""], tmp_path) == ["ls", "prune"]
    assert c(["ckptlake", "cache", "p"], tmp_path) == ["prune"]
    assert c(["ckptlake", "--json", "cache", "--dir", "d", ""], tmp_path) == ["ls", "prune"]
    assert c(["ckptlake", "cache", "ls", ""], tmp_path) == []  # one ACTION
    assert c(["ckptlake", "cache", "-"], tmp_path)[:2] == ["--max-size", "--all"]
    assert c(["ckptlake", "lineage", "a", "--format", ""], tmp_path) == \
        ["tree", "json", "dot", "mermaid"]
    assert c(["ckptlake", "lineage", "-f", "m"], tmp_path) == ["mermaid"]
    assert c(["ckptlake", "lineage", "--format", "=", "d"], tmp_path) == ["dot"]  # --format=d
    assert c(["ckptlake", "du", "--sort", ""], tmp_path) == \
        ["stored", "exclusive", "logical", "name"]
    assert c(["ckptlake", "du", "--sort", "e"], tmp_path) == ["exclusive"]
    assert c(["ckptlake", "push", "src", "a", "--compression", ""], tmp_path) == \
        ["auto", "none"]
    assert c(["ckptlake", "push", "--hash", "b"], tmp_path) == ["blake3"]
    assert c(["ckptlake", "push", "--parent", "x", "--relation", ""], tmp_path) == \
        ["derived-from", "resumed-from", "fine-tuned-from", "evaluated-from"]
    assert c(["ckptlake", "push", "--relation", "f"], tmp_path) == ["fine-tuned-from"]
    # still free-form: ls --sort takes metric names
    assert c(["ckptlake", "ls", "a", "--sort", ""], tmp_path) == []


def _fish_complete(line: str) -> list[str]:
    fish = shutil.which("fish")
    if fish is None:
        pytest.skip("fish is not installed")
    r = subprocess.run([fish, "--no-config", "-c",
                        f"source '{COMPLETIONS / 'ckptlake.fish'}'; complete -C $argv[1]", line],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return [candidate.split("\t")[0] for candidate in r.stdout.splitlines()]


def test_fish_completes_fixed_values() -> None:
    f = _fish_complete
    assert f("ckptlake cache ") == ["ls", "prune"]
    assert f("ckptlake --json cache p") == ["prune"]
    assert f("ckptlake lineage a --format ") == ["dot", "json", "mermaid", "tree"]  # sorted
    assert f("ckptlake lineage -f m") == ["mermaid"]
    assert f("ckptlake du --sort ") == ["exclusive", "logical", "name", "stored"]
    assert f("ckptlake du --sort=e") == ["--sort=exclusive"]
    assert f("ckptlake push src a --compression ") == ["auto", "none"]
    assert f("ckptlake push --hash ") == ["blake3", "sha256"]
    assert f("ckptlake push --relation f") == ["fine-tuned-from"]


def test_fish_subcommand_is_the_first_word() -> None:
    """`cache ls` is cache's ACTION, not the ls command: ls's options and PATH argument (which
    would ask the lake) are not offered after it; and --lake URL before the command is an
    option's value, not the command."""
    f = _fish_complete
    assert f("ckptlake cache ls --w") == []
    assert f("ckptlake cache ls --d") == ["--debug", "--dir", "--dry-run"]
    assert f("ckptlake cache ls ") == []
    assert f("ckptlake ls --w") == ["--where"]
    assert f("ckptlake --lake x ca") == ["cache", "cat"]
    assert f("ckptlake -l x lineage a -f d") == ["dot"]


class Speed(str, enum.Enum):
    fast = "fast"
    slow = "slow"


def _paint(mode: Annotated[str, typer.Argument(
               metavar="MODE", autocompletion=lambda: ("matte", "gloss"))],
           speed: Annotated[Speed, typer.Option("--speed", "-s")] = Speed.fast) -> None:
    """Paint."""


def _bad(value: Annotated[str, typer.Option(
             "--value", autocompletion=lambda: ("two words",))] = "") -> None:
    """Bad."""


def test_generator_reads_enums_and_autocompletion() -> None:
    mini = typer.Typer()
    mini.command("paint")(_paint)
    mini.command("other")(_bad)
    with pytest.raises(ValueError, match="two words"):
        completions.render("bash", mini)
    mini = typer.Typer()
    mini.command("paint")(_paint)
    mini.command("noop")(lambda: None)
    _, (paint, _) = completions.command_tree(mini)
    assert paint.args[0].choices == ("matte", "gloss")
    assert [o.choices for o in paint.options if o.long == ("--speed",)] == [("fast", "slow")]
    assert '0) COMPREPLY=( $(compgen -W "matte gloss" -- "$cur") )' in \
        completions.render("bash", mini)
    zsh = completions.render("zsh", mini)
    assert "{-s+,--speed=}'[]:SPEED:(fast slow)'" in zsh and "'1:MODE:(matte gloss)'" in zsh
    assert "-l speed -x -a 'fast slow'" in completions.render("fish", mini)


@pytest.mark.parametrize("shell", sorted(completions.FILES))
def test_completion_command_prints_the_committed_script(shell: str) -> None:
    """`ckptlake completion SHELL`: what a pip/pipx install (no checkout) sources."""
    r = CliRunner().invoke(app, ["completion", shell], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == (COMPLETIONS / completions.FILES[shell]).read_text(encoding="utf-8")
    bad = CliRunner().invoke(app, ["completion", "tcsh"], catch_exceptions=False)
    assert bad.exit_code == 2 and "unknown shell 'tcsh'" in bad.stderr
