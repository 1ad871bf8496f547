"""Help texts shared by several commands (the reference grammar, exit codes, completions).

Why here: the grammar comes from format/refs.py (`GRAMMAR`) and the exit codes from errors.py, so
`--help` can never drift from what the parser and the error mapping actually do.  Typer renders
help with rich markup, so literal '[' is escaped.
"""
from __future__ import annotations

from typing import Any

from typer import core as typer_core

from ..format.refs import GRAMMAR
from .output import EXIT_CODES_HELP


def rich_escape(text: str) -> str:
    """Escape '[' so rich markup shows ARTIFACT[@SELECTOR] literally."""
    return text.replace("[", "\\[")


def rich_unescape(text: str) -> str:
    """The inverse, for the shell completion scripts (they show plain text)."""
    return text.replace("\\[", "[")


REF_HELP = "Reference: " + GRAMMAR + "."
REF_EXAMPLES = ("Examples: gpt2/run-7/ckpt (latest), gpt2/run-7/ckpt@v3, "
                "gpt2/run-7/ckpt@step=2000, gpt2/run-7/ckpt@best, "
                "gpt2/run-7/ckpt@min:val_loss")


# The first line of an examples paragraph (`examples`): what `--help` prints unwrapped below it.
EXAMPLES_HEADERS = ("Example:", "Examples:")
EXAMPLE_INDENT = "  "


def examples(*commands: str) -> str:
    """An epilog paragraph of command lines, one per line.  Each must run when pasted into a
    shell as printed: an explanation goes in a trailing `# ...` comment, never in prose around
    it (`--help` prints these lines whole, unwrapped, whatever the width: see below)."""
    header = EXAMPLES_HEADERS[len(commands) > 1]
    return "\n".join([header, *(EXAMPLE_INDENT + command for command in commands)])


def epilog(*paragraphs: str) -> str:
    """Command epilog: its own paragraphs, then the grammar and the exit codes."""
    return rich_escape("\n\n".join([*paragraphs, REF_HELP + "\n" + REF_EXAMPLES, EXIT_CODES_HELP]))


def _is_examples(paragraph: str) -> bool:
    return paragraph.split("\n", 1)[0] in EXAMPLES_HEADERS


def _print_epilog(text: str, markup_mode: Any) -> None:
    """Typer's epilog rendering, except the example lines: rich wraps and crops every line at
    the width of the terminal (80 columns when piped), which cut a pasted example mid-command
    or mid-quote.  They are printed whole instead (the terminal folds them only on screen)."""
    from rich.align import Align
    from rich.padding import Padding
    from rich.text import Text
    from typer import rich_utils

    console = rich_utils._get_rich_console()
    console.print()
    for number, paragraph in enumerate(text.split("\n\n")):
        if number:
            console.print()
        if not _is_examples(paragraph):
            console.print(Padding(Align(rich_utils._make_rich_text(
                text=paragraph, markup_mode=markup_mode), pad=False), (0, 1)))
            continue
        for line in paragraph.split("\n"):
            console.print(Text(" ") + rich_utils.highlighter(Text.from_markup(line)),
                          soft_wrap=True)
    console.print()


def format_help_with_examples(command: Any, ctx: Any, formatter: Any,
                              typer_format_help: Any) -> None:
    """`command`'s --help as Typer renders it (`typer_format_help`), with its examples
    paragraph printed by _print_epilog.  Help without one is Typer's own, untouched."""
    epilog_text = command.epilog
    if (not typer_core.HAS_RICH or command.rich_markup_mode is None or not epilog_text
            or not any(map(_is_examples, epilog_text.split("\n\n")))):
        return typer_format_help(ctx, formatter)
    # Typer prints the epilog last, after the option panels: everything else is its own
    command.epilog = None
    try:
        typer_format_help(ctx, formatter)
    finally:
        command.epilog = epilog_text
    _print_epilog(epilog_text, command.rich_markup_mode)
