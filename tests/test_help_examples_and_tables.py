"""What a CI-script author copies out of the CLI: the `--help` examples (each one whole, on one
line, runnable as printed, at any terminal width) and `lineage --format json` (the --json
document)."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import COMMANDS, app

WITH_EXAMPLES = list(COMMANDS)


def example_lines(command: str, columns: int) -> list[str]:
    """The lines of the paragraphs headed "Example:" / "Examples:" in `command --help`."""
    r = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": str(columns)})
    assert r.exit_code == 0, r.output
    lines, found, inside = [], False, False
    for line in r.stdout.splitlines():
        if line.strip() in ("Example:", "Examples:"):
            found = inside = True
        elif inside and line.strip():
            lines.append(line.strip())
        else:
            inside = False
    assert found, f"{command} --help has no Examples: paragraph"
    return lines


def shell_words(line: str) -> list[str]:
    """The line as a POSIX shell splits it, operators apart (raises on unbalanced quotes)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


@pytest.mark.parametrize("command", WITH_EXAMPLES)
def test_help_examples_are_whole_runnable_lines_at_any_width(command: str) -> None:
    narrow, wide = example_lines(command, 60), example_lines(command, 200)
    assert narrow and narrow == wide
    for line in narrow:
        words = shell_words(line)
        assert words[:2] == ["ckptlake", command], line
        # one command per line: nothing chained, no prose a shell would parse, and a pipe
        # feeds another program, never the next example
        assert not {"(", ")", ";", "&", "&&", "||"} & set(words), line
        assert words.count("ckptlake") == 1, line


def test_examples_keep_their_quoted_arguments_whole() -> None:
    for line in example_lines("rm", 60):
        if "--reason" in line:
            reason = shell_words(line)
            assert reason[reason.index("--reason") + 1] in (
                "pushed with an API token in it", "abandoned run", "rank 3 OOM-killed")


def test_lineage_format_json_is_the_json_document(tmp_path: Path) -> None:
    url = (tmp_path / "lake").as_uri()
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"weights")
    with ckptlake.open(url) as lake:
        lake.push(src, "p/base")
        lake.push(src, "p/model", parents=["p/base@v1"])
    runner = CliRunner()
    as_json = runner.invoke(app, ["lineage", "p/model", "--lake", url, "--json"])
    as_format = runner.invoke(app, ["lineage", "p/model", "--lake", url, "--format", "json"])
    assert as_json.exit_code == 0 and as_format.exit_code == 0, as_json.output + as_format.output
    doc = json.loads(as_json.stdout)
    assert "lake" in doc and doc["nodes"]
    assert json.loads(as_format.stdout) == doc


@pytest.mark.parametrize("width", [30, 60, 80])
def test_terminal_tables_never_cut_a_value(width: int) -> None:
    """rich's default ellipsis showed `team-a/very-long-proj…` and a step `1234567…` on a
    narrow terminal: names now fold onto the next line, numbers keep their width."""
    import io

    from rich.console import Console

    from ckptlake.cli.output import rich_table

    name = "team-a/very-long-project-name/with-a-long-run-name/ckpt"
    alias = "another-long-alias-name-for-production"
    rows = [[name, "123456789", "2.00 GiB", "13m", alias]]
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=True, color_system=None,
            highlight=False, markup=False).print(
        rich_table(["ARTIFACT", "STEP", "SIZE", "AGE", "ALIASES"], rows))
    text = out.getvalue()
    assert "…" not in text
    # every column is there, and each cell's pieces, read down its column, are the value
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if set(line.strip()) == {"─"})
    body = [line for line in lines[rule + 1:] if line.strip()]
    head = lines[:rule]
    starts = sorted({i for line in head for i in range(len(line))
                     if line[i] != " " and (i == 0 or line[i - 1] == " ")})
    cols = [k for k in starts if all(line[k - 1:k] in ("", " ") for line in head + body)]
    assert len(cols) == 5, text
    for k, value in enumerate([name, "123456789", "2.00 GiB", "13m", alias]):
        end = cols[k + 1] if k + 1 < len(cols) else None
        down = "".join(line[cols[k]:end].strip() for line in body)
        assert down.replace(" ", "") == value.replace(" ", ""), (value, text)
