"""Static shell completion scripts for bash, zsh and fish, generated from the Typer app.

Why static: Typer's dynamic completion runs Python (and imports the CLI) on every TAB, which is
slow and breaks when the venv is not active.  The command tree changes only with the code, so we
generate plain scripts from it, commit them under completions/, and a test fails when they drift.

    python -m ckptlake.cli.completions --write completions/   # regenerate the committed files
    python -m ckptlake.cli.completions --shell zsh > _ckptlake # one script on stdout

The tree is read from `typer.main.get_command(app)` (names, options, help, which arguments are
paths, which values an option or argument takes from a fixed set), never hand-written, and the
output is deterministic (no dates, no paths, stable order).

Fixed values (`cache ls|prune`, `lineage --format`, `du --sort`, ...) are declared once, where
the parameter is defined, as `autocompletion=lambda: VALUES` (or a function that imports VALUES
from the engine: that import then stays out of the command's start-up); the parameter stays a
str, and the command checks it against the same VALUES, with its own message and exit code.
The generator bakes in what Typer completes for an empty word, so such an `autocompletion`
must return a fixed list (values from the lake complete through `ckptlake __complete`, see
lake_kind).  An Enum or Literal type's values are read the same way, but Typer would then
check the value itself (another message) through its pydantic adapter (slower start-up).
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import typer

from .help import rich_unescape

PROG = "ckptlake"
FILES = {"bash": "ckptlake.bash", "zsh": "_ckptlake", "fish": "ckptlake.fish"}
REGEN = "python -m ckptlake.cli.completions --write completions/"


# --- the command tree -------------------------------------------------------------------------

@dataclass(frozen=True)
class Opt:
    long: tuple[str, ...]  # e.g. ("--lake",)
    short: tuple[str, ...]  # e.g. ("-l",)
    help: str
    takes_value: bool
    multiple: bool
    metavar: str
    path: str | None  # "file", "dir", "any" or None
    choices: tuple[str, ...] = ()  # the fixed set of values it takes, if any


@dataclass(frozen=True)
class Arg:
    metavar: str
    help: str
    path: str | None
    variadic: bool = False  # takes any number of words (nargs=-1)
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cmd:
    name: str
    help: str
    options: tuple[Opt, ...]
    args: tuple[Arg, ...] = field(default_factory=tuple)


def _short_help(text: str | None) -> str:
    """First paragraph, first sentence (our help separates sentences with two spaces)."""
    text = rich_unescape(text or "").split("\n\n")[0]
    text = " ".join(text.split())
    text = text.split(".  ")[0].split(". ")[0] if len(text) > 90 else text
    return text.rstrip(".")


def _path_kind(param: Any) -> str | None:
    """'file'/'dir'/'any' for pathlib.Path parameters, from Typer's type descriptor."""
    descriptor = getattr(param, "type_descriptor", None)
    annotation = getattr(descriptor, "annotation", None)
    if not (isinstance(annotation, type) and issubclass(annotation, PurePath)):
        return None
    info = getattr(descriptor, "parameter_info", None)
    file_ok = getattr(info, "file_okay", True)
    dir_ok = getattr(info, "dir_okay", True)
    if dir_ok and not file_ok:
        return "dir"
    if file_ok and not dir_ok:
        return "file"
    return "any"


# What a fixed value may look like: one word that needs no quoting or escaping in any of the
# three shells (inside compgen -W "...", an _arguments (...) action, a fish -a '...').
_CHOICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\Z")


def _choices(param: Any, ctx: Any) -> tuple[str, ...]:
    """The fixed values of a parameter: what Typer completes for an empty word (an Enum's
    values, or what its `autocompletion` returns), in their declared order."""
    values = tuple(item.value for item in param.shell_complete(ctx, "")
                   if getattr(item, "type", "plain") == "plain")
    for value in values:
        if not isinstance(value, str) or not _CHOICE.match(value):
            raise ValueError(f"{param.name}: the value {value!r} cannot be written into the "
                             f"completion scripts (one word of {_CHOICE.pattern[:-2]})")
    return values


def _params(command: Any, ctx: Any) -> tuple[tuple[Opt, ...], tuple[Arg, ...]]:
    options: list[Opt] = []
    args: list[Arg] = []
    for param in command.get_params(ctx):  # includes the help option
        if getattr(param, "hidden", False):
            continue
        if param.param_type_name == "argument":
            args.append(Arg(metavar=param.metavar or param.name.upper(),
                            help=_short_help(getattr(param, "help", None)),
                            path=_path_kind(param), variadic=param.nargs == -1,
                            choices=_choices(param, ctx)))
            continue
        names = [*param.opts, *param.secondary_opts]
        is_flag = bool(getattr(param, "is_flag", False)) or bool(getattr(param, "count", False))
        options.append(Opt(
            long=tuple(n for n in names if n.startswith("--")),
            short=tuple(n for n in names if not n.startswith("--")),
            help=_short_help(getattr(param, "help", None)),
            takes_value=not is_flag,
            multiple=bool(param.multiple),
            metavar=param.metavar or (param.name or "VALUE").upper(),
            path=_path_kind(param),
            choices=_choices(param, ctx) if not is_flag else (),
        ))
    return tuple(options), tuple(args)


def command_tree(app: typer.Typer | None = None) -> tuple[Cmd, list[Cmd]]:
    """(the top-level command, the subcommands in registration order)."""
    if app is None:
        from .app import app as default_app

        app = default_app
    group = typer.main.get_command(app)
    root_ctx = typer.Context(group, info_name=PROG, **group.context_settings)
    top_opts, _ = _params(group, root_ctx)
    subs = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        if command.hidden:
            continue
        ctx = typer.Context(command, parent=root_ctx, info_name=name,
                            **command.context_settings)
        opts, args = _params(command, ctx)
        subs.append(Cmd(name=name, help=_short_help(command.short_help or command.help),
                        options=opts, args=args))
    return Cmd(name=PROG, help=_short_help(group.help), options=top_opts), subs


def lake_kind(arg: Arg) -> str | None:
    """'ref' for an argument naming a version (ARTIFACT@SELECTOR), 'artifact' for one naming
    an artifact (or a prefix of names), 'path' for a path inside the version the command's
    first argument (a REF) names, 'alias' for an alias of that argument's artifact (`alias`'s
    NAME), None otherwise: these are completed from the lake by `ckptlake __complete`
    (cli/complete.py), the rest statically."""
    if arg.path or arg.choices:
        return None
    if arg.metavar in ("PATH", "[PATH]..."):
        return "path"
    if arg.metavar == "NAME":
        return "alias"
    names = set(arg.metavar.split("|"))
    if "REF" in names or arg.metavar in ("A", "B"):
        return "ref"
    if names & {"ARTIFACT", "PREFIX"}:
        return "artifact"
    return None


def path_options(cmd: Cmd) -> list[Opt]:
    """--include/--exclude of a command whose arguments complete paths of a version: their
    GLOB values complete the same paths (a path is a glob matching itself)."""
    if not any(lake_kind(a) == "path" for a in cmd.args):
        return []
    return [o for o in cmd.options if o.takes_value and not o.path and not o.choices
            and set(o.long) & {"--include", "--exclude"}]


def _header(comment: str, install: str) -> list[str]:
    return [
        f"{comment} {PROG} shell completion, generated from the CLI's command tree.",
        f"{comment} Do not edit: regenerate with `{REGEN}`.",
        f"{comment} Commands, options and fixed values (cache ls|prune, --format, ...) are",
        f"{comment} static; artifact names, aliases, @vN/@step=N and the paths in a version come",
        f"{comment} from the lake (`{PROG} __complete`: cached, time-boxed).",
        f"{comment} {install}",
    ]


# --- bash -------------------------------------------------------------------------------------

def _bash_words(words: list[str]) -> str:
    return " ".join(words)


def _bash_choices(choices: tuple[str, ...]) -> str:
    return f"COMPREPLY=( $(compgen -W \"{_bash_words(list(choices))}\" -- \"$cur\") )"


def _bash_value_case(cmd: Cmd) -> list[str]:
    """Complete the value of an option that takes one (its fixed values, files for paths,
    nothing otherwise)."""
    if not any(o.takes_value for o in cmd.options):
        return []
    out = ["            case \"$prev\" in"]
    for o in cmd.options:
        if o.takes_value and o.choices:
            out.append(f"                {'|'.join((*o.long, *o.short))}) "
                       f"{_bash_choices(o.choices)}; return 0 ;;")
    for kind, fn in (("file", "_ckptlake_files"), ("any", "_ckptlake_files"),
                     ("dir", "_ckptlake_dirs")):
        names_k = [n for o in cmd.options if o.takes_value and o.path == kind and not o.choices
                   for n in (*o.long, *o.short)]
        if names_k:
            out.append(f"                {'|'.join(names_k)}) {fn} \"$cur\"; return 0 ;;")
    lake_opts = [n for o in path_options(cmd) for n in (*o.long, *o.short)]
    if lake_opts:  # --include/--exclude of a command with a PATH argument: paths in the version
        valued = [n for o in cmd.options if o.takes_value for n in (*o.long, *o.short)]
        out.append(f"                {'|'.join(lake_opts)}) _ckptlake_npos "
                   f"\"{_bash_words(valued)}\"; _ckptlake_lake path \"$cur\"; return 0 ;;")
    plain = [n for o in cmd.options if o.takes_value and o.path is None and not o.choices
             and o not in path_options(cmd) for n in (*o.long, *o.short)]
    if plain:
        out.append(f"                {'|'.join(plain)}) return 0 ;;  # free-form value")
    out.append("            esac")
    return out


def bash_script(top: Cmd, subs: list[Cmd]) -> str:
    names = [c.name for c in subs]
    top_words = [n for o in top.options for n in (*o.long, *o.short)]
    out = _header("#", "Install: source it from ~/.bashrc, or copy it to "
                       "/usr/share/bash-completion/completions/ckptlake.")
    out += [
        "",
        "_ckptlake_files() {",
        "    local IFS=$'\\n'",
        "    compopt -o filenames 2>/dev/null",
        "    COMPREPLY=( $(compgen -f -- \"$1\") )",
        "}",
        "",
        "_ckptlake_dirs() {",
        "    local IFS=$'\\n'",
        "    compopt -o filenames 2>/dev/null",
        "    COMPREPLY=( $(compgen -d -- \"$1\") )",
        "}",
        "",
        "# Artifact names, aliases and selectors ($1: ref or artifact), or the paths in the version",
        "# $ref names ($1: path), or the aliases of its artifact ($1: alias), from the lake",
        "# (_ckptlake_npos sets ref).  The word, and the words",
        "# handed to __complete, come from COMP_LINE split at blanks: COMP_WORDS splits",
        "# art@step=N at '@' and '=', and --lake file:///x at ':' (the lake would be 'file').",
        "# Readline replaces only what follows the word's last COMP_WORDBREAKS character, that",
        "# character included if it is '@' or '$' (rl_special_prefixes): the rest is cut off",
        "# the candidates, so that what bash keeps is kept.",
        "_ckptlake_lake() {",
        "    local word=\"$2\" keep=\"\" c j",
        "    local breaks=$' \\t\\n\"\\'@><=;|&(:'  # bash's default COMP_WORDBREAKS",
        "    [[ -n \"${COMP_WORDBREAKS+set}\" ]] && breaks=\"$COMP_WORDBREAKS\"",
        "    local -a extra=() words=( \"${COMP_WORDS[@]}\" )",
        "    if [[ \"$1\" == path || \"$1\" == alias ]]; then",
        "        [[ -n \"${ref-}\" ]] || return 0",
        "        extra=( \"$ref\" )",
        "    fi",
        "    if [[ -n \"${COMP_LINE-}\" ]]; then",
        "        word=\"${COMP_LINE:0:COMP_POINT}\"",
        "        word=\"${word##*[[:space:]]}\"",
        "        read -ra words <<< \"$COMP_LINE\"",
        "    fi",
        "    for (( j = ${#word} - 1; j >= 0; j-- )); do",
        "        c=\"${word:j:1}\"",
        "        if [[ \"$breaks\" == *\"$c\"* ]]; then",
        "            case \"$c\" in",
        "                @|\\$) keep=\"${word:0:j}\" ;;",
        "                *) keep=\"${word:0:j+1}\" ;;",
        "            esac",
        "            break",
        "        fi",
        "    done",
        "    local IFS=$'\\n'",
        "    COMPREPLY=( $(\"${COMP_WORDS[0]}\" __complete \"$1\" \"$word\" \"${extra[@]}\" -- \"${words[@]}\" 2>/dev/null) )",
        "    COMPREPLY=( \"${COMPREPLY[@]#\"$keep\"}\" )",
        "    if (( ${#COMPREPLY[@]} == 1 )) && [[ \"${COMPREPLY[0]}\" == */ ]]; then",
        "        compopt -o nospace 2>/dev/null",
        "    fi",
        "}",
        "",
        "# Sets npos to the number of positional words between the subcommand and the cursor,",
        "# skipping options and the values of the options listed in $1, and ref to the first.",
        "# Words come from COMP_LINE split at blanks: COMP_WORDS splits art@step=N at '@' and '='.",
        "_ckptlake_npos() {",
        "    local valued=\" $1 \" w i skip=0 start=0 cword",
        "    local -a words",
        "    if [[ -n \"${COMP_LINE-}\" ]]; then",
        "        read -ra words <<< \"${COMP_LINE:0:COMP_POINT}\"",
        "        [[ \"${COMP_LINE:0:COMP_POINT}\" == *[[:space:]] ]] && words+=(\"\")",
        "    else",
        "        words=( \"${COMP_WORDS[@]:0:COMP_CWORD+1}\" )",
        "    fi",
        "    cword=$(( ${#words[@]} - 1 ))",
        "    for (( i = 1; i < cword; i++ )); do",
        "        if [[ \"${words[i]}\" == \"$cmd\" ]]; then start=$i; break; fi",
        "    done",
        "    npos=0 ref=\"\"",
        "    for (( i = start + 1; i < cword; i++ )); do",
        "        w=\"${words[i]}\"",
        "        if [[ \"$w\" == \"=\" ]]; then skip=1; continue; fi",
        "        if (( skip )); then skip=0; continue; fi",
        "        case \"$w\" in",
        "            --) (( npos == 0 && i + 1 < cword )) && ref=\"${words[i+1]}\"",
        "                (( npos += cword - i - 1 )); return ;;",
        "            --*=*) ;;",
        "            -*) [[ \"$valued\" == *\" $w \"* ]] && skip=1 ;;",
        "            *) (( npos == 0 )) && ref=\"$w\"; (( npos++ )) ;;",
        "        esac",
        "    done",
        "}",
        "",
        "_ckptlake() {",
        "    local cur prev cmd npos ref i",
        "    local -i cmd_index=0",
        "    COMPREPLY=()",
        "    cur=\"${COMP_WORDS[COMP_CWORD]}\"",
        "    prev=\"\"",
        "    (( COMP_CWORD > 0 )) && prev=\"${COMP_WORDS[COMP_CWORD-1]}\"",
        "    # --opt=value is split at '=' by COMP_WORDBREAKS: complete the value of --opt",
        "    if [[ \"$cur\" == \"=\" ]]; then prev=\"${COMP_WORDS[COMP_CWORD-1]}\"; cur=\"\";",
        "    elif [[ \"$prev\" == \"=\" ]] && (( COMP_CWORD > 1 )); then",
        "        prev=\"${COMP_WORDS[COMP_CWORD-2]}\"",
        "    fi",
        "    cmd=\"\"",
        "    for (( i = 1; i < COMP_CWORD; i++ )); do",
        "        case \"${COMP_WORDS[i]}\" in",
        f"            {'|'.join(names)}) cmd=\"${{COMP_WORDS[i]}}\"; cmd_index=i; break ;;",
        "        esac",
        "    done",
        "    case \"$cmd\" in",
        "        \"\")",
        *_bash_value_case(top),
        "            if [[ \"$cur\" == -* ]]; then",
        f"                COMPREPLY=( $(compgen -W \"{_bash_words(top_words)}\" -- \"$cur\") )",
        "            else",
        f"                COMPREPLY=( $(compgen -W \"{_bash_words(names)}\" -- \"$cur\") )",
        "            fi",
        "            ;;",
    ]
    for cmd in subs:
        all_words = [n for o in cmd.options for n in (*o.long, *o.short)]
        valued = [n for o in cmd.options if o.takes_value for n in (*o.long, *o.short)]
        out.append(f"        {cmd.name})")
        out += _bash_value_case(cmd)
        out += [
            "            if [[ \"$cur\" == -* ]]; then",
            f"                COMPREPLY=( $(compgen -W \"{_bash_words(all_words)}\" -- \"$cur\") )",
            "                return 0",
            "            fi",
        ]
        path_args = [(i, a) for i, a in enumerate(cmd.args)
                     if a.path or a.choices or lake_kind(a)]
        if path_args:
            out.append(f"            _ckptlake_npos \"{_bash_words(valued)}\"")
            out.append("            case \"$npos\" in")
            for i, a in path_args:
                pos = "*" if a.variadic else str(i)
                if a.choices:
                    out.append(f"                {pos}) {_bash_choices(a.choices)} ;;  "
                               f"# {a.metavar}")
                    continue
                if kind := lake_kind(a):
                    out.append(f"                {pos}) _ckptlake_lake {kind} \"$cur\" ;;  "
                               f"# {a.metavar}")
                    continue
                fn = "_ckptlake_dirs" if a.path == "dir" else "_ckptlake_files"
                out.append(f"                {pos}) {fn} \"$cur\" ;;  # {a.metavar}")
            out.append("            esac")
        out.append("            ;;")
    out += [
        "    esac",
        "    return 0",
        "}",
        "",
        "complete -F _ckptlake ckptlake",
        "",
    ]
    return "\n".join(out)


# --- zsh --------------------------------------------------------------------------------------

def _zq(text: str) -> str:
    """Quote for a single-quoted zsh word."""
    return text.replace("'", "'\\''")


def _zdesc(text: str) -> str:
    """An _arguments [explanation]: backslash-escape brackets (and backslashes)."""
    return _zq(text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]"))


def _zmsg(text: str) -> str:
    """An _arguments :message: field may not contain a bare colon."""
    return _zq(text.replace(":", "\\:"))


def _zsh_choices(choices: tuple[str, ...]) -> str:
    """An _arguments action offering these words."""
    return "(" + " ".join(choices) + ")"


def _zsh_option(opt: Opt, lake_paths: bool = False) -> str:
    names = [*opt.short, *opt.long]
    action = ""
    if opt.takes_value:
        completer = "_files -/" if opt.path == "dir" else ("_files" if opt.path else " ")
        if lake_paths:
            completer = "_ckptlake_lake path"
        if opt.choices:
            completer = _zsh_choices(opt.choices)

        action = f":{_zmsg(opt.metavar)}:{completer}"

    def spec(name: str) -> str:
        if not opt.takes_value:
            return name
        return f"{name}+" if not name.startswith("--") else f"{name}="

    star = "*" if opt.multiple else ""
    is_help = "--help" in opt.long or "--version" in opt.long
    if len(names) == 1:
        excl = "(- *)" if is_help else ""
        return f"'{excl}{star}{spec(names[0])}[{_zdesc(opt.help)}]{action}'"
    excl = "(- *)" if is_help else ("" if opt.multiple else f"({' '.join(names)})")
    braces = ",".join(spec(n) for n in names)
    return f"'{excl}{star}'{{{braces}}}'[{_zdesc(opt.help)}]{action}'"


def zsh_script(top: Cmd, subs: list[Cmd]) -> str:
    out = [f"#compdef {PROG}"]
    out += _header("#", "Install: put this file, named _ckptlake, in a directory on $fpath "
                        "before running compinit.")
    out += ["", "_ckptlake_commands() {", "  local -a commands", "  commands=("]
    out += [f"    '{_zq(c.name)}:{_zq(c.help)}'" for c in subs]
    out += ["  )", "  _describe -t commands 'ckptlake command' commands", "}", ""]
    out += [
        "# Artifact names, aliases and selectors (last argument: ref or artifact; _arguments",
        "# puts its compadd options first), or the paths in the version the first argument",
        "# names (path), or the aliases of its artifact (alias), from the lake; 'dir/' levels",
        "# get no space after them.",
        "_ckptlake_lake() {",
        "  local -a found dirs names extra",
        "  if [[ ${@[-1]} == (path|alias) ]]; then",
        "    [[ -n ${line[1]-} ]] || return 1",
        "    extra=( \"${(Q)line[1]}\" )",
        "  fi",
        "  found=( ${(f)\"$(ckptlake __complete ${@[-1]} \"$PREFIX\" \"${extra[@]}\" -- ckptlake "
        "\"${words[@]}\" 2>/dev/null)\"} )",
        "  dirs=( ${(M)found:#*/} )",
        "  names=( ${found:#*/} )",
        "  compadd \"${@[1,-2]}\" -Q -S '' -a dirs",
        "  compadd \"${@[1,-2]}\" -Q -a names",
        "}",
        "",
    ]
    for cmd in subs:
        lake_opts = path_options(cmd)
        specs = [_zsh_option(o, o in lake_opts) for o in cmd.options]
        for i, a in enumerate(cmd.args, start=1):
            completer = "_files -/" if a.path == "dir" else ("_files" if a.path else " ")
            if kind := lake_kind(a):
                completer = f"_ckptlake_lake {kind}"
            if a.choices:
                completer = _zsh_choices(a.choices)
            pos = "*" if a.variadic else str(i)
            specs.append(f"'{pos}:{_zmsg(a.metavar)}:{completer}'")
        out.append(f"_ckptlake_{cmd.name}() {{")
        out.append("  _arguments -s -S \\")
        out += [f"    {s} \\" for s in specs[:-1]]
        out.append(f"    {specs[-1]}")
        out += ["}", ""]
    top_specs = [_zsh_option(o) for o in top.options]
    out += [
        "_ckptlake() {",
        "  local curcontext=\"$curcontext\" state line ret=1",
        "  typeset -A opt_args",
        "  _arguments -C \\",
        *[f"    {s} \\" for s in top_specs],
        "    '1: :_ckptlake_commands' \\",
        "    '*:: :->command' && ret=0",
        "  case $state in",
        "    command)",
        "      curcontext=\"${curcontext%:*:*}:ckptlake-$words[1]:\"",
        "      case $words[1] in",
        *[f"        {c.name}) _ckptlake_{c.name} && ret=0 ;;" for c in subs],
        "      esac",
        "      ;;",
        "  esac",
        "  return ret",
        "}",
        "",
        "_ckptlake \"$@\"",
        "",
    ]
    return "\n".join(out)


# --- fish -------------------------------------------------------------------------------------

def _fq(text: str) -> str:
    """Quote as a single-quoted fish string."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_option(cond: str, opt: Opt, lake_paths: str = "") -> str:
    parts = [f"complete -c {PROG} -n {_fq(cond)}"]
    parts += [f"-s {n[1:]}" for n in opt.short]
    parts += [f"-l {n[2:]}" for n in opt.long]
    if opt.takes_value:
        parts.append("-r -F" if opt.path and not opt.choices else "-x")
    if opt.choices:
        parts.append(f"-a {_fq(' '.join(opt.choices))}")
    elif lake_paths:
        parts.append(f"-a {_fq(lake_paths)}")
    parts.append(f"-d {_fq(opt.help)}")
    return " ".join(parts)


def fish_script(top: Cmd, subs: list[Cmd]) -> str:
    # the options before the subcommand that take a value (--lake URL ...)
    top_valued = " ".join(n for o in top.options if o.takes_value for n in (*o.long, *o.short))
    out = _header("#", "Install: copy it to ~/.config/fish/completions/ckptlake.fish.")
    out += ["", f"complete -c {PROG} -f", ""]
    out += [
        "# Artifact names, aliases and selectors ($argv[1]: ref or artifact) from the lake, or",
        "# ($argv[1]: path) the paths in the version the first positional names, or ($argv[1]:",
        "# alias) the aliases of its artifact; $argv[2..] are then the subcommand's options",
        "# that take a value.",
        "function __ckptlake_lake",
        "    set -l tokens (commandline -opc)",
        "    if contains -- $argv[1] path alias",
        "        set -l ref (__ckptlake_positional $argv[2..-1])[1]",
        "        test -n \"$ref\"; or return 0",
        "        ckptlake __complete $argv[1] (commandline -ct) $ref -- $tokens 2>/dev/null",
        "        return 0",
        "    end",
        "    ckptlake __complete $argv[1] (commandline -ct) -- $tokens 2>/dev/null",
        "end",
        "",
        "# Whether the subcommand is $argv[1] (no argument: whether one is typed yet): the first",
        "# word after ckptlake that is neither an option nor the value of one.  Not",
        "# __fish_seen_subcommand_from: `ckptlake cache ls` is cache's, not ls's.",
        "function __ckptlake_using",
        "    set -l skip 0",
        "    for t in (commandline -opc)[2..-1]",
        "        if test $skip = 1",
        "            set skip 0",
        "            continue",
        "        end",
        "        switch $t",
        "            case '--*=*'",
        "            case '-*'",
        f"                contains -- $t {top_valued}; and set skip 1",
        "            case '*'",
        "                set -q argv[1]; or return 0",
        "                test $t = $argv[1]",
        "                return",
        "        end",
        "    end",
        "    return 1",
        "end",
        "",
        "# The positional words after the subcommand, one per line; $argv: the subcommand's",
        "# options that take a value.",
        "function __ckptlake_positional",
        "    set -l skip 0",
        "    set -l seen 0",
        "    for t in (commandline -opc)[2..-1]",
        "        if test $skip = 1",
        "            set skip 0",
        "            continue",
        "        end",
        "        switch $t",
        "            case '--*=*'",
        "            case '-*'",
        "                if test $seen = 0",
        f"                    contains -- $t {top_valued}; and set skip 1",
        "                else",
        "                    contains -- $t $argv; and set skip 1",
        "                end",
        "            case '*'",
        "                if test $seen = 0",
        "                    set seen 1",
        "                else",
        "                    echo $t",
        "                end",
        "        end",
        "    end",
        "end",
        "",
        "# Whether the word being typed is positional number $argv[1] (from 0; N+ for N or",
        "# later) after the subcommand; $argv[2..] are the subcommand's options that take a value.",
        "function __ckptlake_arg",
        "    set -l want $argv[1]",
        "    set -l n (count (__ckptlake_positional $argv[2..-1]))",
        "    string match -q -- '-*' (commandline -ct); and return 1",
        "    if string match -q -- '*+' $want",
        "        test $n -ge (string trim -r -c + -- $want)",
        "    else",
        "        test $n = $want",
        "    end",
        "end",
        "",
    ]
    out += [_fish_option("not __ckptlake_using", o) for o in top.options]
    out += [f"complete -c {PROG} -n {_fq('not __ckptlake_using')} -a {_fq(c.name)} "
            f"-d {_fq(c.help)}" for c in subs]
    for cmd in subs:
        cond = f"__ckptlake_using {cmd.name}"
        out += ["", f"# {cmd.name} " + " ".join(a.metavar for a in cmd.args)]
        valued = " ".join(n for o in cmd.options if o.takes_value for n in (*o.long, *o.short))
        lake_paths = f"(__ckptlake_lake path {valued})".replace(" )", ")")
        lake_opts = path_options(cmd)
        out += [_fish_option(cond, o, lake_paths if o in lake_opts else "")
                for o in cmd.options]
        if any(a.path for a in cmd.args):
            out.append(f"complete -c {PROG} -n {_fq(cond)} -F")
        for i, a in enumerate(cmd.args):
            pos = f"{i}+" if a.variadic else str(i)
            at = f"{cond}; and __ckptlake_arg {pos} {valued}".rstrip()
            if a.choices:
                out.append(f"complete -c {PROG} -n {_fq(at)} -a {_fq(' '.join(a.choices))}"
                           f" -d {_fq(a.metavar)}")
            elif kind := lake_kind(a):
                call = lake_paths if kind == "path" else \
                    f"(__ckptlake_lake alias {valued})".replace(" )", ")") if kind == "alias" \
                    else f"(__ckptlake_lake {kind})"
                out.append(f"complete -c {PROG} -n {_fq(at)} -a {_fq(call)}"
                           f" -d {_fq(a.metavar)}")
    out.append("")
    return "\n".join(out)


# --- entry point ------------------------------------------------------------------------------

def render(shell: str, app: typer.Typer | None = None) -> str:
    top, subs = command_tree(app)
    return {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}[shell](top, subs)


def write_all(directory: str | Path, app: typer.Typer | None = None) -> list[Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for shell, filename in FILES.items():
        path = directory / filename
        path.write_bytes(render(shell, app).encode("utf-8"))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ckptlake.cli.completions",
                                     description="Generate static shell completion scripts.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="DIR",
                       help="write ckptlake.bash, _ckptlake and ckptlake.fish into DIR")
    group.add_argument("--shell", choices=sorted(FILES), help="print one script on stdout")
    ns = parser.parse_args(argv)
    if ns.write:
        for path in write_all(ns.write):
            print(f"wrote {path}", file=sys.stderr)
    else:
        sys.stdout.write(render(ns.shell))
    return 0


if __name__ == "__main__":
    sys.exit(main())
