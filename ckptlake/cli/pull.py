"""`ckptlake pull REF DEST [PATH...]`: restore one version (or part of it) into a directory (or
a file)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import NotFound
from .egress import confirm_egress, egress_policy, estimate_summary, warn_egress
from .help import epilog, examples
from .options import (CommonOptions, ConcurrencyOpt, MaxBandwidthOpt, ConfigOpt, DebugOpt, EndpointOpt, JsonOpt,
                      LakeOpt, ProfileOpt, QuietOpt, RegionOpt, ReplicaOpt)
from .output import (Output, lake_origin, lake_url, open_lake, pull_summary,
                     require_lake)

HELP = ("Restore the version REF resolves to into DEST, verifying every byte.\n\n"
        "Without --force, nothing at DEST is overwritten.")
EPILOG = epilog(
    examples("ckptlake pull gpt2/run-7/ckpt@best ./restore",
             "ckptlake pull gpt2/ckpt@v3 ./out config.json tokenizer/  # part of a version",
             "ckptlake pull gpt2/ckpt@v3 ./out --include '*.json' --exclude 'optimizer/*'"),
    "Files already at DEST with the right content are kept, not downloaded again.  Files at "
    "DEST that differ from the version make the pull fail with a conflict (exit 6) unless "
    "--force is given; files that are not part of the version are left alone.",
    "Egress: before downloading, pull estimates the bytes it will fetch (not what DEST already "
    "holds, nor chunks in the cache), the route (same region, inter-region, internet) and the cost, from egress: in "
    "ckptlake.yaml.  Above egress.warn_above_usd it warns; above egress.confirm_above_usd it "
    "asks on a terminal and otherwise needs --yes (else exit 7, nothing downloaded).  "
    "--estimate prints the estimate only.",
    "Part of a version: a file, symlink or empty directory is pulled "
    "if it matches any PATH (an exact path, or a directory and everything below it) or any "
    "--include glob (everything, when neither is given), and no --exclude glob.  Globs match "
    "the whole relative path or one of its parent directories; * and ** also match '/'.  A "
    "PATH or --include matching nothing: exit 3, nothing downloaded.  The estimate, "
    "verification, resume and --json cover the selected files only.",
    "Local reuse: a chunk whose bytes are already on this machine is copied, not downloaded "
    "(verified by its digest like a download): from files kept as identical, from the files "
    "--force replaces (at the same offset), and from each --reference DIR (the file at the same "
    "relative path, then up to 2 files of the same size).  Pulling v2 over v1 downloads only "
    "the chunks that differ.",
    "Chunk cache (opt-in: cache: in ckptlake.yaml or $CKPTLAKE_CACHE): chunks are read from "
    "the cache when there and added to it when downloaded, so many pulls on one machine fetch "
    "a chunk once; see 'ckptlake cache --help'.  --no-cache bypasses it.",
    "Regional replicas (replicas: in ckptlake.yaml): a client whose region (egress.client_region, "
    "else $AWS_REGION) is a replica's reads chunks from it; a chunk the replica lacks is fetched "
    "once from the lake, verified, stored in the replica and served.  Manifests and aliases "
    "always come from the lake.  --replica NAME|none overrides the choice; a replica that "
    "cannot be read or written is skipped with a warning.")


def pull(
    ref: Annotated[str, typer.Argument(
        metavar="REF", show_default=False,
        help="What to restore: ARTIFACT or ARTIFACT@SELECTOR (latest, vN, step=N, alias, "
             "min:METRIC, max:METRIC).")],
    # Parsed as str (a Path drops the trailing "/" that says "into this directory", and turns
    # "" into "."); annotated Path so the completions offer files.
    dest: Annotated[Path, typer.Argument(
        metavar="DEST", show_default=False, parser=str,
        help="Directory to restore into (for a single-file artifact: its path, or DIR/ to "
             "put it into DIR).")],
    paths: Annotated[Optional[list[str]], typer.Argument(
        metavar="[PATH]...", show_default=False,
        help="Pull only these files / directories of the version.")] = None,
    include: Annotated[Optional[list[str]], typer.Option(
        "--include", metavar="GLOB", show_default=False,
        help="Pull only files matching GLOB (repeatable; adds to any PATHs).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(
        "--exclude", metavar="GLOB", show_default=False,
        help="Leave out files matching GLOB (repeatable; wins over PATH and --include).")]
        = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Overwrite files at DEST that differ from the version.")]
        = False,
    estimate: Annotated[bool, typer.Option(
        "--estimate", help="Print what the pull would download and cost (egress); download "
                           "nothing.")] = False,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Accept an egress cost above egress.confirm_above_usd without "
                            "asking.")] = False,
    reference: Annotated[Optional[list[Path]], typer.Option(
        "--reference", metavar="DIR", file_okay=False, show_default=False,
        help="A directory holding an earlier copy (repeatable): chunks found there are copied, "
             "not downloaded.")] = None,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Neither read nor fill the local chunk cache.")] = False,
    replica: ReplicaOpt = None,
    offline_replica: Annotated[bool, typer.Option(
        "--offline-replica", help="If the lake cannot be reached, serve the version from the "
                                  "replica as it holds it (saying so).")] = False,
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
    """The ref is parsed before the lake is opened: a bad ref is a usage error (exit 2) even
    when the lake is unreachable."""
    common = CommonOptions(lake=lake, endpoint_url=endpoint_url, profile=profile, region=region,
                           config=config, json=json_, quiet=quiet, debug=debug)
    out = Output(common)
    with out.guard():
        from ..errors import TransferError, TransientError
        from ..format.refs import parse_ref

        parsed = parse_ref(ref)
        egress = egress_policy(common)
        handle = open_lake(common, concurrency=concurrency,
                           max_bandwidth=max_bandwidth)
        try:
            if offline_replica and getattr(handle, "replicas", None) is None:
                from ..errors import UsageError

                # else it reads as a fallback in place, until the day the lake is unreachable
                raise UsageError("--offline-replica: no replicas are configured",
                                 hint="replicas are declared under replicas: in ckptlake.yaml")
            out.lake_line(handle)
            if replica is not None:  # a typo is exit 2 before any request, not exit 8 after
                handle.replica_for(replica)
            part = {"paths": list(paths or ()), "include": list(include or ()),
                    "exclude": list(exclude or ())}
            selection = {k: v for k, v in part.items() if v}
            via = {"replica": replica} if replica is not None else {}
            pull_via = {**via, "offline_replica": True} if offline_replica else via
            if estimate:
                est = handle.estimate_pull(parsed, dest, egress=egress, use_cache=not no_cache,
                                            **via, **part)
                if not out.json:  # (--json: in the document's "warnings")
                    for warning in getattr(est, "warnings", ()):
                        out.warn(warning)
                # absolute, as the pull's own document has it: a script compares the two
                out.result({**est.to_dict(), "lake": lake_url(handle),
                            "lake_origin": lake_origin(handle),
                            "destination": os.path.abspath(dest),
                            **({"selection": selection} if selection else {})},
                           estimate_summary(est))
                return
            chunk_cache = getattr(handle, "cache", None)
            if chunk_cache is not None and not no_cache:
                out.note(f"chunk cache {chunk_cache.dir}")
            spec = handle.replica_for(replica) if hasattr(handle, "replica_for") else None
            if spec is not None:
                out.note(f"reading chunks through replica {spec.name} ({spec.region}, {spec.url})")
            with out.progress() as progress:
                result = handle.pull(parsed, dest, force=force, progress=progress,
                                     egress=egress, yes=yes, confirm=confirm_egress(out),
                                     on_estimate=lambda e: warn_egress(out, e, yes),
                                     reference=reference or (), use_cache=not no_cache,
                                     _force_flag="--force", **pull_via, **part)
            for warning in result.warnings:
                out.warn(warning)
            doc = {**result.to_dict(), "lake": lake_url(handle),
                   "lake_origin": lake_origin(handle),
                   **({"selection": selection} if selection else {})}
            out.result(doc, pull_summary(result))
        except NotFound:
            # Whether there is a lake at all is asked only now: resolving REF finds nothing
            # anyway where there is none, and a pull saves the request (issue 13: start-up).
            try:
                require_lake(handle)
            except (TransferError, TransientError):
                if not offline_replica:
                    raise
            raise
        finally:
            handle.close()
