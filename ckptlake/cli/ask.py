"""The terminal question of the commands that delete or pay (rm, gc, and the egress guard of
pull, cat and diff --values): its Abort (EOF or Ctrl-C at the prompt) is told apart, so that
neither comes out as an internal error (exit 1)."""
from __future__ import annotations

import typer


def confirm(question: str, command: str, *, undone: str = "nothing was changed") -> bool:
    """A yes/no question, defaulting to no: Ctrl-C at the prompt is an interruption (exit 130),
    EOF a refusal (exit 7, "COMMAND cancelled; UNDONE")."""
    from ..errors import PolicyRefusal

    try:
        return _ask(question)
    except (EOFError, KeyboardInterrupt) as exc:
        typer.echo(err=True)  # end the prompt's line: the error goes on one of its own
        if isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise PolicyRefusal(f"{command} cancelled; {undone}") from None


def _ask(question: str) -> bool:
    """The whole prompt on stderr, the answer read from stdin.  Not typer.confirm(err=True):
    it hands the prompt's last character (a space) to input(), which writes it to stdout --
    in front of the file's bytes for `cat` past the egress question (a corrupted copy, exit
    0).  y/yes or n/no (any case); an empty answer is no; anything else asks again."""
    import sys

    while True:
        sys.stderr.write(f"{question} [y/N]: ")
        sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        answer = line.strip().lower()
        if answer in ("y", "yes"):
            return True
        if answer in ("", "n", "no"):
            return False
        sys.stderr.write("Error: invalid input\n")
