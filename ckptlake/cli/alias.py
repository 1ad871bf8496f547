"""`ckptlake alias REF NAME`: point an alias at a version (moved atomically); `alias --delete
ARTIFACT NAME` removes one; `alias ARTIFACT` lists them."""
from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from .help import epilog, examples
from .options import (CommonOptions, ConfigOpt, DebugOpt, EndpointOpt, JsonOpt, LakeOpt,
                      ProfileOpt, QuietOpt, RegionOpt)
from .output import Output, alias_summary, lake_url, open_lake, require_lake

HELP = ("Point alias NAME of the artifact at the version REF resolves to.\n\n"
        "The alias moves atomically: readers see the old or the new version, never neither.  "
        "With --delete, remove alias NAME of the artifact REF instead.  Without NAME, list the "
        "aliases of the artifact REF.")
EPILOG = epilog(
    examples("ckptlake alias gpt2/run-7/ckpt@step=2000 best",
             "ckptlake alias --delete gpt2/run-7/ckpt candidate",
             "ckptlake alias gpt2/run-7/ckpt  # list its aliases"),
    "Without NAME: one row per alias, the version it names; exit 0 with none, 3 for an "
    "artifact without versions.\n"
    "NAME matches [A-Za-z][A-Za-z0-9._-]*, at most 128 characters, and may not be 'latest' or "
    "look like a version (v3), in any case (Latest, V3).  "
    "An aliased version is never deleted, by gc or rm; once its last alias is removed, gc's "
    "retention rules apply to it again (and rm may delete it).")


def alias(
    ref: Annotated[str, typer.Argument(
        metavar="REF", show_default=False,
        help="The version to point at: ARTIFACT or ARTIFACT@SELECTOR (with --delete: the "
             "ARTIFACT alone; without NAME: the artifact whose aliases to list).")],
    # Optional so that `alias ARTIFACT` lists (a trailing argument: `alias REF NAME` and
    # `alias --delete ARTIFACT NAME` read as before)
    name: Annotated[Optional[str], typer.Argument(
        metavar="NAME", show_default=False,
        help="Alias to create or move (or remove), e.g. best; without it, list the "
             "artifact's aliases.")] = None,
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
    from ..errors import UsageError

    common = CommonOptions(lake=lake, endpoint_url=endpoint_url, profile=profile, region=region,
                           config=config, json=json_, quiet=quiet, debug=debug)
    out = Output(common)
    with out.guard():
        from ..format.refs import parse_ref, validate_alias

        parsed = parse_ref(ref)
        if name is None:
            if delete:
                raise UsageError("alias --delete needs the NAME of the alias to remove",
                                 hint=f"ckptlake alias --delete {parsed.artifact} NAME; list "
                                      f"them with: ckptlake alias {parsed.artifact}")
            if "@" in ref:
                raise UsageError(f"give the NAME of the alias to point at {ref}",
                                 hint=f"ckptlake alias {ref} NAME; list the aliases with: "
                                      f"ckptlake alias {parsed.artifact}")
            list_aliases(out, common, parsed.artifact)
            return
        # one set before the rule took case into account stays removable
        validate_alias(name, existing=delete)
        if delete and "@" in ref:
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
                              "subject to gc's retention rules again"),
                           done=f"removed alias {name} of {parsed.artifact}")
                return
            result = handle.alias(parsed, name)
            out.result(result.to_dict(), alias_summary(result),
                       done=None if result.previous == result.version else
                       f"set {alias_summary(result)}")
        finally:
            handle.close()


ALIAS_HEADERS = ("ALIAS", "VERSION", "STEP")


def list_aliases(out: Output, common: CommonOptions, artifact: str) -> None:
    """`alias ARTIFACT`: the versions' aliases, read as `ls ARTIFACT` reads them (so an
    artifact without versions is exit 3 there and here alike)."""
    handle = open_lake(common)
    try:
        out.lake_line(handle)
        require_lake(handle)
        rows: list[tuple[str, Any]] = sorted((a, v) for v in handle.versions(artifact)
                                             for a in v.aliases)
        doc = {"lake": lake_url(handle), "artifact": artifact,
               "aliases": [{"alias": a, "version": v.version, "step": v.step}
                           for a, v in rows]}
        out.table(doc, ALIAS_HEADERS,
                  [[a, f"v{v.version}", "-" if v.step is None else str(v.step)]
                   for a, v in rows], empty=f"{artifact} has no aliases")
    finally:
        handle.close()
