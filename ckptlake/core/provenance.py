"""What produced a version, recorded automatically at push: code, command, machine, versions.

Collected best-effort and fast: a missing `git`, a source outside any checkout or a slow
repository never fails or stalls a push (each git call has a short timeout).  The git state is
that of the checkout holding the pushed source, else of the current directory (checkpoints are
often written outside the code's repository, e.g. to /scratch, while the trainer runs from it).
"""
from __future__ import annotations

import datetime
import getpass
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from ..redact import redact, redact_argv, redact_tree
from .identity import environment_text

_GIT_TIMEOUT = 5.0


def _git(cwd: str, *args: str) -> str | None:
    try:
        # backslashreplace: a checkout under a directory whose name is not UTF-8 (see
        # identity.environment_text); strict, its root failed the push
        p = subprocess.run(["git", "-C", cwd, *args], capture_output=True, text=True,
                           encoding="utf-8", errors="backslashreplace",
                           timeout=_GIT_TIMEOUT, stdin=subprocess.DEVNULL,
                           env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def git_state(directory: str) -> dict[str, Any] | None:
    """{"commit", "dirty", "root"} of the checkout holding `directory`, or None.

    `dirty` counts changes to tracked files only: the pushed checkpoints themselves often lie,
    untracked, inside the checkout and would otherwise always make it dirty.
    """
    commit = _git(directory, "rev-parse", "HEAD")
    if not commit:
        return None
    status = _git(directory, "status", "--porcelain", "--untracked-files=no")
    root = _git(directory, "rev-parse", "--show-toplevel")
    return {"commit": commit, "dirty": None if status is None else bool(status),
            "root": root}


def redact_args(argv: Sequence[str]) -> list[str]:
    """The command line as it may be stored (ckptlake/redact.py: URL credentials and query
    values, `--meta token=...`, `--api-key X`)."""
    return redact_argv(argv)


def collect(source: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    from .. import __version__

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory was removed
        cwd = None
    # every text from the environment as it can be stored (identity.environment_text)
    out: dict[str, Any] = {
        "command": redact_args([environment_text(a) for a in sys.argv]),
        "cwd": None if cwd is None else environment_text(cwd),
        "hostname": environment_text(socket.gethostname()),
        "user": environment_text(user),
        "python": platform.python_version(),
        "ckptlake": __version__,
    }
    candidates = []
    if source is not None:
        p = Path(source).absolute()
        candidates.append(str(p if p.is_dir() else p.parent))
    if cwd is not None:
        candidates.append(cwd)
    for directory in candidates:
        state = git_state(directory)
        if state is not None:
            out["git"] = state
            break
    return out


# A run's hyper-parameters take kilobytes; every byte of a --meta-file lands in the manifest that
# every ls/show/pull reads.  (A --meta-file /dev/zero ran the push out of memory.)
MAX_META_FILE = 1 << 20


def load_meta_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Metadata from a JSON or YAML mapping (e.g. the run's hyper-parameters).

    Nested mappings are flattened with dots (`optimizer.lr`); values are stored as strings:
    strings as they are, anything else as JSON (`3e-4` -> "0.0003", `[1, 2]` -> "[1, 2]").
    Secret-named keys are masked at any depth before that (ckptlake/redact.py `redact_tree`):
    inside a list turned into JSON text (`callbacks: [{api_key: ...}]`) nothing would tell.
    """
    import json

    from ..errors import UsageError

    p = Path(path)
    try:
        with open(p, "rb") as f:  # at most the limit and one byte: a pipe (<(...)) is fine
            raw = f.read(MAX_META_FILE + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read --meta-file {p}: {getattr(exc, 'strerror', None) or exc}"
                         ) from None
    if len(raw) > MAX_META_FILE:
        raise UsageError(f"--meta-file {p} is larger than {MAX_META_FILE >> 20} MiB",
                         hint="it is stored in the version's manifest: pass the run's "
                              "parameters, push large files as files of the version")
    try:
        if p.suffix.lower() == ".json":
            doc = json.loads(text)
        else:
            import yaml  # JSON is YAML too: .yaml, .yml and anything else go through here

            doc = yaml.safe_load(text)
    except ValueError as exc:  # json.JSONDecodeError
        raise UsageError(f"--meta-file {p} is not valid JSON: {exc}") from None
    except RecursionError:  # json's and yaml's parsers alike
        raise UsageError(f"--meta-file {p} is nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - yaml.YAMLError, without importing yaml early
        raise UsageError(f"--meta-file {p} is not valid YAML: {_yaml_problem(exc, text)}"
                         ) from None
    if not isinstance(doc, dict):
        raise UsageError(f"--meta-file {p} must hold a mapping of keys to values")
    try:
        doc = redact_tree(doc)
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"--meta-file {p}: {exc}") from None
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
            return
        if prefix in out:
            # `a.b: 1` beside `a: {b: 2}`, or `1:` beside `"1":`: one would be lost unsaid
            raise UsageError(f"--meta-file {p}: the key {prefix!r} is given twice (a dotted "
                             "key and a nested one, or a number and a string)")
        if isinstance(value, str):
            out[prefix] = value
        elif isinstance(value, (datetime.date, datetime.time)):
            out[prefix] = value.isoformat()  # YAML's `release: 2026-12-01`, without quotes
        else:
            out[prefix] = json.dumps(value, default=str, separators=(", ", ": "))

    if doc:
        walk("", doc)
    return out


def _yaml_problem(exc: BaseException, text: str) -> str:
    """What is wrong with a meta file and where, without PyYAML's quote of the offending
    lines: a meta file holds tokens, and the error lands in CI logs (as policy/config.py)."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if problem is None and isinstance(getattr(exc, "character", None), (int, str)):
        char = exc.character  # type: ignore[attr-defined]  # yaml.reader.ReaderError
        code = char if isinstance(char, int) else ord(char[:1] or "\0")
        position = getattr(exc, "position", 0) or 0
        return f"unacceptable character #x{code:04x} on line {text[:position].count(chr(10)) + 1}"
    if problem is None:
        return type(exc).__name__
    context = getattr(exc, "context", None)
    message = redact(str(problem)) + (f" ({redact(str(context))})"
                                      if context and context != problem else "")
    if mark is not None:
        message += f" on line {mark.line + 1}, column {mark.column + 1}"
    return message
