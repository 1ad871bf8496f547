"""The ckptlake.yaml config file: where it is found, what it may say, and where the lake is.

The file is parsed from PyYAML *nodes* rather than with ``yaml.safe_load`` because only nodes
keep their line numbers: every error names the file, the line and the key, and the line of every
key (including the nested retention/egress keys, validated later by the policy code) is kept in
``Config.lines`` so those later validators can do the same.  Building values from nodes also lets
us catch duplicate keys, which ``safe_load`` silently resolves to the last one.

Semantics worth knowing:

* a key whose value is null (``profile:`` or ``profile: ~``) is the same as leaving it out, so a
  section can be disabled by commenting out its body -- except ``lake:``, where a null is
  rejected because silently falling back to the embedded default would put checkpoints in an
  unexpected place;
* a relative plain path in ``lake:`` is relative to the config file's directory (a config in
  ``~/.config`` must not mean a different lake in every working directory); from ``--lake`` or
  ``$CKPTLAKE_LAKE`` it is relative to the current directory;
* YAML merge keys (``<<: *defaults``) work, explicit keys override merged ones.
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlparse

from ..errors import ConfigError, NotFound, UsageError
from ..format.header import MAX_CHUNK_SIZE as _HEADER_MAX_CHUNK_SIZE
from ..format.header import MIN_CHUNK_SIZE as _HEADER_MIN_CHUNK_SIZE
from ..redact import redact, redact_url
from ..store.base import DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT

if TYPE_CHECKING:
    import yaml
    from yaml.constructor import SafeConstructor
    from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode


def _import_yaml() -> None:
    """Bind PyYAML and the node classes the parsing code below uses.  Done by `_parse`, not at
    import: every command imports this module, most run without a config file, and PyYAML
    costs ~0.01-0.02 s to import (issue 13: start-up)."""
    global yaml, SafeConstructor, MappingNode, Node, ScalarNode, SequenceNode
    import yaml
    from yaml.constructor import SafeConstructor
    from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "CacheSetting",
    "Config",
    "CONFIG_FILENAME",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MULTIPART_THRESHOLD",
    "DEFAULT_PART_SIZE",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_READ_TIMEOUT",
    "KNOWN_KEYS",
    "MAX_CHUNK_SIZE",
    "MAX_CONCURRENCY",
    "MAX_TIMEOUT",
    "MIN_CHUNK_SIZE",
    "check_chunk_size",
    "check_concurrency",
    "check_part_settings",
    "check_timeout",
    "default_lake_dir",
    "find_config",
    "format_size",
    "load_config",
    "parse_seconds",
    "parse_size",
    "resolve_cache",
    "resolve_lake",
]

CONFIG_FILENAME = "ckptlake.yaml"

KiB, MiB, GiB, TiB = 2**10, 2**20, 2**30, 2**40
DEFAULT_CHUNK_SIZE = 16 * MiB
MIN_CHUNK_SIZE = _HEADER_MIN_CHUNK_SIZE  # the lake header holds the same bounds
MAX_CHUNK_SIZE = _HEADER_MAX_CHUNK_SIZE
DEFAULT_CONCURRENCY = 8
# Chunk objects of at least the threshold move in parts (transfer/parts.py).  Parts: S3 wants
# at least 5 MiB for every part but the last; the threshold may exceed the largest chunk, which
# turns parts off.
DEFAULT_MULTIPART_THRESHOLD = 256 * MiB  # like rclone's 200 MiB cutoff; why: docs/benchmarks.md
DEFAULT_PART_SIZE = 16 * MiB
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = MAX_CHUNK_SIZE
MAX_MULTIPART_THRESHOLD = 5 * GiB  # S3's single-PUT limit
MAX_CONCURRENCY = 256
MAX_TIMEOUT = 3600.0  # seconds; the defaults live with the store that uses them

# In the order the example file documents them (also the order used in hints).
KNOWN_KEYS: tuple[str, ...] = (
    "lake", "endpoint_url", "profile", "region", "chunk_size", "concurrency", "max_bandwidth",
    "multipart_threshold", "part_size", "connect_timeout", "read_timeout", "retention", "egress",
    "cache", "replicas",
)

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": KiB, "mib": MiB, "gib": GiB, "tib": TiB,
}
_SIZE_RE = re.compile(r"(?P<num>[0-9]+(?:\.[0-9]+)?)[ ]*(?P<unit>[A-Za-z]*)")
_SIZE_HINT = "write bytes or a number with a unit: 16MiB, 64 MiB, 1GiB, 512KiB, 32MB (MB = 10^6 bytes)"
_SECONDS_RE = re.compile(r"(?P<num>[0-9]+(?:\.[0-9]+)?)[ ]*(?P<unit>s|m)?")
_SECONDS_HINT = "write seconds as a number or with a unit: 60, 2.5, 90s, 2m"
_URL_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"


def line_of(lines: Mapping[str, int], key: str) -> int | None:
    """Line of a dotted/indexed key path ("retention.rules[0].keep_last") in `lines`, else of
    its nearest recorded parent, else None."""
    while key:
        if key in lines:
            return lines[key]
        cut = max(key.rfind("."), key.rfind("["))
        if cut <= 0:
            return None
        key = key[:cut]
    return None


@dataclass(frozen=True)
class Config:
    """What one config file says; every field is None when the file does not set it.

    ``retention`` and ``egress`` are plain dicts here: the policy code validates them, using
    ``lines`` / ``line_of`` to point at the offending line.
    """

    source: str | None = None
    lake: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None
    chunk_size: int | None = None
    concurrency: int | None = None
    max_bandwidth: int | None = None  # bytes per second
    multipart_threshold: int | None = None  # bytes
    part_size: int | None = None  # bytes
    connect_timeout: float | None = None  # seconds
    read_timeout: float | None = None  # seconds
    retention: dict | None = None
    egress: dict | None = None
    cache: "CacheSetting | None" = None
    replicas: list | None = None  # raw; validated by policy/replicas.py
    lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, key: str) -> int | None:
        """Line of `key`, else of its nearest recorded parent.

        Values reached through a YAML alias are not walked twice (that is what keeps an alias
        bomb cheap), so their inner paths are missing from ``lines``; the parent's line is the
        best place to point at then.
        """
        return line_of(self.lines, key)


@dataclass(frozen=True)
class CacheSetting:
    """Where the local chunk cache lives and how large it may grow (core/cache.py)."""

    dir: str  # absolute
    size: int | None  # bytes; None: the default
    origin: str  # what chose it, for messages


# --------------------------------------------------------------------------------------------
# Sizes and ranges (shared with the CLI's --chunk-size / --concurrency)


def parse_size(text: str | int) -> int:
    """Turn ``16MiB`` / ``64 MiB`` / ``32MB`` / ``16777216`` into bytes.

    Bare ``K``/``M``/``G`` are refused: half the world reads them as 10^n and half as 2^n, and a
    chunk size silently off by 5% changes dedup boundaries.  Range checks are the caller's.
    """
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise UsageError(f"not a size: {text!r}", hint=_SIZE_HINT)
    if isinstance(text, int):
        if text < 0:
            raise UsageError(f"size must not be negative, got {text}", hint=_SIZE_HINT)
        return text
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None or len(match["num"]) > 40:  # (no size has 40 digits; int() refuses 4,300)
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise UsageError(f"not a size: {shown!r}", hint=_SIZE_HINT)
    unit = match["unit"].lower()
    if unit not in _SIZE_UNITS:
        if unit in ("k", "m", "g", "t"):
            hint = (f"'{match['unit']}' is ambiguous: write {match['num']}{unit.upper()}iB "
                    f"(binary) or {match['num']}{unit.upper()}B (decimal)")
        else:
            hint = _SIZE_HINT
        raise UsageError(f"unknown size unit in {text!r}", hint=hint)
    value = Fraction(match["num"]) * _SIZE_UNITS[unit]
    if value.denominator != 1:
        raise UsageError(f"{text!r} is not a whole number of bytes", hint=_SIZE_HINT)
    return int(value)


def format_size(n: int) -> str:
    """Exact, human-readable size for messages (``16MiB``, ``1000000 bytes``)."""
    for unit, factor in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n} bytes"


def check_chunk_size(n: int) -> int:
    """Keep chunks within what multipart uploads and memory (concurrency x chunk) tolerate."""
    problem = _chunk_size_problem(n)
    if problem:
        raise UsageError(f"chunk size {problem}", hint="16MiB is the default")
    return n


def check_part_settings(multipart_threshold: int | None, part_size: int | None) -> None:
    """Part size within S3's limits (5 MiB .. 1 GiB here); threshold 5 MiB .. 5 GiB."""
    for what, n, problem in (
            ("multipart threshold", multipart_threshold, _threshold_problem),
            ("part size", part_size, _part_size_problem)):
        if n is not None and (text := problem(n)):
            raise UsageError(f"{what} {text}", hint=_PART_HINTS[what])


def check_concurrency(n: int) -> int:
    """Bound parallel transfers: 0 would hang, thousands would exhaust sockets and memory."""
    problem = _concurrency_problem(n)
    if problem:
        raise UsageError(f"concurrency {problem}", hint=f"{DEFAULT_CONCURRENCY} is the default")
    return n


def parse_seconds(value: str | int | float) -> float:
    """Turn ``60`` / ``2.5`` / ``90s`` / ``2m`` into seconds (a bare number is seconds).

    UsageError for anything else; range checks are the caller's (check_timeout).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UsageError(f"must be a number of seconds or a string like 90s, got "
                         f"{describe_value(value)}", hint=_SECONDS_HINT)
    if isinstance(value, str):
        match = _SECONDS_RE.fullmatch(value.strip())
        if match is None:
            raise UsageError(f"not a number of seconds: {value!r}", hint=_SECONDS_HINT)
        return float(match["num"]) * (60 if match["unit"] == "m" else 1)
    return float(value)


def check_timeout(seconds: float, what: str = "timeout") -> float:
    """A connect/read timeout: more than 0 (0 would fail every request) and at most an hour."""
    problem = _timeout_problem(seconds)
    if problem:
        raise UsageError(f"{what} {problem}", hint=_timeout_hint(what))
    return float(seconds)


def _timeout_problem(seconds: Any) -> str | None:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return f"must be a number of seconds, got {describe_value(seconds)}"
    if not 0 < seconds <= MAX_TIMEOUT:  # also refuses NaN
        return f"must be more than 0 and at most {MAX_TIMEOUT:g} seconds, got {seconds:g}"
    return None


def _timeout_hint(what: str) -> str:
    if "connect" in what:
        return f"{DEFAULT_CONNECT_TIMEOUT:g} (seconds) is the default"
    return f"{DEFAULT_READ_TIMEOUT:g} (seconds) is the default"


def _chunk_size_problem(n: int) -> str | None:
    return _size_problem(n, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE)


def _size_problem(n: Any, low: int, high: int) -> str | None:
    if isinstance(n, bool) or not isinstance(n, int):
        return f"must be a size in bytes, got {describe_value(n)}"
    if low <= n <= high:
        return None
    shown = format_size(n)
    exact = "" if shown.endswith("bytes") else f" ({n} bytes)"
    return f"must be between {format_size(low)} and {format_size(high)}, got {shown}{exact}"


def _threshold_problem(n: Any) -> str | None:
    return _size_problem(n, MIN_PART_SIZE, MAX_MULTIPART_THRESHOLD)


def _part_size_problem(n: Any) -> str | None:
    return _size_problem(n, MIN_PART_SIZE, MAX_PART_SIZE)


_PART_HINTS = {
    "multipart threshold": f"{format_size(DEFAULT_MULTIPART_THRESHOLD)} is the default; set it "
                           "above the chunk size to send every chunk in one PUT",
    "part size": f"{format_size(DEFAULT_PART_SIZE)} is the default",
}


def _concurrency_problem(n: int) -> str | None:
    if isinstance(n, bool) or not isinstance(n, int):
        return f"must be an integer, got {describe_value(n)}"
    if not 1 <= n <= MAX_CONCURRENCY:
        return f"must be between 1 and {MAX_CONCURRENCY}, got {n}"
    return None


# --------------------------------------------------------------------------------------------
# Finding the file


def _xdg_dir(var: str, fallback: str) -> Path:
    # The XDG spec says relative values must be ignored, so a stray "XDG_...=foo" cannot make
    # the location depend on the working directory.
    value = os.environ.get(var, "")
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def find_config(explicit: str | None, origin: str = "--config") -> Path | None:
    """Pick the config file: --config > $CKPTLAKE_CONFIG > ./ckptlake.yaml > XDG config dir.

    A path the user named (flag or env) must exist: silently ignoring a typo would run with a
    different lake than the one they asked for.  The implicit locations are simply skipped.
    """
    if explicit is not None:
        return _must_exist(explicit, origin)
    env = os.environ.get("CKPTLAKE_CONFIG", "")
    if env:
        return _must_exist(env, "$CKPTLAKE_CONFIG")
    here = Path.cwd() / CONFIG_FILENAME
    if here.is_file():
        _check_trusted(here)
        return here.absolute()
    home = _xdg_dir("XDG_CONFIG_HOME", ".config") / "ckptlake" / CONFIG_FILENAME
    return home.absolute() if home.is_file() else None


def _check_trusted(path: Path) -> None:
    """The working directory's config is read without being named, so whoever can put one
    there (a cloned repository, a shared directory, /tmp) would choose the lake and endpoint
    that an explicit --lake talks to, with the user's credentials (a push would send the
    checkpoint there).  As git does for repositories: it must be the user's own (or root's),
    and no one else may write it.  Naming it (--config) is the way to use another one."""
    try:
        st = path.stat()
    except OSError:
        return
    uid = os.getuid() if hasattr(os, "getuid") else None
    if uid is None:
        return
    others_write = bool(st.st_mode & 0o002) or (st.st_uid != uid and st.st_mode & 0o020)
    if st.st_uid in (uid, 0) and not others_write:
        return
    why = "others may write it" if others_write else f"it belongs to uid {st.st_uid}, not you"
    raise ConfigError(f"refusing to read {CONFIG_FILENAME} from the working directory: {why}",
                      path=str(path.absolute()),
                      hint=f"if you trust it, name it: --config ./{CONFIG_FILENAME} (or "
                           "$CKPTLAKE_CONFIG)")


def _must_exist(name: str, origin: str) -> Path:
    """Anything that exists and is not a directory will do: `--config <(...)` is a pipe
    (/dev/fd/63), not a regular file.  A missing path is exit 3 like every other missing local
    path (--meta-file, --policy, watch DIR); a directory is a usage error (exit 2)."""
    if not name.strip() and origin == "--config":  # Path("") is ".": "is a directory"
        raise UsageError("the config file's name is empty", hint="give a file's path")
    path = Path(os.path.expanduser(name))  # (Path.expanduser raises for ~nosuchuser)
    if not path.exists() or path.is_dir():
        what, error = (("is a directory", UsageError) if path.is_dir()
                       else ("does not exist", NotFound))
        if origin in ("--config", "$CKPTLAKE_CONFIG"):
            raise error(f"config file not found: {name} ({what}; from {origin})",
                        hint="fix the path, or drop it to use ./ckptlake.yaml or "
                             "~/.config/ckptlake/ckptlake.yaml")
        raise error(f"policy file not found: {name} ({what}; from {origin})",
                    hint="fix the path")
    return path.absolute()


# --------------------------------------------------------------------------------------------
# Loading


def load_config(explicit: str | None = None, *, origin: str = "--config") -> Config:
    """Find (see find_config) and validate the config file; no file means an empty Config.
    `origin` names where an explicit path came from (`--policy` for gc's policy file), for the
    error when it does not exist."""
    path = find_config(explicit, origin)
    if path is None:
        return Config()
    source = str(path)
    try:
        raw = _read_config(path)
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", path=source) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError("config file is not valid UTF-8", path=source,
                          line=raw[:exc.start].count(b"\n") + 1,
                          hint="save it as UTF-8") from exc
    return _parse(text, source)


# A pipe (`--config <(...)`) can be read only once, and one command may load its config twice
# (gc and du for the retention, then again to open the lake): the second read found it empty and
# quietly used the embedded default lake.  Its bytes are kept for the process, by inode, so
# another pipe reusing /dev/fd/63 later is read afresh.
_PIPED: dict[tuple[str, int, int], bytes] = {}


# A config file is a page of settings; anything far larger is a mistake (`--config /dev/zero`
# read for ever, a 200 MB file took 81 s and 640 MB before the command ran).
MAX_CONFIG_BYTES = 4 * 1024 * 1024


def _read_config(path: Path) -> bytes:
    if path.is_file():
        data = _read_bounded(path)
    else:
        st = path.stat()
        key = (str(path), st.st_dev, st.st_ino)
        if key not in _PIPED:
            _PIPED[key] = _read_bounded(path)
        data = _PIPED[key]
    return data


def _read_bounded(path: Path) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"is larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB: not a "
                          "config file", path=str(path), hint="check the path")
    return data


def _parse(text: str, source: str) -> Config:
    try:
        return _parse_nested(text, source)
    except RecursionError:
        # thousands of nested [ or { (PyYAML's composer and our builder recurse per level)
        raise ConfigError("is nested too deeply to be a config file", path=source,
                          hint="a config is a few levels of keys: see ckptlake.example.yaml"
                          ) from None


def _parse_nested(text: str, source: str) -> Config:
    _import_yaml()
    root = _compose(text, source)
    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL_TAG):
        return Config(source=source)  # empty, only comments, a bare '---' or 'null'
    builder = _Builder(source)
    if not isinstance(root, MappingNode):
        raise ConfigError(f"the top level must be a mapping of keys (lake: ..., chunk_size: ...), "
                          f"got {_node_kind(root)}", path=source, line=_line(root))
    values: dict[str, Any] = {}
    for key, (key_node, value_node) in builder.entries(root, "").items():
        if not isinstance(key, str):
            raise ConfigError(f"keys must be names, got {describe_value(key)}", path=source,
                              line=_line(key_node), hint=_valid_keys_hint())
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(key, KNOWN_KEYS, n=1, cutoff=0.6)
            hint = _section_hint(key) or (f"did you mean `{close[0]}`?" if close
                                          else _valid_keys_hint())
            if _credential_key(key):
                hint = ("credentials never go in ckptlake.yaml: they come from the AWS chain "
                        "($AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, "
                        "profile: or --profile); remove the key")
            raise ConfigError("unknown key", path=source, line=_line(key_node), key=key, hint=hint)
        values[key] = _CHECKS[key](builder, key, value_node)
    return Config(source=source, lines=builder.lines, **values)


def _compose(text: str, source: str) -> Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = f"invalid YAML: {exc.problem or exc.context}"
        if exc.context and exc.problem:
            message += f" ({exc.context}"
            if exc.context_mark is not None and exc.context_mark is not mark \
                    and exc.context_mark.line != mark.line:
                message += f" on line {exc.context_mark.line + 1}"
            message += ")"
        hint = "YAML does not allow tabs for indentation" if "'\\t'" in (exc.problem or "") \
            else "check the indentation and quoting around that line"
        raise ConfigError(message, path=source, line=mark.line + 1 if mark else None,
                          hint=hint) from exc
    except yaml.reader.ReaderError as exc:
        raise ConfigError(f"invalid YAML: unacceptable character #x{exc.character:04x}",
                          path=source, line=text[:exc.position].count("\n") + 1) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", path=source) from exc


class _Builder:
    """Builds plain Python values from nodes, recording each key path's line on the way."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[str, int] = {}
        self._scalars = SafeConstructor()
        self._built: dict[int, Any] = {}
        self._building: set[int] = set()
        self._merge_cache: dict[int, dict[Any, tuple[Node, Node]]] = {}

    def error(self, message: str, node: Node, key: str | None = None,
              hint: str | None = None) -> ConfigError:
        return ConfigError(message, path=self.source, line=_line(node), key=key or None,
                           hint=hint)

    def value(self, node: Node, path: str) -> Any:
        # An alias is the *same* node object; building it once keeps alias bombs linear.
        if id(node) in self._built:
            return self._built[id(node)]
        if id(node) in self._building:
            raise self.error("a YAML alias refers to the value that contains it", node, path)
        self._building.add(id(node))
        try:
            if isinstance(node, ScalarNode):
                result = self._scalar(node, path)
            elif isinstance(node, SequenceNode):
                result = []
                for index, item in enumerate(node.value):
                    item_path = f"{path}[{index}]"
                    self.lines[item_path] = _line(item)
                    result.append(self.value(item, item_path))
            else:
                result = {key: self.value(value_node, _join(path, key))
                          for key, (_, value_node) in self.entries(node, path).items()}
        finally:
            self._building.discard(id(node))
        self._built[id(node)] = result
        return result

    def _scalar(self, node: ScalarNode, path: str) -> Any:
        try:
            return self._scalars.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise self.error(f"invalid value: {exc.problem or exc.context}", node, path) from exc
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            raise self.error(f"invalid value {node.value!r}: {exc}", node, path) from exc

    def entries(self, node: MappingNode, path: str,
                record: bool = True) -> dict[Any, tuple[Node, Node]]:
        """Key -> (key node, value node), with merge keys applied and duplicates refused.

        `record` is off while collecting a merge source: its keys get recorded once, under the
        path of the mapping they are merged into, and only if no explicit key overrides them.
        """
        explicit: dict[Any, tuple[Node, Node]] = {}
        merged: dict[Any, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                for key, pair in self._merged(value_node, path).items():
                    merged.setdefault(key, pair)  # earlier merged mappings win, per YAML spec
                continue
            if not isinstance(key_node, ScalarNode):
                raise self.error(f"keys must be plain names, got {_node_kind(key_node)}",
                                 key_node, path)
            key = self._scalar(key_node, path)
            try:
                first = explicit.get(key)
            except TypeError as exc:  # an unhashable key from an exotic tag
                raise self.error(f"unusable key {key_node.value!r}", key_node, path) from exc
            if first is not None:
                raise self.error(
                    f"duplicate key (first set on line {_line(first[0])}); "
                    "YAML would silently keep only the last one",
                    key_node, _join(path, key), hint="remove one of them")
            explicit[key] = (key_node, value_node)
        result = {**merged, **explicit}
        if record:
            for key, (key_node, _) in result.items():
                self.lines[_join(path, key)] = _line(key_node)
        return result

    def _merged(self, node: Node, path: str) -> dict[Any, tuple[Node, Node]]:
        sources = node.value if isinstance(node, SequenceNode) else [node]
        result: dict[Any, tuple[Node, Node]] = {}
        for source in sources:
            if not isinstance(source, MappingNode):
                raise self.error("`<<` must merge a mapping or a list of mappings", source, path)
            if id(source) in self._building:
                raise self.error("a YAML alias refers to the value that contains it", source, path)
            if id(source) not in self._merge_cache:  # nested merges must not blow up either
                self._building.add(id(source))
                try:
                    self._merge_cache[id(source)] = self.entries(source, path, record=False)
                finally:
                    self._building.discard(id(source))
            for key, pair in self._merge_cache[id(source)].items():
                result.setdefault(key, pair)
        return result


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _node_kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return f"the value {node.value!r}"


def describe_value(value: Any) -> str:
    """How a wrong value is shown: in YAML terms, since that is what the user wrote."""
    if isinstance(value, str) and _EXPONENT_TEXT.fullmatch(value.strip()):
        # PyYAML (YAML 1.1) takes 1e-2 and 1.0e308 for text: "must be a number, got '1e-2'"
        # was a riddle
        return (f"{value!r} (text to YAML, which reads an exponent only after a dot and with a "
                "sign: write a plain number such as 0.01 or 1000, or 1.0e-2)")
    if value is None:
        return "null (an empty value)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


# a number with an exponent that YAML 1.1 reads as text (no dot, or no sign after the e)
_EXPONENT_TEXT = re.compile(r"[-+]?\d[\d_]*(?:[eE][-+]?\d+|\.\d*[eE]\d+)")


def _credential_key(key: str) -> bool:
    """A key that holds credentials (`aws_secret_access_key`, `token`, `password`)."""
    from ..redact import is_secret_name

    return is_secret_name(key)  # (aws_access_key_id too: `access` qualifies `key`)


def _section_hint(key: str) -> str | None:
    """Where a key of a section belongs, when it was written at the top level (a policy file
    with `rules:` and no `retention:` line is the usual case)."""
    from .egress import EGRESS_KEYS
    from .retention import RETENTION_KEYS, RULE_KEYS

    if key in RETENTION_KEYS:
        return "put it under `retention:`, indented"
    if key in RULE_KEYS:
        return "put it in a rule under `retention:` `rules:`, after `- match: GLOB`"
    if key in EGRESS_KEYS:
        return "put it under `egress:`, indented"
    return None


def _valid_keys_hint() -> str:
    return "valid keys: " + ", ".join(KNOWN_KEYS) + " (see ckptlake.example.yaml)"


# --------------------------------------------------------------------------------------------
# Per-key checks: (builder, key, value node) -> validated value or None


def _check_lake(b: _Builder, key: str, node: Node) -> str:
    value = b.value(node, key)
    if not isinstance(value, str) or not value.strip():
        raise b.error(f"must be a non-empty string, got {describe_value(value)}", node, key,
                      hint="e.g. s3://my-bucket/lakes/team or /mnt/shared/lake; "
                           "remove the key to use the embedded default")
    return value


def _check_name(b: _Builder, key: str, node: Node) -> str | None:
    value = b.value(node, key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise b.error(f"must be a non-empty string, got {describe_value(value)}", node, key)
    return value


def _http_url(value: str) -> bool:
    """An http(s) URL with a host, and a port if one is given (a port out of range, or an
    unclosed IPv6 bracket, made urllib raise: an internal error)."""
    try:
        parsed = urlparse(value)
        parsed.port  # noqa: B018 - raises ValueError for a bad one
    except ValueError:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.hostname)


def _check_endpoint(b: _Builder, key: str, node: Node) -> str | None:
    value = _check_name(b, key, node)
    if value is not None:
        if redact_url(value) != value:
            raise b.error(f"must not hold credentials or a query string, got "
                          f"{redact(value)!r}", node, key,
                          hint="credentials come from the environment, ~/.aws or the profile: key")
        if not _http_url(value):
            raise b.error(f"must be an http:// or https:// URL, got {redact(value)!r}", node, key,
                          hint="e.g. http://localhost:9000 for MinIO")
    return value


def _check_chunk_size(b: _Builder, key: str, node: Node) -> int | None:
    return _check_size(b, key, node, _chunk_size_problem, "16MiB is the default")


def _check_threshold(b: _Builder, key: str, node: Node) -> int | None:
    return _check_size(b, key, node, _threshold_problem, _PART_HINTS["multipart threshold"])


def _check_part_size(b: _Builder, key: str, node: Node) -> int | None:
    return _check_size(b, key, node, _part_size_problem, _PART_HINTS["part size"])


def _check_size(b: _Builder, key: str, node: Node, problem_of: Any, hint: str) -> int | None:
    value = b.value(node, key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise b.error(f"must be a size in bytes or a string like 16MiB, got {describe_value(value)}",
                      node, key, hint=_SIZE_HINT)
    try:
        size = parse_size(value)
    except UsageError as exc:
        raise b.error(exc.message, node, key, hint=exc.hint) from exc
    problem = problem_of(size)
    if problem:
        raise b.error(problem, node, key, hint=hint)
    return size


def _check_concurrency(b: _Builder, key: str, node: Node) -> int | None:
    value = b.value(node, key)
    if value is None:
        return None
    problem = _concurrency_problem(value)
    if problem:
        raise b.error(problem, node, key, hint=f"e.g. concurrency: {DEFAULT_CONCURRENCY}")
    return value


def _check_bandwidth(b: _Builder, key: str, node: Node) -> int | None:
    value = b.value(node, key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise b.error(f"must be bytes per second or a string like 50MiB, got {describe_value(value)}",
                      node, key, hint=_SIZE_HINT)
    try:
        return parse_rate(value)
    except UsageError as exc:
        raise b.error(exc.message, node, key, hint=exc.hint) from exc


def parse_rate(text: str | int) -> int:
    """A bandwidth limit (max_bandwidth:, --max-bandwidth) in bytes per second: a size,
    positive (0 would read as no limit), and no bare number below 1024: that is bytes, where
    rclone's --bwlimit 50 (the option the CLI points to --max-bandwidth) means 50 KiB/s, and a
    transfer crawling at 50 B/s is never what was meant."""
    rate = parse_size(text)
    if rate <= 0:
        raise UsageError("must be positive", hint="leave it out for no limit")
    if rate < 1024 and (isinstance(text, int) or text.strip().replace(".", "", 1).isdigit()):
        raise UsageError(f"a bare number is bytes: {rate} bytes per second, surely not what "
                         "was meant",
                         hint=f"give a unit (per second): {str(text).strip()}KiB, 50MiB, 400MB")
    return rate


def _check_timeout(b: _Builder, key: str, node: Node) -> float | None:
    value = b.value(node, key)
    if value is None:
        return None
    try:
        seconds = parse_seconds(value)
    except UsageError as exc:
        raise b.error(exc.message, node, key, hint=exc.hint) from exc
    problem = _timeout_problem(seconds)
    if problem:
        raise b.error(problem, node, key, hint=_timeout_hint(key))
    return seconds


def _check_section(b: _Builder, key: str, node: Node) -> dict | None:
    value = b.value(node, key)
    if value is not None and not isinstance(value, dict):
        raise b.error(f"must be a mapping of settings, got {describe_value(value)}", node, key,
                      hint="see ckptlake.example.yaml")
    return value


def _check_list(b: _Builder, key: str, node: Node) -> list | None:
    value = b.value(node, key)
    if value is not None and not isinstance(value, list):
        raise b.error(f"must be a list, got {describe_value(value)}", node, key,
                      hint="see ckptlake.example.yaml")
    return value


_CACHE_HINT = "e.g. cache: {dir: ~/.cache/ckptlake, size: 20GiB}, or cache: ~/.cache/ckptlake"


def _check_cache(b: _Builder, key: str, node: Node) -> CacheSetting | None:
    """`cache: DIR` or `cache: {dir: DIR, size: SIZE}`; a relative DIR is relative to the
    config file, as `lake:` is."""
    value = b.value(node, key)
    if value is None:
        return None
    size_node = None
    if isinstance(value, dict):
        entries = b.entries(node, key) if isinstance(node, MappingNode) else {}
        unknown = [k for k in value if k not in ("dir", "size")]
        if unknown:
            raise b.error("unknown key", entries[unknown[0]][0] if unknown[0] in entries
                          else node, f"{key}.{unknown[0]}", hint="cache: takes dir and size")
        if value.get("dir") is None:
            raise b.error("needs dir: (where to keep cached chunks)", node, key, hint=_CACHE_HINT)
        dir_node = entries["dir"][1] if "dir" in entries else node
        directory = value["dir"]
        size_node = entries["size"][1] if "size" in entries else None
    else:
        dir_node, directory = node, value
    if not isinstance(directory, str) or not directory.strip():
        raise b.error(f"the cache directory must be a non-empty path, got "
                      f"{describe_value(directory)}", dir_node, key, hint=_CACHE_HINT)
    size = None
    if size_node is not None:
        size = _check_size(b, f"{key}.size", size_node, _cache_size_problem, _CACHE_HINT)
    path = Path(os.path.expanduser(directory.strip()))
    if not path.is_absolute():
        path = (_base_dir(b.source) or Path.cwd()) / path
    return CacheSetting(dir=os.path.normpath(path), size=size,
                        origin=f"cache: in {b.source}")


def _cache_size_problem(n: Any) -> str | None:
    return _size_problem(n, 1 * MiB, 2**62)


def resolve_cache(config: Config) -> CacheSetting | None:
    """The chunk cache to use: $CKPTLAKE_CACHE (a directory; size from $CKPTLAKE_CACHE_SIZE) >
    cache: in the config > none (the cache is opt-in)."""
    env = os.environ.get("CKPTLAKE_CACHE", "").strip()
    env_size = os.environ.get("CKPTLAKE_CACHE_SIZE", "").strip()
    size = None
    if env_size:
        try:
            size = parse_size(env_size)
        except UsageError as exc:
            raise UsageError(f"$CKPTLAKE_CACHE_SIZE: {exc.message}", hint=exc.hint) from None
        if problem := _cache_size_problem(size):
            raise UsageError(f"$CKPTLAKE_CACHE_SIZE {problem}", hint="e.g. 20GiB")
    if env:
        return CacheSetting(dir=os.path.abspath(os.path.expanduser(env)), size=size,
                            origin="$CKPTLAKE_CACHE")
    if config.cache is not None:
        if size is not None:
            return CacheSetting(config.cache.dir, size, config.cache.origin)
        return config.cache
    return None


def check_cache_dir(setting: CacheSetting) -> CacheSetting:
    """For `cache ls|prune`: a cache naming a file (anything but a directory) is a usage error
    there ("0 chunks" hid it).  Not on open: every other command, `pull --no-cache` too, works
    without the cache, and a pull says once that it cannot write there."""
    if os.path.lexists(setting.dir) and not os.path.isdir(setting.dir):
        raise UsageError(f"the chunk cache {setting.dir} ({setting.origin}) is not a directory",
                         hint="name a directory (made on the first pull), or unset it")
    return setting


_CHECKS = {
    "lake": _check_lake,
    "endpoint_url": _check_endpoint,
    "profile": _check_name,
    "region": _check_name,
    "chunk_size": _check_chunk_size,
    "concurrency": _check_concurrency,
    "max_bandwidth": _check_bandwidth,
    "multipart_threshold": _check_threshold,
    "part_size": _check_part_size,
    "connect_timeout": _check_timeout,
    "read_timeout": _check_timeout,
    "retention": _check_section,
    "egress": _check_section,
    "cache": _check_cache,
    "replicas": _check_list,
}


# --------------------------------------------------------------------------------------------
# The lake


def default_lake_dir() -> Path:
    """Where a lake lives when nobody said: per-user data, so a first `push` just works."""
    return _xdg_dir("XDG_DATA_HOME", ".local/share") / "ckptlake" / "lake"


def resolve_lake(cli_lake: str | None, config: Config) -> tuple[str, str]:
    """Pick the lake URL (--lake > $CKPTLAKE_LAKE > config > default) and say where it came from.

    The origin phrase is shown next to the URL so that "why is it pushing *there*?" answers
    itself.  Plain paths become absolute ``file://`` URLs (percent-encoded, as file URLs are),
    so every caller sees one form.
    """
    if cli_lake is not None:
        if not cli_lake.strip():
            raise UsageError("--lake is empty", hint="give a URL such as s3://bucket/prefix or a path")
        return _as_url(cli_lake, None, "--lake"), "--lake"
    env = os.environ.get("CKPTLAKE_LAKE")
    if env is not None:
        # Set but empty is a CI secret that did not arrive (`CKPTLAKE_LAKE: ${{ secrets.X }}`):
        # read as unset, the push went to the runner's own disk with exit 0.
        if not env.strip():
            raise UsageError("$CKPTLAKE_LAKE is set but empty",
                             hint="set it to a lake URL, or unset it (unset CKPTLAKE_LAKE) to "
                                  "use the config file's lake or the embedded default")
        return _as_url(env, None, "$CKPTLAKE_LAKE"), "$CKPTLAKE_LAKE"
    if config.lake is not None:
        base = _base_dir(config.source)
        where = f"lake: in {config.source or 'the config'}"
        return _as_url(config.lake, base, where), where
    return default_lake_dir().as_uri(), "embedded default"


def _base_dir(source: str | None) -> Path | None:
    """What a config's relative paths (lake:, cache.dir) are relative to: its file's directory,
    where it lives beside what it names; a config read from a pipe (`--config <(...)`, as
    /dev/fd/63) has none, and /dev/fd/lake named nothing: then the working directory (None)."""
    if not source or source.startswith(("/dev/", "/proc/")) or (
            os.path.exists(source) and not os.path.isfile(source)):
        return None  # (/dev/stdin of a file redirected in is a file: its directory is /dev)
    return Path(source).parent


def named_lake(config: Config) -> str | None:
    """The lake URL a config file's `lake:` names (relative paths as resolve_lake takes them),
    or None: what a --policy file says of its lake, which gc must not silently ignore."""
    if config.lake is None:
        return None
    return _as_url(config.lake, _base_dir(config.source))


def same_location(a: str, b: str) -> bool:
    """Whether two lake URLs name one place: file URLs by their resolved paths (symlinks,
    percent-encoding), others by their text without a trailing slash."""
    from urllib.parse import unquote, urlsplit

    def key(url: str) -> str:
        if url.startswith("file:"):
            return "file:" + os.path.realpath(unquote(urlsplit(url).path))
        return url.rstrip("/")

    return key(a) == key(b)


def check_endpoint_option(value: str | None, option: str = "--endpoint-url") -> None:
    """An endpoint given empty is refused, as an empty --lake is: dropped, it would send the
    requests to AWS S3 (failing after retries, exit 8) instead of the store the user meant."""
    if value is not None and not value.strip():
        raise UsageError(f"{option} is empty",
                         hint="give a URL such as http://localhost:9000, or leave it out for "
                              "AWS S3")
    if value is not None:
        if not _http_url(value.strip()):
            # as endpoint_url: in a config file; botocore's own refusal came after the
            # retries' budget as a storage error (exit 8)
            raise UsageError(f"{option} must be an http:// or https:// URL, got "
                             f"{redact(value)!r}", hint="e.g. http://localhost:9000 for MinIO")


# A URL written with one slash (`file:/data/lake`, `s3:/bucket/x`): taken as a path, it was a
# directory named "file:" under the working directory, created by the first push.  Only the
# schemes of lakes and object stores: `data:2024/lake` is a directory name like any other.
_HALF_URL_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):/*(.*)", re.S)
_LAKE_SCHEMES = {"file", "s3", "s3a", "s3n"}
_OTHER_SCHEMES = {"gs", "gcs", "az", "abfs", "abfss", "wasb", "wasbs", "http", "https", "hdfs"}


def _as_url(text: str, base: Path | None, what: str = "the lake") -> str:
    text = text.strip()
    if _URL_SCHEME_RE.match(text):
        return text
    half = _HALF_URL_RE.fullmatch(text)
    scheme = half.group(1).lower() if half else ""
    if scheme in _LAKE_SCHEMES or scheme in _OTHER_SCHEMES:
        rest = half.group(2)  # type: ignore[union-attr]
        meant = (f"file:///{rest}" if scheme == "file" else f"s3://{rest}"
                 if scheme in _LAKE_SCHEMES else "s3://bucket/prefix, file:///path or a path")
        # (no '?' or ':' right after the URL: the redaction of the line would take it along)
        raise UsageError(f"{what} {text!r} is neither a URL (scheme://...) nor a path",
                         hint=f"write {meant} (./{text} for a directory of that name)")
    path = Path(os.path.expanduser(text))  # (~nosuchuser stays as written, as in a shell)
    if not path.is_absolute():
        path = (base if base is not None else Path.cwd()) / path
    return Path(os.path.normpath(path)).as_uri()
