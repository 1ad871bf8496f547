"""`ckptlake pull REF DEST`: restore one version into a directory (or a file)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .egress import confirm_egress, egress_policy, estimate_summary, warn_egress
from .help import epilog
from .options import (CommonOptions, ConcurrencyOpt, MaxBandwidthOpt, ConfigOpt, DebugOpt, EndpointOpt, JsonOpt,
                      LakeOpt, ProfileOpt, QuietOpt, RegionOpt)
from .output import (Output, lake_origin, lake_url, open_lake, pull_summary,
                     require_lake)

HELP = ("Restore the version REF resolves to into DEST, verifying every byte.\n\n"
        "Without --force, nothing at DEST is overwritten.")
EPILOG = epilog(
    "Example: ckptlake pull gpt2/run-7/ckpt@best ./restore",
    "Files already at DEST with the right content are kept, not downloaded again.  Files at "
    "DEST that differ from the version make the pull fail with a conflict (exit 6) unless "
    "--force is given; files that are not part of the version are left alone.",
    "Egress: before downloading, pull estimates the bytes it will fetch (not what DEST already "
    "holds), the route (same region, inter-region, internet) and the cost, from egress: in "
    "ckptlake.yaml.  Above egress.warn_above_usd it warns; above egress.confirm_above_usd it "
    "asks on a terminal and otherwise needs --yes (else exit 7, nothing downloaded).  "
    "--estimate prints the estimate only.")


def pull(
    ref: Annotated[str, typer.Argument(
        metavar="REF", show_default=False,
        help="What to restore: ARTIFACT or ARTIFACT@SELECTOR (latest, vN, step=N, alias).")],
    dest: Annotated[Path, typer.Argument(
        metavar="DEST", show_default=False,
        help="Directory to restore into (a file path for single-file artifacts).")],
    force: Annotated[bool, typer.Option(
        "--force", help="Overwrite files at DEST that differ from the version.")]
        = False,
    estimate: Annotated[bool, typer.Option(
        "--estimate", help="Print what the pull would download and cost (egress); download "
                           "nothing.")] = False,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Accept an egress cost above egress.confirm_above_usd without "
                            "asking.")] = False,
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
        from ..format.refs import parse_ref

        parsed = parse_ref(ref)
        egress = egress_policy(common)
        handle = open_lake(common, concurrency=concurrency,
                           max_bandwidth=max_bandwidth)
        try:
            out.lake_line(handle)
            require_lake(handle)
            if estimate:
                est = handle.estimate_pull(parsed, dest, egress=egress)
                out.result({**est.to_dict(), "lake": lake_url(handle),
                            "lake_origin": lake_origin(handle), "destination": str(dest)},
                           estimate_summary(est))
                return
            with out.progress() as progress:
                result = handle.pull(parsed, dest, force=force, progress=progress,
                                     egress=egress, yes=yes, confirm=confirm_egress(out),
                                     on_estimate=lambda e: warn_egress(out, e, yes))
            for warning in result.warnings:
                out.warn(warning)
            doc = {**result.to_dict(), "lake": lake_url(handle),
                   "lake_origin": lake_origin(handle)}
            out.result(doc, pull_summary(result))
        finally:
            handle.close()
