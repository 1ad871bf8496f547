"""`ckptlake verify [ARTIFACT|REF]`: check that versions can be restored (restic's `check`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from .help import epilog, examples
from .options import (CommonOptions, ConcurrencyOpt, ConfigOpt, DebugOpt, EndpointOpt, JsonOpt,
                      LakeOpt, MaxBandwidthOpt, ProfileOpt, QuietOpt, RegionOpt)
from .output import (PROG, Output, format_bytes, lake_origin, lake_url, open_lake, plural,
                     write_stderr)

if TYPE_CHECKING:
    from ..results import VerifyResult

HELP = ("Check that versions can be restored: the lake header, every manifest, that every "
        "chunk they reference exists with the right size, aliases, shard steps and gc's "
        "records.\n\n"
        "Without an argument the whole lake (and counts orphan chunks); ARTIFACT: its "
        "versions, aliases and shard steps; REF (ARTIFACT@SELECTOR): that one version.  "
        "Problems are reported per version; exit 5 if there are any.")
EPILOG = epilog(
    examples("ckptlake verify", "ckptlake verify gpt2/run-7/ckpt@prod --read-data",
             "ckptlake verify --read-data-subset 5% --seed 7"),
    "Without --read-data no chunk is downloaded: one listing of chunks/ checks existence and "
    "sizes.  --read-data downloads every referenced chunk once and re-hashes it (egress: it "
    "reads the whole lake); --read-data-subset N% re-hashes a reproducible subset of the "
    "chunks (chosen by --seed, default 0: the same chunks each run), N/M part N of M (1/7 .. "
    "7/7 over a week read everything once).",
    "Orphan chunks (referenced by nothing) are reported but are not problems: gc collects "
    "them (not while a manifest is unreadable, or lost: a version's summary without its "
    "manifest or a tombstone; gc refuses to run then, and the orphans may be its chunks).  Stale or failed shard steps and incomplete uploads are warnings.")


def verify(
    target: Annotated[Optional[str], typer.Argument(
        metavar="ARTIFACT|REF", show_default=False,
        help="What to check: ARTIFACT (all its versions), ARTIFACT@SELECTOR (one version); "
             "default: the whole lake.")] = None,
    read_data: Annotated[bool, typer.Option(
        "--read-data", help="Download and re-hash every referenced chunk once.")] = False,
    read_data_subset: Annotated[Optional[str], typer.Option(
        "--read-data-subset", metavar="N%|N/M", show_default=False,
        help="Download and re-hash a reproducible subset of the chunks: N percent, or part N "
             "of M.")] = None,
    seed: Annotated[Optional[int], typer.Option(
        "--seed", metavar="INT", show_default=False,
        help="Which subset --read-data-subset reads (default 0; the same seed, the same "
             "chunks).")] = None,
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
    """Arguments are checked before the lake is opened: a bad ref or subset is a usage error
    (exit 2) even when the lake is unreachable."""
    common = CommonOptions(lake=lake, endpoint_url=endpoint_url, profile=profile, region=region,
                           config=config, json=json_, quiet=quiet, debug=debug)
    out = Output(common)
    with out.guard():
        from ..core.verify import parse_subset
        from ..errors import UsageError
        from ..format.refs import parse_ref, validate_artifact

        if target is not None:
            parse_ref(target) if "@" in target else validate_artifact(target)
        if read_data_subset is not None:
            parse_subset(read_data_subset)  # a bad value fails before the lake is opened
            if read_data:  # (--read-data was silently ignored: only the subset was read)
                raise UsageError("--read-data reads every chunk and --read-data-subset a part "
                                 "of them: give one of the two")
        if seed is not None and read_data_subset is None:
            raise UsageError("--seed chooses the chunks of --read-data-subset; give that too")
        handle = open_lake(common, concurrency=concurrency, max_bandwidth=max_bandwidth)
        try:
            out.lake_line(handle)
            with out.progress() as progress:
                result = handle.verify(target, read_data=read_data, subset=read_data_subset,
                                       seed=seed, progress=progress)
        finally:
            handle.close()
        for warning in result.warnings:
            out.warn(warning)
        doc = {**result.to_dict(), "lake": lake_url(handle), "lake_origin": lake_origin(handle)}
        out.result(doc, report_text(result))
    if not result.ok:
        from ..errors import EXIT_INTEGRITY

        first = result.problems[0]["message"]
        more = f" (and {len(result.problems) - 1} more)" if len(result.problems) > 1 else ""
        write_stderr(f"{PROG}: error: verify found {plural(len(result.problems), 'problem')}"
                     f": {first}{more}")
        raise typer.Exit(EXIT_INTEGRITY)


def report_text(r: "VerifyResult") -> str:
    """The human report: problems first (one line each), then the counts.  The chunks'
    bytes are their decoded sizes (what the manifests reference, bytes_checked), not what
    they take in storage: `du` prints those, and a compressed lake's differ."""
    lines = [f"problem: {p['message']}" for p in r.problems]
    scope = "the whole lake" if r.scope == "lake" else r.scope
    head = (f"verified {scope}: {plural(r.versions_checked, 'version')} "
            f"({r.versions_ok} restorable), {r.aliases_checked} "
            f"alias{'es' if r.aliases_checked != 1 else ''}, "
            f"{plural(r.chunks_checked, 'chunk')} ({format_bytes(r.bytes_checked)} decoded)")
    if r.read_data is not None:
        head += (f"; read {plural(r.chunks_read, 'chunk')} ({format_bytes(r.bytes_read)}"
                 + (f", subset {r.read_data}, seed {r.seed}" if r.read_data != "all" else "")
                 + ")")
    head += f" in {r.seconds:.1f} s"
    lines.append(head)
    if r.orphan_chunks:
        orphans = f"orphan chunks: {r.orphan_chunks} ({format_bytes(r.orphan_bytes or 0)})"
        blocked = [p["key"] for p in r.problems if p.get("blocks_gc")]
        if blocked:  # gc refuses to run, and these may be the unreadable manifest's chunks
            names = ", ".join(blocked[:3]) + (" ..." if len(blocked) > 3 else "")
            lines.append(f"{orphans}, referenced by no readable manifest: they may belong to "
                         f"{names} (unreadable or lost), and gc will not run until "
                         f"{'it is' if len(blocked) == 1 else 'they are'} repaired or removed")
        else:
            lines.append(f"{orphans}, referenced by nothing: gc collects them")
    if r.pending_steps:
        lines.append(f"pending shard steps: {len(r.pending_steps)} (ckptlake ls --pending)")
    if r.incomplete_uploads:
        lines.append(f"incomplete multipart uploads: {r.incomplete_uploads} (gc aborts them "
                     "after its grace period)")
    if r.unrestorable:
        lines.append(f"{plural(len(r.unrestorable), 'version')} cannot be restored: "
                     + ", ".join(f"{u['artifact']}@v{u['version']}" for u in r.unrestorable[:10])
                     + (" ..." if len(r.unrestorable) > 10 else ""))
    elif r.ok:
        lines.append("no problems found")
    return "\n".join(lines)
