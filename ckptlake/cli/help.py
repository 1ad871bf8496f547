"""Help texts shared by several commands (the reference grammar, exit codes, completions).

Why here: the grammar comes from format/refs.py (`GRAMMAR`) and the exit codes from errors.py, so
`--help` can never drift from what the parser and the error mapping actually do.  Typer renders
help with rich markup, so literal '[' is escaped.
"""
from __future__ import annotations

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


def epilog(*paragraphs: str) -> str:
    """Command epilog: its own paragraphs, then the grammar and the exit codes."""
    return rich_escape("\n\n".join([*paragraphs, REF_HELP + "\n" + REF_EXAMPLES, EXIT_CODES_HELP]))
