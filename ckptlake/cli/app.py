"""The `ckptlake` command: builds the Typer app from one module per command, and `main()`.

Why a custom group class: every way in (the console script, `python -m ckptlake`, Typer's
CliRunner in tests) goes through the group's `main`, so mapping failures to one stderr line and an
exit code happens there once, instead of letting Click print multi-line usage boxes or Typer print
rich tracebacks.  Command bodies handle their own errors (`Output.guard`, which knows --json);
this layer catches what escapes before a body runs: usage errors and bugs.

Kept light on purpose: `ckptlake --help` must not import rich (beyond Typer's help rendering),
boto3 or the engine; commands import those when they run.  Start-up is paid by every command
(issue 13: a 1 KiB pull in <= 0.25 s), so two more things are deferred: a command's module is
imported, and its Click command built from the function's signature, only when that command is
looked up (`_LazyCommands`); and the plain values of our options (str, int, float, Path and
lists of them) are converted without Typer's pydantic adapters, which cost ~0.07 s to import
(`_LightRuntimeParam`).
"""
from __future__ import annotations

import contextvars
import dataclasses
import errno
import importlib
import re
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Iterator, Sequence, get_args, get_origin

import typer
import typer.main
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from .. import __version__
from .help import REF_EXAMPLES, REF_HELP, rich_escape
from .options import (ConfigOpt, DebugOpt, EndpointOpt, JsonOpt, LakeOpt, ProfileOpt, QuietOpt,
                      RegionOpt)
from .output import (EXIT_CODES_HELP, PROG, OutputFailed, error_doc, one_line, redact,
                     report_error, write_error_doc, write_stderr)

try:  # Typer's coercion layer (0.26+); without it, Typer's own coercion runs unchanged
    from typer._coercion import RuntimeParam as _RuntimeParam
    from typer._coercion import build_runtime_param as _build_runtime_param
    from typer._param_types import coerce_cli_path as _coerce_cli_path
except ImportError:  # pragma: no cover - another Typer
    _RuntimeParam = None

COMPLETIONS_HELP = (
    "Shell completions: ckptlake completion bash|zsh|fish prints the script (also in the "
    "source tree's completions/).  Artifact names, aliases and @vN/@step=N "
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


_NO = object()  # "not a plain case": let Typer's own (pydantic) coercion decide
_INT = re.compile(r"-?[0-9]{1,18}\Z")
_DECIMAL = re.compile(r"-?[0-9]{1,18}(?:\.[0-9]{1,18})?\Z")


def _light_value(annotation: Any, info: Any, value: Any, param: Any, ctx: Any) -> Any:
    """What Typer's pydantic adapter returns for `value`, in the cases where that is plain
    Python: a str for str; an int or float written as digits, within min/max; a Path (then
    Typer's own exists/file/dir checks).  `_NO` for anything else, bad values included, so
    that Typer's adapter produces the value or its usual error message."""
    if info.parser is str:  # a Path argument that keeps what was typed (pull's "DEST/")
        return value if type(value) is str else _NO
    if info.parser is not None or getattr(info, "clamp", False):
        return _NO
    if get_origin(annotation) is list:
        if not isinstance(value, (list, tuple)):
            return _NO
        (item,) = get_args(annotation) or (Any,)
        items = [_light_value(item, info, v, param, ctx) for v in value]
        return _NO if any(v is _NO for v in items) else items
    if annotation is str:
        return value if type(value) is str else _NO
    if annotation is int or annotation is float:
        if type(value) is str and (_INT if annotation is int else _DECIMAL).match(value):
            number = annotation(value)
        elif type(value) is annotation:
            number = value
        else:
            return _NO
        if ((info.min is not None and number < info.min)
                or (info.max is not None and number > info.max)):
            return _NO
        return number
    if annotation is Path and getattr(info, "path_type", None) in (None, Path):
        if type(value) is str:
            value = Path(value)
        if not isinstance(value, Path):
            return _NO
        try:
            return _coerce_cli_path(value, info, path_type=Path, param=param, ctx=ctx)
        except typer.BadParameter:  # Typer's message names the value as typed, not as a Path
            return _NO
    return _NO


if _RuntimeParam is not None:
    @dataclasses.dataclass(frozen=True)
    class _LightRuntimeParam(_RuntimeParam):  # type: ignore[misc, valid-type]
        """Typer's runtime coercion (None and multi-value handling stay Typer's), converting
        plain values itself and handing everything else to Typer's pydantic adapter."""

        descriptor: Any = None

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            out = _light_value(self.annotation, self.parameter_info, value, param, ctx)
            if out is not _NO:
                return out
            adapter = _build_runtime_param(self.descriptor)
            return adapter._coerce_value(value, param=param, ctx=ctx)


def _get_runtime_param(self: Any) -> Any:
    """Our parameters' `get_runtime_param` (Typer asks it before converting a value)."""
    descriptor = getattr(self, "type_descriptor", None)
    if _RuntimeParam is None or descriptor is None or descriptor.file_annotation is not None:
        return TyperOption.get_runtime_param(self)  # Typer's own (_TyperParameter's)
    if getattr(self, "_runtime_param", None) is None:
        self._runtime_param = _LightRuntimeParam(
            parameter_info=descriptor.parameter_info, annotation=descriptor.annotation,
            descriptor=descriptor)
    return self._runtime_param


class _Argument(TyperArgument):
    """Usage lines read `SOURCE ARTIFACT` (not Typer's `{SOURCE} {ARTIFACT}`), and an argument
    with a metavar shows no `<str>`/`<path>` type beside it: the metavar and help say it."""

    get_runtime_param = _get_runtime_param

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")

    def display_type_rich(self, ctx: Any) -> str | None:
        return None if self.metavar is not None else super().display_type_rich(ctx)


class _Option(TyperOption):
    """A flag takes no value, so its help row shows none (Typer prints `<bool>`)."""

    get_runtime_param = _get_runtime_param

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

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """Examples printed whole, one per line, at any width (cli/help.py): wrapped, a pasted
        example was cut mid-command or mid-quote."""
        from .help import format_help_with_examples

        format_help_with_examples(self, ctx, formatter, super().format_help)


def _plain_params(command: Any) -> None:
    """Render every parameter of `command` and of its subcommands the ways above.  Done here,
    for the whole tree (and for each lazily built command), so a command added later needs
    nothing of its own."""
    for param in getattr(command, "params", ()):
        _plain_param(param)
    commands = getattr(command, "commands", {})
    for name in list(commands) if not isinstance(commands, _LazyCommands) else commands.built():
        sub = commands[name]
        if type(sub) is TyperCommand:
            sub.__class__ = _Command
        _plain_params(sub)


class _DebugNotes:
    """With --debug, the library's debug notes (the `ckptlake` logger: e.g. a model file whose
    header could not be trusted, cut at fixed offsets) go to stderr, for this command only."""

    def __init__(self) -> None:
        import logging

        class Stderr(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:  # stderr as it is now
                write_stderr(record.getMessage())

        self._logger = logging.getLogger("ckptlake")
        self._handler, self._level = Stderr(logging.DEBUG), self._logger.level
        self._logger.addHandler(self._handler)
        self._logger.setLevel(logging.DEBUG)

    def close(self) -> None:
        self._logger.removeHandler(self._handler)
        self._logger.setLevel(self._level)


# The commands, in the order `ckptlake --help` lists them.  Each lives in the module of its name
# (cli/push.py ...) as a function of that name, with HELP and EPILOG beside it.
COMMANDS = ("push", "pull", "cp", "ls", "alias", "show", "cat", "lineage", "diff", "watch",
            "gc", "rm", "du", "verify", "cache", "replicate", "completion")


def build_command(name: str) -> Any:
    """The Click command of one of COMMANDS, built by Typer from its function (a one-command
    Typer app gives exactly the command Typer would put in the group)."""
    module = importlib.import_module(f"{__package__}.{name}")
    one = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                      rich_markup_mode=app.rich_markup_mode)
    one.command(name, help=module.HELP, epilog=module.EPILOG)(getattr(module, name))
    command = typer.main.get_command(one)
    if type(command) is TyperCommand:
        command.__class__ = _Command
    _plain_params(command)
    return command


class _LazyCommands(MutableMapping):
    """The group's subcommands: every name known up front (help, did-you-mean, completions),
    each built on first lookup, so `ckptlake pull` neither imports nor builds the others."""

    def __init__(self, names: Iterable[str], build: Callable[[str], Any]) -> None:
        self._names = list(names)
        self._built: dict[str, Any] = {}
        self._build = build

    def built(self) -> list[str]:
        return [name for name in self._names if name in self._built]

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            if name not in self._names:
                raise KeyError(name)
            self._built[name] = self._build(name)
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        if name not in self._names:
            self._names.append(name)
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        self._names.remove(name)
        self._built.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names))

    def __len__(self) -> int:
        return len(self._names)


class CkptlakeGroup(TyperGroup):
    """The top-level group; its `main` is the single place where exit codes are decided."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        lazy = _LazyCommands(COMMANDS, build_command)
        for name, command in self.commands.items():  # any registered the usual way
            lazy[name] = command
        self.commands = lazy
        _plain_params(self)

    def invoke(self, ctx: Any) -> Any:
        """A Ctrl-C outside a command's guard (while the command's module imports, at its
        lookup) would reach Typer, which turns it into a silent exit 130: no error document
        for --json, no "interrupted" line.  Passed on as _Interrupted, main reports it."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise _Interrupted() from exc

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        """The same while the arguments are parsed (a SIGTERM in a command's first tenths of
        a second): Typer made it a silent exit 130 there too."""
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt as exc:
            raise _Interrupted() from exc

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if not argv:
            argv = ["--help"]  # a bare `ckptlake` shows the help (exit 0), not a usage error
        as_json, debug = _wants(argv, "--json"), _wants(argv, "--debug")
        argv = hoist_global_options(argv, self)
        notes = _DebugNotes() if debug else None
        version_json = _VERSION_JSON.set(as_json)
        from .main import restore_signals, terminate_as_interrupt

        ending = terminate_as_interrupt()
        code: Any = None
        try:
            rv = super().main(args=argv, prog_name=prog_name or PROG, complete_var=complete_var,
                              standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
        except (typer.Abort, _Interrupted):
            from .main import forget_unhandled_interrupt, hold_signals

            hold_signals()
            forget_unhandled_interrupt()
            code = report_error(KeyboardInterrupt(), as_json=as_json, debug=False)
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - top level
            if _interrupt_inside(exc):
                # Python wraps one raised while a class is built (__set_name__, in a lazy
                # import) in a RuntimeError: an interrupt all the same, not an internal error
                from .main import forget_unhandled_interrupt, hold_signals

                hold_signals()
                forget_unhandled_interrupt()
                exc = KeyboardInterrupt()
            if _is_click_error(exc):
                code = _report_usage(exc, as_json=as_json)
            else:
                code = report_error(_stdout_failure(exc), as_json=as_json, debug=debug)
        finally:
            from . import main as console_main

            if console_main._CONSOLE[0] and code is not None and code != 130:
                # the result is out: from here to the process's end a signal ends it with
                # this code (restored handlers turned one into a traceback and exit 130 after
                # a committed push had printed its result)
                console_main._end_on_signal(code)
            else:
                restore_signals(ending)
            _VERSION_JSON.reset(version_json)
            if notes is not None:
                notes.close()
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


def _interrupt_inside(exc: BaseException) -> bool:
    """Is `exc` a RuntimeError (or the like) that Python raised around a KeyboardInterrupt?"""
    seen = 0
    cause = exc.__cause__
    while cause is not None and seen < 8:
        if isinstance(cause, KeyboardInterrupt):
            return not isinstance(exc, KeyboardInterrupt)
        cause, seen = cause.__cause__, seen + 1
    return False


class _Interrupted(Exception):
    """A KeyboardInterrupt that reached the group outside a command's guard (see
    CkptlakeGroup.invoke)."""


def _stdout_failure(exc: BaseException) -> BaseException:
    """--help and --version write before any command body (whose Output.guard knows a stdout
    that failed): an OSError while stdout cannot be flushed either is stdout's (`>&-`,
    `>/dev/full`), said as such in one line (exit 1), not as a bug."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EPIPE, errno.EBADF):
        # a write that failed dropped its buffer: flushing again succeeds, proving nothing
        return OutputFailed(f"cannot write the output to stdout: {one_line(str(exc))}")
    if isinstance(exc, (OSError, ValueError)) and not isinstance(exc, OutputFailed):
        try:
            sys.stdout.flush()
        except (OSError, ValueError, AttributeError):
            return OutputFailed(f"cannot write the output to stdout: {one_line(str(exc))}")
    return exc


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
    "tag": "alias", "tags": "alias", "label": "alias", "promote": "alias",
    "upload": "push", "put": "push", "commit": "push", "save": "push", "add": "push",
    "download": "pull", "get": "pull", "fetch": "pull", "checkout": "pull", "restore": "pull",
    "list": "ls", "log": "ls", "versions": "ls",
    "info": "show", "inspect": "show", "describe": "show",
    "history": "lineage", "compare": "diff",
    "prune": "gc", "clean": "gc", "cleanup": "gc", "purge": "gc",
    "delete": "rm", "remove": "rm", "del": "rm", "erase": "rm",
    "check": "verify", "fsck": "verify", "validate": "verify",
    "version": "--version",
}
OPTION_SYNONYMS = {
    "--tag": "--alias", "--tags": "--alias", "--label": "--alias",
    "--workers": "--concurrency", "--jobs": "--concurrency", "--threads": "--concurrency",
    "--parallel": "--concurrency", "--numworkers": "--concurrency", "--transfers": "--concurrency",
    "--bwlimit": "--max-bandwidth", "--limit-rate": "--max-bandwidth",
    "--endpoint": "--endpoint-url", "--s3-endpoint": "--endpoint-url",
    "--metadata": "--meta",
    "--remove": "--delete", "--rm": "--delete", "--unset": "--delete",  # alias
    "--overwrite": "--force", "--clobber": "--force",
}
# Where a command reads a peer's option its own way (command name -> option -> ours): -f and
# --force as rm -f (do not ask) where --yes means that; as cp -f (replace files) on pull.  On
# cat, cp and diff --yes accepts an egress cost: no force means that.
OPTION_SYNONYMS_OF = {"pull": {"-f": "--force"}, "rm": {"-f": "--yes"},
                      "gc": {"-f": "--yes", "--force": "--yes"}}
_NO_COMMAND = re.compile(r"^No such command '([^']+)'\.?")
_NO_OPTION = re.compile(r"^No such option: (\S+?)(?: \(Possible options: [^)]*\))?$")


def _synonym_hint(message: str, ctx: Any) -> str:
    """The message, with ckptlake's name for a peer tool's command or option where we know it
    (and the option exists on this command)."""
    if m := _NO_COMMAND.match(message):
        ours = COMMAND_SYNONYMS.get(m.group(1).lower())
        # (Click's own "Did you mean 'ls', 'alias'?" goes: it guesses by spelling, we know)
        return f"No such command '{m.group(1)}'; ckptlake calls it '{ours}'" if ours else message
    if (m := _NO_OPTION.match(message)) and ctx is not None:
        given = m.group(1).split("=", 1)[0]
        given = given.lower() if given.startswith("--") else given  # (-F is not -f)
        command = getattr(ctx, "command", None)
        ours = OPTION_SYNONYMS_OF.get(getattr(command, "name", ""), {}).get(given) \
            or OPTION_SYNONYMS.get(given)
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
        write_error_doc(error_doc("UsageError", message, code))
    write_stderr(f"{PROG}: error: {message}{hint}")
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


# --version is eager: its callback runs before --json is parsed, so `main` says whether --json
# was given (`ckptlake --version --json`: one JSON document, as every command's --json).
_VERSION_JSON: contextvars.ContextVar[bool] = contextvars.ContextVar("ckptlake_version_json",
                                                                      default=False)


def _show_version(value: bool) -> None:
    if value:
        if _VERSION_JSON.get():
            import json

            typer.echo(json.dumps({"version": __version__}))
        else:
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


# The commands are not registered with `app.command`: CkptlakeGroup builds them on first use
# (COMMANDS, build_command).  The console script's entry point is cli/main.py's `main`, also
# importable from here: console scripts installed before it moved name `ckptlake.cli.app:main`.
from .main import main as main  # noqa: E402, F401
