"""`ckptlake completion SHELL`: the shell completion script, from the installed ckptlake.

The scripts are also committed in the repository's completions/, but a pip or pipx install
has no checkout, and `python -m ckptlake.cli.completions` needs the tool's own interpreter,
which pipx does not put on PATH.  The command prints the same script those files hold
(cli/completions.py renders both from the command tree)."""
from __future__ import annotations

from typing import Annotated

import typer

from .help import epilog, examples
from .options import OUTPUT_PANEL, CommonOptions, DebugOpt, QuietOpt
from .output import Output, write_stdout

HELP = "Print the shell completion script for SHELL (bash, zsh or fish) on stdout."
EPILOG = epilog(
    examples("ckptlake completion bash > ~/.local/share/bash-completion/completions/ckptlake",
             "ckptlake completion zsh > ~/.zfunc/_ckptlake  # a directory on your fpath, "
             "before compinit",
             "ckptlake completion fish > ~/.config/fish/completions/ckptlake.fish"),
    "Open a new shell afterwards.  Artifact names, aliases, selectors and paths complete from "
    "the lake the command line names (README, 'Shell completion').")

SHELLS = ("bash", "zsh", "fish")

# Not the shared --json: on success stdout is the script, not a document.  Taken so that a
# script setting `ckptlake --json` for every command gets its errors as documents here too.
JsonOpt = Annotated[bool, typer.Option(
    "--json", rich_help_panel=OUTPUT_PANEL,
    help="Errors as a JSON document on stdout; on success stdout is still the script.")]


def completion(
    shell: Annotated[str, typer.Argument(
        metavar="SHELL", show_default=False, help="bash, zsh or fish.",
        autocompletion=lambda: SHELLS)],  # what the completion scripts offer
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Needs no lake and no config."""
    out = Output(CommonOptions(json=json_, quiet=quiet, debug=debug))
    with out.guard():
        from ..errors import UsageError

        if shell not in SHELLS:
            raise UsageError(f"unknown shell {shell!r}", hint="use bash, zsh or fish")
        from .completions import render

        write_stdout(render(shell).removesuffix("\n"))  # (write_stdout ends the line)
