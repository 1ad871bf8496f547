"""`ckptlake lineage REF`: ancestors or descendants of a version, as a tree, JSON, DOT or Mermaid."""
from __future__ import annotations

import io
import sys
from typing import Annotated, Any, Optional

import typer

from .help import epilog, examples
from .options import (CommonOptions, ConfigOpt, DebugOpt, EndpointOpt, JsonOpt, LakeOpt,
                      ProfileOpt, QuietOpt, RegionOpt)
from .output import Output, lake_url, open_lake, require_lake

FORMATS = ("tree", "json", "dot", "mermaid")

HELP = ("Show where the version REF came from (--up, the default), what was made from it "
        "(--down), or both.\n\n"
        "Parents are followed across artifacts (resumed-from, fine-tuned-from, derived-from, "
        "evaluated-from); inputs such as datasets are leaves.  Versions deleted (by gc or "
        "rm) are shown as expired, unknown ones as missing.")
EPILOG = epilog(
    examples("ckptlake lineage gpt2/run-7/eval",
             "ckptlake lineage gpt2/base@v1 --down --depth 2",
             "ckptlake lineage gpt2/run-7/model --both --format dot | dot -Tsvg > lineage.svg"),
    "--format tree (default): artifact@vN, step, key metrics and the relation of each edge "
    "(↑ towards parents, ↓ towards children); a chain of single links is one line per "
    "version at one indent, and only a fork's other branches are indented (├─); a version "
    "reached twice is expanded once.  json: "
    "the --json document, {lake, root, direction, depth, nodes, edges}.  dot: Graphviz.  "
    "mermaid: a "
    "flowchart for Markdown.  Edges point from parent to child in dot and mermaid.")


def lineage(
    ref: Annotated[str, typer.Argument(
        metavar="REF", show_default=False,
        help="The version to start from: ARTIFACT or ARTIFACT@SELECTOR.")],
    up: Annotated[bool, typer.Option(
        "--up", help="Ancestors: parents, their parents, ... and inputs (the default).")]
        = False,
    down: Annotated[bool, typer.Option(
        "--down", help="Descendants: versions made from REF, and so on.")] = False,
    both: Annotated[bool, typer.Option("--both", help="Ancestors and descendants.")] = False,
    depth: Annotated[Optional[int], typer.Option(
        "--depth", metavar="N", min=0, show_default=False,
        help="Follow at most N edges from REF (default: all).")] = None,
    format_: Annotated[str, typer.Option(
        "--format", "-f", metavar="FORMAT", show_default=False,
        help="tree (default), json, dot (Graphviz) or mermaid.",
        autocompletion=lambda: FORMATS)] = "tree",  # completions.py offers these
    lake: LakeOpt = None,
    endpoint_url: EndpointOpt = None,
    profile: ProfileOpt = None,
    region: RegionOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """REF, the direction and the format are checked before the lake is opened."""
    common = CommonOptions(lake=lake, endpoint_url=endpoint_url, profile=profile, region=region,
                           config=config, json=json_, quiet=quiet, debug=debug)
    out = Output(common)
    with out.guard():
        from ..errors import UsageError
        from ..format.refs import parse_ref

        parsed = parse_ref(ref)
        if up + down + both > 1:
            raise UsageError("give at most one of --up, --down and --both")
        direction = "down" if down else "both" if both else "up"
        if format_ not in FORMATS:
            raise UsageError(f"unknown --format {format_!r}", hint="one of " + ", ".join(FORMATS))
        handle = open_lake(common)
        try:
            out.lake_line(handle)
            require_lake(handle)
            graph = handle.lineage(parsed, direction=direction, depth=depth)
            # render only what is printed: a tree of 10,000 versions takes seconds to draw.
            # --format json prints the --json document, so a script may use either
            doc = ({"lake": lake_url(handle), **graph.to_dict()}
                   if out.json or format_ == "json" else {})
            out.result(doc, render(graph, format_, doc) if out.human else None,
                       styled=format_ == "tree")  # (its own colours; its labels escaped)
        finally:
            handle.close()


def render(graph: Any, format_: str, doc: dict[str, Any]) -> str:
    from ..core import lineage as core

    if format_ == "dot":
        return core.to_dot(graph).rstrip("\n")
    if format_ == "mermaid":
        return core.to_mermaid(graph).rstrip("\n")
    if format_ == "json":  # as --json prints it (valid Unicode: output.json_document)
        from .output import json_document

        return json_document(doc)
    return render_tree(core.tree(graph))


def _label(item: Any, above: bool = True) -> Any:
    from rich.text import Text

    from ..core.lineage import node_caption
    from .text import one_cell

    n = item.node
    text = Text()
    if item.relation is not None:
        text.append(f"{item.arrow} {one_cell(item.relation)}  ", style="cyan")
    dim = n.status in ("expired", "missing")
    # (labels and captions are the lake's text: a metric name, an input URI, a relation)
    text.append(one_cell(n.label),
                style="dim" if dim else ("green" if n.kind == "input" else "bold"))
    caption = one_cell(node_caption(n)) if n.kind != "input" else ""
    if caption:
        text.append("  " + caption, style="red" if n.status == "missing" else
                    "dim" if dim else "")
    if item.repeated:
        text.append("  (shown above)" if above else "  (shown below)", style="dim")
    return text


def render_tree(root: Any) -> str:
    """The tree as text: colours on a terminal, plain in a pipe; never wrapped nor cut.

    Drawn the way `git log --graph` draws history: the last child of a version (the one with
    the largest subtree) continues at the version's own indent, and only its other children
    branch off one level deeper.  A chain of N single links is N lines at one indent: rich's
    Tree indented each link 4 columns, so its output grew with N squared, and on a terminal
    everything past the width was dropped without a word (20 of 250 versions at 80 columns).
    Indentation grows only where the graph branches, at most log2(N) levels (each branch is
    the smaller side of its fork)."""
    from rich.console import Console
    from rich.text import Text

    tty = sys.stdout.isatty()
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=tty, color_system="auto" if tty else None,
                      highlight=False)
    for line in _tree_lines(root, Text):
        console.print(line, soft_wrap=True)  # soft_wrap: the terminal wraps, nothing is cut
    return buf.getvalue().rstrip("\n")


def _tree_lines(root: Any, text_type: Any) -> Any:
    """(guides + label) per node, depth first in print order, without recursion (chains can
    be thousands of versions long)."""
    size: dict[int, int] = {}  # subtree sizes, post order
    order, todo = [], [root]
    while todo:
        item = todo.pop()
        order.append(item)
        todo += item.children
    for item in reversed(order):
        size[id(item)] = 1 + sum(size[id(c)] for c in item.children)
    stack: list[tuple[Any, str, bool]] = [(root, "", False)]  # item, its indent, a branch?
    printed = set()  # a continuation moved last may print a version's expansion after its mark
    while stack:
        item, indent, branch = stack.pop()
        line = text_type(indent + ("├─ " if branch else ""), style="dim")
        line.append_text(_label(item, above=item.node.id in printed))
        printed.add(item.node.id)
        yield line
        if not item.children:
            continue
        kids = list(item.children)
        main = max(range(len(kids)), key=lambda i: (size[id(kids[i])], i))
        rest = kids[:main] + kids[main + 1:]
        inner = indent + ("│  " if branch else "")
        # pushed in reverse: the branches print first, the continuation last, at `inner`
        stack.append((kids[main], inner, False))
        stack += [(k, inner, True) for k in reversed(rest)]
