"""`ckptlake cache ls|prune`: look at and trim the local chunk cache (core/cache.py)."""
from __future__ import annotations

import errno
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .help import epilog, examples
from .options import CommonOptions, ConfigOpt, DebugOpt, JsonOpt, QuietOpt
from .output import Output, format_bytes, plain_table, plural

HELP = ("Show or trim the local chunk cache that pulls read through.\n\n"
        "ACTION is ls (where it is, how many chunks, how many bytes of its bound, and which "
        "versions were pulled through it, with how much of each is still cached) or prune "
        "(delete least recently used chunks down to its bound, to --max-size, or --all).")
EPILOG = epilog(
    examples("ckptlake cache ls", "ckptlake cache prune --max-size 5GiB --dry-run"),
    "The cache is opt-in: cache: {dir: DIR, size: SIZE} in ckptlake.yaml, or $CKPTLAKE_CACHE=DIR "
    "(and $CKPTLAKE_CACHE_SIZE=SIZE; default size 20GiB).  It holds chunks by digest, so one "
    "cache serves every lake; each chunk is verified when read, and a corrupt one is deleted "
    "and downloaded again.  Pulls evict least recently used chunks beyond the bound themselves; "
    "prune is for making room now.  Deleting the directory is always safe.")

ACTIONS = ("ls", "prune")


def cache(
    action: Annotated[str, typer.Argument(
        metavar="ACTION", show_default=False, help="ls or prune.",
        autocompletion=lambda: ACTIONS)],  # what the completion scripts offer (completions.py)
    max_size: Annotated[Optional[str], typer.Option(
        "--max-size", metavar="SIZE", show_default=False,
        help="prune: keep at most SIZE (e.g. 5GiB) instead of the cache's bound.")] = None,
    all_: Annotated[bool, typer.Option(
        "--all", help="prune: delete every cached chunk.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="prune: say what would be deleted; delete nothing.")] = False,
    directory: Annotated[Optional[Path], typer.Option(
        "--dir", metavar="DIR", file_okay=False, show_default=False,
        help="The cache directory (default: $CKPTLAKE_CACHE, else cache: in the config).")]
        = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Works without a lake: the cache is local and shared by every lake."""
    common = CommonOptions(config=config, json=json_, quiet=quiet, debug=debug)
    out = Output(common)
    with out.guard():
        from ..core.cache import DEFAULT_CACHE_SIZE, ChunkCache
        from ..errors import NotFound, UsageError
        from ..policy.config import check_cache_dir, load_config, parse_size, resolve_cache

        if action not in ACTIONS:
            raise UsageError(f"unknown cache action {action!r}", hint="use ls or prune")
        if action == "ls" and (max_size is not None or all_ or dry_run):
            raise UsageError("--max-size, --all and --dry-run go with prune, not ls")
        if max_size is not None and all_:
            raise UsageError("give --max-size or --all, not both")
        limit = parse_size(max_size) if max_size is not None else None
        setting = resolve_cache(load_config(str(config) if config else None))
        if directory is not None:
            # A configured cache that no pull has made yet is empty; a --dir that is not
            # there is a typo, which "0 chunks" and exit 0 would hide.  (A file is refused
            # by the option.)
            if not directory.is_dir():
                raise NotFound(f"{directory}: no such directory",
                               hint="check the path, or leave --dir out for the configured "
                                    "cache")
            size = setting.size if setting is not None else None
            where, origin = str(directory), "--dir"
            if not ChunkCache(where, 1).holds_cache(strict=True) and any(directory.iterdir()):
                # the other typo: a directory that exists and is something else
                raise NotFound(f"{directory} holds no chunk cache (no chunks/sha256/, "
                               "chunks/blake3/ or .lock in it)",
                               hint="check the path, or leave --dir out for the configured "
                                    "cache")
        else:
            if setting is None:
                raise UsageError("no chunk cache is configured",
                                 hint="set cache: {dir: DIR, size: 20GiB} in ckptlake.yaml or "
                                      "$CKPTLAKE_CACHE=DIR, or name one with --dir")
            check_cache_dir(setting)
            where, origin, size = setting.dir, setting.origin, setting.size
        chunk_cache = ChunkCache(where, size or DEFAULT_CACHE_SIZE)
        if action == "ls":
            entries = chunk_cache.entries()
            st = chunk_cache.stats(entries)
            versions = chunk_cache.versions(entries)
            doc = {**st.to_dict(), "origin": origin, "versions": versions}
            age = (f"; least recently used {_ago(st.oldest_used)}"
                   if st.oldest_used is not None else "")
            human = (f"cache {st.dir} ({origin}): {plural(st.entries, 'chunk')}, "
                     f"{format_bytes(st.bytes)} of {format_bytes(st.max_size)}{age}")
            if versions:
                rows = [[f"{v['artifact']}@v{v['version']}",
                         f"{format_bytes(v['bytes_cached'])} of {format_bytes(v['bytes'])}",
                         v["pulled"], v["lake"]] for v in versions]
                human += "\n" + plain_table(("VERSION", "CACHED", "PULLED", "LAKE"), rows)
            out.result(doc, human)
            return
        target = 0 if all_ else limit if limit is not None else chunk_cache.max_size
        lock = Path(chunk_cache.dir) / ".lock"
        r = chunk_cache.trim(target, dry_run=dry_run, wait=True, on_wait=lambda: out.note(
            f"waiting for another process evicting from the cache (it holds {lock})..."))
        if chunk_cache.failure:
            raise _prune_failed(chunk_cache.failure, chunk_cache.failure_errno)
        if not dry_run:
            chunk_cache.versions()  # drops the records of versions with nothing left
        verb = "would delete" if dry_run else "deleted"
        out.result({**r.to_dict(), "origin": origin, "max_size": target},
                   f"{verb} {plural(r.entries_removed, 'chunk')} "
                   f"({format_bytes(r.bytes_removed)}) from {r.dir}; "
                   f"{plural(r.entries_left, 'chunk')} ({format_bytes(r.bytes_left)}) left")


def _prune_failed(message: str, err: int | None) -> Exception:
    """The error a failed prune exits with: its cause's class (README "Exit codes"), so a
    read-only cache is a permission problem (4), not a bad command line."""
    from ..errors import AccessDenied, Conflict, UsageError

    if err in (errno.EACCES, errno.EPERM, errno.EROFS):
        return AccessDenied(message, hint="prune as the user who owns the cache, or make it "
                                          "writable")
    if err == errno.EWOULDBLOCK:
        return Conflict(message, hint="run prune again once it is done")
    return UsageError(message)


def _ago(t: float) -> str:
    seconds = max(0.0, time.time() - t)
    for unit, n in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= n:
            return f"{plural(int(seconds // n), unit)} ago"
    return "just now"
