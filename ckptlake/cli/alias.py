"""`ckptlake alias REF NAME`: point an alias at a version (moved atomically)."""
from __future__ import annotations

from typing import Annotated

import typer

from .help import epilog
from .options import (CommonOptions, ConfigOpt, DebugOpt, EndpointOpt, JsonOpt, LakeOpt,
                      ProfileOpt, QuietOpt, RegionOpt)
from .output import Output, alias_summary, open_lake, require_lake

HELP = ("Point alias NAME of the artifact at the version REF resolves to.\n\n"
        "The alias moves atomically: readers see the old or the new version, never neither.")
EPILOG = epilog(
    "Example: ckptlake alias gpt2/run-7/ckpt@step=2000 best\n"
    "NAME matches [A-Za-z][A-Za-z0-9._-]* and may not be 'latest' or look like a version (v3).")


def alias(
    ref: Annotated[str, typer.Argument(
        metavar="REF", show_default=False,
        help="The version to point at: ARTIFACT or ARTIFACT@SELECTOR.")],
    name: Annotated[str, typer.Argument(
        metavar="NAME", show_default=False, help="Alias to create or move, e.g. best.")],
    lake: LakeOpt = None,
    endpoint_url: EndpointOpt = None,
    profile: ProfileOpt = None,
    region: RegionOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Both REF and NAME are validated before the lake is opened (exit 2 on a typo)."""
    common = CommonOptions(lake=lake, endpoint_url=endpoint_url, profile=profile, region=region,
                           config=config, json=json_, quiet=quiet, debug=debug)
    out = Output(common)
    with out.guard():
        from ..format.refs import parse_ref, validate_alias

        parsed = parse_ref(ref)
        validate_alias(name)
        handle = open_lake(common)
        try:
            out.lake_line(handle)
            require_lake(handle)
            result = handle.alias(parsed, name)
            out.result(result.to_dict(), alias_summary(result))
        finally:
            handle.close()
