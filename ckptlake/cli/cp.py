"""`ckptlake cp REF --to LAKE [--as ARTIFACT]`: copy a version into another lake, or under
another name in this one, with its step, metrics, metadata and provenance."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from .egress import confirm_egress, egress_policy, estimate_summary, warn_egress
from .help import epilog, examples
from .options import (CommonOptions, ConcurrencyOpt, ConfigOpt, DebugOpt, EndpointOpt, JsonOpt,
                      LakeOpt, MaxBandwidthOpt, ProfileOpt, QuietOpt, RegionOpt)
from ..redact import redact
from .output import (Output, format_bytes, lake_origin, lake_url, parse_bandwidth, require_lake,
                     resume_collector)

HELP = ("Copy the version REF into another lake (--to) or under another artifact name (--as), "
        "as its next version, with its step, metrics, metadata and provenance.")
EPILOG = epilog(
    examples("ckptlake cp gpt2/run-7/model@candidate --to s3://prod-models --alias prod --json",
             "ckptlake cp gpt2/run-7/ckpt@max:val_acc --as models/gpt2-small"),
    "Only the chunks the destination lacks are read and written, as they are stored, each "
    "verified against its digest first (between two lakes on one S3 server, the server then "
    "copies it: nothing is uploaded from here); the new version is committed like a push (a new "
    "version number; aliases after it).  Interrupted, it commits nothing, and a re-run copies "
    "only what is still missing.  The new version's provenance names the version it was "
    "copied from; within one lake it is also its child in `lineage` (derived-from).  A "
    "destination lake that does not exist yet is created with the source's chunk hash; one "
    "that hashes chunks differently (SHA-256 and BLAKE3) shares no chunk, and the version then "
    "goes through a temporary local copy and a push (said in a warning).",
    "The destination is reached with --to-endpoint-url / --to-profile / --to-region if given, "
    "else with the lake's own options.  Egress: the bytes read from the lake are priced as a "
    "pull's (egress: in ckptlake.yaml); above egress.confirm_above_usd the copy needs --yes "
    "(exit 7, nothing copied); --estimate prints the estimate only.  Exit 2 without --to or "
    "--as, or for two lakes one inside the other.")


def cp(
    ref: Annotated[str, typer.Argument(
        metavar="REF", show_default=False,
        help="The version: ARTIFACT or ARTIFACT@SELECTOR.")],
    to: Annotated[Optional[str], typer.Option(
        "--to", metavar="URL", show_default=False,
        help="The lake to copy into (s3://bucket/prefix or file:///path); default: this "
             "lake.")] = None,
    as_: Annotated[Optional[str], typer.Option(
        "--as", metavar="ARTIFACT", show_default=False,
        help="The artifact to copy it to; default: the same name.")] = None,
    alias: Annotated[Optional[list[str]], typer.Option(
        "--alias", metavar="NAME", show_default=False,
        help="Point alias NAME at the new version (repeatable).")] = None,
    to_endpoint_url: Annotated[Optional[str], typer.Option(
        "--to-endpoint-url", metavar="URL", show_default=False,
        help="S3 endpoint of the destination lake (default: --endpoint-url).")] = None,
    to_profile: Annotated[Optional[str], typer.Option(
        "--to-profile", metavar="NAME", show_default=False,
        help="AWS credentials profile for the destination (default: --profile).")] = None,
    to_region: Annotated[Optional[str], typer.Option(
        "--to-region", metavar="NAME", show_default=False,
        help="Region of the destination bucket (default: --region).")] = None,
    estimate: Annotated[bool, typer.Option(
        "--estimate", help="Print what the copy would read from the lake and cost (egress); "
                           "copy nothing.")] = False,
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
    common = CommonOptions(lake=lake, endpoint_url=endpoint_url, profile=profile, region=region,
                           config=config, json=json_, quiet=quiet, debug=debug)
    out = Output(common)
    with out.guard():
        import ckptlake

        from ..errors import NotFound, UsageError
        from ..format.refs import parse_ref, validate_alias, validate_artifact
        from ..policy.config import check_endpoint_option

        # Everything the command line alone can refuse, refused before any lake is opened
        parsed = parse_ref(ref)
        if to is None and as_ is None:
            raise UsageError("cp needs a destination: --to LAKE_URL (another lake) or "
                             "--as ARTIFACT (another name in this lake)",
                             hint=f"e.g. ckptlake cp {ref} --to s3://bucket/prefix")
        if to is not None and not to.strip():
            raise UsageError("--to is empty", hint="give a lake URL: s3://bucket/prefix or "
                                                   "file:///path")
        if as_ is not None:
            validate_artifact(as_)
        aliases = [validate_alias(name) for name in alias or []]
        check_endpoint_option(endpoint_url)
        check_endpoint_option(to_endpoint_url, "--to-endpoint-url")
        bandwidth = parse_bandwidth(max_bandwidth)  # the chunks written (or server-copied)
        egress = egress_policy(common)
        cfg = str(config) if config else None
        handle = ckptlake.open(lake, config=cfg, endpoint_url=endpoint_url, profile=profile,
                               region=region, concurrency=concurrency,
                               max_bandwidth=bandwidth)
        dest = None
        try:
            if to is not None:
                dest = ckptlake.open(to, config=cfg,
                                     endpoint_url=to_endpoint_url or endpoint_url,
                                     profile=to_profile or profile,
                                     region=to_region or region, max_bandwidth=bandwidth)
            resume_collector()
            out.lake_line(handle)
            if estimate:
                est = handle.estimate_copy(parsed, dest, egress=egress)
                out.result({**est.to_dict(), "lake": lake_url(handle),
                            "lake_origin": lake_origin(handle),
                            "to_lake": redact(dest.url if dest is not None else handle.url)},
                           estimate_summary(est))
                return
            with out.progress() as progress:
                result = handle.copy(parsed, dest, as_, aliases=aliases, progress=progress,
                                     egress=egress, yes=yes, confirm=confirm_egress(out),
                                     on_estimate=lambda e: warn_egress(out, e, yes))
            for warning in result.warnings:
                out.warn(warning)
            doc = {**result.to_dict(), "lake": lake_url(handle),
                   "lake_origin": lake_origin(handle), "to_lake": redact(result.to_lake)}
            out.result(doc, summary(result),
                       done=f"copied {result.artifact}@v{result.version} -> "
                            f"{result.to_artifact}@v{result.to_version}")
        except NotFound:
            require_lake(handle)  # "no lake here" rather than "no such artifact"
            raise
        finally:
            if dest is not None:
                dest.close()
            handle.close()


def summary(r) -> str:  # type: ignore[no-untyped-def]
    where = "" if r.to_lake == r.lake else f"{redact(r.to_lake)} "
    moved = getattr(r, "aliases_moved", None) or {}
    names = [f"{a} (moved from v{moved[a]})" if a in moved else a for a in r.aliases]
    aliases = f" (alias {', '.join(names)})" if names else ""
    how = " through a local copy" if r.rechunked else ""
    return (f"copied {r.artifact}@v{r.version} -> {where}{r.to_artifact}@v{r.to_version}"
            f"{aliases}{how}: {r.chunks_copied} of {r.chunks} chunks written "
            f"({format_bytes(r.bytes_copied)}), {r.chunks_present} already there, "
            f"in {r.seconds:.1f} s")
