"""`ckptlake push SOURCE ARTIFACT`: upload a file or directory as the next version."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .help import epilog
from .options import (ConcurrencyOpt, MaxBandwidthOpt, ConfigOpt, DebugOpt, EndpointOpt, JsonOpt, LakeOpt,
                      ProfileOpt, QuietOpt, RegionOpt, CommonOptions, parse_pairs)
from .output import Output, lake_origin, lake_url, open_lake, push_summary

HELP = (
    "Upload SOURCE (a file or a directory) as the next version of ARTIFACT.\n\n"
    "Chunks already in the lake are not uploaded again.  The version is committed atomically "
    "at the end: an interrupted or failed push leaves no version behind.")
EPILOG = epilog(
    "Example: ckptlake push ckpt/step_2000 gpt2/run-7/ckpt --step 2000 "
    "--metric loss=2.31 --meta git=abc123 --alias best")


def push(
    source: Annotated[Path, typer.Argument(
        metavar="SOURCE", show_default=False, help="File or directory to upload.")],
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
    chunk_size: Annotated[Optional[str], typer.Option(
        "--chunk-size", metavar="SIZE", show_default=False,
        help="Chunk size for upload and dedup, e.g. 16MiB (default: from the config).")] = None,
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
        from ..format.refs import validate_alias, validate_artifact

        validate_artifact(artifact)
        metrics = parse_pairs(metric, "--metric", numeric=True)
        metadata = parse_pairs(meta, "--meta", numeric=False)
        aliases = [validate_alias(name) for name in alias or []]
        size = None
        if chunk_size is not None:
            from ..policy.config import parse_size

            size = parse_size(chunk_size)
        handle = open_lake(common, chunk_size=size, concurrency=concurrency,
                           max_bandwidth=max_bandwidth)
        try:
            out.lake_line(handle)
            with out.progress() as progress:
                result = handle.push(source, artifact, step=step, metrics=metrics,
                                     metadata=metadata, aliases=aliases,
                                     exclude=list(exclude or []),
                                     follow_symlinks=follow_symlinks, progress=progress)
            doc = {**result.to_dict(), "lake": lake_url(handle),
                   "lake_origin": lake_origin(handle)}
            out.result(doc, push_summary(result))
        finally:
            handle.close()
