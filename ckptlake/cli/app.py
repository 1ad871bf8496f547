"""The `ckptlake` command: builds the Typer app from one module per command, and `main()`.

Why a custom group class: every way in (the console script, `python -m ckptlake`, Typer's
CliRunner in tests) goes through the group's `main`, so mapping failures to one stderr line and an
exit code happens there once, instead of letting Click print multi-line usage boxes or Typer print
rich tracebacks.  Command bodies handle their own errors (`Output.guard`, which knows --json);
this layer catches what escapes before a body runs: usage errors and bugs.

Kept light on purpose: `ckptlake --help` must not import rich (beyond Typer's help rendering),
boto3 or the engine; commands import those when they run.
"""
from __future__ import annotations

import json
import re
import sys
from typing import Annotated, Any, Sequence

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from .. import __version__
from . import alias as alias_cmd
from . import cache as cache_cmd
from . import cat as cat_cmd
from . import diff as diff_cmd
from . import du as du_cmd
from . import gc as gc_cmd
from . import lineage as lineage_cmd
from . import ls as ls_cmd
from . import pull as pull_cmd
from . import push as push_cmd
from . import show as show_cmd
from . import verify as verify_cmd
from . import watch as watch_cmd
from .help import REF_EXAMPLES, REF_HELP, rich_escape
from .options import (ConfigOpt, DebugOpt, EndpointOpt, JsonOpt, LakeOpt, ProfileOpt, QuietOpt,
                      RegionOpt)
from .output import EXIT_CODES_HELP, PROG, error_doc, one_line, redact, report_error

COMPLETIONS_HELP = (
    "Shell completions: completions/ckptlake.bash, completions/_ckptlake (zsh), "
    "completions/ckptlake.fish in the source tree, or generate one with: python -m "
    "ckptlake.cli.completions --shell bash|zsh|fish.  Artifact names, aliases and @vN/@step=N "
    "complete from the lake (cached for a few seconds, at most 1 s per TAB).")

APP_HELP = "Versioned checkpoint and artifact lake on any S3-compatible bucket."
APP_EPILOG = rich_escape("\n\n".join([
    "Commands take --lake URL (or $CKPTLAKE_LAKE, or lake: in ckptlake.yaml); every command "
    "prints which lake it uses and why on stderr.  The lake and output options go before or "
    "after the command: 'ckptlake --lake URL --json ls' is 'ckptlake ls --lake URL --json'; "
    "given in both places, the one after the command wins.",
    REF_HELP + "\n" + REF_EXAMPLES,
    EXIT_CODES_HELP,
    COMPLETIONS_HELP,
]))


def _wants(argv: Sequence[str], flag: str) -> bool:
    """Whether a flag was given, for errors raised before options could be parsed."""
    args = list(argv)
    if "--" in args:
        args = args[: args.index("--")]
    return flag in args


# The options of the root callback that every command takes too (options.py defines each once).
GLOBAL_PARAMS = ("lake", "endpoint_url", "profile", "region", "config", "json_", "quiet",
                 "debug")


def hoist_global_options(argv: Sequence[str], group: Any) -> list[str]:
    """Move the lake and output options given before the subcommand to just after its name.

    Why: aws, s5cmd, git and kubectl users put global options first.  Moving them keeps one
    parser per option (the command's), so `ckptlake --lake X ls` is exactly `ckptlake ls
    --lake X`, and a value given in both places resolves as a repeated option does: the later
    one, after the command, wins.  Anything else before the command (--help, --version, an
    unknown option) stays where it is for Click to handle."""
    valued: set[str] = set()
    flags: set[str] = set()
    for param in getattr(group, "params", ()):
        if param.name in GLOBAL_PARAMS:
            (flags if getattr(param, "is_flag", False) else valued).update(param.opts)
    args = list(argv)
    front: list[str] = []
    moved: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--" or token == "-" or not token.startswith("-"):
            break
        name = token.split("=", 1)[0] if token.startswith("--") else token
        short_attached = next((o for o in valued if not o.startswith("--")
                               and len(token) > 2 and token.startswith(o)), None)
        if (name in valued and name != token) or short_attached:
            moved.append(token)  # --lake=URL, -lURL
            i += 1
        elif name in valued:
            if i + 1 >= len(args):
                return args  # the value is missing: let Click say so
            moved += [token, args[i + 1]]
            i += 2
        elif token in flags:
            moved.append(token)
            i += 1
        else:
            front.append(token)
            i += 1
    if not moved or i >= len(args) or args[i] == "--":
        return args
    return [*front, args[i], *moved, *args[i + 1:]]


class _Argument(TyperArgument):
    """Usage lines read `SOURCE ARTIFACT` (not Typer's `{SOURCE} {ARTIFACT}`), and an argument
    with a metavar shows no `<str>`/`<path>` type beside it: the metavar and help say it."""

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")

    def display_type_rich(self, ctx: Any) -> str | None:
        return None if self.metavar is not None else super().display_type_rich(ctx)


class _Option(TyperOption):
    """A flag takes no value, so its help row shows none (Typer prints `<bool>`)."""

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        return super().display_type_rich(ctx)


def _plain_param(param: Any) -> Any:
    if type(param) is TyperArgument:
        param.__class__ = _Argument
    elif type(param) is TyperOption:
        param.__class__ = _Option
    return param


class _Command(TyperCommand):
    """A command whose --help option renders as a flag too (Click makes it lazily)."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        return _plain_param(option) if option is not None else None


def _plain_params(command: Any) -> None:
    """Render every parameter of `command` and of its subcommands the ways above.  Done here,
    once for the whole tree, so a command added later needs nothing of its own."""
    for param in getattr(command, "params", ()):
        _plain_param(param)
    for sub in getattr(command, "commands", {}).values():
        if type(sub) is TyperCommand:
            sub.__class__ = _Command
        _plain_params(sub)


class CkptlakeGroup(TyperGroup):
    """The top-level group; its `main` is the single place where exit codes are decided."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_params(self)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if not argv:
            argv = ["--help"]  # a bare `ckptlake` shows the help (exit 0), not a usage error
        as_json, debug = _wants(argv, "--json"), _wants(argv, "--debug")
        argv = hoist_global_options(argv, self)
        try:
            rv = super().main(args=argv, prog_name=prog_name or PROG, complete_var=complete_var,
                              standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
        except typer.Abort:
            code = report_error(KeyboardInterrupt(), as_json=as_json, debug=False)
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - top level
            if _is_click_error(exc):
                code = _report_usage(exc, as_json=as_json)
            else:
                code = report_error(exc, as_json=as_json, debug=debug)
        if standalone_mode:
            sys.exit(code)
        return code

    def get_help_option(self, ctx: Any) -> Any:
        """Typer leaves the group's --help default at None, and coercing that None imports
        pydantic (~0.1 s) even for `ckptlake push --help`; a plain False needs no coercion."""
        option = super().get_help_option(ctx)
        if option is not None and getattr(option, "default", False) is None:
            option.default = False
        return _plain_param(option) if option is not None else None


def _is_click_error(exc: BaseException) -> bool:
    """Click's own errors (bad option, missing argument...), without importing Click: Typer
    vendors it, and its exception classes are reachable only through their names."""
    if isinstance(exc, typer.TyperException):
        return True
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__)


# What users of the peer tools type for our commands and options (W&B and DVC say "tag" for
# what ckptlake calls an alias; s5cmd/rclone say workers/transfers/bwlimit).  Click's own
# did-you-mean only knows spelling, and for `push --tag` it offered --meta.
COMMAND_SYNONYMS = {
    "tag": "alias", "label": "alias", "promote": "alias",
    "upload": "push", "put": "push", "commit": "push", "save": "push", "add": "push",
    "download": "pull", "get": "pull", "fetch": "pull", "checkout": "pull", "restore": "pull",
    "list": "ls", "log": "ls", "versions": "ls",
    "info": "show", "inspect": "show", "describe": "show",
    "history": "lineage", "compare": "diff",
    "prune": "gc", "clean": "gc", "cleanup": "gc", "purge": "gc",
    "check": "verify", "fsck": "verify", "validate": "verify",
}
OPTION_SYNONYMS = {
    "--tag": "--alias", "--tags": "--alias", "--label": "--alias",
    "--workers": "--concurrency", "--jobs": "--concurrency", "--threads": "--concurrency",
    "--parallel": "--concurrency", "--numworkers": "--concurrency", "--transfers": "--concurrency",
    "--bwlimit": "--max-bandwidth", "--limit-rate": "--max-bandwidth",
    "--endpoint": "--endpoint-url", "--s3-endpoint": "--endpoint-url",
    "--metadata": "--meta",
}
_NO_COMMAND = re.compile(r"^No such command '([^']+)'\.?")
_NO_OPTION = re.compile(r"^No such option: (\S+?)(?: \(Possible options: [^)]*\))?$")


def _synonym_hint(message: str, ctx: Any) -> str:
    """The message, with ckptlake's name for a peer tool's command or option where we know it
    (and the option exists on this command)."""
    if m := _NO_COMMAND.match(message):
        ours = COMMAND_SYNONYMS.get(m.group(1).lower())
        return f"{message.rstrip('.')}; ckptlake calls it '{ours}'" if ours else message
    if (m := _NO_OPTION.match(message)) and ctx is not None:
        ours = OPTION_SYNONYMS.get(m.group(1).split("=", 1)[0].lower())
        command = getattr(ctx, "command", None)
        known = {o for p in getattr(command, "params", ()) for o in getattr(p, "opts", ())}
        if ours in known:
            return f"No such option: {m.group(1)}; did you mean {ours}?"
    return message


def _report_usage(exc: BaseException, *, as_json: bool) -> int:
    """One line, like every other error, naming the help to read; exit 2 (Click's code)."""
    code = int(getattr(exc, "exit_code", 2))
    ctx = getattr(exc, "ctx", None)
    message = _synonym_hint(redact(one_line(exc.format_message())),  # type: ignore[attr-defined]
                            ctx)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    if as_json:
        sys.stdout.write(json.dumps(error_doc("UsageError", message, code)) + "\n")
        sys.stdout.flush()
    sys.stderr.write(f"{PROG}: error: {message}{hint}\n")
    sys.stderr.flush()
    return code


app = typer.Typer(
    name=PROG,
    cls=CkptlakeGroup,
    help=APP_HELP,
    epilog=APP_EPILOG,
    add_completion=False,  # we ship static scripts (see ckptlake/cli/completions.py)
    pretty_exceptions_enable=False,  # errors are one line; tracebacks only with --debug
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["--help", "-h"]},
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True, help="Print the version and exit.")]
        = False,
    lake: LakeOpt = None,
    endpoint_url: EndpointOpt = None,
    profile: ProfileOpt = None,
    region: RegionOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Versioned checkpoint and artifact lake on any S3-compatible bucket.

    The lake and output options are declared here for `ckptlake --help` and parsed by each
    command: `CkptlakeGroup.main` moves them after the command's name before Click parses.  A
    value that still lands here (a form the move does not know) is refused, never dropped."""
    given = [name for name, value in (("--lake", lake), ("--endpoint-url", endpoint_url),
                                      ("--profile", profile), ("--region", region),
                                      ("--config", config), ("--json", json_),
                                      ("--quiet", quiet), ("--debug", debug)) if value]
    if given and ctx.invoked_subcommand is not None:
        from ..errors import UsageError

        raise UsageError(f"{given[0]} could not be read before the command",
                         hint=f"give it after the command: ckptlake {ctx.invoked_subcommand} "
                              f"{given[0]} ...")


app.command("push", help=push_cmd.HELP, epilog=push_cmd.EPILOG)(push_cmd.push)
app.command("pull", help=pull_cmd.HELP, epilog=pull_cmd.EPILOG)(pull_cmd.pull)
app.command("ls", help=ls_cmd.HELP, epilog=ls_cmd.EPILOG)(ls_cmd.ls)
app.command("alias", help=alias_cmd.HELP, epilog=alias_cmd.EPILOG)(alias_cmd.alias)
app.command("show", help=show_cmd.HELP, epilog=show_cmd.EPILOG)(show_cmd.show)
app.command("cat", help=cat_cmd.HELP, epilog=cat_cmd.EPILOG)(cat_cmd.cat)
app.command("lineage", help=lineage_cmd.HELP, epilog=lineage_cmd.EPILOG)(lineage_cmd.lineage)
app.command("diff", help=diff_cmd.HELP, epilog=diff_cmd.EPILOG)(diff_cmd.diff)
app.command("watch", help=watch_cmd.HELP, epilog=watch_cmd.EPILOG)(watch_cmd.watch)
app.command("gc", help=gc_cmd.HELP, epilog=gc_cmd.EPILOG)(gc_cmd.gc)
app.command("du", help=du_cmd.HELP, epilog=du_cmd.EPILOG)(du_cmd.du)
app.command("verify", help=verify_cmd.HELP, epilog=verify_cmd.EPILOG)(verify_cmd.verify)
app.command("cache", help=cache_cmd.HELP, epilog=cache_cmd.EPILOG)(cache_cmd.cache)


def main() -> None:
    """Console-script entry point (`ckptlake`, `python -m ckptlake`)."""
    if sys.argv[1:2] == ["__complete"]:  # the shell scripts, at TAB time (cli/complete.py)
        import os

        from .complete import main as complete

        code = complete(sys.argv[2:])
        # Not sys.exit: a lookup still waiting on a slow lake must not hold the shell.
        os._exit(code)
    from ..core import chunkio

    chunkio.TUNE_MALLOC = True  # the CLI owns its process (see fix_mmap_threshold)
    app(prog_name=PROG)
