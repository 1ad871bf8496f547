"""The terminal question of the commands that delete or pay (rm, gc, and the egress guard of
pull, cat and diff --values): its Abort (EOF or Ctrl-C at the prompt) is told apart, so that
neither comes out as an internal error (exit 1)."""
from __future__ import annotations

import typer


def confirm(question: str, command: str, *, undone: str = "nothing was changed") -> bool:
    """typer.confirm, defaulting to no: Ctrl-C at the prompt is an interruption (exit 130),
    EOF a refusal (exit 7, "COMMAND cancelled; UNDONE")."""
    from ..errors import PolicyRefusal

    try:
        return typer.confirm(question, default=False, err=True)
    except typer.Abort as exc:
        typer.echo(err=True)  # end the prompt's line: the error goes on one of its own
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise PolicyRefusal(f"{command} cancelled; {undone}") from None
