"""`ckptlake du [PREFIX]`: what each artifact stores, and what deleting it would free."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from .help import epilog, examples
from .options import (CommonOptions, ConfigOpt, DebugOpt, EndpointOpt, JsonOpt, LakeOpt,
                      ProfileOpt, QuietOpt, RegionOpt)
from .output import (Output, format_bytes, lake_origin, lake_url, open_lake, plural,
                     require_lake)

if TYPE_CHECKING:
    from ..core.du import DuReport

HELP = ("Show what each artifact (and with --versions each version) stores: logical, stored, "
        "exclusive and shared bytes, and their monthly cost.")
EPILOG = epilog(
    examples("ckptlake du", "ckptlake du gpt2/ --versions --sort exclusive",
             "ckptlake du --json"),
    "LOGICAL: the versions' file sizes added up.  STORED: the chunk objects its versions "
    "reference, each counted once (a pack counts whole).  EXCLUSIVE: the stored bytes nothing "
    "else references (no other artifact; for a version, no other version; no pending sharded "
    "step): deleting it alone, then gc, frees exactly these.  SHARED: STORED - EXCLUSIVE.  "
    "$/MONTH at retention.storage_price_per_gb_month of the config file.",
    "The last line reconciles the listing: exclusive + shared (between artifacts, or with a "
    "pending sharded step) + only in pending steps + "
    "orphan chunks (nothing references them; gc collects them) = the bytes under chunks/; "
    "manifests, aliases and summaries are metadata.  Reads listings and manifests only, never "
    "a chunk.  PREFIX selects the artifacts shown by the start of their name (gpt2/ or "
    "gpt2/run-7, not a glob, nor a version: exit 2 on '@'; --versions has a row per version); "
    "sharing is always counted lake-wide.")


def _sort_keys() -> tuple[str, ...]:
    """--sort's keys, for the shell completion scripts (completions.py); core/du.py is imported
    when they are asked for, not when the option is built."""
    from ..core.du import SORT_KEYS

    return SORT_KEYS


HEADERS = ("ARTIFACT", "VERSIONS", "LOGICAL", "STORED", "EXCLUSIVE", "SHARED", "$/MONTH",
           "FREES $/MONTH")


def du(
    prefix: Annotated[Optional[str], typer.Argument(
        metavar="PREFIX", show_default=False,
        help="Only artifacts whose name starts with PREFIX (default: all).")] = None,
    versions: Annotated[bool, typer.Option(
        "--versions", help="Also one row per version (its exclusive bytes: chunks no other "
                           "version references).")] = False,
    sort: Annotated[str, typer.Option(
        "--sort", metavar="KEY", help="stored, exclusive or logical (largest first), or name.",
        autocompletion=_sort_keys)] = "stored",
    lake: LakeOpt = None,
    endpoint_url: EndpointOpt = None,
    profile: ProfileOpt = None,
    region: RegionOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """The price comes from the same retention: section gc --dry-run prices with."""
    common = CommonOptions(lake=lake, endpoint_url=endpoint_url, profile=profile, region=region,
                           config=config, json=json_, quiet=quiet, debug=debug)
    out = Output(common)
    with out.guard():
        from ..core.du import SORT_KEYS
        from ..errors import UsageError
        from ..policy.config import load_config
        from ..policy.retention import load_retention

        if sort not in SORT_KEYS:
            raise UsageError(f"--sort {sort!r}: expected one of {', '.join(SORT_KEYS)}")
        if prefix is not None and "@" in prefix:
            # no artifact name holds '@': such a prefix matches nothing, which read as "no
            # artifacts" (exit 0) for a user asking about one version
            name = prefix.partition("@")[0]
            raise UsageError(f"du takes the start of artifact names, not a version: {prefix}",
                             hint=f"one row per version: ckptlake du {name} --versions; one "
                                  f"version's size: ckptlake show {prefix}" if name else
                                  "e.g. ckptlake du gpt2/ --versions")
        price = load_retention(load_config(str(config) if config else None)) \
            .storage_price_per_gb_month
        handle = open_lake(common)
        try:
            out.lake_line(handle)
            require_lake(handle)
            report = handle.du(prefix or "", versions=versions, sort=sort, price=price)
            doc = report_doc(report, versions=versions)
            doc.update(lake=lake_url(handle), lake_origin=lake_origin(handle))
            if out.json:
                out.result(doc, None)
                return
            out.table(doc, HEADERS, rows(report, versions=versions),
                      empty="no artifacts" + (f" starting with {prefix!r}" if prefix else ""))
            out.result(doc, totals_text(report))
            if report.lake_totals.missing_chunks:
                out.warn(f"{plural(report.lake_totals.missing_chunks, 'reference')} to chunks "
                         "the listing does not have (run: ckptlake verify)")
        finally:
            handle.close()


def report_doc(report: "DuReport", *, versions: bool) -> dict[str, Any]:
    doc = report.to_dict()
    if not versions:
        for a in doc["artifacts"]:
            del a["versions"]
    return doc


def _usd(x: float) -> str:
    return f"${x:,.2f}"


def rows(report: "DuReport", *, versions: bool) -> list[list[str]]:
    out = []
    for a in report.artifacts:
        out.append([a.artifact, str(a.version_count), format_bytes(a.logical_bytes),
                    format_bytes(a.stored_bytes), format_bytes(a.exclusive_bytes),
                    format_bytes(a.shared_bytes), _usd(a.stored_usd_month),
                    _usd(a.exclusive_usd_month)])
        if versions:
            for v in a.versions:
                out.append([f"  @v{v.version}", "-" if v.step is None else f"step {v.step}",
                            format_bytes(v.logical_bytes), format_bytes(v.stored_bytes),
                            format_bytes(v.exclusive_bytes), format_bytes(v.shared_bytes),
                            _usd(v.stored_usd_month), _usd(v.exclusive_usd_month)])
    return out


def totals_text(report: "DuReport") -> str:
    t = report.lake_totals
    lines = [
        f"lake: {format_bytes(t.total_bytes)} in {plural(t.objects, 'object')}, "
        f"{_usd(t.total_usd_month)}/month"
        + (" with the incomplete uploads" if t.incomplete_upload_bytes else "")
        + f" at ${report.storage_price_per_gb_month:g}/GB-month; "
        f"{plural(t.artifacts, 'artifact')}, {plural(t.versions, 'version')}, "
        f"{format_bytes(t.logical_bytes)} logical",
        f"chunks: {format_bytes(t.chunk_bytes)} ({t.chunk_objects}) = exclusive to one artifact "
        f"{format_bytes(t.exclusive_bytes)} + shared (between artifacts, or with a pending "
        f"sharded step) {format_bytes(t.shared_bytes)} + only in pending sharded steps "
        f"{format_bytes(t.pending_bytes)}"
        f" + orphans {format_bytes(t.orphan_bytes)} ({t.orphan_objects}; gc collects them)",
        f"metadata (manifests, aliases, summaries, ...): {format_bytes(t.metadata_bytes)} "
        f"({t.metadata_objects})"
        + (f"; not the lake's: {format_bytes(t.foreign_bytes)} ({t.foreign_objects})"
           if t.foreign_objects else ""),
    ]
    if t.incomplete_uploads:
        held = ("of unknown size" if t.incomplete_upload_bytes is None
                else f"holding {format_bytes(t.incomplete_upload_bytes)}")
        lines.append(f"incomplete uploads: {t.incomplete_uploads} {held}, billed as stored and "
                     "not in the object totals above (gc aborts those older than "
                     "retention.grace_period; ckptlake verify lists them)")
    elif t.incomplete_uploads is None:
        lines.append("incomplete uploads: unknown (the store could not list them)")
    return "\n".join(lines)
