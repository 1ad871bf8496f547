"""`ckptlake show REF`: everything about one version."""
from __future__ import annotations

import shlex
from typing import Annotated, Any

import typer

from ..redact import verbatim
from .help import epilog, examples
from .options import (CommonOptions, ConfigOpt, DebugOpt, EndpointOpt, JsonOpt, LakeOpt,
                      ProfileOpt, QuietOpt, RegionOpt)
from .output import Output, format_bytes, lake_url, open_lake, plural, require_lake
from .text import exact_paths

HELP = ("Show everything about the version REF: files, totals, step, metrics, metadata, "
        "provenance, aliases, parents, inputs and children.")
EPILOG = epilog(
    examples("ckptlake show gpt2/run-7/model@prod --json"),
    "At most 50 files are listed, then the empty directories (as dir/), at most 50 too; "
    "--json lists them all.  Control characters in names are shown escaped (\\n, \\x1b), "
    "as ls shows them; --json keeps names exact.  Parents and children whose version "
    "was deleted (by gc or rm) are marked expired.")

MAX_FILES = 50


def show(
    ref: Annotated[str, typer.Argument(
        metavar="REF", show_default=False,
        help="The version to show: ARTIFACT or ARTIFACT@SELECTOR.")],
    lake: LakeOpt = None,
    endpoint_url: EndpointOpt = None,
    profile: ProfileOpt = None,
    region: RegionOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """REF is parsed before the lake is opened (exit 2 on a typo)."""
    common = CommonOptions(lake=lake, endpoint_url=endpoint_url, profile=profile, region=region,
                           config=config, json=json_, quiet=quiet, debug=debug)
    out = Output(common)
    with out.guard():
        from ..format.refs import parse_ref

        parsed = parse_ref(ref)
        handle = open_lake(common)
        try:
            out.lake_line(handle)
            require_lake(handle)
            detail = handle.show(parsed)
            doc = {"lake": lake_url(handle), **detail.to_dict()} if out.json else {}
            if doc:
                doc["files"] = exact_paths(doc["files"])
                doc["dirs"] = [verbatim(d) for d in doc["dirs"]]
            out.result(doc, render(detail) if out.human else None)
        finally:
            handle.close()


def _edge(e: dict[str, Any], arrow: str) -> str:
    text = f"{arrow} {e['relation']}  {e['artifact']}@v{e['version']}"
    if e.get("step") is not None:
        text += f"  step {e['step']}"
    if e["status"] == "expired":
        text += "  (expired" + (f" {e['deleted']}" if e.get("deleted") else "") + ")"
    elif e["status"] == "missing":
        text += "  (missing)"
    return text


def _pairs(d: dict[str, Any], numeric: bool = False) -> str:
    return "  ".join(f"{k}={v:g}" if numeric else f"{k}={v}" for k, v in sorted(d.items()))


def render(d: Any) -> str:
    """Aligned `label  value` lines, then provenance, the files and the empty directories (a
    pull creates them: they are part of the version)."""
    from ..core.identity import iso
    from .text import shown_name, shown_path

    rows: list[tuple[str, str]] = [
        ("version", f"{d.artifact}@v{d.version}"),
        ("kind", d.kind),
        ("size", f"{format_bytes(d.total_bytes)} in {d.file_count} "
                 f"file{'s' if d.file_count != 1 else ''}, {d.chunks} "
                 f"chunk{'s' if d.chunks != 1 else ''}"
                 + (f" ({format_bytes(d.stored_bytes)} stored, "
                    f"{d.stored_bytes / d.total_bytes:.2f} of logical)"
                    if d.total_bytes and format_bytes(d.stored_bytes)
                    != format_bytes(d.total_bytes) else "")),
        ("step", "-" if d.step is None else str(d.step)),
        ("created", f"{iso(d.created)} by {d.created_by or '?'} ({d.tool or '?'})"),
        ("aliases", ", ".join(d.aliases) or "-"),
        ("metrics", _pairs(d.metrics, numeric=True) or "-"),
        ("metadata", _pairs(d.metadata) or "-"),
    ]
    rows += [("parents" if i == 0 else "", _edge(p, "↑")) for i, p in enumerate(d.parents)] \
        or [("parents", "-")]
    rows += [("inputs" if i == 0 else "",
              i_["uri"] + (f"#{i_['digest']}" if i_.get("digest") else ""))
             for i, i_ in enumerate(d.inputs)] or [("inputs", "-")]
    rows += [("children" if i == 0 else "", _edge(c, "↓")) for i, c in enumerate(d.children)] \
        or [("children", "-")]
    p = d.provenance
    if p:
        git = p.get("git")
        if git:
            state = "dirty" if git.get("dirty") else "clean" if git.get("dirty") is False else "?"
            rows.append(("git", f"{git.get('commit')} ({state}) in {git.get('root') or '?'}"))
        if p.get("command"):
            # quoted as a shell would need it (`push "sp ace" t/x` is not 3 arguments), and
            # redacted per argument first: the redaction of the printed line cannot see a
            # secret after `--hf-token` once quoting put it in quotes (an old manifest's)
            from ..redact import redact_argv

            rows.append(("command", shlex.join(redact_argv([str(a) for a in p["command"]]))))
        rows.append(("host", f"{p.get('user', '?')}@{p.get('hostname', '?')}, Python "
                             f"{p.get('python', '?')}, ckptlake {p.get('ckptlake', '?')}"))
    width = max(len(label) for label, _ in rows)
    # every value is one line of text anyone who can push wrote (metadata, the command line,
    # git's root, the host): a newline or an escape sequence in it would break the layout or
    # drive the reader's terminal, so it is escaped as file names are
    lines = [f"{label.ljust(width)}  {shown_name(value)}" for label, value in rows]
    lines.append("files")
    for f in d.files[:MAX_FILES]:
        if "symlink" in f:
            lines.append(f"  {'link':>10}  {shown_path(f['path'])} -> "
                         f"{shown_name(f['symlink'])}")  # a target is free text: redacted
            continue
        extra = f"  ({plural(f['tensors'], 'tensor')})" if "tensors" in f else ""
        extra += "  (executable)" if f.get("executable") else ""
        lines.append(f"  {format_bytes(f['size']):>10}  {shown_path(f['path'])}{extra}")
    if len(d.files) > MAX_FILES:
        lines.append(f"  ... {len(d.files) - MAX_FILES} more (--json lists them all)")
    if d.dirs:
        lines.append("empty directories")
        lines += [f"  {'dir':>10}  {shown_path(path)}/" for path in d.dirs[:MAX_FILES]]
        if len(d.dirs) > MAX_FILES:
            lines.append(f"  ... {len(d.dirs) - MAX_FILES} more (--json lists them all)")
    return "\n".join(lines)
