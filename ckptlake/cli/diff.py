"""`ckptlake diff A B`: what changed between two versions, down to the tensor."""
from __future__ import annotations

from typing import Annotated, Any, Callable

import typer

from ..redact import verbatim
from .egress import confirm_egress, egress_policy, estimate_summary, warn_egress
from .help import epilog, examples
from .text import exact_paths, shown_line, shown_path
from .options import (CommonOptions, ConfigOpt, DebugOpt, EndpointOpt, JsonOpt, LakeOpt,
                      ProfileOpt, QuietOpt, RegionOpt)
from .output import (Output, format_bytes, lake_origin, lake_url, open_lake, plural,
                     require_lake)

HELP = ("Compare version A with version B (of one artifact or of two): step, metrics, "
        "metadata, files, bytes shared, and tensors of .safetensors files.\n\n"
        "Reads only the two manifests: tensors are compared by the digests recorded at push, "
        "so no tensor data is downloaded unless --values or --inspect is given.")
EPILOG = epilog(
    examples("ckptlake diff gpt2/run-7/ckpt@v3 gpt2/run-7/ckpt@v5",
             "ckptlake diff gpt2/base gpt2/run-7/model --values --json"),
    "Bytes: how much of B's stored chunks A already holds, i.e. what a pull of B costs given "
    "A.  Tensors: added, removed, reshaped, retyped (dtype), changed (same dtype and shape, "
    "other data), matched by file and name, then by name across the files of each version (a "
    "tensor may move between shards).  --values fetches only the changed tensors and reports "
    "max |B-A| and the relative L2 change ||B-A||/||A|| (integers subtracted exactly; elements "
    "that became or stopped being NaN/inf are counted apart, as 'N non-finite').  "
    "--inspect looks inside modified files: "
    "safetensors __metadata__, and torch archives (.pt/.pth/.bin) by storage (CRC-32 and size "
    "from the zip directory) and, with torch installed, by tensor name, dtype and shape; it "
    "reads whole chunks, typically each side's first and last.  A modified file nobody looked "
    "into is listed as 'contents not inspected'.  Empty directories added or removed, and a "
    "single-file version against a directory, count as differences.  Exit 0 whether or not "
    "they differ; with --exit-code, 1 when they differ (kind, step, metrics, metadata, files "
    "or empty directories).",
    "Egress: before --values or --inspect downloads anything, diff estimates the bytes it will "
    "fetch (both versions' ranges of the changed tensors; the chunks --inspect reads), the "
    "route and the cost, from egress: in ckptlake.yaml, exactly as pull does.  Above "
    "egress.warn_above_usd it warns; above egress.confirm_above_usd it asks on a terminal and "
    "otherwise needs --yes (else exit 7, nothing downloaded).  --estimate prints the estimate "
    "of --values (and of --inspect when given) and downloads nothing.")

MAX_LINES = 50


def diff(
    a: Annotated[str, typer.Argument(
        metavar="A", show_default=False, help="The old version: ARTIFACT or ARTIFACT@SELECTOR.")],
    b: Annotated[str, typer.Argument(
        metavar="B", show_default=False, help="The new version: ARTIFACT or ARTIFACT@SELECTOR.")],
    values: Annotated[bool, typer.Option(
        "--values", help="Download the changed tensors (only those) and compare their "
                         "values.")] = False,
    inspect: Annotated[bool, typer.Option(
        "--inspect", help="Look inside modified files: safetensors metadata, torch archives' "
                          "storages and tensors (reads a few chunks per file).")] = False,
    estimate: Annotated[bool, typer.Option(
        "--estimate", help="Print what --values would download and cost (egress); download "
                           "nothing.")] = False,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="With --values/--inspect: accept an egress cost above "
                            "egress.confirm_above_usd without asking.")] = False,
    exit_code: Annotated[bool, typer.Option(
        "--exit-code", help="Exit with 1 if the versions differ, 0 if not (like git diff "
                            "--exit-code).  1 is otherwise the code of an internal error, "
                            "which prints an error line; other errors keep their "
                            "codes.")] = False,
    lake: LakeOpt = None,
    endpoint_url: EndpointOpt = None,
    profile: ProfileOpt = None,
    region: RegionOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Both references are parsed before the lake is opened (exit 2 on a typo)."""
    common = CommonOptions(lake=lake, endpoint_url=endpoint_url, profile=profile, region=region,
                           config=config, json=json_, quiet=quiet, debug=debug)
    out = Output(common)
    with out.guard():
        from ..format.refs import parse_ref

        ref_a, ref_b = parse_ref(a), parse_ref(b)
        # only what downloads tensor data needs the egress policy (validated before opening)
        egress = egress_policy(common) if values or inspect or estimate else None
        handle = open_lake(common)
        try:
            out.lake_line(handle)
            require_lake(handle)
            if estimate:
                est = handle.estimate_diff(ref_a, ref_b, egress=egress,
                                           values=values or not inspect, inspect=inspect)
                out.result({**est.to_dict(), "lake": lake_url(handle),
                            "lake_origin": lake_origin(handle)}, estimate_summary(est))
                return
            result = handle.diff(ref_a, ref_b, values=values, inspect=inspect, egress=egress,
                                 yes=yes,
                                 confirm=confirm_egress(out),
                                 on_estimate=lambda e: warn_egress(out, e, yes))
            doc = {"lake": lake_url(handle), **_exact(result.to_dict())} if out.json else {}
            out.result(doc, render(result) if out.human else None)
        finally:
            handle.close()
    if exit_code and not result.identical:
        raise typer.Exit(1)


def _exact(doc: dict[str, Any]) -> dict[str, Any]:
    """The --json document with every file path in it marked for redaction to leave alone
    (text.exact_paths): a script reads the paths that differ to act on them."""
    f = doc["files"]
    doc["files"] = {**f, **{k: exact_paths(f[k]) for k in ("added", "removed", "modified",
                                                            "unchanged")},
                    **{k: [verbatim(d) for d in f[k]] for k in ("dirs_added", "dirs_removed")}}
    t = doc["tensors"]
    doc["tensors"] = {**t, **{k: exact_paths(v, ("file", "file_a")) for k, v in t.items()
                              if isinstance(v, list) and v and isinstance(v[0], dict)},
                      "files": [verbatim(x) for x in t["files"]],
                      "untracked_files": [verbatim(x) for x in t["untracked_files"]]}
    if doc.get("contents"):
        doc["contents"] = exact_paths(doc["contents"])
    return doc


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:g}"


def _capped(lines: list[str], what: str) -> list[str]:
    if len(lines) <= MAX_LINES:
        return lines
    return lines[:MAX_LINES] + [f"    ... {plural(len(lines) - MAX_LINES, 'more ' + what)} "
                                "(--json lists them all)"]


def _shape(shape: list[int]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _tensor_name(with_file: bool) -> Callable[[dict[str, Any]], str]:
    """A tensor as its row names it: with several safetensors files one name may be in more
    than one (model's and ema's `w`), so the file is said (both, for one that moved)."""
    def name(x: dict[str, Any]) -> str:
        if not with_file:
            return str(x["name"])
        where = shown_path(x["file"]) if x.get("file_a", x["file"]) == x["file"] else \
            f"{shown_path(x['file_a'])} -> {shown_path(x['file'])}"
        return f"{x['name']} ({where})"

    return name


def render(r: Any) -> str:
    lines = [f"diff {r.a['ref']} -> {r.b['ref']}"
             + ("  (identical)" if r.identical else "")]
    if r.kind["changed"]:
        lines.append(f"kind: {r.kind['a']} -> {r.kind['b']}")
    if r.step["changed"]:
        lines.append(f"step: {_num(r.step['a'])} -> {_num(r.step['b'])}")
    m = r.metrics
    if m["added"] or m["removed"] or m["changed"]:
        lines.append("metrics:")
        for k, c in m["changed"].items():
            lines.append(f"  ~ {k}: {c['a']:g} -> {c['b']:g} ({c['delta']:+g})")
        lines += [f"  + {k}: {v:g}" for k, v in m["added"].items()]
        lines += [f"  - {k}: {v:g}" for k, v in m["removed"].items()]
    md = r.metadata
    if md["added"] or md["removed"] or md["changed"]:
        lines.append("metadata:")
        lines += [f"  ~ {k}: {c['a']} -> {c['b']}" for k, c in md["changed"].items()]
        lines += [f"  + {k}: {v}" for k, v in md["added"].items()]
        lines += [f"  - {k}: {v}" for k, v in md["removed"].items()]
    f = r.files
    unchanged_bytes = sum(x["size"] or 0 for x in f["unchanged"])
    dirs = (f", empty directories: {len(f['dirs_added'])} added, "
            f"{len(f['dirs_removed'])} removed" if f["dirs_added"] or f["dirs_removed"] else "")
    lines.append(f"files: {len(f['modified'])} modified, {len(f['added'])} added, "
                 f"{len(f['removed'])} removed, {len(f['unchanged'])} unchanged "
                 f"({format_bytes(unchanged_bytes)}){dirs}")

    def size(x: Any) -> str:
        return "link" if x is None else format_bytes(x)

    notes = {"mode": "  (executable bit only)",
             "unknown": "  (cut into chunks differently: bytes not compared; --inspect reads "
                        "both to tell)"}
    entries = [f"  M {shown_path(x['path'])}  {size(x['size_a'])} -> {size(x['size_b'])}"
               + notes.get(x.get("content", ""), "") for x in f["modified"]]
    entries += [f"  A {shown_path(x['path'])}  {size(x['size'])}" for x in f["added"]]
    entries += [f"  D {shown_path(x['path'])}  {size(x['size'])}" for x in f["removed"]]
    entries += [f"  A {shown_path(d)}/" for d in f["dirs_added"]]
    entries += [f"  D {shown_path(d)}/" for d in f["dirs_removed"]]
    lines += _capped(entries, "file")
    by = r.bytes
    lines.append(f"bytes: {format_bytes(by['shared'])} of B's {format_bytes(by['total'])} "
                 f"already in A ({by['chunks_shared']} of {plural(by['chunks'], 'chunk')}); "
                 f"a pull of B given A fetches {format_bytes(by['to_fetch'])}")
    t = r.tensors
    if t["files"]:
        names = [shown_path(x) for x in t["files"][:3]] + (
            [f"{len(t['files']) - 3} more"] if len(t["files"]) > 3 else [])
        # the scope is said: other files' tensors are not counted here (see contents)
        lines.append(f"tensors: {len(t['changed'])} changed, {len(t['reshaped'])} reshaped, "
                     f"{len(t['retyped'])} retyped, {len(t['added'])} added, "
                     f"{len(t['removed'])} removed, {t['unchanged']} unchanged "
                     f"(in {', '.join(names)})")
        name = _tensor_name(len(t["files"]) > 1)
        rows = []
        for x in t["changed"]:
            text = f"  ~ {name(x)}  {x['dtype']} {_shape(x['shape'])}"
            v = x.get("values")
            if v is not None:
                if "error" in v:
                    text += f"  ({v['error']})"
                else:
                    text += f"  max|Δ| {v['max_abs_diff']:.4g}  rel L2 " + (
                        "-" if v["rel_l2"] is None else f"{v['rel_l2']:.4g}")
                    if v.get("nonfinite"):
                        text += f", {v['nonfinite']} non-finite"
            rows.append(text)
        rows += [f"  ≠ {name(x)}  reshaped {x['dtype_a']} {_shape(x['shape_a'])} -> "
                 f"{x['dtype_b']} {_shape(x['shape_b'])}" for x in t["reshaped"]]
        rows += [f"  ≠ {name(x)}  retyped {x['dtype_a']} -> {x['dtype_b']} "
                 f"{_shape(x['shape_b'])}" for x in t["retyped"]]
        rows += [f"  + {name(x)}  {x['dtype']} {_shape(x['shape'])}" for x in t["added"]]
        rows += [f"  - {name(x)}  {x['dtype']} {_shape(x['shape'])}" for x in t["removed"]]
        lines += _capped(rows, "tensor")
    lines += _contents(r.contents or [])
    settled = sum(x.get("bytes_fetched", 0) for x in f["unchanged"] + f["modified"])
    if settled:
        lines.append(f"read {format_bytes(settled)} to compare files cut into chunks "
                     "differently (--inspect)")
    if t["untracked_files"]:
        lines.append("no tensor records (pushed before ckptlake recorded them, or not a valid "
                     "safetensors file): "
                     + ", ".join(shown_path(x) for x in t["untracked_files"]))
    if r.values is not None:
        lines.append(f"values: fetched {format_bytes(r.values['bytes_fetched'])} "
                     f"for {plural(len(r.values['tensors']), 'changed tensor')}")
    # names come from the pushing file system: a newline or an escape sequence in one must
    # neither break the listing nor drive the terminal (as ls and show escape them)
    return "\n".join(shown_line(line) for line in lines)


def _contents(contents: list[dict[str, Any]]) -> list[str]:
    """What was (and was not) looked into, for modified files other than safetensors files
    whose tensors the tensors section already covers."""
    rows = []
    for c in contents:
        head = f"  {shown_path(c['path'])}"
        if not c["inspected"]:
            if c["kind"] != "safetensors":  # those are named below, as untracked files
                rows.append(f"{head}  contents not inspected ({c['reason']})")
            continue
        if c["kind"] == "safetensors":
            md = c.get("metadata")
            if md and (md["added"] or md["removed"] or md["changed"]):
                rows.append(f"{head}  __metadata__:")
                rows += [f"    ~ {k}: {v['a']} -> {v['b']}" for k, v in md["changed"].items()]
                rows += [f"    + {k}: {v}" for k, v in md["added"].items()]
                rows += [f"    - {k}: {v}" for k, v in md["removed"].items()]
            elif md is not None:
                rows.append(f"{head}  __metadata__ unchanged")
            continue
        s = c["storages"]
        rows.append(f"{head}  torch archive: storages {len(s['changed'])} changed, "
                    f"{len(s['added'])} added, {len(s['removed'])} removed, "
                    f"{s['unchanged']} unchanged")
        t = c.get("tensors")
        if t is None:
            rows.append(f"    tensors not listed: {c.get('tensors_note', '')}")
            continue
        rows.append(f"    tensors: {len(t['changed'])} changed, {len(t['reshaped'])} reshaped, "
                    f"{len(t['retyped'])} retyped, {len(t['added'])} added, "
                    f"{len(t['removed'])} removed, {t['unchanged']} unchanged")
        sub = [f"    ~ {x['name']}  {x['dtype']} {_shape(x['shape'])}" for x in t["changed"]]
        sub += [f"    ≠ {x['name']}  reshaped {x['dtype_a']} {_shape(x['shape_a'])} -> "
                f"{x['dtype_b']} {_shape(x['shape_b'])}" for x in t["reshaped"]]
        sub += [f"    ≠ {x['name']}  retyped {x['dtype_a']} -> {x['dtype_b']} "
                f"{_shape(x['shape_b'])}" for x in t["retyped"]]
        sub += [f"    + {x['name']}  {x['dtype']} {_shape(x['shape'])}" for x in t["added"]]
        sub += [f"    - {x['name']}  {x['dtype']} {_shape(x['shape'])}" for x in t["removed"]]
        rows += _capped(sub, "tensor")
    fetched = sum(c.get("bytes_fetched", 0) for c in contents)
    if fetched:
        rows.append(f"  (read {format_bytes(fetched)} of chunks to look inside)")
    return ["contents:"] + rows if rows else []
