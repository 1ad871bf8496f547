"""`ckptlake push SOURCE ARTIFACT`: upload a file or directory as the next version."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .help import epilog, examples
from .options import (ConcurrencyOpt, MaxBandwidthOpt, ConfigOpt, DebugOpt, EndpointOpt, JsonOpt, LakeOpt,
                      ProfileOpt, QuietOpt, RegionOpt, CommonOptions, check_source, parse_pairs)
from .output import Output, format_bytes, lake_origin, lake_url, open_lake, push_summary

HELP = (
    "Upload SOURCE (a file or a directory) as the next version of ARTIFACT.\n\n"
    "Chunks already in the lake are not uploaded again.  The version is committed atomically "
    "at the end: an interrupted or failed push leaves no version behind (one interrupted "
    "after that commit says so, naming the version).")
EPILOG = epilog(
    examples("ckptlake push ckpt/step_2000 gpt2/run-7/ckpt --step 2000 --metric loss=2.31 "
             "--meta git=abc123 --alias best",
             "ckptlake push out/model gpt2/run-7/model --parent gpt2/run-7/ckpt@latest "
             "--parent gpt2/base@v1:fine-tuned-from --input 's3://data/wiki#sha256:ab12' "
             "--meta-file params.yaml  # with lineage"),
    "Lineage: parents are stored as the version numbers they name now.  Recorded "
    "automatically: git commit and dirty flag of the source's checkout (else the current "
    "directory's), command line, host, user, Python and ckptlake versions; .safetensors files "
    "get per-tensor digests for diff.")

# The values of --relation, --compression and --hash, defined by the lake format: the command
# checks them, and the shell completion scripts (completions.py) offer them.  Imported when
# asked for, not when the options are built (`ckptlake push` start-up).
def _relations() -> tuple[str, ...]:
    from ..format.manifest import RELATIONS

    return RELATIONS


def _compression_modes() -> tuple[str, ...]:
    from ..format.codecs import COMPRESSION_MODES

    return COMPRESSION_MODES


def _hashes() -> tuple[str, ...]:
    from ..format.header import SUPPORTED_HASHES

    return SUPPORTED_HASHES


def push(
    # readable=False: an unreadable SOURCE is the library's AccessDenied (exit 4), as anything
    # unreadable inside it is, not click's usage error (exit 2).  Parsed as str: a Path turns
    # "" (an unset $CKPT) into ".", and the push uploaded the current directory.
    source: Annotated[Path, typer.Argument(
        metavar="SOURCE", show_default=False, readable=False, parser=str,
        help="File or directory to upload.")],
    artifact: Annotated[str, typer.Argument(
        metavar="ARTIFACT", show_default=False,
        help="Artifact to add a version to, e.g. gpt2/run-7/ckpt (no @selector).")],
    step: Annotated[Optional[int], typer.Option(
        "--step", metavar="N", min=0, show_default=False,
        help="Training step of this checkpoint (integer >= 0); select it later with @step=N.")]
        = None,
    metric: Annotated[Optional[list[str]], typer.Option(
        "--metric", metavar="KEY=VALUE", show_default=False,
        help="Numeric metric to record, e.g. loss=2.31 (repeatable).")] = None,
    meta: Annotated[Optional[list[str]], typer.Option(
        "--meta", metavar="KEY=VALUE", show_default=False,
        help="Free-form string metadata, e.g. git=abc123 (repeatable).")] = None,
    alias: Annotated[Optional[list[str]], typer.Option(
        "--alias", metavar="NAME", show_default=False,
        help="Point alias NAME at the new version (repeatable).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(
        "--exclude", metavar="GLOB", show_default=False,
        help="Skip files matching GLOB, relative to SOURCE (repeatable).")] = None,
    follow_symlinks: Annotated[bool, typer.Option(
        "--follow-symlinks", help="Upload what symlinks point to instead of the links.")]
        = False,
    parent: Annotated[Optional[list[str]], typer.Option(
        "--parent", metavar="REF[:RELATION]", show_default=False,
        help="A version this one was made from (repeatable), fixed to its version number now; "
             "e.g. base/model@v3:fine-tuned-from.")] = None,
    relation: Annotated[Optional[str], typer.Option(
        "--relation", metavar="RELATION", show_default=False,
        help="Relation of --parent without a :RELATION suffix: derived-from (default), "
             "resumed-from, fine-tuned-from or evaluated-from.",
        autocompletion=_relations)] = None,
    input_: Annotated[Optional[list[str]], typer.Option(
        "--input", metavar="URI[#DIGEST]", show_default=False,
        help="A dataset or other input this version was made from (repeatable), e.g. "
             "s3://data/wiki#sha256:ab12.")] = None,
    meta_file: Annotated[Optional[Path], typer.Option(
        "--meta-file", metavar="FILE", show_default=False, dir_okay=False,
        help="JSON or YAML mapping to record as metadata, e.g. hyper-parameters (nested keys "
             "joined with dots; --meta wins on a clash).")] = None,
    shard: Annotated[Optional[str], typer.Option(
        "--shard", metavar="RANK/WORLD", show_default=False,
        help="Push rank RANK's files of a checkpoint written by WORLD ranks (needs --step); "
             "the version is committed once, when all WORLD ranks are in.")] = None,
    save_id: Annotated[Optional[str], typer.Option(
        "--save-id", metavar="ID", show_default=False,
        help="With --shard: an id the same on every rank of one save and new for each "
             "attempt, so that a re-run never commits a crashed save's leftover shards with "
             "its own (the scheduler's job id and attempt number, say).")] = None,
    chunk_size: Annotated[Optional[str], typer.Option(
        "--chunk-size", metavar="SIZE", show_default=False,
        help="Chunk size for upload and dedup, e.g. 16MiB (default: from the config).")] = None,
    compression: Annotated[Optional[str], typer.Option(
        "--compression", metavar="auto|none", show_default=False,
        help="Store chunks compressed where that saves bytes (auto) or raw (none); default: "
             "the lake's setting (auto for new lakes, none for lakes made before compression).",
        autocompletion=_compression_modes)] = None,
    hash_: Annotated[Optional[str], typer.Option(
        "--hash", metavar="sha256|blake3", show_default=False,
        help="Chunk hash of the lake this push creates (default blake3, which hashes ~5x "
             "faster; sha256 where SHA-256 keys are required). An existing lake keeps its "
             "own; naming another is refused.",
        autocompletion=_hashes)] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run",
        help="Read and hash SOURCE, look each chunk up in the lake and say what the push would "
             "upload (after compression) and which version it would be; write nothing.")
    ] = False,
    concurrency: ConcurrencyOpt = None,
    max_bandwidth: MaxBandwidthOpt = None,
    lake: LakeOpt = None,
    endpoint_url: EndpointOpt = None,
    profile: ProfileOpt = None,
    region: RegionOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Validate everything cheap (names, metrics, sizes) before opening the lake, so a typo
    fails in milliseconds with exit 2 instead of after connecting to storage."""
    common = CommonOptions(lake=lake, endpoint_url=endpoint_url, profile=profile, region=region,
                           config=config, json=json_, quiet=quiet, debug=debug)
    out = Output(common)
    with out.guard():
        from ..format.layout import check_step
        from ..format.refs import validate_alias, validate_artifact

        validate_artifact(artifact)
        source = check_source(source, "SOURCE")
        if step is not None:
            check_step(step, "--step")
        metrics = parse_pairs(metric, "--metric", numeric=True)
        metadata = parse_pairs(meta, "--meta", numeric=False)
        aliases = [validate_alias(name) for name in alias or []]
        lineage = parse_lineage(parent, relation, input_)
        if meta_file is not None:
            from ..core.provenance import load_meta_file

            if not meta_file.exists():  # a missing local path, as a missing SOURCE: exit 3
                from ..errors import NotFound

                raise NotFound(f"--meta-file {meta_file} does not exist", hint="fix the path")
            metadata = {**load_meta_file(meta_file), **metadata}
        if shard is not None and (parent or input_):
            from ..errors import UsageError

            raise UsageError("--parent and --input cannot be combined with --shard yet")
        if shard is not None and dry_run:
            from ..errors import UsageError

            raise UsageError("--dry-run cannot be combined with --shard yet",
                             hint="try the rank's directory with a plain push --dry-run")
        size = None
        if chunk_size is not None:
            from ..policy.config import parse_size

            size = parse_size(chunk_size)
        if compression is not None and compression not in _compression_modes():
            from ..errors import UsageError

            raise UsageError(f"--compression must be {' or '.join(_compression_modes())}, "
                             f"not {compression!r}")
        if hash_ is not None:
            from ..errors import UsageError

            if shard is not None:
                raise UsageError("--hash cannot be combined with --shard yet",
                                 hint="create the lake with a plain push --hash first")
            if hash_ not in _hashes():
                raise UsageError(f"--hash must be {' or '.join(_hashes())}, not {hash_!r}")
        rank_world = parse_shard(shard, step) if shard is not None else None
        if save_id is not None:
            from ..format.refs import validate_save_id

            if shard is None:
                from ..errors import UsageError

                raise UsageError("--save-id needs --shard RANK/WORLD: it names one save of a "
                                 "sharded checkpoint")
            validate_save_id(save_id)
        handle = open_lake(common, chunk_size=size, concurrency=concurrency,
                           max_bandwidth=max_bandwidth)
        try:
            out.lake_line(handle)
            check_lake_outside(handle, source, exclude or [])
            if rank_world is not None:
                with out.progress() as progress:
                    if progress is None and out.json:
                        progress = _notes_only()
                    shard_result = handle.push_shard(
                        source, artifact, step=step, rank=rank_world[0], world=rank_world[1],
                        metrics=metrics, metadata=metadata, aliases=aliases,
                        exclude=list(exclude or []), follow_symlinks=follow_symlinks,
                        progress=progress, compression=compression, save_id=save_id)
                for warning in shard_result.warnings:
                    out.warn(warning)
                doc = {**shard_result.to_dict(), "lake": lake_url(handle),
                       "lake_origin": lake_origin(handle)}
                out.result(doc, shard_summary(shard_result),
                           done=f"pushed shard {shard_result.rank}/{shard_result.world} of "
                                f"{shard_result.artifact} step {shard_result.step}")
                return
            with out.progress() as progress:
                result = handle.push(source, artifact, step=step, metrics=metrics,
                                     metadata=metadata, aliases=aliases,
                                     exclude=list(exclude or []),
                                     follow_symlinks=follow_symlinks, progress=progress,
                                     compression=compression,
                                     hash=hash_, dry_run=dry_run, **lineage)
            for warning in getattr(result, "warnings", ()):
                out.warn(warning)
            doc = {**result.to_dict(), "lake": lake_url(handle),
                   "lake_origin": lake_origin(handle)}
            out.result(doc, push_summary(result),
                       done=None if getattr(result, "dry_run", False) else
                       f"pushed {result.artifact}@v{result.version}")
        finally:
            handle.close()


def _notes_only() -> Any:
    """A sharded push's progress under --json: only its notes, on stderr, one line each.  A
    rank waits up to minutes for another rank's commit (core/shards.py says so in a note), and
    a rank that prints nothing meanwhile looks hung in the job's log; stdout stays the one
    document, and retries and the bar stay off as --json has them.  (--quiet: errors only.)"""
    from .progress import LineProgress

    class NotesOnly(LineProgress):
        def retry(self, *, key: str, attempt: int, error: str, delay: float) -> None:
            pass

    return NotesOnly()


def check_lake_outside(handle: Any, source: Path, exclude: list[str]) -> None:
    """A local lake inside SOURCE would be pushed into itself: every version would hold the
    lake's objects so far, each push bigger than the last.  Refused before anything is read."""
    url = str(getattr(handle, "url", ""))
    if not url.startswith("file://") or not source.is_dir():
        return
    import shlex

    from ..core.scan import exclude_pattern, lake_inside

    where = lake_inside(source, url[len("file://"):], tuple(exclude))
    if where is not None:
        from ..errors import UsageError

        if where == ".":
            raise UsageError(f"the lake {url} is SOURCE itself",
                             hint="push the directory that holds the checkpoint, not the lake")
        raise UsageError(f"the lake {url} is inside SOURCE (at {where}/), so every version "
                         "would store it",
                         hint=f"--exclude {shlex.quote(exclude_pattern(where))}, or keep the "
                              "lake outside SOURCE")


def parse_lineage(parents: list[str] | None, relation: str | None,
                  inputs: list[str] | None) -> dict[str, Any]:
    """--parent/--relation/--input as Lake.push keywords (only those given: the library's
    defaults stay the library's), checked before the lake is opened."""
    from ..core.lineage import DEFAULT_RELATION, check_relation, parse_input, parse_parent

    default = check_relation(relation) if relation is not None else DEFAULT_RELATION
    out: dict[str, Any] = {}
    if parents:
        out["parents"] = [parse_parent(p, default) for p in parents]
    elif relation is not None:
        from ..errors import UsageError

        raise UsageError("--relation applies to --parent; give a --parent too")
    if inputs:
        out["inputs"] = [parse_input(i) for i in inputs]
    return out


def parse_shard(value: str, step: int | None) -> tuple[int, int]:
    """`RANK/WORLD` -> (rank, world); a usage error (exit 2) unless 0 <= RANK < WORLD."""
    from ..errors import UsageError

    rank_s, slash, world_s = value.partition("/")
    # ASCII digits only: str.isdigit() takes "²", which int() refuses (an internal error)
    if not slash or not re.fullmatch(r"[0-9]+", rank_s.strip()) \
            or not re.fullmatch(r"[0-9]+", world_s.strip()):
        raise UsageError(f"--shard {value!r}: expected RANK/WORLD, e.g. 3/8")
    rank, world = int(rank_s), int(world_s)
    if world < 1 or rank >= world:
        raise UsageError(f"--shard {value!r}: RANK must be in 0..WORLD-1")
    if step is None:
        raise UsageError("--shard needs --step N: the ranks of one checkpoint meet at its step")
    return rank, world


def shard_summary(r: Any) -> str:
    """shard 3/8 of a/b step 2000: 5 of 8 in, pending | committed a/b@v3 (...)"""
    head = f"shard {r.rank}/{r.world} of {r.artifact} step {r.step}"
    sizes = (f"{r.files} file{'s' if r.files != 1 else ''}, {format_bytes(r.bytes_scanned)} "
             f"scanned, {format_bytes(r.bytes_uploaded)} uploaded")
    if r.version is None:
        state = f"{r.shards_present} of {r.world} shards in, not committed yet"
    else:
        how = "committed" if r.committed_here else "already committed as"
        state = f"{how} {r.artifact}@v{r.version}"
    again = " (repeated push)" if r.repeated else ""
    return f"{head}{again}: {state}; {sizes}, {r.seconds:.1f} s"
