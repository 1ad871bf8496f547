"""`ckptlake alias REF NAME`: point an alias at a version (moved atomically); `alias --delete
ARTIFACT NAME` removes one."""
from __future__ import annotations

from typing import Annotated

import typer

from .help import epilog
from .options import (CommonOptions, ConfigOpt, DebugOpt, EndpointOpt, JsonOpt, LakeOpt,
                      ProfileOpt, QuietOpt, RegionOpt)
from .output import Output, alias_summary, open_lake, require_lake

HELP = ("Point alias NAME of the artifact at the version REF resolves to.\n\n"
        "The alias moves atomically: readers see the old or the new version, never neither.  "
        "With --delete, remove alias NAME of the artifact REF instead.")
EPILOG = epilog(
    "Example: ckptlake alias gpt2/run-7/ckpt@step=2000 best; "
    "ckptlake alias --delete gpt2/run-7/ckpt candidate\n"
    "NAME matches [A-Za-z][A-Za-z0-9._-]* and may not be 'latest' or look like a version (v3).  "
    "An aliased version is never deleted, by gc or rm; once its last alias is removed, gc's "
    "retention rules apply to it again (and rm may delete it).")


def alias(
    ref: Annotated[str, typer.Argument(
        metavar="REF", show_default=False,
        help="The version to point at: ARTIFACT or ARTIFACT@SELECTOR (with --delete: the "
             "ARTIFACT alone).")],
    name: Annotated[str, typer.Argument(
        metavar="NAME", show_default=False,
        help="Alias to create or move (or remove), e.g. best.")],
    delete: Annotated[bool, typer.Option(
        "--delete", "-d", help="Remove alias NAME of the artifact REF (no @SELECTOR) instead; "
                               "exit 3 if it has no such alias.")] = False,
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
        if delete and "@" in ref:
            from ..errors import UsageError

            raise UsageError(f"alias --delete takes an artifact, not a version: {ref}",
                             hint=f"ckptlake alias --delete {parsed.artifact} {name}")
        handle = open_lake(common)
        try:
            out.lake_line(handle)
            require_lake(handle)
            if delete:
                removed = handle.remove_alias(parsed.artifact, name)
                was = "" if removed.previous is None else f" (was v{removed.previous})"
                out.result(removed.to_dict(),
                           f"removed alias {name} of {parsed.artifact}{was}"
                           + ("" if removed.previous is None else
                              f"; unless another alias names it, v{removed.previous} is "
                              "subject to gc's retention rules again"))
                return
            result = handle.alias(parsed, name)
            out.result(result.to_dict(), alias_summary(result))
        finally:
            handle.close()
