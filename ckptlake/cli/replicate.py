"""`ckptlake replicate REF --to NAME`: copy a version's missing chunks into a regional replica
ahead of the pulls that would fetch them through it."""
from __future__ import annotations

from typing import Annotated

import typer

from .help import epilog, examples
from .options import (CommonOptions, ConcurrencyOpt, ConfigOpt, DebugOpt, EndpointOpt, JsonOpt,
                      LakeOpt, ProfileOpt, QuietOpt, RegionOpt)
from .output import Output, format_bytes, lake_origin, lake_url, open_lake, require_lake

HELP = ("Copy the chunks of the version REF that the replica NAME lacks, so that pulls in its "
        "region read them there.")
EPILOG = epilog(
    examples("ckptlake replicate gpt2/run-7/model@candidate --to eu --json  "
             "# in CI, after publishing a model"),
    "Replicas are declared under replicas: in ckptlake.yaml.  The chunks are copied, then the "
    "version's manifest (read only by pull --offline-replica: online pulls ask the lake for "
    "manifests and aliases).  Each chunk is verified against its digest before it is written, "
    "create-if-absent.  Resumable: a re-run after an interruption copies only what is still "
    "missing.  --verify also reads back the chunks already in the replica and replaces any "
    "that do not match.  A replica serves one lake: the first write names the lake in its "
    "ckptlake-replica.json, and a replica naming another lake, or that is a lake, is refused "
    "(exit 2).  gc removes from replicas the chunks no live version references.")


def replicate(
    ref: Annotated[str, typer.Argument(
        metavar="REF", show_default=False,
        help="The version: ARTIFACT or ARTIFACT@SELECTOR.")],
    to: Annotated[str, typer.Option(
        "--to", metavar="NAME", show_default=False,
        help="The replica to fill (a name from replicas: in ckptlake.yaml).")],
    verify: Annotated[bool, typer.Option(
        "--verify", help="Also read back and check the chunks already in the replica.")]
        = False,
    concurrency: ConcurrencyOpt = None,
    lake: LakeOpt = None,
    endpoint_url: EndpointOpt = None,
    profile: ProfileOpt = None,
    region: RegionOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    common = CommonOptions(lake=lake, endpoint_url=endpoint_url, profile=profile, region=region,
                           config=config, json=json_, quiet=quiet, debug=debug)
    out = Output(common)
    with out.guard():
        from ..format.refs import parse_ref

        parsed = parse_ref(ref)
        handle = open_lake(common, concurrency=concurrency)
        try:
            out.lake_line(handle)
            handle.replica_named(to)  # a typo is exit 2 before any request, not exit 8 after
            require_lake(handle)
            with out.progress() as progress:
                result = handle.replicate(parsed, to, verify=verify, progress=progress)
            doc = {**result.to_dict(), "lake": lake_url(handle),
                   "lake_origin": lake_origin(handle)}
            out.result(doc, summary(result),
                       done=f"replicated {result.artifact}@v{result.version} -> {result.replica}")
        finally:
            handle.close()


def summary(r) -> str:  # type: ignore[no-untyped-def]
    repaired = f", {r.chunks_repaired} wrong copies replaced" if r.chunks_repaired else ""
    return (f"replicated {r.artifact}@v{r.version} -> {r.replica} ({r.region}): copied "
            f"{r.chunks_copied} of {r.chunks} chunks ({format_bytes(r.bytes_copied)}), "
            f"{r.chunks_present} already there ({format_bytes(r.bytes_present)}){repaired}, "
            f"in {r.seconds:.1f} s")
