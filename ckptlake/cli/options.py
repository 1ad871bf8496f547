"""Options shared by every command, as `Annotated` aliases.

Why aliases: every command takes the same lake and output options, and declaring them once keeps
their names, short flags and help identical everywhere (users' scripts and the static shell
completions rely on that).  `CommonOptions` bundles their values so a command hands one object to
`output.Output` and `output.open_lake` instead of eight loose arguments.

Only light imports here: this module is loaded for `ckptlake --help`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

LAKE_PANEL = "Lake options"
OUTPUT_PANEL = "Output options"

LakeOpt = Annotated[Optional[str], typer.Option(
    "--lake", "-l", metavar="URL", rich_help_panel=LAKE_PANEL, show_default=False,
    help="Lake location (s3://bucket/prefix or file:///path).  Chosen in this order: --lake, "
         "$CKPTLAKE_LAKE, lake: in ckptlake.yaml, the embedded default.")]
EndpointOpt = Annotated[Optional[str], typer.Option(
    "--endpoint-url", metavar="URL", rich_help_panel=LAKE_PANEL, show_default=False,
    help="S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, ...).")]
ProfileOpt = Annotated[Optional[str], typer.Option(
    "--profile", metavar="NAME", rich_help_panel=LAKE_PANEL, show_default=False,
    help="AWS credentials profile to use.")]
RegionOpt = Annotated[Optional[str], typer.Option(
    "--region", metavar="NAME", rich_help_panel=LAKE_PANEL, show_default=False,
    help="Region of the bucket.")]
ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", metavar="FILE", rich_help_panel=LAKE_PANEL, show_default=False,
    dir_okay=False, help="Config file to read instead of the default search.")]
JsonOpt = Annotated[bool, typer.Option(
    "--json", rich_help_panel=OUTPUT_PANEL,
    help="Print exactly one JSON document on stdout (also for errors); no progress, no notes.")]
QuietOpt = Annotated[bool, typer.Option(
    "--quiet", "-q", rich_help_panel=OUTPUT_PANEL,
    help="Print nothing but errors.")]
DebugOpt = Annotated[bool, typer.Option(
    "--debug", rich_help_panel=OUTPUT_PANEL,
    help="Print the traceback of errors on stderr.")]
ConcurrencyOpt = Annotated[Optional[int], typer.Option(
    "--concurrency", metavar="N", min=1, show_default=False,
    help="Parallel transfers (default: from the config, else the library's default).")]
ReplicaOpt = Annotated[Optional[str], typer.Option(
    "--replica", metavar="NAME|none", show_default=False,
    help="Read chunks through this regional replica (replicas: in ckptlake.yaml), or 'none' "
         "for the lake itself (default: the replica in the client's region, if any).")]
MaxBandwidthOpt = Annotated[Optional[str], typer.Option(
    "--max-bandwidth", metavar="SIZE", show_default=False,
    help="Limit transfer speed to SIZE per second for the whole process, e.g. 50MiB.")]


@dataclass(frozen=True)
class CommonOptions:
    """The values of the options every command accepts."""

    lake: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None
    config: Path | None = None
    json: bool = False
    quiet: bool = False
    debug: bool = False


def parse_pairs(values: list[str] | None, option: str, *, numeric: bool) -> dict[str, Any]:
    """Parse repeated `--metric k=v` / `--meta k=v` into a dict.

    Why strict: metrics drive "best checkpoint" selection and retention later, so a typo like
    `loss=2,31` or two `loss=` values must fail loudly now (exit 2) instead of being stored.
    Metric values must be finite floats (NaN cannot be ranked and is not valid JSON).
    """
    from ..errors import UsageError

    out: dict[str, Any] = {}
    for item in values or []:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            # (NAME, not KEY: errors go through redact, which masks the value of `KEY=`)
            raise UsageError(f"{option} {item!r}: expected NAME=VALUE with a non-empty NAME")
        if key in out:
            raise UsageError(f"{option} {key!r} given more than once")
        if numeric:
            from ..format.refs import METRIC_NAME

            # a name @min:/@max:, --where and --sort could not name later is refused now
            if not METRIC_NAME.fullmatch(key):
                raise UsageError(f"{option} {item!r}: invalid metric name {key!r}",
                                 hint="use up to 128 of [A-Za-z0-9._/-], e.g. val_loss or "
                                      "eval/accuracy")
            try:
                number = float(raw)
            except ValueError:
                # (the value is not echoed on its own: NAME=VALUE is, and is masked when NAME
                # names a secret)
                raise UsageError(f"{option} {item!r}: the value is not a number") from None
            if not math.isfinite(number):
                raise UsageError(f"{option} {item!r}: value must be a finite number")
            out[key] = number
        else:
            out[key] = raw
    return out


def check_source(value: Any, what: str, hint: str = "name a file or directory") -> Path:
    """SOURCE (or watch's DIR) as given, refused if empty: "" is no path, and read as "." it
    pushed (or watched) the current directory, what a script with an unset variable never
    means.  Say "." for that."""
    from ..errors import UsageError

    if not str(value):
        raise UsageError(f"{what} is empty", hint=f'{hint}; "." is the current directory')
    return Path(value)
