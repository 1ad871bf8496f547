"""`ckptlake ls [ARTIFACT]`: list artifacts, or the versions of one artifact."""
from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from .help import epilog
from .options import (CommonOptions, ConfigOpt, DebugOpt, EndpointOpt, JsonOpt, LakeOpt,
                      ProfileOpt, QuietOpt, RegionOpt)
from .output import Output, format_age, format_bytes, lake_url, open_lake

HELP = "List the artifacts of the lake, or the versions of ARTIFACT."
EPILOG = epilog(
    "Without ARTIFACT: one row per artifact (name, versions, latest, updated, aliases).\n"
    "With ARTIFACT: one row per version (vN, step, size, age, aliases, metrics).\n"
    "A table on a terminal, plain aligned columns otherwise; --json for scripts.")

ARTIFACT_HEADERS = ("ARTIFACT", "VERSIONS", "LATEST", "UPDATED", "ALIASES")
VERSION_HEADERS = ("VERSION", "STEP", "SIZE", "AGE", "ALIASES", "METRICS")


def ls(
    artifact: Annotated[Optional[str], typer.Argument(
        metavar="ARTIFACT", show_default=False,
        help="Artifact whose versions to list (default: list all artifacts).")] = None,
    lake: LakeOpt = None,
    endpoint_url: EndpointOpt = None,
    profile: ProfileOpt = None,
    region: RegionOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Rows are built from the same result objects --json dumps, so both views agree."""
    common = CommonOptions(lake=lake, endpoint_url=endpoint_url, profile=profile, region=region,
                           config=config, json=json_, quiet=quiet, debug=debug)
    out = Output(common)
    with out.guard():
        from ..format.refs import validate_artifact

        if artifact is not None:
            validate_artifact(artifact)
        handle = open_lake(common)
        try:
            out.lake_line(handle)
            if artifact is None:
                artifacts = handle.artifacts()
                doc: dict[str, Any] = {"lake": lake_url(handle),
                                       "artifacts": [a.to_dict() for a in artifacts]}
                rows = [artifact_row(a) for a in artifacts]
                out.table(doc, ARTIFACT_HEADERS, rows, empty=f"no artifacts in {lake_url(handle)}")
            else:
                versions = handle.versions(artifact)
                doc = {"lake": lake_url(handle), "artifact": artifact,
                       "versions": [v.to_dict() for v in versions]}
                rows = [version_row(v) for v in versions]
                out.table(doc, VERSION_HEADERS, rows, empty=f"{artifact} has no versions")
        finally:
            handle.close()


def artifact_row(a: Any) -> list[str]:
    return [a.artifact, str(a.versions), f"v{a.latest}", format_age(a.updated),
            ", ".join(a.aliases) or "-"]


def version_row(v: Any) -> list[str]:
    metrics = " ".join(f"{k}={val:g}" for k, val in sorted(v.metrics.items())) or "-"
    return [f"v{v.version}", "-" if v.step is None else str(v.step), format_bytes(v.total_bytes),
            format_age(v.created), ", ".join(v.aliases) or "-", metrics]
