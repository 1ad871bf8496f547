"""Lineage: parents recorded in manifests, a reverse index for descendants, and graph walks.

Edges point from a child version to a fixed parent version (`@latest` is resolved at push and
stored as the number it meant), so the graph is acyclic by construction: a parent always exists
before its child is committed.  `--up` follows the `parents` of manifests (and of gc
tombstones, so a chain survives the deletion of its middle).  `--down` never scans the lake: the
push writes, after committing the child, one empty marker per edge under the parent,

    artifacts/<parent>/@children/<parent N>.<child artifact>@<child N>.<relation>

(the child artifact's '/' written as '!', so the markers of an artifact are flat keys, which
directory-backed servers list fastest), so the children of every version of an artifact come
from one listing.  A walk down then reads only listings (markers, `@v/`, `@s/` summaries) of the
artifacts it reaches.

Why the marker is written after the child's manifest: the child's number is only known once its
create-if-absent commit succeeded, and a marker must never name a version that was not
committed.  A crash between the two loses only the marker; the edge itself is in the child's
manifest (so `--up` is always complete, and the index can be rebuilt from manifests).  Readers
ignore a marker whose child manifest is missing (unless a tombstone says gc expired it) or is
newer than the marker (a number reused after gc cannot inherit someone else's edges).

Egress: a walk reads listings, manifests and gc tombstones (small JSON), never a data chunk, so
`lineage` has no egress guard (unlike `pull` and `diff --values`, core/egress.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

from ..errors import NotFound, UsageError
from ..format import layout
from ..format.manifest import RELATIONS, Manifest, is_metric_value
from ..format.refs import Ref, parse_ref
from ..format.times import parse_time, time_text
from ..results import _Result
from ..store.base import ObjectInfo, Store
from ..transfer.pool import bounded_map
from .summary import Summary, usable

DEFAULT_RELATION = "derived-from"
DIRECTIONS = ("up", "down", "both")
_WORKERS = 16

PARENT_GRAMMAR = ("REF[:RELATION], e.g. base/model@v3:fine-tuned-from; RELATION is one of "
                  + ", ".join(RELATIONS) + f" (default {DEFAULT_RELATION})")


# --- push side --------------------------------------------------------------------------------

def check_relation(relation: str) -> str:
    if relation not in RELATIONS:
        raise UsageError(f"unknown relation {relation!r}", hint="one of " + ", ".join(RELATIONS))
    return relation


def parse_parent(text: str, default_relation: str = DEFAULT_RELATION) -> tuple[Ref, str]:
    """`REF[:RELATION]`: ':' occurs in a reference only right after `@min`/`@max`, so the
    first ':' after the selector's own begins the relation."""
    text = str(text).strip()
    skip = 0
    if (at := text.find("@")) >= 0 and text[at + 1:at + 5] in ("min:", "max:"):
        skip = at + 5
    colon_at = text.find(":", skip)
    ref_text, colon, relation = ((text, "", "") if colon_at < 0 else
                                 (text[:colon_at], ":", text[colon_at + 1:]))
    if colon and not relation:
        raise UsageError(f"empty relation after ':' in parent {text!r}", hint=PARENT_GRAMMAR)
    return parse_ref(ref_text), check_relation(relation if colon else default_relation)


def parse_input(text: str) -> dict[str, str]:
    """`URI[#DIGEST]`: any URI naming a dataset or other input, optionally pinned by a digest."""
    text = str(text).strip()
    uri, hashmark, digest = text.rpartition("#") if "#" in text else (text, "", "")
    if not uri or any(c.isspace() or ord(c) < 32 for c in text) or (hashmark and not digest):
        raise UsageError(f"invalid input {text!r}",
                         hint="use URI[#DIGEST], e.g. s3://data/wiki-2024#sha256:ab12...")
    return {"uri": uri, "digest": digest} if digest else {"uri": uri}


# A marker's last key segment, `<P>.<child>@<C>.<relation>`, is a file name on a local lake
# (255 bytes on ext4, xfs, btrfs, APFS, NTFS), and it must stay one: see check_child_name.
MARKER_SEGMENT_MAX = 255


def check_child_name(child: str, relation: str) -> None:
    """Refuse, before anything is uploaded, a child whose `relation` marker would not fit in a
    key segment a local lake can store.

    The version itself could be committed, but its marker never written (ENAMETOOLONG), so
    `lineage --down` of the parent would miss it for good and nothing but a warning said so.
    Refused on every lake, S3 too, so that any lake can be copied or replicated to a local
    one (and a parent's marker key then also stays under S3's 1,024 bytes)."""
    size = len(layout.child_key("p", 0, child, 0, relation).rsplit("/", 1)[1].encode())
    if size > MARKER_SEGMENT_MAX:
        limit = len(child.encode()) - (size - MARKER_SEGMENT_MAX)
        shown = child if len(child) <= 40 else child[:40] + "..."
        raise UsageError(
            f"artifact name too long to record a parent: {shown} has {len(child)} characters, "
            f"at most {limit} with a {relation} parent",
            hint="a lineage marker holds the name in one 255-byte key segment, see "
                 "docs/format.md, Lineage; use a shorter name, or push without a parent")


def resolve_parents(store: Store, parents: Iterable[str | Ref | tuple[str | Ref, str]], *,
                    relation: str = DEFAULT_RELATION,
                    child: str | None = None) -> tuple[dict[str, Any], ...]:
    """Fix each parent to the version number it names now; NotFound if it does not exist.

    Accepts "REF[:RELATION]" strings, Refs (with `relation`) or (ref, relation) pairs; one
    string or Ref alone is one parent (iterated, a string was its characters).  `child`: the
    artifact that will name them, refused here if its markers could not be written.
    """
    from .catalog import resolve

    check_relation(relation)
    if isinstance(parents, (str, Ref)):
        parents = (parents,)
    specs: list[tuple[Ref, str]] = []
    for p in parents:
        if isinstance(p, tuple):
            ref, rel = p
            specs.append((parse_ref(ref) if isinstance(ref, str) else ref, check_relation(rel)))
        elif isinstance(p, Ref):
            specs.append((p, relation))
        else:
            specs.append(parse_parent(p, relation))
    if child is not None:
        for rel in dict.fromkeys(rel for _, rel in specs):
            check_child_name(child, rel)

    def one(spec: tuple[Ref, str]) -> dict[str, Any]:
        ref, rel = spec
        try:
            m = resolve(store, ref)
        except NotFound as exc:
            raise NotFound(f"parent {ref} does not exist: {exc.message}", hint=exc.hint) \
                from None
        return {"artifact": m.artifact, "version": m.version, "relation": rel}

    out: list[dict[str, Any]] = []
    for edge in (one(s) for s in specs):
        if any((e["artifact"], e["version"]) == (edge["artifact"], edge["version"]) for e in out):
            raise UsageError(f"parent {edge['artifact']}@v{edge['version']} given twice")
        out.append(edge)
    return tuple(out)


def write_child_markers(store: Store, m: Manifest) -> None:
    """The reverse index: one marker per parent edge of the committed version `m`."""
    def put(p: dict[str, Any]) -> None:
        body = json.dumps({"parent": f"{p['artifact']}@v{p['version']}",
                           "child": f"{m.artifact}@v{m.version}", "relation": p["relation"]})
        store.put(layout.child_key(p["artifact"], p["version"], m.artifact, m.version,
                                   p["relation"]), body.encode())

    for _ in bounded_map(put, m.parents, workers=8, name="ckptlake-meta"):
        pass


# --- the graph ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class LineageNode(_Result):
    id: str  # "artifact@vN", or "input:<uri>" for an input
    kind: str  # "version" | "input"
    status: str  # "ok" | "expired" (gc tombstone) | "missing" | "input"
    artifact: str | None = None
    version: int | None = None
    step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    created: datetime | None = None
    deleted: str | None = None  # when gc expired it (from the tombstone)
    uri: str | None = None
    digest: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "input":
            return self.uri + (f"#{self.digest}" if self.digest else "")  # type: ignore[operator]
        return self.id


@dataclass(frozen=True)
class LineageEdge(_Result):
    child: str  # node id
    parent: str  # node id (a version, or an input)
    relation: str  # one of RELATIONS, or "input"


@dataclass(frozen=True)
class LineageGraph(_Result):
    root: str
    direction: str
    depth: int | None
    nodes: list[LineageNode]
    edges: list[LineageEdge]

    def node(self, node_id: str) -> LineageNode:
        return next(n for n in self.nodes if n.id == node_id)

    def parents_of(self, node_id: str) -> list[LineageEdge]:
        return [e for e in self.edges if e.child == node_id]

    def children_of(self, node_id: str) -> list[LineageEdge]:
        return [e for e in self.edges if e.parent == node_id]


def node_id(artifact: str, version: int) -> str:
    return f"{artifact}@v{version}"


def input_id(item: dict[str, str]) -> str:
    return "input:" + item["uri"] + (f"#{item['digest']}" if item.get("digest") else "")


@dataclass
class _Info:
    """What the walk knows about one version."""

    node: LineageNode
    parents: tuple[dict[str, Any], ...] = ()
    inputs: tuple[dict[str, str], ...] = ()


class _Index:
    """What the walk has read, per artifact (one listing: versions, summaries, markers,
    tombstones) and per version (manifests), so nothing is read twice."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._versions: dict[str, dict[int, datetime]] = {}
        self._summaries: dict[str, dict[int, Summary]] = {}
        self._tombs: dict[str, dict[int, str]] = {}
        self._children: dict[str, dict[int, list[tuple[str, int, str, datetime]]]] = {}
        self._manifests: dict[tuple[str, int], Manifest] = {}

    @staticmethod
    def _tombs_from(artifact: str, infos: Iterable[ObjectInfo]) -> dict[int, str]:
        out: dict[int, str] = {}
        for info in infos:
            parsed = layout.parse_tombstone_key(info.key)
            if parsed and parsed[0] == artifact:
                out.setdefault(parsed[1], info.key)
        return out

    @staticmethod
    def _children_from(artifact: str, infos: Iterable[ObjectInfo]
                       ) -> dict[int, list[tuple[str, int, str, datetime]]]:
        out: dict[int, list[tuple[str, int, str, datetime]]] = {}
        for info in infos:
            parsed = layout.parse_child_key(artifact, info.key)
            if parsed and parsed[3] in RELATIONS:
                pv, child, cv, rel = parsed
                out.setdefault(pv, []).append((child, cv, rel, info.modified))
        return out

    def prefetch(self, artifacts: Iterable[str]) -> None:
        """Read what is not cached yet about these artifacts, in parallel: one listing of
        `artifacts/<artifact>/@` each gives versions, summaries, markers and tombstones (a nested
        artifact's keys cannot start with '@', so none of them are in it)."""
        from .summary import committed_from, summaries_from

        todo = [a for a in set(artifacts) if a not in self._versions]

        def one(a: str) -> tuple[str, list[ObjectInfo]]:
            return a, list(self.store.list(f"{layout.ARTIFACTS_PREFIX}{a}/@"))

        for a, infos in bounded_map(one, todo, workers=_WORKERS, name="ckptlake-meta"):
            self._versions[a] = committed_from(a, infos)
            self._summaries[a] = summaries_from(a, infos)
            self._children[a] = self._children_from(a, infos)
            self._tombs[a] = self._tombs_from(a, infos)

    def manifests(self, keys: Iterable[tuple[str, int]]) -> None:
        """GET these manifests (in parallel) into the cache."""
        from .catalog import load_manifest

        todo = [k for k in set(keys) if k not in self._manifests]
        for m in bounded_map(lambda k: load_manifest(self.store, *k), todo, workers=_WORKERS,
                             name="ckptlake-meta"):
            self._manifests[(m.artifact, m.version)] = m

    def exists(self, artifact: str, version: int) -> bool:
        return version in self._versions[artifact]

    def committed(self, artifact: str, version: int) -> datetime | None:
        return self._versions[artifact].get(version)

    def children(self, artifact: str, version: int) -> list[tuple[str, int, str, datetime]]:
        return self._children[artifact].get(version, [])

    def tombstone(self, artifact: str, version: int) -> dict[str, Any] | None:
        key = self._tombs[artifact].get(version)
        if key is None:
            return None
        try:
            doc = json.loads(self.store.get(key))
        except (NotFound, ValueError, RecursionError):
            return None
        return doc if isinstance(doc, dict) else None

    def info(self, artifact: str, version: int, *, need_parents: bool) -> _Info | None:
        """Node info; None if the version neither exists nor has a tombstone."""
        nid = node_id(artifact, version)
        if self.exists(artifact, version):
            s = self._summaries[artifact].get(version)
            if usable(s, self.committed(artifact, version)) and not need_parents:
                assert s is not None
                return _Info(LineageNode(id=nid, kind="version", status="ok", artifact=artifact,
                                         version=version, step=s.step, metrics=dict(s.metrics),
                                         created=s.created))
            m = self._manifests.get((artifact, version))
            if m is None:
                self.manifests([(artifact, version)])
                m = self._manifests[(artifact, version)]
            return _Info(LineageNode(id=nid, kind="version", status="ok", artifact=artifact,
                                     version=version, step=m.step, metrics=dict(m.metrics),
                                     created=m.created), m.parents, m.inputs)
        tomb = self.tombstone(artifact, version)
        if tomb is None:
            return None
        metrics = tomb.get("metrics") if isinstance(tomb.get("metrics"), dict) else {}
        metrics = {k: v for k, v in metrics.items() if is_metric_value(v)}
        step = tomb.get("step") if isinstance(tomb.get("step"), int) else None
        parents = tuple(p for p in tomb.get("parents") or () if isinstance(p, dict)
                        and isinstance(p.get("artifact"), str)
                        and isinstance(p.get("version"), int)
                        and p.get("relation") in RELATIONS)
        return _Info(LineageNode(id=nid, kind="version", status="expired", artifact=artifact,
                                 version=version, step=step, metrics=dict(metrics),
                                 created=_time_or_none(tomb.get("created")),
                                 deleted=_utc_text(tomb.get("deleted"))), parents)


def _time_or_none(value: Any) -> datetime | None:
    """A tombstone's time as `ls --all` reads it; None where it is missing or damaged."""
    try:
        return parse_time(value) if value is not None else None
    except ValueError:
        return None


def _utc_text(value: Any) -> str | None:
    """A tombstone's deletion time as written (UTC, `Z`), whatever offset it was stored with
    (`lineage` showed the raw text, and the date of its first ten characters)."""
    t = _time_or_none(value)
    return time_text(t) if t is not None else None


def _missing(artifact: str, version: int) -> LineageNode:
    return LineageNode(id=node_id(artifact, version), kind="version", status="missing",
                       artifact=artifact, version=version)


def _root(store: Store, index: _Index, ref: str | Ref) -> tuple[str, int]:
    """The root version; a `vN` reference may name an expired version (its tombstone)."""
    from .catalog import resolve

    ref = parse_ref(ref) if isinstance(ref, str) else ref
    try:
        m = resolve(store, ref)
    except NotFound:
        if ref.kind != "version":
            raise
        index.prefetch([ref.artifact])
        if index.tombstone(ref.artifact, int(ref.value)) is None:  # type: ignore[arg-type]
            raise
        return ref.artifact, int(ref.value)  # type: ignore[arg-type]
    index._manifests[(m.artifact, m.version)] = m
    return m.artifact, m.version


def lineage(store: Store, ref: str | Ref, *, direction: str = "up",
            depth: int | None = None) -> LineageGraph:
    """Ancestors (`up`), descendants (`down`) or both of the version `ref` names, breadth first,
    at most `depth` edges away (None: all)."""
    if direction not in DIRECTIONS:
        raise UsageError(f"unknown direction {direction!r}", hint="one of up, down, both")
    if depth is not None and depth < 0:
        raise UsageError("depth must be >= 0")
    index = _Index(store)
    root = _root(store, index, ref)
    index.prefetch([root[0]])
    nodes: dict[str, LineageNode] = {}
    edges: dict[tuple[str, str, str], LineageEdge] = {}
    root_info = index.info(*root, need_parents=direction != "down")
    assert root_info is not None
    nodes[root_info.node.id] = root_info.node
    if direction in ("up", "both"):
        _walk_up(index, root_info, depth, nodes, edges)
    if direction in ("down", "both"):
        _walk_down(index, root, depth, nodes, edges)
    return LineageGraph(root=node_id(*root), direction=direction, depth=depth,
                        nodes=list(nodes.values()), edges=list(edges.values()))


def _walk_up(index: _Index, root: _Info, depth: int | None, nodes: dict[str, LineageNode],
             edges: dict[tuple[str, str, str], LineageEdge]) -> None:
    frontier, level, seen = [root], 0, {root.node.id}
    while frontier and (depth is None or level < depth):
        level += 1
        wanted: list[tuple[str, int]] = []
        for info in frontier:
            for item in info.inputs:
                nid = input_id(item)
                nodes.setdefault(nid, LineageNode(id=nid, kind="input", status="input",
                                                  uri=item["uri"], digest=item.get("digest")))
                edges[(info.node.id, nid, "input")] = LineageEdge(info.node.id, nid, "input")
            for p in info.parents:
                pid = node_id(p["artifact"], p["version"])
                edges[(info.node.id, pid, p["relation"])] = LineageEdge(info.node.id, pid,
                                                                        p["relation"])
                if pid not in seen:
                    seen.add(pid)
                    wanted.append((p["artifact"], p["version"]))
        index.prefetch(a for a, _ in wanted)
        index.manifests(k for k in wanted if index.exists(*k))
        frontier = []
        for a, v in wanted:
            info = index.info(a, v, need_parents=True)
            if info is None:
                nodes[node_id(a, v)] = _missing(a, v)
                continue
            nodes[info.node.id] = info.node
            frontier.append(info)


def _walk_down(index: _Index, root: tuple[str, int], depth: int | None,
               nodes: dict[str, LineageNode],
               edges: dict[tuple[str, str, str], LineageEdge]) -> None:
    frontier, level, seen = [root], 0, {node_id(*root)}
    while frontier and (depth is None or level < depth):
        level += 1
        index.prefetch(a for a, _ in frontier)
        found: list[tuple[tuple[str, int], tuple[str, int], str, datetime]] = []
        for parent in frontier:
            for child, cv, rel, marked in index.children(*parent):
                found.append((parent, (child, cv), rel, marked))
        index.prefetch(c[0] for _, c, _, _ in found)
        # versions without a summary are read from their manifest (one parallel batch)
        index.manifests(c for _, c, _, _ in found if index.exists(*c) and not usable(
            index._summaries[c[0]].get(c[1]), index.committed(*c)))
        frontier = []
        for parent, (child, cv), rel, marked in found:
            committed = index.committed(child, cv)
            if committed is not None and int(committed.timestamp()) > int(marked.timestamp()):
                continue  # the number was claimed again after the marker was written (gc)
            info = index.info(child, cv, need_parents=False)
            if info is None:
                continue  # marker whose child is neither committed nor expired: ignored
            cid = info.node.id
            edges[(cid, node_id(*parent), rel)] = LineageEdge(cid, node_id(*parent), rel)
            nodes.setdefault(cid, info.node)
            if cid not in seen:
                seen.add(cid)
                frontier.append((child, cv))


# --- renderings ---------------------------------------------------------------------------------

def _metric_text(metrics: dict[str, float], limit: int = 3) -> str:
    items = sorted(metrics.items())[:limit]
    return " ".join(f"{k}={v:g}" for k, v in items)


def node_caption(n: LineageNode) -> str:
    """One-line description after the node's name: step, key metrics, status."""
    if n.kind == "input":
        return "input"
    parts = []
    if n.step is not None:
        parts.append(f"step {n.step}")
    if n.metrics:
        parts.append(_metric_text(n.metrics))
    if n.status == "expired":
        parts.append("expired" + (f" {n.deleted[:10]}" if n.deleted else ""))  # the date
    elif n.status == "missing":
        parts.append("missing")
    return ", ".join(parts)


@dataclass
class TreeItem:
    """A node of the printed tree: a graph node reached through `relation` (None at the root)."""

    node: LineageNode
    relation: str | None
    arrow: str  # "" at the root, "↑" towards parents, "↓" towards children
    repeated: bool = False  # already shown elsewhere in the tree: not expanded again
    children: list["TreeItem"] = field(default_factory=list)


def tree(graph: LineageGraph) -> TreeItem:
    """The graph as a tree rooted at `graph.root`: parents (and inputs) below each node for
    `up`, children for `down`, both for `both`.  A node reached twice is shown twice, the second
    time marked `repeated` and not expanded (the graph is a DAG, not a tree)."""
    by_id = {n.id: n for n in graph.nodes}
    ups: dict[str, list[LineageEdge]] = {}
    downs: dict[str, list[LineageEdge]] = {}
    for e in graph.edges:
        ups.setdefault(e.child, []).append(e)
        downs.setdefault(e.parent, []).append(e)
    root = TreeItem(by_id[graph.root], None, "")
    for way, edges_of, arrow in (("up", ups, "↑"), ("down", downs, "↓")):
        if graph.direction not in (way, "both"):
            continue

        def branches(item: TreeItem) -> list[tuple[TreeItem, LineageNode, str]]:
            ends = [(by_id[e.parent if way == "up" else e.child], e.relation)  # noqa: B023
                    for e in edges_of.get(item.node.id, ())]  # noqa: B023
            ends.sort(key=lambda x: (x[0].kind == "input", x[0].id))
            return [(item, other, rel) for other, rel in reversed(ends)]

        # depth first in print order, without recursion (chains can be thousands long)
        shown = {graph.root}
        stack = branches(root)
        while stack:
            parent, other, relation = stack.pop()
            item = TreeItem(other, relation, arrow, repeated=other.id in shown)
            parent.children.append(item)
            if not item.repeated:
                shown.add(other.id)
                stack += branches(item)
    return root


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: LineageGraph) -> str:
    """Graphviz: one box per version (dashed when expired, dotted when missing), one note per
    input, edges from parent to child labelled with the relation."""
    lines = ["digraph lineage {", "  rankdir=LR;",
             '  node [shape=box, style="rounded", fontname="Helvetica"];',
             '  edge [fontname="Helvetica", fontsize=10];']
    for n in graph.nodes:
        caption = node_caption(n)
        label = n.label + (f"\n{caption}" if caption and n.kind != "input" else "")
        attrs = [f"label={_dot_quote(label)}"]
        if n.kind == "input":
            attrs.append("shape=note")
        elif n.status == "expired":
            attrs.append('style="rounded,dashed"')
            attrs.append("color=gray50")
        elif n.status == "missing":
            attrs.append('style="rounded,dotted"')
            attrs.append("color=red")
        if n.id == graph.root:
            attrs.append("penwidth=2")
        lines.append(f"  {_dot_quote(n.id)} [{', '.join(attrs)}];")
    for e in graph.edges:
        lines.append(f"  {_dot_quote(e.parent)} -> {_dot_quote(e.child)} "
                     f"[label={_dot_quote(e.relation)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


_MERMAID_ESCAPES = {'"': "#quot;", "<": "#lt;", ">": "#gt;", "#": "#35;", "|": "#124;"}


def _mermaid_text(text: str) -> str:
    return "".join(_MERMAID_ESCAPES.get(c, c) for c in text)


def to_mermaid(graph: LineageGraph) -> str:
    """A Mermaid flowchart: nodes n0, n1, ... (ids are not artifact names, which Mermaid would
    misparse), inputs as cylinders, edges parent --> child labelled with the relation."""
    ids = {n.id: f"n{i}" for i, n in enumerate(graph.nodes)}
    lines = ["flowchart LR"]
    for n in graph.nodes:
        caption = node_caption(n)
        text = _mermaid_text(n.label)
        if caption and n.kind != "input":
            text += "<br/>" + _mermaid_text(caption)
        open_, close = ("[(", ")]") if n.kind == "input" else ("[", "]")
        lines.append(f'  {ids[n.id]}{open_}"{text}"{close}')
    for e in graph.edges:
        lines.append(f"  {ids[e.parent]} -->|{_mermaid_text(e.relation)}| {ids[e.child]}")
    lines.append("  classDef expired stroke-dasharray: 5 5,color:#888")
    lines.append("  classDef missing stroke-dasharray: 2 2,stroke:#c00")
    for status in ("expired", "missing"):
        members = [ids[n.id] for n in graph.nodes if n.status == status]
        if members:
            lines.append(f"  class {','.join(members)} {status}")
    lines.append(f"  style {ids[graph.root]} stroke-width:3px")
    return "\n".join(lines) + "\n"
