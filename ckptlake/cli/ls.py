"""`ckptlake ls [PREFIX/ | ARTIFACT | REF [PATH]]`: list artifacts (all, or those under a
prefix), the versions of one artifact, or the files of one version."""
from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from ..format.times import time_text
from ..redact import verbatim
from .help import epilog, examples
from .options import (CommonOptions, ConfigOpt, DebugOpt, EndpointOpt, JsonOpt, LakeOpt,
                      ProfileOpt, QuietOpt, RegionOpt)
from .output import Output, format_age, format_bytes, lake_url, open_lake, require_lake
from .text import exact_paths, shown_name, shown_path

HELP = ("List the artifacts of the lake (or those under PREFIX/), the versions of ARTIFACT, or "
        "the files of the version REF (ARTIFACT@SELECTOR).")
EPILOG = epilog(
    examples("ckptlake ls gpt2/",
             "ckptlake ls gpt2/run-7/ckpt --where 'val_loss<2.5' --where 'step>=1000' "
             "--sort val_loss --limit 5"),
    "Without ARTIFACT: one row per artifact (name, versions, latest, updated, aliases).\n"
    "With PREFIX/ (ending in '/', as for aws s3 ls): the same rows, for the artifacts whose "
    "name starts with it (ckptlake ls gpt2/); none is an empty listing (exit 0), as for an "
    "empty lake.\n"
    "With ARTIFACT: one row per version (vN, step, size, age, aliases, metrics).\n"
    "With REF (a selector: gpt2/ckpt@v3, gpt2/ckpt@latest, gpt2/ckpt@min:val_loss): one row "
    "per file of that version (path, size, kind: file, dir, symlink or safetensors with its "
    "tensor count); a PATH after it (a file or directory prefix) narrows the list, and makes "
    "a plain ARTIFACT mean its latest version.\n"
    "With --pending: sharded steps not committed yet (ranks in, state).\n"
    "With --all: also the versions gc deleted, shown as expired (from their tombstones: "
    "when and under which retention rule).\n"
    "A table on a terminal, plain aligned columns otherwise; --json for scripts.",
    "Selecting versions: --where KEY OP NUMBER (OP one of < <= > >= == !=; KEY a metric, "
    "step, version or size; all must hold; versions without the metric never match).  --sort KEY ascending, -KEY or "
    "KEY:desc descending (versions without it last; ties newest first, as @min:/@max:).  "
    "--limit N: the first N after sorting, else the N newest.  Metrics named in --where/--sort "
    "get their own columns.")

ARTIFACT_HEADERS = ("ARTIFACT", "VERSIONS", "LATEST", "UPDATED", "ALIASES")
VERSION_HEADERS = ("VERSION", "STEP", "SIZE", "AGE", "ALIASES", "METRICS")


def ls(
    artifact: Annotated[Optional[str], typer.Argument(
        metavar="ARTIFACT|REF", show_default=False,
        help="Artifact whose versions to list (default: list all artifacts), a version "
             "(ARTIFACT@SELECTOR) whose files to list, or a PREFIX/ (ending in '/') whose "
             "artifacts to list.")] = None,
    path: Annotated[Optional[str], typer.Argument(
        metavar="PATH", show_default=False,
        help="With REF: list only this file or what is below this directory.")] = None,
    pending: Annotated[bool, typer.Option(
        "--pending", help="List sharded steps not committed yet (of ARTIFACT, or of all "
                          "artifacts): how many of WORLD ranks are in, and why not committed.")]
        = False,
    where: Annotated[Optional[list[str]], typer.Option(
        "--where", metavar="COND", show_default=False,
        help="Keep versions matching COND, e.g. 'val_loss<2.5' or 'step>=1000' (repeatable, "
             "all must hold; needs ARTIFACT).")] = None,
    sort: Annotated[Optional[str], typer.Option(
        "--sort", metavar="KEY", show_default=False,
        help="Sort versions by a metric (or step, version, size); -KEY or KEY:desc for "
             "descending.")] = None,
    limit: Annotated[Optional[int], typer.Option(
        "--limit", metavar="N", min=0, show_default=False,
        help="Show at most N versions (the first N after --sort, else the newest N).")] = None,
    tree: Annotated[bool, typer.Option(
        "--tree", help="With REF: show the files as an indented tree, directories with the "
                       "total size below them.")] = False,
    all_: Annotated[bool, typer.Option(
        "--all", "-a", help="Also show versions deleted (by gc or rm), as expired (with ARTIFACT), or "
                            "how many each artifact lost (without).")] = False,
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
        from ..format.refs import parse_ref, validate_artifact

        prefix = artifact_prefix(artifact, path)
        if prefix is not None:
            artifact = None
        if artifact is not None and ("@" in artifact or path is not None):
            ref = parse_ref(artifact)
            if pending or where or sort is not None or limit is not None or all_:
                from ..errors import UsageError

                raise UsageError("--pending, --where, --sort, --limit and --all list versions; "
                                 f"{artifact} names one version (drop the '@...' to list "
                                 "versions)")
            handle = open_lake(common)
            try:
                out.lake_line(handle)
                listing = handle.files(ref, path)
                doc = {"lake": lake_url(handle), **listing,
                       "files": exact_paths(listing["files"])}
                rows = tree_rows(listing["files"]) if tree else \
                    [file_row(f) for f in listing["files"]]
                out.table(doc, FILE_HEADERS, rows,
                          empty=f"{listing['artifact']}@v{listing['version']} has no files")
            finally:
                handle.close()
            return
        if tree:
            from ..errors import UsageError

            raise UsageError("--tree shows the files of one version: give a REF "
                             "(ARTIFACT@SELECTOR)")
        if artifact is not None:
            validate_artifact(artifact)
        query = parse_query(artifact, where, sort, limit, prefix=prefix)
        handle = open_lake(common)
        try:
            out.lake_line(handle)
            require_lake(handle)
            if pending:
                steps = handle.pending(artifact)
                if prefix is not None:
                    steps = [p for p in steps if p.artifact.startswith(prefix)]
                doc = {"lake": lake_url(handle), "artifact": artifact,
                       "pending": [p.to_dict() for p in steps]}
                out.table(doc, PENDING_HEADERS, [pending_row(p) for p in steps],
                          empty="no pending sharded steps")
            elif artifact is None:
                # (a key prefix: artifacts/gpt2/ also holds the versions of an artifact gpt2)
                artifacts = [a for a in handle.artifacts(prefix or "")
                             if a.artifact.startswith(prefix or "")]
                doc: dict[str, Any] = {"lake": lake_url(handle),
                                       **({"prefix": prefix} if prefix is not None else {}),
                                       "artifacts": [a.to_dict() for a in artifacts]}
                rows = [artifact_row(a) for a in artifacts]
                headers: tuple[str, ...] = ARTIFACT_HEADERS
                if all_:
                    counts = handle.expired_counts(prefix or "")
                    for a, row in zip(doc["artifacts"], rows):
                        a["expired"] = counts.get(a["artifact"], 0)
                        row.append(str(a["expired"]))
                    # every version deleted (rm --all): still listed, as gc's plan and
                    # lineage still know it
                    live = {a.artifact for a in artifacts}
                    gone = sorted(a for a in counts
                                  if a not in live and a.startswith(prefix or ""))
                    doc["artifacts"] += [{"artifact": a, "versions": 0, "latest": None,
                                          "updated": None, "aliases": [],
                                          "expired": counts[a]} for a in gone]
                    rows += [[a, "0", "-", "-", "-", str(counts[a])] for a in gone]
                    order = sorted(range(len(rows)), key=lambda i: rows[i][0])
                    rows = [rows[i] for i in order]
                    doc["artifacts"] = [doc["artifacts"][i] for i in order]
                    headers += ("EXPIRED",)
                out.table(doc, headers, rows, empty=f"no artifacts in {lake_url(handle)}" + (
                    f" starting with {prefix!r}" if prefix is not None else ""))
            else:
                from ..core.query import Sort, select, unknown_sort_key

                # all of them first: whether any version has the --sort metric is asked of all
                from ..errors import NotFound

                try:
                    found = handle.versions(artifact)
                except NotFound:
                    # every version deleted (rm --all): --all still shows them, as expired
                    if not all_ or not (gone_versions := handle.expired(artifact)):
                        raise
                    found = []
                else:
                    gone_versions = None
                versions = select(found, **query) if query else found
                if (key := unknown_sort_key(found, query.get("sort"))) is not None:
                    # a metric's name is no secret (`secret_recall` read as `"***"`)
                    out.warn(f"no version of {artifact} has metric {verbatim(repr(key))}: "
                             f"--sort {verbatim(str(sort))} leaves them in version order",
                             document=True)
                # a typo in --where's metric empties the listing, which reads as "nothing
                # matched" rather than "no such metric"
                for text, cond in zip(where or (), query.get("where", ())):
                    if (key := unknown_sort_key(found, Sort(cond.key))) is not None:
                        out.warn(f"no version of {artifact} has metric "
                                 f"{verbatim(repr(key))}: --where {verbatim(text)} matches "
                                 "none of them", document=True)
                doc = {"lake": lake_url(handle), "artifact": artifact,
                       "versions": [v.to_dict() for v in versions]}
                columns = metric_columns(query)
                rows = [version_row(v, columns) for v in versions]
                headers = VERSION_HEADERS[:-1] + tuple(columns) + VERSION_HEADERS[-1:]
                if all_:
                    rows, headers = with_expired(
                        handle.expired(artifact) if gone_versions is None else gone_versions,
                        versions, rows, headers, columns, doc, ordered=not query)
                out.table(doc, headers,
                          rows, empty=f"{artifact} has no versions"
                          + (" matching the query" if query else ""))
        finally:
            handle.close()


PENDING_HEADERS = ("ARTIFACT", "STEP", "SHARDS", "STATE", "MISSING", "NOTE")
FILE_HEADERS = ("PATH", "SIZE", "KIND")


def tree_rows(files: list[dict[str, Any]]) -> list[list[str]]:
    """Rows of an indented tree: each directory once, before what is below it, with the
    total size of its files."""
    below: dict[str, int] = {}
    for f in files:
        parts = f["path"].split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            below[d] = below.get(d, 0) + (f["size"] if f["kind"] not in ("dir", "symlink")
                                          else 0)
    rows, shown = [], set()
    for f in files:
        parts = f["path"].split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in shown:
                shown.add(d)
                rows.append(["  " * (i - 1) + shown_path(parts[i - 1]) + "/",
                             format_bytes(below[d]), "dir"])
        if f["kind"] == "dir" and f["path"] in shown:
            continue
        row = file_row(f, parts[-1])
        row[0] = "  " * (len(parts) - 1) + row[0]
        rows.append(row)
    return rows


def file_row(f: dict[str, Any], name: str | None = None) -> list[str]:
    """A file's row; `name`: what to show for its path (a tree shows the last part)."""
    kind = f["kind"]
    if kind == "safetensors":
        n = f["tensors"]
        kind = f"safetensors ({n} tensor{'s' if n != 1 else ''})"
    elif kind == "symlink":
        kind = f"symlink -> {shown_name(f['target'])}"  # free text: redacted
    size = "-" if f["kind"] in ("dir", "symlink") else format_bytes(f["size"])
    name = f["path"] if name is None else name
    return [shown_path(name) + ("/" if f["kind"] == "dir" else ""), size, kind]


def pending_row(p: Any) -> list[str]:
    missing = ",".join(map(str, p.missing[:8])) + ("..." if len(p.missing) > 8 else "")
    if p.state in ("ready", "stale"):
        note = "push any rank again to commit"
    elif p.state in ("claimed", "committing"):
        note = f"being committed ({p.claim_age_seconds:.0f}s)"
    else:
        note = p.error or "-"
    return [p.artifact, str(p.step), f"{len(p.ranks)}/{p.world}", p.state, missing or "-", note]


def with_expired(expired: list[Any], versions: list[Any], rows: list[list[str]],
                 headers: tuple[str, ...], columns: list[str], doc: dict[str, Any], *,
                 ordered: bool) -> tuple[list[list[str]], tuple[str, ...]]:
    """`ls ARTIFACT --all`: live rows get STATE 'live', tombstones become 'expired' rows (in
    version order unless a query sorted the live ones); --json gets an `expired` list."""
    doc["expired"] = [t.to_dict() for t in expired]
    keyed = [(v.version, row + ["live"]) for v, row in zip(versions, rows)]
    keyed += [(t.version, version_row(t, columns) + [
        f"expired {time_text(t.deleted)[:10]} ({t.rule})"]) for t in expired]  # a UTC date
    if ordered:
        keyed.sort(key=lambda item: item[0])
    return [row for _, row in keyed], headers + ("STATE",)


def artifact_row(a: Any) -> list[str]:
    return [a.artifact, str(a.versions), f"v{a.latest}", format_age(a.updated),
            ", ".join(a.aliases) or "-"]


def artifact_prefix(arg: str | None, path: str | None) -> str | None:
    """`ls gpt2/`: the artifact prefix an argument ending in '/' names (checked as the
    artifact name before it, so a typo is still exit 2), else None.

    Why '/': `aws s3 ls` and s5cmd list what is under `prefix/`, and an artifact name never
    ends in '/', so the trailing slash cannot be read two ways."""
    if arg is None or not arg.endswith("/") or "@" in arg:
        return None
    from ..format.refs import validate_artifact

    if path is not None:
        from ..errors import UsageError

        raise UsageError(f"{arg} is a prefix: it lists artifacts, which have no PATH",
                         hint="list the files of one version with: ckptlake ls REF PATH")
    validate_artifact(arg[:-1])
    return arg


def parse_query(artifact: str | None, where: list[str] | None, sort: str | None,
                limit: int | None, *, prefix: str | None = None) -> dict[str, Any]:
    """--where/--sort/--limit as Lake.versions keywords (only those given), checked before the
    lake is opened."""
    from ..core.query import parse_sort, parse_where

    query: dict[str, Any] = {}
    if where:
        query["where"] = [parse_where(w) for w in where]
    if sort is not None:
        query["sort"] = parse_sort(sort)
    if limit is not None:
        query["limit"] = limit
    if query and artifact is None:
        from ..errors import UsageError

        raise UsageError("--where, --sort and --limit select versions: give an ARTIFACT"
                         + (f", not a prefix ({prefix})" if prefix is not None else ""))
    return query


def metric_columns(query: dict[str, Any]) -> list[str]:
    """Metrics the query names, each shown in its own column (before METRICS)."""
    from ..core.query import query_keys

    return query_keys(query.get("where", ()), query.get("sort")) if query else []


def version_row(v: Any, columns: list[str] | tuple[str, ...] = ()) -> list[str]:
    metrics = " ".join(f"{k}={val:g}" for k, val in sorted(v.metrics.items())
                       if k not in columns) or "-"
    own = [f"{v.metrics[k]:g}" if k in v.metrics else "-" for k in columns]
    size = format_bytes(v.total_bytes)
    stored = getattr(v, "stored_bytes", None)
    # compressed (or deduplicated inside); not "11.8 MiB (11.8 MiB stored)" for a few bytes
    if stored is not None and (shown := format_bytes(stored)) != size:
        size += f" ({shown} stored)"
    return [f"v{v.version}", "-" if v.step is None else str(v.step), size,
            format_age(v.created), ", ".join(v.aliases) or "-", *own, metrics]
